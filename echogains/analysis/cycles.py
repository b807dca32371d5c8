"""End-diastole and end-systole frames from an LV volume curve, without an ECG.

ED is the largest LV volume of a beat, ES the smallest (the definitions the phantom's truth uses); the curve may be
the volume or the LV area, whose extrema fall on the same frames for an LV that grows and shrinks as a whole
(EchoNet-Dynamic picks ED/ES by the segmentations' size). ``echogains analyze`` passes the area curve by default: it
is less noisy than the area-length volume ``8 A^2 / (3 pi L)`` (``--detect_on``, :mod:`echogains.analysis.pipeline`).
On a curve ``v`` (one value per frame; NaN for frames without a mask, filled by linear interpolation):

1. smoothing: a running median of 3 frames (a frame whose mask failed, e.g. leaked into the atrium, is a one-frame
   spike that must not become an ED), then a Gaussian of ``sigma = max(0.5, min_beat / 8)`` frames (segmentation
   noise would otherwise split one diastolic plateau into several maxima);
2. ED candidates: local maxima of the smoothed curve at least ``min_beat`` frames apart (``min_beat`` =
   ``min_beat_s`` x fps, default 0.3 s, i.e. at most 200 beats per minute; ``min_beat_frames`` without a frame
   rate) that rise above the lowest point on one side (up to the next higher peak) by at least ``min_prominence``
   (default 0.25) of the curve's 5-95 % range (one-sided, because a loop may start just before an ED); a loop that
   starts or ends on a maximum as high as the interior ED peaks gets an ED there too;
3. ES of the beat ED_k -> ED_(k+1): the smallest smoothed volume between them;
4. on a clean curve (frame-to-frame noise below 0.3 % of the curve's range; the noise is estimated from the residual
   from a 5-frame quadratic Savitzky-Golay fit, :func:`curve_noise`: the phantom's analytic curves give less than
   0.075 % (``tests/analysis/test_cycles.py``), the demo models' curves 0.9-17 % (``curve_noise_pct`` in
   ``experiments/results/analyze_phantom*/``); the residual from the 3-frame median used before is zero on every
   monotone run of frames, so its MAD was 0 on noisy curves too and the raw values' jitter decided the frames), each
   ED (ES) frame is then moved to the largest (smallest) value within +-1 frame of the curve with its
   spikes replaced by the mean of its two neighbours (a spike: further from the median than 4 robust standard
   deviations, 1.4826 MAD, of the residual, and than 10 % of the curve's range: a true extremum is further from its
   median than a point of a smooth curve, by a few % of the range at 25 fps). On a noisy curve it is moved to the
   extremum within +-3 frames of a local cubic fit (Savitzky-Golay, 9 frames, :func:`local_fit`) of the despiked
   values (window and reach chosen among 5-15 frames and 1-3 on curves of other patients than the test loops of
   ``experiments/analyze_phantom.py``: seed 7, nnU-Net on DICOM and AVI loops, with the true-mask and noisy analytic
   curves). The Gaussian and the median shift an asymmetric extremum (fast systole, slow diastole) toward the slower
   side, and refining within +-1 frame of the smoothed curve (``refine="smoothed"``, what this step did before)
   kept that bias: on the area-length curves of the phantom's TRUE masks at 50 fps it put ED 1.1 frames early and
   ES 1.0 late on average, so only 87.5 % of the beats had both within +-1 frame, against 100 % with the cubic fit
   (``experiments/results/detection_refinement/``, which also holds the analytic curves with and without noise; a
   wider parabola fit was tried earlier and biased the frames by 1-2 frames on the exact curves);
5. a beat is kept when its ED - ES drop is at least ``min_prominence`` of the range and both its systole (ED -> ES)
   and its diastole (ES -> next ED) last at least half the shortest beat (a spurious maximum next to an ES
   otherwise splits a beat into two implausible ones, which are both dropped).

A beat is ``(ed, es, next_ed)``; a loop with no full beat gives an empty list (the caller reports "loop too short
for a beat").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d, median_filter
from scipy.signal import find_peaks, peak_prominences, savgol_filter

__all__ = [
    "Beat",
    "CLEAN_NOISE",
    "REFINE_METHODS",
    "curve_noise",
    "detect_beats",
    "half_parabola_vertex",
    "local_fit",
    "min_beat_frames",
    "fill_gaps",
]


@dataclass(frozen=True)
class Beat:
    """One cardiac cycle: ED frame, ES frame, next ED frame (0-based)."""

    ed: int
    es: int
    next_ed: int

    def to_dict(self) -> dict[str, int]:
        return {"ed": self.ed, "es": self.es, "next_ed": self.next_ed}


def min_beat_frames(fps: float | None, min_beat_s: float = 0.3, default_frames: int = 8) -> int:
    """The shortest beat in frames: ``min_beat_s * fps`` (at least 3), or ``default_frames`` without a frame rate."""
    if fps is None or not np.isfinite(fps) or fps <= 0:
        return int(default_frames)
    return max(3, int(round(min_beat_s * fps)))


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN entries (constant beyond the ends); all-NaN stays all-NaN."""
    v = np.asarray(values, dtype=float).copy()
    ok = np.isfinite(v)
    if ok.all() or not ok.any():
        return v
    idx = np.arange(len(v))
    v[~ok] = np.interp(idx[~ok], idx[ok], v[ok])
    return v


