"""Conditioners: the Multi-scale Fusion Conditioning Module (MFCM, paper Sect. 4.2) and the plain U-Net of the ablation.

MFCM, HRNet-like (Wang et al. 2019, as in UTRNet): a full-resolution stem, then four stages; stage k keeps k parallel
streams at 1, 1/2, 1/4, 1/8 resolution. Each stage is a sequence of multi-resolution modules: residual blocks on every
stream, then a cross-resolution exchange where each stream receives the sum of all streams resampled to its
resolution (strided 3x3 convolutions down, 1x1 convolution + nearest upsampling up). Between stages a strided
convolution opens the next lower-resolution stream. The outputs F^i, one per U-Net encoder level, are the four
streams of the last exchange and, for levels below 1/8 (16 x 16 and 8 x 8 at 256 x 256), features fed by the
streams too (``low_levels="exchange"``): the first level below 1/8 receives the sum of all four streams brought down
by HRNet's strided paths, each further level a strided convolution of the level above (HRNetV2's incremental
downsampling). ``low_levels="strided"`` (weights saved before this option) extends the 1/8 stream alone by strided
convolutions. Everything here depends on the image only, so samplers compute it once per image.

``UNetConditioner`` (Table 4, "U-Net" conditioning) gives features of the same shapes from an encoder-decoder
without parallel streams, so the two can be swapped with everything else unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["ConvResBlock", "MFCM", "UNetConditioner", "conditioner_channels", "group_norm", "maybe_checkpoint"]


def maybe_checkpoint(enabled: bool, function, *args):  # noqa: ANN001, ANN201 - any callable, any outputs
    """``function(*args)``, under activation checkpointing when ``enabled`` and gradients are being recorded.

    Checkpointing keeps only the inputs of ``function`` for the backward pass and runs it again there (PyTorch's
    non-reentrant ``torch.utils.checkpoint``: closures, nested outputs and autocast work as without it): the same
    values and gradients for about one more forward pass of compute, and the activations inside ``function`` are not
    held between the forward and the backward pass.
    """
    if enabled and torch.is_grad_enabled():
        return checkpoint(function, *args, use_reentrant=False)
    return function(*args)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count dividing ``channels`` (batch-size independent, unlike BatchNorm)."""
    return nn.GroupNorm(math.gcd(groups, channels), channels, eps=1e-6)


