"""Images as lazy Dask arrays, read window by window where they are computed."""

from __future__ import annotations

from pathlib import Path

import dask.array as da

from scip.io.windows import ChannelView, SlideSource

__all__ = ["to_dask"]


def to_dask(source: SlideSource, channel: int, chunks: tuple[int, int] | None = None) -> da.Array:
    """The image's channel at stored position ``channel`` as a lazy dask array ``(H, W)``.

    Each block reads only its own window, in whichever process computes it;
    ``chunks`` defaults to the storage chunks.
    """
    return da.from_array(ChannelView(source, channel), chunks=chunks or source.chunks, asarray=True,
                         name=f"image-{Path(source.path).name}-{channel}-{abs(hash(source))}", fancy=False)
