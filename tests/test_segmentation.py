"""The nuclei U-Net: ImageNet encoder weights, smp-format round trip, any-size and tiled prediction, a real short run."""

import dataclasses
import json

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file
from scipy import ndimage as ndi
from skimage.draw import disk
from skimage.segmentation import find_boundaries

from imagezoo.inference import ImageClassifier
from imagezoo.predictors import load_predictor
from imagezoo.predictors.base import predictor_name
from imagezoo.scripts import unet_base_model
from imagezoo.segmentation import (
    SegmenterConfig,
    build_unet,
    load_unet,
    load_unet_weights,
    predict_probabilities,
    predict_probabilities_batch,
    rescale,
    save_unet,
    stretch_contrast,
)
from imagezoo.segmentation_metrics import foreground_iou
from imagezoo.segmentation_training import (
    NucleiImages,
    SegmentationCrops,
    build_losses,
    fit_segmenter,
    mirror_to,
    nuclei_validation,
    train_transform,
    type_sampler,
    zoom_crop_size,
)
from imagezoo.tasks import SegmentationRecipe
from imagezoo.weights import offline_weights_file

ENCODER = "tf_efficientnet_lite0"
LIGHT = dict(classes=2, decoder_channels=(64, 32, 16, 8, 8))  # a narrow decoder keeps the tests fast


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Always the offline ImageNet copy (what CI has), without the 3 s Hub probe."""
    monkeypatch.setattr("imagezoo.weights.hub_reachable", lambda timeout=3.0: False)


@pytest.fixture(scope="module")
def random_unet():
    torch.manual_seed(0)
    return build_unet(ENCODER, pretrained=False, **LIGHT).eval()


def blob_sample(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic fluorescence image: blurred bright nuclei of varied size and brightness, some
    touching, on a noisy dark background; and its instance labels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.int32)
    intensity = np.zeros((size, size))
    for label in range(1, size * size // 900 + 1):
        radius = rng.uniform(5, 12)
        rows, cols = disk(tuple(rng.uniform(0, size, 2)), radius, shape=labels.shape)
        labels[rows, cols] = label
        intensity[rows, cols] = rng.uniform(0.4, 1.0)
    pixels = ndi.gaussian_filter(intensity, 1.0) + rng.normal(0.05, 0.03, intensity.shape)
    grey = (np.clip(pixels, 0, 1) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2), labels


def blob_images(n: int, size: int, seed: int) -> NucleiImages:
    data = NucleiImages([], [], [], [], [])
    for index in range(n):
        image, labels = blob_sample(size, seed + index)
        body, border = labels > 0, find_boundaries(labels, mode="inner")
        data.ids.append(f"blobs{index}")
        data.image_types.append("fluorescence")
        data.images.append(image)
        data.labels.append(labels)
        data.targets.append(np.stack([body, border]).astype(np.uint8))
    return data


@pytest.fixture(scope="module")
def blob_unet():
    """A U-Net really trained (seconds) to segment synthetic nuclei: agreement tests on a model
    that outputs nothing would pass trivially."""
    recipe = SegmentationRecipe(
        encoder=ENCODER, crop_size=128, epochs=3, batch_size=8, lr=3e-3, decoder_channels=LIGHT["decoder_channels"],
        crops_per_image=4, warmup_epochs=0,
    )
    config = SegmenterConfig()
    train = blob_images(16, 192, seed=0)
    crops = SegmentationCrops(train.images, train.targets, train_transform(recipe.crop_size, config))
    sampler = type_sampler(train.image_types, recipe.type_balance, len(train) * recipe.crops_per_image, seed=0)
    validate = nuclei_validation(blob_images(2, 192, seed=100), config)
    result = fit_segmenter(recipe, crops, config, validate, sampler, seed=0)
    return result.model, config


def test_build_unet_loads_every_encoder_tensor_from_the_imagenet_weights():
    reference = load_file(offline_weights_file(ENCODER))
    pretrained = build_unet(ENCODER, classes=2).encoder.model.state_dict()
    assert len(pretrained) > 200
    for key, tensor in pretrained.items():
        assert torch.equal(tensor, reference[key]), key
    random = build_unet(ENCODER, pretrained=False, classes=2).encoder.model.state_dict()
    assert not torch.equal(random["conv_stem.weight"], reference["conv_stem.weight"])


def test_save_unet_round_trips_through_smp_and_load_unet(tmp_path, random_unet):
    config = SegmenterConfig(threshold=0.45, min_size=12, postprocess="watershed-distance")
    card = ModelCard("---\nlicense: apache-2.0\n---\n# Our card\n")
    folder = save_unet(random_unet, config, tmp_path / "unet", card)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    saved = json.loads((folder / "config.json").read_text())
    assert saved["encoder_weights"] is None  # loading never asks the Hub for ImageNet weights
    assert saved["_imagezoo"]["postprocess"] == "watershed-distance" and predictor_name(saved) == "segmenter"
    assert "_imagezoo" not in random_unet.config
    assert "# Our card" in (folder / "README.md").read_text()
    x = torch.rand(2, 3, 64, 96)
    with torch.inference_mode():
        expected = random_unet(x)
        assert torch.equal(smp.from_pretrained(str(folder)).eval()(x), expected)  # bit for bit
        ours, settings = load_unet(folder)
        assert settings == config
        # our loader runs channels-last (faster on a CPU): the same numbers up to float summation order
        torch.testing.assert_close(ours(x), expected, atol=1e-4, rtol=0)


@pytest.mark.slow  # blob_unet trains a U-Net
def test_fine_tuning_starts_from_the_saved_unet(tmp_path, blob_unet):
    model, config = blob_unet
    folder = save_unet(model, config, tmp_path / "nuclei-trained")
    recipe = SegmentationRecipe(
        encoder=ENCODER, crop_size=128, epochs=1, batch_size=8, lr=0.0, weight_decay=0.0, warmup_epochs=0,
        decoder_channels=LIGHT["decoder_channels"], init_from=str(folder),
    )
    train = blob_images(4, 192, seed=0)
    crops = SegmentationCrops(train.images, train.targets, train_transform(recipe.crop_size, config))
    result = fit_segmenter(recipe, crops, config, nuclei_validation(blob_images(2, 192, seed=100), config), seed=0)
    trained = model.state_dict()
    for name, parameter in result.model.named_parameters():  # lr 0: only the batch-norm statistics move
        assert torch.equal(parameter.cpu(), trained[name].cpu()), name
    assert result.history[0]["val_foreground_iou"] > 0.8  # where the saved model ended, not an ImageNet start
    assert unet_base_model(recipe) == "imagezoo/nuclei-trained"
    assert unet_base_model(dataclasses.replace(recipe, init_from="hf-hub:someone/nuclei")) == "someone/nuclei"
    assert unet_base_model(dataclasses.replace(recipe, init_from=None)) == f"timm/{ENCODER}.in1k"


def test_fine_tuning_a_unet_of_another_shape_is_refused(tmp_path, random_unet):
    folder = save_unet(random_unet, SegmenterConfig(), tmp_path / "narrow")
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_unet_weights(build_unet(ENCODER, pretrained=False, classes=2), str(folder))


def test_a_folder_of_another_kind_is_refused_with_what_it_is(tmp_path, random_unet):
    """A plain smp folder and a U-Net loaded as a classifier failed inside timm with ``KeyError: 'architecture'``."""
    plain = tmp_path / "plain"
    random_unet.save_pretrained(str(plain))
    with pytest.raises(ValueError, match="plain segmentation_models_pytorch folder: .*save_unet"):
        load_predictor(str(plain))
    folder = save_unet(random_unet, SegmenterConfig(), tmp_path / "unet")
    with pytest.raises(ValueError, match="is a 'segmenter' model, not a 'classifier' one"):
        ImageClassifier.from_pretrained(str(folder))
    (plain / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="neither a timm nor an imagezoo model folder"):
        load_predictor(str(plain))


def test_a_folder_with_only_a_pickle_is_refused(tmp_path, random_unet):
    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save(random_unet.state_dict(), folder / "pytorch_model.bin")
    config = {**random_unet.config, "_model_class": "Unet", "_imagezoo": dataclasses.asdict(SegmenterConfig())}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_unet(folder)


@pytest.mark.parametrize(
    "height, width, tile_size",
    [(37, 53, 512), (5, 3, 512), (300, 517, 512), (300, 517, 256)],
    ids=["small", "tiny", "wider-than-a-tile", "tiled"],
)
def test_probabilities_have_exactly_the_input_size(random_unet, height, width, tile_size):
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    config = SegmenterConfig(tile_size=tile_size)
    probs = predict_probabilities(random_unet, image, config)
    assert probs.shape == (2, height, width) and probs.dtype == np.float32
    assert 0 <= probs.min() and probs.max() <= 1
    from_tensor = predict_probabilities(random_unet, torch.from_numpy(image).permute(2, 0, 1), config)
    np.testing.assert_array_equal(from_tensor, probs)


@pytest.mark.parametrize("scale, tile_size", [(2.0, 512), (1.5, 64), (0.5, 512)], ids=["up", "up-tiled", "down"])
def test_a_scaled_model_sees_resized_images_and_answers_in_the_images_pixels(random_unet, scale, tile_size):
    image = np.random.default_rng(2).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    config = SegmenterConfig(scale=scale, tile_size=tile_size)
    probs = predict_probabilities(random_unet, image, config)
    assert probs.shape == (2, 37, 53) and 0 <= probs.min() and probs.max() <= 1
    resized = rescale(image[None], scale)[0]
    assert resized.shape == (round(37 * scale), round(53 * scale), 3) and resized.dtype == np.uint8
    at_scale = torch.from_numpy(predict_probabilities(random_unet, resized, dataclasses.replace(config, scale=None)))
    mode = "area" if scale > 1 else "bilinear"
    np.testing.assert_allclose(probs, torch.nn.functional.interpolate(at_scale[None], (37, 53), mode=mode)[0], atol=1e-6)
    batch = image[None]
    assert rescale(batch, None) is batch and rescale(batch, 1.0) is batch


def test_a_one_pixel_image_is_segmented_by_a_downscaling_model(random_unet):
    """At scale 0.5 a 1-pixel side rounded to 0 pixels (an interpolation error) before it was kept at 1."""
    image = np.full((1, 1, 3), 128, np.uint8)
    assert rescale(image[None], 0.5).shape == (1, 1, 1, 3)
    probs = predict_probabilities(random_unet, image, SegmenterConfig(scale=0.5))
    assert probs.shape == (2, 1, 1) and 0 <= probs.min() and probs.max() <= 1


def test_test_time_augmentation_is_the_mean_over_the_eight_orientations(random_unet):
    image = np.random.default_rng(4).integers(0, 256, (64, 96, 3), dtype=np.uint8)  # no padding: turns commute with it
    config = SegmenterConfig(percentiles=(1.0, 99.8))
    plain = predict_probabilities(random_unet, image, config)
    views = []
    for turns in range(4):
        for mirror in (False, True):
            view = np.rot90(image, turns)
            view = np.ascontiguousarray(view[:, ::-1] if mirror else view)
            maps = predict_probabilities(random_unet, view, config)
            maps = maps[:, :, ::-1] if mirror else maps
            views.append(np.rot90(maps, -turns, axes=(1, 2)))
    augmented = predict_probabilities(random_unet, image, dataclasses.replace(config, tta=True))
    np.testing.assert_allclose(augmented, np.mean(views, axis=0), atol=1e-5)
    assert np.abs(augmented - plain).max() > 1e-3  # an untrained network is no symmetric function
    for height, width, tile_size in [(37, 53, 512), (300, 517, 256)]:  # padded, and tiled
        odd = np.random.default_rng(5).integers(0, 256, (height, width, 3), dtype=np.uint8)
        probs = predict_probabilities(random_unet, odd, SegmenterConfig(tile_size=tile_size, tta=True))
        assert probs.shape == (2, height, width) and 0 <= probs.min() and probs.max() <= 1


def test_a_strip_longer_than_a_tile_is_tiled_without_padding_its_short_side(random_unet):
    """A 40 x 2000 strip went through 256 x 256 tiles, its short side padded to 256: 6.4 times the pixels
    (a 16 x 62500 strip at the served tile size: 64 times, out of memory in a Space)."""
    inputs = []

    class Recorded(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = random_unet

        def forward(self, x):
            inputs.append(tuple(x.shape[2:]))
            return self.unet(x)

    image = np.random.default_rng(6).integers(0, 256, (40, 2000, 3), dtype=np.uint8)
    probs = predict_probabilities(Recorded(), image, SegmenterConfig(tile_size=256))
    assert probs.shape == (2, 40, 2000) and 0 <= probs.min() and probs.max() <= 1
    assert inputs and all(tile == (64, 256) for tile in inputs)  # the height only to the stride's multiple
    assert sum(h * w for h, w in inputs) <= 2.5 * 64 * 2016  # overlap 0.5: about twice the padded strip


def test_training_crops_of_a_scaled_model_resize_images_and_keep_targets_binary():
    image, labels = blob_sample(64, seed=3)
    target = np.stack([labels > 0, find_boundaries(labels)]).astype(np.uint8)
    crops = SegmentationCrops([image], [target], lambda x, y: (x, y), scale=2.0)
    big_image, big_target = crops[0]
    assert big_image.shape == (3, 128, 128) and big_target.shape == (2, 128, 128)
    assert set(np.unique(big_target.numpy())) <= {0.0, 1.0}
    np.testing.assert_array_equal(big_target.numpy()[:, ::2, ::2], target)  # each target pixel becomes a 2x2 block


def test_images_under_half_the_crop_are_mirrored_not_refused():
    """torch's reflect padding fails on pads wider than the image (an LDC slide at --input-scale 0.25)."""
    config = SegmenterConfig(channels=("mask", "border"))
    image = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    target = np.zeros((2, 20, 30), dtype=np.uint8)
    target[0, 5:10, 5:10] = 1
    crops = SegmentationCrops([image], [target], train_transform(64, config), min_size=zoom_crop_size(64))
    crop, crop_target = crops[0]
    assert crop.shape == (3, 64, 64) and crop_target.shape == (2, 64, 64) and crop_target.max() == 1
    mirrored = mirror_to(image, 80)
    assert mirrored.shape == (20 + 2 * 60, 30 + 2 * 50, 3)  # what RandomCrop(pad_if_needed) pads, where it can
    assert np.array_equal(mirror_to(image, 20), image)
    wider = np.random.default_rng(1).integers(0, 255, (50, 60, 3), dtype=np.uint8)  # where torch can: the same pixels
    as_tensor = torch.from_numpy(wider).permute(2, 0, 1)[None].float()
    by_torch = torch.nn.functional.pad(as_tensor, (20, 20, 30, 30), mode="reflect")
    assert np.array_equal(mirror_to(wider, 80), by_torch[0].permute(1, 2, 0).numpy().astype(np.uint8))


