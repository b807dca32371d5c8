"""The EchoGAINS sector transforms (paper Sec. 2.4, Fig. 1): depth, depth_rows, tilt, width, sector_angle and
translation, each a pair of coordinate maps plus the new sector (the equations are in each class's docstring; the
overview is :mod:`echogains.augment.transforms`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

import numpy as np

from echogains.augment.coordinates import to_mm, to_px
from echogains.geometry import Sector
from echogains.utils import EchoDataError

__all__ = [
    "SectorTransform",
    "Depth",
    "DepthRows",
    "Tilt",
    "Width",
    "SectorAngle",
    "Translation",
    "TRANSFORM_TYPES",
    "COMBINATION",
    "AUGMENT_MODES",
    "check_augment",
    "make_transform",
]

#: (rows, cols) of an image grid.
Shape = tuple[int, int]
#: Pixel coordinates (rows, cols), arrays of any shape.
Coords = tuple[np.ndarray, np.ndarray]


class SectorTransform:
    """A sector transform on an image grid of ``shape``: coordinate maps and the new sector."""

    name: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.name, **{k: float(v) for k, v in asdict(self).items()}}  # type: ignore[call-overload]

    def inverse(
        self, rows: np.ndarray, cols: np.ndarray, sector: Sector, shape: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Output pixel coordinates -> input pixel coordinates (NaN where no input exists)."""
        raise NotImplementedError

    def forward(
        self, rows: np.ndarray, cols: np.ndarray, sector: Sector, shape: tuple[int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Input pixel coordinates -> output pixel coordinates."""
        raise NotImplementedError

    def new_sector(self, sector: Sector, shape: tuple[int, int]) -> Sector:
        """The sector after the transform (``sector`` is the one before)."""
        raise NotImplementedError

    def pixel_scale(self, shape: tuple[int, int]) -> float:
        """Factor by which the output's pixels are larger in mm than the input's (1: the spacing is kept)."""
        return 1.0


def _apex_px(sector: Sector) -> tuple[float, float]:
    """(row, col) of the sector apex in pixel coordinates of the sector's grid."""
    return sector.apex[1] / sector.spacing[1], sector.apex[0] / sector.spacing[0]


@dataclass(frozen=True)
class Depth(SectorTransform):
    """Depth increase as an isotropic zoom-out about the sector apex (what a deeper acquisition looks like).

    (1) c = (H + d) / H for ``rows_added`` d on a grid of height H; every pixel offset from the apex (a_r, a_c)
        shrinks by c: p_out = a + (p_in - a) / c, both axes (isotropic in pixels is isotropic in mm too: a diagonal
        pixel-to-mm map commutes with a uniform scaling).
    (2) The output's pixels are c times larger in mm: the new sector has the same angles and radii in mm, its apex
        at the same pixel, and spacing c times the input's
        (:func:`~echogains.augment.coordinates.scale_sector` of the pixel footprint).
    """

    rows_added: float
    name: ClassVar[str] = "depth"

    def _c(self, shape: tuple[int, int]) -> float:
        return (shape[0] + self.rows_added) / shape[0]

    def inverse(self, rows: np.ndarray, cols: np.ndarray, sector: Sector, shape: Shape) -> Coords:
        c, (ar, ac) = self._c(shape), _apex_px(sector)
        return ar + (rows - ar) * c, ac + (cols - ac) * c  # (1)

    def forward(self, rows: np.ndarray, cols: np.ndarray, sector: Sector, shape: Shape) -> Coords:
        c, (ar, ac) = self._c(shape), _apex_px(sector)
        return ar + (rows - ar) / c, ac + (cols - ac) / c

    def new_sector(self, sector: Sector, shape: tuple[int, int]) -> Sector:
        c = self._c(shape)  # (2): same pixel apex; radii in mm kept, spacing x c
        return replace(
            sector,
            apex=(sector.apex[0] * c, sector.apex[1] * c),
            spacing=(sector.spacing[0] * c, sector.spacing[1] * c),
        )

    def pixel_scale(self, shape: tuple[int, int]) -> float:
        return self._c(shape)


@dataclass(frozen=True)
class DepthRows(SectorTransform):
    """The paper's literal depth increase: ``rows_added`` black rows at the bottom, then resized back to the height.

    (1) rows are squeezed by c = (H + d) / H about the top edge: r_in = (r_out + 0.5) c - 0.5; columns are kept.
    (2) The content's sector keeps its angles and radii in mm in the squeezed grid whose row spacing is sy c; the apex
        moves up by 0.5 (sy c - sy) because physical coordinates start at the centre of the first pixel. The image's
        spacing is not changed (:meth:`pixel_scale` is 1), so the anatomy is squeezed vertically by 1 / c.
    """

    rows_added: float
    name: ClassVar[str] = "depth_rows"

    def _c(self, shape: tuple[int, int]) -> float:
        return (shape[0] + self.rows_added) / shape[0]

    def inverse(self, rows: np.ndarray, cols: np.ndarray, sector: Sector, shape: Shape) -> Coords:
        return (rows + 0.5) * self._c(shape) - 0.5, cols  # (1)

    def forward(self, rows: np.ndarray, cols: np.ndarray, sector: Sector, shape: Shape) -> Coords:
        return (rows + 0.5) / self._c(shape) - 0.5, cols

    def new_sector(self, sector: Sector, shape: tuple[int, int]) -> Sector:
        sy = sector.spacing[1] * self._c(shape)  # (2)
        apex = (sector.apex[0], sector.apex[1] - 0.5 * (sy - sector.spacing[1]))
        return replace(sector, apex=apex, spacing=(sector.spacing[0], sy))


def _rotate(dx: np.ndarray, dy: np.ndarray, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate offsets so that their angle (from +y toward +x) grows by ``angle_deg``."""
    a = np.radians(angle_deg)
    # angle phi = atan2(dx, dy): (dx, dy) = rho (sin phi, cos phi) -> rho (sin(phi + a), cos(phi + a))
    return dx * np.cos(a) + dy * np.sin(a), dy * np.cos(a) - dx * np.sin(a)


@dataclass(frozen=True)
class Tilt(SectorTransform):
    """Tilt: rotation by ``angle_deg`` about the sector apex (in mm); the edge angles grow by ``angle_deg``."""

    angle_deg: float
    name: ClassVar[str] = "tilt"

    def inverse(self, rows: np.ndarray, cols: np.ndarray, sector: Sector, shape: Shape) -> Coords:
        dx, dy = _rotate(*to_mm(sector, rows, cols), -self.angle_deg)
        return to_px(sector, dx, dy)

    def forward(self, rows: np.ndarray, cols: np.ndarray, sector: Sector, shape: Shape) -> Coords:
        dx, dy = _rotate(*to_mm(sector, rows, cols), self.angle_deg)
        return to_px(sector, dx, dy)

    def new_sector(self, sector: Sector, shape: tuple[int, int]) -> Sector:
        return replace(sector, theta_min=sector.theta_min + self.angle_deg, theta_max=sector.theta_max + self.angle_deg)


def _wrap(deg: np.ndarray) -> np.ndarray:
    """Angles to [-180, 180)."""
    return (deg + 180.0) % 360.0 - 180.0


@dataclass(frozen=True)
class Width(SectorTransform):
    """The paper's sector width adjustment: the image width is multiplied by ``factor`` about the centre column.

    (1) With the frame's centre column x_c = (W - 1) / 2 (the pixel-edge centre of a resize): c_out = x_c + lambda
        (c_in - x_c), rows unchanged. lambda > 1 stretches and the frame crops; lambda < 1 squeezes into the centre.
    (2) The content's sector is the same circular sector in a grid whose column spacing is sx / lambda, apex column
        moved to x_c + lambda (a_c - x_c). The image's spacing is kept: the anatomy is distorted on purpose.
    """

    factor: float
    name: ClassVar[str] = "width"

    def _centre(self, shape: tuple[int, int]) -> float:
        return (shape[1] - 1) / 2.0

    def inverse(self, rows: np.ndarray, cols: np.ndarray, sector: Sector, shape: Shape) -> Coords:
        xc = self._centre(shape)
        return rows, xc + (cols - xc) / self.factor  # (1)

    def forward(self, rows: np.ndarray, cols: np.ndarray, sector: Sector, shape: Shape) -> Coords:
        xc = self._centre(shape)
        return rows, xc + (cols - xc) * self.factor

    def new_sector(self, sector: Sector, shape: tuple[int, int]) -> Sector:
        xc = self._centre(shape)
        sx = sector.spacing[0] / self.factor  # (2)
        apex_col = xc + self.factor * (sector.apex[0] / sector.spacing[0] - xc)
        return replace(sector, apex=(apex_col * sx, sector.apex[1]), spacing=(sx, sector.spacing[1]))


@dataclass(frozen=True)
class SectorAngle(SectorTransform):
    """Sector angle scaling (not in the paper): angles from the bisector b are multiplied by ``factor`` (radii kept).

    (1) theta_out = b + factor (theta_in - b); inverse theta_in = b + (theta_out - b) / factor. Output angles whose
        input would lie more than 180 degrees from the bisector have no input (NaN).
    """

    factor: float
    name: ClassVar[str] = "sector_angle"

    def _polar_map(
        self, rows: np.ndarray, cols: np.ndarray, sector: Sector, scale: float
    ) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = to_mm(sector, rows, cols)
        rho = np.hypot(dx, dy)
        b = sector.tilt_deg
        rel = _wrap(np.degrees(np.arctan2(dx, dy)) - b) * scale  # (1)
        phi = np.radians(b + np.where(np.abs(rel) < 180.0, rel, np.nan))
        return to_px(sector, rho * np.sin(phi), rho * np.cos(phi))

    def inverse(self, rows: np.ndarray, cols: np.ndarray, sector: Sector, shape: Shape) -> Coords:
        return self._polar_map(rows, cols, sector, 1.0 / self.factor)

    def forward(self, rows: np.ndarray, cols: np.ndarray, sector: Sector, shape: Shape) -> Coords:
        return self._polar_map(rows, cols, sector, self.factor)

    def new_sector(self, sector: Sector, shape: tuple[int, int]) -> Sector:
        b = sector.tilt_deg
        return replace(
            sector,
            theta_min=b + self.factor * (sector.theta_min - b),
            theta_max=b + self.factor * (sector.theta_max - b),
        )


@dataclass(frozen=True)
class Translation(SectorTransform):
    """Translation by (``dx_px``, ``dy_px``) pixels (columns, rows); content leaving the image is cropped."""

    dx_px: float
    dy_px: float
    name: ClassVar[str] = "translation"

    def inverse(self, rows: np.ndarray, cols: np.ndarray, sector: Sector, shape: Shape) -> Coords:
        return rows - self.dy_px, cols - self.dx_px

    def forward(self, rows: np.ndarray, cols: np.ndarray, sector: Sector, shape: Shape) -> Coords:
        return rows + self.dy_px, cols + self.dx_px

    def new_sector(self, sector: Sector, shape: tuple[int, int]) -> Sector:
        apex = (sector.apex[0] + self.dx_px * sector.spacing[0], sector.apex[1] + self.dy_px * sector.spacing[1])
        return replace(sector, apex=apex)


#: Transform classes by recorded type name.
TRANSFORM_TYPES: dict[str, type[SectorTransform]] = {
    "depth": Depth,
    "depth_rows": DepthRows,
    "tilt": Tilt,
    "width": Width,
    "sector_angle": SectorAngle,
    "translation": Translation,
}
#: The paper's four transforms, in the order ``combination`` applies them (``depth`` follows ``depth_mode``).
COMBINATION: tuple[str, ...] = ("depth", "tilt", "width", "translation")
#: ``--augment`` choices (``depth_rows`` is reached with ``depth_mode="rows"``, not as a mode of its own).
AUGMENT_MODES: tuple[str, ...] = ("depth", "tilt", "width", "sector_angle", "translation", "combination")


def check_augment(mode: str) -> str:
    """Validate an ``--augment`` value."""
    if mode not in AUGMENT_MODES:
        raise EchoDataError(None, f"--augment: unknown transform {mode!r}; choose from {', '.join(AUGMENT_MODES)}")
    return mode


def make_transform(step: Mapping[str, Any]) -> SectorTransform:
    """Build a transform from its recorded parameters, e.g. ``{"type": "tilt", "angle_deg": 12.5}``."""
    kind = step.get("type")
    if kind not in TRANSFORM_TYPES:
        raise EchoDataError(None, f"unknown transform type {kind!r} in {dict(step)}")
    cls = TRANSFORM_TYPES[kind]
    try:
        return cls(**{f.name: float(step[f.name]) for f in fields(cls)})  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError) as err:
        raise EchoDataError(None, f"bad {kind} transform parameters {dict(step)}: {err}") from err
