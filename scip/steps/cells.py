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
    """
    image = record.with_(pixels=None, labels=dict(record.labels) if keep_labels and record.status else {})
    if not record.status:
        return [image]
    labels = record.labels[mask]
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
