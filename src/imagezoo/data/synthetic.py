"""Synthetic images that are neither pets nor anything else a model was trained on.

Open-set classifiers need negatives of many kinds; these families cover what a webcam or
an upload box often sees when no pet is there (a blank wall, sensor noise, a slide with text,
a chart, a screenshot). Each generator is ``fn(rng, size) -> RGB PIL image`` and deterministic
given the generator state, so a dataset built from them is reproducible from its seed.
"""

from __future__ import annotations

import io
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

Generator = Callable[[np.random.Generator, int], Image.Image]

WORDS = (
    "the quick brown fox results method sample figure table page total report data image cell value "
    "model test training error mean median score slide chart loss epoch python import return"
).split()


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def noise(rng: np.random.Generator, size: int) -> Image.Image:
    """Gaussian, uniform or blocky (low-resolution, upsampled) noise, colour or grey."""
    low = int(rng.choice([size, size // 4, size // 16]))
    channels = 3 if rng.random() < 0.7 else 1
    values = rng.normal(128, rng.uniform(10, 80), (low, low, channels)) if rng.random() < 0.5 else (
        rng.uniform(0, 255, (low, low, channels)))
    array = np.repeat(np.clip(values, 0, 255).astype(np.uint8), 3 // channels, axis=2)
    return Image.fromarray(array).resize((size, size), Image.Resampling.BICUBIC)


def flat(rng: np.random.Generator, size: int) -> Image.Image:
    """One colour, optionally with slight sensor noise (a wall, a lens cap, a blank upload)."""
    array = np.full((size, size, 3), _colour(rng), np.float32)
    array += rng.normal(0, rng.uniform(0, 6), array.shape)
    return Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))


def gradient(rng: np.random.Generator, size: int) -> Image.Image:
    """A linear or radial blend between two colours."""
    y, x = np.mgrid[0:size, 0:size] / size
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        t = (np.cos(angle) * x + np.sin(angle) * y)
    else:
        cx, cy = rng.uniform(0, 1, 2)
        t = np.hypot(x - cx, y - cy)
    t = (t - t.min()) / max(np.ptp(t), 1e-6)
    a, b = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    return Image.fromarray((a + (b - a) * t[..., None]).astype(np.uint8))


def _font(rng: np.random.Generator, lo: int, hi: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=int(rng.integers(lo, hi)))


def text(rng: np.random.Generator, size: int) -> Image.Image:
    """Lines of words on a plain background (a document, a slide, a sign)."""
    background = _colour(rng)
    ink = tuple(255 - c for c in background)
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    font = _font(rng, 10, 28)
    y = int(rng.integers(0, 20))
    while y < size:
        line = " ".join(rng.choice(WORDS, int(rng.integers(2, 8))))
        draw.text((int(rng.integers(0, 20)), y), line, fill=ink, font=font)
        y += int(font.size * rng.uniform(1.2, 2.0))
    return image


def plot(rng: np.random.Generator, size: int) -> Image.Image:
    """A matplotlib line, bar, scatter or histogram chart with axes and labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 3), dpi=max(size // 3, 40))
    kind = rng.integers(4)
    if kind == 0:
        for _ in range(int(rng.integers(1, 4))):
            ax.plot(np.cumsum(rng.normal(size=50)))
    elif kind == 1:
        n = int(rng.integers(3, 10))
        ax.bar(np.arange(n), rng.uniform(1, 10, n), color=[_hex(rng) for _ in range(n)])
    elif kind == 2:
        ax.scatter(rng.normal(size=80), rng.normal(size=80), s=8, c=rng.uniform(size=80))
    else:
        ax.hist(rng.normal(size=300), bins=int(rng.integers(8, 30)))
    ax.set_title(" ".join(rng.choice(WORDS, 2)))
    ax.set_xlabel(str(rng.choice(WORDS)))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return Image.open(buffer).convert("RGB").resize((size, size))


def _hex(rng: np.random.Generator) -> str:
    return "#%02x%02x%02x" % _colour(rng)


def layout(rng: np.random.Generator, size: int) -> Image.Image:
    """A screenshot-like page: a header bar, panels, buttons and lines of text."""
    image = Image.new("RGB", (size, size), _colour(rng) if rng.random() < 0.3 else (245, 245, 245))
    draw = ImageDraw.Draw(image)
    header = int(rng.integers(size // 12, size // 5))
    draw.rectangle([0, 0, size, header], fill=_colour(rng))
    font = _font(rng, 8, 16)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = int(rng.integers(0, size - 40)), int(rng.integers(header, size - 30))
        x1, y1 = min(size, x0 + int(rng.integers(30, size // 2))), min(size, y0 + int(rng.integers(15, size // 3)))
        draw.rounded_rectangle([x0, y0, x1, y1], radius=4, fill=_colour(rng), outline=(120, 120, 120))
        draw.text((x0 + 3, y0 + 2), str(rng.choice(WORDS)), fill=(0, 0, 0), font=font)
    return image


def shapes(rng: np.random.Generator, size: int) -> Image.Image:
    """Random filled ellipses, rectangles and polygons, sometimes blurred."""
    image = Image.new("RGB", (size, size), _colour(rng))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 12))):
        x0, y0 = rng.integers(-size // 4, size, 2)
        w, h = rng.integers(size // 10, size // 2, 2)
        box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse(box, fill=_colour(rng))
        elif kind == 1:
            draw.rectangle(box, fill=_colour(rng))
        else:
            draw.polygon([tuple(int(v) for v in rng.integers(0, size, 2)) for _ in range(int(rng.integers(3, 7)))],
                         fill=_colour(rng))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(1, 6))))
    return image


#: family name -> generator; the dataset's ``source`` column is ``synthetic-<family>``
GENERATORS: dict[str, Generator] = {
    "noise": noise, "flat": flat, "gradient": gradient, "text": text, "plot": plot, "layout": layout, "shapes": shapes,
}


def synthetic_images(family: str, n: int, seed: int, size: int = 224) -> list[Image.Image]:
    """``n`` images of one family, the same for the same seed."""
    try:
        generate = GENERATORS[family]
    except KeyError:
        raise KeyError(f"unknown synthetic family {family!r}; known: {sorted(GENERATORS)}") from None
    rng = np.random.default_rng([seed, sorted(GENERATORS).index(family)])
    return [generate(rng, size) for _ in range(n)]
