import inspect

import pytest
import yaml

from scip import cli
from scip.config import SEGMENT_METHODS, ConfigError, load_config
from scip.segment import METHODS


def write(tmp_path, text: str):
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def error_of(tmp_path, text: str) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    return str(e.value)


def test_minimal_config_gets_defaults(tmp_path, blobs_tiff):
    config = load_config(write(tmp_path, f"input: {{path: {blobs_tiff}}}"))
    assert config.segment.method == "watershed"
    assert config.features.families == ["shape", "intensity", "texture", "bbox"]
    assert config.cluster.workers is None


def test_relative_paths_resolve_against_the_config_file(tmp_path, blobs_tiff):
    config = load_config(write(tmp_path, "input: {path: images}\noutput: {path: out}"))
    assert config.input.path == blobs_tiff
    assert config.output.path == tmp_path / "out"


def test_unknown_top_level_key_names_it_and_suggests(tmp_path, blobs_tiff):
    msg = error_of(tmp_path, f"input: {{path: {blobs_tiff}}}\nsegmnt: {{method: otsu}}")
    assert "unknown key 'segmnt'" in msg
    assert "did you mean 'segment'" in msg
    assert "allowed keys:" in msg and "features" in msg


def test_unknown_nested_key_in_method_section(tmp_path, blobs_tiff):
    msg = error_of(tmp_path, f"input: {{path: {blobs_tiff}}}\nsegment: {{method: watershed, min_distanse: 3}}")
    assert "segment.min_distanse" in msg
    assert "did you mean 'min_distance'" in msg


def test_wrong_type_names_key_and_value(tmp_path, blobs_tiff):
    msg = error_of(tmp_path, f"input: {{path: {blobs_tiff}, images_per_partition: many}}")
    assert "input.images_per_partition" in msg
    assert "'many'" in msg


def test_missing_path_is_named(tmp_path):
    msg = error_of(tmp_path, "input: {path: /no/such/folder}")
    assert "input.path" in msg and "/no/such/folder" in msg and "does not exist" in msg


def test_unknown_method_lists_allowed_values(tmp_path, blobs_tiff):
    msg = error_of(tmp_path, f"input: {{path: {blobs_tiff}}}\nsegment: {{method: watershd}}")
    assert "segment.method" in msg and "watershd" in msg
    for method in SEGMENT_METHODS:
        assert method in msg
    assert "did you mean 'watershed'" in msg


def test_unknown_feature_family(tmp_path, blobs_tiff):
    msg = error_of(tmp_path, f"input: {{path: {blobs_tiff}}}\nfeatures: {{families: [shape, intensty]}}")
    assert "features.families.1" in msg and "intensty" in msg and "did you mean 'intensity'" in msg


def test_missing_required_section(tmp_path):
    assert "input: required key is missing" in error_of(tmp_path, "segment: {method: otsu}")


def test_invalid_yaml_and_regex(tmp_path, blobs_tiff):
    assert "not valid YAML" in error_of(tmp_path, "input: [unclosed")
    assert "input.pattern" in error_of(tmp_path, f"input: {{path: {blobs_tiff}, pattern: '(?P<id>'}}")


def test_all_errors_reported_together(tmp_path):
    msg = error_of(tmp_path, "input: {path: /nope, colour: red}\ncells: {padding: -1}")
    assert "input.path" in msg and "input.colour" in msg and "cells.padding" in msg


# cellpose's config cannot load without a model file: tests/test_cellpose.py checks its defaults.
@pytest.mark.parametrize("method", [m for m in SEGMENT_METHODS if m != "cellpose"])
def test_config_defaults_match_function_defaults(method, tmp_path, blobs_tiff):
    """The documented config defaults are the segmentation functions' own."""
    config = load_config({"input": {"path": str(blobs_tiff)}, "segment": {"method": method}})
    signature = inspect.signature(METHODS[method])
    for key, value in config.segment.method_params().items():
        assert signature.parameters[key].default == value, key


@pytest.mark.parametrize(
    "text",
    [
        "input: {path: /no/such}",
        "input: {path: IMAGES, bogus: 1}",
        "input: {path: IMAGES}\nsegment: {method: magic}",
        "input: {path: IMAGES}\ncluster: {workers: two}",
    ],
)
def test_cli_exits_2_with_one_message(text, tmp_path, blobs_tiff, capsys):
    path = write(tmp_path, text.replace("IMAGES", str(blobs_tiff)))
    assert cli.main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("scip: error: invalid configuration")
    assert "Traceback" not in err


