"""Echo-DND training: AdamW, EMA weights, periodic validation Dice, atomic full-state checkpoints, resume, DDP.

:class:`EchoDNDTrainer` holds the training state and one optimiser step (:meth:`EchoDNDTrainer.iteration`); the loop
is MONAI's ``SupervisedTrainer`` with MONAI / Ignite handlers (:mod:`scripts.train_engine`), as
``configs/train.json`` writes it (one process) or ``configs/multi_gpu_train.json`` under ``torchrun``
(DistributedDataParallel: NCCL on GPUs, gloo on CPU); :meth:`EchoDNDTrainer.run` builds the same engine in Python.
Every random draw comes from per-rank ``torch.Generator``s. The checkpoint holds the random state of every rank (its
two generators and the global torch, CUDA, NumPy and Python states, gathered to rank 0), so a run killed and resumed
with the same number of processes continues exactly as an uninterrupted one on every rank: same batches, same noise,
same weights. What is not exact: resuming with another number of processes (the saved ranks restore their states; a
new rank is seeded from the seed, its rank and the step, and the batch split differs anyway), and the loss averages
of the first ``metrics.csv`` row after a resume (they cover the steps since the resume only).

Memory (``benchmarks/train_memory.py`` measures each option at paper scale): ``precision`` runs the forward pass under
autocast (``bf16``; ``fp16`` with a gradient scaler; ``auto``: bf16 on a GPU that has it, fp32 elsewhere),
``checkpointing`` recomputes the activations of the conditioner's and U-Nets' blocks in the backward pass instead of
keeping them (``auto``: on at 256 px and above), ``accumulate`` N sums the gradients of N micro-batches of
``batch_size`` before each optimiser step (effective batch = batch_size x N x processes). One step's images, timesteps
and noises are drawn for the whole cycle before it is split, so N micro-batches of B are the same samples as one batch
of N x B, and checkpoints are written between steps only: a run killed inside an accumulation cycle resumes at the
cycle's start and continues exactly.

Files in ``output_dir``: ``checkpoint.pt`` (full state: model, EMA, optimizer, step, generator states, config),
``model.pt`` (deployable: the plain ``state_dict`` of the EMA weights, what MONAI's ``CheckpointLoader`` loads into
``network_def``), ``network_config.json`` (its configuration and ablation, for ``--network_config``), ``metrics.csv``
(step, loss terms, validation Dice). Both ``.pt`` files are written atomically
(:func:`echogains.utils.atomic_torch_save`, re-exported here); ``PRECISIONS`` and ``resolve_precision`` are the
toolkit's (:mod:`echogains.precision`), shared with the DDPM.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from echogains.precision import PRECISIONS, autocast, resolve_precision
from echogains.utils import atomic_torch_save

from .checkpoint import save_network_config
from .common import as_bool
from .config import ABLATIONS, LOSS_TERMS, EchoDNDConfig
from .data import augment_batch, load_lv_cases
from .losses import EchoDNDLoss, draw_noise
from .networks import EchoDND
from .train_engine import CHECKPOINT_NAME, MODEL_NAME

__all__ = [
    "EchoDNDTrainer",
    "atomic_torch_save",
    "check_ablation",
    "load_model",
    "dice_score",
    "resolve_precision",
    "PRECISIONS",
    "OOM_HINT",
]

#: What to try when a process runs out of memory (the kernel kills it with signal 9).
OOM_HINT = "probably out of memory; try --accumulate or a smaller --batch_size"

log = logging.getLogger("echo_dnd.train")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu", config: Any | None = None) -> EchoDND:
    """Load weights into an :class:`EchoDND` rebuilt from their configuration (``model.config``, ``model.ablation``).

    ``path`` is a plain ``state_dict`` (``model.pt`` since bundle 0.3.0), a nested file of the earlier format
    (``{"config", "state_dict"}``: loaded with a ``FutureWarning``) or a full training checkpoint (its EMA weights).
    The configuration is ``config`` when given (anything :func:`scripts.config.network_config` takes), else the
    file's own, else ``network_config.json`` beside it, else the bundle's ``configs/inference.json`` (for
    ``<bundle>/models/model.pt``); see :func:`scripts.checkpoint.resolve_config`. An ablation's model (e.g.
    ``gaussian_only``: no BNEM) gets exactly its own modules.
    """
    from .checkpoint import load_weights, read_weights, resolve_config

    weights = read_weights(path)
    model_config, ablation = resolve_config(path, weights, config)
    network = EchoDND(model_config, ablation=ablation)
    return load_weights(network, path, device, weights=weights)  # type: ignore[return-value]


def dice_score(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image Dice of binary masks ``(B, 1, H, W)``; 1 when both are empty."""
    p, t = pred.flatten(1).float(), target.flatten(1).float()
    inter, total = (p * t).sum(1), p.sum(1) + t.sum(1)
    return torch.where(total > 0, 2 * inter / total.clamp_min(1e-8), torch.ones_like(total))


