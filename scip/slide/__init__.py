"""``scip slide``: an alias of ``scip run`` that reads its one image in tiles; window reads and synthetic slides.

- :func:`segment_slide` (``scip slide slide.yml``): translates a slide config
  (:func:`run_config`) into a run config with ``tiles.mode: always`` and
  ``output.labels: true``, and runs it with :func:`scip.run`: the same
  engine, outputs (``cells/``, ``labels.zarr``, ``run.json``, ``report.html``)
  and ``--resume`` as any run. See ``docs/wholeslide.md``.
- :func:`open_slide`: window reads of an OME-Zarr, Zarr or (tiled) TIFF image;
  :func:`scip.engine.arrays.to_dask` gives it as a lazy dask array.
- :func:`write_synthetic_slide`: synthetic nuclei slides of any size with
  ground truth, written chunk by chunk.

The pieces live with the one pipeline: :mod:`scip.io.windows` (window reads),
:mod:`scip.segment.tiling` (tiling, ownership, label assembly),
:mod:`scip.io.ngff` (label images), :mod:`scip.engine.tiles` (the passes),
:mod:`scip.datasets.slides`, :mod:`scip.segment.compare`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from scip.datasets.slides import write_synthetic_slide
from scip.io.windows import SlideSource, open_slide
from scip.yamlfile import ConfigError

__all__ = ["SlideSource", "open_slide", "segment_slide", "load_slide_config", "run_config", "write_synthetic_slide", "NOTE"]

log = logging.getLogger("scip")

#: Printed by ``scip slide``: where the command went.
NOTE = ("scip: note: `scip slide` is now `scip run` with tiles.mode: always and output.labels: true; "
        "this config runs as such a run (see docs/wholeslide.md)")

#: Slide config keys with no equivalent in a run config: what to do instead.
_GONE = {
    ("output", "labels_into_input"): "scip run writes label images into labels.zarr in the output folder; copy "
                                     "labels.zarr/<image>/labels/<name> into the input's labels/ group if you want "
                                     "them there, and remove output.labels_into_input",
    ("input", "series"): "scip run reads the first series of a TIFF; write the series you want to its own file, "
                         "and remove input.series",
    ("input", "t"): "scip run reads every time point of an OME-Zarr image, each as one image; remove input.t",
}
#: Keys whose default value is accepted silently (nothing to translate).
_DEFAULTS = {("output", "labels_into_input"): False, ("input", "series"): 0, ("input", "t"): 0}


def run_config(slide: dict[str, Any], origin: str = "slide config") -> dict[str, Any]:
    """The run config (a mapping) a slide config stands for.

    ``tiles`` gets ``mode: always`` (``statistics: slide`` / ``window`` are
    the older names of ``image`` / ``tile``); ``output`` gets ``labels:
    true`` and keeps ``path`` (default ``slide_results``), ``overwrite``,
    ``polygons`` and ``pyramid_levels``; ``segment`` defaults to
    ``watershed`` and ``features`` to the ``shape`` and ``bbox`` families
    (area, centroid and bounding box, as the slide table had).

    Raises
    ------
    ConfigError
        For a key with no equivalent (``output.labels_into_input``,
        ``input.series``, ``input.t``), naming it and what to do instead.
    """
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in slide.items()}
    for (section, key), advice in _GONE.items():
        block = raw.get(section)
        if isinstance(block, dict) and key in block:
            value = block.pop(key)
            if value != _DEFAULTS[(section, key)]:
                raise ConfigError(f"{origin}: {section}.{key}: {value!r} has no equivalent now that `scip slide` "
                                  f"is `scip run`: {advice}")
    tiles = raw.get("tiles") if isinstance(raw.get("tiles"), dict) else {}
    output = raw.get("output") if isinstance(raw.get("output"), dict) else {}
    segment = raw.get("segment") if isinstance(raw.get("segment"), dict) else {}
    raw["tiles"] = {**tiles, "mode": "always"}
    raw["output"] = {"path": "slide_results", **output, "labels": True}
    raw["segment"] = {"method": "watershed", **segment}
    raw.setdefault("features", {"families": ["shape", "bbox"]})
    return raw


def load_slide_config(source: dict | str | Path, *, base_dir: str | Path | None = None,
                      overrides: dict | None = None):
    """A slide config (YAML file or mapping), translated by :func:`run_config` and validated as a run config.

    Errors are worded as any config's (:mod:`scip.config.errors`), with the
    run config's key paths.

    Returns
    -------
    scip.config.Config
    """
    from scip.config import load_config, read_config_file

    raw, origin, base = read_config_file(source, base_dir=base_dir, overrides=overrides,
                                         sections="input, segment, tiles, ...", what="slide config")
    return load_config(run_config(raw, origin), base_dir=base)


def segment_slide(config: dict | str | Path, *, client=None, progress: bool = True, resume: bool = False,
                  overrides: dict | None = None):
    """Run a slide config through :func:`scip.run`, its one image read in tiles.

    Parameters
    ----------
    config : dict or path
        A slide config: a mapping (relative paths from the current
        directory) or a YAML file (relative to its folder).
    client : distributed.Client, optional
        Use this Dask client instead of what ``config.cluster`` describes.
    progress : bool, optional
        Show progress bars.
    resume : bool, optional
        Continue an interrupted run in its output folder (as ``scip run --resume``).
    overrides : dict, optional
        ``{"section": {"key": value}}`` on top of the file (command line).

    Returns
    -------
    scip.run.RunResult
        As :func:`scip.run`; the label image is in
        ``labels.zarr/<image>/labels/<segment.name>``.

    Raises
    ------
    ConfigError
        As :func:`scip.run`, and for slide keys with no equivalent.
    """
    from scip.run import run

    loaded = load_slide_config(config, overrides=overrides)
    log.info(NOTE)
    return run(loaded, client=client, progress=progress, resume=resume)
