"""Shared fixtures: real LDC and DSB2018 files from ../shared/data and short real training runs."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import struct
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("IMAGEZOO_SHARED_DATA", ROOT.parent / "shared" / "data"))
LDC_DIR = SHARED_DATA / "ldc" / "Original Dataset"

# one slide of every image mode in LDC, plus a slide with no annotated cell
LDC_SAMPLES = {
    "RGB": "b (1829).png",
    "L": "image1132.png",
    "P": "c (5).png",
    "RGBA": "c (100).png",
    "I;16": "image1552.png",
    "no_boxes": "cell (285).png",
}

DSB_DIR = SHARED_DATA / "dsb2018" / "stage1_train"
# small DSB2018 samples of every image type: fluorescence, H&E histology, bright-field
DSB_SAMPLES = [
    "003cee89357d9fe13516167fd67b609a164651b21934585648c740d2c3d86dc1",
    "0280fa8f60f6bcae0f97d93c28f60be194f9309ff610dc5845e60455b0f87c21",
    "03398329ced0c23b9ac3fac84dd53a87d9ffe4d9d10f1b5fe8df8fac12380776",
    "0121d6759c5adb290c8e828fc882f37dfaf3663ec885c663859948c154a443ed",
    "01d44a26f6680c42ba94c9bc6339228579a95d0e2695b149b7cc0c9592b21baf",
    "0bf33d3db4282d918ec3da7112d0bf0427d4eafe74b3ee0bb419770eefe8d7d6",
    "1a11552569160f0b1ea10bedbd628ce6c14f29edec5092034c2309c556df833e",
    "1b44d22643830cd4f23c9deadb0bd499fb392fb2cd9526d81547d93077d983df",
]

sys.path.insert(0, str(ROOT / "training"))


def require_ldc() -> Path:
    if not LDC_DIR.is_dir():
        pytest.skip(f"LDC data not found at {LDC_DIR} (set IMAGEZOO_SHARED_DATA)")
    return LDC_DIR


@pytest.fixture(scope="session")
def ldc_dir() -> Path:
    return require_ldc()


@pytest.fixture(scope="session")
def ldc_sample_dir(tmp_path_factory, ldc_dir) -> Path:
    """A small LDC-layout folder: the sample slides with their XML, nothing else."""
    folder = tmp_path_factory.mktemp("ldc_sample")
    for name in LDC_SAMPLES.values():
        for suffix in (".png", ".xml"):
            shutil.copy(ldc_dir / name.replace(".png", suffix), folder / name.replace(".png", suffix))
    return folder


@pytest.fixture(scope="session")
def ldc_crops(tmp_path_factory, ldc_dir) -> Path:
    """The full prepared crop dataset, written by the real prep script."""
    import prepare_ldc

    out = tmp_path_factory.mktemp("data") / "ldc-crops"
    prepare_ldc.main(["--ldc-dir", str(ldc_dir), "--out", str(out), "--examples-dir", str(out.parent / "examples")])
    return out


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, ldc_crops) -> Path:
    """A short real fine-tuning run (2 epochs on 1200 crops) exported to a model folder."""
    import train_classifier

    out = tmp_path_factory.mktemp("models") / "ldc-live-dead"
    train_classifier.main(
        ["--dataset", str(ldc_crops), "--epochs", "2", "--max-train-samples", "1200", "--output-dir", str(out)]
    )
    return out


@pytest.fixture(scope="session")
def dsb_dir() -> Path:
    if not DSB_DIR.is_dir():
        pytest.skip(f"DSB2018 data not found at {DSB_DIR} (set IMAGEZOO_SHARED_DATA)")
    return DSB_DIR


@pytest.fixture(scope="session")
def dsb_sample_ids(dsb_dir) -> list[str]:
    return DSB_SAMPLES


@pytest.fixture(scope="session")
def nuclei_model(tmp_path_factory, dsb_dir) -> Path:
    """A short real run of the prep and training scripts on the DSB samples (1 epoch, 128 px crops)."""
    import prepare_dsb2018
    import train_segmenter

    root = tmp_path_factory.mktemp("nuclei")
    samples = root / "stage1_train"
    for sample in DSB_SAMPLES:
        shutil.copytree(dsb_dir / sample, samples / sample)
    dataset, out = root / "dsb2018-nuclei", root / "nuclei-unet"
    prepare_dsb2018.main(["--dsb-dir", str(samples), "--out", str(dataset)])
    train_segmenter.main([
        "--dataset", str(dataset), "--output-dir", str(out), "--epochs", "1", "--crop-size", "128",
        "--batch-size", "4", "--thresholds", "0.4", "0.5", "--min-sizes", "10",
    ])
    return out


@pytest.fixture(scope="session")
def ldc_subset_dir(tmp_path_factory, ldc_dir, ldc_crops) -> Path:
    """The first 160 LDC slides (with their XML) in an LDC-layout folder that have no near-copy among the
    other slides of the full crop dataset: a near-copy's split follows its group, which a subset cuts, and
    the counter's training refuses a crop classifier trained on a near-copy of a slide it tests on."""
    import imagehash

    from imagezoo.data import load_splits
    from imagezoo.data.ldc import NEAR_DUPLICATE_BITS
    from imagezoo.data.near_duplicates import near_copies
    from imagezoo.images import load_image

    crops = load_splits(str(ldc_crops))
    hashes = {row["source"]: row["image_phash"] for split in crops.values()
              for row in split.select_columns(["source", "image_phash"])}
    folder = tmp_path_factory.mktemp("ldc_subset")
    kept = 0
    for xml in sorted(ldc_dir.glob("*.xml")):
        image = xml.with_suffix(".png")
        others = [phash for source, phash in hashes.items() if source != image.name]
        if near_copies(others, [str(imagehash.phash(load_image(image)))], NEAR_DUPLICATE_BITS):
            continue
        for path in (xml, image):
            shutil.copy(path, folder / path.name)
        kept += 1
        if kept == 160:
            return folder
    raise AssertionError("fewer than 160 LDC slides without a near-copy")


