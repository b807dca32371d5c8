"""End to end: evaluate() on a tiny hand-made nnU-Net raw dataset; input errors raise before anything is written."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from echogains.data.nnunet import RawDatasetWriter
from echogains.evaluation.clinical import ejection_fraction
from echogains.evaluation.evaluate import evaluate
from echogains.utils import EchoDataError

SPACING = (0.9, 0.6)  # sx >= sy: a 1-row shift gives HD = sy exactly (no closer edge pixel sideways)
SHAPE = (96, 64)
SECTORS = {"p1": {"depth_mm": 120.0, "opening_deg": 60.0}, "p2": {"depth_mm": 160.0, "opening_deg": 75.0}}


def _truncated_volume(a: float, b: float, c: float, cut: float) -> float:
    return math.pi * a * b * ((cut + c) - (cut**3 + c**3) / (3 * c**2)) / 1000.0


def _label(semi_u: float, semi_w: float) -> np.ndarray:
    """LV (1): ellipse truncated at the base plane w = semi_w / 2; MYO (2): 3 mm ring, open at the base."""
    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    u, w = cols * SPACING[0] - 28.8, rows * SPACING[1] - 30.0
    cut = semi_w / 2
    lv = ((u / semi_u) ** 2 + (w / semi_w) ** 2 <= 1.0) & (w <= cut)
    dist = ndimage.distance_transform_edt(~lv, sampling=(SPACING[1], SPACING[0]))
    label = np.zeros(SHAPE, np.uint8)
    label[(dist > 0) & (dist <= 3.0) & (w <= cut)] = 2
    label[lv] = 1
    return label


def _shapes(patient: str) -> dict[tuple[str, str], tuple[float, float]]:
    k = 1.0 if patient == "p1" else 1.1
    return {
        ("2CH", "ED"): (11.0 * k, 22.0),
        ("4CH", "ED"): (13.0 * k, 22.0),
        ("2CH", "ES"): (8.0 * k, 19.0),
        ("4CH", "ES"): (9.5 * k, 19.0),
    }


def _analytic_ef(patient: str) -> float:
    s = _shapes(patient)
    edv = _truncated_volume(s[("2CH", "ED")][0], s[("4CH", "ED")][0], 22.0, 11.0)
    esv = _truncated_volume(s[("2CH", "ES")][0], s[("4CH", "ES")][0], 19.0, 9.5)
    return ejection_fraction(edv, esv)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """Dataset with 2 test patients x 2 views x 2 phases (+2 training cases) and predictions = GT shifted 1 row."""
    root = tmp_path_factory.mktemp("eval") / "Dataset990_Tiny"
    writer = RawDatasetWriter(root, {"background": 0, "LV": 1, "MYO": 2})
    rng = np.random.default_rng(0)
    for patient in ("p1", "p2"):
        ef = _analytic_ef(patient)
        for (view, phase), (semi_u, semi_w) in _shapes(patient).items():
            record = {
                "patient": patient,
                "view": view,
                "phase": phase,
                "sector": SECTORS[patient],
                "reference": {"edv_ml": None, "esv_ml": None, "ef_pct": ef + (1.0 if patient == "p1" else -2.0)},
            }
            image = rng.integers(0, 255, SHAPE).astype(np.uint8)
            writer.add_case(
                f"{patient}_{view}_{phase}", image, _label(semi_u, semi_w), spacing=SPACING, record=record, test=True
            )
    for patient in ("t1", "t2"):
        writer.add_case(
            f"{patient}_4CH_ED",
            np.zeros(SHAPE, np.uint8),
            _label(12.0, 22.0),
            spacing=SPACING,
            record={"patient": patient},
        )
    writer.finalize()
    pred_dir = root.parent / "pred"
    pred_dir.mkdir()
    for label_file in sorted((root / "labelsTs").glob("*.nii.gz")):
        _write_prediction(label_file, pred_dir / label_file.name, lambda a: np.roll(a, 1, axis=0))
    return root, pred_dir


def _write_prediction(label_file: Path, out: Path, change) -> None:
    ref = sitk.ReadImage(str(label_file))
    pred = sitk.GetImageFromArray(change(sitk.GetArrayFromImage(ref)))
    pred.CopyInformation(ref)
    sitk.WriteImage(pred, str(out), True)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_evaluate_end_to_end(tiny, tmp_path):
    root, pred_dir = tiny
    out = tmp_path / "report"
    summary = evaluate(pred_dir, root, out, progress=False)

    names = {
        "metrics_per_case.csv",
        "metrics_summary.json",
        "ef_per_patient.csv",
        "report.html",
        "bland_altman_ef_pred_vs_reference.png",
        "correlation_ef_pred_vs_reference.png",
        "bland_altman_ef_pred_vs_gt.png",
        "correlation_ef_pred_vs_gt.png",
    }
    assert names <= {p.name for p in out.iterdir()}
    assert sorted(p.stem for p in (out / "overlays").glob("*.png")) == sorted(
        p.name[:-7] for p in (root / "labelsTs").glob("*.nii.gz")
    )
    assert json.loads((out / "metrics_summary.json").read_text()) == summary

    rows = _read_csv(out / "metrics_per_case.csv")
    assert len(rows) == 8
    for row in rows:
        gt = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "labelsTs" / f"{row['case_id']}.nii.gz")))
        for name, value in (("LV", 1), ("MYO", 2)):
            a, b = gt == value, np.roll(gt, 1, axis=0) == value
            assert float(row[f"{name}_dice"]) == pytest.approx(2 * (a & b).sum() / (a.sum() + b.sum()))  # numpy oracle
            assert float(row[f"{name}_hd_mm"]) == pytest.approx(SPACING[1])  # one row of sy mm
            assert float(row[f"{name}_msd_mm"]) <= SPACING[1] + 1e-9
            assert row[f"{name}_failure"] == "false"

    seg = summary["segmentation"]
    assert seg["all"]["LV"]["n_cases"] == 8 and seg["all"]["LV"]["n_failures"] == 0
    assert seg["all"]["LV"]["hd_mm"]["mean"] == pytest.approx(SPACING[1])
    for group in (
        "phase=ED",
        "phase=ES",
        "view=2CH",
        "view=4CH",
        "depth<150mm",
        "depth>=150mm",
        "angle<70deg",
        "angle>=70deg",
    ):
        assert seg[group]["LV"]["n_cases"] == 4, group

    patients = {r["patient"]: r for r in _read_csv(out / "ef_per_patient.csv")}
    assert set(patients) == {"p1", "p2"}
    assert patients["p1"]["acquisition_subset"] == "standard" and patients["p2"]["acquisition_subset"] == "deep_or_wide"
    for p, r in patients.items():
        assert r["method_pred"] == r["method_gt"] == "biplane"
        assert float(r["ef_gt_pct"]) == pytest.approx(_analytic_ef(p), abs=2.5)  # coarse 64 x 96 masks
        assert abs(float(r["ef_pred_pct"]) - float(r["ef_gt_pct"])) < 2.0  # a 1-row shift barely changes EF
    clinical = summary["clinical"]
    assert clinical["n_feasible_pred"] == 2 and clinical["n_with_reference"] == 2
    ef_ref = clinical["agreement"]["GT masks vs reference"]["ef_pct"]
    d = [float(patients[p]["ef_gt_pct"]) - float(patients[p]["ef_ref_pct"]) for p in ("p1", "p2")]
    assert ef_ref["bias"] == pytest.approx(np.mean(d)) and ef_ref["mae"] == pytest.approx(np.mean(np.abs(d)))
    assert set(clinical["agreement_by_acquisition_subset"]) == {"standard", "deep_or_wide"}
    assert clinical["acquisition_subsets"]["n_patients"] == {"standard": 1, "deep_or_wide": 1}

    html = (out / "report.html").read_text()
    assert "normal range" not in html and "Acquisition subsets of EchoGAINS Table 4" in html
    assert html.count("<h3>standard (") == 1 and html.count("<h3>deep_or_wide (") == 1
    assert "Labels evaluated: <b>LV, MYO</b>" in html and "not evaluated" not in html
    links = set(re.findall(r"(?:href|src)='([^']+)'", html))
    assert {
        "metrics_per_case.csv",
        "metrics_summary.json",
        "ef_per_patient.csv",
        "bland_altman_ef_pred_vs_reference.png",
    } <= links
    assert all(not Path(link).is_absolute() and (out / link).is_file() for link in links)


def test_evaluate_is_deterministic_and_label_selection(tiny, tmp_path):
    root, pred_dir = tiny
    a = evaluate(pred_dir, root, tmp_path / "a", labels="lv", overlays=False, progress=False)
    evaluate(pred_dir, root, tmp_path / "b", labels=["LV"], overlays=False, progress=False)
    assert list(a["labels"]) == ["LV"] and not (tmp_path / "a" / "overlays").exists()
    for name in ("metrics_per_case.csv", "ef_per_patient.csv", "bland_altman_ef_pred_vs_gt.png", "report.html"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def _copy_predictions(pred_dir: Path, dest: Path) -> Path:
    dest.mkdir()
    for p in pred_dir.iterdir():
        (dest / p.name).write_bytes(p.read_bytes())
    return dest


@pytest.mark.parametrize(
    "problem, match",
    [
        ("spacing", r"p1_2CH_ED\.nii\.gz.*spacing"),
        ("size", r"p1_2CH_ED\.nii\.gz.*size"),
        ("values", r"p1_2CH_ED\.nii\.gz.*label values \[5\]"),
        ("missing", r"predictions missing: p1_2CH_ED\.nii\.gz"),
    ],
)
def test_bad_predictions_raise_before_writing(tiny, tmp_path, problem, match):
    root, pred_dir = tiny
    bad = _copy_predictions(pred_dir, tmp_path / "pred")
    target = bad / "p1_2CH_ED.nii.gz"
    ref = sitk.ReadImage(str(target))
    if problem == "spacing":
        ref.SetSpacing((0.9, 0.5))
        sitk.WriteImage(ref, str(target), True)
    elif problem == "size":
        sitk.WriteImage(sitk.GetImageFromArray(np.zeros((SHAPE[0], SHAPE[1] + 1), np.uint8)), str(target), True)
    elif problem == "values":
        array = sitk.GetArrayFromImage(ref)
        array[0, 0] = 5
        img = sitk.GetImageFromArray(array)
        img.CopyInformation(ref)
        sitk.WriteImage(img, str(target), True)
    else:
        target.unlink()
    out = tmp_path / "out"
    with pytest.raises(EchoDataError, match=match):
        evaluate(bad, root, out, progress=False)
    assert not out.exists()


def test_unknown_label_name_raises(tiny, tmp_path):
    root, pred_dir = tiny
    with pytest.raises(EchoDataError, match="dataset.json.*LA"):
        evaluate(pred_dir, root, tmp_path / "out", labels="LV,LA", progress=False)
    assert not (tmp_path / "out").exists()


def test_empty_prediction_counts_as_failure(tiny, tmp_path):
    root, pred_dir = tiny
    bad = _copy_predictions(pred_dir, tmp_path / "pred")
    _write_prediction(root / "labelsTs" / "p1_2CH_ED.nii.gz", bad / "p1_2CH_ED.nii.gz", np.zeros_like)
    summary = evaluate(bad, root, tmp_path / "out", overlays=False, progress=False)
    row = next(r for r in _read_csv(tmp_path / "out" / "metrics_per_case.csv") if r["case_id"] == "p1_2CH_ED")
    assert row["LV_dice"] == "0" and row["LV_hd_mm"] == "" and row["LV_failure"] == "true"
    lv = summary["segmentation"]["all"]["LV"]
    assert lv["n_failures"] == 1 and lv["dice"]["n"] == 8 and lv["hd_mm"]["n"] == 7
    assert summary["segmentation"]["phase=ES"]["LV"]["n_failures"] == 0
    patients = {r["patient"]: r for r in _read_csv(tmp_path / "out" / "ef_per_patient.csv")}
    # p1 lost its 2CH ED frame: area-length on the 4CH view (present at ED and ES) instead of biplane
    assert patients["p1"]["method_pred"] == "area-length 4CH" and patients["p1"]["method_gt"] == "biplane"
    assert patients["p2"]["method_pred"] == "biplane"


# --- only the labels a model predicts; acquisition subsets; uncertainty gallery ----------------------------------
def _lv_only(pred_dir: Path, dest: Path) -> Path:
    dest.mkdir()
    for p in sorted(pred_dir.glob("*.nii.gz")):
        _write_prediction(p, dest / p.name, lambda a: np.where(a == 1, 1, 0).astype(a.dtype))
    return dest


def _segmentation_rows(html: str) -> list[tuple[str, str]]:
    """(group, label) of each row of the report's segmentation table (group names unescaped)."""
    table = html.split("<h2>Segmentation", 1)[1].split("<h2>", 1)[0]
    rows = re.findall(r"<tr><td class='text'>([^<]*)</td><td class='text'>([^<]*)</td><td>\d+</td>", table)
    return [(group.replace("&lt;", "<").replace("&gt;", ">"), label) for group, label in rows]


