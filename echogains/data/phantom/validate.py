"""Validation of ``make_phantom``'s arguments: everything is checked before the first byte is written.

:func:`validate_arguments` turns the raw arguments into a :class:`PhantomConfig` or raises
:class:`~echogains.utils.EchoDataError` naming the first bad one (the CLI shows the message as is).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from echogains.data.labels import parse_labels
from echogains.data.phantom.anatomy import PRESETS, QUALITIES
from echogains.utils import EchoDataError, check_output_dir

__all__ = ["LAYOUTS", "PhantomConfig", "validate_arguments"]

#: the layouts ``make_phantom`` writes (their writers are registered in :data:`.layouts.LAYOUT_WRITERS`).
LAYOUTS: tuple[str, ...] = ("camus-nifti", "camus-mhd", "echonet", "nnunet", "dicom")

#: overrides given as a value or a (low, high) range, with their allowed bounds.
_RANGE_OVERRIDES: dict[str, tuple[float, float]] = {
    "depth_mm": (60.0, 300.0),
    "opening_deg": (20.0, 120.0),
    "tilt_deg": (-40.0, 40.0),
    "apex_depth_mm": (5.0, 80.0),
    "heart_angle_deg": (-40.0, 40.0),
    "axis_angle_deg": (-40.0, 40.0),
    "ef_percent": (5.0, 85.0),
}
_OTHER_OVERRIDES = ("n_frames", "quality", "anisotropy", "spacing", "cycle_frames", "fps", "n_beats")
#: overrides of the loop layouts only (not passed to ``sample_params``).
_LOOP_OVERRIDES = ("cycle_frames", "fps", "n_beats")


@dataclass(frozen=True)
class PhantomConfig:
    """Validated arguments of :func:`echogains.data.phantom.make_phantom`."""

    out_dir: Path
    n_patients: int
    preset: str
    layout: str
    seed: int
    sequence: bool
    labels: tuple[str, ...]
    image_size: tuple[int, int] | None
    overwrite: bool
    progress: bool
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def render_overrides(self) -> dict[str, Any]:
        """Overrides understood by :func:`echogains.data.phantom.sample_params`."""
        return {k: v for k, v in self.overrides.items() if k not in _LOOP_OVERRIDES}


# ----------------------------------------------------------------------------------------------------------
# Validation (everything is checked before the first byte is written)
# ----------------------------------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return bool(np.isfinite(value))


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if not _is_int(value) or not lo <= int(value) <= hi:
        raise EchoDataError(None, f"--{name}: expected an integer in {lo}..{hi}, got {value!r}")
    return int(value)


def _check_range(name: str, value: Any, bounds: tuple[float, float]) -> float | tuple[float, float]:
    """A number, or a ``(low, high)`` pair, inside ``bounds``."""
    lo, hi = bounds
    if _is_number(value):
        if not lo <= float(value) <= hi:
            raise EchoDataError(None, f"--{name}: {value!r} is outside {lo:g}..{hi:g}")
        return float(value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value):
        a, b = float(value[0]), float(value[1])
        if not lo <= a <= b <= hi:
            raise EchoDataError(None, f"--{name}: range {value!r} must satisfy {lo:g} <= low <= high <= {hi:g}")
        return (a, b)
    raise EchoDataError(None, f"--{name}: expected a number or a (low, high) pair, got {value!r}")


def _check_image_size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if _is_int(value):
        value = (value, value)
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) for v in value)):
        raise EchoDataError(None, f"--image_size: expected (rows, cols) integers, got {value!r}")
    rows, cols = (int(v) for v in value)
    if not (32 <= rows <= 4096 and 32 <= cols <= 4096):
        raise EchoDataError(None, f"--image_size: rows and cols must lie in 32..4096, got {value!r}")
    return rows, cols


def _check_other_override(name: str, value: Any) -> Any:
    if name == "n_frames" and isinstance(value, (list, tuple)) and len(value) == 2:
        low, high = (_check_int(name, v, 2, 200) for v in value)
        if low > high:
            raise EchoDataError(None, f"--n_frames: range {value!r} has low > high")
        return (low, high)
    if name == "n_beats":
        return _check_int(name, value, 1, 50)
    if name in ("n_frames", "cycle_frames"):
        return _check_int(name, value, 2, 200) if name == "n_frames" else _check_int(name, value, 4, 400)
    if name == "quality":
        if value not in QUALITIES:
            raise EchoDataError(None, f"--quality: expected one of {', '.join(QUALITIES)}, got {value!r}")
        return value
    if name == "spacing":
        pair = isinstance(value, (list, tuple)) and len(value) == 2
        if not (pair and all(_is_number(v) and 0.0 < float(v) <= 20.0 for v in value)):
            raise EchoDataError(None, f"--spacing: expected (sx, sy) in mm, each in (0, 20], got {value!r}")
        return (float(value[0]), float(value[1]))
    bounds = {"anisotropy": (0.1, 10.0), "fps": (1.0, 1000.0)}[name]
    checked = _check_range(name, value, bounds)
    if not isinstance(checked, float):
        raise EchoDataError(None, f"--{name}: expected a single number, got {value!r}")
    return checked


def _check_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in overrides.items():
        if name in _RANGE_OVERRIDES:
            out[name] = _check_range(name, value, _RANGE_OVERRIDES[name])
        elif name in _OTHER_OVERRIDES:
            out[name] = _check_other_override(name, value)
        else:
            allowed = ", ".join(sorted([*_RANGE_OVERRIDES, *_OTHER_OVERRIDES]))
            raise EchoDataError(None, f"unknown option --{name}; phantom parameters are: {allowed}")
    tilt, opening = out.get("tilt_deg", 0.0), out.get("opening_deg", 0.0)
    max_tilt = max(np.abs(tilt)) if isinstance(tilt, tuple) else abs(tilt)
    max_open = max(opening) if isinstance(opening, tuple) else opening
    if max_tilt + max_open / 2.0 >= 85.0:
        raise EchoDataError(
            None,
            f"--tilt_deg/--opening_deg: the sector edge would pass 85 deg from vertical "
            f"({max_tilt:g} + {max_open:g}/2)",
        )
    return out


def validate_arguments(
    *,
    out_dir: Any,
    n_patients: Any,
    preset: Any,
    layout: Any,
    seed: Any,
    sequence: Any,
    labels: Any,
    image_size: Any,
    overwrite: Any,
    progress: Any,
    overrides: Mapping[str, Any],
) -> PhantomConfig:
    """Check every argument of ``make_phantom``; raise :class:`EchoDataError` naming the first bad one.

    Args:
        out_dir: see :func:`echogains.data.phantom.make_phantom`; the other arguments likewise.
        n_patients: number of patients.
        preset: preset name.
        layout: layout name.
        seed: non-negative integer.
        sequence: bool.
        labels: label selection for the nnU-Net layout.
        image_size: ``None``, an int or (rows, cols).
        overwrite: bool.
        progress: bool.
        overrides: phantom parameters.
    """
    for name, value in (("sequence", sequence), ("overwrite", overwrite), ("progress", progress)):
        if not isinstance(value, (bool, np.bool_)):
            raise EchoDataError(None, f"--{name}: expected True or False, got {value!r}")
    n = _check_int("n_patients", n_patients, 1, 9999)
    if preset not in PRESETS:
        raise EchoDataError(None, f"--preset: unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    if layout not in LAYOUTS:
        raise EchoDataError(None, f"--layout: unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    seed_value = _check_int("seed", seed, 0, 2**32 - 1)
    if not isinstance(labels, (str, list, tuple)):
        raise EchoDataError(None, f"--labels: expected a selection such as 'lv,myo,la', got {labels!r}")
    keys = parse_labels(labels)
    if not {"lv", "myo"} & set(keys):
        raise EchoDataError(
            None, f"--labels: {labels!r} must include lv or myo (the left atrium may be cut off by the sector)"
        )
    return PhantomConfig(
        out_dir=check_output_dir(out_dir, bool(overwrite), what="out_dir"),
        n_patients=n,
        preset=str(preset),
        layout=str(layout),
        seed=seed_value,
        sequence=bool(sequence),
        labels=tuple(keys),
        image_size=_check_image_size(image_size),
        overwrite=bool(overwrite),
        progress=bool(progress),
        overrides=_check_overrides(overrides),
    )
