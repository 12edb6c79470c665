"""Region adjacency graph of a superpixel map: nodes, edges and their features.

Nodes are superpixels, edges join superpixels that share at least one pair
of 4-connected pixels. Everything is accumulated tile by tile (the tiles of
:func:`scip.segment.superpixel_gnn.superpixels.superpixels`): a superpixel
lies in one tile, so its pixel statistics come from that tile alone (filters
see a halo of :data:`HALO` pixels around it, so they equal the whole-image
filters), and each pixel pair is visited once, from the tile of its upper or
left pixel, including the pairs that cross into the next tile. The graph is
therefore the same whatever the tile size, for the same superpixel map.

Node features, per channel (intensities normalized by
:func:`~scip.segment.superpixel_gnn.superpixels.normalize_image`): mean,
standard deviation, minimum, maximum, mean gradient magnitude (Gaussian,
sigma 1), mean difference of Gaussians (sigma 1 minus sigma 4, a blob /
texture response) and the mean relative to the image's background (the
median of all superpixel means: whole-image context that a few rounds of
message passing cannot see); then, once: log area relative to the target superpixel
size, and the centroid's row and column as fractions of the image height
and width. Edge features: log of the shared border length in pixels, the
absolute difference of the two mean intensities (per channel), and the
centroid distance relative to the square root of the target size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .superpixels import tiles

__all__ = ["Graph", "build_graph", "node_feature_names", "edge_feature_names", "superpixel_fraction",
           "adjacency", "HALO"]

#: Pixels of context around a tile for its filters (4 x the largest Gaussian sigma, plus one).
HALO = 17
_PER_CHANNEL = ("mean", "std", "min", "max", "gradient", "dog", "relative")


def node_feature_names(channels: int = 1) -> list[str]:
    """Names of the node feature columns for ``channels`` input channels."""
    return [f"{name}_{c}" for c in range(channels) for name in _PER_CHANNEL] + ["log_area", "row", "col"]


def edge_feature_names(channels: int = 1) -> list[str]:
    """Names of the edge feature columns for ``channels`` input channels."""
    return ["log_border"] + [f"contrast_{c}" for c in range(channels)] + ["distance"]


@dataclass
class Graph:
    """A superpixel graph.

    Attributes
    ----------
    nodes : ndarray of float32, shape (N, F)
        Node features (:func:`node_feature_names`).
    edges : ndarray of int64, shape (E, 2)
        Undirected edges ``i < j``, sorted, each once.
    edge_features : ndarray of float32, shape (E, Fe)
        Edge features (:func:`edge_feature_names`).
    area : ndarray of int64, shape (N,)
        Pixels per superpixel.
    """

    nodes: np.ndarray
    edges: np.ndarray
    edge_features: np.ndarray
    area: np.ndarray

    @property
    def n_nodes(self) -> int:
        """Number of superpixels."""
        return int(self.nodes.shape[0])


def _pairs(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Codes ``min * n + max`` of the differing neighbour pairs of two aligned arrays."""
    differ = a != b
    lo = np.minimum(a[differ], b[differ]).astype(np.int64)
    hi = np.maximum(a[differ], b[differ]).astype(np.int64)
    return lo * n + hi


