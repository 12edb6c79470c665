"""Synthetic fluorescence cells with exact ground truth: SCIP's example data.

Three kinds of data are made, all with instance labels that are known exactly
because the cells are drawn from their outlines rather than segmented:

- :func:`make_ifc_events`: small imaging-flow-cytometry-like crops, one cell
  per event, or two touching cells for some events, never near the border;
- :func:`make_fields`: larger microscopy fields of view with many cells,
  some cut by the image border;
- :func:`make_zstacks`: z stacks of separate ellipsoidal nuclei, whose 3-D
  labels are known voxel for voxel (:func:`write_zstacks` writes them as
  TIFFs for ``input.z: stitch``).

Each cell is an ellipse of random size, aspect ratio and orientation whose
polar radius is perturbed by a few low-order Fourier terms, with a nucleus
inside it. Three stains are rendered:

``DNA``
    the nucleus: bright, slightly textured, a little dimmer at its rim;
``cyto``
    the whole cell body: moderate, smooth texture, optionally brighter at the
    cell rim and partly excluded from the nucleus;
``marker``
    a spotty cytoplasmic signal: low-frequency texture plus a few bright
    spots, with a level that varies widely between cells.

Cells belong to one of three classes, recorded in the ground truth:
``live`` (normal), ``dim`` (all stains at 10-20 % brightness, still above
background) and ``dead`` (small, round, very bright compact DNA, weak cyto
and marker).

Images are formed as a microscope would: the stain signal is blurred by a
Gaussian point spread function, a background offset of about 100 counts is
added, and the result gets Poisson shot noise and Gaussian read noise before
it is rounded to ``uint16``.

All randomness comes from one :class:`numpy.random.Generator` made from
``seed``, so the same seed gives identical data. Every stain is always
drawn, whichever ``channels`` are asked for, so selecting channels never
changes the cells or the noise.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from scip.datasets._folders import fresh_folders
from scip.datasets.micronuclei import write_micronuclei

__all__ = ["STAINS", "CELL_CLASSES", "SyntheticDataset", "make_ifc_events", "make_fields", "make_zstacks",
           "write_example", "write_zstacks"]

#: Names of the stains that can be rendered, in the default channel order.
STAINS: tuple[str, ...] = ("DNA", "cyto", "marker")

#: Ground-truth cell classes.
CELL_CLASSES: tuple[str, ...] = ("live", "dim", "dead")

_BACKGROUND = 100.0  # camera offset, counts
_BACKGROUND_JITTER = 3.0  # per image and channel, so offsets are not all identical
_READ_NOISE = 4.0  # standard deviation of the Gaussian read noise, counts
_BORDER_MARGIN = 3  # empty pixels kept around IFC cells
_PLACEMENT_GAP = 2.0  # pixels between bounding circles of separate cells in a field
_PLACEMENT_TRIES = 200
_N_ANGLES = 720  # samples of the outline used to bound its radius


@dataclass(frozen=True)
class SyntheticDataset:
    """Synthetic images with their ground truth.

    Attributes
    ----------
    images : list of ndarray
        One ``(C, H, W)`` ``uint16`` array per image (event or field); the
        channels are in the order of :attr:`channels`.
    labels : list of ndarray
        One ``(H, W)`` ``uint16`` ground-truth instance label image per
        image: 0 is background, cells are numbered ``1..n``. Labels never
        overlap: where two touching cells meet, each pixel belongs to one.
    cells : pandas.DataFrame
        One row per ground-truth cell, with columns ``image`` (index into
        :attr:`images`), ``label``, ``cell_class`` (one of
        :data:`CELL_CLASSES`), ``area`` (pixels), ``touching`` (shares an
        edge with another cell's label), ``touches_border`` (has a pixel in
        the first or last row or column), ``centroid_row`` and
        ``centroid_col``. All are computed from :attr:`labels`.
    channels : tuple of str
        Channel names, one per image plane.
    """

    images: list[np.ndarray]
    labels: list[np.ndarray]
    cells: pd.DataFrame
    channels: tuple[str, ...]


# ---------------------------------------------------------------------------
# Geometry


@dataclass(frozen=True)
class _Outline:
    """A star-shaped outline: an ellipse whose polar radius is perturbed.

    ``harmonics`` holds one ``(order, relative amplitude, phase)`` row per
    Fourier term of the perturbation, so the radius along direction ``phi``
    (relative to ``angle``) is ``r_ellipse(phi) * (1 + sum a cos(k phi + p))``.
    """

    center: tuple[float, float]  # (row, col)
    axes: tuple[float, float]  # semi-axis along ``angle``, semi-axis across it
    angle: float
    harmonics: np.ndarray

    def radius(self, phi: np.ndarray) -> np.ndarray:
        theta = np.asarray(phi) - self.angle
        a, b = self.axes
        r = a * b / np.hypot(b * np.cos(theta), a * np.sin(theta))
        order, amp, phase = self.harmonics.T
        wobble = np.cos(np.multiply.outer(theta, order) + phase) @ amp
        return r * (1.0 + wobble)

    def max_radius(self) -> float:
        # One pixel of slack covers what sampling the angles can miss.
        return float(self.radius(np.linspace(0.0, 2 * np.pi, _N_ANGLES, endpoint=False)).max()) + 1.0

    def rho(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Normalized radius: 0 at the centre, 1 on the outline."""
        dr = rows - self.center[0]
        dc = cols - self.center[1]
        return np.hypot(dr, dc) / self.radius(np.arctan2(dr, dc))

    def shifted(self, drow: float, dcol: float) -> _Outline:
        return replace(self, center=(self.center[0] + drow, self.center[1] + dcol))


