"""evaluate() reports metrics per image quality grade when the records carry one (CAMUS ``ImageQuality``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from echogains.data.nnunet import RawDatasetWriter
from echogains.evaluation.evaluate import evaluate

SHAPE = (48, 40)


def _disc(radius: float) -> np.ndarray:
    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    return (((rows - 24) ** 2 + (cols - 20) ** 2) <= radius**2).astype(np.uint8)


def _dataset(root: Path, grades: dict[str, str | None]) -> tuple[Path, Path]:
    """One test case per patient; the prediction is the truth for Good, a smaller disc for the others."""
    writer = RawDatasetWriter(root, {"background": 0, "LV": 1})
    pred_dir = root.parent / "pred"
    pred_dir.mkdir()
    for patient, grade in grades.items():
        record = {"patient": patient, "view": "4CH", "phase": "ED", "image_quality": grade}
        writer.add_case(
            f"{patient}_4CH_ED", np.zeros(SHAPE, np.uint8), _disc(10), spacing=(1.0, 1.0), record=record, test=True
        )
    for patient in ("t1", "t2"):  # the writer needs training cases
        writer.add_case(
            f"{patient}_4CH_ED", np.zeros(SHAPE, np.uint8), _disc(9), spacing=(1.0, 1.0), record={"patient": patient}
        )
    writer.finalize()
    for patient, grade in grades.items():
        ref = sitk.ReadImage(str(root / "labelsTs" / f"{patient}_4CH_ED.nii.gz"))
        pred = sitk.GetImageFromArray(_disc(10 if grade == "Good" else 8))
        pred.CopyInformation(ref)
        sitk.WriteImage(pred, str(pred_dir / f"{patient}_4CH_ED.nii.gz"))
    return root, pred_dir


def test_summary_has_one_group_per_recorded_grade(tmp_path: Path) -> None:
    grades = {"p1": "Good", "p2": "Good", "p3": "Poor", "p4": None}
    root, pred = _dataset(tmp_path / "Dataset991_Grades", grades)
    seg = evaluate(pred, root, tmp_path / "out", labels="LV", overlays=False, progress=False)["segmentation"]
    assert seg["quality=Good"]["LV"]["n_cases"] == 2 and seg["quality=Poor"]["LV"]["n_cases"] == 1
    assert "quality=Medium" not in seg and "quality=None" not in seg and "quality=" not in seg  # no empty group
    assert seg["quality=Good"]["LV"]["dice"]["mean"] == 1.0
    inner, outer = _disc(8).sum(), _disc(10).sum()
    assert (
        abs(seg["quality=Poor"]["LV"]["dice"]["mean"] - 2 * inner / (inner + outer)) < 1e-6
    )  # numpy oracle (summary rounds)


def test_no_grade_groups_without_grades(tmp_path: Path) -> None:
    root, pred = _dataset(tmp_path / "Dataset992_NoGrades", {"p1": None, "p2": None})
    seg = evaluate(pred, root, tmp_path / "out", labels="LV", overlays=False, progress=False)["segmentation"]
    assert not [g for g in seg if g.startswith("quality")]
