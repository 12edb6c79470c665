"""The run configuration's models: ``config.yml`` validated into typed, frozen objects.

Everything downstream receives a :class:`Config` (or one of its sections),
never a dict. Validation reads no pixels and loads no model: a learned
method's model file is found here (a missing file is an error naming it),
but read by :func:`scip.config.check_models`, which :func:`scip.run.prepare`
calls, so loading a config needs no torch. Relative paths resolve against
the config file's folder.
"""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import regex
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from scip._featureparams import DEFAULT_FAMILIES, FAMILIES, FAMILIES_3D, FeatureParams
from scip._hints import short

from .errors import suggest, validate
from .files import checked, read_config_file, resolve_path

__all__ = ["Config", "InputConfig", "SegmentConfig", "TilesConfig", "OtsuConfig", "LiConfig", "WatershedConfig",
           "SpotConfig", "UnetConfig", "CellposeConfig", "SuperpixelGnnConfig", "CellsConfig", "MaskConfig",
           "IlluminationConfig", "NormalizeConfig", "FilterConfig", "QuantileRule", "MadRule", "FeaturesConfig",
           "OutputConfig", "EvaluateConfig", "ErrorsConfig", "ClusterConfig", "SlurmConfig", "SlurmJobConfig",
           "SlurmGpuConfig", "TlsFiles", "Section", "default_segment_method", "load_config", "SEGMENT_METHODS",
           "SEGMENT_CLASSES", "MicronucleiConfig", "SpotMicronucleiConfig", "UnetMicronucleiConfig"]


class Section(BaseModel):
    """A config section: unknown keys are errors, and the validated object is frozen."""

    # Channel names such as 1, 2 are written unquoted in YAML; they are names all the same.
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


# The description words this member in errors: "allowed values: max, ..., or a plane number".
_Plane = Annotated[int, Field(ge=0, description="a plane number (0 is the first)")]


class InputConfig(Section):
    """Where the images are and how to read them."""

    path: Path
    format: Literal["auto", "tiff", "ifc_zarr", "zarr", "ome_zarr", "plate", "bioio"] = "auto"
    pattern: str | None = None
    #: Globs over the path relative to ``path`` (``*`` crosses folders) of files to leave out, e.g. label images.
    exclude: list[str] = []
    channels: list[str] | None = None
    use_channels: list[str] | None = None
    array: str | None = None
    level: Annotated[int, Field(ge=0)] = 0
    images_per_partition: Annotated[int, Field(ge=1)] = 16
    #: What to do with z stacks: ``max``/``mean``/``median`` project them to one plane, ``stitch`` segments
    #: each plane and stitches the planes' objects into 3-D objects, a number picks that one plane.
    z: Literal["max", "mean", "median", "stitch"] | _Plane | None = None
    #: The older name of ``z`` for projections; kept so existing configs run unchanged.
    z_projection: Literal["max", "mean", "median"] | None = None
    max_image_bytes: int | str = "auto"
    missing_chunks: Literal["skip", "fill"] = "skip"

    @model_validator(mode="before")
    @classmethod
    def _one_z(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        z, projection = data.get("z"), data.get("z_projection")
        if projection is not None and z is not None and z != projection:
            raise ValueError(f"input.z ({z!r}) and input.z_projection ({projection!r}) disagree; "
                             "set only input.z (z_projection is its older name)")
        if z is None and projection is not None:
            return {**data, "z": projection}
        if z in ("max", "mean", "median"):
            return {**data, "z_projection": z}
        return data

    @field_validator("max_image_bytes", mode="before")
    @classmethod
    def _image_bytes(cls, value: Any) -> int | str:
        # A size, so that one image decoding to many GiB (a small compressed TIFF can) is skipped, not fatal.
        if value == "auto":
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str) and re.fullmatch(_MEMORY, value.strip()):
            return _size_bytes(value)
        raise ValueError("expected 'auto', 0 (no limit), a number of bytes or a size such as '512MiB', '2GB'")

    @field_validator("path")
    @classmethod
    def _path_exists(cls, value: Path, info: ValidationInfo) -> Path:
        value = resolve_path(value, info)
        # A glob is checked when files are discovered, where "no match" can be reported.
        if not any(c in str(value) for c in "*?[") and not checked(value.exists, value):
            raise ValueError(f"path does not exist: {value}")
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            # The engine that matches the file names (scip.io.dataset), so a valid pattern is one it reads.
            compiled = regex.compile(value)
        except regex.error as e:
            raise ValueError(f"not a valid regular expression ({e})") from None
        if not compiled.groupindex:
            raise ValueError("needs named groups, e.g. '(?P<id>\\d+)_(?P<channel>\\w+)\\.tiff'")
        return value

    @model_validator(mode="after")
    def _channels_consistent(self) -> "InputConfig":
        if self.channels is not None and len(set(self.channels)) != len(self.channels):
            raise ValueError(f"input.channels has duplicate names: {short(self.channels, 200)}")
        if self.channels is not None and self.use_channels is not None:
            unknown = [c for c in self.use_channels if c not in self.channels]
            if unknown:
                raise ValueError(
                    f"input.use_channels names {unknown} not in input.channels; allowed: {', '.join(self.channels)}"
                    + suggest(unknown[0], self.channels)
                )
        return self


