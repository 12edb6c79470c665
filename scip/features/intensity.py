"""Intensity of each object, per channel: statistics in three views, and locations.

For every channel, all objects at once (pixels are grouped by label a single
time in :class:`~._objects.Objects`; every per-object quantity is a segmented
reduction over contiguous runs, no Python loop over objects):

Object view
    The :data:`~._stats.STATISTICS` (mean, median, std, min, max, quartiles,
    sum, MAD, skewness, kurtosis) of the object's pixels, named as the
    statistic (``mean``, ``median``, ...). Quantiles use numpy's default
    ``linear`` method; skewness and kurtosis follow :func:`scipy.stats.skew` and
    :func:`scipy.stats.kurtosis` defaults (biased, Fisher's excess kurtosis)
    and are NaN when all values are equal (a one-pixel object included).

Edge view
    The same statistics over the object's *edge ring*, named ``edge_<stat>``.
    The ring of width ``w = params.edge_width`` is what ``w`` successive
    erosions of the object with the 4-connected cross remove, where a pixel
    stays only if its 4 neighbours carry its label. Pixels outside the image do
    not count as different, so an object is not eroded from the image border.
    Equivalently: the object's pixels within city-block distance ``w`` of an
    in-image pixel with another label (or background). For ``w = 1`` this is
    ``skimage.segmentation.find_boundaries(labels, connectivity=1,
    mode="inner")`` restricted to the object, which is exactly CellProfiler's
    (cp_measure's) edge for the ``*IntensityEdge`` measurements: our
    ``edge_sum/mean/std/min/max`` equal its ``Integrated/Mean/Std/Min/
    MaxIntensityEdge``, except that an object without an edge pixel (one that
    fills the whole image) gets NaN here and 0 there.

Background-corrected view
    ``background`` is the local background ``b`` of the object: the median of
    the usable background pixels (``objects.background``: unlabeled, not
    excluded by the caller's mask) in a band around the object. The band holds
    the pixels within Euclidean distance ``params.background_width`` of the
    object that are nearer to it than to any other object, i.e. the pixels
    :func:`skimage.segmentation.expand_labels` would add to it, except that a
    pixel equally near two objects goes to the one with the smaller label
    (expand_labels follows its distance transform's scan order). When the
    caller gives ``band_labels`` (the pipeline passes the cells when it
    measures a mask inside them, such as nuclei), the band is measured around
    those regions instead, so a nucleus is corrected by the background around
    its cell rather than by its own cytoplasm. NaN if the band holds no usable
    pixel. ``corrected_<stat>`` are the location
    statistics of ``pixel - b``: mean, median, min, max and the quartiles are
    the object's statistic minus ``b``, and ``corrected_sum`` is the object's
    sum minus ``b`` times its area. The shift-invariant statistics (std, MAD,
    skewness, kurtosis) of ``pixel - b`` equal those of the object view, so
    they are not repeated.

Locations (as CellProfiler's MeasureObjectIntensity)
    ``center_mass_row/col``: the intensity-weighted centroid
    (``Location_CenterMassIntensity_Y/X``); NaN when the object's intensities
    sum to exactly zero (CellProfiler does the same), never an error.
    ``mass_displacement``: distance between the object's (binary) centroid and
    that center of mass (``MassDisplacement``); NaN with it. ``max_row/col``:
    the pixel of maximum intensity (``Location_MaxIntensity_Y/X``), the first
    in raster order on ties, which is what cp_measure's per-object
    ``np.argmax`` over the raster-ordered object pixels picks as well. All
    coordinates are image coordinates: ``objects.row_offset/col_offset`` are
    added.

Differences from CellProfiler: CellProfiler's edge has a fixed width of one
pixel (ours is a parameter, equal at the default 1); it reports 0 rather than
NaN for measurements of an empty edge; its quartiles, median and MAD follow
its legacy ``n * q`` convention (cp_measure's default is numpy's linear
method, as here); it has no skewness, kurtosis or background correction; and
it skips non-finite pixels, which are not excluded here (a NaN pixel makes
its object's mean, center of mass and maximum location NaN).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ._jit import kernel
from ._groups import bounding_boxes, group_pixels
from ._objects import FeatureParams, Objects, empty, gather_float64
from ._stats import STATISTICS, _holds_nan, _pivot, _range_max, _select, stats_by_run

__all__ = ["NAME", "describe", "compute"]

NAME = "intensity"

#: Statistics that move with a constant shift of the values; the others are
#: shift-invariant and would repeat the object view after background correction.
_LOCATION_STATS: tuple[str, ...] = ("mean", "median", "min", "max", "lower_quartile", "upper_quartile", "sum")

_LOCATIONS: tuple[tuple[str, str, str], ...] = (
    ("center_mass_row",
     "Row of the intensity-weighted centroid (sum of row times intensity over the sum of intensities) of the "
     "object's pixels, in image coordinates; NaN if the intensities sum to zero.", "px"),
    ("center_mass_col",
     "Column of the intensity-weighted centroid (sum of column times intensity over the sum of intensities) of "
     "the object's pixels, in image coordinates; NaN if the intensities sum to zero.", "px"),
    ("mass_displacement",
     "Euclidean distance between the object's centroid and its intensity-weighted centroid; NaN if the "
     "intensities sum to zero.", "px"),
    ("max_row", "Row of the object's maximum-intensity pixel (the first in raster order on ties), in image "
     "coordinates.", "px"),
    ("max_col", "Column of the object's maximum-intensity pixel (the first in raster order on ties), in image "
     "coordinates.", "px"),
)


def _features(params: FeatureParams) -> list[tuple[str, str, str]]:
    """``(feature, definition, unit)`` of one channel, in column order."""
    w, bw = int(params.edge_width), int(params.background_width)
    edge_of = (f"the intensities of the object's edge ring, i.e. its pixels within city-block distance {w} of a "
               "pixel inside the image that is not in the object")
    corrected_of = "the object's pixel intensities minus the object's background feature"
    out = [(name, template.format(of="the object's pixel intensities"), unit) for name, template, unit in STATISTICS]
    out += [(f"edge_{name}", template.format(of=edge_of), unit) for name, template, unit in STATISTICS]
    out.append((
        "background",
        f"Median intensity of the usable background pixels within Euclidean distance {bw} px of the object and "
        "nearer to it than to any other object (ties: smaller label); NaN if there are none.",
        "intensity",
    ))
    templates = {name: (template, unit) for name, template, unit in STATISTICS}
    out += [(f"corrected_{name}", templates[name][0].format(of=corrected_of), templates[name][1])
            for name in _LOCATION_STATS]
    out += list(_LOCATIONS)
    return out


def describe(channel_names: Sequence[str], params: FeatureParams) -> list[tuple[str, str | None, str, str]]:
    """Features of this family: ``(feature, channel, definition, unit)``, grouped by channel."""
    per_channel = _features(params)
    return [(f, ch, d, u) for ch in channel_names for f, d, u in per_channel]


@kernel
def _edge_pixels(labels, index, width, outside, use_outside, removed, at):  # pragma: no cover - compiled
    """Which of the labeled pixels ``index`` (flat) ``width`` label-wise erosions with the 4-connected cross remove.

    A pixel survives an erosion only if each of its in-image 4-neighbours
    carries its (surviving) label; the image border does not erode, and
    neither do ``outside`` pixels (the margins between packed crops; read only
    where ``use_outside``). Only the labeled pixels are visited. Writes the
    positions ``k`` (ascending) of the removed pixels ``index[k]`` to ``at``
    (int64, ``len(index)`` entries) and returns how many it wrote.

    ``removed`` (uint8) is scratch for ``width > 1`` only, with an entry per
    image pixel; it is not read otherwise (the caller may pass an empty
    array). The caller allocates it and ``at``: numpy backs large arrays with
    huge pages, numba would fault them in 4 KiB pages, and only the pages
    written are faulted in at all.
    """
    H, W = labels.shape
    flat = labels.ravel()
    out_flat = outside.ravel()
    more = width > 1
    if more and removed.shape[0] < H * W:
        raise ValueError("removed needs an entry per image pixel when width > 1")
    n = 0
    # Stamps 1 and 2 alternate: a pixel still there at erosion t has no
    # same-label 4-neighbour removed before t - 1 (it would have gone at t - 1
    # itself), so "removed before t" is "stamped, and not with t's stamp".
    # The first erosion reads no stamp (nothing is removed yet) and writes
    # one at every labeled pixel, 0 where it stays: those are the only
    # entries read later (a neighbour's is read only when it carries the
    # pixel's label), so the image-sized scratch is never cleared.
    for t in range(width):
        now = np.uint8(1 + t % 2)
        later = t > 0
        # The row of p is found by division only when p leaves the current
        # row: an object's pixels come in raster order, ~30 per row on the
        # benchmark mosaic, and an int64 division per pixel was a third of
        # the kernel's time.
        r = 0
        row_start = 0
        for k in range(index.shape[0]):
            p = index[k]
            if later and removed[p] != 0:
                continue
            c = p - row_start
            if c < 0 or c >= W:
                r = p // W
                row_start = r * W
                c = p - row_start
            v = flat[p]
            decided = False
            if not later and 0 < r < H - 1 and 0 < c < W - 1:
                # The usual pixel of the first erosion: no stamps to read, no
                # border, four comparisons without branches. Four neighbours
                # of its label keep it, with outside pixels or without (those
                # carry no label); another label erodes it unless that may be
                # an outside pixel, left to the test below.
                erode = (flat[p - W] != v) | (flat[p + W] != v) | (flat[p - 1] != v) | (flat[p + 1] != v)
                decided = not (erode and use_outside)
            if not decided:
                # written out per neighbour: a helper function here made the loop ~4x slower
                erode = False
                if r > 0:
                    q = p - W
                    if not (use_outside and out_flat[q]):
                        erode |= flat[q] != v or (later and removed[q] != 0 and removed[q] != now)
                if r < H - 1:
                    q = p + W
                    if not (use_outside and out_flat[q]):
                        erode |= flat[q] != v or (later and removed[q] != 0 and removed[q] != now)
                if c > 0:
                    q = p - 1
                    if not (use_outside and out_flat[q]):
                        erode |= flat[q] != v or (later and removed[q] != 0 and removed[q] != now)
                if c < W - 1:
                    q = p + 1
                    if not (use_outside and out_flat[q]):
                        erode |= flat[q] != v or (later and removed[q] != 0 and removed[q] != now)
            if more:
                # 0 where the pixel stays: at t = 0 this is the first write; later it is the stamp it had
                removed[p] = now if erode else np.uint8(0)
            elif erode:
                at[n] = k
                n += 1
    if more:
        for k in range(index.shape[0]):
            if removed[index[k]] != 0:
                at[n] = k
                n += 1
    return n


def _blocked_size(H: int, W: int) -> int:
    """Entries of :func:`_band_owned`'s ``dist`` for an ``H x W`` image: whole 8 x 8 blocks."""
    return (H + 7) // 8 * ((W + 7) // 8) * 64


