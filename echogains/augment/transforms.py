"""EchoGAINS sector transforms (paper Sec. 2.4, Fig. 1): depth increase, tilt, sector width, translation, combination.

Every transform is a pair of coordinate maps (``inverse``: output pixel -> input pixel, used for resampling;
``forward``: input pixel -> output pixel, used to count how much of the label survives) plus the new
:class:`~echogains.geometry.Sector`. The transforms use the fitted (or recorded) sector geometry, not a centred
apex, and work in physical coordinates (mm) where the sector is a true circular sector:

- **depth** (``rows_added`` px, 0-150 at 256 px): black rows are added at the bottom and the image is resized back to
  its height, i.e. rows are squeezed by ``H / (H + d)`` about the top edge. As in the paper the squeeze is
  anisotropic in pixels; the returned sector is the same circular sector (same apex angle, radii in mm) in the
  squeezed grid, so its ``spacing`` has ``sy * (H + d) / H``: it differs from the image's spacing by that factor.
- **tilt** (``angle_deg``, -30..30): rotation about the sector apex (in mm, so anisotropic pixels stay consistent).
- **width** (``factor``, 0.5..1.5): the angle from the sector bisector is multiplied by ``factor`` (polar
  resampling about the apex: radii are kept, the opening angle scales).
- **translation** (``dx_px``, ``dy_px``; length 0-50 px at 256 px, random direction): shift, then crop.
- **combination**: each of the four in this order with probability 0.5 (the paper's rule, so 1 in 16 draws is
  the identity: the sample then differs from the original only outside the sector).

Pixel ranges are defined for the paper's 256 x 256 frame (:attr:`TransformPolicy.reference_size`) and scaled to the
frame the transforms run in, so the same draw gives the same relative transform at any frame size.

Content outside the original sector is black in the output; ``known`` marks the kept original content (inside the
transformed sector, inside the image, and ``margin_mm`` away from the sector's outline so that the blurred outline
itself is regenerated). Labels are resampled nearest-neighbour and are 0 outside the kept content (labels are never
repainted). Retry policy (as the public release): parameters are redrawn, up to ``max_tries`` (30) times, until at
least ``min_label_inside`` (50 %) of the label's foreground pixels land in the kept content (counted exactly by the
forward map, so a depth increase that shrinks the label does not count as a loss). When every try fails the
augmentation is reported as failed; the expander then skips it with a warning and records why (no low-quality
sample enters the dataset).
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
    "AUGMENT_MODES",
    "REFERENCE_SIZE",
    "TransformPolicy",
    "Depth",
    "Tilt",
    "Width",
    "Translation",
    "SectorMap",
    "TransformResult",
    "Draw",
    "make_transform",
    "sample_steps",
    "draw_steps",
    "regrid_coordinates",
    "regrid_sector",
    "sector_contains",
    "label_kept_fraction",
    "apply_transforms",
    "check_augment",
]

#: The paper's frame size: pixel ranges of the policy refer to it.
REFERENCE_SIZE = 256


@dataclass(frozen=True)
class TransformPolicy:
    """Parameter ranges and retry rule of the sector transforms (EchoGAINS Sec. 2.4 and its public release).

    Args:
        depth_px: rows added at the bottom, at ``reference_size`` (paper: 0-150).
        tilt_deg: rotation about the apex in degrees (paper: -30..30).
        width_factor: opening-angle factor (paper: 0.5-1.5).
        translation_px: shift length at ``reference_size``, random direction (paper: 0-50).
        probability: chance of each transform in ``combination`` (paper: 0.5).
        min_label_inside: least fraction of the label's foreground that must stay in the kept content (0.5).
        max_tries: draws before giving up (30).
        margin_px: the kept content stays this many pixels (of the coarser grid) inside the sector outline.
        reference_size: frame size the pixel ranges refer to (256).
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

    def __post_init__(self) -> None:
        for name in ("depth_px", "tilt_deg", "width_factor", "translation_px"):
            lo, hi = getattr(self, name)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo <= hi):
                raise EchoDataError(None, f"transform policy: {name} must be (low, high) with low <= high")
        if self.width_factor[0] <= 0 or self.depth_px[0] < 0 or self.translation_px[0] < 0:
            raise EchoDataError(None, "transform policy: width factors must be > 0, depth and translation >= 0")
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


@dataclass(frozen=True)
class Depth(_Transform):
    """Depth increase: ``rows_added`` black rows at the bottom, then resized back to the image height.

    (1) rows are squeezed by c = (H + d) / H about the top edge: r_in = (r_out + 0.5) c - 0.5.
    (2) The sector keeps its angles and radii in mm in the squeezed grid whose row spacing is sy c; the apex moves
        up by 0.5 (sy c - sy) because physical coordinates start at the centre of the first pixel.
    """

    rows_added: float
    name: ClassVar[str] = "depth"

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
    """Sector width: angles from the bisector b are multiplied by ``factor`` (radii kept).

    (1) theta_out = b + factor (theta_in - b); inverse theta_in = b + (theta_out - b) / factor. Output angles whose
        input would lie more than 180 degrees from the bisector have no input (NaN).
    """

    factor: float
    name: ClassVar[str] = "width"

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


