"""Synthetic apical echo phantom: one 3D left ventricle per patient, cut by the 2CH and 4CH planes.

The phantom is the embedded default data of the toolkit (demos, tests) and the ground truth that real data
cannot give: the true LV volumes and ejection fraction are known in closed form.

Model (lengths in mm, volumes in ml). The LV frame has the endocardial apex at the origin and the long axis
along +Z; X is the 2CH in-plane short axis, Y the 4CH one. At contraction state ``s`` (0 = ED, 1 = ES):

- LV cavity: prolate ellipsoid with semi-axes (a, b, c) and centre Z = c, truncated at the base plane
  Z_b = c (1 + f). The 2CH image plane is the X-Z plane (its cavity width is 2a), the 4CH plane the Y-Z plane
  (width 2b): both planes cut the same 3D shape, evaluated point by point in 3D.
- Epicardium: semi-axes (a + t, b + t, c + t), same centre, same base plane; myocardium = epicardium - cavity.
- Left atrium: ellipsoid above the base plane, following the base as it descends.
- Other 4CH chambers (RV, RA), valves, pericardium and chest wall are drawn in the image plane, unlabelled.

Equations (numbered in the code):
  (1) volume of an ellipsoid (A, B, C) from its apex up to the plane at normalised height g (centre = 0):
      V = pi A B C (2/3 + g - g^3/3).
  (2) ED -> ES: a, b scale by rho and c by lam with f fixed, so ESV/EDV = rho^2 lam and EF = 1 - rho^2 lam.
  (3) wall thickness t(s) keeps the myocardial volume constant (incompressible myocardium).
  (4) speckle: complex scatterers E(r, th) N(r, th) convolved with a Gaussian PSF in polar coordinates (beam
      direction r, lateral th); the envelope |.| is Rayleigh distributed in homogeneous tissue.
  (5) depth attenuation exp(-alpha r) of the echo, receiver noise, then time-gain compensation exp(+alpha_tgc r).
  (6) log compression to 8 bit: I = 255 clip(1 + 20 log10(A / A_ref) / DR, 0, 1), then scan conversion.
  (7) speckle decorrelates between frames: N_k = q N_(k-1) + sqrt(1 - q^2) W_k.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from echogains.geometry import Sector, pixel_grid_mm
from echogains.utils import get_logger

__all__ = [
    "PRESETS",
    "LAYOUTS",
    "VIEWS",
    "PresetSpec",
    "LVShape",
    "PatientParams",
    "PhantomView",
    "PhantomPatient",
    "PhantomCycle",
    "truncated_ellipsoid_volume_ml",
    "lv_shape_at",
    "sample_params",
    "simulate_patient",
    "simulate_cycle",
    "simpson_reference",
    "assign_splits",
    "patient_id",
    "echonet_file_name",
    "place_sector",
    "QUALITIES",
    "make_phantom",
]

log = get_logger(__name__)

VIEWS: tuple[str, str] = ("2CH", "4CH")
LAYOUTS: tuple[str, ...] = ("camus-nifti", "camus-mhd", "echonet", "nnunet", "dicom")
QUALITIES: tuple[str, ...] = ("Good", "Medium", "Poor")
#: azimuth of each view's image plane about the LV long axis (degrees from the X axis).
_VIEW_AZIMUTH: dict[str, float] = {"2CH": 0.0, "4CH": 90.0}
_VIEW_CODE: dict[str, int] = {"2CH": 2, "4CH": 4}


# ----------------------------------------------------------------------------------------------------------
# Presets (a registry: add a preset by adding an entry)
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PresetSpec:
    """Sampling ranges ``(low, high)`` of one acquisition style.

    Args:
        depth_mm: scan depth.
        opening_deg: sector opening angle.
        tilt_deg: angle of the sector bisector from the image's vertical axis.
        apex_depth_mm: distance from the probe to the endocardial LV apex.
        heart_angle_deg: direction of the LV apex from the probe, relative to the sector bisector.
        axis_angle_deg: LV long axis direction relative to the apex direction.
        ef_percent: true ejection fraction.
        image_size: default (rows, cols) of the CAMUS-style stills.
        anisotropy: pixel spacing ratio sy / sx (CAMUS: 0.154 / 0.308 = 0.5).
        n_frames: frames of the half sequence ED -> ES.
        quality_weights: probabilities of Good, Medium, Poor image quality.
        rv_shift_deg: extra apex direction of the 4CH view (to the right, uncovering the RV).
        require_myo_inside: place the heart so that the whole ED wall, not only the cavity, lies in the sector.
        la_visible: fraction of the LA long semi-axis beyond its centre that must lie in the sector (0: the centre).
    """

    depth_mm: tuple[float, float]
    opening_deg: tuple[float, float]
    tilt_deg: tuple[float, float]
    apex_depth_mm: tuple[float, float]
    heart_angle_deg: tuple[float, float]
    axis_angle_deg: tuple[float, float]
    ef_percent: tuple[float, float]
    image_size: tuple[int, int] = (128, 96)
    anisotropy: float = 0.5
    n_frames: tuple[int, int] = (10, 16)
    quality_weights: tuple[float, float, float] = (0.35, 0.45, 0.20)
    rv_shift_deg: tuple[float, float] = (3.0, 10.0)
    require_myo_inside: bool = True
    la_visible: float = 0.0


PRESETS: dict[str, PresetSpec] = {
    # CAMUS: depth around 150 mm (about half above), sector mostly ~75 deg, LV anywhere in the upper sector.
    "camus-like": PresetSpec(
        depth_mm=(110.0, 180.0),
        opening_deg=(62.0, 86.0),
        tilt_deg=(-6.0, 6.0),
        apex_depth_mm=(16.0, 36.0),
        heart_angle_deg=(-10.0, 10.0),
        axis_angle_deg=(-12.0, 12.0),
        ef_percent=(25.0, 70.0),
        image_size=(128, 96),
        anisotropy=0.5,
        la_visible=0.3,
    ),
    # HUNT4-like LV-focused views: shallow depth, narrow sector, LV centred and filling the sector.
    "lv-focused": PresetSpec(
        depth_mm=(112.0, 148.0),
        opening_deg=(56.0, 70.0),
        tilt_deg=(-2.0, 2.0),
        apex_depth_mm=(18.0, 30.0),
        heart_angle_deg=(-2.0, 2.0),
        axis_angle_deg=(-3.0, 3.0),
        ef_percent=(40.0, 70.0),
        image_size=(128, 112),
        anisotropy=1.0,
        quality_weights=(0.5, 0.4, 0.1),
        rv_shift_deg=(0.0, 3.0),
        la_visible=0.3,
    ),
}


# ----------------------------------------------------------------------------------------------------------
# 3D left ventricle
# ----------------------------------------------------------------------------------------------------------
def truncated_ellipsoid_volume_ml(semi_a: float, semi_b: float, semi_c: float, g: float) -> float:
    """Volume (ml) of an ellipsoid cap from its apex (-C) up to the plane at height ``g * C`` from its centre.

    Args:
        semi_a: semi-axis along X (mm).
        semi_b: semi-axis along Y (mm).
        semi_c: semi-axis along the long axis Z (mm).
        g: normalised height of the truncation plane, in [-1, 1] (0: half ellipsoid, 1: whole).
    """
    g = float(np.clip(g, -1.0, 1.0))
    # (1) V = pi A B C (2/3 + g - g^3 / 3), from integrating the elliptic cross-section pi A B (1 - u^2) over u.
    return float(np.pi * semi_a * semi_b * semi_c * (2.0 / 3.0 + g - g**3 / 3.0) / 1000.0)


@dataclass(frozen=True)
class LVShape:
    """The LV at one instant: truncated prolate ellipsoid cavity with a myocardial wall, plus the left atrium.

    Args:
        a: cavity semi-axis along X (2CH plane), mm.
        b: cavity semi-axis along Y (4CH plane), mm.
        c: cavity long semi-axis, mm; the ellipsoid centre is at Z = c (apex at Z = 0).
        f: truncation: the base (mitral) plane is at Z = c (1 + f).
        t: wall thickness, mm (epicardial semi-axes a + t, b + t, c + t).
        la: left atrium semi-axes (X, Y, Z), mm.
        la_offset: distance from the base plane to the LA centre, in units of the LA long semi-axis.
    """

    a: float
    b: float
    c: float
    f: float
    t: float
    la: tuple[float, float, float] = (18.0, 19.0, 24.0)
    la_offset: float = 0.6

    @property
    def base_z(self) -> float:
        """Height of the base plane (the LV long-axis length, apex to mid-annulus)."""
        return self.c * (1.0 + self.f)

    @property
    def la_center_z(self) -> float:
        return self.base_z + self.la_offset * self.la[2]

    def cavity_volume_ml(self) -> float:
        """Analytic LV cavity volume (eq. 1)."""
        return truncated_ellipsoid_volume_ml(self.a, self.b, self.c, self.f)

    def epicardial_volume_ml(self) -> float:
        """Analytic volume inside the epicardium below the base plane (eq. 1 with the epicardial semi-axes)."""
        g = (self.base_z - self.c) / (self.c + self.t)
        return truncated_ellipsoid_volume_ml(self.a + self.t, self.b + self.t, self.c + self.t, g)

    def myocardial_volume_ml(self) -> float:
        return self.epicardial_volume_ml() - self.cavity_volume_ml()

    def half_width(self, z: np.ndarray | float, view: str) -> np.ndarray:
        """Half width (mm) of the cavity in the ``view`` plane at height ``z`` (0 outside the cavity)."""
        semi = self.a if view == "2CH" else self.b
        u = (np.asarray(z, dtype=np.float64) - self.c) / self.c
        inside = (np.asarray(z) >= 0) & (np.asarray(z) <= self.base_z)
        return np.where(inside, semi * np.sqrt(np.clip(1.0 - u**2, 0.0, None)), 0.0)

    def regions(self, X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> dict[str, np.ndarray]:
        """Boolean region maps of 3D points: ``cavity``, ``myo``, ``la`` (disjoint), and ``epi`` (cavity + myo)."""
        below = Z <= self.base_z
        q_cav = (X / self.a) ** 2 + (Y / self.b) ** 2 + ((Z - self.c) / self.c) ** 2
        q_epi = (X / (self.a + self.t)) ** 2 + (Y / (self.b + self.t)) ** 2 + ((Z - self.c) / (self.c + self.t)) ** 2
        la_a, la_b, la_c = self.la
        q_la = (X / la_a) ** 2 + (Y / la_b) ** 2 + ((Z - self.la_center_z) / la_c) ** 2
        cavity = below & (q_cav <= 1.0)
        epi = below & (q_epi <= 1.0)
        return {"cavity": cavity, "epi": epi, "myo": epi & ~cavity, "la": ~below & (q_la <= 1.0)}


def _solve_wall_thickness(shape: LVShape, myo_ml: float) -> float:
    """(3) Wall thickness giving the myocardial volume ``myo_ml`` for the cavity of ``shape`` (bisection)."""
    lo, hi = 0.2, 60.0
    for _ in range(40):  # bracket 60 mm / 2^40: far below a micrometre
        mid = 0.5 * (lo + hi)
        if replace(shape, t=mid).myocardial_volume_ml() < myo_ml:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def lv_shape_at(ed: LVShape, rho: float, lam: float, s: float, la_growth: float = 0.15) -> LVShape:
    """LV shape at contraction state ``s`` (0 = ED, 1 = ES).

    Args:
        ed: end-diastolic shape.
        rho: ES/ED ratio of the short semi-axes.
        lam: ES/ED ratio of the long semi-axis (base descent; the apex stays put).
        s: contraction state in [0, 1].
        la_growth: relative growth of the left atrium from ED to ES (it fills during systole).
    """
    s = float(np.clip(s, 0.0, 1.0))
    radial, longitudinal = 1.0 + s * (rho - 1.0), 1.0 + s * (lam - 1.0)
    grow = 1.0 + s * la_growth
    shape = replace(
        ed,
        a=ed.a * radial,
        b=ed.b * radial,
        c=ed.c * longitudinal,
        la=(ed.la[0] * grow, ed.la[1] * grow, ed.la[2] * grow),
    )
    # (2) with f fixed, V(s) = V_ED radial^2 longitudinal; (3) the wall thickens to keep the myocardial volume.
    return replace(shape, t=_solve_wall_thickness(shape, ed.myocardial_volume_ml()))


# ----------------------------------------------------------------------------------------------------------
# Per-patient parameters
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PatientParams:
    """Everything that defines one phantom patient (sampled by :func:`sample_params`).

    Args:
        index: 1-based patient index; ``patient_id`` is ``patient{index:04d}``.
        preset: preset name.
        seed: dataset seed.
        sex: ``M`` or ``F``.
        age: years.
        quality: image quality ``Good``/``Medium``/``Poor`` (drives noise, dropout and clutter).
        lv_ed: end-diastolic LV shape.
        rho: ES/ED short-axis ratio.
        lam: ES/ED long-axis ratio.
        depth_mm: scan depth.
        opening_deg: sector opening angle.
        tilt_deg: sector tilt.
        apex_depth_mm: probe to LV apex distance.
        heart_angle_deg: LV apex direction relative to the bisector.
        axis_angle_deg: LV long axis direction relative to the apex direction.
        n_frames: frames of the half sequence ED -> ES (ED = frame 1, ES = frame ``n_frames``).
        view_shift_deg: extra apex direction per view (the 4CH probe position shows the RV: LV right of centre).
        appearance: ultrasound appearance parameters (see :func:`_sample_appearance`).
        anatomy: sizes of the unlabelled structures (RV, RA, pericardium, chest wall).
        image_size: (rows, cols) of the stills.
        anisotropy: sy / sx.
        spacing: fixed (sx, sy) in mm, or ``None`` to fit the sector into ``image_size``.
    """

    index: int
    preset: str
    seed: int
    sex: str
    age: int
    quality: str
    lv_ed: LVShape
    rho: float
    lam: float
    depth_mm: float
    opening_deg: float
    tilt_deg: float
    apex_depth_mm: float
    heart_angle_deg: float
    axis_angle_deg: float
    n_frames: int
    view_shift_deg: dict[str, float] = field(default_factory=dict)
    appearance: dict[str, float] = field(default_factory=dict)
    anatomy: dict[str, float] = field(default_factory=dict)
    image_size: tuple[int, int] = (128, 96)
    anisotropy: float = 0.5
    spacing: tuple[float, float] | None = None

    @property
    def patient_id(self) -> str:
        return patient_id(self.index)

    @property
    def lv_es(self) -> LVShape:
        return lv_shape_at(self.lv_ed, self.rho, self.lam, 1.0)

    def truth(self) -> dict[str, float]:
        """Analytic EDV, ESV (ml), EF (%) and myocardial volume (ml)."""
        edv, esv = self.lv_ed.cavity_volume_ml(), self.lv_es.cavity_volume_ml()
        return {
            "edv_ml": edv,
            "esv_ml": esv,
            "ef_pct": 100.0 * (edv - esv) / edv,
            "myo_volume_ml": self.lv_ed.myocardial_volume_ml(),
            "lv_length_ed_mm": self.lv_ed.base_z,
            "lv_length_es_mm": self.lv_es.base_z,
        }

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lv_ed"] = asdict(self.lv_ed)
        d["lv_es"] = asdict(self.lv_es)
        return d


def patient_id(index: int) -> str:
    """CAMUS-style patient id, ``patient0001`` for index 1."""
    return f"patient{int(index):04d}"


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """Independent generator for (seed, keys...): the same keys give the same stream in any run order."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *[int(k) for k in keys]]))