#: frame-to-frame noise (fraction of the curve's 5-95 % range) below which the extrema are refined on the raw values
CLEAN_NOISE = 0.003
#: frames of the local cubic fit on which the extrema of a noisy curve are refined, and how far (frames) they may
#: move from the smoothed curve's (step 4; ``experiments/detection_refinement.py``)
REFINE_WINDOW = 9
REFINE_REACH = 3
#: the ways the extrema of a noisy curve are refined (``detect_beats(..., refine=...)``)
REFINE_METHODS = ("asymmetric", "cubic", "smoothed")
#: ``refine="asymmetric"``: half-width of the fitted window, as a fraction of the beat's systole (ED -> ES frames)
ASYMMETRIC_WINDOW = 0.4


def curve_noise(values: np.ndarray) -> float:
    """Frame-to-frame noise (SD) of a curve, from its residual from a 5-frame quadratic Savitzky-Golay fit.

    The fit follows a smooth cardiac curve (on the phantom's analytic curves this estimate stays below 0.075 % of
    their range), so what is left is the noise: 1.4826 MAD of the residual, divided by ``sqrt(1 - 17/35)`` (the residual
    of white noise of SD s has SD ``s * sqrt(1 - 17/35)``, 17/35 being the fit's centre weight); a curve of fewer than
    5 frames gives 0.
    """
    v = np.asarray(values, dtype=float)
    if len(v) < 5:
        return 0.0
    residual = v - savgol_filter(v, 5, 2, mode="interp")
    return 1.4826 * float(np.median(np.abs(residual - np.median(residual)))) / float(np.sqrt(1.0 - 17.0 / 35.0))


def local_fit(values: np.ndarray, window: int = REFINE_WINDOW) -> np.ndarray:
    """A noisy curve smoothed without moving its extrema much: a local cubic (Savitzky-Golay) fit over ``window``
    frames, on which the extrema of a noisy curve are refined (step 4); shorter curves are returned as they are."""
    v = np.asarray(values, dtype=float)
    if len(v) < window:
        return v
    return savgol_filter(v, window, 3, mode="interp")


def _half_parabola_sse(t: np.ndarray, y: np.ndarray, vertex: float) -> float:
    """Least-squares misfit of ``y ~ c - a (t - vertex)^2 [t < vertex] - b (t - vertex)^2 [t >= vertex]``, a, b >= 0."""
    left, right = np.minimum(t - vertex, 0.0) ** 2, np.maximum(t - vertex, 0.0) ** 2
    design = np.stack([np.ones_like(t), -left, -right], axis=1)
    best = np.inf
    for columns in ((0, 1, 2), (0, 1), (0, 2), (0,)):  # the curvatures a, b must not be negative
        coef, *_ = np.linalg.lstsq(design[:, columns], y, rcond=None)
        if np.any(coef[1:] < 0):
            continue
        best = min(best, float(np.sum((design[:, columns] @ coef - y) ** 2)))
    return best