class _SegmentBase(Section):
    channel: str | int = 0
    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9]*$")] = "cell"
    remove_border: bool = True
    smooth: Annotated[float, Field(ge=0)] = 1.0
    min_size: Annotated[int, Field(ge=0)] = 20
    #: With ``input.z: stitch``: the least IoU for an object to join the object of the plane below
    #: (Cellpose's ``stitch_threshold``), and the fewest planes a 3-D object must span to be kept.
    stitch_threshold: Annotated[float, Field(ge=0, le=1)] = 0.25
    min_planes: Annotated[int, Field(ge=1)] = 2

    def method_params(self) -> dict[str, Any]:
        """Keyword arguments for the segmentation function of :attr:`method`."""
        return self.model_dump(exclude={"method", "channel", "name", "remove_border", "stitch_threshold", "min_planes"})


class OtsuConfig(_SegmentBase):
    """Global Otsu threshold, then connected components."""

    method: Literal["otsu"]
    fill_holes: bool = True


class LiConfig(_SegmentBase):
    """Global Li (minimum cross-entropy) threshold, then connected components."""

    method: Literal["li"]
    fill_holes: bool = True


class WatershedConfig(_SegmentBase):
    """Threshold, then a distance-transform watershed to split touching cells."""

    method: Literal["watershed"]
    fill_holes: bool = True
    threshold: Literal["otsu", "li"] = "otsu"
    min_distance: Annotated[int, Field(ge=1)] = 5
    compactness: Annotated[float, Field(ge=0)] = 0.0
    distance_smooth: Annotated[float, Field(ge=0)] = 1.0


class SpotConfig(_SegmentBase):
    """Small bright objects: white top-hat, then a threshold."""

    method: Literal["spot"]
    smooth: Annotated[float, Field(ge=0)] = 0.0
    min_size: Annotated[int, Field(ge=0)] = 2
    radius: Annotated[int, Field(ge=1)] = 3
    threshold: Literal["otsu", "std"] = "std"
    k: Annotated[float, Field(gt=0)] = 3.0


class UnetConfig(_SegmentBase):
    """A learned U-Net model (``scip.segment.unet``; needs torch): built-in ``nuclei`` or a model file.

    ``channel`` may list several channels for a model trained on several.
    A missing model file is an error here; :func:`scip.config.check_models`
    reads it, so a corrupt or mismatched model is a configuration error of
    ``scip check`` / :func:`scip.run.prepare`, not a failure on every image.
    """

    method: Literal["unet"]
    channel: str | int | list[str | int] = 0
    model: str = "nuclei"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    quantize: Literal["none", "static", "dynamic"] = "none"
    runtime: Literal["auto", "torch", "onnxruntime"] = "auto"
    tta: bool = False
    tile: Annotated[int, Field(ge=16)] = 512
    overlap: Annotated[int, Field(ge=0)] = 64
    batch_size: Annotated[int, Field(ge=1)] = 4
    diameter: Annotated[float, Field(gt=0)] | None = None
    threshold: Annotated[float, Field(gt=0, lt=1)] | None = None
    seed_threshold: Annotated[float, Field(gt=0, lt=1)] | None = None
    smooth: Annotated[float, Field(ge=0)] = 0.0
    #: Shape-gated split/merge of the nuclei (scip.segment.unet.split_merge); None: as the model file asks.
    split_merge: bool | None = None

    @field_validator("model")
    @classmethod
    def _model_file(cls, value: str, info: ValidationInfo) -> str:
        return _model_path(value, info, ".pt", "model")

    @model_validator(mode="after")
    def _options_agree(self) -> "UnetConfig":
        if self.quantize != "none" and self.device == "cuda":
            raise ValueError(f"quantize {self.quantize!r} (INT8) runs on the CPU; with device 'cuda' use "
                             "quantize: none and precision: auto/fp16/bf16")
        if self.precision == "fp16" and self.device == "cpu":
            raise ValueError("precision 'fp16' needs CUDA; with device 'cpu' use fp32, bf16 or quantize: static")
        if self.runtime == "onnxruntime" and (self.device == "cuda" or self.quantize != "none"
                                              or self.precision not in ("auto", "fp32")):
            raise ValueError("runtime 'onnxruntime' runs FP32 on the CPU; with CUDA, bf16 or INT8 use runtime: "
                             "auto or torch")
        return self