#: Transform classes by name, in the order ``combination`` applies them.
TRANSFORM_TYPES: dict[str, type[_Transform]] = {"depth": Depth, "tilt": Tilt, "width": Width, "translation": Translation}
#: ``--augment`` choices.
AUGMENT_MODES: tuple[str, ...] = (*TRANSFORM_TYPES, "combination")


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
        current = sector
        for step in steps:
            t = make_transform(step)
            self.links.append((t, current))
            current = t.new_sector(current, self.shape)
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


def label_kept_fraction(
    label: np.ndarray, sector: Sector, steps: Sequence[Mapping[str, Any]], frame_shape: tuple[int, int] | None = None,
    margin_px: float = 1.0,
) -> float:
    """Fraction of the label's foreground pixels that end up in the kept content after ``steps``.

    Every foreground pixel centre is mapped forward; it is kept when it lies in the (inset) original sector and lands
    inside the image. Counting source pixels makes the fraction independent of the transform's area change.

    Args:
        label: 2D label on its own grid (foreground > 0).
        sector: the label's sector on its grid.
        steps: transform parameters, defined on ``frame_shape`` (default: the label's grid).
        frame_shape: grid the transforms are defined on (the model frame).
        margin_px: inset of the kept content (see :class:`TransformPolicy`).
    """
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
    kept = sector_contains(sector, rows, cols, _margin_mm(sector, frame_sector, margin_px))
    kept &= _inside(orow, ocol, frame_shape)  # type: ignore[arg-type]
    return float(np.count_nonzero(kept) / rows.size)


@dataclass
class TransformResult:
    """A transformed case on the input's grid.

    Args:
        image: float32 image, 0 (black) outside the kept content.
        label: label (input dtype), 0 outside the kept content.
        known: bool mask of the kept original content (what RePaint keeps).
        sector: the transformed sector on this grid (after ``depth``, in the squeezed spacing; module docstring).
        steps: the transform parameters.
    """

    image: np.ndarray
    label: np.ndarray | None
    known: np.ndarray
    sector: Sector
    steps: list[dict[str, Any]] = field(default_factory=list)


def apply_transforms(
    image: np.ndarray,
    label: np.ndarray | None,
    sector: Sector,
    steps: Sequence[Mapping[str, Any]],
    frame_shape: tuple[int, int] | None = None,
    margin_px: float = 1.0,
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

    Returns:
        The :class:`TransformResult` (image bilinear, label nearest, known mask, new sector on the image's grid).
    """
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
    known = _inside(src_r, src_c, shape) & sector_contains(sector, src_r, src_c, _margin_mm(sector, frame_sector, margin_px))
    coords = np.stack([np.where(known, src_r, 0.0), np.where(known, src_c, 0.0)])
    out = ndimage.map_coordinates(image.astype(np.float32), coords, order=1, mode="nearest")
    out = np.where(known, out, 0.0).astype(np.float32)
    out_label = None
    if label is not None:
        lab = ndimage.map_coordinates(np.asarray(label), coords, order=0, mode="nearest")
        out_label = np.where(known, lab, 0).astype(label.dtype)
    new_sector = regrid_sector(chain.sector, frame, shape)
    return TransformResult(out, out_label, known, new_sector, [dict(s) for s in steps])


# ----------------------------------------------------------------------------------------------------------------
# Random draws and the retry policy
# ----------------------------------------------------------------------------------------------------------------


def _sample_one(kind: str, rng: np.random.Generator, policy: TransformPolicy, scale: float) -> dict[str, Any]:
    """Draw the parameters of one transform; pixel values are drawn at the reference size and scaled."""
    if kind == "depth":
        ref = float(rng.uniform(*policy.depth_px))
        return {"type": "depth", "rows_added": ref * scale, "rows_added_ref": ref}
    if kind == "tilt":
        return {"type": "tilt", "angle_deg": float(rng.uniform(*policy.tilt_deg))}
    if kind == "width":
        return {"type": "width", "factor": float(rng.uniform(*policy.width_factor))}
    direction = float(rng.uniform(0.0, 360.0))
    length = float(rng.uniform(*policy.translation_px))
    a = np.radians(direction)
    return {"type": "translation", "dx_px": length * scale * np.cos(a), "dy_px": length * scale * np.sin(a),
            "length_ref": length, "direction_deg": direction}


def sample_steps(mode: str, rng: np.random.Generator, policy: TransformPolicy, frame_size: int) -> list[dict[str, Any]]:
    """Draw one augmentation: a single transform, or for ``combination`` each transform with ``policy.probability``.

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
    for kind in TRANSFORM_TYPES:
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
