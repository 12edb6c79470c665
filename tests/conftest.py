from pathlib import Path

import numpy as np
import pytest
import tifffile

DATA = Path(__file__).parent / "data"


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