def _random_outline(
    rng: np.random.Generator,
    center: tuple[float, float],
    mean_radius: float,
    max_aspect: float,
    roughness: float,
) -> _Outline:
    aspect = rng.uniform(1.0, max_aspect)
    axes = (mean_radius * math.sqrt(aspect), mean_radius / math.sqrt(aspect))
    order = np.array([2.0, 3.0, 4.0])
    # Higher orders get smaller amplitudes so outlines stay smooth and the
    # total perturbation stays well below 1 (the radius stays positive).
    amp = roughness * rng.uniform(0.0, 1.0, order.size) / (order - 1.0)
    phase = rng.uniform(0.0, 2 * np.pi, order.size)
    return _Outline(center, axes, rng.uniform(0.0, np.pi), np.column_stack([order, amp, phase]))


@dataclass(frozen=True)
class _Cell:
    """Everything needed to draw one cell; levels are counts above background."""

    cell_class: str
    outline: _Outline
    nucleus: _Outline
    dna: float
    dna_texture: float
    cyto: float
    cyto_texture: float
    rim: float  # relative extra cyto brightness at the cell rim
    exclusion: float  # fraction of cyto signal missing over the nucleus
    marker: float
    marker_texture: float
    n_spots: int
    spot_gain: float  # spot peak relative to the marker level

    def shifted(self, drow: float, dcol: float) -> _Cell:
        return replace(self, outline=self.outline.shifted(drow, dcol), nucleus=self.nucleus.shifted(drow, dcol))


def _random_cell(rng: np.random.Generator, cell_class: str) -> _Cell:
    """Draw one cell centred on the origin."""
    if cell_class == "dead":
        radius = rng.uniform(4.5, 6.5)
        outline = _random_outline(rng, (0.0, 0.0), radius, 1.1, 0.02)
        nucleus = _random_outline(rng, (0.0, 0.0), radius * rng.uniform(0.7, 0.85), 1.1, 0.02)
        return _Cell(
            cell_class,
            outline,
            nucleus,
            dna=rng.uniform(4000.0, 9000.0),
            dna_texture=0.03,
            cyto=rng.uniform(300.0, 900.0) * rng.uniform(0.1, 0.25),
            cyto_texture=0.05,
            rim=0.0,
            exclusion=0.0,
            marker=250.0 * rng.lognormal(0.0, 0.3) * 0.15,
            marker_texture=0.2,
            n_spots=int(rng.poisson(1.0)),
            spot_gain=rng.uniform(2.0, 4.0),
        )

    radius = rng.uniform(8.0, 16.0)
    outline = _random_outline(rng, (0.0, 0.0), radius, 1.5, 0.08)
    scale = rng.uniform(0.4, 0.6)
    # Keep the nucleus well inside the short axis of the cell; it is also
    # clipped to the inner part of the cell when drawn.
    shift = rng.uniform(0.0, 0.5) * (1.0 - scale) * min(outline.axes)
    direction = rng.uniform(0.0, 2 * np.pi)
    nucleus = _random_outline(
        rng, (shift * math.sin(direction), shift * math.cos(direction)), radius * scale, 1.3, 0.05
    )
    gain = rng.uniform(0.1, 0.2) if cell_class == "dim" else 1.0
    return _Cell(
        cell_class,
        outline,
        nucleus,
        dna=gain * rng.uniform(800.0, 2500.0),
        dna_texture=rng.uniform(0.1, 0.3),
        cyto=gain * rng.uniform(300.0, 900.0),
        cyto_texture=rng.uniform(0.05, 0.2),
        rim=rng.uniform(0.0, 0.6),
        exclusion=rng.uniform(0.0, 0.4),
        # Log-normal so the marker level differs a lot between cells.
        marker=gain * 250.0 * rng.lognormal(0.0, 0.6),
        marker_texture=rng.uniform(0.2, 0.6),
        n_spots=int(rng.poisson(4.0)),
        spot_gain=rng.uniform(3.0, 8.0),
    )


def _draw_classes(rng: np.random.Generator, n: int, dim_fraction: float, dead_fraction: float) -> list[str]:
    p = [1.0 - dim_fraction - dead_fraction, dim_fraction, dead_fraction]
    return [CELL_CLASSES[i] for i in rng.choice(3, size=n, p=p)]


