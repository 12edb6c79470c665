"""Texture of each object, per channel: Haralick features and Sobel gradient statistics.

Haralick features
    The 13 features of Haralick et al. (1973) as CellProfiler's MeasureTexture
    computes them through ``mahotas.features.haralick(crop, distance=d,
    ignore_zeros=True)``, for every distance ``d`` in ``params.distances`` and
    four directions, plus their mean and range (max - min) over the directions.
    Names: ``<feature>_<d>_<angle>`` with angle 0, 45, 90, 135 (degrees,
    counter-clockwise from the column axis as the image is displayed, row 0
    on top), and
    ``<feature>_<d>_mean``, ``<feature>_<d>_range``.

    Directions, as ``(row, col)`` offsets of the second pixel of a pair, and
    their CellProfiler / mahotas names (``_2d_deltas``): 0 degrees ``(0, d)``
    (horizontal, CellProfiler ``_00``); 45 degrees ``(d, -d)`` (NE-SW, ``_03``);
    90 degrees ``(d, 0)`` (vertical, ``_02``); 135 degrees ``(d, d)`` (NW-SE,
    ``_01``). The matrices are symmetric, so an offset and its opposite are the
    same direction.

    Only object pixels count: a pair ``(p, p + offset)`` enters the object's
    gray-level co-occurrence matrix only if both pixels carry the object's
    label; pixels of a touching object or of the background never do. The
    matrix is symmetric (each pair counted as ``(a, b)`` and ``(b, a)``) and
    normalized to probabilities. This is exactly mahotas' ``haralick`` with
    ``ignore_zeros=True`` on the object's bounding-box crop of the quantized
    levels below with every other pixel set to 0.

Quantization
    Object pixels map to gray levels ``1 .. L`` (``L = params.gray_levels``);
    level 0 is reserved for "not in the object". By default each object is
    quantized between its own minimum and maximum in the channel::

        level = min(L, 1 + floor((v - vmin) * (L / (vmax - vmin))))

    and an object whose pixels are all equal gets level 1 everywhere. With
    ``params.intensity_range[c] = (lo, hi)`` the same formula uses ``lo`` and
    ``hi``, after clipping the values to ``[lo, hi]``, so levels compare across
    objects. :func:`quantize` returns the level image.

Feature formulas (mahotas', ``p`` the normalized matrix of size ``M = max level
of the object + 1``, ``p_x = p_y`` its marginal, ``p_{x+y}``, ``p_{x-y}`` the
distributions of ``i + j`` and ``|i - j|``, entropies in bits, i.e. log2, with
``0 log 0 = 0``): angular second moment ``sum p^2``; contrast
``sum k^2 p_{x-y}(k)``; correlation ``(sum i j p - mu^2) / sigma^2`` of the
marginal; variance ``sigma^2`` of the marginal (``E[i^2] - mu^2``); inverse
difference moment ``sum p / (1 + (i - j)^2)``; sum average ``sum k p_{x+y}(k)``;
sum variance ``sum k^2 p_{x+y}(k) - (sum average)^2``; sum entropy ``H(p_{x+y})``;
entropy ``H(p)``; difference variance: the population variance of the ``M``
values of the vector ``p_{x-y}`` (mahotas' default, not the variance of
``|i - j|``; it depends on ``M``, which we replicate); difference entropy
``H(p_{x-y})``; information measures of correlation ``(H - HXY1) / max(HX, HY)``
and ``sqrt(1 - exp(-2 (HXY2 - H)))``, where for a symmetric matrix
``HXY1 = HXY2 = HX + HY = 2 HX`` (mahotas evaluates the two cross entropies
over ``p_x p_y``; they are equal to ``2 HX`` in exact arithmetic). The values
agree with mahotas to ~1e-11 relative on real and synthetic objects (the sums
run in a different order, the marginals are exact integer counts); note that
info_meas2 is ill-conditioned where ``HXY2 - H`` is ~0, as in any
implementation.

Degenerate values (never an error)
    A direction with no pair of object pixels (one-pixel objects, lines one
    pixel wide, objects smaller than the distance) gives NaN for all 13
    features of that direction; mahotas raises there and CellProfiler /
    cp_measure give NaN for all directions of the object. ``_mean`` and
    ``_range`` use the finite directions only, NaN if there is none. A matrix
    with a single level (constant object): angular second moment 1, contrast
    0, correlation 1 (mahotas' value when the marginal has no spread), variance
    0, inverse difference moment 1, sum average ``2 l``, sum variance 0, the
    entropies 0, difference variance ``(1 - 1/M) / M``, info_meas1 0 (mahotas
    returns ``H - HXY1`` undivided when ``HX = 0``), info_meas2 0. An object
    with a non-finite value in a channel gets NaN Haralick features there.

Sobel gradient
    ``sobel_<stat>``: the :data:`~._stats.STATISTICS` of the gradient magnitude
    of the channel image at the object's pixels, where the magnitude is
    ``skimage.filters.sobel(image)`` (``sqrt((G_r^2 + G_c^2) / 2)`` with the
    kernels ``[1, 0, -1]`` x ``[1, 2, 1] / 4``, border mode 'reflect'). The
    gradient is of the whole image, so pixels just outside the object (the
    background, a touching object) do enter the gradient of its edge pixels.

Differences from CellProfiler: CellProfiler quantizes the whole image at once
(``img_as_ubyte`` then a fixed rescale) rather than per object or with a given
range, and gives NaN for the whole object when one direction has no pair; the
features of a given quantized image are identical.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._glcm import N_HARALICK, haralick_runs, log2_table, quantize_runs, sobel_runs
from ._objects import FeatureParams, Objects, empty
from ._stats import STATISTICS, stats_by_run

__all__ = ["NAME", "HARALICK", "ANGLES", "describe", "compute", "quantize", "object_levels", "offsets", "haralick"]

NAME = "texture"

#: Directions in degrees, in column order.
ANGLES: tuple[int, ...] = (0, 45, 90, 135)

#: ``(row, col)`` unit step of each angle in :data:`ANGLES`.
_STEPS: tuple[tuple[int, int], ...] = ((0, 1), (1, -1), (1, 0), (1, 1))

#: ``(name, definition, unit)`` of the 13 Haralick features, in mahotas' order.
HARALICK: tuple[tuple[str, str, str], ...] = (
    ("angular_second_moment", "Angular second moment (sum of squared probabilities) of", "1"),
    ("contrast", "Contrast (sum of (i - j)^2 p(i, j)) of", "level^2"),
    ("correlation", "Correlation of the two gray levels (1 if the marginal has zero variance) of", "1"),
    ("variance", "Variance (sum of squares) of the gray level under the marginal of", "level^2"),
    ("inverse_difference_moment", "Inverse difference moment (sum of p(i, j) / (1 + (i - j)^2)) of", "1"),
    ("sum_average", "Sum average (mean of i + j) of", "level"),
    ("sum_variance", "Sum variance (variance of i + j) of", "level^2"),
    ("sum_entropy", "Sum entropy (log2 entropy of the distribution of i + j) of", "bit"),
    ("entropy", "Entropy (log2) of", "bit"),
    ("difference_variance", "Difference variance (mahotas: population variance of the vector p_{x-y} "
     "over the object's max level + 1 entries) of", "1"),
    ("difference_entropy", "Difference entropy (log2 entropy of the distribution of |i - j|) of", "bit"),
    ("info_meas1", "Information measure of correlation 1, (H - HXY1) / max(HX, HY) (undivided if HX = 0), of", "1"),
    ("info_meas2", "Information measure of correlation 2, sqrt(1 - exp(-2 (HXY2 - H))), of", "1"),
)

_SOBEL_OF = "the Sobel gradient magnitude of the object's pixels"


def _glcm_text(d: int, angle: int | str) -> str:
    if angle in ANGLES:
        dr, dc = _STEPS[ANGLES.index(angle)]
        where = f"{angle} degrees, (row, col) offset ({dr * d}, {dc * d})"
        return (f"the symmetric gray-level co-occurrence matrix of the object's pixel pairs "
                f"{d} px apart at {where}; NaN if no pair lies in the object.")
    what = "mean" if angle == "mean" else "range (max - min)"
    return (f"the symmetric gray-level co-occurrence matrices of the object's pixel pairs {d} px apart: "
            f"{what} over the directions 0, 45, 90 and 135 degrees that have a pair; NaN if none has.")


def _haralick_names(params: FeatureParams) -> list[tuple[str, str, str]]:
    out = []
    for name, text, unit in HARALICK:
        for d in params.distances:
            for angle in (*ANGLES, "mean", "range"):
                out.append((f"{name}_{d}_{angle}", f"{text} {_glcm_text(d, angle)}", unit))
    return out


def describe(channel_names: Sequence[str], params: FeatureParams) -> list[tuple[str, str | None, str, str]]:
    """Features of this family: ``(feature, channel, definition, unit)``, grouped per channel."""
    per_channel = _haralick_names(params)
    for stat, template, unit in STATISTICS:
        per_channel.append((f"sobel_{stat}", template.format(of=_SOBEL_OF),
                            "intensity/px" if unit == "intensity" else unit))
    return [(f, ch, d, u) for ch in channel_names for f, d, u in per_channel]


def offsets(distances: Sequence[int]) -> np.ndarray:
    """``(row, col)`` offsets, int64 ``(len(distances) * 4, 2)``: per distance the angles of :data:`ANGLES`."""
    return np.array([(dr * d, dc * d) for d in distances for dr, dc in _STEPS], dtype=np.int64).reshape(-1, 2)


def _range_of(params: FeatureParams, channel: int) -> tuple[float, float, bool]:
    if params.intensity_range is None:
        return 0.0, 0.0, False
    if len(params.intensity_range) <= channel:
        raise ValueError(f"intensity_range has {len(params.intensity_range)} (low, high) pairs, "
                         f"but channel {channel} needs one; give one pair per channel")
    lo, hi = params.intensity_range[channel]
    return float(lo), float(hi), True


def object_levels(objects: Objects, params: FeatureParams, channel: int) -> np.ndarray:
    """Gray levels (uint8, ``1 .. gray_levels``) of the grouped pixels of ``channel``.

    Aligned with ``objects.groups.index``; 0 for every pixel of an object with
    a non-finite value in the channel. See the module docstring for the rule.
    """
    lo, hi, use_range = _range_of(params, channel)
    g = objects.groups
    return quantize_runs(np.ascontiguousarray(objects.values(channel)), g.starts, g.counts,
                         int(params.gray_levels), lo, hi, use_range)


def quantize(objects: Objects, params: FeatureParams, channel: int) -> np.ndarray:
    """Level image (uint8, shape of the labels) of ``channel``: 0 outside objects."""
    out = np.zeros(objects.labels.shape, dtype=np.uint8)
    out.ravel()[objects.groups.index] = object_levels(objects, params, channel)
    return out


def haralick(objects: Objects, params: FeatureParams) -> np.ndarray:
    """Haralick features, float64 ``(n_objects, n_channels, len(distances), 4, 13)``.

    Axis 3 follows :data:`ANGLES`, axis 4 :data:`HARALICK`.
    """
    g = objects.groups
    n_ch = objects.pixels.shape[0]
    values = objects.channel_values
    ranges = [_range_of(params, c) for c in range(n_ch)]
    lo = np.array([r[0] for r in ranges], dtype=np.float64)
    hi = np.array([r[1] for r in ranges], dtype=np.float64)
    use_range = params.intensity_range is not None
    max_count = int(g.counts.max()) if len(g) else 0
    # T = 2 * pairs <= 2 * pixels; larger counts fall back to np.log2
    table = log2_table(min(2 * max_count + 1, 1 << 22))
    out = haralick_runs(values, g.starts, g.counts, g.index, int(objects.labels.shape[-1]),
                        offsets(params.distances), int(params.gray_levels), lo, hi, use_range, table)
    return out.reshape(len(g), n_ch, len(params.distances), len(ANGLES), N_HARALICK)


def _mean_range(per_dir: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and max - min over axis -2 of the finite entries; NaN where none is."""
    # Reduced over the first axis of a contiguous copy with that axis first:
    # over axis -2 (4 entries 13 apart) numpy runs short strided loops, twice
    # as slow. Either way numpy adds so few entries one after the other, in
    # axis order, so the sums are the same.
    x = np.ascontiguousarray(np.moveaxis(per_dir, -2, 0))
    finite = np.isfinite(x)
    if finite.all():  # nothing to leave out (the usual case): the same sums, divided by the same count
        return x.sum(axis=0) / len(x), x.max(axis=0) - x.min(axis=0)
    n = finite.sum(axis=0)
    total = np.where(finite, x, 0.0).sum(axis=0)
    hi = np.where(finite, x, -np.inf).max(axis=0)
    lo = np.where(finite, x, np.inf).min(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    rng = np.where(n > 0, hi - lo, np.nan)
    return mean, rng


#: Object pixels per band of rows in :func:`_row_bands` (at least; about 1 MB of gradient).
_BAND_PIXELS = 1 << 17


def _row_bands(objects: Objects) -> list[tuple[int, int, int, int]] | None:
    """Consecutive objects in bands of few image rows, for the Sobel gradient: ``(start, end, row0, row1)``.

    Objects ``start .. end - 1`` (their pixels are the grouped pixels
    ``starts[start] .. starts[end - 1] + counts[end - 1]``) lie in label
    image rows ``row0 + 1 .. row1 - 2``; ``row0 .. row1 - 1`` adds the row
    above and below that the gradient reads, clipped to the image (where the
    gradient's own border rule applies, the same in a band as in the image).
    Bands are cut only between an object and the next that starts below the
    rows of all objects before it (up to the rows both read), after about
    :data:`_BAND_PIXELS` object pixels, so a row is converted once or twice
    at most. None when the bands would still convert more than 1.25 times
    the image rows (labels far from raster order), or when one band holds
    more than half of them (no gain). One band of fewer rows is what a strip
    of a large image needs (see :func:`scip.features._strips`).
    """
    g = objects.groups
    n = len(g)
    height = objects.labels.shape[0]
    if n == 0 or objects.labels.ndim != 2:
        return None
    top = objects.box_min_row
    bottom = top + objects.box_height - 1
    reach = np.maximum.accumulate(bottom)
    clean = np.flatnonzero(top[1:] >= reach[:-1] - 1) + 1  # cut before object clean[j]
    ends = np.cumsum(g.counts)
    at = np.searchsorted(ends[clean - 1], np.arange(_BAND_PIXELS, int(ends[-1]), _BAND_PIXELS))
    cuts = np.unique(clean[at[at < len(clean)]])
    first = np.concatenate(([0], cuts))
    last = np.concatenate((cuts, [n]))
    row0 = np.maximum(np.minimum.reduceat(top, first) - 1, 0)
    row1 = np.minimum(np.maximum.reduceat(bottom, first) + 2, height)
    if len(cuts) == 0 and int(row1[0] - row0[0]) > height // 2:
        return None  # one band of most rows: converting the image is as cheap
    if int(np.sum(row1 - row0)) > 1.25 * height:
        return None
    return list(zip(first.tolist(), last.tolist(), row0.tolist(), row1.tolist()))


def _sobel_stats(objects: Objects, channel: int, bands: list[tuple[int, int, int, int]] | None,
                 buffers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """:data:`~._stats.STATISTICS` of the Sobel gradient magnitude of ``channel`` over each object's pixels.

    ``sobel_runs`` reads a float64 image. Float64 pixels are read where they
    are, and so is the whole image of other dtypes when ``bands`` is None:
    converted into one image-sized float64 buffer. Otherwise each band of
    rows (see :func:`_row_bands`) is converted into one small buffer, and
    its objects' gradient computed and reduced while both are in cache: no
    image-sized float64 copy (165 MB on the 4544 x 4544 benchmark mosaic)
    and no pixel-sized gradient (45 MB), each a fresh mapping whose pages
    the kernel zeroes every call. A band holds the rows its objects'
    gradients read, and an object's statistics depend on its own pixels
    only, so the values are the same either way. ``buffers`` (the caller's,
    one per call) keeps the buffers for the next channel.
    """
    g = objects.groups
    image = objects.pixels[channel]
    if bands is None or (image.dtype == np.float64 and image.flags.c_contiguous):
        if "grad" not in buffers:
            buffers["grad"] = empty(objects, "sobel_grad", objects.rows.shape[0], np.float64)
        buffers["image"] = objects.channel_image(channel, buffers.get("image"))
        grad = sobel_runs(buffers["image"], objects.rows, objects.cols, buffers["grad"])
        return stats_by_run(grad, g.starts, g.counts)
    starts, counts = g.starts, g.counts
    if "band" not in buffers:
        tallest = max(r1 - r0 for _, _, r0, r1 in bands)
        most = max(int(starts[end - 1] + counts[end - 1] - starts[start]) for start, end, _, _ in bands)
        buffers["band"] = empty(objects, "sobel_band", tallest * image.shape[1], np.float64).reshape(tallest, image.shape[1])
        buffers["band_grad"] = empty(objects, "sobel_band_grad", most, np.float64)
    rows, cols = objects.rows, objects.cols
    pieces: list[dict[str, np.ndarray]] = []
    for start, end, r0, r1 in bands:
        a = int(starts[start])
        b = int(starts[end - 1] + counts[end - 1])
        part = buffers["band"][:r1 - r0]
        np.copyto(part, image[r0:r1])
        grad = sobel_runs(part, rows[a:b] - r0, cols[a:b], buffers["band_grad"][:b - a])
        pieces.append(stats_by_run(grad, starts[start:end] - a, counts[start:end]))
    return {name: np.concatenate([p[name] for p in pieces]) for name in pieces[0]}


def compute(objects: Objects, params: FeatureParams) -> dict[tuple[str, str | None], np.ndarray]:
    """Haralick features and Sobel gradient statistics of every object and channel."""
    feats = haralick(objects, params)  # (n, C, D, 4, 13)
    mean, rng = _mean_range(feats)     # (n, C, D, 13)
    out: dict[tuple[str, str | None], np.ndarray] = {}
    bands = _row_bands(objects)
    # One set of buffers for every channel (see sobel_runs).
    buffers: dict[str, np.ndarray] = {}
    for c, channel in enumerate(objects.channel_names):
        for f, (name, _, _) in enumerate(HARALICK):
            for k, d in enumerate(params.distances):
                for a, angle in enumerate(ANGLES):
                    out[(f"{name}_{d}_{angle}", channel)] = feats[:, c, k, a, f]
                out[(f"{name}_{d}_mean", channel)] = mean[:, c, k, f]
                out[(f"{name}_{d}_range", channel)] = rng[:, c, k, f]
        # float64 whatever the pixel dtype (the kernel reads each pixel as float64
        # anyway): one compiled specialization instead of one per dtype. One
        # buffer serves every channel: a fresh image-sized array per channel
        # cost more in page faults than the conversion itself.
        for stat, values in _sobel_stats(objects, c, bands, buffers).items():
            out[(f"sobel_{stat}", channel)] = values
    return out
