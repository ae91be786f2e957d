"""Every image mode becomes the same RGB, and every bad input becomes a clear ImageError."""

import os

import numpy as np
import pillow_heif
import pytest
from conftest import LDC_SAMPLES
from PIL import Image

from imagezoo.images import ImageError, file_sha256, load_image, to_rgb


def test_16bit_is_scaled_linearly_not_clipped():
    pixels = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    rgb = to_rgb(Image.fromarray(pixels, mode="I;16"))
    assert rgb.mode == "RGB"
    assert np.asarray(rgb)[0, :, 0].tolist() == [0, 100, 255]


@pytest.mark.parametrize("depth", [8, 10, 12, 14])
def test_a_capture_of_fewer_bits_saved_in_16_keeps_its_levels(depth):
    """A 12-bit camera's image in a 16-bit PNG: divided by 257 it kept 16 grey levels, nearly black."""
    ramp = np.linspace(0, 2**depth - 1, 4096).round().astype(np.uint16)[None]
    gray = np.asarray(to_rgb(Image.fromarray(ramp, mode="I;16")))[0, :, 0]
    assert gray[0] == 0 and gray[-1] == 255
    assert len(np.unique(gray)) == 256
    np.testing.assert_allclose(gray, ramp[0].astype(float) * 255 / (2**depth - 1), atol=0.5)  # linear, not stretched



def test_the_depth_is_read_from_the_maximum_so_a_dim_image_is_taken_for_fewer_bits():
    """The file does not say its camera's depth: a 12-bit image whose brightest pixel is 1000 reads as 10-bit."""
    for peak, depth in ((1000, 10), (3000, 12), (16000, 14), (23445, 16)):
        pixels = np.array([[0, peak]], dtype=np.uint16)
        assert np.asarray(to_rgb(Image.fromarray(pixels, mode="I;16")))[0, 1, 0] == round(peak * 255 / (2**depth - 1))


def test_transparency_is_flattened_onto_black():
    rgba = Image.new("RGBA", (2, 1), (200, 100, 50, 255))
    rgba.putpixel((1, 0), (200, 100, 50, 0))
    assert np.asarray(to_rgb(rgba)).tolist() == [[[200, 100, 50], [0, 0, 0]]]


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_colour_keeps_its_depth(tmp_path, suffix):
    """Pillow reads 16-bit colour from the high bytes only: a 12-bit capture came out almost black (max 15)."""
    import cv2

    rgb = np.random.default_rng(0).integers(0, 4096, (20, 30, 3)).astype(np.uint16)
    rgb[0, 0] = 4095
    path = tmp_path / f"colour16{suffix}"
    assert cv2.imwrite(str(path), rgb[..., ::-1])
    assert Image.open(path).mode == "RGB"  # what Pillow makes of it
    np.testing.assert_array_equal(np.asarray(load_image(path)), np.rint(rgb.astype(float) * 255 / 4095))
    np.testing.assert_array_equal(np.asarray(load_image(path.read_bytes())), np.asarray(load_image(path)))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 65535, np.uint16)])
    rgba[1, 1, 3] = 0
    assert cv2.imwrite(str(tmp_path / "alpha16.png"), rgba[..., [2, 1, 0, 3]])
    pixels = np.asarray(load_image(tmp_path / "alpha16.png"))
    assert pixels[1, 1].tolist() == [0, 0, 0] and pixels[0, 0].tolist() == [255, 255, 255]


def test_16bit_transparency_darkens_without_changing_the_depth(tmp_path):
    """The depth is read from the colour, then alpha applied: a 1/16-opaque 12-bit white came out 255."""
    import cv2

    rgba = np.zeros((2, 2, 4), np.uint16)
    rgba[..., :3] = 4095
    rgba[..., 3] = [[4096, 8192], [2048, 0]]  # at most 1/8 opaque
    assert cv2.imwrite(str(tmp_path / "alpha16.png"), rgba[..., [2, 1, 0, 3]])
    grey = np.asarray(load_image(tmp_path / "alpha16.png"))[..., 0]
    assert grey.tolist() == [[16, 32], [8, 0]]


