"""A MONAI ``ImageReader`` for ultrasound DICOM: the physical pixel spacing from ``SequenceOfUltrasoundRegions``.

MONAI's ``PydicomReader`` and ITK/SimpleITK (GDCM) read an ultrasound DICOM's spacing as 1 x 1 (or from
``PixelSpacing``, which ultrasound files rarely carry): the calibration of an ultrasound image is per region,
``SequenceOfUltrasoundRegions[i].PhysicalDeltaX/Y`` in the unit ``PhysicalUnitsX/YDirection`` (3 = cm). This reader
wraps the toolkit's reader (:func:`echogains.data.dicom.read_ultrasound_dicom`: single- and multi-frame, MONOCHROME,
RGB and YBR (grey by BT.601 luma), RLE / JPEG / JPEG 2000 when pydicom has a decoder) and gives MONAI the array and
metadata in its conventions:

- array ``(W, H)`` for one frame, ``(W, H, T)`` for a cine loop (frames along the third axis, as a 2D+t NIfTI), no
  channel dimension (``original_channel_dim = "no_channel"``);
- ``spacing`` / ``pixdim`` ``(sx, sy[, 1])`` in mm (cm x 10), ``affine`` the diagonal of that spacing (origin 0,
  identity direction: an ultrasound image has no patient frame), ``fps`` when the file gives a frame timing.

A file without calibration is refused (``require_spacing``, default) with a message naming it, since a mask without a
physical spacing gives no area, volume or EF.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import ensure_tuple

from .common import EchoDataError

__all__ = ["UltrasoundDicomReader", "DICOM_SUFFIXES"]

#: File name endings read as DICOM by the bundle (files with the ``DICM`` preamble are recognised too).
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")


class UltrasoundDicomReader(ImageReader):
    """Read ultrasound DICOM files with their physical pixel spacing in mm.

    Args:
        require_spacing: refuse a file without a region calibrated in cm (default); ``False`` gives spacing 1 x 1.
    """

    def __init__(self, require_spacing: bool = True) -> None:
        super().__init__()
        self.require_spacing = bool(require_spacing)

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        from echogains.data.dicom import is_dicom_file

        return all(is_dicom_file(f) for f in ensure_tuple(filename))

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        """One :class:`echogains.data.dicom.DicomLoop` per file (a list for several files)."""
        from echogains.data.dicom import read_ultrasound_dicom

        loops = [read_ultrasound_dicom(f) for f in ensure_tuple(data)]
        for loop in loops:
            if loop.spacing_mm is None and self.require_spacing:
                raise EchoDataError(
                    loop.path,
                    "no physical pixel spacing: SequenceOfUltrasoundRegions has no region with PhysicalDeltaX/Y in cm",
                )
        return loops[0] if len(loops) == 1 else loops

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """The array (``(W, H)`` or ``(W, H, T)``, float32) and its metadata; several loops are stacked (channel 0)."""
        loops = list(img) if isinstance(img, (list, tuple)) else [img]
        arrays, metas = [], []
        for loop in loops:
            frames = np.asarray(loop.frames, dtype=np.float32)  # (T, H, W)
            array = frames[0].T if len(frames) == 1 else np.transpose(frames, (2, 1, 0))
            sx, sy = loop.spacing_mm or (1.0, 1.0)
            spacing = [float(sx), float(sy)] + ([1.0] if array.ndim == 3 else [])
            affine = np.diag([*spacing, 1.0] if array.ndim == 3 else [*spacing, 1.0, 1.0])
            arrays.append(array)
            metas.append(
                {
                    "filename_or_obj": str(loop.path),
                    "spatial_shape": np.asarray(array.shape),
                    "spacing": np.asarray(spacing),
                    "pixdim": np.asarray([1.0, *spacing] + [1.0] * (7 - len(spacing))),
                    "affine": affine,
                    "original_affine": affine.copy(),
                    "original_channel_dim": "no_channel",
                    "fps": loop.fps,
                    "frames": int(len(frames)),
                    "patient_id": loop.patient_id,
                    "view": loop.view,
                    "modality": loop.info.get("modality", ""),
                }
            )
        if len(arrays) == 1:
            return arrays[0], metas[0]
        if any(a.shape != arrays[0].shape for a in arrays):
            raise EchoDataError(metas[0]["filename_or_obj"], "files of different sizes cannot be stacked")
        meta = dict(metas[0], original_channel_dim=0)
        return np.stack(arrays), meta
