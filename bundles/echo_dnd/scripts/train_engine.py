"""``configs/train.json`` on a MONAI engine: a ``monai.engines.SupervisedTrainer`` runs the Echo-DND optimiser steps,
MONAI / Ignite handlers validate, log, show progress and checkpoint.

The config holds the parts as components:

- ``training``: :class:`scripts.train.EchoDNDTrainer`, set up (:meth:`~scripts.train.EchoDNDTrainer.setup`: the
  dataset read and checked before anything is written, the networks, EMA, AdamW, the per-rank generators, DDP). It
  is the engine's ``iteration_update``: one call is one optimiser step of the dual-diffusion loss (``accumulate``
  micro-batches, the batch and noises drawn from its own generators), then the EMA update. The engine's data is
  :class:`StepIndices` (the step number: the batch is drawn inside the step, so that N micro-batches of B are the
  same samples as one batch of N x B). One epoch is the whole run (``epoch_length = steps``), so a resumed run
  continues at its step and a larger ``steps`` extends a finished one.
- ``CheckpointLoader`` (when ``checkpoint.pt`` exists) loads the full state into ``training``, whose
  :meth:`~scripts.train.EchoDNDTrainer.attach` moves the engine to the saved step; the state is one object
  (``{"checkpoint": training}``), so the file is the flat dictionary of earlier bundles.
- ``StepValidationHandler``: MONAI's ``ValidationHandler`` every ``val_every`` steps and at the last step; the
  validator is a ``SupervisedEvaluator`` of the EMA network with the bundle's ``EchoDNDInferer`` (``val_steps``
  DDIM steps, the default ensemble and STAPLE fusion, one seeded generator per batch) and MONAI's ``DiceMetric``
  through ``IgniteMetricHandler`` (``ignore_empty=False``: a case with an empty label scores 1 with an empty mask,
  else 0, as ``dice_score``; MONAI's ``MeanDice`` handler leaves such cases out and has no option for it).
- ``MetricsCSV``: a row of ``metrics.csv`` per validation (step, each loss term averaged since the last row, the
  validation Dice, seconds).
- ``StatsHandler`` (every loss term every ``log_every`` steps), Ignite's ``ProgressBar`` (tqdm) on rank 0.
- ``AtomicCheckpointSaver`` twice: ``checkpoint.pt`` (full state) and ``model.pt`` (the EMA ``state_dict``) every
  ``save_every`` steps and at the end. It is MONAI's ``CheckpointSaver`` with a fixed file name written atomically
  (temporary file, then ``os.replace``) on rank 0: MONAI's saver writes interval checkpoints under a new name each
  time and with ``atomic=False``, so a process killed while writing leaves a truncated file (``checkpoint_saver.py``
  sets ``DiskSaver(..., atomic=False)``); and it never saves on an exception, since a step interrupted inside an
  accumulation cycle has changed the state halfway.

:func:`build_trainer` builds the same engine in Python (:meth:`scripts.train.EchoDNDTrainer.run`);
``tests/bundle/test_bundle_train_engine.py`` checks that ``train.json`` holds the same handlers.
"""

from __future__ import annotations

import csv
import itertools
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import CheckpointLoader, CheckpointSaver, IgniteMetricHandler, StatsHandler, ValidationHandler
from monai.metrics import DiceMetric

from echogains.utils import atomic_torch_save

from .common import ProgressBar
from .inferer import EchoDNDInferer
from .sampler import EchoDNDSampler

__all__ = [
    "StepIndices",
    "every_or_last",
    "AtomicCheckpointSaver",
    "StepValidationHandler",
    "MetricsCSV",
    "loss_stats",
    "mask_and_label",
    "build_validator",
    "default_handlers",
    "build_trainer",
    "CHECKPOINT_NAME",
    "MODEL_NAME",
]

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "model.pt"
#: steps between two log lines of the losses (``log_every`` of ``train.json``)
LOG_EVERY = 100


class StepIndices:
    """The trainer's data: the step numbers 0, 1, 2, ... (each step draws its own batch from the generators)."""

    def __iter__(self) -> Iterator[int]:
        return itertools.count()