def _touching_pair(rng: np.random.Generator, first: _Cell, second: _Cell) -> list[_Cell]:
    """Move ``second`` so its outline overlaps ``first``'s by 1-2 px.

    Along the line joining the centres the outlines overlap by exactly the
    drawn amount, which is enough for the rasterized labels to share an edge
    once the overlap is split between them.
    """
    phi = rng.uniform(0.0, 2 * np.pi)
    overlap = rng.uniform(1.0, 2.0)
    distance = float(first.outline.radius(phi) + second.outline.radius(phi + np.pi)) - overlap
    return [first, second.shifted(distance * math.sin(phi), distance * math.cos(phi))]


def _bounds(cells: Sequence[_Cell]) -> tuple[np.ndarray, np.ndarray]:
    """Conservative ``(low, high)`` (row, col) bounds of all cells' pixels."""
    centers = np.array([c.outline.center for c in cells])
    radii = np.array([c.outline.max_radius() for c in cells])[:, None]
    return (centers - radii).min(axis=0), (centers + radii).max(axis=0)


def _window(outline: _Outline, shape: tuple[int, int], radius: float) -> tuple[slice, slice]:
    r0 = max(int(math.floor(outline.center[0] - radius)), 0)
    r1 = min(int(math.ceil(outline.center[0] + radius)) + 1, shape[0])
    c0 = max(int(math.floor(outline.center[1] - radius)), 0)
    c1 = min(int(math.ceil(outline.center[1] + radius)) + 1, shape[1])
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def _grid(win: tuple[slice, slice]) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.arange(win[0].start, win[0].stop, dtype=float)[:, None],
        np.arange(win[1].start, win[1].stop, dtype=float)[None, :],
    )


def _rasterize(cells: Sequence[_Cell], shape: tuple[int, int]) -> tuple[np.ndarray, list[tuple[slice, slice]]]:
    """Label image of ``cells``; returns it and each cell's bounding window.

    A pixel inside several outlines goes to the cell whose outline it is
    deepest inside (smallest normalized radius), which splits an overlap
    along a smooth curve and keeps labels disjoint.
    """
    labels = np.zeros(shape, dtype=np.uint16)
    depth = np.full(shape, np.inf)
    windows = []
    for k, cell in enumerate(cells, start=1):
        win = _window(cell.outline, shape, cell.outline.max_radius())
        rho = cell.outline.rho(*_grid(win))
        take = (rho <= 1.0) & (rho < depth[win])
        labels[win][take] = k
        depth[win][take] = rho[take]
        windows.append(win)
    return labels, windows


def _share_edge(labels: np.ndarray, a: int, b: int) -> bool:
    """Whether labels ``a`` and ``b`` are 4-connected neighbours somewhere."""
    for x, y in ((labels[:-1], labels[1:]), (labels[:, :-1], labels[:, 1:])):
        if np.any(((x == a) & (y == b)) | ((x == b) & (y == a))):
            return True
    return False


