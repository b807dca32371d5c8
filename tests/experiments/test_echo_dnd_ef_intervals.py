"""``experiments.echo_dnd_ef_intervals`` end to end with a stand-in for the bundle's inference.

The stand-in writes what the bundle writes (prediction, ``{case}_samples.nii.gz``, the run record with ``members``):
the prediction is the ground-truth LV; of the 4 members, Gaussian member 1 covers most of the image on every image
(as the demo weights' Gaussian member 3 does), the others are the LV and the LV shifted by one row.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from experiments import echo_dnd_ef_intervals as efi

NAMES = ["gaussian", "gaussian", "bernoulli", "bernoulli"]


def _fake_infer(ds: Path, pred: Path, ensemble: int, log_file: Path) -> float:
    assert ensemble == 2
    pred.mkdir(parents=True)
    cases = []
    for label_file in sorted((ds / "labelsTs").glob("*.nii.gz")):
        case = label_file.name[: -len(".nii.gz")]
        ref = sitk.ReadImage(str(label_file))
        lv = (sitk.GetArrayFromImage(ref) == 1).astype(np.uint8)
        huge = np.zeros_like(lv)
        huge[4:-4, 4:-4] = 1
        members = np.stack([lv, huge, lv, np.roll(lv, 1, axis=0)])
        mask = sitk.GetImageFromArray(lv)
        mask.CopyInformation(ref)
        sitk.WriteImage(mask, str(pred / f"{case}.nii.gz"), True)
        stack = sitk.GetImageFromArray(members)
        stack.SetSpacing((*ref.GetSpacing(), 1.0))
        stack.SetOrigin((*ref.GetOrigin(), 0.0))
        sitk.WriteImage(stack, str(pred / f"{case}_samples.nii.gz"), True)
        cases.append({"case_id": case, "members": NAMES})
    (pred / "echo_dnd_inference.json").write_text(json.dumps({"ensemble": ensemble, "cases": cases}))
    return 1.0


def test_run_writes_coverage_width_diagnostics_and_patients(tmp_path, monkeypatch):
    monkeypatch.setattr(efi, "_infer", _fake_infer)
    out = tmp_path / "out"
    md = efi.run(str(out), str(tmp_path / "work"), seed=3, n_patients=10, ensemble=2, interval_members="bernoulli")
    results = json.loads((out / "echo_dnd_ef_intervals.json").read_text())
    intervals = results["intervals"]
    assert intervals["members_used"] == "bernoulli" and intervals["n_patients"] == 1
    assert intervals["members_per_image"] == [2] and intervals["draws_per_patient"] == [16]
    variants = results["diagnostics"]["variants"]
    bernoulli = variants["bernoulli members only, every combination"]
    assert bernoulli["width_mean"] == intervals["width_pct"]["mean"]  # the same interval as evaluate's
    assert variants["all members, every combination (evaluate's default)"]["width_mean"] > 10 * bernoulli["width_mean"]
    flagged = [m["n_images_outside_0.5_2"] for m in results["diagnostics"]["member_areas"]]
    assert flagged == [0, 4, 0, 0]
    text = md.read_text()
    assert "(members: bernoulli): " in text and "| 1 | gaussian |" in text
    assert results["settings"]["ensemble"] == 2 and results["inference_record"]["ensemble"] == 2
