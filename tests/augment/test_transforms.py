"""Sector transforms on known geometry: apex, opening, depth zoom, width, shift vector, kept region, physical size of
the anatomy, labels, retry policy."""

from __future__ import annotations

import numpy as np
import pytest

from echogains.augment.transforms import (
    COMBINATION,
    SectorMap,
    TransformPolicy,
    apply_transforms,
    check_augment,
    draw_steps,
    label_kept_fraction,
    make_transform,
    regrid_coordinates,
    regrid_sector,
    sample_steps,
    sector_contains,
)
from echogains.geometry import Sector
from echogains.utils import EchoDataError

SHAPE = (64, 64)


def _sector(spacing: tuple[float, float] = (1.0, 1.0)) -> Sector:
    """A 60-degree sector with its apex above the image, slightly off-centre, tilted by 5 degrees."""
    sx, sy = spacing
    return Sector(apex=(30.0 * sx, -3.0 * sy), theta_min=-25.0, theta_max=35.0, r_max=60.0 * sy, spacing=spacing)


def _case(sector: Sector) -> tuple[np.ndarray, np.ndarray]:
    """Image: a smooth pattern inside the sector, black outside; label: LV (1) ellipse with a MYO (2) ring."""
    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(np.float64)
    inside = sector.mask(SHAPE)
    image = np.where(inside, 0.3 + 0.5 * np.sin(rows / 5.0) ** 2 + 0.2 * cols / SHAPE[1], 0.0).astype(np.float32)
    q = ((rows - 30.0) / 12.0) ** 2 + ((cols - 31.0) / 7.0) ** 2
    label = np.zeros(SHAPE, np.uint8)
    label[q <= 1.6] = 2
    label[q <= 1.0] = 1
    return image, label


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a & b) / np.count_nonzero(a | b))


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 0.6)])
def test_tilt_rotates_about_the_apex(spacing):
    sector = _sector(spacing)
    image, label = _case(sector)
    res = apply_transforms(
        image, label, sector, [{"type": "tilt", "angle_deg": 20.0}], margin_px=0, kept_region="transformed_sector"
    )
    assert res.sector.apex == pytest.approx(sector.apex)
    assert (res.sector.theta_min, res.sector.theta_max) == pytest.approx((sector.theta_min + 20, sector.theta_max + 20))
    assert res.sector.opening_deg == pytest.approx(sector.opening_deg) and res.sector.r_max == sector.r_max
    assert res.spacing == pytest.approx(spacing)  # a rotation keeps the pixel size
    # the apex is a fixed point of the map, and the kept content fills the new sector (where inside the image)
    chain = SectorMap([{"type": "tilt", "angle_deg": 20.0}], sector, SHAPE)
    apex_px = (np.array([sector.apex[1] / spacing[1]]), np.array([sector.apex[0] / spacing[0]]))
    np.testing.assert_allclose(np.ravel(chain.forward(*apex_px)), np.ravel(apex_px), atol=1e-9)
    new_mask = res.sector.mask(SHAPE)
    assert not (res.known & ~new_mask).any()
    assert _iou(res.known, new_mask) > 0.97
    # the paper's kept region (Fig. 8): the same content cut to the original sector's footprint
    cut = apply_transforms(image, label, sector, [{"type": "tilt", "angle_deg": 20.0}], margin_px=0)
    assert cut.sector == sector and cut.content_sector == res.sector
    np.testing.assert_array_equal(cut.known, res.known & sector.mask(SHAPE))


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (1.0, 0.6)])
def test_depth_is_an_isotropic_zoom_out_about_the_apex(spacing):
    sector = _sector(spacing)
    image, label = _case(sector)
    d = 32.0  # rows added in the 256 px frame: zoom c = 288 / 256
    c = (256.0 + d) / 256.0
    res = apply_transforms(
        image,
        label,
        sector,
        [{"type": "depth", "rows_added": d}],
        frame_shape=(256, 256),
        margin_px=0,
        kept_region="transformed_sector",
    )
    # the apex is fixed; every offset from it shrinks by c on both axes (pixel coordinates of the image grid)
    chain = SectorMap([{"type": "depth", "rows_added": d}], regrid_sector(sector, SHAPE, (256, 256)), (256, 256))
    ar, ac = sector.apex[1] / spacing[1], sector.apex[0] / spacing[0]
    pts = np.array([[10.0, 20.0], [40.0, 50.0], [63.0, 5.0]])
    fr, fc = regrid_coordinates(pts[:, 0], pts[:, 1], SHAPE, (256, 256))
    orow, ocol = regrid_coordinates(*chain.forward(fr, fc), (256, 256), SHAPE)
    np.testing.assert_allclose(orow - ar, (pts[:, 0] - ar) / c, atol=1e-9)
    np.testing.assert_allclose(ocol - ac, (pts[:, 1] - ac) / c, atol=1e-9)
    # pixels are c times larger in mm: the content's sector has the same angles and radii in mm
    assert res.spacing == pytest.approx((spacing[0] * c, spacing[1] * c))
    assert chain.pixel_scale == pytest.approx(c)
    assert (res.sector.opening_deg, res.sector.tilt_deg, res.sector.r_max) == pytest.approx(
        (sector.opening_deg, sector.tilt_deg, sector.r_max)
    )
    assert res.sector.spacing == pytest.approx(res.spacing)
    assert _iou(res.known, res.sector.mask(SHAPE)) > 0.97
    # the label's pixel count shrinks by c^2 (its area in mm^2 is kept), and nothing of it is lost
    assert np.count_nonzero(res.label) == pytest.approx(np.count_nonzero(label) / c**2, rel=0.05)
    assert label_kept_fraction(label, sector, [{"type": "depth", "rows_added": d}], (256, 256), margin_px=0) == 1.0
    # cut to the original footprint (the default) nothing changes: the shrunk fan lies inside the original one
    cut = apply_transforms(
        image, label, sector, [{"type": "depth", "rows_added": d}], frame_shape=(256, 256), margin_px=0
    )
    assert np.count_nonzero(res.known & ~cut.known) <= 2  # boundary pixels only
    assert cut.sector.spacing == pytest.approx(res.spacing) and cut.sector.r_max == pytest.approx(sector.r_max * c)
    np.testing.assert_array_equal(cut.sector.mask(SHAPE), sector.mask(SHAPE))  # the same footprint, in larger pixels


