"""Dataset verification: our checks find what nnU-Net's integrity check misses; each error names the file."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from echogains.data.nnunet import RawDatasetWriter
from echogains.data.verify import verify_dataset

LABELS = {"background": 0, "LV": 1}


def _dataset(root, n=3):
    w = RawDatasetWriter(root, LABELS)
    rng = np.random.default_rng(0)
    for p in range(n):
        for phase in ("ED", "ES"):
            label = np.zeros((16, 20), np.uint8)
            label[4:9, 5:11] = 1
            w.add_case(f"pat{p}_4CH_{phase}", rng.random((16, 20)).astype(np.float32), label,
                       spacing=(0.3, 0.15), record={"patient": f"pat{p}"})
    w.finalize(n_folds=3)
    return root


def _rewrite(path, fn, **geometry):
    img = sitk.ReadImage(str(path))
    new = sitk.GetImageFromArray(fn(sitk.GetArrayFromImage(img)))
    new.CopyInformation(img)
    for key, value in geometry.items():
        getattr(new, f"Set{key}")(value)
    sitk.WriteImage(new, str(path))


def test_clean_dataset_passes_including_nnunet_check(tmp_path):
    report = verify_dataset(_dataset(tmp_path / "Dataset910_Ok"), show_progress=False)
    assert report.ok, report.summary()
    assert report.num_training == 6


def test_problems_are_found_and_named(tmp_path):
    root = _dataset(tmp_path / "Dataset911_Bad")
    lab = root / "labelsTr"
    _rewrite(lab / "pat0_4CH_ED.nii.gz", np.zeros_like)                            # empty mask
    _rewrite(lab / "pat0_4CH_ES.nii.gz", lambda a: np.where(a == 1, 3, a).astype(a.dtype))  # undeclared label
    _rewrite(lab / "pat1_4CH_ED.nii.gz", lambda a: a, Spacing=(1.0, 1.0))           # geometry mismatch
    _rewrite(root / "imagesTr" / "pat1_4CH_ES_0000.nii.gz", lambda a: np.where(a > 0.25, np.nan, a).astype(np.float32))  # NaN
    rgb = sitk.Compose([sitk.ReadImage(str(root / "imagesTr" / "pat2_4CH_ED_0000.nii.gz"))] * 3)
    sitk.WriteImage(rgb, str(root / "imagesTr" / "pat2_4CH_ED_0000.nii.gz"))        # multi-channel
    cases = json.loads((root / "cases.json").read_text())
    del cases["pat2_4CH_ES"]
    (root / "cases.json").write_text(json.dumps(cases))                              # record missing
    splits = json.loads((root / "splits_final.json").read_text())
    splits[0]["val"].append(splits[0]["train"][0])
    (root / "splits_final.json").write_text(json.dumps(splits))                      # leak
    report = verify_dataset(root, show_progress=False)
    text = report.summary()
    assert not report.ok
    expected = [
        ("pat0_4CH_ED.nii.gz", "empty"),
        ("pat0_4CH_ES.nii.gz", "[3] not declared"),
        ("pat1_4CH_ED.nii.gz", "spacing"),
        ("pat1_4CH_ES_0000.nii.gz", "NaN"),
        ("pat2_4CH_ED_0000.nii.gz", "multi-channel"),
        ("cases.json", "no record for case 'pat2_4CH_ES'"),
        ("splits_final.json", "both train and val"),
    ]
    for name, message in expected:
        assert any(p.path.endswith(name) and message in p.message for p in report.errors), (name, message, text)


def test_incomplete_and_count_mismatch(tmp_path):
    root = _dataset(tmp_path / "Dataset912_Inc")
    (root / "labelsTr" / "pat2_4CH_ES.nii.gz").unlink()
    report = verify_dataset(root, nnunet_check=False, show_progress=False)
    assert any("without a label" in p.message for p in report.errors)
    (root / "dataset.json").unlink()
    report = verify_dataset(root, show_progress=False)
    assert [p.message for p in report.errors] == ["missing: the dataset is incomplete (dataset.json is written last)"]


def test_nnunet_check_failure_reported(tmp_path):
    root = _dataset(tmp_path / "Dataset913_Num")
    dj = json.loads((root / "dataset.json").read_text())
    dj["numTraining"] = 6
    dj["channel_names"] = {"0": "US", "1": "X"}
    (root / "dataset.json").write_text(json.dumps(dj))
    report = verify_dataset(root, show_progress=False)
    assert any("channel file" in p.message for p in report.errors)
