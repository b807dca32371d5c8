"""Pixel and physical (mm) coordinates of a sector image: regridding between frame sizes, offsets from the apex, and
whether points lie inside a sector (used by :mod:`echogains.augment.sector_transforms` and the transform chains).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from echogains.geometry import Sector

__all__ = ["regrid_coordinates", "regrid_sector", "scale_sector", "to_mm", "to_px", "sector_contains", "inside_image"]


def regrid_coordinates(
    rows: np.ndarray, cols: np.ndarray, from_shape: tuple[int, int], to_shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates on a grid of ``from_shape`` -> the same points on a resize to ``to_shape``.

    Both grids cover the same field of view (pixel edges aligned, the convention of ``cv2.resize``):
    ``q = (p + 0.5) * to / from - 0.5`` per axis.
    """
    r = (rows + 0.5) * (to_shape[0] / from_shape[0]) - 0.5
    c = (cols + 0.5) * (to_shape[1] / from_shape[1]) - 0.5
    return r, c


def regrid_sector(sector: Sector, from_shape: tuple[int, int], to_shape: tuple[int, int]) -> Sector:
    """The sector of an image of ``from_shape`` in its resize to ``to_shape`` (same field of view).

    The spacing scales with the pixel size; since physical coordinates start at the centre of pixel [0, 0],
    the apex moves by half the change of pixel size: ``apex + 0.5 * (s_old - s_new)``.
    """
    sx = sector.spacing[0] * from_shape[1] / to_shape[1]
    sy = sector.spacing[1] * from_shape[0] / to_shape[0]
    apex = (sector.apex[0] + 0.5 * (sector.spacing[0] - sx), sector.apex[1] + 0.5 * (sector.spacing[1] - sy))
    return replace(sector, apex=apex, spacing=(sx, sy))


def scale_sector(sector: Sector, zoom: float) -> Sector:
    """The same pixel footprint as ``sector`` on a grid whose pixels are ``zoom`` times larger in mm (both axes).

    Physical coordinates start at the centre of pixel [0, 0], so the apex, the radii and the spacing all scale by
    ``zoom``; the angles are kept.
    """
    if zoom == 1.0:
        return sector
    return replace(
        sector,
        apex=(sector.apex[0] * zoom, sector.apex[1] * zoom),
        r_max=sector.r_max * zoom,
        r_min=sector.r_min * zoom,
        spacing=(sector.spacing[0] * zoom, sector.spacing[1] * zoom),
    )


def to_mm(sector: Sector, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (dx, dy) in mm of pixel coordinates from the apex."""
    return cols * sector.spacing[0] - sector.apex[0], rows * sector.spacing[1] - sector.apex[1]


def to_px(sector: Sector, dx: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (rows, cols) of offsets (dx, dy) in mm from the apex."""
    return (dy + sector.apex[1]) / sector.spacing[1], (dx + sector.apex[0]) / sector.spacing[0]


def sector_contains(sector: Sector, rows: np.ndarray, cols: np.ndarray, margin_mm: float = 0.0) -> np.ndarray:
    """Whether the points (pixel coordinates, any shape) lie inside ``sector``, at least ``margin_mm`` inside.

    The margin is the distance to the straight edges (to the apex where the edge's foot lies behind it), to the far
    arc and, when ``r_min > 0``, to the near arc. NaN coordinates are outside.
    """
    dx, dy = to_mm(sector, np.asarray(rows, dtype=np.float64), np.asarray(cols, dtype=np.float64))
    r = np.hypot(dx, dy)
    theta = np.degrees(np.arctan2(dx, dy))
    with np.errstate(invalid="ignore"):
        inside = (theta >= sector.theta_min) & (theta <= sector.theta_max) & (r <= sector.r_max - margin_mm)
        inside &= r >= (sector.r_min + margin_mm if sector.r_min > 0 else 0.0)
        if margin_mm > 0:
            for delta in (theta - sector.theta_min, sector.theta_max - theta):
                dist = np.where(delta >= 90.0, r, r * np.sin(np.radians(np.clip(delta, 0.0, 90.0))))
                inside &= dist >= margin_mm
    return inside & np.isfinite(r)


def inside_image(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Coordinates within the image (a pixel covers +-0.5 px about its centre)."""
    with np.errstate(invalid="ignore"):
        return (rows >= -0.5) & (rows <= shape[0] - 0.5) & (cols >= -0.5) & (cols <= shape[1] - 0.5)
