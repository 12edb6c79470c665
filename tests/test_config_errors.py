"""One config package, one error formatter: run, slide and training configs word their errors alike.

Also: loading a config imports no torch (model files are read by
``scip.config.check_models``, from ``prepare``), and a value that fits no
member of a union is one line, not one per member.
"""

import subprocess
import sys

import pytest
import yaml

import scip
from scip import cli
from scip.config import ConfigError, check_models, format_errors, load_config
from scip.segment.superpixel_gnn.trainconfig import load_gnn_train_config
from scip.segment.unet.trainconfig import load_train_config
from scip.slide import load_slide_config


def lines_of(loader, raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        loader(raw)
    head, *lines = str(info.value).splitlines()
    assert head.startswith("invalid ") and " in " in head
    assert all(line.startswith("  - ") for line in lines)
    return [line[4:] for line in lines]


def loaders(folder):
    """(loader, a valid mapping) of each kind of config."""
    return {
        "run": (load_config, {"input": {"path": str(folder)}}),
        "slide": (load_slide_config, {"input": {"path": str(folder)}}),
        "unet training": (load_train_config, {"data": [{"path": str(folder)}]}),
        "gnn training": (load_gnn_train_config, {"kind": "superpixel_gnn", "data": [{"path": str(folder)}]}),
    }


@pytest.mark.parametrize("kind", ["run", "slide", "unet training", "gnn training"])
def test_a_bad_key_reads_the_same_in_every_kind_of_config(kind, tmp_path):
    loader, raw = loaders(tmp_path)[kind]
    section = "input" if "input" in raw else "data"
    bad = {**raw, section: raw[section] | {"pathh": 1} if section == "input" else [{**raw["data"][0], "imagse": 1}]}
    [line] = lines_of(loader, bad)
    key = "input.pathh" if section == "input" else "data.0.imagse"
    assert line.startswith(f"{key}: unknown key '{key.rsplit('.', 1)[1]}'; allowed keys: ")
    assert line.endswith("did you mean 'path'?" if section == "input" else "did you mean 'images'?")
    # The allowed keys are those of the section the key is in, not of the top level.
    assert ("array" in line) if section == "input" else ("label_path" in line)


@pytest.mark.parametrize("kind, bad, expected", [
    ("run", {"input": {"format": "tif"}}, "input.format: 'tif' is not allowed; allowed values: auto, tiff, ifc_zarr, "
                                          "zarr, ome_zarr, plate, bioio; did you mean 'tiff'?"),
    ("slide", {"tiles": {"statistics": "imag"}}, "tiles.statistics: 'imag' is not allowed; allowed values: image, "
                                                 "tile; did you mean 'image'?"),
    ("unet training", {"monitor": "f11"},
     "monitor: 'f11' is not allowed; allowed values: loss, f1; did you mean 'f1'?"),
    ("gnn training", {"augment": "maybe"}, "augment: Input should be a valid boolean, unable to interpret input "
                                           "(got 'maybe')"),
])
def test_a_bad_value_reads_the_same_in_every_kind_of_config(kind, bad, expected, tmp_path):
    loader, raw = loaders(tmp_path)[kind]
    merged = {**raw, **{k: ({**raw[k], **v} if isinstance(v, dict) and k in raw else v) for k, v in bad.items()}}
    assert lines_of(loader, merged) == [expected]


def test_an_unknown_segment_key_in_a_slide_config_lists_that_methods_keys(tmp_path):
    [line] = lines_of(load_slide_config, {"input": {"path": str(tmp_path)},
                                          "segment": {"method": "otsu", "fill_hole": True}})
    assert line.startswith("segment.fill_hole: unknown key 'fill_hole'; allowed keys: channel, fill_holes, method, ")
    assert "min_distance" not in line and line.endswith("did you mean 'fill_holes'?")


def test_a_value_fitting_no_member_of_a_union_is_one_line(tmp_path):
    assert lines_of(load_config, {"input": {"path": str(tmp_path), "z": "maxx"}}) == [
        "input.z: 'maxx' is not allowed; allowed values: max, mean, median, stitch, or a plane number "
        "(0 is the first); did you mean 'max'?"]
    assert lines_of(load_config, {"input": {"path": str(tmp_path), "z": -2}}) == [
        "input.z: -2 is not allowed; allowed values: max, mean, median, stitch, or a plane number (0 is the first)"]
    # No member's tag (literal[...], constrained-int, QuantileRule) leaks into a key path.
    [line] = lines_of(load_config, {"input": {"path": str(tmp_path)},
                                    "filters": [{"measure": "area", "min": "otsuu"}]})
    assert line == ("filters.0.min: 'otsuu' is not allowed; allowed values: otsu, a number, {quantile: ...}, "
                    "or {mad: ...}; did you mean 'otsu'?")
    # A mapping one member takes apart: that member's problems, under the user's key path.
    assert lines_of(load_config, {"input": {"path": str(tmp_path)},
                                  "filters": [{"measure": "area", "min": {"quantile": 2}}]}) == [
        "filters.0.min.quantile: Input should be less than 1 (got 2)"]
    lines = lines_of(load_config, {"input": {"path": str(tmp_path)},
                                   "cluster": {"security": {"ca_file": "ca.pem", "bogus": 1}}})
    assert lines[0].startswith("cluster.security.ca_file: file does not exist: ")
    assert lines[1:] == ["cluster.security.cert: required key is missing",
                         "cluster.security.bogus: unknown key 'bogus'; allowed keys: ca_file, cert, key"]
    # A union inside a member of a union: the list member is taken apart, its item is one line.
    assert lines_of(load_config, {"input": {"path": str(tmp_path)},
                                  "segment": {"method": "unet", "channel": [0, {}]}}) == [
        "segment.channel.1: {} is not allowed; allowed values: a text, or an integer"]
    # A union in a training config too.
    assert lines_of(load_train_config, {"data": [{"path": str(tmp_path)}], "validation": 2}) == [
        "validation: 2 is not allowed; allowed values: a number > 0 and < 1, or a list"]


def test_format_errors_works_for_any_root_model():
    from pydantic import BaseModel, ConfigDict, ValidationError

    class Inner(BaseModel):
        model_config = ConfigDict(extra="forbid")
        colour: str = "red"

    class Root(BaseModel):
        model_config = ConfigDict(extra="forbid")
        inner: list[Inner] = []

    with pytest.raises(ValidationError) as info:
        Root.model_validate({"inner": [{}, {"color": "blue"}]})
    assert format_errors(info.value.errors(), Root) == [
        "inner.1.color: unknown key 'color'; allowed keys: colour; did you mean 'colour'?"]


def test_import_and_load_of_a_unet_config_import_no_torch(tmp_path, blobs_tiff):
    code = ("import sys, scip.config\n"
            "print('torch' in sys.modules)\n"
            "print(sorted({'numba', 'pandas', 'dask', 'distributed', 'scip.features'} & set(sys.modules)))\n"
            f"raw = {{'input': {{'path': {str(blobs_tiff)!r}}}, 'segment': {{'method': 'unet'}}}}\n"
            "c = scip.config.load_config(raw)\n"
            "print(c.segment.model, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "[]", "nuclei", "False"]


def test_the_cheap_family_names_are_the_registered_families():
    from scip import _featureparams
    import importlib

    from scip.features import DEFAULT_FAMILIES, FAMILIES, FeatureParams

    assert FAMILIES == _featureparams.FAMILIES
    # Each family name is the module that measures it (imported on first use).
    assert [importlib.import_module(f"scip.features.{f}").NAME for f in FAMILIES] == list(FAMILIES)
    assert set(DEFAULT_FAMILIES) <= set(FAMILIES)
    assert FeatureParams is _featureparams.FeatureParams
    assert FeatureParams(distances=4).distances == (4,)
    assert load_config({"input": {"path": "."}}).features.params() == FeatureParams()


def test_model_files_are_read_in_prepare_and_scip_check(tmp_path, blobs_tiff, capsys):
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump({"input": {"path": str(blobs_tiff)},
                                      "segment": {"method": "unet", "model": "models/missing.pt"}}))
    # A missing file is found while loading (no torch needed), so by prepare and scip check too, with one message.
    with pytest.raises(ConfigError) as loaded:
        load_config(config)
    with pytest.raises(ConfigError) as prepared:
        scip.prepare(config)
    assert str(loaded.value) == str(prepared.value)
    assert f"  - segment.model: model file not found: {tmp_path / 'models' / 'missing.pt'}; " in str(loaded.value)
    assert cli.main(["check", str(config)]) == 2
    assert f"scip: error: {loaded.value}" in capsys.readouterr().err
    # A corrupt file loads (no torch needed) and fails in prepare / scip check, naming key and file.
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 not weights")
    config.write_text(yaml.safe_dump({"input": {"path": str(blobs_tiff)},
                                      "segment": {"method": "unet", "model": "corrupt.pt"}}))
    assert load_config(config).segment.model == str(tmp_path / "corrupt.pt")
    with pytest.raises(ConfigError) as info:
        scip.prepare(config)
    assert str(info.value).startswith(f"segment.model: {tmp_path / 'corrupt.pt'}: not a readable scip model file")
    assert cli.main(["check", str(config)]) == 2
    assert f"scip: error: {info.value}" in capsys.readouterr().err
    # Channels the model does not take: segment.channel, naming the model file.
    with pytest.raises(ConfigError, match=r"^segment\.channel: \[0, 1\] gives 2 channel\(s\) but the model file "
                                          r".*nuclei\.pt takes 1 \(nuclei\); name one channel"):
        check_models(load_config({"input": {"path": str(blobs_tiff)},
                                  "segment": {"method": "unet", "channel": [0, 1]}}))
    # A method without a model file needs no check at all.
    check_models(load_config({"input": {"path": str(blobs_tiff)}}))


def test_a_slide_run_reads_its_model_file_before_anything_runs(tmp_path):
    from scip.slide import segment_slide

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 not weights")
    config = {"input": {"path": str(tmp_path)}, "segment": {"method": "unet", "model": str(corrupt)},
              "output": {"path": str(tmp_path / "out")}, "cluster": {"scheduler": "synchronous"}}
    assert load_slide_config(config).segment.model == str(corrupt)
    with pytest.raises(ConfigError, match=rf"^segment\.model: {corrupt}: not a readable scip model file"):
        segment_slide(config, progress=False)
    assert not (tmp_path / "out").exists()