@kernel
def _band_owned(labels, usable, region_label, box, width, region_pos, dist, cand_rc, cand_d,
                out_flat, out_pos):  # pragma: no cover - compiled
    """Usable pixels within ``width`` of each region that are nearest to it, written to ``out_flat, out_pos``.

    Region ``i`` holds the pixels of ``labels`` equal to ``region_label[i]``
    (ascending); its window ``box[i] = (r0, c0, r1, c1)`` is a box that holds
    them all (e.g. their bounding box) grown by ``width``, inclusive, inside
    the image. A larger window changes nothing but the time. Regions are visited in
    ascending label order; a pixel goes to the first region at the smallest
    squared distance, i.e. ties go to the smaller label. ``region_pos`` is the
    object position of each region, -1 for a region without an object (it
    still claims its pixels but reports none). Returns the number ``k`` of
    entries written: ``out_flat[:k]`` (flat pixel index) and ``out_pos[:k]``
    (object position), grouped by region, so by ascending object position,
    and in raster order within a region.

    Scratch space, overwritten: ``dist``, of an integer type that holds
    ``width**2 + 1``, at least :func:`_blocked_size` entries; ``cand_rc``
    (int64) and ``cand_d`` (the integer type of ``dist``) one
    entry per window pixel of all regions. The caller allocates them and the outputs (numpy's large arrays
    get transparent huge pages, numba's do not: an image-sized array
    allocated here cost more in page faults than the whole transform).

    ``dist`` is laid out in 8 x 8 blocks, not row by row: the rows of a
    window then lie close together in memory, so a window's reads there are
    nearly sequential rather than one cache miss per row (119 -> 99 ms for
    this kernel on the benchmark mosaic); with uint8 distances a block is
    one 64-byte cache line. Candidates keep their row and
    column (``r << 32 | c``), from which both indices follow.

    The squared distance of each pixel of a window to the region is an exact
    separable Euclidean distance transform: the distance to the nearest
    region pixel along each column (two scans, capped at ``width + 1``),
    then for each usable pixel the smallest ``dc**2 + dv[c + dc]**2`` over
    ``|dc| <= width``. Squared distances up to ``width**2`` are exact; larger
    ones only need to be larger, so the caps do no harm. (Painting a disk
    around every boundary pixel, as before, costs boundary pixels times disk
    area: 81 at width 5.)

    Two passes: the first computes each window once, keeps the candidates
    (pixel, squared distance) and each pixel's smallest squared distance in
    ``dist``; the second gives a candidate's pixel to its region if that
    distance is the smallest and no earlier region took it.
    """
    H, W = labels.shape
    w2 = width * width
    cap = w2 + 1
    n_regions = len(region_pos)
    # blocked index of (r, c): ((r >> 3) * wb + (c >> 3)) << 6 | (r & 7) << 3 | c & 7
    wb = (W + 7) >> 3
    if len(dist) < (((H + 7) >> 3) * wb) << 6:
        raise ValueError("dist is smaller than _blocked_size(H, W)")
    # cap where no region reaches (and, once handed out, where a region took
    # the pixel): cap > w2, so it never equals a reaching distance.
    dist[:] = cap
    wv = width + 1  # vertical distances saturate here: (width + 1)**2 > w2
    uw = np.uintp(width)
    # Per window: vertical distance (then its square), rows padded by `width`
    # on each side so that the row pass needs no bounds.
    dv = np.empty(0, np.int64)
    h2 = np.empty(0, np.int64)
    cand_start = np.empty(n_regions + 1, np.int64)
    n_cand = 0
    for i in range(n_regions):
        cand_start[i] = n_cand
        r0 = box[i, 0]
        c0 = box[i, 1]
        hh = box[i, 2] - r0 + 1
        ww = box[i, 3] - c0 + 1
        stride = ww + 2 * width
        if hh * stride > len(dv):
            dv = np.empty(2 * hh * stride, np.int64)
            h2 = np.empty(2 * hh * stride, np.int64)
        # Unsigned indices from here: no negative-index handling in the inner loops.
        us = np.uintp(stride)
        uww = np.uintp(ww)
        # The region's pixels are the zeros. Read from the window of the
        # label image, which the scan below reads again from cache: no list of
        # boundary pixels (a scan of the whole label image and a sort) needed.
        dv[:hh * stride] = wv
        label = region_label[i]
        uc0 = np.uintp(c0)
        for a in range(hh):
            row = labels[r0 + a]
            at = np.uintp(a) * us + uw
            for b in range(uww):
                if row[uc0 + b] == label:
                    dv[at + b] = 0
        # column distances: down, then up (row by row: the inner loop runs along memory)
        for a in range(1, hh):
            at = np.uintp(a) * us + uw
            for b in range(uww):
                v = dv[at - us + b] + 1
                x = dv[at + b]
                dv[at + b] = v if v < x else x
        for a in range(hh - 2, -1, -1):
            at = np.uintp(a) * us + uw
            for b in range(uww):
                v = dv[at + us + b] + 1
                x = dv[at + b]
                dv[at + b] = v if v < x else x
        # squares, padding included (wv**2 there: the window holds every region pixel)
        for t in range(np.uintp(hh) * us):
            dv[t] = dv[t] * dv[t]
        # nearest region pixel: h2 = min of o**2 + dv2 over columns +- o,
        # |o| <= width. One pass per offset over the whole window, rows and
        # their padding alike (the padding's values are not used): a long
        # loop vectorizes, where one per row (~50 pixels) ran mostly in its
        # scalar remainder. (Per pixel, with a stop once o**2 is no better,
        # the loop's length varied from pixel to pixel and mispredicted; the
        # minimum is the same.)
        n_flat = np.uintp(hh) * us
        for x in range(n_flat):
            h2[x] = dv[x]
        for o in range(1, width + 1):
            o2 = o * o
            uo = np.uintp(o)
            for x in range(uo, n_flat - uo):
                y = dv[x - uo]
                z = dv[x + uo]
                m = (y if y < z else z) + o2
                v = h2[x]
                h2[x] = m if m < v else v
        for a in range(hh):
            r = r0 + a
            at = np.uintp(a) * us + uw
            # the row's part of the blocked index and of the candidate (see above)
            g_row = (((r >> 3) * wb) << 6) | ((r & 7) << 3)
            rc_row = r << 32
            usable_row = usable[r]
            label_row = labels[r]
            for b in range(uww):
                uc = uc0 + b
                # usable first: a byte per pixel, and in the usual case (band
                # regions are the objects) only background pixels are usable
                if not usable_row[uc] or label_row[uc] != 0:
                    continue
                d2 = h2[at + b]
                if d2 > w2:
                    continue
                c = c0 + np.int64(b)
                g = np.uintp(g_row + ((c >> 3) << 6) + (c & 7))
                cand_rc[n_cand] = rc_row | c
                cand_d[n_cand] = d2
                n_cand += 1
                if d2 < dist[g]:
                    dist[g] = d2
    cand_start[n_regions] = n_cand
    k = 0
    for i in range(n_regions):
        # A region without an object (p < 0) still takes its pixels from
        # farther regions, and reports none.
        p = region_pos[i]
        for t in range(np.uintp(cand_start[i]), np.uintp(cand_start[i + 1])):
            r = cand_rc[t] >> 32
            c = cand_rc[t] & 0xFFFFFFFF
            g = np.uintp((((r >> 3) * wb + (c >> 3)) << 6) | ((r & 7) << 3) | (c & 7))
            if cand_d[t] == dist[g]:
                # the first region at the smallest distance: ties go to the smaller label
                dist[g] = cap
                if p >= 0:
                    out_flat[k] = r * W + c
                    out_pos[k] = p
                    k += 1
    return k


