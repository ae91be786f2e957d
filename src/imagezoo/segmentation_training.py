"""Training loop of the nuclei U-Net.

Small on purpose: smp builds the network and the losses, torchvision's v2 transforms move
each image and its targets through one random pipeline (``tv_tensors.Mask`` keeps the
targets crisp), timm supplies the optimizer and schedule. Validation scores whole images
through the serving path (:func:`~imagezoo.segmentation.predict_probabilities` plus the
model's post-processing, before that is tuned and without test-time augmentation), so the
epoch we keep is chosen on the kind of numbers we publish.
"""

from __future__ import annotations

import copy
import itertools
import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
import segmentation_models_pytorch as smp
import torch
from monai.transforms.utils import generate_label_classes_crop_centers, map_classes_to_indices
from timm.optim import create_optimizer_v2
from timm.utils import random_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler, WeightedRandomSampler
from torchvision import tv_tensors
from torchvision.transforms import v2
from tqdm.auto import tqdm

from imagezoo.instances import overlay
from imagezoo.segmentation import (
    SegmenterConfig,
    build_unet,
    load_unet_weights,
    predict_probabilities,
    rescale,
    stretch_contrast,
)
from imagezoo.segmentation_metrics import dsb_score, object_scores, segmentation_metrics
from imagezoo.tasks import SegmentationRecipe
from imagezoo.training import check_can_select, cosine_schedule

logger = logging.getLogger(__name__)


@dataclass
class NucleiImages:
    """Decoded dataset rows: uint8 RGB images (H, W, 3), int32 instance labels, uint8 (body, border)
    targets (2, H, W) in {0, 1}, and each image's type (fluorescence, brightfield, histology)."""

    ids: list[str]
    image_types: list[str]
    images: list[np.ndarray]
    labels: list[np.ndarray]
    targets: list[np.ndarray]

    @classmethod
    def from_rows(cls, rows: Iterable[dict]) -> "NucleiImages":
        data = cls([], [], [], [], [])
        for row in rows:
            data.ids.append(row["id"])
            data.image_types.append(row["image_type"])
            data.images.append(np.array(row["image"].convert("RGB")))
            data.labels.append(np.asarray(row["instances"]).astype(np.int32))
            data.targets.append(np.stack([np.asarray(row["mask"]) > 0, np.asarray(row["border"]) > 0]).astype(np.uint8))
        return data

    def __len__(self) -> int:
        return len(self.ids)


def mirror_to(image: np.ndarray, size: int | None) -> np.ndarray:
    """``image`` (H, W, C) mirrored by ``size - side`` on both ends of each side shorter than ``size``:
    the padding of ``RandomCrop(pad_if_needed=True, padding_mode="reflect")``, done by numpy, whose
    reflection takes pads wider than the image (torch's fails there: an image under half the crop)."""
    pads = [(max(size - side, 0),) * 2 if size else (0, 0) for side in image.shape[:2]]
    return np.pad(image, [*pads, (0, 0)], mode="reflect") if any(pad for pad, _ in pads) else image


#: pixels kept per image and class as candidate crop centres (evenly spaced): bounds the memory of large images
MAX_CENTRES_PER_CLASS = 4096