def test_crops_about_a_rare_class_find_it_where_uniform_crops_mostly_miss():
    """An LDC slide at --input-scale 2 against 128 px crops: a dead cell is in few uniform crops."""
    image = np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    target = np.zeros((2, 200, 200), dtype=np.uint8)
    target[0, 150:156, 10:16] = 1  # the rare class, by the image edge
    target[1, 40:60, 100:120] = 1
    centred = SegmentationCrops([image], [target], lambda x, y: (x, y), min_size=40, ratios=(1e-3, 1, 0))
    uniform = SegmentationCrops([image], [target], train_transform(40, SegmenterConfig()))
    torch.manual_seed(0)
    draws = [centred[0] for _ in range(50)]
    assert all(crop.shape == (3, 40, 40) and crop_target.shape == (2, 40, 40) for crop, crop_target in draws)
    assert all(crop_target[0].sum() == 36 for _, crop_target in draws)  # the whole 6x6 object, every time
    assert sum(crop_target[0].sum() > 0 for _, crop_target in (uniform[0] for _ in range(50))) < 25
    crop, crop_target = draws[0]  # image and targets cut at the same place
    rows, cols = np.argwhere(crop_target[0].numpy())[0] - np.array([150, 10])
    assert rows <= 0 and cols <= 0
    np.testing.assert_array_equal(crop.numpy(), image[-rows:-rows + 40, -cols:-cols + 40].transpose(2, 0, 1))
    torch.manual_seed(0)
    assert all(torch.equal(crop_target, again[1]) for (_, crop_target), again in zip(draws, (centred[0] for _ in range(50))))


