"""Output folders of the example-data writers."""

from __future__ import annotations

from pathlib import Path

__all__ = ["fresh_folders"]


def fresh_folders(root: Path, table: str, folders: tuple[str, ...], stale: str) -> dict[str, Path]:
    """``{name: root/name}`` for each folder (created, emptied of ``stale`` files) and ``{table: root/table.csv}``.

    A second ``scip example-data`` into the same folder with fewer images
    must not leave the first one's extra files behind to be read as data.
    """
    out = {name: root / name for name in folders}
    for folder in out.values():
        folder.mkdir(parents=True, exist_ok=True)
        for path in folder.glob(stale):
            path.unlink()
    out[table] = root / f"{table}.csv"
    return out
