"""The phantom on disk: the dataset layouts, their truth files, names and splits, and :func:`make_phantom`.

Layouts (as released: CAMUS, Leclerc et al., IEEE TMI 2019; EchoNet-Dynamic, Ouyang et al., Nature 2020), so that the
real converters are exercised on the phantom:

``camus-nifti`` (CAMUS NIfTI release)::

    database_nifti/patientXXXX/patientXXXX_{2CH,4CH}_{ED,ES}.nii.gz, ..._{ED,ES}_gt.nii.gz
    database_nifti/patientXXXX/patientXXXX_{2CH,4CH}_half_sequence.nii.gz (+ _half_sequence_gt)   (sequence=True)
    database_nifti/patientXXXX/Info_{2CH,4CH}.cfg
    database_split/subgroup_{training,validation,testing}.txt

``camus-mhd`` (original CAMUS release; every patient under ``training/``, the split only in the truth file)::

    training/patientXXXX/patientXXXX_{2CH,4CH}_{ED,ES}.mhd (+ .raw), ..._gt.mhd, ..._sequence.mhd (sequence=True)
    training/patientXXXX/Info_{2CH,4CH}.cfg

``echonet`` (EchoNet-Dynamic; one apical 4CH cine loop per patient)::

    Videos/<FileName>.avi    112 x 112 grey encoded as RGB, MJPG, one cycle ED -> ES -> ED
    FileList.csv             FileName (no extension, as in the public release), EF, ESV, EDV, FrameHeight,
                             FrameWidth, FPS, NumberOfFrames, Split (TRAIN/VAL/TEST)
    VolumeTracings.csv       FileName (with ``.avi``, as in the public release), X1, Y1, X2, Y2, Frame (0-based);
                             per traced frame the long axis row first, then the chords; the ES frame is listed
                             before the ED frame (the public loader takes the last listed frame as the large one)

``nnunet``: an nnU-Net raw dataset written directly with :class:`echogains.data.nnunet.RawDatasetWriter`.

``dicom`` (scanner-style cine loops; both views of every patient)::

    dicom/patientXXXX/patientXXXX_{2CH,4CH}.dcm   Ultrasound Multi-frame Image Storage, MONOCHROME2, n_beats cycles
                                                   (default 2) at fps (default 30), the preset's image size and
                                                   pixel anisotropy (CAMUS-like: 128 x 96, sy = sx / 2), calibration
                                                   in SequenceOfUltrasoundRegions (PhysicalDeltaX/Y in cm)

Layouts with loops (``echonet``, ``dicom``, CAMUS with ``sequence=True``) also get their analytic volume curves
(:mod:`.curves`, written by :func:`write_curves`): ``phantom_curves.json`` and ``truth_curves/{loop}.csv``.

Every layout also gets ``phantom_truth.json`` at its root: per patient the analytic EDV/ESV/EF, the Simpson
biplane reference from the true masks, the sector geometry of each view and all phantom parameters. CAMUS
images are uint8 with the pixel spacing in the file; ``Info_*.cfg`` holds the analytic volumes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from echogains.data.dicom import write_ultrasound_dicom
from echogains.data.labels import label_dict, remap_camus_labels
from echogains.data.nnunet import RawDatasetWriter, make_image, write_image
from echogains.data.phantom.anatomy import PRESETS, VIEWS
from echogains.data.phantom.curves import (
    CURVES_DIR,
    CURVES_FILE,
    LoopTruth,
    curve_csv,
    cycle_truth,
    half_sequence_truth,
    loop_name,
)
from echogains.data.phantom.simulate import (
    PhantomPatient,
    PhantomView,
    simpson_reference,
    simulate_cycle,
    simulate_patient,
)
from echogains.data.phantom.streams import SPLIT_PATIENT, STREAM_SPLITS, generator
from echogains.data.phantom.validate import PhantomConfig, validate_arguments
from echogains.utils import EchoDataError, atomic_path, atomic_write_json, atomic_write_text, get_logger
from echogains.utils import progress as progress_bar

__all__ = [
    "LAYOUT_WRITERS",
    "TRUTH_FILE",
    "assign_splits",
    "echonet_file_name",
    "make_phantom",
    "write_curves",
    "write_layout",
    "write_mhd",
]

log = get_logger(__name__)

TRUTH_FILE = "phantom_truth.json"
_PHASES = ("ED", "ES")
_SPLIT_FILES = {"train": "subgroup_training.txt", "val": "subgroup_validation.txt", "test": "subgroup_testing.txt"}
_ECHONET_SPLIT = {"train": "TRAIN", "val": "VAL", "test": "TEST"}


# ----------------------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------------------
def _volume_image(frames: np.ndarray, spacing: Sequence[float]) -> sitk.Image:
    """A ``[t, y, x]`` stack as a 3D SimpleITK image with spacing (sx, sy, 1)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(frames))
    image.SetSpacing([float(spacing[0]), float(spacing[1]), 1.0])
    return image


