"""Turn a segmented image into one record per object."""

from __future__ import annotations

from scipy import ndimage

from scip.records import CellRecord, ImageRecord, skipped


def split_cells(record: ImageRecord, mask: str, padding: int = 5, remove_border: bool = True,
                keep_labels: bool = False) -> list[ImageRecord | CellRecord]:
    """One :class:`CellRecord` per label of ``record.labels[mask]``.

    Each cell gets the crop of its bounding box plus ``padding`` pixels
    (clipped to the image), its own mask, and a mask of the other objects in
    the crop. Objects touching the image border are kept as skipped records
    when ``remove_border`` is set, so the count of cells found still adds up.

    The list starts with the image record itself, stripped of its pixels and
    labels: it carries the image's status, timings and evaluation to the
    writer, while the cells carry only their own. With ``keep_labels`` an ok
    image keeps its label images, for :func:`scip.steps.labels.write_image_labels`.

    3-D labels ``(Z, H, W)`` of a z stack give 3-D cells: crops ``(C, z, h,
    w)`` spanning the object's planes (padded in rows and columns only),
    ``bbox`` ``(min_z, min_row, min_col, max_z, max_row, max_col)`` and
    ``origin`` ``(plane, row, col)``. An object on the first or last plane of
    a stack of several planes touches the border too: the stack cuts it.
    """
    image = record.with_(pixels=None, labels=dict(record.labels) if keep_labels and record.status else {})
    if not record.status:
        return [image]
    labels = record.labels[mask]
    if labels.ndim == 3:
        return [image, *_split_3d(record, labels, mask, padding, remove_border)]
    height, width = labels.shape
    slices = ndimage.find_objects(labels)
    found = [(i + 1, s) for i, s in enumerate(slices) if s is not None]
    matches = record.evaluation.matches if record.evaluation is not None and not record.evaluation.error else None
    cells: list[ImageRecord | CellRecord] = [image]
    for label, (rows, cols) in found:
        bbox = (rows.start, cols.start, rows.stop, cols.stop)
        truth = matches.get(label, 0) if matches is not None else None
        common = dict(source=record.source, channels=record.channels, label=label, bbox=bbox, truth_label=truth)
        if remove_border and (bbox[0] == 0 or bbox[1] == 0 or bbox[2] == height or bbox[3] == width):
            cells.append(CellRecord(origin=(bbox[0], bbox[1]), status=skipped("cells", "touches the image border"), **common))
            continue
        r0, c0 = max(bbox[0] - padding, 0), max(bbox[1] - padding, 0)
        r1, c1 = min(bbox[2] + padding, height), min(bbox[3] + padding, width)
        crop = labels[r0:r1, c0:c1]
        own = crop == label
        cells.append(CellRecord(
            origin=(r0, c0),
            pixels=record.pixels[:, r0:r1, c0:c1].copy(),
            masks={mask: own},
            others=(crop != 0) & ~own,
            **common,
        ))
    return cells


def _split_3d(record: ImageRecord, labels, mask: str, padding: int, remove_border: bool) -> list[CellRecord]:
    depth, height, width = labels.shape
    matches = record.evaluation.matches if record.evaluation is not None and not record.evaluation.error else None
    cells = []
    for i, box in enumerate(ndimage.find_objects(labels)):
        if box is None:
            continue
        label = i + 1
        planes, rows, cols = box
        bbox = (planes.start, rows.start, cols.start, planes.stop, rows.stop, cols.stop)
        common = dict(source=record.source, channels=record.channels, label=label, bbox=bbox,
                      truth_label=matches.get(label, 0) if matches is not None else None)
        cut_in_z = depth > 1 and (planes.start == 0 or planes.stop == depth)
        if remove_border and (cut_in_z or rows.start == 0 or cols.start == 0 or rows.stop == height
                              or cols.stop == width):
            cells.append(CellRecord(origin=(planes.start, rows.start, cols.start),
                                    status=skipped("cells", "touches the image border"), **common))
            continue
        r0, c0 = max(rows.start - padding, 0), max(cols.start - padding, 0)
        r1, c1 = min(rows.stop + padding, height), min(cols.stop + padding, width)
        crop = labels[planes, r0:r1, c0:c1]
        own = crop == label
        cells.append(CellRecord(
            origin=(planes.start, r0, c0),
            pixels=record.pixels[:, planes, r0:r1, c0:c1].copy(),
            masks={mask: own},
            others=(crop != 0) & ~own,
            **common,
        ))
    return cells
