"""Fitting the ultrasound sector of a grey B-mode image (:func:`fit_sector`) and scoring it (:func:`sector_iou`).

The outline of the image's content gives the two straight edges (Hough lines, then a robust fit of each edge's
outline points) and the apex (their intersection); the radii come from the content along the beams. A fit that does
not look like a sector (too little content, low IoU with it, edges without support) is refused with
:class:`~echogains.utils.EchoDataError`. See :mod:`echogains.geometry` for the conventions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from echogains.geometry.sector import Sector, check_spacing, mm_to_pixel, pixel_to_mm
from echogains.utils import EchoDataError, get_logger

__all__ = [
    "fit_sector",
    "sector_iou",
    "FOREGROUND_FRACTION",
    "MIN_CONTENT_FRACTION",
    "MIN_SECTOR_IOU",
    "MIN_CONTENT_INSIDE",
    "MIN_EDGE_SUPPORT",
    "MAX_EDGE_ANGLE",
]

logger = get_logger("echogains.geometry")


# ----------------------------------------------------------------------------------------------------------------
# Sector fitting
# ----------------------------------------------------------------------------------------------------------------

#: Default foreground threshold as a fraction of the image range [min, 99th percentile].
FOREGROUND_FRACTION = 0.05
#: Least fraction of the image that must be non-black content.
MIN_CONTENT_FRACTION = 0.02
#: Least IoU between the fitted sector and the image content for the image to count as a sector.
MIN_SECTOR_IOU = 0.75
#: Least fraction of the content that must lie inside the fitted sector.
MIN_CONTENT_INSIDE = 0.9
#: Least fraction of each straight edge's visible stretch that must be backed by outline points.
MIN_EDGE_SUPPORT = 0.3
_HOUGH_ANGLES = np.linspace(-np.pi / 2, np.pi / 2, 720, endpoint=False)  # 0.25 deg steps
_HOUGH_PEAKS = 14
#: Sector edges are searched within this angle (deg) of the downward axis (echo sectors: |tilt| + opening / 2).
MAX_EDGE_ANGLE = 85.0


@dataclass(frozen=True)
class _Line:
    """Infinite line in mm: a point ``p`` on it and a unit direction ``d``."""

    p: np.ndarray
    d: np.ndarray

    def distance(self, q: np.ndarray) -> np.ndarray:
        """Unsigned distance of points ``q [N, 2]`` to the line."""
        v = q - self.p
        return np.abs(self.d[0] * v[:, 1] - self.d[1] * v[:, 0])


def _as_grey(image: np.ndarray, source: str | None) -> np.ndarray:
    """Validate a 2D grey image and return it as finite float64."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        raise EchoDataError(source, f"expected a grey image [rows, cols], got shape {img.shape} (RGB?)")
    if img.ndim != 2 or min(img.shape) < 8:
        raise EchoDataError(source, f"expected a 2D grey image of at least 8x8 pixels, got shape {img.shape}")
    if not (np.issubdtype(img.dtype, np.number) or img.dtype == bool):
        raise EchoDataError(source, f"image has non-numeric dtype {img.dtype}")
    out = img.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise EchoDataError(source, "image contains NaN or infinite values")
    return out


def _threshold(img: np.ndarray, threshold: float | None, source: str | None) -> float:
    """Foreground threshold: ``min + 5 % of (99th percentile - min)`` unless given (the max if p99 = min)."""
    lo, hi = float(img.min()), float(np.percentile(img, 99))
    if hi <= lo:  # less than 1 % of the pixels are brighter than the background: scale by the maximum
        hi = float(img.max())
    if hi <= lo:
        raise EchoDataError(source, "image is empty (constant intensity): no sector content to fit")
    if threshold is not None:
        return float(threshold)
    return lo + FOREGROUND_FRACTION * (hi - lo)


def _closing_radius(shape: tuple[int, int]) -> int:
    """Structuring-element radius (px) that bridges speckle holes: ~1.5 % of the image size, at least 2."""
    return max(2, int(round(0.015 * min(shape))))


