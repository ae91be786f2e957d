"""Open-set classification: how often a model refuses what it should, and keeps what it should.

A classifier with a reject label (``neither``) is judged on two populations: the known classes
(accuracy, and how many are wrongly refused) and the negatives, per source, because the
average over sources hides the one kind of image that slips through. Sources the model was
never trained on (``held_out``) are the honest estimate for images nobody anticipated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn


def refusal_table(refused: np.ndarray, sources: Sequence[str], held_out: Sequence[bool]) -> dict[str, dict]:
    """Per negative source: ``n``, fraction ``refused`` and whether it was ``held_out`` of training."""
    sources, held_out = np.asarray(sources), np.asarray(held_out, dtype=bool)
    return {
        source: {"n": int((sources == source).sum()), "refused": float(refused[sources == source].mean()),
                 "held_out": bool(held_out[sources == source][0])}
        for source in sorted(set(sources.tolist()))
    }


def open_set_metrics(
    y_true: Sequence[int],
    predicted: Sequence[int],
    label_names: Sequence[str],
    sources: Sequence[str],
    held_out: Sequence[bool],
    reject_label: str,
) -> dict:
    """Known-class accuracy and keep rate, and refusal rates per negative source and pooled.

    ``known_accuracy`` counts a refused known-class image as an error (what a user sees); ``kept`` is
    the fraction of them not refused and ``kept_accuracy`` the accuracy among those.
    """
    y_true, predicted = np.asarray(y_true), np.asarray(predicted)
    sources, held_out = np.asarray(sources), np.asarray(held_out, dtype=bool)
    reject = list(label_names).index(reject_label)
    known, negative = y_true != reject, y_true == reject
    refused = predicted == reject
    table = refusal_table(refused[negative], sources[negative], held_out[negative])
    held_out_rates = [row["refused"] for row in table.values() if row["held_out"]]
    return {
        "n_known": int(known.sum()),
        "known_accuracy": float((predicted[known] == y_true[known]).mean()),
        "kept": float((~refused[known]).mean()),
        "kept_accuracy": float((predicted[known & ~refused] == y_true[known & ~refused]).mean()),
        "n_negative": int(negative.sum()),
        "refused_fit_sources": float(refused[negative & ~held_out].mean()) if (negative & ~held_out).any() else None,
        "refused_held_out": float(refused[negative & held_out].mean()) if (negative & held_out).any() else None,
        "min_refused_held_out": min(held_out_rates) if held_out_rates else None,
        "per_source": table,
    }


def with_threshold(probs: np.ndarray, label_names: Sequence[str], min_confidence: float,
                   reject_label: str) -> np.ndarray:
    """Predicted class ids where a known-class top score under ``min_confidence`` becomes the reject label."""
    predicted = probs.argmax(axis=1)
    reject = list(label_names).index(reject_label)
    predicted[(predicted != reject) & (probs.max(axis=1) < min_confidence)] = reject
    return predicted


def threshold_keeping(scores: np.ndarray, keep: float) -> float:
    """The largest threshold that keeps at least ``keep`` of ``scores`` (score >= threshold is kept)."""
    ordered = np.sort(np.asarray(scores))
    return float(ordered[len(ordered) - int(np.ceil(keep * len(ordered)))])


class ImageNetBackstop(nn.Module):
    """The pretrained network's own ImageNet-1k head, kept beside ours on the same pooled features:
    it vetoes a known class when the probability mass it puts on ``classes`` is under ``min_mass``.

    Valid only on a backbone that kept its pretrained weights (a head-only fine-tune), where both
    heads read the same features; one forward pass serves both.
    """

    kind = "imagenet-head"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, classes: Sequence[int], min_mass: float):
        super().__init__()
        self.head = nn.Linear(weight.shape[1], weight.shape[0])
        self.head.load_state_dict({"weight": weight, "bias": bias})
        self.register_buffer("classes", torch.as_tensor(list(classes)), persistent=False)
        self.min_mass = float(min_mass)

    @classmethod
    def fit(cls, weight: torch.Tensor, bias: torch.Tensor, classes: Sequence[int], known: torch.Tensor,
            keep: float) -> "ImageNetBackstop":
        """The backstop whose ``min_mass`` keeps ``keep`` of the ``known`` images' pooled features."""
        with torch.inference_mode():
            mass = cls(weight, bias, classes, min_mass=0.0)(known).numpy()
        return cls(weight, bias, classes, threshold_keeping(mass, keep))

    @classmethod
    def from_spec(cls, tensors: dict[str, torch.Tensor], spec: dict) -> "ImageNetBackstop":
        return cls(tensors["weight"], tensors["bias"], spec["classes"], spec["min_mass"])

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"weight": self.head.weight.detach().contiguous(), "bias": self.head.bias.detach()}

    def spec(self) -> dict:
        return {"kind": self.kind, "classes": self.classes.tolist(), "min_mass": self.min_mass}

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features).softmax(-1)[:, self.classes].sum(-1)

    def keep(self, features: torch.Tensor) -> torch.Tensor:
        return self(features) >= self.min_mass


