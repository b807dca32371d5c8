"""Training loop of the EchoGAINS unconditional DDPM (``echogains train-ddpm``).

The training images (which files, never test patients; frames, sectors, narrowed batches) are
:mod:`echogains.ddpm.images`, re-exported here.

Reproducibility and resumption: the randomness of step ``k`` on rank ``r`` comes only from generators seeded with
``(seed, k, r)`` (batch, narrowing angles, timesteps, noise). A checkpoint therefore needs no RNG snapshot beyond
``(seed, step)``: training killed at any point and resumed from its last checkpoint continues bit-identically to
an uninterrupted run. Checkpoints hold the model, the EMA model, the optimiser, the step, the seed and the
configuration and are written atomically. Under ``torchrun`` the loop runs as DDP (NCCL on GPUs, gloo on CPU);
the global batch is split over the ranks and only rank 0 writes files.

Memory (``benchmarks/train_memory.py`` measures each option at paper scale): ``precision`` runs the network under
autocast (``bf16``; ``fp16`` with a gradient scaler, its state checkpointed; ``auto``: bf16 on a GPU that has it, fp32
elsewhere; :mod:`echogains.precision`, shared with the Echo-DND bundle), ``checkpointing`` recomputes the U-Net
blocks' activations in the backward pass (``auto``: on at 256 px and above), ``accumulate`` N runs each step as N
micro-batches of ``batch_size`` (split over the ranks) and sums their gradients: the effective batch is
``batch_size x N``. The step's randomness is drawn for the whole ``batch_size x N`` before it is split, so N
micro-batches equal one batch of N x ``batch_size`` (to float rounding), and checkpoints are written between steps:
a run killed inside an accumulation cycle resumes at the cycle's start and continues exactly.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.swa_utils import AveragedModel

from echogains.ddpm.diffusion import GaussianDiffusion
from echogains.ddpm.images import (
    IMAGE_SUFFIXES,
    TrainingImages,
    find_image_files,
    load_training_images,
    make_batch,
    narrow_sector,
)
from echogains.ddpm.model import DDPMConfig, build_diffusion, build_network, get_config, save_weights
from echogains.precision import PRECISIONS, autocast, resolve_precision
from echogains.utils import (
    EchoDataError,
    atomic_path,
    atomic_torch_save,
    atomic_write_json,
    check_int,
    check_output_dir,
    get_logger,
    read_json,
    resolve_device,
)
from echogains.utils import progress as progress_bar

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
CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "ddpm_ema.pt"


# --------------------------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------------------------


def _ema_avg_fn(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor | int], None]:
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
        progress: progress bar on rank 0.
    """

    def __init__(
        self,
        images: TrainingImages,
        out_dir: str | os.PathLike,
        config: DDPMConfig,
        settings: TrainSettings,
        device: str | torch.device | None = None,
        progress: bool = True,
    ) -> None:
        self.images, self.out_dir, self.config, self.settings = images, Path(out_dir), config, settings
        self.progress = progress
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = torch.device(resolve_device(device, int(os.environ.get("LOCAL_RANK", "0"))))
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
        atomic_torch_save(self.state_dict(), self.checkpoint_path)
        save_weights(self.weights_path, self.config, self.ema.module.state_dict(), {"step": self.step})
        atomic_write_json(self.out_dir / "history.json", self.history)

    def load(self, path: Path) -> None:
        """Restore the full state from a checkpoint; the configuration must match."""
        try:
            ckpt = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as err:
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
                path,
                ckpt.get("settings"),
                ckpt.get("world_size"),
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
        return autocast(self.settings.precision, self.device)

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
                    losses = self.diffusion.training_losses(
                        self.net,
                        x0[part].to(self.device),
                        t[part].to(self.device),
                        noise[part].to(self.device),
                        vlb_weight=self.config.vlb_weight,
                    )
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
        bar = progress_bar(steps, total=len(steps), desc="train-ddpm") if self.progress and self.is_main else steps
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