def test_cli_missing_config_file(tmp_path, capsys):
    assert cli.main(["check", str(tmp_path / "absent.yml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_unknown_segment_channel_is_a_config_error(tmp_path, blobs_tiff, capsys):
    path = write(tmp_path, yaml.safe_dump({"input": {"path": str(blobs_tiff), "channels": ["DNA", "GFP"]},
                                           "segment": {"method": "otsu", "channel": "DAN"}}))
    assert cli.main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "segment.channel" in err and "'DAN'" in err and "did you mean 'DNA'" in err


def test_repeated_family_and_clashing_channel_names(tmp_path, blobs_tiff):
    assert "features.families: lists shape more than once" in error_of(
        tmp_path, f"input: {{path: {blobs_tiff}}}\nfeatures: {{families: [shape, bbox, shape]}}")
    import scip

    with pytest.raises(ConfigError, match="input.channels"):
        scip.prepare({"input": {"path": str(blobs_tiff), "channels": ["GFP 488", "GFP-488"]}})


def test_numeric_channel_names_and_ambiguous_channel_position(tmp_path, data_dir):
    tiffs = data_dir / "scip-ifc" / "tiffs"
    pattern = r"test(?P<id>\d+)_(?P<channel>\d+)\.tiff"
    config = load_config(write(tmp_path, f"input: {{path: {tiffs}, pattern: '{pattern}', channels: [1, 2]}}\n"
                                         "segment: {method: otsu, channel: 2}"))
    assert config.input.channels == ["1", "2"] and config.segment.channel == 2
    import scip

    with pytest.raises(ConfigError, match="segment.channel: 2 is ambiguous"):
        scip.prepare(config)
    quoted = load_config(write(tmp_path, f"input: {{path: {tiffs}, pattern: '{pattern}'}}\n"
                                         "segment: {method: otsu, channel: '2'}"))
    assert scip.prepare(quoted).dataset.channels == ("1", "2")


def test_memory_limit_is_checked(tmp_path, blobs_tiff):
    assert "cluster.memory_limit" in error_of(tmp_path, f"input: {{path: {blobs_tiff}}}\ncluster: {{memory_limit: lots}}")
    ok = load_config(write(tmp_path, f"input: {{path: {blobs_tiff}}}\ncluster: {{memory_limit: 4GiB}}"))
    assert ok.cluster.memory_limit == "4GiB"


def test_default_workers_is_never_zero(monkeypatch):
    import psutil

    from scip.engine import cluster

    class Tiny:
        total = 512 * 2**20

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Tiny())
    assert cluster.default_workers() == 1


def test_segment_section_without_method_uses_the_default(tmp_path, blobs_tiff):
    config = load_config(write(tmp_path, f"input: {{path: {blobs_tiff}}}\nsegment: {{channel: 1, min_distance: 3}}"))
    assert config.segment.method == "watershed" and config.segment.min_distance == 3


def test_features_section_gives_params(tmp_path):
    config = load_config({"input": {"path": str(tmp_path)},
                          "features": {"distances": [1, 2], "gray_levels": 16, "edge_width": 2}})
    params = config.features.params()
    assert params.distances == (1, 2) and params.gray_levels == 16 and params.edge_width == 2
    assert config.features.families == ["shape", "intensity", "texture", "bbox"]


def test_features_section_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"features\.gray_levels"):
        load_config({"input": {"path": str(tmp_path)}, "features": {"gray_levels": 1}})
    with pytest.raises(ConfigError, match=r"features\.distances.*more than once"):
        load_config({"input": {"path": str(tmp_path)}, "features": {"distances": [3, 3]}})
    with pytest.raises(ConfigError, match=r"background_width \(8\) is larger than cells.padding \(5\)"):
        load_config({"input": {"path": str(tmp_path)}, "features": {"background_width": 8}})


def test_every_config_key_is_documented():
    """docs/config.md names every key of every section (as `key` in a table, or {key: ...})."""
    import inspect
    from pathlib import Path

    from pydantic import BaseModel

    import scip.config as config_module

    doc = (Path(__file__).parents[1] / "docs" / "config.md").read_text()
    missing = [f"{name}.{field}" for name, cls in vars(config_module).items()
               if inspect.isclass(cls) and issubclass(cls, BaseModel) and cls.__module__ == "scip.config"
               for field in cls.model_fields if f"`{field}`" not in doc and f"{{{field}:" not in doc]
    assert not missing
