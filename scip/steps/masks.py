"""Extra masks inside each cell, one channel each."""

from __future__ import annotations

from typing import Sequence

from scip.config import MaskConfig
from scip.records import CellRecord, ImageRecord
from scip.segment import threshold_in_region
from scip.steps.segment import channel_position
from scip.steps.timing import timed


def add_masks(record: ImageRecord | CellRecord, cell_mask: str, masks: Sequence[MaskConfig]) -> ImageRecord | CellRecord:
    """Add each configured mask to a cell: its channel thresholded within the cell.

    An empty mask is kept (its features come out NaN) rather than skipping
    the cell: a cell without, say, a bright marker region is a finding.
    """
    if not isinstance(record, CellRecord) or not record.status or not masks:
        return record
    timings = dict(record.timings)
    with timed(timings, "masks"):
        region = record.masks[cell_mask]
        added = {
            m.name: threshold_in_region(record.pixels[channel_position(record.channels, m.channel)], region,
                                        method=m.method, smooth=m.smooth)
            for m in masks
        }
    return record.with_(masks={**record.masks, **added}, timings=timings)