def _foreground(img: np.ndarray, thr: float, source: str | None) -> np.ndarray:
    """Clean content mask: threshold, largest component, closing, holes filled.

    The image is edge-padded before the closing so content clipped by the image border is not eroded there.
    """
    fg = img > thr
    if fg.mean() < MIN_CONTENT_FRACTION:
        raise EchoDataError(
            source, f"image is too dark: only {100 * fg.mean():.2f} % of pixels exceed the threshold {thr:.4g}"
        )
    fg = _largest_component(fg)  # before the closing, which would bridge to nearby text or markers
    k = _closing_radius(img.shape)
    yy, xx = np.mgrid[-k : k + 1, -k : k + 1]
    disk = xx**2 + yy**2 <= k * k
    padded = np.pad(fg, k + 1, mode="edge")
    fg = ndimage.binary_closing(padded, structure=disk)[k + 1 : -(k + 1), k + 1 : -(k + 1)]
    return ndimage.binary_fill_holes(_largest_component(fg))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean mask."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n <= 1:
        return mask
    return labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)


@dataclass(frozen=True)
class _Outline:
    """Sub-pixel outline of the content mask in contour order.

    Args:
        xy: points [N, 2] in mm.
        contour: [N] index of the closed contour each point belongs to.
        free: [N] False for points on the image frame (where the image clips the sector, not its own outline).
    """

    xy: np.ndarray
    contour: np.ndarray
    free: np.ndarray


def _outline(mask: np.ndarray, spacing: tuple[float, float]) -> _Outline:
    """Iso-contour (level 0.5, unbiased between inside and outside pixel centres) of the content mask."""
    from skimage.measure import find_contours

    rows, cols = mask.shape
    contours = find_contours(np.pad(mask.astype(np.float64), 1), 0.5)
    if not contours:
        return _Outline(np.zeros((0, 2)), np.zeros(0, dtype=int), np.zeros(0, dtype=bool))
    px = np.concatenate(contours)[:, ::-1] - 1.0  # (row, col) of the padded image -> (col, row)
    ids = np.concatenate([np.full(len(c), i) for i, c in enumerate(contours)])
    free = (px[:, 0] > 0.25) & (px[:, 0] < cols - 1.25) & (px[:, 1] > 0.25) & (px[:, 1] < rows - 1.25)
    return _Outline(pixel_to_mm(px, spacing), ids, free)


def _trimmed_runs(outline: _Outline, flags: np.ndarray, trim: float) -> np.ndarray:
    """Keep flagged points that lie in runs of consecutive flagged outline points, minus ``trim`` mm at each end.

    Where the outline leaves a straight edge (a dropout, the arcs, the clipping frame) the closing rounds the
    corner; trimming the runs' ends drops those points, which would pull the edge inwards.
    """
    keep = np.zeros(len(flags), dtype=bool)
    idx = np.flatnonzero(flags)
    if idx.size == 0:
        return keep
    breaks = np.flatnonzero((np.diff(idx) != 1) | (np.diff(outline.contour[idx]) != 0)) + 1
    for run in np.split(idx, breaks):
        steps = np.hypot(*np.diff(outline.xy[run], axis=0).T)
        s = np.concatenate([[0.0], np.cumsum(steps)])
        keep[run[(s >= trim) & (s <= s[-1] - trim)]] = True
    return keep


