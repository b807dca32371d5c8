"""Training images of the EchoGAINS DDPM: which files it may read, how frames are read, and its batches.

Images only (labels are not needed) from an nnU-Net raw dataset, a CAMUS folder (every N-th frame of each sequence,
N drawn in 8..12 per sequence) or any folder of PNG/NIfTI/MetaImage files. The DDPM never sees test patients
(:func:`find_image_files`): from a dataset it takes the training half of fold ``fold`` of ``splits_final.json``
(``imagesTs`` is never read), from a CAMUS folder the patients of ``database_split/subgroup_training.txt``; the
validation patients (the fold's ``val`` half, ``subgroup_validation.txt``) are left out too unless
``include_validation``. Each image is resized to the configuration's size, scaled to [-1, 1] and, at every draw, its
ultrasound sector is narrowed by a random angle of up to 20 degrees (peripheral scan lines removed) and stretched
back to the original sector's width, as the EchoGAINS paper does before training (Sec. 2.3, Fig. 7).
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from echogains.data.camus import detect_camus_layout, read_official_split
from echogains.data.frames import to_grey
from echogains.data.nnunet import RawDataset, read_image
from echogains.geometry import fit_sector
from echogains.utils import EchoDataError, get_logger
from echogains.utils import progress as progress_bar

__all__ = [
    "IMAGE_SUFFIXES",
    "FIT_SIZE",
    "TrainingImages",
    "find_image_files",
    "load_training_images",
    "narrow_sector",
    "make_batch",
]

log = get_logger("echogains.ddpm.train")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".mhd", ".mha", ".nrrd")
_SEQUENCE_SUFFIXES = ("_sequence.mhd", "_sequence.nii.gz", "_sequence.nii")

# --------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------


@dataclass
class TrainingImages:
    """Training frames at the network's size.

    Args:
        images: (N, S, S) uint8 frames, 0..255 = [-1, 1] after scaling.
        sectors: fitted sector of each frame (in its resized pixel grid), ``None`` where none was found.
        sources: file (and frame) of each image.
    """

    images: np.ndarray
    sectors: list[Any]
    sources: list[str]

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _has_suffix(path: Path, suffixes: Sequence[str]) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in suffixes)


_PATIENT = re.compile(r"^patient\d+$", re.IGNORECASE)


def _nnunet_training_cases(root: Path, fold: int, include_validation: bool) -> list[Path]:
    """Image files of the training half of ``fold`` (plus its validation half if asked); never ``imagesTs``."""
    ds = RawDataset(root)
    if ds.splits is None:
        log.warning("%s: no splits_final.json; training on every imagesTr case (imagesTs stays unseen)", root)
        return [ds.image_path(c) for c in ds.case_ids("Tr")]
    cases = ds.case_ids("train", fold) + (ds.case_ids("val", fold) if include_validation else [])
    present = set(ds.case_ids("Tr"))
    missing = sorted(set(cases) - present)
    if missing:
        raise EchoDataError(root / "splits_final.json", f"fold {fold} names cases not in imagesTr: {missing[:3]}")
    log.info(
        "%s: fold %d: %d training cases%s",
        root,
        fold,
        len(cases),
        " (with its validation cases)" if include_validation else " (validation and test cases left out)",
    )
    return [ds.image_path(c) for c in sorted(cases)]


def _camus_split(root: Path) -> tuple[Any, dict[str, str] | None] | None:
    """(layout, official split or None) when ``root`` is a CAMUS folder, else ``None``."""
    try:
        layout = detect_camus_layout(root)
    except EchoDataError:
        return None
    return layout, read_official_split(layout.split_dir)


def _patient_of(path: Path, root: Path) -> str | None:
    parts = path.relative_to(root).parts if path.is_relative_to(root) else path.parts
    return next((p for p in reversed(parts[:-1]) if _PATIENT.match(p)), None)


def find_image_files(
    data: str | os.PathLike, fold: int = 0, include_validation: bool = False, all_patients: bool = False
) -> tuple[str, list[Path]]:
    """Recognise the training source and list the image files the DDPM may train on.

    Args:
        data: nnU-Net raw dataset, CAMUS folder or folder of images.
        fold: fold of the dataset's ``splits_final.json`` whose training half is used.
        include_validation: also the fold's validation half / CAMUS ``subgroup_validation`` patients.
        all_patients: accept a CAMUS folder without ``database_split`` files (every patient, test patients included).

    Returns:
        ``(kind, files)`` with kind ``"nnunet"`` (``dataset.json`` present: the training half of ``fold``, or all of
        ``imagesTr`` without ``splits_final.json``; ``imagesTs`` never), ``"camus"`` (a CAMUS folder: the training
        patients' ``*_sequence`` files, or their ED/ES images when there are no sequences) or ``"folder"`` (every
        image file below ``data`` whose name does not end in ``_gt``).

    Raises:
        EchoDataError: missing folder, no images, or a CAMUS folder without split files (unless ``all_patients``).
    """
    root = Path(data)
    if not root.is_dir():
        raise EchoDataError(root, "training data folder not found")
    if (root / "dataset.json").is_file():
        kind, files = "nnunet", _nnunet_training_cases(root, int(fold), include_validation)
    else:
        candidates = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
        images = [p for p in candidates if _has_suffix(p, IMAGE_SUFFIXES) and not _stem(p).lower().endswith("_gt")]
        camus = _camus_split(root)
        if camus is not None:
            images = _camus_training_files(root, images, camus[1], include_validation, all_patients)
        sequences = [p for p in images if _has_suffix(p, _SEQUENCE_SUFFIXES)]
        if camus is not None:
            kind, files = "camus", sequences or images
        else:
            kind, files = ("camus", sequences) if sequences else ("folder", images)
    if not files:
        raise EchoDataError(
            root, "no training images found (expected an nnU-Net raw dataset, CAMUS sequences or image files)"
        )
    return kind, files


def _camus_training_files(
    root: Path, images: list[Path], split_of: dict[str, str] | None, include_validation: bool, all_patients: bool
) -> list[Path]:
    """The images of a CAMUS folder's training patients (``subgroup_training``, + validation if asked)."""
    if split_of is None:
        if not all_patients:
            raise EchoDataError(
                root,
                "CAMUS folder without database_split/subgroup_*.txt: its test patients cannot be "
                "told apart; add the split files, convert it (convert-camus) and train on the "
                "dataset, or pass --all_patients to train on every patient",
            )
        log.warning("%s: no CAMUS split files; training on every patient (all_patients)", root)
        return [p for p in images if _patient_of(p, root) is not None]
    allowed = {"train", "val"} if include_validation else {"train"}
    kept, left_out = [], set()
    for path in images:
        patient = _patient_of(path, root)
        if patient is not None and split_of.get(patient) in allowed:
            kept.append(path)
        elif patient is not None:
            left_out.add((patient, split_of.get(patient, "unlisted")))
    by_split = {s: sum(1 for _, g in left_out if g == s) for s in sorted({g for _, g in left_out})}
    log.info("%s: CAMUS training patients only; left out %s", root, by_split or "none")
    return kept


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _read_frames(
    path: Path, seed: int, root: Path, frame_step: tuple[int, int]
) -> tuple[list[np.ndarray], tuple[float, float], int]:
    """Grey frames of one file (every N-th frame of a sequence), its (x, y) spacing and N (1 for a 2D image)."""
    img = read_image(path)
    spacing = tuple(float(s) for s in img.GetSpacing()[:2])
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    if img.GetNumberOfComponentsPerPixel() > 1:
        arr = to_grey(arr, "mean", source=str(path))  # RGB-encoded grey (PNG): the mean of the colour channels
    if arr.ndim == 2:
        return [arr], spacing, 1  # type: ignore[return-value]
    if arr.ndim != 3:
        raise EchoDataError(path, f"expected a 2D image or a 2D+t sequence, got shape {arr.shape}")
    if arr.shape[0] == 1:
        return [arr[0]], spacing, 1  # type: ignore[return-value]
    # Every N-th frame, N uniform in frame_step (EchoGAINS Sec. 2.3); N depends on (seed, file) only.
    name = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    key = zlib.crc32(name.encode())
    n = int(np.random.default_rng([seed, key]).integers(frame_step[0], frame_step[1] + 1))
    return [arr[k] for k in range(0, arr.shape[0], n)], spacing, n  # type: ignore[return-value]


