"""Synthetic echo phantom: analytic truth, rendering invariants, determinism, every layout, argument checks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from echogains.data import phantom as ph
from echogains.data.phantom import (
    LVShape,
    make_phantom,
    simulate_cycle,
    simulate_patient,
    truncated_ellipsoid_volume_ml,
)
from echogains.geometry import pixel_grid_mm
from echogains.utils import EchoDataError, set_progress

set_progress(False)
SMALL = (64, 48)  # rows, cols: CAMUS-like anisotropic stills small enough for fast tests
CASES = [(v, p) for v in ("2CH", "4CH") for p in ("ED", "ES")]


@pytest.fixture(scope="module")
def patients() -> list[ph.PhantomPatient]:
    camus = [simulate_patient(i, "camus-like", 3, image_size=SMALL) for i in range(1, 5)]
    focused = [simulate_patient(i, "lv-focused", 3, image_size=SMALL) for i in range(1, 3)]
    return camus + focused


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------
# Analytic model
# ------------------------------------------------------------------------------------------------
def test_truncated_ellipsoid_golden_values() -> None:
    r = 10.0  # sphere of radius 1 cm: whole 4/3 pi ml, half 2/3 pi ml, nothing below the apex
    assert truncated_ellipsoid_volume_ml(r, r, r, 1.0) == pytest.approx(4.0 / 3.0 * np.pi / 1.0 * 1.0, rel=1e-12)
    assert truncated_ellipsoid_volume_ml(r, r, r, 0.0) == pytest.approx(2.0 / 3.0 * np.pi, rel=1e-12)
    assert truncated_ellipsoid_volume_ml(r, r, r, -1.0) == pytest.approx(0.0, abs=1e-12)
    # a cap of height h of a sphere: pi h^2 (3R - h) / 3 (here h = 5 mm, g = -0.5)
    assert truncated_ellipsoid_volume_ml(r, r, r, -0.5) == pytest.approx(np.pi * 25 * (30 - 5) / 3 / 1000, rel=1e-12)


def _voxel_volumes(shape: LVShape, step: float = 0.4) -> tuple[float, float]:
    """Cavity and myocardial volume (ml) by counting voxel centres of the 3D regions (midpoint rule), slab by slab."""
    half_x, half_y = shape.a + shape.t + 1, shape.b + shape.t + 1
    xs = np.arange(-half_x, half_x, step) + step / 2
    ys = np.arange(-half_y, half_y, step) + step / 2
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    cavity = myo = 0
    for z in np.arange(-shape.t - 1, shape.base_z + 1, step) + step / 2:
        reg = shape.regions(X, Y, np.full_like(X, z))
        cavity += int(reg["cavity"].sum())
        myo += int(reg["myo"].sum())
    return cavity * step**3 / 1000, myo * step**3 / 1000


def test_analytic_volumes_match_voxelised_shape() -> None:
    params = ph.sample_params(5, "camus-like", 0)
    for shape in (params.lv_ed, params.lv_es):
        cavity, myo = _voxel_volumes(shape)
        assert cavity == pytest.approx(shape.cavity_volume_ml(), rel=0.01)
        assert myo == pytest.approx(shape.myocardial_volume_ml(), rel=0.01)


def test_true_ef_range_and_closed_form() -> None:
    for preset, (lo, hi) in (("camus-like", (25, 70)), ("lv-focused", (40, 70))):
        efs = []
        for i in range(1, 21):
            p = ph.sample_params(i, preset, 0)
            truth = p.truth()
            efs.append(truth["ef_pct"])
            assert lo <= truth["ef_pct"] <= hi
            assert truth["ef_pct"] == pytest.approx(100 * (1 - p.rho**2 * p.lam), abs=1e-9)  # eq. (2)
            assert p.lv_es.myocardial_volume_ml() == pytest.approx(p.lv_ed.myocardial_volume_ml(), rel=1e-6)  # eq. (3)
            assert p.lv_es.t > p.lv_ed.t  # the wall thickens in systole
        assert max(efs) - min(efs) > 0.5 * (hi - lo)  # the range is actually spanned


def test_fixing_one_parameter_keeps_the_patient() -> None:
    free = ph.sample_params(3, "camus-like", 0)
    fixed = ph.sample_params(3, "camus-like", 0, depth_mm=150.0, opening_deg=(60.0, 61.0))
    assert fixed.depth_mm == 150.0 and 60.0 <= fixed.opening_deg <= 61.0
    assert (fixed.lv_ed, fixed.rho, fixed.lam, fixed.sex, fixed.age, fixed.quality) == (
        free.lv_ed,
        free.rho,
        free.lam,
        free.sex,
        free.age,
        free.quality,
    )


def test_simpson_from_true_masks_agrees_with_analytic_ef() -> None:
    d_ef, d_edv = [], []
    for i in range(1, 21):
        patient = simulate_patient(i, "camus-like", 0, render_images=False)  # default 128 x 96 grid
        simpson = ph.simpson_reference(patient)
        d_ef.append(simpson["ef_pct"] - patient.truth["ef_pct"])
        d_edv.append(simpson["edv_ml"] / patient.truth["edv_ml"] - 1)
    d_ef, d_edv = np.abs(d_ef), np.abs(d_edv)
    # measured: mean |dEF| 0.6 EF points (max 2.4), EDV within 1 % on average at 128 x 96 pixels
    assert d_ef.mean() < 1.2 and d_ef.max() < 4.0
    assert d_edv.mean() < 0.02


# ------------------------------------------------------------------------------------------------
# Rendering invariants
# ------------------------------------------------------------------------------------------------
def test_labels_images_and_sector(patients: list[ph.PhantomPatient]) -> None:
    for patient in patients:
        for view, phase in CASES:
            v = patient.views[view]
            image, label = v.image(phase), v.label(phase)
            assert image.dtype == np.uint8 and label.dtype == np.uint8 and image.shape == label.shape == SMALL
            assert set(np.unique(label)) == {0, 1, 2, 3}, (patient.patient_id, view, phase)
            inside = v.sector.mask(image.shape)
            assert not image[~inside].any() and not label[~inside].any()  # black outside the cone
            assert image[inside].mean() > 20  # content inside
            blood, wall = image[label == 1].mean(), image[label == 2].mean()
            assert wall > blood + 25  # bright myocardium, dark blood pool
        assert v.spacing[0] != v.spacing[1] or patient.params.preset == "lv-focused"


def test_es_cavity_smaller_and_views_cut_one_shape(patients: list[ph.PhantomPatient]) -> None:
    for patient in patients:
        for view in ("2CH", "4CH"):
            v = patient.views[view]
            area = [float((v.label(p) == 1).sum()) for p in ("ED", "ES")]
            assert area[1] < area[0]
        lv = patient.params.lv_ed
        # the 2CH plane shows the a semi-axis, the 4CH plane the b semi-axis of the same ellipsoid
        for view, semi in (("2CH", lv.a), ("4CH", lv.b)):
            v = patient.views[view]
            w, z = ph._mm_to_lv_plane(patient.params, *pixel_grid_mm(SMALL, v.spacing), v.sector.apex, view)
            cavity = v.label("ED") == 1
            assert np.abs(w[cavity]).max() == pytest.approx(semi, abs=1.5 * max(v.spacing))


def test_simulate_is_deterministic_and_seeded() -> None:
    a = simulate_patient(2, "camus-like", 7, image_size=SMALL)
    b = simulate_patient(2, "camus-like", 7, image_size=SMALL)
    c = simulate_patient(2, "camus-like", 8, image_size=SMALL)
    for view in ("2CH", "4CH"):
        assert np.array_equal(a.views[view].images, b.views[view].images)
        assert np.array_equal(a.views[view].labels, b.views[view].labels)
        assert not np.array_equal(a.views[view].images, c.views[view].images)


def test_stills_are_the_ends_of_the_half_sequence() -> None:
    stills = simulate_patient(3, "camus-like", 0, image_size=SMALL, n_frames=6)
    seq = simulate_patient(3, "camus-like", 0, image_size=SMALL, n_frames=6, sequence=True)
    for view in ("2CH", "4CH"):
        s, q = stills.views[view], seq.views[view]
        assert q.images.shape == (6, *SMALL) and q.is_sequence and not s.is_sequence
        assert np.array_equal(s.image("ED"), q.images[0]) and np.array_equal(s.image("ES"), q.images[-1])
        assert np.array_equal(s.label("ES"), q.labels[-1])
        areas = [(lab == 1).sum() for lab in q.labels]
        assert all(x >= y for x, y in zip(areas, areas[1:]))  # monotone contraction ED -> ES


def test_speckle_bridge_statistics() -> None:
    params = ph.sample_params(1, "camus-like", 0, (128, 96))
    renderer = ph._ViewRenderer(params, "4CH", (128, 96), 0.5, None)
    n = 8
    frames = renderer.half_sequence_speckle(n, list(range(n)))
    ends = renderer.half_sequence_speckle(n, [0, n - 1])
    assert np.array_equal(ends[0], frames[0]) and np.array_equal(ends[n - 1], frames[n - 1])
    q = renderer.rho_t
    for k in range(n):
        assert np.mean(np.abs(frames[k]) ** 2) == pytest.approx(1.0, abs=0.03)  # unit power in every frame
    for k in range(n - 1):
        corr = np.mean(frames[k] * np.conj(frames[k + 1])).real
        assert corr == pytest.approx(q, abs=0.03)  # AR(1): lag-1 correlation q, bridge included


# ------------------------------------------------------------------------------------------------
# Layouts
# ------------------------------------------------------------------------------------------------
def _read(path: Path) -> sitk.Image:
    return sitk.ReadImage(str(path))


def test_camus_nifti_layout(tmp_path: Path) -> None:
    out = make_phantom(
        tmp_path / "camus",
        n_patients=3,
        layout="camus-nifti",
        seed=1,
        sequence=True,
        image_size=SMALL,
        n_frames=5,
        progress=False,
    )
    truth = json.loads((out / "phantom_truth.json").read_text())
    split_of = {"training": "train", "validation": "val", "testing": "test"}
    splits = {s: (out / "database_split" / f"subgroup_{s}.txt").read_text().split() for s in split_of}
    assert sorted(sum(splits.values(), [])) == ["patient0001", "patient0002", "patient0003"]
    assert all(len(v) == 1 for v in splits.values())
    for pid, rec in truth["patients"].items():
        folder = out / "database_nifti" / pid
        expected = {f"{pid}_{v}_{p}{s}.nii.gz" for v, p in CASES for s in ("", "_gt")}
        expected |= {f"{pid}_{v}_half_sequence{s}.nii.gz" for v in ("2CH", "4CH") for s in ("", "_gt")}
        expected |= {"Info_2CH.cfg", "Info_4CH.cfg"}
        assert {f.name for f in folder.iterdir()} == expected
        for view in ("2CH", "4CH"):
            spacing = rec["views"][view]["spacing_mm"]
            assert spacing[0] == pytest.approx(2 * spacing[1])  # anisotropic, CAMUS-like sy = sx / 2
            image = _read(folder / f"{pid}_{view}_ED.nii.gz")
            gt = _read(folder / f"{pid}_{view}_ED_gt.nii.gz")
            assert image.GetPixelID() == sitk.sitkUInt8 and image.GetSize() == (SMALL[1], SMALL[0])
            assert image.GetSpacing() == pytest.approx(spacing, rel=1e-6) and gt.GetSpacing() == pytest.approx(
                spacing, rel=1e-6
            )
            assert set(np.unique(sitk.GetArrayFromImage(gt))) == {0, 1, 2, 3}
            seq = sitk.GetArrayFromImage(_read(folder / f"{pid}_{view}_half_sequence.nii.gz"))
            assert seq.shape == (5, *SMALL)
            assert np.array_equal(seq[-1], sitk.GetArrayFromImage(_read(folder / f"{pid}_{view}_ES.nii.gz")))
            info = dict(line.split(": ") for line in (folder / f"Info_{view}.cfg").read_text().splitlines())
            assert set(info) == {"ED", "ES", "NbFrame", "Sex", "Age", "ImageQuality", "LVedv", "LVesv", "LVef"}
            assert (info["ED"], info["ES"], info["NbFrame"]) == ("1", "5", "5")
            assert float(info["LVef"]) == pytest.approx(rec["truth"]["ef_pct"], abs=0.006)
            assert info["ImageQuality"] == rec["image_quality"]
        assert set(rec["simpson"]) == {"edv_ml", "esv_ml", "ef_pct"}
        assert [split_of[s] for s, ids in splits.items() if pid in ids] == [rec["split"]]


def test_camus_mhd_layout(tmp_path: Path) -> None:
    out = make_phantom(
        tmp_path / "mhd", n_patients=2, layout="camus-mhd", sequence=True, image_size=SMALL, n_frames=4, progress=False
    )
    folder = out / "training" / "patient0002"
    names = {f.name for f in folder.iterdir()}
    for view, phase in CASES:
        for stem in (f"patient0002_{view}_{phase}", f"patient0002_{view}_{phase}_gt"):
            assert {f"{stem}.mhd", f"{stem}.raw"} <= names
            header = (folder / f"{stem}.mhd").read_text()
            assert f"ElementDataFile = {stem}.raw" in header and "CompressedData = False" in header
    assert {"patient0002_2CH_sequence.mhd", "patient0002_4CH_sequence.raw", "Info_2CH.cfg", "Info_4CH.cfg"} <= names
    assert not [n for n in names if n.startswith(".")]  # no temporary leftovers
    image = _read(folder / "patient0002_4CH_ES.mhd")
    sx, sy = image.GetSpacing()
    assert sx == pytest.approx(2 * sy) and image.GetPixelID() == sitk.sitkUInt8
    assert sitk.GetArrayFromImage(_read(folder / "patient0002_4CH_sequence.mhd")).shape == (4, *SMALL)


def test_echonet_layout(tmp_path: Path) -> None:
    import cv2

    out = make_phantom(tmp_path / "echonet", n_patients=3, layout="echonet", seed=2, cycle_frames=10, progress=False)
    rows = list(csv.DictReader((out / "FileList.csv").open()))
    assert list(rows[0]) == [
        "FileName",
        "EF",
        "ESV",
        "EDV",
        "FrameHeight",
        "FrameWidth",
        "FPS",
        "NumberOfFrames",
        "Split",
    ]
    assert sorted(r["Split"] for r in rows) == ["TEST", "TRAIN", "VAL"]
    tracings = list(csv.DictReader((out / "VolumeTracings.csv").open()))
    truth = json.loads((out / "phantom_truth.json").read_text())["patients"]
    for index, row in enumerate(rows, start=1):
        name, rec = row["FileName"], truth[ph.patient_id(index)]
        assert not name.endswith(".avi") and name == rec["echonet"]["file_name"]
        capture = cv2.VideoCapture(str(out / "Videos" / f"{name}.avi"))
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(frame)
        capture.release()
        assert len(frames) == int(row["NumberOfFrames"]) and frames[0].shape == (112, 112, 3)
        assert float(row["EF"]) == pytest.approx(rec["truth"]["ef_pct"], abs=1e-3)
        mine = [t for t in tracings if t["FileName"] == f"{name}.avi"]
        order = list(dict.fromkeys(int(t["Frame"]) for t in mine))
        assert order == [rec["echonet"]["es_frame"], rec["echonet"]["ed_frame"]] and len(mine) == 2 * 21
        _check_tracings_match_labels(index, mine, rec)


def _check_tracings_match_labels(index: int, rows: list[dict[str, str]], rec: dict) -> None:
    """The polygon of X1/Y1 then reversed X2/Y2 (long axis row left out) covers the true LV of that frame."""
    from skimage.draw import polygon

    cycle = simulate_cycle(index, "camus-like", 2, cycle_frames=10, render_images=False)
    for frame in (cycle.ed_frame, cycle.es_frame):
        t = np.array([[float(r[k]) for k in ("X1", "Y1", "X2", "Y2")] for r in rows if int(r["Frame"]) == frame])
        x, y = np.r_[t[1:, 0], t[1:, 2][::-1]], np.r_[t[1:, 1], t[1:, 3][::-1]]
        mask = np.zeros((112, 112), bool)
        mask[polygon(y, x, (112, 112))] = True
        truth = cycle.labels[frame] == 1
        dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
        assert dice > 0.9
        length_mm = np.hypot((t[0, 2] - t[0, 0]) * cycle.spacing[0], (t[0, 3] - t[0, 1]) * cycle.spacing[1])
        shape = ph.lv_shape_at(
            cycle.params.lv_ed, cycle.params.rho, cycle.params.lam, 0.0 if frame == cycle.ed_frame else 1.0
        )
        assert length_mm == pytest.approx(shape.base_z, rel=1e-6)  # first row: apex to mid-annulus


def test_nnunet_layout(tmp_path: Path) -> None:
    from echogains.data.nnunet import RawDataset

    out = make_phantom(
        tmp_path / "Dataset901_Phantom",
        n_patients=3,
        layout="nnunet",
        labels="lv,myo",
        image_size=SMALL,
        progress=False,
    )
    ds = RawDataset(out)
    assert ds.labels == {"background": 0, "LV": 1, "MYO": 2}
    assert len(ds.case_ids("Ts")) == 4 and len(ds.case_ids("Tr")) == 8  # 1 test patient x 2 views x 2 phases
    assert ds.splits is not None and len(ds.splits) == 1
    for case in ds.case_ids():
        image, label, spacing = ds.load(case)
        rec = ds.record(case)
        assert set(np.unique(label)) == {0, 1, 2}
        assert spacing == pytest.approx(rec["spacing_mm"]) and spacing[0] == pytest.approx(2 * spacing[1])
        assert case == f"{rec['patient']}_{rec['view']}_{rec['phase']}" and ds.is_test(case) == (rec["split"] == "test")
        assert rec["reference"]["ef_pct"] == pytest.approx(rec["truth"]["ef_pct"]) and "sector" in rec
    assert (out / "phantom_truth.json").is_file()


def test_same_bytes_for_same_seed(tmp_path: Path) -> None:
    kwargs = dict(
        n_patients=2, layout="camus-nifti", seed=4, sequence=True, image_size=SMALL, n_frames=3, progress=False
    )
    a = _files(make_phantom(tmp_path / "a", **kwargs))
    b = _files(make_phantom(tmp_path / "b", **kwargs))
    assert a == b and len(a) == 2 * 14 + 3 + 1 + 2 * 2 + 1  # + truth curves: one CSV per half sequence, their JSON
    c = _files(make_phantom(tmp_path / "c", **{**kwargs, "seed": 5}))
    assert c.keys() == a.keys() and c != a


# ------------------------------------------------------------------------------------------------
# Arguments
# ------------------------------------------------------------------------------------------------
BAD_ARGUMENTS = [
    {"n_patients": 0},
    {"n_patients": 2.5},
    {"n_patients": True},
    {"preset": "hunt4"},
    {"layout": "png"},
    {"seed": -1},
    {"sequence": "yes"},
    {"labels": "lv,rv"},
    {"labels": "la"},
    {"labels": None},
    {"image_size": (16, 16)},
    {"image_size": (64,)},
    {"depth_mm": 20},
    {"depth_mm": (160, 120)},
    {"opening_deg": 200},
    {"tilt_deg": 30, "opening_deg": 120},
    {"ef_percent": "high"},
    {"quality": "Great"},
    {"spacing": (0.0, 0.3)},
    {"n_frames": 1},
    {"anisotropy": (0.5, 1.0)},
    {"colour": "blue"},
]


@pytest.mark.parametrize("bad", BAD_ARGUMENTS, ids=[",".join(b) for b in BAD_ARGUMENTS])
def test_bad_arguments_fail_before_writing(tmp_path: Path, bad: dict) -> None:
    out = tmp_path / "out"
    with pytest.raises(EchoDataError):
        make_phantom(out, **{"n_patients": 2, "progress": False, **bad})
    assert not out.exists()


def test_non_empty_folder_and_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "camus"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(EchoDataError, match="not empty"):
        make_phantom(out, n_patients=1, image_size=SMALL, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    make_phantom(out, n_patients=3, image_size=SMALL, overwrite=True, progress=False)
    make_phantom(out, n_patients=2, image_size=SMALL, overwrite=True, progress=False)
    assert sorted(p.name for p in (out / "database_nifti").iterdir()) == [
        "patient0001",
        "patient0002",
    ]  # stale patient removed
    assert (out / "notes.txt").read_text() == "keep me"  # files that are not the phantom's are left alone


# ------------------------------------------------------------------------------------------------
# The real converters run on the phantom
# ------------------------------------------------------------------------------------------------
def test_camus_converter_reads_the_phantom(tmp_path: Path) -> None:
    from echogains.data.camus import convert_camus

    src = make_phantom(tmp_path / "camus", n_patients=3, layout="camus-nifti", image_size=SMALL, progress=False)
    out = convert_camus(src, tmp_path / "Dataset902_Conv", progress=False)
    cases = json.loads((out / "cases.json").read_text())
    truth = json.loads((src / "phantom_truth.json").read_text())["patients"]
    assert len(cases) == 12
    for rec in cases.values():
        assert rec["reference"]["ef_pct"] == pytest.approx(truth[rec["patient"]]["truth"]["ef_pct"], abs=0.006)
        assert rec["split"] == truth[rec["patient"]]["split"]


def test_echonet_converter_reads_the_phantom(tmp_path: Path) -> None:
    from echogains.data.echonet import convert_echonet

    src = make_phantom(tmp_path / "echonet", n_patients=3, layout="echonet", cycle_frames=8, progress=False)
    out = convert_echonet(src, tmp_path / "Dataset903_Conv", progress=False)
    cases = json.loads((out / "cases.json").read_text())
    records = json.loads((src / "phantom_truth.json").read_text())["patients"].values()
    truth = {rec["echonet"]["file_name"]: rec["echonet"] for rec in records}
    assert len(cases) == 6
    for rec in cases.values():
        assert rec["frames"] == {"ED": truth[rec["patient"]]["ed_frame"], "ES": truth[rec["patient"]]["es_frame"]}
