"""What a reader found: the list of images to process, without their pixels."""

from __future__ import annotations

from dataclasses import dataclass

import regex

from scip._hints import short
from scip.io.channels import InputError
from scip.io.limits import ImageBudget
from scip.records import Source

#: Seconds one file name may take to match ``input.pattern``. A sane pattern takes microseconds;
#: nested repetition such as ``(a|aa)+`` can backtrack for hours on a long name.
PATTERN_TIMEOUT = 1.0


def compile_pattern(pattern: str) -> regex.Pattern:
    """``input.pattern`` compiled with the ``regex`` engine, whose matches can be given a time limit.

    Parameters
    ----------
    pattern : str
        A regular expression with named groups (validated by the config).

    Returns
    -------
    regex.Pattern
        Use it through :func:`match_name`.
    """
    return regex.compile(pattern)


def match_name(compiled: regex.Pattern, name: str, timeout: float = PATTERN_TIMEOUT) -> regex.Match | None:
    """Match a whole file name (or relative path) against ``input.pattern``, within ``timeout`` seconds.

    Parameters
    ----------
    compiled : regex.Pattern
        From :func:`compile_pattern`.
    name : str
        A file name, or a path relative to ``input.path`` for a pattern with ``/``.
    timeout : float
        Seconds the match may take.

    Returns
    -------
    regex.Match or None
        The match, or ``None`` when the name does not match.

    Raises
    ------
    InputError
        The match took longer than ``timeout``: the message names the pattern
        and the file, instead of hanging silently.
    """
    try:
        return compiled.fullmatch(name, timeout=timeout)
    except TimeoutError:
        raise InputError(
            f"input.pattern: matching {short(compiled.pattern, 120)} against the file name {short(name, 120)} took "
            f"more than {timeout:g} s (catastrophic backtracking, e.g. nested repetition such as '(a+)+' or "
            "'(a|aa)+'); simplify the pattern, e.g. '(?P<id>[^_]+)_(?P<channel>\\w+)\\.tiff'"
        ) from None


@dataclass(frozen=True)
class Dataset:
    """Images discovered for a run, and how to read them.

    Attributes
    ----------
    format : str
        Reader that reads the pixels (``tiff``, ``ifc_zarr``, ``zarr``, ``ome_zarr``).
    channels : tuple of str
        Names of the channels loaded, in the order they appear in ``pixels``.
    channel_index : tuple of int
        For each loaded channel, its position among the stored channels.
    n_stored_channels : int
        Number of channels each image must have on disk; an image with another
        count is skipped with a reason.
    sources : tuple of Source
        One per image, in dataset order.
    unmatched : tuple of str
        Files in the input folder that the pattern did not match (reported in
        ``run.json``, never silently ignored).
    chunk_size : int
        Images per storage chunk; partitions are aligned to it so that no
        chunk is decoded by two tasks.
    z_planes : int or None
        Z planes of the first image (1: a 2-D image; ``None``: its header
        could not be read at discovery). Images with more than one plane are
        read as ``(C, Z, H, W)``; ``input.z`` projects them, picks a plane or
        keeps them whole for 3-D objects. Plain zarr arrays and IFC zarr have no z axis.
    excluded : tuple of str
        Files (or plate fields) left out by ``input.exclude`` (counted by
        ``scip check`` and in ``run.json``).
    """

    format: str
    channels: tuple[str, ...]
    channel_index: tuple[int, ...]
    n_stored_channels: int
    sources: tuple[Source, ...]
    unmatched: tuple[str, ...] = ()
    chunk_size: int = 1
    z_planes: int | None = 1
    excluded: tuple[str, ...] = ()

    @property
    def reader(self) -> "ReadSpec":
        """What a task needs to read its images: small, unlike the source list."""
        return ReadSpec(self.format, self.channels, self.channel_index, self.n_stored_channels, self.chunk_size)


@dataclass(frozen=True)
class ReadSpec:
    """How to read pixels; shipped with every load task.

    ``budget``: the most bytes one decoded image may take (``None``: no
    limit); an image declared larger is skipped before it is decoded.
    ``missing_chunks``: ``"skip"`` an image of a Zarr/OME-Zarr input when a
    chunk of its region is not in the store, or ``"fill"`` it with the
    array's fill value as zarr does (``input.missing_chunks``).
    """

    format: str
    channels: tuple[str, ...]
    channel_index: tuple[int, ...]
    n_stored_channels: int
    chunk_size: int
    budget: ImageBudget | None = None
    missing_chunks: str = "skip"
