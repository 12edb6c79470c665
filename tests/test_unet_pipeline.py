"""The U-Net in the pipeline and on the command line: configs, bad inputs, runs, lazy torch."""

import dataclasses
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch

import scip
from scip import cli
from scip.config import ConfigError, load_config
from scip.segment import METHODS, segment
from scip.segment.unet import modelfile

from conftest import assert_held_out

#: Cut from an image the shipped model never saw (tests/data/sources.csv).
CROP = "mnfinder/rpe1_2198_crop.tif"


@pytest.fixture
def nuclei_folder(tmp_path, data_dir):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(data_dir / CROP, folder / "rpe1.tif")
    return folder


@pytest.fixture
def three_channels(tmp_path, data_dir):
    folder = tmp_path / "rgb"
    folder.mkdir()
    image = tifffile.imread(data_dir / CROP)
    tifffile.imwrite(folder / "a.tif", np.stack([image, image // 2, image // 3]), photometric="minisblack")
    return folder


def test_unet_is_a_segmentation_method(data_dir):
    assert "unet" in METHODS
    image = tifffile.imread(data_dir / CROP)
    labels = segment(image, "unet")
    assert labels.dtype == np.int32 and labels.max() > 10
    assert not segment(np.full((40, 40), 3.0), "unet").any()  # a constant image has no objects


def test_pipeline_run_with_unet_produces_a_table(nuclei_folder, tmp_path, data_dir):
    assert_held_out(CROP, modelfile.load("nuclei").meta["training"])
    truth = tmp_path / "truth"
    truth.mkdir()
    shutil.copy(data_dir / CROP.replace(".tif", "_nuclei.tif"), truth / "rpe1.tif")
    config = {"input": {"path": str(nuclei_folder), "channels": ["DNA"]},
              "segment": {"method": "unet", "channel": "DNA", "device": "cpu"},
              "evaluate": {"labels": str(truth / "{image_id}.tif")},
              "output": {"path": str(tmp_path / "out")}, "cluster": {"scheduler": "synchronous"}}
    result = scip.run(config, progress=False)
    table = pd.read_parquet(result.table)
    summary = result.summary
    assert summary["config"]["segment"]["method"] == "unet"
    assert len(table) == summary["counts"]["cells"]["exported"] > 10
    assert "feat_cell_intensity_mean_DNA" in table
    # Measured with the December 2026 model: recall 0.885, precision 0.92 (25 nuclei found, 26 true); the November
    # model found more fragments (31 found: recall 0.962, precision 0.806).
    assert summary["evaluation"]["recall"] >= 0.85 and summary["evaluation"]["precision"] >= 0.85


def test_multi_channel_config_for_a_one_channel_model_is_a_config_error(three_channels):
    with pytest.raises(ConfigError) as info:
        scip.prepare({"input": {"path": str(three_channels)}, "segment": {"method": "unet", "channel": [0, 1, 2]}})
    msg = str(info.value)
    assert "gives 3 channel(s)" in msg and str(modelfile.resolve("nuclei")) in msg and "takes 1 (nuclei)" in msg
    # One channel of the three is what the model takes.
    config = load_config({"input": {"path": str(three_channels)}, "segment": {"method": "unet", "channel": 1}})
    assert config.segment.model == "nuclei"


def two_channel_nuclei_model(path) -> modelfile.ModelFile:
    """The shipped weights spread evenly over two input channels.

    Fed two copies of one image, the network computes what the one-channel model computes on that image, so a
    two-channel run has a known answer. The input enters twice: the stem and the last decoder block's skip.
    """
    mf = modelfile.load("nuclei")
    state = dict(mf.state_dict)
    state["stem.0.weight"] = torch.cat([state["stem.0.weight"] / 2] * 2, dim=1)
    skip = f"decoder.{len(mf.arch.decoder) - 1}.reduce.0.weight"  # the image is the last of its inputs
    state[skip] = torch.cat([state[skip][:, :-1]] + [state[skip][:, -1:] / 2] * 2, dim=1)
    arch = dataclasses.replace(mf.arch, in_channels=2)
    return modelfile.save(modelfile.ModelFile(arch, state, {**mf.meta, "channels": ["DNA", "DNA"]}), path)


def test_listed_segmentation_channels_are_checked_at_prepare(three_channels, tmp_path, data_dir):
    two = two_channel_nuclei_model(tmp_path / "two.pt")
    truth = tmp_path / "truth"
    truth.mkdir()
    shutil.copy(data_dir / CROP.replace(".tif", "_nuclei.tif"), truth / "a.tif")
    base = {"input": {"path": str(three_channels)}, "output": {"path": str(tmp_path / "out")},
            "cluster": {"scheduler": "synchronous"}, "evaluate": {"labels": str(truth / "{image_id}.tif")}}
    with pytest.raises(ConfigError, match=r"segment\.channel\.1: 'GFP' is not a loaded channel"):
        scip.prepare({**base, "segment": {"method": "unet", "model": str(two), "channel": [0, "GFP"]}})
    plan = scip.prepare({**base, "segment": {"method": "unet", "model": str(two), "channel": [0, 2]}})
    assert plan.config.segment.channel == [0, 2]
    # Channels 0 and 2 (the image and a third of it) reach the model as one (2, H, W) image: the one-channel
    # model's result on this crop (December 2026 model: 25 nuclei found, 17 exported away from the border, F1 0.902).
    result = scip.run({**base, "segment": {"method": "unet", "model": str(two), "channel": [0, 2]}}, progress=False)
    images, cells = result.summary["counts"]["images"], result.summary["counts"]["cells"]
    assert images["total"] == images["with_cells"] == 1 and images["skipped"] == 0
    assert len(pd.read_parquet(result.table)) == cells["exported"] >= 15
    assert result.summary["evaluation"]["f1"] >= 0.86


def test_missing_and_corrupt_model_files_are_config_errors(nuclei_folder, tmp_path):
    base = {"input": {"path": str(nuclei_folder)}}
    with pytest.raises(ConfigError) as info:
        load_config({**base, "segment": {"method": "unet", "model": "models/missing.pt"}}, base_dir=tmp_path)
    msg = str(info.value)
    assert "segment.model" in msg and str(tmp_path / "models" / "missing.pt") in msg and "not found" in msg
    bad = tmp_path / "corrupt.pt"
    bad.write_bytes(b"PK\x03\x04 definitely not weights")
    with pytest.raises(ConfigError) as info:
        scip.prepare(load_config({**base, "segment": {"method": "unet", "model": "corrupt.pt"}}, base_dir=tmp_path))
    msg = str(info.value)
    assert "segment.model" in msg and str(bad) in msg and "not a readable scip model file" in msg
    with pytest.raises(ConfigError, match="did you mean 'nuclei'"):
        load_config({**base, "segment": {"method": "unet", "model": "nucleus"}}, base_dir=tmp_path)


def test_inconsistent_inference_options_are_config_errors(nuclei_folder):
    base = {"input": {"path": str(nuclei_folder)}}
    with pytest.raises(ConfigError, match="fp16' needs CUDA"):
        load_config({**base, "segment": {"method": "unet", "device": "cpu", "precision": "fp16"}})
    with pytest.raises(ConfigError, match="runs on the CPU"):
        load_config({**base, "segment": {"method": "unet", "device": "cuda", "quantize": "static"}})
    with pytest.raises(ConfigError, match="segment.quantize: 'int4' is not allowed"):
        load_config({**base, "segment": {"method": "unet", "quantize": "int4"}})


def test_scip_export_model_cli(tmp_path, capsys):
    out = tmp_path / "nuclei.onnx"
    assert cli.main(["export-model", "nuclei", "--onnx", str(out)]) == 0
    assert out.is_file() and "largest difference" in capsys.readouterr().out
    assert cli.main(["export-model", str(tmp_path / "none.pt"), "--onnx", str(out)]) == 2
    assert "model file not found" in capsys.readouterr().err


def test_scip_train_cli_errors_exit_2(tmp_path, capsys):
    config = tmp_path / "train.yml"
    config.write_text("data: [{path: nowhere}]\nepochs: 1\n")
    assert cli.main(["train", str(config)]) == 2
    assert "data.0.path" in capsys.readouterr().err
    config.write_text(f"data: [{{path: {tmp_path}}}]\nepochs: 1\nfreeze: middle\n")
    assert cli.main(["train", str(config)]) == 2
    assert "freeze" in capsys.readouterr().err
    config.write_text(f"data: [{{path: {tmp_path}}}]\nepochs: 1\n")
    assert cli.main(["train", str(config)]) == 2
    assert "no image/label pairs" in capsys.readouterr().err


def test_import_scip_does_not_import_torch_and_missing_torch_is_explained(nuclei_folder):
    code = ("import sys; import scip; assert 'torch' not in sys.modules\n"
            "sys.modules['torch'] = None\n"
            "from scip.segment import segment\n"
            "import numpy as np\n"
            "try:\n    segment(np.zeros((8, 8)), 'unet')\nexcept ImportError as e:\n    print('E1', e)\n"
            "try:\n"
            f"    scip.prepare({{'input': {{'path': {str(nuclei_folder)!r}}}, 'segment': {{'method': 'unet'}}}})\n"
            "except scip.ConfigError as e:\n    print('E2', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "E1 the unet method needs PyTorch: install torch (pip install 'scip[unet]')" in out
    # Loading the config needs no torch; prepare (scip check) reads the model file and names the key.
    assert "E2 segment.model: " in out and "pip install 'scip[unet]'" in out
