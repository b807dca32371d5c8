"""Phantom patients and cine loops in memory: stills and half sequences, cardiac cycles, EchoNet tracings and the
Simpson reference of the true masks (no I/O; the layouts write them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from echogains.clinical import simpson_biplane_volume
from echogains.data.phantom.anatomy import (
    _VIEW_CODE,
    VIEWS,
    LVShape,
    PatientParams,
    _lv_plane_to_mm,
    lv_shape_at,
    sample_params,
)
from echogains.data.phantom.rendering import _ViewRenderer
from echogains.data.phantom.streams import RENDER_CYCLE, STREAM_CYCLE, generator
from echogains.geometry import Sector

__all__ = ["PhantomView", "PhantomPatient", "PhantomCycle", "simulate_patient", "simulate_cycle", "simpson_reference"]


# ----------------------------------------------------------------------------------------------------------
# Patients
# ----------------------------------------------------------------------------------------------------------
@dataclass
class PhantomView:
    """One view of one patient: frames ED -> ES (or just ED and ES), labels, geometry.

    Args:
        view: ``2CH`` or ``4CH``.
        images: uint8 frames ``[t, y, x]``: the whole half sequence, or the two frames ED and ES.
        labels: uint8 CAMUS labels of every frame.
        spacing: (sx, sy) in mm.
        sector: the imaging sector.
        ed_index: position of ED in ``images`` (0).
        es_index: position of ES in ``images``.
        n_frames: frames of the half sequence (CAMUS ``NbFrame``), also when only ED and ES were rendered.
        is_sequence: ``images`` holds every frame of the half sequence.
    """

    view: str
    images: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float]
    sector: Sector
    ed_index: int
    es_index: int
    n_frames: int
    is_sequence: bool = False

    def image(self, phase: str) -> np.ndarray:
        return self.images[self.ed_index if phase == "ED" else self.es_index]

    def label(self, phase: str) -> np.ndarray:
        return self.labels[self.ed_index if phase == "ED" else self.es_index]


@dataclass
class PhantomPatient:
    """A rendered patient: both views plus the analytic truth.

    Args:
        params: the sampled parameters.
        views: ``{"2CH": PhantomView, "4CH": PhantomView}``.
        truth: analytic volumes (ml) and EF (%), see :meth:`PatientParams.truth`.
    """

    params: PatientParams
    views: dict[str, PhantomView]
    truth: dict[str, float]

    @property
    def patient_id(self) -> str:
        return self.params.patient_id


def _contraction(k: int, n_frames: int) -> float:
    """Contraction state of half-sequence frame ``k`` (0-based): cosine ease from ED (0) to ES (1)."""
    return 0.5 * (1.0 - np.cos(np.pi * k / max(1, n_frames - 1)))


def simulate_patient(
    patient_index: int,
    preset: str = "camus-like",
    seed: int = 0,
    *,
    image_size: tuple[int, int] | None = None,
    sequence: bool = False,
    views: Sequence[str] = VIEWS,
    render_images: bool = True,
    **overrides: Any,
) -> PhantomPatient:
    """Render one patient in memory: 2CH and 4CH, ED and ES (or the half sequence ED -> ES), labels and truth.

    Args:
        patient_index: 1-based index (``patient0001`` is 1).
        preset: ``camus-like``, ``lv-focused`` or ``hard`` (a key of :data:`PRESETS`).
        seed: dataset seed; the same (index, preset, seed, options) give the same arrays.
        image_size: (rows, cols); the preset's default when ``None``.
        sequence: render every frame of the half sequence, not only ED and ES.
        views: the views to render.
        render_images: ``False`` renders labels only (fast; images are all zero).
        overrides: see :func:`sample_params`.
    """
    params = sample_params(patient_index, preset, seed, image_size, **overrides)
    out = {}
    for view in views:
        out[view] = _render_view(params, view, sequence, render_images)
    return PhantomPatient(params=params, views=out, truth=params.truth())


def _render_view(params: PatientParams, view: str, sequence: bool, render_images: bool) -> PhantomView:
    renderer = _ViewRenderer(params, view, params.image_size, params.anisotropy, params.spacing)
    n = params.n_frames
    wanted = list(range(n)) if sequence else [0, n - 1]
    speckle = renderer.half_sequence_speckle(n, wanted) if render_images else {}
    images, labels = [], []
    for k in wanted:
        shape = lv_shape_at(params.lv_ed, params.rho, params.lam, _contraction(k, n))
        labels.append(renderer.label(shape))
        images.append(renderer.image(shape, speckle[k], k) if render_images else np.zeros(params.image_size, np.uint8))
    return PhantomView(
        view=view,
        images=np.stack(images),
        labels=np.stack(labels),
        spacing=tuple(renderer.sector.spacing),  # type: ignore[arg-type]
        sector=renderer.sector,
        ed_index=0,
        es_index=len(wanted) - 1,
        n_frames=n,
        is_sequence=sequence,
    )


@dataclass
class PhantomCycle:
    """A 4CH cine loop over one cardiac cycle (EchoNet-Dynamic style), with analytic LV tracings.

    Args:
        params: patient parameters.
        frames: uint8 ``[t, y, x]``.
        labels: uint8 CAMUS labels of every frame.
        ed_frame: 0-based frame index of ED.
        es_frame: 0-based frame index of ES.
        fps: frame rate.
        spacing: (sx, sy) in mm.
        sector: the imaging sector.
        tracings: ``{frame: array (n_chords + 1, 4)}`` of (X1, Y1, X2, Y2) in pixels: the long axis first, then
            chords perpendicular to it.
        view: the view of the loop.
        states: contraction state of every frame (0 = ED, 1 = ES).
        cycle_frames: frames per cardiac cycle.
        systole_frames: frames from ED to ES.
    """

    params: PatientParams
    frames: np.ndarray
    labels: np.ndarray
    ed_frame: int
    es_frame: int
    fps: float
    spacing: tuple[float, float]
    sector: Sector
    tracings: dict[int, np.ndarray]
    view: str = "4CH"
    states: np.ndarray | None = None
    cycle_frames: int = 0
    systole_frames: int = 0


def _cycle_states(n_cycle: int, n_systole: int, ed_frame: int, n_total: int) -> np.ndarray:
    """Contraction state of every video frame: cosine systole ED -> ES, cosine diastole ES -> ED, periodic."""
    k = (np.arange(n_total) - ed_frame) % n_cycle
    systole = 0.5 * (1.0 - np.cos(np.pi * k / n_systole))
    diastole = 0.5 * (1.0 + np.cos(np.pi * (k - n_systole) / (n_cycle - n_systole)))
    return np.where(k <= n_systole, systole, diastole)


def simulate_cycle(
    patient_index: int,
    preset: str = "camus-like",
    seed: int = 0,
    *,
    image_size: tuple[int, int] = (112, 112),
    cycle_frames: int | None = None,
    fps: float = 50.0,
    n_chords: int = 20,
    render_images: bool = True,
    view: str = "4CH",
    n_beats: int = 1,
    anisotropy: float = 1.0,
    **overrides: Any,
) -> PhantomCycle:
    """Render a loop over ``n_beats`` cardiac cycles (ED -> ES -> ED) with isotropic pixels, as in EchoNet-Dynamic.

    Args:
        patient_index: 1-based index; the same patient (same LV, same EF) as :func:`simulate_patient`.
        preset: preset name.
        seed: dataset seed.
        image_size: (rows, cols) of the video.
        cycle_frames: frames per cardiac cycle; drawn from a heart rate of 55-85 bpm when ``None``.
        fps: frame rate.
        n_chords: chords per traced frame (after the long-axis row).
        render_images: ``False`` renders labels and tracings only.
        view: ``4CH`` (EchoNet-Dynamic) or ``2CH``; both views of a patient share the heart rate and systole length,
            the 2CH loop starts at its own phase (its first ED frame is drawn from its own stream).
        n_beats: cardiac cycles in the loop (the loop has ``n_beats * cycle_frames + ed_frame + 2`` frames).
        anisotropy: pixel spacing ratio sy / sx (1: square pixels, as EchoNet-Dynamic; CAMUS: 0.5).
        overrides: see :func:`sample_params`.
    """
    params = sample_params(patient_index, preset, seed, tuple(image_size), **{**overrides, "anisotropy": anisotropy})
    rng = generator(seed, patient_index, STREAM_CYCLE)
    n_cycle = int(cycle_frames) if cycle_frames else int(round(fps * 60.0 / rng.uniform(55.0, 85.0)))
    n_systole = max(1, int(round(n_cycle * rng.uniform(0.33, 0.4))))
    ed_frame = int(rng.integers(2, 6))
    if view != "4CH":
        ed_frame = int(generator(seed, patient_index, STREAM_CYCLE, _VIEW_CODE[view]).integers(2, 6))
    n_total = int(n_beats) * n_cycle + ed_frame + 2
    states = _cycle_states(n_cycle, n_systole, ed_frame, n_total)
    renderer = _ViewRenderer(params, view, tuple(image_size), anisotropy, params.spacing, stream=RENDER_CYCLE)
    frames, labels = [], []
    speckles = renderer.cycle_speckle(n_total) if render_images else iter(())
    for k, s in enumerate(states):
        shape = lv_shape_at(params.lv_ed, params.rho, params.lam, float(s))
        labels.append(renderer.label(shape))
        frames.append(
            renderer.image(shape, next(speckles), k) if render_images else np.zeros(tuple(image_size), np.uint8)
        )
    es_frame = ed_frame + n_systole
    tracings = {}
    for f in (ed_frame, es_frame):
        shape = lv_shape_at(params.lv_ed, params.rho, params.lam, float(states[f]))
        tracings[f] = _tracing(params, renderer.sector, shape, n_chords, view)
    spacing = (float(renderer.sector.spacing[0]), float(renderer.sector.spacing[1]))
    return PhantomCycle(
        params,
        np.stack(frames),
        np.stack(labels),
        ed_frame,
        es_frame,
        float(fps),
        spacing,
        renderer.sector,
        tracings,
        view=view,
        states=states,
        cycle_frames=n_cycle,
        systole_frames=n_systole,
    )


def _tracing(params: PatientParams, sector: Sector, shape: LVShape, n_chords: int, view: str = "4CH") -> np.ndarray:
    """EchoNet-style tracing in pixels: row 0 = long axis (apex -> mid-base), then chords from apex to base.

    The chords are exact: at height z the view's cavity spans w = -half_width(z) .. +half_width(z) (eq. 1's ellipse);
    an off-axis plane (hard preset) cuts its own ellipse, from its in-plane apex to the base (:func:`_plane_chords`).
    """
    if params.difficulty:
        z_lo, z_hi, z, half = _plane_chords(params, shape, n_chords, view)
    else:
        z_lo, z_hi = 0.0, shape.base_z
        z = shape.base_z * np.arange(1, n_chords + 1) / n_chords
        half = shape.half_width(z, view)
    rows = [(np.array([0.0, 0.0]), np.array([z_lo, z_hi]))]
    rows += [(np.array([-h, h]), np.array([zz, zz])) for h, zz in zip(half, z)]
    sx, sy = sector.spacing
    out = np.zeros((len(rows), 4))
    for i, (w, zz) in enumerate(rows):
        x, y = _lv_plane_to_mm(params, w, zz, sector.apex, view)
        out[i] = [x[0] / sx, y[0] / sy, x[1] / sx, y[1] / sy]
    return out


def _plane_chords(
    params: PatientParams, shape: LVShape, n_chords: int, view: str
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """In-plane apex and base heights, chord heights and half widths of the cavity cut by an off-axis plane.

    With offset n0 and tilt e (:func:`.difficulty.plane_points`), the in-plane height z' is at Z = z' cos e and
    N = n0 + z' sin e off the axis: half width = semi sqrt(1 - (N / other)^2 - ((Z - c) / c)^2) below the base.
    """
    tilt = np.radians(float(params.difficulty["plane_tilt_deg"][view]))
    n0 = float(params.difficulty["plane_offset_mm"][view])
    semi, other = (shape.a, shape.b) if view == "2CH" else (shape.b, shape.a)

    def half_width(zp: np.ndarray) -> np.ndarray:
        n, zz = n0 + zp * np.sin(tilt), zp * np.cos(tilt)
        rad = 1.0 - (n / other) ** 2 - ((zz - shape.c) / shape.c) ** 2
        return np.where(zz <= shape.base_z + 1e-9, semi * np.sqrt(np.clip(rad, 0.0, None)), 0.0)

    z_hi = shape.base_z / np.cos(tilt)
    grid = np.linspace(0.0, z_hi, 20001)
    z_lo = float(grid[np.argmax(half_width(grid) > 0.0)])
    z = z_lo + (z_hi - z_lo) * np.arange(1, n_chords + 1) / n_chords
    return z_lo, float(z_hi), z, half_width(z)


# ----------------------------------------------------------------------------------------------------------
# Simpson reference of the true masks
# ----------------------------------------------------------------------------------------------------------
def simpson_reference(patient: PhantomPatient, n_discs: int = 20) -> dict[str, float]:
    """Simpson biplane EDV, ESV (ml) and EF (%) from the TRUE 2CH and 4CH LV cavity masks of ``patient``."""
    v2, v4 = patient.views["2CH"], patient.views["4CH"]
    vol = {}
    for phase in ("ED", "ES"):
        l2, l4 = v2.label(phase), v4.label(phase)
        vol[phase] = float(
            simpson_biplane_volume(
                l2 == 1,
                v2.spacing,
                l4 == 1,
                v4.spacing,
                n_discs=n_discs,
                myo_2ch=l2 == 2,
                myo_4ch=l4 == 2,
                la_2ch=l2 == 3,
                la_4ch=l4 == 3,
            )
        )
    return {"edv_ml": vol["ED"], "esv_ml": vol["ES"], "ef_pct": 100.0 * (vol["ED"] - vol["ES"]) / vol["ED"]}
