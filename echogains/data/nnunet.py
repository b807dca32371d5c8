"""nnU-Net v2 raw datasets: the single interchange format of the toolkit.

Layout written (nnU-Net v2's raw dataset format, nnU-Net's documentation/dataset_format.md)::

    DatasetXXX_Name/
      imagesTr/{case}_0000.nii.gz   labelsTr/{case}.nii.gz     (training + validation cases)
      imagesTs/{case}_0000.nii.gz   labelsTs/{case}.nii.gz     (held-out test cases, labels kept for evaluation)
      cases.json                    one record per case (patient, view, phase, split, references, geometry, provenance)
      splits_final.json             folds grouped by patient (none with fewer than 2 training patients)
      dataset.json                  written last: its presence marks a complete dataset

Images are 2D, one channel, written with SimpleITK so that the pixel spacing (mm) survives.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import struct
import tempfile
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from echogains.utils import EchoDataError, atomic_path, atomic_write_json, get_logger, read_json

__all__ = [
    "CASE_ID_PATTERN",
    "FILE_ENDING",
    "make_image",
    "read_image",
    "check_image_file",
    "write_image",
    "patient_grouped_splits",
    "RawDatasetWriter",
    "RawDataset",
]

log = get_logger(__name__)

FILE_ENDING = ".nii.gz"
CASE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")
_DATASET_DIR = re.compile(r"^Dataset\d{3}_[A-Za-z0-9_\-]+$")


def make_image(
    array: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0),
    direction: Sequence[float] | None = None,
) -> sitk.Image:
    """Build a 2D SimpleITK image from a (rows, cols) array.

    Args:
        array: 2D array indexed ``[y, x]``.
        spacing: (x, y) pixel spacing in mm, SimpleITK order.
        origin: (x, y) physical origin in mm.
        direction: 2x2 direction cosines, row-major; identity when ``None``.
    """
    array = np.asarray(array)
    if array.ndim != 2:
        raise EchoDataError(None, f"expected a 2D image, got shape {array.shape}")
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    if direction is not None:
        image.SetDirection([float(d) for d in direction])
    return image


def write_image(image: sitk.Image, path: str | os.PathLike) -> None:
    """Write a SimpleITK image atomically (temporary file in the same folder, then ``os.replace``)."""
    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), True)


#: Bytes per element of the MetaImage ``ElementType`` values (MetaIO's ``MET_ValueTypeSize``).
_MET_SIZES = {
    "MET_CHAR": 1,
    "MET_UCHAR": 1,
    "MET_SHORT": 2,
    "MET_USHORT": 2,
    "MET_INT": 4,
    "MET_UINT": 4,
    "MET_LONG": 4,
    "MET_ULONG": 4,
    "MET_LONG_LONG": 8,
    "MET_ULONG_LONG": 8,
    "MET_FLOAT": 4,
    "MET_DOUBLE": 8,
}


def _gunzip(path: Path) -> tuple[int, bytes]:
    """Decompress ``path`` to its end; return the size and the first 540 bytes (a NIfTI header). A broken stream
    raises naming the file."""
    total, head = 0, b""
    try:
        with gzip.open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                if total < 540:
                    head += chunk[: 540 - total]
                total += len(chunk)
    except PermissionError as err:
        raise EchoDataError(path, f"cannot read ({err.strerror})") from err
    except (EOFError, OSError, zlib.error) as err:
        raise EchoDataError(path, f"truncated/corrupt gzip ({err})") from err
    return total, head


def _nifti_data_bytes(head: bytes) -> tuple[tuple[int, ...], int] | None:
    """``(shape, bytes the header needs: vox_offset + voxels x bitpix / 8)`` of a NIfTI-1/2 header; ``None`` if not
    one."""
    for order in "<>":
        if len(head) >= 348 and struct.unpack(f"{order}i", head[:4])[0] == 348:  # NIfTI-1
            dim = struct.unpack(f"{order}8h", head[40:56])
            bitpix = struct.unpack(f"{order}h", head[72:74])[0]
            offset = int(struct.unpack(f"{order}f", head[108:112])[0])
            break
        if len(head) >= 540 and struct.unpack(f"{order}i", head[:4])[0] == 540:  # NIfTI-2
            bitpix = struct.unpack(f"{order}h", head[14:16])[0]
            dim = struct.unpack(f"{order}8q", head[16:80])
            offset = int(struct.unpack(f"{order}q", head[168:176])[0])
            break
    else:
        return None
    if not 1 <= dim[0] <= 7 or bitpix <= 0 or any(d < 0 for d in dim[1 : dim[0] + 1]):
        return None
    shape = tuple(int(d) for d in dim[1 : dim[0] + 1])
    return shape, max(offset, 0) + int(np.prod(shape, dtype=np.int64)) * bitpix // 8


def _check_nifti_size(path: Path, size: int, head: bytes) -> None:
    """``size`` (uncompressed bytes) must hold the header's voxels; headers that do not parse are left to SimpleITK."""
    parsed = _nifti_data_bytes(head)
    if parsed is not None and size < parsed[1]:
        raise EchoDataError(path, f"truncated NIfTI: {size} bytes, the header (size {parsed[0]}) needs {parsed[1]}")


