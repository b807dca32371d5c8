"""A MONAI ``ImageReader`` for ultrasound DICOM: the physical pixel spacing from ``SequenceOfUltrasoundRegions``.

MONAI's ``PydicomReader`` and ITK/SimpleITK (GDCM) read an ultrasound DICOM's spacing as 1 x 1 (or from
``PixelSpacing``, which ultrasound files rarely carry): the calibration of an ultrasound image is per region,
``SequenceOfUltrasoundRegions[i].PhysicalDeltaX/Y`` in the unit ``PhysicalUnitsX/YDirection`` (3 = cm). This reader
wraps the toolkit's reader (:func:`echogains.data.dicom.read_ultrasound_dicom`: single- and multi-frame, MONOCHROME,
RGB and YBR (grey by BT.601 luma), RLE / JPEG / JPEG 2000 when pydicom has a decoder) and gives MONAI the array and
metadata in its conventions:

- array ``(W, H)`` for one frame, ``(W, H, T)`` for a cine loop (frames along the third axis, as a 2D+t NIfTI), no
  channel dimension (``original_channel_dim = "no_channel"``);
- ``spacing`` / ``pixdim`` ``(sx, sy[, 1])`` in mm (cm x 10), ``affine`` that spacing with origin 0 and the
  identity direction of ITK's LPS frame (an ultrasound image has no patient frame), given in RAS as MONAI's
  ``ITKReader`` gives it (``diag(-sx, -sy, ...)``), ``fps`` when the file gives a frame timing.

A file without calibration is refused (``require_spacing``, default) with a message naming it, since a mask without a
physical spacing gives no area, volume or EF.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from monai.data import ImageReader
from monai.data.utils import orientation_ras_lps
from monai.utils import ensure_tuple

from echogains.data.frames import to_grey

from .common import EchoDataError

__all__ = ["UltrasoundDicomReader", "EchoImageReader", "DICOM_SUFFIXES", "read_image_frames"]

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
            # identity direction and origin 0 in ITK's LPS, given in RAS as MONAI's ITKReader does (x and y negated),
            # so that SaveImaged (NibabelWriter) writes what SimpleITK reads back as spacing (sx, sy), direction I
            affine = orientation_ras_lps(np.diag([*spacing, 1.0] if array.ndim == 3 else [*spacing, 1.0, 1.0]))
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


def _grey_array(image: sitk.Image, path: Path) -> np.ndarray:
    """Pixel array ``(T, H, W)`` or ``(H, W)`` as float32; RGB(A) becomes the mean of R, G and B."""
    array = sitk.GetArrayFromImage(image)
    components = image.GetNumberOfComponentsPerPixel()
    if components in (3, 4):
        array = to_grey(array, "mean", source=str(path))
    elif components != 1:
        raise EchoDataError(path, f"expected a grey or RGB image, got {components} components per pixel")
    return array.astype(np.float32)


def read_image_frames(path: str | os.PathLike) -> tuple[np.ndarray, Any]:
    """Read a NIfTI, MetaImage or PNG image as frames ``(T, H, W)`` float32 and its SimpleITK image (the geometry).

    A 2D image gives one frame; a 3D image (2D+t) its slices along the third axis.

    Raises:
        EchoDataError: unreadable file, 4D or more, more than one channel (other than RGB), degenerate size, NaN or
            Inf values (the message names the file).
    """
    from echogains.data.nnunet import read_image

    path = Path(path)
    image = read_image(path)
    if image.GetDimension() not in (2, 3):
        raise EchoDataError(path, f"expected a 2D image or a 2D+t sequence, got {image.GetDimension()} dimensions")
    array = _grey_array(image, path)
    frames = array[None] if array.ndim == 2 else array
    if min(frames.shape[1:]) < 2:
        raise EchoDataError(path, f"degenerate image of size {image.GetSize()}")
    if not np.isfinite(frames).all() or _nifti_has_nonfinite(path, image):
        raise EchoDataError(path, "contains NaN or Inf")
    return frames, image


def _nifti_has_nonfinite(path: Path, image: sitk.Image) -> bool:
    """SimpleITK's NIfTI reader turns NaN into 0: read floating-point NIfTI files raw with nibabel to see them."""
    floating = image.GetPixelID() in (
        sitk.sitkFloat32,
        sitk.sitkFloat64,
        sitk.sitkVectorFloat32,
        sitk.sitkVectorFloat64,
    )
    if not floating or not path.name.lower().endswith((".nii", ".nii.gz")):
        return False
    import nibabel as nib

    return not np.isfinite(np.asarray(nib.load(str(path)).dataobj)).all()


class EchoImageReader(ImageReader):
    """Read NIfTI, MetaImage and PNG echo images with SimpleITK, as the bundle's training reads them, for MONAI.

    MONAI's own readers need ``itk`` for MetaImage and read PNG without a spacing; this reader gives every
    format the toolkit reads (:func:`read_image_frames`, as :func:`scripts.infer.read_frames`: RGB(A) to grey by
    the mean of R, G and B, NaN and Inf refused, also in floating-point NIfTI files that SimpleITK would read as 0)
    in MONAI's conventions: array
    ``(W, H)`` or ``(W, H, T)`` (x first, as ``ITKReader`` with ``reverse_indexing``), no channel dimension, and the
    ``affine`` built from the file's spacing, origin and direction in RAS (as ``ITKReader`` with
    ``affine_lps_to_ras``), so that ``SaveImaged`` writes the mask back in the input's geometry.
    """

    SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".mhd", ".png")

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        return all(str(f).lower().endswith(self.SUFFIXES) for f in ensure_tuple(filename))

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        """``(frames (T, H, W), SimpleITK reference image)`` per file (a list for several files)."""
        files = ensure_tuple(data)
        if not self.verify_suffix(files):  # LoadImage tries its readers in turn: leave DICOM to the DICOM reader
            raise EchoDataError(files[0], f"not read by EchoImageReader (expected {', '.join(self.SUFFIXES)})")
        images = [read_image_frames(f) for f in files]
        return images[0] if len(images) == 1 else images

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        """The array (``(W, H)`` or ``(W, H, T)``, float32) and its metadata (one file)."""
        if isinstance(img, list):
            raise EchoDataError(None, "EchoImageReader reads one file per image (no channel stacking)")
        frames, reference = img
        array = frames[0].T if reference.GetDimension() == 2 else np.transpose(frames, (2, 1, 0))
        rank = reference.GetDimension()
        spacing = np.asarray(reference.GetSpacing(), dtype=np.float64)
        direction = np.asarray(reference.GetDirection(), dtype=np.float64).reshape(rank, rank)
        affine = np.eye(rank + 1)
        affine[:rank, :rank] = direction @ np.diag(spacing)
        affine[:rank, -1] = np.asarray(reference.GetOrigin(), dtype=np.float64)
        affine = orientation_ras_lps(affine)  # LPS (ITK) -> RAS (MONAI, nibabel), as ITKReader
        meta = {  # LoadImage adds filename_or_obj
            "spatial_shape": np.asarray(array.shape),
            "spacing": spacing,
            "affine": affine,
            "original_affine": affine.copy(),
            "original_channel_dim": "no_channel",
        }
        return np.ascontiguousarray(array, dtype=np.float32), meta