def test_depth_rows_is_the_papers_literal_row_squeeze():
    sector = _sector()
    image, label = _case(sector)
    d = 32.0  # rows added in the 256 px frame: factor 256 / 288
    res = apply_transforms(
        image,
        label,
        sector,
        [{"type": "depth_rows", "rows_added": d}],
        frame_shape=(256, 256),
        margin_px=0,
        kept_region="transformed_sector",
    )
    factor = 256.0 / (256.0 + d)
    rows_before = np.flatnonzero(sector.mask(SHAPE).any(axis=1))
    rows_after = np.flatnonzero(res.known.any(axis=1))
    # the content's bottom edge (pixel edge at row + 0.5) moves up by the factor about the top edge (-0.5)
    assert (rows_after[-1] + 0.5 + 0.5) == pytest.approx((rows_before[-1] + 1.0) * factor, abs=1.0)
    assert res.known.any(axis=0).sum() == pytest.approx(sector.mask(SHAPE).any(axis=0).sum(), abs=1)  # width kept
    # the content is the same circular sector in a grid with row spacing sy / factor; the image's spacing is kept
    assert res.sector.spacing[1] == pytest.approx(sector.spacing[1] / factor)
    assert res.spacing == pytest.approx(sector.spacing)
    assert (res.sector.opening_deg, res.sector.r_max) == pytest.approx((sector.opening_deg, sector.r_max))
    assert _iou(res.known, res.sector.mask(SHAPE)) > 0.97
    assert np.count_nonzero(res.label) == pytest.approx(np.count_nonzero(label) * factor, rel=0.05)
    # policy depth_mode="rows" draws it under the name "depth"
    (step,) = sample_steps("depth", np.random.default_rng(0), TransformPolicy(depth_mode="rows"), 256)
    assert step["type"] == "depth_rows"