def _draw(rng: np.random.Generator, spec: float | Sequence[float]) -> float:
    """A fixed value, or uniform in ``(low, high)``.

    One number is consumed from ``rng`` either way, so fixing one parameter leaves every other draw unchanged.
    """
    u = float(rng.random())
    if isinstance(spec, (int, float, np.floating, np.integer)):
        return float(spec)
    lo, hi = (float(v) for v in spec)
    return lo + u * (hi - lo)


def _sample_lv(rng: np.random.Generator, ef: float, lam_range: tuple[float, float]) -> tuple[LVShape, float, float]:
    """ED shape and (rho, lam) giving ejection fraction ``ef`` (fraction) exactly (eq. 2)."""
    dilation = 1.0 + 1.2 * max(0.0, 0.5 - ef)  # failing ventricles are dilated
    length = rng.uniform(78.0, 92.0) * (1.0 + 0.35 * (dilation - 1.0))
    f = rng.uniform(0.35, 0.6)
    a = rng.uniform(20.0, 24.5) * dilation
    b = a * rng.uniform(1.0, 1.12)
    c = length / (1.0 + f)
    t = rng.uniform(7.5, 11.0)
    base_half = a * np.sqrt(1.0 - f**2)
    la_a = float(max(rng.uniform(16.0, 21.0), 1.02 * base_half))
    la_c = rng.uniform(21.0, 27.0)
    # LA centre such that its cross-section at the base plane matches the annulus (0.95 of the base width).
    la_offset = float(np.sqrt(max(0.0, 1.0 - (0.95 * base_half / la_a) ** 2)))
    lv = LVShape(a=a, b=b, c=c, f=f, t=t, la=(la_a, la_a * rng.uniform(1.0, 1.1), la_c), la_offset=la_offset)
    lam = rng.uniform(*lam_range)
    rho = float(np.sqrt((1.0 - ef) / lam))  # (2) EF = 1 - rho^2 lam
    return lv, rho, float(lam)


