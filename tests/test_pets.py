"""Cats / dogs / neither: negatives, the prepared dataset, open-set metrics, the model folder with its
ONNX runtimes, the batch job and the Space (the real-browser webcam test is test_webcam_browser.py)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import onnx
import pyarrow.parquet as pq
import pytest
import torch
from conftest import SHARED_DATA, assert_uploads_reach_the_app, space_app
from PIL import Image

from imagezoo.batch import run_job
from imagezoo.data import load_splits
from imagezoo.data.pets import LABEL_NAMES, build_pets_dataset
from imagezoo.data.synthetic import GENERATORS, synthetic_images
from imagezoo.export import RUNTIME_FILES, STEM_PREFIXES, choose_runtime
from imagezoo.inference import ImageClassifier
from imagezoo.open_set import open_set_metrics, threshold_keeping, with_threshold

PETS_DIR = SHARED_DATA / "cats-dogs" / "train"


@pytest.mark.parametrize("family", sorted(GENERATORS))
def test_synthetic_families_are_rgb_and_reproducible(family):
    first, again, other = (synthetic_images(family, 3, seed) for seed in (0, 0, 1))
    assert all(im.mode == "RGB" and im.size == (224, 224) for im in first)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, again))
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, other))


def test_unknown_synthetic_family_lists_the_known_ones():
    with pytest.raises(KeyError, match="noise"):
        synthetic_images("fractal", 1, 0)


def test_pets_dataset_labels_splits_and_held_out_sources(tmp_path):
    if not PETS_DIR.is_dir():
        pytest.skip("cats-dogs data not found")
    pets = tmp_path / "train"
    pets.mkdir()
    for name in ["cat.0.jpg", "cat.1.jpg", "dog.0.jpg", "dog.1.jpg"]:
        (pets / name).write_bytes((PETS_DIR / name).read_bytes())
    (pets / "cat.2.jpg").write_bytes((PETS_DIR / "cat.0.jpg").read_bytes())  # a byte-identical copy
    (pets / "dog.9.jpg").write_bytes((PETS_DIR / "dog.0.jpg").read_bytes()[:200])  # truncated
    (pets / "notes.txt").write_text("not a pet")  # not in the cat.N / dog.N layout: ignored
    dataset, report = build_pets_dataset(pets, SHARED_DATA, {"synthetic-flat": 4, "ldc": 3},
                                         {"synthetic-plot": 2, "characters-anime": 3})
    rows = [row for split in dataset for row in dataset[split].remove_columns("image")]
    assert report.duplicates == 1 and [path for path, _ in report.skipped] == ["dog.9.jpg"]
    pet_rows = [row for row in rows if row["source"] == "kaggle-dogs-vs-cats"]
    assert sorted(LABEL_NAMES[row["label"]] for row in pet_rows) == ["cat", "cat", "dog", "dog"]
    held_out = [row for row in rows if row["held_out"]]
    assert {row["source"] for row in held_out} == {"synthetic-plot", "characters-anime"} and len(held_out) == 5
    assert all(row in dataset["test"].remove_columns("image") for row in held_out)
    assert all(LABEL_NAMES[row["label"]] == "neither" for row in rows if row["source"] != "kaggle-dogs-vs-cats")
    hashes = [row["image_sha256"] for row in rows]
    assert len(hashes) == len(set(hashes))
    assert max(max(im.size) for split in dataset for im in dataset[split]["image"]) <= 256


def test_open_set_metrics_by_hand():
    names = ("cat", "dog", "neither")
    y_true = [0, 0, 1, 1, 2, 2, 2, 2]
    predicted = [0, 2, 1, 0, 2, 2, 0, 2]
    sources = ["pets"] * 4 + ["seen", "seen", "unseen", "unseen"]
    held_out = [False] * 6 + [True, True]
    metrics = open_set_metrics(y_true, predicted, names, sources, held_out, "neither")
    assert metrics["known_accuracy"] == 0.5 and metrics["kept"] == 0.75 and metrics["kept_accuracy"] == 2 / 3
    assert metrics["refused_fit_sources"] == 1.0 and metrics["refused_held_out"] == 0.5
    assert metrics["per_source"]["unseen"] == {"n": 2, "refused": 0.5, "held_out": True}
    assert metrics["min_refused_held_out"] == 0.5


def test_confidence_threshold_refuses_only_uncertain_known_classes():
    probs = np.array([[0.9, 0.05, 0.05], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
    assert with_threshold(probs, ("cat", "dog", "neither"), 0.6, "neither").tolist() == [0, 2, 2]
    # the reject label is the task's, wherever it stands (the brain gate's is "other", first)
    assert with_threshold(probs[:, ::-1], ("other", "dog", "cat"), 0.6, "other").tolist() == [2, 0, 0]
    assert threshold_keeping(np.array([0.1, 0.5, 0.9, 0.95]), 0.75) == 0.5


def test_runtime_choice_is_the_fastest_that_keeps_accuracy_and_labels():
    rows = [
        {"runtime": "torch", "validation_accuracy": 0.990, "validation_agreement_with_torch": 1.0, "p95_ms": 20.0},
        {"runtime": "onnx", "validation_accuracy": 0.990, "validation_agreement_with_torch": 1.0, "p95_ms": 9.0},
        {"runtime": "onnx-int8", "validation_accuracy": 0.984, "validation_agreement_with_torch": 0.995,
         "p95_ms": 6.0},  # -0.6 points
    ]
    assert choose_runtime(rows) == "onnx"
    rows[2]["validation_accuracy"] = 0.986
    assert choose_runtime(rows) == "onnx-int8"
    rows[2]["validation_agreement_with_torch"] = 0.95  # as accurate, but on other images
    assert choose_runtime(rows) == "onnx"


@pytest.mark.slow
def test_training_exports_timm_folder_with_onnx_runtimes_and_an_open_set_card(pets_model, pets_dataset):
    config = json.loads((pets_model / "config.json").read_text())
    assert config["label_names"] == ["cat", "dog", "neither"]
    assert config["runtime"] in ("torch", "onnx", "onnx-int8")
    assert all((pets_model / name).is_file() for name in RUNTIME_FILES.values())
    assert [p.name for p in pets_model.parent.iterdir()] == ["cats-dogs"]  # written in a staging folder, swapped in
    results = json.loads((pets_model / "eval_results.json").read_text())
    assert {row["runtime"] for row in results["runtimes"]} == {"torch", "onnx", "onnx-int8"}
    for row in results["runtimes"]:  # chosen on validation, reported on test
        for split in ("validation", "test"):
            assert {f"{split}_accuracy", f"{split}_agreement_with_torch"} <= set(row)
    assert choose_runtime(results["runtimes"]) == config["runtime"]
    # a head-only recipe: our head, or the ImageNet head and the Mahalanobis distance vetoing together
    assert results["open_set"]["served"] == "third class, or ImageNet head and Mahalanobis distance both beyond theirs"
    backstop = config["backstop"]
    assert backstop["file"] == "backstop.safetensors" and backstop["kind"] == "any-keeps"
    imagenet, mahalanobis = backstop["parts"]
    assert 0 < imagenet["min_mass"] < 1 and mahalanobis["max_distance"] > 0
    served = results["open_set"]["candidates"][results["open_set"]["served"]]
    assert {"characters-anime", "synthetic-plot", "dsb2018"} <= set(served["per_source"])
    assert len(results["open_set"]["candidates"]) == 5
    card = (pets_model / "README.md").read_text()
    assert "| `characters-anime` | yes |" in card and "(**served**)" in card
    assert "model-index above, are the PyTorch weights' (`model.safetensors`, what timm loads)" in card
    served_row = next(row for row in results["runtimes"] if row["runtime"] == config["runtime"])
    assert (config["runtime"] == "torch") != (f"test accuracy is {served_row['test_accuracy']:.4f}" in card)
    assert "ImageNet head mass on our classes" in card
    # trained on the fixture's --dataset: the card says so instead of naming the task's data
    assert f"`{pets_dataset}`, given with `--dataset`" in card and f"the test split of `{pets_dataset}`" in card


@pytest.mark.slow
def test_onnx_and_torch_runtimes_agree(pets_model, pets_dataset):
    images = load_splits(str(pets_dataset))["test"]["image"][:24]
    probs = {runtime: ImageClassifier.from_pretrained(str(pets_model), runtime=runtime).predict_images(images)
             for runtime in ("torch", "onnx", "onnx-int8")}
    np.testing.assert_allclose(probs["onnx"], probs["torch"], atol=1e-4)
    np.testing.assert_allclose(probs["onnx-int8"].sum(1), 1, atol=1e-4)  # how close it comes is measured in training
    # the int8 graph keeps its head float32: a vetoed image's cat and dog are log(1e-12) as in torch, not -inf
    int8 = ImageClassifier.from_pretrained(str(pets_model), runtime="onnx-int8")
    every_test_image = load_splits(str(pets_dataset))["test"]["image"]
    outputs = int8.runner(torch.stack([int8.preprocess(image) for image in every_test_image]))
    vetoed = outputs.softmax(-1)[:, LABEL_NAMES.index("neither")] > 0.999
    assert vetoed.any() and torch.isfinite(outputs).all()
    # ... and its stem: every convolution reads int8 weights except the stem's
    graph = onnx.load(str(pets_model / RUNTIME_FILES["onnx-int8"])).graph
    dequantized = {output for node in graph.node if node.op_type == "DequantizeLinear" for output in node.output}
    convs = {node.name: bool(set(node.input) & dequantized) for node in graph.node if node.op_type == "Conv"}
    assert {name for name, quantized in convs.items() if not quantized} == {
        name for name in convs if name.startswith(STEM_PREFIXES)} != set()
    # a spawned batch-job worker gets the predictor pickled: the session is rebuilt there, not copied
    unpickled = pickle.loads(pickle.dumps(ImageClassifier.from_pretrained(str(pets_model), runtime="onnx")))
    np.testing.assert_allclose(unpickled.predict_images(images), probs["onnx"], atol=1e-6)
    with pytest.raises(ValueError, match="known"):
        ImageClassifier.from_pretrained(str(pets_model), runtime="tensorrt")


@pytest.mark.slow
def test_batch_job_labels_every_photo_cat_dog_or_neither(pets_model, pets_dataset, bad_files, tmp_path_factory):
    folder = bad_files["good"].parent
    for i, row in enumerate(load_splits(str(pets_dataset))["test"].select(range(6))):
        row["image"].save(folder / f"test_{i}.jpg")
    Image.new("RGB", (64, 64), (200, 200, 200)).save(folder / "blank.png")
    out = tmp_path_factory.mktemp("pets_job") / "pets.parquet"  # not inside the scored folder
    summary = run_job(folder, str(pets_model), out, progress=False)
    table = pq.read_table(out).to_pylist()
    assert len(table) == len(list(folder.iterdir()))
    scored = [row for row in table if not row["error"]]
    assert summary.scored == len(scored) == 9 and summary.errors == 5
    for row in scored:
        assert row["label"] in LABEL_NAMES
        assert row["prob_cat"] + row["prob_dog"] + row["prob_neither"] == pytest.approx(1, abs=1e-4)
    # a worker with 2 threads is spawned, so it gets the (ONNX-served) predictor pickled: same labels
    spawned = out.with_name("spawned.parquet")
    run_job(folder, str(pets_model), spawned, progress=False, num_workers=1, threads=2)
    by_path = {row["path"]: row["label"] for row in table}
    assert {row["path"]: row["label"] for row in pq.read_table(spawned).to_pylist()} == by_path


@pytest.fixture(scope="module")
def app(pets_model):
    with space_app("cats_dogs", "cats_dogs_app", IMAGEZOO_MODEL=str(pets_model)) as module:
        yield module


@pytest.mark.slow
def test_space_photo_tab_and_webcam_frames(app, pets_dataset, bad_files, tmp_path):
    import gradio as gr

    assert_uploads_reach_the_app(app.demo, tmp_path)
    image = load_splits(str(pets_dataset))["test"]["image"][0]
    probs = app.classify(image)
    assert set(probs) == {"cat", "dog", "neither"} and sum(probs.values()) == pytest.approx(1, abs=1e-4)
    with pytest.raises(gr.Error):
        app.classify(None)
    with pytest.raises(gr.Error, match="truncated"):
        app.classify(str(bad_files["truncated"]))
    frame = np.asarray(image.convert("RGB").resize((320, 240)))
    session = None
    for _ in range(3):
        live, status, session = app.classify_frame(frame, session)
    assert live == pytest.approx(probs, abs=0.05)  # a resized frame of the same photo
    assert "frames/s" in status and "320x240" in status and len(session["times"]) == 3
    assert app.classify_frame(None, session)[0] is None


def test_backstop_vetoes_known_classes_only_below_its_mass():
    import timm
    import torch

    from imagezoo.open_set import ImageNetBackstop, served_network

    model = timm.create_model("tf_efficientnet_lite0", num_classes=3).eval()
    features = model.num_features
    bias = torch.full((10,), -20.0)
    bias[4] = 20.0  # the stand-in "ImageNet head" always puts its mass on class 4
    weight = torch.zeros(10, features)
    x = torch.randn(2, 3, 64, 64)
    plain = model(x).softmax(-1)
    keeps = served_network(model, ImageNetBackstop(weight, bias, [4, 5], 0.5), ("cat", "dog", "neither"), "neither")
    vetoes = served_network(model, ImageNetBackstop(weight, bias, [5, 6], 0.5), ("cat", "dog", "neither"), "neither")
    with torch.no_grad():
        torch.testing.assert_close(keeps(x).softmax(-1), plain, atol=1e-6, rtol=0)
        assert vetoes(x).softmax(-1).argmax(-1).tolist() == [2, 2]
        assert vetoes(x).softmax(-1)[:, 2].min() > 0.999
    assert served_network(model, None, ("cat", "dog", "neither"), "neither") is model


def test_an_imagenet_backstop_fitted_on_known_images_keeps_the_share_asked_for():
    import torch

    from imagezoo.open_set import ImageNetBackstop

    generator = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(10, 8, generator=generator), torch.zeros(10)
    known = torch.randn(200, 8, generator=generator)
    backstop = ImageNetBackstop.fit(weight, bias, [4, 5], known, keep=0.95)
    assert backstop.keep(known).float().mean() >= 0.95
    stricter = ImageNetBackstop(weight, bias, [4, 5], backstop.min_mass + 1e-6)
    assert stricter.keep(known).float().mean() < 0.95  # the largest threshold that keeps 95%


def test_backstops_that_veto_together_keep_what_either_keeps_and_survive_a_save(tmp_path):
    import torch
    from safetensors.torch import load_file

    from imagezoo.open_set import AnyKeeps, ImageNetBackstop, MahalanobisBackstop, load_backstop, save_backstop

    features = torch.cat([torch.zeros(1, 8), torch.full((1, 8), 10.0)])  # one near the mean, one far
    bias = torch.full((10,), -20.0)
    bias[4] = 20.0
    imagenet_vetoes = ImageNetBackstop(torch.zeros(10, 8), bias, [5, 6], 0.5)  # refuses everything
    imagenet_keeps = ImageNetBackstop(torch.zeros(10, 8), bias, [4], 0.5)  # keeps everything
    near = MahalanobisBackstop(torch.zeros(8), torch.eye(8), max_distance=1.0)  # keeps the first only
    assert AnyKeeps([imagenet_vetoes, near]).keep(features).tolist() == [True, False]
    assert AnyKeeps([imagenet_keeps, near]).keep(features).tolist() == [True, True]

    spec = save_backstop(AnyKeeps([imagenet_vetoes, near]), tmp_path, "neither", "test")
    assert spec["kind"] == "any-keeps" and [part["kind"] for part in spec["parts"]] == ["imagenet-head", "mahalanobis"]
    reloaded = load_backstop(load_file(tmp_path / spec["file"]), json.loads(json.dumps(spec)))
    assert reloaded.keep(features).tolist() == [True, False]
    torch.testing.assert_close(reloaded.parts[1].precision, torch.eye(8, dtype=torch.float64))


@pytest.mark.slow
def test_a_changed_runtime_choice_is_a_new_local_revision(pets_model, tmp_path):
    import shutil

    from imagezoo.predictors import resolve_model_folder

    copy = tmp_path / "cats-dogs"
    shutil.copytree(pets_model, copy)
    before = resolve_model_folder(str(copy))[1]
    config = json.loads((copy / "config.json").read_text())
    config["runtime"] = "torch" if config["runtime"] != "torch" else "onnx"
    (copy / "config.json").write_text(json.dumps(config))
    assert resolve_model_folder(str(copy))[1] != before and len(before) == 12
