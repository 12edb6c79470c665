"""The final pass: each partition's write task computed as it completes, and what to do when one kills workers.

A partition whose task kept killing its workers is computed again image by
image (:func:`isolate`); an image that still kills a worker on its own
becomes a skipped record naming the file, and the other images' cells are
written as the partition's part.
"""

from __future__ import annotations

import logging
from pathlib import Path

from scip.accounting import PartitionSummary
from scip.engine import cluster, graph
from scip.engine.reduce import Reductions, killed_reason, one_image_plan
from scip.failures import RunFailed
from scip.io.manifest import summarize_changes
from scip.records import ImageRecord, skipped

log = logging.getLogger("scip")

__all__ = ["compute_partitions", "isolate", "one_image"]


def compute_partitions(p: graph.Plan, session: cluster.Session, tasks: list, todo: list[int], parts: list,
                        reductions: Reductions, samples: int, cells_dir: Path, progress_dir: Path,
                        progress: bool) -> tuple[dict[int, PartitionSummary], bool]:
    """Compute the write tasks of the partitions ``todo`` as they complete.

    Returns the summaries by partition and whether the run stopped early
    because the errors exceeded ``errors.max`` (the tasks left are then
    cancelled). A partition whose task kept killing workers is computed
    again image by image (:func:`_isolate`).
    """
    summaries: dict[int, PartitionSummary] = {}
    errors = 0
    whole = len(graph.partitions(p))
    killed_tiles: list[str] = []
    results = cluster.completed([tasks[i] for i in todo], session, progress=progress, label="features + write")
    try:
        for position, result in results:
            index = todo[position]
            if isinstance(result, cluster.Killed) and index >= whole:
                # A tile partition holds part of one image: nothing to isolate, and the other partitions go on.
                killed_tiles.append(f"part-{index:05d} ({parts[index][0].image_id}; {result.workers} workers, "
                                    f"memory_limit {result.memory_limit})")
                continue
            if isinstance(result, cluster.Killed):
                result = isolate(p, index, parts[index], result, session, reductions, samples, cells_dir,
                                  progress_dir)
            summaries[index] = result
            errors += len(result.errors)
            if errors > p.config.errors.max:
                return summaries, True
    finally:
        results.close()
    if killed_tiles:
        raise RunFailed(f"tile partition(s) of images read in tiles killed their workers: "
                        f"{summarize_changes(killed_tiles)}; give the workers more memory (--memory-limit) or lower "
                        "tiles.size, then --resume (the other partitions are kept)")
    return summaries, False


def one_image(p: graph.Plan, source, reductions: Reductions, samples: int, routing: cluster.Routing):
    """The task computing the records of one image alone: the graph of the plan restricted to it."""
    one = one_image_plan(p, source)
    cells = graph.build_cells(one, reductions.correction, routing)
    bag = graph.build_features(one, cells, reductions.bounds, reductions.ranges, samples, routing)
    return bag.to_delayed(optimize_graph=False)[0]


def isolate(p: graph.Plan, index: int, sources: list, killed: cluster.Killed, session: cluster.Session,
             reductions: Reductions, samples: int, cells_dir: Path, progress_dir: Path) -> PartitionSummary:
    """Partition ``index`` killed its workers: compute its images one by one, skip those that still kill them.

    The other images' cells are written as the partition's part, as if the
    partition had run normally; each image that kills workers on its own is
    a skipped image record naming the file.
    """
    step = graph.STEPS.get(killed.task, killed.task)
    log.warning("scip: partition %d killed %d workers (step %s); computing its %d images one by one",
                index, killed.workers, step, len(sources))
    tasks = [one_image(p, s, reductions, samples, session.routing) for s in sources]
    records: list = [None] * len(sources)
    for position, result in cluster.completed(tasks, session, progress=False):
        records[position] = result
    suspects = [i for i, r in enumerate(records) if isinstance(r, cluster.Killed)]
    if len(suspects) > 1:
        # A task dies with the worker it shares with a killer: each suspect gets another try on its own.
        for i in suspects:
            ((_, records[i]),) = cluster.completed([tasks[i]], session, progress=False)
    for position, result in enumerate(records):
        if isinstance(result, cluster.Killed):
            source = sources[position]
            log.warning("scip: image %s killed %d workers; skipped", source.image_id, result.workers)
            result = [ImageRecord(source, p.dataset.channels,
                                  status=skipped(*killed_reason(source, result), kind="killed the worker"))]
        records[position] = result
    return graph._write([r for image in records for r in image], index, str(cells_dir), p.columns, str(progress_dir))
