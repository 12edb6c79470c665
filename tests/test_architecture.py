"""The wall of docs/architecture.md, checked on the source: only scip/engine imports Dask.

(What importing a config costs is checked in tests/test_config_errors.py.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import scip

PACKAGE = Path(scip.__file__).parent
#: The distributed-computing packages: only the engine builds graphs and talks to clusters.
DASK = ("dask", "distributed", "dask_jobqueue", "dask_cuda", "dask_image")


def _imports(path: Path) -> set[str]:
    """Top-level package names a module imports, anywhere in it (lazy imports inside functions count too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_engine_imports_dask():
    outside = {str(f.relative_to(PACKAGE)): sorted(_imports(f) & set(DASK))
               for f in PACKAGE.rglob("*.py") if f.relative_to(PACKAGE).parts[0] != "engine"}
    offenders = {f: names for f, names in outside.items() if names}
    assert not offenders, f"modules outside scip/engine import Dask: {offenders}"


def test_the_engine_is_where_the_graphs_are():
    engine = {f.name for f in (PACKAGE / "engine").glob("*.py") if _imports(f) & set(DASK)}
    # The wall is not vacuous: the graph builder and the cluster code do import Dask.
    assert {"graph.py", "cluster.py", "tasks.py"} <= engine


def test_the_wall_check_sees_lazy_imports(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    import dask.array as da\n    from distributed import Client\n")
    assert _imports(module) >= {"dask", "distributed"}
