"""Micronuclei: clean-up of detections and their assignment to the nearest nucleus.

A micronucleus is a small body of chromatin outside the main nucleus; what
counts is how many each cell has. Detection is another method's job (``spot``,
or a U-Net's micronucleus output); this module turns a label image of
detections into micronuclei (:func:`clean`) and gives each the nucleus it
belongs to (:func:`assign`). Plain numpy and scipy: call it on one image.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

__all__ = ["assign", "clean", "per_nucleus", "OVERLAP", "TOO_SMALL", "TOO_LARGE", "DROP_REASONS"]

#: Why a detection is not a micronucleus (the keys of :func:`clean`'s counts and of ``run.json``).
OVERLAP = "overlaps a nucleus"
TOO_SMALL = "smaller than min_size"
TOO_LARGE = "larger than max_size"
DROP_REASONS = (OVERLAP, TOO_SMALL, TOO_LARGE)


def _check_pair(nuclei: np.ndarray, micronuclei: np.ndarray) -> None:
    if nuclei.ndim != 2 or nuclei.shape != micronuclei.shape:
        raise ValueError(f"nuclei and micronuclei must be 2-D label images of one shape, got {nuclei.shape} "
                         f"and {micronuclei.shape}")
    for name, labels in (("nuclei", nuclei), ("micronuclei", micronuclei)):
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{name} must be an integer label image, got dtype {labels.dtype}")
        if labels.size and labels.min() < 0:
            raise ValueError(f"{name} has negative labels")


def clean(nuclei: np.ndarray, micronuclei: np.ndarray, min_size: int = 1,
          max_size: int | None = None, max_overlap: float = 0.0) -> tuple[np.ndarray, dict[str, int]]:
    """Keep the detections that can be micronuclei, numbered 1..K, and count the others by reason.

    A detection is dropped when more than ``max_overlap`` of its pixels lie on
    a nucleus (a bright spot inside a nucleus is chromatin texture, not a
    micronucleus; with 0, any pixel on a nucleus drops it), else when its
    pixels off the nuclei are fewer than ``min_size`` or more than
    ``max_size``. The reasons are checked in that order; each dropped
    detection counts once. A kept detection loses its pixels on a nucleus, so
    micronuclei never overlap nuclei.

    Parameters
    ----------
    nuclei : ndarray of int, shape (H, W)
        The nuclei (0: background).
    micronuclei : ndarray of int, shape (H, W)
        The detections (0: background); numbers need not be consecutive.
    min_size : int, optional
        Fewest pixels of a micronucleus.
    max_size : int, optional
        Most pixels of a micronucleus; ``None``: no limit.
    max_overlap : float, optional
        Largest fraction of a detection's pixels that may lie on a nucleus, in ``[0, 1)``: a micronucleus
        touching its nucleus is often detected a pixel into the nucleus mask.

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        The micronuclei kept, numbered 1..K in the order of their old numbers.
    dropped : dict of str to int
        Detections dropped, by reason (:data:`DROP_REASONS`, every key present).
    """
    nuclei, micronuclei = np.asarray(nuclei), np.asarray(micronuclei)
    _check_pair(nuclei, micronuclei)
    dropped = dict.fromkeys(DROP_REASONS, 0)
    ids, sizes = np.unique(micronuclei[micronuclei > 0], return_counts=True)
    if not ids.size:
        return np.zeros(micronuclei.shape, np.int32), dropped
    if not 0 <= max_overlap < 1:
        raise ValueError(f"max_overlap must be within [0, 1), got {max_overlap}")
    on_nucleus = (micronuclei > 0) & (nuclei > 0)
    on = np.bincount(micronuclei[on_nucleus], minlength=int(ids.max()) + 1)[ids]
    overlap = on > max_overlap * sizes
    off = sizes - on
    small = ~overlap & (off < min_size)
    large = ~overlap & ~small & (off > max_size if max_size is not None else False)
    dropped[OVERLAP], dropped[TOO_SMALL], dropped[TOO_LARGE] = int(overlap.sum()), int(small.sum()), int(large.sum())
    kept = ids[~(overlap | small | large)]
    lookup = np.zeros(int(ids.max()) + 1, np.int32)
    lookup[kept] = np.arange(1, kept.size + 1, dtype=np.int32)
    out = lookup[micronuclei]
    out[on_nucleus] = 0
    return out, dropped


def assign(nuclei: np.ndarray, micronuclei: np.ndarray, max_distance: float) -> np.ndarray:
    """The nucleus each micronucleus belongs to: the nearest one within ``max_distance``.

    The distance from a micronucleus to a nucleus is the shortest Euclidean
    distance between the centres of a pixel of each (1 for a micronucleus
    touching the nucleus edge-on, 0 for one overlapping it). Two nuclei at
    exactly the same distance: the lower label wins, so the result does not
    depend on the order of the pixels.

    Parameters
    ----------
    nuclei : ndarray of int, shape (H, W)
        Nucleus labels (0: background).
    micronuclei : ndarray of int, shape (H, W)
        Micronucleus labels 1..M (0: background); a number without pixels gets 0.
    max_distance : float
        Farthest a micronucleus may lie from its nucleus, in pixels.

    Returns
    -------
    ndarray of int64, shape (M + 1,)
        ``owner[k]`` is the nucleus label of micronucleus ``k`` (0 when no
        nucleus lies within ``max_distance``); ``owner[0]`` is 0, so
        ``owner[micronuclei]`` paints each micronucleus with its nucleus.
    """
    nuclei, micronuclei = np.asarray(nuclei), np.asarray(micronuclei)
    _check_pair(nuclei, micronuclei)
    if not (max_distance >= 0 and math.isfinite(max_distance)):
        raise ValueError(f"max_distance must be a finite number >= 0, got {max_distance}")
    top = int(micronuclei.max()) if micronuclei.size else 0
    owner = np.zeros(top + 1, np.int64)
    reach = int(math.floor(max_distance)) + 1
    height, width = nuclei.shape
    for k, box in enumerate(ndi.find_objects(micronuclei), start=1):
        if box is None:
            continue
        # Every nucleus pixel within max_distance of the micronucleus lies in its box grown by max_distance.
        r0, c0 = max(box[0].start - reach, 0), max(box[1].start - reach, 0)
        r1, c1 = min(box[0].stop + reach, height), min(box[1].stop + reach, width)
        window = nuclei[r0:r1, c0:c1]
        own = micronuclei[r0:r1, c0:c1] == k
        best, best_distance = 0, math.inf
        for n in np.unique(window[window > 0]):  # ascending: on a tie the lower label stays
            distance = float(ndi.distance_transform_edt(window != n)[own].min())
            if distance < best_distance:
                best, best_distance = int(n), distance
        if best_distance <= max_distance:
            owner[k] = best
    return owner


def per_nucleus(owner: np.ndarray, micronuclei: np.ndarray) -> dict[int, tuple[int, int]]:
    """Micronuclei per nucleus: ``{nucleus label: (count, summed area in pixels)}``, assigned ones only.

    Parameters
    ----------
    owner : ndarray of int
        :func:`assign`'s result for ``micronuclei``.
    micronuclei : ndarray of int
        The micronucleus labels ``owner`` was computed for.

    Returns
    -------
    dict of int to (int, int)
        Nuclei without a micronucleus are absent.
    """
    areas = np.bincount(micronuclei.ravel(), minlength=owner.size)[:owner.size]
    out: dict[int, tuple[int, int]] = {}
    for k in np.flatnonzero(owner):
        count, area = out.get(int(owner[k]), (0, 0))
        out[int(owner[k])] = (count + 1, area + int(areas[k]))
    return out
