"""Tests for echogains.geometry: sector fitting on speckled phantoms and the polar (beam) resampling helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from echogains.geometry import (
    Sector,
    fit_sector,
    from_polar,
    mm_to_pixel,
    pixel_to_mm,
    polar_grid,
    polar_shape,
    sector_iou,
    to_polar,
)
from echogains.utils import EchoDataError

CAMUS_SPACING = (0.154, 0.308)


def speckled(sector: Sector, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Sector content with multiplicative (exponential-intensity) speckle, a dark cavity and dark holes."""
    rng = np.random.default_rng(seed)
    img = 100.0 * sector.mask(shape) * rng.exponential(1.0, shape)
    r, t = sector.polar_coords(shape)
    mid = sector.r_min + 0.5 * (sector.r_max - sector.r_min)
    cavity = ((r - mid) / (0.2 * sector.r_max)) ** 2 + ((t - sector.tilt_deg) / (0.2 * sector.opening_deg)) ** 2 < 1
    img[cavity] *= 0.02
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    for cy, cx in zip(rng.integers(0, shape[0], 8), rng.integers(0, shape[1], 8)):
        img[(rows - cy) ** 2 + (cols - cx) ** 2 <= 4] = 0.0  # small holes, some touching the outline
    return img


def bmode_uint8(sector: Sector, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A frame like a real recording: log-compressed uint8, attenuation, an edge dropout, noise floor, text."""
    rng = np.random.default_rng(seed)
    r, t = sector.polar_coords(shape)
    envelope = rng.rayleigh(1.0, shape) * np.exp(-1.5 * r / sector.r_max)
    dropout = (t < sector.theta_min + 0.25 * sector.opening_deg) & (r > 0.4 * sector.r_max) & (r < 0.6 * sector.r_max)
    envelope[dropout] *= 0.01  # a black stretch that touches the left edge (e.g. lung)
    grey = np.clip((20 * np.log10(envelope + 1e-6) + 45) / 50 * 255, 0, 255) * sector.mask(shape)
    grey += rng.integers(0, 6, shape)  # compression noise outside the sector
    text = np.zeros(shape, dtype=bool)
    text[5:12, 3:20] = True
    if not np.any(text & ndimage.binary_dilation(sector.mask(shape), iterations=3)):
        grey[text] = 220  # burnt-in text, apart from the sector
    return np.clip(grey, 0, 255).astype(np.uint8)


def assert_close(fit: Sector, true: Sector, apex_px: float = 1.5, deg: float = 1.0, depth: float = 0.015) -> None:
    px = max(true.spacing)
    apex_err = np.hypot(fit.apex[0] - true.apex[0], fit.apex[1] - true.apex[1])
    assert apex_err <= apex_px * px, f"apex {fit.apex} vs {true.apex}"
    assert abs(fit.theta_min - true.theta_min) <= deg
    assert abs(fit.theta_max - true.theta_max) <= deg
    assert abs(fit.r_max / true.r_max - 1) <= depth
    assert fit.spacing == true.spacing


CASES = {
    "symmetric": (Sector((64.0, 4.0), -35.0, 35.0, 115.0, 5.0), (128, 128)),
    "tilt+25": (Sector((40.0, 8.0), -10.0, 60.0, 110.0, 4.0), (128, 128)),
    "tilt-25": (Sector((88.0, 8.0), -60.0, 10.0, 110.0, 4.0), (128, 128)),
    "off-centre asymmetric": (Sector((30.0, 8.0), -20.0, 50.0, 105.0), (128, 128)),
    "apex above image": (Sector((64.0, -20.0), -30.0, 30.0, 140.0), (128, 128)),
    "anisotropic CAMUS-like": (Sector((15.4, 1.0), -38.0, 32.0, 36.0, 1.5, CAMUS_SPACING), (128, 200)),
    "clipped by left border": (Sector((30.0, 6.0), -40.0, 30.0, 110.0, 3.0), (128, 128)),
    "EchoNet-like 112": (Sector((56.0, 2.0), -40.0, 40.0, 108.0), (112, 112)),
    "256": (Sector((140.0, 12.0), -38.0, 32.0, 230.0, 10.0), (256, 256)),
}


def test_phantoms_are_not_trivial() -> None:
    # The fit must bridge dark speckle inside the sector and cope with clipping: check the phantoms have both.
    true, shape = CASES["symmetric"]
    image = speckled(true, shape)
    dark = image <= 0.05 * np.percentile(image, 99)
    assert dark[true.mask(shape)].mean() > 0.15
    clipped, shape = CASES["clipped by left border"]
    assert clipped.mask(shape)[:, 0].sum() > 20
    assert CASES["apex above image"][0].apex[1] < 0


@pytest.mark.parametrize("name", list(CASES))
def test_fit_recovers_known_sector(name: str) -> None:
    true, shape = CASES[name]
    fit = fit_sector(speckled(true, shape, seed=3), spacing=true.spacing)
    assert_close(fit, true)
    assert sector_iou(fit, true.mask(shape)) > 0.97


def test_fit_recovers_near_radius_and_apex_outside_image() -> None:
    true, shape = CASES["256"]
    fit = fit_sector(speckled(true, shape), spacing=true.spacing)
    assert abs(fit.r_min - true.r_min) <= 1.5
    above = fit_sector(speckled(*CASES["apex above image"]))
    assert above.apex[1] < 0  # the apex is extrapolated above the first row
    assert above.r_min == 0.0  # the near field is cut off by the image top, not visible


@pytest.mark.parametrize("name", ["symmetric", "EchoNet-like 112", "anisotropic CAMUS-like"])
def test_fit_on_realistic_uint8_frame(name: str) -> None:
    true, shape = CASES[name]
    image = bmode_uint8(true, shape, seed=1)
    assert image.dtype == np.uint8
    assert_close(fit_sector(image, spacing=true.spacing), true)


@pytest.mark.parametrize("preset", ["camus-like", "lv-focused"])
def test_fit_on_phantom_frames(preset: str) -> None:
    # An independent image model (the toolkit's phantom: anatomy, PSF-blurred speckle, dropout, TGC) as oracle.
    from echogains.data.phantom import simulate_patient

    patient = simulate_patient(2, preset, seed=0, image_size=(112, 112))
    for view in patient.views.values():
        for image in view.images:  # ED and ES
            assert_close(fit_sector(image, spacing=view.spacing), view.sector, apex_px=1.0, deg=0.5, depth=0.01)


def test_fit_is_mirror_equivariant_and_deterministic() -> None:
    true, shape = CASES["off-centre asymmetric"]
    image = speckled(true, shape, seed=5)
    fit = fit_sector(image)
    assert fit_sector(image) == fit
    mirrored = fit_sector(image[:, ::-1].copy())
    # x -> (cols - 1) - x; angles measured toward +x change sign.
    assert mirrored.apex[0] == pytest.approx(shape[1] - 1 - fit.apex[0], abs=0.05)
    assert mirrored.apex[1] == pytest.approx(fit.apex[1], abs=0.05)
    assert mirrored.theta_min == pytest.approx(-fit.theta_max, abs=0.05)
    assert mirrored.theta_max == pytest.approx(-fit.theta_min, abs=0.05)
    assert mirrored.r_max == pytest.approx(fit.r_max, rel=1e-3)


def test_fit_binary_mask_offset_background_and_explicit_threshold() -> None:
    true, shape = CASES["tilt+25"]
    assert_close(fit_sector(true.mask(shape)), true, apex_px=0.5, deg=0.3, depth=0.005)
    offset = 0.3 + 0.7 * speckled(true, shape) / 100.0  # grey (not black) background at 0.3
    assert_close(fit_sector(offset), true)
    assert_close(fit_sector(offset, threshold=0.301), true)


def test_fitted_sector_serialises() -> None:
    true, shape = CASES["anisotropic CAMUS-like"]
    fit = fit_sector(speckled(true, shape), spacing=true.spacing)
    record = json.loads(json.dumps(fit.to_dict()))
    assert Sector.from_dict(record) == fit
    assert record["depth_mm"] == pytest.approx(36.0, rel=0.015)
    assert record["opening_deg"] == pytest.approx(70.0, abs=1.0)
    assert record["tilt_deg"] == pytest.approx(-3.0, abs=1.0)


def _disk(shape: tuple[int, int]) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return (((rows - 64) ** 2 + (cols - 64) ** 2) < 40**2).astype(np.float64)


@pytest.mark.parametrize(
    "image,problem",
    [
        (np.zeros((64, 64)), "empty"),
        (np.full((64, 64), 7.0), "empty"),
        (np.pad(np.ones((4, 4)), 30), "too dark"),
        (np.zeros((64, 64, 3)), "grey"),
        (np.zeros(64), "2D"),
        (np.full((64, 64), np.nan), "NaN"),
        (_disk((128, 128)), "not an ultrasound sector"),
        ((np.mgrid[:128, :128][0] > 60).astype(float), "no sector found"),
    ],
)
def test_fit_rejects_bad_images(image: np.ndarray, problem: str) -> None:
    with pytest.raises(EchoDataError, match=problem) as info:
        fit_sector(image, source="case01.nii.gz")
    assert info.value.path == "case01.nii.gz"


def test_fit_rejects_bad_spacing() -> None:
    with pytest.raises(EchoDataError, match="spacing"):
        fit_sector(np.ones((32, 32)), spacing=(0.0, 1.0))


def test_pixel_mm_conversion() -> None:
    xy_px = np.array([[0.0, 0.0], [10.0, 4.0], [-2.5, 3.0]])
    xy_mm = pixel_to_mm(xy_px, CAMUS_SPACING)
    np.testing.assert_allclose(xy_mm[1], [1.54, 1.232])
    np.testing.assert_allclose(mm_to_pixel(xy_mm, CAMUS_SPACING), xy_px)


def test_polar_grid_layout() -> None:
    sector = Sector((10.0, -5.0), -30.0, 40.0, 50.0, 2.0, (0.5, 0.25))
    r, theta = polar_grid(sector, 5, 8)
    assert (r[0], r[-1], theta[0], theta[-1]) == (2.0, 50.0, -30.0, 40.0)
    n_r, n_theta = polar_shape(sector)
    assert n_r == int(np.ceil(48.0 / 0.25)) + 1
    assert n_theta == int(np.ceil(np.radians(70.0) * 50.0 / 0.25)) + 1


def test_to_polar_samples_along_beams_exactly() -> None:
    # Bilinear interpolation of a linear image is exact: the polar samples equal the plane at apex + r (sin, cos).
    sector = Sector((30.0, 3.0), -25.0, 35.0, 40.0, 4.0, (0.5, 0.75))
    shape = (64, 120)  # the whole sector lies inside the image
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    image = 2.0 + 0.3 * cols - 0.1 * rows
    polar = to_polar(image, sector, n_r=17, n_theta=13)
    r, theta = polar_grid(sector, 17, 13)
    x = sector.apex[0] + r[:, None] * np.sin(np.radians(theta))[None, :]
    y = sector.apex[1] + r[:, None] * np.cos(np.radians(theta))[None, :]
    np.testing.assert_allclose(polar, 2.0 + 0.3 * x / 0.5 - 0.1 * y / 0.75, atol=1e-9)
    assert polar.shape == (17, 13)


def test_to_polar_is_zero_outside_image() -> None:
    sector = Sector((0.0, 0.0), -60.0, 10.0, 30.0)  # left half of the cone lies left of the image
    polar = to_polar(np.ones((40, 40)), sector, n_r=20, n_theta=15)
    theta = polar_grid(sector, 20, 15)[1]
    r = polar_grid(sector, 20, 15)[0]
    x_px = r[:, None] * np.sin(np.radians(theta))[None, :]
    assert np.all(polar[x_px < -0.5] == 0.0)  # beyond the left edge of the first pixel column
    np.testing.assert_allclose(polar[x_px >= -0.5], 1.0)
    assert np.count_nonzero(x_px < -0.5) > 150


def test_from_polar_scan_converts_exactly_and_blanks_outside() -> None:
    sector = Sector((40.0, -6.0), -30.0, 20.0, 50.0, 8.0)
    shape = (48, 80)
    r_grid, t_grid = polar_grid(sector, 30, 20)
    polar = 1.0 + 0.05 * r_grid[:, None] + 0.02 * t_grid[None, :]  # linear in (r, theta)
    image = from_polar(polar, sector, shape)
    inside = sector.mask(shape)
    r, t = sector.polar_coords(shape)
    np.testing.assert_allclose(image[inside], 1.0 + 0.05 * r[inside] + 0.02 * t[inside], atol=1e-9)
    assert np.all(image[~inside] == 0.0)


def test_polar_round_trip_on_smooth_image() -> None:
    true, shape = Sector((15.4, 1.0), -30.0, 25.0, 30.0, 1.5, CAMUS_SPACING), (128, 200)  # inside the image
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    smooth = 1.0 + np.sin(cols / 15.0) * np.cos(rows / 11.0)
    back = from_polar(to_polar(smooth, true), true, shape)
    inside = true.mask(shape)
    assert np.all(back[~inside] == 0.0)
    assert np.max(np.abs(back - smooth)[inside]) < 0.01


def test_polar_order0_keeps_labels() -> None:
    sector, shape = CASES["EchoNet-like 112"]
    r, t = sector.polar_coords(shape)
    labels = (sector.mask(shape) * (1 + (r > 50) + (t > 0))).astype(np.uint8)
    polar = to_polar(labels, sector, order=0)
    back = from_polar(polar, sector, shape, order=0)
    assert polar.dtype == np.uint8 and back.dtype == np.uint8
    assert set(np.unique(back)) <= {0, 1, 2, 3}
    assert np.mean(back[sector.mask(shape)] == labels[sector.mask(shape)]) > 0.97
