"""Shape-gated split and merge of nucleus instances (a U-Net post-processing step).

The U-Net's seeds fail in two opposite ways on images from labs it never
saw (``docs/segmentation.md``): touching nuclei grown from one seed (one
object much larger than the image's typical nucleus and usually with a
neck, i.e. less convex), and one nucleus cut into pieces along a shallow
valley of the centre map (pieces whose union is convex, or a small piece
that shares a long border with its neighbour). Neither can be fixed by one
seed setting, since lowering the seed threshold splits more nuclei of the
second kind and raising it merges more of the first. This step looks at
the objects' shapes instead, after the seeded watershed:

- **split**: an object whose area exceeds ``split_area`` times the
  image's median object area (and, with ``split_solidity``, whose
  solidity, area / convex hull area, is below that) is split at the necks
  of its own distance transform (regional maxima at least ``split_h`` px
  high seed a watershed); the split is kept only if every part has at
  least ``min_area`` pixels. The size gate keeps single kidney-shaped
  nuclei of ordinary size whole; a round nucleus has one maximum and stays
  whole at any size. The leave-one-set-out selection chose no solidity
  gate (``docs/segmentation.md``): DSB's merged nuclei are nearly convex
  (0.85-0.95).
- **merge**: two touching objects are joined when their union's solidity
  is at least ``merge_solidity`` and its area at most ``merge_area`` times
  the median, or (with ``merge_boundary``) when their shared border is at
  least ``merge_boundary`` times the square root of the smaller one's area
  (a fragment cut off a nucleus shares a long border; two nuclei that
  touch share a short one). The most convex union is joined first, and the
  pairs are looked at again after each join. Pairs only: three sectors of
  one disk stay three, since no two of them make a convex union.

The median area is the image's own, taken once before the split (after the
drops of :func:`scip.segment.unet.predict.clean_nuclei`), so the step follows
the nucleus size of the image rather than of the training data. Windows of a
large image are given the whole image's (``median_area``; the tile engine
computes it, :func:`scip.engine.tiles.run_statistics`), so that a tiled run
splits and joins what a whole-image run does.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import measure, morphology, segmentation

from .._util import CONNECTIVITY, remove_small_and_relabel

#: The settings the leave-one-set-out selection chose (``benchmarks/results/shape_postprocess.md``): what
#: ``split_merge: true`` of the ``unet`` method applies when the model file does not set them.
DEFAULTS = {"split_area": 1.5, "split_h": 1.0, "merge_solidity": 0.93, "merge_area": 5.0, "merge_boundary": 1.5}
KEYS = ("split_area", "split_h", "split_solidity", "merge_solidity", "merge_area", "merge_boundary")


def median_area(labels: np.ndarray) -> float:
    """Median area in pixels of the objects of ``labels`` (0 when there are none): the size split/merge compares to."""
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    return float(np.median(areas)) if areas.size else 0.0


def split_concave(labels: np.ndarray, area: float, h: float = 1.0, min_area: float = 0,
                  solidity: float | None = None, median: float | None = None) -> np.ndarray:
    """Split large objects at the necks of their distance transform.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Objects 1..N, 0 background.
    area : float
        Only objects larger than ``area`` times the median object area of
        ``labels`` are split.
    h : float, optional
        Height in pixels of the distance transform's maxima that seed the
        parts (h-maxima): shallower necks do not split.
    min_area : float, optional
        A split is kept only if every part has at least this many pixels.
    solidity : float, optional
        Also require area / convex hull area below this.
    median : float, optional
        The median object area to compare with; ``None``: that of ``labels``.

    Returns
    -------
    ndarray of int32
        The objects, split ones numbered after the existing labels (not
        relabelled).
    """
    out = labels.astype(np.int32, copy=True)
    median = median_area(labels) if median is None else median
    if not median:
        return out
    nxt = int(labels.max()) + 1
    areas = np.bincount(labels.ravel())
    # Only the few objects above the size gate are looked at (solidity costs a convex hull each).
    big = set(np.flatnonzero(areas > max(area * median, 2 * min_area)).tolist()) - {0}
    for region in measure.regionprops(labels):
        if region.label not in big or (solidity is not None and region.solidity >= solidity):
            continue
        mask = np.pad(region.image, 1)  # the border keeps the distance transform zero at the crop's edge
        dist = ndi.distance_transform_edt(mask)
        seeds = measure.label(morphology.h_maxima(dist, h).astype(bool) & mask, connectivity=CONNECTIVITY)
        if seeds.max() < 2:
            continue
        parts = segmentation.watershed(-dist, seeds, mask=mask, connectivity=CONNECTIVITY)
        if (np.bincount(parts.ravel())[1:] < min_area).any():
            continue
        parts = parts[1:-1, 1:-1]
        view = out[region.slice]
        view[region.image] = np.where(parts == 1, region.label, nxt + parts - 2)[region.image]
        nxt += int(parts.max()) - 1
    return out


def _borders(labels: np.ndarray) -> dict[tuple[int, int], int]:
    """Length in pixel edges of the border between each pair of touching objects (4-neighbours)."""
    pairs = []
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
        touch = (a != b) & (a > 0) & (b > 0)
        pairs.append(np.stack([np.minimum(a[touch], b[touch]), np.maximum(a[touch], b[touch])], 1))
    pairs = np.concatenate(pairs)
    if not len(pairs):
        return {}
    keys, counts = np.unique(pairs, axis=0, return_counts=True)
    return {(int(a), int(b)): int(n) for (a, b), n in zip(keys, counts)}


def merge_convex(labels: np.ndarray, solidity: float, area: float, boundary: float | None = None,
                 median: float | None = None) -> np.ndarray:
    """Join touching objects whose union is convex (or that share a long border), most convex first.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Objects 1..N, 0 background.
    solidity : float
        Join two touching objects when their union's area / convex hull
        area is at least this ...
    area : float
        ... and the union is at most ``area`` times the median object area
        of ``labels`` (the size gate also applies to ``boundary``).
    boundary : float, optional
        Also join when the shared border (pixel edges) is at least
        ``boundary`` times the square root of the smaller object's area.
    median : float, optional
        The median object area to compare with; ``None``: that of ``labels``.

    Returns
    -------
    ndarray of int32
        Relabelled 1..N.
    """
    out = labels.astype(np.int32, copy=True)
    cap = area * (median_area(labels) if median is None else median)
    while True:
        areas = np.bincount(out.ravel())
        boxes = ndi.find_objects(out)
        best = None
        for (a, b), border in _borders(out).items():
            union = areas[a] + areas[b]
            if union > cap:
                continue
            box = tuple(slice(min(p.start, q.start), max(p.stop, q.stop)) for p, q in zip(boxes[a - 1], boxes[b - 1]))
            mask = np.isin(out[box], (a, b))
            convexity = union / np.count_nonzero(morphology.convex_hull_image(mask))
            long_border = boundary is not None and border >= boundary * np.sqrt(min(areas[a], areas[b]))
            if (convexity >= solidity or long_border) and (best is None or convexity > best[0]):
                best = (convexity, a, b)
        if best is None:
            break
        out[out == best[2]] = best[1]
    return remove_small_and_relabel(out, 1)


def split_merge(labels: np.ndarray, post: dict, min_area: float = 0, median: float | None = None) -> np.ndarray:
    """The split, then the merge, as the keys of a model's ``meta.postprocess`` ask.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Objects 1..N, 0 background.
    post : dict
        ``split_area``, ``split_h``, ``split_solidity`` (the split runs when
        ``split_area`` is set) and ``merge_solidity``, ``merge_area``,
        ``merge_boundary`` (the merge runs when ``merge_solidity`` is set);
        see :func:`split_concave` and :func:`merge_convex`.
    min_area : float, optional
        Smallest part a split may leave.
    median : float, optional
        The median object area both steps compare with; ``None``: that of
        ``labels`` (before the split).

    Returns
    -------
    ndarray of int32
        Relabelled 1..N.
    """
    if labels.max() == 0:
        return labels
    # One median for both steps, taken before the split: the figure a window is given by the tile engine.
    median = median_area(labels) if median is None else float(median)
    if post.get("split_area"):
        labels = split_concave(labels, post["split_area"], post.get("split_h", 1.0), min_area, post.get("split_solidity"),
                               median)
    if post.get("merge_solidity"):  # relabels itself
        return merge_convex(labels, post["merge_solidity"], post.get("merge_area", 5.0), post.get("merge_boundary"),
                            median)
    return remove_small_and_relabel(labels, 1)