@pytest.mark.parametrize("factor", [0.6, 1.4])
def test_width_multiplies_the_image_width_about_the_centre_column(factor):
    sector = _sector((0.8, 1.0))
    image, label = _case(sector)
    step = [{"type": "width", "factor": factor}]
    res = apply_transforms(image, label, sector, step, margin_px=0, kept_region="transformed_sector")
    xc = (SHAPE[1] - 1) / 2
    chain = SectorMap(step, sector, SHAPE)
    rows, cols = np.array([5.0, 30.0, 60.0]), np.array([3.0, 31.5, 50.0])
    np.testing.assert_allclose(np.stack(chain.forward(rows, cols)), np.stack([rows, xc + factor * (cols - xc)]))
    # rows keep their content's extent, columns scale: a stretched (cropped) or squeezed fan
    cols_in = np.flatnonzero(sector.mask(SHAPE).any(axis=0))
    cols_out = np.flatnonzero(res.known.any(axis=0))
    expected = min(SHAPE[1], (cols_in[-1] - cols_in[0] + 1) * factor)
    assert len(cols_out) == pytest.approx(expected, abs=2)
    assert _iou(res.known, res.sector.mask(SHAPE)) > 0.95  # the content sector, in its own (distorted) spacing
    assert res.sector.spacing == pytest.approx((0.8 / factor, 1.0)) and res.spacing == pytest.approx((0.8, 1.0))
    # a deliberate distortion: the label's width scales by the factor, its height not
    lab_in, lab_out = np.nonzero(label == 1), np.nonzero(res.label == 1)
    assert np.ptp(lab_out[1]) + 1 == pytest.approx((np.ptp(lab_in[1]) + 1) * factor, abs=1.5)
    assert np.ptp(lab_out[0]) == np.ptp(lab_in[0])


@pytest.mark.parametrize("factor", [0.6, 1.4])
def test_sector_angle_scales_the_opening_about_the_bisector(factor):
    sector = _sector((0.8, 1.0))
    image, label = _case(sector)
    res = apply_transforms(
        image,
        label,
        sector,
        [{"type": "sector_angle", "factor": factor}],
        margin_px=0,
        kept_region="transformed_sector",
    )
    assert res.sector.opening_deg == pytest.approx(factor * sector.opening_deg)
    assert res.sector.tilt_deg == pytest.approx(sector.tilt_deg)
    assert res.sector.apex == sector.apex and res.sector.r_max == sector.r_max
    assert _iou(res.known, res.sector.mask(SHAPE)) > 0.95
    # pixels on the bisector keep their value (angle offset 0 maps to itself)
    t = np.radians(sector.tilt_deg)
    r = np.arange(5.0, 55.0, 5.0)
    col, row = (sector.apex[0] + r * np.sin(t)) / 0.8, (sector.apex[1] + r * np.cos(t)) / 1.0
    chain = SectorMap([{"type": "sector_angle", "factor": factor}], sector, SHAPE)
    np.testing.assert_allclose(np.stack(chain.inverse(row, col)), np.stack([row, col]), atol=1e-9)


def test_translation_moves_apex_by_the_vector_and_shifts_pixels_exactly():
    sector = _sector((0.5, 0.25))
    image, label = _case(sector)
    res = apply_transforms(image, label, sector, [{"type": "translation", "dx_px": 5.0, "dy_px": -3.0}], margin_px=0)
    assert res.content_sector.apex == pytest.approx((sector.apex[0] + 5 * 0.5, sector.apex[1] - 3 * 0.25))
    assert res.sector == sector and res.spacing == sector.spacing  # output: the original footprint, same pixels
    shifted = np.zeros_like(image)
    shifted[:-3, 5:] = image[3:, :-5]
    np.testing.assert_array_equal(res.image[res.known], shifted[res.known])
    lab = np.zeros_like(label)
    lab[:-3, 5:] = label[3:, :-5]
    np.testing.assert_array_equal(res.label, np.where(res.known, lab, 0))


def test_labels_stay_integer_in_the_label_set_and_zero_outside_the_kept_content():
    sector = _sector((0.7, 1.1))
    image, label = _case(sector)
    steps = [
        {"type": "depth", "rows_added": 40.0},
        {"type": "tilt", "angle_deg": -17.0},
        {"type": "width", "factor": 1.3},
        {"type": "translation", "dx_px": -9.5, "dy_px": 4.25},
    ]
    res = apply_transforms(image, label, sector, steps, frame_shape=(128, 128))
    assert res.label.dtype == np.uint8
    assert set(np.unique(res.label)) <= {0, 1, 2} and {1, 2} <= set(np.unique(res.label))
    assert not res.label[~res.known].any() and not res.image[~res.known].any()
    assert res.image.min() >= 0 and res.image.max() <= image.max() + 1e-6


