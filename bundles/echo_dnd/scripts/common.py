"""Small helpers shared by the Echo-DND scripts: input checks, schedule look-ups, the error type, logging, flags and
the configs' checks (:func:`check_arguments`, :func:`check_bundle_root`; :func:`install_bad_input_hook`: bad input on
the command line -> one line on stderr and exit status 2, no traceback).

The bundle's ``scripts`` package stays importable on its own: when the ``echogains`` toolkit is installed its
:class:`EchoDataError` and logger are used, otherwise local stand-ins with the same behaviour.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


__all__ = [
    "ProgressBar",
    "EchoDataError",
    "get_logger",
    "gather",
    "check_image",
    "check_mask",
    "timestep_pairs",
    "as_bool",
    "bad_input_line",
    "check_arguments",
    "check_bundle_root",
    "install_bad_input_hook",
    "ARGUMENT_CHECKS",
    "CHOICE_CHECKS",
]


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


# --- the configs' entry point ---------------------------------------------------------------------------------------
#: Config values checked by :func:`check_arguments` (when the config has them), before anything is built or written:
#: name -> ("int" | "float", lowest, highest (None: unbounded), None allowed, lowest excluded).
ARGUMENT_CHECKS: dict[str, tuple[str, float, float | None, bool, bool]] = {
    "num_steps": ("int", 1, None, False, False),
    "ensemble": ("int", 1, None, False, False),
    "batch_size": ("int", 1, None, False, False),
    "seed": ("int", 0, None, False, False),
    "label_value": ("int", 1, 255, False, False),
    "fold": ("int", 0, None, True, False),
    "steps": ("int", 1, None, False, False),
    "val_every": ("int", 0, None, False, False),
    "val_steps": ("int", 1, None, False, False),
    "save_every": ("int", 1, None, False, False),
    "image_size": ("int", 16, None, True, False),
    "lr": ("float", 0.0, None, False, True),
    "weight_decay": ("float", 0.0, None, False, False),
    "ema_decay": ("float", 0.0, 1.0, False, False),
}
#: Arguments that take one of a few words: name -> the words (the sampler's ``fusion`` and ``uncertainty``).
CHOICE_CHECKS: dict[str, tuple[str, ...]] = {"fusion": ("reliability", "staple"), "uncertainty": ("soft", "votes")}
#: Input paths that must exist: name -> (what it is, must be a file).
PATH_CHECKS: dict[str, tuple[str, bool]] = {"dataset_dir": ("input", False), "model_path": ("model weights", True)}
#: Output folders: may be missing (they are made), must not be files.
OUTPUT_DIRS = ("output_dir", "pred_dir", "report_dir")


def _number(name: str, value: Any, rule: tuple[str, float, float | None, bool, bool]) -> None:
    kind, low, high, none_ok, open_low = rule
    if value is None and none_ok:
        return
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    ok = ok and (float(value) > low if open_low else float(value) >= low) and (high is None or float(value) <= high)
    if not ok:
        wanted = "an integer" if kind == "int" else "a number"
        bounds = f"> {low:g}" if open_low else f">= {low:g}"
        if high is not None:
            bounds = f"in {low:g}..{high:g}"
        raise EchoDataError(None, f"--{name}: expected {wanted} {bounds}{' or None' if none_ok else ''}, got {value!r}")


def check_arguments(values: Mapping[str, Any]) -> None:
    """Check the bundle arguments in ``values`` (config id -> parsed value); nothing is read or written but stat calls.

    Raises:
        EchoDataError: the first bad argument, naming it (``--num_steps: ...``) or the missing file.
    """
    outside = False  # the bundle root is not the bundle: a missing default path says how to fix it
    if "bundle_root" in values:
        try:
            check_bundle_root(values["bundle_root"])
        except EchoDataError:
            outside = True
    for name, rule in ARGUMENT_CHECKS.items():
        if name in values:
            _number(name, values[name], rule)
    for name, words in CHOICE_CHECKS.items():
        if name in values and values[name] not in words:
            raise EchoDataError(None, f"--{name}: expected one of {', '.join(words)}, got {values[name]!r}")
    for name, (what, file) in PATH_CHECKS.items():
        if name in values:
            path = Path(str(values[name]))
            if not path.exists():
                hint = "; run from the bundle folder or pass --bundle_root <bundles/echo_dnd>" if outside else ""
                raise EchoDataError(path, f"{what} not found (--{name}){hint}")
            if file and not path.is_file():
                raise EchoDataError(path, f"{what}: expected a file, got a folder (--{name})")
    for name in OUTPUT_DIRS:
        if name in values and Path(str(values[name])).exists() and not Path(str(values[name])).is_dir():
            raise EchoDataError(values[name], f"exists and is not a folder (--{name})")
    device = values.get("device")
    if device is not None:
        try:
            parsed = torch.device(str(device))
        except (RuntimeError, ValueError) as err:
            raise EchoDataError(None, f"--device: {err}") from err
        if parsed.type == "cuda" and not torch.cuda.is_available():
            raise EchoDataError(None, f"--device {device}: CUDA is not available on this machine")


def _bad_input(err: BaseException) -> EchoDataError | None:
    """The :class:`EchoDataError` in ``err``'s chain of causes (MONAI wraps it in ``RuntimeError``s), if any."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, EchoDataError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def bad_input_line(err: BaseException) -> str | None:
    """``echo_dnd: error: <file or --argument>: <problem>`` (one line) for bad input in ``err``'s chain, or ``None``."""
    bad = _bad_input(err)
    if bad is None:
        return None
    return "echo_dnd: error: " + " ".join(part.strip() for part in str(bad).splitlines() if part.strip())