def _to_unit(frame: np.ndarray, source: str) -> np.ndarray:
    """Intensities to [0, 1]: 8-bit data (max > 1) / 255, [0, 1] data as is, anything else min-max scaled."""
    if not np.isfinite(frame).all():
        raise EchoDataError(source, "image contains NaN or Inf")
    lo, hi = float(frame.min()), float(frame.max())
    if lo >= 0.0 and hi <= 1.0:
        return frame
    if lo >= 0.0 and hi <= 255.0:
        return frame / 255.0
    if hi <= lo:
        raise EchoDataError(source, "image is constant")
    log.debug("%s: intensities %.3g..%.3g are not 8-bit; min-max scaled", source, lo, hi)
    return (frame - lo) / (hi - lo)


def _resize(frame: np.ndarray, size: int) -> np.ndarray:
    shrink = frame.shape[0] > size or frame.shape[1] > size
    return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


#: Sectors are fitted on frames of at least this size (the fit needs a few pixels along each straight edge).
FIT_SIZE = 64


def _grid_spacing(frame: np.ndarray, spacing: tuple[float, float], size: int) -> tuple[float, float]:
    """(x, y) spacing of ``frame`` resized to size x size (the field of view is kept)."""
    return (spacing[0] * frame.shape[1] / size, spacing[1] * frame.shape[0] / size)


