"""scip: per-cell feature tables from microscopy and imaging flow cytometry, through Dask.

The main entry points:

- :func:`scip.run` runs a whole configuration and writes the results;
- :func:`scip.prepare` validates a configuration and lists its images;
- :mod:`scip.engine.graph` builds the lazy graph (:func:`~scip.engine.graph.build_cells`,
  :func:`~scip.engine.graph.build_dataframe`) without computing it;
- :func:`scip.read` reads a run's feature table, whatever its format
  (Parquet parts, ``cells.h5ad``, ``cells.csv``), and raises
  :class:`IncompleteRunError` for a run that did not finish (unless
  ``partial=True``);
- :func:`scip.features.extract` computes features of one image in numpy.
"""

import sys
import types
from importlib import import_module

from scip.yamlfile import ConfigError
from scip._numbacache import configure as _configure_numba_cache

# Before any module with a cached kernel imports numba: a read-only install
# without a writable home would otherwise fail to import them.
_configure_numba_cache()

__version__ = "0.1.0"

# Imported on first use: the command line answers `scip check bad.yml` without loading Dask and numba.
_LAZY = {"Config": "scip.config", "load_config": "scip.config", "read": "scip.io.tables",
         "IncompleteRunError": "scip.io.manifest", "RunResult": "scip.run", "prepare": "scip.run", "run": "scip.run"}

__all__ = ["Config", "ConfigError", "IncompleteRunError", "RunResult", "load_config", "prepare", "read", "run",
           "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'scip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


class _Package(types.ModuleType):
    # Importing the submodule scip.run binds it as the package's attribute `run`; the API's `scip.run`
    # is the function, as it was when this package imported everything eagerly.
    def __setattr__(self, name: str, value) -> None:
        if name == "run" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
