"""Ultrasound DICOM cine loops: read (pixel data, physical spacing, frame rate, patient and view) and write.

Reading is done with pydicom, because SimpleITK (GDCM) ignores the ultrasound calibration: it reads an
ultrasound image's spacing as (1, 1). The calibration lives in ``SequenceOfUltrasoundRegions`` (0018,6011): per
region ``PhysicalDeltaX`` / ``PhysicalDeltaY`` are the physical size of one pixel in the unit coded by
``PhysicalUnitsXDirection`` / ``PhysicalUnitsYDirection`` (3 = cm, so mm = 10 x delta). The frame interval comes
from ``FrameTime`` (ms), else ``FrameTimeVector`` (ms, per frame), else ``CineRate`` or
``RecommendedDisplayFrameRate`` (frames per second).

Pixel data: single- or multi-frame, MONOCHROME1/2, RGB or YBR (pydicom converts YBR to RGB), 8 or 16 bit; colour
is turned into grey with the ITU-R BT.601 luma weights (the weights OpenCV's ``COLOR_BGR2GRAY`` uses for videos).
Compressed transfer syntaxes are decoded by the decoders pydicom finds: RLE (its own), JPEG baseline and JPEG 2000
(Pillow, a dependency of matplotlib and scikit-image); JPEG-LS and lossless JPEG need the optional ``pyjpegls`` or
``pylibjpeg-libjpeg`` wheels and give a one-line error naming them when absent.

The view (apical 2CH / 4CH) is read from ``ViewName``, ``ViewCodeSequence`` (code meaning), ``SeriesDescription``,
``ProtocolName`` or ``ImageComments``, the patient from ``PatientID``.

:func:`write_ultrasound_dicom` writes a multi-frame "Ultrasound Multi-frame Image Storage" file with one region of
calibration (used by the phantom's ``dicom`` layout); its UIDs are derived from the caller's key, so the same
inputs give the same bytes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from echogains.data.frames import to_grey
from echogains.utils import EchoDataError, atomic_path

__all__ = [
    "DicomLoop",
    "US_MULTIFRAME_SOP_CLASS",
    "is_dicom_file",
    "read_ultrasound_dicom",
    "region_spacing_mm",
    "frame_rate",
    "view_from_text",
    "write_ultrasound_dicom",
]

#: Ultrasound Multi-frame Image Storage.
US_MULTIFRAME_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.3.1"
#: ``PhysicalUnits{X,Y}Direction`` code for centimetres.
UNITS_CM = 3
_VIEW_PATTERNS = (
    ("2CH", re.compile(r"(?<![0-9a-z])(a2c|ap2|2ch|2-?chamber|two[ -]?chamber|apical[ _-]?2)(?![a-z])", re.I)),
    ("4CH", re.compile(r"(?<![0-9a-z])(a4c|ap4|4ch|4-?chamber|four[ -]?chamber|apical[ _-]?4)(?![a-z])", re.I)),
)


@dataclass
class DicomLoop:
    """A DICOM cine loop.

    Args:
        path: the file.
        frames: grey frames ``(T, H, W)`` float32 (the stored values; colour converted to luma).
        spacing_mm: (sx, sy) in mm from the ultrasound region, or ``None`` when the file has no calibration.
        fps: frames per second, or ``None`` when the file gives no frame timing.
        patient_id: ``PatientID`` (may be empty).
        view: ``2CH``, ``4CH`` or ``None`` when no tag names an apical view.
        info: other attributes (transfer syntax, photometric interpretation, series description, region).
    """

    path: Path
    frames: np.ndarray
    spacing_mm: tuple[float, float] | None
    fps: float | None
    patient_id: str
    view: str | None
    info: dict[str, Any] = field(default_factory=dict)


def is_dicom_file(path: str | os.PathLike) -> bool:
    """``True`` for a file with the DICOM preamble (``DICM`` at byte 128) or a ``.dcm``/``.dicom`` suffix."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def view_from_text(text: str | None) -> str | None:
    """``2CH`` / ``4CH`` when ``text`` names an apical view (A2C, AP2, 2CH, "two chamber", ...), else ``None``.

    A text naming both views gives ``None`` (ambiguous).
    """
    if not text:
        return None
    found = {view for view, pattern in _VIEW_PATTERNS if pattern.search(str(text))}
    return found.pop() if len(found) == 1 else None


def _region_delta(region: Any, axis: str) -> float | None:
    """One region's pixel size along ``axis`` (X or Y) in mm, or ``None`` when not calibrated in cm."""
    units = getattr(region, f"PhysicalUnits{axis}Direction", None)
    delta = getattr(region, f"PhysicalDelta{axis}", None)
    if units is None or delta is None or int(units) != UNITS_CM:
        return None
    value = abs(float(delta)) * 10.0
    return value if np.isfinite(value) and value > 0 else None


