"""The webcam tab in a real browser: Debian's Chromium, driven by Playwright, with a fake camera
that plays a video made from a test photo. The page must show the photo's label within 5 seconds
of pressing record. A screenshot of each run is kept in ``test-artifacts/``.

Skipped where Chromium is not installed, unless ``IMAGEZOO_BROWSER_TESTS=required`` (CI sets it
and installs Chromium), where a missing browser fails instead.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from conftest import ROOT, space_app
from PIL import Image

from imagezoo.data import load_splits
from imagezoo.inference import ImageClassifier

CHROMIUM = os.environ.get("IMAGEZOO_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
DEADLINE_S = 5.0


def write_y4m(image: Image.Image, path: Path, frames: int = 30, size: tuple[int, int] = (320, 240)) -> Path:
    """A still video in the YUV4MPEG2 format Chromium's fake camera reads (4:2:0, 10 frames/s)."""
    y, cb, cr = image.convert("RGB").resize(size).convert("YCbCr").split()
    half = (size[0] // 2, size[1] // 2)
    planes = y.tobytes() + cb.resize(half).tobytes() + cr.resize(half).tobytes()
    with path.open("wb") as fp:
        fp.write(f"YUV4MPEG2 W{size[0]} H{size[1]} F10:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            fp.write(b"FRAME\n" + planes)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def chromium() -> str:
    if not Path(CHROMIUM).is_file():
        if os.environ.get("IMAGEZOO_BROWSER_TESTS") == "required":
            pytest.fail(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
        pytest.skip(f"Chromium not found at {CHROMIUM}")
    pytest.importorskip("playwright")
    return CHROMIUM


@pytest.fixture(scope="module")
def served(pets_model):
    with space_app("cats_dogs", "cats_dogs_browser_app", IMAGEZOO_MODEL=str(pets_model)) as module:
        port = free_port()
        module.demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            module.demo.close()


def confident_test_photo(pets_model, pets_dataset, label: str) -> Image.Image:
    """The test-split photo of ``label`` the model is surest of (the browser must then show ``label``)."""
    test = load_splits(str(pets_dataset))["test"]
    names = test.features["label"].names
    photos = [row["image"] for row in test if names[row["label"]] == label][:20]
    probs = ImageClassifier.from_pretrained(str(pets_model)).predict(photos)
    best = max(range(len(photos)), key=lambda i: probs[i][label])
    assert max(probs[best], key=probs[best].get) == label, f"the model calls no test {label} a {label}"
    return photos[best]


@pytest.mark.parametrize("label", ["cat", "dog"])
def test_webcam_tab_shows_the_label_of_the_camera_stream(label, chromium, served, pets_model, pets_dataset,
                                                         tmp_path):
    from playwright.sync_api import sync_playwright

    video = write_y4m(confident_test_photo(pets_model, pets_dataset, label), tmp_path / f"{label}.y4m")
    args = [
        "--no-sandbox", "--disable-gpu", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={video}", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
    ]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=args)
        try:
            page = browser.new_page()
            page.goto(served)
            page.get_by_role("tab", name="Webcam").click()
            page.locator("#camera").get_by_text("Click to Access Webcam").click()
            record = page.locator("#camera").get_by_role("button", name="capture photo")
            record.wait_for(timeout=10_000)
            record.click()
            start = time.monotonic()
            shown = page.locator("#live-label [data-testid='label-output-value']")
            shown.filter(has_text=label).wait_for(timeout=DEADLINE_S * 1000)
            elapsed = time.monotonic() - start
            page.wait_for_function("document.querySelector('#live-status textarea').value.includes('frames/s')")
            status = page.locator("#live-status textarea").input_value()
            page.screenshot(path=str(ARTIFACTS / f"webcam_{label}.png"))
        finally:
            browser.close()
    assert elapsed <= DEADLINE_S
    assert status.startswith(label) and "320x240" in status
