"""How a run fails: the exceptions the command line turns into one message and exit code 1.

Kept apart from :mod:`scip.run` so the command line can catch them without
importing Dask.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["RunFailed", "DiskFull"]


class RunFailed(RuntimeError):
    """The run stopped before its end; the message says why and what to do. Exit code 1."""


class DiskFull(RunFailed):
    """A write failed because the disk (or the quota) is full.

    Attributes
    ----------
    folder : Path
        The output folder, or the file whose write failed when it is elsewhere.
    free_mib : float or None
        Free space left there, in MiB (``None`` when it cannot be told).
    """

    def __init__(self, folder: Path, free_mib: float | None):
        self.folder, self.free_mib = folder, free_mib
        super().__init__(f"the disk holding {folder} is full ({self.free}): free space and run again with --resume "
                         "(resume=True) to compute only what is missing")

    @property
    def free(self) -> str:
        """The free space, in words: ``0.2 MiB free``."""
        if self.free_mib is None:
            return "free space unknown"
        return f"{self.free_mib:.{1 if self.free_mib < 10 else 0}f} MiB free"
