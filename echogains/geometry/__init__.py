"""Ultrasound sector (cone) geometry.

Coordinates are physical (mm) with the origin at the centre of pixel ``[0, 0]``: a pixel ``[row, col]`` sits at
``(x, y) = (col * sx, row * sy)``. Angles are in degrees from the image's downward axis (+y, the beam direction
of an unrotated probe), positive toward +x (image right). With ``spacing=(1, 1)`` everything is in pixels.
Anisotropic spacing (CAMUS: e.g. 0.154 x 0.308 mm) is handled by working in mm, where the sector is a true
circular sector.

Modules: ``sector`` holds the :class:`Sector` record, the coordinate helpers and the resampling of images along
the beams (:func:`to_polar` / :func:`from_polar`); ``fit`` fits a sector to a grey B-mode image
(:func:`fit_sector`). Everything is re-exported here (``from echogains.geometry import ...``). Sectors are assumed
to open downwards-ish (apex above the content, ``-180 < theta_min < theta_max < 180``), as in CAMUS, EchoNet-Dynamic
and HUNT4 recordings; the apex may be off-centre or outside the image and the sector may be tilted,
asymmetric or clipped by the image border.
"""

from __future__ import annotations

from echogains.geometry.fit import (
    FOREGROUND_FRACTION,
    MAX_EDGE_ANGLE,
    MIN_CONTENT_FRACTION,
    MIN_CONTENT_INSIDE,
    MIN_EDGE_SUPPORT,
    MIN_SECTOR_IOU,
    fit_sector,
    sector_iou,
)
from echogains.geometry.sector import (
    Sector,
    from_polar,
    mm_to_pixel,
    pixel_grid_mm,
    pixel_to_mm,
    polar_grid,
    polar_shape,
    to_polar,
)

__all__ = [
    "Sector",
    "pixel_grid_mm",
    "pixel_to_mm",
    "mm_to_pixel",
    "fit_sector",
    "sector_iou",
    "polar_shape",
    "polar_grid",
    "to_polar",
    "from_polar",
    "FOREGROUND_FRACTION",
    "MIN_CONTENT_FRACTION",
    "MIN_SECTOR_IOU",
    "MIN_CONTENT_INSIDE",
    "MIN_EDGE_SUPPORT",
    "MAX_EDGE_ANGLE",
]
