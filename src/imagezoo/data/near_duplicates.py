"""Near-copies of an image (re-encoded, resized, the same field photographed twice) must not sit in
two splits: a test image whose near-copy was trained on measures memory, not the model. Images are
linked when their perceptual hashes (``imagehash.phash``) differ in at most ``max_bits`` of 64 bits;
groups are the connected components."""

from __future__ import annotations

from typing import Sequence

import imagehash
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from imagezoo.data import SPLITS


def packed(hashes: Sequence[imagehash.ImageHash | str]) -> np.ndarray:
    """64-bit perceptual hashes (``imagehash`` objects or their hex strings, as datasets store them) as uint64."""
    return np.array([int(str(h), 16) for h in hashes], dtype=np.uint64)


def near_duplicate_groups(hashes: Sequence[imagehash.ImageHash | str], max_bits: int) -> np.ndarray:
    """Group index per image: connected components of "perceptual hashes within ``max_bits``"."""
    packed_hashes = packed(hashes)
    rows, cols = [], []
    for start in range(0, len(packed_hashes), 1024):  # blocks keep the pairwise table small
        block = np.bitwise_count(packed_hashes[start:start + 1024, None] ^ packed_hashes[None, :])
        i, j = np.nonzero(block <= max_bits)
        keep = start + i < j
        rows.append(start + i[keep])
        cols.append(j[keep])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(packed_hashes), len(packed_hashes)))
    return connected_components(graph, directed=False)[1]


def keep_groups_together(splits: Sequence[str], groups: Sequence[int], order: Sequence[str] = SPLITS) -> list[str]:
    """``splits`` with each group moved whole to the first split in ``order`` that holds one of its
    members: near-copies follow their training member, so a per-image split (stratified, say) is
    kept for every image without a near-copy elsewhere."""
    first: dict[int, int] = {}
    for split, group in zip(splits, groups):
        first[group] = min(first.get(group, len(order)), order.index(split))
    return [order[first[group]] for group in groups]


def near_copies(reference: Sequence[str], queries: Sequence[str], max_bits: int) -> list[int]:
    """Indices of ``queries`` (phash hex strings) within ``max_bits`` of any of ``reference``: the
    check that no test image has a near-copy among the training images of another dataset."""
    if not reference or not queries:
        return []
    reference_hashes = packed(reference)
    return [i for i, query in enumerate(packed(queries))
            if np.bitwise_count(reference_hashes ^ query).min() <= max_bits]