def test_chain_forward_inverts_inverse():
    sector = _sector((0.7, 1.1))
    steps = [
        {"type": "depth", "rows_added": 20.0},
        {"type": "tilt", "angle_deg": 12.0},
        {"type": "width", "factor": 0.7},
        {"type": "translation", "dx_px": 3.0, "dy_px": -2.0},
    ]
    chain = SectorMap(steps, sector, SHAPE)
    rng = np.random.default_rng(0)
    rows, cols = rng.uniform(0, 63, 200), rng.uniform(0, 63, 200)
    back = chain.forward(*chain.inverse(rows, cols))
    ok = np.isfinite(back[0])
    assert ok.mean() > 0.5
    np.testing.assert_allclose(back[0][ok], rows[ok], atol=1e-9)
    np.testing.assert_allclose(back[1][ok], cols[ok], atol=1e-9)


def test_regrid_sector_matches_the_resized_mask_and_round_trips():
    sector = _sector((0.5, 0.9))
    big = regrid_sector(sector, SHAPE, (256, 200))
    assert big.spacing == pytest.approx((0.5 * 64 / 200, 0.9 * 64 / 256))
    rows, cols = np.mgrid[0:64, 0:64].astype(np.float64)
    br, bc = regrid_coordinates(rows, cols, SHAPE, (256, 200))
    small_of_big = big.mask((256, 200))[np.rint(br).astype(int), np.rint(bc).astype(int)]
    assert _iou(small_of_big, sector.mask(SHAPE)) > 0.97
    back = regrid_sector(big, (256, 200), SHAPE)
    assert back.apex == pytest.approx(sector.apex) and back.spacing == pytest.approx(sector.spacing)


def test_label_kept_fraction_counts_source_pixels():
    sector = Sector(apex=(32.0, -200.0), theta_min=-30.0, theta_max=30.0, r_max=400.0)  # covers the whole image
    label = np.zeros(SHAPE, np.uint8)
    label[20:41, 20:41] = 1
    shift = [{"type": "translation", "dx_px": 34.0, "dy_px": 0.0}]
    # columns 20..40 move to 54..74; 54..63 stay in the image: 10 of 21 columns
    assert label_kept_fraction(label, sector, shift, margin_px=0) == pytest.approx(10 / 21)
    assert label_kept_fraction(label, sector, [{"type": "tilt", "angle_deg": 0.0}], margin_px=0) == 1.0
    assert label_kept_fraction(np.zeros(SHAPE, np.uint8), sector, shift) == 0.0


def test_sector_contains_with_margin():
    sector = Sector(apex=(0.0, 0.0), theta_min=-45.0, theta_max=45.0, r_max=100.0)
    rows = np.array([50.0, 50.0, 95.0, 50.0])
    cols = np.array([0.0, 45.0, 0.0, np.nan])
    assert sector_contains(sector, rows, cols).tolist() == [True, True, True, False]
    # (50, 45) lies 3.5 mm inside the right edge, (95, 0) 5 mm inside the arc
    assert sector_contains(sector, rows, cols, margin_mm=3.0).tolist() == [True, True, True, False]
    assert sector_contains(sector, rows, cols, margin_mm=6.0).tolist() == [True, False, False, False]


def test_retry_policy_accepts_the_first_good_draw_or_reports_the_best():
    policy = TransformPolicy()
    values = iter([0.1, 0.3, 0.7, 0.9])
    draw = draw_steps("tilt", np.random.default_rng(0), policy, 256, lambda steps: next(values))
    assert (draw.ok, draw.tries, draw.label_kept) == (True, 3, 0.7)
    seen: list[list[dict]] = []

    def poor(steps):
        seen.append(steps)
        return 0.45 if len(seen) == 7 else 0.2

    draw = draw_steps("translation", np.random.default_rng(0), policy, 256, poor)
    assert (draw.ok, draw.tries, draw.label_kept) == (False, 30, 0.45)
    assert draw.steps == seen[6] and len(seen) == 30


