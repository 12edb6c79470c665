"""Where numba caches scip's compiled kernels, so that a read-only install still caches.

numba's own order (``cache=True``): ``NUMBA_CACHE_DIR`` when set; else the
``__pycache__`` folder next to the source when the package folder is
writable; else a per-user folder (``~/.cache/numba`` on Linux). Where none of
these can be written, numba refuses to import a module with a cached kernel
("cannot cache function ...: no locator available"). :func:`configure` keeps
numba's choice wherever it works and only then points ``NUMBA_CACHE_DIR`` at
a folder in the temporary directory, one per user; worker processes started
from this one inherit the variable and share that cache.

:func:`compiler_environment` is numba's optimization level for the processes
scip starts itself to compile the kernels (a local cluster's workers, the
early compiler of ``scip run``).

No numba import here: ``import scip`` must stay light.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Mapping

__all__ = ["COMPILE_OPT", "compiler_environment", "configure", "choose_cache_dir", "numba_user_cache_dir"]

#: LLVM optimization level (``NUMBA_OPT``) of the processes scip starts to compile the feature kernels.
#: Level 1 instead of numba's 3 compiles every kernel in about 8 % less CPU time (12.2 -> 11.3 s, medians of
#: 4 alternated fresh-cache compiles) and measured as fast in steady state (``benchmarks/results/first_run.md``).
COMPILE_OPT = "1"

PACKAGE = Path(__file__).parent


def numba_user_cache_dir(env: Mapping[str, str] = os.environ, platform: str = sys.platform) -> Path:
    """numba's per-user cache folder (its ``appdirs.user_cache_dir`` for the app "numba")."""
    home = Path(env.get("HOME") or "~").expanduser()
    if platform == "darwin":
        return home / "Library" / "Caches" / "numba"
    if platform.startswith("win"):
        base = env.get("LOCALAPPDATA")
        return (Path(base) if base else home / "AppData" / "Local") / "numba" / "Cache"
    base = env.get("XDG_CACHE_HOME")
    return (Path(base) if base else home / ".cache") / "numba"


def _can_create(path: Path) -> bool:
    """Whether ``path`` exists as a writable folder or its nearest existing parent is writable."""
    for p in (path, *path.parents):
        if p.exists():
            return p.is_dir() and os.access(p, os.W_OK | os.X_OK)
    return False


def choose_cache_dir(env: Mapping[str, str], package: Path, user_cache: Path, temp: Path, user: str,
                     can_create: Callable[[Path], bool] = _can_create) -> Path | None:
    """The folder to set as ``NUMBA_CACHE_DIR``, or None where numba's own choice works.

    Parameters
    ----------
    env : mapping
        The environment; a non-empty ``NUMBA_CACHE_DIR`` is the user's choice and kept.
    package : Path
        scip's package folder; numba writes the feature kernels' cache to
        its ``features/__pycache__``.
    user_cache : Path
        numba's per-user fallback (:func:`numba_user_cache_dir`).
    temp : Path
        The temporary directory, for the last resort.
    user : str
        A name for the folder in ``temp``, so users do not share (or block) one folder.
    can_create : callable
        Whether a folder can be created and written (a parameter for tests).

    Returns
    -------
    Path or None
    """
    if env.get("NUMBA_CACHE_DIR"):
        return None
    if can_create(package / "features" / "__pycache__") or can_create(user_cache):
        return None
    return temp / f"scip-numba-cache-{user}"


def _user() -> str:
    try:
        return str(os.getuid())
    except AttributeError:  # Windows
        return os.environ.get("USERNAME", "user")


def configure() -> Path | None:
    """Set ``NUMBA_CACHE_DIR`` where numba could not cache scip's kernels otherwise; return it (None: unchanged).

    Call before the kernel modules are imported. When numba is already
    imported, its configuration is updated too.
    """
    chosen = choose_cache_dir(os.environ, PACKAGE, numba_user_cache_dir(), Path(tempfile.gettempdir()), _user(),
                              _can_create)
    if chosen is None:
        return None
    os.environ["NUMBA_CACHE_DIR"] = str(chosen)
    config = sys.modules.get("numba.core.config")
    if config is not None:
        config.CACHE_DIR = str(chosen)
    return chosen


def compiler_environment(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Environment variables for a process scip starts that compiles feature kernels.

    ``NUMBA_OPT`` is :data:`COMPILE_OPT` unless the user set it (then theirs
    stands). Only for processes scip starts: the user's own process keeps
    numba's defaults, so their own numba code is compiled as they expect.
    The cache does not record the level; a kernel compiled at either level
    is loaded by every process.
    """
    return {} if env.get("NUMBA_OPT") else {"NUMBA_OPT": COMPILE_OPT}