class CellposeConfig(_SegmentBase):
    """A local Cellpose 3 model file (``scip.segment.cellpose``; needs ``cellpose<4``), scip's flow post-processing.

    ``channel`` is one channel, or two: the channel to segment and a nuclear
    channel. A missing model file is an error here; :func:`scip.config.check_models`
    reads it, so a corrupt file (or Cellpose not installed) is a configuration
    error of ``scip check`` / :func:`scip.run.prepare`, not a failure on every image.
    """

    method: Literal["cellpose"]
    channel: str | int | list[str | int] = 0
    pretrained_model: str
    diameter: Annotated[float, Field(gt=0)] | None = None
    cellprob_threshold: float = 0.0
    flow_threshold: Annotated[float, Field(ge=0)] = 0.4
    niter: Annotated[int, Field(ge=1)] | None = None
    min_size: Annotated[int, Field(ge=0)] = 15
    smooth: Annotated[float, Field(ge=0)] = 0.0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    batch_size: Annotated[int, Field(ge=1)] = 8

    @field_validator("channel")
    @classmethod
    def _one_or_two(cls, value: str | int | list[str | int]) -> str | int | list[str | int]:
        if isinstance(value, list) and len(value) not in (1, 2):
            raise ValueError(f"a Cellpose model takes one channel or two (cells, nuclei), got {len(value)}")
        return value

    @field_validator("pretrained_model")
    @classmethod
    def _model_file(cls, value: str, info: ValidationInfo) -> str:
        from scip.segment.cellpose import resolve_model

        return str(resolve_model(value, (info.context or {}).get("base_dir")))


class SuperpixelGnnConfig(_SegmentBase):
    """A superpixel graph network (``scip.segment.superpixel_gnn``; needs torch): built-in ``nuclei`` or a model file.

    The network gives the foreground; touching objects are then split with
    the distance watershed. A missing model file is an error here;
    :func:`scip.config.check_models` reads it, so a corrupt file, or a
    channel count the model does not take, is a configuration error of
    ``scip check`` / :func:`scip.run.prepare` naming the file.
    """

    method: Literal["superpixel_gnn"]
    channel: str | int | list[str | int] = 0
    model: str = "nuclei"
    superpixel_size: Annotated[int, Field(ge=4)] | None = None
    compactness: Annotated[float, Field(gt=0)] | None = None
    tile: Annotated[int, Field(ge=64)] = 1024
    threshold: Annotated[float, Field(gt=0, lt=1)] | None = None
    smooth: Annotated[float, Field(ge=0)] = 0.0
    fill_holes: bool = True
    split: bool = True
    min_distance: Annotated[int, Field(ge=1)] = 5
    distance_smooth: Annotated[float, Field(ge=0)] = 1.0

    @field_validator("model")
    @classmethod
    def _model_file(cls, value: str, info: ValidationInfo) -> str:
        return _model_path(value, info, ".gnn", "superpixel_gnn model")


def _model_path(value: str, info: ValidationInfo, suffix: str, what: str) -> str:
    """A built-in model's name as given, else the model file's absolute path (it must exist; it is not read).

    Reading the file needs torch: that is :func:`scip.config.check_models`' part.
    """
    from scip.segment._modelfiles import builtin_names, resolve

    if value in builtin_names(suffix):
        return value
    return str(resolve(value, (info.context or {}).get("base_dir"), suffix, what).resolve())


SegmentConfig = Annotated[
    Union[OtsuConfig, LiConfig, WatershedConfig, SpotConfig, UnetConfig, CellposeConfig, SuperpixelGnnConfig],
    Field(discriminator="method"),
]
#: The model of each segmentation method.
SEGMENT_CLASSES = {"otsu": OtsuConfig, "li": LiConfig, "watershed": WatershedConfig, "spot": SpotConfig,
                    "unet": UnetConfig, "cellpose": CellposeConfig, "superpixel_gnn": SuperpixelGnnConfig}
SEGMENT_METHODS = tuple(SEGMENT_CLASSES)


