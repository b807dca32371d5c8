"""Clinical measures from 2D LV masks: long axis, LV volumes (Simpson's method of discs, area-length) and EF.

Coordinates are physical (mm): pixel ``[r, c]`` sits at ``(x, y) = (c * sx, r * sy)`` with ``spacing = (sx, sy)``
in SimpleITK order (as :mod:`echogains.geometry`). Volumes are returned in ml (1 ml = 1000 mm^3).

Method (the clinical guideline [Lang et al. 2015], as automated in the EchoGAINS paper, section 2.7):

1. Long axis of each view (:func:`lv_long_axis`): from the midpoint of the mitral annulus to the apex.
   The annulus is found from the masks. With a myocardium (MYO) mask, the LV boundary pixels that do not touch
   MYO form the valve plane and its two extreme points are the annulus points; with a left-atrium (LA) mask but
   no MYO, the LV boundary pixels touching LA form it. When these pixels form several runs (the LV also meets
   the sector edge, or a predicted MYO has a gap), runs touching the LA win, then the run lying most across the
   LV's principal axis. LV only (fallback): the principal axis of the LV; the
   base is the end where the cavity is wider (10 % from each end; a tie picks the end lower in the image, away
   from the transducer), and the annulus points are the two extreme contour points within one pixel of that
   end. The apex is the LV contour point farthest from the annulus midpoint (points within half a pixel of the
   maximum distance count as tied, and the middle one of them is taken, so that a blunt rasterised tip gives
   its centre rather than an arbitrary corner).
2. Discs (:func:`lv_profile`): the long axis of length ``L`` is cut into ``n`` (20) discs of height ``L / n``;
   the diameter of disc ``i`` is the width of the LV contour along the line perpendicular to the axis through
   the disc's mid-height (midpoint rule).
3. Modified Simpson biplane: ``V = pi/4 * sum_i a_i * b_i * L / n`` with ``a_i`` from the 2CH and ``b_i`` from the
   4CH view at the same fraction of each view's own axis and ``L`` the longer of the two long axes (guideline:
   the views are foreshortened, so the longer axis is the better estimate of the true length; discs are matched
   by their fractional position along each view's axis).
4. Single view: area-length ``V = 8 A^2 / (3 pi L)`` (or monoplane discs ``V = pi/4 * sum_i d_i^2 * L / n``).
5. ``EF = 100 * (EDV - ESV) / EDV``; per patient each 2CH frame is combined with each 4CH frame of the same
   phase and the volumes averaged (EchoGAINS section 2.7, step 3).

Masks are reduced to their largest 8-connected component before any measurement.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from skimage import measure

__all__ = [
    "LongAxis",
    "LVProfile",
    "PatientEF",
    "CaseMasks",
    "lv_long_axis",
    "lv_profile",
    "simpson_biplane_volume",
    "simpson_monoplane_volume",
    "area_length_volume",
    "biplane_volume_from_profiles",
    "monoplane_volume_from_profile",
    "area_length_from_profile",
    "ejection_fraction",
    "percentile_interval",
    "ef_from_profiles",
    "patient_ef",
    "canonical_view",
]

Point = tuple[float, float]
_EIGHT = np.ones((3, 3), dtype=bool)
_MM3_PER_ML = 1000.0


@dataclass(frozen=True)
class LongAxis:
    """LV long axis of one view, in mm.

    Args:
        apex: (x, y) of the apex.
        base: the two mitral annulus points (x, y).
        base_mid: midpoint of the annulus.
        length: distance from ``base_mid`` to ``apex``.
        method: how the annulus was found: ``myo``, ``la`` or ``principal-axis``.
    """

    apex: Point
    base: tuple[Point, Point]
    base_mid: Point
    length: float
    method: str

    @property
    def direction(self) -> np.ndarray:
        """Unit vector from the annulus midpoint toward the apex."""
        return (np.asarray(self.apex) - np.asarray(self.base_mid)) / self.length


@dataclass(frozen=True)
class LVProfile:
    """What the volume formulas need from one view: long axis, disc diameters (mm) and cavity area (mm^2)."""

    axis: LongAxis
    diameters: np.ndarray
    area_mm2: float

    @property
    def n_discs(self) -> int:
        return int(len(self.diameters))


@dataclass
class CaseMasks:
    """One frame for :func:`patient_ef`: LV mask (optionally MYO/LA) of a patient's view at a phase."""

    patient: str
    view: str
    phase: str
    lv: np.ndarray
    spacing: Sequence[float]
    myo: np.ndarray | None = None
    la: np.ndarray | None = None
    case_id: str = ""


