"""The configuration of every scip command: YAML validated once into typed, frozen objects.

Everything downstream receives a :class:`Config` (or one of its sections),
never a dict. Invalid configuration raises :class:`ConfigError`, whose
message names the key path, the bad value and the allowed values; the
command line turns it into exit code 2. Importing this package imports no
torch: model files are read by :func:`check_models`, not while validating.

- :mod:`.sections`: the run config's models (:class:`Config` and its sections) and :func:`load_config`;
- :mod:`.errors`: the one error formatter every config (run, tile, training) shares, and :func:`validate`;
- :mod:`.files`: reading a config file, merging overrides, resolving relative paths;
- :mod:`.checks`: :func:`check_models`, the model-file checks :func:`scip.run.prepare` runs.

Relative paths in a config file are resolved against the directory of that
file, so a config and its data can move together.
"""

from __future__ import annotations

from scip.yamlfile import MAX_YAML_NODES, ConfigError, parse_yaml

from .checks import check_models
from .errors import format_error, format_errors, suggest, validate
from .files import read_config_file, resolve_path
from .sections import (
    SEGMENT_CLASSES,
    SEGMENT_METHODS,
    CellposeConfig,
    CellsConfig,
    ClusterConfig,
    Config,
    ErrorsConfig,
    EvaluateConfig,
    FeaturesConfig,
    FilterConfig,
    IlluminationConfig,
    InputConfig,
    LiConfig,
    MadRule,
    MaskConfig,
    MicronucleiConfig,
    NormalizeConfig,
    OtsuConfig,
    OutputConfig,
    QuantileRule,
    Section,
    SegmentConfig,
    SlurmConfig,
    SlurmGpuConfig,
    SlurmJobConfig,
    SpotConfig,
    SpotMicronucleiConfig,
    SuperpixelGnnConfig,
    TilesConfig,
    TlsFiles,
    UnetConfig,
    UnetMicronucleiConfig,
    WatershedConfig,
    default_segment_method,
    load_config,
)

__all__ = [
    # the run config (sections.py)
    "Config", "InputConfig", "SegmentConfig", "TilesConfig", "OtsuConfig", "LiConfig", "WatershedConfig",
    "SpotConfig", "UnetConfig", "CellposeConfig", "SuperpixelGnnConfig", "CellsConfig", "MaskConfig",
    "IlluminationConfig", "NormalizeConfig", "FilterConfig", "QuantileRule", "MadRule", "FeaturesConfig",
    "OutputConfig", "EvaluateConfig", "ErrorsConfig", "ClusterConfig", "SlurmConfig", "SlurmJobConfig",
    "SlurmGpuConfig", "TlsFiles", "Section", "default_segment_method", "load_config", "SEGMENT_METHODS",
    "SEGMENT_CLASSES", "MicronucleiConfig", "SpotMicronucleiConfig", "UnetMicronucleiConfig",
    # errors (errors.py, and ConfigError from scip.yamlfile)
    "ConfigError", "format_error", "format_errors", "validate", "suggest",
    # files (files.py, and the YAML reader of scip.yamlfile)
    "read_config_file", "resolve_path", "parse_yaml", "MAX_YAML_NODES",
    # model files (checks.py)
    "check_models",
]
