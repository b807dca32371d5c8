"""EchoGAINS sector transforms (paper Sec. 2.4, Fig. 1, Fig. 8): depth, tilt, width, translation, combination.

Every transform is a pair of coordinate maps (``inverse``: output pixel -> input pixel, used for resampling;
``forward``: input pixel -> output pixel, used to count how much of the label survives) plus the new
:class:`~echogains.geometry.Sector` of the transformed content. The transforms use the fitted (or recorded) sector
geometry, not a centred apex, and work where it matters in physical coordinates (mm), where the sector is a true
circular sector:

- **depth** (``rows_added`` d px, 0-150 at 256 px): an isotropic zoom-out about the sector apex by
  c = (H + d) / H, i.e. what a deeper acquisition with the same probe looks like (the public EchoGAINS code pads
  the columns too and keeps the frame square). The output's pixels are c times larger in mm (both axes), so the
  anatomy keeps its physical size and shape: :attr:`TransformResult.spacing` is the source spacing times c.
- **depth_rows** (``TransformPolicy(depth_mode="rows")``): the paper's literal wording, "adding black pixels at
  the bottom of the image and then resizing to 256 x 256": rows only are squeezed by H / (H + d) about the top
  edge; the spacing is left as the source's, so the anatomy is squeezed vertically (aspect ratio / c). Kept as an
  option for fidelity to the text; not the default.
- **tilt** (``angle_deg``, -30..30): rotation about the sector apex (in mm, so anisotropic pixels stay consistent).
- **width** (``factor`` lambda, 0.5..1.5): the paper's transform: the image width is multiplied by lambda about the
  frame's centre column (lambda > 1: stretched horizontally and cropped back; lambda < 1: squeezed into the
  centre); rows are unchanged. This deliberately distorts the anatomy ("resizing ... distorts the image"), and is
  the only transform that does: the spacing is left as the source's.
- **sector_angle** (``factor``, 0.5..1.5): the angle from the sector bisector is multiplied by ``factor`` (polar
  resampling about the apex: radii are kept, the opening angle scales). Not in the paper; an alternative to
  ``width`` that keeps the sector circular.
- **translation** (``dx_px``, ``dy_px``; length 0-50 px at 256 px, random direction): shift, then crop.
- **combination**: the paper's four (:data:`COMBINATION`: depth, tilt, width, translation), each in this order
  with probability 0.5 (the paper's rule, so 1 in 16 draws is the identity: the sample then differs from the
  original only in the repainted band along the sector outline).

Pixel ranges are defined for the paper's 256 x 256 frame (:attr:`TransformPolicy.reference_size`) and scaled to the
frame the transforms run in, so the same draw gives the same relative transform at any frame size.

Kept region (Fig. 8: "the pixels outside the original sector are turned black", then repainted): ``known`` marks
the kept original content: output pixels whose source lies inside the original sector and inside the image, and,
with ``kept_region="original_sector"`` (the default, as the paper and its public code), that lie inside the
original sector's footprint themselves. Everything else is black and is repainted, so the output always shows a
complete sector in the original footprint (:attr:`TransformResult.sector`). ``kept_region="transformed_sector"``
keeps all transformed content inside the image instead (the output's sector is then the transformed one). Both
stay ``margin_mm`` inside the sector outlines so that the blurred outline itself is regenerated. Labels are
resampled nearest-neighbour and are 0 outside the kept content (labels are never repainted).

Retry policy (as the public release): parameters are redrawn, up to ``max_tries`` (30) times, until at least
``min_label_inside`` (50 %) of the label's foreground pixels land in the kept content (counted exactly by the
forward map, so a zoom-out that shrinks the label does not count as a loss). When every try fails the augmentation
is reported as failed; the expander then skips it with a warning and records why (no low-quality sample enters the
dataset).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar

import numpy as np
from scipy import ndimage

from echogains.geometry import Sector
from echogains.utils import EchoDataError

__all__ = [
    "TRANSFORM_TYPES",
    "COMBINATION",
    "AUGMENT_MODES",
    "KEPT_REGIONS",
    "DEPTH_MODES",
    "REFERENCE_SIZE",
    "TransformPolicy",
    "Depth",
    "DepthRows",
    "Tilt",
    "Width",
    "SectorAngle",
    "Translation",
    "SectorMap",
    "TransformResult",
    "Draw",
    "make_transform",
    "sample_steps",
    "draw_steps",
    "regrid_coordinates",
    "regrid_sector",
    "scale_sector",
    "sector_contains",
    "label_kept_fraction",
    "apply_transforms",
    "check_augment",
]

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
        if self.width_factor[0] <= 0 or self.sector_angle_factor[0] <= 0 or self.depth_px[0] < 0 \
                or self.translation_px[0] < 0:
            raise EchoDataError(None, "transform policy: width factors must be > 0, depth and translation >= 0")
        if self.kept_region not in KEPT_REGIONS:
            raise EchoDataError(None, f"transform policy: kept_region must be one of {', '.join(KEPT_REGIONS)}")
        if self.depth_mode not in DEPTH_MODES:
            raise EchoDataError(None, f"transform policy: depth_mode must be one of {', '.join(DEPTH_MODES)}")
        if not (0.0 <= self.probability <= 1.0 and 0.0 <= self.min_label_inside <= 1.0):
            raise EchoDataError(None, "transform policy: probability and min_label_inside must lie in [0, 1]")
        if self.max_tries < 1 or self.reference_size < 1 or self.margin_px < 0:
            raise EchoDataError(None, "transform policy: max_tries and reference_size >= 1, margin_px >= 0")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["on_failure"] = "skip"  # all tries below min_label_inside: the augmentation is skipped and recorded
        return d


# ----------------------------------------------------------------------------------------------------------------
# Coordinates
# ----------------------------------------------------------------------------------------------------------------


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
    return replace(sector, apex=(sector.apex[0] * zoom, sector.apex[1] * zoom), r_max=sector.r_max * zoom,
                   r_min=sector.r_min * zoom, spacing=(sector.spacing[0] * zoom, sector.spacing[1] * zoom))


def _to_mm(sector: Sector, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (dx, dy) in mm of pixel coordinates from the apex."""
    return cols * sector.spacing[0] - sector.apex[0], rows * sector.spacing[1] - sector.apex[1]


