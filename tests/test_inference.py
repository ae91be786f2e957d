"""Inference preprocessing: timm's eval transform on uint8 tensors, against timm's own PIL path."""

import numpy as np
import pytest
import torch
from conftest import LDC_SAMPLES
from PIL import Image
from timm.data import create_transform
from torchvision.transforms import v2

from imagezoo.images import load_image
from imagezoo.inference import ImageClassifier, eval_transform, uint8_eval_transform

CONFIGS = {
    "squash 96 bicubic (ldc-live-dead)":
        {"input_size": (3, 96, 96), "interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "squash"},
    "centre crop 0.875 bilinear":
        {"input_size": (3, 64, 64), "interpolation": "bilinear", "crop_pct": 0.875, "crop_mode": "center"},
    "non-square squash": {"input_size": (3, 48, 80), "interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "squash"},
}
MEAN_STD = {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def sample_images(ldc_dir) -> list[Image.Image]:
    """Every LDC image mode, plus noise images smaller and larger than the model input."""
    rng = np.random.default_rng(0)
    noise = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(37, 300), (500, 41), (20, 20)]]
    return [load_image(ldc_dir / name) for name in LDC_SAMPLES.values()] + noise


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_tensor_path_is_within_one_grey_level_of_timm_pil(ldc_dir, config):
    config = {**config, **MEAN_STD}
    fast, reference = uint8_eval_transform(config), create_transform(**config, use_prefetcher=True)
    assert isinstance(fast.transforms[0], v2.PILToTensor), "every step has a tensor twin: the fast path is taken"
    for image in sample_images(ldc_dir):
        ours, timms = fast(image), reference(image)
        assert ours.dtype == timms.dtype == torch.uint8 and ours.shape == timms.shape == (3, *config["input_size"][1:])
        assert (ours.int() - timms.int()).abs().max() <= 1


def test_steps_without_a_tensor_twin_fall_back_to_timm_exactly(ldc_dir):
    config = {"input_size": (3, 64, 64), "interpolation": "bicubic", "crop_pct": 1.0, "crop_mode": "border", **MEAN_STD}
    fast, reference = uint8_eval_transform(config), create_transform(**config, use_prefetcher=True)
    for image in sample_images(ldc_dir):
        assert torch.equal(fast(image), reference(image))


def test_float_transform_equals_batched_normalisation(trained_model, ldc_dir):
    classifier = ImageClassifier.from_pretrained(str(trained_model))
    images = sample_images(ldc_dir)
    one_by_one = torch.stack([eval_transform(classifier.data_config)(image) for image in images])
    batched = classifier.normalize(torch.stack([classifier.uint8_transform(image) for image in images]))
    assert torch.equal(one_by_one, batched)


def test_predictions_agree_with_timm_pil_preprocessing(trained_model, ldc_crops):
    from imagezoo.data import load_splits

    crops = load_splits(str(ldc_crops))["test"].select(range(256))["image"]
    classifier = ImageClassifier.from_pretrained(str(trained_model))
    timm_pil = create_transform(**classifier.data_config)
    ours = classifier.predict_images(crops)
    theirs = classifier.predict_tensor(torch.stack([timm_pil(crop.convert("RGB")) for crop in crops]))
    # the 2-epoch test model is touchy (a few crops move by >0.1); the shipped model moves by 0.0008 on average
    assert np.abs(ours - theirs).mean() < 0.01
    assert (ours.argmax(1) == theirs.argmax(1)).mean() >= 0.98


def test_a_gate_accepts_the_label_its_config_names_and_nothing_else(trained_model, ldc_dir):
    """Which label accepts is stated in the gate's config.json, not implied by the label order: a gate
    saved as ("other", "mri") must not pass every cat photo, and a plain classifier is no gate."""
    import dataclasses

    from imagezoo.predictors.gated import GatedClassifier

    classifier = ImageClassifier.from_pretrained(str(trained_model))
    with pytest.raises(ValueError, match=r"is not a gate: its config.json\['accept_label'\] is None, not one of"):
        GatedClassifier(classifier, classifier)
    contradictory = {**classifier.config, "accept_label": "dead", "backstop": {"reject_label": "dead"}}
    with pytest.raises(ValueError, match="the gate accepts 'dead', the label its backstop refuses"):
        GatedClassifier(dataclasses.replace(classifier, config=contradictory), classifier)
    images = sample_images(ldc_dir)
    probs = classifier.predict_images(images)
    for accept_label in ("dead", "live"):
        gate = dataclasses.replace(classifier, config={**classifier.config, "accept_label": accept_label})
        index = classifier.label_names.index(accept_label)
        rows = GatedClassifier(gate, classifier).predict(images)
        assert [row["accepted"] for row in rows] == list(probs.argmax(axis=1) == index)
        assert [row["gate_score"] for row in rows] == pytest.approx(probs[:, index].tolist(), abs=1e-5)