def test_crops_about_a_class_absent_from_an_image_fall_back_to_the_background():
    empty = np.zeros((2, 90, 90), dtype=np.uint8)
    image = np.zeros((90, 90, 3), dtype=np.uint8)
    crops = SegmentationCrops([image], [empty], lambda x, y: (x, y), min_size=40, ratios=(1, 5, 5))
    assert crops[0][0].shape == (3, 40, 40)
    with pytest.raises(ValueError, match="one for the background, then one per target channel"):
        SegmentationCrops([image], [empty], lambda x, y: (x, y), min_size=40, ratios=(1, 1))
    with pytest.raises(ValueError, match="background's above 0"):
        SegmentationCrops([image], [empty], lambda x, y: (x, y), min_size=40, ratios=(0, 1, 1))


def test_batched_prediction_matches_one_image_at_a_time(random_unet):
    images = np.random.default_rng(1).integers(0, 256, (3, 70, 90, 3), dtype=np.uint8)
    config = SegmenterConfig()
    batch = predict_probabilities_batch(random_unet, images, config)
    assert batch.shape == (3, 2, 70, 90)
    for image, probs in zip(images, batch):
        np.testing.assert_allclose(predict_probabilities(random_unet, image, config), probs, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        predict_probabilities(random_unet, images[0].astype(np.float32), config)


def test_contrast_stretch_makes_a_dim_image_look_like_a_bright_one(random_unet):
    bright, _ = blob_sample(128, seed=5)
    dim = (bright // 4).astype(np.uint8)  # a dim exposure of the same nuclei
    assert stretch_contrast(dim, None) is dim
    flat = np.full((8, 8, 3), 7, np.uint8)
    np.testing.assert_array_equal(stretch_contrast(flat, (1, 99.8)), flat)
    stretched = stretch_contrast(dim, (1, 99.8))
    assert stretched.dtype == np.uint8 and stretched.max() == 255 and stretched.min() == 0
    assert np.abs(stretched.astype(int) - stretch_contrast(bright, (1, 99.8))).mean() < 3
    def gap(config):  # mean difference of the network's output between the two exposures
        return np.abs(predict_probabilities(random_unet, dim, config) - predict_probabilities(random_unet, bright, config)).mean()

    assert gap(SegmenterConfig(percentiles=(1, 99.8))) < 0.01 < gap(SegmenterConfig())


@pytest.mark.slow  # blob_unet trains a U-Net
def test_tiled_and_whole_image_predictions_agree(blob_unet):
    model, config = blob_unet
    image, labels = blob_sample(512, seed=1000)
    whole = predict_probabilities(model, image, config)
    tiled = predict_probabilities(model, image, dataclasses.replace(config, tile_size=256))
    assert foreground_iou(labels, whole[0] > config.threshold) > 0.8  # the model really segments
    assert foreground_iou(whole[0] > config.threshold, tiled[0] > config.threshold) >= 0.99
    strip = image[:48]  # tiles as short as the strip
    tiled_strip = predict_probabilities(model, strip, dataclasses.replace(config, tile_size=128))
    whole_strip = predict_probabilities(model, strip, config)
    assert foreground_iou(whole_strip[0] > config.threshold, tiled_strip[0] > config.threshold) >= 0.99


def test_lovasz_loss_is_zero_for_a_confident_right_answer_and_counts_each_channel_alike():
    targets = torch.zeros(2, 2, 16, 16)
    targets[:, :, 4:12, 4:12] = 1
    right = (targets * 2 - 1) * 10  # logits far on the right side of every pixel
    lovasz = build_losses(["lovasz"])["lovasz"]
    assert lovasz(right, targets).item() == pytest.approx(0.0)
    wrong = lovasz(-right, targets).item()
    assert wrong > 1.0
    half_wrong = torch.cat([right[:, :1], -right[:, 1:]], dim=1)  # body right, border wrong
    assert lovasz(half_wrong, targets).item() == pytest.approx(wrong / 2)


def test_an_unknown_loss_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid names.*bce.*dice.*lovasz"):
        build_losses(["dice", "focal"])


@pytest.mark.slow
def test_script_trains_evaluates_and_exports_a_loadable_folder(nuclei_model, dsb_dir, dsb_sample_ids):
    out = nuclei_model
    results = json.loads((out / "eval_results.json").read_text())
    assert set(results["postprocessing"]) == {"watershed-border", "watershed-distance", "components"}
    for method in results["postprocessing"].values():
        assert method["threshold"] in (0.4, 0.5) and method["test"]["overall"]["n_images"] >= 1
        assert set(method["test"]["by_group"]) <= {"fluorescence", "brightfield", "histology"}
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [1] and {"train_loss", "val_dsb_score", "val_foreground_iou"} <= set(log[0])
    card = (out / "README.md").read_text()
    assert "model-index:" in card and "library_name: segmentation-models-pytorch" in card
    assert "pipeline_tag: image-segmentation" in card and "watershed-distance" in card
    assert (out / "test_predictions.png").stat().st_size > 1000

    config = json.loads((out / "config.json").read_text())["_imagezoo"]
    assert config["postprocess"] == results["postprocess"]
    assert smp.from_pretrained(str(out)).decoder is not None
    segmenter = load_predictor(str(out))
    sample = dsb_sample_ids[0]
    image = Image.open(dsb_dir / sample / "images" / f"{sample}.png")
    result = segmenter.segment(image)
    assert result.labels.shape == (image.height, image.width) and result.probabilities.shape == (2, *result.labels.shape)
    with pytest.raises(ValueError, match=r"'segmenter' model takes no loading options, got \['runtime'\]"):
        load_predictor(str(out), runtime="onnx")
