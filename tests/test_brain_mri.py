"""Brain MRI: near-duplicate grouping, the three datasets, the gate (its leave-one-source-out and its
refusals), the gated pipeline in the batch job, Grad-CAM on the head, and the Space's analysis tab."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import imagehash
import matplotlib
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, SHARED_DATA, assert_uploads_reach_the_app, space_app
from PIL import Image
from scipy import ndimage
from skimage.filters import threshold_otsu

from imagezoo.brain_mri import analyse
from imagezoo.chat.answer import percent
from imagezoo.data import load_splits
from imagezoo.data.brain import DETECT_LABELS, GATE_LABELS, TYPE_LABELS
from imagezoo.data.near_duplicates import near_duplicate_groups
from imagezoo.explain import grad_cam
from imagezoo.inference import ImageClassifier
from imagezoo.predictors import load_predictor
from imagezoo.predictors.gated import GatedClassifier
from imagezoo.tasks import DECISIVE_KEY, get_task

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MRI_DIR = SHARED_DATA / "brain-tumor-mri" / "Training"


def mri_slice(label: str = "glioma", index: int = 0) -> Image.Image:
    return Image.open(sorted((MRI_DIR / label).iterdir())[index]).convert("RGB")


def chart() -> Image.Image:
    """A bar chart drawn here, unlike the prep's synthetic ones."""
    figure, axes = plt.subplots(figsize=(3, 2.4), dpi=80)
    axes.bar(["a", "b", "c", "d"], [3, 7, 2, 5], color="tab:green")
    axes.set_title("sales")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return Image.open(buffer).convert("RGB")


def cat_photo() -> Image.Image:
    import skimage.data

    return Image.fromarray(skimage.data.chelsea())


