"""Phantom anatomy: the 3D left ventricle, the presets and the per-patient parameter sampling (no I/O).

Lengths in mm, volumes in ml. The LV frame has the endocardial apex at the origin and the long axis along +Z; X is
the 2CH in-plane short axis, Y the 4CH one. At contraction state ``s`` (0 = ED, 1 = ES) the cavity is a prolate
ellipsoid (a, b, c) with centre Z = c, truncated at the base plane Z_b = c (1 + f); the epicardium has the
semi-axes (a + t, b + t, c + t); the left atrium is an ellipsoid above the base plane.

Equations (numbered in the code):
  (1) volume of an ellipsoid (A, B, C) from its apex up to the plane at normalised height g (centre = 0):
      V = pi A B C (2/3 + g - g^3/3).
  (2) ED -> ES: a, b scale by rho and c by lam with f fixed, so ESV/EDV = rho^2 lam and EF = 1 - rho^2 lam.
  (3) wall thickness t(s) keeps the myocardial volume constant (incompressible myocardium).

Also here: the placement of the heart in the image plane (LV-plane <-> image mm coordinates), which the
sampling uses to keep the heart inside the sector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from echogains.data.phantom.difficulty import DifficultySpec, sample_difficulty
from echogains.data.phantom.streams import STREAM_PARAMS, generator
from echogains.utils import get_logger

__all__ = [
    "PRESETS",
    "VIEWS",
    "QUALITIES",
    "PresetSpec",
    "LVShape",
    "PatientParams",
    "truncated_ellipsoid_volume_ml",
    "lv_shape_at",
    "sample_params",
    "patient_id",
]

log = get_logger(__name__)

VIEWS: tuple[str, str] = ("2CH", "4CH")
QUALITIES: tuple[str, ...] = ("Good", "Medium", "Poor")
#: azimuth of each view's image plane about the LV long axis (degrees from the X axis).
_VIEW_AZIMUTH: dict[str, float] = {"2CH": 0.0, "4CH": 90.0}
#: view code: names the view in stream keys and dropout streams (see :mod:`.streams`).
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
        lv_length_mm: LV long-axis length at ED before dilation (apex to mid-annulus).
        truncation: base-plane height ``f`` (the base at Z = c (1 + f)).
        short_axis_mm: 2CH cavity semi-axis ``a`` at ED before dilation.
        eccentricity: ``b / a``.
        wall_mm: ED wall thickness.
        la_short_mm: LA short semi-axis (at least 1.02 of the annulus half width).
        la_long_mm: LA long semi-axis.
        difficulty: the causes of difficulty (see :mod:`.difficulty`); ``None``: none (camus-like, lv-focused).
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
    lv_length_mm: tuple[float, float] = (78.0, 92.0)
    truncation: tuple[float, float] = (0.35, 0.6)
    short_axis_mm: tuple[float, float] = (20.0, 24.5)
    eccentricity: tuple[float, float] = (1.0, 1.12)
    wall_mm: tuple[float, float] = (7.5, 11.0)
    la_short_mm: tuple[float, float] = (16.0, 21.0)
    la_long_mm: tuple[float, float] = (21.0, 27.0)
    difficulty: DifficultySpec | None = None


#: the calibrated strength of the ``hard`` preset's causes of difficulty (:meth:`DifficultySpec.scaled`).
HARD_SCALE = 0.65

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
    # CAMUS-calibrated difficulty (issue 18): the camus-like geometry, wider anatomy, CAMUS's quality grades, and the
    # realistic causes of difficulty of :mod:`.difficulty` (haze, reverberation, angle-dependent dropout, off-axis
    # planes, gain/TGC, low blood-tissue contrast, trabeculae), scaled by 0.65: nnU-Net quick (the Echo-DND quick
    # experiment's arm) scored LV Dice 0.905 (Ts) / 0.862 (extra test phantom) at scale 1 and 0.943 / 0.929 at 0.6
    # (experiments/results/phantom_calibration/); 0.65 aims both into 0.92-0.94.
    "hard": PresetSpec(
        depth_mm=(105.0, 185.0),
        opening_deg=(58.0, 88.0),
        tilt_deg=(-7.0, 7.0),
        apex_depth_mm=(14.0, 38.0),
        heart_angle_deg=(-12.0, 12.0),
        axis_angle_deg=(-15.0, 15.0),
        ef_percent=(20.0, 75.0),
        image_size=(128, 96),
        anisotropy=0.5,
        quality_weights=(0.35, 0.45, 0.20),
        la_visible=0.3,
        lv_length_mm=(68.0, 100.0),
        truncation=(0.3, 0.65),
        short_axis_mm=(17.0, 27.0),
        eccentricity=(0.95, 1.2),
        wall_mm=(6.0, 14.0),
        la_short_mm=(13.0, 25.0),
        la_long_mm=(17.0, 32.0),
        difficulty=DifficultySpec().scaled(HARD_SCALE),
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
        difficulty: the causes of difficulty (:func:`.difficulty.sample_difficulty`); empty for presets without.
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
    difficulty: dict[str, Any] = field(default_factory=dict)

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
        if not self.difficulty:  # presets without difficulty: the record of before the hard preset, byte for byte
            d.pop("difficulty")
        return d


def patient_id(index: int) -> str:
    """CAMUS-style patient id, ``patient0001`` for index 1."""
    return f"patient{int(index):04d}"


def _draw(rng: np.random.Generator, spec: float | Sequence[float]) -> float:
    """A fixed value, or uniform in ``(low, high)``.

    One number is consumed from ``rng`` either way, so fixing one parameter leaves every other draw unchanged.
    """
    u = float(rng.random())
    if isinstance(spec, (int, float, np.floating, np.integer)):
        return float(spec)
    lo, hi = (float(v) for v in spec)
    return lo + u * (hi - lo)


def _sample_lv(
    rng: np.random.Generator, ef: float, lam_range: tuple[float, float], spec: PresetSpec
) -> tuple[LVShape, float, float]:
    """ED shape and (rho, lam) giving ejection fraction ``ef`` (fraction) exactly (eq. 2), in the preset's ranges."""
    dilation = 1.0 + 1.2 * max(0.0, 0.5 - ef)  # failing ventricles are dilated
    length = rng.uniform(*spec.lv_length_mm) * (1.0 + 0.35 * (dilation - 1.0))
    f = rng.uniform(*spec.truncation)
    a = rng.uniform(*spec.short_axis_mm) * dilation
    b = a * rng.uniform(*spec.eccentricity)
    c = length / (1.0 + f)
    t = rng.uniform(*spec.wall_mm)
    base_half = a * np.sqrt(1.0 - f**2)
    la_a = float(max(rng.uniform(*spec.la_short_mm), 1.02 * base_half))
    la_c = rng.uniform(*spec.la_long_mm)
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
    rng = generator(seed, patient_index, STREAM_PARAMS)
    ranges = {k: overrides.get(k, getattr(spec, k)) for k in ("depth_mm", "opening_deg", "tilt_deg", "ef_percent")}
    drawn_quality = str(rng.choice(QUALITIES, p=np.asarray(spec.quality_weights)))
    quality = overrides.get("quality") or drawn_quality
    ef = _draw(rng, ranges["ef_percent"]) / 100.0
    lv, rho, lam = _sample_lv(rng, ef, (0.85, 0.94), spec)
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
    if spec.difficulty is not None:  # its own stream: the draws above are those of a preset without difficulty
        difficulty, appearance = sample_difficulty(spec.difficulty, seed, patient_index, QUALITIES.index(quality))
        lv_myo = params.appearance["myocardium"]
        appearance["blood"] = lv_myo * difficulty["blood_ratio"]
        params = replace(params, difficulty=difficulty, appearance={**params.appearance, **appearance})
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
        inside.append(
            (r <= params.depth_mm - 3.0) & (np.abs(theta - params.tilt_deg) <= params.opening_deg / 2.0 - 1.0)
        )
    return float(np.concatenate(inside).mean())


# ----------------------------------------------------------------------------------------------------------
# Image geometry
# ----------------------------------------------------------------------------------------------------------
def _heart_frame(
    params: PatientParams, origin: tuple[float, float], view: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
