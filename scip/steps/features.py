"""Feature step: the crops of a partition's cells to rows of features."""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Sequence

import numpy as np

from scip.features import FeatureParams, check_3d
from scip.features.crops import extract_crops
from scip.records import EXPECTED, CellRecord, ImageRecord, Status, failed, skipped


def _values(table) -> list[list[float]]:
    """The rows of a feature table as lists of Python floats (whatever the columns' dtypes), in one conversion."""
    return table.to_numpy(dtype=np.float64).tolist()


def _measure(cells: list[CellRecord], cell_mask: str, masks: Sequence[str], families: tuple[str, ...],
             params: FeatureParams) -> list[dict[str, float]]:
    rows: list[dict[str, float]] = [{} for _ in cells]
    crops = [c.pixels for c in cells]
    origins = [c.origin for c in cells]
    if crops[0].ndim == 4:
        # 3-D objects of a z stack: no background band or packing, only voxels.
        check_3d(families)
        # Imported here: the volume family loads numba, which a 2-D run may never need.
        from scip.features.volume import extract_volumes

        for name in masks:
            table = extract_volumes(crops, [c.masks[name] for c in cells], cells[0].channels, name, origins)
            for row, values in zip(rows, _values(table)):
                row.update(zip(table.columns, values))
        return rows
    cell_masks = [c.masks[cell_mask] for c in cells]
    # Local background is what lies around the cell outside every cell, for
    # every mask: a nucleus is corrected by the background around its cell.
    backgrounds = [~m & ~c.others if c.others is not None else ~m for m, c in zip(cell_masks, cells)]
    for name in masks:
        table = extract_crops(crops, [c.masks[name] for c in cells], cells[0].channels, families=families,
                              mask_name=name, origins=origins, backgrounds=backgrounds, band_masks=cell_masks,
                              params=params)
        names = list(table.columns)
        for row, values in zip(rows, _values(table)):
            row.update(zip(names, values))
    return rows


def _finish(cell: CellRecord, row: dict[str, float] | None, error: Status | None, share: float) -> CellRecord:
    timings = {**cell.timings, "features": cell.timings.get("features", 0.0) + share}
    done = dict(pixels=None, masks={}, others=None, timings=timings)
    if error is not None:
        return cell.with_(status=error, **done)
    if all(math.isnan(v) for v in row.values()):
        return cell.with_(status=skipped("features", "every feature is NaN"), **done)
    # Values set before this step (micronucleus counts) stay. The row's values are Python floats already
    # (:func:`_values`), and the row is this cell's own (made by :func:`_measure`): no per-value conversion,
    # and no copy of its thousand-odd entries when nothing came before.
    return cell.with_(features={**cell.features, **row} if cell.features else row, **done)


def featurize_cells(records: list[ImageRecord | CellRecord], cell_mask: str, masks: Sequence[str],
                    families: tuple[str, ...], params: FeatureParams, ranges: dict | None = None,
                    range_group_by: tuple[str, ...] = ()) -> list[ImageRecord | CellRecord]:
    """Compute the feature families of every ok cell over each of its ``masks``.

    3-D cells (crops ``(C, z, h, w)``, from ``input.z: stitch``) are measured
    with :func:`scip.features.volume.extract_volumes`; ``families`` must then
    be 3-D ones (the config makes sure).

    The cells of a partition are measured together (see
    :func:`scip.features.crops.extract_crops`); a cell whose extra mask is
    empty gets NaN for that mask's columns. Crops are released afterwards:
    only the row travels on to the writer. If measuring the batch fails,
    cells are measured one at a time so that only the cell at fault stops:
    skipped when it raised :class:`~scip.records.DataError` (or ran out of
    memory), an error with the traceback for any other exception (a bug).

    ``ranges`` (dataset-wide normalization) maps a group, the values of the
    ``range_group_by`` metadata fields, to one ``(low, high)`` per channel:
    the texture quantization bounds of that group's cells.
    """
    positions = [i for i, r in enumerate(records) if isinstance(r, CellRecord) and r.status]
    if not positions:
        return records
    out = list(records)
    batches: dict[tuple, list[int]] = {}
    for i in positions:
        key = tuple(str(records[i].source.fields.get(g, "")) for g in range_group_by) if ranges is not None else ()
        batches.setdefault((tuple(records[i].channels), records[i].pixels.ndim, key), []).append(i)
    for (_, _, key), group in batches.items():
        cells = [records[i] for i in group]
        batch_params = params
        if ranges is not None:
            batch_params = replace(params, intensity_range=ranges[key])
        start = time.perf_counter()
        try:
            rows = _measure(cells, cell_mask, masks, families, batch_params)
            share = (time.perf_counter() - start) / len(cells)
            for i, cell, row in zip(group, cells, rows):
                out[i] = _finish(cell, row, None, share)
        except Exception:  # noqa: BLE001 - isolate the cell at fault below
            for i, cell in zip(group, cells):
                start = time.perf_counter()
                try:
                    row, error = _measure([cell], cell_mask, masks, families, batch_params)[0], None
                except EXPECTED as e:
                    row, error = None, skipped("features", f"{type(e).__name__}: {e}", kind=type(e).__name__)
                except Exception as e:  # noqa: BLE001 - counted as an error, reported with its traceback
                    row, error = None, failed("features", e)
                out[i] = _finish(cell, row, error, time.perf_counter() - start)
    return out


__all__ = ["featurize_cells"]
