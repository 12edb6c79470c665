"""Writing a file so that no reader ever sees half of it, and so that it survives a crash.

:func:`atomic_path` gives a temporary name to write to; when the block
succeeds the temporary file is flushed to disk (``fsync``), renamed onto the
final name, and the folder is flushed too, so that after a power cut or a
killed node the final name holds either the old content or the whole new
one, never an empty or truncated file. :func:`sha256_file` is the checksum
recorded for files a later run must verify before trusting them.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "fsync_file", "fsync_dir", "sha256_file"]

_CHUNK = 1 << 20


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a written (and closed) file's data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename, a new name) to the disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened, and renames need no flush there
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the rename itself is still atomic
        pass
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as hex; read in 1 MiB blocks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_path(path: str | os.PathLike, durable: bool = True) -> Iterator[Path]:
    """A temporary name beside ``path`` to write to; renamed onto ``path`` when the block succeeds.

    The temporary file is hidden (``.<name>.tmp``) and removed if the block
    raises, so an interrupted write never leaves a truncated file under the
    final name, nor litter beside it. With ``durable`` (the default) the file
    is fsynced before the rename and its folder after it: without that, a
    crash soon after the rename can leave the final name pointing at an
    empty file on some file systems (ext4, XFS), which a resumed run would
    otherwise have to detect.

    Parameters
    ----------
    path : str or os.PathLike
        The final name. Its folder is created if needed.
    durable : bool
        Flush file and folder to the disk (default). ``False`` only for
        files that are cheap to recompute and never trusted by a later run.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("done")
    >>> target.read_text()
    'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        if durable:
            fsync_file(tmp)
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
