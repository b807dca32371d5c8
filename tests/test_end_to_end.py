"""End to end on CPU, with the commands a user types (README "nnU-Net plugin"):

phantom -> ``echogains convert-camus`` -> ``echogains expand-dataset`` (demo DDPM, fast sampler) ->
``nnUNetv2_plan_and_preprocess --verify_dataset_integrity`` -> ``nnUNetv2_train -tr nnUNetTrainerEchoSmoke`` ->
``nnUNetv2_predict`` -> ``echogains evaluate`` (Dice, HD in mm, EF).

The smoke trainer runs two iterations, so the masks are not meant to be good: the test checks that every step
runs, hands the next one what it needs, keeps the input geometry, and that the plugin's folds hold no augmented
case in validation. About two minutes on one core.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

BIN = Path(sys.executable).parent


def _cmd(name: str) -> str:
    exe = BIN / name
    if not exe.is_file():
        pytest.fail(f"{name} is not installed in {BIN} (pip install -e . installs it)")
    return str(exe)


def _run(args: list[str], env: dict[str, str], cwd: Path) -> str:
    proc = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{out[-4000:]}"
    return out


@pytest.mark.timeout(900)
def test_phantom_to_nnunet_to_evaluation(tmp_path):
    from echogains.ddpm import DEMO_WEIGHTS

    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "ECHOGAINS_NO_PROGRESS": "1",
        "nnUNet_raw": str(tmp_path / "nnUNet_raw"),
        "nnUNet_preprocessed": str(tmp_path / "nnUNet_preprocessed"),
        "nnUNet_results": str(tmp_path / "nnUNet_results"),
        "nnUNet_def_n_proc": "1",
    }
    echogains = _cmd("echogains")

    # eval "$(echogains nnunet-env)"
    line = _run([echogains, "nnunet-env"], env, tmp_path).strip().splitlines()[-1]
    assert line.startswith("export nnUNet_extTrainer=")
    env["nnUNet_extTrainer"] = line.split("=", 1)[1]

    _run(
        [
            echogains,
            "make-phantom",
            "camus",
            "--n_patients",
            "4",
            "--image_size",
            "64",
            "--seed",
            "3",
            "--progress",
            "False",
        ],
        env,
        tmp_path,
    )
    raw = tmp_path / "nnUNet_raw"
    _run(
        [echogains, "convert-camus", "camus", str(raw / "Dataset901_E2E"), "--labels", "lv,myo", "--progress", "False"],
        env,
        tmp_path,
    )
    aug = raw / "Dataset902_E2EAug"
    _run(
        [
            echogains,
            "expand-dataset",
            str(raw / "Dataset901_E2E"),
            str(aug),
            "--model",
            str(DEMO_WEIGHTS),
            "--augment",
            "combination",
            "--k",
            "1",
            "--sampler",
            "fast",
            "--schedule",
            "10,1,1",  # 10 network evaluations per image instead of the fast sampler's 97: the path, not the quality
            "--device",
            "cpu",
            "--progress",
            "False",
        ],
        env,
        tmp_path,
    )
    cases = json.loads((aug / "cases.json").read_text())
    augmented = [c for c, r in cases.items() if r["provenance"]["augmented"]]
    assert augmented, "expand-dataset wrote no augmented case"

    out = _run(
        [
            _cmd("nnUNetv2_plan_and_preprocess"),
            "-d",
            "902",
            "-c",
            "2d",
            "--verify_dataset_integrity",
            "-np",
            "1",
            "-npfp",
            "1",
        ],
        env,
        tmp_path,
    )
    assert "Dataset902_E2EAug" in out

    _run([_cmd("nnUNetv2_train"), "902", "2d", "0", "-tr", "nnUNetTrainerEchoSmoke", "-device", "cpu"], env, tmp_path)
    model = tmp_path / "nnUNet_results" / "Dataset902_E2EAug" / "nnUNetTrainerEchoSmoke__nnUNetPlans__2d"
    assert (model / "fold_0" / "checkpoint_final.pth").is_file()
    # the plugin's fold: grouped by patient, original cases only in validation
    log = next((model / "fold_0").glob("training_log_*.txt")).read_text()
    assert "Echo split from" in log
    splits = json.loads((aug / "splits_final.json").read_text())
    val_files = {p.name.removesuffix(".nii.gz") for p in (model / "fold_0" / "validation").glob("*.nii.gz")}
    assert val_files and val_files <= set(splits[0]["val"])
    assert not any(cases[c]["provenance"]["augmented"] for c in val_files)

    preds = tmp_path / "preds"
    _run(
        [
            _cmd("nnUNetv2_predict"),
            "-i",
            str(aug / "imagesTs"),
            "-o",
            str(preds),
            "-d",
            "902",
            "-c",
            "2d",
            "-f",
            "0",
            "-tr",
            "nnUNetTrainerEchoSmoke",
            "-device",
            "cpu",
            "-npp",
            "1",
            "-nps",
            "1",
        ],
        env,
        tmp_path,
    )
    test_cases = sorted(p.name.removesuffix(".nii.gz") for p in (aug / "labelsTs").glob("*.nii.gz"))
    assert test_cases
    for case in test_cases:  # predictions in the input geometry, labels of the dataset only
        pred = sitk.ReadImage(str(preds / f"{case}.nii.gz"))
        ref = sitk.ReadImage(str(aug / "labelsTs" / f"{case}.nii.gz"))
        assert pred.GetSize() == ref.GetSize()
        np.testing.assert_allclose(pred.GetSpacing(), ref.GetSpacing(), rtol=1e-5)
        np.testing.assert_allclose(pred.GetOrigin(), ref.GetOrigin(), atol=1e-4)
        assert set(np.unique(sitk.GetArrayFromImage(pred))) <= {0, 1, 2}

    report = tmp_path / "report"
    _run(
        [echogains, "evaluate", str(preds), str(aug), str(report), "--subset", "Ts", "--progress", "False"],
        env,
        tmp_path,
    )
    summary = json.loads((report / "metrics_summary.json").read_text())
    lv = summary["segmentation"]["all"]["LV"]
    assert lv["n_cases"] == len(test_cases)
    assert 0.0 <= lv["dice"]["mean"] <= 1.0
    with open(report / "metrics_per_case.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["case_id"] for r in rows) == test_cases
    for row in rows:
        assert 0.0 <= float(row["LV_dice"]) <= 1.0
        if row["LV_failure"] == "false":
            assert float(row["LV_hd_mm"]) > 0  # HD in mm from the NIfTI spacing
    with open(report / "ef_per_patient.csv", newline="") as fh:
        ef = list(csv.DictReader(fh))
    assert ef and all(r["ef_ref_pct"] and r["ef_gt_pct"] for r in ef)
    assert (report / "bland_altman_ef_gt_vs_reference.png").is_file()
    # a 2-iteration model may give masks with no measurable LV (no EF): the plot then has nothing to show
    if any(r["ef_pred_pct"] for r in ef):
        assert (report / "bland_altman_ef_pred_vs_reference.png").is_file()
    assert (report / "report.html").is_file()