def test_labels_absent_from_every_prediction_are_not_scored(tiny, tmp_path):
    root, pred_dir = tiny
    lv_only = _lv_only(pred_dir, tmp_path / "pred")
    summary = evaluate(lv_only, root, tmp_path / "out", overlays=False, progress=False)
    assert summary["labels"] == {"LV": 1} and summary["labels_not_evaluated"] == {"MYO": 2}
    assert "at least one prediction contains" in summary["label_selection"]
    with (tmp_path / "out" / "metrics_per_case.csv").open() as f:
        header = f.readline().strip().split(",")
    assert not [c for c in header if c.startswith("MYO")] and "LV_failure" in header
    assert all(set(groups) == {"LV"} for groups in summary["segmentation"].values())
    html = (tmp_path / "out" / "report.html").read_text()
    rows = _segmentation_rows(html)
    assert rows and {label for _, label in rows} == {"LV"}
    assert "not evaluated: MYO (no prediction contains them" in html
    # asked for explicitly, the missing label is scored: every case a failure
    asked = evaluate(lv_only, root, tmp_path / "asked", labels="LV,MYO", overlays=False, progress=False)
    assert asked["segmentation"]["all"]["MYO"]["n_failures"] == 8 and asked["labels_not_evaluated"] == {}
    assert asked["label_selection"].startswith("the labels asked for")


