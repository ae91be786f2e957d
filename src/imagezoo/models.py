"""Architectures of our own, registered with timm so ``timm.create_model`` builds them.

Registering (rather than calling the class directly) gives these models the same
export, ``local-dir:``/``hf-hub:`` loading and preprocessing config as any timm model.
``import imagezoo`` is enough to make them visible to timm.
"""

from __future__ import annotations

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

__all__ = ["SeedCNN"]


class SeedCNN(nn.Module):
    """The original project's Keras baseline, layer for layer, kept as a reference peer.

    Keras: Rescaling(1/255) -> 3 x [Conv2D(3x3, valid) + ReLU + MaxPool(2)] with 32/64/128
    filters -> Flatten -> Dense(128) + ReLU -> Dropout(0.5) -> Dense(1) + sigmoid, on
    128x128 inputs. The 1/255 rescaling is the preprocessing config (mean 0, std 1 after
    ToTensor). The sigmoid unit becomes two logits: a softmax over two logits is the
    sigmoid of their difference, so the function class is the same and the model fits
    the shared classification pipeline.
    """

    def __init__(
        self, num_classes: int = 2, in_chans: int = 3, img_size: int | tuple[int, int] = 128, drop_rate: float = 0.5
    ):
        super().__init__()
        self.num_classes = num_classes
        self.num_features = 128
        self.drop_rate = drop_rate
        layers, channels = [], in_chans
        for width in (32, 64, 128):
            layers += [nn.Conv2d(channels, width, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = width
        self.features = nn.Sequential(*layers)
        height, width = (img_size, img_size) if isinstance(img_size, int) else img_size
        for _ in range(3):
            height, width = (height - 2) // 2, (width - 2) // 2
        self.fc1 = nn.Linear(128 * height * width, self.num_features)
        self.act = nn.ReLU(inplace=True)
        self.head_drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.act(self.fc1(x.flatten(1))))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


default_cfgs = generate_default_cfgs(
    {
        "seed_cnn": dict(
            num_classes=2,
            input_size=(3, 128, 128),
            fixed_input_size=True,
            pool_size=None,
            crop_pct=1.0,
            crop_mode="squash",
            interpolation="bilinear",
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            first_conv="features.0",
            classifier="fc",
        )
    }
)


@register_model
def seed_cnn(pretrained: bool = False, **kwargs) -> SeedCNN:
    """The seed project's small Keras CNN (no pretrained weights exist for it)."""
    return build_model_with_cfg(SeedCNN, "seed_cnn", pretrained, **kwargs)
