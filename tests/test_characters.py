"""Character sets: the prep's splits and odd files, a real short training run, Grad-CAM and feature
maps (shape, and that they change with the input), and the characters Space."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import SHARED_DATA, assert_uploads_reach_the_app, space_app
from PIL import Image

from imagezoo.data.characters import build_characters_dataset
from imagezoo.explain import OVERLAY_MAX_SIDE, feature_layers, feature_maps, grad_cam, overlay
from imagezoo.inference import ImageClassifier
from imagezoo.tasks import CHARACTER_SETS

CHARACTERS = SHARED_DATA / "characters"


@pytest.fixture(scope="session")
def characters_dir():
    if not CHARACTERS.is_dir():
        pytest.skip(f"character data not found at {CHARACTERS}")
    return CHARACTERS


def test_prep_loads_gifs_and_extensionless_files_and_drops_test_copies(tmp_path, characters_dir):
    source = characters_dir / "pokemon"
    labels = CHARACTER_SETS["pokemon"]
    for part in ("train", "validation"):
        for label in labels:
            (tmp_path / part / label).mkdir(parents=True)
    gif = next((source / "train" / "bulbasaur").glob("*.gif"))
    shutil.copy(gif, tmp_path / "train" / "bulbasaur" / "odd name, with spaces")  # a GIF without extension
    pngs = sorted((source / "train" / "pikachu").glob("*.png"))[:3]
    for i, path in enumerate(pngs):
        shutil.copy(path, tmp_path / "train" / "pikachu" / f"{i}.png")
    shutil.copy(pngs[0], tmp_path / "validation" / "pikachu" / "copy.png")  # a training image again
    shutil.copy(sorted((source / "validation" / "squirtle").iterdir())[0], tmp_path / "validation" / "squirtle")
    (tmp_path / "validation" / "squirtle" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    dataset, report = build_characters_dataset(tmp_path, labels)
    assert report.duplicates == 1 and [path for path, _ in report.skipped] == ["validation/squirtle/broken.jpg"]
    assert len(dataset["train"]) + len(dataset["validation"]) == 4 and len(dataset["test"]) == 1
    names = dataset["test"].features["label"].names
    assert names == list(labels) and names[dataset["test"][0]["label"]] == "squirtle"
    sources = list(dataset["train"]["source"]) + list(dataset["validation"]["source"])
    assert "train/bulbasaur/odd name, with spaces" in sources


def test_prep_refuses_class_folders_that_differ_from_the_registry(tmp_path, characters_dir):
    for part in ("train", "validation"):
        (tmp_path / part / "pikachu").mkdir(parents=True)
    with pytest.raises(ValueError, match="expected"):
        build_characters_dataset(tmp_path, CHARACTER_SETS["pokemon"])


@pytest.fixture(scope="session")
def characters_model(tmp_path_factory, characters_dir):
    """A short real run of the prep and training scripts on the Fairy Tail set (2 epochs, 128 px)."""
    import prepare_characters
    import train_classifier

    root = tmp_path_factory.mktemp("characters")
    prepare_characters.main(["--set", "fairytail", "--characters-dir", str(characters_dir),
                             "--out", str(root / "data")])
    train_classifier.main(["--task", "characters-fairytail", "--dataset", str(root / "data"), "--epochs", "2",
                           "--img-size", "128", "--output-dir", str(root / "characters-fairytail")])
    return root / "characters-fairytail"


@pytest.fixture(scope="session")
def pictures(characters_dir):
    folder = characters_dir / "fairytail" / "validation"
    return [Image.open(sorted((folder / label).iterdir())[0]).convert("RGB") for label in ("Erza Scarlet", "Natsu Dragneel")]


@pytest.mark.slow
def test_training_cards_per_class_results(characters_model):
    results = json.loads((characters_model / "eval_results.json").read_text())
    assert set(results["metrics"]["per_class"]) == set(CHARACTER_SETS["fairytail"])
    card = (characters_model / "README.md").read_text()
    assert "| Natsu Dragneel |" in card and "RandAugment" in card and "copyrighted" in card


@pytest.mark.slow
def test_grad_cam_has_the_image_size_and_follows_input_and_class(characters_model, pictures):
    model = ImageClassifier.from_pretrained(str(characters_model))
    first, second = pictures
    heat, label = grad_cam(model, first)
    assert heat.shape == (first.height, first.width) and 0 <= heat.min() and heat.max() <= 1
    assert label == max(model.predict([first])[0], key=model.predict([first])[0].get)
    other = grad_cam(model, second)[0]
    assert other.shape == (second.height, second.width)
    resized = np.asarray(Image.fromarray(other).resize(first.size))
    assert np.abs(resized - heat).mean() > 0.01
    other_class = next(name for name in model.label_names if name != label)
    assert np.abs(grad_cam(model, first, other_class)[0] - heat).mean() > 0.01
    assert overlay(first, heat).size == first.size
    huge = first.resize((4000, 3000))  # drawn for the eye, not at 12 megapixels
    assert overlay(huge, np.zeros((3000, 4000), np.float32)).size == (1024, 768)
    small_heat, _ = grad_cam(model, huge, label, max_side=OVERLAY_MAX_SIDE)  # what the Spaces draw from
    full_heat, _ = grad_cam(model, huge, label)
    assert small_heat.shape == (768, 1024) and full_heat.shape == (3000, 4000)
    shrunk = np.asarray(Image.fromarray(full_heat).resize((1024, 768), Image.Resampling.BILINEAR))
    assert np.abs(shrunk - small_heat).max() < 0.02
    assert grad_cam(model, first, max_side=10_000)[0].shape == heat.shape
    with pytest.raises(ValueError, match="known"):
        grad_cam(model, first, "Happy")
    with pytest.raises(ValueError, match="blocks.6"):
        grad_cam(model, first, layer="head")


@pytest.mark.slow
def test_feature_maps_are_a_grid_that_changes_with_input_and_layer(characters_model, pictures):
    model = ImageClassifier.from_pretrained(str(characters_model))
    layers = feature_layers(model)
    assert layers[0] == "blocks.0" and layers[-1] == "blocks.6"
    first = np.asarray(feature_maps(model, pictures[0], "blocks.2"))
    assert first.shape == (4 * 96, 4 * 96)
    assert np.abs(first.astype(int) - np.asarray(feature_maps(model, pictures[1], "blocks.2"))).mean() > 1
    assert np.abs(first.astype(int) - np.asarray(feature_maps(model, pictures[0], "blocks.4"))).mean() > 1


@pytest.mark.slow
def test_space_explains_an_upload(characters_model, pictures, tmp_path):
    import gradio as gr

    path = tmp_path / "picture.png"
    pictures[0].save(path)
    with space_app("characters", "characters_app", IMAGEZOO_MODEL_FAIRYTAIL=str(characters_model)) as app:
        probs, cam, maps, caption = app.explain("fairytail", str(path), app.PREDICTED, "blocks.1")
        assert set(probs) == set(CHARACTER_SETS["fairytail"])
        assert cam.size == pictures[0].size and maps.size == (384, 384) and "blocks.1" in caption
        _, _, _, caption = app.explain("fairytail", str(path), "Lucy Heartfilia", "blocks.4")
        assert "Lucy Heartfilia" in caption
        predicted = max(probs, key=probs.get)  # a class of another set (a stale dropdown): the predicted one
        assert f"**{predicted}**" in app.explain("fairytail", str(path), "Goku", "blocks.1")[3]
        with pytest.raises(gr.Error):
            app.explain("fairytail", None, app.PREDICTED, "blocks.1")
        assert_uploads_reach_the_app(app.demo, tmp_path)
