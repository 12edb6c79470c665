"""Feature step: a cell record's crop to a row of features."""

from __future__ import annotations

import math

import numpy as np

from scip.features import columns, extract
from scip.records import CellRecord, ImageRecord, skipped
from scip.steps.timing import timed


def featurize_cell(record: ImageRecord | CellRecord, masks: tuple[str, ...], families: tuple[str, ...]) -> ImageRecord | CellRecord:
    """Compute the feature families of one cell over each of its ``masks``.

    An empty extra mask gives NaN for its columns. The crop's pixels are
    released afterwards: only the row travels on to the writer. A cell whose
    features cannot be computed is skipped with the error as its reason.
    """
    if not isinstance(record, CellRecord) or not record.status:
        return record
    timings = dict(record.timings)
    row: dict[str, float] = {}
    with timed(timings, "features"):
        try:
            for name in masks:
                table = extract(record.pixels, record.masks[name].astype(np.int32), record.channels,
                                families=families, mask_name=name, offset=record.origin)
                if len(table):
                    row.update((k, float(v)) for k, v in table.iloc[0].items() if k != "label")
                else:
                    row.update((c.name, math.nan) for c in columns(record.channels, families, mask_name=name))
        except Exception as e:  # noqa: BLE001 - one odd cell must not stop the run
            return record.with_(pixels=None, masks={}, others=None, timings=timings,
                                status=skipped("features", f"{type(e).__name__}: {e}"))
    if all(math.isnan(v) for v in row.values()):
        return record.with_(pixels=None, masks={}, others=None, timings=timings,
                            status=skipped("features", "every feature is NaN"))
    return record.with_(pixels=None, masks={}, others=None, features=row, timings=timings)