def _to_px(sector: Sector, dx: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (rows, cols) of offsets (dx, dy) in mm from the apex."""
    return (dy + sector.apex[1]) / sector.spacing[1], (dx + sector.apex[0]) / sector.spacing[0]


def sector_contains(sector: Sector, rows: np.ndarray, cols: np.ndarray, margin_mm: float = 0.0) -> np.ndarray:
    """Whether the points (pixel coordinates, any shape) lie inside ``sector``, at least ``margin_mm`` inside.

    The margin is the distance to the straight edges (to the apex where the edge's foot lies behind it), to the far
    arc and, when ``r_min > 0``, to the near arc. NaN coordinates are outside.
    """
    dx, dy = _to_mm(sector, np.asarray(rows, dtype=np.float64), np.asarray(cols, dtype=np.float64))
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


# ----------------------------------------------------------------------------------------------------------------
# The four transforms
# ----------------------------------------------------------------------------------------------------------------


class _Transform:
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
class Depth(_Transform):
    """Depth increase as an isotropic zoom-out about the sector apex (what a deeper acquisition looks like).

    (1) c = (H + d) / H for ``rows_added`` d on a grid of height H; every pixel offset from the apex (a_r, a_c)
        shrinks by c: p_out = a + (p_in - a) / c, both axes (isotropic in pixels is isotropic in mm too: a diagonal
        pixel-to-mm map commutes with a uniform scaling).
    (2) The output's pixels are c times larger in mm: the new sector has the same angles and radii in mm, its apex
        at the same pixel, and spacing c times the input's (:func:`scale_sector` of the pixel footprint).
    """

    rows_added: float
    name: ClassVar[str] = "depth"

    def _c(self, shape: tuple[int, int]) -> float:
        return (shape[0] + self.rows_added) / shape[0]

    def inverse(self, rows, cols, sector, shape):
        c, (ar, ac) = self._c(shape), _apex_px(sector)
        return ar + (rows - ar) * c, ac + (cols - ac) * c  # (1)

    def forward(self, rows, cols, sector, shape):
        c, (ar, ac) = self._c(shape), _apex_px(sector)
        return ar + (rows - ar) / c, ac + (cols - ac) / c

    def new_sector(self, sector, shape):
        c = self._c(shape)  # (2): same pixel apex; radii in mm kept, spacing x c
        return replace(sector, apex=(sector.apex[0] * c, sector.apex[1] * c),
                       spacing=(sector.spacing[0] * c, sector.spacing[1] * c))

    def pixel_scale(self, shape):
        return self._c(shape)


@dataclass(frozen=True)
class DepthRows(_Transform):
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

    def inverse(self, rows, cols, sector, shape):
        return (rows + 0.5) * self._c(shape) - 0.5, cols  # (1)

    def forward(self, rows, cols, sector, shape):
        return (rows + 0.5) / self._c(shape) - 0.5, cols

    def new_sector(self, sector, shape):
        sy = sector.spacing[1] * self._c(shape)  # (2)
        apex = (sector.apex[0], sector.apex[1] - 0.5 * (sy - sector.spacing[1]))
        return replace(sector, apex=apex, spacing=(sector.spacing[0], sy))


def _rotate(dx: np.ndarray, dy: np.ndarray, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate offsets so that their angle (from +y toward +x) grows by ``angle_deg``."""
    a = np.radians(angle_deg)
    # angle phi = atan2(dx, dy): (dx, dy) = rho (sin phi, cos phi) -> rho (sin(phi + a), cos(phi + a))
    return dx * np.cos(a) + dy * np.sin(a), dy * np.cos(a) - dx * np.sin(a)


@dataclass(frozen=True)
class Tilt(_Transform):
    """Tilt: rotation by ``angle_deg`` about the sector apex (in mm); the edge angles grow by ``angle_deg``."""

    angle_deg: float
    name: ClassVar[str] = "tilt"

    def inverse(self, rows, cols, sector, shape):
        dx, dy = _rotate(*_to_mm(sector, rows, cols), -self.angle_deg)
        return _to_px(sector, dx, dy)

    def forward(self, rows, cols, sector, shape):
        dx, dy = _rotate(*_to_mm(sector, rows, cols), self.angle_deg)
        return _to_px(sector, dx, dy)

    def new_sector(self, sector, shape):
        return replace(sector, theta_min=sector.theta_min + self.angle_deg, theta_max=sector.theta_max + self.angle_deg)


def _wrap(deg: np.ndarray) -> np.ndarray:
    """Angles to [-180, 180)."""
    return (deg + 180.0) % 360.0 - 180.0


@dataclass(frozen=True)
class Width(_Transform):
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

    def inverse(self, rows, cols, sector, shape):
        xc = self._centre(shape)
        return rows, xc + (cols - xc) / self.factor  # (1)

    def forward(self, rows, cols, sector, shape):
        xc = self._centre(shape)
        return rows, xc + (cols - xc) * self.factor

    def new_sector(self, sector, shape):
        xc = self._centre(shape)
        sx = sector.spacing[0] / self.factor  # (2)
        apex_col = xc + self.factor * (sector.apex[0] / sector.spacing[0] - xc)
        return replace(sector, apex=(apex_col * sx, sector.apex[1]), spacing=(sx, sector.spacing[1]))


@dataclass(frozen=True)
class SectorAngle(_Transform):
    """Sector angle scaling (not in the paper): angles from the bisector b are multiplied by ``factor`` (radii kept).

    (1) theta_out = b + factor (theta_in - b); inverse theta_in = b + (theta_out - b) / factor. Output angles whose
        input would lie more than 180 degrees from the bisector have no input (NaN).
    """

    factor: float
    name: ClassVar[str] = "sector_angle"

    def _polar_map(self, rows, cols, sector, scale: float):
        dx, dy = _to_mm(sector, rows, cols)
        rho = np.hypot(dx, dy)
        b = sector.tilt_deg
        rel = _wrap(np.degrees(np.arctan2(dx, dy)) - b) * scale  # (1)
        phi = np.radians(b + np.where(np.abs(rel) < 180.0, rel, np.nan))
        return _to_px(sector, rho * np.sin(phi), rho * np.cos(phi))

    def inverse(self, rows, cols, sector, shape):
        return self._polar_map(rows, cols, sector, 1.0 / self.factor)

    def forward(self, rows, cols, sector, shape):
        return self._polar_map(rows, cols, sector, self.factor)

    def new_sector(self, sector, shape):
        b = sector.tilt_deg
        return replace(sector, theta_min=b + self.factor * (sector.theta_min - b),
                       theta_max=b + self.factor * (sector.theta_max - b))


@dataclass(frozen=True)
class Translation(_Transform):
    """Translation by (``dx_px``, ``dy_px``) pixels (columns, rows); content leaving the image is cropped."""

    dx_px: float
    dy_px: float
    name: ClassVar[str] = "translation"

    def inverse(self, rows, cols, sector, shape):
        return rows - self.dy_px, cols - self.dx_px

    def forward(self, rows, cols, sector, shape):
        return rows + self.dy_px, cols + self.dx_px

    def new_sector(self, sector, shape):
        apex = (sector.apex[0] + self.dx_px * sector.spacing[0], sector.apex[1] + self.dy_px * sector.spacing[1])
        return replace(sector, apex=apex)


#: Transform classes by recorded type name.
TRANSFORM_TYPES: dict[str, type[_Transform]] = {
    "depth": Depth, "depth_rows": DepthRows, "tilt": Tilt, "width": Width, "sector_angle": SectorAngle,
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


def make_transform(step: Mapping[str, Any]) -> _Transform:
    """Build a transform from its recorded parameters, e.g. ``{"type": "tilt", "angle_deg": 12.5}``."""
    kind = step.get("type")
    if kind not in TRANSFORM_TYPES:
        raise EchoDataError(None, f"unknown transform type {kind!r} in {dict(step)}")
    cls = TRANSFORM_TYPES[kind]
    try:
        return cls(**{f.name: float(step[f.name]) for f in fields(cls)})  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError) as err:
        raise EchoDataError(None, f"bad {kind} transform parameters {dict(step)}: {err}") from err


# ----------------------------------------------------------------------------------------------------------------
# Chains
# ----------------------------------------------------------------------------------------------------------------


class SectorMap:
    """A chain of transforms on a grid of ``shape`` starting from ``sector``: composite maps and the final sector.

    Args:
        steps: transform parameters (see :func:`make_transform`), applied in order.
        sector: the sector of the input image on this grid.
        shape: (rows, cols) of the grid.
    """

    def __init__(self, steps: Sequence[Mapping[str, Any]], sector: Sector, shape: tuple[int, int]):
        self.shape = (int(shape[0]), int(shape[1]))
        self.links: list[tuple[_Transform, Sector]] = []
        #: factor by which the output's pixels are larger in mm than the input's (product of the depth zooms)
        self.pixel_scale = 1.0
        current = sector
        for step in steps:
            t = make_transform(step)
            self.links.append((t, current))
            current = t.new_sector(current, self.shape)
            self.pixel_scale *= t.pixel_scale(self.shape)
        self.sector = current

    def inverse(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Output -> input pixel coordinates: T_1^-1(... T_n^-1(p))."""
        for t, before in reversed(self.links):
            rows, cols = t.inverse(rows, cols, before, self.shape)
        return rows, cols

    def forward(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Input -> output pixel coordinates: T_n(... T_1(p))."""
        for t, before in self.links:
            rows, cols = t.forward(rows, cols, before, self.shape)
        return rows, cols


def _inside(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Coordinates within the image (a pixel covers +-0.5 px about its centre)."""
    with np.errstate(invalid="ignore"):
        return (rows >= -0.5) & (rows <= shape[0] - 0.5) & (cols >= -0.5) & (cols <= shape[1] - 0.5)


def _margin_mm(sector: Sector, frame_sector: Sector, margin_px: float) -> float:
    return float(margin_px * max(*sector.spacing, *frame_sector.spacing))


def _check_kept_region(kept_region: str) -> None:
    if kept_region not in KEPT_REGIONS:
        raise EchoDataError(None, f"kept_region must be one of {', '.join(KEPT_REGIONS)}, got {kept_region!r}")


def label_kept_fraction(
    label: np.ndarray, sector: Sector, steps: Sequence[Mapping[str, Any]], frame_shape: tuple[int, int] | None = None,
    margin_px: float = 1.0, kept_region: str = "original_sector",
) -> float:
    """Fraction of the label's foreground pixels that end up in the kept content after ``steps``.

    Every foreground pixel centre is mapped forward; it is kept when it lies in the (inset) original sector and lands
    inside the image (and, with ``kept_region="original_sector"``, inside the inset original sector's footprint).
    Counting source pixels makes the fraction independent of the transform's area change.

    Args:
        label: 2D label on its own grid (foreground > 0).
        sector: the label's sector on its grid.
        steps: transform parameters, defined on ``frame_shape`` (default: the label's grid).
        frame_shape: grid the transforms are defined on (the model frame).
        margin_px: inset of the kept content (see :class:`TransformPolicy`).
        kept_region: see :class:`TransformPolicy`.
    """
    _check_kept_region(kept_region)
    shape = tuple(label.shape)
    frame_shape = tuple(frame_shape or shape)  # type: ignore[assignment]
    rows, cols = np.nonzero(label > 0)
    if rows.size == 0:
        return 0.0
    frame_sector = regrid_sector(sector, shape, frame_shape)  # type: ignore[arg-type]
    chain = SectorMap(steps, frame_sector, frame_shape)  # type: ignore[arg-type]
    fr, fc = regrid_coordinates(
        rows.astype(np.float64), cols.astype(np.float64), shape, frame_shape  # type: ignore[arg-type]
    )
    orow, ocol = chain.forward(fr, fc)
    margin = _margin_mm(sector, frame_sector, margin_px)
    kept = sector_contains(sector, rows, cols, margin)
    kept &= _inside(orow, ocol, frame_shape)  # type: ignore[arg-type]
    if kept_region == "original_sector":
        out_r, out_c = regrid_coordinates(orow, ocol, frame_shape, shape)  # type: ignore[arg-type]
        kept &= sector_contains(sector, out_r, out_c, margin)
    return float(np.count_nonzero(kept) / rows.size)


@dataclass
class TransformResult:
    """A transformed case on the input's grid.

    Args:
        image: float32 image, 0 (black) outside the kept content.
        label: label (input dtype), 0 outside the kept content.
        known: bool mask of the kept original content (what RePaint keeps).
        sector: the output's sector on this grid, in the output's mm: the original sector's footprint
            (``kept_region="original_sector"``, repainted to a complete sector) or the transformed content's sector.
        steps: the transform parameters.
        spacing: (x, y) mm per pixel of the output: the input's times :attr:`SectorMap.pixel_scale` (a depth
            zoom-out makes pixels larger; the other transforms keep the spacing).
        content_sector: the sector the kept content comes from, on this grid (its own spacing may differ from
            ``spacing`` after ``width`` or ``depth_rows``, which distort).
        pixel_scale: ``spacing`` / the input's spacing (:attr:`SectorMap.pixel_scale`; exactly 1 without a zoom).
    """

    image: np.ndarray
    label: np.ndarray | None
    known: np.ndarray
    sector: Sector
    steps: list[dict[str, Any]] = field(default_factory=list)
    spacing: tuple[float, float] = (1.0, 1.0)
    content_sector: Sector | None = None
    pixel_scale: float = 1.0


def apply_transforms(
    image: np.ndarray,
    label: np.ndarray | None,
    sector: Sector,
    steps: Sequence[Mapping[str, Any]],
    frame_shape: tuple[int, int] | None = None,
    margin_px: float = 1.0,
    kept_region: str = "original_sector",
) -> TransformResult:
    """Apply a chain of sector transforms jointly to an image, its label and its sector mask (one resampling).

    Args:
        image: 2D grey image (black outside the sector).
        label: 2D integer label of the same shape, or ``None``; resampled nearest-neighbour (order 0).
        sector: the image's sector (its ``spacing`` maps pixels to mm).
        steps: transform parameters applied in order.
        frame_shape: grid the transforms are defined on (the model frame, e.g. 256 x 256); default the image's
            own. The result stays on the image's grid: output pixel -> frame -> inverse chain -> frame -> input.
        margin_px: inset of the kept content in pixels of the coarser of the two grids.
        kept_region: ``original_sector`` (cut to the original sector's footprint, the paper) or
            ``transformed_sector``.

    Returns:
        The :class:`TransformResult` (image bilinear, label nearest, known mask, output sector and spacing).
    """
    _check_kept_region(kept_region)
    image = np.asarray(image)
    shape = (int(image.shape[0]), int(image.shape[1]))
    frame = (int(frame_shape[0]), int(frame_shape[1])) if frame_shape is not None else shape
    if label is not None and tuple(label.shape) != shape:
        raise EchoDataError(None, f"label shape {label.shape} != image shape {shape}")
    frame_sector = regrid_sector(sector, shape, frame)
    chain = SectorMap(steps, frame_sector, frame)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    fr, fc = chain.inverse(*regrid_coordinates(rows, cols, shape, frame))
    src_r, src_c = regrid_coordinates(fr, fc, frame, shape)
    margin = _margin_mm(sector, frame_sector, margin_px)
    known = _inside(src_r, src_c, shape) & sector_contains(sector, src_r, src_c, margin)
    if kept_region == "original_sector":  # Fig. 8: outside the original sector is black and repainted
        known &= sector_contains(sector, rows, cols, margin)
    coords = np.stack([np.where(known, src_r, 0.0), np.where(known, src_c, 0.0)])
    out = ndimage.map_coordinates(image.astype(np.float32), coords, order=1, mode="nearest")
    out = np.where(known, out, 0.0).astype(np.float32)
    out_label = None
    if label is not None:
        lab = ndimage.map_coordinates(np.asarray(label), coords, order=0, mode="nearest")
        out_label = np.where(known, lab, 0).astype(label.dtype)
    zoom = chain.pixel_scale
    content = regrid_sector(chain.sector, frame, shape)
    out_sector = scale_sector(sector, zoom) if kept_region == "original_sector" else content
    spacing = (float(sector.spacing[0] * zoom), float(sector.spacing[1] * zoom))
    return TransformResult(out, out_label, known, out_sector, [dict(s) for s in steps], spacing, content, zoom)


# ----------------------------------------------------------------------------------------------------------------
# Random draws and the retry policy
# ----------------------------------------------------------------------------------------------------------------


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
    return {"type": "translation", "dx_px": length * scale * np.cos(a), "dy_px": length * scale * np.sin(a),
            "length_ref": length, "direction_deg": direction}


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
