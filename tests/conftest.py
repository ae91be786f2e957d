"""Shared fixtures: real LDC files from ../shared/data and one short real training run."""

from __future__ import annotations

import os
import shutil
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