def region_spacing_mm(ds: Any) -> tuple[float, float] | None:
    """(sx, sy) in mm from ``SequenceOfUltrasoundRegions``: the largest region calibrated in cm on both axes.

    Regions that are not 2D tissue images (M-mode, Doppler) carry time on one axis; they are skipped because their
    units are not cm on both axes. ``None`` when no region is calibrated.
    """
    regions = getattr(ds, "SequenceOfUltrasoundRegions", None) or []
    best: tuple[float, tuple[float, float]] | None = None
    for region in regions:
        sx, sy = _region_delta(region, "X"), _region_delta(region, "Y")
        if sx is None or sy is None:
            continue
        x0, y0 = int(getattr(region, "RegionLocationMinX0", 0)), int(getattr(region, "RegionLocationMinY0", 0))
        x1 = int(getattr(region, "RegionLocationMaxX1", 0))
        y1 = int(getattr(region, "RegionLocationMaxY1", 0))
        area = float(max(0, x1 - x0) * max(0, y1 - y0))
        if best is None or area > best[0]:
            best = (area, (sx, sy))
    return None if best is None else best[1]


def frame_rate(ds: Any) -> float | None:
    """Frames per second from ``FrameTime`` (ms), ``FrameTimeVector`` (ms), ``CineRate`` or the display rate."""
    frame_time = getattr(ds, "FrameTime", None)
    if frame_time not in (None, "") and float(frame_time) > 0:
        return 1000.0 / float(frame_time)
    vector = getattr(ds, "FrameTimeVector", None)
    if vector:
        steps = np.asarray([float(v) for v in vector][1:])  # the first entry is 0 (time of frame 1)
        steps = steps[steps > 0]
        if steps.size:
            return 1000.0 / float(steps.mean())
    for name in ("CineRate", "RecommendedDisplayFrameRate"):
        value = getattr(ds, name, None)
        if value not in (None, "") and float(value) > 0:
            return float(value)
    return None


def _view_of(ds: Any) -> str | None:
    texts = [getattr(ds, "ViewName", None)]
    for item in getattr(ds, "ViewCodeSequence", None) or []:
        texts.append(getattr(item, "CodeMeaning", None))
    texts += [getattr(ds, name, None) for name in ("SeriesDescription", "ProtocolName", "ImageComments")]
    for text in texts:
        view = view_from_text(text)
        if view is not None:
            return view
    return None