def test_retry_policy_on_a_real_label_replays_and_gives_up_after_30_tries():
    sector = Sector(apex=(32.0, -200.0), theta_min=-30.0, theta_max=30.0, r_max=400.0)
    label = np.zeros(SHAPE, np.uint8)
    label[2:10, 2:10] = 1  # in a corner: shifts up or left push it out, down or right keep it
    policy = TransformPolicy(translation_px=(100.0, 200.0), margin_px=0)
    frac = lambda steps: label_kept_fraction(label, sector, steps, (256, 256), 0)  # noqa: E731
    tries = []
    for seed in range(8):
        draw = draw_steps("translation", np.random.default_rng([seed, 1]), policy, 256, frac)
        assert draw.ok and draw.label_kept >= 0.5 and frac(draw.steps) == draw.label_kept
        replay = np.random.default_rng([seed, 1])  # oracle: the first draw of the same stream that keeps >= 50 %
        n = next(i for i in range(1, 31) if frac(sample_steps("translation", replay, policy, 256)) >= 0.5)
        assert n == draw.tries
        tries.append(draw.tries)
    assert max(tries) > 1
    hopeless = TransformPolicy(translation_px=(300.0, 400.0), margin_px=0)  # always > 64 px: the label leaves
    draw = draw_steps("translation", np.random.default_rng(0), hopeless, 256, frac)
    assert (draw.ok, draw.tries, draw.label_kept) == (False, 30, 0.0)


def test_sample_steps_ranges_scaling_and_combination_probability():
    policy = TransformPolicy()
    rng = np.random.default_rng(1)
    for _ in range(50):
        (d,) = sample_steps("depth", rng, policy, 64)
        assert 0 <= d["rows_added_ref"] <= 150 and d["rows_added"] == pytest.approx(d["rows_added_ref"] * 64 / 256)
        (t,) = sample_steps("translation", rng, policy, 64)
        assert np.hypot(t["dx_px"], t["dy_px"]) == pytest.approx(t["length_ref"] * 64 / 256) and t["length_ref"] <= 50
        (w,) = sample_steps("width", rng, policy, 64)
        assert 0.5 <= w["factor"] <= 1.5 and w["type"] == "width"
        (g,) = sample_steps("sector_angle", rng, policy, 64)
        assert 0.5 <= g["factor"] <= 1.5 and g["type"] == "sector_angle"
        (a,) = sample_steps("tilt", rng, policy, 64)
        assert -30 <= a["angle_deg"] <= 30
    rng = np.random.default_rng(2)
    draws = [sample_steps("combination", rng, policy, 256) for _ in range(2000)]
    order = list(COMBINATION)
    assert order == ["depth", "tilt", "width", "translation"]  # the paper's four, nothing else
    assert {s["type"] for steps in draws for s in steps} == set(order)
    for kind in order:
        share = np.mean([any(s["type"] == kind for s in steps) for steps in draws])
        assert 0.46 < share < 0.54
    assert all([s["type"] for s in steps] == sorted((s["type"] for s in steps), key=order.index) for steps in draws)
    again = np.random.default_rng(2)
    assert [sample_steps("combination", again, policy, 256) for _ in range(5)] == draws[:5]


def test_bad_transform_arguments_raise():
    with pytest.raises(EchoDataError, match="--augment"):
        check_augment("rotate")
    with pytest.raises(EchoDataError, match="unknown transform type"):
        make_transform({"type": "shear", "angle_deg": 3})
    with pytest.raises(EchoDataError, match="bad tilt"):
        make_transform({"type": "tilt"})
    with pytest.raises(EchoDataError, match="policy"):
        TransformPolicy(width_factor=(1.5, 0.5))


# ----------------------------------------------------------------------------------------------------------------
# The anatomy keeps its physical size; the kept region stays inside the original fan (a phantom image)
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom_case(tmp_path_factory):
    """One camus-like phantom frame at 256 x 224 px with anisotropic pixels (rows twice as tall), label, sector."""
    import SimpleITK as sitk

    from echogains.data.nnunet import RawDataset
    from echogains.data.phantom import make_phantom

    root = make_phantom(
        tmp_path_factory.mktemp("ph") / "Dataset980_P",
        n_patients=2,
        layout="nnunet",
        image_size=(256, 224),
        labels="lv,myo",
        anisotropy=2.0,
        progress=False,
    )
    ds = RawDataset(root)
    case = ds.case_ids("Tr")[0]
    img = ds.read_image(case)
    image = sitk.GetArrayFromImage(img).astype(np.float32) / 255.0
    label = sitk.GetArrayFromImage(ds.read_label(case))
    sector = Sector.from_dict(ds.record(case)["sector"])
    assert sector.spacing == pytest.approx(img.GetSpacing()[:2]) and sector.spacing[1] > 1.5 * sector.spacing[0]
    return image, label, sector


