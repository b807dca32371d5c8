"""EF intervals from sample masks in evaluate(): an oracle, the no-samples case and each bad samples file."""

from __future__ import annotations

import csv
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from echogains.data.nnunet import RawDatasetWriter
from echogains.evaluation.clinical import ejection_fraction, simpson_biplane_volume
from echogains.evaluation.ef_intervals import draw_indices
from echogains.evaluation.evaluate import evaluate
from echogains.utils import EchoDataError

SPACING = (0.9, 0.6)
SHAPE = (96, 64)
VIEWS, PHASES = ("2CH", "4CH"), ("ED", "ES")
#: semi-axes (across, along) of each image's LV; the members scale ``across`` by these factors
SEMI = {
    ("2CH", "ED"): (11.0, 22.0),
    ("4CH", "ED"): (13.0, 22.0),
    ("2CH", "ES"): (8.0, 19.0),
    ("4CH", "ES"): (9.5, 19.0),
}
FACTORS = {"ED": (0.94, 1.0, 1.05), "ES": (0.9, 1.0, 1.12)}
INTERVAL_COLUMNS = ("ef_low_pct", "ef_high_pct", "ef_interval_members", "ef_interval_samples")


def _lv(across: float, along: float) -> np.ndarray:
    """Ellipse truncated at its base plane (w = along / 2): the base is the wide end, the apex at the top."""
    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    u, w = cols * SPACING[0] - 28.8, rows * SPACING[1] - 30.0
    return ((u / across) ** 2 + (w / along) ** 2 <= 1.0) & (w <= along / 2)


def _members(patient: str, view: str, phase: str) -> list[np.ndarray]:
    k = 1.0 if patient == "p1" else 1.1
    across, along = SEMI[(view, phase)]
    return [_lv(across * k * f, along) for f in FACTORS[phase]]


def _write_samples(label_file: Path, out: Path, members: np.ndarray) -> None:
    """A samples file as the bundle writes it: (W, H, R) uint8, in-plane geometry of the label, 3 x 3 direction."""
    ref = sitk.ReadImage(str(label_file))
    image = sitk.GetImageFromArray(np.asarray(members, dtype=np.uint8))
    image.SetSpacing((*ref.GetSpacing(), 1.0))
    image.SetOrigin((*ref.GetOrigin(), 0.0))
    d = ref.GetDirection()
    image.SetDirection((d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(image, str(out), True)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path, Path]:
    """LV-only dataset (2 test patients x 2 views x 2 phases); predictions = GT; samples = 3 scaled ellipses."""
    base = tmp_path_factory.mktemp("intervals")
    root = base / "Dataset991_Intervals"
    writer = RawDatasetWriter(root, {"background": 0, "LV": 1})
    rng = np.random.default_rng(0)
    for patient, ref_ef in (("p1", 60.0), ("p2", 10.0)):
        for view, phase in itertools.product(VIEWS, PHASES):
            label = _members(patient, view, phase)[1].astype(np.uint8)
            record = {"patient": patient, "view": view, "phase": phase, "reference": {"ef_pct": ref_ef}}
            image = rng.integers(0, 255, SHAPE).astype(np.uint8)
            writer.add_case(f"{patient}_{view}_{phase}", image, label, spacing=SPACING, record=record, test=True)
    for patient in ("t1", "t2"):  # training cases: the writer needs some
        label = _lv(12.0, 22.0).astype(np.uint8)
        writer.add_case(f"{patient}_4CH_ED", np.zeros(SHAPE, np.uint8), label, spacing=SPACING)
    writer.finalize()
    plain, with_samples = base / "pred_plain", base / "pred_samples"
    plain.mkdir()
    with_samples.mkdir()
    for label_file in sorted((root / "labelsTs").glob("*.nii.gz")):
        shutil.copy(label_file, plain / label_file.name)
        shutil.copy(label_file, with_samples / label_file.name)
        patient, view, phase = label_file.name[: -len(".nii.gz")].split("_")
        name = label_file.name.replace(".nii.gz", "_samples.nii.gz")
        _write_samples(label_file, with_samples / name, np.stack(_members(patient, view, phase)))
    return root, plain, with_samples


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {r["patient"]: r for r in csv.DictReader(f)}


def _oracle_interval(
    patient: str, spacing: tuple[float, float], members: tuple[int, ...] = (0, 1, 2)
) -> tuple[float, float]:
    """Every combination of one member per image, EF by simpson_biplane_volume on the masks, 2.5-97.5 %.

    ``spacing``: as the label files store it (float32), which is what the evaluator reads.
    """
    m = {(v, p): _members(patient, v, p) for v, p in itertools.product(VIEWS, PHASES)}
    efs = []
    for a, b, c, d in itertools.product(members, repeat=4):
        edv = simpson_biplane_volume(m[("2CH", "ED")][a], spacing, m[("4CH", "ED")][b], spacing)
        esv = simpson_biplane_volume(m[("2CH", "ES")][c], spacing, m[("4CH", "ES")][d], spacing)
        efs.append(ejection_fraction(edv, esv))
    return float(np.percentile(efs, 2.5)), float(np.percentile(efs, 97.5))


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory) -> tuple[Path, Path]:
    root, plain, with_samples = data
    out = tmp_path_factory.mktemp("runs")
    evaluate(plain, root, out / "plain", progress=False)
    evaluate(with_samples, root, out / "samples", progress=False)
    return out / "plain", out / "samples"