def _fit(frame: np.ndarray, spacing: tuple[float, float], size: int, source: str) -> Any:
    """Sector of ``frame`` (unit range) in the pixel grid of its size x size resize, or ``None`` when none is found.

    The fit runs on a resize to ``max(size, FIT_SIZE)`` and is carried to the training grid: both grids cover the
    same field of view, so physical coordinates differ only by the half-pixel offset of the first pixel centre.
    """
    fit_size = max(size, FIT_SIZE)
    fit_spacing = _grid_spacing(frame, spacing, fit_size)
    img = np.round(_resize(frame, fit_size) * 255.0).clip(0, 255).astype(np.uint8)
    try:
        sector = fit_sector(img, fit_spacing, source=source)
    except EchoDataError as err:
        log.debug("no sector narrowing for %s: %s", source, err.problem)
        return None
    new_spacing = _grid_spacing(frame, spacing, size)
    apex = tuple(a + 0.5 * (f - n) for a, f, n in zip(sector.apex, fit_spacing, new_spacing))
    return replace(sector, apex=apex, spacing=new_spacing)


def load_training_images(
    data: str | os.PathLike,
    image_size: int,
    seed: int = 0,
    frame_step: tuple[int, int] = (8, 12),
    fit_sectors: bool = True,
    progress: bool = False,
    *,
    fold: int = 0,
    include_validation: bool = False,
    all_patients: bool = False,
) -> TrainingImages:
    """Read every training frame, resized to ``image_size`` and quantised to uint8, with its fitted sector.

    Args:
        data: nnU-Net raw dataset, CAMUS folder or folder of images (see :func:`find_image_files`).
        image_size: output size S (frames are resized to S x S, as the paper does to 256 x 256).
        seed: draws N of the every-N-th-frame rule per sequence.
        frame_step: inclusive range of N.
        fit_sectors: fit the sector of each frame (needed for sector narrowing).
        progress: progress bar.
        fold, include_validation, all_patients: which cases may be used (:func:`find_image_files`).

    Raises:
        EchoDataError: no images, unreadable or invalid files (naming the file).
    """
    if not (1 <= frame_step[0] <= frame_step[1]):
        raise EchoDataError(None, f"frame_step must be (low, high) with 1 <= low <= high, got {tuple(frame_step)}")
    root = Path(data)
    kind, files = find_image_files(root, fold, include_validation, all_patients)
    images, sectors, sources = [], [], []
    files_iter = progress_bar(files, total=len(files), desc="reading images") if progress else files
    for path in files_iter:
        frames, spacing, n = _read_frames(Path(path), seed, root, frame_step)
        for k, frame in enumerate(frames):
            source = f"{path}" if n == 1 else f"{path}[frame {k * n}]"
            if min(frame.shape) < 8:
                raise EchoDataError(path, f"image too small ({frame.shape})")
            unit = _to_unit(frame, source)
            images.append(np.round(_resize(unit, image_size) * 255.0).clip(0, 255).astype(np.uint8))
            sectors.append(_fit(unit, spacing, image_size, source) if fit_sectors else None)
            sources.append(source)
    n_fit = sum(s is not None for s in sectors)
    log.info(
        "%s (%s): %d training frames from %d files, sector fitted on %d", root, kind, len(images), len(files), n_fit
    )
    return TrainingImages(np.stack(images), sectors, sources)


