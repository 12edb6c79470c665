"""HCS plates: an NGFF plate OME-Zarr (written by ome-zarr's writer) read field by field, and its heatmap."""

import json

import numpy as np
import pandas as pd
import pytest
import zarr

from scip.config import load_config
from tests.conftest import make_blobs, require
from scip.io import InputError, detect_format, open_dataset, read_images

WELLS = ["A/1", "A/3", "B/2"]


def write_plate(path, version="0.5", wells=WELLS, fields=("0", "1"), pixel_um=0.5):
    """A 2 x 3 plate with 3 wells of 2 fields, each a 2-channel (DNA, GFP) image of blobs."""
    writer = require("ome_zarr.writer")
    from ome_zarr.format import FormatV04, FormatV05

    fmt = FormatV05() if version == "0.5" else FormatV04()
    root = zarr.open_group(str(path), mode="w", zarr_format=3 if version == "0.5" else 2)
    writer.write_plate_metadata(root, ["A", "B"], ["1", "2", "3"], list(wells), fmt=fmt)
    for i, well in enumerate(wells):
        row, column = well.split("/")
        group = root.require_group(row).require_group(column)
        writer.write_well_metadata(group, list(fields), fmt=fmt)
        for f in fields:
            writer.write_image(make_blobs(seed=10 * i + int(f), n=2 + i), group.require_group(f), axes="cyx",
                               scale_factors=[], fmt=fmt, scale={"c": 1.0, "y": pixel_um, "x": pixel_um},
                               axes_units={"y": "micrometer", "x": "micrometer"},
                               omero={"channels": [{"label": name, "color": "FFFFFF", "window": {"start": 0, "end": 2000, "min": 0, "max": 65535}} for name in ("DNA", "GFP")]})
    return path


@pytest.fixture
def plate(tmp_path):
    return write_plate(tmp_path / "plate.ome.zarr")


def dataset(path, **input_cfg):
    return open_dataset(load_config({"input": {"path": str(path), **input_cfg}}).input)


def test_the_written_plate_is_valid_ngff(plate):
    models = require("ome_zarr_models")
    from ome_zarr_models.v05.hcs import HCS

    assert isinstance(models.open_ome_zarr(zarr.open_group(str(plate), mode="r")), HCS)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_every_field_of_every_well_is_an_image_with_plate_metadata(tmp_path, version):
    plate = write_plate(tmp_path / "p.ome.zarr", version=version)
    assert detect_format(plate) == "plate"
    d = dataset(plate)
    assert d.format == "ome_zarr" and d.channels == ("DNA", "GFP")
    assert [s.image_id for s in d.sources] == ["A1_0", "A1_1", "A3_0", "A3_1", "B2_0", "B2_1"]
    assert dict(d.sources[5].fields) == {"row": "B", "column": "2", "well": "B2", "field": "1"}
    assert {s.pixel_size for s in d.sources} == {0.5}
    records = read_images(d, d.sources[2:3])
    np.testing.assert_array_equal(records[0].pixels, make_blobs(seed=10, n=3))


def test_format_ome_zarr_on_a_plate_root_reads_the_plate_and_exclude_drops_fields(plate):
    d = dataset(plate, format="ome_zarr", exclude=["A/*/1", "B/2/*"], use_channels=["GFP"])
    assert [s.image_id for s in d.sources] == ["A1_0", "A3_0"] and len(d.excluded) == 4
    assert read_images(d, d.sources[:1])[0].pixels.shape == (1, 96, 96)


def test_a_well_missing_from_the_store_is_named(plate):
    meta = json.loads((plate / "zarr.json").read_text())
    meta["attributes"]["ome"]["plate"]["wells"].append({"path": "B/3", "rowIndex": 1, "columnIndex": 2})
    (plate / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"lists well 'B/3', which is not in the store"):
        dataset(plate)


def test_plate_run_has_well_columns_micrometre_features_and_a_heatmap(plate, tmp_path):
    from scip.run import run

    out = tmp_path / "out"
    run({"input": {"path": str(plate)}, "segment": {"method": "otsu", "channel": "DNA"},
         "features": {"families": ["shape", "intensity"]},
         "output": {"path": str(out), "plate_feature": "cell_intensity_mean_GFP", "labels": True},
         "cluster": {"scheduler": "synchronous"}}, progress=False)
    cells = pd.read_parquet(out / "cells")
    assert set(cells["meta_well"]) == {"A1", "A3", "B2"}
    assert {"meta_row", "meta_column", "meta_field"} <= set(cells.columns)
    np.testing.assert_allclose(cells["feat_cell_shape_area_um2"], cells["feat_cell_shape_area"] * 0.25)
    np.testing.assert_allclose(cells["feat_cell_shape_perimeter_um"], cells["feat_cell_shape_perimeter"] * 0.5)
    summary = json.loads((out / "run.json").read_text())
    assert summary["input"]["pixel_size_um"] == {"A1_0": 0.5, "A1_1": 0.5, "A3_0": 0.5, "A3_1": 0.5,
                                                 "B2_0": 0.5, "B2_1": 0.5}
    # The label image of a field overlays it: scaled by the field's pixel size, read below the plate root.
    from scip.io.labels import image_key

    attrs = zarr.open_group(str(out / "labels.zarr" / image_key("B2_1") / "labels" / "cell"), mode="r").attrs
    assert attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"][-2:] == [0.5, 0.5]
    html = (out / "report.html").read_text()
    assert 'id="plate"' in html and "cells per well" in html and "feat_cell_intensity_mean_GFP" in html
    # Cells per well: A1's fields hold 2 blobs each, A3's 3, B2's 4; the heatmap writes each well's count.
    counts = cells.groupby("meta_well").size().to_dict()
    assert counts == {"A1": 4, "A3": 6, "B2": 8}
    for well, n in counts.items():
        assert f'data-well="{well}" data-cells="{n}"' in html