def _check_metaimage(path: Path) -> None:
    """A ``.mhd`` header's data file must exist and hold ``DimSize`` x channels x element size bytes.

    SimpleITK reports a short ``.raw`` as "No such file or directory"; this names the data file and its size.
    Compressed data, ``LOCAL``/``LIST`` and file patterns are left to SimpleITK.
    """
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as err:
        raise EchoDataError(path, f"cannot read header ({err})") from err
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    name = fields.get("ElementDataFile")
    if name is None:
        raise EchoDataError(path, "MetaImage header has no ElementDataFile")
    if name.upper() in ("LOCAL", "LIST") or "%" in name or " " in name:
        return
    data = path.parent / name
    if not data.is_file():
        raise EchoDataError(data, f"data file named by {path.name} not found")
    if fields.get("CompressedData", "False").lower() == "true" or fields.get("ElementType") not in _MET_SIZES:
        return
    try:
        dims = [int(v) for v in fields.get("DimSize", "").split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
        header_size = int(fields.get("HeaderSize", "0"))
    except ValueError as err:
        raise EchoDataError(
            path, f"MetaImage header has a non-integer DimSize/ElementNumberOfChannels/HeaderSize ({err})"
        ) from err
    if not dims:
        raise EchoDataError(path, "MetaImage header has no DimSize")
    need = int(np.prod(dims, dtype=np.int64)) * channels * _MET_SIZES[fields["ElementType"]] + max(header_size, 0)
    size = data.stat().st_size
    if size < need:
        raise EchoDataError(
            data,
            f"raw data file is truncated: {size} bytes, header {path.name} "
            f"(DimSize {' '.join(map(str, dims))}, {fields['ElementType']}) needs {need}",
        )


def check_image_file(path: str | os.PathLike) -> None:
    """Catch what SimpleITK misreads: it zero-fills a truncated ``.nii.gz`` silently and calls a short ``.raw``
    missing. Checked: the whole gzip stream, NIfTI data size against its header, a MetaImage's data file size.
    """
    path = Path(path)
    name = path.name.lower()
    if path.stat().st_size == 0:
        raise EchoDataError(path, "empty file (0 bytes)")
    if name.endswith(".gz"):
        size, head = _gunzip(path)
        if name.endswith(".nii.gz"):
            _check_nifti_size(path, size, head)
    elif name.endswith(".nii"):
        try:
            with path.open("rb") as handle:
                head = handle.read(540)
        except OSError as err:
            raise EchoDataError(path, f"cannot read ({err.strerror or err})") from err
        _check_nifti_size(path, path.stat().st_size, head)
    elif name.endswith(".mhd"):
        _check_metaimage(path)


def read_image(path: str | os.PathLike) -> sitk.Image:
    """Read an image with SimpleITK; missing, truncated or corrupt files raise :class:`EchoDataError` naming the
    file."""
    path = Path(path)
    if not path.is_file():
        raise EchoDataError(path, "file not found")
    check_image_file(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else "unreadable"
        raise EchoDataError(path, f"cannot read image ({first})") from err


def patient_grouped_splits(
    case_patients: Mapping[str, str], n_folds: int = 5, seed: int = 0
) -> list[dict[str, list[str]]]:
    """K folds over patients: every case of a patient (augmented copies included) sits in one fold.

    Patients are shuffled with ``seed`` and dealt round-robin, so folds differ in size by at most one patient.
    """
    patients = sorted(set(case_patients.values()))
    if len(patients) < 2:
        raise EchoDataError(None, f"need at least 2 patients to make folds, got {len(patients)}")
    n_folds = min(n_folds, len(patients))
    order = np.random.default_rng(seed).permutation(len(patients))
    fold_of = {patients[j]: i % n_folds for i, j in enumerate(order)}
    splits = []
    for fold in range(n_folds):
        val = sorted(c for c, p in case_patients.items() if fold_of[p] == fold)
        train = sorted(c for c, p in case_patients.items() if fold_of[p] != fold)
        splits.append({"train": train, "val": val})
    return splits


def _check_array(array: np.ndarray, what: str, case_id: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2:
        raise EchoDataError(case_id, f"{what} must be 2D (one channel), got shape {array.shape}")
    if min(array.shape) < 2:
        raise EchoDataError(case_id, f"{what} is degenerate, shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise EchoDataError(case_id, f"{what} contains NaN or Inf")
    return array


class RawDatasetWriter:
    """Write an nnU-Net raw dataset case by case; :meth:`finalize` writes the JSON files, ``dataset.json`` last.

    Args:
        root: dataset folder; nnU-Net expects ``DatasetXXX_Name`` inside ``$nnUNet_raw``.
        labels: nnU-Net ``labels`` mapping, e.g. ``{"background": 0, "LV": 1, "MYO": 2}``.
        channel_names: nnU-Net ``channel_names``; one channel named ``US`` by default.
        description: free text for ``dataset.json``.
        overwrite: allow replacing a complete dataset. Without it, a folder holding ``dataset.json`` is an error.
        resume: keep case files already in ``root`` (written by an interrupted run) and let the caller skip them.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        labels: Mapping[str, int],
        channel_names: Mapping[str, str] | None = None,
        description: str = "",
        overwrite: bool = False,
        resume: bool = False,
    ):
        self.root = Path(root)
        self.labels = dict(labels)
        if self.labels.get("background") != 0:
            raise EchoDataError(None, f"labels must map 'background' to 0, got {self.labels}")
        values = sorted(self.labels.values())
        if values != list(range(len(values))):
            raise EchoDataError(None, f"label values must be consecutive from 0 (nnU-Net), got {self.labels}")
        self.channel_names = dict(channel_names or {"0": "US"})
        self.description = description
        self.records: dict[str, dict[str, Any]] = {}
        self._test: set[str] = set()
        if not _DATASET_DIR.match(self.root.name):
            log.warning("%s: nnU-Net expects a folder named DatasetXXX_Name", self.root)
        if (self.root / "dataset.json").exists():
            if not overwrite:
                raise EchoDataError(
                    self.root, "a complete dataset already exists here; pass overwrite=True (--overwrite)"
                )
            (self.root / "dataset.json").unlink()  # mark incomplete until finalize() succeeds
        if not resume and not overwrite and self.root.exists() and any(self.root.iterdir()):
            raise EchoDataError(self.root, "folder exists and is not empty; choose a new folder or pass --overwrite")
        for sub in ("imagesTr", "labelsTr"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # --- paths -----------------------------------------------------------------------------------
    def image_path(self, case_id: str, test: bool = False) -> Path:
        return self.root / ("imagesTs" if test else "imagesTr") / f"{case_id}_0000{FILE_ENDING}"

    def label_path(self, case_id: str, test: bool = False) -> Path:
        return self.root / ("labelsTs" if test else "labelsTr") / f"{case_id}{FILE_ENDING}"

    def has_case(self, case_id: str, test: bool = False) -> bool:
        """True when both files of ``case_id`` are already on disk (resume)."""
        return self.image_path(case_id, test).is_file() and self.label_path(case_id, test).is_file()

    # --- writing ---------------------------------------------------------------------------------
    def add_case(
        self,
        case_id: str,
        image: np.ndarray,
        label: np.ndarray,
        *,
        spacing: Sequence[float],
        origin: Sequence[float] = (0.0, 0.0),
        direction: Sequence[float] | None = None,
        record: Mapping[str, Any] | None = None,
        test: bool = False,
        write: bool = True,
    ) -> None:
        """Validate and write one case (image ``_0000`` + label) and keep its ``cases.json`` record.

        Args:
            case_id: ``{patient}_{view}_{phase}`` (augmented copies: ``..._aug{k}``).
            image: 2D grey image ``[y, x]``.
            label: 2D integer mask of the same shape with values in ``labels``.
            spacing: (x, y) spacing in mm (SimpleITK order).
            record: metadata for ``cases.json``; should hold ``patient`` (used to group folds).
            test: write to ``imagesTs``/``labelsTs`` (held out, not in the folds).
            write: ``False`` only registers the record (the files exist already, e.g. on resume).
        """
        if not CASE_ID_PATTERN.match(case_id):
            raise EchoDataError(case_id, "case id may hold only letters, digits, '_' and '-'")
        if case_id in self.records:
            raise EchoDataError(case_id, "duplicate case id")
        rec = dict(record or {})
        rec.setdefault("patient", case_id.split("_")[0])
        # spacing in mm; null when the source gives none (EchoNet-Dynamic: the NIfTI then holds (1, 1))
        rec["spacing_mm"] = [float(s) for s in spacing] if rec.get("spacing_known", True) else None
        if write:
            image = _check_array(image, "image", case_id)
            label = _check_array(label, "label", case_id)
            if image.shape != label.shape:
                raise EchoDataError(case_id, f"image shape {image.shape} != label shape {label.shape}")
            if np.issubdtype(label.dtype, np.floating):
                if not np.all(np.mod(label, 1) == 0):
                    raise EchoDataError(case_id, "label has non-integer values")
            allowed = set(self.labels.values())
            present = {int(v) for v in np.unique(label)}
            if not present <= allowed:
                raise EchoDataError(
                    case_id, f"label values {sorted(present - allowed)} not in dataset labels {self.labels}"
                )
            if present == {0}:
                raise EchoDataError(case_id, "label mask is empty (background only)")
            if any(float(s) <= 0 or not np.isfinite(float(s)) for s in spacing):
                raise EchoDataError(case_id, f"invalid spacing {tuple(spacing)}")
            img = make_image(
                image.astype(np.float32) if image.dtype == np.float64 else image, spacing, origin, direction
            )
            lab = make_image(label.astype(np.uint8), spacing, origin, direction)
            write_image(img, self.image_path(case_id, test))
            write_image(lab, self.label_path(case_id, test))
        self.records[case_id] = rec
        if test:
            self._test.add(case_id)

    def finalize(
        self,
        splits: Sequence[Mapping[str, Sequence[str]]] | None = None,
        n_folds: int = 5,
        seed: int = 0,
        dataset_name: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write ``cases.json``, ``splits_final.json`` and, last, ``dataset.json``; remove stale case files.

        Folds: ``splits`` when given; else one fold from the records' official ``split`` (``train``/``val``)
        when every training case has one and both occur; else ``n_folds`` patient-grouped folds. With fewer than
        2 training patients (a handful of cases for inference or a look) no folds can be made: no
        ``splits_final.json`` is written (a stale one is removed) and a warning says that training needs 2.
        """
        if not self.records:
            raise EchoDataError(self.root, "no cases were written")
        train_ids = sorted(c for c in self.records if c not in self._test)
        test_ids = sorted(self._test)
        if not train_ids:
            raise EchoDataError(self.root, "no training cases (all cases are test cases)")
        if splits is None:
            splits = self._default_splits(train_ids, n_folds, seed)
        splits = [{"train": sorted(s["train"]), "val": sorted(s["val"])} for s in splits or []]
        for i, s in enumerate(splits):
            missing = (set(s["train"]) | set(s["val"])) - set(train_ids)
            if missing:
                raise EchoDataError(self.root, f"fold {i} names unknown training cases {sorted(missing)[:5]}")
        self._remove_stale(set(train_ids), set(test_ids))
        for cid in train_ids:
            self.records[cid]["subset"] = "Tr"
        for cid in test_ids:
            self.records[cid]["subset"] = "Ts"
        atomic_write_json(self.root / "cases.json", {c: self.records[c] for c in sorted(self.records)})
        if splits:
            atomic_write_json(self.root / "splits_final.json", splits)
        else:
            (self.root / "splits_final.json").unlink(missing_ok=True)  # stale folds of an overwritten dataset
            n_patients = len({str(self.records[c]["patient"]) for c in train_ids})
            log.warning(
                "%s: %d training patient(s): no folds, so no splits_final.json; the dataset serves inference, "
                "evaluation and verify-dataset, but nnU-Net training needs >= 2 patients (patient-grouped folds)",
                self.root,
                n_patients,
            )
        self._write_dataset_json(len(train_ids), len(test_ids), dataset_name, extra)
        log.info(
            "wrote %s: %d training and %d test cases, %d folds", self.root, len(train_ids), len(test_ids), len(splits)
        )
        return self.root / "dataset.json"

    def _default_splits(self, train_ids: list[str], n_folds: int, seed: int) -> list[dict[str, list[str]]] | None:
        """The official fold, else patient-grouped folds; ``None`` when fewer than 2 patients make folds impossible."""
        official = [self.records[c].get("split") for c in train_ids]
        if all(s in ("train", "val") for s in official) and {"train", "val"} <= set(official):
            return [
                {
                    "train": [c for c in train_ids if self.records[c]["split"] == "train"],
                    "val": [c for c in train_ids if self.records[c]["split"] == "val"],
                }
            ]
        patients = {c: str(self.records[c]["patient"]) for c in train_ids}
        if len(set(patients.values())) < 2:
            return None
        return patient_grouped_splits(patients, n_folds, seed)

    def _remove_stale(self, train_ids: set[str], test_ids: set[str]) -> None:
        for sub, ids, suffix in (
            ("imagesTr", train_ids, f"_0000{FILE_ENDING}"),
            ("labelsTr", train_ids, FILE_ENDING),
            ("imagesTs", test_ids, f"_0000{FILE_ENDING}"),
            ("labelsTs", test_ids, FILE_ENDING),
        ):
            folder = self.root / sub
            if not folder.is_dir():
                continue
            for f in folder.iterdir():
                if f.name.startswith("."):
                    f.unlink()  # leftover temporary file of a killed run
                elif f.name.endswith(suffix) and f.name[: -len(suffix)] not in ids:
                    log.info("removing stale file %s", f)
                    f.unlink()

    def _write_dataset_json(
        self, num_training: int, num_test: int, name: str | None, extra: Mapping[str, Any] | None
    ) -> None:
        from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

        with tempfile.TemporaryDirectory(dir=self.root) as tmp:
            generate_dataset_json(
                tmp,
                channel_names=self.channel_names,
                labels=self.labels,
                num_training_cases=num_training,
                file_ending=FILE_ENDING,
                dataset_name=name or self.root.name,
                description=self.description,
                overwrite_image_reader_writer="SimpleITKIO",
                numTest=num_test,
                **{"license": "see the source dataset's licence", "converted_by": "echogains", **dict(extra or {})},
            )
            os.replace(Path(tmp) / "dataset.json", self.root / "dataset.json")


class RawDataset:
    """Read a complete nnU-Net raw dataset written by :class:`RawDatasetWriter` (or by nnU-Net users).

    ``cases.json`` and ``splits_final.json`` are optional: without them records are inferred from file names.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise EchoDataError(self.root, "dataset folder not found")
        if not (self.root / "dataset.json").is_file():
            raise EchoDataError(
                self.root / "dataset.json", "missing: the dataset is incomplete or not an nnU-Net raw dataset"
            )
        self.dataset_json: dict[str, Any] = read_json(self.root / "dataset.json")
        for key in ("channel_names", "labels", "file_ending"):
            if key not in self.dataset_json:
                raise EchoDataError(self.root / "dataset.json", f"missing key '{key}'")
        self.file_ending: str = self.dataset_json["file_ending"]
        self.labels: dict[str, int] = {k: int(v) for k, v in self.dataset_json["labels"].items()}
        cases_file = self.root / "cases.json"
        self.records: dict[str, dict[str, Any]] = read_json(cases_file) if cases_file.is_file() else {}
        splits_file = self.root / "splits_final.json"
        self.splits: list[dict[str, list[str]]] | None = read_json(splits_file) if splits_file.is_file() else None
        self._train = self._scan("imagesTr")
        self._test = self._scan("imagesTs")
        for cid in self._train + self._test:
            self.records.setdefault(cid, {"patient": cid.split("_")[0]})

    def _scan(self, sub: str) -> list[str]:
        folder = self.root / sub
        if not folder.is_dir():
            return []
        suffix = f"_0000{self.file_ending}"
        return sorted(
            f.name[: -len(suffix)] for f in folder.iterdir() if f.name.endswith(suffix) and not f.name.startswith(".")
        )

    @property
    def label_values(self) -> dict[str, int]:
        return self.labels

    def case_ids(self, subset: str = "all", fold: int | None = None) -> list[str]:
        """Case ids of ``subset``: ``all``, ``Tr`` (imagesTr), ``Ts`` (imagesTs), ``train``/``val`` (of ``fold``)."""
        if subset == "all":
            return self._train + self._test
        if subset == "Tr":
            return list(self._train)
        if subset == "Ts":
            return list(self._test)
        if subset in ("train", "val"):
            if self.splits is None:
                raise EchoDataError(self.root / "splits_final.json", "missing: no folds to choose train/val from")
            if fold is None or not 0 <= fold < len(self.splits):
                raise EchoDataError(self.root / "splits_final.json", f"fold {fold} not in 0..{len(self.splits) - 1}")
            return list(self.splits[fold][subset])
        raise EchoDataError(None, f"unknown subset {subset!r}; use all, Tr, Ts, train or val")

    def is_test(self, case_id: str) -> bool:
        return case_id in self._test

    def image_path(self, case_id: str) -> Path:
        sub = "imagesTs" if case_id in self._test else "imagesTr"
        return self.root / sub / f"{case_id}_0000{self.file_ending}"

    def label_path(self, case_id: str) -> Path:
        sub = "labelsTs" if case_id in self._test else "labelsTr"
        return self.root / sub / f"{case_id}{self.file_ending}"

    def has_label(self, case_id: str) -> bool:
        return self.label_path(case_id).is_file()

    def read_image(self, case_id: str) -> sitk.Image:
        return read_image(self.image_path(case_id))

    def read_label(self, case_id: str) -> sitk.Image:
        return read_image(self.label_path(case_id))

    def load(self, case_id: str) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float]]:
        """Return ``(image[y, x] float32, label[y, x] uint8 or None, spacing (x, y) mm)``."""
        img = self.read_image(case_id)
        image = sitk.GetArrayFromImage(img).astype(np.float32)
        label = None
        if self.has_label(case_id):
            label = sitk.GetArrayFromImage(self.read_label(case_id)).astype(np.uint8)
        return image, label, tuple(img.GetSpacing())

    def record(self, case_id: str) -> dict[str, Any]:
        return self.records.get(case_id, {"patient": case_id.split("_")[0]})

    def label_value(self, name: str) -> int:
        """Value of a label by its ``dataset.json`` name (case-insensitive), e.g. ``LV``."""
        for key, value in self.labels.items():
            if key.lower() == name.lower():
                return value
        raise EchoDataError(self.root / "dataset.json", f"no label named {name!r} (labels: {self.labels})")

    def __len__(self) -> int:
        return len(self._train) + len(self._test)

    def __iter__(self) -> Iterable[str]:
        return iter(self.case_ids())


def copy_dataset_files(src: RawDataset, case_id: str, writer: RawDatasetWriter, test: bool | None = None) -> None:
    """Copy one case's files unchanged into another dataset being written (e.g. originals of an expansion)."""
    is_test = src.is_test(case_id) if test is None else test
    for a, b in (
        (src.image_path(case_id), writer.image_path(case_id, is_test)),
        (src.label_path(case_id), writer.label_path(case_id, is_test)),
    ):
        with atomic_path(b) as tmp:
            shutil.copyfile(a, tmp)
    spacing = tuple(read_image(src.image_path(case_id)).GetSpacing())
    writer.add_case(case_id, None, None, spacing=spacing, record=src.record(case_id), test=is_test, write=False)  # type: ignore[arg-type]
