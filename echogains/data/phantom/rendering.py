"""Phantom rendering: sector placement, tissue maps (labels, echogenicity) and ultrasound formation (no I/O).

Equations (numbered in the code; (1)-(3) are in :mod:`.anatomy`):
  (4) speckle: complex scatterers E(r, th) N(r, th) convolved with a Gaussian PSF in polar coordinates (beam
      direction r, lateral th); the envelope |.| is Rayleigh distributed in homogeneous tissue.
  (5) depth attenuation exp(-alpha r) of the echo, receiver noise, then time-gain compensation exp(+alpha_tgc r).
  (6) log compression to 8 bit: I = 255 clip(1 + 20 log10(A / A_ref) / DR, 0, 1), then scan conversion.
  (7) speckle decorrelates between frames: N_k = q N_(k-1) + sqrt(1 - q^2) W_k.

The LV and the left atrium are evaluated on the 3D shape point by point; the other 4CH chambers (RV, RA), the
valves, pericardium and chest wall are drawn in the image plane, unlabelled.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from scipy import ndimage

from echogains.data.phantom.anatomy import (
    _VIEW_AZIMUTH,
    _VIEW_CODE,
    LVShape,
    PatientParams,
    _heart_frame,
    _mm_to_lv_plane,
)
from echogains.data.phantom.difficulty import plane_points, reverberation, tgc_profile, trabeculae
from echogains.data.phantom.streams import (
    NOISE_FIRST,
    NOISE_LAST,
    NOISE_RECEIVER,
    NOISE_STEP,
    RENDER_STILLS,
    STREAM_DROPOUT,
    STREAM_TEXTURES,
    generator,
    render_stream,
)
from echogains.geometry import Sector, pixel_grid_mm

__all__ = ["place_sector"]


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
def _lv_points(
    difficulty: Mapping[str, Any], view: str, w: np.ndarray, z: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3D LV-frame points of in-plane points: the plane through the long axis, or the off-axis plane of a hard
    preset (:func:`.difficulty.plane_points`)."""
    if difficulty:
        return plane_points(difficulty, view, _VIEW_AZIMUTH[view], w, z)
    phi = np.radians(_VIEW_AZIMUTH[view])
    return w * np.cos(phi), w * np.sin(phi), z


def _label_map(
    shape: LVShape, view: str, w: np.ndarray, z: np.ndarray, difficulty: Mapping[str, Any] | None = None
) -> np.ndarray:
    """CAMUS labels (1 cavity, 2 myocardium, 3 left atrium) of in-plane points, evaluated on the 3D shape."""
    reg = shape.regions(*_lv_points(difficulty or {}, view, w, z))
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
    app, anat, hard = params.appearance, params.anatomy, params.difficulty
    w, z = pts["w"], pts["z"]
    X, Y, Z = _lv_points(hard, view, w, z)
    reg = shape.regions(X, Y, Z)
    peri = replace(shape, t=shape.t + anat["pericardium_mm"]).regions(X, Y, Z)["epi"] & ~reg["epi"]
    la_wall = replace(shape, la=tuple(v + 2.5 for v in shape.la)).regions(X, Y, Z)["la"] & ~reg["la"]  # type: ignore[arg-type]
    myo, blood = app["myocardium"] * textures["myo"], app["blood"] * textures["blood"]
    echo = app["tissue"] * textures["tissue"]
    specular = _specular(shape, view, pts)
    echo = np.where(la_wall, 0.5 * myo, echo)
    echo = np.where(peri, 2.5 * app["myocardium"] * np.sqrt(textures["myo"]) * (0.3 + 0.7 * specular), echo)
    if view == "4CH":  # the RV lies directly on the septum: painted over the pericardium there
        echo = _right_heart_echo(echo, shape, anat, pts, ~reg["epi"], myo, blood)
    if hard:  # walls along the beam drop out: floor + (1 - floor) |cos|^power
        floor = hard["specular_floor"]
        echo = np.where(reg["myo"], myo * (floor + (1.0 - floor) * specular ** hard["specular_power"]), echo)
    else:
        echo = np.where(reg["myo"], myo * (0.55 + 0.45 * specular), echo)
    echo = np.where(reg["cavity"] | reg["la"], blood, echo)
    if hard:  # trabeculae and papillary muscles in the cavity band by the endocardium (labelled cavity)
        q_cav = np.sqrt((X / shape.a) ** 2 + (Y / shape.b) ** 2 + ((Z - shape.c) / shape.c) ** 2)
        weight = trabeculae(q_cav, Z, shape.base_z, textures["trabeculae"]) * reg["cavity"]
        echo = echo + hard["trabeculation"] * myo * weight
    echo = np.where(_mitral_leaflets(shape, view, w, z), 1.2 * myo, echo)
    echo = echo * _chest_wall(pts["r"], anat["chest_wall_mm"])
    if hard:  # copies of the near field (chest wall) at multiples of the reverberation spacing
        echo = echo + reverberation(echo, pts["r"], anat["chest_wall_mm"], hard)
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
    rng = generator(params.seed, params.index, STREAM_DROPOUT + _VIEW_CODE[view])
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