class MaskConfig(Section):
    """An extra mask made inside each cell from one channel (SCIP's per-channel masks)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9]*$")]
    channel: str | int
    method: Literal["otsu", "li"] = "otsu"
    smooth: Annotated[float, Field(ge=0)] = 0.0


class CellsConfig(Section):
    """How objects become cell records."""

    padding: Annotated[int, Field(ge=0)] = 5


class FeaturesConfig(Section):
    """Which feature families to compute, and their parameters."""

    families: list[Literal[FAMILIES]] = list(DEFAULT_FAMILIES)  # type: ignore[valid-type]
    distances: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1)] = [3, 5]
    gray_levels: Annotated[int, Field(ge=2, le=255)] = 32
    edge_width: Annotated[int, Field(ge=1)] = 1
    background_width: Annotated[int, Field(ge=1)] = 5
    zernike_degree: Annotated[int, Field(ge=0, le=20)] = 9

    @field_validator("families", "distances")
    @classmethod
    def _no_repeats(cls, value: list) -> list:
        repeated = sorted({str(f) for f in value if value.count(f) > 1})
        if repeated:
            raise ValueError(f"lists {', '.join(repeated)} more than once")
        return value

    def params(self) -> FeatureParams:
        """The parameters as :func:`scip.features.extract` takes them."""
        return FeatureParams(distances=tuple(self.distances), gray_levels=self.gray_levels,
                             edge_width=self.edge_width, background_width=self.background_width,
                             zernike_degree=self.zernike_degree)


class IlluminationConfig(Section):
    """Illumination correction: divide each image by its group's smoothed mean image."""

    group_by: list[str] = []
    smooth: Literal["gaussian", "median"] = "gaussian"
    size: Annotated[float, Field(gt=0)] = 50.0
    reuse: Path | None = None

    @field_validator("reuse")
    @classmethod
    def _reuse_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        value = resolve_path(value, info)
        if value is not None and not checked(value.is_file, value):
            raise ValueError(f"no saved illumination correction at {value}")
        return value


class NormalizeConfig(Section):
    """Dataset-wide quantiles of cell pixels per channel: fixed bounds for texture quantization."""

    lower: Annotated[float, Field(ge=0, lt=1)] = 0.01
    upper: Annotated[float, Field(gt=0, le=1)] = 0.99
    group_by: list[str] = []

    @model_validator(mode="after")
    def _ordered(self) -> "NormalizeConfig":
        if not self.lower < self.upper:
            raise ValueError(f"normalize.lower ({self.lower}) must be below normalize.upper ({self.upper})")
        return self


class QuantileRule(Section):
    """Threshold at this quantile of the per-cell values over the whole dataset."""

    quantile: Annotated[float, Field(gt=0, lt=1)]


class MadRule(Section):
    """Threshold ``k`` scaled median absolute deviations from the dataset median, on log values."""

    mad: Annotated[float, Field(gt=0)]


Threshold = Union[float, Literal["otsu"], QuantileRule, MadRule]


class FilterConfig(Section):
    """Drop cells whose measure falls outside ``[min, max]``; bounds may be dataset-wide rules."""

    measure: Literal["signal", "area", "focus", "saturation"]
    channel: str | int | None = None
    min: Threshold | None = None
    max: Threshold | None = None
    level: float | None = None

    @model_validator(mode="after")
    def _complete(self) -> "FilterConfig":
        if self.min is None and self.max is None:
            raise ValueError(f"filter on {self.measure!r} needs min, max or both")
        if self.measure != "area" and self.channel is None:
            raise ValueError(f"filter on {self.measure!r} needs a channel")
        if self.measure == "area" and self.channel is not None:
            raise ValueError("filter on 'area' takes no channel")
        if self.level is not None and self.measure != "saturation":
            raise ValueError(f"level applies to the 'saturation' filter only, not {self.measure!r}")
        return self

    @property
    def name(self) -> str:
        """``measure`` or ``measure(channel)``: how reports refer to this filter."""
        return self.measure if self.channel is None else f"{self.measure}({self.channel})"


