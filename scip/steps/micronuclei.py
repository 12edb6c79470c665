"""Micronuclei step: find an image's micronuclei, give each to its nucleus, and count them per cell.

Two record-level functions, plain numpy: :func:`find_micronuclei` runs on
a segmented image record (after ``segment``), :func:`attach_counts` on the
records :func:`scip.steps.cells.split_cells` made of it. Every detection is
accounted for: dropped (with its reason), without a nucleus within reach,
or counted for a nucleus; the writer's summary adds up what the exported
cells hold (:func:`scip.accounting.summarize`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from scip.records import EXPECTED, CellRecord, ImageRecord, Micronuclei, failed, skipped
from scip.segment.micronuclei import assign, clean, per_nucleus
from scip.steps.segment import channel_position
from scip.steps.timing import timed

__all__ = ["COUNT", "AREA", "COLUMNS", "DESCRIPTIONS", "LABELS", "find_micronuclei", "attach_counts", "detect", "micronucleus_channel"]

#: The table's columns, and their kind (see :func:`scip.steps.export.table_columns`).
COUNT = "micronucleus_count"
AREA = "micronucleus_area"
COLUMNS = {COUNT: "int", AREA: "int"}
#: Unit and definition of each column, for ``scip features --list --config`` and docs/features.md.
DESCRIPTIONS = {
    COUNT: ("count", "Micronuclei assigned to the cell's nucleus: kept detections (micronuclei.min_size to max_size "
                     "px, none on a nucleus) whose nearest nucleus within micronuclei.max_distance is this one."),
    AREA: ("px^2", "Pixels of those micronuclei, summed."),
}
#: Name of the micronuclei's label image (``record.labels``, ``labels.zarr``) and of a cell's mask of its own.
LABELS = "micronuclei"


def micronucleus_channel(cfg: Any, segment_channel: str | int | list[str | int]) -> str | int:
    """The channel micronuclei are found in: ``micronuclei.channel``, else the segmentation's (its first)."""
    if cfg.channel is not None:
        return cfg.channel
    return segment_channel[0] if isinstance(segment_channel, list) else segment_channel


def detect(image: np.ndarray, cfg: Any) -> np.ndarray:
    """Label the micronucleus candidates of one 2-D image with ``cfg.method`` (before :func:`clean`).

    Parameters
    ----------
    image : ndarray, shape (H, W)
        The micronucleus channel.
    cfg : SpotMicronucleiConfig or UnetMicronucleiConfig
        The ``micronuclei`` section.

    Returns
    -------
    ndarray of int32, shape (H, W)
        Candidates numbered from 1.
    """
    if cfg.method == "spot":
        from scip.segment.spot import spot

        return spot(image, **cfg.detector_params())
    from scip.segment import unet

    finder = getattr(unet, "micronuclei", None)
    if finder is None:
        # scip.config.check_models refuses this config before a run; reached only by calling the step directly.
        raise RuntimeError("micronuclei.method: unet needs scip.segment.unet.micronuclei, which this version of "
                           "scip does not have yet; use micronuclei.method: spot")
    return np.asarray(finder(image, **cfg.detector_params()))


def find_micronuclei(record: ImageRecord, cfg: Any, nuclei: str,
                     segment_channel: str | int | list[str | int] = 0) -> ImageRecord:
    """Find the micronuclei of a segmented image and assign each to the nearest nucleus.

    The kept micronuclei go into ``record.labels["micronuclei"]`` (numbered
    1..K); what was found, dropped and assigned into ``record.micronuclei``.
    A detector that raises :class:`~scip.records.DataError` skips the image
    (its cells could not be counted); any other exception makes it an error.

    Parameters
    ----------
    record : ImageRecord
        A segmented 2-D image record; others pass through unchanged.
    cfg : SpotMicronucleiConfig or UnetMicronucleiConfig
        The ``micronuclei`` section.
    nuclei : str
        The nuclei's label image (``segment.name``).
    segment_channel : str, int or list
        ``segment.channel``, the default micronucleus channel.

    Returns
    -------
    ImageRecord
        With the ``micronuclei`` label image, :class:`~scip.records.Micronuclei` and a ``micronuclei`` timing.
    """
    if not record.status or nuclei not in record.labels:
        return record
    timings = dict(record.timings)
    with timed(timings, "micronuclei"):
        position = channel_position(record.channels, micronucleus_channel(cfg, segment_channel), "micronuclei.channel")
        labels = record.labels[nuclei]
        try:
            detections = detect(record.pixels[position].astype(np.float32), cfg)
        except EXPECTED as e:
            return record.with_(timings=timings, status=skipped(
                "micronuclei", f"{cfg.method} failed: {type(e).__name__}: {e}",
                kind=f"{cfg.method} failed: {type(e).__name__}"))
        except Exception as e:  # noqa: BLE001 - counted as an error, reported with its traceback
            return record.with_(timings=timings, status=failed("micronuclei", e))
        found = int(len(np.unique(detections[detections > 0])))
        kept, dropped = clean(labels, detections, cfg.min_size, cfg.max_size, cfg.max_overlap)
        owner = assign(labels, kept, cfg.max_distance)
        tally = Micronuclei(found=found, dropped=dropped, no_nucleus=int(np.count_nonzero(owner[1:] == 0)),
                            owner=owner, per_nucleus=per_nucleus(owner, kept))
    return record.with_(labels={**record.labels, LABELS: kept}, micronuclei=tally, timings=timings)


def attach_counts(image: ImageRecord, records: Sequence[ImageRecord | CellRecord]) -> list[ImageRecord | CellRecord]:
    """Give each cell split from ``image`` its micronucleus count and area, and a mask of its micronuclei.

    Parameters
    ----------
    image : ImageRecord
        The image record as :func:`find_micronuclei` left it (with its labels).
    records : sequence
        What :func:`scip.steps.cells.split_cells` made of it: the image
        record, then its cells.

    Returns
    -------
    list
        The records: ok cells with the ``micronucleus_count`` and
        ``micronucleus_area`` values (0 without micronuclei) and a
        ``micronuclei`` mask of their own micronuclei in the crop (for the
        report); the image record without the per-nucleus arrays.
    """
    tally = image.micronuclei
    if tally is None:
        return list(records)
    kept = image.labels.get(LABELS)
    owner = tally.owner
    out: list[ImageRecord | CellRecord] = []
    for r in records:
        if isinstance(r, ImageRecord):
            out.append(r.with_(micronuclei=Micronuclei(tally.found, dict(tally.dropped), tally.no_nucleus)))
        elif not r.status or kept is None or r.pixels is None:
            out.append(r)
        else:
            count, area = tally.per_nucleus.get(r.label, (0, 0))
            values = {COUNT: count, AREA: area}
            masks = dict(r.masks)
            own = next(iter(r.masks.values()))
            window = tuple(slice(o, o + s) for o, s in zip(r.origin, own.shape))
            masks[LABELS] = (owner[kept[window]] == r.label) & (kept[window] > 0)
            out.append(r.with_(features={**r.features, **values}, masks=masks))
    return out
