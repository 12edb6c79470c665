"""Classify cells from their features: labels, cross-validation, a model to reuse.

:func:`classify` joins a table of labels (a CSV or parquet file with key
columns and a target column) to the cell table of a run, drops unusable
feature columns, cross-validates an XGBoost classifier (grouped by image or
well when asked, so that the cells of one group are never split between
training and test), refits it on all labelled cells and writes::

    <out>/classification.json   inputs, counts, metrics, dropped features, importances
    <out>/model.json            the refitted XGBoost model (``save_model``)
    <out>/model_meta.json       feature names in order, class names, target, keys
    <out>/cv_predictions.csv    the out-of-fold prediction of every labelled cell

:func:`predict` applies such a model to a cell table (the same run or another
one with the same feature columns); :func:`score_predictions` scores its
predictions against a labels file.

XGBoost and scikit-learn are needed here only; they are imported when used.
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from scip._hints import did_you_mean
from scip._jsonvalues import plain
from scip.config import ConfigError

__all__ = ["ClassificationResult", "ClassifyError", "ClassifyWarning", "classify", "predict", "read_cells",
           "run_folder", "score_predictions", "scores_path", "DEFAULT_PARAMS"]

#: XGBoost parameters used unless ``params`` overrides them: small trees, a
#: moderate learning rate, row and column subsampling.
DEFAULT_PARAMS: dict[str, Any] = {
    "n_estimators": 200,
    "max_depth": 4,
    "learning_rate": 0.1,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 1.0,
    "tree_method": "hist",
}

_TOP_IMPORTANCES = 20
_EXAMPLES = 5
_SEP = "\x1f"
_INT_LIKE = r"[+-]?\d+(?:\.0*)?"


class ClassifyError(ConfigError):
    """Invalid labels, keys or model; the message is meant for the user as is (exit code 2)."""


class ClassifyWarning(UserWarning):
    """Something the results depend on that the user should know (unmatched labels, fewer folds...)."""


@dataclass
class ClassificationResult:
    """What :func:`classify` found; :meth:`summary` is what ``classification.json`` holds.

    Attributes
    ----------
    classes : list
        Class names, in the order of the confusion matrix and the probability columns.
    features : list of str
        Feature columns the model uses, in order.
    dropped_features : dict
        ``{column: reason}`` of the ``feat_*`` columns left out (``constant``, ``nan ...``).
    balanced_accuracy : float
        Mean over folds of the balanced accuracy of the out-of-fold predictions.
    balanced_accuracy_folds : list of float
        Balanced accuracy of each fold.
    accuracy : float
        Accuracy of all out-of-fold predictions together.
    per_class : dict
        ``{class: {"precision", "recall", "f1", "support"}}`` over all out-of-fold predictions.
    confusion : list of list of int
        Confusion matrix, rows true classes, columns predicted classes, both in ``classes`` order.
    importances : list of dict
        The top features by gain of the refitted model, ``{"feature", "gain"}``, largest first.
    folds : int
        Number of folds used (may be fewer than asked, see ``warnings``).
    fold_details : list of dict
        Per fold: sizes, balanced accuracy and, when grouped, the test groups.
    counts : dict
        Labels read, matched and unmatched; labelled cells; cells without a label.
    predictions : pandas.DataFrame
        Out-of-fold predictions: key columns, true class, ``predicted``, ``fold``, ``proba_<class>``.
    model : xgboost.XGBClassifier
        The model refitted on all labelled cells (predicts class indices into ``classes``).
    inputs : dict
        Labels path, keys, target, group, folds asked, seed, parameters.
    warnings : list of str
        Every warning issued on the way.
    out : pathlib.Path or None
        Folder the files were written to, if any.
    paths : dict
        ``{name: path}`` of the files written.
    """

    classes: list
    features: list[str]
    dropped_features: dict[str, str]
    balanced_accuracy: float
    balanced_accuracy_folds: list[float]
    accuracy: float
    per_class: dict[str, dict[str, float]]
    confusion: list[list[int]]
    importances: list[dict[str, Any]]
    folds: int
    fold_details: list[dict[str, Any]]
    counts: dict[str, int]
    predictions: pd.DataFrame
    model: Any
    inputs: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    out: Path | None = None
    paths: dict[str, Path] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Everything but the model and the predictions, JSON-serializable."""
        from scip import __version__

        return _jsonable({
            "inputs": self.inputs,
            "counts": self.counts,
            "classes": self.classes,
            "n_cells": self.counts.get("cells_labelled"),
            "n_features": len(self.features),
            "dropped_features": [{"feature": k, "reason": v} for k, v in self.dropped_features.items()],
            "folds": self.folds,
            "metrics": {
                "balanced_accuracy": self.balanced_accuracy,
                "balanced_accuracy_std": float(np.std(self.balanced_accuracy_folds)),
                "balanced_accuracy_folds": self.balanced_accuracy_folds,
                "accuracy": self.accuracy,
                "per_class": self.per_class,
                "confusion_matrix": {"labels": self.classes, "matrix": self.confusion},
            },
            "fold_details": self.fold_details,
            "importances": {"type": "gain", "top": self.importances},
            "features": self.features,
            "warnings": self.warnings,
            "versions": _versions(),
            "scip_version": __version__,
        })


