"""scip classify / predict: label joins, feature cleaning, grouped cross-validation, the model on disk."""

import json

import numpy as np
import pandas as pd
import pytest

from scip import cli
from scip.classify import ClassifyError, ClassifyWarning, classify, predict
from scip.io.parquet import arrow_schema, write_part

FAST = {"params": {"n_estimators": 40}, "n_jobs": 1}
N_IMAGES, PER_IMAGE = 6, 40


def make_table(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cells of 6 images with two classes that differ in two features, and their labels."""
    rng = np.random.default_rng(seed)
    n = N_IMAGES * PER_IMAGE
    image = np.repeat([f"{i}" for i in range(N_IMAGES)], PER_IMAGE)
    label = np.tile(np.arange(1, PER_IMAGE + 1), N_IMAGES)
    kind = rng.permutation(np.tile(["tumor", "normal"], n // 2))
    signal = (kind == "tumor").astype(float)
    # an image-wide offset, so that cells of one image resemble each other
    offset = np.repeat(rng.normal(0, 0.3, N_IMAGES), PER_IMAGE)
    some_nan = rng.normal(size=n)
    some_nan[rng.random(n) < 0.2] = np.nan
    mostly_nan = rng.normal(size=n)
    mostly_nan[rng.random(n) < 0.7] = np.nan
    table = pd.DataFrame({
        "meta_image_id": pd.array(image, dtype="string"),
        "meta_index": pd.array(np.repeat(np.arange(N_IMAGES), PER_IMAGE), dtype="Int64"),
        "meta_path": pd.array([f"/data/{i}.tif" for i in image], dtype="string"),
        "meta_label": pd.array(label, dtype="Int64"),
        "feat_cell_area": 100 + 40 * signal + rng.normal(0, 8, n) + offset,
        "feat_cell_intensity_mean_DNA": 2 * signal + rng.normal(0, 0.7, n) + offset,
        "feat_cell_noise": rng.normal(size=n),
        "feat_cell_some_nan": some_nan,
        "feat_cell_constant": np.full(n, 3.0),
        "feat_cell_mostly_nan": mostly_nan,
    })
    labels = pd.DataFrame({"meta_image_id": image, "meta_label": label, "cell_type": kind})
    return table, labels


def write_run(folder, table: pd.DataFrame) -> None:
    """A run's output folder: cells/part-*.parquet, as the pipeline writes them."""
    cells = folder / "cells"
    cells.mkdir(parents=True)
    kinds = {c: ("float" if c.startswith("feat_") else "int" if str(table[c].dtype) == "Int64" else "str")
             for c in table.columns}
    schema = arrow_schema(kinds)
    for i, part in enumerate(np.array_split(np.arange(len(table)), 3)):
        write_part(table.iloc[part], cells / f"part-{i:05d}.parquet", schema)


@pytest.fixture
def run_dir(tmp_path):
    table, labels = make_table()
    out = tmp_path / "results"
    write_run(out, table)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    return out


# ------------------------------------------------------------------------------------- cross-validation


def test_grouped_folds_keep_images_together_and_score_high(run_dir, tmp_path):
    result = classify(run_dir, tmp_path / "labels.csv", on="meta_image_id,meta_label", target="cell_type",
                      group="meta_image_id", folds=3, **FAST)
    cv = result.predictions
    assert len(cv) == N_IMAGES * PER_IMAGE and (cv["fold"] >= 0).all()
    # every image is in the test set of exactly one fold, so never in train and test of the same fold
    assert (cv.groupby("meta_image_id")["fold"].nunique() == 1).all()
    assert result.folds == 3 and cv["fold"].nunique() == 3
    tested = [set(d["test_groups"]) for d in result.fold_details]
    assert sum(len(t) for t in tested) == N_IMAGES and set.union(*tested) == {str(i) for i in range(N_IMAGES)}
    assert result.balanced_accuracy > 0.85 and len(result.balanced_accuracy_folds) == 3
    assert result.classes == ["normal", "tumor"]
    assert np.array(result.confusion).sum() == len(cv) and np.trace(result.confusion) > 0.85 * len(cv)
    assert result.per_class["tumor"]["support"] == len(cv) // 2
    # the two informative features lead the importances
    top = {d["feature"] for d in result.importances[:2]}
    assert top == {"feat_cell_area", "feat_cell_intensity_mean_DNA"}


def test_ungrouped_folds_split_images(run_dir, tmp_path):
    # the counterpart of the test above: without a group, cells of one image land in several folds
    result = classify(run_dir, tmp_path / "labels.csv", on=["meta_image_id", "meta_label"], target="cell_type",
                      folds=3, **FAST)
    assert (result.predictions.groupby("meta_image_id")["fold"].nunique() > 1).all()
    # stratified: each fold's test set holds both classes in equal shares
    for d in result.fold_details:
        assert abs(d["test_class_counts"]["tumor"] - d["test_class_counts"]["normal"]) <= 1


def test_shuffled_labels_score_at_chance(run_dir, tmp_path):
    _, labels = make_table()
    labels["cell_type"] = np.random.default_rng(1).permutation(labels["cell_type"].to_numpy())
    result = classify(run_dir, labels, on="meta_image_id,meta_label", target="cell_type", group="meta_image_id",
                      folds=3, **FAST)
    assert abs(result.balanced_accuracy - 0.5) < 0.12


def test_constant_and_nan_heavy_features_are_dropped_and_reported(run_dir, tmp_path):
    result = classify(run_dir, tmp_path / "labels.csv", on="meta_image_id,meta_label", target="cell_type",
                      folds=3, **FAST)
    assert result.dropped_features["feat_cell_constant"] == "constant"
    assert result.dropped_features["feat_cell_mostly_nan"].startswith("nan in 7")
    assert set(result.dropped_features) == {"feat_cell_constant", "feat_cell_mostly_nan"}
    assert "feat_cell_some_nan" in result.features  # 20 % NaN stays, as NaN
    summary = json.loads((run_dir / "classification" / "classification.json").read_text())
    assert {d["feature"]: d["reason"] for d in summary["dropped_features"]} == result.dropped_features
    assert summary["n_features"] == 4 and summary["n_cells"] == N_IMAGES * PER_IMAGE
    # a stricter threshold drops the 20 % NaN column as well
    strict = classify(run_dir, tmp_path / "labels.csv", on="meta_image_id,meta_label", target="cell_type",
                      folds=3, max_nan=0.1, out=tmp_path / "strict", **FAST)
    assert "feat_cell_some_nan" in strict.dropped_features


# ------------------------------------------------------------------------------------- labels


def test_numeric_keys_in_csv_join_text_and_nullable_int_columns(tmp_path):
    table, labels = make_table()
    # image ids are text in the table ("3"), numbers in the CSV (3); meta_label is nullable Int64 vs int
    labels = labels.iloc[:100].copy()
    labels["meta_image_id"] = labels["meta_image_id"].astype(int)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    table.loc[5, "meta_label"] = pd.NA
    with pytest.warns(ClassifyWarning, match="1 of 100 labels match no cell"):
        result = classify(table, tmp_path / "labels.csv", on="meta_image_id,meta_label", target="cell_type",
                          folds=3, **FAST)
    c = result.counts
    assert (c["labels"], c["labels_matched"], c["labels_unmatched"]) == (100, 99, 1)
    assert c["cells_labelled"] == 99 and c["cells_unlabelled"] == N_IMAGES * PER_IMAGE - 99
    assert result.out is None  # a DataFrame in, nothing written unless asked


def test_integer_and_bool_targets(tmp_path):
    table, labels = make_table()
    labels["is_tumor"] = labels["cell_type"] == "tumor"
    labels["code"] = np.where(labels["is_tumor"], 7, 2)
    r = classify(table, labels, on="meta_image_id,meta_label", target="is_tumor", folds=3, **FAST)
    assert r.classes == [False, True] and r.balanced_accuracy > 0.85
    r = classify(table, labels, on="meta_image_id,meta_label", target="code", folds=3, out=tmp_path / "c", **FAST)
    assert r.classes == [2, 7]
    assert json.loads((tmp_path / "c" / "model_meta.json").read_text())["classes"] == [2, 7]
    assert set(predict(tmp_path / "c", table, n_jobs=1)["predicted"]) <= {2, 7}


@pytest.mark.parametrize("change, message", [
    (lambda l: l.rename(columns={"meta_label": "cell"}),
     r"key column\(s\) 'meta_label' not in the labels file .*its columns: meta_image_id, cell, cell_type"),
    (lambda l: l.drop(columns="cell_type"),
     r"target column 'cell_type' not in the labels file .*its columns: meta_image_id, meta_label"),
    (lambda l: pd.concat([l, l.iloc[[3, 3, 10]]]),
     r"2 duplicate key\(s\) over meta_image_id, meta_label.*meta_image_id='0', meta_label='4' \(3 times\)"),
    (lambda l: l.assign(meta_image_id="img" + l["meta_image_id"]),
     r"none of the 240 labels .* matches a cell .*labels look like: meta_image_id='img0'.*"
     r"cells look like: meta_image_id='0'"),
])
def test_label_file_errors_name_the_problem_and_exit_2(run_dir, tmp_path, capsys, change, message):
    _, labels = make_table()
    bad = tmp_path / "bad.csv"
    change(labels).to_csv(bad, index=False)
    with pytest.raises(ClassifyError, match=message):
        classify(run_dir, bad, on="meta_image_id,meta_label", target="cell_type", **FAST)
    assert cli.main(["classify", str(run_dir), "--labels", str(bad), "--on", "meta_image_id,meta_label",
                     "--target", "cell_type", "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("scip: error: ") and "Traceback" not in err
    assert not (run_dir / "classification").exists()


def test_key_missing_from_the_table_lists_its_columns(run_dir, tmp_path):
    _, labels = make_table()
    labels["meta_well"] = "A01"
    message = (r"'meta_well' not in the cell table; its columns: meta_image_id, meta_index, meta_path, meta_label "
               r"and 6 feat_\* columns; did you mean 'meta_label'\?$")
    with pytest.raises(ClassifyError, match=message):
        classify(run_dir, labels, on="meta_image_id,meta_well", target="cell_type", **FAST)


def test_single_class_and_tiny_class(tmp_path):
    table, labels = make_table()
    with pytest.raises(ClassifyError, match=r"one class \('tumor'\)"):
        classify(table, labels.assign(cell_type="tumor"), on="meta_image_id,meta_label", target="cell_type", **FAST)
    few = labels.copy()
    few.loc[few.index[:3], "cell_type"] = "rare"
    with pytest.warns(ClassifyWarning, match="class 'rare' has only 3 labelled cells, fewer than 5 folds: using 3"):
        result = classify(table, few, on="meta_image_id,meta_label", target="cell_type", folds=5, **FAST)
    assert result.folds == 3 and result.per_class["rare"]["support"] == 3
    one = labels.copy()
    one.loc[one.index[0], "cell_type"] = "rare"
    with pytest.raises(ClassifyError, match=r"class 'rare' has 1 labelled cell"):
        classify(table, one, on="meta_image_id,meta_label", target="cell_type", **FAST)


# ------------------------------------------------------------------------------------- predict


def test_predict_reproduces_the_refit_model(run_dir, tmp_path):
    result = classify(run_dir, tmp_path / "labels.csv", on="meta_image_id,meta_label", target="cell_type",
                      group="meta_image_id", folds=3, **FAST)
    out = result.out
    assert {p.name for p in out.iterdir()} == {"classification.json", "model.json", "model_meta.json",
                                               "cv_predictions.csv"}
    table = pd.read_parquet(run_dir / "cells")
    # extra columns are ignored, the order of columns does not matter
    shuffled = table[table.columns[::-1]].assign(feat_new=1.0)
    pred = predict(out, shuffled, n_jobs=1)
    expected = result.model.predict_proba(table[result.features])
    np.testing.assert_allclose(pred[["proba_normal", "proba_tumor"]].to_numpy(), expected, rtol=1e-6)
    assert (pred["predicted"].to_numpy() == np.array(result.classes)[expected.argmax(axis=1)]).all()
    assert list(pred["meta_image_id"]) == list(table["meta_image_id"])
    meta = json.loads((out / "model_meta.json").read_text())
    assert meta["features"] == result.features and meta["on"] == ["meta_image_id", "meta_label"]

    with pytest.raises(ClassifyError, match=r"lacks 2 of the 4 feature columns the model uses: "
                                            r"feat_cell_area, feat_cell_noise"):
        predict(out, table.drop(columns=["feat_cell_noise", "feat_cell_area"]), n_jobs=1)


def test_cli_classify_then_predict(run_dir, tmp_path, capsys):
    labels = tmp_path / "labels.csv"
    assert cli.main(["classify", str(run_dir), "--labels", str(labels), "--on", "meta_image_id,meta_label",
                     "--target", "cell_type", "--group", "meta_image_id", "--folds", "3", "--seed", "2",
                     "--trees", "30", "--jobs", "1", "--out", str(tmp_path / "model")]) == 0
    out = capsys.readouterr().out
    assert "240 labelled cells" in out and "3-fold cross-validation, grouped by meta_image_id" in out
    summary = json.loads((tmp_path / "model" / "classification.json").read_text())
    assert summary["inputs"]["seed"] == 2 and summary["inputs"]["group"] == "meta_image_id"
    assert summary["inputs"]["labels"] == str(labels.resolve()) and summary["scip_version"]
    assert summary["metrics"]["balanced_accuracy"] > 0.85
    cv = pd.read_csv(tmp_path / "model" / "cv_predictions.csv")
    assert list(cv.columns) == ["meta_image_id", "meta_label", "cell_type", "predicted", "fold",
                                "proba_normal", "proba_tumor"]

    assert cli.main(["predict", str(tmp_path / "model"), str(run_dir), "--jobs", "1"]) == 0
    pred = pd.read_csv(run_dir / "predictions.csv")
    assert len(pred) == 240 and {"meta_image_id", "meta_label", "predicted", "proba_tumor"} <= set(pred.columns)
    # predict against a table without the model's features: exit code 2, the columns named
    table = pd.read_parquet(run_dir / "cells").drop(columns="feat_cell_area")
    table.to_parquet(tmp_path / "other.parquet")
    capsys.readouterr()
    assert cli.main(["predict", str(tmp_path / "model"), str(tmp_path / "other.parquet"), "--jobs", "1"]) == 2
    assert "feat_cell_area" in capsys.readouterr().err
