"""LV area and volume curves of a loop, EDV/ESV/EF per beat and over the loop, and the EF interval from samples.

Per frame of each view (:func:`measure_loop`): the LV profile of :func:`echogains.evaluation.clinical.lv_profile`
(largest component, long axis from the annulus midpoint to the apex, 20 disc diameters, area) and the single-plane
area-length volume ``8 A^2 / (3 pi L)``: this per-view curve is what the ED/ES detection reads.

Per beat (:func:`beat_volumes`): with both views, the modified Simpson biplane volume of the 2CH ED frame with the
4CH ED frame of the same beat number (and likewise ES): the two views are separate acquisitions, so beats are paired
in order, not frames; with one view, area-length. Over the loop: EDV and ESV are the means over the (paired) beats
and the loop EF is computed from them; the mean and spread of the per-beat EF are given as well.

Units: with a known pixel spacing, mm^2 and ml; without (videos, uncalibrated DICOM), pixel units: areas in px^2 and
volumes in px^3 (EF, a ratio, is valid in both when the pixels are square).

Samples (Echo-DND, :func:`sample_efs`): each member r of the sampler (every ensemble member of both chains) gives its
own mask of every frame; its EDV/ESV at the detected ED/ES frames give EF_r per beat and over the loop. The 95 %
interval is the 2.5-97.5 % percentile range of EF_r over the members (with few members, close to their range).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from echogains.analysis.cycles import Beat
from echogains.evaluation.clinical import (
    LVProfile,
    area_length_from_profile,
    biplane_volume_from_profiles,
    ejection_fraction,
    lv_profile,
    percentile_interval,
)

__all__ = ["LoopCurves", "BeatResult", "measure_loop", "beat_volumes", "loop_summary", "sample_efs", "units_of"]

_ML = 1000.0  # clinical returns ml (mm^3 / 1000); in pixel units we report px^3


def units_of(spacing_known: bool) -> dict[str, str]:
    """Names of the units of areas, lengths and volumes."""
    return (
        {"area": "mm2", "length": "mm", "volume": "ml"}
        if spacing_known
        else {"area": "px2", "length": "px", "volume": "px3"}
    )


@dataclass
class LoopCurves:
    """Per-frame measurements of one loop (NaN where the frame has no usable mask).

    Args:
        area: LV area per frame.
        length: long-axis length per frame.
        volume: area-length volume per frame.
        profiles: the LV profile per frame (``None`` when the mask is empty or degenerate).
        spacing_known: units mm/ml (``True``) or pixels.
    """

    area: np.ndarray
    length: np.ndarray
    volume: np.ndarray
    profiles: list[LVProfile | None]
    spacing_known: bool

    @property
    def units(self) -> dict[str, str]:
        return units_of(self.spacing_known)


def _profile(mask: np.ndarray, spacing: Sequence[float]) -> LVProfile | None:
    if not np.asarray(mask).any():
        return None
    try:
        return lv_profile(np.asarray(mask) > 0, spacing)
    except ValueError:  # degenerate mask (a few pixels): no long axis
        return None


def _scale(spacing_known: bool) -> float:
    """Factor from clinical's ml to the reported volume unit."""
    return 1.0 if spacing_known else _ML


def measure_loop(masks: np.ndarray, spacing_mm: Sequence[float] | None) -> LoopCurves:
    """Area, long axis and area-length volume of every frame of ``masks`` ``(T, H, W)``.

    Args:
        masks: binary LV masks on the input's pixel grid.
        spacing_mm: (sx, sy) in mm, or ``None`` for pixel units (spacing 1 x 1).
    """
    known = spacing_mm is not None
    spacing = tuple(spacing_mm) if known else (1.0, 1.0)
    profiles = [_profile(m, spacing) for m in masks]
    nan = float("nan")
    area = np.array([p.area_mm2 if p else nan for p in profiles])
    length = np.array([p.axis.length if p else nan for p in profiles])
    volume = np.array([area_length_from_profile(p) * _scale(known) if p else nan for p in profiles])
    return LoopCurves(area, length, volume, profiles, known)


@dataclass
class BeatResult:
    """EDV, ESV, EF of one beat (views: the loops it came from; frames: their ED/ES frames)."""

    index: int
    method: str
    frames: dict[str, dict[str, int]]
    edv: float
    esv: float
    ef: float
    sample_volumes: list[tuple[float, float]] = field(default_factory=list)  # (EDV, ESV) of each sampler member

    @property
    def ef_samples(self) -> list[float]:
        return [ejection_fraction(a, b) for a, b in self.sample_volumes]

    def interval(self) -> tuple[float, float] | None:
        return percentile_interval(self.ef_samples)

    def to_dict(self) -> dict:
        low_high = self.interval()
        return {
            "beat": self.index,
            "method": self.method,
            "frames": self.frames,
            "edv": self.edv,
            "esv": self.esv,
            "ef_pct": self.ef,
            "ef_low_pct": None if low_high is None else low_high[0],
            "ef_high_pct": None if low_high is None else low_high[1],
            "n_samples": len(self.ef_samples),
        }


