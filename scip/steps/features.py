"""Feature step: a cell record's crop to a row of features."""

from __future__ import annotations

import math

import numpy as np

from scip.features import extract
from scip.records import CellRecord, ImageRecord, skipped
from scip.steps.timing import timed


def featurize_cell(record: ImageRecord | CellRecord, mask: str, families: tuple[str, ...]) -> ImageRecord | CellRecord:
    """Compute the feature families of one cell over its ``mask``.

    The crop's pixels are released afterwards: only the row travels on to
    the writer. A cell whose features cannot be computed is skipped with the
    error as its reason.
    """
    if not isinstance(record, CellRecord) or not record.status:
        return record
    timings = dict(record.timings)
    with timed(timings, "features"):
        try:
            table = extract(record.pixels, record.masks[mask].astype(np.int32), record.channels,
                            families=families, mask_name=mask, offset=record.origin)
            row = {k: float(v) for k, v in table.iloc[0].items() if k != "label"}
        except Exception as e:  # noqa: BLE001 - one odd cell must not stop the run
            return record.with_(pixels=None, masks={}, others=None, timings=timings,
                                status=skipped("features", f"{type(e).__name__}: {e}"))
    if all(math.isnan(v) for v in row.values()):
        return record.with_(pixels=None, masks={}, others=None, timings=timings,
                            status=skipped("features", "every feature is NaN"))
    return record.with_(pixels=None, masks={}, others=None, features=row, timings=timings)
