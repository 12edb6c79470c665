"""Random crops and augmentations of (normalized image, targets) pairs.

Geometric changes (crop, scale, flips, 90-degree rotations) apply to the
image and its targets together; intensity changes (blur, background
gradient, gain, offset, gamma, noise) to the image only. Scale, blur and
background imitate another lab's magnification, focus and illumination. Rotations are optional because some microscopes (imaging flow
cytometry, line scanners) have a preferred direction that the model may use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage as ndi
from torch.nn import functional as F

__all__ = ["Augment", "random_crop", "augment"]


@dataclass(frozen=True)
class Augment:
    """What :func:`augment` may do.

    Attributes
    ----------
    flips : bool
        Random horizontal and vertical flips.
    rotate90 : bool
        Random rotations by multiples of 90 degrees.
    gain : (float, float)
        Range of a random factor on the normalized intensities.
    offset : float
        Largest absolute random offset added to them.
    gamma : (float, float)
        Range of a random gamma applied to the positive part of the image.
    noise : float
        Largest standard deviation of added Gaussian noise.
    scale : (float, float)
        Range of a random zoom factor (sampled uniformly in log scale); a
        crop of ``size / factor`` pixels is resized to ``size``. ``(1, 1)``
        disables it.
    blur : float
        Largest standard deviation in pixels of a Gaussian blur, applied to
        half of the crops; 0 disables it.
    background : float
        Largest amplitude of a linear intensity ramp in a random direction
        (uneven illumination); 0 disables it.
    """

    flips: bool = True
    rotate90: bool = True
    gain: tuple[float, float] = (0.7, 1.3)
    offset: float = 0.1
    gamma: tuple[float, float] = (0.7, 1.4)
    noise: float = 0.05
    scale: tuple[float, float] = (1.0, 1.0)
    blur: float = 0.0
    background: float = 0.0


def random_crop(image: np.ndarray, target: np.ndarray, size: int,
                rng: np.random.Generator, scale: tuple[float, float] = (1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` window at a random place, padded with zeros where the image is smaller.

    Parameters
    ----------
    image : ndarray, shape (C, H, W)
    target : ndarray, shape (T, H, W)
    size : int
    rng : numpy.random.Generator
    scale : (float, float)
        Range of a random zoom factor: a window of ``size / factor`` pixels
        is cut and resized (bilinear) to ``size``, so objects appear
        ``factor`` times larger. Targets are resized bilinearly too (soft
        values at the edges).

    Returns
    -------
    image, target : ndarrays of shape (C, size, size) and (T, size, size)
    """
    if scale[0] != 1.0 or scale[1] != 1.0:
        factor = float(np.exp(rng.uniform(np.log(scale[0]), np.log(scale[1]))))
        side = max(8, int(round(size / factor)))
        if side != size:
            img, tgt = random_crop(image, target, side, rng)
            both = torch.from_numpy(np.ascontiguousarray(np.concatenate([img, tgt]), dtype=np.float32))[None]
            both = F.interpolate(both, size=(size, size), mode="bilinear", align_corners=False,
                                 antialias=side > size)[0].numpy()
            return both[:img.shape[0]], both[img.shape[0]:]
    h, w = image.shape[-2:]
    top = int(rng.integers(0, max(h - size, 0) + 1))
    left = int(rng.integers(0, max(w - size, 0) + 1))
    img = image[:, top:top + size, left:left + size]
    tgt = target[:, top:top + size, left:left + size]
    if img.shape[-2:] != (size, size):
        pad = ((0, 0), (0, size - img.shape[1]), (0, size - img.shape[2]))
        img, tgt = np.pad(img, pad), np.pad(tgt, pad)
    return img, tgt


def augment(image: np.ndarray, target: np.ndarray, aug: Augment,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random augmentation of a crop (copies; the inputs are not changed).

    Parameters
    ----------
    image : ndarray, shape (C, H, W)
        Normalized intensities (about 0 to 1).
    target : ndarray, shape (T, H, W)
    aug : Augment
    rng : numpy.random.Generator

    Returns
    -------
    image, target : float32 ndarrays, contiguous
    """
    if aug.flips:
        if rng.random() < 0.5:
            image, target = image[:, ::-1], target[:, ::-1]
        if rng.random() < 0.5:
            image, target = image[:, :, ::-1], target[:, :, ::-1]
    if aug.rotate90:
        k = int(rng.integers(0, 4))
        image, target = np.rot90(image, k, axes=(1, 2)), np.rot90(target, k, axes=(1, 2))
    image = np.array(image, dtype=np.float32)
    if aug.blur > 0 and rng.random() < 0.5:
        sigma = rng.uniform(0, aug.blur)
        image = np.stack([ndi.gaussian_filter(ch, sigma, mode="nearest") for ch in image])
    if aug.background > 0:
        angle = rng.uniform(0, 2 * np.pi)
        h, w = image.shape[1:]
        ramp = (np.cos(angle) * np.linspace(-0.5, 0.5, w)[None, :] + np.sin(angle) * np.linspace(-0.5, 0.5, h)[:, None])
        image = image + (rng.uniform(0, aug.background) * ramp).astype(np.float32)[None]
    gamma = rng.uniform(*aug.gamma)
    positive = image > 0
    image[positive] = image[positive] ** gamma
    image = image * rng.uniform(*aug.gain) + rng.uniform(-aug.offset, aug.offset)
    if aug.noise > 0:
        image += rng.normal(0.0, rng.uniform(0, aug.noise), image.shape).astype(np.float32)
    return image, np.ascontiguousarray(target, dtype=np.float32)