def _apical_clutter(
    params: PatientParams, w: np.ndarray, z: np.ndarray, textures: Mapping[str, np.ndarray]
) -> np.ndarray:
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


def _smooth_field(
    rng: np.random.Generator, shape: tuple[int, int], sigma: tuple[float, float], contrast: float
) -> np.ndarray:
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
        stream: int = RENDER_STILLS,
    ):
        self.params, self.view, self.image_size = params, view, tuple(image_size)
        self.sector = place_sector(params, self.image_size, anisotropy, spacing)
        self.stream = render_stream(stream, _VIEW_CODE[view])
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
            "textures": self._textures(
                generator(self.params.seed, self.params.index, self.stream, STREAM_TEXTURES),
                rr.shape,
                dr,
                dth,
                bool(self.params.difficulty),
            ),
            "pix_coords": np.stack([pix_r[self.inside] / dr, (pix_th[self.inside] - self.sector.theta_min) / dth]),
        }

    @staticmethod
    def _textures(
        rng: np.random.Generator, shape: tuple[int, int], dr: float, dth: float, hard: bool = False
    ) -> dict[str, np.ndarray]:
        out = {
            "tissue": _smooth_field(rng, shape, (7.0 / dr, 4.0 / dth), 0.75),
            "myo": _smooth_field(rng, shape, (2.5 / dr, 2.0 / dth), 0.45),
            "blood": _smooth_field(rng, shape, (4.0 / dr, 2.0 / dth), 0.4),
            "clutter": _smooth_field(rng, shape, (3.0 / dr, 4.0 / dth), 0.8),
        }
        if hard:  # drawn after the others: the four above are those of a preset without difficulty
            out["trabeculae"] = _smooth_field(rng, shape, (1.5 / dr, 1.5 / dth), 0.9)
        return out

    def noise(self, *keys: int) -> np.ndarray:
        """Circular complex white Gaussian noise of unit power, from its own stream (patient, view, keys)."""
        rng = generator(self.params.seed, self.params.index, self.stream, *keys)
        parts = rng.standard_normal((2, *self.acquisition["points"]["r"].shape), dtype=np.float32)
        return (parts[0] + 1j * parts[1]) * np.float32(np.sqrt(0.5))

    def half_sequence_speckle(self, n_frames: int, wanted: Sequence[int]) -> dict[int, np.ndarray]:
        """(7) AR(1) speckle N_k = q N_(k-1) + sqrt(1 - q^2) W_k over frames 0..m (m = n_frames - 1).

        ED (0) and ES (m) are drawn first, the frames between as the AR(1) bridge conditioned on both ends, so that
        ED and ES are the same whether or not the frames between are rendered. With d = m - k and prev = N_(k-1):
        N_k | prev, N_m ~ N(q prev + c (N_m - q^(d+1) prev), (1 - q^2)(1 - c q^d)),
        c = q^d (1 - q^2) / (1 - q^(2(d+1))).
        """
        q, m = self.rho_t, n_frames - 1
        first = self.noise(NOISE_FIRST)
        last = q**m * first + np.sqrt(1.0 - q ** (2 * m)) * self.noise(NOISE_LAST)
        out = {0: first, m: last}
        if any(0 < k < m for k in wanted):
            prev = first
            for k in range(1, m):
                d = m - k
                c = q**d * (1.0 - q**2) / (1.0 - q ** (2 * (d + 1)))
                var = (1.0 - q**2) * (1.0 - c * q**d)
                prev = q * prev + c * (last - q ** (d + 1) * prev) + np.sqrt(max(var, 0.0)) * self.noise(NOISE_STEP, k)
                out[k] = prev
        return {k: out[k] for k in wanted}

    def cycle_speckle(self, n_total: int) -> Iterator[np.ndarray]:
        """(7) Plain AR(1) speckle for a cine loop of ``n_total`` frames."""
        q = self.rho_t
        current = self.noise(NOISE_FIRST)
        for k in range(n_total):
            if k:
                current = q * current + np.sqrt(1.0 - q**2) * self.noise(NOISE_STEP, k)
            yield current

    def label(self, shape: LVShape) -> np.ndarray:
        label = _label_map(shape, self.view, self.pix_w, self.pix_z, self.params.difficulty)
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
        hard = self.params.difficulty
        if hard:  # side-lobe haze: a laterally wide second lobe of relative amplitude ``haze``
            blurred = blurred + self._haze(field_, hard)
        # (5) round-trip attenuation, additive receiver noise, then time-gain compensation with a small mismatch.
        alpha = app["attenuation_db_mm"] * np.log(10.0) / 20.0
        alpha_tgc = alpha * (1.0 + app["tgc_mismatch"])
        sigma_n = app["myocardium"] * 10.0 ** (app["noise_db"] / 20.0)
        received = acq["norm"] * blurred * np.exp(-alpha * r) + sigma_n * self.noise(NOISE_RECEIVER, frame)
        envelope = np.abs(received) * np.exp(alpha_tgc * r) * self._lateral_gain(acq["theta"])
        if hard:  # the sonographer's TGC sliders
            envelope = envelope * tgc_profile(r, self.sector.r_max, hard)
        # (6) log compression to 8 bit relative to the myocardial level, then scan conversion (bilinear).
        ref = app["myocardium"] * 10.0 ** ((app["gain_db"] + 9.0) / 20.0)
        compressed = np.clip(1.0 + 20.0 * np.log10(envelope / ref + 1e-12) / app["dynamic_range_db"], 0.0, 1.0) * 255.0
        out = np.zeros(self.image_size, dtype=np.uint8)
        values = ndimage.map_coordinates(compressed, acq["pix_coords"], order=1, mode="nearest")
        out[self.inside] = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return out

    def _haze(self, field_: np.ndarray, hard: Mapping[str, Any]) -> np.ndarray:
        """Side-lobe field: the scatterers blurred by a lobe ``haze_width_deg`` wide (same axial PSF), scaled to
        ``haze`` of the main lobe's speckle power."""
        acq = self.acquisition
        dth = float(acq["theta"][1] - acq["theta"][0])
        sigma = (acq["sigma"][0], max(float(hard["haze_width_deg"]) / dth, acq["sigma"][1]))
        norm = hard["haze"] / np.sqrt(_kernel_energy(sigma[0]) * _kernel_energy(sigma[1])) / acq["norm"]
        side = ndimage.gaussian_filter(field_.real, sigma, mode="nearest")
        side = side + 1j * ndimage.gaussian_filter(field_.imag, sigma, mode="nearest")
        return norm * side

    def _lateral_gain(self, theta: np.ndarray) -> np.ndarray:
        """Weaker beams at the sector edges (``edge_loss`` of a hard preset, else 0.35)."""
        rel = (theta - self.sector.tilt_deg) / (self.sector.opening_deg / 2.0)
        loss = float(self.params.difficulty.get("edge_loss", 0.35))
        return (1.0 - loss * np.abs(rel) ** 4)[None, :]