def _positions(ids: np.ndarray, region_ids: np.ndarray) -> np.ndarray:
    """Position of each region's object in ``ids`` (int64), -1 where it is not measured.

    A region whose object is absent (a cell with an empty nucleus mask, an
    object of a neighbouring strip) still takes its pixels from farther
    regions, but owns no band.
    """
    if not len(ids):
        return np.full(len(region_ids), -1, np.int64)
    pos = np.minimum(np.searchsorted(ids, region_ids), len(ids) - 1)
    return np.where(ids[pos] == region_ids, pos, -1).astype(np.int64)


def _background_band(objects: Objects, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Usable background pixels near each object: flat indices and object positions, grouped by object.

    The band is measured around ``objects.band_labels`` (the objects
    themselves unless the caller says otherwise, e.g. the cell around a
    nucleus); a band pixel belongs to the nearest such region, and to the one
    with the smaller label when two are equally near. Only the regions'
    surroundings are visited, never a distance map of the whole image.
    """
    width = int(width)
    regions = np.ascontiguousarray(objects.band_labels)
    usable = np.ascontiguousarray(objects.background)
    H, W = regions.shape
    if objects.band_regions is not None:
        # Some of the label image's objects are measured (a strip of a large
        # image): every object there is a region, with its box as given.
        given = objects.band_regions
        region_ids = given.ids
        r0, c0, r1, c1 = given.min_row, given.min_col, given.max_row, given.max_col
        region_pos = _positions(objects.ids, region_ids)
    elif objects.band_labels is objects.labels:
        # The regions are the objects: their bounding boxes are the ones the
        # other families use (2-D labels here).
        region_ids = objects.ids
        region_pos = np.arange(len(region_ids), dtype=np.int64)
        r0, c0 = objects.box_min_row, objects.box_min_col
        r1 = r0 + objects.box_height - 1
        c1 = c0 + objects.box_width - 1
    else:
        # The regions' bounding boxes from their grouped pixels, by the
        # kernels that grouped the objects' (no kernel of its own to compile):
        # a region's pixels come in raster order, so its first and last give
        # its rows. (The box of a region's pixels nearest to an outside pixel
        # would do as well; the windows then hold a few more pixels to reject.)
        g = group_pixels(regions)
        region_ids = g.ids
        r0, c0, r1, c1 = bounding_boxes(g, W)
        region_pos = _positions(objects.ids, region_ids)
    # Each region's window: the bounding box grown by width, inside the image.
    box = np.empty((len(region_ids), 4), np.int64)
    box[:, 0] = np.maximum(r0 - width, 0)
    box[:, 1] = np.maximum(c0 - width, 0)
    box[:, 2] = np.minimum(r1 + width, H - 1)
    box[:, 3] = np.minimum(c1 + width, W - 1)
    n_window = int(np.sum((box[:, 2] - box[:, 0] + 1) * (box[:, 3] - box[:, 1] + 1)))
    # Scratch and outputs of the kernel, allocated here (see _band_owned). The
    # candidate arrays have room for every window pixel and the outputs for
    # every usable pixel, bounds no input reaches: only the pages written are
    # faulted in, so the narrower their type the fewer pages: dist and cand_d
    # uint8 hold width**2 + 1 up to width 15 (the default is 5; a wider band
    # compiles a uint16, beyond 255 an int64, specialization on first use),
    # and out_pos int32 holds any object position with int32 labels. One
    # compiled specialization for the usual case. uint8 rather than uint16:
    # an 8 x 8 block of dist is then one cache line, and the band kernel
    # ran ~10 % faster on the benchmark mosaic, page faults aside.
    cap = width * width + 1
    if cap <= np.iinfo(np.uint8).max:
        distance_type = np.uint8
    elif cap <= np.iinfo(np.uint16).max:
        distance_type = np.uint16
    else:
        distance_type = np.int64
    # The kernel sees the rows the windows span, not the whole image: it
    # resets its distance scratch (an entry per pixel it sees) on every call,
    # and a strip of a large image (scip.features._strips) has
    # windows in a few of the image's rows only. The same windows either way.
    top, bottom = (int(box[:, 0].min()), int(box[:, 2].max()) + 1) if len(box) else (0, 0)
    box[:, 0] -= top
    box[:, 2] -= top
    dist = empty(objects, "band_dist", _blocked_size(bottom - top, W), distance_type)
    cand_rc = empty(objects, "band_cand_rc", n_window, np.int64)
    cand_d = empty(objects, "band_cand_d", n_window, distance_type)
    n_out = min(n_window, int(np.count_nonzero(usable[top:bottom])))
    out_flat = empty(objects, "band_flat", n_out, np.int64)
    out_pos = empty(objects, "band_pos", n_out, np.int32 if len(objects) <= np.iinfo(np.int32).max else np.int64)
    k = _band_owned(regions[top:bottom], usable[top:bottom], np.asarray(region_ids, np.int64), box, width, region_pos,
                    dist, cand_rc, cand_d, out_flat, out_pos)
    out_flat = out_flat[:k]
    if top:
        out_flat += top * W  # flat index in the whole image
    return out_flat, out_pos[:k]


@kernel
def _run_median(values, starts, counts):  # pragma: no cover - compiled
    # Selection instead of run_stats' full sort: the background needs the
    # median only. NaN as np.median gives it (numba's np.median leaves the
    # result to where a NaN lands); ours rather than numba's np.median, which
    # compiles its selection and quicksort in every process (about 1.5 CPU
    # seconds of a fresh cache).
    out = np.empty(len(starts), np.float64)
    out[:] = np.nan
    longest = 0
    for i in range(len(starts)):
        if counts[i] > longest:
            longest = counts[i]
    buf = np.empty(longest, np.float64)
    for i in range(len(starts)):
        c = counts[i]
        if c == 0:
            continue
        s = starts[i]
        # The copy is also the selection's first partition (around _select's
        # pivot): values below the pivot are written from the front, the
        # others from the back. Each value is stored at both ends; the store
        # at the wrong end lands on a slot a later value overwrites.
        pivot = _pivot(values, s, s + c)
        total = 0.0
        below = 0
        for j in range(c):
            v = values[s + j]
            total += v
            buf[below] = v
            buf[c - 1 - j + below] = v
            below += v < pivot
        if np.isnan(total) and _holds_nan(buf, c):
            continue
        half = c // 2
        if below == 0:  # the pivot is the minimum: a run of ties, often one value (a blank background)
            equal = 0
            for j in range(c):
                equal += buf[j] == pivot
            if equal > half:  # the middle order statistics are copies of the pivot
                out[i] = pivot if c % 2 == 1 else (pivot + pivot) / 2
                continue
        first = np.intp(0)  # the side of the partition holding the median's position
        last = c
        if half < below:
            last = below
        elif below > 0:
            first = below
        _select(buf, first, last, half)
        if c % 2 == 1:
            out[i] = buf[half]
        else:
            out[i] = (_range_max(buf, np.intp(0), half) + buf[half]) / 2
    return out


#: Products (channels x 2 coordinates x values) that :func:`_locations`
#: forms per step: its buffers then stay in the cache. 2**15 to 2**16 values
#: per channel were fastest with 3 channels (49 ms for the 5,000-cell mosaic;
#: 54 at 2**14 and 2**17, 71-74 at 2**13 and 2**18).
_LOCATION_PRODUCTS = 1 << 18


def _locations(values: np.ndarray, maxima: np.ndarray, rows: np.ndarray, cols: np.ndarray, starts: np.ndarray,
               counts: np.ndarray, box_min_row: np.ndarray, box_min_col: np.ndarray, cen_row: np.ndarray,
               cen_col: np.ndarray, chunk: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Intensity-weighted coordinate sums and the first maximum of each run, in every channel.

    Parameters
    ----------
    values : ndarray of float64, shape (C, N)
        Grouped values of each channel (:attr:`~._objects.Objects.channel_values`).
    maxima : ndarray of float64, shape (C, n)
        Each run's maximum in each channel (NaN for a run holding a NaN).
    rows, cols : ndarray of int, shape (N,)
        Pixel coordinates.
    starts, counts : ndarray of int, shape (n,)
        The runs: consecutive, each of at least one value, together all ``N``.
    box_min_row, box_min_col : ndarray of int, shape (n,)
        Each run's bounding box corner.
    cen_row, cen_col : ndarray of float64, shape (n,)
        Each run's centroid relative to its box corner.
    chunk : int, optional
        Values handled per step and channel (whole runs: a step holds at
        least one); by default ``_LOCATION_PRODUCTS / (2 C)``.

    Returns
    -------
    row_sum, col_sum : ndarray of float64, shape (C, n)
        Sum over the run of ``((row - box row) - centroid row) * value``, and
        the same for columns, as ``np.add.reduceat`` of the products gives it.
    first : ndarray of intp, shape (C, n)
        Position of each run's first value equal to its maximum; -1 if none
        (a NaN maximum).

    Notes
    -----
    A few thousand objects at a time rather than pixel-sized passes: the
    coordinates relative to the centroid, the products for both sums of
    every channel and the spread maxima are formed for one step's whole runs
    in buffers that stay in the cache, instead of pixel-sized arrays (45 MB
    each on the benchmark mosaic) streamed through memory several times per
    channel. Each run is reduced alone either way, so the sums are the same
    bit for bit. The coordinates are formed as ``float(row) - float(box
    row)``, which is the exact integer ``row - box row``, so no value depends
    on where in the label image the object lies.
    """
    n_channels, size = values.shape
    n = len(starts)
    row_sum = np.empty((n_channels, n))
    col_sum = np.empty((n_channels, n))
    first = np.full((n_channels, n), -1, np.intp)
    if n == 0:
        return row_sum, col_sum, first
    if chunk is None:
        chunk = max(1 << 12, _LOCATION_PRODUCTS // (2 * max(n_channels, 1)))
    # Steps of whole runs: each starts at the first run starting at or after a multiple of ``chunk``.
    cut = np.unique(np.concatenate(([0], np.searchsorted(starts, np.arange(chunk, size, chunk)), [n])))
    bounds = np.append(starts, size)[cut]
    longest = int(np.max(np.diff(bounds)))
    box = np.stack([box_min_row, box_min_col]).astype(np.float64)
    centroid = np.stack([cen_row, cen_col])
    relative = np.empty((2, longest))
    product = np.empty((n_channels, 2, longest))
    hits: list[list[np.ndarray]] = [[] for _ in range(n_channels)]
    for i0, i1, a, b in zip(cut[:-1], cut[1:], bounds[:-1], bounds[1:]):
        m = b - a
        runs = counts[i0:i1]
        d = relative[:, :m]
        np.subtract(rows[a:b], np.repeat(box[0, i0:i1], runs), out=d[0])
        np.subtract(cols[a:b], np.repeat(box[1, i0:i1], runs), out=d[1])
        np.subtract(d, np.repeat(centroid[:, i0:i1], runs, axis=1), out=d)
        v = values[:, a:b]
        p = product[:, :, :m]
        np.multiply(d[None, :, :], v[:, None, :], out=p)
        sums = np.add.reduceat(p, starts[i0:i1] - a, axis=2)
        row_sum[:, i0:i1] = sums[:, 0]
        col_sum[:, i0:i1] = sums[:, 1]
        # Only the hits are kept (a few per run), not a pixel-sized mask.
        equal = v == np.repeat(maxima[:, i0:i1], runs, axis=1)
        for c in range(n_channels):
            hits[c].append(np.flatnonzero(equal[c]) + a)
    for c in range(n_channels):
        at_hits = np.concatenate(hits[c])
        if not len(at_hits):
            continue
        # each run's first hit, if it lies inside the run (a NaN run has none)
        at = np.searchsorted(at_hits, starts)
        found = at_hits[np.minimum(at, len(at_hits) - 1)]
        first[c] = np.where((at < len(at_hits)) & (found < starts + counts), found, -1)
    return row_sum, col_sum, first


def compute(objects: Objects, params: FeatureParams) -> dict[tuple[str, str | None], np.ndarray]:
    """All features of every object in every channel; arrays aligned with ``objects.ids``."""
    n = len(objects)
    groups = objects.groups
    starts, counts = groups.starts, groups.counts

    outside = objects.outside if objects.outside is not None else np.zeros((1, 1), bool)
    width = int(params.edge_width)
    # Positions of the edge pixels in the grouped arrays (a tenth of the
    # pixels on the benchmark mosaic): gathered by them, not by a pixel-sized mask.
    edge_at = empty(objects, "edge_at", groups.index.size, np.int64)
    n_edge = _edge_pixels(objects.labels, groups.index, width, np.ascontiguousarray(outside),
                          objects.outside is not None, np.empty(objects.labels.size if width > 1 else 0, np.uint8),
                          edge_at)
    edge_at = edge_at[:n_edge]

    band_index, band_seg = _background_band(objects, int(params.background_width))
    # The band's runs by binary search in its object positions (ascending),
    # not run_bounds' bincount, which first copies them to intp: 1.3 instead
    # of 6.9 ms for the 3.4 M band pixels of the benchmark mosaic. Keys of the
    # positions' own dtype, or numpy would convert the whole array.
    band_ends = np.searchsorted(band_seg, np.arange(n, dtype=band_seg.dtype), side="right")
    band_counts = np.diff(band_ends, prepend=0)
    band_starts = band_ends - band_counts

    # Edge pixels per run from their positions (a few per object), without a pixel-sized pass.
    edge_counts = (np.searchsorted(edge_at, starts + counts) - np.searchsorted(edge_at, starts)).astype(np.int64)
    edge_starts = np.zeros(n, np.int64)
    np.cumsum(edge_counts[:-1], out=edge_starts[1:])
    # Every channel's edge values in one gather.
    edge_values = np.take(objects.channel_values, edge_at, axis=1)
    row0 = objects.box_min_row + objects.row_shift
    col0 = objects.box_min_col + objects.col_shift

    # The band values of one channel at a time, into one float64 buffer for all channels.
    flat = objects.pixels.reshape(objects.pixels.shape[0], -1)
    band_values = empty(objects, "band_values", band_index.size, np.float64).reshape(1, band_index.size)

    stats, edge_stats, background = [], [], []
    for c in range(len(objects.channel_names)):
        stats.append(stats_by_run(objects.values(c), starts, counts))
        edge_stats.append(stats_by_run(edge_values[c], edge_starts, edge_counts))
        gather_float64(flat[c:c + 1], band_index, band_values)
        background.append(_run_median(band_values[0], band_starts, band_counts))

    # The intensity-weighted centroid relative to the object's centroid:
    # the weighted sums then give the mass displacement directly and stay
    # precise. The centroid is taken inside the bounding box and the box
    # corner (an exact integer in image coordinates) added last, so no value
    # depends on where in the label image the object lies (crops packed side
    # by side land anywhere). numpy, not a compiled pass: a kernel of its own
    # saved ~0.1 s per 5,000 cells but cost 0.6-0.8 CPU s to compile on an
    # empty cache, which the first run's 2x budget (issue 18) could not afford.
    cen_row, cen_col = objects.local_centroid
    row_sums, col_sums, firsts = _locations(
        objects.channel_values, np.stack([s["max"] for s in stats]) if stats else np.empty((0, n)),
        objects.rows, objects.cols, starts, counts, objects.box_min_row, objects.box_min_col, cen_row, cen_col)

    out: dict[tuple[str, str | None], np.ndarray] = {}
    for c, channel in enumerate(objects.channel_names):
        b = background[c]
        total = stats[c]["sum"]
        with np.errstate(divide="ignore", invalid="ignore"):
            shift_row = np.where(total != 0, row_sums[c] / total, np.nan)
            shift_col = np.where(total != 0, col_sums[c] / total, np.nan)
        first = firsts[c]
        found = first >= 0
        # the box-relative row and column of the maximum (exact integers)
        max_row = np.where(found, objects.rows[first] - objects.box_min_row, np.nan) + row0
        max_col = np.where(found, objects.cols[first] - objects.box_min_col, np.nan) + col0

        feats: dict[str, np.ndarray] = dict(stats[c])
        feats.update({f"edge_{k}": v for k, v in edge_stats[c].items()})
        feats["background"] = b
        for name in _LOCATION_STATS:
            feats[f"corrected_{name}"] = stats[c][name] - (b * counts if name == "sum" else b)
        feats["center_mass_row"] = cen_row + shift_row + row0
        feats["center_mass_col"] = cen_col + shift_col + col0
        feats["mass_displacement"] = np.hypot(shift_row, shift_col)
        feats["max_row"] = max_row
        feats["max_col"] = max_col
        for feature, _, _ in _features(params):
            out[(feature, channel)] = np.asarray(feats[feature], dtype=np.float64)
    return out