def _hough_lines(points_px: np.ndarray, shape: tuple[int, int], spacing: tuple[float, float]) -> list[_Line]:
    """Strongest straight lines through the boundary points (Hough transform in pixel space), in mm."""
    from skimage.transform import hough_line, hough_line_peaks

    edge = np.zeros(shape, dtype=bool)
    ij = np.round(points_px).astype(int)
    edge[np.clip(ij[:, 1], 0, shape[0] - 1), np.clip(ij[:, 0], 0, shape[1] - 1)] = True
    s = np.asarray(spacing)
    # skimage's angle a is the normal's: the line runs along (-sin a, cos a) px, i.e. a from the vertical in pixels.
    d_mm = np.stack([-np.sin(_HOUGH_ANGLES) * s[0], np.cos(_HOUGH_ANGLES) * s[1]])
    steep = np.degrees(np.arctan2(np.abs(d_mm[0]), np.abs(d_mm[1]))) <= MAX_EDGE_ANGLE
    h, angles, dists = hough_line(edge, theta=_HOUGH_ANGLES[steep])
    _, peak_angles, peak_dists = hough_line_peaks(
        h, angles, dists, min_distance=5, min_angle=8, threshold=0.15 * h.max(), num_peaks=_HOUGH_PEAKS
    )
    lines = []
    for a, rho in zip(peak_angles, peak_dists):
        # skimage: rho = x cos(a) + y sin(a) in pixels; convert a point and the direction to mm.
        p = np.array([rho * np.cos(a), rho * np.sin(a)]) * s
        d = np.array([-np.sin(a), np.cos(a)]) * s
        lines.append(_Line(p, d / np.linalg.norm(d)))
    return lines


def _intersect(a: _Line, b: _Line) -> np.ndarray | None:
    """Intersection point of two lines, or None when they are (nearly) parallel."""
    det = a.d[0] * b.d[1] - a.d[1] * b.d[0]
    if abs(det) < np.sin(np.radians(2.0)):
        return None
    v = b.p - a.p
    t = (v[0] * b.d[1] - v[1] * b.d[0]) / det
    return a.p + t * a.d


def _ray_angle(line: _Line, apex: np.ndarray, toward: np.ndarray) -> float:
    """Angle (deg, from +y toward +x) of the half-line from ``apex`` along ``line`` on the side of ``toward``."""
    d = line.d if np.dot(toward - apex, line.d) >= 0 else -line.d
    return float(np.degrees(np.arctan2(d[0], d[1])))


def _wedge(a: _Line, b: _Line, centroid: np.ndarray) -> tuple[np.ndarray, float, float] | None:
    """Apex and sorted edge angles of the wedge spanned by two lines around the content centroid.

    None for (nearly) parallel lines, and for wedges that open upwards: the apex is above the content.
    """
    apex = _intersect(a, b)
    if apex is None:
        return None
    t1, t2 = sorted((_ray_angle(a, apex, centroid), _ray_angle(b, apex, centroid)))
    c = centroid - apex
    tc = float(np.degrees(np.arctan2(c[0], c[1])))
    if not (t1 < tc < t2) or not (2.0 < t2 - t1 < 175.0) or abs(tc) >= 90.0:  # apex above the content
        return None
    return apex, t1, t2


