"""The engine: the one package that knows Dask.

It turns a validated config and the listed images into Dask graphs and
drives them on a cluster:

- :mod:`.graph`: image partitions (a Bag of records: load, segment, cells,
  masks, filter measures, filters, features, write);
- :mod:`.tasks`: the one resource-annotation helper every builder uses;
- :mod:`.cluster`: local, GPU, SLURM or an existing scheduler, behind one
  ``connect``; computing with a progress bar; what completed, what was killed;
- :mod:`.reduce`: the driver of the dataset-wide reductions (illumination,
  filter thresholds, exact quantiles) over persisted cells;
- :mod:`.output`: the output folder: what may be overwritten, the manifest,
  what ``--resume`` may trust;
- :mod:`.arrays`: images as lazy Dask arrays.

Everything else in scip (readers, steps, segmentation, features,
reductions' pure functions) is plain numpy, usable without a cluster.
"""