class SegmentationCrops(Dataset):
    """A random crop of image ``index`` with its targets, as (image, target) tensors; whole
    images are contrast-stretched and resized by ``scale`` first, as serving does (targets by
    their nearest pixel), then mirrored up to ``min_size`` (:func:`mirror_to`; give the
    transform's first crop, :func:`zoom_crop_size`). ``images`` are uint8 (H, W, 3), ``targets``
    uint8 (channels, H, W).

    ``ratios`` (background first, then one per target channel; MONAI's ``RandCropByLabelClasses``):
    each crop is first cut ``min_size`` wide about a pixel of a class drawn with these ratios (a class
    absent from the image is skipped), so rare objects reach training however small the crop is against
    the image; ``None``: the transform's own uniformly random crops.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        transform: Callable,
        percentiles: tuple[float, float] | None = None,
        scale: float | None = None,
        min_size: int | None = None,
        ratios: Sequence[float] | None = None,
    ):
        images = (mirror_to(rescale(stretch_contrast(image, percentiles)[None], scale)[0], min_size) for image in images)
        targets = (mirror_to(rescale(target.transpose(1, 2, 0)[None], scale, nearest=True)[0], min_size)
                   for target in targets)
        self.images = [tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1)) for image in images]
        self.targets = [tv_tensors.Mask(torch.from_numpy(target).permute(2, 0, 1)) for target in targets]
        self.transform = transform
        self.ratios, self.min_size, self.centres = None, min_size, []
        if ratios is not None:
            self.ratios = [float(ratio) for ratio in ratios]
            channels = {len(target) for target in self.targets}
            if channels - {len(self.ratios) - 1}:
                raise ValueError(f"crop ratios {tuple(ratios)}: one for the background, then one per target channel "
                                 f"({sorted(channels)[0]})")
            if self.ratios[0] <= 0 or min(self.ratios) < 0:
                raise ValueError(f"crop ratios {tuple(ratios)}: none negative and the background's above 0 "
                                 "(an image with no object still needs a crop)")
            if not min_size:
                raise ValueError("crops about a class's pixels need min_size, the width of the first crop")
            self.centres = [
                map_classes_to_indices(torch.cat([(target.sum(0, keepdim=True) == 0), target.bool()]).numpy(),
                                       max_samples_per_class=MAX_CENTRES_PER_CLASS)
                for target in self.targets
            ]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, target = self.images[index], self.targets[index]
        if self.ratios is not None:
            image, target = self.crop_about_a_class(index)
        image, target = self.transform(image, target)
        return image, target.float()

    def crop_about_a_class(self, index: int) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        """``min_size`` square of image ``index`` about a pixel of a class drawn by ``ratios``; the
        draw follows torch's random state, as the transform's do."""
        image, target = self.images[index], self.targets[index]
        rand_state = np.random.RandomState(int(torch.randint(2**31 - 1, ())))
        (centre,) = generate_label_classes_crop_centers(
            self.min_size, 1, image.shape[1:], self.centres[index], self.ratios, rand_state, warn=False,
        )
        top, left = (int(c) - self.min_size // 2 for c in centre)
        window = (slice(None), slice(top, top + self.min_size), slice(left, left + self.min_size))
        return tv_tensors.Image(image[window]), tv_tensors.Mask(target[window])


def type_sampler(image_types: Sequence[str], balance: float, num_samples: int, seed: int) -> WeightedRandomSampler:
    """Draw images with weight (images of their type) ** -balance: 0 uniform, 1 every type equally
    often (bright-field is 2% of DSB2018, fluorescence 82%)."""
    counts = Counter(image_types)
    weights = [counts[image_type] ** -balance for image_type in image_types]
    return WeightedRandomSampler(weights, num_samples, generator=torch.Generator().manual_seed(seed))


def zoom_crop_size(crop_size: int) -> int:
    """The first crop of :func:`train_transform`, zoomed about its centre before the final crop."""
    return round(crop_size * 1.25)


def train_transform(crop_size: int, config: SegmenterConfig, invert: float = 0.2) -> v2.Compose:
    """One joint pipeline for image and targets (geometry moves both, colour only the image).

    Scale: a crop 1.25x the final size is zoomed 0.8-1.25x about its centre and its middle
    kept, so nuclei appear at 0.8-1.25x their size whatever the image size. An affine zoom,
    not ``RandomResizedCrop``: that resizes masks with legacy nearest-neighbour sampling, half
    a pixel off the image. Flips with a random 90-degree turn give all eight right-angle
    orientations (microscopy has no up). Colour jitter, grayscale and inversion make
    fluorescence (bright nuclei on black), bright-field and H&E (dark nuclei on light) look
    like one another; ``invert`` is its probability (0 where brightness is the signal).
    """
    return v2.Compose([
        v2.RandomCrop(zoom_crop_size(crop_size), pad_if_needed=True, padding_mode="reflect"),
        v2.RandomAffine(degrees=0, scale=(0.8, 1.25), interpolation=v2.InterpolationMode.BILINEAR),
        v2.CenterCrop(crop_size),
        v2.RandomHorizontalFlip(),
        v2.RandomVerticalFlip(),
        v2.RandomApply([v2.RandomRotation((90, 90))]),
        v2.RandomApply([v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.RandomInvert(p=invert),
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(config.mean, config.std),
    ])


def predict_all(model: nn.Module, images: Sequence[np.ndarray], config: SegmenterConfig) -> list[np.ndarray]:
    """(body, border) probabilities of every whole image, through the serving path."""
    return [predict_probabilities(model, image, config) for image in images]


def instance_metrics(probabilities: Sequence[np.ndarray], data: NucleiImages, settings: SegmenterConfig) -> dict:
    """:func:`segmentation_metrics` of the instances ``settings`` serve, overall and per image type;
    each object's confidence (for the average precision) is its mean probability of the first channel,
    the nuclei's body."""
    pairs = [(labels, settings.instances(probs)) for probs, labels in zip(probabilities, data.labels)]
    scores = [object_scores(pred, probs[0]) for (_, pred), probs in zip(pairs, probabilities)]
    return segmentation_metrics(pairs, groups=data.image_types, scores=scores)