class TilesConfig(Section):
    """When an image is read in tiles, and how it is cut.

    ``mode``: ``auto`` reads an image in tiles when its decoded size is over
    the per-image budget (``input.max_image_bytes``; by default a quarter of
    the smallest worker's memory), whole otherwise; ``always`` tiles every
    image; ``never`` reads every image whole (an image over the budget is
    then skipped). A tile is ``size`` px square and is segmented with
    ``margin`` px of context around it (by default twice ``diameter``, the
    expected object diameter in px); an object belongs to the tile holding
    its centroid, so objects cut by a tile edge are found whole once.

    ``statistics`` says where a method's image-wide statistic (threshold,
    normalization percentiles) comes from: ``image``, computed once over the
    whole image and shared by every tile, so tiles agree with each other and
    with a whole-image segmentation; or ``tile``, each window's own (adapts
    to uneven staining, but neighbouring windows may disagree in their
    overlap). ``slide`` and ``window`` are accepted as the older names.
    """

    mode: Literal["auto", "always", "never"] = "auto"
    size: Annotated[int, Field(ge=16)] = 512
    diameter: Annotated[float, Field(gt=0)] = 30.0
    margin: Annotated[int, Field(ge=0)] | None = None
    statistics: Literal["image", "tile"] = "image"

    @field_validator("statistics", mode="before")
    @classmethod
    def _older_names(cls, value: Any) -> Any:
        return {"slide": "image", "window": "tile"}.get(value, value) if isinstance(value, str) else value

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


class OutputConfig(Section):
    """Where results go, and in which table formats.

    ``formats`` lists the table formats to write: ``parquet`` (always
    written, the pipeline's own parts, so listing it is optional),
    ``anndata`` (``cells.h5ad``) and ``csv`` (``cells.csv``); see
    :mod:`scip.io.tables`. A single name is read as a list of one.

    ``labels``: write every image's label image (and the extra masks) as
    OME-Zarr label images into ``labels.zarr``, with ``pyramid_levels``
    downsampled levels for large images (``None``: down to one tile).
    ``polygons``: add each cell's outline as a WKB polygon column
    (``geometry``, GeoParquet metadata).
    """

    path: Path = Path("results")
    overwrite: bool = False
    formats: list[Literal["parquet", "anndata", "csv"]] = ["parquet"]
    #: How ``--resume`` recognizes changed input files: ``stat`` (size and mtime) or ``content`` (also SHA-256).
    verify: Literal["stat", "content"] = "stat"
    labels: bool = False
    polygons: bool = False
    pyramid_levels: Annotated[int, Field(ge=0)] | None = None
    #: The feature whose per-well median the report's plate heatmap shows (tables with meta_row, meta_column).
    plate_feature: str | None = None

    @field_validator("formats", mode="before")
    @classmethod
    def _one_format(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("formats")
    @classmethod
    def _formats_once(cls, value: list[str]) -> list[str]:
        repeated = sorted({f for f in value if value.count(f) > 1})
        if repeated:
            raise ValueError(f"lists {', '.join(repeated)} more than once")
        return value

    @field_validator("formats")
    @classmethod
    def _formats_installed(cls, value: list[str]) -> list[str]:
        # Checked now: the tables are converted after the whole run, too late to find a missing package.
        for fmt in value:
            module, extra = _FORMAT_PACKAGES.get(fmt, (None, None))
            problem = _import_problem(module) if module else None
            if problem:
                raise ValueError(f"format {fmt!r} needs the package {module!r}, which cannot be imported "
                                 f"({problem}); install it (pip install 'scip[{extra}]') or remove {fmt!r}")
        return value

    @field_validator("path")
    @classmethod
    def _resolve_path(cls, value: Path, info: ValidationInfo) -> Path:
        return resolve_path(value, info)


#: Output formats that need an optional package: format -> (module, pip extra of scip).
_FORMAT_PACKAGES = {"anndata": ("anndata", "anndata")}


def _import_problem(module: str) -> str | None:
    """Why ``module`` cannot be imported (``"ModuleNotFoundError: ..."``), or ``None`` when it can.

    Imported, not just looked up: an installed package that fails to import
    (a broken or incompatible install) fails the same way at the end of a run.
    """
    try:
        importlib.import_module(module)
    except Exception as e:  # noqa: BLE001 - any import failure is reported to the user
        return f"{type(e).__name__}: {str(e)[:200]}"
    return None


class ErrorsConfig(Section):
    """How many unexpected errors (bugs, not data problems) a run tolerates before it stops.

    An image or cell stopped by an unexpected exception is an error: the run
    finishes with exit code 3 while there are at most ``max`` of them, and
    stops early (exit code 1, ``run.json`` status ``failed``) once there are more.
    """

    max: Annotated[int, Field(ge=0)] = 10


class EvaluateConfig(Section):
    """Ground truth to compare the segmentation with (optional)."""

    labels: str
    iou: Annotated[float, Field(gt=0, le=1)] = 0.5
    #: ``meta_*`` columns of the input pattern's fields; run.json and the report score each of their values.
    group_by: list[str] = []

    @field_validator("group_by", mode="before")
    @classmethod
    def _one_column(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("labels")
    @classmethod
    def _resolve_labels(cls, value: str, info: ValidationInfo) -> str:
        resolved = resolve_path(Path(value), info)
        if "{" not in value and not checked(resolved.exists, resolved):
            raise ValueError(f"path does not exist: {resolved}")
        return str(resolved)


_MEMORY = r"\d+(\.\d+)?\s*([kKMGT]i?B|B)?"


def _size_bytes(text: str) -> int:
    """Bytes of a size matching :data:`_MEMORY`: ``'512MiB'``, ``'2GB'``, ``'100'``."""
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKMGT]i?B|B)?", text.strip()).groups()
    unit = (unit or "B").upper()
    if unit == "B":
        return int(float(number))
    base = 1024 if unit.endswith("IB") else 1000
    return int(float(number) * base ** ("KMGT".index(unit[0]) + 1))