def half_parabola_vertex(
    values: np.ndarray, frame: int, largest: bool, half: int, search: float = 2.0, step: float = 0.05
) -> float:
    """Sub-frame position of the extremum near ``frame``: the vertex of two half-parabolas (own curvature on each
    side, one value and zero slope where they meet) fitted by least squares to ``2 * half + 1`` frames around it.

    A symmetric fit (a parabola, a cubic, any symmetric smoothing) puts the extremum of a curve that falls faster on
    one side than it rises on the other (fast ejection after ED, slow filling before it) toward the slower side; two
    half-parabolas follow the two sides separately. The vertex is searched every ``step`` frames within
    ``+-search`` frames, then once more within +-1 frame of a window re-centred on the first answer.
    """
    v = np.asarray(values, dtype=float)
    sign = 1.0 if largest else -1.0
    vertex, reach = float(frame), float(search)
    for _ in range(2):
        centre = int(round(vertex))
        a, b = max(0, centre - half), min(len(v) - 1, centre + half)
        t, y = np.arange(a, b + 1, dtype=float), sign * v[a : b + 1]
        candidates = np.arange(vertex - reach, vertex + reach + step / 2, step)
        vertex = float(min(candidates, key=lambda c: _half_parabola_sse(t, y, float(c))))
        reach = 1.0
    return vertex


def _clip(vertex: float, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, round(vertex))))


def _refine(curve: np.ndarray, frame: int, largest: bool, lo: int, hi: int, reach: int = 1) -> int:
    """The extremum of ``curve`` within +-``reach`` frames of ``frame`` (clipped to ``[lo, hi]``)."""
    a, b = max(lo, frame - reach), min(hi, frame + reach)
    window = curve[a : b + 1]
    return int(a + (np.argmax(window) if largest else np.argmin(window)))


def _ed_candidates(smooth: np.ndarray, distance: int, prominence: float, spread: float) -> list[int]:
    """Interior maxima, plus an end of the loop that is a maximum about as high as the lowest interior one."""
    found, _ = find_peaks(smooth, distance=distance)
    if len(found) == 0:
        return []
    # one-sided prominence: a loop cut short next to an ED has no low base on that side
    _, left, right = peak_prominences(smooth, found)
    drop = np.maximum(smooth[found] - smooth[left], smooth[found] - smooth[right])
    peaks = [int(p) for p, d in zip(found, drop) if d >= prominence]
    if not peaks:
        return []
    floor = min(smooth[p] for p in peaks) - 0.1 * spread
    n = len(smooth)
    for edge, inward in ((0, 1), (n - 1, -1)):
        neighbour = smooth[edge + inward]
        near = min(abs(edge - p) for p in peaks)
        if smooth[edge] > neighbour and smooth[edge] >= floor and near >= distance:
            drop = smooth[edge] - (smooth[: peaks[0] + 1].min() if edge == 0 else smooth[peaks[-1] :].min())
            if drop >= prominence:
                peaks.append(edge)
    return sorted(peaks)