def write_mhd(image: sitk.Image, path: str | os.PathLike) -> None:
    """Write a MetaImage header + uncompressed ``.raw`` atomically.

    Both files are written under their final names in a temporary folder beside ``path`` (the header names its
    data file), then moved into place, data file first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".mhd.") as tmp:
        sitk.WriteImage(image, str(Path(tmp) / path.name), False)
        raw = path.with_suffix(".raw")
        os.replace(Path(tmp) / raw.name, raw)
        os.replace(Path(tmp) / path.name, path)


def _info_cfg(patient: PhantomPatient, view: str) -> str:
    """CAMUS ``Info_{view}.cfg`` text: 1-based ED/ES frames of the half sequence and the analytic references."""
    p, v, truth = patient.params, patient.views[view], patient.truth
    lines = [
        f"ED: {v.ed_index + 1}",
        f"ES: {v.n_frames}",
        f"NbFrame: {v.n_frames}",
        f"Sex: {p.sex}",
        f"Age: {p.age}",
        f"ImageQuality: {p.quality}",
        f"LVedv: {truth['edv_ml']:.2f}",
        f"LVesv: {truth['esv_ml']:.2f}",
        f"LVef: {truth['ef_pct']:.2f}",
    ]
    return "\n".join(lines) + "\n"


def _view_record(view: PhantomView) -> dict[str, Any]:
    return {
        "sector": view.sector.to_dict(),
        "spacing_mm": [float(s) for s in view.spacing],
        "image_size": [int(v) for v in view.images.shape[1:]],
        "depth_mm": view.sector.depth_mm,
        "opening_deg": view.sector.opening_deg,
        "tilt_deg": view.sector.tilt_deg,
        "frames": {"ED": view.ed_index + 1, "ES": view.n_frames},
        "frame_index_base": 1,
        "n_frames": view.n_frames,
    }


def _patient_record(patient: PhantomPatient, split: str, simpson: Mapping[str, float]) -> dict[str, Any]:
    p = patient.params
    return {
        "patient": p.patient_id,
        "split": split,
        "sex": p.sex,
        "age": p.age,
        "image_quality": p.quality,
        "truth": dict(patient.truth),
        "simpson": dict(simpson),
        "views": {name: _view_record(v) for name, v in patient.views.items()},
        "params": p.to_dict(),
    }


def _truth_document(config: PhantomConfig, patients: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "generator": "echogains.data.phantom",
        "preset": config.preset,
        "layout": config.layout,
        "seed": config.seed,
        "n_patients": config.n_patients,
        "sequence": config.sequence,
        "image_size": config.image_size,
        "overrides": config.overrides,
        "units": {"volume": "ml", "ef_pct": "percent", "length": "mm", "angle": "deg", "spacing": "(sx, sy) mm"},
        "notes": "truth: analytic volumes of the 3D phantom; "
        "simpson: Simpson biplane (20 discs) from the true 2CH+4CH masks",
        "patients": dict(patients),
    }


def _remove_stale(folder: Path, pattern: re.Pattern[str], keep: set[str]) -> None:
    """Remove entries of ``folder`` named like ``pattern`` but not in ``keep`` (left by an earlier, larger run)."""
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir()):
        if pattern.fullmatch(entry.name) and entry.name not in keep:
            log.info("removing stale %s", entry)
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()


# ----------------------------------------------------------------------------------------------------------
# Layout writers: add(index, split) per patient, then finish(); a registry picks one per layout
# ----------------------------------------------------------------------------------------------------------
class _LayoutWriter:
    """Base: renders CAMUS-style patients, computes the Simpson reference, collects the truth records."""

    #: whether the layout stores half sequences (``sequence=True``).
    stores_sequences = False

    def __init__(self, config: PhantomConfig):
        self.config = config
        self.root = config.out_dir
        self.truth: dict[str, Any] = {}
        self.curves: list[LoopTruth] = []  # analytic volume curves of the loops written (phantom_curves)

    def simulate(self, index: int, render_images: bool = True) -> PhantomPatient:
        c = self.config
        return simulate_patient(
            index,
            c.preset,
            c.seed,
            image_size=c.image_size,
            sequence=c.sequence and render_images and self.stores_sequences,
            render_images=render_images,
            **c.render_overrides,
        )

    def add(self, index: int, split: str) -> None:
        patient = self.simulate(index)
        self.truth[patient.patient_id] = _patient_record(patient, split, simpson_reference(patient))
        self.write_patient(patient, split)

    def write_patient(self, patient: PhantomPatient, split: str) -> None:
        raise NotImplementedError

    def finish(self) -> Path:
        if self.curves:
            write_curves(self.root, self.curves, {"layout": self.config.layout, "seed": self.config.seed})
        atomic_write_json(self.root / TRUTH_FILE, _truth_document(self.config, self.truth))
        return self.root


class _CamusWriter(_LayoutWriter):
    """CAMUS-style layouts: per patient a folder of ED/ES stills, labels, optional half sequences and ``Info_*.cfg``.

    Subclasses name the top folder and the still suffix and write a still and a half sequence in their format.
    """

    stores_sequences = True
    #: folder holding the patient folders, relative to the layout root.
    folder = ""
    #: file suffix of the stills and labels.
    suffix = ""

    def write_image(self, image: sitk.Image, path: Path) -> None:
        raise NotImplementedError

    def write_sequence(self, view: PhantomView, folder: Path, stem: str) -> str:
        """Write the half sequence of ``view`` as ``folder/stem...``; return the image file's name."""
        raise NotImplementedError

    def write_patient(self, patient: PhantomPatient, split: str) -> None:
        pid = patient.patient_id
        folder = self.root / self.folder / pid
        for name, view in patient.views.items():
            for phase in _PHASES:
                self.write_image(
                    make_image(view.image(phase), view.spacing), folder / f"{pid}_{name}_{phase}{self.suffix}"
                )
                self.write_image(
                    make_image(view.label(phase), view.spacing), folder / f"{pid}_{name}_{phase}_gt{self.suffix}"
                )
            if view.is_sequence:
                file = self.write_sequence(view, folder, f"{pid}_{name}")
                self.curves.append(half_sequence_truth(patient.params, name, f"{self.folder}/{pid}/{file}"))
            atomic_write_text(folder / f"Info_{name}.cfg", _info_cfg(patient, name))

    def finish(self) -> Path:
        _remove_stale(self.root / self.folder, re.compile(r"patient\d{4}"), set(self.truth))
        return super().finish()