@dataclass
class PatientEF:
    """Per-patient volumes and EF. ``method``: ``biplane``, ``area-length <view>`` or ``infeasible``."""

    patient: str
    edv_ml: float
    esv_ml: float
    ef_pct: float
    method: str
    n_frames: dict[str, int] = field(default_factory=dict)


# --- mask helpers -----------------------------------------------------------------------------------------------
def _largest_component(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    labelled, n = ndimage.label(mask, structure=_EIGHT)
    if n <= 1:
        return mask
    sizes = np.bincount(labelled.ravel())[1:]
    return labelled == (int(np.argmax(sizes)) + 1)


def _pixels_mm(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """(N, 2) physical (x, y) of the centres of the mask's pixels."""
    rows, cols = np.nonzero(mask)
    return np.stack([cols * float(spacing[0]), rows * float(spacing[1])], axis=1).astype(np.float64)


def _contour_mm(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Longest closed iso-0.5 contour of the mask as (K, 2) physical (x, y); it runs between pixel centres."""
    padded = np.pad(mask.astype(np.float64), 1)
    contours = measure.find_contours(padded, 0.5)
    rc = max(contours, key=len) - 1.0
    return np.stack([rc[:, 1] * float(spacing[0]), rc[:, 0] * float(spacing[1])], axis=1)


def _check_spacing(spacing: Sequence[float]) -> tuple[float, float]:
    sx, sy = (float(s) for s in spacing)
    if not (sx > 0 and sy > 0 and math.isfinite(sx) and math.isfinite(sy)):
        raise ValueError(f"invalid spacing {tuple(spacing)}; expected (sx, sy) > 0 in mm")
    return sx, sy


def _check_mask(mask: np.ndarray, what: str = "LV mask") -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"{what} must be 2D [rows, cols], got shape {mask.shape}")
    if not mask.any():
        raise ValueError(f"{what} is empty")
    return mask.astype(bool)


# --- chords -----------------------------------------------------------------------------------------------------
def _chord_widths(contour: np.ndarray, origin: np.ndarray, axis: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Width of the closed contour along lines perpendicular to ``axis`` at ``origin + s * axis``, s in positions.

    Each line's crossings with the polygon edges are found exactly; the width is the distance between the two
    outermost crossings (0 when the line misses the contour).
    """
    perp = np.array([-axis[1], axis[0]])
    rel = contour - origin
    u, v = rel @ axis, rel @ perp
    u0, u1 = u, np.roll(u, -1)
    v0, v1 = v, np.roll(v, -1)
    s = np.asarray(positions, dtype=np.float64)[:, None]
    # an edge crosses the line u = s when s lies in [min(u0,u1), max(u0,u1)) (half-open: vertices count once)
    crosses = (np.minimum(u0, u1) <= s) & (s < np.maximum(u0, u1))
    du = np.where(u1 == u0, 1.0, u1 - u0)
    v_cross = v0 + (s - u0) / du * (v1 - v0)
    v_hi = np.where(crosses, v_cross, -np.inf).max(axis=1)
    v_lo = np.where(crosses, v_cross, np.inf).min(axis=1)
    return np.where(np.isfinite(v_hi), v_hi - v_lo, 0.0)


# --- long axis --------------------------------------------------------------------------------------------------
def _boundary(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with an 8-neighbour outside the mask (the image border counts as outside)."""
    return mask & ~ndimage.binary_erosion(mask, structure=_EIGHT, border_value=0)


def _extreme_pair(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two extreme points of a point set along its own principal direction."""
    centred = points - points.mean(axis=0)
    _, vecs = np.linalg.eigh(centred.T @ centred)
    proj = centred @ vecs[:, -1]
    return points[int(np.argmin(proj))], points[int(np.argmax(proj))]


def _principal_axis(mask: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Centroid and unit principal direction (largest variance) of the mask's pixel centres, in mm."""
    pts = _pixels_mm(mask, spacing)
    centroid = pts.mean(axis=0)
    _, vecs = np.linalg.eigh(np.cov((pts - centroid).T) if len(pts) > 2 else np.eye(2))
    return centroid, vecs[:, -1]


def _annulus_from_neighbour(
    lv: np.ndarray, spacing: Sequence[float], touching: np.ndarray, prefer: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """Annulus points from the valve-plane pixels (LV boundary pixels flagged by ``touching``).

    The flagged pixels may form several 8-connected runs (e.g. where the LV meets the sector edge, or through a gap
    in a predicted myocardium). Runs touching ``prefer`` (the LA) are preferred when there are any; among the
    candidates the run lying most across the LV is taken: the largest ``|d . n| - |d . e|`` with ``d`` the vector
    between its extreme points, ``e`` the LV principal axis and ``n`` its normal.
    """
    labelled, n = ndimage.label(_boundary(lv) & touching, structure=_EIGHT)
    runs = [labelled == k for k in range(1, n + 1)]
    runs = [r for r in runs if r.sum() >= 2]
    if prefer is not None and any((r & prefer).any() for r in runs):
        runs = [r for r in runs if (r & prefer).any()]
    if not runs:
        return None
    _, axis = _principal_axis(lv, spacing)
    normal = np.array([-axis[1], axis[0]])

    def across(run: np.ndarray) -> tuple[float, float]:
        p, q = _extreme_pair(_pixels_mm(run, spacing))
        d = q - p
        return abs(float(d @ normal)) - abs(float(d @ axis)), float(np.linalg.norm(d))

    return _extreme_pair(_pixels_mm(max(runs, key=across), spacing))


def _annulus_from_principal_axis(
    lv: np.ndarray, spacing: Sequence[float], contour: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Fallback annulus for an LV-only mask: the chord at the wider end of the principal axis."""
    centroid, axis = _principal_axis(lv, spacing)
    u = (contour - centroid) @ axis
    u_min, u_max = float(u.min()), float(u.max())
    w_lo, w_hi = _chord_widths(
        contour, centroid, axis, np.array([u_min + 0.1 * (u_max - u_min), u_max - 0.1 * (u_max - u_min)])
    )
    if w_hi > 1.05 * w_lo:
        base_u = u_max
    elif w_lo > 1.05 * w_hi:
        base_u = u_min
    else:  # symmetric: the base is the end lower in the image (the apex faces the transducer)
        base_u = u_max if (centroid + u_max * axis)[1] >= (centroid + u_min * axis)[1] else u_min
    slab = contour[np.abs(u - base_u) <= max(float(s) for s in spacing)]
    v = (slab - centroid) @ np.array([-axis[1], axis[0]])
    return slab[int(np.argmin(v))], slab[int(np.argmax(v))]


def _apex(contour: np.ndarray, base_mid: np.ndarray, tol: float) -> np.ndarray:
    """Contour point farthest from ``base_mid``; near-ties (within ``tol`` mm, a blunt rasterised tip) are resolved
    by the tied point closest to the tied points' mean, i.e. the middle of the tip."""
    dist = np.linalg.norm(contour - base_mid, axis=1)
    tied = contour[dist >= dist.max() - tol]
    return tied[int(np.argmin(np.linalg.norm(tied - tied.mean(axis=0), axis=1)))]


def _optional_mask(mask: np.ndarray | None, shape: tuple[int, ...], what: str) -> np.ndarray | None:
    """A neighbour mask as bool, ``None`` when absent or empty; a shape mismatch is an error."""
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != shape:
        raise ValueError(f"{what} mask shape {mask.shape} != LV mask shape {shape}")
    return mask if mask.any() else None


def _find_annulus(
    lv: np.ndarray, spacing: Sequence[float], contour: np.ndarray, myo: np.ndarray | None, la: np.ndarray | None
) -> tuple[tuple[np.ndarray, np.ndarray], str]:
    """Annulus points and the method that found them: MYO gap, else LA contact, else the principal-axis fallback."""
    near_la = None if la is None else ndimage.binary_dilation(la, _EIGHT)
    if myo is not None:
        base = _annulus_from_neighbour(lv, spacing, ~ndimage.binary_dilation(myo, _EIGHT), prefer=near_la)
        if base is not None:
            return base, "myo"
    if near_la is not None:
        base = _annulus_from_neighbour(lv, spacing, near_la)
        if base is not None:
            return base, "la"
    return _annulus_from_principal_axis(lv, spacing, contour), "principal-axis"


def _long_axis(
    lv: np.ndarray, contour: np.ndarray, spacing: Sequence[float], myo: np.ndarray | None, la: np.ndarray | None
) -> LongAxis:
    base, method = _find_annulus(lv, spacing, contour, myo, la)
    base_mid = (base[0] + base[1]) / 2.0
    apex = _apex(contour, base_mid, min(float(s) for s in spacing) / 2.0)
    length = float(np.linalg.norm(apex - base_mid))
    if not length > 0:
        raise ValueError("degenerate LV mask: the apex coincides with the annulus midpoint")
    return LongAxis(
        apex=(float(apex[0]), float(apex[1])),
        base=((float(base[0][0]), float(base[0][1])), (float(base[1][0]), float(base[1][1]))),
        base_mid=(float(base_mid[0]), float(base_mid[1])),
        length=length,
        method=method,
    )


def _prepare(
    lv_mask: np.ndarray, spacing: Sequence[float], myo_mask: np.ndarray | None, la_mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Validated inputs: largest LV component, its contour (mm) and the optional MYO/LA masks."""
    _check_spacing(spacing)
    lv = _largest_component(_check_mask(lv_mask))
    myo, la = _optional_mask(myo_mask, lv.shape, "MYO"), _optional_mask(la_mask, lv.shape, "LA")
    return lv, _contour_mm(lv, spacing), myo, la


def lv_long_axis(
    lv_mask: np.ndarray,
    spacing: Sequence[float],
    myo_mask: np.ndarray | None = None,
    la_mask: np.ndarray | None = None,
) -> LongAxis:
    """Find the LV long axis (mitral annulus midpoint to apex) of one view from its masks.

    Args:
        lv_mask: boolean LV cavity ``[rows, cols]``.
        spacing: (sx, sy) pixel spacing in mm.
        myo_mask: optional myocardium mask (preferred way to find the valve plane).
        la_mask: optional left-atrium mask (used when ``myo_mask`` is absent or gives no valve plane).

    Raises:
        ValueError: empty, non-2D or mismatched masks, invalid spacing, degenerate LV.
    """
    lv, contour, myo, la = _prepare(lv_mask, spacing, myo_mask, la_mask)
    return _long_axis(lv, contour, spacing, myo, la)


def lv_profile(
    lv_mask: np.ndarray,
    spacing: Sequence[float],
    myo_mask: np.ndarray | None = None,
    la_mask: np.ndarray | None = None,
    n_discs: int = 20,
) -> LVProfile:
    """Long axis, disc diameters at the discs' mid-heights and cavity area of one view.

    Args:
        lv_mask: boolean LV cavity ``[rows, cols]``.
        spacing: (sx, sy) pixel spacing in mm.
        myo_mask: optional myocardium mask (finds the annulus).
        la_mask: optional left-atrium mask (finds the annulus when MYO is absent).
        n_discs: number of discs (the guideline uses 20).
    """
    if n_discs < 1:
        raise ValueError(f"n_discs must be >= 1, got {n_discs}")
    lv, contour, myo, la = _prepare(lv_mask, spacing, myo_mask, la_mask)
    axis = _long_axis(lv, contour, spacing, myo, la)
    # disc i (0-based) spans [i, i+1] * L/n from the base; its diameter is measured at (i + 1/2) * L/n
    positions = (np.arange(n_discs) + 0.5) * axis.length / n_discs
    diameters = _chord_widths(contour, np.asarray(axis.base_mid), axis.direction, positions)
    return LVProfile(axis=axis, diameters=diameters, area_mm2=float(lv.sum()) * float(spacing[0]) * float(spacing[1]))


# --- volumes ----------------------------------------------------------------------------------------------------
def biplane_volume_from_profiles(profile_2ch: LVProfile, profile_4ch: LVProfile) -> float:
    """Modified Simpson biplane volume (ml): ``V = pi/4 * sum_i a_i b_i * L/n``, L the longer long axis."""
    if profile_2ch.n_discs != profile_4ch.n_discs:
        raise ValueError(f"views have different disc counts ({profile_2ch.n_discs} vs {profile_4ch.n_discs})")
    length = max(profile_2ch.axis.length, profile_4ch.axis.length)
    volume = math.pi / 4.0 * float(np.sum(profile_2ch.diameters * profile_4ch.diameters)) * length / profile_2ch.n_discs
    return volume / _MM3_PER_ML


def monoplane_volume_from_profile(profile: LVProfile) -> float:
    """Single-plane method of discs (ml): ``V = pi/4 * sum_i d_i^2 * L/n``."""
    return math.pi / 4.0 * float(np.sum(profile.diameters**2)) * profile.axis.length / profile.n_discs / _MM3_PER_ML


def area_length_from_profile(profile: LVProfile) -> float:
    """Single-plane area-length volume (ml): ``V = 8 A^2 / (3 pi L)``."""
    return 8.0 * profile.area_mm2**2 / (3.0 * math.pi * profile.axis.length) / _MM3_PER_ML


def simpson_biplane_volume(
    mask_2ch: np.ndarray,
    spacing_2ch: Sequence[float],
    mask_4ch: np.ndarray,
    spacing_4ch: Sequence[float],
    n_discs: int = 20,
    *,
    myo_2ch: np.ndarray | None = None,
    myo_4ch: np.ndarray | None = None,
    la_2ch: np.ndarray | None = None,
    la_4ch: np.ndarray | None = None,
) -> float:
    """LV volume (ml) by the modified Simpson biplane method of discs from 2CH and 4CH LV masks.

    Args:
        mask_2ch: boolean LV cavity of the apical two-chamber view.
        spacing_2ch: its (sx, sy) spacing in mm.
        mask_4ch: boolean LV cavity of the apical four-chamber view.
        spacing_4ch: its (sx, sy) spacing in mm.
        n_discs: number of discs (20 in the guideline).
        myo_2ch: optional myocardium masks / la_*: optional left-atrium masks, used to find the annulus.
        myo_4ch: see ``myo_2ch``.
        la_2ch: see ``myo_2ch``.
        la_4ch: see ``myo_2ch``.
    """
    p2 = lv_profile(mask_2ch, spacing_2ch, myo_2ch, la_2ch, n_discs)
    p4 = lv_profile(mask_4ch, spacing_4ch, myo_4ch, la_4ch, n_discs)
    return biplane_volume_from_profiles(p2, p4)


def simpson_monoplane_volume(
    mask: np.ndarray,
    spacing: Sequence[float],
    n_discs: int = 20,
    myo_mask: np.ndarray | None = None,
    la_mask: np.ndarray | None = None,
) -> float:
    """LV volume (ml) by the single-plane method of discs (circular discs of the view's diameters).

    Args:
        mask: boolean LV cavity ``[rows, cols]``.
        spacing: (sx, sy) spacing in mm.
        n_discs: number of discs.
        myo_mask: optional myocardium mask (annulus).
        la_mask: optional left-atrium mask (annulus).
    """
    return monoplane_volume_from_profile(lv_profile(mask, spacing, myo_mask, la_mask, n_discs))


def area_length_volume(
    mask: np.ndarray,
    spacing: Sequence[float],
    myo_mask: np.ndarray | None = None,
    la_mask: np.ndarray | None = None,
) -> float:
    """LV volume (ml) by the single-plane area-length method ``8 A^2 / (3 pi L)``.

    Args:
        mask: boolean LV cavity ``[rows, cols]``; ``A`` is its area (pixel count * sx * sy).
        spacing: (sx, sy) spacing in mm.
        myo_mask: optional myocardium mask (annulus, for ``L``).
        la_mask: optional left-atrium mask (annulus, for ``L``).
    """
    return area_length_from_profile(lv_profile(mask, spacing, myo_mask, la_mask, n_discs=1))


def ejection_fraction(edv: float, esv: float) -> float:
    """Ejection fraction in percent, ``100 * (EDV - ESV) / EDV``; NaN when EDV is not a positive number."""
    edv, esv = float(edv), float(esv)
    if not (math.isfinite(edv) and math.isfinite(esv)) or edv <= 0:
        return float("nan")
    return 100.0 * (edv - esv) / edv


def percentile_interval(samples: Iterable[float], level: float = 0.95) -> tuple[float, float] | None:
    """Central ``level`` interval of the finite ``samples``: their ``(1 - level) / 2`` and ``(1 + level) / 2``
    percentiles (numpy's linear interpolation); ``None`` with fewer than two finite samples.

    The EF intervals from sampler members (``echogains analyze``, ``echogains evaluate``) use it with ``level=0.95``.
    """
    values = np.asarray([s for s in samples if np.isfinite(s)], dtype=float)
    if values.size < 2:
        return None
    tail = 100.0 * (1.0 - level) / 2.0
    return float(np.percentile(values, tail)), float(np.percentile(values, 100.0 - tail))


# --- per patient ------------------------------------------------------------------------------------------------
_VIEW_ALIASES = {"2CH": "2CH", "A2C": "2CH", "AP2": "2CH", "4CH": "4CH", "A4C": "4CH", "AP4": "4CH"}


def canonical_view(view: str) -> str:
    """Map view names (``2CH``/``A2C``/``AP2``, ``4CH``/``A4C``/``AP4``) to ``2CH``/``4CH``; others unchanged."""
    return _VIEW_ALIASES.get(str(view).upper(), str(view))


def _phase_volume(frames: Mapping[str, list[LVProfile]], method: str) -> float:
    """Mean volume of one phase: every 2CH x 4CH pair (biplane) or every frame of one view (area-length)."""
    if method == "biplane":
        vols = [biplane_volume_from_profiles(a, b) for a in frames["2CH"] for b in frames["4CH"]]
    else:
        vols = [area_length_from_profile(p) for p in frames[method.split()[-1]]]
    return float(np.mean(vols)) if vols else float("nan")


def _choose_method(by_phase: Mapping[str, Mapping[str, list[LVProfile]]]) -> str:
    """Biplane when both phases have 2CH and 4CH; else area-length on a view both phases have (4CH first)."""
    ed, es = by_phase.get("ED", {}), by_phase.get("ES", {})
    if all(ed.get(v) and es.get(v) for v in ("2CH", "4CH")):
        return "biplane"
    common = [v for v in ed if ed[v] and es.get(v)]
    if not common:
        return "infeasible"
    common.sort(key=lambda v: ({"4CH": 0, "2CH": 1}.get(v, 2), v))
    return f"area-length {common[0]}"


def ef_from_profiles(entries: Iterable[tuple[str, str, str, LVProfile | None]]) -> dict[str, PatientEF]:
    """EF per patient from ``(patient, view, phase, profile)`` entries; ``None`` profiles (failed frames) are skipped.

    Args:
        entries: one per frame; phases ``ED``/``ES`` (others ignored), views as accepted by :func:`canonical_view`.

    Returns:
        ``{patient: PatientEF}``; NaN volumes and ``method="infeasible"`` when no usable ED/ES pair
        exists.
    """
    table: dict[str, dict[str, dict[str, list[LVProfile]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for patient, view, phase, profile in entries:
        phase = str(phase).upper()
        counts[patient][phase] += 0
        if profile is None or phase not in ("ED", "ES"):
            continue
        table[patient][phase][canonical_view(view)].append(profile)
        counts[patient][phase] += 1
    out = {}
    for patient in sorted(counts):
        method = _choose_method(table[patient])
        if method == "infeasible":
            edv = esv = float("nan")
        else:
            edv, esv = _phase_volume(table[patient]["ED"], method), _phase_volume(table[patient]["ES"], method)
        out[patient] = PatientEF(patient, edv, esv, ejection_fraction(edv, esv), method, dict(counts[patient]))
    return out


def patient_ef(cases: Iterable[CaseMasks | Mapping], n_discs: int = 20) -> dict[str, PatientEF]:
    """EF per patient from a table of frames (biplane when 2CH and 4CH exist at ED and ES, else area-length).

    Args:
        cases: :class:`CaseMasks` or mappings with the same keys (``patient``, ``view``, ``phase``, ``lv``,
            ``spacing``, optional ``myo``, ``la``). Frames whose LV mask is empty are treated as failures.
        n_discs: discs per view.
    """

    def entry(case: CaseMasks | Mapping) -> tuple[str, str, str, LVProfile | None]:
        c = case if isinstance(case, CaseMasks) else CaseMasks(**dict(case))
        profile = None
        if np.asarray(c.lv).any():
            profile = lv_profile(c.lv, c.spacing, c.myo, c.la, n_discs)
        return str(c.patient), str(c.view), str(c.phase), profile

    return ef_from_profiles(entry(c) for c in cases)