def check_ablation(name: str) -> str:
    """The ablation name, checked against :data:`scripts.config.ABLATIONS`.

    Raises:
        EchoDataError: an unknown name (raised before anything is built or written).
    """
    from .common import EchoDataError

    name = str(name).strip()
    if name not in ABLATIONS:
        raise EchoDataError("ablation", f"unknown ablation {name!r}; choose from {', '.join(ABLATIONS)}")
    return name


def _flag(value: Any, name: str) -> bool | None:
    """A boolean config value (``True``/``"false"``/``0`` ...), or ``None`` for ``"auto"``."""
    from .common import EchoDataError

    text = str(value).strip().lower()
    if text == "auto":
        return None
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise EchoDataError(None, f"--{name}: expected true, false or auto, got {value!r}")


def _resolve_config(config: str | dict | EchoDNDConfig, image_size: int | None) -> EchoDNDConfig:
    if isinstance(config, EchoDNDConfig):
        return config
    if isinstance(config, dict):
        return EchoDNDConfig.from_dict(config)
    from .common import EchoDataError

    try:  # the only argument here that can be wrong is the image size
        if config == "paper":
            return EchoDNDConfig.paper(**({"image_size": image_size} if image_size else {}))
        if config == "tiny":
            return EchoDNDConfig.tiny(image_size or 64)
    except ValueError as err:
        raise EchoDataError(None, f"--image_size: {err}") from err

    raise EchoDataError(None, f"--network_config: expected paper, tiny, a dict or an EchoDNDConfig, got {config!r}")


