"""CellProfiler names for the features that share CellProfiler's definitions, and pycytominer on a scip table."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from skimage.segmentation import expand_labels, relabel_sequential

import scip
from conftest import require
from scip.features import extract
from scip.features.cellprofiler import cellprofiler_name, mapping, mapping_markdown, to_cellprofiler


def test_names_follow_cellprofilers_scheme():
    assert cellprofiler_name("feat_cell_shape_area") == "AreaShape_Area"
    assert cellprofiler_name("feat_cell_shape_moments_central_21") == "AreaShape_CentralMoment_2_1"
    assert cellprofiler_name("feat_cell_bbox_centroid_col") == "AreaShape_Center_X"
    assert cellprofiler_name("feat_cell_intensity_sum_GFP_488") == "Intensity_IntegratedIntensity_GFP_488"
    assert cellprofiler_name("feat_my_mask_intensity_max_row_DNA") == "Location_MaxIntensity_Y_DNA"
    assert cellprofiler_name("feat_cell_intensity_edge_mean_DNA") == "Intensity_MeanIntensityEdge_DNA"
    # Not CellProfiler's definition: other units, other quantization, another edge, scip's own.
    for column in ["feat_cell_shape_orientation", "feat_cell_shape_feret_diameter_max",
                   "feat_cell_shape_moments_30", "feat_cell_shape_moments_central_30",
                   "feat_cell_texture_contrast_3_0_DNA", "feat_cell_intensity_background_DNA",
                   "feat_cell_bbox_height", "meta_image_id"]:
        assert cellprofiler_name(column) is None, column
    assert cellprofiler_name("feat_cell_intensity_edge_mean_DNA", edge_width=2) is None

    table = pd.DataFrame(columns=["meta_image_id", "meta_label", "feat_cell_shape_area",
                                  "feat_nucleus_texture_contrast_3_0_DNA", "feat_cyto_intensity_mean_DNA", "geometry"])
    renamed = to_cellprofiler(table)
    assert list(renamed.columns) == ["Metadata_image_id", "Metadata_label", "Cells_AreaShape_Area",
                                     "Nuclei_SCIP_texture_contrast_3_0_DNA", "Cyto_Intensity_MeanIntensity_DNA",
                                     "geometry"]
    assert list(to_cellprofiler(table, objects={"cyto": "Cytoplasm"}).columns)[4] == "Cytoplasm_Intensity_MeanIntensity_DNA"
    with pytest.raises(ValueError, match="'feat_cell_shape_area' and 'feat_cells_shape_area'.*'Cells_AreaShape_Area'"):
        to_cellprofiler(pd.DataFrame(columns=["feat_cell_shape_area", "feat_cells_shape_area"]))


def test_shared_names_hold_cellprofilers_values():
    """Every column named as a CellProfiler measurement equals cp-measure's measurement of that name."""
    shape_module = require("cp_measure.core.measureobjectsizeshape")
    intensity_module = require("cp_measure.core.measureobjectintensity")
    rng = np.random.default_rng(4)
    seeds = np.zeros((70, 80), np.int64)
    seeds[rng.integers(3, 67, 18), rng.integers(3, 77, 18)] = np.arange(1, 19)
    labels = relabel_sequential(expand_labels(seeds, 6))[0]  # cp-measure wants labels 1..N
    pixels = rng.gamma(2.0, 50.0, (1, *labels.shape))
    table = extract(pixels, labels, channel_names=["DNA"], families=["shape", "intensity", "bbox"])
    cp = {}
    for values in (shape_module.get_sizeshape(labels, None), shape_module.get_zernike(labels, None, 9),
                   shape_module.get_feret(labels, None)):
        cp.update({f"AreaShape_{k}": v for k, v in values.items()})
    cp.update({f"{k}_DNA": v for k, v in intensity_module.get_intensity(labels, pixels[0]).items()})
    names = mapping(list(table.columns))
    shared = names[names["shared"]]
    assert len(shared) == 95  # 78 AreaShape (bbox included) + 17 Intensity/Location per channel
    renamed = to_cellprofiler(table)
    for name in shared["cellprofiler"]:
        measurement = name.removeprefix("Cells_")
        assert measurement in cp, measurement
        np.testing.assert_allclose(renamed[name].to_numpy(), cp[measurement], rtol=1e-8, atol=1e-10, err_msg=name)
    # The unshared ones really differ (degrees against radians), so keeping them apart matters.
    assert not np.allclose(table["feat_cell_shape_orientation"], cp["AreaShape_Orientation"])


def test_features_command_prints_the_mapping():
    out = subprocess.run([sys.executable, "-m", "scip", "features", "--list", "--naming", "cellprofiler",
                          "--channels", "DNA", "--mask", "cell,nucleus"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    rows = [line.split("\t") for line in out]
    assert ["feat_nucleus_intensity_sum_DNA", "Nuclei_Intensity_IntegratedIntensity_DNA", "shared"] in rows
    assert ["feat_cell_texture_contrast_3_0_DNA", "Cells_SCIP_texture_contrast_3_0_DNA", "scip"] in rows
    assert sum(r[2] == "shared" for r in rows) == 2 * 95


def test_features_doc_lists_the_shared_names():
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "docs" / "features.md").read_text()
    table = doc.split("<!-- cellprofiler table: start -->\n")[1].split("<!-- cellprofiler table: end -->")[0]
    assert table == mapping_markdown(), "regenerate with `scip features --list --naming cellprofiler --markdown`"


def test_pycytominer_normalizes_and_selects_a_scip_table(tmp_path):
    pycytominer = require("pycytominer")
    from scip.datasets import write_example

    paths = write_example(tmp_path / "data", n_events=2, n_fields=2, n_stacks=1, seed=2)
    result = scip.run({
        "input": {"path": str(paths["fields"]), "pattern": r"field(?P<well>\d+)_(?P<channel>[A-Za-z]+)\.tiff",
                  "channels": ["DNA", "cyto", "marker"]},
        "segment": {"method": "watershed", "channel": "cyto"},
        "masks": [{"name": "nucleus", "channel": "DNA"}],
        "output": {"path": str(tmp_path / "out")},
        "cluster": {"scheduler": "synchronous"},
    }, progress=False)
    profiles = to_cellprofiler(result.read())
    assert "Metadata_well" in profiles and "Nuclei_AreaShape_Area" in profiles and len(profiles) > 20

    normalized = pycytominer.normalize(profiles, features="infer", meta_features="infer", samples="all",
                                       method="standardize")
    features = [c for c in profiles.columns if c.startswith(("Cells_", "Nuclei_"))]
    assert list(normalized.columns) == [c for c in profiles.columns if c.startswith("Metadata_")] + features
    area = normalized["Cells_AreaShape_Area"].to_numpy(dtype=float)
    assert abs(area.mean()) < 1e-9 and area.std() == pytest.approx(1.0, rel=1e-9)

    selected = pycytominer.feature_select(normalized, features="infer",
                                          operation=["variance_threshold", "correlation_threshold",
                                                     "drop_na_columns"])
    kept = [c for c in selected.columns if c.startswith(("Cells_", "Nuclei_"))]
    assert 0 < len(kept) < len(features)
    assert [c for c in selected.columns if c.startswith("Metadata_")] == ["Metadata_image_id", "Metadata_index",
                                                                            "Metadata_path", "Metadata_label",
                                                                            "Metadata_well"]
    # The area and the zeroth spatial moment are the same number: the correlation filter keeps one.
    pair = {"Cells_AreaShape_Area", "Cells_AreaShape_SpatialMoment_0_0"}
    assert pair <= set(features) and len(pair & set(kept)) <= 1
