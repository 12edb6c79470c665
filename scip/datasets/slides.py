"""Synthetic nuclei slides of any size, written chunk by chunk, with exact ground truth.

Nuclei sit on a jittered square lattice of ``spacing`` px: each lattice site
holds a nucleus with probability ``occupancy``, an ellipse of random size,
elongation, orientation and brightness, shifted from the site's centre by up
to ``jitter x spacing`` (so some neighbours touch). A site's nucleus depends
only on ``seed`` and the block of 32 x 32 sites it belongs to, so any window
of the image can be rendered alone, and a chunk's pixels need only the
nuclei near it: the whole image never has to exist in memory.

Pixel values: a background of 100 counts, each nucleus its brightness
(600-1400 counts) times a soft edge (a logistic step about 1 px wide) and a
faint texture, and Gaussian read noise (standard deviation 20) from a
generator seeded by ``seed`` and the chunk's position; rounded to ``uint16``.
Where nuclei overlap, the brighter contribution is kept and the ground truth
pixel goes to the nucleus whose outline is nearest in normalized radius.

Ground truth label of a nucleus: its lattice site's index plus one
(``row * sites_per_row + col + 1``), so labels are unique but not consecutive.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["NucleiLattice", "render", "write_synthetic_slide"]

_BLOCK = 32


@dataclass(frozen=True)
class NucleiLattice:
    """The parameters of a synthetic nuclei slide.

    Attributes
    ----------
    shape : (int, int)
        ``(H, W)`` in pixels.
    seed : int
        Every random choice derives from it.
    spacing : float
        Lattice spacing in pixels.
    occupancy : float
        Probability that a site holds a nucleus.
    radius : (float, float)
        Range of the long semi-axis in pixels.
    jitter : float
        Largest shift of a nucleus from its site's centre, as a fraction of ``spacing``.
    """

    shape: tuple[int, int]
    seed: int = 0
    spacing: float = 40.0
    occupancy: float = 0.85
    radius: tuple[float, float] = (7.0, 12.0)
    jitter: float = 0.3

    @property
    def sites(self) -> tuple[int, int]:
        """Lattice sites along y and x."""
        return (int(np.ceil(self.shape[0] / self.spacing)), int(np.ceil(self.shape[1] / self.spacing)))

    def _block(self, br: int, bc: int) -> dict[str, np.ndarray]:
        """Nuclei of one block of ``32 x 32`` sites (every site drawn, occupied or not, so blocks never shift)."""
        rng = np.random.default_rng([self.seed, br, bc])
        n = _BLOCK * _BLOCK
        rows, cols = np.divmod(np.arange(n), _BLOCK)
        rows, cols = rows + br * _BLOCK, cols + bc * _BLOCK
        shift = rng.uniform(-self.jitter, self.jitter, (2, n)) * self.spacing
        a = rng.uniform(*self.radius, n)
        return {"row": rows, "col": cols, "occupied": rng.random(n) < self.occupancy,
                "cy": (rows + 0.5) * self.spacing + shift[0], "cx": (cols + 0.5) * self.spacing + shift[1],
                "a": a, "b": a * rng.uniform(0.65, 1.0, n), "theta": rng.uniform(0, np.pi, n),
                "brightness": rng.uniform(600, 1400, n), "phase": rng.uniform(0, 2 * np.pi, n),
                "wave": rng.uniform(0.3, 0.6, n)}

    def nuclei(self, y0: int, y1: int, x0: int, x1: int) -> dict[str, np.ndarray]:
        """Every nucleus that can reach the window ``[y0, y1) x [x0, x1)``, with its ground-truth label."""
        reach = self.radius[1] + self.jitter * self.spacing + 2
        r0, r1 = int((y0 - reach) // self.spacing), int((y1 + reach) // self.spacing)
        c0, c1 = int((x0 - reach) // self.spacing), int((x1 + reach) // self.spacing)
        r0, c0 = max(r0, 0), max(c0, 0)
        r1, c1 = min(r1, self.sites[0] - 1), min(c1, self.sites[1] - 1)
        parts = []
        for br in range(r0 // _BLOCK, r1 // _BLOCK + 1):
            for bc in range(c0 // _BLOCK, c1 // _BLOCK + 1):
                block = self._block(br, bc)
                keep = (block["occupied"] & (block["row"] >= r0) & (block["row"] <= r1)
                        & (block["col"] >= c0) & (block["col"] <= c1))
                parts.append({k: v[keep] for k, v in block.items()})
        out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
        if out:
            # A nucleus must lie inside the image, so that the ground truth is what a scan would show.
            inside = (out["cy"] >= 0) & (out["cy"] < self.shape[0]) & (out["cx"] >= 0) & (out["cx"] < self.shape[1])
            out = {k: v[inside] for k, v in out.items()}
            out["label"] = (out["row"] * self.sites[1] + out["col"] + 1).astype(np.uint32)
        return out


def render(lattice: NucleiLattice, y0: int, y1: int, x0: int, x1: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (``uint16``) and ground-truth labels (``uint32``) of one window of the slide.

    The pixels depend on the window only through the read noise, which is
    drawn per window: render storage chunks one by one for a reproducible
    image.
    """
    h, w = y1 - y0, x1 - x0
    signal = np.zeros((h, w), np.float32)
    truth = np.zeros((h, w), np.uint32)
    best = np.full((h, w), np.inf, np.float32)
    nuclei = lattice.nuclei(y0, y1, x0, x1)
    for i in range(len(nuclei.get("label", ()))):
        cy, cx, a, b, th = (nuclei[k][i] for k in ("cy", "cx", "a", "b", "theta"))
        r0, r1 = max(int(cy - a - 4) - y0, 0), min(int(cy + a + 5) - y0, h)
        c0, c1 = max(int(cx - a - 4) - x0, 0), min(int(cx + a + 5) - x0, w)
        if r0 >= r1 or c0 >= c1:
            continue
        yy, xx = np.mgrid[r0 + y0:r1 + y0, c0 + x0:c1 + x0].astype(np.float32)
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(th) + dy * np.sin(th)
        v = -dx * np.sin(th) + dy * np.cos(th)
        rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        # (rho - 1) * b is about the distance to the outline in pixels; a logistic step ~1 px wide.
        edge = 1.0 / (1.0 + np.exp(np.clip((rho - 1.0) * b / 0.6, -30, 30)))
        texture = 1.0 + 0.12 * np.cos(nuclei["wave"][i] * u + nuclei["phase"][i]) * np.cos(nuclei["wave"][i] * v)
        value = nuclei["brightness"][i] * edge * texture
        sl = (slice(r0, r1), slice(c0, c1))
        signal[sl] = np.maximum(signal[sl], value)
        closer = (rho <= 1.0) & (rho < best[sl])
        truth[sl][closer] = nuclei["label"][i]
        best[sl][closer] = rho[closer]
    rng = np.random.default_rng([lattice.seed, 1, y0, x0])
    noise = rng.standard_normal((h, w), dtype=np.float32) * 20.0
    pixels = np.clip(np.rint(100.0 + signal + noise), 0, 65535).astype(np.uint16)
    return pixels, truth


