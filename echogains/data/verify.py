"""Verify an nnU-Net raw dataset: nnU-Net's own integrity check plus what it misses.

Checks added on top of ``nnunetv2.experiment_planning.verify_dataset_integrity`` (which, among other things,
never flags an all-background mask: that check is dead code in nnunetv2 2.8): empty masks, NaN/Inf, image/label geometry
(size, spacing,
origin, direction), labels outside ``dataset.json``, multi-channel images, duplicate case ids, disagreement
between ``cases.json``, ``splits_final.json``, ``dataset.json`` and the files, and patients leaking across the
train/val halves of a fold. Every problem names the file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from echogains.data.nnunet import read_image
from echogains.utils import EchoDataError, check_int, get_logger
from echogains.utils import progress as progress_bar

__all__ = ["Problem", "VerifyReport", "verify_dataset"]

log = get_logger(__name__)

_GEOMETRY_TOL = 1e-4


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class VerifyReport:
    root: Path
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    num_training: int = 0
    num_test: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, path: str | os.PathLike, message: str) -> None:
        self.errors.append(Problem(str(path), message))

    def warn(self, path: str | os.PathLike, message: str) -> None:
        self.warnings.append(Problem(str(path), message))

    def summary(self) -> str:
        lines = [
            f"{self.root}: {self.num_training} training + {self.num_test} test cases, "
            f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        ]
        lines += [f"ERROR   {p}" for p in self.errors]
        lines += [f"WARNING {p}" for p in self.warnings]
        return "\n".join(lines)


def _load_json_strict(path: Path, report: VerifyReport) -> Any:
    """Load JSON; duplicate object keys are reported (plain ``json.loads`` keeps the last silently)."""

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:
                report.error(path, f"duplicate key {key!r}")
            seen[key] = value
        return seen

    try:
        return json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=hook)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        report.error(path, f"not valid JSON ({err})")
        return None


def _scan(folder: Path, suffix: str) -> dict[str, list[Path]]:
    """Map case id -> files in ``folder`` named ``{case}{suffix}`` (images: ``{case}_{XXXX}{ending}``)."""
    out: dict[str, list[Path]] = {}
    if not folder.is_dir():
        return out
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not f.name.endswith(suffix):
            continue
        out.setdefault(f.name[: -len(suffix)], []).append(f)
    return out


def _image_cases(folder: Path, ending: str, report: VerifyReport) -> dict[str, list[Path]]:
    cases: dict[str, list[Path]] = {}
    for stem, files in _scan(folder, ending).items():
        case, _, channel = stem.rpartition("_")
        if not case or not (len(channel) == 4 and channel.isdigit()):
            report.error(files[0], f"image file name must be {{case}}_XXXX{ending}")
            continue
        cases.setdefault(case, []).extend(files)
    return cases


def _read(path: Path, report: VerifyReport) -> sitk.Image | None:
    """Read with the shared reader (truncated/corrupt gzip, short data files, unreadable images); a finding, not a
    crash."""
    try:
        return read_image(path)
    except EchoDataError as err:
        report.error(err.path or path, err.problem)
        return None


def _has_nonfinite(path: Path, array: np.ndarray) -> bool:
    """NaN/Inf check. SimpleITK's NIfTI reader silently turns NaN into 0, so NIfTI files are read raw with nibabel.

    Raises:
        EchoDataError: nibabel cannot read the voxels (a file SimpleITK read but nibabel does not).
    """
    if path.name.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        try:
            array = np.asarray(nib.load(str(path)).dataobj)
        except Exception as err:
            raise EchoDataError(path, f"cannot read voxels with nibabel ({type(err).__name__}: {err})") from err
    return bool(np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all())


def _geometry_mismatch(a: sitk.Image, b: sitk.Image) -> str | None:
    if a.GetSize() != b.GetSize():
        return f"size {b.GetSize()} != image size {a.GetSize()}"
    for name in ("Spacing", "Origin", "Direction"):
        va = tuple(round(float(v), 6) for v in getattr(a, f"Get{name}")())
        vb = tuple(round(float(v), 6) for v in getattr(b, f"Get{name}")())
        if len(va) != len(vb) or not np.allclose(va, vb, atol=_GEOMETRY_TOL, rtol=_GEOMETRY_TOL):
            return f"{name.lower()} {vb} != image {name.lower()} {va}"
    return None


def _check_case(
    case: str, images: list[Path], label: Path | None, channels: int, allowed: set[int], report: VerifyReport
) -> None:
    if len(images) != channels:
        report.error(images[0], f"case {case!r} has {len(images)} channel file(s), dataset.json declares {channels}")
    img = _read(images[0], report)
    if img is None:
        return
    if img.GetNumberOfComponentsPerPixel() != 1:
        report.error(
            images[0],
            f"multi-channel image ({img.GetNumberOfComponentsPerPixel()} components, e.g. RGB); write one grey channel",
        )
    if img.GetDimension() != 2 and not (img.GetDimension() == 3 and img.GetSize()[2] == 1):
        report.warn(images[0], f"image is {img.GetDimension()}D with size {img.GetSize()}; echo frames are 2D")
    arr = sitk.GetArrayViewFromImage(img)
    try:
        if _has_nonfinite(images[0], arr):
            report.error(images[0], "image contains NaN or Inf")
    except EchoDataError as err:
        report.error(images[0], err.problem)
        return
    if label is None:
        return
    lab = _read(label, report)
    if lab is None:
        return
    mismatch = _geometry_mismatch(img, lab)
    if mismatch:
        report.error(label, f"label geometry does not match its image: {mismatch}")
    larr = sitk.GetArrayViewFromImage(lab)
    try:
        nonfinite = _has_nonfinite(label, larr)
    except EchoDataError as err:
        report.error(label, err.problem)
        return
    if nonfinite:
        report.error(label, "label contains NaN or Inf")
        return
    if np.issubdtype(larr.dtype, np.floating):
        if not np.all(np.mod(larr, 1) == 0):
            report.error(label, "label has non-integer values")
    values = {int(v) for v in np.unique(larr)}
    if not values <= allowed:
        report.error(label, f"label values {sorted(values - allowed)} not declared in dataset.json {sorted(allowed)}")
    if values <= {0}:
        report.error(label, "label mask is empty (background only)")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_dataset_json(dataset: Any, dj: Path, report: VerifyReport) -> None:
    """The keys the checks below use, with the types nnU-Net expects (a wrong type is a finding, not a crash)."""
    if not isinstance(dataset, dict):
        report.error(dj, f"must be a JSON object, got {type(dataset).__name__}")
        return
    for key in ("channel_names", "labels", "file_ending", "numTraining"):
        if key not in dataset:
            report.error(dj, f"missing key {key!r}")
    if "channel_names" in dataset and not (isinstance(dataset["channel_names"], dict) and dataset["channel_names"]):
        report.error(dj, f"channel_names must be a non-empty object, got {dataset['channel_names']!r}")
    labels = dataset.get("labels")
    if "labels" in dataset:
        if not isinstance(labels, dict) or not labels:
            report.error(dj, f"labels must be a non-empty object {{name: value}}, got {labels!r}")
        else:
            for name, value in labels.items():
                region = isinstance(value, list) and value and all(_is_int(v) for v in value)
                if not (_is_int(value) or region):
                    report.error(dj, f"label {name!r}: value {value!r} is not an integer (or a list of integers)")
            if labels.get("background", 0) != 0:
                report.error(dj, f"label 'background' must be 0, got {labels['background']!r}")
    ending = dataset.get("file_ending")
    if "file_ending" in dataset and not (isinstance(ending, str) and ending.startswith(".") and len(ending) > 1):
        report.error(dj, f"file_ending must be a text like '.nii.gz', got {ending!r}")
    for key in ("numTraining", "numTest"):
        if key in dataset and not (_is_int(dataset[key]) and dataset[key] >= 0):
            report.error(dj, f"{key} must be a non-negative integer, got {dataset[key]!r}")


def _check_records(
    root: Path, tr: set[str], ts: set[str], dataset: dict[str, Any], report: VerifyReport
) -> dict[str, Any] | None:
    dj = root / "dataset.json"
    if dataset.get("numTraining") != len(tr):
        report.error(dj, f"numTraining is {dataset.get('numTraining')} but imagesTr holds {len(tr)} case(s)")
    if "numTest" in dataset and dataset["numTest"] != len(ts):
        report.error(dj, f"numTest is {dataset['numTest']} but imagesTs holds {len(ts)} case(s)")
    for dup in sorted(tr & ts):
        report.error(root / "imagesTs", f"case id {dup!r} is both a training and a test case")
    lower: dict[str, str] = {}
    for case in sorted(tr | ts):
        if case.lower() in lower:
            report.error(root, f"case ids {lower[case.lower()]!r} and {case!r} differ only by case")
        lower[case.lower()] = case
    cases_file = root / "cases.json"
    records = _load_json_strict(cases_file, report) if cases_file.is_file() else None
    if records is None:
        if not cases_file.is_file():
            report.warn(cases_file, "missing: no per-case records (patients, references, provenance)")
        return records
    if not isinstance(records, dict):
        report.error(cases_file, f"must be a JSON object {{case_id: record}}, got {type(records).__name__}")
        return None
    for case in sorted(c for c, rec in records.items() if not isinstance(rec, dict)):
        report.error(cases_file, f"record of case {case!r} is not an object")
    records = {c: rec for c, rec in records.items() if isinstance(rec, dict)}
    for case in sorted((tr | ts) - set(records)):
        report.error(cases_file, f"no record for case {case!r}")
    for case in sorted(set(records) - (tr | ts)):
        report.error(cases_file, f"record for case {case!r} which has no image")
    for case, rec in records.items():
        subset = rec.get("subset") if isinstance(rec, dict) else None
        if subset == "Tr" and case in ts or subset == "Ts" and case in tr:
            report.error(cases_file, f"case {case!r} is recorded as {subset} but its files are elsewhere")
    return records


def _check_splits(root: Path, tr: set[str], records: dict[str, Any] | None, report: VerifyReport) -> None:
    path = root / "splits_final.json"
    if not path.is_file():
        if tr:
            report.warn(
                path,
                "missing: no folds (fewer than 2 training patients?); inference and evaluation need none, "
                "nnUNetTrainerEcho* groups folds by patient itself, nnU-Net's own trainers split at random",
            )
        return
    splits = _load_json_strict(path, report)
    if splits is None:
        return
    names = lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v)  # noqa: E731
    if not isinstance(splits, list) or not all(
        isinstance(s, dict) and {"train", "val"} <= set(s) and names(s["train"]) and names(s["val"]) for s in splits
    ):
        report.error(path, "must be a list of {'train': [case ids], 'val': [case ids]} folds")
        return
    for i, fold in enumerate(splits):
        train, val = set(fold["train"]), set(fold["val"])
        if unknown := sorted((train | val) - tr):
            report.error(path, f"fold {i} names cases not in imagesTr: {unknown[:5]}")
        if both := sorted(train & val):
            report.error(path, f"fold {i} has cases in both train and val: {both[:5]}")
        if records:
            patient = {c: str(records.get(c, {}).get("patient", c.split("_")[0])) for c in train | val}
            leak = sorted({patient[c] for c in train} & {patient[c] for c in val})
            if leak:
                report.error(path, f"fold {i}: patient(s) {leak[:5]} in both train and val (augmented copies leak)")


def _nnunet_check(root: Path, report: VerifyReport, num_processes: int) -> None:
    """Run nnU-Net's ``verify_dataset_integrity`` in a fresh interpreter (it uses a spawn pool)."""
    code = (
        "import sys\n"
        "from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity\n"
        "verify_dataset_integrity(sys.argv[1], int(sys.argv[2]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(root), str(num_processes)], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip() and "####" not in ln]
        report.error(root, "nnU-Net integrity check failed: " + " | ".join(lines[-6:]))


def verify_dataset(
    root: str | os.PathLike, nnunet_check: bool = True, num_processes: int = 1, progress: bool = True
) -> VerifyReport:
    """Verify a dataset folder; returns a report (``report.ok`` is False when any error was found).

    Args:
        root: the nnU-Net raw dataset folder (``DatasetXXX_Name``).
        nnunet_check: also run nnU-Net's ``verify_dataset_integrity`` (after our checks pass).
        num_processes: worker processes for nnU-Net's check.
        progress: tqdm bar over cases.
    """
    for flag, value in (("--nnunet_check", nnunet_check), ("--progress", progress)):
        if not isinstance(value, (bool, np.bool_)):
            raise EchoDataError(None, f"{flag} must be True or False, got {value!r}")
    if not _is_int(num_processes) or num_processes < 1:
        raise EchoDataError(None, f"--num_processes must be a positive integer, got {num_processes!r}")
    root = Path(root)
    check_int("num_processes", num_processes, 1)
    report = VerifyReport(root)
    if not root.is_dir():
        raise EchoDataError(root, "dataset folder not found")
    dj = root / "dataset.json"
    if not dj.is_file():
        report.error(dj, "missing: the dataset is incomplete (dataset.json is written last)")
        return report
    dataset = _load_json_strict(dj, report)
    if dataset is None:
        return report
    _check_dataset_json(dataset, dj, report)
    if report.errors:
        return report
    ending, channels = dataset["file_ending"], len(dataset["channel_names"])
    allowed = {int(v) for v in dataset["labels"].values() if not isinstance(v, (list, tuple))}
    tr_images = _image_cases(root / "imagesTr", ending, report)
    ts_images = _image_cases(root / "imagesTs", ending, report)
    tr_labels = {k: v[0] for k, v in _scan(root / "labelsTr", ending).items()}
    ts_labels = {k: v[0] for k, v in _scan(root / "labelsTs", ending).items()}
    report.num_training, report.num_test = len(tr_images), len(ts_images)
    for case in sorted(set(tr_labels) - set(tr_images)):
        report.error(tr_labels[case], "label without an image in imagesTr")
    for case in sorted(set(ts_labels) - set(ts_images)):
        report.error(ts_labels[case], "label without an image in imagesTs")
    for case in sorted(set(tr_images) - set(tr_labels)):
        report.error(tr_images[case][0], "training image without a label in labelsTr")
    items = [(c, f, tr_labels.get(c)) for c, f in tr_images.items()] + [
        (c, f, ts_labels.get(c)) for c, f in ts_images.items()
    ]
    for case, files, label in progress_bar(items, desc="verify", disable=not progress):
        _check_case(case, files, label, channels, allowed, report)
    records = _check_records(root, set(tr_images), set(ts_images), dataset, report)
    _check_splits(root, set(tr_images), records, report)
    if nnunet_check and not report.errors:
        _nnunet_check(root, report, num_processes)
    log.info("verified %s: %d error(s), %d warning(s)", root, len(report.errors), len(report.warnings))
    return report
