"""Segmentation step: one channel of an image record to a label image (3-D for a z stack)."""

from __future__ import annotations

from functools import partial

import numpy as np

from scip._hints import did_you_mean
from scip.config import SegmentConfig
from scip.records import EXPECTED, ImageRecord, failed, skipped
from scip.segment import segment
from scip.segment.stack import segment_stack, stack_parameters
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


def segment_positions(channels: tuple[str, ...], channel: str | int | list[str | int]) -> list[int]:
    """Positions of the segmentation channel(s): one, or a list for a multi-channel model (``unet``)."""
    if isinstance(channel, list):
        return [channel_position(channels, ch, key=f"segment.channel.{i}") for i, ch in enumerate(channel)]
    return [channel_position(channels, channel)]


def segment_image(record: ImageRecord, cfg: SegmentConfig) -> ImageRecord:
    """Label the objects of ``record`` in ``cfg.channel`` with ``cfg.method``.

    The label image is stored under ``cfg.name``. An image in which nothing
    is found is skipped with that reason: its absence from the table is then
    explained in ``skipped.csv``. A list of channels (multi-channel models)
    is passed to the method as one ``(C, H, W)`` image.

    A z stack ``(C, Z, H, W)`` (``input.z: stitch``) is segmented plane by
    plane with the same method, every plane with the statistic (threshold,
    normalization) of the whole stack, and the planes' objects are stitched
    into 3-D objects (:func:`scip.segment.stack.segment_stack`, with
    ``cfg.stitch_threshold`` and ``cfg.min_planes``, capped at the number of
    planes so that a one-plane image keeps its objects): the labels are
    ``(Z, H, W)``.

    A method that raises :class:`~scip.records.DataError` (or runs out of
    memory) skips the image; any other exception is a bug in the method and
    makes the image an error (:func:`~scip.records.failed`), with its traceback.
    """
    if not record.status:
        return record
    timings = dict(record.timings)
    with timed(timings, "segment"):
        positions = segment_positions(record.channels, cfg.channel)
        c = positions[0]
        pixels = record.pixels[positions] if isinstance(cfg.channel, list) else record.pixels[c]
        try:
            if record.pixels.ndim == 4:
                labels = _segment_stack(pixels.astype(np.float32), cfg, multichannel=isinstance(cfg.channel, list))
            else:
                labels = segment(pixels.astype(np.float32), cfg.method, **cfg.method_params())
        except EXPECTED as e:
            return record.with_(timings=timings, status=skipped(
                "segment", f"{cfg.method} failed: {type(e).__name__}: {e}", kind=f"{cfg.method} failed: {type(e).__name__}"))
        except Exception as e:  # noqa: BLE001 - counted as an error, reported with its traceback
            return record.with_(timings=timings, status=failed("segment", e))
    labels = {**record.labels, cfg.name: labels}
    if labels[cfg.name].max() == 0:
        return record.with_(labels=labels, timings=timings, status=skipped(
            "segment", f"no cells found ({cfg.method} on channel "
                       f"{', '.join(repr(record.channels[i]) for i in positions)})", kind="no cells found"))
    return record.with_(labels=labels, timings=timings)


def _segment_stack(pixels: np.ndarray, cfg: SegmentConfig, multichannel: bool) -> np.ndarray:
    # Planes first: (Z, H, W), or (Z, C, H, W) for a multi-channel model. One stitching thread: the
    # scheduler already runs images side by side.
    planes = np.moveaxis(pixels, 1, 0) if multichannel else pixels
    params = cfg.method_params()
    params = {**params, **stack_parameters(planes, cfg.method, params)}
    return segment_stack(planes, partial(segment, method=cfg.method, **params), cfg.stitch_threshold,
                         min_planes=min(cfg.min_planes, len(planes)), threads=1)