def tune_postprocessing(
    probabilities: Sequence[np.ndarray],
    data: NucleiImages,
    config: SegmenterConfig,
    method: str,
    thresholds: Sequence[float],
    min_sizes: Sequence[int],
) -> tuple[dict, dict]:
    """The (threshold, min_size) of ``method`` with the best DSB score on ``data`` (validation
    images only), and its metrics."""
    best_params, best_metrics = None, None
    for threshold, min_size in itertools.product(thresholds, min_sizes):
        settings = replace(config, postprocess=method, threshold=threshold, min_size=min_size)
        metrics = instance_metrics(probabilities, data, settings)
        logger.info("%s threshold %.2f min_size %d: DSB %.4f", method, threshold, min_size, metrics["overall"]["dsb_score"])
        if best_metrics is None or metrics["overall"]["dsb_score"] > best_metrics["overall"]["dsb_score"]:
            best_params, best_metrics = dict(threshold=threshold, min_size=min_size), metrics
    return best_params, best_metrics


class ChannelLovasz(nn.Module):
    """Lovasz hinge per image and per channel, averaged: a surrogate of each image's IoU, the
    number a per-image foreground IoU scores (smp's multilabel mode pools the channels into one)."""

    def __init__(self) -> None:
        super().__init__()
        self.lovasz = smp.losses.LovaszLoss(smp.losses.BINARY_MODE, per_image=True, from_logits=True)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.lovasz(logits[:, c:c + 1], targets[:, c:c + 1]) for c in range(logits.shape[1])]).mean()


#: Loss terms a recipe's ``losses`` names; the training loss is their sum.
LOSSES: dict[str, Callable[[], nn.Module]] = {
    "dice": lambda: smp.losses.DiceLoss(smp.losses.MULTILABEL_MODE, from_logits=True),
    "bce": smp.losses.SoftBCEWithLogitsLoss,
    "lovasz": ChannelLovasz,
}


def build_losses(names: Sequence[str]) -> dict[str, nn.Module]:
    """The named loss terms, each logged on its own; a misspelt name fails before any training."""
    unknown = sorted(set(names) - set(LOSSES))
    if unknown:
        raise ValueError(f"unknown loss {unknown}; valid names: {sorted(LOSSES)}")
    return {name: LOSSES[name]() for name in names}


@dataclass
class SegmenterFitResult:
    model: nn.Module
    best_epoch: int
    history: list[dict] = field(default_factory=list)


def nuclei_validation(validation: NucleiImages, config: SegmenterConfig) -> Callable[[nn.Module], tuple[dict, tuple]]:
    """Validation of a nuclei U-Net for :func:`fit_segmenter`: metrics of ``config``'s post-processing,
    ranked by DSB score, ties broken by foreground IoU."""

    def validate(model: nn.Module) -> tuple[dict, tuple]:
        probabilities = predict_all(model, validation.images, config)
        metrics = instance_metrics(probabilities, validation, config)
        overall = {k: v for k, v in metrics["overall"].items() if k != "n_images"}
        return overall, (overall["dsb_score"], overall["foreground_iou"])

    return validate