@pytest.fixture(scope="session")
def cell_counter_model(tmp_path_factory, ldc_subset_dir, trained_model) -> Path:
    """A short real run of the slide prep and the cell counter's training (2 epochs on ~110 slides),
    shipping design (b) so the folder carries the crop classifier."""
    import prepare_ldc_slides
    import train_cell_counter

    root = tmp_path_factory.mktemp("viability")
    dataset, out = root / "ldc-slides", root / "ldc-viability"
    prepare_ldc_slides.main(
        ["--ldc-dir", str(ldc_subset_dir), "--out", str(dataset), "--examples-dir", str(root / "examples")]
    )
    train_cell_counter.main([
        "--dataset", str(dataset), "--output-dir", str(out), "--epochs", "2", "--batch-size", "8",
        "--classifier", str(trained_model), "--design", "unet+classifier",
        "--methods", "components", "--thresholds", "0.5", "0.7", "--min-sizes", "15", "--border-min-sizes", "0", "150",
    ])
    return out


@pytest.fixture(scope="session")
def pets_dataset(tmp_path_factory) -> Path:
    """A small real run of the cats/dogs prep: 60 pets a class, 10% of every negative source."""
    import prepare_cats_dogs

    pets_dir = SHARED_DATA / "cats-dogs" / "train"
    if not pets_dir.is_dir():
        pytest.skip(f"cats-dogs data not found at {pets_dir} (set IMAGEZOO_SHARED_DATA)")
    root = tmp_path_factory.mktemp("pets")
    prepare_cats_dogs.main([
        "--pets-dir", str(pets_dir), "--data-root", str(SHARED_DATA), "--out", str(root / "cats-dogs"),
        "--scale", "0.1", "--max-pets", "60", "--examples-dir", str(root / "examples"),
    ])
    return root / "cats-dogs"


@pytest.fixture(scope="session")
def pets_model(tmp_path_factory, pets_dataset) -> Path:
    """A short real run of the training script on it (3 epochs, 128 px), with its ONNX exports."""
    import train_classifier

    out = tmp_path_factory.mktemp("models") / "cats-dogs"
    train_classifier.main(
        ["--task", "cats-dogs", "--dataset", str(pets_dataset), "--epochs", "3", "--img-size", "128",
         "--output-dir", str(out)]
    )
    return out


@pytest.fixture(scope="session")
def brain_data(tmp_path_factory) -> Path:
    """A small real run of the brain MRI prep: 40 MRI files per class of both sets, 10% of each negative source.
    Holds ``brain-tumor-type``, ``brain-tumor-detect``, ``brain-mri-gate`` and ``examples``."""
    import prepare_brain_mri

    if not (SHARED_DATA / "brain-tumor-mri").is_dir():
        pytest.skip(f"brain MRI data not found under {SHARED_DATA} (set IMAGEZOO_SHARED_DATA)")
    root = tmp_path_factory.mktemp("brain")
    prepare_brain_mri.main(["--data-root", str(SHARED_DATA), "--out-dir", str(root), "--scale", "0.1",
                            "--max-per-label", "40", "--examples-dir", str(root / "examples")])
    return root


