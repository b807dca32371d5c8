"""Reading echo loops for ``echogains analyze``: videos, ultrasound DICOM, 2D+t NIfTI/mhd; patients and views.

Inputs (a file, or a folder searched recursively):

- video: ``.avi`` / ``.mp4`` / ``.mov`` (EchoNet-Dynamic AVIs, MJPG), decoded by OpenCV through the EchoNet
  converter's frame reader (:func:`echogains.data.echonet.read_video_frames`); grey from BGR; frame rate from the
  container; pixel spacing unknown (pixel units);
- DICOM: ``.dcm`` / ``.dicom`` or any file with the DICOM preamble (:mod:`echogains.data.dicom`): spacing from the
  ultrasound regions (mm), frame rate from ``FrameTime`` / ``CineRate``, patient from ``PatientID``, view from
  ``ViewName`` / ``SeriesDescription``; a file without calibration continues in pixels with a warning unless
  ``require_spacing``;
- 2D+t images: ``.nii.gz`` / ``.nii`` / ``.mhd`` (CAMUS ``_sequence`` / ``_half_sequence``), frames along the third
  axis, spacing from the file; ground-truth files (``*_gt.*``) are skipped.

Patient and view from the file name when the format gives none: ``{patient}_{view}...`` with the view one of
2CH/4CH/A2C/A4C/AP2/AP4 (e.g. ``patient0001_4CH_half_sequence.nii.gz``, ``P7_A2C.avi``). A loop whose view cannot be
told is analysed on its own (single plane) under its file name.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from echogains.data.dicom import is_dicom_file, read_ultrasound_dicom, view_from_text
from echogains.data.echonet import read_video_frames
from echogains.data.nnunet import read_image
from echogains.utils import EchoDataError, get_logger

__all__ = [
    "Loop",
    "VIDEO_SUFFIXES",
    "IMAGE_SUFFIXES",
    "find_loop_files",
    "read_loop",
    "name_patient_view",
    "loop_kind",
    "assign_views",
    "safe_name",
]

log = get_logger("echogains.analysis")

VIDEO_SUFFIXES: tuple[str, ...] = (".avi", ".mp4", ".mov")
IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".mhd")
_NAME = re.compile(r"^(?P<patient>.+?)[_\-. ](?P<view>2ch|4ch|a2c|a4c|ap2|ap4)(?=$|[_\-. ])", re.I)


@dataclass
class Loop:
    """One cine loop, read.

    Args:
        path: the file.
        kind: ``video``, ``dicom`` or ``image``.
        frames: grey frames ``(T, H, W)`` float32.
        spacing_mm: (sx, sy) in mm, or ``None`` (pixel units).
        fps: frames per second, or ``None`` when the file gives none.
        patient: patient id (from the DICOM tags or the file name).
        view: ``2CH``, ``4CH`` or ``None``.
        reference: for image inputs, the image whose geometry the masks copy.
        warnings: what the reader noticed (e.g. no calibration).
    """

    path: Path
    kind: str
    frames: np.ndarray
    spacing_mm: tuple[float, float] | None
    fps: float | None
    patient: str
    view: str | None
    reference: sitk.Image | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def loop_id(self) -> str:
        """Output name of the loop: ``{patient}_{view}``, or the file's stem when the view is unknown."""
        return safe_name(f"{self.patient}_{self.view}" if self.view else _stem(self.path))

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    def record(self) -> dict[str, Any]:
        return {
            "file": str(self.path),
            "kind": self.kind,
            "patient": self.patient,
            "view": self.view,
            "n_frames": self.n_frames,
            "size_hw": list(self.frames.shape[1:]),
            "spacing_mm": None if self.spacing_mm is None else list(self.spacing_mm),
            "units": "mm" if self.spacing_mm is not None else "pixels",
            "fps": self.fps,
            "warnings": list(self.warnings),
        }