def test_no_foreground_at_all_scores_every_label_as_failure(tiny, tmp_path):
    root, pred_dir = tiny
    empty = tmp_path / "pred"
    empty.mkdir()
    for p in sorted(pred_dir.glob("*.nii.gz")):
        _write_prediction(p, empty / p.name, np.zeros_like)
    summary = evaluate(empty, root, tmp_path / "out", overlays=False, progress=False)
    assert summary["labels"] == {"LV": 1, "MYO": 2}
    assert (
        summary["segmentation"]["all"]["LV"]["n_failures"] == summary["segmentation"]["all"]["MYO"]["n_failures"] == 8
    )


def _dataset_copy(root: Path, dest: Path, sector: dict[str, float]) -> Path:
    """A copy of the dataset with every case's sector geometry replaced by ``sector``."""
    import shutil

    shutil.copytree(root, dest)
    cases = json.loads((dest / "cases.json").read_text())
    for record in cases.values():
        if record.get("sector"):
            record["sector"] = dict(sector)
    (dest / "cases.json").write_text(json.dumps(cases))
    return dest


def test_empty_acquisition_subsets_have_no_table(tiny, tmp_path):
    root, pred_dir = tiny
    deep = _dataset_copy(root, tmp_path / "Dataset991_Deep", {"depth_mm": 160.0, "opening_deg": 60.0})
    summary = evaluate(pred_dir, deep, tmp_path / "out", overlays=False, progress=False)
    clinical = summary["clinical"]
    assert clinical["acquisition_subsets"]["n_patients"] == {"standard": 0, "deep_or_wide": 2}
    assert set(clinical["agreement_by_acquisition_subset"]) == {"deep_or_wide"}
    seg = summary["segmentation"]
    assert "depth>=150mm" in seg and "depth<150mm" not in seg and "angle>=70deg" not in seg
    assert all(stats["n_cases"] > 0 for groups in seg.values() for stats in groups.values())
    html = (tmp_path / "out" / "report.html").read_text()
    assert "<h3>standard (" not in html and "<h3>deep_or_wide (" not in html  # no empty table, no repeat of "all"
    assert "Every patient is in the deep_or_wide subset" in html
    assert "n = 0" not in html and all(
        group not in ("depth<150mm", "angle>=70deg") for group, _ in _segmentation_rows(html)
    )
    patients = _read_csv(tmp_path / "out" / "ef_per_patient.csv")
    assert {r["acquisition_subset"] for r in patients} == {"deep_or_wide"}