# ---------------------------------------------------------------------------
# Rendering and imaging


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise scaled to unit standard deviation."""
    # The theoretical standard deviation of filtered white noise, not the
    # sample one, so the texture strength does not depend on the image size.
    return ndi.gaussian_filter(rng.standard_normal(shape), sigma) * (2.0 * math.sqrt(math.pi) * sigma)


def _render(
    rng: np.random.Generator,
    cells: Sequence[_Cell],
    labels: np.ndarray,
    windows: Sequence[tuple[slice, slice]],
) -> np.ndarray:
    """Noise-free stain signal above background, ``(len(STAINS), H, W)``."""
    shape = labels.shape
    signal = np.zeros((len(STAINS),) + shape)
    chromatin = _smooth_noise(rng, shape, 1.0)
    cytoplasm = _smooth_noise(rng, shape, 3.0)
    marker_field = _smooth_noise(rng, shape, 2.0)
    spots = np.zeros(shape)
    dna, cyto, marker = signal
    for k, (cell, win) in enumerate(zip(cells, windows), start=1):
        rows, cols = _grid(win)
        inside = labels[win] == k
        if not inside.any():
            continue
        rho = cell.outline.rho(rows, cols)
        nrho = cell.nucleus.rho(rows, cols)
        # The nucleus stays off the cell's rim, and off pixels that went to
        # a touching neighbour.
        nucleus = inside & (nrho <= 1.0) & (rho <= 0.9)

        level = cell.dna * (1.0 + cell.dna_texture * chromatin[win]) * (1.0 - 0.3 * np.minimum(nrho, 1.0) ** 2)
        dna[win] += np.where(nucleus, level, 0.0)

        level = cell.cyto * (1.0 + cell.cyto_texture * cytoplasm[win]) * (1.0 + cell.rim * np.minimum(rho, 1.0) ** 4)
        level = level * np.where(nucleus, 1.0 - cell.exclusion, 1.0)
        cyto[win] += np.where(inside, level, 0.0)

        t = cell.marker_texture
        # Log-normal texture keeps the marker positive; the -t^2/2 keeps its
        # mean at the cell's marker level.
        level = cell.marker * np.exp(t * marker_field[win] - 0.5 * t * t)
        marker[win] += np.where(inside, np.where(nucleus, 0.3 * level, level), 0.0)

        if cell.n_spots:
            cytoplasm_px = np.flatnonzero(inside & ~nucleus)
            if cytoplasm_px.size == 0:
                cytoplasm_px = np.flatnonzero(inside)
            picks = rng.choice(cytoplasm_px, size=cell.n_spots)
            r, c = np.unravel_index(picks, inside.shape)
            amp = cell.marker * cell.spot_gain * rng.uniform(0.5, 1.5, cell.n_spots)
            np.add.at(spots, (r + win[0].start, c + win[1].start), amp)

    spot_sigma = 0.8
    # Scaled so a lone spot peaks at its drawn amplitude; clipped to the
    # cells so spots never sit on background.
    spots = ndi.gaussian_filter(spots, spot_sigma) * (2.0 * math.pi * spot_sigma**2)
    marker += spots * (labels > 0)
    np.maximum(signal, 0.0, out=signal)
    return signal


def _acquire(rng: np.random.Generator, signal: np.ndarray) -> np.ndarray:
    """Blur, add background, shot and read noise; return ``uint16`` counts."""
    sigma = rng.uniform(0.8, 1.2)
    blurred = ndi.gaussian_filter(signal, sigma=(0.0, sigma, sigma))
    background = _BACKGROUND + rng.normal(0.0, _BACKGROUND_JITTER, size=(signal.shape[0], 1, 1))
    counts = rng.poisson(np.maximum(blurred + background, 0.0)) + rng.normal(0.0, _READ_NOISE, signal.shape)
    return np.clip(np.rint(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def _image(rng: np.random.Generator, cells: Sequence[_Cell], labels: np.ndarray, windows) -> np.ndarray:
    return _acquire(rng, _render(rng, cells, labels, windows))


# ---------------------------------------------------------------------------
# Ground-truth table


def _compact(labels: np.ndarray, n: int) -> tuple[np.ndarray, list[int]]:
    """Renumber labels ``1..m`` without gaps, dropping cells left with no pixels.

    Returns the new labels and the 0-based indices of the cells kept, in
    order, so cells, windows and classes can be filtered to match.
    """
    area = np.bincount(labels.ravel(), minlength=n + 1)
    keep = np.flatnonzero(area[1:])
    if keep.size == n:
        return labels, list(range(n))
    lut = np.zeros(n + 1, dtype=np.uint16)
    lut[keep + 1] = np.arange(1, keep.size + 1)
    return lut[labels], [int(k) for k in keep]


def _cell_table(image: int, labels: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    n = len(classes)
    flat = labels.ravel().astype(np.intp)
    area = np.bincount(flat, minlength=n + 1)[1:]
    rows, cols = np.indices(labels.shape)
    with np.errstate(invalid="ignore", divide="ignore"):
        centroid_row = np.bincount(flat, weights=rows.ravel(), minlength=n + 1)[1:] / area
        centroid_col = np.bincount(flat, weights=cols.ravel(), minlength=n + 1)[1:] / area

    touching = np.zeros(n + 1, dtype=bool)
    for x, y in ((labels[:-1], labels[1:]), (labels[:, :-1], labels[:, 1:])):
        contact = (x != y) & (x > 0) & (y > 0)
        touching[x[contact]] = True
        touching[y[contact]] = True

    touches_border = np.zeros(n + 1, dtype=bool)
    for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        touches_border[edge] = True

    return pd.DataFrame(
        {
            "image": np.full(n, image, dtype=np.int64),
            "label": np.arange(1, n + 1, dtype=np.int64),
            "cell_class": list(classes),
            "area": area.astype(np.int64),
            "touching": touching[1:],
            "touches_border": touches_border[1:],
            "centroid_row": centroid_row,
            "centroid_col": centroid_col,
        }
    )


def _concat(tables: list[pd.DataFrame]) -> pd.DataFrame:
    if not tables:
        return _cell_table(0, np.zeros((1, 1), dtype=np.uint16), [])
    return pd.concat(tables, ignore_index=True)


# ---------------------------------------------------------------------------
# Argument checks


def _channel_planes(channels: Sequence[str]) -> list[int]:
    if isinstance(channels, str):
        raise TypeError(f"channels must be a sequence of names, not the string {channels!r}")
    channels = tuple(channels)
    unknown = [c for c in channels if c not in STAINS]
    if unknown:
        raise ValueError(f"unknown channel(s) {unknown}; choose from {list(STAINS)}")
    if not channels or len(set(channels)) != len(channels):
        raise ValueError(f"channels must be non-empty and without repeats, got {list(channels)}")
    return [STAINS.index(c) for c in channels]


def _check_fractions(**fractions: float) -> None:
    for name, value in fractions.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be within [0, 1], got {value}")
    if fractions["dim_fraction"] + fractions["dead_fraction"] > 1.0:
        raise ValueError(
            f"dim_fraction + dead_fraction must not exceed 1, got "
            f"{fractions['dim_fraction']} + {fractions['dead_fraction']}"
        )


# ---------------------------------------------------------------------------
# Public API


def make_ifc_events(
    n_events: int = 200,
    *,
    seed: int | np.random.Generator | None = 0,
    channels: Sequence[str] = STAINS,
    touching_fraction: float = 0.15,
    dim_fraction: float = 0.1,
    dead_fraction: float = 0.1,
) -> SyntheticDataset:
    """Make imaging-flow-cytometry-like events with ground truth.

    Each event is a small crop (typically 40-80 px a side, larger for big
    touching pairs) holding one cell, or two touching cells. Cells stay at
    least 3 px away from the crop's border.

    Parameters
    ----------
    n_events : int, optional
        Number of events.
    seed : int or numpy.random.Generator or None, optional
        Seed of the random generator; the same seed gives identical data.
    channels : sequence of str, optional
        Stains to return, in this order; any of :data:`STAINS`.
    touching_fraction : float, optional
        Expected fraction of events holding two touching cells.
    dim_fraction, dead_fraction : float, optional
        Expected fractions of cells in the ``dim`` and ``dead`` classes; the
        rest are ``live``.

    Returns
    -------
    SyntheticDataset
        One image per event; ``cells.image`` is the event index.

    Examples
    --------
    >>> data = make_ifc_events(10, seed=1)
    >>> data.images[0].shape[0], data.channels
    (3, ('DNA', 'cyto', 'marker'))
    """
    if n_events < 0:
        raise ValueError(f"n_events must be >= 0, got {n_events}")
    planes = _channel_planes(channels)
    _check_fractions(touching_fraction=touching_fraction, dim_fraction=dim_fraction, dead_fraction=dead_fraction)
    rng = np.random.default_rng(seed)

    images, label_images, tables = [], [], []
    for index in range(n_events):
        n_cells = 2 if rng.random() < touching_fraction else 1
        while True:
            classes = _draw_classes(rng, n_cells, dim_fraction, dead_fraction)
            cells = [_random_cell(rng, c) for c in classes]
            if n_cells == 2:
                cells = _touching_pair(rng, *cells)
            shape, offset = _event_frame(rng, cells)
            cells = [c.shifted(*offset) for c in cells]
            labels, windows = _rasterize(cells, shape)
            # Overlapping outlines share an edge in practice; redraw in the
            # rare case rasterization leaves a gap, so every pair touches.
            if n_cells == 1 or _share_edge(labels, 1, 2):
                break
        labels, keep = _compact(labels, len(cells))
        cells, windows, classes = ([x[k] for k in keep] for x in (cells, windows, classes))
        images.append(_image(rng, cells, labels, windows)[planes])
        label_images.append(labels)
        tables.append(_cell_table(index, labels, classes))
    return SyntheticDataset(images, label_images, _concat(tables), tuple(channels))


def _event_frame(rng: np.random.Generator, cells: Sequence[_Cell]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Pick an event's crop size and the integer shift that places the cells.

    The bounds are conservative, so keeping them ``_BORDER_MARGIN`` px from
    the edges keeps every cell pixel at least that far in.
    """
    low, high = _bounds(cells)
    shape, offset = [], []
    for lo, hi in zip(low, high):
        extent = int(math.ceil(hi - math.floor(lo)))
        size = max(int(rng.integers(40, 65)), extent + 2 * _BORDER_MARGIN + 1 + int(rng.integers(0, 9)))
        start = int(rng.integers(_BORDER_MARGIN, size - extent - _BORDER_MARGIN))
        shape.append(size)
        offset.append(start - int(math.floor(lo)))
    return (shape[0], shape[1]), (offset[0], offset[1])