def test_interval_columns_equal_the_oracle_percentiles(data, runs):
    rows = _rows(runs[1] / "ef_per_patient.csv")
    spacing = sitk.ReadImage(str(data[0] / "labelsTs" / "p1_2CH_ED.nii.gz")).GetSpacing()
    for patient in ("p1", "p2"):
        low, high = _oracle_interval(patient, spacing)
        row = rows[patient]
        assert float(row["ef_low_pct"]) == pytest.approx(low, rel=1e-8)
        assert float(row["ef_high_pct"]) == pytest.approx(high, rel=1e-8)
        assert (row["ef_interval_members"], row["ef_interval_samples"]) == ("3", "81")
        assert low < float(row["ef_pred_pct"]) < high  # the middle members are the prediction
        assert high - low > 5.0  # a real spread, not a degenerate interval


def test_summary_report_and_plot_show_the_intervals(runs):
    plain, with_samples = runs
    summary = json.loads((with_samples / "metrics_summary.json").read_text())
    intervals = summary["clinical"]["ef_intervals"]
    rows = _rows(with_samples / "ef_per_patient.csv")
    covered = [float(r["ef_low_pct"]) <= float(r["ef_ref_pct"]) <= float(r["ef_high_pct"]) for r in rows.values()]
    assert covered == [True, False]  # p1's reference 60 % lies in its interval, p2's 10 % does not
    assert intervals["coverage_reference"] == {"n": 2, "covered": 1, "fraction": 0.5}
    assert intervals["coverage_gt_masks"]["covered"] == 2  # the GT masks are the middle members
    widths = [float(r["ef_high_pct"]) - float(r["ef_low_pct"]) for r in rows.values()]
    assert intervals["width_pct"]["mean"] == pytest.approx(np.mean(widths), rel=1e-6)
    assert intervals["members_per_image"] == [3] and intervals["draws_per_patient"] == [81]
    assert intervals["finite_draws_per_patient"] == [81]
    html = (with_samples / "report.html").read_text()
    assert "interval from the sample masks" in html and "reference EF: 1 of 2" in html
    assert "interval from the sample masks" not in (plain / "report.html").read_text()
    plots = (("bland_altman_ef_pred_vs_reference.png", True), ("bland_altman_ef_gt_vs_reference.png", False))
    for name, differs in plots:
        assert ((plain / name).read_bytes() != (with_samples / name).read_bytes()) is differs, name


def test_without_samples_the_evaluation_is_unchanged(runs):
    plain, with_samples = runs
    a, b = _rows(plain / "ef_per_patient.csv"), _rows(with_samples / "ef_per_patient.csv")
    for patient in a:
        assert all(a[patient][c] == "" for c in INTERVAL_COLUMNS)
        assert {k: v for k, v in a[patient].items() if k not in INTERVAL_COLUMNS} == {
            k: v for k, v in b[patient].items() if k not in INTERVAL_COLUMNS
        }
    assert (plain / "metrics_per_case.csv").read_bytes() == (with_samples / "metrics_per_case.csv").read_bytes()
    s_plain = json.loads((plain / "metrics_summary.json").read_text())
    s_samples = json.loads((with_samples / "metrics_summary.json").read_text())
    assert "ef_intervals" not in s_plain["clinical"]
    s_samples["clinical"].pop("ef_intervals")
    for s in (s_plain, s_samples):
        s.pop("predictions")
    assert s_plain == s_samples


def test_identical_members_give_the_point_estimate(data, tmp_path):
    root, plain, _ = data
    pred = tmp_path / "pred"
    shutil.copytree(plain, pred)
    for label_file in sorted((root / "labelsTs").glob("*.nii.gz")):
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(label_file)))
        _write_samples(label_file, pred / label_file.name.replace(".nii.gz", "_samples.nii.gz"), np.stack([label] * 4))
    evaluate(pred, root, tmp_path / "out", progress=False, overlays=False)
    for row in _rows(tmp_path / "out" / "ef_per_patient.csv").values():
        assert row["ef_low_pct"] == row["ef_high_pct"] == row["ef_pred_pct"]
        assert row["ef_interval_samples"] == str(4**4)


