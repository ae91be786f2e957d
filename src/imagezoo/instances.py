"""Nuclei instances from a U-Net's (body, border) probabilities, and how they leave the program.

The network predicts two sigmoid channels per pixel, as the 2018 Data Science Bowl winners
trained them: ``body`` (nucleus foreground) and ``border`` (nucleus outlines and the contacts
between touching nuclei). Thresholding the body alone merges touching nuclei; subtracting the
border leaves one core per nucleus, which seeds a watershed of the foreground. Two baselines
that ignore the border channel sit beside it so evaluation can show what the channel buys.

Serving code: numpy, scipy, scikit-image and pycocotools only.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask
from scipy import ndimage as ndi
from skimage.color import rgb2gray
from skimage.feature import peak_local_max
from skimage.measure import label, regionprops_table
from skimage.segmentation import find_boundaries, relabel_sequential, watershed
from skimage.util import img_as_float

#: Columns of :func:`object_table`, in order (bbox max is exclusive, all in pixel coordinates).
OBJECT_COLUMNS = (
    "label",
    "area",
    "centroid_x",
    "centroid_y",
    "bbox_xmin",
    "bbox_ymin",
    "bbox_xmax",
    "bbox_ymax",
    "mean_intensity",
)
#: an overlay's object colours, cycled by label (skimage label2rgb's default order), and their opacity
OBJECT_COLOURS = np.array([(255, 0, 0), (0, 0, 255), (255, 140, 0), (255, 255, 0), (255, 0, 255), (0, 128, 0),
                           (75, 0, 130), (0, 255, 255), (255, 192, 203), (154, 205, 50)], np.float32)
OVERLAY_ALPHA = 0.35


def drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Zero every label with fewer than ``min_size`` pixels (in place).

    Not ``skimage.morphology.remove_small_objects``: its size argument changed name and meaning
    in 0.26 (``min_size`` < vs ``max_size`` <=) and we support scikit-image from 0.22.
    """
    sizes = np.bincount(labels.ravel())
    labels[sizes[labels] < min_size] = 0
    return labels


def finish(labels: np.ndarray, foreground: np.ndarray, min_size: int) -> np.ndarray:
    """Give foreground components that received no marker a label of their own, drop specks,
    number the objects 1..N: every post-processor ends alike, so they differ only in splitting."""
    orphans = label(foreground & (labels == 0))
    labels = np.where(orphans > 0, orphans + labels.max(initial=0), labels)
    return relabel_sequential(drop_small(labels, min_size))[0].astype(np.int32)


def components(probs: np.ndarray, threshold: float = 0.5, min_size: int = 10) -> np.ndarray:
    """Connected components of the thresholded body: the simplest baseline (merges touching nuclei)."""
    foreground = probs[0] > threshold
    return finish(label(foreground), foreground, min_size)


def watershed_distance(probs: np.ndarray, threshold: float = 0.5, min_size: int = 10) -> np.ndarray:
    """Watershed of the body's distance transform from its peaks, ignoring the border channel:
    the classic split of touching round objects, the baseline the border channel must beat.
    The distance is smoothed first (sigma 2 px) so ragged outlines do not seed extra nuclei."""
    foreground = probs[0] > threshold
    distance = ndi.gaussian_filter(ndi.distance_transform_edt(foreground), 2)
    peaks = peak_local_max(distance, min_distance=3, labels=label(foreground), exclude_border=False)
    markers = np.zeros(foreground.shape, dtype=bool)
    markers[tuple(peaks.T)] = True
    return finish(watershed(-distance, label(markers), mask=foreground), foreground, min_size)


