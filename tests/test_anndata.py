"""cells.h5ad is scanpy-ready: the standard chain runs on every demo output with no massaging (issue 18 item 5)."""

from __future__ import annotations

from pathlib import Path

import anndata
import numpy as np
import pytest

import scip
from conftest import require
from scip.io.tables import position_columns

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture(scope="module")
def example_data(tmp_path_factory):
    from scip.datasets import write_example

    root = tmp_path_factory.mktemp("demo")
    # Enough events that the IFC demo has small cells whose texture is undefined (NaN), as the full demo.
    write_example(root / "data", n_events=120, n_fields=2, n_stacks=1, seed=0)
    return root


@pytest.mark.parametrize("example", ["config.yml", "fields.yml"])
def test_scanpy_chain_runs_on_the_demo_outputs(example_data, example):
    sc = require("scanpy")
    (example_data / example).write_text((EXAMPLES / example).read_text())
    config = scip.load_config(example_data / example, overrides={
        "cluster": {"scheduler": "synchronous"}, "output": {"formats": ["parquet", "anndata"]}})
    result = scip.run(config, progress=False)
    table = result.read()
    adata = anndata.read_h5ad(result.output / "cells.h5ad")
    feats = [c for c in table.columns if c.startswith("feat_")]
    positions = position_columns(feats)
    assert len(adata) == len(table) > 20

    # Positions and boxes are obs, not X; the centroid is obsm["spatial"] as (x, y) = (column, row).
    assert "feat_cell_bbox_centroid_row" in positions and "feat_cell_intensity_max_col_DNA" in positions
    assert not set(positions) & set(adata.var_names)
    assert list(adata.var_names) == [c for c in feats if c not in positions]
    np.testing.assert_array_equal(adata.obsm["spatial"],
                                  table[["feat_cell_bbox_centroid_col", "feat_cell_bbox_centroid_row"]].to_numpy())
    np.testing.assert_array_equal(adata.obs["feat_cell_bbox_min_row"].to_numpy(), table["feat_cell_bbox_min_row"])

    # The NaN policy at work: the measured table has undefined values, X has none, the layer marks them.
    measured = table[list(adata.var_names)].to_numpy()
    undefined = ~np.isfinite(measured)
    if example == "config.yml":
        assert undefined.any(axis=0).sum() > 10  # the IFC run: texture NaN in many columns
    assert np.isfinite(adata.X).all()
    np.testing.assert_array_equal(adata.layers["missing"] > 0, undefined)
    np.testing.assert_array_equal(adata.X[~undefined], measured[~undefined].astype(np.float32))
    assert (adata.var["n_missing"].to_numpy() == undefined.sum(axis=0)).all()

    sc.pp.scale(adata)
    sc.tl.pca(adata, n_comps=10)
    sc.pp.neighbors(adata, n_neighbors=10)
    sc.tl.umap(adata)
    assert adata.obsm["X_umap"].shape == (len(table), 2) and np.isfinite(adata.obsm["X_umap"]).all()
    assert np.isfinite(adata.obsm["X_pca"]).all()