# ---------------------------------------------------------------------------------------------- reading


def read_cells(source: pd.DataFrame | str | os.PathLike) -> pd.DataFrame:
    """The cell table of a run.

    Parameters
    ----------
    source : DataFrame, or path
        A table already read; a run's output folder; its ``cells`` folder; or one table file
        (``.parquet``, ``.h5ad``, ``.csv``), read with :func:`scip.io.tables.read`.

    Returns
    -------
    pandas.DataFrame
    """
    if isinstance(source, pd.DataFrame):
        return source
    from scip.io.tables import read

    try:
        return read(Path(source).expanduser())
    except (FileNotFoundError, ValueError) as e:
        raise ClassifyError(f"cannot read a cell table from {source}: {e}") from e


def run_folder(source: str | os.PathLike) -> Path:
    """The run's output folder of a table path: the folder holding ``cells/``, or the file's folder."""
    path = Path(source).expanduser()
    if path.is_dir() and (path / "cells").is_dir():
        return path
    return path.parent


def _read_labels(labels: pd.DataFrame | str | os.PathLike, on: Sequence[str]) -> pd.DataFrame:
    if isinstance(labels, pd.DataFrame):
        return labels
    path = Path(labels).expanduser()
    if not path.is_file():
        raise ClassifyError(f"labels file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        # Key columns as text, so that ids such as 007 keep their leading zeros.
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype={k: str for k in on})
    except (ValueError, OSError) as e:
        raise ClassifyError(f"cannot read labels file {path}: {e}") from e


def _default_out(source: Any) -> Path | None:
    return None if isinstance(source, pd.DataFrame) else run_folder(source) / "classification"


# ---------------------------------------------------------------------------------------------- keys


