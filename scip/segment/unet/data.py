"""Training pairs: images and their label images, read from folders.

Pairing rule
------------
A data source is a folder ``path``, a glob ``images`` (relative to it,
``**`` recurses), optional ``exclude`` globs, and a label-name template
``labels`` (default ``"{stem}_labels"``). For every image file the template
is filled with the image's stem (its name without the extension) and the
label file with that stem is looked up in ``label_path`` (default: the
image's own folder), with any readable extension. Files that serve as some
pair's label are never images themselves; image files with no label file
are listed in :attr:`Pairs.unpaired` and not used.

An optional second template ``micronuclei`` names a label image of
micronuclei found the same way (mnfinder: ``"{stem}_micronuclei"``); a
model trained with it gets a third output, ``micronuclei``. An image
without that file is still used, and its micronucleus output is not
trained on (it is unknown, not empty).

Examples: mnfinder's ``3.tif`` + ``3_nuclei.tif`` is ``labels: "{stem}_nuclei"``;
a folder ``images/a.png`` with ``masks/a.png`` is ``label_path: masks,
labels: "{stem}"``; a single ``image.tif`` with ``labels.tif`` is ``images: image.tif,
labels: labels`` (a template without ``{stem}`` names one file for every image).

Readable files: TIFF (``.tif``, ``.tiff``), PNG (``.png``) and Zarr
(``.zarr`` folders: an array, or a group whose array ``0`` is level 0 of an
OME-Zarr image). An image is ``(H, W)`` or ``(C, H, W)``; a 3-D PNG or TIFF
whose last axis has at most 4 entries is read as ``(H, W, C)`` (RGB). A
label image is ``(H, W)`` of integers, 0 = background.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = ["DataSource", "Pair", "Pairs", "find_pairs", "read_array", "read_image", "normalize", "normalize_range",
           "targets", "EXTENSIONS"]

EXTENSIONS = (".tif", ".tiff", ".png", ".zarr")


@dataclass(frozen=True)
class DataSource:
    """One folder of image/label pairs (see the module docstring)."""

    path: Path
    images: str = "*"
    labels: str = "{stem}_labels"
    label_path: Path | None = None
    exclude: tuple[str, ...] = ()
    channels: tuple[int, ...] | None = None
    micronuclei: str | None = None


@dataclass(frozen=True)
class Pair:
    """An image file and its label file; ``key`` names it in reports (path relative to the source).

    ``micronuclei`` is the micronucleus label file, when the source names one and it exists.
    """

    image: Path
    labels: Path
    key: str
    channels: tuple[int, ...] | None = None
    micronuclei: Path | None = None


@dataclass
class Pairs:
    """Pairs found, and image files without a label file."""

    pairs: list[Pair] = field(default_factory=list)
    unpaired: list[Path] = field(default_factory=list)


def _stem(path: Path) -> str:
    return path.name[: -len(path.suffix)] if path.suffix else path.name


def _readable(path: Path) -> bool:
    return path.suffix.lower() in EXTENSIONS and (path.is_file() or path.suffix.lower() == ".zarr")


def find_pairs(sources: Sequence[DataSource]) -> Pairs:
    """Pair every image of ``sources`` with its label file.

    Raises
    ------
    FileNotFoundError
        If a source folder does not exist, or no pair is found at all.
    """
    out = Pairs()
    for src in sources:
        root = Path(src.path)
        if not root.is_dir():
            raise FileNotFoundError(f"training data folder not found: {root}")
        candidates = sorted(p for p in root.glob(src.images) if _readable(p))
        candidates = [p for p in candidates if not any(p.match(x) for x in src.exclude)]
        by_folder: dict[Path, dict[str, Path]] = {}
        found: list[tuple[Path, Path]] = []
        for image in candidates:
            folder = Path(src.label_path) if src.label_path is not None else image.parent
            if folder not in by_folder:
                by_folder[folder] = {_stem(p): p for p in sorted(folder.iterdir()) if _readable(p)} if folder.is_dir() else {}
            label = by_folder[folder].get(src.labels.format(stem=_stem(image)))
            if label is not None and label != image:
                found.append((image, label))
        labels = {lab for _, lab in found}
        micronuclei = {}
        if src.micronuclei is not None:
            for image, _ in found:
                folder = Path(src.label_path) if src.label_path is not None else image.parent
                mn = by_folder[folder].get(src.micronuclei.format(stem=_stem(image)))
                if mn is not None and mn != image:
                    micronuclei[image] = mn
        labels |= set(micronuclei.values())
        for image in candidates:
            if image in labels:
                continue
            match = next((lab for img, lab in found if img == image), None)
            if match is None:
                out.unpaired.append(image)
            else:
                out.pairs.append(Pair(image, match, image.relative_to(root).as_posix(), src.channels,
                                      micronuclei.get(image)))
    if not out.pairs:
        raise FileNotFoundError("no image/label pairs found in " + ", ".join(str(s.path) for s in sources)
                                + " (check images, labels and label_path; see scip.segment.unet.data)")
    return out


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Pixels of a TIFF, PNG or Zarr file, as stored."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile

        return np.asarray(tifffile.imread(path))
    if suffix == ".png":
        import imageio.v3 as iio

        return np.asarray(iio.imread(path))
    if suffix == ".zarr":
        import zarr

        node = zarr.open(str(path), mode="r")
        if isinstance(node, zarr.Group):
            if "0" not in node:
                names = sorted(k for k, _ in node.arrays())
                raise ValueError(f"{path}: zarr group without array '0'; arrays: {', '.join(names) or 'none'}")
            node = node["0"]
        return np.asarray(node[...])
    raise ValueError(f"{path}: unsupported file type {suffix!r}; readable: {', '.join(EXTENSIONS)}")


def read_image(path: str | os.PathLike, channels: Sequence[int] | None = None) -> np.ndarray:
    """An image as ``(C, H, W)`` float32, channels selected by position.

    Singleton leading axes (e.g. OME-Zarr's t and z of length 1) are dropped.
    """
    arr = read_array(path)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3 and arr.shape[-1] <= 4 < arr.shape[0]:
        arr = np.moveaxis(arr, -1, 0)
    if arr.ndim != 3:
        raise ValueError(f"{path}: image of shape {arr.shape}; expected (H, W) or (C, H, W)")
    if channels is not None:
        if max(channels, default=0) >= arr.shape[0]:
            raise ValueError(f"{path}: channels {list(channels)} asked for, the image has {arr.shape[0]}")
        arr = arr[list(channels)]
    return arr.astype(np.float32)


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """A label image ``(H, W)`` as int32."""
    arr = np.squeeze(read_array(path))
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{path}: label image of shape {arr.shape} and dtype {arr.dtype}; expected (H, W) integers")
    return arr.astype(np.int32)


def normalize(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """Scale each channel so that its ``low`` and ``high`` percentiles become 0 and 1.

    Parameters
    ----------
    image : ndarray, shape (C, H, W)
    low, high : float
        Percentiles in [0, 100].

    Returns
    -------
    ndarray of float32, same shape
        Not clipped: values beyond the percentiles keep their distance. A
        constant channel becomes all zeros.
    """
    image = np.asarray(image, dtype=np.float32)
    out = np.empty_like(image)
    for c in range(image.shape[0]):
        lo, hi = np.percentile(image[c], [low, high])
        scale = hi - lo
        out[c] = (image[c] - lo) / scale if scale > 0 else 0.0
    return out


def normalize_range(image: np.ndarray, ranges) -> np.ndarray:
    """Scale each channel so that its given ``(low, high)`` intensities become 0 and 1.

    Parameters
    ----------
    image : ndarray, shape (C, H, W)
    ranges : sequence of (float, float)
        One pair per channel, e.g. percentiles of a whole slide.

    Returns
    -------
    ndarray of float32, same shape
        Not clipped; a channel whose ``high`` is not above ``low`` becomes all zeros.
    """
    image = np.asarray(image, dtype=np.float32)
    ranges = np.asarray(ranges, dtype=np.float64).reshape(-1, 2)
    if len(ranges) != image.shape[0]:
        raise ValueError(f"norm_range gives {len(ranges)} channel range(s) for an image of {image.shape[0]} channel(s)")
    out = np.empty_like(image)
    for c, (lo, hi) in enumerate(ranges):
        out[c] = (image[c] - lo) / (hi - lo) if hi > lo else 0.0
    return out


def targets(labels: np.ndarray, micronuclei: np.ndarray | None = None, *,
            with_micronuclei: bool = False) -> np.ndarray:
    """Training targets of a label image: ``(2, H, W)`` float32 foreground and centre.

    The centre target of an object is its own distance transform (distance
    to the nearest pixel outside the object, so touching objects get low
    values along their contact) divided by its maximum.

    With ``with_micronuclei`` two more channels follow: the micronucleus
    foreground (from ``micronuclei``, a label image) and a mask that is 1
    where that foreground is known: everywhere when ``micronuclei`` is
    given, nowhere when it is ``None`` (an image annotated for nuclei only).
    Micronucleus pixels are nucleus background, as in mnfinder's labels.
    """
    labels = np.asarray(labels)
    if with_micronuclei:
        base = targets(labels)
        if micronuclei is None:
            extra = np.zeros((2,) + labels.shape, np.float32)
        else:
            micronuclei = np.asarray(micronuclei)
            if micronuclei.shape != labels.shape:
                raise ValueError(f"micronucleus labels of shape {micronuclei.shape} for nucleus labels of shape "
                                 f"{labels.shape}")
            extra = np.stack([(micronuclei > 0).astype(np.float32), np.ones(labels.shape, np.float32)])
        return np.concatenate([base, extra])
    fg = (labels > 0).astype(np.float32)
    centre = np.zeros(labels.shape, np.float32)
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        # One pixel of margin so that the object has outside pixels around it, except where it touches
        # the image border: there the edge padding extends it, as it continues outside the image.
        sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        obj = labels[sl] == i
        dist = ndi.distance_transform_edt(np.pad(obj, 1, mode="edge"))[1:-1, 1:-1]
        peak = dist.max()
        if peak > 0:
            centre[sl][obj] = (dist / peak)[obj]
    return np.stack([fg, centre])