def safe_name(text: str) -> str:
    """``text`` usable as a file name: characters other than letters, digits, ``.``, ``_``, ``-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(text)) or "loop"


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES, ".dcm", ".dicom"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def name_patient_view(path: str | os.PathLike) -> tuple[str | None, str | None]:
    """``(patient, view)`` from a file name ``{patient}_{view}...``; ``(None, None)`` when it has no view."""
    match = _NAME.match(_stem(Path(path)))
    if not match:
        return None, None
    return match.group("patient"), view_from_text(match.group("view"))


def loop_kind(path: Path) -> str | None:
    """``video``, ``image``, ``dicom`` or ``None`` (not a loop) for a file."""
    lower = path.name.lower()
    if lower.endswith(VIDEO_SUFFIXES):
        return "video"
    if lower.endswith(IMAGE_SUFFIXES):
        return None if _stem(path).lower().endswith("_gt") else "image"
    if is_dicom_file(path):
        return "dicom"
    return None


def find_loop_files(source: str | os.PathLike) -> list[Path]:
    """The loops in ``source``: the file itself, or every loop file under a folder (sorted, hidden files skipped).

    Raises:
        EchoDataError: missing source, a file that is no loop format, or a folder without loops.
    """
    root = Path(source)
    if root.is_file():
        if loop_kind(root) is None:
            raise EchoDataError(root, "not a video (.avi/.mp4/.mov), DICOM or 2D+t image (.nii.gz/.nii/.mhd)")
        return [root]
    if not root.is_dir():
        raise EchoDataError(root, "input not found (expected a video, a DICOM file, a 2D+t image or a folder of them)")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
        and loop_kind(p) is not None
    )
    if not files:
        raise EchoDataError(root, "no loops found (videos, DICOM files, 2D+t NIfTI/mhd images)")
    return files


def _read_video(path: Path) -> tuple[np.ndarray, float | None]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    opened = capture.isOpened()
    count, fps = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0), float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    capture.release()
    if not opened:
        raise EchoDataError(path, "cannot open video (unreadable, truncated or not a video OpenCV decodes)")
    if count <= 0:
        raise EchoDataError(path, "the video gives no frame count (unreadable or truncated)")
    try:
        frames = read_video_frames(path, range(count), n_frames=count)
    except EchoDataError as err:
        if "truncated" in err.problem:  # the reader's message names FileList.csv: say what was checked here
            decoded = re.search(r"(\d+) of (\d+) frames", err.problem)
            got = decoded.group(1) if decoded else "fewer"
            raise EchoDataError(
                path, f"truncated or corrupt video: {got} of the {count} frames in its header decode"
            ) from err
        raise
    return np.stack([frames[i] for i in range(count)]).astype(np.float32), (fps if fps > 0 else None)


def _read_image_loop(path: Path) -> tuple[np.ndarray, tuple[float, float], sitk.Image]:
    image = read_image(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise EchoDataError(
            path, f"expected a grey image, got {image.GetNumberOfComponentsPerPixel()} components per pixel"
        )
    if image.GetDimension() not in (2, 3):
        raise EchoDataError(path, f"expected a 2D+t sequence, got {image.GetDimension()} dimensions")
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    frames = array[None] if array.ndim == 2 else array
    spacing = image.GetSpacing()
    return frames, (float(spacing[0]), float(spacing[1])), image


def _dicom_loop(path: Path) -> Loop:
    dicom = read_ultrasound_dicom(path)
    name_patient, name_view = name_patient_view(path)
    if dicom.view and name_view and dicom.view != name_view:
        raise EchoDataError(path, f"mismatched views: the DICOM tags say {dicom.view}, the file name says {name_view}")
    patient = dicom.patient_id or name_patient or _stem(path)
    return Loop(path, "dicom", dicom.frames, dicom.spacing_mm, dicom.fps, patient, dicom.view or name_view)


def read_loop(path: str | os.PathLike, require_spacing: bool = False, fps: float | None = None) -> Loop:
    """Read one loop (see the module docstring).

    Args:
        path: the file.
        require_spacing: a loop without physical spacing is an error instead of a warning.
        fps: frame rate to use when the file gives none (or to override it).

    Raises:
        EchoDataError: unreadable, truncated or corrupt file, NaN/Inf, degenerate frames, no spacing with
            ``require_spacing``, DICOM tags and file name naming different views.
    """
    path = Path(path)
    kind = loop_kind(path)
    if kind is None:
        raise EchoDataError(path, "not a loop format this command reads")
    if kind == "dicom":
        loop = _dicom_loop(path)
    else:
        patient, view = name_patient_view(path)
        if kind == "video":
            frames, file_fps = _read_video(path)
            loop = Loop(path, kind, frames, None, file_fps, patient or _stem(path), view)
        else:
            frames, spacing, image = _read_image_loop(path)
            loop = Loop(path, kind, frames, spacing, None, patient or _stem(path), view, reference=image)
    if fps is not None:
        loop.fps = float(fps)
    if not np.isfinite(loop.frames).all():
        raise EchoDataError(path, "contains NaN or Inf")
    if min(loop.frames.shape[1:]) < 8:
        raise EchoDataError(path, f"frames of {loop.frames.shape[1]} x {loop.frames.shape[2]} pixels are too small")
    if loop.spacing_mm is None:
        what = (
            "no physical pixel spacing (no calibrated ultrasound region)"
            if kind == "dicom"
            else "no physical pixel spacing"
        )
        if require_spacing:
            raise EchoDataError(path, f"{what}; --require_spacing is set")
        loop.warnings.append(f"{what}: areas and volumes in pixel units")
    return loop


def assign_views(loops: Sequence[Loop], views: Sequence[str] | None) -> list[Loop]:
    """Apply ``--views``: keep loops of the listed views; a loop of unknown view gets the view when one is listed.

    Raises:
        EchoDataError: several views listed and a loop whose view cannot be told.
    """
    if views is None:
        return list(loops)
    kept = []
    for loop in loops:
        if loop.view is None:
            if len(views) != 1:
                raise EchoDataError(
                    loop.path,
                    f"cannot tell the view of this loop (name it {{patient}}_{{2CH|4CH}} or set "
                    f"ViewName); --views lists {','.join(views)}",
                )
            loop.view = views[0]
        if loop.view in views:
            kept.append(loop)
        else:
            log.info("%s: view %s not in --views %s, left out", loop.path, loop.view, ",".join(views))
    return kept