def test_chosen_chains_form_the_draws(data, tmp_path):
    root, _, with_samples = data
    pred = tmp_path / "pred"
    shutil.copytree(with_samples, pred)
    names = ["gaussian", "bernoulli", "bernoulli"]
    cases = [{"case_id": f.name[: -len("_samples.nii.gz")], "members": names} for f in pred.glob("*_samples.nii.gz")]
    with pytest.raises(EchoDataError, match="echo_dnd_inference.json: missing"):
        evaluate(pred, root, tmp_path / "none", progress=False, interval_members="bernoulli")
    (pred / "echo_dnd_inference.json").write_text(json.dumps({"cases": cases}))
    with pytest.raises(EchoDataError, match="no member of"):
        evaluate(pred, root, tmp_path / "none", progress=False, interval_members="staple")
    assert not (tmp_path / "none").exists()
    summary = evaluate(pred, root, tmp_path / "out", progress=False, overlays=False, interval_members="bernoulli")
    assert summary["clinical"]["ef_intervals"]["members_used"] == "bernoulli"
    spacing = sitk.ReadImage(str(root / "labelsTs" / "p1_2CH_ED.nii.gz")).GetSpacing()
    for patient, row in _rows(tmp_path / "out" / "ef_per_patient.csv").items():
        low, high = _oracle_interval(patient, spacing, members=(1, 2))
        assert float(row["ef_low_pct"]) == pytest.approx(low, rel=1e-8)
        assert float(row["ef_high_pct"]) == pytest.approx(high, rel=1e-8)
        assert (row["ef_interval_members"], row["ef_interval_samples"]) == ("2", "16")


def test_sampled_draws_are_seeded_and_in_range():
    a, b = draw_indices([10, 10, 10, 10], "p1", max_draws=500), draw_indices([10, 10, 10, 10], "p1", max_draws=500)
    assert a.shape == (500, 4) and np.array_equal(a, b)
    assert not np.array_equal(a, draw_indices([10, 10, 10, 10], "p2", max_draws=500))
    assert a.min() == 0 and a.max() == 9
    every = draw_indices([2, 3], "p1")
    assert sorted(map(tuple, every.tolist())) == list(itertools.product(range(2), range(3)))


def _break(pred: Path, root: Path, problem: str) -> str:
    """Spoil one samples file of p1; return the name the error must give."""
    name = {"missing": "p1_4CH_ES_samples.nii.gz"}.get(problem, "p1_2CH_ED_samples.nii.gz")
    path, label_file = pred / name, root / "labelsTs" / name.replace("_samples", "")
    members = np.stack(_members("p1", "2CH", "ED"))
    if problem == "unreadable":
        path.write_bytes(b"not a nifti file at all")
    elif problem == "geometry":
        _write_samples(label_file, path, members)
        image = sitk.ReadImage(str(path))
        image.SetSpacing((SPACING[0] * 1.5, SPACING[1], 1.0))
        sitk.WriteImage(image, str(path), True)
    elif problem == "members":
        _write_samples(label_file, path, members[:2])
    elif problem == "non-binary":
        members = members.astype(np.uint8)
        members[0] *= 2
        _write_samples(label_file, path, members)
    elif problem == "missing":
        path.unlink()
    return name


@pytest.mark.parametrize(
    "problem, match",
    [
        ("unreadable", "corrupt gzip"),
        ("geometry", "in-plane spacing"),
        ("members", "2 members, but the patient's other images have 3"),
        ("non-binary", "binary 0/1"),
        ("missing", "missing, while"),
    ],
)
def test_bad_samples_raise_one_line_before_writing(data, tmp_path, problem, match):
    root, _, with_samples = data
    pred = tmp_path / "pred"
    shutil.copytree(with_samples, pred)
    name = _break(pred, root, problem)
    out = tmp_path / "out"
    with pytest.raises(EchoDataError, match=match) as err:
        evaluate(pred, root, out, progress=False)
    assert name in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()


def test_draws_with_an_empty_member_are_left_out_and_counted(data, tmp_path):
    """Member 0 of one image empty: the 27 of 81 draws that use it have no EF; the CSV counts the 54 used."""
    root, _, with_samples = data
    preds = tmp_path / "preds"
    shutil.copytree(with_samples, preds)
    path = preds / "p1_2CH_ED_samples.nii.gz"
    image = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(image)
    arr[0] = 0
    emptied = sitk.GetImageFromArray(arr)
    emptied.CopyInformation(image)
    sitk.WriteImage(emptied, str(path), True)
    evaluate(preds, root, tmp_path / "out", progress=False)
    rows = _rows(tmp_path / "out" / "ef_per_patient.csv")
    assert rows["p1"]["ef_interval_samples"] == "54" and rows["p2"]["ef_interval_samples"] == "81"
    summary = json.loads((tmp_path / "out" / "metrics_summary.json").read_text())["clinical"]["ef_intervals"]
    assert summary["draws_per_patient"] == [81] and summary["finite_draws_per_patient"] == [54, 81]


def test_chains_asked_for_without_samples_files_are_named_in_a_warning(data, tmp_path, caplog):
    import logging

    root, plain, _ = data
    with caplog.at_level(logging.WARNING):
        evaluate(plain, root, tmp_path / "out", interval_members="bernoulli", progress=False)
    assert any("no {case}_samples.nii.gz" in r.getMessage() and str(plain) in r.getMessage() for r in caplog.records)
    assert all(not r["ef_low_pct"] for r in _rows(tmp_path / "out" / "ef_per_patient.csv").values())