_WALLTIME = r"(\d+-)?\d{1,3}:\d{2}(:\d{2})?"


class SlurmJobConfig(Section):
    """One kind of SLURM job that runs Dask workers (dask-jobqueue's job options)."""

    queue: str | None = None
    account: str | None = None
    cores: Annotated[int, Field(ge=1)] = 1
    processes: Annotated[int, Field(ge=1)] = 1
    memory: str = "4GiB"
    walltime: str = "01:00:00"
    job_extra_directives: list[str] = []
    job_script_prologue: list[str] = []
    local_directory: str | None = None
    log_directory: str | None = None

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not re.fullmatch(_MEMORY, value.strip()):
            raise ValueError("expected a size such as '4GiB', '2500MB'")
        return value.strip()

    @field_validator("walltime")
    @classmethod
    def _walltime(cls, value: str) -> str:
        if not re.fullmatch(_WALLTIME, value.strip()):
            raise ValueError("expected SLURM's [days-]hours:minutes[:seconds], e.g. '01:00:00' or '2-00:00:00'")
        return value.strip()

    @model_validator(mode="after")
    def _cores_split(self) -> "SlurmJobConfig":
        if self.cores % self.processes:
            raise ValueError(f"cores ({self.cores}) must be a multiple of processes ({self.processes}): "
                             "each worker process gets cores / processes threads")
        return self


class SlurmGpuConfig(SlurmJobConfig):
    """The GPU jobs: a fixed number of jobs, each one worker with the ``GPU`` resource."""

    processes: Literal[1] = 1
    gres: str | None = "gpu:1"
    jobs: Annotated[int, Field(ge=1)] = 1


class SlurmConfig(SlurmJobConfig):
    """Workers as SLURM jobs (dask-jobqueue): CPU jobs, optionally adaptive, and optional GPU jobs."""

    jobs: Annotated[int, Field(ge=0)] = 1
    adapt: bool = False
    minimum_jobs: Annotated[int, Field(ge=0)] = 0
    maximum_jobs: Annotated[int, Field(ge=1)] = 4
    gpu: SlurmGpuConfig | None = None
    wait_timeout: Annotated[float, Field(gt=0)] = 600.0
    interface: str | None = None
    scheduler_interface: str | None = None
    shared_temp_directory: str | None = None

    @model_validator(mode="after")
    def _range(self) -> "SlurmConfig":
        if self.adapt and self.minimum_jobs > self.maximum_jobs:
            raise ValueError(f"minimum_jobs ({self.minimum_jobs}) is above maximum_jobs ({self.maximum_jobs})")
        if not self.adapt and self.jobs == 0 and self.gpu is None:
            raise ValueError("jobs is 0 and no gpu jobs are configured: no worker would ever start")
        return self


class TlsFiles(Section):
    """Certificate files (PEM) for TLS between this process, the scheduler and the workers."""

    ca_file: Path
    cert: Path
    key: Path | None = None

    @field_validator("ca_file", "cert", "key")
    @classmethod
    def _file_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        value = resolve_path(value, info)
        if value is not None and not value.is_file():
            raise ValueError(f"file does not exist: {value}")
        return value