def _to_grey(pixels: np.ndarray, ds: Any, path: Path) -> np.ndarray:
    """Decoded pixel data as ``(T, H, W)`` float32 grey.

    DICOM's own cases stay here (frame count, ``SamplesPerPixel``, MONOCHROME1 inverted); colour goes through the
    shared :func:`echogains.data.frames.to_grey` (BT.601 luma, in float: no rounding to 8 bits).
    """
    samples = int(getattr(ds, "SamplesPerPixel", 1))
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    array = np.asarray(pixels)
    if samples == 3:
        array = array[None] if array.ndim == 3 else array
        if array.ndim != 4 or array.shape[-1] != 3:
            raise EchoDataError(path, f"unexpected colour pixel array of shape {array.shape}")
        array = to_grey(array.astype(np.float64), "luma", "RGB", str(path))  # decoded YBR is RGB by now
    elif samples == 1:
        array = array[None] if array.ndim == 2 else array
        if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            array = array.max() - array  # MONOCHROME1: high values are dark
    else:
        raise EchoDataError(path, f"expected a grey or RGB image, got SamplesPerPixel {samples}")
    if array.ndim != 3 or array.shape[0] != frames:
        raise EchoDataError(path, f"pixel data of shape {array.shape} does not hold NumberOfFrames {frames}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _decode(ds: Any, path: Path) -> np.ndarray:
    if "PixelData" not in ds:
        raise EchoDataError(path, "DICOM file has no pixel data (not an image, or the file is truncated)")
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        return ds.pixel_array
    except (NotImplementedError, RuntimeError) as err:
        name = getattr(syntax, "name", syntax)
        if (
            "plugin" in str(err).lower()
            or "no pixel data decoders" in str(err).lower()
            or "decoder" in str(err).lower()
        ):
            raise EchoDataError(
                path,
                f"cannot decode {name} pixel data here (install pylibjpeg-libjpeg or pyjpegls "
                f"for JPEG-LS/lossless JPEG): {str(err).splitlines()[0]}",
            ) from err
        raise EchoDataError(path, f"corrupt or truncated pixel data ({str(err).splitlines()[0]})") from err
    except (ValueError, EOFError, OSError, KeyError, AttributeError, TypeError) as err:
        raise EchoDataError(
            path, f"corrupt or truncated pixel data ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        ) from err


def read_ultrasound_dicom(path: str | os.PathLike) -> DicomLoop:
    """Read a (multi-frame) ultrasound DICOM file.

    Args:
        path: the DICOM file.

    Raises:
        EchoDataError: missing or unreadable file, no pixel data, pixel data that cannot be decoded (truncated,
            corrupt, or a compression without an installed decoder), NaN/Inf, degenerate frames.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    if not path.is_file():
        raise EchoDataError(path, "DICOM file not found")
    try:
        ds = pydicom.dcmread(str(path))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as err:
        raise EchoDataError(
            path, f"not a readable DICOM file ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        ) from err
    frames = _to_grey(_decode(ds, path), ds, path)
    if min(frames.shape[1:]) < 2:
        raise EchoDataError(path, f"degenerate frames of size {frames.shape[1:]}")
    if not np.isfinite(frames).all():
        raise EchoDataError(path, "pixel data contains NaN or Inf")
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    info = {
        "transfer_syntax": None if syntax is None else str(syntax),
        "transfer_syntax_name": getattr(syntax, "name", None),
        "photometric": str(getattr(ds, "PhotometricInterpretation", "")),
        "series_description": str(getattr(ds, "SeriesDescription", "") or ""),
        "modality": str(getattr(ds, "Modality", "") or ""),
        "sop_class": str(getattr(ds, "SOPClassUID", "") or ""),
    }
    return DicomLoop(
        path=path,
        frames=frames,
        spacing_mm=region_spacing_mm(ds),
        fps=frame_rate(ds),
        patient_id=str(getattr(ds, "PatientID", "") or ""),
        view=_view_of(ds),
        info=info,
    )


def _uid(key: str) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=["echogains", key]))


def write_ultrasound_dicom(
    path: str | os.PathLike,
    frames: np.ndarray,
    spacing_mm: Sequence[float] | None,
    fps: float | None,
    *,
    patient_id: str,
    view: str | None,
    key: str,
    series_description: str | None = None,
    rgb: bool = False,
) -> Path:
    """Write ``uint8`` frames ``(T, H, W)`` as an Ultrasound Multi-frame Image Storage file, atomically.

    Args:
        path: output file.
        frames: uint8 grey frames.
        spacing_mm: (sx, sy) in mm, written as one ``SequenceOfUltrasoundRegions`` region covering the image
            (``PhysicalDeltaX/Y`` in cm, units code 3); ``None`` writes no calibration.
        fps: frame rate, written as ``FrameTime`` (ms) and ``CineRate``; ``None`` writes neither.
        patient_id: ``PatientID`` (also the patient name).
        view: ``2CH``/``4CH`` written as ``ViewName`` and in ``SeriesDescription`` (``None``: neither).
        key: a unique string (e.g. dataset seed, patient, view) from which the UIDs are derived.
        series_description: overrides the default ``"apical {view}"``.
        rgb: store the frames as RGB (grey in every channel), as many scanners do.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if frames.ndim != 3:
        raise EchoDataError(path, f"expected frames (T, H, W), got shape {frames.shape}")
    n, rows, cols = frames.shape
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_MULTIFRAME_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = _uid(f"{key}/instance")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = US_MULTIFRAME_SOP_CLASS, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid(f"{patient_id}/study"), _uid(f"{key}/series")
    ds.Modality, ds.Manufacturer = "US", "echogains phantom"
    ds.PatientID, ds.PatientName = patient_id, patient_id
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20000101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "000000"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    if view is not None:
        ds.ViewName = f"apical {view}"
        ds.SeriesDescription = series_description or f"apical {view}"
    elif series_description:
        ds.SeriesDescription = series_description
    _set_pixels(ds, frames, rgb)
    if fps is not None:
        ds.FrameTime = f"{1000.0 / float(fps):.10g}"
        ds.CineRate = int(round(float(fps)))
        ds.FrameIncrementPointer = 0x00181063  # FrameTime
    if spacing_mm is not None:
        ds.SequenceOfUltrasoundRegions = [_region(rows, cols, spacing_mm)]
    with atomic_path(path) as tmp:
        ds.save_as(str(tmp), enforce_file_format=True)
    return Path(path)


def _set_pixels(ds: Any, frames: np.ndarray, rgb: bool) -> None:
    n, rows, cols = frames.shape
    ds.NumberOfFrames, ds.Rows, ds.Columns = n, rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if rgb:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.PixelData = np.repeat(frames[..., None], 3, axis=-1).tobytes()
    else:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = frames.tobytes()


def _region(rows: int, cols: int, spacing_mm: Sequence[float]) -> Any:
    from pydicom.dataset import Dataset

    region = Dataset()
    region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0  # 2D tissue
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = cols - 1, rows - 1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = UNITS_CM
    region.ReferencePixelX0, region.ReferencePixelY0 = 0, 0
    region.PhysicalDeltaX = float(spacing_mm[0]) / 10.0
    region.PhysicalDeltaY = float(spacing_mm[1]) / 10.0
    return region