def _sample_appearance(rng: np.random.Generator, quality: str) -> dict[str, float]:
    """Ultrasound appearance parameters; worse quality = more noise, dropout, clutter and gain errors."""
    level = QUALITIES.index(quality)
    return {
        "dynamic_range_db": rng.uniform(40.0, 47.0),
        "gain_db": rng.uniform(-2.0, 2.0) - 1.5 * level,
        "attenuation_db_mm": rng.uniform(0.25, 0.35),
        "tgc_mismatch": rng.uniform(-0.05, 0.05) * (1 + level),
        "noise_db": rng.uniform(-76.0, -70.0) + 6.0 * level,
        "clutter": (rng.uniform(0.004, 0.01) + 0.012 * level * rng.uniform(0.5, 1.0)),
        "n_dropouts": float(rng.integers(level, level + 2)),
        "dropout_strength": rng.uniform(0.5, 0.7) + 0.1 * level,
        "psf_axial_mm": rng.uniform(0.35, 0.5),
        "psf_lateral_deg": rng.uniform(0.55, 0.8),
        "blood": rng.uniform(0.006, 0.012),
        "myocardium": rng.uniform(0.28, 0.38),
        "tissue": rng.uniform(0.05, 0.1),
        "frame_correlation": rng.uniform(0.85, 0.93),
    }


def _sample_anatomy(rng: np.random.Generator, lv: LVShape) -> dict[str, float]:
    """Sizes of the unlabelled structures (4CH right heart, pericardium, chest wall)."""
    return {
        "rv_half_width": rng.uniform(12.0, 17.0),
        "rv_half_length": lv.base_z * rng.uniform(0.34, 0.42),
        "ra_half_width": rng.uniform(14.0, 18.0),
        "ra_half_length": rng.uniform(19.0, 25.0),
        "pericardium_mm": rng.uniform(2.0, 3.5),
        "chest_wall_mm": rng.uniform(8.0, 14.0),
        "rv_wall_mm": rng.uniform(3.0, 4.5),
    }