def _write_uncertainty(label_file: Path, out: Path, values) -> None:
    ref = sitk.ReadImage(str(label_file))
    image = sitk.GetImageFromArray(values(sitk.GetArrayFromImage(ref)).astype(np.float32))
    image.CopyInformation(ref)
    sitk.WriteImage(image, str(out), True)


def test_uncertainty_maps_are_shown_with_their_scale(tiny, tmp_path):
    root, pred_dir = tiny
    preds = _copy_predictions(pred_dir, tmp_path / "pred")
    labels = sorted((root / "labelsTs").glob("*.nii.gz"))
    for label_file in labels[:5]:
        _write_uncertainty(
            label_file,
            preds / label_file.name.replace(".nii.gz", "_uncertainty.nii.gz"),
            lambda a: ndimage.gaussian_filter((a == 1).astype(float), 2) * 0.9,
        )
    summary = evaluate(preds, root, tmp_path / "out", overlays=False, progress=False)
    assert summary["uncertainty"]["gallery"] == "uncertainty.png" and len(summary["uncertainty"]["maps"]) == 4
    assert (tmp_path / "out" / "uncertainty.png").stat().st_size > 10_000
    html = (tmp_path / "out" / "report.html").read_text()
    assert (
        "<h2>Uncertainty maps</h2>" in html
        and "src='uncertainty.png'" in html
        and "from 0 (every sample agrees)" in html
    )
    no_maps = evaluate(pred_dir, root, tmp_path / "plain", overlays=False, progress=False)
    assert "uncertainty" not in no_maps and "Uncertainty maps" not in (tmp_path / "plain" / "report.html").read_text()
    bad = labels[0].name.replace(".nii.gz", "_uncertainty.nii.gz")
    _write_uncertainty(labels[0], preds / bad, lambda a: np.full(a.shape, 2.0))
    with pytest.raises(EchoDataError, match=re.escape(bad) + ".*outside"):
        evaluate(preds, root, tmp_path / "bad", overlays=False, progress=False)
    assert not (tmp_path / "bad").exists()


def test_labels_declared_by_the_model_are_scored_even_when_never_predicted(tiny, tmp_path):
    """nnUNetv2_predict writes the model's dataset.json beside its predictions: its labels are the model's labels."""
    root, pred_dir = tiny
    lv_only = _lv_only(pred_dir, tmp_path / "pred")
    (lv_only / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "LV": 1, "MYO": 2}}))
    summary = evaluate(lv_only, root, tmp_path / "out", overlays=False, progress=False)
    assert summary["labels"] == {"LV": 1, "MYO": 2} and "declares" in summary["label_selection"]
    assert summary["segmentation"]["all"]["MYO"]["n_failures"] == 8
    (lv_only / "dataset.json").write_text("{not json")
    with pytest.raises(EchoDataError, match="dataset.json"):
        evaluate(lv_only, root, tmp_path / "bad", overlays=False, progress=False)
