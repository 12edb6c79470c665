"""Cell filters: per-cell measures, dataset-wide thresholds, and the map that drops cells."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from scip.config import FilterConfig, MadRule, QuantileRule
from scip.records import CellRecord, Source
from scip.reduce.filters import apply_filters, decide, measure_cell, rule_text, thresholds


def _cell(pixels: np.ndarray, mask: np.ndarray, others: np.ndarray | None = None) -> CellRecord:
    return CellRecord(source=Source(image_id="a", index=0, paths=("a.tif",), fields={}, locator=None),
                      channels=("DNA", "cyto"), label=1, bbox=(0, 0, 1, 1), origin=(0, 0),
                      pixels=pixels, masks={"cell": mask}, others=others)


def test_decide_rules_equal_numpy():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.lognormal(6, 0.3, 400), rng.lognormal(4, 0.3, 100), [np.nan]])
    finite = values[~np.isnan(values)]
    assert decide(values, 250.0, "signal") == 250.0
    assert decide(values, QuantileRule(quantile=0.1), "signal") == np.quantile(finite, 0.1)
    assert decide(values, "otsu", "signal") == pytest.approx(np.exp(threshold_otsu(np.log(finite))), rel=1e-12)
    logs = np.log(finite)
    med = np.median(logs)
    expected = np.exp(med - 3 * 1.4826 * np.median(np.abs(logs - med)))
    assert decide(values, MadRule(mad=3), "signal") == pytest.approx(expected, rel=1e-12)
    # area works on the raw scale
    assert decide(finite, "otsu", "area") == pytest.approx(threshold_otsu(finite), rel=1e-12)
    assert math.isnan(decide(np.array([np.nan]), "otsu", "signal"))
    assert math.isnan(decide(np.empty(0), QuantileRule(quantile=0.5), "area"))


def test_otsu_separates_two_populations():
    rng = np.random.default_rng(1)
    live = rng.uniform(300, 900, 500)
    dim = rng.uniform(30, 180, 100)
    t = decide(np.concatenate([live, dim, [-5.0]]), "otsu", "signal")  # a negative signal sits lowest
    assert (live > t).all() and (dim < t).mean() >= 0.95


def test_measures_equal_direct_computation():
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 200, (2, 20, 20)).astype(np.uint8)
    pixels[1, 5:9, 5:9] = 255
    mask = np.zeros((20, 20), bool)
    mask[4:14, 4:14] = True
    others = np.zeros((20, 20), bool)
    others[16:, 16:] = True
    filters = [FilterConfig(measure="area", min=1), FilterConfig(measure="signal", channel="cyto", min="otsu"),
               FilterConfig(measure="focus", channel="DNA", min=MadRule(mad=3)),
               FilterConfig(measure="saturation", channel="cyto", max=0.1)]
    cell = measure_cell(_cell(pixels, mask, others), filters, "cell")
    cyto = pixels[1]
    assert cell.measures["area"] == 100
    assert cell.measures["signal(cyto)"] == pytest.approx(cyto[mask].mean() - np.median(cyto[~mask & ~others]))
    assert cell.measures["focus(DNA)"] == pytest.approx(ndi.laplace(pixels[0].astype(float))[mask].var())
    assert cell.measures["saturation(cyto)"] == 16 / 100
    # float pixels have no natural saturation level unless one is given
    floats = measure_cell(_cell(pixels.astype(np.float32), mask), filters[3:], "cell")
    assert floats.measures["saturation(cyto)"] == 0.0
    given = FilterConfig(measure="saturation", channel="cyto", max=0.1, level=250)
    assert measure_cell(_cell(pixels.astype(np.float32), mask), [given], "cell").measures["saturation(cyto)"] == 0.16


def test_apply_filters_records_filter_value_and_threshold():
    pixels = np.ones((2, 6, 6))
    mask = np.ones((6, 6), bool)
    f = [FilterConfig(measure="area", min=10, max=30), FilterConfig(measure="signal", channel=1, min=5.0)]
    cell = _cell(pixels, mask).with_(measures={"area": 36.0, "signal(1)": 1.0})
    out = apply_filters(cell, f, thresholds(f, {"area": np.array([36.0]), "signal(1)": np.array([1.0])}))
    assert not out.status and out.status.step == "filter"
    assert dict(out.status.detail) == {"filter": "area", "value": 36.0, "threshold": 30.0}
    assert "area = 36 above max 30 (30)" == out.status.reason
    assert out.pixels is None and out.masks == {}
    kept = apply_filters(cell.with_(measures={"area": 20.0, "signal(1)": 6.0}), f, [(10, 30), (5.0, math.nan)])
    assert kept.status
    low = apply_filters(cell.with_(measures={"area": 20.0, "signal(1)": 4.0}), f, [(10, 30), (5.0, math.nan)])
    assert dict(low.status.detail)["filter"] == "signal(1)"
    # a cell whose measure is undefined does not pass a bounded filter silently
    nan = apply_filters(cell.with_(measures={"area": 20.0, "signal(1)": math.nan}), f, [(10, 30), (5.0, math.nan)])
    assert not nan.status and "nan" in nan.status.reason


def test_rule_text_and_config_errors():
    assert rule_text(QuantileRule(quantile=0.05)) == "quantile 0.05"
    assert rule_text(MadRule(mad=3)) == "mad 3"
    assert rule_text("otsu") == "otsu" and rule_text(250.0) == "250"
    with pytest.raises(ValueError, match="needs a channel"):
        FilterConfig(measure="signal", min="otsu")
    with pytest.raises(ValueError, match="needs min, max or both"):
        FilterConfig(measure="area")
    with pytest.raises(ValueError, match="level applies to the 'saturation' filter only"):
        FilterConfig(measure="area", min=3, level=2)