def _as_list(value: str | Iterable[str]) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def _is_number(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _norm_key(s: pd.Series, peer_is_number: bool) -> pd.Series:
    """Key values as text: integers (also stored as floats) without decimals, text stripped.

    When the other side holds numbers, integer-like text is written the same
    way (``"007"`` and ``"3.0"`` become ``"7"`` and ``"3"``).
    """
    if _is_number(s):
        values = pd.to_numeric(s)
        finite = values.dropna()
        if pd.api.types.is_integer_dtype(values) or (len(finite) and np.all(np.mod(finite.astype(float), 1) == 0)):
            return values.astype("Float64").astype("Int64").astype("string")
        return values.astype("string")
    out = s.astype("string").str.strip()
    if peer_is_number:
        like = out.str.fullmatch(_INT_LIKE).fillna(False).astype(bool)
        values = out.to_numpy(dtype=object, na_value=None)
        for i in np.flatnonzero(like.to_numpy()):
            values[i] = str(int(values[i].split(".")[0]))
        out = pd.Series(values, index=s.index, dtype="string")
    return out


def _joined_key(frame: pd.DataFrame, on: list[str], peer: pd.DataFrame) -> pd.Series:
    parts = [_norm_key(frame[k], _is_number(peer[k])) for k in on]
    key = parts[0]
    for p in parts[1:]:
        key = key + _SEP + p
    return key  # <NA> where any key value is missing


def _show_keys(frame: pd.DataFrame, on: list[str], n: int = _EXAMPLES) -> str:
    rows = frame[on].head(n).astype(object).where(frame[on].head(n).notna(), None)
    return "; ".join(", ".join(f"{k}={v!r}" for k, v in zip(on, row)) for row in rows.itertuples(index=False))


def _check_columns(on: list[str], target: str, labels: pd.DataFrame, table: pd.DataFrame, source: str) -> None:
    if not on:
        raise ClassifyError("no key columns given: 'on' names the columns that identify a cell in both the "
                            "labels file and the cell table, e.g. meta_image_id,meta_label")
    for where, frame in ((f"the labels file ({source})", labels), ("the cell table", table)):
        missing = [k for k in on if k not in frame.columns]
        if missing:
            shown = ", ".join(str(c) for c in frame.columns if not str(c).startswith("feat_"))
            n_feat = sum(str(c).startswith("feat_") for c in frame.columns)
            raise ClassifyError(f"key column(s) {', '.join(map(repr, missing))} not in {where}; its columns: {shown}"
                                + (f" and {n_feat} feat_* columns" if n_feat else "")
                                + did_you_mean(missing[0], frame.columns))
    if target not in labels.columns:
        raise ClassifyError(f"target column {target!r} not in the labels file ({source}); its columns: "
                            f"{', '.join(map(str, labels.columns))}{did_you_mean(target, labels.columns)}")
    if target in on:
        raise ClassifyError(f"target column {target!r} is also a key column")


def _join(table: pd.DataFrame, labels: pd.DataFrame, on: list[str], target: str, group: str | None,
          source: str, notes: list[str]) -> tuple[pd.DataFrame, pd.Series, dict[str, int]]:
    """Labelled cells (rows of ``table``), their target values and the counts of the join."""
    counts = {"labels": len(labels)}
    lab_key = _joined_key(labels, on, table)
    tab_key = _joined_key(table, on, labels)

    no_target = labels[target].isna().to_numpy()
    if no_target.any():
        _warn(notes, f"{int(no_target.sum())} label(s) without a value in {target!r} are left out, e.g. "
                     f"{_show_keys(labels[no_target], on)}")
    counts["labels_without_target"] = int(no_target.sum())
    no_key = lab_key.isna().to_numpy() & ~no_target
    if no_key.any():
        _warn(notes, f"{int(no_key.sum())} label(s) with a missing key value are left out, e.g. "
                     f"{_show_keys(labels[no_key], on)}")
    counts["labels_without_key"] = int(no_key.sum())
    keep = ~no_target & ~no_key
    labels, lab_key = labels[keep], lab_key[keep]

    dup = lab_key.duplicated(keep=False).to_numpy()
    if dup.any():
        d = labels[dup].assign(_k=lab_key[dup].to_numpy())
        first = d.drop_duplicates("_k")
        times = d["_k"].value_counts()
        shown = "; ".join(f"{_show_keys(first.iloc[[i]], on)} ({times[k]} times)"
                          for i, k in enumerate(first["_k"].head(_EXAMPLES)))
        raise ClassifyError(f"the labels file ({source}) has {first.shape[0]} duplicate key(s) over {', '.join(on)}, "
                            f"each must label one cell or object once: {shown}")

    known = set(tab_key.dropna())
    matched = lab_key.isin(known).to_numpy()
    counts["labels_matched"] = int(matched.sum())
    counts["labels_unmatched"] = int((~matched).sum())
    if not matched.any():
        raise ClassifyError(
            f"none of the {len(labels)} labels in {source} matches a cell on {', '.join(on)}; "
            f"labels look like: {_show_keys(labels, on)}; cells look like: {_show_keys(table, on)}")
    if (~matched).any():
        _warn(notes, f"{int((~matched).sum())} of {len(labels)} labels match no cell on {', '.join(on)}, e.g. "
                     f"{_show_keys(labels[~matched], on)}")

    values = pd.Series(labels[target].array, index=lab_key.to_numpy())
    extra = None
    if group is not None and group not in table.columns:
        if group not in labels.columns:
            raise ClassifyError(f"group column {group!r} is neither in the cell table nor in the labels file; "
                                f"cell table meta columns: "
                                f"{', '.join(c for c in table.columns if not str(c).startswith('feat_'))}; "
                                f"labels file columns: {', '.join(map(str, labels.columns))}"
                                f"{did_you_mean(group, list(table.columns) + list(labels.columns))}")
        extra = pd.Series(labels[group].array, index=lab_key.to_numpy())

    has = tab_key.isin(set(values.index)).fillna(False).to_numpy(bool)
    counts["cells"] = len(table)
    counts["cells_labelled"] = int(has.sum())
    counts["cells_unlabelled"] = int((~has).sum())
    cells = table[has].reset_index(drop=True)
    keys = tab_key[has].to_numpy()
    y = pd.Series(values.loc[keys].array, name=target)
    if extra is not None:
        cells = cells.assign(**{group: extra.loc[keys].to_numpy()})
    return cells, y, counts


# ---------------------------------------------------------------------------------------------- features


def _clean_features(cells: pd.DataFrame, max_nan: float) -> tuple[list[str], dict[str, str], int]:
    """Usable ``feat_*`` columns, ``{dropped: reason}`` and the number of infinite values made NaN."""
    names = [c for c in cells.columns if str(c).startswith("feat_")]
    if not names:
        raise ClassifyError("the cell table has no feat_* columns to classify with")
    block = _feature_block(cells, names)
    n_inf = int(np.isinf(block).sum())
    block[np.isinf(block)] = np.nan
    nan_frac = np.isnan(block).mean(axis=0) if len(block) else np.ones(len(names))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanmin(block, axis=0), np.nanmax(block, axis=0)
    keep, dropped = [], {}
    for j, name in enumerate(names):
        if nan_frac[j] > max_nan:
            dropped[name] = f"nan in {nan_frac[j]:.0%} of labelled cells (> {max_nan:.0%})"
        elif not lo[j] < hi[j]:
            dropped[name] = "constant"
        else:
            keep.append(name)
    if not keep:
        raise ClassifyError(f"no usable feature column: all {len(names)} feat_* columns are constant or NaN in more "
                            f"than {max_nan:.0%} of the labelled cells")
    return keep, dropped, n_inf


def _feature_block(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    try:
        block = np.column_stack([pd.to_numeric(frame[n]).astype("float64").to_numpy(na_value=np.nan)
                                 if not isinstance(frame[n].dtype, np.dtype) else frame[n].to_numpy(np.float64)
                                 for n in names]) if names else np.empty((len(frame), 0))
    except (TypeError, ValueError) as e:
        raise ClassifyError(f"feature columns must hold numbers: {e}") from e
    return block.reshape(len(frame), len(names))


def _features_frame(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    block = _feature_block(frame, names)
    block[np.isinf(block)] = np.nan
    return pd.DataFrame(block, columns=names)


# ---------------------------------------------------------------------------------------------- model


def _model(params: dict[str, Any], seed: int, n_jobs: int):
    from xgboost import XGBClassifier

    return XGBClassifier(**{**DEFAULT_PARAMS, **params, "random_state": seed, "n_jobs": n_jobs})


def _splitter(y: np.ndarray, groups: np.ndarray | None, folds: int, seed: int, classes: list, notes: list[str]):
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if folds < 2:
        raise ClassifyError(f"folds must be at least 2, got {folds}")
    counts = np.bincount(y, minlength=len(classes))
    n = folds
    small = int(counts.argmin())
    if counts[small] < 2:
        raise ClassifyError(f"class {classes[small]!r} has {counts[small]} labelled cell; cross-validation needs at "
                            f"least 2 per class (class sizes: {_class_sizes(counts, classes)})")
    if counts[small] < n:
        n = int(counts[small])
        _warn(notes, f"class {classes[small]!r} has only {counts[small]} labelled cells, fewer than {folds} folds: "
                     f"using {n} folds")
    if groups is None:
        return StratifiedKFold(n_splits=n, shuffle=True, random_state=seed), n
    n_groups = len(pd.unique(groups))
    if n_groups < 2:
        raise ClassifyError(f"all labelled cells are in one group ({groups[0]!r}); grouped cross-validation needs "
                            f"at least 2 groups")
    if n_groups < n:
        _warn(notes, f"only {n_groups} groups, fewer than {n} folds: using {n_groups} folds")
        n = n_groups
    per_class = pd.Series(groups).groupby(y).nunique()
    few = [(classes[c], int(g)) for c, g in per_class.items() if g < 2]
    if few:
        _warn(notes, "class(es) found in a single group, never both trained on and tested: "
                     + ", ".join(f"{c!r}" for c, _ in few))
    return StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=seed), n


def _class_sizes(counts: np.ndarray, classes: list) -> str:
    return ", ".join(f"{c!r}: {int(k)}" for c, k in zip(classes, counts))


def _fit(X: pd.DataFrame, y: np.ndarray, params: dict, seed: int, n_jobs: int):
    """Fit on ``y`` (class indices); return the model and the classes its probability columns are for."""
    from sklearn.utils.class_weight import compute_sample_weight

    present = np.unique(y)
    local = np.searchsorted(present, y)
    model = _model(params, seed, n_jobs)
    model.fit(X, local, sample_weight=compute_sample_weight("balanced", y))
    return model, present


# ---------------------------------------------------------------------------------------------- classify


def _require_packages() -> None:
    """Fail with the install command when the optional classifier packages are missing."""
    missing = [name for name in ("xgboost", "sklearn") if importlib.util.find_spec(name) is None]
    if missing:
        raise ClassifyError(f"scip classify needs {' and '.join(missing)}: pip install 'scip[classify]'")


def classify(table: pd.DataFrame | str | os.PathLike, labels: pd.DataFrame | str | os.PathLike,
             on: str | Sequence[str], target: str, group: str | None = None, folds: int = 5, seed: int = 0,
             out: str | os.PathLike | None = None, *, max_nan: float = 0.5, n_jobs: int | None = None,
             params: dict[str, Any] | None = None) -> ClassificationResult:
    """Cross-validate an XGBoost classifier of labelled cells and refit it on all of them.

    Parameters
    ----------
    table : DataFrame or path
        The cell table, or a run's output folder (see :func:`read_cells`).
    labels : DataFrame or path
        Labels: a CSV, TSV or parquet file (or a DataFrame) with the ``on`` columns and ``target``.
        Each key must occur once. Key values are compared as text, integers written without
        decimals, so ``3``, ``"3"`` and ``3.0`` match.
    on : str or sequence of str
        Key columns present in both, e.g. ``["meta_image_id", "meta_label"]`` for per-cell labels
        or ``["meta_image_id", "meta_truth_label"]`` for labels of ground-truth objects, or
        ``"meta_image_id"`` for one label per image. A comma-separated string is split.
    target : str
        Column of ``labels`` holding the class (text, bool or integer).
    group : str, optional
        Column (of the table, or else of the labels) whose values are kept together: all cells of
        a group are in the test set of the same fold and never split between training and test
        (``StratifiedGroupKFold``). Without it, cells are stratified by class (``StratifiedKFold``).
    folds : int
        Number of folds; fewer are used (with a warning) when a class has fewer cells, or there are
        fewer groups, than folds.
    seed : int
        Seed of the fold assignment and of XGBoost.
    out : path, optional
        Folder to write the results to. By default ``<output_dir>/classification`` when ``table`` is
        a path, nothing when it is a DataFrame.
    max_nan : float
        Feature columns NaN in more than this fraction of the labelled cells are dropped.
    n_jobs : int, optional
        XGBoost threads; all cores by default.
    params : dict, optional
        XGBoost parameters overriding :data:`DEFAULT_PARAMS`.

    Returns
    -------
    ClassificationResult

    Raises
    ------
    ClassifyError
        Missing key, target or group columns; duplicate keys; no label matching a cell; a single
        class; a class with a single cell; no usable feature column.
    """
    _require_packages()
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, \
        precision_recall_fscore_support

    on = _as_list(on)
    if not 0 <= max_nan <= 1:
        raise ClassifyError(f"max_nan must be a fraction between 0 and 1, got {max_nan}")
    params = dict(params or {})
    n_jobs = int(n_jobs) if n_jobs else (os.cpu_count() or 1)
    notes: list[str] = []
    source = str(labels) if not isinstance(labels, pd.DataFrame) else "DataFrame"
    if out is None:
        out = _default_out(table)
    cells_table = read_cells(table)
    label_frame = _read_labels(labels, on)
    _check_columns(on, target, label_frame, cells_table, source)

    cells, y_raw, counts = _join(cells_table, label_frame, on, target, group, source, notes)
    from sklearn.preprocessing import LabelEncoder

    y_values = _target_values(y_raw)
    encoder = LabelEncoder().fit(y_values)
    classes = [_scalar(c) for c in encoder.classes_]
    y = encoder.transform(y_values)
    if len(classes) < 2:
        raise ClassifyError(f"all {len(y)} labelled cells are of one class ({classes[0]!r}); "
                            f"classification needs at least two")

    features, dropped, n_inf = _clean_features(cells, max_nan)
    if n_inf:
        _warn(notes, f"{n_inf} infinite feature values treated as missing")
    X = _features_frame(cells, features)

    groups = None
    if group is not None:
        g = cells[group]
        if g.isna().any():
            raise ClassifyError(f"{int(g.isna().sum())} labelled cells have no value in group column {group!r}, "
                                f"e.g. {_show_keys(cells[g.isna()], on)}")
        groups = g.astype(str).to_numpy()
    splitter, n_folds = _splitter(y, groups, folds, seed, classes, notes)

    k = len(classes)
    proba = np.full((len(y), k), np.nan)
    fold_of = np.full(len(y), -1)
    fold_scores: list[float] = []
    details: list[dict[str, Any]] = []
    for i, (train, test) in enumerate(splitter.split(X, y, groups)):
        if len(test) == 0:
            continue
        present = np.unique(y[train])
        if len(present) < 2:
            raise ClassifyError(f"fold {i}: the training cells are all of class {classes[present[0]]!r}; "
                                f"use fewer folds or groups with cells of several classes")
        if len(present) < k:
            missing = [classes[c] for c in range(k) if c not in present]
            _warn(notes, f"fold {i}: no training cell of class(es) {', '.join(map(repr, missing))}; "
                         f"they cannot be predicted in this fold")
        model, cols = _fit(X.iloc[train], y[train], params, seed, n_jobs)
        p = np.zeros((len(test), k))
        p[:, cols] = model.predict_proba(X.iloc[test])
        proba[test] = p
        fold_of[test] = i
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score = float(balanced_accuracy_score(y[test], p.argmax(axis=1)))
        fold_scores.append(score)
        detail = {"fold": i, "n_train": int(len(train)), "n_test": int(len(test)), "balanced_accuracy": score,
                  "test_class_counts": {str(classes[c]): int(n) for c, n in
                                        zip(*np.unique(y[test], return_counts=True))}}
        if groups is not None:
            detail["test_groups"] = sorted(pd.unique(groups[test]).tolist())
        details.append(detail)

    predicted = proba.argmax(axis=1)
    prec, rec, f1, support = precision_recall_fscore_support(y, predicted, labels=range(k), zero_division=0)
    per_class = {str(c): {"precision": float(prec[j]), "recall": float(rec[j]), "f1": float(f1[j]),
                          "support": int(support[j])} for j, c in enumerate(classes)}
    confusion = confusion_matrix(y, predicted, labels=range(k)).tolist()

    final, _ = _fit(X, y, params, seed, n_jobs)
    gain = final.get_booster().get_score(importance_type="gain")
    top = sorted(gain.items(), key=lambda kv: -kv[1])[:_TOP_IMPORTANCES]
    importances = [{"feature": f, "gain": float(v)} for f, v in top]

    id_cols = [c for c in dict.fromkeys([*on, "meta_image_id", "meta_label", *([group] if group else [])])
               if c in cells.columns]
    predictions = cells[id_cols].copy()
    class_array = np.array(classes, dtype=object)
    predictions[target] = class_array[y]
    predictions["predicted"] = class_array[predicted]
    predictions["fold"] = fold_of
    for j, c in enumerate(classes):
        predictions[f"proba_{c}"] = proba[:, j]

    inputs = {"labels": source if isinstance(labels, pd.DataFrame) else str(Path(labels).resolve()),
              "table": "DataFrame" if isinstance(table, pd.DataFrame) else str(Path(table).resolve()),
              "on": on, "target": target, "group": group, "folds": folds, "seed": seed, "max_nan": max_nan,
              "params": {**DEFAULT_PARAMS, **params}}
    result = ClassificationResult(
        classes=classes, features=features, dropped_features=dropped,
        balanced_accuracy=float(np.mean(fold_scores)), balanced_accuracy_folds=fold_scores,
        accuracy=float(accuracy_score(y, predicted)), per_class=per_class, confusion=confusion,
        importances=importances, folds=len(details), fold_details=details, counts=counts,
        predictions=predictions, model=final, inputs=inputs, warnings=notes)
    if n_folds != len(details):
        _warn(notes, f"{n_folds - len(details)} of {n_folds} folds had no test cells")
    if out is not None:
        _write(result, Path(out), on, target, group)
    return result


def _target_values(y: pd.Series) -> np.ndarray:
    """Target values one type: booleans, integers (also from whole floats) or text."""
    if pd.api.types.is_bool_dtype(y):
        return y.astype(bool).to_numpy()
    if pd.api.types.is_numeric_dtype(y):
        v = pd.to_numeric(y)
        if pd.api.types.is_integer_dtype(v) or np.all(np.mod(v.astype(float), 1) == 0):
            return v.astype("int64").to_numpy()
        return v.astype(float).to_numpy()
    return y.astype(str).str.strip().to_numpy(dtype=object)


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _warn(notes: list[str], message: str) -> None:
    notes.append(message)
    warnings.warn(message, ClassifyWarning, stacklevel=3)


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("scip", "xgboost", "scikit-learn", "pandas"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if "xgboost" not in out:
        try:
            import xgboost

            out["xgboost"] = xgboost.__version__
        except ImportError:
            pass
    return out


def _jsonable(value: Any) -> Any:
    return plain(value, _classify_leaf)


def _classify_leaf(value: Any) -> Any:
    # NaN scores (a class absent from a fold) become null: JSON has no NaN.
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _record_in_run(path: Path, names: list[str]) -> None:
    """Record files about to be written into a run's own folder in its manifest, so --overwrite may remove them."""
    from scip.io.manifest import record_files

    run = path.parent
    if path.name in ("classification", "predictions.csv", "predictions_scores.json") and (run / "manifest.json").is_file():
        record_files(run, names)


def _write(result: ClassificationResult, out: Path, on: list[str], target: str, group: str | None) -> None:
    paths = {"classification": out / "classification.json", "model": out / "model.json",
             "model_meta": out / "model_meta.json", "cv_predictions": out / "cv_predictions.csv"}
    _record_in_run(out, [f"{out.name}/{p.name}" for p in paths.values()])
    out.mkdir(parents=True, exist_ok=True)
    result.out, result.paths = out, paths
    result.model.save_model(paths["model"])
    meta = {"features": result.features, "classes": result.classes, "target": target, "on": on, "group": group,
            "versions": _versions()}
    paths["model_meta"].write_text(json.dumps(_jsonable(meta), indent=2) + "\n")
    result.predictions.to_csv(paths["cv_predictions"], index=False)
    summary = result.summary()
    summary["files"] = {k: str(v) for k, v in paths.items()}
    paths["classification"].write_text(json.dumps(summary, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------- predict


def predict(model_dir: str | os.PathLike, table: pd.DataFrame | str | os.PathLike,
            out: str | os.PathLike | None = None, *, n_jobs: int | None = None) -> pd.DataFrame:
    """Apply a model written by :func:`classify` to a cell table.

    Parameters
    ----------
    model_dir : path
        Folder holding ``model.json`` and ``model_meta.json``.
    table : DataFrame or path
        The cell table, or a run's output folder (see :func:`read_cells`). It needs every feature
        column of the model, found by name; other columns are ignored.
    out : path, optional
        CSV file to write the predictions to.
    n_jobs : int, optional
        XGBoost threads; all cores by default.

    Returns
    -------
    pandas.DataFrame
        One row per cell: the table's ``meta_*`` columns, ``predicted`` (the class name) and one
        ``proba_<class>`` column per class.

    Raises
    ------
    ClassifyError
        Model files missing, or feature columns of the model missing from the table.
    """
    _require_packages()
    from xgboost import XGBClassifier

    model_dir = Path(model_dir).expanduser()
    model_path, meta_path = model_dir / "model.json", model_dir / "model_meta.json"
    for p in (model_path, meta_path):
        if not p.is_file():
            raise ClassifyError(f"{p.name} not found in {model_dir}: expected the output folder of 'scip classify'")
    meta = json.loads(meta_path.read_text())
    features, classes = meta["features"], meta["classes"]
    frame = read_cells(table)
    missing = [f for f in features if f not in frame.columns]
    if missing:
        shown = ", ".join(missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise ClassifyError(f"the cell table lacks {len(missing)} of the {len(features)} feature columns the model "
                            f"uses: {shown}")
    model = XGBClassifier()
    model.load_model(model_path)
    model.set_params(n_jobs=int(n_jobs) if n_jobs else (os.cpu_count() or 1))
    meta_cols = [c for c in frame.columns if str(c).startswith("meta_")]
    result = frame[meta_cols].reset_index(drop=True).copy()
    if len(frame):
        proba = model.predict_proba(_features_frame(frame, features))
    else:
        proba = np.empty((0, len(classes)))
    if proba.shape[1] != len(classes):
        raise ClassifyError(f"model.json gives {proba.shape[1]} class probabilities but model_meta.json names "
                            f"{len(classes)} classes")
    result["predicted"] = pd.Series(np.array(classes, dtype=object)[proba.argmax(axis=1)] if len(frame) else [],
                                    dtype=object)
    for j, c in enumerate(classes):
        result[f"proba_{c}"] = proba[:, j]
    if out is not None:
        out = Path(out)
        _record_in_run(out, [out.name])
        out.parent.mkdir(parents=True, exist_ok=True)
        result.to_csv(out, index=False)
    return result


def scores_path(predictions: str | os.PathLike) -> Path:
    """Where :func:`score_predictions` writes the scores of a predictions CSV: ``<stem>_scores.json`` beside it."""
    path = Path(predictions)
    return path.with_name(f"{path.stem}_scores.json")


def score_predictions(predictions: pd.DataFrame, labels: pd.DataFrame | str | os.PathLike,
                      on: str | Iterable[str], target: str, *, classes: Sequence[Any] = (),
                      out: str | os.PathLike | None = None) -> dict[str, Any]:
    """Score predictions (as :func:`predict` returns them) against a labels file.

    Parameters
    ----------
    predictions : DataFrame
        The table's ``meta_*`` columns and ``predicted``, one row per cell.
    labels : DataFrame or path
        CSV, TSV or parquet file of labels, the format :func:`classify` takes.
    on : str or list of str
        Key columns in both (comma-separated text, or a list), e.g. ``meta_image_id,meta_label``.
    target : str
        Column of the labels file holding the true class.
    classes : sequence, optional
        The model's classes, listed first (and scored even where no label has them).
    out : path, optional
        JSON file to write the scores to.

    Returns
    -------
    dict
        ``balanced_accuracy`` (mean recall over the true classes), ``accuracy``, ``per_class``
        (``recall``, ``precision``, ``support`` = labelled cells of the class), ``classes`` and
        ``confusion`` (rows: true class, columns: predicted class, in ``classes`` order), ``counts``
        of the join and ``warnings``.

    Raises
    ------
    ClassifyError
        Key or target columns missing, duplicate labels, or no label matching a prediction.
    """
    on = _as_list(on)
    source = "DataFrame" if isinstance(labels, pd.DataFrame) else str(Path(labels).expanduser())
    labels = _read_labels(labels, on)
    if "predicted" not in predictions.columns:
        raise ClassifyError("the predictions have no 'predicted' column: not the output of 'scip predict'")
    _check_columns(on, target, labels, predictions, source)
    notes: list[str] = []
    cells, y, counts = _join(predictions, labels, on, target, None, source, notes)
    truth = np.array([str(v) for v in _target_values(y)], dtype=object)
    guess = np.array([str(_scalar(v)) for v in cells["predicted"]], dtype=object)
    names = list(dict.fromkeys([*(str(c) for c in classes), *sorted(set(truth)), *sorted(set(guess))]))
    index = {c: i for i, c in enumerate(names)}
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(confusion, ([index[t] for t in truth], [index[g] for g in guess]), 1)
    support, found = confusion.sum(axis=1), confusion.sum(axis=0)
    hits = np.diag(confusion)
    per_class = {c: {"recall": float(hits[i] / support[i]) if support[i] else None,
                     "precision": float(hits[i] / found[i]) if found[i] else None,
                     "support": int(support[i]), "predicted": int(found[i])} for c, i in index.items()}
    unknown = sorted(set(truth) - {str(c) for c in classes}) if len(classes) else []
    if unknown:
        _warn(notes, f"label class(es) {', '.join(map(repr, unknown))} are not classes of the model: their "
                     "cells cannot be predicted right")
    recalls = [per_class[c]["recall"] for c in names if support[index[c]]]
    result = {"inputs": {"labels": source, "on": on, "target": target},
              "balanced_accuracy": float(np.mean(recalls)), "accuracy": float(hits.sum() / len(truth)),
              "per_class": per_class, "classes": names, "confusion": confusion.tolist(),
              "confusion_axes": "rows: true class, columns: predicted class", "counts": counts, "warnings": notes}
    if out is not None:
        out = Path(out)
        _record_in_run(out, [out.name])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(_jsonable(result), indent=2) + "\n")
    return result
