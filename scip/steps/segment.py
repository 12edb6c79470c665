"""Segmentation step: one channel of an image record to a label image."""

from __future__ import annotations

import numpy as np

from scip._hints import did_you_mean
from scip.config import SegmentConfig
from scip.records import ImageRecord, skipped
from scip.segment import segment
from scip.steps.timing import timed


def channel_position(channels: tuple[str, ...], channel: str | int, key: str = "segment.channel") -> int:
    """Position of ``channel`` (a name or an index) among the loaded channels.

    ``key`` is the config key the value came from, named in the error.
    """
    if isinstance(channel, int):
        if str(channel) in channels and channels.index(str(channel)) != channel % max(len(channels), 1):
            raise ValueError(
                f"{key}: {channel} is ambiguous: it is a position, but a channel is also named "
                f"'{channel}' (position {channels.index(str(channel))}); quote it ('{channel}') to mean the name"
            )
        if not -len(channels) <= channel < len(channels):
            raise ValueError(f"{key}: index {channel} is out of range for {len(channels)} channels ({', '.join(channels)})")
        return channel % len(channels)
    if channel not in channels:
        raise ValueError(f"{key}: {channel!r} is not a loaded channel; allowed: {', '.join(channels)}"
                         + did_you_mean(channel, channels))
    return channels.index(channel)


def segment_image(record: ImageRecord, cfg: SegmentConfig) -> ImageRecord:
    """Label the objects of ``record`` in ``cfg.channel`` with ``cfg.method``.

    The label image is stored under ``cfg.name``. An image in which nothing
    is found is skipped with that reason: its absence from the table is then
    explained in ``skipped.csv``.
    """
    if not record.status:
        return record
    timings = dict(record.timings)
    with timed(timings, "segment"):
        c = channel_position(record.channels, cfg.channel)
        try:
            labels = segment(record.pixels[c].astype(np.float32), cfg.method, **cfg.method_params())
        except Exception as e:  # noqa: BLE001 - one odd image must not stop the run
            return record.with_(timings=timings, status=skipped("segment", f"{cfg.method} failed: {type(e).__name__}: {e}"))
    labels = {**record.labels, cfg.name: labels}
    if labels[cfg.name].max() == 0:
        return record.with_(labels=labels, timings=timings, status=skipped(
            "segment", f"no cells found ({cfg.method} on channel '{record.channels[c]}')"))
    return record.with_(labels=labels, timings=timings)
