"""scip: per-cell feature tables from microscopy and imaging flow cytometry, through Dask.

The main entry points:

- :func:`scip.run` runs a whole configuration and writes the results;
- :func:`scip.prepare` validates a configuration and lists its images;
- :mod:`scip.graph` builds the lazy graph (:func:`~scip.graph.build_cells`,
  :func:`~scip.graph.build_dataframe`) without computing it;
- :func:`scip.read` reads a run's feature table, whatever its format
  (Parquet parts, ``cells.h5ad``, ``cells.csv``), and raises
  :class:`IncompleteRunError` for a run that did not finish (unless
  ``partial=True``);
- :func:`scip.features.extract` computes features of one image in numpy.
"""

from scip.config import Config, ConfigError, load_config
from scip.io.manifest import IncompleteRunError
from scip.io.tables import read
from scip.run import RunResult, prepare, run

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "IncompleteRunError", "RunResult", "load_config", "prepare", "read", "run", "__version__"]