class CamusNiftiWriter(_CamusWriter):
    """CAMUS NIfTI release layout."""

    folder = "database_nifti"
    suffix = ".nii.gz"

    def write_image(self, image: sitk.Image, path: Path) -> None:
        write_image(image, path)

    def write_sequence(self, view: PhantomView, folder: Path, stem: str) -> str:
        write_image(_volume_image(view.images, view.spacing), folder / f"{stem}_half_sequence.nii.gz")
        write_image(_volume_image(view.labels, view.spacing), folder / f"{stem}_half_sequence_gt.nii.gz")
        return f"{stem}_half_sequence.nii.gz"

    def finish(self) -> Path:
        for split, file_name in _SPLIT_FILES.items():
            ids = [pid for pid, rec in self.truth.items() if rec["split"] == split]
            atomic_write_text(self.root / "database_split" / file_name, "".join(f"{pid}\n" for pid in ids))
        return super().finish()


class CamusMhdWriter(_CamusWriter):
    """Original CAMUS release layout (MetaImage)."""

    folder = "training"
    suffix = ".mhd"

    def write_image(self, image: sitk.Image, path: Path) -> None:
        write_mhd(image, path)

    def write_sequence(self, view: PhantomView, folder: Path, stem: str) -> str:
        write_mhd(_volume_image(view.images, view.spacing), folder / f"{stem}_sequence.mhd")
        return f"{stem}_sequence.mhd"


