"""CAMUS converter: both public releases into one nnU-Net raw dataset (``echogains convert-camus``).

Releases recognised from the folder structure (CAMUS, Leclerc et al., IEEE TMI 2019):

* original (MetaImage): ``training/patientXXXX/patientXXXX_{2CH,4CH}_{ED,ES}.mhd`` (+ ``.raw``),
  ``..._gt.mhd`` labels 0..3 and ``Info_{2CH,4CH}.cfg``;
* NIfTI: ``database_nifti/patientXXXX/patientXXXX_{2CH,4CH}_{ED,ES}.nii.gz``, ``..._gt.nii.gz``,
  ``Info_{2CH,4CH}.cfg``, official splits in ``database_split/subgroup_{training,validation,testing}.txt``.

``src`` may be the folder that holds ``training/`` or ``database_nifti/``, one of those folders itself, or any
folder of ``patientXXXX`` sub-folders. Each (patient, view, phase) becomes the case ``{patient}_{view}_{phase}``;
image geometry (spacing, origin, direction) is kept from the source file, labels are remapped to the selected
structures (:func:`echogains.data.labels.remap_camus_labels`). Patients of the official ``testing`` subgroup go to
``imagesTs``/``labelsTs``; ``training``/``validation`` patients go to ``imagesTr`` with ``split`` set, which makes
the writer emit that single official fold. Without split files, ``n_folds`` patient-grouped folds are made; with a
single training patient there are no folds and no ``splits_final.json`` (a warning says training needs 2).

Everything is validated before the first byte is written; with ``skip_bad`` bad cases are left out and listed in
``skipped.csv`` in the output folder. The helpers in the "shared by the converters" section are also used by
:mod:`echogains.data.echonet`.
"""

from __future__ import annotations

import csv
import functools
import io
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from echogains.data.labels import label_dict, parse_labels, remap_camus_labels
from echogains.data.nnunet import RawDatasetWriter, read_image
from echogains.utils import EchoDataError, atomic_write_text, check_int, get_logger
from echogains.utils import check_output_dir as check_output_folder  # the shared check, under its old name
from echogains.utils import progress as progress_bar

__all__ = [
    "CAMUS_VIEWS",
    "CAMUS_PHASES",
    "CamusLayout",
    "CamusCase",
    "BadCase",
    "detect_camus_layout",
    "find_camus_cases",
    "parse_info_cfg",
    "read_official_split",
    "read_2d_image",
    "check_output_folder",
    "parse_choice",
    "relative_posix",
    "fit_sector_record",
    "write_skip_report",
    "check_folds_possible",
    "check_flag",
    "validate_cases",
    "convert_camus",
]

log = get_logger(__name__)

CAMUS_VIEWS: tuple[str, ...] = ("2CH", "4CH")
CAMUS_PHASES: tuple[str, ...] = ("ED", "ES")
#: Official split name -> file in ``database_split/``.
SPLIT_FILES: dict[str, str] = {
    "train": "subgroup_training.txt",
    "val": "subgroup_validation.txt",
    "test": "subgroup_testing.txt",
}
_PATIENT_DIR = re.compile(r"^patient\d+$")
_EXTENSIONS = {"nifti": ".nii.gz", "mhd": ".mhd"}
#: Info_*.cfg keys read, with their parser; ED and ES are required.
_INFO_INT_KEYS = ("ED", "ES", "NbFrame")
_INFO_FLOAT_KEYS = ("Age", "LVedv", "LVesv", "LVef")
_INFO_TEXT_KEYS = ("Sex", "ImageQuality")
_GEOMETRY_TOL = 1e-4


# ------------------------------------------------------------------------------------------------
# Shared by the converters (CAMUS and EchoNet-Dynamic)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BadCase:
    """One case left out by ``skip_bad``: its id, the offending file and the problem."""

    case_id: str
    path: str | None
    problem: str


