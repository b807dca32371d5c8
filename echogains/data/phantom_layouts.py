"""Writers of the phantom's dataset layouts, and the validation of ``make_phantom``'s arguments.

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
(:mod:`echogains.data.phantom_curves`): ``phantom_curves.json`` and ``truth_curves/{loop}.csv``.

Every layout also gets ``phantom_truth.json`` at its root: per patient the analytic EDV/ESV/EF, the Simpson
biplane reference from the true masks, the sector geometry of each view and all phantom parameters. CAMUS
images are uint8 with the pixel spacing in the file; ``Info_*.cfg`` holds the analytic volumes.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from echogains.data import phantom as ph
from echogains.data.dicom import write_ultrasound_dicom
from echogains.data.phantom_curves import LoopTruth, cycle_truth, half_sequence_truth, write_curves
from echogains.data.labels import label_dict, parse_labels, remap_camus_labels
from echogains.data.nnunet import RawDatasetWriter, make_image, write_image
from echogains.utils import EchoDataError, atomic_path, atomic_write_json, atomic_write_text, get_logger
from echogains.utils import progress as progress_bar

__all__ = ["PhantomConfig", "validate_arguments", "write_layout", "LAYOUT_WRITERS", "TRUTH_FILE"]

log = get_logger(__name__)

TRUTH_FILE = "phantom_truth.json"
_PHASES = ("ED", "ES")
_SPLIT_FILES = {"train": "subgroup_training.txt", "val": "subgroup_validation.txt", "test": "subgroup_testing.txt"}
_ECHONET_SPLIT = {"train": "TRAIN", "val": "VAL", "test": "TEST"}

#: overrides given as a value or a (low, high) range, with their allowed bounds.
_RANGE_OVERRIDES: dict[str, tuple[float, float]] = {
    "depth_mm": (60.0, 300.0),
    "opening_deg": (20.0, 120.0),
    "tilt_deg": (-40.0, 40.0),
    "apex_depth_mm": (5.0, 80.0),
    "heart_angle_deg": (-40.0, 40.0),
    "axis_angle_deg": (-40.0, 40.0),
    "ef_percent": (5.0, 85.0),
}
_OTHER_OVERRIDES = ("n_frames", "quality", "anisotropy", "spacing", "cycle_frames", "fps", "n_beats")
#: overrides of the loop layouts only (not passed to ``sample_params``).
_LOOP_OVERRIDES = ("cycle_frames", "fps", "n_beats")


@dataclass(frozen=True)
class PhantomConfig:
    """Validated arguments of :func:`echogains.data.phantom.make_phantom`."""

    out_dir: Path
    n_patients: int
    preset: str
    layout: str
    seed: int
    sequence: bool
    labels: tuple[str, ...]
    image_size: tuple[int, int] | None
    overwrite: bool
    progress: bool
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def render_overrides(self) -> dict[str, Any]:
        """Overrides understood by :func:`echogains.data.phantom.sample_params`."""
        return {k: v for k, v in self.overrides.items() if k not in _LOOP_OVERRIDES}


# ----------------------------------------------------------------------------------------------------------
# Validation (everything is checked before the first byte is written)
# ----------------------------------------------------------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return bool(np.isfinite(value))


def _check_int(name: str, value: Any, lo: int, hi: int) -> int:
    if not _is_int(value) or not lo <= int(value) <= hi:
        raise EchoDataError(None, f"--{name}: expected an integer in {lo}..{hi}, got {value!r}")
    return int(value)


def _check_range(name: str, value: Any, bounds: tuple[float, float]) -> float | tuple[float, float]:
    """A number, or a ``(low, high)`` pair, inside ``bounds``."""
    lo, hi = bounds
    if _is_number(value):
        if not lo <= float(value) <= hi:
            raise EchoDataError(None, f"--{name}: {value!r} is outside {lo:g}..{hi:g}")
        return float(value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_number(v) for v in value):
        a, b = float(value[0]), float(value[1])
        if not lo <= a <= b <= hi:
            raise EchoDataError(None, f"--{name}: range {value!r} must satisfy {lo:g} <= low <= high <= {hi:g}")
        return (a, b)
    raise EchoDataError(None, f"--{name}: expected a number or a (low, high) pair, got {value!r}")


def _check_image_size(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if _is_int(value):
        value = (value, value)
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(_is_int(v) for v in value)):
        raise EchoDataError(None, f"--image_size: expected (rows, cols) integers, got {value!r}")
    rows, cols = (int(v) for v in value)
    if not (32 <= rows <= 4096 and 32 <= cols <= 4096):
        raise EchoDataError(None, f"--image_size: rows and cols must lie in 32..4096, got {value!r}")
    return rows, cols


def _check_other_override(name: str, value: Any) -> Any:
    if name == "n_frames" and isinstance(value, (list, tuple)) and len(value) == 2:
        low, high = (_check_int(name, v, 2, 200) for v in value)
        if low > high:
            raise EchoDataError(None, f"--n_frames: range {value!r} has low > high")
        return (low, high)
    if name == "n_beats":
        return _check_int(name, value, 1, 50)
    if name in ("n_frames", "cycle_frames"):
        return _check_int(name, value, 2, 200) if name == "n_frames" else _check_int(name, value, 4, 400)
    if name == "quality":
        if value not in ph.QUALITIES:
            raise EchoDataError(None, f"--quality: expected one of {', '.join(ph.QUALITIES)}, got {value!r}")
        return value
    if name == "spacing":
        pair = isinstance(value, (list, tuple)) and len(value) == 2
        if not (pair and all(_is_number(v) and 0.0 < float(v) <= 20.0 for v in value)):
            raise EchoDataError(None, f"--spacing: expected (sx, sy) in mm, each in (0, 20], got {value!r}")
        return (float(value[0]), float(value[1]))
    bounds = {"anisotropy": (0.1, 10.0), "fps": (1.0, 1000.0)}[name]
    checked = _check_range(name, value, bounds)
    if not isinstance(checked, float):
        raise EchoDataError(None, f"--{name}: expected a single number, got {value!r}")
    return checked


def _check_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in overrides.items():
        if name in _RANGE_OVERRIDES:
            out[name] = _check_range(name, value, _RANGE_OVERRIDES[name])
        elif name in _OTHER_OVERRIDES:
            out[name] = _check_other_override(name, value)
        else:
            allowed = ", ".join(sorted([*_RANGE_OVERRIDES, *_OTHER_OVERRIDES]))
            raise EchoDataError(None, f"unknown option --{name}; phantom parameters are: {allowed}")
    tilt, opening = out.get("tilt_deg", 0.0), out.get("opening_deg", 0.0)
    max_tilt = max(np.abs(tilt)) if isinstance(tilt, tuple) else abs(tilt)
    max_open = max(opening) if isinstance(opening, tuple) else opening
    if max_tilt + max_open / 2.0 >= 85.0:
        raise EchoDataError(
            None, f"--tilt_deg/--opening_deg: the sector edge would pass 85 deg from vertical ({max_tilt:g} + {max_open:g}/2)"
        )
    return out


def _check_out_dir(out_dir: Any, overwrite: bool) -> Path:
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
        raise EchoDataError(None, f"out_dir: expected a folder path, got {out_dir!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise EchoDataError(out, "output path exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise EchoDataError(out, "folder exists and is not empty; choose a new folder or pass --overwrite")
    return out


def validate_arguments(
    *,
    out_dir: Any,
    n_patients: Any,
    preset: Any,
    layout: Any,
    seed: Any,
    sequence: Any,
    labels: Any,
    image_size: Any,
    overwrite: Any,
    progress: Any,
    overrides: Mapping[str, Any],
) -> PhantomConfig:
    """Check every argument of ``make_phantom``; raise :class:`EchoDataError` naming the first bad one.

    Args:
        out_dir: see :func:`echogains.data.phantom.make_phantom`; the other arguments likewise.
        n_patients: number of patients.
        preset: preset name.
        layout: layout name.
        seed: non-negative integer.
        sequence: bool.
        labels: label selection for the nnU-Net layout.
        image_size: ``None``, an int or (rows, cols).
        overwrite: bool.
        progress: bool.
        overrides: phantom parameters.
    """
    for name, value in (("sequence", sequence), ("overwrite", overwrite), ("progress", progress)):
        if not isinstance(value, (bool, np.bool_)):
            raise EchoDataError(None, f"--{name}: expected True or False, got {value!r}")
    n = _check_int("n_patients", n_patients, 1, 9999)
    if preset not in ph.PRESETS:
        raise EchoDataError(None, f"--preset: unknown preset {preset!r}; choose from {', '.join(ph.PRESETS)}")
    if layout not in ph.LAYOUTS:
        raise EchoDataError(None, f"--layout: unknown layout {layout!r}; choose from {', '.join(ph.LAYOUTS)}")
    seed_value = _check_int("seed", seed, 0, 2**32 - 1)
    if not isinstance(labels, (str, list, tuple)):
        raise EchoDataError(None, f"--labels: expected a selection such as 'lv,myo,la', got {labels!r}")
    keys = parse_labels(labels)
    if not {"lv", "myo"} & set(keys):
        raise EchoDataError(None, f"--labels: {labels!r} must include lv or myo (the left atrium may be cut off by the sector)")
    return PhantomConfig(
        out_dir=_check_out_dir(out_dir, bool(overwrite)),
        n_patients=n,
        preset=str(preset),
        layout=str(layout),
        seed=seed_value,
        sequence=bool(sequence),
        labels=tuple(keys),
        image_size=_check_image_size(image_size),
        overwrite=bool(overwrite),
        progress=bool(progress),
        overrides=_check_overrides(overrides),
    )


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


def _info_cfg(patient: ph.PhantomPatient, view: str) -> str:
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


def _view_record(view: ph.PhantomView) -> dict[str, Any]:
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


def _patient_record(patient: ph.PhantomPatient, split: str, simpson: Mapping[str, float]) -> dict[str, Any]:
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
        "notes": "truth: analytic volumes of the 3D phantom; simpson: Simpson biplane (20 discs) from the true 2CH+4CH masks",
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

    def simulate(self, index: int, render_images: bool = True) -> ph.PhantomPatient:
        c = self.config
        return ph.simulate_patient(
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
        self.truth[patient.patient_id] = _patient_record(patient, split, ph.simpson_reference(patient))
        self.write_patient(patient, split)

    def write_patient(self, patient: ph.PhantomPatient, split: str) -> None:
        raise NotImplementedError

    def finish(self) -> Path:
        if self.curves:
            write_curves(self.root, self.curves, {"layout": self.config.layout, "seed": self.config.seed})
        atomic_write_json(self.root / TRUTH_FILE, _truth_document(self.config, self.truth))
        return self.root


class CamusNiftiWriter(_LayoutWriter):
    """CAMUS NIfTI release layout."""

    stores_sequences = True

    def write_patient(self, patient: ph.PhantomPatient, split: str) -> None:
        pid = patient.patient_id
        folder = self.root / "database_nifti" / pid
        for name, view in patient.views.items():
            for phase in _PHASES:
                write_image(make_image(view.image(phase), view.spacing), folder / f"{pid}_{name}_{phase}.nii.gz")
                write_image(make_image(view.label(phase), view.spacing), folder / f"{pid}_{name}_{phase}_gt.nii.gz")
            if view.is_sequence:
                write_image(_volume_image(view.images, view.spacing), folder / f"{pid}_{name}_half_sequence.nii.gz")
                write_image(_volume_image(view.labels, view.spacing), folder / f"{pid}_{name}_half_sequence_gt.nii.gz")
                file = f"database_nifti/{pid}/{pid}_{name}_half_sequence.nii.gz"
                self.curves.append(half_sequence_truth(patient.params, name, file))
            atomic_write_text(folder / f"Info_{name}.cfg", _info_cfg(patient, name))

    def finish(self) -> Path:
        keep = set(self.truth)
        _remove_stale(self.root / "database_nifti", re.compile(r"patient\d{4}"), keep)
        for split, file_name in _SPLIT_FILES.items():
            ids = [pid for pid, rec in self.truth.items() if rec["split"] == split]
            atomic_write_text(self.root / "database_split" / file_name, "".join(f"{pid}\n" for pid in ids))
        return super().finish()


class CamusMhdWriter(_LayoutWriter):
    """Original CAMUS release layout (MetaImage)."""

    stores_sequences = True

    def write_patient(self, patient: ph.PhantomPatient, split: str) -> None:
        pid = patient.patient_id
        folder = self.root / "training" / pid
        for name, view in patient.views.items():
            for phase in _PHASES:
                write_mhd(make_image(view.image(phase), view.spacing), folder / f"{pid}_{name}_{phase}.mhd")
                write_mhd(make_image(view.label(phase), view.spacing), folder / f"{pid}_{name}_{phase}_gt.mhd")
            if view.is_sequence:
                write_mhd(_volume_image(view.images, view.spacing), folder / f"{pid}_{name}_sequence.mhd")
                self.curves.append(half_sequence_truth(patient.params, name, f"training/{pid}/{pid}_{name}_sequence.mhd"))
            atomic_write_text(folder / f"Info_{name}.cfg", _info_cfg(patient, name))

    def finish(self) -> Path:
        _remove_stale(self.root / "training", re.compile(r"patient\d{4}"), set(self.truth))
        return super().finish()


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
        cycle = ph.simulate_cycle(
            index,
            c.preset,
            c.seed,
            image_size=size,
            cycle_frames=c.overrides.get("cycle_frames"),
            fps=c.overrides.get("fps", 50.0),
            n_beats=c.overrides.get("n_beats", 1),
            **{k: v for k, v in c.render_overrides.items() if k != "anisotropy"},  # EchoNet: square pixels
        )
        name = ph.echonet_file_name(c.seed, index)
        self._write_video(self.root / "Videos" / f"{name}.avi", cycle.frames, cycle.fps)
        self.curves.append(cycle_truth(cycle, f"Videos/{name}.avi"))
        truth = cycle.params.truth()
        self.filelist.append(
            {
                "FileName": name, "EF": truth["ef_pct"], "ESV": truth["esv_ml"], "EDV": truth["edv_ml"],
                "FrameHeight": size[0], "FrameWidth": size[1], "FPS": cycle.fps, "NumberOfFrames": cycle.frames.shape[0],
                "Split": _ECHONET_SPLIT[split],
            }
        )
        for frame in (cycle.es_frame, cycle.ed_frame):
            self.tracings += [(f"{name}.avi", *map(float, row), frame) for row in cycle.tracings[frame]]  # type: ignore[misc]
        record = _patient_record(stills, split, ph.simpson_reference(stills))
        record["echonet"] = {
            "file_name": name, "ed_frame": cycle.ed_frame, "es_frame": cycle.es_frame, "frame_index_base": 0, "fps": cycle.fps,
            "n_frames": int(cycle.frames.shape[0]), "spacing_mm": list(cycle.spacing), "sector": cycle.sector.to_dict(),
        }
        self.truth[stills.patient_id] = record

    @staticmethod
    def _write_video(path: Path, frames: np.ndarray, fps: float) -> None:
        import cv2

        with atomic_path(path) as tmp:
            height, width = frames.shape[1:]
            writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), float(fps), (int(width), int(height)), True)
            if not writer.isOpened():
                raise EchoDataError(path, "OpenCV cannot open an MJPG AVI writer")
            try:
                for frame in frames:
                    writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
            finally:
                writer.release()

    def finish(self) -> Path:
        _remove_stale(self.root / "Videos", re.compile(r"0X[0-9A-F]{16}\.avi"), {f"{r['FileName']}.avi" for r in self.filelist})
        columns = ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split"]
        atomic_write_text(self.root / "FileList.csv", _csv_text(columns, [[r[c] for c in columns] for r in self.filelist]))
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
        description = f"echogains synthetic echo phantom ({config.preset}, seed {config.seed}); labels {','.join(config.labels)}"
        labels = label_dict(config.labels)
        self.writer = RawDatasetWriter(self.root, labels, description=description, overwrite=config.overwrite)

    def write_patient(self, patient: ph.PhantomPatient, split: str) -> None:
        for name, view in patient.views.items():
            for phase in _PHASES:
                case_id = f"{patient.patient_id}_{name}_{phase}"
                label = remap_camus_labels(view.label(phase), self.config.labels)
                record = self._case_record(patient.patient_id, view, phase)
                self.writer.add_case(case_id, view.image(phase), label, spacing=view.spacing, record=record, test=split == "test")

    def _case_record(self, pid: str, view: ph.PhantomView, phase: str) -> dict[str, Any]:
        """``cases.json`` record, with the keys of the CAMUS converter's records plus the phantom's truth."""
        rec = self.truth[pid]
        return {
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

    def finish(self) -> Path:
        super().finish()  # the truth file first: dataset.json (written last by the writer) marks completion
        self.writer.finalize()
        return self.root


class DicomWriter(_LayoutWriter):
    """Multi-frame ultrasound DICOM loops of both views (``n_beats`` cycles at ``fps``), calibrated, with truth curves."""

    def add(self, index: int, split: str) -> None:
        c = self.config
        stills = self.simulate(index, render_images=False)  # true masks of both views for the Simpson reference
        record = _patient_record(stills, split, ph.simpson_reference(stills))
        pid, loops, spec = stills.patient_id, {}, ph.PRESETS[c.preset]
        for view in ph.VIEWS:
            cycle = ph.simulate_cycle(
                index, c.preset, c.seed, image_size=c.image_size or spec.image_size, cycle_frames=c.overrides.get("cycle_frames"),
                fps=c.overrides.get("fps", 30.0), n_beats=c.overrides.get("n_beats", 2), view=view,
                **{"anisotropy": spec.anisotropy, **c.render_overrides},
            )
            file = f"dicom/{pid}/{pid}_{view}.dcm"
            write_ultrasound_dicom(self.root / file, cycle.frames, cycle.spacing, cycle.fps, patient_id=pid, view=view,
                                   key=f"phantom/{c.preset}/{c.seed}/{pid}/{view}")
            truth = cycle_truth(cycle, file)
            self.curves.append(truth)
            loops[view] = {"file": file, "fps": cycle.fps, "n_frames": int(cycle.frames.shape[0]), "frame_index_base": 0,
                           "ed_frames": list(truth.ed_frames), "es_frames": list(truth.es_frames),
                           "spacing_mm": list(cycle.spacing), "sector": cycle.sector.to_dict()}
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
    splits = ph.assign_splits(config.n_patients, config.seed)
    items = list(splits.items())
    iterator = progress_bar(items, total=len(items), desc=f"phantom {config.layout}") if config.progress else items
    for index, split in iterator:
        writer.add(index, split)
    out = writer.finish()
    log.info("wrote %d phantom patients (%s, %s) to %s", config.n_patients, config.preset, config.layout, out)
    return out


# ----------------------------------------------------------------------------------------------------------
# README figure
# ----------------------------------------------------------------------------------------------------------
def save_sample_figure(
    path: str | os.PathLike,
    patient_index: int = 2,
    preset: str = "camus-like",
    seed: int = 0,
    image_size: tuple[int, int] = (448, 336),
    view: str = "4CH",
    phase: str = "ED",
) -> Path:
    """Save a PNG of one phantom image beside the same image with its label contours (docs/images/phantom_sample.png).

    Args:
        path: output PNG.
        patient_index: 1-based patient.
        preset: preset name.
        seed: dataset seed.
        image_size: (rows, cols).
        view: ``2CH`` or ``4CH``.
        phase: ``ED`` or ``ES``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    patient = ph.simulate_patient(patient_index, preset, seed, image_size=image_size, views=(view,))
    v = patient.views[view]
    image, label = v.image(phase), v.label(phase)
    sx, sy = v.spacing
    extent = (0.0, image.shape[1] * sx, image.shape[0] * sy, 0.0)  # physical mm: the anisotropic grid shown true to shape
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), facecolor="black")
    for ax in axes:
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, extent=extent, interpolation="bilinear")
        ax.set_axis_off()
    xs, ys = (np.arange(image.shape[1]) + 0.0) * sx, np.arange(image.shape[0]) * sy
    for value, colour in ((2, "#40ff60"), (3, "#4090ff"), (1, "#ff4040")):
        axes[1].contour(xs, ys, (label == value).astype(float), levels=[0.5], colors=[colour], linewidths=1.2)
    truth = patient.truth
    axes[0].set_title(f"synthetic apical {view} {phase} ({preset})", color="white", fontsize=10)
    axes[1].set_title(f"LV / MYO / LA; true EF {truth['ef_pct']:.1f} %", color="white", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, facecolor="black")
    plt.close(fig)
    return path