def install_bad_input_hook() -> None:
    """Make bad input end the process with one line on stderr and exit status 2, without a traceback.

    The configs call it first in their run sections. ``python -m monai.bundle run`` wraps every error of a config in
    ``RuntimeError: Failed to evaluate/instantiate ...``; an uncaught exception whose chain holds an
    :class:`EchoDataError` is printed by :func:`bad_input_line` instead of the traceback. Other errors keep Python's
    traceback. Called in a Python session (``monai.bundle.run(...)`` in-process), nothing changes: the exception
    propagates to the caller as usual. Idempotent.
    """
    previous = sys.excepthook
    if getattr(previous, "_echo_dnd", False):
        return

    def hook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        line = bad_input_line(value)
        if line is None:
            previous(kind, value, tb)
            return
        sys.stdout.flush()
        print(line, file=sys.stderr, flush=True)
        raise SystemExit(2)

    hook._echo_dnd = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def as_bool(value: bool | int | str, name: str) -> bool:
    """A flag from a config (JSON ``true``/``false``) or the command line, parsed here once.

    ``python -m monai.bundle run ... --progress False`` gives the bool; ``--progress false`` gives the string
    ``"false"`` (fire parses Python words only), so yes/no words are accepted too.

    Args:
        value: a bool, a number or a yes/no word (``true``/``false``, ``yes``/``no``, ``on``/``off``, ``1``/``0``).
        name: how an error names the flag.

    Raises:
        EchoDataError: a string that is not a yes/no word.
    """
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off", "none", ""):
            return False
        raise EchoDataError(None, f"--{name}: expected true or false, got {value!r}")
    return bool(value)


def check_bundle_root(bundle_root: str | os.PathLike) -> Path:
    """The bundle folder ``bundle_root`` (``"."`` by default: the working folder), checked.

    Raises:
        EchoDataError: it is not the Echo-DND bundle (no ``configs/metadata.json`` and ``scripts/``): the message says
            to run from the bundle folder or to pass ``--bundle_root``.
    """
    root = Path(bundle_root)
    if not (root / "configs" / "metadata.json").is_file() or not (root / "scripts" / "__init__.py").is_file():
        raise EchoDataError(
            root.resolve(),
            "not the Echo-DND bundle folder (no configs/metadata.json and scripts/); run from the bundle folder "
            "or pass --bundle_root <path to bundles/echo_dnd>",
        )
    return root


class ProgressBar:
    """Ignite's tqdm ``ProgressBar`` for a MONAI engine, on rank 0 when ``enabled`` (and ``ECHOGAINS_NO_PROGRESS`` is
    unset); otherwise it attaches nothing.

    Args:
        enabled: show it (the configs' ``progress``; words such as ``"false"`` are read by :func:`as_bool`).
        desc: the bar's label.
        loss_key: the key of the engine's output shown as ``loss`` (``None``: nothing shown but the count).
    """

    def __init__(self, enabled: Any = True, desc: str = "Echo-DND", loss_key: str | None = None) -> None:
        self.enabled, self.desc, self.loss_key = as_bool(enabled, "progress"), str(desc), loss_key

    def attach(self, engine: Any) -> None:
        import ignite.distributed as idist
        from ignite.handlers import ProgressBar as IgniteProgressBar

        if not self.enabled or idist.get_rank() != 0 or os.environ.get("ECHOGAINS_NO_PROGRESS"):
            return
        bar = IgniteProgressBar(persist=True, desc=self.desc)
        key = self.loss_key
        if key is None:
            bar.attach(engine)
        else:
            bar.attach(engine, output_transform=lambda out: {"loss": float(out[key])})
