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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from echogains.augment.coordinates import (
    inside_image,
    regrid_coordinates,
    regrid_sector,
    scale_sector,
    sector_contains,
)
from echogains.augment.draws import Draw, draw_steps, sample_steps
from echogains.augment.policy import DEPTH_MODES, KEPT_REGIONS, REFERENCE_SIZE, TransformPolicy, check_kept_region
from echogains.augment.sector_transforms import (
    AUGMENT_MODES,
    COMBINATION,
    TRANSFORM_TYPES,
    Depth,
    DepthRows,
    SectorAngle,
    SectorTransform,
    Tilt,
    Translation,
    Width,
    check_augment,
    make_transform,
)
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
        self.links: list[tuple[SectorTransform, Sector]] = []
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


def _margin_mm(sector: Sector, frame_sector: Sector, margin_px: float) -> float:
    return float(margin_px * max(*sector.spacing, *frame_sector.spacing))


def label_kept_fraction(
    label: np.ndarray,
    sector: Sector,
    steps: Sequence[Mapping[str, Any]],
    frame_shape: tuple[int, int] | None = None,
    margin_px: float = 1.0,
    kept_region: str = "original_sector",
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
    check_kept_region(kept_region)
    shape = tuple(label.shape)
    frame_shape = tuple(frame_shape or shape)
    rows, cols = np.nonzero(label > 0)
    if rows.size == 0:
        return 0.0
    frame_sector = regrid_sector(sector, shape, frame_shape)
    chain = SectorMap(steps, frame_sector, frame_shape)
    fr, fc = regrid_coordinates(rows.astype(np.float64), cols.astype(np.float64), shape, frame_shape)
    orow, ocol = chain.forward(fr, fc)
    margin = _margin_mm(sector, frame_sector, margin_px)
    kept = sector_contains(sector, rows, cols, margin)
    kept &= inside_image(orow, ocol, frame_shape)
    if kept_region == "original_sector":
        out_r, out_c = regrid_coordinates(orow, ocol, frame_shape, shape)
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
    check_kept_region(kept_region)
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
    known = inside_image(src_r, src_c, shape) & sector_contains(sector, src_r, src_c, margin)
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