def _column_extent(mask: np.ndarray) -> tuple[float, float] | None:
    cols = np.flatnonzero(mask.any(axis=0))
    return None if cols.size == 0 else (float(cols[0]) - 0.5, float(cols[-1]) + 0.5)


def narrow_sector(image: np.ndarray, sector: Any, delta_deg: float) -> np.ndarray:
    """Narrow the sector by ``delta_deg`` (half on each side) and stretch the cut sector back to its old width.

    (1) pixels outside the narrowed sector (the peripheral scan lines) are set to 0; (2) each row is resampled
    (linearly) so that the columns spanned by the narrowed sector map onto those of the original sector, i.e.
    the cut sector is stretched back to the image, as in EchoGAINS Fig. 7.

    Args:
        image: 2D float image in [0, 1] (black outside the sector).
        sector: its :class:`echogains.geometry.Sector` (in the image's pixel grid).
        delta_deg: narrowing angle in degrees (0 returns the image).
    """
    if delta_deg <= 0 or delta_deg >= sector.opening_deg:
        return image.astype(np.float32, copy=True)
    narrowed = replace(sector, theta_min=sector.theta_min + delta_deg / 2, theta_max=sector.theta_max - delta_deg / 2)
    keep = narrowed.mask(image.shape)
    old, new = _column_extent(sector.mask(image.shape)), _column_extent(keep)
    cut = np.where(keep, image, 0.0).astype(np.float32)
    if old is None or new is None:
        return cut
    # (2) x_src = new_left + (x_dst - old_left) * new_width / old_width
    x_dst = np.arange(image.shape[1], dtype=np.float64)
    x_src = new[0] + (x_dst - old[0]) * (new[1] - new[0]) / (old[1] - old[0])
    rows, cols = np.meshgrid(np.arange(image.shape[0], dtype=np.float64), x_src, indexing="ij")
    return ndimage.map_coordinates(cut, [rows, cols], order=1, mode="constant", cval=0.0).astype(np.float32)


def make_batch(
    data: TrainingImages, rng: np.random.Generator, batch_size: int, max_narrowing_deg: float
) -> torch.Tensor:
    """Draw ``batch_size`` frames (with replacement), narrow their sectors at random and scale to [-1, 1]."""
    idx = rng.integers(0, len(data), size=batch_size)
    deltas = rng.uniform(0.0, max_narrowing_deg, size=batch_size)
    out = np.empty((batch_size, 1, *data.images.shape[1:]), dtype=np.float32)
    for j, (i, delta) in enumerate(zip(idx, deltas)):
        img = data.images[i].astype(np.float32) / 255.0
        sector = data.sectors[i]
        if sector is not None and max_narrowing_deg > 0:
            img = narrow_sector(img, sector, float(delta))
        out[j, 0] = img * 2.0 - 1.0
    return torch.from_numpy(out)