class EchoDNDTrainer:
    """Train Echo-DND on the LV label of an nnU-Net raw dataset.

    Args:
        dataset_dir: nnU-Net raw dataset (``echogains convert-*`` output).
        output_dir: where checkpoints, weights and metrics go; an existing ``checkpoint.pt`` is resumed.
        config: ``"paper"`` (C = 128, 256 x 256), ``"tiny"`` or a dict of :class:`EchoDNDConfig` fields.
        image_size: override the configuration's image size.
        ablation: one of the paper's ablations (Table 4, :data:`scripts.config.ABLATIONS`) applied to ``config``:
            ``full`` (default: MFCM, both noises, all loss terms), ``gaussian_only``, ``bernoulli_only``,
            ``unet_conditioner``, ``loss_lg_lb``, ``loss_lg_lb_kl``. The resulting configuration is saved in the
            checkpoint and ``model.pt``, so :func:`load_model` rebuilds the same network.
        fold: fold of ``splits_final.json`` (its ``train`` cases train, its ``val`` cases validate).
        steps: optimiser steps in total (paper: 200k).
        batch_size: images per step and process (paper: 8).
        lr: AdamW learning rate (paper: 5e-5).
        weight_decay: AdamW's decoupled weight decay, on every parameter (default 1e-2, PyTorch's AdamW default: the
            paper names AdamW but not its decay; 0 makes it Adam, what the committed demo weights were trained with).
        kl_form: form of the KL terms, ``"prior"`` (the paper's eqs. 10-11) or ``"vb"`` (variational bound); ``None``
            keeps the configuration's (``prior`` for ``paper`` and ``tiny``). Saved with the configuration.
        ema_decay: EMA of the weights used for validation and the deployable ``model.pt``.
        val_every: validate (few-step sampling, EMA weights) every this many steps; 0 disables.
        val_steps: sampling steps of the validation.
        save_every: write the checkpoint every this many steps (and at the end).
        seed: seed of every random draw.
        augment: apply the paper's augmentations.
        device: ``cuda`` when available else ``cpu`` by default.
        progress: tqdm bar on rank 0.
        accumulate: micro-batches of ``batch_size`` per optimiser step (gradient accumulation): the effective batch is
            ``batch_size x accumulate x processes``, the memory that of ``batch_size``. Default 1.
        precision: ``auto`` (default: bf16 autocast on a GPU with bf16, fp32 elsewhere), ``fp32``, ``bf16`` (autocast,
            also on CPU) or ``fp16`` (autocast and a gradient scaler, whose state is checkpointed).
        checkpointing: activation checkpointing of the MFCM / U-Net conditioner and of both U-Nets' blocks (``True``,
            ``False`` or ``auto``: on when the image size is 256 or more, the paper's setting).
    """

    def __init__(
        self,
        dataset_dir: str,
        output_dir: str,
        config: str | dict | EchoDNDConfig = "paper",
        image_size: int | None = None,
        ablation: str = "full",
        fold: int = 0,
        steps: int = 200_000,
        batch_size: int = 8,
        lr: float = 5e-5,
        weight_decay: float = 1e-2,
        kl_form: str | None = None,
        ema_decay: float = 0.999,
        val_every: int = 1000,
        val_steps: int = 10,
        save_every: int = 500,
        seed: int = 0,
        augment: bool = True,
        device: str | None = None,
        progress: bool = True,
        accumulate: int = 1,
        precision: str = "auto",
        checkpointing: bool | str = "auto",
    ) -> None:
        self.dataset_dir, self.output_dir = str(dataset_dir), Path(output_dir)
        self.ablation = check_ablation(ablation)
        base = _resolve_config(config, image_size)
        if kl_form is not None:
            from .common import EchoDataError
            from .config import KL_FORMS

            if str(kl_form) not in KL_FORMS:
                raise EchoDataError("kl_form", f"unknown KL form {kl_form!r}; choose from {', '.join(KL_FORMS)}")
            base = base.replace(kl_form=str(kl_form))
        self.config = base.ablation(self.ablation)
        self.fold, self.steps, self.batch_size = fold, int(steps), int(batch_size)
        self.lr, self.weight_decay, self.ema_decay = lr, weight_decay, ema_decay
        self.val_every, self.val_steps, self.save_every = int(val_every), int(val_steps), max(1, int(save_every))
        self.seed = seed
        self.augment, self.progress = as_bool(augment, "augment"), as_bool(progress, "progress")
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if self.distributed and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
            dist.init_process_group(backend)
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and self.distributed:
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        self.device = torch.device(device)
        if self.distributed and self.device.type == "cuda":
            # NCCL collectives (the validator's metric gathers across ranks) run on the current device
            torch.cuda.set_device(self.device)
        from .common import EchoDataError

        if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
            raise EchoDataError(None, f"--accumulate: expected an integer >= 1, got {accumulate!r}")
        self.accumulate = int(accumulate)
        self.precision = resolve_precision(precision, self.device)
        flag = _flag(checkpointing, "checkpointing")
        self.checkpointing = self.config.image_size >= 256 if flag is None else flag

    # --- data --------------------------------------------------------------------------------------
    def _load_data(self) -> None:
        from echogains.data.nnunet import RawDataset

        ds = RawDataset(self.dataset_dir)
        if ds.splits:
            train_ids, val_ids = ds.case_ids("train", self.fold), ds.case_ids("val", self.fold)
        else:
            train_ids, val_ids = ds.case_ids("Tr"), []
        size = self.config.image_size
        _, self.train_images, self.train_masks = load_lv_cases(self.dataset_dir, train_ids, size)
        self.val_images = self.val_masks = None
        if val_ids:
            _, self.val_images, self.val_masks = load_lv_cases(self.dataset_dir, val_ids, size)
        log.info("training on %d cases, validating on %d (fold %d)", len(train_ids), len(val_ids), self.fold)

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step's images and masks, ``batch_size x accumulate`` of them, on the CPU."""
        idx = torch.randint(0, len(self.train_images), (self.batch_size * self.accumulate,), generator=self.data_gen)
        image, mask = self.train_images[idx], self.train_masks[idx]
        if self.augment:
            image, mask = augment_batch(image, mask, self.data_gen)
        return image, mask

    # --- state ---------------------------------------------------------------------------------------
    def _build(self) -> None:
        torch.manual_seed(self.seed)  # identical initial weights on every rank
        self.model = EchoDND(self.config).to(self.device)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.model.set_checkpointing(self.checkpointing)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.data_gen = torch.Generator().manual_seed(self.seed * 1000 + self.rank)
        self.noise_gen = torch.Generator().manual_seed(self.seed * 1000 + 500 + self.rank)
        self.step = 0
        self.net: nn.Module = self.model
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # ablations switch off terms/chains: their parameters then get no gradient
            partial = set(self.config.loss_terms) != set(LOSS_TERMS) or not (
                self.config.use_gaussian and self.config.use_bernoulli
            )
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids, find_unused_parameters=partial)

    def state_dict(self) -> dict[str, Any]:
        """The full training state (``checkpoint.pt``): configuration, weights, EMA, optimizer, scaler, step and the
        random states of every rank (:meth:`_gather_rng`: a collective, every rank must call it)."""
        return {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "data_gen": self.data_gen.get_state(),
            "noise_gen": self.noise_gen.get_state(),
            "rng": self._gather_rng(),
            "seed": self.seed,
            "ablation": self.ablation,
            "training": self._training_settings(),
            "scaler": self.scaler.state_dict(),
        }

    def _training_settings(self) -> dict[str, Any]:
        """What decides the samples and arithmetic of a step besides the configuration (checked on resume)."""
        return {
            "batch_size": self.batch_size,
            "accumulate": self.accumulate,
            "precision": self.precision,
            "world_size": self.world,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` output (``CheckpointLoader`` calls it at the engine's start).

        Raises:
            EchoDataError: the checkpoint was trained with another configuration.
        """
        path = self.output_dir / CHECKPOINT_NAME
        if EchoDNDConfig.from_saved(state["config"]) != self.config:
            from .common import EchoDataError

            raise EchoDataError(path, "checkpoint was trained with another configuration; use a new output_dir")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        saved_training = state.get(
            "training",
            {
                "batch_size": self.batch_size,
                "accumulate": 1,
                "precision": "fp32",
                "world_size": len(state.get("rng") or [0]),
            },
        )
        if saved_training != self._training_settings():
            log.warning(
                "checkpoint was trained with %s, this run has %s: the continuation differs from an uninterrupted run",
                saved_training,
                self._training_settings(),
            )
        # random states are per rank: rank r continues from its own saved states (checkpoints before the "rng"
        # list held rank 0's generators only)
        saved = state.get("rng") or [{"data_gen": state["data_gen"], "noise_gen": state["noise_gen"]}]
        if len(saved) != self.world:
            log.warning(
                "checkpoint holds the random states of %d process(es), this run has %d: resume is not exact "
                "(ranks without a saved state are seeded from the seed, rank and step)",
                len(saved),
                self.world,
            )
        if self.rank < len(saved):
            self._set_rng_state(saved[self.rank])
        else:
            self.data_gen.manual_seed(self.seed * 1000 + self.rank + 7919 * self.step)
            self.noise_gen.manual_seed(self.seed * 1000 + 500 + self.rank + 7919 * self.step)
        log.info("resumed %s at step %d", path, self.step)

    def _adopt_legacy_fields(self) -> None:
        """A checkpoint written before a configuration field existed (:data:`scripts.config.LEGACY_FIELDS`) continues
        with the behaviour it was trained with, when it matches this run's configuration otherwise."""
        from .config import LEGACY_FIELDS

        path = self.output_dir / CHECKPOINT_NAME
        if not path.is_file():
            return
        saved = torch.load(path, map_location="cpu", weights_only=True).get("config")
        missing = {k: v for k, v in LEGACY_FIELDS.items() if isinstance(saved, dict) and k not in saved}
        if missing and self.config.replace(**missing) == EchoDNDConfig.from_saved(saved):
            log.warning("%s predates %s: resuming with its settings %s", path, ", ".join(missing), missing)
            self.config = self.config.replace(**missing)
        if isinstance(saved, dict) and EchoDNDConfig.from_saved(saved) != self.config:
            from .common import EchoDataError

            raise EchoDataError(path, "checkpoint was trained with another configuration; use a new output_dir")

    def _rng_state(self) -> dict[str, Any]:
        """This rank's random states: its generators and the global torch, CUDA, NumPy and Python states."""
        name, keys, pos, has_gauss, cached = np.random.get_state()
        return {
            "data_gen": self.data_gen.get_state(),
            "noise_gen": self.noise_gen.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "numpy": {
                "name": str(name),
                "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached": float(cached),
            },
            "python": random.getstate(),
        }

    def _set_rng_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`_rng_state` output (the global states only when saved: older checkpoints lack them)."""
        self.data_gen.set_state(state["data_gen"])
        self.noise_gen.set_state(state["noise_gen"])
        if state.get("torch") is not None:
            torch.set_rng_state(state["torch"])
        if state.get("cuda") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)
        if state.get("numpy") is not None:
            n = state["numpy"]
            np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
        if state.get("python") is not None:
            version, internal, gauss = state["python"]
            random.setstate((version, tuple(internal), gauss))

    def _gather_rng(self) -> list[dict[str, Any]]:
        """Every rank's :meth:`_rng_state`, in rank order, on rank 0 (a collective: every rank must call it)."""
        mine = self._rng_state()
        if not self.distributed:
            return [mine]
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # NCCL object collectives use the current device
        states: list[Any] | None = [None] * self.world if self.rank == 0 else None
        dist.gather_object(mine, states, dst=0)
        return states or []

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.ema_decay, (1 + self.step) / (10 + self.step))  # warm-up as in common EMA practice
        for e, p in zip(self.ema.parameters(), self.model.parameters()):
            e.lerp_(p.detach(), 1 - decay)
        for e, b in zip(self.ema.buffers(), self.model.buffers()):
            e.copy_(b)

    def validation_batches(self, batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
        """The validation cases as the validator's data: batches of ``{"image", "label"}`` (model frame, CPU)."""
        if self.val_images is None:
            return []
        return [
            {"image": self.val_images[i : i + batch_size], "label": self.val_masks[i : i + batch_size]}
            for i in range(0, len(self.val_images), batch_size)
        ]

    @torch.no_grad()
    def validate(self) -> float:
        """Mean Dice of the EMA model on the validation cases with ``val_steps``-step sampling (the validator of
        ``train.json``: the sampler's default ensemble and fusion, one generator seeded with ``seed`` per batch).

        The default ensemble (3 samples per chain, reliability-started STAPLE): one sample per chain is unstable
        across seeds (``scripts.sampler``), so the Dice would follow the noise draw.
        """
        from .train_engine import build_validator

        if self.val_images is None:
            return float("nan")
        validator = build_validator(self)
        validator.run()
        return float(validator.state.metrics["val_dice"])

    # --- loop ----------------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.precision, self.device)

    def train_step(self, loss_fn: EchoDNDLoss) -> dict[str, float]:
        """One optimiser step: ``accumulate`` micro-batches, their gradients summed, then AdamW; returns the means.

        The step's batch and noises are drawn first for the whole cycle; each micro-batch's loss (a mean over its
        samples) is divided by ``accumulate``, so the gradient is the mean over all ``batch_size x accumulate``
        samples, as one batch of that size gives. Under DDP the gradients are all-reduced once, after the last
        micro-batch. Returns each loss term averaged over the step's samples.
        """
        image, mask = self._batch()
        noise = draw_noise(self.config, tuple(mask.shape), self.noise_gen)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        n, b, means = self.accumulate, self.batch_size, {}
        for k in range(n):
            part = slice(k * b, (k + 1) * b)
            last = k == n - 1
            with self.net.no_sync() if self.distributed and not last else contextlib.nullcontext():
                with self._autocast():
                    losses = loss_fn(
                        self.net,
                        image[part].to(self.device),
                        mask[part].to(self.device),
                        noise={key: v[part] for key, v in noise.items()},
                    )
                self.scaler.scale(losses["total"] / n).backward()
            for key, v in losses.items():
                if key != "timesteps":
                    means[key] = means.get(key, 0.0) + float(v.detach()) / n
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return means

    def setup(self) -> EchoDNDTrainer:
        """Read and check the dataset (before anything is written), build the networks, optimizer and generators,
        make ``output_dir`` and write ``network_config.json``; returns ``self`` (the ``training`` of ``train.json``).

        A ``checkpoint.pt`` in ``output_dir`` is checked here against the configuration (and an older one adopted,
        :data:`scripts.config.LEGACY_FIELDS`); it is loaded by the engine's ``CheckpointLoader``.
        """
        if getattr(self, "model", None) is not None:
            return self
        self._load_data()
        self._adopt_legacy_fields()
        self._build()
        self.loss_fn = EchoDNDLoss()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            save_network_config(self.config, self.output_dir, self.ablation)
        return self

    def attach(self, engine: Any) -> None:
        """Ignite handler: at the start of a run the engine moves to this state's step (after ``CheckpointLoader``)."""
        from ignite.engine import Events

        def _sync(engine: Any) -> None:
            engine.state.iteration, engine.state.epoch = self.step, 0

        engine.add_event_handler(Events.STARTED, _sync)

    def iteration(self, engine: Any, batch: Any) -> dict[str, float]:
        """The engine's ``iteration_update``: one optimiser step (:meth:`train_step`), then the EMA update; returns
        the step's loss terms (the engine's ``output``)."""
        try:
            losses = self.train_step(self.loss_fn)
        except RuntimeError as err:
            if not self.distributed:
                raise
            # a collective failed: most often another rank died (torchrun names its signal: 9 = killed)
            raise RuntimeError(
                f"rank {self.rank}, step {self.step + 1}: {err}\n(if another process of this run "
                f"was killed by signal 9 (SIGKILL): {OOM_HINT})"
            ) from err
        self.step = int(engine.state.iteration)
        self._update_ema()
        return losses

    def run(self) -> Path:
        """Train to ``steps`` (resuming if a checkpoint exists) on the engine of ``train.json``
        (:func:`scripts.train_engine.build_trainer`); returns the path of ``model.pt``."""
        from .train_engine import build_trainer

        self.setup()
        build_trainer(self).run()
        return self.finish()

    def finish(self) -> Path:
        """After the engine's run: wait for every rank (DDP); returns the path of ``model.pt``."""
        if self.distributed:
            dist.barrier()
        return self.output_dir / MODEL_NAME