def _conv(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> Convolution:
    return Convolution(2, cin, cout, strides=stride, kernel_size=kernel, padding=kernel // 2, conv_only=True)


def conditioner_channels(stream_channels: Sequence[int], num_levels: int) -> tuple[int, ...]:
    """Channels of F^i for each of ``num_levels`` U-Net levels: the streams, then the last width repeated."""
    widths = list(stream_channels)[:num_levels]
    return tuple(widths + [widths[-1]] * (num_levels - len(widths)))


class ConvResBlock(nn.Module):
    """Pre-activation residual block: GN-SiLU-conv3x3-GN-SiLU-conv3x3 plus a (1x1 when needed) skip.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        groups: GroupNorm groups (reduced to a divisor of the channel count).
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            group_norm(in_channels, groups),
            nn.SiLU(),
            _conv(in_channels, out_channels),
            group_norm(out_channels, groups),
            nn.SiLU(),
            _conv(out_channels, out_channels),
        )
        self.skip = nn.Identity() if in_channels == out_channels else _conv(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


def _down_path(cin: int, cout: int, steps: int, groups: int) -> nn.Sequential:
    """``steps`` strided 3x3 convolutions from ``cin`` to ``cout`` channels (HRNet's downward exchange path)."""
    layers: list[nn.Module] = []
    for k in range(steps):
        last = k == steps - 1
        layers += [_conv(cin, cout if last else cin, 3, 2), group_norm(cout if last else cin, groups)]
        if not last:
            layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class CrossResolutionExchange(nn.Module):
    """Repeated multi-scale fusion: stream j gets sum_i resample_{i->j}(x_i), then SiLU.

    Args:
        channels: widths of the streams, highest resolution first (stream i at 1 / 2**i).
        groups: GroupNorm groups.
    """

    def __init__(self, channels: Sequence[int], groups: int) -> None:
        super().__init__()
        self.paths = nn.ModuleDict()
        for j, cj in enumerate(channels):
            for i, ci in enumerate(channels):
                if i > j:  # lower resolution -> higher: 1x1 projection, nearest upsampling in forward
                    self.paths[f"{i}to{j}"] = nn.Sequential(_conv(ci, cj, 1), group_norm(cj, groups))
                elif i < j:
                    self.paths[f"{i}to{j}"] = _down_path(ci, cj, j - i, groups)
        self.num_streams = len(channels)

    def forward(self, streams: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for j in range(self.num_streams):
            total = streams[j]
            for i in range(self.num_streams):
                if i == j:
                    continue
                y = self.paths[f"{i}to{j}"](streams[i])
                if i > j:
                    y = F.interpolate(y, size=streams[j].shape[-2:], mode="nearest")
                total = total + y
            out.append(F.silu(total))
        return out


class LowLevelExchange(nn.Module):
    """Features for ``extra`` levels below the lowest stream, fed by every stream.

    Level ``n`` (one below the lowest of the ``n`` streams) is SiLU(sum_i down_{i->n}(x_i)) with HRNet's strided paths
    (:func:`_down_path`); each further level is a strided convolution of the level above.

    Args:
        channels: widths of the streams, highest resolution first.
        extra: number of levels below the lowest stream (>= 1).
        groups: GroupNorm groups.
    """

    def __init__(self, channels: Sequence[int], extra: int, groups: int) -> None:
        super().__init__()
        n, out = len(channels), channels[-1]
        self.paths = nn.ModuleList(_down_path(c, out, n - i, groups) for i, c in enumerate(channels))
        self.further = nn.ModuleList(
            nn.Sequential(_conv(out, out, 3, 2), group_norm(out, groups), nn.SiLU()) for _ in range(extra - 1)
        )

    def forward(self, streams: list[torch.Tensor]) -> list[torch.Tensor]:
        total = self.paths[0](streams[0])
        for path, x in zip(self.paths[1:], streams[1:]):
            total = total + path(x)
        levels = [F.silu(total)]
        for block in self.further:
            levels.append(block(levels[-1]))
        return levels


class MultiResolutionModule(nn.Module):
    """``blocks`` residual blocks on every stream, then one cross-resolution exchange (when there are >= 2 streams)."""

    def __init__(self, channels: Sequence[int], blocks: int, groups: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*[ConvResBlock(c, c, groups) for _ in range(blocks)]) for c in channels
        )
        self.exchange = CrossResolutionExchange(channels, groups) if len(channels) > 1 else None

    def forward(self, streams: list[torch.Tensor]) -> list[torch.Tensor]:
        streams = [branch(x) for branch, x in zip(self.branches, streams)]
        return self.exchange(streams) if self.exchange is not None else streams


class MFCM(nn.Module):
    """Multi-scale Fusion Conditioning Module: image -> conditional features F^i for every U-Net level.

    Args:
        in_channels: image channels.
        stream_channels: widths of the four streams (1, 1/2, 1/4, 1/8 resolution).
        num_levels: number of U-Net levels to serve (features below 1/8 come from strided convolutions).
        blocks: residual blocks per stream in each module.
        modules_per_stage: multi-resolution modules in stages 1-4.
        groups: GroupNorm groups.
        low_levels: levels below the 1/8 stream: ``"exchange"`` (fed by all streams, :class:`LowLevelExchange`) or
            ``"strided"`` (strided convolutions of the 1/8 stream alone; weights saved before the option).
    """

    def __init__(
        self,
        in_channels: int = 1,
        stream_channels: Sequence[int] = (32, 64, 128, 256),
        num_levels: int = 6,
        blocks: int = 2,
        modules_per_stage: Sequence[int] = (1, 1, 2, 2),
        groups: int = 32,
        low_levels: str = "exchange",
    ) -> None:
        super().__init__()
        c = list(stream_channels)
        self.out_channels = conditioner_channels(c, num_levels)
        self.stem = nn.Sequential(_conv(in_channels, c[0]), group_norm(c[0], groups), nn.SiLU(), _conv(c[0], c[0]))
        self.stages = nn.ModuleList()
        self.transitions = nn.ModuleList()
        for k, n_modules in enumerate(modules_per_stage):
            if k > 0:  # open stream k from stream k-1
                self.transitions.append(nn.Sequential(_conv(c[k - 1], c[k], 3, 2), group_norm(c[k], groups), nn.SiLU()))
            self.stages.append(
                nn.Sequential(*[MultiResolutionModule(c[: k + 1], blocks, groups) for _ in range(n_modules)])
            )
        if low_levels not in ("exchange", "strided"):
            raise ValueError(f"low_levels must be 'exchange' or 'strided', got {low_levels!r}")
        extra = max(num_levels - len(c), 0)
        self.low_exchange = LowLevelExchange(c, extra, groups) if extra and low_levels == "exchange" else None
        self.extensions = nn.ModuleList(
            nn.Sequential(_conv(c[-1], c[-1], 3, 2), group_norm(c[-1], groups), nn.SiLU())
            for _ in range(extra if low_levels == "strided" else 0)
        )
        self.num_levels = num_levels
        #: activation checkpointing of the stem, each transition, each multi-resolution module and the low exchange
        self.gradient_checkpointing = False

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        ckpt = self.gradient_checkpointing
        streams = [maybe_checkpoint(ckpt, self.stem, image)]
        for k, stage in enumerate(self.stages):
            if k > 0:
                streams = streams + [maybe_checkpoint(ckpt, self.transitions[k - 1], streams[-1])]
            for module in stage:
                streams = maybe_checkpoint(ckpt, module, streams)
        features = streams[: self.num_levels]
        if self.low_exchange is not None:
            features.extend(maybe_checkpoint(ckpt, self.low_exchange, streams))
        for extension in self.extensions:
            features.append(extension(features[-1]))
        return features


class UNetConditioner(nn.Module):
    """Plain encoder-decoder conditioner (the paper's "U-Net" ablation): decoder features at every level.

    Args:
        in_channels: image channels.
        out_channels: feature widths per U-Net level (same as the MFCM's, see :func:`conditioner_channels`).
        blocks: residual blocks per level on each path.
        groups: GroupNorm groups.
    """

    def __init__(self, in_channels: int, out_channels: Sequence[int], blocks: int = 2, groups: int = 32) -> None:
        super().__init__()
        c = list(out_channels)
        self.out_channels = tuple(c)
        self.conv_in = _conv(in_channels, c[0])
        self.down = nn.ModuleList(
            nn.Identity() if i == 0 else nn.Sequential(_conv(c[i - 1], c[i], 3, 2), group_norm(c[i], groups), nn.SiLU())
            for i in range(len(c))
        )
        self.encoder = nn.ModuleList(nn.Sequential(*[ConvResBlock(ci, ci, groups) for _ in range(blocks)]) for ci in c)
        self.up = nn.ModuleList(_conv(c[i + 1], c[i], 1) for i in range(len(c) - 1))
        self.decoder = nn.ModuleList(
            nn.Sequential(
                ConvResBlock(2 * c[i], c[i], groups), *[ConvResBlock(c[i], c[i], groups) for _ in range(blocks - 1)]
            )
            for i in range(len(c) - 1)
        )
        #: activation checkpointing of each encoder and decoder level
        self.gradient_checkpointing = False

    def _decode(self, i: int, h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(self.up[i](h), size=skip.shape[-2:], mode="nearest")
        return self.decoder[i](torch.cat([h, skip], dim=1))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        ckpt = self.gradient_checkpointing
        h = self.conv_in(image)
        skips = []
        for down, enc in zip(self.down, self.encoder):
            h = maybe_checkpoint(ckpt, lambda x, d=down, e=enc: e(d(x)), h)
            skips.append(h)
        features = [h]
        for i in range(len(skips) - 2, -1, -1):
            h = maybe_checkpoint(ckpt, self._decode, i, h, skips[i])
            features.insert(0, h)
        return features