def make_fields(
    n_fields: int = 4,
    *,
    size: tuple[int, int] = (256, 256),
    cells_per_field: int = 20,
    seed: int | np.random.Generator | None = 0,
    channels: Sequence[str] = STAINS,
    touching_fraction: float = 0.15,
    dim_fraction: float = 0.1,
    dead_fraction: float = 0.1,
) -> SyntheticDataset:
    """Make microscopy fields of view with many cells and their ground truth.

    Cells are placed at random without touching each other, except for
    deliberately touching pairs. Cell centres lie inside the field, so cells
    near the edge may be cut by it (``touches_border`` in the table).

    Parameters
    ----------
    n_fields : int, optional
        Number of fields of view.
    size : tuple of int, optional
        ``(H, W)`` of each field.
    cells_per_field : int, optional
        Cells to place in each field. Fewer are placed when the field is too
        crowded to fit them (with a warning); the table lists the cells drawn.
    seed : int or numpy.random.Generator or None, optional
        Seed of the random generator; the same seed gives identical data.
    channels : sequence of str, optional
        Stains to return, in this order; any of :data:`STAINS`.
    touching_fraction : float, optional
        Approximate fraction of cells that are part of a touching pair
        (``round(cells_per_field * touching_fraction / 2)`` pairs per field).
        A pair cut by the border may lose its contact.
    dim_fraction, dead_fraction : float, optional
        Expected fractions of cells in the ``dim`` and ``dead`` classes.

    Returns
    -------
    SyntheticDataset
        One image per field; ``cells.image`` is the field index.
    """
    if n_fields < 0 or cells_per_field < 0:
        raise ValueError(f"n_fields and cells_per_field must be >= 0, got {n_fields} and {cells_per_field}")
    height, width = (int(s) for s in size)
    if height < 1 or width < 1:
        raise ValueError(f"size must be positive, got {size}")
    planes = _channel_planes(channels)
    _check_fractions(touching_fraction=touching_fraction, dim_fraction=dim_fraction, dead_fraction=dead_fraction)
    rng = np.random.default_rng(seed)

    n_pairs = min(int(round(cells_per_field * touching_fraction / 2)), cells_per_field // 2)
    # Pairs first: they need the most room, and an emptier field.
    units = [2] * n_pairs + [1] * (cells_per_field - 2 * n_pairs)

    images, label_images, tables = [], [], []
    for index in range(n_fields):
        placed: list[tuple[float, float, float]] = []  # bounding circles: row, col, radius
        cells: list[_Cell] = []
        classes: list[str] = []
        for n_cells in units:
            unit_classes = _draw_classes(rng, n_cells, dim_fraction, dead_fraction)
            unit = [_random_cell(rng, c) for c in unit_classes]
            if n_cells == 2:
                unit = _touching_pair(rng, *unit)
            unit = _place(rng, unit, (height, width), placed)
            if unit is not None:
                cells.extend(unit)
                classes.extend(unit_classes)
        if len(cells) < cells_per_field:
            warnings.warn(
                f"field {index}: placed {len(cells)} of {cells_per_field} cells; the field of size "
                f"{(height, width)} has no room for more",
                stacklevel=2,
            )
        labels, windows = _rasterize(cells, (height, width))
        labels, keep = _compact(labels, len(cells))
        cells, windows, classes = ([x[k] for k in keep] for x in (cells, windows, classes))
        images.append(_image(rng, cells, labels, windows)[planes])
        label_images.append(labels)
        tables.append(_cell_table(index, labels, classes))
    return SyntheticDataset(images, label_images, _concat(tables), tuple(channels))


def _place(
    rng: np.random.Generator,
    unit: list[_Cell],
    shape: tuple[int, int],
    placed: list[tuple[float, float, float]],
) -> list[_Cell] | None:
    """Shift ``unit`` to a free spot of the field; ``None`` if none is found.

    Shifts are whole pixels, so the outlines rasterize as they would at the
    origin.
    """
    centers = np.array([c.outline.center for c in unit])
    radii = np.array([c.outline.max_radius() for c in unit])
    middle = np.rint(centers.mean(axis=0))
    others = np.array(placed).reshape(-1, 3)
    for _ in range(_PLACEMENT_TRIES):
        shift = np.array([rng.integers(0, shape[0]), rng.integers(0, shape[1])]) - middle
        moved = centers + shift
        # Every centre inside the field, so no cell is cut away entirely.
        if np.any(moved < 0) or np.any(moved > np.array(shape) - 1):
            continue
        if others.size:
            gaps = np.hypot(moved[:, None, 0] - others[None, :, 0], moved[:, None, 1] - others[None, :, 1])
            if np.any(gaps < radii[:, None] + others[None, :, 2] + _PLACEMENT_GAP):
                continue
        placed.extend((float(r), float(c), float(rad)) for (r, c), rad in zip(moved, radii))
        return [cell.shifted(float(shift[0]), float(shift[1])) for cell in unit]
    return None


def write_example(
    path: str | os.PathLike,
    *,
    n_events: int = 500,
    n_fields: int = 4,
    n_stacks: int = 2,
    seed: int = 0,
) -> dict[str, Path]:
    """Write SCIP's example data set, with ground truth, under ``path``.

    The layout is::

        path/
            ifc.zarr/                 events of make_ifc_events(n_events, seed=seed)
            ifc_labels.zarr/          their ground-truth labels, (1, H, W) per event
            ifc_cells.csv             ground-truth table of the events
            fields/field{i}_{channel}.tiff   make_fields(n_fields, seed=seed), 2-D uint16
            fields_labels/field{i}.tiff      their ground-truth labels
            fields_cells.csv          ground-truth table of the fields
            zstacks/, zstacks_labels/, zstacks_cells.csv   write_zstacks(n_stacks, seed=seed)
            micronuclei/, micronuclei_labels/, micronuclei_cells.csv   nuclei with micronuclei
                                      (scip.datasets.micronuclei.write_micronuclei, seed=seed)

    Both zarr stores use SCIP's IFC layout (see :mod:`scip.io.ifc_zarr`),
    with object numbers ``0..n_events-1``, so an event's object number is
    its ``image`` index in ``ifc_cells.csv``. Existing outputs of an earlier
    call are replaced: the two zarr stores, and ``field*.tiff`` files in the
    two field folders; nothing else under ``path`` is touched.

    Parameters
    ----------
    path : str or os.PathLike
        Folder to write into; created if needed.
    n_events : int, optional
        Number of IFC events.
    n_fields : int, optional
        Number of fields of view (default size and cell count of
        :func:`make_fields`).
    n_stacks : int, optional
        Number of z stacks of nuclei (:func:`write_zstacks`).
    seed : int, optional
        Seed passed to :func:`make_ifc_events`, :func:`make_fields` and
        :func:`make_zstacks`.

    Returns
    -------
    dict of str to Path
        ``"ifc"``, ``"ifc_labels"``, ``"ifc_cells"``, ``"fields"``,
        ``"fields_labels"``, ``"fields_cells"``, ``"zstacks"``,
        ``"zstacks_labels"``, ``"zstacks_cells"``, ``"micronuclei"``,
        ``"micronuclei_labels"`` and ``"micronuclei_cells"``, mapped to what
        was written.

    Raises
    ------
    FileExistsError
        If ``ifc.zarr`` or ``ifc_labels.zarr`` exists but is not an IFC zarr
        store, so replacing it could destroy unrelated data.
    """
    import shutil

    import tifffile

    # Imported here so making data in memory does not depend on the I/O
    # package (and so scip.io may import this module without a cycle).
    from scip.io.ifc_zarr import is_ifc_zarr, write_ifc_zarr

    root = Path(path)
    out = {
        "ifc": root / "ifc.zarr",
        "ifc_labels": root / "ifc_labels.zarr",
        "ifc_cells": root / "ifc_cells.csv",
        "fields": root / "fields",
        "fields_labels": root / "fields_labels",
        "fields_cells": root / "fields_cells.csv",
    }
    for key in ("ifc", "ifc_labels"):
        store = out[key]
        if store.exists():
            if not is_ifc_zarr(store):
                raise FileExistsError(f"{store} exists and is not an IFC zarr store; not replacing it")
            # A smaller store written over a larger one would keep stale chunks.
            shutil.rmtree(store)
    for key in ("fields", "fields_labels"):
        out[key].mkdir(parents=True, exist_ok=True)
        for stale in out[key].glob("field*.tiff"):
            stale.unlink()

    events = make_ifc_events(n_events, seed=seed)
    write_ifc_zarr(out["ifc"], events.images, object_numbers=range(n_events))
    write_ifc_zarr(out["ifc_labels"], [lab[None] for lab in events.labels], object_numbers=range(n_events))
    events.cells.to_csv(out["ifc_cells"], index=False)

    fields = make_fields(n_fields, seed=seed)
    for i, (image, labels) in enumerate(zip(fields.images, fields.labels)):
        for plane, name in zip(image, fields.channels):
            tifffile.imwrite(out["fields"] / f"field{i}_{name}.tiff", plane)
        tifffile.imwrite(out["fields_labels"] / f"field{i}.tiff", labels)
    fields.cells.to_csv(out["fields_cells"], index=False)
    out.update(write_zstacks(root, n_stacks=n_stacks, seed=seed))
    out.update(write_micronuclei(root, seed=seed))
    return out


# ---------------------------------------------------------------------------
# Z stacks

_ZSTACK_GAP = 3.0  # voxels between the bounding spheres of two nuclei (in plane units)


def make_zstacks(
    n_stacks: int = 2,
    *,
    shape: tuple[int, int, int] = (24, 96, 96),
    nuclei_per_stack: int = 8,
    seed: int | np.random.Generator | None = 0,
) -> SyntheticDataset:
    """Make z stacks of separate ellipsoidal nuclei with exact 3-D ground truth.

    Each nucleus is an axis-aligned ellipsoid (semi-axes 3-5 planes in z,
    6-10 pixels in y and x), placed at random without touching another and
    at least one voxel inside every face of the stack. Its DNA signal (one
    level per nucleus) is blurred by an anisotropic Gaussian point spread
    function, then background, shot and read noise are added as for
    :func:`make_fields`.

    Parameters
    ----------
    n_stacks : int, optional
        Number of stacks.
    shape : tuple of int, optional
        ``(Z, H, W)`` of each stack.
    nuclei_per_stack : int, optional
        Nuclei to place; fewer when the stack has no room (with a warning).
    seed : int or numpy.random.Generator or None, optional
        Seed of the random generator; the same seed gives identical data.

    Returns
    -------
    SyntheticDataset
        ``images``: one ``(1, Z, H, W)`` ``uint16`` array per stack (channel
        ``DNA``); ``labels``: ``(Z, H, W)`` ``uint16``, nuclei numbered
        ``1..n``; ``cells``: ``image``, ``label``, ``volume`` (voxels),
        ``z_extent`` (planes), ``centroid_z``, ``centroid_row``,
        ``centroid_col``.
    """
    if n_stacks < 0 or nuclei_per_stack < 0:
        raise ValueError(f"n_stacks and nuclei_per_stack must be >= 0, got {n_stacks} and {nuclei_per_stack}")
    depth, height, width = (int(s) for s in shape)
    if min(depth, height, width) < 12:
        raise ValueError(f"shape must be at least 12 voxels along every axis, got {shape}")
    rng = np.random.default_rng(seed)
    images, label_images, tables = [], [], []
    for index in range(n_stacks):
        labels = np.zeros((depth, height, width), np.uint16)
        signal = np.zeros(labels.shape)
        placed: list[tuple[np.ndarray, float]] = []
        for _ in range(nuclei_per_stack):
            axes = np.array([rng.uniform(3.0, 5.0), rng.uniform(6.0, 10.0), rng.uniform(6.0, 10.0)])
            for _ in range(_PLACEMENT_TRIES):
                center = np.array([rng.uniform(a + 1.5, n - a - 2.5) for a, n in zip(axes, (depth, height, width))])
                if all(np.linalg.norm((center - c) * [2.0, 1.0, 1.0]) > 2.0 * axes[0] + r + _ZSTACK_GAP
                       and np.linalg.norm(center[1:] - c[1:]) > axes[1:].max() + r + _ZSTACK_GAP
                       for c, r in placed):
                    break
            else:
                warnings.warn(f"stack {index}: placed {len(placed)} of {nuclei_per_stack} nuclei; no room for more",
                              stacklevel=2)
                break
            placed.append((center, float(axes[1:].max())))
            # Only the ellipsoid's box is evaluated: the whole stack per nucleus would cost minutes.
            box = tuple(slice(max(int(c - a) - 1, 0), min(int(c + a) + 2, n))
                        for c, a, n in zip(center, axes, (depth, height, width)))
            zz, yy, xx = np.ogrid[box]
            inside = (((zz - center[0]) / axes[0]) ** 2 + ((yy - center[1]) / axes[1]) ** 2
                      + ((xx - center[2]) / axes[2]) ** 2) <= 1.0
            labels[box][inside] = len(placed)
            signal[box][inside] = rng.uniform(450.0, 600.0)
        blurred = ndi.gaussian_filter(signal, sigma=(0.7, 1.0, 1.0))
        counts = rng.poisson(blurred + _BACKGROUND) + rng.normal(0.0, _READ_NOISE, labels.shape)
        images.append(np.clip(np.rint(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)[None])
        label_images.append(labels)
        tables.append(_stack_table(index, labels))
    return SyntheticDataset(images, label_images, _concat(tables), ("DNA",))


def _stack_table(image: int, labels: np.ndarray) -> pd.DataFrame:
    ids = np.unique(labels[labels > 0]).astype(int)
    z, r, c = np.nonzero(labels)
    lab = labels[z, r, c].astype(np.intp)
    volume = np.bincount(lab, minlength=ids.size + 1)[ids]
    planes = [np.unique(z[lab == i]).size for i in ids]
    return pd.DataFrame({
        "image": image,
        "label": ids,
        "volume": volume,
        "z_extent": planes,
        "centroid_z": np.bincount(lab, weights=z, minlength=ids.size + 1)[ids] / volume,
        "centroid_row": np.bincount(lab, weights=r, minlength=ids.size + 1)[ids] / volume,
        "centroid_col": np.bincount(lab, weights=c, minlength=ids.size + 1)[ids] / volume,
    })


def write_zstacks(
    path: str | os.PathLike,
    *,
    n_stacks: int = 2,
    seed: int = 0,
    **kwargs: object,
) -> dict[str, Path]:
    """Write :func:`make_zstacks` data under ``path`` as ImageJ z-stack TIFFs.

    The layout is::

        path/
            zstacks/stack{i}.tif          (Z, Y, X) uint16, ImageJ axes ``ZYX``
            zstacks_labels/stack{i}.tif   their 3-D ground-truth labels
            zstacks_cells.csv             ground-truth table

    Earlier ``stack*.tif`` files in the two folders are removed first.

    Parameters
    ----------
    path : str or os.PathLike
        Folder to write into; created if needed.
    n_stacks, seed : int, optional
        As for :func:`make_zstacks`.
    **kwargs
        Other arguments of :func:`make_zstacks` (``shape``, ``nuclei_per_stack``).

    Returns
    -------
    dict of str to Path
        ``"zstacks"``, ``"zstacks_labels"`` and ``"zstacks_cells"``.
    """
    import tifffile

    root = Path(path)
    out = fresh_folders(root, "zstacks_cells", ("zstacks", "zstacks_labels"), "stack*.tif")
    data = make_zstacks(n_stacks, seed=seed, **kwargs)  # type: ignore[arg-type]
    for i, (image, labels) in enumerate(zip(data.images, data.labels)):
        tifffile.imwrite(out["zstacks"] / f"stack{i}.tif", image[0], imagej=True, metadata={"axes": "ZYX"})
        tifffile.imwrite(out["zstacks_labels"] / f"stack{i}.tif", labels, imagej=True, metadata={"axes": "ZYX"})
    data.cells.to_csv(out["zstacks_cells"], index=False)
    return out
