#!/usr/bin/env python
"""Why the Gaussian chain of the Echo-DND demo weights is weaker than the Bernoulli chain (issue 13, item 4).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/echo_dnd_chains.py --out benchmarks/results/echo_dnd_chains.json \
        [--weights bundles/echo_dnd/models/model.pt] [--patients 6] [--phantom_seed 2026]

On unseen phantom patients (a fresh phantom, ``--phantom_seed``; 4 images per patient, LV masks in the 64 x 64
model frame), with the weights' own chains and no STAPLE, writes as one JSON file (atomically):

1. ``x0_vs_t``: for every t of a grid over 0..999, each chain's one-step estimate of x_0 given the *true* noisy mask
   x_t ~ q(x_t | x_0) (``--draws`` noise draws per image): Dice of GNEM's x_0_hat > 0 (from its epsilon,
   x_0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t), or its x_0 / v prediction when the weights were trained
   with ``gaussian_prediction``) and of BNEM's sigmoid(logits) > 0.5; the predicted
   foreground fraction against the true one; the Dice of thresholding x_t itself (what the noisy input alone gives);
   GNEM's epsilon MSE and its x_0_hat MSE (the epsilon loss weights an x_0 error by abar_t / (1 - abar_t), printed as
   ``snr``); and the x_0 Dice that a perfect epsilon would give at the same float32 precision (1.0: the
   parameterisation itself is exact, errors come from the network);
2. ``chain_vs_steps``: Dice of each chain's sample (Gaussian DDIM eta = 0 / Bernoulli DDIM, one sample, ``--seeds``
   seeds, mean and max - min of the mean over seeds) against the number of sampling steps, on the sampler's grid
   (``linear``: round(linspace(T - 1, 0, n)), as ``scripts.common.timestep_pairs``), and at a few step counts on a
   ``quadratic`` grid (DDIM's alternative, more steps at low noise) and on ``truncated600`` (linear from t = 600,
   the chain started from the prior there: it skips the steps where GNEM's x_0 estimate fails);
3. ``trajectory``: along the 10-step linear Gaussian chain, per step the Dice and foreground fraction of that step's
   x_0 estimate, and the Dice of GNEM's estimate when the chain's x_t is replaced by the true noisy mask at the same t
   (whether the chain has left the noisy-mask distribution the network was trained on).

``--quick``: 2 patients, 1 seed, a short grid (a smoke run, minutes).
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

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from echogains.utils import atomic_write_json, get_logger  # noqa: E402

__all__ = [
    "dice",
    "linear_pairs",
    "quadratic_pairs",
    "truncated_pairs",
    "x0_vs_t",
    "sample_chain",
    "chain_vs_steps",
    "trajectory",
    "run",
    "main",
]

log = get_logger("echo_dnd.benchmark.chains")

T_GRID = (0, 10, 25, 50, 100, 150, 200, 250, 300, 400, 500, 600, 700, 800, 900, 950, 999)
STEPS = (1, 2, 5, 10, 20, 50, 100)


def dice(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per-image Dice of binary ``(B, 1, H, W)`` masks (1 when both are empty)."""
    p, t = pred.flatten(1).float(), truth.flatten(1).float()
    inter, total = (p * t).sum(1), p.sum(1) + t.sum(1)
    return torch.where(total > 0, 2 * inter / total.clamp_min(1e-8), torch.ones_like(total))


def linear_pairs(num_train_timesteps: int, n: int) -> list[tuple[int, int]]:
    """The sampler's grid (``scripts.common.timestep_pairs``)."""
    from scripts.common import timestep_pairs

    return timestep_pairs(num_train_timesteps, n)


def quadratic_pairs(num_train_timesteps: int, n: int) -> list[tuple[int, int]]:
    """DDIM's quadratic spacing: t_i = round((T - 1) (i / (n - 1))^2), duplicates dropped, then to -1."""
    if n == 1:
        return [(num_train_timesteps - 1, -1)]
    grid = sorted({round((num_train_timesteps - 1) * (i / (n - 1)) ** 2) for i in range(n)}, reverse=True)
    return list(zip(grid, grid[1:] + [-1]))


