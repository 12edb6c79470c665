"""The network: a MobileNetV2-style encoder and a light U-Net decoder (M2U-Net class).

The encoder is a stack of inverted residual blocks (1x1 expansion, 3x3
depthwise convolution, 1x1 linear projection), which keeps the parameter
count and the arithmetic small. The decoder upsamples by 2 at each level,
concatenates the encoder features of that resolution and mixes them with a
cheap block of the same kind; the last level also sees the input image.

Two output channels, as logits:

- 0, *foreground*: the pixel belongs to an object;
- 1, *centre*: the object's distance transform, divided by its maximum, so
  1 at the centre of every object and near 0 at its edge and where two
  objects touch. Seeds taken from it split touching objects.

A model trained with micronucleus labels has a third, ``micronuclei``
(:data:`MICRONUCLEI`): the pixel belongs to a micronucleus (which is
background for the first two).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Architecture", "UNet", "OUTPUTS", "MICRONUCLEI", "block_names"]

#: Names of the output channels, in order.
OUTPUTS = ("foreground", "centre")

#: Name of the optional third output channel.
MICRONUCLEI = "micronuclei"


@dataclass(frozen=True)
class Architecture:
    """Hyper-parameters that define the network's shape.

    Attributes
    ----------
    in_channels : int
        Channels of the input image.
    stem : int
        Channels of the first convolution (stride 2).
    stages : list of (int, int, int, int)
        Encoder stages as ``(expansion, channels, repeats, stride)``; the
        first block of a stage has the stride, the others stride 1.
    decoder : list of int
        Output channels of the decoder blocks, from the deepest level to full
        resolution; one per stride-2 step of the encoder (stem included).
    out_channels : int
        Output channels; :data:`OUTPUTS` names them.
    """

    in_channels: int = 1
    stem: int = 16
    stages: list = field(default_factory=lambda: [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 3, 2),
                                                  (6, 96, 2, 1)])
    decoder: list = field(default_factory=lambda: [48, 32, 24, 16])
    out_channels: int = len(OUTPUTS)

    def to_dict(self) -> dict:
        """Plain types only, for the model file."""
        return {k: [list(s) for s in v] if k == "stages" else (list(v) if isinstance(v, list) else v)
                for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Architecture":
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError``."""
        d = dict(d)
        if "stages" in d:
            d["stages"] = [tuple(int(x) for x in s) for s in d["stages"]]
        if "decoder" in d:
            d["decoder"] = [int(c) for c in d["decoder"]]
        return cls(**d)


class ConvBN(nn.Sequential):
    """Convolution without bias, batch norm, optional ReLU6."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                                   nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """Expand (1x1), depthwise 3x3 (with the stride), project (1x1, linear); residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int):
        super().__init__()
        hidden = cin * expansion
        layers: list[nn.Module] = [] if expansion == 1 else [ConvBN(cin, hidden)]
        layers += [ConvBN(hidden, hidden, 3, stride, groups=hidden), ConvBN(hidden, cout, act=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class DecoderBlock(nn.Module):
    """Upsample by 2, concatenate the skip features, mix: 1x1, depthwise 3x3, 1x1 with a residual."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.reduce = ConvBN(cin + cskip, cout)
        self.mix = nn.Sequential(ConvBN(cout, cout, 3, groups=cout), ConvBN(cout, cout, act=False))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = self.reduce(torch.cat([x, skip], dim=1))
        return x + self.mix(x)


class UNet(nn.Module):
    """M2U-Net-class segmentation network.

    Parameters
    ----------
    arch : Architecture
        Shape of the network.

    Notes
    -----
    Input height and width must be multiples of ``2 ** levels`` (16 with
    the default architecture, :attr:`multiple`); :mod:`.predict` pads.
    """

    def __init__(self, arch: Architecture):
        super().__init__()
        self.arch = arch
        self.stem = ConvBN(arch.in_channels, arch.stem, 3, 2)
        blocks, cin = [], arch.stem
        # Encoder features are kept for the decoder at the end of every resolution.
        skip_after, skip_channels = [], []
        for expansion, cout, repeats, stride in arch.stages:
            if stride == 2 and blocks:
                skip_after.append(len(blocks) - 1)
                skip_channels.append(cin)
            elif stride == 2:  # the stem's own output is the first skip
                skip_after.append(-1)
                skip_channels.append(cin)
            for i in range(repeats):
                blocks.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expansion))
                cin = cout
        self.encoder = nn.ModuleList(blocks)
        self._skip_after = tuple(skip_after)
        levels = len(skip_after) + 1  # plus the input image itself, at full resolution
        if len(arch.decoder) != levels:
            raise ValueError(f"decoder needs {levels} widths (one per stride-2 step), got {len(arch.decoder)}")
        skips = [arch.in_channels] + skip_channels
        decoder = []
        for cout, cskip in zip(arch.decoder, reversed(skips)):
            decoder.append(DecoderBlock(cin, cskip, cout))
            cin = cout
        self.decoder = nn.ModuleList(decoder)
        self.head = nn.Conv2d(cin, arch.out_channels, 1)
        self.multiple = 2 ** levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape ``(N, out_channels, H, W)`` for an input ``(N, in_channels, H, W)``."""
        skips = [x]
        y = self.stem(x)
        if -1 in self._skip_after:
            skips.append(y)
        for i, block in enumerate(self.encoder):
            y = block(y)
            if i in self._skip_after:
                skips.append(y)
        for block, skip in zip(self.decoder, reversed(skips)):
            y = block(y, skip)
        return self.head(y)


def block_names(model: UNet) -> list[str]:
    """The network's blocks in order from input to output, as parameter-name prefixes.

    Freezing schedules count "the last k layers" in this list.
    """
    return (["stem"] + [f"encoder.{i}" for i in range(len(model.encoder))]
            + [f"decoder.{i}" for i in range(len(model.decoder))] + ["head"])