def test_near_duplicate_groups_join_copies_and_keep_different_images_apart():
    first, second = mri_slice("glioma", 0), mri_slice("pituitary", 3)
    buffer = io.BytesIO()
    first.save(buffer, format="JPEG", quality=60)
    recoded = Image.open(buffer).convert("RGB")
    resized = first.resize((first.width // 2, first.height // 2))
    hashes = [imagehash.phash(image) for image in (first, recoded, resized, second)]
    groups = near_duplicate_groups(hashes, max_bits=6)
    assert groups[0] == groups[1] == groups[2]
    assert groups[3] != groups[0]


def test_prep_writes_three_datasets_with_no_group_or_near_copy_across_splits(brain_data):
    splits = {name: load_splits(str(brain_data / name)) for name in
              ("brain-tumor-type", "brain-tumor-detect", "brain-mri-gate")}
    assert splits["brain-tumor-type"]["train"].features["label"].names == list(TYPE_LABELS)
    assert splits["brain-tumor-detect"]["train"].features["label"].names == list(DETECT_LABELS)
    assert splits["brain-mri-gate"]["train"].features["label"].names == list(GATE_LABELS)
    # every MRI group, over all three datasets, lives in exactly one split
    split_of = {}
    for name, dataset in splits.items():
        for split in dataset:
            for group, label in zip(dataset[split]["group"], dataset[split]["label"]):
                if name != "brain-mri-gate" or label == 0:
                    assert split_of.setdefault(group, split) == split, f"group {group} in two splits"
    # and no two type images closer than the grouping threshold sit in different splits
    rows = [(split, imagehash.phash(image)) for split in ("train", "test")
            for image in splits["brain-tumor-type"][split]["image"]]
    groups = near_duplicate_groups([h for _, h in rows], max_bits=6)
    for group in set(groups.tolist()):
        assert len({rows[i][0] for i in np.flatnonzero(groups == group)}) == 1
    # every negative source reached the gate, and the PNGs named .jpg loaded
    sources = set(splits["brain-mri-gate"]["train"]["source"]) | set(splits["brain-mri-gate"]["test"]["source"])
    assert {"cats-dogs", "ldc", "dsb2018", "characters-pokemon", "synthetic-plot", "brain-tumor-mri"} <= sources
    card = (brain_data / "brain-mri-gate" / "README.md").read_text()
    assert "perceptual hash" in card and "optimistic" in card


def test_leave_one_source_out_measures_each_view_on_its_own_splits():
    from imagezoo.gate import leave_one_source_out

    rng = np.random.default_rng(0)
    # "scans": a source seen only by the test split
    split_sources = {"train": ["mri-a", "mri-b", "cats", "plots"] * 10,
                     "validation": ["mri-a", "mri-b", "cats", "plots"] * 4,
                     "test": ["mri-a", "mri-b", "cats", "plots", "scans"] * 3}
    sources = {split: np.array(names) for split, names in split_sources.items()}
    labels = {split: (~np.char.startswith(names, "mri")).astype(int) for split, names in sources.items()}  # 0: accepted
    features = {split: rng.normal(size=(len(names), 4)) + 3 * labels[split][:, None] for split, names in sources.items()}
    folds = leave_one_source_out(features, labels, sources, accept=0,
                                 views={"decision": ("train", "validation"), "report": ("train", "validation", "test")})
    assert set(folds["decision"]) == {"mri-a", "mri-b", "cats", "plots"}
    assert set(folds["report"]) == {"mri-a", "mri-b", "cats", "plots", "scans"}
    assert folds["decision"]["cats"]["n"] == 10 + 4 and folds["report"]["cats"]["n"] == 10 + 4 + 3
    for source, row in folds["decision"].items():  # a fold's test acceptance does not depend on the view
        assert row["probe: test accepted"] == folds["report"][source]["probe: test accepted"]
    assert folds["report"]["scans"]["probe"] == 1.0 and folds["report"]["mri-b"]["accepted_class"]


@pytest.mark.slow  # brain_models trains the gate and the type model
def test_gate_reports_leave_one_source_out_per_source(brain_models):
    results = json.loads((brain_models / "brain-mri-gate" / "eval_results.json").read_text())
    gate = results["gate"]
    negatives = [s for s, row in gate["loso"].items() if not row["accepted_class"]]
    assert len(negatives) >= 10 and "brain-tumor-detection" in gate["loso"]
    for row in gate["loso"].values():
        assert 0.0 <= row["probe"] <= 1.0 and row["n"] > 0
    assert gate["min_refused_loso"] == min(gate["loso"][s]["probe"] for s in negatives)
    # even this small gate (40 slices a class) accepts MRI and refuses what it was trained to refuse
    assert gate["accepted_mri"] >= 0.95 and gate["refused_test"] >= 0.95
    card = (brain_models / "brain-mri-gate" / "README.md").read_text()
    assert "Leave-one-source-out" in card and "`synthetic-plot`" in card
    assert "--model hf-hub:imagezoo/brain-tumor-type --gate hf-hub:imagezoo/brain-mri-gate" in card


@pytest.mark.slow  # brain_models trains the gate and the type model
def test_gate_refuses_a_cat_a_chart_and_blank_images_and_accepts_mri(brain_models):
    gate = ImageClassifier.from_pretrained(str(brain_models / "brain-mri-gate"))
    assert gate.label_names == GATE_LABELS and gate.config["accept_label"] == "mri"
    refused = [cat_photo(), chart(), Image.new("RGB", (200, 200), "white"), Image.new("RGB", (200, 200), "black"),
               Image.new("RGB", (200, 200), (128, 128, 128))]
    probs = gate.predict_images(refused)
    assert (probs.argmax(axis=1) == GATE_LABELS.index("other")).all(), probs
    accepted = gate.predict_images([mri_slice(label, 50) for label in TYPE_LABELS])  # past the prep's first 40
    assert (accepted.argmax(axis=1) == GATE_LABELS.index("mri")).all(), accepted


@pytest.mark.slow  # brain_models trains the gate and the type model
def test_gated_pipeline_gives_no_tumour_output_to_refused_images(brain_models):
    pipeline = load_predictor(str(brain_models / "brain-tumor-type"), gate=str(brain_models / "brain-mri-gate"))
    mri, cat = analyse(pipeline, mri_slice("meningioma", 60)), analyse(pipeline, cat_photo())
    assert mri.accepted and mri.label in TYPE_LABELS and abs(sum(mri.probabilities.values()) - 1) < 1e-4
    assert mri.tumour_probability == pytest.approx(1 - mri.probabilities["notumor"])
    first, second = sorted(mri.probabilities.values(), reverse=True)[:2]
    assert mri.decisive == (first - second >= pipeline.classifier.decisive_margin)
    assert not cat.accepted and cat.gate == "other"
    assert cat.label is None and cat.probabilities is None and cat.tumour_probability is None and cat.decisive is None


@pytest.mark.slow  # brain_models trains the gate and the type model
def test_the_type_model_is_served_behind_its_gate_unless_told_otherwise(brain_models, tmp_path):
    type_folder = brain_models / "brain-tumor-type"
    assert json.loads((type_folder / "config.json").read_text())["gate"] == "brain-mri-gate"
    default = load_predictor(str(type_folder))  # the gate beside it, found from the config
    assert isinstance(default, GatedClassifier)
    assert Path(default.gate.model_id).resolve() == (brain_models / "brain-mri-gate").resolve()
    assert not analyse(default, cat_photo()).accepted
    alone = load_predictor(str(type_folder), gate=False)
    assert isinstance(alone, ImageClassifier) and alone.load_spec["gate"] is False  # a Ray actor loads it alone too
    shutil.copytree(type_folder, tmp_path / "brain-tumor-type")  # without its gate beside it: a clear error
    with pytest.raises(FileNotFoundError, match="served behind the gate 'brain-mri-gate'.*--no-gate"):
        load_predictor(str(tmp_path / "brain-tumor-type"))


@pytest.mark.slow  # brain_models trains the gate and the type model
def test_batch_job_with_a_gate(brain_models, tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    for label in TYPE_LABELS:
        mri_slice(label, 70).save(scans / f"{label}.png")
    cat_photo().save(scans / "cat.jpg")
    chart().save(scans / "chart", format="PNG")  # no extension
    (scans / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    out = tmp_path / "scans.parquet"
    subprocess.run([sys.executable, str(ROOT / "jobs" / "batch_predict.py"), "--dir", str(scans),
                    "--model", str(brain_models / "brain-tumor-type"), "--gate", str(brain_models / "brain-mri-gate"),
                    "--out", str(out), "--num-workers", "1", "--no-progress"], check=True)
    rows = {row["path"]: row for row in pq.read_table(out).to_pylist()}
    assert len(rows) == 7
    assert rows["broken.jpg"]["error"] and rows["broken.jpg"]["gate"] is None
    for name in ("cat.jpg", "chart"):
        assert rows[name]["gate"] == "other" and rows[name]["label"] is None and rows[name]["prob_glioma"] is None
        assert rows[name]["gate_score"] < 0.5 and rows[name]["decisive"] is None
    for label in TYPE_LABELS:
        row = rows[f"{label}.png"]
        assert row["gate"] == "mri" and row["gate_score"] >= 0.5 and row["label"] in TYPE_LABELS
        top, second = sorted((row[f"prob_{name}"] for name in TYPE_LABELS), reverse=True)[:2]
        assert row["decisive"] == (top - second >= get_task("brain-tumor-type").model_config[DECISIVE_KEY])
        assert row["model_revision"].endswith(load_predictor(str(brain_models / "brain-mri-gate")).revision)


def head_mask(image: Image.Image) -> np.ndarray:
    """The head: pixels brighter than Otsu's threshold, holes filled (the background of a slice is dark)."""
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    return ndimage.binary_fill_holes(ndimage.binary_closing(grey > threshold_otsu(grey), iterations=3))


@pytest.mark.slow  # brain_models trains the gate and the type model
def test_grad_cam_is_image_sized_and_lies_on_the_head(brain_models, brain_data):
    model = ImageClassifier.from_pretrained(str(brain_models / "brain-tumor-type"))
    test = load_splits(str(brain_data / "brain-tumor-type"))["test"]
    fractions = []
    for image in test["image"][:16]:
        heat, _ = grad_cam(model, image)
        assert heat.shape == (image.height, image.width)
        mask = head_mask(image)
        if heat.sum() > 0:
            fractions.append(heat[mask].sum() / heat.sum())
    assert len(fractions) >= 12
    assert np.mean(fractions) > 0.5, fractions
    # the map is the explained class's: another class's evidence lies elsewhere on the same slice
    image = test["image"][0]
    heat, shown = grad_cam(model, image)
    other = next(label for label in model.label_names if label != shown)
    assert np.abs(grad_cam(model, image, other)[0] - heat).mean() > 0.01


@pytest.mark.slow  # brain_models trains the gate and the type model
def test_tumour_detection_comparison_ships_the_better_and_cards_both(brain_models, brain_data, tmp_path):
    """``compare_tumor_detection.py``: both models scored on the yes/no splits, the winner by validation
    balanced accuracy (then ROC-AUC; it was chosen on test before a review), test reported, one section in
    both cards however often it runs."""
    import compare_tumor_detection
    import train_classifier

    type_model = tmp_path / "brain-tumor-type"
    shutil.copytree(brain_models / "brain-tumor-type", type_model)
    detector = tmp_path / "brain-tumor-detect"
    train_classifier.main(["--task", "brain-tumor-detect", "--dataset", str(brain_data / "brain-tumor-detect"),
                           "--epochs", "1", "--img-size", "128", "--output-dir", str(detector)])
    argv = ["--type-model", str(type_model), "--detect-model", str(detector),
            "--dataset", str(brain_data / "brain-tumor-detect")]
    compare_tumor_detection.main(argv)
    result = compare_tumor_detection.main(argv)  # a re-run replaces the section
    n_test = len(load_splits(str(brain_data / "brain-tumor-detect"))["test"])
    assert result["n"] == n_test and 0 < result["n_tumour"] < n_test
    (type_name, type_row), (detect_name, detect_row) = result["models"].items()
    n_validation = len(load_splits(str(brain_data / "brain-tumor-detect"))["validation"])
    assert result["validation"]["n"] == n_validation
    chosen_on = result["validation"]["models"]
    key = ("balanced_accuracy", "roc_auc")
    detector_wins = tuple(chosen_on[detect_name][k] for k in key) > tuple(chosen_on[type_name][k] for k in key)
    assert result["shipped"] == (detect_name if detector_wins else type_name)
    assert chosen_on[type_name] != type_row  # another split's numbers
    assert result["versus"]["difference"] == pytest.approx(type_row["balanced_accuracy"] - detect_row["balanced_accuracy"])
    for folder in (type_model, detector):
        assert json.loads((folder / "tumor_detection.json").read_text()) == result
        card = (folder / "README.md").read_text()
        assert card.count("<!-- tumor-detection -->") == 1 and f"{detect_row['roc_auc']:.4f}" in card


def test_space_refuses_a_cat_and_analyses_an_mri(brain_models, brain_data, tmp_path, monkeypatch):
    with space_app("brain_mri", "brain_space", IMAGEZOO_MODEL=str(brain_models / "brain-tumor-type"),
                   IMAGEZOO_GATE=str(brain_models / "brain-mri-gate")) as app:
        demo = app.build_demo()
        assert "never a diagnosis" in app.NOTICE
        cat = ROOT / "test-artifacts" / "cat.jpg"
        cat.parent.mkdir(exist_ok=True)
        cat_photo().save(cat)
        verdict, tumour, types, cam, scan = app.analyse_upload(str(cat))
        assert "Refused" in verdict and tumour is None and types is None and cam is None
        assert scan["gate"] == "other"
        example = sorted((brain_data / "examples").glob("*.jpg"))[0]
        verdict, tumour, types, cam, scan = app.analyse_upload(str(example))
        assert "Brain MRI slice" in verdict and {c["label"] for c in types.value["confidences"]} == set(TYPE_LABELS)
        assert types.show_heading == scan["decisive"]  # a class as the headline only when the slice is decisive
        assert cam.size == Image.open(example).size and scan["label"] in TYPE_LABELS
        with monkeypatch.context() as patch:  # no margin is wide enough: the same slice, not decisive
            patch.setitem(app.pipeline().classifier.config, DECISIVE_KEY, 1.01)
            undecided, _, undecided_types, _, undecided_scan = app.analyse_upload(str(example))
        ranked = sorted(undecided_scan["probabilities"].items(), key=lambda item: -item[1])
        assert "Not decisive" in undecided and "within 101%" in undecided and not undecided_types.show_heading
        assert all(f"{label} ({percent(p)})" in undecided for label, p in ranked[:2])
        assert_uploads_reach_the_app(demo, tmp_path)
        # the chat tab: the last analysis, in the question's language, and the served models' own numbers
        reply = app.respond("¿Qué significa mi resultado?", [], scan)
        shown = percent(scan["probability"]) if scan["decisive"] else "no fue concluyente"
        assert shown in reply and "no es un diagnóstico" in reply
        # a new picture is analysed as it lands, its first output forgetting the previous result (the chat's
        # scan included); a removed picture leaves nothing
        import gradio as gr

        (analysis,) = [f for f in demo.fns.values() if f.name == "analyse_upload_on_upload"]
        assert [event for _, event in analysis.targets] == ["change"] and isinstance(analysis.outputs[-1], gr.State)
        first, result = analysis.fn(str(example))
        assert first == app.NO_ANALYSIS and first[-1] is None and result[0] == verdict
        accuracy = json.loads((brain_models / "brain-tumor-type" / "eval_results.json").read_text())["metrics"]["accuracy"]
        assert f"{100 * accuracy:.1f}%" in app.respond("How accurate is the tumour type classifier?", [], None)
