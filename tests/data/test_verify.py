"""Dataset verification: our checks find what nnU-Net's integrity check misses; each error names the file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from echogains.data.nnunet import RawDatasetWriter
from echogains.data.verify import verify_dataset

try:
    from tests.data import fixtures as F
except ImportError:  # pytest run without the repository root on sys.path
    import fixtures as F  # type: ignore[no-redef]

LABELS = {"background": 0, "LV": 1}


def _dataset(root, n=3):
    w = RawDatasetWriter(root, LABELS)
    rng = np.random.default_rng(0)
    for p in range(n):
        for phase in ("ED", "ES"):
            label = np.zeros((16, 20), np.uint8)
            label[4:9, 5:11] = 1
            w.add_case(
                f"pat{p}_4CH_{phase}",
                rng.random((16, 20)).astype(np.float32),
                label,
                spacing=(0.3, 0.15),
                record={"patient": f"pat{p}"},
            )
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
    report = verify_dataset(_dataset(tmp_path / "Dataset910_Ok"), progress=False)
    assert report.ok, report.summary()
    assert report.num_training == 6


def test_problems_are_found_and_named(tmp_path):
    root = _dataset(tmp_path / "Dataset911_Bad")
    lab = root / "labelsTr"
    _rewrite(lab / "pat0_4CH_ED.nii.gz", np.zeros_like)  # empty mask
    _rewrite(lab / "pat0_4CH_ES.nii.gz", lambda a: np.where(a == 1, 3, a).astype(a.dtype))  # undeclared label
    _rewrite(lab / "pat1_4CH_ED.nii.gz", lambda a: a, Spacing=(1.0, 1.0))  # geometry mismatch
    _rewrite(
        root / "imagesTr" / "pat1_4CH_ES_0000.nii.gz", lambda a: np.where(a > 0.25, np.nan, a).astype(np.float32)
    )  # NaN
    rgb = sitk.Compose([sitk.ReadImage(str(root / "imagesTr" / "pat2_4CH_ED_0000.nii.gz"))] * 3)
    sitk.WriteImage(rgb, str(root / "imagesTr" / "pat2_4CH_ED_0000.nii.gz"))  # multi-channel
    cases = json.loads((root / "cases.json").read_text())
    del cases["pat2_4CH_ES"]
    (root / "cases.json").write_text(json.dumps(cases))  # record missing
    splits = json.loads((root / "splits_final.json").read_text())
    splits[0]["val"].append(splits[0]["train"][0])
    (root / "splits_final.json").write_text(json.dumps(splits))  # leak
    report = verify_dataset(root, progress=False)
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
    report = verify_dataset(root, nnunet_check=False, progress=False)
    assert any("without a label" in p.message for p in report.errors)
    (root / "dataset.json").unlink()
    report = verify_dataset(root, progress=False)
    assert [p.message for p in report.errors] == ["missing: the dataset is incomplete (dataset.json is written last)"]


def test_nnunet_check_failure_reported(tmp_path):
    root = _dataset(tmp_path / "Dataset913_Num")
    dj = json.loads((root / "dataset.json").read_text())
    dj["numTraining"] = 6
    dj["channel_names"] = {"0": "US", "1": "X"}
    (root / "dataset.json").write_text(json.dumps(dj))
    report = verify_dataset(root, progress=False)
    assert any("channel file" in p.message for p in report.errors)


# ------------------------------------------------------------------------------------------------
# Bad input through the command: findings exit 1 (one ERROR line per bad file), bad arguments exit 2, no traceback
# ------------------------------------------------------------------------------------------------
def _cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run ``echogains ARGS`` in-process; returns (exit status, stdout, stderr)."""
    from echogains.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _gzip_of_truncated_nifti(path) -> int:
    """A complete gzip stream holding a NIfTI whose voxel data lost its last 100 bytes; returns the full size."""
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) - 100]))
    return len(raw)


def test_truncated_and_empty_files_are_findings_naming_the_file(tmp_path, capsys):
    root = _dataset(tmp_path / "Dataset914_Trunc")
    cut_image = root / "imagesTr" / "pat0_4CH_ED_0000.nii.gz"
    cut_label = root / "labelsTr" / "pat1_4CH_ES.nii.gz"
    short_nifti = root / "imagesTr" / "pat2_4CH_ED_0000.nii.gz"
    empty = root / "labelsTr" / "pat2_4CH_ES.nii.gz"
    F.truncate(cut_image)  # first third of the gzip stream kept, as the user did
    F.truncate(cut_label)
    full = _gzip_of_truncated_nifti(short_nifti)  # the writer's NIfTI is exactly header + voxels
    empty.write_bytes(b"")
    code, out, err = _cli(capsys, "verify-dataset", str(root), "--progress", "False")
    assert code == 1, (out, err)
    assert "Traceback" not in err and "EOFError" not in err
    errors = [line for line in out.splitlines() if line.startswith("ERROR")]
    expected = {
        cut_image: "truncated/corrupt gzip",
        cut_label: "truncated/corrupt gzip",
        short_nifti: f"truncated NIfTI: {full - 100} bytes, the header (size (20, 16)) needs {full}",
        empty: "empty file (0 bytes)",
    }
    assert len(errors) == len(expected), out
    for path, problem in expected.items():
        assert any(line.startswith(f"ERROR   {path}: {problem}") for line in errors), (path, out)


def test_malformed_json_types_are_findings_not_crashes(tmp_path):
    root = _dataset(tmp_path / "Dataset915_Types")
    dj = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**dj, "labels": [0, 1], "numTraining": "6"}))
    messages = [p.message for p in verify_dataset(root, nnunet_check=False, progress=False).errors]
    assert messages == [
        "labels must be a non-empty object {name: value}, got [0, 1]",
        "numTraining must be a non-negative integer, got '6'",
    ]
    (root / "dataset.json").write_text("[1, 2]")
    assert [p.message for p in verify_dataset(root, progress=False).errors] == ["must be a JSON object, got list"]
    (root / "dataset.json").write_text(json.dumps(dj))
    (root / "cases.json").write_text("[1, 2]")
    (root / "splits_final.json").write_text(json.dumps([{"train": "pat0_4CH_ED", "val": []}]))
    report = verify_dataset(root, nnunet_check=False, progress=False)
    assert sorted((Path(p.path).name, p.message.split(" {")[0]) for p in report.errors) == [
        ("cases.json", "must be a JSON object"),
        ("splits_final.json", "must be a list of"),
    ]


@pytest.mark.parametrize(
    "args, problem",
    [
        (("--num_processes", "0"), "--num_processes must be a positive integer, got 0"),
        (("--nnunet_check", "maybe"), "--nnunet_check must be True or False, got 'maybe'"),
    ],
)
def test_bad_argument_values_exit_2_with_one_line(tmp_path, capsys, args, problem):
    root = _dataset(tmp_path / "Dataset916_Args")
    code, out, err = _cli(capsys, "verify-dataset", str(root), *args)
    assert code == 2
    assert err.strip().splitlines()[-1] == f"echogains: error: {problem}"
    assert "Traceback" not in err


def test_missing_dataset_folder_exits_2(tmp_path, capsys):
    code, out, err = _cli(capsys, "verify-dataset", str(tmp_path / "Dataset917_Nowhere"))
    assert code == 2
    assert (
        err.strip().splitlines()[-1] == f"echogains: error: {tmp_path / 'Dataset917_Nowhere'}: dataset folder not found"
    )
