"""Learned segmentation: a small U-Net (M2U-Net class) that ships with a nucleus model.

:func:`unet` is the ``unet`` entry of :data:`scip.segment.METHODS`. This
package imports PyTorch only when a model is used, so ``import scip`` works
without it; the submodules need it:

- :mod:`.model`: the network;
- :mod:`.modelfile`: one file holding architecture, weights and metadata;
- :mod:`.data`, :mod:`.augment`: training pairs from folders, augmentation;
- :mod:`.train`, :mod:`.trainconfig`: training, fine-tuning, the report;
- :mod:`.predict`: inference (tiles, TTA, FP16/BF16, INT8), labels;
- :mod:`.export`: ONNX export, checked with onnxruntime;
- :mod:`.score`: F1 and Jaccard indices of a set of images.

See ``docs/segmentation.md``.
"""

from __future__ import annotations

import os

import numpy as np

from scip.segment._modelfiles import ModelCheck, check

__all__ = ["unet", "micronuclei", "require_torch", "check_model", "ModelCheck", "TORCH_MISSING"]

TORCH_MISSING = "the unet method needs PyTorch: install torch (pip install 'scip[unet]')"


def require_torch() -> None:
    """Raise ``ImportError`` with the install command when PyTorch is missing."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ImportError(TORCH_MISSING) from None


def unet(
    image: np.ndarray,
    *,
    model: str | os.PathLike = "nuclei",
    device: str = "auto",
    precision: str = "auto",
    quantize: str = "none",
    runtime: str = "auto",
    tta: bool = False,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    diameter: float | None = None,
    threshold: float | None = None,
    seed_threshold: float | None = None,
    smooth: float = 0.0,
    min_size: int = 20,
    norm_range: list | None = None,
    split_merge: bool | None = None,
    median_area: float | None = None,
) -> np.ndarray:
    """Label objects with a U-Net model.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (C, H, W)
        Intensities of the channel(s) the model was trained on; any real
        dtype. Each image is normalized by its own percentiles, as in
        training.
    model : str or path, optional
        A built-in model name (``nuclei``) or a model file.
    device : {"auto", "cpu", "cuda"}, optional
        ``auto`` takes CUDA when torch sees a GPU.
    precision : {"auto", "fp32", "fp16", "bf16"}, optional
        Autocast type: ``auto`` is FP16 on CUDA, FP32 on the CPU.
    quantize : {"none", "static", "dynamic"}, optional
        INT8 on the CPU: ``static`` (calibrated on the crops stored in the
        model file; the fast one) or ``dynamic``.
    runtime : {"auto", "torch", "onnxruntime"}, optional
        What runs the network: ``auto`` takes onnxruntime for FP32 on the
        CPU when it is installed (faster, same probabilities within 1e-5),
        else PyTorch.
    tta : bool, optional
        Average the outputs over the 8 flips and 90-degree rotations.
    tile, overlap : int, optional
        Largest tile side and tile overlap in pixels, for large images.
    batch_size : int, optional
        Tiles per forward pass.
    diameter : float, optional
        Typical object diameter in pixels of this image; the image is
        rescaled so that it matches the model's training diameter.
        ``None`` uses the image as is.
    threshold, seed_threshold : float, optional
        Foreground and seed probability thresholds; ``None`` takes the
        model's own (0.5 for the shipped model).
    smooth : float, optional
        Standard deviation of a Gaussian blur of the input; 0 disables it.
    min_size : int, optional
        Objects with fewer pixels are removed.
    norm_range : list of (float, float), optional
        Per channel, the intensities (after ``smooth``) that become 0 and 1,
        instead of this image's percentiles: how windows of a large image
        share the whole image's normalization
        (:mod:`scip.segment.image_statistics`).
    split_merge : bool, optional
        Shape-gated split and merge of the nuclei after the clean-up
        (:mod:`scip.segment.unet.split_merge`): objects far above the image's
        median size split at the necks of their distance transform,
        touching pieces with a convex union or a long shared border joined.
        ``None`` does what the model file asks (the shipped ``nuclei``:
        the measured settings), ``True`` applies the measured settings
        under the file's own, ``False`` none.
    median_area : float, optional
        The object area in pixels that split/merge compares sizes with,
        instead of the median area of this image's objects: how windows of
        a large image share the whole image's (the tile engine computes it).

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        0 background, objects 1..N. A constant image has no objects.

    Raises
    ------
    ImportError
        PyTorch is not installed.
    scip.segment.unet.modelfile.ModelFileError
        Missing or unreadable model file, or an image whose channel count
        differs from the model's.
    """
    require_torch()
    from .predict import segment_image

    return segment_image(image, model, device=device, precision=precision, quantize=quantize, runtime=runtime, tta=tta,
                         tile=tile,
                         overlap=overlap, batch_size=batch_size, diameter=diameter, threshold=threshold,
                         seed_threshold=seed_threshold, smooth=smooth, min_size=min_size,
                         norm_range=norm_range, split_merge=split_merge, median_area=median_area)


def micronuclei(
    image: np.ndarray,
    *,
    model: str | os.PathLike = "nuclei",
    device: str = "auto",
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 4,
    tta: bool = False,
    threshold: float | None = None,
    min_size: int | None = None,
    base_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """Label micronuclei with a U-Net model that has a ``micronuclei`` output.

    The image is normalized and tiled as in :func:`unet`; each connected
    region of the micronucleus probability above ``threshold`` is one
    micronucleus. Micronuclei are not nuclei: :func:`unet` with the same
    model leaves them out.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (C, H, W)
        Intensities of the channel(s) the model was trained on.
    model : str or path, optional
        A built-in model name (``nuclei``) or a model file.
    device : {"auto", "cpu", "cuda"}, optional
    tile, overlap, batch_size : int, optional
        Tiling of large images, as in :func:`unet`.
    tta : bool, optional
        Average the outputs over the 8 flips and 90-degree rotations.
    threshold : float, optional
        Probability threshold; ``None`` takes the model's
        (``postprocess.micronucleus_threshold``, 0.5).
    min_size : int, optional
        Smaller regions (pixels) are dropped; ``None`` takes the model's
        (``postprocess.micronucleus_min_size``, 3).
    base_dir : path, optional
        Folder a relative model path is resolved against.

    Returns
    -------
    labels : ndarray of int32, shape (H, W)
        0 background, micronuclei 1..N.

    Raises
    ------
    ImportError
        PyTorch is not installed.
    ValueError
        The model has no ``micronuclei`` output (the message names the file).
    scip.segment.unet.modelfile.ModelFileError
        Missing or unreadable model file, or a channel mismatch.
    """
    require_torch()
    from .predict import segment_micronuclei

    return segment_micronuclei(image, model, device=device, tile=tile, overlap=overlap, batch_size=batch_size,
                               tta=tta, threshold=threshold, min_size=min_size, base_dir=base_dir)


def check_model(model: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> ModelCheck:
    """Find and read a model file for a config (cached by path and modification time).

    Raises
    ------
    ValueError
        PyTorch missing (with the install command), or the model file is
        missing or unreadable (``ModelFileError``, naming the file).
    """
    try:
        require_torch()
    except ImportError as e:
        raise ValueError(str(e)) from None
    from .modelfile import load, resolve

    return check(model, base_dir, ".pt", resolve, load)