def adjacency(labels: np.ndarray, tile: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Adjacent superpixel pairs and their shared border lengths, visited tile by tile.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Superpixel ids 0..N-1.
    tile : int
        Tile side; each tile also reads one row and column of its lower and
        right neighbours, so pairs across tile borders are found once.

    Returns
    -------
    edges : ndarray of int64, shape (E, 2)
        ``i < j``, sorted.
    border : ndarray of int64, shape (E,)
        Number of 4-connected pixel pairs between ``i`` and ``j``.
    """
    n = int(labels.max()) + 1 if labels.size else 0
    height, width = labels.shape
    codes, counts = [], []
    for rows, cols in tiles(labels.shape, tile):
        # Right neighbours of the tile's pixels (one column into the next tile), then lower neighbours.
        right = labels[rows, cols.start:min(cols.stop + 1, width)]
        down = labels[rows.start:min(rows.stop + 1, height), cols]
        found = np.concatenate([_pairs(right[:, :-1], right[:, 1:], n), _pairs(down[:-1], down[1:], n)])
        code, count = np.unique(found, return_counts=True)
        codes.append(code)
        counts.append(count)
    if not codes or not sum(c.size for c in codes):
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    code, inverse = np.unique(np.concatenate(codes), return_inverse=True)
    border = np.bincount(inverse, weights=np.concatenate(counts)).astype(np.int64)
    return np.stack([code // n, code % n], axis=1), border


def _filters(window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradient magnitude (sigma 1) and difference of Gaussians (1 - 4) of a 2-D window."""
    grad = ndi.gaussian_gradient_magnitude(window, 1.0, mode="nearest")
    dog = ndi.gaussian_filter(window, 1.0, mode="nearest") - ndi.gaussian_filter(window, 4.0, mode="nearest")
    return grad, dog


def build_graph(image: np.ndarray, labels: np.ndarray, *, size: float, tile: int = 1024) -> Graph:
    """The superpixel graph of ``image`` with node and edge features, built tile by tile.

    Parameters
    ----------
    image : ndarray, shape (C, H, W)
        Normalized intensities.
    labels : ndarray of int, shape (H, W)
        Superpixel ids 0..N-1, each superpixel inside one tile of side
        ``tile`` (as :func:`~scip.segment.superpixel_gnn.superpixels.superpixels`
        makes them); a superpixel that crosses a tile border raises
        ``ValueError``.
    size : float
        Target superpixel area the features are scaled by.
    tile : int
        Tile side.

    Returns
    -------
    Graph
    """
    image = np.asarray(image, np.float32)
    if image.ndim != 3 or image.shape[1:] != labels.shape:
        raise ValueError(f"image {image.shape} and superpixels {labels.shape} do not fit: expected (C, H, W) and (H, W)")
    channels = image.shape[0]
    height, width = labels.shape
    n = int(labels.max()) + 1 if labels.size else 0
    nodes = np.zeros((n, len(node_feature_names(channels))), np.float64)
    area = np.zeros(n, np.int64)
    seen = np.zeros(n, np.int64)
    for rows, cols in tiles(labels.shape, tile):
        sp = labels[rows, cols]
        first, last = int(sp.min()), int(sp.max())
        local = (sp - first).ravel()
        m = last - first + 1
        counts = np.bincount(local, minlength=m)
        present = counts > 0
        ids = np.arange(first, last + 1)[present]
        seen[ids] += 1
        area[ids] = counts[present]
        cnt = counts[present].astype(np.float64)
        # The tile with a halo, for filters that then equal the whole-image ones.
        hr = slice(max(rows.start - HALO, 0), min(rows.stop + HALO, height))
        hc = slice(max(cols.start - HALO, 0), min(cols.stop + HALO, width))
        inner = (slice(rows.start - hr.start, rows.stop - hr.start), slice(cols.start - hc.start, cols.stop - hc.start))
        for c in range(channels):
            values = image[c, rows, cols].ravel().astype(np.float64)
            mean = np.bincount(local, weights=values, minlength=m)[present] / cnt
            square = np.bincount(local, weights=values * values, minlength=m)[present] / cnt
            grad, dog = _filters(image[c, hr, hc])
            index = np.arange(m)[present]
            col = c * len(_PER_CHANNEL)
            nodes[ids, col + 0] = mean
            nodes[ids, col + 1] = np.sqrt(np.maximum(square - mean * mean, 0.0))
            nodes[ids, col + 2] = ndi.minimum(values, local, index)
            nodes[ids, col + 3] = ndi.maximum(values, local, index)
            nodes[ids, col + 4] = np.bincount(local, weights=grad[inner].ravel(), minlength=m)[present] / cnt
            nodes[ids, col + 5] = np.bincount(local, weights=dog[inner].ravel(), minlength=m)[present] / cnt
        yy, xx = np.mgrid[rows, cols]
        nodes[ids, -2] = np.bincount(local, weights=yy.ravel().astype(np.float64), minlength=m)[present] / cnt
        nodes[ids, -1] = np.bincount(local, weights=xx.ravel().astype(np.float64), minlength=m)[present] / cnt
    if (seen > 1).any():
        bad = int(np.flatnonzero(seen > 1)[0])
        raise ValueError(f"superpixel {bad} crosses a tile border (tile {tile}); compute superpixels with the same tile")
    for c in range(channels):
        col = c * len(_PER_CHANNEL)
        nodes[:, col + 6] = nodes[:, col] - (np.median(nodes[:, col]) if n else 0.0)
    centroid = nodes[:, -2:].copy()
    nodes[:, -3] = np.log(np.maximum(area, 1) / float(size))
    nodes[:, -2] = centroid[:, 0] / max(height, 1)
    nodes[:, -1] = centroid[:, 1] / max(width, 1)
    edges, border = adjacency(labels, tile)
    i, j = edges[:, 0], edges[:, 1]
    means = nodes[:, [c * len(_PER_CHANNEL) for c in range(channels)]]
    edge_features = np.concatenate([
        np.log(border.astype(np.float64))[:, None],
        np.abs(means[i] - means[j]),
        (np.hypot(*(centroid[i] - centroid[j]).T) / np.sqrt(float(size)))[:, None],
    ], axis=1)
    return Graph(nodes.astype(np.float32), edges, edge_features.astype(np.float32), area)


def superpixel_fraction(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fraction of each superpixel's pixels that are foreground in ``mask``.

    Its majority vote (``> 0.5``) is the superpixel's training label, and
    ``(fraction > 0.5)[labels]`` the best pixel mask any superpixel
    classifier can give (the upper bound of the method at this
    superpixel size).
    """
    labels = np.asarray(labels).ravel()
    n = int(labels.max()) + 1 if labels.size else 0
    counts = np.bincount(labels, minlength=n)
    return np.bincount(labels, weights=np.asarray(mask, bool).ravel(), minlength=n) / np.maximum(counts, 1)
