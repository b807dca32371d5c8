"""The ultrasound sector record, physical coordinates and the polar (beam) resampling.

Coordinates are physical (mm) with the origin at the centre of pixel ``[0, 0]``: a pixel ``[row, col]`` sits at
``(x, y) = (col * sx, row * sy)``. Angles are in degrees from the image's downward axis (+y, the beam direction
of an unrotated probe), positive toward +x (image right). See :mod:`echogains.geometry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from echogains.utils import EchoDataError

__all__ = [
    "Sector",
    "pixel_grid_mm",
    "pixel_to_mm",
    "mm_to_pixel",
    "check_spacing",
    "polar_shape",
    "polar_grid",
    "to_polar",
    "from_polar",
]


def pixel_grid_mm(shape: tuple[int, int], spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Physical (x, y) coordinates in mm of every pixel centre of an image of ``shape`` (rows, cols)."""
    rows, cols = shape
    y = np.arange(rows, dtype=np.float64)[:, None] * float(spacing[1])
    x = np.arange(cols, dtype=np.float64)[None, :] * float(spacing[0])
    return np.broadcast_to(x, shape), np.broadcast_to(y, shape)


@dataclass(frozen=True)
class Sector:
    """A circular ultrasound sector.

    Args:
        apex: (x, y) of the cone tip in mm (may lie outside the image, e.g. y < 0).
        theta_min: angle of the left edge in degrees.
        theta_max: angle of the right edge in degrees (> ``theta_min``).
        r_max: depth in mm: distance from the apex to the far arc.
        r_min: near-field radius in mm where the image content starts (0: from the tip).
        spacing: (sx, sy) mm per pixel of the image the sector belongs to.
    """

    apex: tuple[float, float]
    theta_min: float
    theta_max: float
    r_max: float
    r_min: float = 0.0
    spacing: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        if not self.theta_max > self.theta_min:
            raise ValueError(f"theta_max ({self.theta_max}) must exceed theta_min ({self.theta_min})")
        if not self.r_max > self.r_min >= 0:
            raise ValueError(f"need r_max > r_min >= 0, got r_min={self.r_min}, r_max={self.r_max}")

    @property
    def opening_deg(self) -> float:
        """Opening (sector) angle in degrees."""
        return float(self.theta_max - self.theta_min)

    @property
    def tilt_deg(self) -> float:
        """Angle of the bisector from the downward axis, in degrees."""
        return float((self.theta_max + self.theta_min) / 2)

    @property
    def depth_mm(self) -> float:
        return float(self.r_max)

    def polar_coords(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Radius (mm) and angle (deg) of every pixel centre relative to the apex."""
        x, y = pixel_grid_mm(shape, self.spacing)
        dx, dy = x - self.apex[0], y - self.apex[1]
        return np.hypot(dx, dy), np.degrees(np.arctan2(dx, dy))

    def mask(self, shape: tuple[int, int]) -> np.ndarray:
        """Boolean mask of the pixels inside the sector."""
        r, theta = self.polar_coords(shape)
        return (r >= self.r_min) & (r <= self.r_max) & (theta >= self.theta_min) & (theta <= self.theta_max)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly record (as stored in ``cases.json``), with derived opening, tilt and depth."""
        d = asdict(self)
        d["apex"] = [float(v) for v in self.apex]
        d["spacing"] = [float(v) for v in self.spacing]
        d.update(opening_deg=self.opening_deg, tilt_deg=self.tilt_deg, depth_mm=self.depth_mm)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sector:
        return cls(
            apex=tuple(d["apex"]),  # type: ignore[arg-type]
            theta_min=float(d["theta_min"]),
            theta_max=float(d["theta_max"]),
            r_max=float(d["r_max"]),
            r_min=float(d.get("r_min", 0.0)),
            spacing=tuple(d.get("spacing", (1.0, 1.0))),  # type: ignore[arg-type]
        )


# ----------------------------------------------------------------------------------------------------------------
# Coordinate helpers
# ----------------------------------------------------------------------------------------------------------------


def pixel_to_mm(xy_px: np.ndarray | Sequence[float], spacing: tuple[float, float]) -> np.ndarray:
    """Convert continuous pixel coordinates ``(x, y) = (col, row)`` to mm (last axis of length 2).

    Args:
        xy_px: points ``[..., 2]`` as (column, row), pixel centres at integers.
        spacing: (sx, sy) mm per pixel.
    """
    return np.asarray(xy_px, dtype=np.float64) * np.asarray(spacing, dtype=np.float64)


def mm_to_pixel(xy_mm: np.ndarray | Sequence[float], spacing: tuple[float, float]) -> np.ndarray:
    """Convert mm coordinates ``(x, y)`` to continuous pixel coordinates ``(col, row)`` (inverse of pixel_to_mm).

    Args:
        xy_mm: points ``[..., 2]`` in mm.
        spacing: (sx, sy) mm per pixel.
    """
    return np.asarray(xy_mm, dtype=np.float64) / np.asarray(spacing, dtype=np.float64)


def check_spacing(spacing: Sequence[float], source: str | None) -> tuple[float, float]:
    """Validate a (sx, sy) pixel spacing."""
    if len(spacing) != 2 or not all(np.isfinite(v) and v > 0 for v in spacing):
        raise EchoDataError(source, f"pixel spacing must be two positive numbers (sx, sy), got {tuple(spacing)}")
    return float(spacing[0]), float(spacing[1])


# ----------------------------------------------------------------------------------------------------------------
# Polar (beam) resampling
# ----------------------------------------------------------------------------------------------------------------


def polar_shape(sector: Sector) -> tuple[int, int]:
    """Default polar grid size (n_r, n_theta): about one sample per (smallest) pixel along depth and far arc."""
    px = min(sector.spacing)
    n_r = int(np.ceil((sector.r_max - sector.r_min) / px)) + 1
    n_theta = int(np.ceil(np.radians(sector.opening_deg) * sector.r_max / px)) + 1
    return max(n_r, 2), max(n_theta, 2)


def polar_grid(sector: Sector, n_r: int, n_theta: int) -> tuple[np.ndarray, np.ndarray]:
    """Radii (mm, ``r_min..r_max``) and angles (deg, ``theta_min..theta_max``) of the polar samples, ends included."""
    if n_r < 2 or n_theta < 2:
        raise ValueError(f"polar grid needs n_r >= 2 and n_theta >= 2, got {n_r} x {n_theta}")
    return (
        np.linspace(sector.r_min, sector.r_max, n_r),
        np.linspace(sector.theta_min, sector.theta_max, n_theta),
    )


def _check_2d(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{what} must be 2D, got shape {array.shape}")
    return array


def _resample(array: np.ndarray, coords: np.ndarray, order: int, mode: str) -> np.ndarray:
    """map_coordinates that keeps the dtype for nearest-neighbour (labels) and returns float otherwise."""
    if order == 0:
        return ndimage.map_coordinates(array, coords, order=0, mode=mode, cval=0)
    data = array.astype(np.float32 if array.dtype == np.float32 else np.float64)
    return ndimage.map_coordinates(data, coords, order=order, mode=mode, cval=0.0)


def to_polar(
    image: np.ndarray, sector: Sector, n_r: int | None = None, n_theta: int | None = None, order: int = 1
) -> np.ndarray:
    """Sample an image along the beams of a sector.

    Output row ``i`` is depth ``r_i`` (``r_min`` at row 0 to ``r_max``), column ``j`` is angle ``theta_j``
    (``theta_min`` to ``theta_max``); the sample sits at ``apex + r (sin theta, cos theta)`` mm. Samples that fall
    outside the image (beyond the outer pixels' edges) are 0.

    Args:
        image: 2D image [rows, cols] in the sector's spacing.
        sector: the sector.
        n_r: number of depth samples (default from :func:`polar_shape`).
        n_theta: number of beams (default from :func:`polar_shape`).
        order: spline order (1 bilinear; 0 nearest, for labels: keeps the dtype).
    """
    image = _check_2d(image, "image")
    default = polar_shape(sector)
    r, theta = polar_grid(sector, n_r or default[0], n_theta or default[1])
    t = np.radians(theta)[None, :]
    x = sector.apex[0] + r[:, None] * np.sin(t)
    y = sector.apex[1] + r[:, None] * np.cos(t)
    coords = np.stack([y / sector.spacing[1], x / sector.spacing[0]])
    out = _resample(image, coords, order, "nearest")
    # A pixel covers +-0.5 px around its centre: samples beyond the image's outer pixel edges are 0.
    outside = np.zeros(out.shape, dtype=bool)
    for axis, size in enumerate(image.shape):
        outside |= (coords[axis] < -0.5) | (coords[axis] > size - 0.5)
    out[outside] = 0
    return out


def from_polar(polar: np.ndarray, sector: Sector, shape: tuple[int, int], order: int = 1) -> np.ndarray:
    """Scan-convert a polar array (layout of :func:`to_polar`) back to an image of ``shape``; 0 outside the sector.

    Args:
        polar: array [n_r, n_theta], rows ``r_min..r_max``, columns ``theta_min..theta_max``.
        sector: the sector (its spacing is the output's).
        shape: output (rows, cols).
        order: spline order (1 bilinear; 0 nearest, for labels: keeps the dtype).
    """
    polar = _check_2d(polar, "polar")
    n_r, n_theta = polar.shape
    if n_r < 2 or n_theta < 2:
        raise ValueError(f"polar array needs at least 2 x 2 samples, got {polar.shape}")
    inside = sector.mask(shape)
    r, theta = sector.polar_coords(shape)
    i = (r[inside] - sector.r_min) / (sector.r_max - sector.r_min) * (n_r - 1)
    j = (theta[inside] - sector.theta_min) / (sector.theta_max - sector.theta_min) * (n_theta - 1)
    values = _resample(polar, np.stack([i, j]), order, "nearest")
    out = np.zeros(shape, dtype=values.dtype)
    out[inside] = values
    return out