def _polar_of(points_mm: np.ndarray, apex: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radius (mm) and angle (deg) of points relative to the apex."""
    v = points_mm - apex
    return np.hypot(v[:, 0], v[:, 1]), np.degrees(np.arctan2(v[:, 0], v[:, 1]))


def _content_samples(mask: np.ndarray, spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """A regular subsample of the pixel grid (at most 128 per side): mm coordinates [N, 2] and mask values."""
    step = max(1, int(np.ceil(max(mask.shape) / 128)))
    rows, cols = np.mgrid[0 : mask.shape[0] : step, 0 : mask.shape[1] : step]
    xy = np.stack([cols.ravel() * spacing[0], rows.ravel() * spacing[1]], axis=1)
    return xy, mask[rows, cols].ravel()


def _iou_at(sector: Sector, xy: np.ndarray, inside: np.ndarray) -> float:
    """IoU of the sector with the content, both sampled at the points ``xy`` (mm)."""
    r, t = _polar_of(xy, np.asarray(sector.apex))
    model = (r >= sector.r_min) & (r <= sector.r_max) & (t >= sector.theta_min) & (t <= sector.theta_max)
    union = np.count_nonzero(model | inside)
    return float(np.count_nonzero(model & inside) / union) if union else 0.0


def sector_iou(sector: Sector, mask: np.ndarray) -> float:
    """Intersection over union between ``sector.mask(mask.shape)`` and a boolean content mask.

    Args:
        sector: the sector (its spacing is used).
        mask: boolean content mask [rows, cols].
    """
    model = sector.mask(mask.shape)
    union = np.count_nonzero(model | mask)
    return float(np.count_nonzero(model & mask) / union) if union else 0.0


def _boundary_distance(sector: Sector, points: np.ndarray) -> np.ndarray:
    """Distance (mm) of points to the sector's outline: the two edge segments and the arcs."""
    apex = np.asarray(sector.apex)
    v = points - apex
    r, t = _polar_of(points, apex)
    dists = []
    for theta in (sector.theta_min, sector.theta_max):
        d = np.array([np.sin(np.radians(theta)), np.cos(np.radians(theta))])
        along = np.clip(v @ d, sector.r_min, sector.r_max)
        dists.append(np.hypot(v[:, 0] - along * d[0], v[:, 1] - along * d[1]))
    between = (t >= sector.theta_min) & (t <= sector.theta_max)
    dists.append(np.where(between, np.abs(r - sector.r_max), np.inf))
    if sector.r_min > 0:
        dists.append(np.where(between, np.abs(r - sector.r_min), np.inf))
    return np.min(dists, axis=0)


def _score(sector: Sector, xy: np.ndarray, inside: np.ndarray, outline_pts: np.ndarray, tol: float) -> float:
    """How well a sector explains the image: IoU with the content plus the fraction of its outline within ``tol``."""
    explained = float(np.mean(_boundary_distance(sector, outline_pts) <= tol)) if len(outline_pts) else 0.0
    return _iou_at(sector, xy, inside) + explained


def _initial_sectors(
    lines: list[_Line], xy: np.ndarray, inside: np.ndarray, outline_pts: np.ndarray, spacing: tuple[float, float]
) -> list[Sector]:
    """The 4 pairs of Hough lines whose wedges explain the content and its outline best (:func:`_score`)."""
    content = xy[inside]
    centroid = content.mean(axis=0)
    scored: list[tuple[float, Sector]] = []
    for a, b in itertools.combinations(lines, 2):
        wedge = _wedge(a, b, centroid)
        if wedge is None:
            continue
        apex, t1, t2 = wedge
        r, t = _polar_of(content, apex)
        r_in = r[(t >= t1) & (t <= t2)]
        if r_in.size == 0 or np.percentile(r_in, 99.5) <= 0:
            continue
        cand = Sector((float(apex[0]), float(apex[1])), t1, t2, float(np.percentile(r_in, 99.5)), 0.0, spacing)
        scored.append((_score(cand, xy, inside, outline_pts, 2.0 * max(spacing)), cand))
    scored.sort(key=lambda item: -item[0])
    return [cand for _, cand in scored[:4]]


def _fit_line(points: np.ndarray) -> _Line:
    """Total least squares line through points [N, 2] (principal axis of their scatter)."""
    centre = points.mean(axis=0)
    _, _, vt = np.linalg.svd(points - centre, full_matrices=False)
    return _Line(centre, vt[0] / np.linalg.norm(vt[0]))


def _staircase_width(d: np.ndarray, spacing: tuple[float, float]) -> float:
    """Full spread (mm) across a straight edge of direction ``d`` of a binary mask's iso-contour points.

    The contour runs through midpoints between pixel centres: a crossing between two rows is off the true edge by
    up to half a row (``sy / 2``) along y, i.e. ``sy |dx| / 2`` across the edge; between two columns ``sx |dy| / 2``.
    """
    return float(max(spacing[1] * abs(d[0]), spacing[0] * abs(d[1])))


def _consensus_band(points: np.ndarray, line: _Line, outward: np.ndarray, width: float) -> np.ndarray:
    """Points in the best ``width``-wide band within 3 degrees of ``line``: most points in it, fewest beyond it.

    Lost content along an edge (dark speckle, dropout) moves stretches of the outline inwards, never outwards, and
    tilts a plain least-squares line toward them. The straight stretches, one staircase wide, fill the band of the
    true edge, with no outline outside it: each point beyond the band (on the ``outward`` side) costs four inside.
    A band wider than the staircase would leave room to tilt toward the lost stretches.
    """
    v = points - line.p
    n_pts = len(points)
    span = float(np.ptp(v @ line.d)) + width
    step = np.degrees(0.25 * width / span)
    base = np.arctan2(line.d[1], line.d[0])
    best_score, best = -np.inf, np.ones(n_pts, dtype=bool)
    for delta in np.radians(np.arange(-3.0, 3.0 + step / 2, step)):
        normal = np.array([-np.sin(base + delta), np.cos(base + delta)])
        offsets = v @ (normal if normal @ outward >= 0 else -normal)  # larger = farther out
        ordered = np.sort(offsets)
        ends = np.searchsorted(ordered, ordered + width, side="right")
        scores = (ends - np.arange(n_pts)) - 4 * (n_pts - ends)
        i = int(np.argmax(scores))
        if scores[i] > best_score:
            best_score = scores[i]
            best = (offsets >= ordered[i]) & (offsets <= ordered[i] + width)
    return best


def _fit_edge(points: np.ndarray, outward: np.ndarray, spacing: tuple[float, float]) -> _Line:
    """Robust line of an edge's outline points: the consensus band, then TLS within +-0.6 px of it.

    Args:
        points: outline points near the edge, mm.
        outward: a vector pointing out of the sector across this edge.
        spacing: (sx, sy) mm per pixel.
    """
    px = max(spacing)
    start = _fit_line(points)
    width = _staircase_width(start.d, spacing) + 0.1 * min(spacing)
    keep = _consensus_band(points, start, outward, width)
    for _ in range(2):
        line = _fit_line(points[keep])
        near = line.distance(points) <= 0.6 * px
        if np.count_nonzero(near) < 5:
            break
        keep = near
    return _fit_line(points[keep])


def _edge_line(sector: Sector, theta: float) -> _Line:
    """The line through the apex at angle ``theta`` (deg)."""
    t = np.radians(theta)
    return _Line(np.asarray(sector.apex, dtype=np.float64), np.array([np.sin(t), np.cos(t)]))


def _edge_inliers(outline: _Outline, sector: Sector, theta: float, other: float, tol: float, trim: float) -> np.ndarray:
    """Outline points on the straight edge at angle ``theta``: near its ray, in long runs, off the arcs' corners."""
    line, other_line = _edge_line(sector, theta), _edge_line(sector, other)
    pts = outline.xy
    r, _ = _polar_of(pts, np.asarray(sector.apex))
    along = (pts - line.p) @ line.d
    flags = outline.free & (line.distance(pts) < tol) & (other_line.distance(pts) > tol) & (along > 0)
    flags &= (r > sector.r_min + 3 * tol) & (r < sector.r_max - 3 * tol)
    return pts[_trimmed_runs(outline, flags, trim)]


def _interior(points: np.ndarray, sector: Sector, tol: float) -> np.ndarray:
    """Which points lie strictly between the two edges, farther than ``tol`` from both edge lines."""
    _, t = _polar_of(points, np.asarray(sector.apex))
    left, right = _edge_line(sector, sector.theta_min), _edge_line(sector, sector.theta_max)
    keep = (t > sector.theta_min) & (t < sector.theta_max)
    return keep & (left.distance(points) > tol) & (right.distance(points) > tol)


def _radii(outline: _Outline, sector: Sector, tol: float) -> tuple[float, float]:
    """Far radius (1) and near radius (2) from outline points strictly between the two edges.

    (1) r_max = median distance from the apex of the far-arc points (within 2 tol of the deepest content, so dark
        regions inside the sector do not count); when the far arc lies wholly outside the image, the deepest
        visible content (a lower bound).
    (2) r_min = median distance of the near-arc points (within 2 tol of the content closest to the apex); 0 when
        the content reaches the tip (closer than 3 tol) or no near arc is visible (e.g. cut off by the image top).
    """
    r, _ = _polar_of(outline.xy, np.asarray(sector.apex))
    inner = _interior(outline.xy, sector, tol)
    if not inner.any():
        return float(r.max()), 0.0
    r_deep = float(np.percentile(r[inner], 99))  # the content's outline includes the frame where the image clips it
    far = r[inner & outline.free & (r > r_deep - 2 * tol)]
    r_max = float(np.median(far)) if far.size >= 5 else r_deep
    r_close = float(r.min())
    near = r[inner & outline.free & (r < r_close + 2 * tol)]
    if r_close < 3 * tol or near.size < 3:
        return r_max, 0.0
    return r_max, min(float(np.median(near)), 0.5 * r_max)


def _refine(sector: Sector, outline: _Outline, centroid: np.ndarray, px: float, trim: float) -> Sector | None:
    """Re-fit both edges to their outline points (robust TLS), the apex as their crossing, then the radii.

    The inlier band narrows from 3 to 1.5 px; iterations go on until the edges move by less than 0.01 deg and
    0.01 px (the consensus band turns an edge by at most 3 deg per step), 12 at most.
    """
    for step in range(12):
        tol = max(3.0 - step, 1.5) * px
        previous = sector
        left = _edge_inliers(outline, sector, sector.theta_min, sector.theta_max, tol, trim)
        right = _edge_inliers(outline, sector, sector.theta_max, sector.theta_min, tol, trim)
        if len(left) < 5 or len(right) < 5:
            return None
        t_min, t_max = np.radians(sector.theta_min), np.radians(sector.theta_max)
        left_line = _fit_edge(left, np.array([-np.cos(t_min), np.sin(t_min)]), sector.spacing)  # out: -theta
        right_line = _fit_edge(right, np.array([np.cos(t_max), -np.sin(t_max)]), sector.spacing)
        wedge = _wedge(left_line, right_line, centroid)
        if wedge is None:
            return None
        apex, t1, t2 = wedge
        provisional = Sector((float(apex[0]), float(apex[1])), t1, t2, sector.r_max, 0.0, sector.spacing)
        r_max, r_min = _radii(outline, provisional, 2 * px)
        sector = Sector(provisional.apex, t1, t2, r_max, r_min, sector.spacing)
        moved = np.hypot(sector.apex[0] - previous.apex[0], sector.apex[1] - previous.apex[1]) / px
        turned = max(abs(sector.theta_min - previous.theta_min), abs(sector.theta_max - previous.theta_max))
        if step >= 2 and moved < 0.01 and turned < 0.01:
            break
    return sector


def _edge_support(sector: Sector, theta: float, outline_pts: np.ndarray, shape: tuple[int, int]) -> float:
    """Fraction of the edge's visible stretch (inside the image, ``r_min..r_max``) backed by outline points.

    Measured in 1-pixel bins along the edge, with the outline points within 1 px of it: a true edge is backed
    along most of its length (minus dropouts); a tangent to a disk or an ellipse only over a short stretch.
    """
    px = max(sector.spacing)
    points = outline_pts[_edge_line(sector, theta).distance(outline_pts) <= px]
    r = np.arange(sector.r_min, sector.r_max, px)
    t = np.radians(theta)
    xy = mm_to_pixel(np.stack([sector.apex[0] + r * np.sin(t), sector.apex[1] + r * np.cos(t)], axis=1), sector.spacing)
    visible = (xy[:, 0] >= 0) & (xy[:, 0] <= shape[1] - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= shape[0] - 1)
    if not visible.any():
        return 0.0
    r_pts, _ = _polar_of(points, np.asarray(sector.apex))
    backed = np.zeros(len(r), dtype=bool)
    backed[np.clip(((r_pts - sector.r_min) / px).astype(int), 0, len(r) - 1)] = True
    return float(np.count_nonzero(backed & visible) / np.count_nonzero(visible))


def _check_sector_like(s: Sector, mask: np.ndarray, outline_pts: np.ndarray, source: str | None) -> None:
    """Raise unless the sector explains the content: (1) it lies inside, (2) it fills it, (3) edges are backed."""
    model = s.mask(mask.shape)
    both = np.count_nonzero(model & mask)
    inside = both / max(np.count_nonzero(mask), 1)  # (1) content within the sector
    iou = both / max(np.count_nonzero(model | mask), 1)  # (2) overlap
    support = min(
        _edge_support(s, s.theta_min, outline_pts, mask.shape), _edge_support(s, s.theta_max, outline_pts, mask.shape)
    )  # (3)
    logger.debug("fit_sector %s: %s (inside %.3f, IoU %.3f, support %.2f)", source, s, inside, iou, support)
    if inside < MIN_CONTENT_INSIDE or iou < MIN_SECTOR_IOU or support < MIN_EDGE_SUPPORT:
        raise EchoDataError(
            source,
            f"image content is not an ultrasound sector (best sector: {100 * inside:.0f} % of the content inside, "
            f"IoU {iou:.2f}, {100 * support:.0f} % of the weaker edge backed by a straight outline)",
        )


def fit_sector(
    image: np.ndarray,
    spacing: tuple[float, float] = (1.0, 1.0),
    threshold: float | None = None,
    source: str | None = None,
) -> Sector:
    """Fit the ultrasound sector (apex, edge angles, depth, near radius) to a grey B-mode image.

    Steps: (1) content mask = pixels above ``threshold``, largest component, closed over the speckle's dark holes,
    holes filled; (2) sub-pixel outline of that mask, minus the parts lying on the image frame (clipping);
    (3) Hough lines of the outline; the pairs whose wedges best explain the content (IoU) and the outline give first
    apexes and edges; (4) both edges are re-fitted to their outline points in mm (a consensus band that ignores
    stretches lost to dark content, then total least squares), the apex is their crossing (it may lie outside the
    image); (5) ``r_max`` / ``r_min`` are the median distances of the far and near arcs' outline points from the
    apex; (6) the best-scoring candidate must hold the content, overlap it and have straight edges backed by the
    outline. Works for tilted or asymmetric sectors, an off-centre apex, anisotropic pixels and sectors clipped by
    the image border, as long as a stretch (~30 px) of both straight edges is visible.

    Args:
        image: grey image [rows, cols] (uint8, float or bool); black (minimum) outside the sector.
        spacing: (sx, sy) mm per pixel (column, row); the result is in mm (pixels when (1, 1)).
        threshold: intensity above which a pixel is content; default ``min + 5 % * (p99 - min)``.
        source: file name used in error messages.

    Returns:
        The fitted :class:`Sector` (with ``spacing``).

    Raises:
        EchoDataError: the image is not 2D grey, is empty or too dark, or its content is not a sector.
    """
    sp = check_spacing(spacing, source)
    img = _as_grey(image, source)
    mask = _foreground(img, _threshold(img, threshold, source), source)
    outline = _outline(mask, sp)
    free = outline.xy[outline.free]
    lines = _hough_lines(mm_to_pixel(free, sp), mask.shape, sp) if len(free) >= 10 else []
    xy, inside = _content_samples(mask, sp)
    initial = _initial_sectors(lines, xy, inside, free, sp) if len(lines) >= 2 else []
    if not initial:
        raise EchoDataError(source, "no sector found: the content has no two straight edges meeting at an apex")
    trim = (_closing_radius(mask.shape) + 2) * max(sp)
    centroid = xy[inside].mean(axis=0)
    refined = [s for s in (_refine(c, outline, centroid, max(sp), trim) for c in initial) if s is not None]
    if not refined:
        raise EchoDataError(source, "no sector found: too few points on one of the straight sector edges")
    best = refined[int(np.argmax([_score(s, xy, inside, free, 1.5 * max(sp)) for s in refined]))]
    _check_sector_like(best, mask, free, source)
    return best
