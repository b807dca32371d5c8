"""One chain of the EchoGAINS Table 3/4 experiment: expand, plan, then per training seed train, predict, evaluate.

Part of :mod:`experiments.echogains_tables` (which re-exports :func:`run_chain`). Runs in a worker process; every
step whose output exists is skipped, so a killed run continues where it stopped.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import echogains.evaluation.evaluate as evaluation  # the module: tests replace its ``evaluate``
from echogains.nnunet_runner import NnUNet
from echogains.utils import atomic_write_json, read_json
from experiments.common import StepTimer
from experiments.echogains_arms import (
    Direction,
    Settings,
    arm_dataset_dir,
    arm_dir,
    arm_spec,
    raw_dir,
    seed_dir,
    test_dataset_dir,
    test_images_dir,
    train_dataset_dir,
)

__all__ = ["run_chain"]


def _done(path: Path) -> dict[str, Any] | None:
    return read_json(path) if path.is_file() else None


def run_chain(work: str, settings: dict[str, Any], direction: dict[str, Any], arm: str) -> dict[str, Any]:
    """Expand and plan one arm of one direction, then train, predict and evaluate it once per training seed.

    Finished steps are skipped. Runs in a worker process (one torch thread). Returns the arm's record (also in
    ``arms/{dir}_{arm}/result.json``); each seed's in ``arms/{dir}_{arm}/seed{s}/result.json``.
    """
    os.environ["OMP_NUM_THREADS"] = "1"
    # torch (and the expander, which loads it) only now, after the thread count is pinned
    import torch

    torch.set_num_threads(1)
    from echogains.augment.expand import expand_dataset

    root, cfg, d = Path(work), Settings(**settings), Direction(**{**direction, "arms": tuple(direction["arms"])})
    spec = arm_spec(arm)
    folder = arm_dir(root, d, arm)
    result_file = folder / "result.json"
    if (previous := _done(result_file)) is not None:
        return previous
    folder.mkdir(parents=True, exist_ok=True)
    step = StepTimer(folder / "timings.json")
    train_dir = train_dataset_dir(root, d)
    dataset = arm_dataset_dir(root, d, arm)
    nn = NnUNet(raw=raw_dir(root), device=cfg.device, threads=1, log_dir=root / "logs")
    if spec.augment is not None and not (dataset / "dataset.json").is_file():
        step(
            "expand",
            lambda: expand_dataset(
                train_dir,
                dataset,
                model=cfg.ddpm if spec.repaint else None,
                augment=spec.augment,
                k=cfg.k,
                repaint=spec.repaint,
                sampler=cfg.sampler,
                seed=cfg.seed,
                fold=0,
                device=cfg.device,
                augment_validation=cfg.mode == "full",  # the paper's Sec. 2.6
                progress=False,
            ),
        )
    planned = folder / "planned.json"
    if not planned.is_file():
        step("plan", lambda: nn.plan_and_preprocess(dataset))
        atomic_write_json(planned, {"dataset": dataset.name})
    seeds = {str(s): _run_seed(root, cfg, d, arm, dataset, s) for s in cfg.train_seeds}
    record = {
        "direction": d.key,
        "arm": arm,
        "dataset": dataset.name,
        "timings": step.timings,
        "seeds": seeds,
        "n_training_images": _count_training(dataset),
    }
    atomic_write_json(result_file, record)
    return record


def _run_seed(root: Path, cfg: Settings, d: Direction, arm: str, dataset: Path, seed: int) -> dict[str, Any]:
    """Train (seeded), predict and evaluate one arm with one training seed; each step skipped when finished."""
    folder = seed_dir(root, d, arm, seed)
    if (previous := _done(folder / "result.json")) is not None:
        return previous
    folder.mkdir(parents=True, exist_ok=True)
    step = StepTimer(folder / "timings.json")
    nn = NnUNet(
        raw=raw_dir(root),
        results=root / "nnUNet_results" / f"seed{seed}",
        device=cfg.device,
        threads=1,
        seed=seed,
        log_dir=root / "logs" / f"seed{seed}",
    )
    model = nn.model_folder(dataset, cfg.trainer) / "fold_0" / "checkpoint_final.pth"
    if not model.is_file():
        step("train", lambda: nn.train(dataset, cfg.trainer, fold=0))
    pred = folder / "predictions"
    images = test_images_dir(root, d, cfg.test_subset)
    if not (folder / "predicted.json").is_file():
        if pred.exists():
            shutil.rmtree(pred)
        step("predict", lambda: nn.predict(images, pred, dataset, cfg.trainer, fold=0, tta=cfg.tta))
        atomic_write_json(folder / "predicted.json", {"n": len(list(pred.glob("*.nii.gz")))})
    out = folder / "evaluation"
    if not (out / "metrics_summary.json").is_file():
        step(
            "evaluate",
            lambda: evaluation.evaluate(
                pred, test_dataset_dir(root, d), out, subset=cfg.test_subset, overlays=False, progress=False
            ),
        )
    record = {"seed": seed, "timings": step.timings, "evaluation": str(out)}
    atomic_write_json(folder / "result.json", record)
    return record


def _count_training(dataset: Path) -> int | None:
    splits = dataset / "splits_final.json"
    if not splits.is_file():
        return None
    return len(read_json(splits)[0]["train"])