def sample_params(
    patient_index: int,
    preset: str = "camus-like",
    seed: int = 0,
    image_size: tuple[int, int] | None = None,
    **overrides: Any,
) -> PatientParams:
    """Draw the parameters of patient ``patient_index`` (1-based); independent of how many patients are made.

    Args:
        patient_index: 1-based index.
        preset: a key of :data:`PRESETS`.
        seed: dataset seed.
        image_size: (rows, cols) of the stills; the preset's default when ``None``.
        overrides: fix (scalar) or re-range (``(low, high)``) a sampled value: ``depth_mm``, ``opening_deg``,
            ``tilt_deg``, ``apex_depth_mm``, ``heart_angle_deg``, ``axis_angle_deg``, ``ef_percent``,
            ``n_frames``; or set ``quality`` (Good/Medium/Poor), ``anisotropy`` (sy/sx), ``spacing`` ((sx, sy) mm).
    """
    spec = PRESETS[preset]
    rng = _rng(seed, patient_index, 0)
    ranges = {k: overrides.get(k, getattr(spec, k)) for k in ("depth_mm", "opening_deg", "tilt_deg", "ef_percent")}
    drawn_quality = str(rng.choice(QUALITIES, p=np.asarray(spec.quality_weights)))
    quality = overrides.get("quality") or drawn_quality
    ef = _draw(rng, ranges["ef_percent"]) / 100.0
    lv, rho, lam = _sample_lv(rng, ef, (0.85, 0.94))
    n_frames_spec = overrides.get("n_frames", spec.n_frames)
    lo_n, hi_n = (n_frames_spec, n_frames_spec) if np.isscalar(n_frames_spec) else n_frames_spec
    n_frames = int(np.floor(_draw(rng, (float(lo_n), float(hi_n) + 1.0 - 1e-9))))
    params = PatientParams(
        index=int(patient_index),
        preset=preset,
        seed=int(seed),
        sex=str(rng.choice(["M", "F"])),
        age=int(rng.integers(20, 90)),
        quality=str(quality),
        lv_ed=lv,
        rho=rho,
        lam=lam,
        depth_mm=_draw(rng, ranges["depth_mm"]),
        opening_deg=_draw(rng, ranges["opening_deg"]),
        tilt_deg=_draw(rng, ranges["tilt_deg"]),
        apex_depth_mm=0.0,
        heart_angle_deg=0.0,
        axis_angle_deg=0.0,
        n_frames=n_frames,
        view_shift_deg={"2CH": 0.0, "4CH": _draw(rng, spec.rv_shift_deg)},
        appearance=_sample_appearance(rng, str(quality)),
        anatomy=_sample_anatomy(rng, lv),
        image_size=tuple(int(v) for v in (image_size or spec.image_size)),  # type: ignore[arg-type]
        anisotropy=float(overrides.get("anisotropy", spec.anisotropy)),
        spacing=_optional_pair(overrides.get("spacing")),
    )
    return _place_heart(params, spec, rng, overrides)


def _optional_pair(value: Sequence[float] | None) -> tuple[float, float] | None:
    return None if value is None else (float(value[0]), float(value[1]))


def _place_heart(
    params: PatientParams, spec: PresetSpec, rng: np.random.Generator, overrides: Mapping[str, Any]
) -> PatientParams:
    """Draw the heart position (and the depth, unless fixed) until the ED heart lies inside the sector.

    The sonographer picks a depth that shows the heart: depth is redrawn with the position unless overridden.
    """
    keys = ("apex_depth_mm", "heart_angle_deg", "axis_angle_deg", "depth_mm")
    ranges = {k: overrides.get(k, getattr(spec, k)) for k in keys}
    best, best_score = params, -1.0
    for _ in range(200):
        candidate = replace(params, **{k: _draw(rng, v) for k, v in ranges.items()})
        score = _placement_score(candidate, spec.require_myo_inside, spec.la_visible)
        if score >= 1.0:
            return candidate
        if score > best_score:
            best, best_score = candidate, score
    log.debug("%s: heart only partly inside the sector (score %.2f)", params.patient_id, best_score)
    return best


def _placement_score(params: PatientParams, myo_inside: bool, la_visible: float) -> float:
    """Fraction of ED outline points inside the sector: the cavity, optionally the epicardium from a fifth of the
    length on (the apical wall next to the probe may be cut, as in real apical views), and an LA point."""
    lv = params.lv_ed
    z = np.linspace(0.0, lv.base_z, 24)
    z_wall = z[z >= 0.2 * lv.base_z] if myo_inside else z[:0]
    epi = replace(lv, a=lv.a + lv.t, b=lv.b + lv.t, c=lv.c + lv.t)
    la_point = lv.la_center_z + la_visible * lv.la[2]
    inside = []
    for view in VIEWS:
        w, we = lv.half_width(z, view), epi.half_width(z_wall + lv.t, view)
        w_all = np.concatenate([w, -w, we, -we, [0.0]])
        z_all = np.concatenate([z, z, z_wall, z_wall, [la_point]])
        x, y = _lv_plane_to_mm(params, w_all, z_all, (0.0, 0.0), view)
        r, theta = np.hypot(x, y), np.degrees(np.arctan2(x, y))
        inside.append((r <= params.depth_mm - 3.0) & (np.abs(theta - params.tilt_deg) <= params.opening_deg / 2.0 - 1.0))
    return float(np.concatenate(inside).mean())