def _settings(
    cfg: DDPMConfig, vb_weighting: str, accumulate: int, precision: str, checkpointing: bool | str | None, **given: Any
) -> tuple[DDPMConfig, TrainSettings]:
    """The run's configuration (``vb_weighting`` applied) and :class:`TrainSettings`, checked (``train_ddpm``'s
    arguments; ``given``: the settings' fields, ``None`` for the configuration's default)."""
    if vb_weighting not in ("rescaled", "unit"):
        raise EchoDataError(None, f"--vb_weighting: expected rescaled or unit, got {vb_weighting!r}")
    if vb_weighting == "unit":
        cfg = get_config(cfg, vlb_weight=1.0 / cfg.num_timesteps)
    check_int("accumulate", accumulate, 1)
    if str(precision).strip().lower() not in PRECISIONS:
        raise EchoDataError(None, f"--precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    flag = str(checkpointing).strip().lower()
    if flag not in ("auto", "none", "true", "false", "1", "0", "yes", "no", "on", "off"):
        raise EchoDataError(None, f"--checkpointing: expected true, false or auto, got {checkpointing!r}")
    settings = TrainSettings(
        steps=int(cfg.steps if given["steps"] is None else given["steps"]),
        batch_size=int(cfg.batch_size if given["batch_size"] is None else given["batch_size"]),
        lr=float(cfg.lr if given["lr"] is None else given["lr"]),
        ema=float(cfg.ema if given["ema"] is None else given["ema"]),
        seed=int(given["seed"]),
        max_narrowing_deg=float(given["max_narrowing_deg"]),
        sample_every=int(given["sample_every"]),
        checkpoint_every=max(1, int(given["checkpoint_every"])),
        n_samples=int(given["n_samples"]),
        sample_steps=int(given["sample_steps"]),
        accumulate=int(accumulate),
        precision=str(precision).strip().lower(),
        checkpointing=None if flag in ("auto", "none") else flag in ("true", "1", "yes", "on"),
    )
    if settings.steps < 0 or settings.batch_size < 1 or settings.n_samples < 1 or not 0 <= settings.ema < 1:
        raise EchoDataError(None, f"invalid training settings {settings}")
    if not 0 <= settings.max_narrowing_deg < 90:
        raise EchoDataError(None, f"max_narrowing_deg must be in [0, 90), got {given['max_narrowing_deg']}")
    return cfg, settings


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
    progress: bool = True,
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
        progress: progress bars.
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
    cfg, settings = _settings(
        get_config(config),
        vb_weighting,
        accumulate,
        precision,
        checkpointing,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        ema=ema,
        seed=seed,
        max_narrowing_deg=max_narrowing_deg,
        sample_every=sample_every,
        checkpoint_every=checkpoint_every,
        n_samples=n_samples,
        sample_steps=sample_steps,
    )
    out = check_output_dir(out_dir, allow_nonempty=True)
    check_int("fold", fold, 0)
    selection = {"fold": fold, "include_validation": bool(include_validation), "all_patients": bool(all_patients)}
    images = load_training_images(
        data, cfg.image_size, seed, tuple(frame_step), settings.max_narrowing_deg > 0, progress, **selection
    )
    trainer = DDPMTrainer(images, out, cfg, settings, device, progress)
    if resume and trainer.checkpoint_path.is_file():
        trainer.load(trainer.checkpoint_path)
    elif trainer.checkpoint_path.is_file():
        log.warning("%s exists; starting afresh (resume=False) and overwriting it", trainer.checkpoint_path)
    if trainer.is_main:
        selection["files"] = len({src.split("[frame")[0] for src in images.sources})
        record = {
            "config": cfg.to_dict(),
            "settings": vars(settings),
            "data": str(data),
            "images": len(images),
            "selection": selection,
        }
        atomic_write_json(out / "config.json", record)
    return trainer.run()


def read_history(out_dir: str | os.PathLike) -> list[dict[str, float]]:
    """Loss history written beside the checkpoint."""
    return read_json(Path(out_dir) / "history.json")
