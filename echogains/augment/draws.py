"""Random draws of the sector transforms and the retry policy (EchoGAINS Sec. 2.4 and its public release): redraw
until enough of the label stays in the kept content (:func:`draw_steps`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from echogains.augment.policy import TransformPolicy
from echogains.augment.sector_transforms import COMBINATION, check_augment

__all__ = ["sample_steps", "Draw", "draw_steps"]


def _sample_one(kind: str, rng: np.random.Generator, policy: TransformPolicy, scale: float) -> dict[str, Any]:
    """Draw the parameters of one transform; pixel values are drawn at the reference size and scaled."""
    if kind == "depth":
        ref = float(rng.uniform(*policy.depth_px))
        kind = "depth_rows" if policy.depth_mode == "rows" else "depth"
        return {"type": kind, "rows_added": ref * scale, "rows_added_ref": ref}
    if kind == "tilt":
        return {"type": "tilt", "angle_deg": float(rng.uniform(*policy.tilt_deg))}
    if kind == "width":
        return {"type": "width", "factor": float(rng.uniform(*policy.width_factor))}
    if kind == "sector_angle":
        return {"type": "sector_angle", "factor": float(rng.uniform(*policy.sector_angle_factor))}
    direction = float(rng.uniform(0.0, 360.0))
    length = float(rng.uniform(*policy.translation_px))
    a = np.radians(direction)
    return {
        "type": "translation",
        "dx_px": length * scale * np.cos(a),
        "dy_px": length * scale * np.sin(a),
        "length_ref": length,
        "direction_deg": direction,
    }


def sample_steps(mode: str, rng: np.random.Generator, policy: TransformPolicy, frame_size: int) -> list[dict[str, Any]]:
    """Draw one augmentation: a single transform, or for ``combination`` each of :data:`COMBINATION` (the paper's
    four: depth, tilt, width, translation) with ``policy.probability``.

    Args:
        mode: one of :data:`AUGMENT_MODES`.
        rng: the (case, k, seed)-derived generator.
        policy: ranges and probability.
        frame_size: side of the square frame the transforms run in (pixel ranges scale by ``frame_size / 256``).
    """
    check_augment(mode)
    scale = frame_size / policy.reference_size
    if mode != "combination":
        return [_sample_one(mode, rng, policy, scale)]
    steps = []
    for kind in COMBINATION:
        if rng.random() < policy.probability:
            steps.append(_sample_one(kind, rng, policy, scale))
    return steps


@dataclass(frozen=True)
class Draw:
    """Outcome of the retry loop: the accepted (or best) steps, tries used, kept label fraction, success."""

    steps: list[dict[str, Any]]
    tries: int
    label_kept: float
    ok: bool


def draw_steps(
    mode: str,
    rng: np.random.Generator,
    policy: TransformPolicy,
    frame_size: int,
    kept_fraction: Callable[[list[dict[str, Any]]], float],
) -> Draw:
    """Redraw transforms until ``kept_fraction(steps) >= policy.min_label_inside``, at most ``policy.max_tries`` times.

    Returns the first accepted draw, or (``ok=False``) the best of all tries when none is accepted.
    """
    best: Draw | None = None
    for tries in range(1, policy.max_tries + 1):
        steps = sample_steps(mode, rng, policy, frame_size)
        kept = float(kept_fraction(steps))
        if kept >= policy.min_label_inside:
            return Draw(steps, tries, kept, True)
        if best is None or kept > best.label_kept:
            best = Draw(steps, tries, kept, False)
    assert best is not None
    return Draw(best.steps, policy.max_tries, best.label_kept, False)
