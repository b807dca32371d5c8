"""Parameter ranges and retry rule of the EchoGAINS sector transforms (:class:`TransformPolicy`).

The ranges are the paper's (Sec. 2.4) and its public release's; pixel ranges refer to the paper's 256 x 256 frame
(:data:`REFERENCE_SIZE`) and are scaled to the frame the transforms run in (:mod:`echogains.augment.transforms`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from echogains.utils import EchoDataError

__all__ = ["REFERENCE_SIZE", "KEPT_REGIONS", "DEPTH_MODES", "TransformPolicy", "check_kept_region"]

#: The paper's frame size: pixel ranges of the policy refer to it.
REFERENCE_SIZE = 256
#: ``TransformPolicy.kept_region`` choices: cut to the original sector's footprint (paper, Fig. 8) or not.
KEPT_REGIONS: tuple[str, ...] = ("original_sector", "transformed_sector")
#: ``TransformPolicy.depth_mode`` choices: isotropic zoom-out about the apex, or the paper's literal row squeeze.
DEPTH_MODES: tuple[str, ...] = ("zoom", "rows")


@dataclass(frozen=True)
class TransformPolicy:
    """Parameter ranges and retry rule of the sector transforms (EchoGAINS Sec. 2.4 and its public release).

    Args:
        depth_px: rows added at the bottom, at ``reference_size`` (paper: 0-150).
        tilt_deg: rotation about the apex in degrees (paper: -30..30).
        width_factor: image-width factor lambda of ``width`` (paper: 0.5-1.5).
        translation_px: shift length at ``reference_size``, random direction (paper: 0-50).
        sector_angle_factor: opening-angle factor of ``sector_angle`` (not in the paper; 0.5-1.5).
        probability: chance of each transform in ``combination`` (paper: 0.5).
        min_label_inside: least fraction of the label's foreground that must stay in the kept content (0.5).
        max_tries: draws before giving up (30).
        margin_px: the kept content stays this many pixels (of the coarser grid) inside the sector outline.
        reference_size: frame size the pixel ranges refer to (256).
        kept_region: ``original_sector`` (the paper: content outside the original sector's footprint is black and
            repainted) or ``transformed_sector`` (all transformed content inside the image is kept).
        depth_mode: ``zoom`` (isotropic zoom-out about the apex, spacing scaled: the default) or ``rows`` (the
            paper's literal "add rows, then resize", anisotropic, spacing unchanged).
    """

    depth_px: tuple[float, float] = (0.0, 150.0)
    tilt_deg: tuple[float, float] = (-30.0, 30.0)
    width_factor: tuple[float, float] = (0.5, 1.5)
    translation_px: tuple[float, float] = (0.0, 50.0)
    probability: float = 0.5
    min_label_inside: float = 0.5
    max_tries: int = 30
    margin_px: float = 1.0
    reference_size: int = REFERENCE_SIZE
    sector_angle_factor: tuple[float, float] = (0.5, 1.5)
    kept_region: str = "original_sector"
    depth_mode: str = "zoom"

    def __post_init__(self) -> None:
        for name in ("depth_px", "tilt_deg", "width_factor", "translation_px", "sector_angle_factor"):
            lo, hi = getattr(self, name)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
                raise EchoDataError(None, f"transform policy: {name} must be (low, high) with low <= high")
        if (
            self.width_factor[0] <= 0
            or self.sector_angle_factor[0] <= 0
            or self.depth_px[0] < 0
            or self.translation_px[0] < 0
        ):
            raise EchoDataError(None, "transform policy: width factors must be > 0, depth and translation >= 0")
        if self.kept_region not in KEPT_REGIONS:
            raise EchoDataError(None, f"transform policy: kept_region must be one of {', '.join(KEPT_REGIONS)}")
        if self.depth_mode not in DEPTH_MODES:
            raise EchoDataError(None, f"transform policy: depth_mode must be one of {', '.join(DEPTH_MODES)}")
        if not (0.0 <= self.probability <= 1.0 and 0.0 <= self.min_label_inside <= 1.0):
            raise EchoDataError(None, "transform policy: probability and min_label_inside must lie in [0, 1]")
        if self.max_tries < 1 or self.reference_size < 1 or self.margin_px < 0:
            raise EchoDataError(None, "transform policy: max_tries and reference_size >= 1, margin_px >= 0")

    @classmethod
    def from_dict(cls, recorded: Mapping[str, Any]) -> TransformPolicy:
        """A policy from its recorded form (:meth:`to_dict`, JSON lists for the ranges); other keys are ignored."""
        names = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {
            key: (tuple(v) if isinstance(v, list) else v) for key, v in recorded.items() if key in names
        }
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["on_failure"] = "skip"  # all tries below min_label_inside: the augmentation is skipped and recorded
        return d


def check_kept_region(kept_region: str) -> None:
    """Validate a ``kept_region`` argument of the transform functions."""
    if kept_region not in KEPT_REGIONS:
        raise EchoDataError(None, f"kept_region must be one of {', '.join(KEPT_REGIONS)}, got {kept_region!r}")