class ClusterConfig(Section):
    """Where the graph runs."""

    scheduler: str | None = None
    workers: Annotated[int, Field(ge=0)] | None = None
    threads: Annotated[int, Field(ge=1)] = 1
    memory_limit: str = "auto"
    dashboard_address: str = "127.0.0.1:8787"
    gpu_workers: Annotated[int, Field(ge=0)] | None = None
    retries: Annotated[int, Field(ge=0)] = 2
    slurm: SlurmConfig | None = None
    # "auto": TLS with temporary credentials on SLURM, plain TCP on loopback locally,
    # Dask's own TLS configuration for an existing scheduler.
    security: bool | TlsFiles | Literal["auto"] = "auto"

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not re.fullmatch(r"auto|" + _MEMORY, value.strip()):
            raise ValueError("expected 'auto' or a size such as '4GiB', '2500MB'")
        return value.strip()

    @model_validator(mode="after")
    def _one_place(self) -> "ClusterConfig":
        if self.slurm is not None and self.scheduler is not None:
            raise ValueError(f"scheduler ({self.scheduler!r}) and slurm are both set: the run either connects to a "
                             "scheduler or starts its own workers on SLURM; remove one")
        if self.workers == 0 and not self.gpu_workers and self.slurm is None and self.scheduler is None:
            raise ValueError("workers is 0 and gpu_workers is not set: the local cluster would have no worker")
        if self.scheduler and self.scheduler != "synchronous":
            tls = self.scheduler.startswith("tls://")
            if tls and self.security is False:
                raise ValueError(f"scheduler {self.scheduler!r} speaks TLS but security is false: set security to "
                                 "true (Dask's TLS configuration) or to {ca_file, cert, key}")
            if not tls and (self.security is True or isinstance(self.security, TlsFiles)):
                raise ValueError(f"security asks for TLS but scheduler {self.scheduler!r} is not a tls:// address; "
                                 "a TLS scheduler's address starts with tls://")
        return self


class _MicronucleiBase(Section):
    """What every micronucleus detector shares: the channel, and which detections count and where they belong."""

    #: The channel micronuclei are found in; by default the segmentation's (its first, for a list).
    channel: str | int | None = None
    #: Farthest (px) a micronucleus may lie from its nucleus' mask to be counted for that cell.
    max_distance: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 10.0
    min_size: Annotated[int, Field(ge=1)] = 3
    max_size: Annotated[int, Field(ge=1)] = 200
    #: Largest fraction of a detection's pixels on a nucleus mask for it to still count (beyond: chromatin texture).
    max_overlap: Annotated[float, Field(ge=0, lt=1)] = 0.5

    @model_validator(mode="after")
    def _sizes_ordered(self) -> "_MicronucleiBase":
        if self.min_size > self.max_size:
            raise ValueError(f"micronuclei.min_size ({self.min_size}) is larger than micronuclei.max_size "
                             f"({self.max_size}); no detection could be kept")
        return self


class SpotMicronucleiConfig(_MicronucleiBase):
    """Micronuclei as small bright spots outside the nuclei (``scip.segment.spot``'s parameters)."""

    method: Literal["spot"]
    smooth: Annotated[float, Field(ge=0)] = 0.0
    radius: Annotated[int, Field(ge=1)] = 3
    threshold: Literal["otsu", "std"] = "std"
    k: Annotated[float, Field(gt=0)] = 3.0

    def detector_params(self) -> dict[str, Any]:
        """Keyword arguments of :func:`scip.segment.spot`; sizes are :func:`scip.segment.micronuclei.clean`'s."""
        return {"smooth": self.smooth, "radius": self.radius, "threshold": self.threshold, "k": self.k, "min_size": 1}


class UnetMicronucleiConfig(_MicronucleiBase):
    """Micronuclei from a U-Net model's micronucleus output (``scip.segment.unet.micronuclei``; needs torch)."""

    method: Literal["unet"]
    model: str = "nuclei"
    threshold: Annotated[float, Field(gt=0, lt=1)] | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @field_validator("model")
    @classmethod
    def _model_file(cls, value: str, info: ValidationInfo) -> str:
        return _model_path(value, info, ".pt", "micronuclei model")

    def detector_params(self) -> dict[str, Any]:
        """Keyword arguments of ``scip.segment.unet.micronuclei``."""
        return {"model": self.model, "threshold": self.threshold, "device": self.device}


MicronucleiConfig = Annotated[Union[SpotMicronucleiConfig, UnetMicronucleiConfig], Field(discriminator="method")]


def default_segment_method(data: Any) -> Any:
    """A raw config whose ``segment`` section has no ``method`` gets the default one.

    The segment union needs its tag to pick a model; for every config with a
    ``segment`` section (``scip run``, ``scip slide``).
    """
    if isinstance(data, dict) and isinstance(data.get("segment"), dict) and "method" not in data["segment"]:
        data = {**data, "segment": {"method": "watershed", **data["segment"]}}
    return data


