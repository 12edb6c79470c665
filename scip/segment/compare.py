"""Did tiling change the objects? Compare a tiled segmentation with a whole-image one."""

from __future__ import annotations

import numpy as np
from scipy import sparse

__all__ = ["compare_segmentations"]


def compare_segmentations(reference: np.ndarray, tiled: np.ndarray, iou: float = 0.95,
                          part: float = 0.1) -> dict[str, int | float]:
    """Count the objects tiling kept, split, merged, lost or added, against a reference.

    Parameters
    ----------
    reference : ndarray of int
        Labels from segmenting the whole image at once; 0 is background.
    tiled : ndarray of int
        Labels of the same image from the tiled path.
    iou : float, optional
        IoU at which two objects count as the same object.
    part : float, optional
        A piece counts towards a split or merge when it holds at least this
        fraction of the object's pixels.

    Returns
    -------
    dict
        ``reference`` and ``tiled`` (object counts), ``matched`` (pairs with
        IoU >= ``iou``; one-to-one since ``iou`` > 0.5), ``matched_fraction``
        (of the reference), ``split`` (reference objects whose pixels fall
        into two or more tiled objects, each with >= ``part`` of them),
        ``merged`` (tiled objects covering two or more reference objects
        likewise), ``missing`` / ``extra`` (objects with no counterpart at IoU
        >= 0.5), and ``mean_iou`` of the matched pairs.
    """
    reference, tiled = np.asarray(reference), np.asarray(tiled)
    if reference.shape != tiled.shape:
        raise ValueError(f"shapes differ: reference {reference.shape}, tiled {tiled.shape}")
    ref_ids, ref_idx = np.unique(reference.ravel(), return_inverse=True)
    til_ids, til_idx = np.unique(tiled.ravel(), return_inverse=True)
    # Row/column 0 is the background only when it occurs; shift so that index 0 always means background.
    ref_idx = ref_idx + (0 if ref_ids[0] == 0 else 1)
    til_idx = til_idx + (0 if til_ids[0] == 0 else 1)
    n, m = int(ref_idx.max()) + 1, int(til_idx.max()) + 1
    counts = sparse.coo_array((np.ones(ref_idx.size, np.int64), (ref_idx.ravel(), til_idx.ravel())),
                              shape=(n, m)).tocsr()
    area_ref = np.asarray(counts.sum(axis=1)).ravel()
    area_til = np.asarray(counts.sum(axis=0)).ravel()
    inter = counts[1:, 1:].tocoo()
    r, c, k = inter.row + 1, inter.col + 1, inter.data
    pair_iou = k / (area_ref[r] + area_til[c] - k)
    good = pair_iou >= iou
    half = pair_iou >= 0.5
    ref_big = k >= part * area_ref[r]
    til_big = k >= part * area_til[c]
    n_ref, n_til = n - 1, m - 1
    return {
        "reference": n_ref, "tiled": n_til,
        "matched": int(good.sum()),
        "matched_fraction": float(good.sum() / n_ref) if n_ref else 1.0,
        "split": int((np.bincount(r[ref_big], minlength=n)[1:] >= 2).sum()),
        "merged": int((np.bincount(c[til_big], minlength=m)[1:] >= 2).sum()),
        "missing": int(n_ref - np.unique(r[half]).size),
        "extra": int(n_til - np.unique(c[half]).size),
        "mean_iou": float(pair_iou[good].mean()) if good.any() else float("nan"),
    }
