#!/usr/bin/env python
"""Gaussian-only Echo-DND trained with the paper's epsilon-prediction against an x_0 / v-prediction option.

Usage (one prediction type per call, so that each fits a few minutes on 2 cores; results merge into one file)::

    OMP_NUM_THREADS=1 python benchmarks/echo_dnd_gaussian_prediction.py --prediction epsilon \
        --out benchmarks/results/echo_dnd_gaussian_prediction.json
    OMP_NUM_THREADS=1 python benchmarks/echo_dnd_gaussian_prediction.py --prediction v_prediction \
        --out benchmarks/results/echo_dnd_gaussian_prediction.json

Each call trains the ``gaussian_only`` ablation of the ``tiny`` network at 64 x 64 with ``EchoDNDTrainer`` (the
quick experiment's budget by default: 400 steps, batch 8, lr 2e-4, seed 0, the paper's augmentations, the
configuration's defaults otherwise) on the demo-weights phantom (60 patients, seed 1000, LV + MYO, fold 0), then
measures on unseen phantom patients (seed 2026) with ``benchmarks/echo_dnd_chains.py``: GNEM's one-step x_0 Dice
given the true noisy mask against t, and the Gaussian chain's Dice at 10 (and 5, 20) DDIM steps over two seeds.
The record for the prediction type replaces its entry under ``runs`` in ``--out`` (written atomically).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:  # imported by path (the tests): the repository root is on sys.path
    from benchmarks import _common
except ImportError:  # run as a script (this folder is sys.path[0]) or loaded by path from another folder
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common  # takes this folder off sys.path again
REPO_ROOT, BUNDLE_ROOT = _common.REPO_ROOT, _common.BUNDLE_ROOT
_common.add_bundle()
sys.path.append(str(_common.HERE))  # echo_dnd_chains, after the packages

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from echogains.utils import atomic_write_json  # noqa: E402

T_GRID = (0, 100, 300, 500, 600, 700, 800, 900, 999)


def run(prediction: str, steps: int, work: Path, seeds: int) -> dict[str, Any]:
    import echo_dnd_chains as chains
    from scripts import EchoDNDConfig
    from scripts.train import EchoDNDTrainer, load_model

    from echogains.data.phantom import make_phantom

    started = time.perf_counter()
    load = list(os.getloadavg())
    train_ds = make_phantom(
        work / "Dataset601_PhantomLV", n_patients=60, layout="nnunet", seed=1000, labels="lv,myo", progress=False
    )
    config = EchoDNDConfig.tiny(64, gaussian_prediction=prediction).to_dict()
    trainer = EchoDNDTrainer(
        str(train_ds),
        str(work / "run"),
        config=config,
        ablation="gaussian_only",
        steps=steps,
        batch_size=8,
        lr=2e-4,
        val_every=0,
        save_every=steps,
        seed=0,
        device="cpu",
        progress=False,
    )
    t0 = time.perf_counter()
    model_path = trainer.run()
    train_s = time.perf_counter() - t0
    model = load_model(model_path)
    test_ds = make_phantom(
        work / "Dataset991_Chains", n_patients=6, layout="nnunet", seed=2026, labels="lv,myo", progress=False
    )
    images, masks = chains._load(Path(test_ds), 64)
    return {
        "prediction": prediction,
        "config": model.config.to_dict(),
        "training": {
            "steps": steps,
            "batch_size": 8,
            "lr": 2e-4,
            "seed": 0,
            "ablation": "gaussian_only",
            "dataset": "phantom 60 patients, seed 1000, fold 0 train",
            "seconds": train_s,
        },
        "test_set": {"phantom_seed": 2026, "patients": 6, "images": int(images.shape[0])},
        "x0_vs_t": chains.x0_vs_t(model, images, masks, T_GRID, draws=2),
        "chain_vs_steps": chains.chain_vs_steps(model, images, masks, (5, 10, 20), seeds, ("linear",), ()),
        "load_average_1_5_15": load,
        "load_average_at_end": list(os.getloadavg()),
        "total_s": time.perf_counter() - started,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prediction", choices=("epsilon", "sample", "v_prediction"), required=True)
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "echo_dnd_gaussian_prediction.json"
    )
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        record = run(args.prediction, args.steps, Path(tmp), args.seeds)
    record["command"] = " ".join(["python", "benchmarks/echo_dnd_gaussian_prediction.py", *(argv or sys.argv[1:])])
    result = (
        json.loads(args.out.read_text())
        if args.out.is_file()
        else {"benchmark": "echo_dnd_gaussian_prediction", "runs": {}}
    )
    result["runs"][args.prediction] = record
    atomic_write_json(args.out, result)
    for r in record["x0_vs_t"]:
        print(f"{args.prediction} t={r['t']:>4}: GNEM x0 Dice {r['gaussian_x0_dice']:.3f}")
    for r in record["chain_vs_steps"]:
        print(f"{args.prediction} {r['steps']:>3} steps: Gaussian chain Dice {r['mean_dice']:.3f} ± {r['spread']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
