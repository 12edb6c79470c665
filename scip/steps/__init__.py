"""Record-level steps: pure functions ``step(record, **params) -> record``.

Each step adapts one array-level package (``scip.segment``,
``scip.features``, ...) to records: it picks the arrays it needs, calls the
array function, and records the result, its time, or why the record cannot
go on. Steps pass records that are already skipped through untouched. The
graph builder (:mod:`scip.engine.graph`) composes them; they know nothing of Dask.
"""