class EchoNetWriter(_LayoutWriter):
    """EchoNet-Dynamic layout: one 4CH cycle per patient, FileList.csv and VolumeTracings.csv."""

    def __init__(self, config: PhantomConfig):
        super().__init__(config)
        self.filelist: list[dict[str, Any]] = []
        self.tracings: list[tuple[str, float, float, float, float, int]] = []

    def add(self, index: int, split: str) -> None:
        c = self.config
        stills = self.simulate(index, render_images=False)  # true masks of both views for the Simpson reference
        size = c.image_size or (112, 112)
        cycle = simulate_cycle(
            index,
            c.preset,
            c.seed,
            image_size=size,
            cycle_frames=c.overrides.get("cycle_frames"),
            fps=c.overrides.get("fps", 50.0),
            n_beats=c.overrides.get("n_beats", 1),
            **{k: v for k, v in c.render_overrides.items() if k != "anisotropy"},  # EchoNet: square pixels
        )
        name = echonet_file_name(c.seed, index)
        self._write_video(self.root / "Videos" / f"{name}.avi", cycle.frames, cycle.fps)
        self.curves.append(cycle_truth(cycle, f"Videos/{name}.avi"))
        truth = cycle.params.truth()
        self.filelist.append(
            {
                "FileName": name,
                "EF": truth["ef_pct"],
                "ESV": truth["esv_ml"],
                "EDV": truth["edv_ml"],
                "FrameHeight": size[0],
                "FrameWidth": size[1],
                "FPS": cycle.fps,
                "NumberOfFrames": cycle.frames.shape[0],
                "Split": _ECHONET_SPLIT[split],
            }
        )
        for frame in (cycle.es_frame, cycle.ed_frame):
            self.tracings += [(f"{name}.avi", *map(float, row), frame) for row in cycle.tracings[frame]]  # type: ignore[misc]
        record = _patient_record(stills, split, simpson_reference(stills))
        record["echonet"] = {
            "file_name": name,
            "ed_frame": cycle.ed_frame,
            "es_frame": cycle.es_frame,
            "frame_index_base": 0,
            "fps": cycle.fps,
            "n_frames": int(cycle.frames.shape[0]),
            "spacing_mm": list(cycle.spacing),
            "sector": cycle.sector.to_dict(),
        }
        self.truth[stills.patient_id] = record

    @staticmethod
    def _write_video(path: Path, frames: np.ndarray, fps: float) -> None:
        import cv2

        with atomic_path(path) as tmp:
            height, width = frames.shape[1:]
            writer = cv2.VideoWriter(
                str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), float(fps), (int(width), int(height)), True
            )
            if not writer.isOpened():
                raise EchoDataError(path, "OpenCV cannot open an MJPG AVI writer")
            try:
                for frame in frames:
                    writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
            finally:
                writer.release()

    def finish(self) -> Path:
        _remove_stale(
            self.root / "Videos", re.compile(r"0X[0-9A-F]{16}\.avi"), {f"{r['FileName']}.avi" for r in self.filelist}
        )
        columns = ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split"]
        atomic_write_text(
            self.root / "FileList.csv", _csv_text(columns, [[r[c] for c in columns] for r in self.filelist])
        )
        tracing_columns = ["FileName", "X1", "Y1", "X2", "Y2", "Frame"]
        atomic_write_text(self.root / "VolumeTracings.csv", _csv_text(tracing_columns, self.tracings))
        return super().finish()