def _lv_geometry(weight: np.ndarray, spacing) -> tuple[float, float]:
    """Area in mm^2 and aspect ratio (major / minor principal axis, second moments in mm) of a (weighted) mask."""
    rows, cols = np.nonzero(weight > 0)
    w = weight[rows, cols].astype(np.float64)
    pts = np.stack([cols * spacing[0], rows * spacing[1]])
    evals = np.linalg.eigvalsh(np.cov(pts, aweights=w))
    return float(w.sum() * spacing[0] * spacing[1]), float(np.sqrt(evals[1] / evals[0]))


@pytest.mark.parametrize(
    "step",
    [
        {"type": "depth", "rows_added": 150.0},
        {"type": "depth", "rows_added": 60.0},
        {"type": "tilt", "angle_deg": 12.0},
        {"type": "tilt", "angle_deg": -20.0},
        {"type": "translation", "dx_px": 12.0, "dy_px": 20.0},
    ],
    ids=["depth150", "depth60", "tilt12", "tilt-20", "translation"],
)
def test_lv_area_in_mm2_and_aspect_ratio_are_kept_by_depth_tilt_and_translation(phantom_case, step):
    image, label, sector = phantom_case
    assert label_kept_fraction((label == 1).astype(np.uint8), sector, [step], (256, 256)) == 1.0  # the LV is kept whole
    res = apply_transforms(image, label, sector, [step], frame_shape=(256, 256))
    lv = (label == 1).astype(np.float32)
    # the LV indicator resampled like the image (bilinear: no raster noise) has the same area and shape in mm
    smooth = apply_transforms(lv, None, sector, [step], frame_shape=(256, 256))
    area0, aspect0 = _lv_geometry(lv, sector.spacing)
    area1, aspect1 = _lv_geometry(smooth.image, smooth.spacing)
    assert area1 == pytest.approx(area0, rel=0.02)
    assert aspect1 == pytest.approx(aspect0, rel=0.02)
    # so has the written (nearest-neighbour) label, up to its raster noise
    area2, aspect2 = _lv_geometry((res.label == 1).astype(np.float32), res.spacing)
    assert area2 == pytest.approx(area0, rel=0.03) and aspect2 == pytest.approx(aspect0, rel=0.03)
    # the written sector describes the output grid: same footprint, in the output's spacing
    assert res.sector.spacing == pytest.approx(res.spacing)
    assert _iou(res.sector.mask(label.shape), sector.mask(label.shape)) > 0.99


def test_width_is_the_one_deliberate_distortion(phantom_case):
    image, label, sector = phantom_case
    lv = (label == 1).astype(np.float32)
    res = apply_transforms(lv, None, sector, [{"type": "width", "factor": 1.3}], frame_shape=(256, 256))
    area0, _ = _lv_geometry(lv, sector.spacing)
    area1, _ = _lv_geometry(res.image, res.spacing)
    assert res.spacing == sector.spacing and area1 == pytest.approx(1.3 * area0, rel=0.03)


@pytest.mark.parametrize("mode", ["depth", "tilt", "width", "sector_angle", "translation", "combination"])
def test_kept_region_lies_inside_the_original_fan(phantom_case, mode):
    image, label, sector = phantom_case
    fan = sector.mask(label.shape)
    rng = np.random.default_rng(7)
    policy = TransformPolicy()
    outside = 0
    for _ in range(6):
        steps = sample_steps(mode, rng, policy, 256)
        res = apply_transforms(image, label, sector, steps, frame_shape=(256, 256), margin_px=policy.margin_px)
        assert not (res.known & ~fan).any()  # Fig. 8: nothing outside the original sector is kept
        assert not res.label[~fan].any() and not res.image[~fan].any()
        loose = apply_transforms(image, label, sector, steps, (256, 256), policy.margin_px, "transformed_sector")
        outside += int(np.count_nonzero(loose.known & ~fan))
        assert not (res.known & ~loose.known).any()  # the cut only removes content
        frac = label_kept_fraction(label, sector, steps, (256, 256), policy.margin_px)
        assert frac <= label_kept_fraction(label, sector, steps, (256, 256), policy.margin_px, "transformed_sector")
    if mode != "depth":  # a zoom-out stays inside the fan by itself; the other transforms push content out of it
        assert outside > 0
