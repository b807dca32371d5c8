"""Ground truth of the phantom's cine loops: the analytic LV volume of every frame and the true ED/ES frames.

The phantom's LV cavity at contraction state ``s`` is a truncated prolate ellipsoid (:mod:`.anatomy` eq. 1-2), so
its volume is known in closed form for every frame of a loop: ``V(s) = LVShape.cavity_volume_ml()`` of
``lv_shape_at(lv_ed, rho, lam, s)``. ED frames are the frames with ``s = 0`` (largest volume), ES frames those with
``s = 1`` (smallest). A beat is ED -> ES -> next ED.

Loops with truth:

- cine loops of :func:`echogains.data.phantom.simulate_cycle` (EchoNet AVIs, DICOM loops): periodic, ED at
  ``ed_frame + k * cycle_frames``, ES ``systole_frames`` later;
- CAMUS half sequences (ED -> ES; no full beat): ED is frame 0, ES the last frame.

Written beside a layout (:func:`echogains.data.phantom.layouts.write_curves`): ``phantom_curves.json`` (every
loop: file, fps, true ED/ES frames, beats, per-frame volume) and ``truth_curves/{loop}.csv`` (frame, time_s, state,
lv_volume_ml, phase).
Frame indices are 0-based.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from echogains.data.phantom.anatomy import PatientParams, lv_shape_at
from echogains.data.phantom.simulate import PhantomCycle

__all__ = ["LoopTruth", "CURVES_FILE", "CURVES_DIR", "cycle_truth", "half_sequence_truth", "curve_csv", "loop_name"]

CURVES_FILE = "phantom_curves.json"
CURVES_DIR = "truth_curves"


@dataclass(frozen=True)
class LoopTruth:
    """Analytic truth of one loop.

    Args:
        patient: patient id.
        view: ``2CH`` / ``4CH``.
        file: the loop's file, relative to the layout root.
        fps: frame rate (``None`` for CAMUS half sequences, which give none).
        states: contraction state per frame.
        volume_ml: true LV cavity volume per frame (ml).
        ed_frames: 0-based true ED frames.
        es_frames: 0-based true ES frames.
        beats: ``(ed, es, next_ed)`` of every full beat in the loop.
        true_ef_pct: the patient's analytic EF.
    """

    patient: str
    view: str
    file: str
    fps: float | None
    states: np.ndarray
    volume_ml: np.ndarray
    ed_frames: tuple[int, ...]
    es_frames: tuple[int, ...]
    beats: tuple[tuple[int, int, int], ...]
    true_ef_pct: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "patient": self.patient,
            "view": self.view,
            "file": self.file,
            "fps": self.fps,
            "n_frames": int(len(self.states)),
            "frame_index_base": 0,
            "ed_frames": list(self.ed_frames),
            "es_frames": list(self.es_frames),
            "beats": [{"ed": a, "es": b, "next_ed": c} for a, b, c in self.beats],
            "true_ef_pct": self.true_ef_pct,
            "edv_ml": float(self.volume_ml.max()),
            "esv_ml": float(self.volume_ml.min()),
            "volume_ml": [float(v) for v in self.volume_ml],
        }


def _volumes(params: PatientParams, states: np.ndarray) -> np.ndarray:
    return np.array([lv_shape_at(params.lv_ed, params.rho, params.lam, float(s)).cavity_volume_ml() for s in states])


def cycle_truth(cycle: PhantomCycle, file: str) -> LoopTruth:
    """Truth of a loop from :func:`~echogains.data.phantom.simulate_cycle`."""
    if cycle.states is None or cycle.cycle_frames < 2:
        raise ValueError("the cycle carries no contraction states (made by an older simulate_cycle?)")
    n, period = len(cycle.states), cycle.cycle_frames
    ed = tuple(range(cycle.ed_frame, n, period))
    es = tuple(f for f in range(cycle.ed_frame + cycle.systole_frames, n, period))
    beats = tuple((a, a + cycle.systole_frames, a + period) for a in ed if a + period < n)
    return LoopTruth(
        patient=cycle.params.patient_id,
        view=cycle.view,
        file=file,
        fps=float(cycle.fps),
        states=np.asarray(cycle.states, dtype=float),
        volume_ml=_volumes(cycle.params, cycle.states),
        ed_frames=ed,
        es_frames=es,
        beats=beats,
        true_ef_pct=float(cycle.params.truth()["ef_pct"]),
    )


def half_sequence_truth(params: PatientParams, view: str, file: str) -> LoopTruth:
    """Truth of a CAMUS half sequence ED -> ES (``params.n_frames`` frames; no full beat)."""
    n = params.n_frames
    states = np.array([0.5 * (1.0 - np.cos(np.pi * k / max(1, n - 1))) for k in range(n)])  # simulate._contraction
    return LoopTruth(
        patient=params.patient_id,
        view=view,
        file=file,
        fps=None,
        states=states,
        volume_ml=_volumes(params, states),
        ed_frames=(0,),
        es_frames=(n - 1,),
        beats=(),
        true_ef_pct=float(params.truth()["ef_pct"]),
    )


def curve_csv(truth: LoopTruth) -> str:
    """CSV of one loop: frame, time_s (empty without fps), state, lv_volume_ml, phase (ED/ES/empty)."""
    buffer = io.StringIO()
    out = csv.writer(buffer, lineterminator="\n")
    out.writerow(["frame", "time_s", "state", "lv_volume_ml", "phase"])
    ed, es = set(truth.ed_frames), set(truth.es_frames)
    for k, (s, v) in enumerate(zip(truth.states, truth.volume_ml)):
        time = "" if truth.fps is None else f"{k / truth.fps:.10g}"
        out.writerow([k, time, f"{float(s):.10g}", f"{float(v):.10g}", "ED" if k in ed else "ES" if k in es else ""])
    return buffer.getvalue()


def loop_name(truth: LoopTruth) -> str:
    """Name of a loop's truth CSV (without ``.csv``): the loop file's name without its extensions."""
    name = Path(truth.file).name
    return name.split(".")[0]
