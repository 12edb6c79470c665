"""The whole-slide configuration (``scip slide slide.yml``), validated into typed objects.

The model lives here rather than in :mod:`scip.config` because a slide run is
its own command with its own sections (like ``scip train``); it reuses the run
config's building blocks, so ``segment``, ``features`` and ``cluster`` accept
exactly what they accept in ``scip run`` (any segmentation method of
:data:`scip.config.SEGMENT_METHODS`, with its parameters), and errors are
worded by the same formatter (:mod:`scip.config.errors`): key path, bad value,
allowed values, "did you mean".
Relative paths are resolved against the YAML file's folder. Every key is
listed in ``docs/config.md`` (section ``scip slide``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from scip.config import (
    ClusterConfig,
    FeaturesConfig,
    SegmentConfig,
    Section,
    WatershedConfig,
    default_segment_method,
    read_config_file,
    resolve_path,
    validate,
)

__all__ = ["SlideConfig", "SlideInputConfig", "TilesConfig", "SlideOutputConfig", "load_slide_config"]


class SlideInputConfig(Section):
    """The one large image to segment and where its pixels are."""

    path: Path
    format: Literal["auto", "ome_zarr", "zarr", "tiff"] = "auto"
    array: str | None = None
    series: Annotated[int, Field(ge=0)] = 0
    level: Annotated[int, Field(ge=0)] = 0
    t: Annotated[int, Field(ge=0)] = 0
    z: Annotated[int, Field(ge=0)] | None = None
    channels: list[str] | None = None
    use_channels: list[str] | None = None

    @field_validator("path")
    @classmethod
    def _path_exists(cls, value: Path, info: ValidationInfo) -> Path:
        value = resolve_path(value, info)
        if not value.exists():
            raise ValueError(f"path does not exist: {value}")
        return value


class TilesConfig(Section):
    """How the image is cut: tiles of ``size`` px, each segmented with ``margin`` px of context around it.

    ``statistics`` says where a method's image-wide statistic (threshold,
    normalization percentiles) comes from: ``slide``, computed once over the
    whole slide and shared by every window, so the tiles agree with each
    other and with a whole-image segmentation; or ``window``, each window's
    own (adapts to uneven staining, but neighbouring windows may disagree in
    their overlap).
    """

    size: Annotated[int, Field(ge=16)] = 512
    diameter: Annotated[float, Field(gt=0)] = 30.0
    margin: Annotated[int, Field(ge=0)] | None = None
    statistics: Literal["slide", "window"] = "slide"

    @property
    def margin_px(self) -> int:
        """The margin in pixels: ``margin``, or twice the expected diameter."""
        return self.margin if self.margin is not None else int(math.ceil(2 * self.diameter))

    @model_validator(mode="after")
    def _margin_fits(self) -> "TilesConfig":
        if self.size < 2 * self.margin_px:
            given = f"margin {self.margin_px}" if self.margin is not None else \
                f"margin {self.margin_px} (2 x diameter {self.diameter:g})"
            raise ValueError(f"tiles.size ({self.size}) is smaller than 2 x tiles.margin ({given}): "
                             "a tile would be mostly context; raise tiles.size or lower tiles.margin / tiles.diameter")
        return self


class SlideOutputConfig(Section):
    """Where the label image, the cell table and the run summary go."""

    path: Path = Path("slide_results")
    overwrite: bool = False
    polygons: bool = False
    labels_into_input: bool = False
    pyramid_levels: Annotated[int, Field(ge=0)] | None = None

    @field_validator("path")
    @classmethod
    def _resolve_path(cls, value: Path, info: ValidationInfo) -> Path:
        return resolve_path(value, info)


class SlideConfig(Section):
    """A whole-slide run, as read from ``slide.yml``."""

    input: SlideInputConfig
    segment: SegmentConfig = Field(default_factory=lambda: WatershedConfig(method="watershed"))
    tiles: TilesConfig = TilesConfig()
    output: SlideOutputConfig = SlideOutputConfig()
    features: FeaturesConfig | None = None
    cluster: ClusterConfig = ClusterConfig()

    @model_validator(mode="before")
    @classmethod
    def _default_method(cls, data: Any) -> Any:
        return default_segment_method(data)

    @model_validator(mode="after")
    def _band_fits_margin(self) -> "SlideConfig":
        if self.features is not None and self.features.background_width > self.tiles.margin_px:
            raise ValueError(f"features.background_width ({self.features.background_width}) is larger than "
                             f"tiles.margin ({self.tiles.margin_px}): a cell's background band would leave its tile")
        return self


def load_slide_config(source: str | Path | dict, *, base_dir: str | Path | None = None,
                      overrides: dict | None = None) -> SlideConfig:
    """Read and validate a whole-slide configuration.

    Parameters
    ----------
    source : str, Path or dict
        Path of a YAML file, or an already parsed mapping.
    base_dir : path, optional
        Directory relative paths are resolved against; defaults to the YAML
        file's directory, or the current directory for a mapping.
    overrides : dict, optional
        ``{"section": {"key": value}}`` applied on top (the command line's
        options), validated together with the file.

    Returns
    -------
    SlideConfig

    Raises
    ------
    ConfigError
        With one message listing every problem: key path, bad value, allowed
        values and a "did you mean" where one is close.
    """
    raw, origin, base = read_config_file(source, base_dir=base_dir, overrides=overrides,
                                         sections="input, segment, tiles, ...")
    return validate(SlideConfig, raw, origin=origin, base=base)
