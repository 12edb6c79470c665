"""Synthetic nuclei with micronuclei beside some of them, with exact ground truth.

Each image holds separate elliptical nuclei (one ``DNA`` channel) and, beside
a fraction of them, one to three small round micronuclei a few pixels off the
nucleus edge, far from every other nucleus, so which nucleus a micronucleus
belongs to is never in doubt. Images are formed as in :mod:`scip.datasets`:
Gaussian blur, background offset, shot and read noise, ``uint16``.

:func:`make_micronuclei` makes them in memory; :func:`write_micronuclei`
writes the TIFFs, label images and per-nucleus counts that
``examples/micronuclei.yml`` and its test use.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from scip.datasets._folders import fresh_folders

__all__ = ["MicronucleusDataset", "make_micronuclei", "write_micronuclei"]

_BACKGROUND = 100.0
_READ_NOISE = 4.0
_NUCLEUS_AXES = (8.0, 13.0)  # semi-axes of a nucleus, px
_MN_RADIUS = (1.6, 2.4)  # radius of a micronucleus, px
_MN_GAP = (2.0, 5.0)  # px between a nucleus edge and its micronucleus' edge
_CLEARANCE = 14.0  # px between the outer circles (nucleus + its micronucleus ring) of two nuclei
_TRIES = 400


@dataclass
class MicronucleusDataset:
    """Images with their nuclei, micronuclei and per-nucleus counts.

    Attributes
    ----------
    images : list of ndarray
        ``(1, H, W)`` uint16 each, the ``DNA`` channel.
    nuclei : list of ndarray
        ``(H, W)`` uint16 nucleus labels 1..N.
    micronuclei : list of ndarray
        ``(H, W)`` uint16 micronucleus labels 1..M.
    cells : pandas.DataFrame
        One row per nucleus: ``image``, ``label``, ``micronucleus_count``,
        ``micronucleus_area`` (px of its micronuclei in ``micronuclei``).
    """

    images: list
    nuclei: list
    micronuclei: list
    cells: pd.DataFrame


def make_micronuclei(n_images: int = 3, *, size: tuple[int, int] = (256, 256), nuclei_per_image: int = 16,
                     fraction: float = 0.4, seed: int | None = 0) -> MicronucleusDataset:
    """Make nuclei images with micronuclei and their ground truth.

    Parameters
    ----------
    n_images : int, optional
        Number of images.
    size : tuple of int, optional
        ``(H, W)`` of each image.
    nuclei_per_image : int, optional
        Nuclei to place; fewer when the image has no room left.
    fraction : float, optional
        Expected fraction of nuclei with micronuclei (1 to 3 each).
    seed : int, optional
        Seed of the random generator; the same seed gives identical data.

    Returns
    -------
    MicronucleusDataset
        No nucleus touches the image border, so every one is a cell of a run.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be within [0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    height, width = size
    rows, cols = np.mgrid[0:height, 0:width]
    images, nuclei_images, mn_images, tables = [], [], [], []
    for index in range(n_images):
        signal = np.zeros(size, np.float64)
        nuclei = np.zeros(size, np.uint16)
        mns = np.zeros(size, np.uint16)
        placed: list[tuple[float, float, float]] = []
        records = []
        for _ in range(nuclei_per_image):
            a, b = sorted(rng.uniform(*_NUCLEUS_AXES, size=2))[::-1]
            outer = a + _MN_GAP[1] + 2 * _MN_RADIUS[1]
            spot = _free_spot(rng, placed, outer, size)
            if spot is None:
                break
            r0, c0 = spot
            placed.append((r0, c0, outer))
            theta = rng.uniform(0, math.pi)
            dr, dc = rows - r0, cols - c0
            u = dr * math.cos(theta) + dc * math.sin(theta)
            v = -dr * math.sin(theta) + dc * math.cos(theta)
            inside = (u / a) ** 2 + (v / b) ** 2 <= 1
            label = len(records) + 1
            nuclei[inside] = label
            brightness = rng.uniform(700, 1200)
            # A little dimmer at the rim, as a real nucleus.
            signal[inside] += brightness * (0.85 + 0.15 * np.sqrt(np.clip(1 - (u / a) ** 2 - (v / b) ** 2, 0, 1)))[inside]
            n_mn = int(rng.integers(1, 4)) if rng.random() < fraction else 0
            area = 0
            angles = rng.uniform(0, 2 * math.pi) + np.arange(n_mn) * (2 * math.pi / 3) + rng.uniform(-0.4, 0.4, n_mn)
            for phi in angles:
                radius = rng.uniform(*_MN_RADIUS)
                # Distance from the centre to the ellipse edge along phi, then the gap and the radius.
                du, dv = math.cos(phi - theta), math.sin(phi - theta)
                edge = 1 / math.sqrt((du / a) ** 2 + (dv / b) ** 2)
                reach = edge + rng.uniform(*_MN_GAP) + radius
                mr, mc = r0 + reach * math.cos(phi), c0 + reach * math.sin(phi)
                disc = (rows - mr) ** 2 + (cols - mc) ** 2 <= radius ** 2
                disc &= nuclei == 0
                mn_label = int(mns.max()) + 1
                mns[disc] = mn_label
                signal[disc] += rng.uniform(0.8, 1.2) * brightness
                area += int(disc.sum())
            records.append({"image": index, "label": label, "micronucleus_count": n_mn, "micronucleus_area": area})
        blurred = ndi.gaussian_filter(signal, rng.uniform(0.8, 1.1))
        counts = rng.poisson(blurred + _BACKGROUND) + rng.normal(0, _READ_NOISE, size)
        images.append(np.clip(np.rint(counts), 0, 65535).astype(np.uint16)[None])
        nuclei_images.append(nuclei)
        mn_images.append(mns)
        tables.append(pd.DataFrame(records, columns=["image", "label", "micronucleus_count", "micronucleus_area"]))
    return MicronucleusDataset(images, nuclei_images, mn_images, pd.concat(tables, ignore_index=True))


def _free_spot(rng: np.random.Generator, placed: list[tuple[float, float, float]], radius: float,
               size: tuple[int, int]) -> tuple[float, float] | None:
    height, width = size
    margin = radius + 2
    if height <= 2 * margin or width <= 2 * margin:
        return None
    for _ in range(_TRIES):
        r, c = rng.uniform(margin, height - margin), rng.uniform(margin, width - margin)
        if all(math.hypot(r - pr, c - pc) >= radius + pradius + _CLEARANCE for pr, pc, pradius in placed):
            return r, c
    return None


def write_micronuclei(path: str | os.PathLike, n_images: int = 3, seed: int = 0) -> dict[str, Path]:
    """Write :func:`make_micronuclei`'s images under ``path``.

    The layout is::

        path/
            micronuclei/image{i}_DNA.tiff             the images, uint16
            micronuclei_labels/image{i}.tiff          nucleus labels
            micronuclei_labels/image{i}_micronuclei.tiff   micronucleus labels
            micronuclei_cells.csv                     counts per nucleus (image, label, ...)

    Earlier ``image*.tiff`` files in the two folders are replaced.

    Parameters
    ----------
    path : str or os.PathLike
        Folder to write into; created if needed.
    n_images : int, optional
        Number of images.
    seed : int, optional
        Seed of :func:`make_micronuclei`.

    Returns
    -------
    dict of str to Path
        ``"micronuclei"``, ``"micronuclei_labels"`` and ``"micronuclei_cells"``.
    """
    import tifffile

    root = Path(path)
    out = fresh_folders(root, "micronuclei_cells", ("micronuclei", "micronuclei_labels"), "image*.tiff")
    data = make_micronuclei(n_images, seed=seed)
    for i, (image, nuclei, mns) in enumerate(zip(data.images, data.nuclei, data.micronuclei)):
        tifffile.imwrite(out["micronuclei"] / f"image{i}_DNA.tiff", image[0])
        tifffile.imwrite(out["micronuclei_labels"] / f"image{i}.tiff", nuclei)
        tifffile.imwrite(out["micronuclei_labels"] / f"image{i}_micronuclei.tiff", mns)
    data.cells.to_csv(out["micronuclei_cells"], index=False)
    return out