@pytest.fixture(scope="session")
def brain_models(tmp_path_factory, brain_data) -> Path:
    """Short real runs of both trainers on it: the gate (the real linear probe, 160 px like the type model)
    and the type model (2 epochs, 128 px). Returns the models folder."""
    import train_classifier
    import train_gate

    models = tmp_path_factory.mktemp("brain_models")
    train_gate.main(["--dataset", str(brain_data / "brain-mri-gate"), "--output-dir", str(models / "brain-mri-gate")])
    train_classifier.main(["--task", "brain-tumor-type", "--dataset", str(brain_data / "brain-tumor-type"),
                           "--epochs", "2", "--img-size", "128", "--output-dir", str(models / "brain-tumor-type")])
    return models


CHROMIUM = os.environ.get("IMAGEZOO_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's Chromium for Playwright; skipped where missing, unless ``IMAGEZOO_BROWSER_TESTS=required``
    (CI sets it and installs Chromium), where a missing browser fails instead."""
    if not Path(CHROMIUM).is_file():
        if os.environ.get("IMAGEZOO_BROWSER_TESTS") == "required":
            pytest.fail(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
        pytest.skip(f"Chromium not found at {CHROMIUM}")
    pytest.importorskip("playwright")
    return CHROMIUM


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def space_app(space: str, module_name: str, **env: str):
    """``spaces/<space>/app.py`` imported afresh with the environment ``env`` set while it is in use
    (a Space reads its model ids at import)."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        spec = importlib.util.spec_from_file_location(module_name, ROOT / "spaces" / space / "app.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        yield module


def assert_uploads_reach_the_app(demo, tmp_path: Path) -> None:
    """Every image upload of a Space hands the app the user's own file (``type="filepath"``,
    ``image_mode=None``): Gradio's default conversion to RGB would clip a 16-bit image to white
    (and drop alpha) before ``imagezoo.images`` normalises it as training did. A file Pillow cannot
    open is a ``gr.Error`` that says why (Gradio's own opening of it said only "Error")."""
    import gradio as gr
    import numpy as np
    from gradio.data_classes import ImageData
    from PIL import Image

    pixels = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    path = tmp_path / "sixteen_bit.png"
    Image.fromarray(pixels).save(path)
    uploads = [block for block in demo.blocks.values() if isinstance(block, gr.Image) and block.type == "filepath"]
    assert uploads, "no image upload found"
    text, empty, bomb = tmp_path / "notes.png", tmp_path / "empty.png", tmp_path / "bomb.png"
    text.write_text("not an image")
    empty.write_bytes(b"")
    bomb.write_bytes(png_bomb_bytes())
    refused = {text: "notes.png: not a recognised image format", empty: "empty.png: empty file",
               bomb: "bomb.png: too large to decode safely"}
    for upload in uploads:
        received = upload.preprocess(ImageData(path=str(path), orig_name=path.name))
        assert np.array_equal(np.asarray(Image.open(received)), pixels), upload.label
        for bad, message in refused.items():
            with pytest.raises(gr.Error, match=message):
                upload.preprocess(ImageData(path=str(bad), orig_name=bad.name))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb_bytes(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny valid-looking PNG whose header claims ``width`` x ``height`` pixels."""
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    data = png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return b"\x89PNG\r\n\x1a\n" + header + data + png_chunk(b"IEND", b"")


@pytest.fixture()
def bad_files(tmp_path, ldc_dir) -> dict[str, Path]:
    """One file of every kind of bad input, next to one good slide."""
    good = (ldc_dir / LDC_SAMPLES["RGB"]).read_bytes()
    files = {
        "good": tmp_path / "good.png",
        "no_extension": tmp_path / "slide_without_extension",
        "truncated": tmp_path / "truncated.png",
        "corrupt": tmp_path / "corrupt.png",
        "empty": tmp_path / "empty.png",
        "text": tmp_path / "notes.png",
        "bomb": tmp_path / "bomb.png",
    }
    files["good"].write_bytes(good)
    files["no_extension"].write_bytes(good)
    files["truncated"].write_bytes(good[: len(good) // 2])
    files["corrupt"].write_bytes(good[:16] + bytes(range(256)) * 8)
    files["empty"].write_bytes(b"")
    files["text"].write_text("this is not an image\n")
    files["bomb"].write_bytes(png_bomb_bytes())
    return files
