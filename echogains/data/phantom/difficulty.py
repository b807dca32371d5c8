"""Causes of difficulty of the ``hard`` preset: their per-grade ranges, their per-patient draws and their image terms.

The ``camus-like`` and ``lv-focused`` presets have no :class:`DifficultySpec` and never reach this module's image
terms, so their output is unchanged. A preset with one draws, per patient and from its own stream
(``(seed, i, STREAM_DIFFICULTY)``, see :mod:`.streams`), the parameters below, graded by the image quality
(``Good``/``Medium``/``Poor``, CAMUS's grades):

- ``blood_ratio``: blood echogenicity as a fraction of the myocardium's (lower blood-tissue contrast);
- ``haze``, ``haze_width_deg``: side-lobe haze: a second, laterally wide PSF of relative amplitude ``haze`` that smears
  the bright walls into the dark cavity (coherent with the main lobe);
- ``clutter``: near-field clutter filling the cavity from the apex (replaces the appearance's ``clutter``);
- ``reverb_amplitude``, ``reverb_spacing_mm``: reverberation: copies of the chest-wall echo at multiples of the
  reverberation spacing, each ``reverb_amplitude`` times the one before (the apical smear of real apical views);
- ``specular_floor``, ``specular_power``: the myocardial echo is ``floor + (1 - floor) |cos|^power`` of the angle
  between the beam and the wall normal: walls along the beam (the lateral wall in an apical view) drop out;
- ``edge_loss``: beam weakening at the sector edges (``1 - edge_loss |rel angle|^4``);
- ``trabeculation``: echogenic trabeculae and papillary muscles inside the cavity band next to the endocardium
  (labelled cavity, as CAMUS annotates them);
- ``tgc_db``: the sonographer's time-gain-compensation sliders (dB at 5 depths, interpolated);
- ``plane_offset_mm``, ``plane_tilt_deg`` (per view): the imaging plane misses the LV long axis by an offset and a
  rotation about its transverse axis: off-axis, foreshortened cuts (the labels are cut from the same 3D shape).

The appearance overrides (``gain_db``, ``tgc_mismatch``, ``noise_db``, ``n_dropouts``, ``dropout_strength``,
``psf_lateral_deg``) widen the existing appearance draws. The 3D LV is unchanged: the analytic volumes and EF stay
exact; only what the 2D images show of it gets harder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from echogains.data.phantom.streams import STREAM_DIFFICULTY, generator

__all__ = ["DifficultySpec", "sample_difficulty", "plane_points", "reverberation", "tgc_profile", "trabeculae"]

#: per-grade range: ``(low, high)`` for Good, Medium, Poor.
Graded = tuple[tuple[float, float], tuple[float, float], tuple[float, float]]


@dataclass(frozen=True)
class DifficultySpec:
    """Per-grade ranges ``((lo, hi) Good, (lo, hi) Medium, (lo, hi) Poor)`` of each cause of difficulty."""

    blood_ratio: Graded = ((0.05, 0.09), (0.08, 0.14), (0.12, 0.2))
    haze: Graded = ((0.04, 0.08), (0.08, 0.14), (0.14, 0.22))
    haze_width_deg: Graded = ((3.0, 5.0), (4.0, 6.5), (5.0, 8.0))
    clutter: Graded = ((0.01, 0.025), (0.025, 0.05), (0.05, 0.09))
    reverb_amplitude: Graded = ((0.1, 0.2), (0.2, 0.35), (0.3, 0.5))
    reverb_spacing_mm: tuple[float, float] = (8.0, 16.0)
    specular_floor: Graded = ((0.4, 0.55), (0.25, 0.4), (0.1, 0.25))
    specular_power: Graded = ((1.0, 1.5), (1.5, 2.2), (2.0, 3.0))
    edge_loss: Graded = ((0.35, 0.5), (0.5, 0.7), (0.7, 0.9))
    trabeculation: Graded = ((0.05, 0.12), (0.1, 0.2), (0.15, 0.3))
    tgc_db: Graded = ((-2.0, 2.0), (-3.5, 3.5), (-5.0, 5.0))
    plane_offset_mm: Graded = ((0.0, 2.0), (1.0, 4.0), (2.0, 6.0))
    plane_tilt_deg: Graded = ((-4.0, 4.0), (-7.0, 7.0), (-10.0, 10.0))
    gain_db: tuple[float, float] = (-5.0, 4.0)
    tgc_mismatch: tuple[float, float] = (-0.12, 0.12)
    noise_db: Graded = ((-72.0, -66.0), (-68.0, -62.0), (-64.0, -58.0))
    n_dropouts: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] = ((0, 2), (1, 3), (2, 4))
    dropout_strength: Graded = ((0.5, 0.7), (0.6, 0.85), (0.75, 0.95))
    psf_lateral_deg: Graded = ((0.6, 0.85), (0.75, 1.05), (0.9, 1.3))

    def scaled(self, factor: float) -> DifficultySpec:
        """A copy with every graded cause of difficulty scaled by ``factor`` (the calibration knob; 1: unchanged).

        Amounts (blood ratio, haze, clutter, reverberation, trabeculation, plane offset and tilt) are multiplied; the
        specular floor, power, edge loss and lateral PSF move from the camus-like values (1, 1, 0.35, 0.675 deg) by
        ``factor``. Gain, TGC, noise and dropout draws are kept.
        """
        f = float(factor)
        if f == 1.0:  # exactly the spec (moving toward the easy value and back is not exact in floats)
            return self

        def mul(ranges: Graded) -> Graded:
            return tuple((lo * f, hi * f) for lo, hi in ranges)  # type: ignore[return-value]

        def toward(ranges: Graded, easy: float) -> Graded:
            return tuple((easy + (lo - easy) * f, easy + (hi - easy) * f) for lo, hi in ranges)  # type: ignore[return-value]

        keys = (
            "blood_ratio",
            "haze",
            "clutter",
            "reverb_amplitude",
            "trabeculation",
            "plane_offset_mm",
            "plane_tilt_deg",
        )
        out: dict[str, Any] = {k: mul(getattr(self, k)) for k in keys}
        for key, easy in (
            ("specular_floor", 1.0),
            ("specular_power", 1.0),
            ("edge_loss", 0.35),
            ("psf_lateral_deg", 0.675),
        ):
            out[key] = toward(getattr(self, key), easy)
        return dataclasses.replace(self, **out)


def _u(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return float(lo + rng.random() * (hi - lo))


def sample_difficulty(
    spec: DifficultySpec, seed: int, index: int, level: int, views: tuple[str, ...] = ("2CH", "4CH")
) -> tuple[dict[str, Any], dict[str, float]]:
    """The difficulty parameters of patient ``index`` at quality level ``level`` (0 Good, 1 Medium, 2 Poor).

    Returns:
        ``(difficulty, appearance_overrides)``; every number drawn in a fixed order from ``(seed, index,
        STREAM_DIFFICULTY)``, so the same patient gets the same parameters in any run order.
    """
    rng = generator(seed, index, STREAM_DIFFICULTY)
    graded = (
        "blood_ratio",
        "haze",
        "haze_width_deg",
        "clutter",
        "reverb_amplitude",
        "specular_floor",
        "specular_power",
        "edge_loss",
        "trabeculation",
    )
    difficulty: dict[str, Any] = {"level": int(level)}
    for key in graded:
        difficulty[key] = _u(rng, getattr(spec, key)[level])
    difficulty["reverb_spacing_mm"] = _u(rng, spec.reverb_spacing_mm)
    difficulty["tgc_db"] = [_u(rng, spec.tgc_db[level]) for _ in range(5)]
    difficulty["plane_offset_mm"] = {}
    difficulty["plane_tilt_deg"] = {}
    for view in views:
        sign = 1.0 if rng.random() < 0.5 else -1.0
        difficulty["plane_offset_mm"][view] = sign * _u(rng, spec.plane_offset_mm[level])
        difficulty["plane_tilt_deg"][view] = _u(rng, spec.plane_tilt_deg[level])
    lo_n, hi_n = spec.n_dropouts[level]
    appearance = {
        "gain_db": _u(rng, spec.gain_db) - 1.5 * level,
        "tgc_mismatch": _u(rng, spec.tgc_mismatch),
        "noise_db": _u(rng, spec.noise_db[level]),
        "n_dropouts": float(rng.integers(lo_n, hi_n + 1)),
        "dropout_strength": _u(rng, spec.dropout_strength[level]),
        "psf_lateral_deg": _u(rng, spec.psf_lateral_deg[level]),
        "clutter": difficulty["clutter"],
    }
    return difficulty, appearance


# ----------------------------------------------------------------------------------------------------------
# Image terms (called by :mod:`.rendering` only for a preset with a DifficultySpec)
# ----------------------------------------------------------------------------------------------------------
def plane_points(
    difficulty: Mapping[str, Any], view: str, azimuth_deg: float, w: np.ndarray, z: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3D LV-frame points (X, Y, Z) of in-plane points (w, z) of an off-axis plane.

    The plane holds the in-plane transverse direction ``e_w`` (at ``azimuth_deg``) and is rotated by the tilt about
    it, through the point at ``offset`` along the plane normal ``e_n`` at the apex height: Z = z cos(tilt),
    N = offset + z sin(tilt).
    """
    phi = np.radians(azimuth_deg)
    tilt = np.radians(float(difficulty["plane_tilt_deg"][view]))
    n = float(difficulty["plane_offset_mm"][view]) + z * np.sin(tilt)
    X = w * np.cos(phi) - n * np.sin(phi)
    Y = w * np.sin(phi) + n * np.cos(phi)
    return X, Y, z * np.cos(tilt)