def _volume(profiles: Mapping[str, LVProfile | None], spacing_known: bool) -> float:
    """Biplane (both views) or area-length (one view) volume of one phase; NaN when a profile is missing."""
    if any(p is None for p in profiles.values()):
        return float("nan")
    if set(profiles) == {"2CH", "4CH"}:
        return biplane_volume_from_profiles(profiles["2CH"], profiles["4CH"]) * _scale(spacing_known)
    (profile,) = profiles.values()
    return area_length_from_profile(profile) * _scale(spacing_known)


def method_of(views: Sequence[str]) -> str:
    return "simpson biplane" if set(views) == {"2CH", "4CH"} else f"area-length {views[0]}"


def beat_volumes(curves: Mapping[str, LoopCurves], beats: Mapping[str, Sequence[Beat]]) -> list[BeatResult]:
    """EDV/ESV/EF per beat: biplane when ``curves`` has 2CH and 4CH (beats paired in order), else area-length.

    Args:
        curves: ``{view: LoopCurves}`` (one or both apical views; one entry of any name for a single loop).
        beats: ``{view: beats}`` detected on each view's curve.
    """
    views = sorted(curves)
    known = all(c.spacing_known for c in curves.values())
    n = min(len(beats[v]) for v in views)
    out = []
    for k in range(n):
        frames = {v: {"ed": beats[v][k].ed, "es": beats[v][k].es} for v in views}
        edv = _volume({v: curves[v].profiles[frames[v]["ed"]] for v in views}, known)
        esv = _volume({v: curves[v].profiles[frames[v]["es"]] for v in views}, known)
        out.append(BeatResult(k, method_of(views), frames, edv, esv, ejection_fraction(edv, esv)))
    return out


def loop_summary(results: Sequence[BeatResult]) -> dict[str, float | int | None]:
    """Loop EDV, ESV (means over beats), EF from them, and the per-beat EF mean/SD; EF interval over the samples."""
    edv = float(np.nanmean([r.edv for r in results])) if results else float("nan")
    esv = float(np.nanmean([r.esv for r in results])) if results else float("nan")
    efs = np.array([r.ef for r in results], dtype=float)
    efs = efs[np.isfinite(efs)]
    n_samples = min((len(r.sample_volumes) for r in results), default=0)
    loop_samples = []
    for m in range(n_samples):  # member m's loop EF: from its mean EDV and ESV over the beats
        s_edv = np.nanmean([r.sample_volumes[m][0] for r in results])
        s_esv = np.nanmean([r.sample_volumes[m][1] for r in results])
        loop_samples.append(ejection_fraction(s_edv, s_esv))
    interval = percentile_interval(loop_samples)
    return {
        "n_beats": len(results),
        "edv": edv,
        "esv": esv,
        "ef_pct": ejection_fraction(edv, esv),
        "ef_beat_mean_pct": float(efs.mean()) if efs.size else None,
        "ef_beat_sd_pct": float(efs.std(ddof=1)) if efs.size > 1 else None,
        "ef_low_pct": None if interval is None else interval[0],
        "ef_high_pct": None if interval is None else interval[1],
        "n_samples": len(loop_samples),
    }


def sample_efs(
    results: Sequence[BeatResult],
    member_mask: Mapping[str, Callable[[int, int], np.ndarray]],
    n_members: int,
    spacing: Mapping[str, Sequence[float] | None],
) -> None:
    """Fill ``sample_volumes`` of each beat from the sampler's members, in place.

    Args:
        results: beats from :func:`beat_volumes`.
        member_mask: ``{view: f(member, frame) -> mask (H, W)}`` on the input grid.
        n_members: members per frame (the same for every view).
        spacing: ``{view: (sx, sy) mm or None}``.
    """
    views = sorted(member_mask)
    known = all(spacing[v] is not None for v in views)
    grid = {v: tuple(spacing[v]) if spacing[v] is not None else (1.0, 1.0) for v in views}
    for result in results:
        volumes = []
        for m in range(n_members):
            ed = _volume({v: _profile(member_mask[v](m, result.frames[v]["ed"]), grid[v]) for v in views}, known)
            es = _volume({v: _profile(member_mask[v](m, result.frames[v]["es"]), grid[v]) for v in views}, known)
            volumes.append((ed, es))
        result.sample_volumes = volumes