def fit_segmenter(
    recipe: SegmentationRecipe,
    train_set: Dataset,
    config: SegmenterConfig,
    validate: Callable[[nn.Module], tuple[dict, tuple]],
    sampler: Sampler | None = None,
    seed: int = 42,
    device: str = "cpu",
    log: Callable[[dict], None] | None = None,
) -> SegmenterFitResult:
    """Train a U-Net with one output per ``config.channels`` and return the best validation epoch's.

    ``train_set`` yields (image, targets) crops; ``sampler`` draws them (default: shuffled,
    ``recipe.crops_per_image`` passes per epoch). Loss: the sum of ``recipe.losses`` on every
    channel (default Dice + BCE: Dice copes with the small foreground fraction, BCE keeps thin
    structures sharp; :data:`LOSSES` lists the others). ``validate(model)``
    returns the epoch's validation metrics and a key; the epoch with the largest key is kept
    (the scripts validate through the serving path, before post-processing is tuned).
    """
    check_can_select(recipe.epochs)
    random_seed(seed)
    model = build_unet(
        recipe.encoder, recipe.pretrained and not recipe.init_from, classes=len(config.channels),
        decoder_channels=recipe.decoder_channels,
    )
    if recipe.init_from:
        load_unet_weights(model, recipe.init_from)
    model = model.to(device, memory_format=torch.channels_last)  # about 20% faster on a CPU
    if sampler is None:
        sampler = RandomSampler(train_set, num_samples=len(train_set) * recipe.crops_per_image,
                                generator=torch.Generator().manual_seed(seed))
    loader = DataLoader(
        train_set,
        batch_size=recipe.batch_size,
        sampler=sampler,
        drop_last=len(sampler) > recipe.batch_size,  # a smoke run smaller than one batch still trains
        num_workers=recipe.num_workers,
        persistent_workers=recipe.num_workers > 0,
    )
    losses = build_losses(recipe.losses)
    optimizer = create_optimizer_v2(model, opt="adamw", lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = len(loader)
    scheduler = cosine_schedule(optimizer, recipe, steps_per_epoch)
    best_key, best_state, best_epoch, history = None, None, 0, []
    for epoch in range(1, recipe.epochs + 1):
        start = time.time()
        model.train()
        sums, seen = dict.fromkeys(losses, 0.0), 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{recipe.epochs}", unit="batch", leave=False)
        for step, (images, targets) in enumerate(bar):
            images = images.to(device, memory_format=torch.channels_last)
            targets = targets.to(device)
            logits = model(images)
            terms = {name: loss(logits, targets) for name, loss in losses.items()}
            optimizer.zero_grad(set_to_none=True)
            sum(terms.values()).backward()
            optimizer.step()
            scheduler.step_update((epoch - 1) * steps_per_epoch + step + 1)
            for name, term in terms.items():
                sums[name] += term.item() * len(images)
            seen += len(images)
            bar.set_postfix(loss=f"{sum(sums.values()) / seen:.4f}")
        train_seconds = time.time() - start
        val, key = validate(model)
        row = {
            "epoch": epoch,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": sum(sums.values()) / seen,
            **{f"train_{name}_loss": total / seen for name, total in sums.items()},
            **{f"val_{k}": v for k, v in val.items()},
            "train_seconds": train_seconds,
            "val_seconds": time.time() - start - train_seconds,
        }
        history.append(row)
        logger.info(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
        if log:
            log(row)
        if best_key is None or key > best_key:
            best_key, best_epoch = key, epoch
            best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    logger.info("best epoch %d (validation key %s)", best_epoch, best_key)
    return SegmenterFitResult(model=model, best_epoch=best_epoch, history=history)



def save_prediction_figure(
    data: NucleiImages, probabilities: Sequence[np.ndarray], config: SegmenterConfig, path: str | Path
) -> Path:
    """The first image of every type (not the best ones): image, annotation, prediction with its DSB score."""
    firsts = {image_type: index for index, image_type in reversed(list(enumerate(data.image_types)))}
    fig, axes = plt.subplots(len(firsts), 3, figsize=(10, 3.4 * len(firsts)), dpi=100, squeeze=False)
    for row, (image_type, index) in zip(axes, sorted(firsts.items())):
        image, truth = data.images[index], data.labels[index]
        pred = config.instances(probabilities[index])
        panels = [
            (image, f"{image_type} ({image.shape[1]}x{image.shape[0]})"),
            (overlay(image, truth), f"annotation: {truth.max()} nuclei"),
            (overlay(image, pred), f"{config.postprocess}: {pred.max()} nuclei, DSB {dsb_score(truth, pred):.2f}"),
        ]
        for ax, (picture, title) in zip(row, panels):
            ax.imshow(picture)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