def parse_choice(spec: str | Sequence[str], allowed: Sequence[str], what: str) -> list[str]:
    """Parse ``"2CH,4CH"`` (or a list, as python-fire passes it) into upper-case items of ``allowed``, in that order.

    Args:
        spec: comma-separated string or sequence of names.
        allowed: accepted names (upper case).
        what: option name for the error message, e.g. ``--views``.
    """
    items = spec.split(",") if isinstance(spec, str) else [str(s) for s in spec]
    chosen = {s.strip().upper() for s in items if s.strip()}
    unknown = sorted(chosen - set(allowed))
    if unknown or not chosen:
        raise EchoDataError(None, f"{what}: unknown or empty selection {spec!r}; choose from {','.join(allowed)}")
    return [a for a in allowed if a in chosen]


@functools.lru_cache(maxsize=1)
def _sector_fitter() -> Callable[..., Any] | None:
    """``echogains.geometry.fit_sector``, imported lazily; ``None`` (with one warning) when unavailable."""
    try:
        from echogains.geometry import fit_sector
    except ImportError as err:
        log.warning("echogains.geometry.fit_sector unavailable (%s): sector geometry recorded as null", err)
        return None
    return fit_sector


def fit_sector_record(image: np.ndarray, spacing: Sequence[float], case_id: str) -> dict[str, Any] | None:
    """Fit the ultrasound sector of ``image`` and return its ``cases.json`` record, or ``None`` on failure.

    A failed fit never stops a conversion: it is logged as a warning and recorded as ``null``.

    Args:
        image: 2D grey image ``[y, x]``.
        spacing: (x, y) pixel spacing, SimpleITK order.
        case_id: named in the warning.
    """
    fit = _sector_fitter()
    if fit is None:
        return None
    try:
        sector = fit(np.asarray(image, dtype=np.float32), tuple(float(s) for s in spacing))
        return sector.to_dict() if sector is not None else None
    except Exception as err:  # noqa: BLE001 - a fitting failure must not crash the conversion
        log.warning("%s: sector fit failed (%s: %s); recording null", case_id, type(err).__name__, err)
        return None


def validate_cases(
    cases: Sequence[Any], check: Callable[[Any], Any], skip_bad: bool, show: bool, desc: str
) -> tuple[list[tuple[Any, Any]], list[BadCase]]:
    """Run ``check`` on every case before anything is written.

    Args:
        cases: objects with a ``case_id`` attribute.
        check: raises :class:`EchoDataError` for a bad case; its return value is kept with the case.
        skip_bad: collect bad cases instead of raising on the first.
        show: show a progress bar.
        desc: progress-bar label.

    Returns:
        ``[(case, check(case)), ...]`` for the good cases and the list of bad ones.
    """
    good: list[tuple[Any, Any]] = []
    bad: list[BadCase] = []
    iterable: Iterable[Any] = progress_bar(cases, total=len(cases), desc=desc) if show else cases
    for case in iterable:
        try:
            good.append((case, check(case)))
        except EchoDataError as err:
            if not skip_bad:
                raise
            bad.append(BadCase(case.case_id, err.path, err.problem))
    return good, bad


def check_folds_possible(train_items: Sequence[tuple[str, str | None]], where: Path) -> bool:
    """Check, before writing, that there is a training case, and say whether folds can be made from them.

    With fewer than 2 training patients and no official train/val fold, :meth:`RawDatasetWriter.finalize` writes
    the dataset without ``splits_final.json`` (and warns): a handful of videos or patients still converts.

    Args:
        train_items: ``(patient, official split)`` of every case bound for ``imagesTr``.
        where: source folder named in the error.

    Returns:
        ``True`` when the dataset will have folds.
    """
    if not train_items:
        raise EchoDataError(where, "no training case: every valid case belongs to the official test split")
    splits = {split for _, split in train_items}
    official_fold = splits <= {"train", "val"} and splits >= {"train", "val"}
    return official_fold or len({patient for patient, _ in train_items}) >= 2


