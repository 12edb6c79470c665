"""napari reader: a scip output folder as image and labels layers, the cell table as layer features.

The npe2 manifest ``scip/napari.yaml`` (entry point ``napari.manifest``)
registers :func:`get_reader`, so that with ``pip install 'scip[napari]'``
``napari results/`` (or dropping the folder onto the window) opens a run:

* one **labels** layer per image and mask of ``labels.zarr``
  (``output.labels: true``), with the pyramid as a multiscale layer and the
  image's rows of the cell table as the layer's ``features`` (an ``index``
  column holding ``meta_label``, so napari shows a cell's measurements when
  the pointer is over it);
* one **image** layer per channel, read from the run's input as
  ``run.json`` records it (raw pixels: no illumination correction), when
  the input is still where the run found it and the image is at most
  :data:`MAX_IMAGE_PIXELS` pixels a plane; otherwise the labels open alone
  (with a warning when the input cannot be opened).

A folder with many images (an imaging-flow-cytometry run has one per
event) opens its first :data:`MAX_IMAGES` images, the first one visible;
``labels.zarr/<image key>`` opens that one image. This module needs neither
napari nor Qt: it returns napari's layer data tuples, and the tests call
it through npe2 with no window.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

__all__ = ["MAX_IMAGES", "MAX_IMAGE_PIXELS", "get_reader", "read_output"]

#: Images opened from one output folder (the first ones, in ``labels.zarr`` key order).
MAX_IMAGES = 16
#: Largest image plane (rows × columns) read whole for its image layers.
MAX_IMAGE_PIXELS = 8192 * 8192

LayerData = tuple[Any, dict[str, Any], str]
_LABELS = "labels.zarr"


def _target(path: str | os.PathLike | list) -> tuple[Path, str | None] | None:
    """The output folder and, for a ``labels.zarr/<key>`` path, the one image key; None if not scip's."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    path = Path(path)
    if (path / _LABELS).is_dir() and (path / "run.json").is_file():
        return path, None
    if path.parent.name == _LABELS and (path.parent.parent / "run.json").is_file():
        return path.parent.parent, path.name
    return None


def get_reader(path: str | os.PathLike | list) -> Callable[[Any], list[LayerData]] | None:
    """npe2 reader contribution: :func:`read_output` for a scip output folder, None for anything else.

    Parameters
    ----------
    path : path or list of one path
        A run's output folder (holding ``run.json`` and ``labels.zarr``),
        or one image of its ``labels.zarr`` (``results/labels.zarr/field01``).

    Returns
    -------
    callable or None
        The reader, or None so that napari asks another plugin.
    """
    return read_output if _target(path) is not None else None


def _features(table: pd.DataFrame | None, image_id: str) -> pd.DataFrame:
    if table is None:
        return pd.DataFrame({"index": pd.Series([], dtype="int64")})
    rows = table[table["meta_image_id"] == image_id]
    # napari matches feature rows to label values through the "index" column.
    return pd.concat([pd.DataFrame({"index": rows["meta_label"].astype("int64").to_numpy()}),
                      rows.reset_index(drop=True)], axis=1)


def _dataset(folder: Path) -> Any:
    """The run's input, as ``run.json`` records it; None (with a warning) when it cannot be opened."""
    from scip.config import load_config
    from scip.io import open_dataset

    try:
        config = json.loads((folder / "run.json").read_text())["config"]
        return open_dataset(load_config({"input": config["input"]}).input)
    except Exception as error:  # noqa: BLE001 - a moved input loses the pixels, not the labels
        warnings.warn(f"{folder}: the run's input cannot be opened ({error}); opening the labels without images",
                      stacklevel=3)
        return None


def _pixels(dataset: Any, image_id: str, plane: tuple[int, ...]) -> np.ndarray | None:
    from scip.io import read_images

    if dataset is None or int(np.prod(plane[-2:])) > MAX_IMAGE_PIXELS:
        return None
    sources = [s for s in dataset.sources if s.image_id == image_id]
    if not sources:
        return None
    record = read_images(dataset, sources[:1])[0]
    return record.pixels if record.status else None


def read_output(path: str | os.PathLike | list) -> list[LayerData]:
    """Layers of a scip output folder: per image, its channels and its label images.

    Parameters
    ----------
    path : path or list of one path
        As for :func:`get_reader`.

    Returns
    -------
    list of (data, kwargs, layer_type)
        napari layer data tuples: ``"image"`` layers (one per channel,
        additive blending) then ``"labels"`` layers (one per mask, data a
        list of pyramid levels, ``features`` the image's table rows), per
        image. Names are ``"<image_id> <channel>"`` and ``"<image_id> <mask>"``.

    Raises
    ------
    ValueError
        When ``path`` is not a scip output folder or one image of its
        ``labels.zarr`` (the message names it).
    """
    import zarr

    from scip.io import labels as scip_labels
    from scip.io.tables import read

    target = _target(path)
    if target is None:
        raise ValueError(f"{path}: not a scip output folder with {_LABELS} (run with output.labels: true)")
    folder, only = target
    root = folder / _LABELS
    keys = scip_labels.images(root)
    if only is not None:
        keys = {i: k for i, k in keys.items() if k == only}
    try:
        table = read(folder)
    except (FileNotFoundError, ValueError) as error:
        warnings.warn(f"{folder}: no cell table ({error}); labels open without features", stacklevel=2)
        table = None
    dataset = _dataset(folder)
    group = zarr.open_group(str(root), mode="r")
    layers: list[LayerData] = []
    for n, (image_id, key) in enumerate(list(keys.items())[:MAX_IMAGES]):
        masks = scip_labels.label_names(root, image_id)
        if not masks:
            continue
        visible = n == 0
        levels = [group[f"{key}/labels/{masks[0]}/{k}"] for k in range(_levels(group, key, masks[0]))]
        pixels = _pixels(dataset, image_id, tuple(levels[0].shape))
        if pixels is not None:
            for channel, plane in zip(dataset.channels, pixels):
                layers.append((plane, {"name": f"{image_id} {channel}", "blending": "additive",
                                       "visible": visible}, "image"))
        features = _features(table, image_id)
        for mask in masks:
            levels = [group[f"{key}/labels/{mask}/{k}"] for k in range(_levels(group, key, mask))]
            data = levels if len(levels) > 1 else levels[0]
            layers.append((data, {"name": f"{image_id} {mask}", "features": features, "visible": visible,
                                  "multiscale": len(levels) > 1}, "labels"))
    return layers


def _levels(group: Any, key: str, mask: str) -> int:
    return len(group[f"{key}/labels/{mask}"].attrs["multiscales"][0]["datasets"])