def _write_chunk(lattice: NucleiLattice, image_path: str, truth_path: str | None, y0: int, y1: int, x0: int,
                 x1: int) -> int:
    import zarr

    pixels, truth = render(lattice, y0, y1, x0, x1)
    zarr.open_array(image_path, mode="r+")[0, y0:y1, x0:x1] = pixels
    if truth_path is not None:
        zarr.open_array(truth_path, mode="r+")[y0:y1, x0:x1] = truth
    return int(len(np.unique(truth))) - 1


def write_synthetic_slide(path: str | Path, shape: tuple[int, int] | int, *, seed: int = 0, chunk: int = 1024,
                          truth: bool = True, workers: int = 1, **lattice: float) -> Path:
    """Write a synthetic nuclei slide as an OME-Zarr image (NGFF 0.4), one chunk at a time.

    Parameters
    ----------
    path : str or Path
        The ``.ome.zarr`` folder to create (replaced if it exists).
    shape : int or (int, int)
        ``(H, W)``; an int for a square.
    seed : int, optional
        Same seed and chunk, same image.
    chunk : int, optional
        Storage chunk side; each chunk is rendered alone.
    truth : bool, optional
        Also write the ground truth as the NGFF label image ``labels/truth``.
    workers : int, optional
        Threads rendering chunks (memory: a few chunks per thread).
    **lattice
        Fields of :class:`NucleiLattice` (``spacing``, ``occupancy``, ...).

    Returns
    -------
    Path
        ``path``. The image is ``(c, y, x)`` with one channel named ``DNA``.
    """
    from concurrent.futures import ThreadPoolExecutor

    import zarr

    from scip.io.ngff import create_level, write_label_metadata

    shape = (shape, shape) if isinstance(shape, int) else tuple(shape)
    spec = NucleiLattice(shape=shape, seed=seed, **lattice)
    path = Path(path)
    root = zarr.open_group(str(path), mode="w", zarr_format=2)
    kwargs = {"chunk_key_encoding": {"name": "v2", "separator": "/"}}
    root.create_array("0", shape=(1, *shape), chunks=(1, chunk, chunk), dtype="uint16", fill_value=0, **kwargs)
    root.attrs.update({
        "multiscales": [{"version": "0.4", "name": path.stem, "axes": [
            {"name": "c", "type": "channel"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
            "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]}]}],
        "omero": {"version": "0.4", "channels": [{"label": "DNA", "color": "FFFFFF", "active": True,
                                                  "window": {"start": 0, "end": 1600, "min": 0, "max": 65535}}]},
        "scip_synthetic": {"seed": seed, "chunk": chunk, **{k: v for k, v in spec.__dict__.items() if k != "shape"}},
    })
    truth_path = None
    if truth:
        labels = root.require_group("labels")
        create_level(labels, "truth", 0, shape, chunk, "uint32")
        write_label_metadata(labels, "truth", 1, source_image="../../")
        truth_path = str(path / "labels" / "truth" / "0")
    windows = [(y0, min(y0 + chunk, shape[0]), x0, min(x0 + chunk, shape[1]))
               for y0 in range(0, shape[0], chunk) for x0 in range(0, shape[1], chunk)]
    # Each chunk is written by one call only, so threads need no locking; list() raises the first error.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(lambda w: _write_chunk(spec, str(path / "0"), truth_path, *w), windows))
    return path