def truncated_pairs(num_train_timesteps: int, n: int, start: int = 600) -> list[tuple[int, int]]:
    """A linear grid that starts at ``start`` instead of T - 1 (the chain's x starts from the prior there)."""
    grid = torch.linspace(start, 0, n, dtype=torch.float64).round().long().tolist() if n > 1 else [start]
    return list(zip(grid, grid[1:] + [-1]))


def _load(dataset_dir: Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from scripts.data import load_lv_cases

    _, images, masks = load_lv_cases(str(dataset_dir), None, size, subset="all")
    return images, masks


@torch.no_grad()
def x0_vs_t(
    model: Any, images: torch.Tensor, masks: torch.Tensor, t_grid: Sequence[int], draws: int, seed: int = 0
) -> list[dict[str, Any]]:
    """One-step x_0 estimates of both chains given the true noisy mask, per t (see the module docstring, 1.)."""
    from scripts import build_processes

    gaussian, bernoulli = build_processes(model.config)
    cond = model.condition(images)
    x0 = 2 * masks - 1
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for t in t_grid:
        tb = torch.full((images.shape[0],), t, dtype=torch.long)
        abar = float(gaussian.alphas_cumprod[t])
        acc: dict[str, list[torch.Tensor]] = {
            k: [] for k in ("g", "g_fg", "g_input", "g_perfect", "eps_mse", "x0_mse", "b", "b_fg", "b_input")
        }
        for _ in range(draws):
            eps = torch.randn(masks.shape, generator=gen)
            uniform = torch.rand(masks.shape, generator=gen)
            if model.gnem is not None:
                x_t = gaussian.q_sample(x0, tb, eps)
                eps_hat, x0_hat = gaussian.split(model.gnem(x_t, tb, cond)[:, :1], x_t, tb)
                acc["g"].append(dice(x0_hat > 0, masks))
                acc["g_fg"].append((x0_hat > 0).float().flatten(1).mean(1))
                acc["g_input"].append(dice(x_t > 0, masks))
                acc["g_perfect"].append(dice(gaussian.predict_x0(x_t, tb, eps) > 0, masks))
                acc["eps_mse"].append((eps_hat - eps).square().flatten(1).mean(1))
                acc["x0_mse"].append((x0_hat.clamp(-1, 1) - x0).square().flatten(1).mean(1))
            if model.bnem is not None:
                x_b = bernoulli.q_sample(masks, tb, uniform)
                p = torch.sigmoid(model.bnem(x_b, tb, cond))
                acc["b"].append(dice(p > 0.5, masks))
                acc["b_fg"].append((p > 0.5).float().flatten(1).mean(1))
                acc["b_input"].append(dice(x_b > 0.5, masks))
        mean = {k: float(torch.cat(v).mean()) for k, v in acc.items() if v}
        rows.append(
            {
                "t": t,
                "alpha_bar": abar,
                "snr": abar / (1 - abar),
                "gaussian_x0_dice": mean.get("g"),
                "gaussian_foreground_fraction": mean.get("g_fg"),
                "gaussian_input_dice": mean.get("g_input"),
                "gaussian_perfect_eps_dice": mean.get("g_perfect"),
                "gaussian_eps_mse": mean.get("eps_mse"),
                "gaussian_x0_mse": mean.get("x0_mse"),
                "bernoulli_x0_dice": mean.get("b"),
                "bernoulli_foreground_fraction": mean.get("b_fg"),
                "bernoulli_input_dice": mean.get("b_input"),
                "true_foreground_fraction": float(masks.mean()),
            }
        )
        log.info("t=%d: %s", t, {k: round(v, 3) for k, v in rows[-1].items() if isinstance(v, float)})
    return rows


@torch.no_grad()
def sample_chain(
    model: Any,
    cond: Any,
    kind: str,
    pairs: Sequence[tuple[int, int]],
    gen: torch.Generator,
    record: bool = False,
    truth: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """One sample of one chain (``gaussian``: DDIM eta 0 with the sampler's clipping; ``bernoulli``: BDDIM).

    Returns the binary mask and, with ``record``, per step the Dice/foreground of that step's x_0 estimate and of
    GNEM's estimate from the true noisy mask at the same t (``truth`` needed)."""
    from scripts import build_processes

    gaussian, bernoulli = build_processes(model.config)
    image = cond.image
    shape = (image.shape[0], 1, *image.shape[-2:])
    steps: list[dict[str, Any]] = []
    if kind == "gaussian":
        x = torch.randn(shape, generator=gen)
        x0 = x
        for t, t_prev in pairs:
            tb = torch.full((shape[0],), t, dtype=torch.long)
            eps = model.gnem(x, tb, cond)[:, :1]
            x, x0 = gaussian.ddim_step(eps, x, t, t_prev)
            if record and truth is not None:
                true_xt = gaussian.q_sample(2 * truth - 1, tb, torch.randn(shape, generator=gen))
                from_true = gaussian.split(model.gnem(true_xt, tb, cond)[:, :1], true_xt, tb)[1]
                steps.append(
                    {
                        "t": t,
                        "x0_dice": float(dice(x0 > 0, truth).mean()),
                        "x0_foreground_fraction": float((x0 > 0).float().mean()),
                        "from_true_noisy_mask_dice": float(dice(from_true > 0, truth).mean()),
                    }
                )
        return (x0 > 0).float(), steps
    x = (torch.rand(shape, generator=gen) < 0.5).float()
    p = x
    for t, t_prev in pairs:
        tb = torch.full((shape[0],), t, dtype=torch.long)
        logits = model.bnem(x, tb, cond)
        if t_prev >= 0:
            x, p = bernoulli.ddim_step(logits, x, t, t_prev, torch.rand(shape, generator=gen))
        else:
            p = bernoulli.ddim_probs(torch.sigmoid(logits), x, t, t_prev)
    return (p > 0.5).float(), steps


GRIDS = {"linear": linear_pairs, "quadratic": quadratic_pairs, "truncated600": truncated_pairs}


def chain_vs_steps(
    model: Any,
    images: torch.Tensor,
    masks: torch.Tensor,
    steps: Sequence[int],
    seeds: int,
    grids: Sequence[str],
    grid_steps: Sequence[int],
) -> list[dict[str, Any]]:
    """Per chain, grid and step count: mean Dice per seed, its mean, and max - min over seeds (the ``linear`` grid
    at ``steps``, the other grids at ``grid_steps``)."""
    cond = model.condition(images)
    kinds = [k for k, net in (("gaussian", model.gnem), ("bernoulli", model.bnem)) if net is not None]
    make = GRIDS
    rows = []
    for grid in grids:
        for n in steps if grid == "linear" else grid_steps:
            pairs = make[grid](model.config.num_train_timesteps, n)
            for kind in kinds:
                per_seed, fg = [], []
                start = time.perf_counter()
                for seed in range(seeds):
                    mask, _ = sample_chain(model, cond, kind, pairs, torch.Generator().manual_seed(seed))
                    per_seed.append(float(dice(mask, masks).mean()))
                    fg.append(float(mask.mean()))
                rows.append(
                    {
                        "grid": grid,
                        "steps": n,
                        "chain": kind,
                        "timesteps": [a for a, _ in pairs],
                        "dice_per_seed": per_seed,
                        "mean_dice": sum(per_seed) / len(per_seed),
                        "spread": max(per_seed) - min(per_seed),
                        "foreground_fraction": sum(fg) / len(fg),
                        "true_foreground_fraction": float(masks.mean()),
                        "seconds": time.perf_counter() - start,
                    }
                )
                log.info(
                    "%s grid, %d steps, %s: Dice %.3f (spread %.3f)",
                    grid,
                    n,
                    kind,
                    rows[-1]["mean_dice"],
                    rows[-1]["spread"],
                )
    return rows


def trajectory(model: Any, images: torch.Tensor, masks: torch.Tensor, steps: int = 10, seed: int = 0) -> list[dict]:
    """Per step of the linear Gaussian chain: its x_0 estimate against the estimate from the true noisy mask."""
    if model.gnem is None:
        return []
    cond = model.condition(images)
    pairs = linear_pairs(model.config.num_train_timesteps, steps)
    _, rows = sample_chain(
        model, cond, "gaussian", pairs, torch.Generator().manual_seed(seed), record=True, truth=masks
    )
    return rows


def run(
    out: Path,
    weights: Path,
    patients: int,
    phantom_seed: int,
    draws: int,
    seeds: int,
    t_grid: Sequence[int],
    steps: Sequence[int],
    grids: Sequence[str],
    grid_steps: Sequence[int],
    threads: int,
) -> dict[str, Any]:
    from scripts.infer import file_sha256
    from scripts.train import load_model

    from echogains.data.phantom import make_phantom

    torch.set_num_threads(threads)
    started = time.perf_counter()
    load = list(os.getloadavg())
    model = load_model(weights)
    with tempfile.TemporaryDirectory() as tmp:
        ds = make_phantom(
            Path(tmp) / "Dataset991_Chains",
            n_patients=patients,
            layout="nnunet",
            seed=phantom_seed,
            labels="lv,myo",
            progress=False,
        )
        images, masks = _load(Path(ds), model.config.image_size)
    log.info("%d images at %d px", images.shape[0], images.shape[-1])
    result: dict[str, Any] = {
        "benchmark": "echo_dnd_chains",
        "command": " ".join(["python", "benchmarks/echo_dnd_chains.py", *sys.argv[1:]]),
        "weights": {
            "path": str(weights.resolve().relative_to(REPO_ROOT))
            if weights.resolve().is_relative_to(REPO_ROOT)
            else str(weights),
            "sha256": file_sha256(weights),
            "config": model.config.to_dict(),
            "ablation": getattr(model, "ablation", "full"),
        },
        "test_set": {
            "phantom_seed": phantom_seed,
            "patients": patients,
            "images": int(images.shape[0]),
            "size": int(images.shape[-1]),
            "true_foreground_fraction": float(masks.mean()),
        },
        "machine": {
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": threads,
            "load_average_1_5_15": load,
        },
    }
    result["x0_vs_t"] = x0_vs_t(model, images, masks, t_grid, draws)
    result["trajectory"] = trajectory(model, images, masks)
    result["chain_vs_steps"] = chain_vs_steps(model, images, masks, steps, seeds, grids, grid_steps)
    result["machine"]["load_average_at_end"] = list(os.getloadavg())
    result["total_s"] = time.perf_counter() - started
    atomic_write_json(out, result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "echo_dnd_chains.json")
    parser.add_argument("--weights", type=Path, default=BUNDLE_ROOT / "models" / "model.pt")
    parser.add_argument("--patients", type=int, default=6)
    parser.add_argument("--phantom_seed", type=int, default=2026)
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=str, default=",".join(map(str, STEPS)))
    parser.add_argument("--grids", type=str, default=",".join(GRIDS))
    parser.add_argument("--grid_steps", type=str, default="10,20", help="step counts of the non-linear grids")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    steps = [int(s) for s in args.steps.split(",")]
    grid_steps = [int(s) for s in args.grid_steps.split(",")]
    t_grid: Sequence[int] = T_GRID
    if args.quick:
        args.patients, args.seeds, args.draws, steps, grid_steps, t_grid = 2, 1, 1, [1, 10], [10], (0, 500, 999)
    result = run(
        args.out,
        args.weights,
        args.patients,
        args.phantom_seed,
        args.draws,
        args.seeds,
        t_grid,
        steps,
        [g.strip() for g in args.grids.split(",")],
        grid_steps,
        args.threads,
    )
    for r in result["x0_vs_t"]:
        print(
            f"t={r['t']:>4}: GNEM x0 Dice {r['gaussian_x0_dice']:.3f} (input {r['gaussian_input_dice']:.3f}), "
            f"BNEM {r['bernoulli_x0_dice']:.3f}"
        )
    for r in result["chain_vs_steps"]:
        print(f"{r['grid']:>9} {r['steps']:>4} steps {r['chain']:>9}: Dice {r['mean_dice']:.3f} ± {r['spread']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