def watershed_body_border(probs: np.ndarray, threshold: float = 0.5, min_size: int = 10) -> np.ndarray:
    """Marker-controlled watershed: cores (body - border > threshold) flood the foreground
    (body > threshold) downhill on the body probability, so touching nuclei split along the
    predicted contact. Cores under ``min_size // 2`` pixels are noise, not nuclei, and dropped;
    foreground the flood does not reach (it spreads between edge neighbours only, so a part joined
    to a nucleus by a corner alone is not reached) becomes an object of its own."""
    body, border = probs
    foreground = body > threshold
    markers = drop_small(label((body - border) > threshold), max(1, min_size // 2))
    return finish(watershed(-body, markers, mask=foreground), foreground, min_size)


def watershed_centres(probs: np.ndarray, threshold: float = 0.5, min_size: int = 10) -> np.ndarray:
    """Marker-controlled watershed from predicted object centres, (body, centre) probabilities:
    each blob of centre > ``threshold`` seeds one object, which floods the foreground (body or
    centre > ``threshold``) downhill on the body probability, so touching objects split even
    where the body channel shows no contact between them."""
    if len(probs) != 2:
        raise ValueError(f"watershed-centres needs (body, centre) probabilities, got {len(probs)} channel(s)")
    body, centre = probs
    seeds = centre > threshold
    foreground = (body > threshold) | seeds
    return finish(watershed(-body, label(seeds), mask=foreground), foreground, min_size)


#: Post-processors by the name a model's config and the CLI use.
POSTPROCESSORS: dict[str, Callable[..., np.ndarray]] = {
    "watershed-border": watershed_body_border,
    "watershed-centres": watershed_centres,
    "watershed-distance": watershed_distance,
    "components": components,
}


def postprocess(name: str, probs: np.ndarray, **params) -> np.ndarray:
    """Instance labels (int32, 0 background, 1..N) from (2, H, W) probabilities by a named method."""
    try:
        method = POSTPROCESSORS[name]
    except KeyError:
        raise KeyError(f"unknown post-processing {name!r}; choose one of {sorted(POSTPROCESSORS)}") from None
    return method(probs, **params)


def encode_rle(mask: np.ndarray) -> str:
    """A boolean (H, W) mask as COCO compressed RLE in compact JSON, ``{"size": [h, w], "counts": "..."}``:
    small enough for a CSV cell or a JSON line, and readable by every COCO tool. Decode it with
    :func:`decode_rle`, or without imagezoo::

        from pycocotools import mask
        m = mask.decode(json.loads(text)).astype(bool)
    """
    rle = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return json.dumps(
        {"size": [int(n) for n in rle["size"]], "counts": rle["counts"].decode("ascii")},
        separators=(",", ":"),
    )


def decode_rle(text: str) -> np.ndarray:
    """The boolean mask back from :func:`encode_rle`'s JSON."""
    return coco_mask.decode(json.loads(text)).astype(bool)


def object_table(labels: np.ndarray, image: np.ndarray) -> list[dict]:
    """One row per object (:data:`OBJECT_COLUMNS`): the numbers a biologist would otherwise
    measure in Fiji. ``mean_intensity`` is over the image in grey (luminance), 0-255 for uint8."""
    grey = (rgb2gray(image[..., :3]) if image.ndim == 3 else img_as_float(image)) * 255
    table = regionprops_table(
        labels, intensity_image=grey, properties=("label", "area", "centroid", "bbox", "intensity_mean")
    )
    columns = [
        table["label"].astype(int),
        table["area"].astype(int),
        table["centroid-1"],
        table["centroid-0"],
        table["bbox-1"].astype(int),
        table["bbox-0"].astype(int),
        table["bbox-3"].astype(int),
        table["bbox-2"].astype(int),
        table["intensity_mean"],
    ]
    return [dict(zip(OBJECT_COLUMNS, row)) for row in zip(*(column.tolist() for column in columns))]


def overlay(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """uint8 RGB: ``image`` (uint8 RGB or RGBA) in grey, each object tinted in its own colour, outlined in white.

    The look of skimage's ``label2rgb`` (alpha 0.35 over a grey underlay) computed in uint8 over the whole
    image and in float32 only on the objects' pixels: label2rgb's float64 copies took 371 MB per megapixel,
    18 GB for an upload at the pixel limit."""
    grey = np.asarray(Image.fromarray(np.ascontiguousarray(image[..., :3])).convert("L"))
    coloured = np.repeat(grey[..., None], 3, axis=2)
    inside = labels > 0
    tint = OBJECT_COLOURS[(labels[inside] - 1) % len(OBJECT_COLOURS)]
    coloured[inside] = np.rint((1 - OVERLAY_ALPHA) * coloured[inside] + OVERLAY_ALPHA * tint).astype(np.uint8)
    coloured[find_boundaries(labels, mode="inner")] = 255
    return coloured