def detect_beats(
    volume: np.ndarray,
    fps: float | None = None,
    min_beat_s: float = 0.3,
    default_min_frames: int = 8,
    min_prominence: float = 0.25,
    refine: str = "cubic",
    refine_window: int = REFINE_WINDOW,
    refine_reach: int = REFINE_REACH,
    asymmetric_window: float = ASYMMETRIC_WINDOW,
) -> list[Beat]:
    """Beats ``(ed, es, next_ed)`` of a volume (or area) curve; see the module docstring.

    Args:
        volume: one value per frame (NaN: no measurement).
        fps: frame rate; ``None`` uses ``default_min_frames`` as the shortest beat.
        min_beat_s: shortest beat in seconds.
        default_min_frames: shortest beat in frames without a frame rate.
        min_prominence: ED peaks and ED-ES drops must reach this fraction of the curve's 5-95 % range.
        refine: on a noisy curve, refine the extrema on a local cubic fit of the raw values within
            +-``refine_reach`` frames (``cubic``, default; a curve shorter than the fit's window is refined as with
            ``smoothed``) or on the smoothed curve within +-1 frame (``smoothed``: before this option, biased by about
            a frame at 50 fps, see the module docstring).
        refine_window: frames of the local cubic fit (odd, >= 5; default :data:`REFINE_WINDOW`).
        refine_reach: how far (frames) ``cubic`` may move an extremum from the smoothed curve's.
        asymmetric_window: ``refine="asymmetric"`` (opt-in): after the cubic refinement, each extremum of a noisy curve
            is moved to the vertex of two half-parabolas fitted to the despiked values (:func:`half_parabola_vertex`)
            over +-``asymmetric_window`` x the beat's systole frames (at least 3). On the phantom it removes most of
            the cubic fit's shift of asymmetric extrema (true masks at 50 fps: mean ED error -0.48 -> -0.25 frames,
            ES +0.30 -> +0.15; analytic curves with 3 % noise: ED and ES within +-1 frame 92.0 -> 97.5 % of 162
            beats; tuning loops of nnU-Net on AVIs 70 -> 90 %), but not on the AVI test loops (nnU-Net 85 %,
            Echo-DND 80 %, as with ``cubic``): ``experiments/results/detection_refinement_asymmetric/``. Not the
            default until it is measured on the DICOM test loops as well.
    """
    if refine not in REFINE_METHODS:
        raise ValueError(f"refine: expected one of {', '.join(REFINE_METHODS)}, got {refine!r}")
    if int(refine_window) < 5 or int(refine_window) % 2 == 0 or int(refine_reach) < 1:
        raise ValueError(f"refine_window must be odd and >= 5, refine_reach >= 1; got {refine_window}, {refine_reach}")
    raw = fill_gaps(np.asarray(volume, dtype=float))
    n = len(raw)
    min_len = min_beat_frames(fps, min_beat_s, default_min_frames)
    if n < min_len + 1 or not np.isfinite(raw).all():
        return []
    median = median_filter(raw, size=3, mode="nearest")
    residual = raw - median
    mad = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
    tolerance = max(4.0 * mad, 0.1 * float(np.percentile(median, 95) - np.percentile(median, 5)))
    padded = np.pad(raw, 1, mode="edge")  # a spike is replaced by the mean of its neighbours (a median would tie)
    raw = np.where(np.abs(residual) > tolerance, 0.5 * (padded[:-2] + padded[2:]), raw)
    smooth = gaussian_filter1d(median, sigma=max(0.5, min_len / 8.0), mode="nearest")
    spread = float(np.percentile(smooth, 95) - np.percentile(smooth, 5))
    if spread <= 0:
        return []
    threshold = min_prominence * spread
    # where the extrema are refined (step 4), and how far from the smoothed curve's
    clean = curve_noise(raw) < CLEAN_NOISE * spread
    fitted = not clean and refine in ("cubic", "asymmetric") and n >= int(refine_window)
    if clean:
        fine, reach = raw, 1
    elif fitted:
        fine, reach = local_fit(raw, refine_window), int(refine_reach)
    else:
        fine, reach = smooth, 1
    eds = _ed_candidates(smooth, min_len, threshold, spread)
    beats = []
    for a, b in zip(eds[:-1], eds[1:]):
        if b - a < min_len:
            continue
        es = a + 1 + int(np.argmin(smooth[a + 1 : b]))
        ed, next_ed = _refine(fine, a, True, 0, es - 1, reach), _refine(fine, b, True, es + 1, n - 1, reach)
        es = _refine(fine, es, False, ed + 1, next_ed - 1, reach)
        if fitted and refine == "asymmetric":
            half = max(3, int(round(asymmetric_window * (es - ed))))
            ed = _clip(half_parabola_vertex(raw, ed, True, half), 0, es - 1)
            next_ed = _clip(half_parabola_vertex(raw, next_ed, True, half), es + 1, n - 1)
            es = _clip(half_parabola_vertex(raw, es, False, half), ed + 1, next_ed - 1)
        if min(es - ed, next_ed - es) < min_len / 2.0:
            continue
        if min(raw[ed], raw[next_ed]) - raw[es] >= threshold or smooth[a] - smooth[es] >= threshold:
            beats.append(Beat(int(ed), int(es), int(next_ed)))
    return beats