class Config(Section):
    """A whole run, as read from ``config.yml``."""

    input: InputConfig
    segment: SegmentConfig = Field(default_factory=lambda: WatershedConfig(method="watershed"))
    cells: CellsConfig = CellsConfig()
    masks: list[MaskConfig] = []
    illumination: IlluminationConfig | None = None
    normalize: NormalizeConfig | None = None
    filters: list[FilterConfig] = []
    features: FeaturesConfig = FeaturesConfig()
    tiles: TilesConfig = TilesConfig()
    output: OutputConfig = OutputConfig()
    evaluate: EvaluateConfig | None = None
    cluster: ClusterConfig = ClusterConfig()
    errors: ErrorsConfig = ErrorsConfig()
    micronuclei: MicronucleiConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_method(cls, data: Any) -> Any:
        return default_segment_method(data)

    @model_validator(mode="before")
    @classmethod
    def _default_micronucleus_method(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("micronuclei"), dict) and "method" not in data["micronuclei"]:
            data = {**data, "micronuclei": {"method": "spot", **data["micronuclei"]}}
        return data

    @model_validator(mode="after")
    def _micronuclei_in_2d(self) -> "Config":
        if self.micronuclei is None:
            return self
        if self.input.z == "stitch":
            raise ValueError("micronuclei: micronuclei are found in 2-D images; they do not work with input.z: stitch "
                             "(3-D objects); set input.z to max, mean, median or a plane number")
        if self.tiles.mode == "always":
            raise ValueError("micronuclei: images read in tiles are not supported (tiles.mode: always); set tiles.mode "
                             "to auto or never")
        if "micronuclei" in self.mask_names:
            raise ValueError("micronuclei: the name 'micronuclei' is taken by the micronuclei's label image; give "
                             "segment.name / masks another name")
        return self

    @model_validator(mode="before")
    @classmethod
    def _stitch_families(cls, data: Any) -> Any:
        # 3-D objects have one family to measure them; the 2-D default would only be refused below.
        if not (isinstance(data, dict) and isinstance(data.get("input"), dict) and data["input"].get("z") == "stitch"):
            return data
        features = data.get("features") or {}
        if isinstance(features, dict) and "families" not in features:
            data = {**data, "features": {**features, "families": list(FAMILIES_3D)}}
        return data

    @model_validator(mode="after")
    def _stitch_is_3d(self) -> "Config":
        if self.input.z != "stitch":
            return self
        planar = [f for f in self.features.families if f not in FAMILIES_3D]
        if planar:
            raise ValueError(f"features.families: {', '.join(planar)} measure 2-D objects only; with input.z: stitch "
                             f"(3-D objects) list only {', '.join(FAMILIES_3D)}, or set input.z to max, mean, median "
                             "or a plane number to measure 2-D objects")
        if self.masks:
            raise ValueError("masks: extra masks are made in 2-D; they do not work with input.z: stitch (3-D objects)")
        if self.illumination is not None:
            raise ValueError("illumination: flat fields are 2-D; they do not work with input.z: stitch (3-D objects)")
        return self

    @model_validator(mode="after")
    def _mask_names_unique(self) -> "Config":
        names = [self.segment.name] + [m.name for m in self.masks]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"masks: mask name(s) {', '.join(repeated)} used twice (segment.name is {self.segment.name!r}); "
                             "each mask needs its own name")
        return self

    @model_validator(mode="after")
    def _band_fits_crop(self) -> "Config":
        if self.features.background_width > self.cells.padding and "intensity" in self.features.families:
            raise ValueError(
                f"features.background_width ({self.features.background_width}) is larger than cells.padding "
                f"({self.cells.padding}): the background band around each cell would be cut off by its crop; "
                "raise cells.padding or lower features.background_width")
        return self

    @property
    def mask_names(self) -> tuple[str, ...]:
        """The cell's own mask first, then the extra masks, in column order."""
        return (self.segment.name, *(m.name for m in self.masks))


def load_config(source: str | Path | dict, *, base_dir: str | Path | None = None, overrides: dict | None = None) -> Config:
    """Read and validate a configuration.

    Parameters
    ----------
    source : str, Path or dict
        Path of a YAML file, or an already parsed mapping (from a notebook).
    base_dir : path, optional
        Directory relative paths are resolved against; defaults to the YAML
        file's directory, or the current directory for a mapping.
    overrides : dict, optional
        ``{"section": {"key": value}}`` applied on top of the file (the
        command line's options), validated together with it.

    Raises
    ------
    ConfigError
        With one message listing every problem: key path, bad value, allowed
        values and a "did you mean" where one is close.
    """
    raw, origin, base = read_config_file(source, base_dir=base_dir, overrides=overrides)
    return validate(Config, raw, origin=origin, base=base)
