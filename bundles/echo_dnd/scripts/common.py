"""Small helpers shared by the Echo-DND scripts: input checks, schedule look-ups, the error type and logging.

The bundle's ``scripts`` package stays importable on its own: when the ``echogains`` toolkit is installed its
:class:`EchoDataError` and logger are used, otherwise local stand-ins with the same behaviour.
"""

from __future__ import annotations

import logging
import os

import torch

try:  # the toolkit's error type, so that callers can catch one class everywhere
    from echogains.utils import EchoDataError, get_logger
except ImportError:  # pragma: no cover - the bundle used without the toolkit

    class EchoDataError(ValueError):  # type: ignore[no-redef]
        """Bad input: the message names the file (or argument) and the problem."""

        def __init__(self, path: str | os.PathLike | None, problem: str):
            self.path = None if path is None else str(path)
            self.problem = problem
            super().__init__(f"{self.path}: {problem}" if self.path else problem)

    def get_logger(name: str = "echo_dnd") -> logging.Logger:  # type: ignore[no-redef]
        """Return a standard library logger."""
        return logging.getLogger(name)


__all__ = ["EchoDataError", "get_logger", "gather", "check_image", "check_mask", "timestep_pairs"]


def gather(table: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Pick ``table[t]`` per sample and shape it to broadcast against ``like`` (``(B, 1, 1, ...)``).

    Args:
        table: 1-D schedule table (any device, usually float64 on CPU).
        t: integer timesteps, shape ``(B,)``; ``-1`` is not allowed here (see the processes' ``*_prev`` tables).
        like: tensor whose device, dtype and rank the result follows.
    """
    values = table.to(t.device)[t.long()]
    return values.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def check_image(image: torch.Tensor, channels: int, divisor: int, name: str = "image") -> None:
    """Raise :class:`EchoDataError` unless ``image`` is a finite ``(B, channels, H, W)`` batch with H, W divisible.

    Args:
        image: the network input.
        channels: expected channel count.
        divisor: H and W must be multiples of this (``2 ** (levels - 1)`` of the U-Nets).
        name: how the message names the input.
    """
    if not torch.is_tensor(image) or image.ndim != 4:
        shape = tuple(image.shape) if torch.is_tensor(image) else type(image).__name__
        raise EchoDataError(name, f"expected a (batch, channel, H, W) tensor, got {shape}")
    if image.shape[1] != channels:
        raise EchoDataError(name, f"expected {channels} channel(s), got {image.shape[1]} (shape {tuple(image.shape)})")
    h, w = image.shape[-2:]
    if h % divisor or w % divisor:
        raise EchoDataError(name, f"H and W must be multiples of {divisor}, got {h}x{w}; pad or resize first")
    if not image.is_floating_point():
        raise EchoDataError(name, f"expected a floating-point tensor, got {image.dtype}")
    if not torch.isfinite(image).all():
        raise EchoDataError(name, "contains NaN or Inf")


def check_mask(mask: torch.Tensor, image: torch.Tensor, name: str = "mask") -> None:
    """Raise :class:`EchoDataError` unless ``mask`` is a binary ``(B, 1, H, W)`` batch matching ``image``.

    Args:
        mask: the ground-truth mask (0 background, 1 left ventricle).
        image: the image batch it belongs to.
        name: how the message names the input.
    """
    if not torch.is_tensor(mask) or mask.ndim != 4 or mask.shape[1] != 1:
        shape = tuple(mask.shape) if torch.is_tensor(mask) else type(mask).__name__
        raise EchoDataError(name, f"expected a (batch, 1, H, W) tensor, got {shape}")
    if mask.shape[0] != image.shape[0] or mask.shape[-2:] != image.shape[-2:]:
        raise EchoDataError(name, f"shape {tuple(mask.shape)} does not match the image {tuple(image.shape)}")
    if not ((mask == 0) | (mask == 1)).all():
        raise EchoDataError(name, "must be binary (0 background, 1 left ventricle); remap the labels first")


def timestep_pairs(num_train_timesteps: int, num_steps: int) -> list[tuple[int, int]]:
    """The ``(t, t_prev)`` pairs of a ``num_steps`` sampling chain over ``0 .. T-1`` (0-based, MONAI's convention).

    The visited timesteps are MONAI's ``set_timesteps`` grid, ``round(linspace(T-1, 0, n))``; each step goes to the
    next visited timestep and the last one to ``-1`` (the clean sample, ``alpha_bar = 1``). MONAI's ``DDIMScheduler``
    instead steps to ``t - T // n``, which disagrees with its own grid unless ``n`` divides ``T - 1`` evenly.

    Args:
        num_train_timesteps: T of the trained model.
        num_steps: 1 .. T network evaluations.
    """
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in 1..{num_train_timesteps} (the trained T), got {num_steps}")
    grid = torch.linspace(num_train_timesteps - 1, 0, num_steps, dtype=torch.float64).round().long().tolist()
    if num_steps == 1:
        grid = [num_train_timesteps - 1]
    if any(a <= b for a, b in zip(grid, grid[1:])):  # cannot happen for n <= T; kept as a guard
        raise ValueError(f"timestep grid for {num_steps} steps is not strictly decreasing: {grid}")
    return list(zip(grid, grid[1:] + [-1]))