def every_or_last(interval: int, last: int) -> Any:
    """An Ignite event filter: every ``interval`` iterations and at iteration ``last``."""
    interval, last = int(interval), int(last)

    def _filter(engine: Engine, iteration: int) -> bool:
        return (interval > 0 and iteration % interval == 0) or iteration == last

    return _filter


def _cpu(obj: Any) -> Any:
    """``obj`` with every tensor moved to the CPU (dicts, lists and tuples kept as they are)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, Mapping):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_cpu(v) for v in obj)
    if isinstance(obj, list):
        return [_cpu(v) for v in obj]
    return obj


class _AtomicFileSaver(BaseSaveHandler):
    """Ignite save handler: one fixed file, written atomically by rank 0, tensors on the CPU."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        import ignite.distributed as idist

        if idist.get_rank() == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_torch_save(_cpu(checkpoint), self.path)

    def remove(self, filename: str) -> None:
        """Nothing to remove: the one file is replaced by the next save."""


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` writing ``save_dir/filename`` atomically every ``save_interval`` iterations, at
    iteration ``last`` and when the run completes; never on an exception (see the module docstring).

    ``save_dict`` with one object saves that object's ``state_dict`` itself (Ignite's rule): ``{"checkpoint":
    training}`` gives the flat full state, ``{"model": ema}`` a plain ``state_dict`` that ``CheckpointLoader`` and
    ``ckpt_export`` load.
    """

    def __init__(
        self, save_dir: str, save_dict: dict, filename: str, save_interval: int, last: int, **kwargs: Any
    ) -> None:
        super().__init__(save_dir, save_dict, save_interval=max(1, int(save_interval)), n_saved=None, **kwargs)
        self.filename, self.last = str(filename), int(last)
        if self._interval_checkpoint is None:  # pragma: no cover - save_interval >= 1 above
            raise AssertionError("no interval checkpoint")
        self._interval_checkpoint.save_handler = _AtomicFileSaver(Path(save_dir) / self.filename)

    @property
    def path(self) -> Path:
        return Path(self.save_dir) / self.filename

    def attach(self, engine: Engine) -> None:
        if self._name is None:
            self.logger = engine.logger
        engine.add_event_handler(
            Events.ITERATION_COMPLETED(event_filter=every_or_last(self.save_interval, self.last)), self._save
        )
        engine.add_event_handler(Events.COMPLETED, self._save)

    def _save(self, engine: Engine) -> None:
        if self._interval_checkpoint is None:  # pragma: no cover
            raise AssertionError("no interval checkpoint")
        self._interval_checkpoint(engine)
        self.logger.debug("saved %s at step %d", self.path, engine.state.iteration)


class StepValidationHandler(ValidationHandler):
    """MONAI's ``ValidationHandler`` (iteration level) every ``interval`` steps and at step ``last``; ``interval``
    0 disables it. The validator gets the step as its global epoch."""

    def __init__(self, interval: int, validator: SupervisedEvaluator | None, last: int) -> None:
        super().__init__(max(1, int(interval)), validator, epoch_level=False)
        self.enabled, self.last = int(interval) > 0, int(last)

    def attach(self, engine: Engine) -> None:
        if self.enabled:
            engine.add_event_handler(
                Events.ITERATION_COMPLETED(event_filter=every_or_last(self.interval, self.last)), self
            )

    def __call__(self, engine: Engine) -> None:
        if self.validator is None:
            raise RuntimeError("please set validator in __init__() or call `set_validator()` before training.")
        self.validator.run(engine.state.iteration)


class MetricsCSV:
    """``metrics.csv``: at every validation (attach after :class:`StepValidationHandler`) one row: ``step``, each
    loss term averaged over the steps since the last row, ``val_dice`` (NaN without validation cases), ``seconds``
    since this process started training. Floats are written with 10 significant digits (their last digits differ
    between CPUs). Rank 0 writes; ``interval`` 0 writes nothing."""

    def __init__(
        self, path: str | os.PathLike, interval: int, last: int, validator: SupervisedEvaluator | None
    ) -> None:
        self.path, self.interval, self.last, self.validator = Path(path), int(interval), int(last), validator
        self._sums: dict[str, float] = {}
        self._count = 0
        self._t0 = time.perf_counter()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        if self.interval > 0:
            engine.add_event_handler(
                Events.ITERATION_COMPLETED(event_filter=every_or_last(self.interval, self.last)), self._write
            )

    def _start(self, engine: Engine) -> None:
        self._t0 = time.perf_counter()

    def _accumulate(self, engine: Engine) -> None:
        for key, value in (engine.state.output or {}).items():
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
        self._count += 1

    def _write(self, engine: Engine) -> None:
        import ignite.distributed as idist

        metrics = self.validator.state.metrics if self.validator is not None else {}
        row: dict[str, Any] = {
            "step": engine.state.iteration,
            **{k: v / max(1, self._count) for k, v in self._sums.items()},
            "val_dice": float(metrics.get("val_dice", math.nan)),
            "seconds": round(time.perf_counter() - self._t0, 1),
        }
        self._sums, self._count = {}, 0
        if idist.get_rank() != 0:
            return
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow({k: (f"{v:.10g}" if isinstance(v, float) else v) for k, v in row.items()})
        engine.logger.info("step %d: %s", row["step"], row)


def loss_stats(log_every: int, last: int) -> StatsHandler:
    """MONAI's ``StatsHandler`` logging every loss term every ``log_every`` steps and at step ``last``."""
    return StatsHandler(
        iteration_log=every_or_last(log_every, last), epoch_log=False, output_transform=lambda out: dict(out)
    )


def mask_and_label(output: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The validator's Dice input: the sampler's binary mask and the label, ``(B, 1, S, S)`` on the CPU."""
    pred = output["pred"]
    return pred["mask"].detach().float().cpu(), output["label"].detach().float().cpu()


def build_validator(training: Any, num_steps: int | None = None, seed: int | None = None) -> SupervisedEvaluator:
    """The validation engine of ``train.json``: the EMA network, ``num_steps``-step sampling, MONAI's ``DiceMetric``."""
    batches = training.validation_batches()
    return SupervisedEvaluator(
        device=training.device,
        val_data_loader=batches,
        epoch_length=len(batches),
        network=training.ema,
        inferer=EchoDNDInferer(
            EchoDNDSampler(num_steps=training.val_steps if num_steps is None else num_steps),
            seed=training.seed if seed is None else seed,
        ),
        key_val_metric={
            "val_dice": IgniteMetricHandler(
                DiceMetric(include_background=True, ignore_empty=False), output_transform=mask_and_label
            )
        },
        decollate=False,
    )


def default_handlers(training: Any) -> list[Any]:
    """The handlers of ``train.json`` for a set-up ``training``, in its order (``CheckpointLoader`` first when
    ``checkpoint.pt`` exists)."""
    out, steps = Path(training.output_dir), training.steps
    validator = build_validator(training)
    handlers: list[Any] = []
    if (out / CHECKPOINT_NAME).is_file():
        handlers.append(CheckpointLoader(str(out / CHECKPOINT_NAME), {"checkpoint": training}, map_location="cpu"))
    return handlers + [
        training,
        StepValidationHandler(training.val_every, validator, steps),
        MetricsCSV(out / "metrics.csv", training.val_every, steps, validator),
        loss_stats(LOG_EVERY, steps),
        ProgressBar(training.progress, "Echo-DND training", "total"),
        AtomicCheckpointSaver(str(out), {"checkpoint": training}, CHECKPOINT_NAME, training.save_every, steps),
        AtomicCheckpointSaver(str(out), {"model": training.ema}, MODEL_NAME, training.save_every, steps),
    ]


def build_trainer(training: Any, handlers: Sequence[Any] | None = None) -> SupervisedTrainer:
    """The training engine of ``train.json`` around a set-up ``training`` (``handlers``: :func:`default_handlers`)."""
    return SupervisedTrainer(
        device=training.device,
        max_epochs=1,
        train_data_loader=StepIndices(),
        epoch_length=training.steps,
        network=training.net,
        optimizer=training.optimizer,
        loss_function=training.loss_fn,
        iteration_update=training.iteration,
        train_handlers=list(default_handlers(training) if handlers is None else handlers),
        decollate=False,
    )