# ----------------------------------------------------------------------------------------------------------
# Image geometry
# ----------------------------------------------------------------------------------------------------------
def _heart_frame(params: PatientParams, origin: tuple[float, float], view: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LV apex position (mm), long-axis unit vector ``u`` and in-plane transverse unit vector ``v`` (image right)."""
    psi = np.radians(params.tilt_deg + params.heart_angle_deg + params.view_shift_deg.get(view, 0.0))
    beta = psi + np.radians(params.axis_angle_deg)
    apex = np.array(origin) + params.apex_depth_mm * np.array([np.sin(psi), np.cos(psi)])
    u = np.array([np.sin(beta), np.cos(beta)])
    v = np.array([u[1], -u[0]])
    return apex, u, v


def _lv_plane_to_mm(
    params: PatientParams, w: np.ndarray, z: np.ndarray, origin: tuple[float, float], view: str
) -> tuple[np.ndarray, np.ndarray]:
    """Image coordinates (mm) of in-plane LV coordinates (w transverse, z along the long axis)."""
    apex, u, v = _heart_frame(params, origin, view)
    return apex[0] + z * u[0] + w * v[0], apex[1] + z * u[1] + w * v[1]


def _mm_to_lv_plane(
    params: PatientParams, x: np.ndarray, y: np.ndarray, origin: tuple[float, float], view: str
) -> tuple[np.ndarray, np.ndarray]:
    """In-plane LV coordinates (w, z) of image points (mm)."""
    apex, u, v = _heart_frame(params, origin, view)
    dx, dy = x - apex[0], y - apex[1]
    return dx * v[0] + dy * v[1], dx * u[0] + dy * u[1]


def place_sector(
    params: PatientParams, image_size: tuple[int, int], anisotropy: float, spacing: tuple[float, float] | None
) -> Sector:
    """The sector of ``params`` placed in an image of ``image_size``: tip on the top row, centred horizontally.

    Without ``spacing``, the pixel spacing (sx, sy = anisotropy * sx) is the smallest that fits the sector.
    """
    rows, cols = image_size
    half = params.opening_deg / 2.0
    th_min, th_max = params.tilt_deg - half, params.tilt_deg + half
    depth = params.depth_mm
    x_lo, x_hi = min(0.0, depth * np.sin(np.radians(th_min))), max(0.0, depth * np.sin(np.radians(th_max)))
    y_hi = depth * (1.0 if th_min <= 0.0 <= th_max else np.cos(np.radians(min(abs(th_min), abs(th_max)))))
    if spacing is None:
        sx = 1.001 * max((x_hi - x_lo) / (cols - 1), y_hi / ((rows - 1) * anisotropy))
        spacing = (sx, sx * anisotropy)
    sx, sy = float(spacing[0]), float(spacing[1])
    apex = ((cols - 1) * sx / 2.0 - (x_lo + x_hi) / 2.0, 0.0)
    return Sector(
        apex=(float(apex[0]), 0.0),
        theta_min=float(th_min),
        theta_max=float(th_max),
        r_max=float(depth),
        r_min=0.0,
        spacing=(sx, sy),
    )


def _polar_grid(sector: Sector, psf_axial_mm: float, psf_lateral_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample radii (mm) and angles (deg) of the acquisition grid (beam lines x depth samples).

    Steps resolve the PSF (1.5 samples per sigma) or half an output pixel, whichever is coarser.
    """
    half_pixel = 0.5 * min(sector.spacing)
    step_r = max(psf_axial_mm / 1.5, half_pixel)
    step_t = max(psf_lateral_deg / 1.5, float(np.degrees(half_pixel / sector.r_max)))
    n_r = min(int(np.ceil(sector.r_max / step_r)) + 1, 2000)
    n_t = min(int(np.ceil(sector.opening_deg / step_t)) + 1, 1000)
    return np.linspace(0.0, sector.r_max, n_r), np.linspace(sector.theta_min, sector.theta_max, n_t)


# ----------------------------------------------------------------------------------------------------------
# Tissue maps: labels and echogenicity at image points
# ----------------------------------------------------------------------------------------------------------
def _label_map(shape: LVShape, view: str, w: np.ndarray, z: np.ndarray) -> np.ndarray:
    """CAMUS labels (1 cavity, 2 myocardium, 3 left atrium) of in-plane points, evaluated on the 3D shape."""
    phi = np.radians(_VIEW_AZIMUTH[view])
    reg = shape.regions(w * np.cos(phi), w * np.sin(phi), z)
    label = np.zeros(w.shape, dtype=np.uint8)
    label[reg["cavity"]] = 1
    label[reg["myo"]] = 2
    label[reg["la"]] = 3
    return label


def _ellipse_q(w: np.ndarray, z: np.ndarray, cw: float, cz: float, hw: float, hz: float) -> np.ndarray:
    """Normalised radius of points in an axis-aligned ellipse (<= 1 inside)."""
    return np.sqrt(((w - cw) / hw) ** 2 + ((z - cz) / hz) ** 2)


def _right_heart(shape: LVShape, anatomy: Mapping[str, float], w: np.ndarray, z: np.ndarray) -> dict[str, np.ndarray]:
    """4CH right heart in the image plane (unlabelled), on the septal side (w < 0) of the LV.

    The RV is a crescent hugging the septum: from its apex at ``z0`` to the base its width grows as
    ``width_max ((z - z0) / (z_b - z0))^0.6``; the RA is an ellipse beside the LA.
    """
    zb = shape.base_z
    # epicardial half width of the LV in the 4CH plane (the septum's RV side)
    epi = (shape.b + shape.t) * np.sqrt(np.clip(1.0 - ((z - shape.c) / (shape.c + shape.t)) ** 2, 0.0, None))
    z0 = zb - 2.0 * anatomy["rv_half_length"]
    frac = np.clip((z - z0) / (zb - z0), 0.0, 1.0)
    inner, width = -(epi + 0.3), 2.0 * anatomy["rv_half_width"] * frac**0.6
    depth_ok = (z >= z0) & (z <= zb + 1.0)
    rv = depth_ok & (w <= inner) & (w >= inner - width)
    wall = anatomy["rv_wall_mm"]
    rv_wall = (depth_ok | ((z >= z0 - wall) & (z < z0))) & (w <= inner) & (w >= inner - width - wall) & ~rv
    ra_hw, ra_hz = anatomy["ra_half_width"], anatomy["ra_half_length"]
    q_ra = _ellipse_q(w, z, -(shape.la[1] + 4.0 + ra_hw), zb + 2.0 + 0.85 * ra_hz, ra_hw, ra_hz)
    ra = (q_ra <= 1.0) & (z >= zb + 3.0)
    ra_wall = (q_ra <= 1.0 + 2.5 / ra_hw) & ~ra & (z >= zb + 1.0)
    rv_mid, rv_half = inner - 0.5 * width, 0.5 * width + 1e-6
    bow = 2.0 * (1.0 - ((w - rv_mid) / rv_half) ** 2)  # closed leaflets bowing into the RA
    tricuspid = (np.abs(z - zb - 1.5 - bow) <= 0.6) & (np.abs(w - rv_mid) <= rv_half)
    return {"rv": rv, "ra": ra, "rv_wall": rv_wall, "ra_wall": ra_wall, "tricuspid": tricuspid}


def _echogenicity(
    params: PatientParams, shape: LVShape, view: str, pts: Mapping[str, np.ndarray], textures: Mapping[str, np.ndarray]
) -> np.ndarray:
    """Scatterer amplitude of each point: bright myocardium and pericardium, dark blood, textured tissue.

    Args:
        params: patient parameters.
        shape: LV shape of this frame.
        view: ``2CH`` or ``4CH``.
        pts: in-plane LV coordinates ``w``, ``z``, depth ``r`` (mm) and beam direction ``bw``, ``bz`` of each point.
        textures: smooth modulations (``tissue``, ``myo``, ``blood``, ``clutter``) on the same points.
    """
    app, anat = params.appearance, params.anatomy
    w, z = pts["w"], pts["z"]
    phi = np.radians(_VIEW_AZIMUTH[view])
    X, Y = w * np.cos(phi), w * np.sin(phi)
    reg = shape.regions(X, Y, z)
    peri = replace(shape, t=shape.t + anat["pericardium_mm"]).regions(X, Y, z)["epi"] & ~reg["epi"]
    la_wall = replace(shape, la=tuple(v + 2.5 for v in shape.la)).regions(X, Y, z)["la"] & ~reg["la"]  # type: ignore[arg-type]
    myo, blood = app["myocardium"] * textures["myo"], app["blood"] * textures["blood"]
    echo = app["tissue"] * textures["tissue"]
    specular = _specular(shape, view, pts)
    echo = np.where(la_wall, 0.5 * myo, echo)
    echo = np.where(peri, 2.5 * app["myocardium"] * np.sqrt(textures["myo"]) * (0.3 + 0.7 * specular), echo)
    if view == "4CH":  # the RV lies directly on the septum: painted over the pericardium there
        echo = _right_heart_echo(echo, shape, anat, pts, ~reg["epi"], myo, blood)
    echo = np.where(reg["myo"], myo * (0.55 + 0.45 * specular), echo)
    echo = np.where(reg["cavity"] | reg["la"], blood, echo)
    echo = np.where(_mitral_leaflets(shape, view, w, z), 1.2 * myo, echo)
    echo = echo * _chest_wall(pts["r"], anat["chest_wall_mm"])
    return echo * _dropout(params, shape, view, w, z) + _apical_clutter(params, w, z, textures)


def _right_heart_echo(
    echo: np.ndarray,
    shape: LVShape,
    anat: Mapping[str, float],
    pts: Mapping[str, np.ndarray],
    outside_lv: np.ndarray,
    myo: np.ndarray,
    blood: np.ndarray,
) -> np.ndarray:
    """Paint the 4CH right ventricle and atrium (blood), their walls and the tricuspid valve outside the LV."""
    rh = _right_heart(shape, anat, pts["w"], pts["z"])
    echo = np.where((rh["rv_wall"] | rh["ra_wall"]) & outside_lv, 0.8 * myo, echo)
    echo = np.where((rh["rv"] | rh["ra"]) & outside_lv, blood, echo)
    return np.where(rh["tricuspid"] & outside_lv, myo, echo)


def _specular(shape: LVShape, view: str, pts: Mapping[str, np.ndarray]) -> np.ndarray:
    """|cos| of the angle between the beam and the epicardial normal: walls along the beam echo weakly."""
    semi = (shape.a if view == "2CH" else shape.b) + shape.t
    nw = pts["w"] / semi**2
    nz = (pts["z"] - shape.c) / (shape.c + shape.t) ** 2
    return np.abs(nw * pts["bw"] + nz * pts["bz"]) / (np.hypot(nw, nz) + 1e-12)


def _mitral_leaflets(shape: LVShape, view: str, w: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Closed mitral leaflets: a thin line from annulus to annulus bowing ~2.5 mm into the atrium."""
    half = float(shape.half_width(shape.base_z, view)) + 0.5 * shape.t
    u = np.clip(w / half, -1.0, 1.0)
    line = shape.base_z + 0.5 + 2.5 * (1.0 - u**2)
    return (np.abs(z - line) <= 0.6) & (np.abs(w) <= half)


def _chest_wall(r: np.ndarray, thickness: float) -> np.ndarray:
    """Bright layered near field (skin, fat, muscle) over the first ``thickness`` mm."""
    layers = 1.0 + 1.5 * (0.5 + 0.5 * np.cos(2.0 * np.pi * r / (thickness / 2.5)))
    weight = np.clip(1.0 - r / thickness, 0.0, 1.0)
    return 1.0 + weight * layers


def _dropout(params: PatientParams, shape: LVShape, view: str, w: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Signal dropout on walls parallel to the beam: Gaussian attenuation blobs on the lateral/septal walls."""
    app = params.appearance
    rng = _rng(params.seed, params.index, 10 + _VIEW_CODE[view])
    gain = np.ones(w.shape)
    for _ in range(int(app["n_dropouts"])):
        frac = rng.uniform(0.3, 0.85)
        side = 1.0 if rng.uniform() < 0.65 else -1.0  # lateral wall more often than septum
        zc = frac * shape.base_z
        wc = side * (float(shape.half_width(zc, view)) + shape.t / 2.0)
        sigma_w, sigma_z = rng.uniform(4.0, 7.0), rng.uniform(7.0, 14.0)
        blob = np.exp(-0.5 * (((w - wc) / sigma_w) ** 2 + ((z - zc) / sigma_z) ** 2))
        gain *= 1.0 - min(0.95, app["dropout_strength"]) * blob
    return gain


def _apical_clutter(params: PatientParams, w: np.ndarray, z: np.ndarray, textures: Mapping[str, np.ndarray]) -> np.ndarray:
    """Haze of near-field reverberation filling the apical blood pool."""
    sigma = 0.22 * params.lv_ed.base_z
    weight = np.exp(-0.5 * ((w / (0.8 * sigma)) ** 2 + ((z - 0.1 * sigma) / sigma) ** 2))
    return params.appearance["clutter"] * weight * textures["clutter"]


# ----------------------------------------------------------------------------------------------------------
# Ultrasound formation (polar domain) and scan conversion
# ----------------------------------------------------------------------------------------------------------
def _upsample_axis(g: np.ndarray, n_fine: int, step: int, axis: int) -> np.ndarray:
    """Linear interpolation along ``axis`` from samples spaced ``step`` onto ``n_fine`` unit-spaced samples."""
    pos = np.arange(n_fine) / step
    lo = np.minimum(np.floor(pos).astype(int), g.shape[axis] - 2)
    frac = (pos - lo).reshape([-1 if a == axis else 1 for a in range(g.ndim)])
    return np.take(g, lo, axis=axis) * (1.0 - frac) + np.take(g, lo + 1, axis=axis) * frac


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: tuple[float, float], contrast: float) -> np.ndarray:
    """Positive smooth random modulation with mean ~1: log-normal of a Gaussian-filtered white field.

    The field is drawn on a grid coarse enough for ``sigma`` (in samples of ``shape``) to span 3 coarse samples,
    then linearly interpolated axis by axis, so that long correlation lengths stay cheap.
    """
    step = [max(1, int(s_ // 3)) for s_ in sigma]
    coarse = tuple(int(np.ceil(n / st)) + 2 for n, st in zip(shape, step))
    g = ndimage.gaussian_filter(rng.standard_normal(coarse), [s_ / st for s_, st in zip(sigma, step)], mode="reflect")
    g /= g.std() + 1e-12
    g = _upsample_axis(_upsample_axis(g, shape[0], step[0], 0), shape[1], step[1], 1)
    return np.exp(contrast * g - 0.5 * contrast**2)


def _kernel_energy(sigma: float) -> float:
    """Sum of squared weights of scipy's discrete Gaussian kernel (to keep speckle power independent of the PSF)."""
    if sigma <= 0:
        return 1.0
    x = np.arange(-int(4.0 * sigma + 0.5), int(4.0 * sigma + 0.5) + 1)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k /= k.sum()
    return float((k**2).sum())


class _ViewRenderer:
    """Renders one view of one patient frame by frame; holds the acquisition grid, textures and speckle state."""

    def __init__(
        self,
        params: PatientParams,
        view: str,
        image_size: tuple[int, int],
        anisotropy: float,
        spacing: tuple[float, float] | None,
        stream: int = 0,
    ):
        self.params, self.view, self.image_size = params, view, tuple(image_size)
        self.sector = place_sector(params, self.image_size, anisotropy, spacing)
        self.stream = 100 * (stream + 1) + _VIEW_CODE[view]
        self.rho_t = params.appearance["frame_correlation"]
        self.inside = self.sector.mask(self.image_size)
        x, y = pixel_grid_mm(self.image_size, self.sector.spacing)
        self.pix_w, self.pix_z = _mm_to_lv_plane(params, x, y, self.sector.apex, view)

    @functools.cached_property
    def acquisition(self) -> dict[str, Any]:
        """Polar acquisition grid (built on first use: label-only rendering never needs it).

        Holds the sample radii/angles, the PSF sigmas in samples and their normalisation, every sample's LV-plane
        coordinates and beam direction (``points``), the textures, and the scan-conversion coordinates.
        """
        app = self.params.appearance
        r, theta = _polar_grid(self.sector, app["psf_axial_mm"], app["psf_lateral_deg"])
        dr, dth = float(r[1] - r[0]), float(theta[1] - theta[0])
        sigma = (max(app["psf_axial_mm"] / dr, 0.6), max(app["psf_lateral_deg"] / dth, 0.6))
        rr, tt = np.meshgrid(r, np.radians(theta), indexing="ij")
        ax, ay = self.sector.apex
        w, z = _mm_to_lv_plane(self.params, ax + rr * np.sin(tt), ay + rr * np.cos(tt), (ax, ay), self.view)
        _, u, v = _heart_frame(self.params, (ax, ay), self.view)
        bx, by = np.sin(tt), np.cos(tt)
        pix_r, pix_th = self.sector.polar_coords(self.image_size)
        return {
            "theta": theta,
            "sigma": sigma,
            "norm": 1.0 / np.sqrt(_kernel_energy(sigma[0]) * _kernel_energy(sigma[1])),
            "points": {"w": w, "z": z, "r": rr, "bw": bx * v[0] + by * v[1], "bz": bx * u[0] + by * u[1]},
            "textures": self._textures(_rng(self.params.seed, self.params.index, self.stream, 9), rr.shape, dr, dth),
            "pix_coords": np.stack([pix_r[self.inside] / dr, (pix_th[self.inside] - self.sector.theta_min) / dth]),
        }

    @staticmethod
    def _textures(rng: np.random.Generator, shape: tuple[int, int], dr: float, dth: float) -> dict[str, np.ndarray]:
        return {
            "tissue": _smooth_field(rng, shape, (7.0 / dr, 4.0 / dth), 0.75),
            "myo": _smooth_field(rng, shape, (2.5 / dr, 2.0 / dth), 0.45),
            "blood": _smooth_field(rng, shape, (4.0 / dr, 2.0 / dth), 0.4),
            "clutter": _smooth_field(rng, shape, (3.0 / dr, 4.0 / dth), 0.8),
        }

    def noise(self, *keys: int) -> np.ndarray:
        """Circular complex white Gaussian noise of unit power, from its own stream (patient, view, keys)."""
        rng = _rng(self.params.seed, self.params.index, self.stream, *keys)
        parts = rng.standard_normal((2, *self.acquisition["points"]["r"].shape), dtype=np.float32)
        return (parts[0] + 1j * parts[1]) * np.float32(np.sqrt(0.5))

    def half_sequence_speckle(self, n_frames: int, wanted: Sequence[int]) -> dict[int, np.ndarray]:
        """(7) AR(1) speckle N_k = q N_(k-1) + sqrt(1 - q^2) W_k over frames 0..m (m = n_frames - 1).

        ED (0) and ES (m) are drawn first, the frames between as the AR(1) bridge conditioned on both ends, so that
        ED and ES are the same whether or not the frames between are rendered. With d = m - k and prev = N_(k-1):
        N_k | prev, N_m ~ N(q prev + c (N_m - q^(d+1) prev), (1 - q^2)(1 - c q^d)), c = q^d (1 - q^2) / (1 - q^(2(d+1))).
        """
        q, m = self.rho_t, n_frames - 1
        first = self.noise(0)
        last = q**m * first + np.sqrt(1.0 - q ** (2 * m)) * self.noise(1)
        out = {0: first, m: last}
        if any(0 < k < m for k in wanted):
            prev = first
            for k in range(1, m):
                d = m - k
                c = q**d * (1.0 - q**2) / (1.0 - q ** (2 * (d + 1)))
                var = (1.0 - q**2) * (1.0 - c * q**d)
                prev = q * prev + c * (last - q ** (d + 1) * prev) + np.sqrt(max(var, 0.0)) * self.noise(2, k)
                out[k] = prev
        return {k: out[k] for k in wanted}

    def cycle_speckle(self, n_total: int) -> Iterator[np.ndarray]:
        """(7) Plain AR(1) speckle for a cine loop of ``n_total`` frames."""
        q = self.rho_t
        current = self.noise(0)
        for k in range(n_total):
            if k:
                current = q * current + np.sqrt(1.0 - q**2) * self.noise(2, k)
            yield current

    def label(self, shape: LVShape) -> np.ndarray:
        label = _label_map(shape, self.view, self.pix_w, self.pix_z)
        label[~self.inside] = 0
        return label

    def image(self, shape: LVShape, speckle: np.ndarray, frame: int) -> np.ndarray:
        """8-bit image of ``shape`` with the complex scatterer noise ``speckle``; ``frame`` keys the receiver noise."""
        app, acq = self.params.appearance, self.acquisition
        r = acq["points"]["r"]
        echo = _echogenicity(self.params, shape, self.view, acq["points"], acq["textures"])
        # (4) complex scatterers convolved with the separable Gaussian PSF (axial sigma[0], lateral sigma[1]).
        field_ = echo * speckle
        blurred = ndimage.gaussian_filter(field_.real, acq["sigma"], mode="nearest")
        blurred = blurred + 1j * ndimage.gaussian_filter(field_.imag, acq["sigma"], mode="nearest")
        # (5) round-trip attenuation, additive receiver noise, then time-gain compensation with a small mismatch.
        alpha = app["attenuation_db_mm"] * np.log(10.0) / 20.0
        alpha_tgc = alpha * (1.0 + app["tgc_mismatch"])
        sigma_n = app["myocardium"] * 10.0 ** (app["noise_db"] / 20.0)
        received = acq["norm"] * blurred * np.exp(-alpha * r) + sigma_n * self.noise(3, frame)
        envelope = np.abs(received) * np.exp(alpha_tgc * r) * self._lateral_gain(acq["theta"])
        # (6) log compression to 8 bit relative to the myocardial level, then scan conversion (bilinear).
        ref = app["myocardium"] * 10.0 ** ((app["gain_db"] + 9.0) / 20.0)
        compressed = np.clip(1.0 + 20.0 * np.log10(envelope / ref + 1e-12) / app["dynamic_range_db"], 0.0, 1.0) * 255.0
        out = np.zeros(self.image_size, dtype=np.uint8)
        values = ndimage.map_coordinates(compressed, acq["pix_coords"], order=1, mode="nearest")
        out[self.inside] = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return out

    def _lateral_gain(self, theta: np.ndarray) -> np.ndarray:
        """Weaker beams at the sector edges."""
        rel = (theta - self.sector.tilt_deg) / (self.sector.opening_deg / 2.0)
        return (1.0 - 0.35 * np.abs(rel) ** 4)[None, :]


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
        preset: ``camus-like`` or ``lv-focused``.
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
    rng = _rng(seed, patient_index, 7)
    n_cycle = int(cycle_frames) if cycle_frames else int(round(fps * 60.0 / rng.uniform(55.0, 85.0)))
    n_systole = max(1, int(round(n_cycle * rng.uniform(0.33, 0.4))))
    ed_frame = int(rng.integers(2, 6))
    if view != "4CH":
        ed_frame = int(_rng(seed, patient_index, 7, _VIEW_CODE[view]).integers(2, 6))
    n_total = int(n_beats) * n_cycle + ed_frame + 2
    states = _cycle_states(n_cycle, n_systole, ed_frame, n_total)
    renderer = _ViewRenderer(params, view, tuple(image_size), anisotropy, params.spacing, stream=1)
    frames, labels = [], []
    speckles = renderer.cycle_speckle(n_total) if render_images else iter(())
    for k, s in enumerate(states):
        shape = lv_shape_at(params.lv_ed, params.rho, params.lam, float(s))
        labels.append(renderer.label(shape))
        frames.append(renderer.image(shape, next(speckles), k) if render_images else np.zeros(tuple(image_size), np.uint8))
    es_frame = ed_frame + n_systole
    tracings = {}
    for f in (ed_frame, es_frame):
        shape = lv_shape_at(params.lv_ed, params.rho, params.lam, float(states[f]))
        tracings[f] = _tracing(params, renderer.sector, shape, n_chords, view)
    spacing = (float(renderer.sector.spacing[0]), float(renderer.sector.spacing[1]))
    return PhantomCycle(
        params, np.stack(frames), np.stack(labels), ed_frame, es_frame, float(fps), spacing, renderer.sector, tracings,
        view=view, states=states, cycle_frames=n_cycle, systole_frames=n_systole,
    )


def _tracing(params: PatientParams, sector: Sector, shape: LVShape, n_chords: int, view: str = "4CH") -> np.ndarray:
    """EchoNet-style tracing in pixels: row 0 = long axis (apex -> mid-base), then chords from apex to base.

    The chords are exact: at height z the view's cavity spans w = -half_width(z) .. +half_width(z) (eq. 1's ellipse).
    """
    z = shape.base_z * np.arange(1, n_chords + 1) / n_chords
    half = shape.half_width(z, view)
    rows = [(np.array([0.0, 0.0]), np.array([0.0, shape.base_z]))]
    rows += [(np.array([-h, h]), np.array([zz, zz])) for h, zz in zip(half, z)]
    sx, sy = sector.spacing
    out = np.zeros((len(rows), 4))
    for i, (w, zz) in enumerate(rows):
        x, y = _lv_plane_to_mm(params, w, zz, sector.apex, view)
        out[i] = [x[0] / sx, y[0] / sy, x[1] / sx, y[1] / sy]
    return out


# ----------------------------------------------------------------------------------------------------------
# Simpson reference and splits
# ----------------------------------------------------------------------------------------------------------
def simpson_reference(patient: PhantomPatient, n_discs: int = 20) -> dict[str, float]:
    """Simpson biplane EDV, ESV (ml) and EF (%) from the TRUE 2CH and 4CH LV cavity masks of ``patient``."""
    from echogains.evaluation.clinical import simpson_biplane_volume

    v2, v4 = patient.views["2CH"], patient.views["4CH"]
    vol = {}
    for phase in ("ED", "ES"):
        l2, l4 = v2.label(phase), v4.label(phase)
        vol[phase] = float(
            simpson_biplane_volume(
                l2 == 1, v2.spacing, l4 == 1, v4.spacing, n_discs=n_discs,
                myo_2ch=l2 == 2, myo_4ch=l4 == 2, la_2ch=l2 == 3, la_4ch=l4 == 3,
            )
        )
    return {"edv_ml": vol["ED"], "esv_ml": vol["ES"], "ef_pct": 100.0 * (vol["ED"] - vol["ES"]) / vol["ED"]}


def assign_splits(n_patients: int, seed: int = 0) -> dict[int, str]:
    """CAMUS-like patient split (400/50/50 of 500 -> 80/10/10 %): ``{index: "train"|"val"|"test"}``.

    At least one training patient; one validation patient from 2 patients on, one test patient from 3 on.
    """
    n_val = 0 if n_patients < 2 else max(1, int(round(0.1 * n_patients)))
    n_test = 0 if n_patients < 3 else max(1, int(round(0.1 * n_patients)))
    order = _rng(seed, 0, 99).permutation(np.arange(1, n_patients + 1))
    out = {int(i): "train" for i in order}
    for i in order[:n_test]:
        out[int(i)] = "test"
    for i in order[n_test : n_test + n_val]:
        out[int(i)] = "val"
    return dict(sorted(out.items()))


def echonet_file_name(seed: int, index: int) -> str:
    """EchoNet-style video name (``0X`` + 16 hex digits), deterministic in (seed, index)."""
    return "0X" + hashlib.sha1(f"echogains-phantom-{seed}-{index}".encode()).hexdigest()[:16].upper()


# ----------------------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------------------
def make_phantom(
    out_dir: str | os.PathLike,
    n_patients: int = 10,
    preset: str = "camus-like",
    layout: str = "camus-nifti",
    seed: int = 0,
    sequence: bool = False,
    labels: str = "lv,myo,la",
    image_size: Sequence[int] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> Path:
    """Write a synthetic echo dataset (``echogains make-phantom``).

    Args:
        out_dir: output folder (must be empty or absent unless ``overwrite``); for ``nnunet`` the dataset folder
            (nnU-Net expects ``DatasetXXX_Name``).
        n_patients: number of patients (each has a 2CH and a 4CH view, ED and ES).
        preset: ``camus-like`` (varied depth, angle, position) or ``lv-focused`` (HUNT4-like).
        layout: ``camus-nifti`` (CAMUS NIfTI release), ``camus-mhd`` (original CAMUS release), ``echonet``
            (EchoNet-Dynamic: AVI + FileList.csv + VolumeTracings.csv), ``nnunet`` (nnU-Net raw dataset) or
            ``dicom`` (multi-frame ultrasound DICOM cine loops of both views, calibrated).
        seed: the same seed and options give the same bytes.
        sequence: also write the half sequences ED -> ES (CAMUS layouts).
        labels: label subset for ``nnunet``, e.g. ``lv,myo,la`` or ``lv,myo``.
        image_size: (rows, cols); the preset's default (EchoNet: 112 x 112) when ``None``.
        overwrite: allow a non-empty ``out_dir``; files of this layout are replaced and stale patients removed.
        progress: show a progress bar.
        overrides: per-patient parameters, fixed or as ``(low, high)``: ``depth_mm``, ``opening_deg``,
            ``tilt_deg``, ``apex_depth_mm``, ``heart_angle_deg``, ``axis_angle_deg``, ``ef_percent``, ``n_frames``,
            ``quality``, ``anisotropy``, ``spacing``, ``cycle_frames``, ``fps`` and ``n_beats`` (EchoNet, DICOM).

    Returns:
        The output folder.

    Raises:
        EchoDataError: any invalid argument or a non-empty ``out_dir`` without ``overwrite``, before anything is written.
    """
    from echogains.data.phantom_layouts import validate_arguments, write_layout

    config = validate_arguments(
        out_dir=out_dir, n_patients=n_patients, preset=preset, layout=layout, seed=seed, sequence=sequence,
        labels=labels, image_size=image_size, overwrite=overwrite, progress=progress, overrides=overrides,
    )
    return write_layout(config)