def reverberation(echo: np.ndarray, r: np.ndarray, near_mm: float, difficulty: Mapping[str, Any]) -> np.ndarray:
    """Reverberation echoes of the near field (``r < near_mm``) at 1, 2, 3 spacings deeper (polar arrays, axis 0 = r).

    Each copy is ``reverb_amplitude`` times the previous one; the copies are added to the echo amplitude.
    """
    dr = float(r[1, 0] - r[0, 0])
    near = np.where(r < near_mm, echo, 0.0)
    out = np.zeros_like(echo)
    amp = float(difficulty["reverb_amplitude"])
    shift = int(round(float(difficulty["reverb_spacing_mm"]) / dr))
    for k in range(1, 4):
        s = k * shift
        if s >= echo.shape[0] or s <= 0:
            break
        out[s:] += amp**k * near[:-s]
    return out


def tgc_profile(r: np.ndarray, r_max: float, difficulty: Mapping[str, Any]) -> np.ndarray:
    """Amplitude factor of the TGC sliders: ``tgc_db`` at 5 depths from 0 to ``r_max``, linearly interpolated."""
    nodes = np.linspace(0.0, r_max, len(difficulty["tgc_db"]))
    return 10.0 ** (np.interp(r, nodes, np.asarray(difficulty["tgc_db"], dtype=np.float64)) / 20.0)


def trabeculae(q_cavity: np.ndarray, z: np.ndarray, base_z: float, texture: np.ndarray) -> np.ndarray:
    """Weight (0..1) of trabeculae and papillary muscles: the cavity band next to the endocardium (normalised radius
    0.72..1) between 15 % and 75 % of the long axis, broken up by a smooth texture (its brighter half)."""
    band = np.clip((q_cavity - 0.72) / 0.14, 0.0, 1.0) * (q_cavity <= 1.0)
    height = np.clip((z / base_z - 0.15) / 0.1, 0.0, 1.0) * np.clip((0.75 - z / base_z) / 0.1, 0.0, 1.0)
    patches = np.clip(texture - 1.0, 0.0, None)
    return band * height * patches