class MahalanobisBackstop(nn.Module):
    """Squared Mahalanobis distance of the pooled features to the accepted class's (mean and shrunk
    precision from scikit-learn's Ledoit-Wolf fit): vetoes the accepted class beyond ``max_distance``,
    whatever kind of image it is. Computed in float64, as scikit-learn does, so decisions match it."""

    kind = "mahalanobis"

    def __init__(self, mean: torch.Tensor, precision: torch.Tensor, max_distance: float):
        super().__init__()
        self.register_buffer("mean", mean.double())
        self.register_buffer("precision", precision.double())
        self.max_distance = float(max_distance)

    @classmethod
    def from_spec(cls, tensors: dict[str, torch.Tensor], spec: dict) -> "MahalanobisBackstop":
        return cls(tensors["mean"], tensors["precision"], spec["max_distance"])

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "precision": self.precision}

    def spec(self) -> dict:
        return {"kind": self.kind, "max_distance": self.max_distance}

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        centred = features.double() - self.mean
        return ((centred @ self.precision) * centred).sum(-1)

    def keep(self, features: torch.Tensor) -> torch.Tensor:
        return self(features) <= self.max_distance


class AnyKeeps(nn.Module):
    """Backstops that veto only together: an image is kept when any of them keeps it. The ImageNet head
    alone refuses a cat in a bucket (ImageNet's top class is the bucket); with the Mahalanobis distance
    beside it, it refuses only what is also unlike the training pets."""

    kind = "any-keeps"

    def __init__(self, parts: Sequence[nn.Module]):
        super().__init__()
        self.parts = nn.ModuleList(parts)

    @classmethod
    def from_spec(cls, tensors: dict[str, torch.Tensor], spec: dict) -> "AnyKeeps":
        parts = []
        for i, part in enumerate(spec["parts"]):  # part i's tensors are saved as "i.<name>" (see tensors())
            prefix = f"{i}."
            parts.append(load_backstop({key.removeprefix(prefix): value for key, value in tensors.items()
                                        if key.startswith(prefix)}, part))
        return cls(parts)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"{i}.{key}": value for i, part in enumerate(self.parts) for key, value in part.tensors().items()}

    def spec(self) -> dict:
        return {"kind": self.kind, "parts": [part.spec() for part in self.parts]}

    def keep(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([part.keep(features) for part in self.parts]).any(0)


#: config.json ``backstop.kind`` -> its class (folders written before the key hold an ImageNet head)
BACKSTOPS: dict[str, type[nn.Module]] = {b.kind: b for b in (ImageNetBackstop, MahalanobisBackstop, AnyKeeps)}


def load_backstop(tensors: dict[str, torch.Tensor], spec: dict) -> nn.Module:
    kind = spec.get("kind", ImageNetBackstop.kind)
    if kind not in BACKSTOPS:
        raise KeyError(f"unknown backstop {kind!r} in config.json; known: {sorted(BACKSTOPS)}")
    return BACKSTOPS[kind].from_spec(tensors, spec)


def save_backstop(backstop: nn.Module, folder: Path, reject_label: str, about: str) -> dict:
    """Write ``backstop``'s tensors to ``folder/backstop.safetensors``; returns its ``config.json`` entry."""
    save_file(backstop.tensors(), folder / "backstop.safetensors")
    return {"file": "backstop.safetensors", **backstop.spec(), "reject_label": reject_label, "about": about}


class BackstoppedClassifier(nn.Module):
    """A timm classifier whose known classes are vetoed by a backstop: outputs log-probabilities of the
    served decision (a vetoed image is the reject class with probability 1), so ``softmax`` of the
    output gives the probabilities users see, as with a plain classifier's logits."""

    def __init__(self, model: nn.Module, backstop: nn.Module, reject_index: int):
        super().__init__()
        self.model, self.backstop = model, backstop
        reject = torch.zeros(model.num_classes)
        reject[reject_index] = 1.0
        self.register_buffer("reject", reject, persistent=False)  # a constant in the ONNX graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        probs = self.model.get_classifier()(features).softmax(-1)
        keep = self.backstop.keep(features).to(probs.dtype).unsqueeze(1)
        return (probs * keep + self.reject * (1 - keep)).clamp_min(1e-12).log()


def served_network(model: nn.Module, backstop: nn.Module | None, label_names: Sequence[str],
                   reject_label: str | None) -> nn.Module:
    """The module that makes the served decision: ``model`` itself, or it with its backstop."""
    if backstop is None:
        return model
    return BackstoppedClassifier(model, backstop, list(label_names).index(reject_label))