def check_flag(name: str, value: Any) -> bool:
    """``value`` of the boolean option ``--name`` (python-fire passes ``--name maybe`` on as the text ``'maybe'``)."""
    if not isinstance(value, (bool, np.bool_)):
        raise EchoDataError(None, f"--{name}: expected True or False, got {value!r}")
    return bool(value)


def write_skip_report(out: Path, bad: Sequence[BadCase]) -> None:
    """Write ``skipped.csv`` (case_id, file, problem) into ``out`` and log a summary; remove a stale one if none."""
    report = out / "skipped.csv"
    if not bad:
        if report.exists():
            report.unlink()
        return
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["case_id", "file", "problem"])
    for item in bad:
        writer.writerow([item.case_id, item.path or "", item.problem])
    atomic_write_text(report, buffer.getvalue())
    log.warning("skipped %d bad case(s); see %s", len(bad), report)


def relative_posix(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` in POSIX form (keeps ``cases.json`` independent of where the data sits)."""
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


# ------------------------------------------------------------------------------------------------
# CAMUS source scanning
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CamusLayout:
    """Where a CAMUS release sits.

    Args:
        release: ``"nifti"`` or ``"mhd"``.
        root: folder holding the ``patientXXXX`` folders.
        base: folder that source paths in ``cases.json`` are relative to.
        split_dir: ``database_split`` folder when present.
    """

    release: str
    root: Path
    base: Path
    split_dir: Path | None

    @property
    def ext(self) -> str:
        return _EXTENSIONS[self.release]


@dataclass(frozen=True)
class CamusCase:
    """One (patient, view, phase) of CAMUS and the files it needs."""

    case_id: str
    patient: str
    view: str
    phase: str
    image_path: Path
    label_path: Path
    info_path: Path
    split: str | None = None
    split_error: EchoDataError | None = field(default=None, compare=False)


def _patient_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and _PATIENT_DIR.match(p.name))


def _release_of(patient_dirs: Sequence[Path]) -> str | None:
    for folder in patient_dirs:
        names = [f.name for f in folder.iterdir()]
        if any(n.endswith(".nii.gz") for n in names):
            return "nifti"
        if any(n.endswith(".mhd") for n in names):
            return "mhd"
    return None


def _split_dir(base: Path) -> Path | None:
    folder = base / "database_split"
    return folder if folder.is_dir() else None


def detect_camus_layout(src: str | os.PathLike) -> CamusLayout:
    """Recognise the CAMUS release under ``src`` (see the module docstring for the accepted folders)."""
    src = Path(src)
    if not src.is_dir():
        raise EchoDataError(src, "CAMUS folder not found")
    if (src / "database_nifti").is_dir():
        if (src / "training").is_dir():
            log.info("%s holds both releases; converting the NIfTI release (database_nifti)", src)
        return CamusLayout("nifti", src / "database_nifti", src, _split_dir(src))
    if (src / "training").is_dir():
        return CamusLayout("mhd", src / "training", src, _split_dir(src))
    patients = _patient_dirs(src)
    release = _release_of(patients)
    if release is None:
        raise EchoDataError(
            src,
            "not a CAMUS folder: expected database_nifti/ or training/ or patientXXXX folders "
            "with .nii.gz or .mhd files",
        )
    return CamusLayout(release, src, src.parent, _split_dir(src.parent))


def read_official_split(split_dir: Path | None) -> dict[str, str] | None:
    """Map patient -> ``train``/``val``/``test`` from ``subgroup_*.txt``; ``None`` when no split file exists.

    Raises:
        EchoDataError: a patient listed in two subgroups, or an unreadable file.
    """
    if split_dir is None:
        return None
    found: dict[str, str] = {}
    any_file = False
    for split, name in SPLIT_FILES.items():
        path = split_dir / name
        if not path.is_file():
            continue
        any_file = True
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise EchoDataError(path, f"cannot read split file ({err})") from err
        for line in lines:
            patient = line.strip()
            if not patient:
                continue
            if patient in found and found[patient] != split:
                raise EchoDataError(path, f"{patient} is also listed in {SPLIT_FILES[found[patient]]}")
            found[patient] = split
    return found if any_file else None


def find_camus_cases(layout: CamusLayout, views: Sequence[str], phases: Sequence[str]) -> list[CamusCase]:
    """List the cases of every patient folder (files are checked later, by :func:`validate_cases`)."""
    patients = _patient_dirs(layout.root)
    if not patients:
        raise EchoDataError(layout.root, "no patientXXXX folders found")
    split_of = read_official_split(layout.split_dir)
    if split_of is not None:
        log.info("official split files found in %s", layout.split_dir)
    cases = []
    for folder in patients:
        patient = folder.name
        split = split_of.get(patient) if split_of is not None else None
        error = None
        if split_of is not None and split is None:
            error = EchoDataError(layout.split_dir, f"{patient} is not listed in any {'/'.join(SPLIT_FILES.values())}")
        for view in views:
            for phase in phases:
                stem = f"{patient}_{view}_{phase}"
                cases.append(
                    CamusCase(
                        case_id=stem,
                        patient=patient,
                        view=view,
                        phase=phase,
                        image_path=folder / f"{stem}{layout.ext}",
                        label_path=folder / f"{stem}_gt{layout.ext}",
                        info_path=folder / f"Info_{view}.cfg",
                        split=split,
                        split_error=error,
                    )
                )
    return cases


# ------------------------------------------------------------------------------------------------
# File readers
# ------------------------------------------------------------------------------------------------
def _parse_number(path: Path, key: str, text: str, integer: bool) -> float | int:
    try:
        value = float(text)
    except ValueError as err:
        raise EchoDataError(path, f"{key}: {text!r} is not a number") from err
    if not np.isfinite(value):
        raise EchoDataError(path, f"{key}: {text!r} is not finite")
    if integer:
        if value != int(value):
            raise EchoDataError(path, f"{key}: {text!r} is not an integer")
        return int(value)
    return value


def parse_info_cfg(path: str | os.PathLike) -> dict[str, Any]:
    """Read a CAMUS ``Info_{2CH,4CH}.cfg`` (``Key: value`` lines).

    Returns:
        ``ED``, ``ES`` (1-based frame numbers, required), ``NbFrame`` (int or ``None``), ``Sex``, ``ImageQuality``
        (text or ``None``), ``Age``, ``LVedv``, ``LVesv`` (ml), ``LVef`` (%) (float or ``None``).

    Raises:
        EchoDataError: missing file, a line that is not ``Key: value``, a missing ``ED``/``ES``, a bad number,
            or ``ED``/``ES`` outside ``1..NbFrame``.
    """
    path = Path(path)
    if not path.is_file():
        raise EchoDataError(path, "file not found")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise EchoDataError(path, f"cannot read ({err})") from err
    raw: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise EchoDataError(path, f"line {number} is not 'Key: value': {line.strip()!r}")
        raw[key.strip()] = value.strip()
    info: dict[str, Any] = {}
    for key in ("ED", "ES"):
        if not raw.get(key):
            raise EchoDataError(path, f"missing key '{key}' (the {key} frame number)")
    for key in _INFO_INT_KEYS:
        info[key] = _parse_number(path, key, raw[key], integer=True) if raw.get(key) else None
    for key in _INFO_FLOAT_KEYS:
        info[key] = _parse_number(path, key, raw[key], integer=False) if raw.get(key) else None
    if info["Age"] is not None and float(info["Age"]).is_integer():
        info["Age"] = int(info["Age"])
    for key in _INFO_TEXT_KEYS:
        info[key] = raw.get(key) or None
    n_frames = info["NbFrame"]
    for key in ("ED", "ES"):
        if info[key] < 1 or (n_frames is not None and info[key] > n_frames):
            raise EchoDataError(path, f"{key} = {info[key]} is outside the sequence frames 1..{n_frames or '?'}")
    return info


def read_2d_image(path: str | os.PathLike) -> sitk.Image:
    """Read a one-channel 2D image (a 3D image with one slice is reduced to 2D, keeping its in-plane geometry).

    Raises:
        EchoDataError: missing file, missing or truncated ``.raw`` of a ``.mhd``, truncated ``.nii.gz``,
            unreadable/corrupt file (:func:`echogains.data.nnunet.read_image`), not 2D, multi-channel.
    """
    path = Path(path)
    image = read_image(path)
    if image.GetDimension() == 3 and image.GetSize()[2] == 1:
        image = image[:, :, 0]
    if image.GetDimension() != 2:
        raise EchoDataError(path, f"expected a 2D image, got size {image.GetSize()}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise EchoDataError(path, f"expected one channel, got {image.GetNumberOfComponentsPerPixel()}")
    return image


def _check_same_geometry(image: sitk.Image, label: sitk.Image, image_path: Path, label_path: Path) -> None:
    if image.GetSize() != label.GetSize():
        raise EchoDataError(
            label_path, f"size {label.GetSize()} differs from the image's {image.GetSize()} ({image_path.name})"
        )
    for what in ("Spacing", "Origin", "Direction"):
        a = np.asarray(getattr(image, f"Get{what}")())
        b = np.asarray(getattr(label, f"Get{what}")())
        if not np.allclose(a, b, rtol=_GEOMETRY_TOL, atol=_GEOMETRY_TOL):
            a_text, b_text = (tuple(round(float(v), 6) for v in x) for x in (a, b))
            raise EchoDataError(
                label_path, f"{what.lower()} {b_text} differs from the image's {a_text} ({image_path.name})"
            )


# ------------------------------------------------------------------------------------------------
# Conversion
# ------------------------------------------------------------------------------------------------
class _CamusChecker:
    """Validate one case; ``Info_*.cfg`` parses (and their errors) are cached per file."""

    def __init__(self, keys: Sequence[str]):
        self.keys = list(keys)
        self._info: dict[Path, dict[str, Any] | EchoDataError] = {}

    def info(self, path: Path) -> dict[str, Any]:
        if path not in self._info:
            try:
                self._info[path] = parse_info_cfg(path)
            except EchoDataError as err:
                self._info[path] = err
        result = self._info[path]
        if isinstance(result, EchoDataError):
            raise result
        return result

    def __call__(self, case: CamusCase) -> dict[str, Any]:
        if case.split_error is not None:
            raise case.split_error
        info = self.info(case.info_path)
        image = read_2d_image(case.image_path)
        label = read_2d_image(case.label_path)
        _check_same_geometry(image, label, case.image_path, case.label_path)
        pixels = sitk.GetArrayViewFromImage(image)
        if np.issubdtype(pixels.dtype, np.floating) and not np.isfinite(pixels).all():
            raise EchoDataError(case.image_path, "image contains NaN or Inf")
        remapped = remap_camus_labels(sitk.GetArrayViewFromImage(label), self.keys, source=str(case.label_path))
        if not remapped.any():
            raise EchoDataError(case.label_path, f"no pixel of the selected labels {','.join(self.keys)}")
        return info


def _camus_record(case: CamusCase, info: dict[str, Any], layout: CamusLayout, keys: Sequence[str]) -> dict[str, Any]:
    return {
        "dataset": "CAMUS",
        "release": layout.release,
        "patient": case.patient,
        "view": case.view,
        "phase": case.phase,
        "split": case.split,
        "reference": {"edv_ml": info["LVedv"], "esv_ml": info["LVesv"], "ef_pct": info["LVef"]},
        "image_quality": info["ImageQuality"],
        "age": info["Age"],
        "sex": info["Sex"],
        "frame_index": info[case.phase],
        "frame_index_base": 1,
        "frames": {"ED": info["ED"], "ES": info["ES"]},
        "n_frames": info["NbFrame"],
        "spacing_known": True,
        "labels": list(keys),
        "source": {
            "image": relative_posix(case.image_path, layout.base),
            "label": relative_posix(case.label_path, layout.base),
            "info": relative_posix(case.info_path, layout.base),
        },
    }


def _write_camus_case(
    writer: RawDatasetWriter, case: CamusCase, info: dict[str, Any], layout: CamusLayout, keys: Sequence[str]
) -> None:
    image = read_2d_image(case.image_path)
    label = read_2d_image(case.label_path)
    array = sitk.GetArrayFromImage(image)
    mask = remap_camus_labels(sitk.GetArrayFromImage(label), keys, source=str(case.label_path))
    record = _camus_record(case, info, layout, keys)
    record["sector"] = fit_sector_record(array, image.GetSpacing(), case.case_id)
    writer.add_case(
        case.case_id,
        array,
        mask,
        spacing=image.GetSpacing(),
        origin=image.GetOrigin(),
        direction=image.GetDirection(),
        record=record,
        test=case.split == "test",
    )


def convert_camus(
    src: str | os.PathLike,
    out: str | os.PathLike,
    labels: str | Sequence[str] = "lv,myo,la",
    views: str | Sequence[str] = "2CH,4CH",
    phases: str | Sequence[str] = "ED,ES",
    n_folds: int = 5,
    seed: int = 0,
    overwrite: bool = False,
    skip_bad: bool = False,
    progress: bool = True,
) -> Path:
    """Convert a CAMUS release into an nnU-Net raw dataset.

    Case ids are ``{patient}_{view}_{phase}``. Records in ``cases.json`` hold patient, view, phase, official split,
    reference ``{edv_ml, esv_ml, ef_pct}``, image quality, age, sex, the 1-based frame numbers of ``Info_*.cfg``,
    source paths (relative to the CAMUS folder) and the fitted sector (``null`` when the fit fails).

    Args:
        src: CAMUS folder (holding ``training/`` or ``database_nifti/``, or one of those folders).
        out: dataset folder to create, e.g. ``$nnUNet_raw/Dataset501_CAMUS``.
        labels: structures to keep, from ``lv,myo,la``; values become consecutive (e.g. ``lv,la`` -> LV 1, LA 2).
        views: ``2CH``, ``4CH`` or both.
        phases: ``ED``, ``ES`` or both.
        n_folds: patient-grouped folds made when no official split files exist.
        seed: seed of those folds.
        overwrite: replace an existing dataset in ``out``.
        skip_bad: leave bad cases out (listed in ``out/skipped.csv``) instead of raising on the first.
        progress: show progress bars.

    Returns:
        The dataset folder.

    Raises:
        EchoDataError: naming the file and the problem, before anything is written.
    """
    keys = parse_labels(labels)
    n_folds, seed = check_int("n_folds", n_folds, 2), check_int("seed", seed, 0)
    overwrite, skip_bad = check_flag("overwrite", overwrite), check_flag("skip_bad", skip_bad)
    progress = check_flag("progress", progress)
    view_list = parse_choice(views, CAMUS_VIEWS, "--views")
    phase_list = parse_choice(phases, CAMUS_PHASES, "--phases")
    out = check_output_folder(out, overwrite)
    layout = detect_camus_layout(src)
    log.info("CAMUS %s release in %s", layout.release, layout.root)
    cases = find_camus_cases(layout, view_list, phase_list)
    good, bad = validate_cases(cases, _CamusChecker(keys), skip_bad, progress, "checking CAMUS")
    if not good:
        raise EchoDataError(layout.root, f"no valid case to convert ({len(bad)} bad)")
    check_folds_possible([(c.patient, c.split) for c, _ in good if c.split != "test"], layout.root)
    writer = RawDatasetWriter(
        out,
        label_dict(keys),
        description=f"CAMUS ({layout.release} release), labels {','.join(keys)}, converted by echogains",
        overwrite=overwrite,
    )
    iterable = progress_bar(good, total=len(good), desc="writing CAMUS") if progress else good
    for case, info in iterable:
        _write_camus_case(writer, case, info, layout, keys)
    write_skip_report(out, bad)
    writer.finalize(n_folds=n_folds, seed=seed)
    return writer.root
