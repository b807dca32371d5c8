"""Training loop of the EchoGAINS unconditional DDPM (``echogains train-ddpm``).

Images only (labels are not needed) from an nnU-Net raw dataset, a CAMUS folder (every N-th frame of each sequence,
N drawn in 8..12 per sequence) or any folder of PNG/NIfTI/MetaImage files. The DDPM never sees test patients
(:func:`find_image_files`): from a dataset it takes the training half of fold ``fold`` of ``splits_final.json``
(``imagesTs`` is never read), from a CAMUS folder the patients of ``database_split/subgroup_training.txt``; the
validation patients (the fold's ``val`` half, ``subgroup_validation.txt``) are left out too unless
``include_validation``, so that the expanded dataset's validation cases stay unseen by the generator. A CAMUS folder
without split files is refused unless ``all_patients`` (it may hold test patients). Each image is resized
to the configuration's size, scaled to [-1, 1] and, at every draw, its ultrasound sector is narrowed by a random
angle of up to 20 degrees (peripheral scan lines removed) and stretched back to the original sector's width, as the
EchoGAINS paper does before training (Sec. 2.3, Fig. 7).

Reproducibility and resumption: the randomness of step ``k`` on rank ``r`` comes only from generators seeded with
``(seed, k, r)`` (batch, narrowing angles, timesteps, noise). A checkpoint therefore needs no RNG snapshot beyond
``(seed, step)``: training killed at any point and resumed from its last checkpoint continues bit-identically to
an uninterrupted run. Checkpoints hold the model, the EMA model, the optimiser, the step, the seed and the
configuration and are written atomically. Under ``torchrun`` the loop runs as DDP (NCCL on GPUs, gloo on CPU);
the global batch is split over the ranks and only rank 0 writes files.

Memory (``benchmarks/train_memory.py`` measures each option at paper scale): ``precision`` runs the network under
autocast (``bf16``; ``fp16`` with a gradient scaler, its state checkpointed; ``auto``: bf16 on a GPU that has it, fp32
elsewhere), ``checkpointing`` recomputes the U-Net blocks' activations in the backward pass (``auto``: on at 256 px and
above), ``accumulate`` N runs each step as N micro-batches of ``batch_size`` (split over the ranks) and sums their
gradients: the effective batch is ``batch_size x N``. The step's randomness is drawn for the whole ``batch_size x N``
before it is split, so N micro-batches equal one batch of N x ``batch_size`` (to float rounding), and checkpoints are
written between steps: a run killed inside an accumulation cycle resumes at the cycle's start and continues exactly.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel

from echogains.ddpm.diffusion import GaussianDiffusion
from echogains.ddpm.model import DDPMConfig, build_diffusion, build_network, get_config, save_weights
from echogains.utils import (
    EchoDataError,
    atomic_path,
    atomic_write_json,
    get_logger,
    progress,
    read_json,
    resolve_device,
)

__all__ = [
    "CHECKPOINT_FORMAT",
    "IMAGE_SUFFIXES",
    "TrainingImages",
    "find_image_files",
    "load_training_images",
    "narrow_sector",
    "make_batch",
    "TrainSettings",
    "PRECISIONS",
    "resolve_precision",
    "DDPMTrainer",
    "train_ddpm",
    "read_history",
]

log = get_logger(__name__)

CHECKPOINT_FORMAT = "echogains-ddpm-checkpoint-v1"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".mhd", ".mha", ".nrrd")
_SEQUENCE_SUFFIXES = ("_sequence.mhd", "_sequence.nii.gz", "_sequence.nii")
CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "ddpm_ema.pt"


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
    from echogains.data.nnunet import RawDataset

    ds = RawDataset(root)
    if ds.splits is None:
        log.warning("%s: no splits_final.json; training on every imagesTr case (imagesTs stays unseen)", root)
        return [ds.image_path(c) for c in ds.case_ids("Tr")]
    cases = ds.case_ids("train", fold) + (ds.case_ids("val", fold) if include_validation else [])
    present = set(ds.case_ids("Tr"))
    missing = sorted(set(cases) - present)
    if missing:
        raise EchoDataError(root / "splits_final.json", f"fold {fold} names cases not in imagesTr: {missing[:3]}")
    log.info("%s: fold %d: %d training cases%s", root, fold, len(cases),
             " (with its validation cases)" if include_validation else " (validation and test cases left out)")
    return [ds.image_path(c) for c in sorted(cases)]


def _camus_split(root: Path) -> tuple[Any, dict[str, str] | None] | None:
    """(layout, official split or None) when ``root`` is a CAMUS folder, else ``None``."""
    from echogains.data.camus import detect_camus_layout, read_official_split

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


def _camus_training_files(root: Path, images: list[Path], split_of: dict[str, str] | None, include_validation: bool,
                          all_patients: bool) -> list[Path]:
    """The images of a CAMUS folder's training patients (``subgroup_training``, + validation if asked)."""
    if split_of is None:
        if not all_patients:
            raise EchoDataError(root, "CAMUS folder without database_split/subgroup_*.txt: its test patients cannot be "
                                      "told apart; add the split files, convert it (convert-camus) and train on the "
                                      "dataset, or pass --all_patients to train on every patient")
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
    from echogains.data.nnunet import read_image

    img = read_image(path)
    spacing = tuple(float(s) for s in img.GetSpacing()[:2])
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    if img.GetNumberOfComponentsPerPixel() > 1:
        arr = arr[..., :3].mean(axis=-1)  # RGB-encoded grey (PNG): average the colour channels
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
    import cv2

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
    from echogains.geometry import fit_sector

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
    verbose: bool = False,
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
        verbose: progress bar.
        fold, include_validation, all_patients: which cases may be used (:func:`find_image_files`).

    Raises:
        EchoDataError: no images, unreadable or invalid files (naming the file).
    """
    if not (1 <= frame_step[0] <= frame_step[1]):
        raise EchoDataError(None, f"frame_step must be (low, high) with 1 <= low <= high, got {tuple(frame_step)}")
    root = Path(data)
    kind, files = find_image_files(root, fold, include_validation, all_patients)
    images, sectors, sources = [], [], []
    files_iter = progress(files, total=len(files), desc="reading images") if verbose else files
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
    log.info("%s (%s): %d training frames from %d files, sector fitted on %d", root, kind, len(images), len(files),
             n_fit)
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
    from scipy import ndimage

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


# --------------------------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------------------------


def _ema_avg_fn(decay: float):
    """EMA update with warm-up: d = min(decay, (1 + n) / (10 + n)) after n updates, ema <- d ema + (1 - d) w."""

    def update(ema_params: list[torch.Tensor], params: list[torch.Tensor], num_averaged: torch.Tensor | int) -> None:
        n = int(num_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        for e, p in zip(ema_params, params):
            e.lerp_(p, 1.0 - d)

    return update


def _step_generators(seed: int, step: int, rank: int) -> tuple[np.random.Generator, torch.Generator]:
    """All randomness of one training step on one rank, from (seed, step, rank) only."""
    rng = np.random.default_rng([seed, step, rank])
    gen = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
    return rng, gen


def _resolve_device(device: str | torch.device | None, local_rank: int) -> torch.device:
    return torch.device(resolve_device(device, local_rank))


#: ``--precision`` values: ``auto`` is bf16 on a CUDA device that supports it and fp32 elsewhere (so CPU runs, the
#: demo weights' training among them, stay in fp32); ``fp16`` uses a gradient scaler.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for ``precision`` (one of :data:`PRECISIONS`) on ``device``.

    Raises:
        EchoDataError: an unknown value, or bf16 asked for on a GPU without it.
    """
    name = str(precision).strip().lower()
    if name not in PRECISIONS:
        raise EchoDataError(None, f"--precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if name == "auto":
        return "bf16" if cuda_bf16 else "fp32"
    if name == "bf16" and device.type == "cuda" and not cuda_bf16:
        raise EchoDataError(None, "--precision bf16: this GPU does not support bfloat16; use fp16 or fp32")
    return name


@dataclass
class TrainSettings:
    """Settings of one training run besides the network configuration."""

    steps: int
    batch_size: int
    lr: float
    ema: float
    seed: int
    max_narrowing_deg: float
    sample_every: int
    checkpoint_every: int
    n_samples: int
    sample_steps: int
    log_every: int = 100
    accumulate: int = 1
    precision: str = "auto"
    checkpointing: bool | None = None

    def __post_init__(self) -> None:
        self.log_every = max(1, int(self.log_every))

    def identity(self) -> dict[str, Any]:
        """Settings that must match for a resumed run to continue identically.

        ``accumulate`` and ``precision`` appear when not 1 / ``fp32`` (checkpoints from before these options match).
        """
        keys = ("batch_size", "lr", "ema", "seed", "max_narrowing_deg")
        out = {k: getattr(self, k) for k in keys}
        if self.accumulate != 1:
            out["accumulate"] = self.accumulate
        if self.precision not in ("fp32", "auto"):
            out["precision"] = self.precision
        return out


class DDPMTrainer:
    """Hybrid-loss DDPM training with EMA, atomic full-state checkpoints, sample grids and optional DDP.

    Args:
        images: training frames (:func:`load_training_images`).
        out_dir: output folder (``checkpoint.pt``, ``ddpm_ema.pt``, ``config.json``, ``history.json``, ``samples/``).
        config: network/process configuration.
        settings: training settings.
        device: ``cuda``, ``cpu`` or ``None`` (auto).
        verbose: progress bar on rank 0.
    """

    def __init__(
        self,
        images: TrainingImages,
        out_dir: str | os.PathLike,
        config: DDPMConfig,
        settings: TrainSettings,
        device: str | torch.device | None = None,
        verbose: bool = True,
    ) -> None:
        self.images, self.out_dir, self.config, self.settings = images, Path(out_dir), config, settings
        self.verbose = verbose
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = _resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
        if settings.batch_size % self.world_size:
            raise EchoDataError(
                None, f"batch size {settings.batch_size} is not divisible by the {self.world_size} processes"
            )
        settings.precision = resolve_precision(settings.precision, self.device)
        if settings.checkpointing is None:  # auto: on at paper scale
            settings.checkpointing = config.image_size >= 256
        self._own_group = False
        if self.world_size > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
            self._own_group = True
        with torch.random.fork_rng(devices=[]):  # deterministic initialisation without touching global RNG state
            torch.manual_seed(settings.seed)
            self.model = build_network(config, checkpointing=bool(settings.checkpointing)).to(self.device)
        self.diffusion: GaussianDiffusion = build_diffusion(config).to(self.device)
        self.net: nn.Module = self.model
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=settings.lr)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=settings.precision == "fp16")
        self.ema = AveragedModel(self.model, multi_avg_fn=_ema_avg_fn(settings.ema))
        self.step = 0
        self.history: list[dict[str, float]] = []  # mean loss of every ``log_every`` steps
        self._recent: list[float] = []

    # --- paths -------------------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_NAME

    @property
    def weights_path(self) -> Path:
        return self.out_dir / WEIGHTS_NAME

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- state -------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "settings": self.settings.identity(),
            "world_size": self.world_size,
            "step": self.step,
            "rng": {"seed": self.settings.seed, "scheme": "numpy default_rng([seed, step, rank]) per step"},
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "history": self.history,
        }

    def save(self) -> None:
        """Write the checkpoint and the EMA weights atomically (rank 0 only)."""
        if not self.is_main:
            return
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(self.state_dict(), tmp)
        save_weights(self.weights_path, self.config, self.ema.module.state_dict(), {"step": self.step})
        atomic_write_json(self.out_dir / "history.json", self.history)

    def load(self, path: Path) -> None:
        """Restore the full state from a checkpoint; the configuration must match."""
        try:
            ckpt = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as err:  # noqa: BLE001
            raise EchoDataError(path, f"cannot read checkpoint ({type(err).__name__}: {err})") from err
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise EchoDataError(path, "not an echogains DDPM checkpoint")
        if ckpt["config"] != self.config.to_dict():
            raise EchoDataError(
                path,
                f"checkpoint was trained with config {ckpt['config']}, not {self.config.to_dict()}; "
                "use another out_dir or resume=False",
            )
        if ckpt.get("settings") != self.settings.identity() or ckpt.get("world_size") != self.world_size:
            log.warning(
                "%s: training settings changed (%s, %s processes); the continuation differs from an uninterrupted run",
                path, ckpt.get("settings"), ckpt.get("world_size"),
            )
        self.model.load_state_dict(ckpt["model"])
        self.ema.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        self.history = list(ckpt.get("history", []))
        log.info("resumed %s at step %d", path, self.step)

    # --- training ----------------------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.settings.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_AUTOCAST_DTYPES[self.settings.precision])

    def train_step(self, step: int) -> float:
        """One optimisation step (batch, t and noise from (seed, step, rank)); returns the local mean loss.

        With ``accumulate`` N the rank's ``batch_size / world_size x N`` samples, their timesteps and noise are drawn
        first (as one batch of that size would draw them), then run as N micro-batches whose mean losses, divided
        by N, are back-propagated one after the other: the summed gradient is that of the whole batch's mean loss.
        Under DDP the gradients are all-reduced once, after the last micro-batch.
        """
        micro = self.settings.batch_size // self.world_size
        n = self.settings.accumulate
        rng, gen = _step_generators(self.settings.seed, step, self.rank)
        x0 = make_batch(self.images, rng, micro * n, self.settings.max_narrowing_deg)
        t = torch.randint(0, self.diffusion.num_timesteps, (micro * n,), generator=gen)  # uniform t
        noise = torch.randn(x0.shape, generator=gen)
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for k in range(n):
            part = slice(k * micro, (k + 1) * micro)
            sync = k == n - 1 or self.world_size == 1
            with contextlib.nullcontext() if sync else self.net.no_sync():
                with self._autocast():
                    losses = self.diffusion.training_losses(self.net, x0[part].to(self.device),
                                                            t[part].to(self.device), noise[part].to(self.device),
                                                            vlb_weight=self.config.vlb_weight)
                loss = losses["loss"].mean()
                self.scaler.scale(loss / n).backward()
            total += float(loss.detach()) / n
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.ema.update_parameters(self.model)
        return total

    @torch.no_grad()
    def sample_grid(self, path: Path | None = None) -> Path:
        """Sample ``n_samples`` images with the EMA model (respaced to ``sample_steps``) and write a PNG grid."""
        import cv2

        net = self.ema.module.eval()
        steps = min(self.settings.sample_steps, self.diffusion.num_timesteps)
        gen = torch.Generator().manual_seed(self.settings.seed)
        n, s = self.settings.n_samples, self.config.image_size
        x = self.diffusion.respace(steps).sample(net, (n, self.config.in_channels, s, s), gen, self.device)
        imgs = ((x[:, 0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        grid = np.zeros((rows * (s + 2), cols * (s + 2)), dtype=np.uint8)
        for k, img in enumerate(imgs):
            r, c = divmod(k, cols)
            grid[r * (s + 2) + 1 : r * (s + 2) + 1 + s, c * (s + 2) + 1 : c * (s + 2) + 1 + s] = img
        path = path or self.out_dir / "samples" / f"step_{self.step:07d}.png"
        with atomic_path(path) as tmp:
            if not cv2.imwrite(str(tmp), grid):
                raise EchoDataError(path, "could not write the sample grid")
        return path

    def _after_step(self, loss: float) -> None:
        st = self.settings
        self._recent.append(loss)
        if self.step % st.log_every == 0 or self.step == st.steps:
            self.history.append({"step": self.step, "loss": float(np.mean(self._recent))})
            self._recent = []
            log.info("step %d: loss %.5f", self.step, self.history[-1]["loss"])
        if self.step % st.checkpoint_every == 0 or self.step == st.steps:
            self.save()
        if self.is_main and st.sample_every and self.step % st.sample_every == 0:
            self.sample_grid()

    def run(self) -> Path:
        """Train from ``self.step`` to ``settings.steps``; returns the EMA weights file."""
        steps = range(self.step, self.settings.steps)
        bar = progress(steps, total=len(steps), desc="train-ddpm") if self.verbose and self.is_main else steps
        try:
            for step in bar:
                loss = self.train_step(step)
                self.step = step + 1
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(loss=f"{loss:.4f}")
                self._after_step(loss)
            if self.is_main and not self.weights_path.is_file():
                self.save()
            if self.world_size > 1:
                dist.barrier()
        finally:
            if self._own_group and dist.is_initialized():
                dist.destroy_process_group()
        return self.weights_path


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise EchoDataError(out_dir, "output path exists and is not a folder")


def train_ddpm(
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: str | DDPMConfig | dict[str, Any] = "tiny",
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    ema: float | None = None,
    seed: int = 0,
    resume: bool = True,
    sample_every: int = 1000,
    checkpoint_every: int = 1000,
    device: str | None = None,
    max_narrowing_deg: float = 20.0,
    frame_step: tuple[int, int] = (8, 12),
    n_samples: int = 16,
    sample_steps: int = 100,
    verbose: bool = True,
    *,
    fold: int = 0,
    include_validation: bool = False,
    all_patients: bool = False,
    vb_weighting: str = "rescaled",
    accumulate: int = 1,
    precision: str = "auto",
    checkpointing: bool | str | None = "auto",
) -> Path:
    """Train the unconditional DDPM on the images of ``data``; returns the EMA weights file (``ddpm_ema.pt``).

    Args:
        data: nnU-Net raw dataset (the training half of ``fold``), CAMUS folder (the ``subgroup_training``
            patients' sequences) or folder of images (every image).
        out_dir: output folder; an existing ``checkpoint.pt`` there is resumed when ``resume``.
        config: ``"paper"``, ``"tiny"``, ``"micro"``, a dict or a :class:`DDPMConfig`.
        steps: total number of optimisation steps (default: the config's; the paper: 500k).
        batch_size: global batch size, split over DDP processes (default: the config's; the paper: 64).
        lr: Adam learning rate (default: the config's, 1e-4).
        ema: EMA decay (default: the config's, 0.9999; warmed up as min(ema, (1 + n) / (10 + n))).
        seed: seed of initialisation, batches, narrowing angles, timesteps, noise, frame subsampling and samples.
        resume: continue from ``out_dir/checkpoint.pt`` if present (else start afresh, overwriting it).
        sample_every: write a sample grid every this many steps (0: never).
        checkpoint_every: write the checkpoint every this many steps (and at the end).
        device: ``cuda``, ``cpu`` or ``None`` (cuda when available). Under ``torchrun``: one GPU per local rank.
        max_narrowing_deg: sector narrowing drawn uniformly in [0, this] per draw (0: off).
        frame_step: N of the every-N-th-frame rule for sequences is drawn in this inclusive range.
        n_samples: images per sample grid.
        sample_steps: respaced sampling steps of the sample grids.
        verbose: progress bars.
        fold: fold of the dataset's ``splits_final.json`` whose training half is used (the one ``expand-dataset``
            augments).
        include_validation: also train on the fold's validation cases / CAMUS ``subgroup_validation`` patients
            (default: left out, so that they stay unseen by the generator as by the segmenter).
        all_patients: accept a CAMUS folder without split files (every patient, test patients included).
        vb_weighting: weight of the variational term of the hybrid loss: ``rescaled`` (lambda T = T / 1000 with the
            config's lambda = 0.001, improved DDPM's ``rescale_learned_sigmas``; the default) or ``unit`` (weight 1,
            the EchoGAINS public configuration: sets the config's ``vlb_weight`` to 1 / T). See
            :meth:`echogains.ddpm.diffusion.GaussianDiffusion.training_losses`.
        accumulate: micro-batches of ``batch_size`` per optimisation step (gradient accumulation): the effective
            batch is ``batch_size x accumulate`` (``batch_size`` is split over the DDP processes), the memory that of
            ``batch_size``. E.g. the paper's 64 on one 40 GB GPU as ``batch_size=32, accumulate=2`` (README,
            "Training memory").
        precision: ``auto`` (bf16 autocast on a GPU with bf16, fp32 elsewhere; default), ``fp32``, ``bf16`` (also on
            CPU) or ``fp16`` (autocast with a gradient scaler).
        checkpointing: activation checkpointing of the U-Net blocks: ``True``, ``False`` or ``"auto"`` / ``None``
            (on at 256 px and above, the paper's size).

    Raises:
        EchoDataError: bad data, configuration or checkpoint, before any file is written.
    """
    cfg = get_config(config)
    if vb_weighting not in ("rescaled", "unit"):
        raise EchoDataError(None, f"--vb_weighting: expected rescaled or unit, got {vb_weighting!r}")
    if vb_weighting == "unit":
        cfg = get_config(cfg, vlb_weight=1.0 / cfg.num_timesteps)
    if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
        raise EchoDataError(None, f"--accumulate: expected an integer >= 1, got {accumulate!r}")
    if str(precision).strip().lower() not in PRECISIONS:
        raise EchoDataError(None, f"--precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    flag = str(checkpointing).strip().lower()
    if flag not in ("auto", "none", "true", "false", "1", "0", "yes", "no", "on", "off"):
        raise EchoDataError(None, f"--checkpointing: expected true, false or auto, got {checkpointing!r}")
    checkpoint_flag = None if flag in ("auto", "none") else flag in ("true", "1", "yes", "on")
    settings = TrainSettings(
        steps=int(cfg.steps if steps is None else steps),
        batch_size=int(cfg.batch_size if batch_size is None else batch_size),
        lr=float(cfg.lr if lr is None else lr),
        ema=float(cfg.ema if ema is None else ema),
        seed=int(seed),
        max_narrowing_deg=float(max_narrowing_deg),
        sample_every=int(sample_every),
        checkpoint_every=max(1, int(checkpoint_every)),
        n_samples=int(n_samples),
        sample_steps=int(sample_steps),
        accumulate=int(accumulate),
        precision=str(precision).strip().lower(),
        checkpointing=checkpoint_flag,
    )
    if settings.steps < 0 or settings.batch_size < 1 or settings.n_samples < 1 or not 0 <= settings.ema < 1:
        raise EchoDataError(None, f"invalid training settings {settings}")
    if not 0 <= settings.max_narrowing_deg < 90:
        raise EchoDataError(None, f"max_narrowing_deg must be in [0, 90), got {max_narrowing_deg}")
    out = Path(out_dir)
    _check_out_dir(out)
    fit = settings.max_narrowing_deg > 0
    if isinstance(fold, bool) or not isinstance(fold, int) or fold < 0:
        raise EchoDataError(None, f"--fold: expected an integer >= 0, got {fold!r}")
    images = load_training_images(data, cfg.image_size, seed, tuple(frame_step), fit, verbose, fold=fold,
                                  include_validation=bool(include_validation), all_patients=bool(all_patients))
    trainer = DDPMTrainer(images, out, cfg, settings, device, verbose)
    if resume and trainer.checkpoint_path.is_file():
        trainer.load(trainer.checkpoint_path)
    elif trainer.checkpoint_path.is_file():
        log.warning("%s exists; starting afresh (resume=False) and overwriting it", trainer.checkpoint_path)
    if trainer.is_main:
        selection = {"fold": fold, "include_validation": bool(include_validation), "all_patients": bool(all_patients),
                     "files": len({src.split("[frame")[0] for src in images.sources})}
        record = {"config": cfg.to_dict(), "settings": vars(settings), "data": str(data), "images": len(images),
                  "selection": selection}
        atomic_write_json(out / "config.json", record)
    return trainer.run()


def read_history(out_dir: str | os.PathLike) -> list[dict[str, float]]:
    """Loss history written beside the checkpoint."""
    return read_json(Path(out_dir) / "history.json")
