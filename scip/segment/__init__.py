"""Segmentation: intensity image in, label image out.

Every method takes a 2-D intensity image ``(H, W)`` of any real dtype
(converted to float64; NaN is not handled, callers reject such images) and
keyword parameters, and returns an int32 label image with 0 as background
and objects numbered 1..N. A constant image, e.g. all zeros, gives no
objects rather than an error.

==================  ===========================================================
``otsu``            global Otsu threshold, connected components
``li``              global Li threshold, connected components
``watershed``       threshold, then split touching objects (distance watershed)
``spot``            white top-hat and threshold: small bright spots
``unet``            a learned U-Net model (:mod:`scip.segment.unet`, needs torch;
                    also takes ``(C, H, W)`` for multi-channel models)
``cellpose``        a local Cellpose 3 model file with scip's fast flow
                    post-processing (:mod:`scip.segment.cellpose`, needs
                    ``cellpose<4``; also takes ``(2, H, W)``: cells, nuclei)
``superpixel_gnn``  a graph network over SLIC superpixels gives the
                    foreground, a distance watershed splits it
                    (:mod:`scip.segment.superpixel_gnn`, needs torch)
==================  ===========================================================
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from scip._hints import did_you_mean

from ._util import remove_small_and_relabel
from .cellpose import cellpose
from .region import threshold_in_region
from .spot import spot
from .superpixel_gnn import superpixel_gnn
from .threshold import li, otsu
# Bound under another name: ``scip.segment.unet`` stays the subpackage (models, training, inference).
from .unet import unet as _unet
from .watershed import watershed

__all__ = ["METHODS", "segment", "otsu", "li", "watershed", "spot", "cellpose", "superpixel_gnn",
           "remove_small_and_relabel", "threshold_in_region"]

#: Segmentation methods by name, as accepted by :func:`segment`.
METHODS: dict[str, Callable[..., np.ndarray]] = {
    "otsu": otsu,
    "li": li,
    "watershed": watershed,
    "spot": spot,
    "unet": _unet,
    "cellpose": cellpose,
    "superpixel_gnn": superpixel_gnn,
}


def segment(image: np.ndarray, method: str, **params: Any) -> np.ndarray:
    """Segment ``image`` with the method named ``method``.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Intensity image; see the module docstring.
    method : str
        A key of :data:`METHODS`.
    **params
        Keyword parameters of that method; unknown ones raise ``TypeError``.

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        0 for background, objects numbered 1..N.

    Raises
    ------
    ValueError
        If ``method`` is unknown; the message lists the known methods and
        the closest name.
    """
    try:
        func = METHODS[method]
    except (KeyError, TypeError):
        raise ValueError(_unknown_method_message(method)) from None
    return func(image, **params)


def _unknown_method_message(method: object) -> str:
    allowed = ", ".join(repr(m) for m in METHODS)
    return f"unknown segmentation method {method!r}; expected one of {allowed}" + did_you_mean(method, METHODS)