def _csv_value(value: Any) -> Any:
    """Floats with 10 significant digits (whole numbers without a decimal point); anything else as is."""
    if isinstance(value, (float, np.floating)):
        return int(value) if float(value).is_integer() else f"{float(value):.10g}"
    return value


def _csv_text(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    out = csv.writer(buffer, lineterminator="\n")
    out.writerow(columns)
    for row in rows:
        out.writerow([_csv_value(v) for v in row])
    return buffer.getvalue()


class NnUNetWriter(_LayoutWriter):
    """nnU-Net raw dataset: cases ``{patient}_{view}_{phase}``; test-split patients go to ``imagesTs``."""

    def __init__(self, config: PhantomConfig):
        super().__init__(config)
        description = (
            f"echogains synthetic echo phantom ({config.preset}, seed {config.seed}); labels {','.join(config.labels)}"
        )
        labels = label_dict(config.labels)
        self.writer = RawDatasetWriter(self.root, labels, description=description, overwrite=config.overwrite)

    def write_patient(self, patient: PhantomPatient, split: str) -> None:
        for name, view in patient.views.items():
            for phase in _PHASES:
                case_id = f"{patient.patient_id}_{name}_{phase}"
                label = remap_camus_labels(view.label(phase), self.config.labels)
                record = self._case_record(patient.patient_id, view, phase)
                self.writer.add_case(
                    case_id, view.image(phase), label, spacing=view.spacing, record=record, test=split == "test"
                )

    def _case_record(self, pid: str, view: PhantomView, phase: str) -> dict[str, Any]:
        """``cases.json`` record, with the keys of the CAMUS converter's records plus the phantom's truth (and, for a
        preset with causes of difficulty, their parameters: ``difficulty``)."""
        rec = self.truth[pid]
        out = {
            "dataset": "phantom",
            "patient": pid,
            "view": view.view,
            "phase": phase,
            "split": rec["split"],
            "reference": {k: rec["truth"][k] for k in ("edv_ml", "esv_ml", "ef_pct")},
            "truth": rec["truth"],
            "simpson": rec["simpson"],
            "image_quality": rec["image_quality"],
            "age": rec["age"],
            "sex": rec["sex"],
            "frame_index": view.ed_index + 1 if phase == "ED" else view.n_frames,
            "frame_index_base": 1,
            "frames": {"ED": view.ed_index + 1, "ES": view.n_frames},
            "n_frames": view.n_frames,
            "sector": view.sector.to_dict(),
            "spacing_known": True,
            "labels": list(self.config.labels),
            "source": {"generator": "echogains.data.phantom", "preset": self.config.preset, "seed": self.config.seed},
        }
        difficulty = rec["params"].get("difficulty")
        if difficulty:
            out["difficulty"] = difficulty
        return out

    def finish(self) -> Path:
        super().finish()  # the truth file first: dataset.json (written last by the writer) marks completion
        self.writer.finalize()
        return self.root


class DicomWriter(_LayoutWriter):
    """Multi-frame ultrasound DICOM loops of both views (``n_beats`` cycles at ``fps``), calibrated, with truth
    curves."""

    def add(self, index: int, split: str) -> None:
        c = self.config
        stills = self.simulate(index, render_images=False)  # true masks of both views for the Simpson reference
        record = _patient_record(stills, split, simpson_reference(stills))
        pid, loops, spec = stills.patient_id, {}, PRESETS[c.preset]
        for view in VIEWS:
            cycle = simulate_cycle(
                index,
                c.preset,
                c.seed,
                image_size=c.image_size or spec.image_size,
                cycle_frames=c.overrides.get("cycle_frames"),
                fps=c.overrides.get("fps", 30.0),
                n_beats=c.overrides.get("n_beats", 2),
                view=view,
                **{"anisotropy": spec.anisotropy, **c.render_overrides},
            )
            file = f"dicom/{pid}/{pid}_{view}.dcm"
            write_ultrasound_dicom(
                self.root / file,
                cycle.frames,
                cycle.spacing,
                cycle.fps,
                patient_id=pid,
                view=view,
                key=f"phantom/{c.preset}/{c.seed}/{pid}/{view}",
            )
            truth = cycle_truth(cycle, file)
            self.curves.append(truth)
            loops[view] = {
                "file": file,
                "fps": cycle.fps,
                "n_frames": int(cycle.frames.shape[0]),
                "frame_index_base": 0,
                "ed_frames": list(truth.ed_frames),
                "es_frames": list(truth.es_frames),
                "spacing_mm": list(cycle.spacing),
                "sector": cycle.sector.to_dict(),
            }
        record["dicom"] = loops
        self.truth[pid] = record

    def finish(self) -> Path:
        _remove_stale(self.root / "dicom", re.compile(r"patient\d{4}"), set(self.truth))
        return super().finish()


#: layout name -> writer class (a registry, as the presets).
LAYOUT_WRITERS: dict[str, type[_LayoutWriter]] = {
    "camus-nifti": CamusNiftiWriter,
    "camus-mhd": CamusMhdWriter,
    "echonet": EchoNetWriter,
    "nnunet": NnUNetWriter,
    "dicom": DicomWriter,
}


def write_layout(config: PhantomConfig) -> Path:
    """Render every patient and write the chosen layout; returns the output folder."""
    writer = LAYOUT_WRITERS[config.layout](config)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    splits = assign_splits(config.n_patients, config.seed)
    items = list(splits.items())
    iterator = progress_bar(items, total=len(items), desc=f"phantom {config.layout}") if config.progress else items
    for index, split in iterator:
        writer.add(index, split)
    out = writer.finish()
    log.info("wrote %d phantom patients (%s, %s) to %s", config.n_patients, config.preset, config.layout, out)
    return out


# ----------------------------------------------------------------------------------------------------------
# Truth curves, splits and names
# ----------------------------------------------------------------------------------------------------------
def write_curves(root: Path, loops: Sequence[LoopTruth], extra: Mapping[str, Any] | None = None) -> None:
    """Write ``truth_curves/{loop}.csv`` per loop, then ``phantom_curves.json`` listing them all."""
    records = {}
    keep = {f"{loop_name(t)}.csv" for t in loops}
    folder = root / CURVES_DIR
    for stale in sorted(folder.glob("*.csv")) if folder.is_dir() else []:
        if stale.name not in keep:  # left by an earlier, larger run into the same folder
            stale.unlink()
    for truth in loops:
        name = loop_name(truth)
        atomic_write_text(root / CURVES_DIR / f"{name}.csv", curve_csv(truth))
        records[name] = {**truth.to_dict(), "curve_csv": f"{CURVES_DIR}/{name}.csv"}
    document = {
        "generator": "echogains.data.phantom_curves",
        "notes": "per-frame analytic LV cavity volume (ml) of each loop, true ED (largest) and ES (smallest) frames, "
        "0-based; beats are ED -> ES -> next ED",
        **dict(extra or {}),
        "loops": records,
    }
    atomic_write_json(root / CURVES_FILE, document)


def assign_splits(n_patients: int, seed: int = 0) -> dict[int, str]:
    """CAMUS-like patient split (400/50/50 of 500 -> 80/10/10 %): ``{index: "train"|"val"|"test"}``.

    At least one training patient; one validation patient from 2 patients on, one test patient from 3 on.
    """
    n_val = 0 if n_patients < 2 else max(1, int(round(0.1 * n_patients)))
    n_test = 0 if n_patients < 3 else max(1, int(round(0.1 * n_patients)))
    order = generator(seed, SPLIT_PATIENT, STREAM_SPLITS).permutation(np.arange(1, n_patients + 1))
    out = {int(i): "train" for i in order}
    for i in order[:n_test]:
        out[int(i)] = "test"
    for i in order[n_test : n_test + n_val]:
        out[int(i)] = "val"
    return dict(sorted(out.items()))


def echonet_file_name(seed: int, index: int) -> str:
    """EchoNet-style video name (``0X`` + 16 hex digits), deterministic in (seed, index)."""
    return "0X" + hashlib.sha1(f"echogains-phantom-{seed}-{index}".encode()).hexdigest()[:16].upper()


# ----------------------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------------------
def make_phantom(
    out_dir: str | os.PathLike,
    n_patients: int = 10,
    preset: str = "camus-like",
    layout: str = "camus-nifti",
    seed: int = 0,
    sequence: bool = False,
    labels: str = "lv,myo,la",
    image_size: Sequence[int] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    **overrides: Any,
) -> Path:
    """Write a synthetic echo dataset (``echogains make-phantom``).

    Args:
        out_dir: output folder (must be empty or absent unless ``overwrite``); for ``nnunet`` the dataset folder
            (nnU-Net expects ``DatasetXXX_Name``).
        n_patients: number of patients (each has a 2CH and a 4CH view, ED and ES).
        preset: ``camus-like`` (varied depth, angle, position), ``lv-focused`` (HUNT4-like) or ``hard`` (camus-like
            geometry with CAMUS's quality grades and realistic causes of difficulty, see :mod:`.difficulty`).
        layout: ``camus-nifti`` (CAMUS NIfTI release), ``camus-mhd`` (original CAMUS release), ``echonet``
            (EchoNet-Dynamic: AVI + FileList.csv + VolumeTracings.csv), ``nnunet`` (nnU-Net raw dataset) or
            ``dicom`` (multi-frame ultrasound DICOM cine loops of both views, calibrated).
        seed: the same seed and options give the same bytes.
        sequence: also write the half sequences ED -> ES (CAMUS layouts).
        labels: label subset for ``nnunet``, e.g. ``lv,myo,la`` or ``lv,myo``.
        image_size: (rows, cols); the preset's default (EchoNet: 112 x 112) when ``None``.
        overwrite: allow a non-empty ``out_dir``; files of this layout are replaced and stale patients removed.
        progress: show a progress bar.
        overrides: per-patient parameters, fixed or as ``(low, high)``: ``depth_mm``, ``opening_deg``,
            ``tilt_deg``, ``apex_depth_mm``, ``heart_angle_deg``, ``axis_angle_deg``, ``ef_percent``, ``n_frames``,
            ``quality``, ``anisotropy``, ``spacing``, ``cycle_frames``, ``fps`` and ``n_beats`` (EchoNet, DICOM).

    Returns:
        The output folder.

    Raises:
        EchoDataError: any invalid argument or a non-empty ``out_dir`` without ``overwrite``, before anything is
            written.
    """
    config = validate_arguments(
        out_dir=out_dir,
        n_patients=n_patients,
        preset=preset,
        layout=layout,
        seed=seed,
        sequence=sequence,
        labels=labels,
        image_size=image_size,
        overwrite=overwrite,
        progress=progress,
        overrides=overrides,
    )
    return write_layout(config)