def test_a_photo_tagged_as_turned_loads_upright(tmp_path):
    """Phones store a portrait photo as landscape pixels plus an EXIF orientation; viewers (and the browser
    showing the upload) turn it, so the model must see it turned too."""
    landscape = np.zeros((20, 40, 3), np.uint8)
    landscape[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    path = tmp_path / "portrait.jpg"
    Image.fromarray(landscape).save(path, exif=exif.tobytes(), quality=95)
    for source in (path, path.read_bytes(), Image.open(path)):
        upright = np.asarray(load_image(source))
        assert upright.shape == (40, 20, 3)
        assert upright[:18].mean() > 200 and upright[22:].mean() < 50  # the white half is now on top


def test_a_phone_photo_in_heic_loads(tmp_path):
    """HEIC is what phones save by default; a folder of them must score, not fail file by file."""
    picture = np.zeros((64, 96, 3), np.uint8)
    picture[:, :48] = (200, 30, 30)
    picture[:, 48:] = (30, 30, 200)
    path = tmp_path / "IMG_0001.HEIC"
    pillow_heif.from_pillow(Image.fromarray(picture)).save(path, quality=95)
    for source in (path, path.read_bytes()):
        loaded = np.asarray(load_image(source)).astype(int)
        assert loaded.shape == picture.shape
        assert np.abs(loaded - picture).mean() < 2  # lossy, but the same picture
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(path.read_bytes()[:-10])


@pytest.mark.parametrize("mode, colour", [("RGB", (255, 255, 255)), ("L", 200)])
def test_a_transparent_colour_is_flattened_onto_black_in_every_mode(tmp_path, mode, colour):
    Image.new(mode, (2, 1), colour).save(tmp_path / "t.png", transparency=colour)
    assert np.asarray(load_image(tmp_path / "t.png")).tolist() == [[[0, 0, 0], [0, 0, 0]]]


def test_a_named_pipe_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ImageError, match="pipe: not a regular file"):
        file_sha256(tmp_path / "pipe", name="pipe")


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "I;16"])
def test_real_ldc_slides_of_every_mode_load_as_rgb(ldc_dir, mode):
    path = ldc_dir / LDC_SAMPLES[mode]
    assert Image.open(path).mode == mode
    image = load_image(path)
    assert image.mode == "RGB" and image.size == Image.open(path).size
    pixels = np.asarray(image)
    assert (pixels == 255).mean() < 0.05, "a normalised slide must not be clipped to white"
    if mode == "I;16":
        raw = np.asarray(Image.open(path), dtype=np.float64)
        assert np.abs(pixels[..., 0] - np.rint(raw / 257)).max() == 0


def test_bytes_and_pil_inputs_match_the_file(ldc_dir):
    path = ldc_dir / LDC_SAMPLES["I;16"]
    from_file = np.asarray(load_image(path))
    assert np.array_equal(from_file, np.asarray(load_image(path.read_bytes())))
    assert np.array_equal(from_file, np.asarray(load_image(Image.open(path))))


def test_file_without_extension_is_recognised_by_content(bad_files):
    assert load_image(bad_files["no_extension"]).size == load_image(bad_files["good"]).size


@pytest.mark.parametrize(
    "kind, message",
    [
        ("truncated", "truncated"),
        ("corrupt", "corrupt"),
        ("empty", "0 bytes"),
        ("text", "not a recognised image"),
        ("bomb", "too large"),
    ],
)
def test_bad_inputs_raise_clear_errors(bad_files, kind, message):
    with pytest.raises(ImageError, match=message):
        load_image(bad_files[kind])


def test_missing_file_and_pixel_limit(tmp_path, bad_files):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "absent.png")
    with pytest.raises(ImageError, match="too large"):
        load_image(bad_files["good"], max_pixels=100)
    with pytest.raises(ImageError, match="too large"):  # an image a caller already opened, too
        load_image(Image.open(bad_files["good"]), max_pixels=100)


def test_a_failed_write_leaves_no_file_behind(tmp_path):
    from imagezoo.files import write_atomically

    def write_then_fail(tmp):
        tmp.write_bytes(b"half a file")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(tmp_path / "out.parquet", write_then_fail)
    assert list(tmp_path.iterdir()) == []
    write_atomically(tmp_path / "out.parquet", lambda tmp: tmp.write_bytes(b"whole"))
    assert [p.name for p in tmp_path.iterdir()] == ["out.parquet"]


def test_a_model_folder_is_replaced_whole_or_not_at_all(tmp_path):
    from imagezoo.files import replace_folder, staging_folder

    model = tmp_path / "models" / "cats-dogs"
    model.mkdir(parents=True)
    (model / "config.json").write_text("old")
    (model / "model.int8.onnx").write_text("an earlier run's export")
    (staging_folder(model) / "config.json").write_text("new")  # a run that fails after writing its config
    assert (model / "config.json").read_text() == "old"  # the served model is untouched
    work = staging_folder(model)  # the next run starts empty
    assert list(work.iterdir()) == []
    (work / "config.json").write_text("new")
    replace_folder(work, model)
    assert [p.name for p in model.iterdir()] == ["config.json"] and (model / "config.json").read_text() == "new"
    assert [p.name for p in model.parent.iterdir()] == ["cats-dogs"]  # no staging or old copy left


def test_jpeg_cut_inside_its_header_is_a_clear_error(tmp_path):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 120, 200)).save(buffer, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[:200])  # Pillow's open() itself fails on this one
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(path)


def test_a_model_is_loaded_once_however_many_requests_ask_at_the_same_time():
    """functools.cache ran the loader once per concurrent first caller (a cold webcam stream: four loads)."""
    import threading
    import time

    from imagezoo.caching import load_once

    calls = []

    @load_once
    def load(name):
        calls.append(name)
        time.sleep(0.2)
        return object()

    got = []
    threads = [threading.Thread(target=lambda: got.append(load("model"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["model"] and len({id(model) for model in got}) == 1
    assert load("other") is not got[0] and calls == ["model", "other"]
    load.cache_clear()
    load("model")
    assert calls == ["model", "other", "model"]


def test_a_truncated_file_opened_lazily_by_the_caller_is_a_clear_error(tmp_path):
    import io

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(buffer, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with Image.open(path) as lazy, pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(lazy, name="cut.png")
