import csv
import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import numpy as np
import pytest
import tifffile

DATA = Path(__file__).parent / "data"

#: Set (to anything but "" or "0") where every reference must be present: CI (.ci/run) sets it, so that a
#: reference that failed to install fails its tests instead of skipping them and leaving CI green.
REQUIRE_REFERENCES = "SCIP_REQUIRE_REFERENCES"


def references_required() -> bool:
    """Whether ``SCIP_REQUIRE_REFERENCES`` turns a missing reference into a failure."""
    return os.environ.get(REQUIRE_REFERENCES, "") not in ("", "0")


def missing_reference(what: str) -> NoReturn:
    """Skip the calling test (or module) for want of ``what``; fail it under ``SCIP_REQUIRE_REFERENCES``.

    Parameters
    ----------
    what : str
        The missing package or program and why, as the skip or failure message shows it.
    """
    if references_required():
        pytest.fail(f"{what} ({REQUIRE_REFERENCES} is set: a missing reference fails the test)", pytrace=False)
    pytest.skip(f"{what} (set {REQUIRE_REFERENCES}=1 to fail instead)", allow_module_level=True)


def require(module: str) -> ModuleType:
    """Import a reference package for a comparison test: ``pytest.importorskip`` that CI can make strict.

    Parameters
    ----------
    module : str
        Dotted module name, e.g. ``"cellpose.dynamics"``.

    Returns
    -------
    ModuleType
        The imported module. Without it the test (or, at module level, the module) is skipped, or
        fails when the environment variable ``SCIP_REQUIRE_REFERENCES`` is set.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing_reference(f"reference {module!r} cannot be imported: {error}")


def data_source(file: str) -> dict[str, str]:
    """The recorded origin of a file in ``tests/data`` (its row of ``tests/data/sources.csv``).

    Parameters
    ----------
    file : str
        Path relative to ``tests/data``, e.g. ``"mnfinder/rpe1_2198_crop.tif"``.

    Returns
    -------
    dict
        ``source`` (path in the shared data folder), ``image`` (the image's name as ``scip train`` records
        it in a model's ``train_images``), ``rows`` and ``cols`` (the window cut out, empty for a whole image).
    """
    with open(DATA / "sources.csv", newline="") as f:
        rows = {row["file"]: row for row in csv.DictReader(f)}
    if file not in rows:
        raise KeyError(f"{file} is not recorded in {DATA / 'sources.csv'}")
    return rows[file]


def assert_held_out(file: str, training: dict) -> None:
    """Assert that the image ``file`` was cut from was neither trained on nor used to choose the model.

    Parameters
    ----------
    file : str
        A test image, relative to ``tests/data``.
    training : dict
        The ``training`` section of a model file's metadata (``train_images``, ``validation_images``).
    """
    # An empty list would make the check pass for any image.
    assert training.get("train_images"), "the model file records no train_images"
    seen = set(training["train_images"]) | set(training.get("validation_images") or [])
    image = data_source(file)["image"]
    assert image not in seen, f"{file} is cut from {image}, an image the model saw in training"
    # Keys repeat across splits (mnfinder's 1.tif); newer model files also list the files themselves.
    source = data_source(file)["source"]
    files = {f.replace("\\", "/") for f in training.get("train_files") or []}
    assert not any(f.endswith("/" + source) for f in files), f"{file} is cut from {source}, a training file of the model"


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def blobs_tiff(tmp_path) -> Path:
    """A folder with one 2-channel TIFF holding a few well-separated bright disks."""
    folder = tmp_path / "images"
    folder.mkdir()
    tifffile.imwrite(folder / "good.tif", make_blobs())
    return folder


def make_blobs(seed: int = 0, n: int = 4, size: int = 96) -> np.ndarray:
    """``(2, size, size)`` uint16 image with ``n`` disks of radius 7 away from the border."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = np.zeros((2, size, size), np.float64)
    centers = [(20 + 50 * (i // 2), 20 + 50 * (i % 2)) for i in range(n)]
    for r, c in centers:
        disk = (yy - r) ** 2 + (xx - c) ** 2 <= 49
        img[0][disk] = 1000
        img[1][disk] = 400 + 50 * rng.random()
    img += rng.normal(100, 5, img.shape)
    return img.clip(0).astype(np.uint16)
