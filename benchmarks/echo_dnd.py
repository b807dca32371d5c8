#!/usr/bin/env python
"""Echo-DND performance benchmark (issue 4): network cost against the machine's matmul peak, sampling steps vs Dice.

Usage::

    python benchmarks/echo_dnd.py --out benchmarks/results/echo_dnd.json [--weights PATH] [--quick]

Measures, and writes as one JSON file (atomically):

1. the fp32 matmul peak of this machine (best of repeated ``torch.mm`` of square matrices), in the same run;
2. per network configuration (``paper``: C = 128 at 256 x 256; ``tiny``: the demo network at 64 x 64): parameters,
   GFLOP per network evaluation counted by ``torch.utils.flop_counter`` (one sampling step = one GNEM call and one
   BNEM call at batch 1; the conditioner, run once per image, is counted apart; counted on meta tensors, where
   attention decomposes into counted matmuls, whereas on CPU tensors the fused attention kernel goes uncounted),
   milliseconds per evaluation (median), achieved GFLOP/s and its fraction of the matmul peak (of the run's and of
   one measured in the same process right after the evaluations), and the peak resident memory of a fresh process
   that builds the network and runs the evaluations (``VmHWM``; on CUDA, ``max_memory_allocated``);
3. paper-scale inference time per image with 10 steps and one sample (the sampler end to end: conditioner, 10 steps,
   STAPLE, post-processing; untrained weights, the cost does not depend on them);
4. for the demo checkpoint (``--weights``, default ``bundles/echo_dnd/models/model.pt``) on a phantom test set: mean
   Dice of the LV in the images' own geometry and seconds per image at 1000, 100, 50, 20, 10 and 5 sampling steps.
   The test set is the test split (``imagesTs``) of ``--dataset_dir``, or else a freshly generated phantom
   (``--phantom_seed``, a seed the demo training did not use; every case is unseen).

Targets (issue 4), judged in the JSON's ``targets``: the paper-scale network at >= 50 % of the matmul peak on CPU;
Dice at 10 steps within 0.01 of Dice at 1000 steps; paper-scale inference with 10 steps and one sample in < 90 s per
image on 2 CPU cores.

The Dice study runs the bundle's sampler with 3 samples per chain (its default; ``QUICK``: the same) over the
sampler seeds of the profile (``FULL``: 0, 1, 2) and reports, per step count, the fused (STAPLE) mask's mean Dice and
each chain's mean member Dice (from ``{case}_samples.nii.gz``), each with its spread (max - min) across the seeds.
``--steps_only``: that study alone at 20, 10 and 5 steps on 6 unseen phantom patients (a CPU run):

    OMP_NUM_THREADS=1 python benchmarks/echo_dnd.py --steps_only --threads 1 \
        --out benchmarks/results/echo_dnd_steps.json

``--quick`` (CPU, minutes): one timed paper-scale evaluation, no paper-scale end-to-end run (estimated from the
parts), 2 phantom patients and 10, 5 steps; without the demo weights it falls back to an untrained tiny model
(Dice then means nothing; the JSON says so).
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
import concurrent.futures  # noqa: E402
import multiprocessing  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402

from echogains.utils import EchoDataError, atomic_write_json, get_logger  # noqa: E402

if TYPE_CHECKING:
    from scripts import EchoDNDConfig

__all__ = [
    "Profile",
    "QUICK",
    "FULL",
    "STEPS",
    "machine_info",
    "matmul_peak",
    "network_flops",
    "time_network",
    "measure_network",
    "time_inference",
    "dice_vs_steps",
    "judge_targets",
    "run_benchmark",
    "main",
]

log = get_logger("echo_dnd.benchmark")

DEFAULT_WEIGHTS = BUNDLE_ROOT / "models" / "model.pt"


@dataclass(frozen=True)
class Profile:
    """How much to measure.

    Args:
        name: ``full`` or ``quick``.
        matmul_size: side of the square matrices of the peak measurement.
        matmul_repeats: timed ``torch.mm`` calls (the best counts).
        tiny_repeats / paper_repeats: timed network evaluations (median), after one warm-up.
        paper_end_to_end: run the paper-scale sampler end to end (else estimate it from the parts).
        phantom_patients: patients of the generated phantom test set (4 images each).
        steps: sampling step counts of the Dice study.
        seeds: sampler seeds of the Dice study (its spread across them is reported).
        ensemble: samples per chain in the Dice study (the bundle's default is 3).
        dice_only: run only the Dice study (no timing of the networks and of the paper-scale sampler).
    """

    name: str
    matmul_size: int
    matmul_repeats: int
    tiny_repeats: int
    paper_repeats: int
    paper_end_to_end: bool
    phantom_patients: int
    steps: tuple[int, ...]
    seeds: tuple[int, ...] = (0,)
    ensemble: int = 3
    dice_only: bool = False


FULL = Profile("full", 2048, 10, 20, 3, True, 10, (1000, 100, 50, 20, 10, 5), (0, 1, 2))
QUICK = Profile("quick", 1024, 10, 5, 1, False, 2, (10, 5))
#: The few-step Dice study alone, per chain and fused over 3 seeds, on 6 unseen phantom patients (a CPU run).
STEPS = Profile("steps", 1024, 1, 1, 1, False, 6, (20, 10, 5), (0, 1, 2), dice_only=True)

#: Issue 4 targets.
TARGET_PEAK_FRACTION = 0.5
TARGET_DICE_GAP = 0.01
TARGET_PAPER_SECONDS = 90.0


# --- machine -----------------------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """CPU/GPU, thread and load figures that qualify the timings."""
    cuda = torch.cuda.is_available()
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_device": torch.cuda.get_device_name(0) if cuda else None,
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(fn: Callable[[], Any], repeats: int, device: torch.device, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def matmul_peak(size: int, repeats: int, device: str = "cpu") -> dict[str, Any]:
    """Best achieved fp32 GFLOP/s of ``torch.mm`` on ``size x size`` matrices (2 n^3 FLOP per product)."""
    dev = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(dev)
    b = torch.randn(size, size, generator=gen).to(dev)
    times = _median_seconds(lambda: torch.mm(a, b), repeats, dev)
    best = min(times)
    return {"size": size, "best_s": best, "gflops": 2.0 * size**3 / best / 1e9, "repeats": len(times)}


# --- one network evaluation ------------------------------------------------------------------------------------
def _config(name: str) -> EchoDNDConfig:
    from scripts import EchoDNDConfig

    return EchoDNDConfig.paper() if name == "paper" else EchoDNDConfig.tiny(64)


def network_flops(name: str) -> dict[str, float]:
    """GFLOP of the conditioner (+ SCC head) and of one GNEM and one BNEM call at batch 1 (meta tensors, no compute)."""
    from scripts import Condition, EchoDND
    from torch.utils.flop_counter import FlopCounterMode

    config = _config(name)
    with torch.device("meta"):
        model = EchoDND(config)
    size = config.image_size
    x = torch.zeros(1, 1, size, size, device="meta")
    t = torch.full((1,), config.num_train_timesteps // 2, dtype=torch.long, device="meta")
    counts: dict[str, float] = {}
    with FlopCounterMode(display=False) as counter:
        cond = Condition(x, list(model.conditioner(x)))  # bypasses the finiteness check (no values on meta)
        model.scc(cond)
    counts["conditioner_gflop"] = counter.get_total_flops() / 1e9
    for part in ("gnem", "bnem"):
        with FlopCounterMode(display=False) as counter:
            getattr(model, part)(x, t, cond)
        counts[f"{part}_gflop"] = counter.get_total_flops() / 1e9
    counts["evaluation_gflop"] = counts["gnem_gflop"] + counts["bnem_gflop"]
    return counts


def _peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024, "VmHWM (fresh process)"
    except (OSError, ValueError, IndexError):
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "ru_maxrss"


def time_network(
    name: str, repeats: int, device: str, threads: int, seed: int = 0, matmul_size: int = 1024
) -> dict[str, Any]:
    """Milliseconds per evaluation (GNEM + BNEM at batch 1, condition precomputed), the peak memory, and the matmul
    peak measured in the same process right after (so that a load change on a shared machine hits both alike)."""
    from scripts import EchoDND

    torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(seed)
    model = EchoDND(_config(name)).to(dev).eval()
    size = model.config.image_size
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 1, size, size, generator=gen).to(dev)
    x = torch.randn(1, 1, size, size, generator=gen).to(dev)
    t = torch.full((1,), model.config.num_train_timesteps // 2, dtype=torch.long, device=dev)
    with torch.no_grad():
        cond_times = _median_seconds(lambda: model.condition(image), 1, dev, warmup=0)
        cond = model.condition(image)
        times = _median_seconds(lambda: (model.gnem(x, t, cond), model.bnem(x, t, cond)), repeats, dev)
    peak, source = _peak_memory_mb(dev)
    local_peak = matmul_peak(matmul_size, 5, device)["gflops"]
    return {
        "matmul_peak_gflops_same_process": local_peak,
        "ms_per_evaluation": 1000 * statistics.median(times),
        "ms_all": [1000 * s for s in times],
        "conditioner_ms": 1000 * cond_times[0],
        "peak_memory_mb": peak,
        "peak_memory_source": source,
        "threads": threads,
    }


def _in_fresh_process(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """Run ``fn`` in a spawned interpreter (its peak memory is its own)."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result()


def measure_network(
    name: str, repeats: int, device: str, threads: int, peak_gflops: float, matmul_size: int = 1024
) -> dict[str, Any]:
    """Parameters, GFLOP per evaluation, ms per evaluation, GFLOP/s, fraction of the matmul peak, peak memory."""
    from scripts import EchoDND, count_parameters

    flops = network_flops(name)
    with torch.device("meta"):  # counting needs no memory
        counts = count_parameters(EchoDND(_config(name)))
    timing = _in_fresh_process(time_network, name, repeats, device, threads, 0, matmul_size)
    achieved = flops["evaluation_gflop"] / (timing["ms_per_evaluation"] / 1000)
    return {
        "config": name,
        "image_size": _config(name).image_size,
        "parameters": counts,
        **flops,
        **timing,
        "achieved_gflops": achieved,
        "fraction_of_matmul_peak": achieved / peak_gflops,
        "fraction_of_matmul_peak_same_process": achieved / timing["matmul_peak_gflops_same_process"],
    }


# --- inference -------------------------------------------------------------------------------------------------
def time_inference(name: str, steps: int, device: str, threads: int, seed: int = 0) -> dict[str, Any]:
    """Seconds for one image through the sampler (conditioner, ``steps`` steps of both chains, STAPLE, cleanup)."""
    from scripts import EchoDND, EchoDNDSampler

    torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(seed)
    model = EchoDND(_config(name)).to(dev).eval()
    size = model.config.image_size
    image = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(seed)).to(dev)
    sampler = EchoDNDSampler(num_steps=steps, ensemble=1)
    times = _median_seconds(lambda: sampler(model, image, torch.Generator().manual_seed(seed)), 1, dev, warmup=0)
    return {"config": name, "steps": steps, "ensemble": 1, "seconds_per_image": times[0], "threads": threads}


def _phantom_test_set(work: Path, patients: int, seed: int) -> tuple[Path, str]:
    from echogains.data.phantom import make_phantom

    root = make_phantom(
        work / "Dataset990_EchoDNDBench", n_patients=patients, layout="nnunet", seed=seed, labels="lv", progress=False
    )
    return Path(root), "all"


def _load_weights(weights: Path | None, quick: bool, device: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    from scripts import EchoDND, EchoDNDConfig
    from scripts.infer import file_sha256
    from scripts.train import load_model

    path = weights or DEFAULT_WEIGHTS
    if path.is_file():
        return load_model(path, device), {"path": str(path), "sha256": file_sha256(path), "trained": True}
    if weights is not None or not quick:
        raise EchoDataError(path, "model weights not found (the demo weights land at bundles/echo_dnd/models/model.pt)")
    torch.manual_seed(0)
    model = EchoDND(EchoDNDConfig.tiny(64)).to(device).eval()
    return model, {
        "path": None,
        "trained": False,
        "note": "demo weights missing: untrained tiny model, Dice is meaningless (timing only)",
    }


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = float(pred.sum() + truth.sum())
    return 1.0 if total == 0 else 2.0 * float((pred & truth).sum()) / total


def _score(dataset_dir: Path, subset: str, pred_dir: Path) -> list[float]:
    from echogains.data.nnunet import RawDataset

    dataset = RawDataset(dataset_dir)
    lv = dataset.label_value("LV")
    scores = []
    for case in dataset.case_ids(subset):
        truth = sitk.GetArrayFromImage(dataset.read_label(case)) == lv
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_dir / f"{case}.nii.gz"))) == 1
        scores.append(_dice(pred, truth))
    return scores


def _member_dice(dataset_dir: Path, subset: str, pred_dir: Path, record: dict[str, Any]) -> dict[str, list[float]]:
    """Per chain, each image's mean Dice of the chain's members (``{case}_samples.nii.gz``), in input geometry."""
    from echogains.data.nnunet import RawDataset

    dataset = RawDataset(dataset_dir)
    lv = dataset.label_value("LV")
    members = {c["case_id"]: c.get("members", []) for c in record["cases"]}
    out: dict[str, list[float]] = {}
    for case in dataset.case_ids(subset):
        truth = sitk.GetArrayFromImage(dataset.read_label(case)) == lv
        samples = sitk.GetArrayFromImage(sitk.ReadImage(str(pred_dir / f"{case}_samples.nii.gz"))) == 1  # (R, H, W)
        for chain in dict.fromkeys(members[case]):
            scores = [_dice(samples[k], truth) for k, name in enumerate(members[case]) if name == chain]
            out.setdefault(chain, []).append(float(np.mean(scores)))
    return out


def _spread(values: Sequence[float]) -> dict[str, Any]:
    return {"mean_dice": float(np.mean(values)), "per_seed": list(values), "spread": float(max(values) - min(values))}


def dice_vs_steps(
    model: torch.nn.Module,
    dataset_dir: Path,
    subset: str,
    steps: Sequence[int],
    work: Path,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    ensemble: int = 1,
) -> list[dict[str, Any]]:
    """LV Dice (input geometry) and seconds per image of the bundle's inference at each step count.

    For each step count and sampler seed, the fused (STAPLE) mask's Dice per image and each chain's mean member
    Dice per image (from the samples file); per row the mean over the images, averaged over ``seeds`` with the
    spread (max - min) of the per-seed means, fused and per chain. ``dice`` lists the first seed's fused Dice per
    image.

    Args:
        seed: the sampler seed when ``seeds`` is not given.
        seeds: sampler seeds (default ``(seed,)``).
        ensemble: samples per chain.
    """
    from scripts import EchoDNDSampler
    from scripts.infer import EchoDNDInference

    rows = []
    for n in steps:
        fused, chains, seconds, first = [], {}, [], None
        for s in seeds if seeds is not None else (seed,):
            out = work / f"pred_{n}_seed{s}"
            sampler = EchoDNDSampler(num_steps=n, ensemble=ensemble)
            record = EchoDNDInference(model, sampler, dataset_dir, out, subset=subset, seed=s, progress=False).run()
            seconds += [c["seconds"] for c in record["cases"]]
            scores = _score(dataset_dir, subset, out)
            first = scores if first is None else first
            fused.append(float(np.mean(scores)))
            for chain, values in _member_dice(dataset_dir, subset, out, record).items():
                chains.setdefault(chain, []).append(float(np.mean(values)))
        rows.append(
            {
                "steps": n,
                "ensemble": ensemble,
                "mean_dice": float(np.mean(fused)),
                "fused": _spread(fused),
                "chains": {chain: _spread(values) for chain, values in chains.items()},
                "dice": first,
                "seconds_per_image": float(np.mean(seconds)),
                "images": len(first or []),
            }
        )
        log.info("%d steps: Dice %.4f, %.2f s/image", n, rows[-1]["mean_dice"], rows[-1]["seconds_per_image"])
    return rows


# --- targets and the whole run ---------------------------------------------------------------------------------
def judge_targets(result: dict[str, Any]) -> dict[str, Any]:
    """The issue's three targets: measured value, threshold and verdict (``None`` when not measured)."""
    paper = result.get("networks", {}).get("paper", {})
    fraction = paper.get("fraction_of_matmul_peak_same_process")  # peak measured beside it: robust to load drift
    dice = {r["steps"]: r["mean_dice"] for r in result["dice_vs_steps"]}
    gap = abs(dice[10] - dice[1000]) if {10, 1000} <= set(dice) else None
    gap_met = None if gap is None or not result["weights"]["trained"] else gap <= TARGET_DICE_GAP
    inference = result.get("paper_inference", {})
    seconds = inference.get("seconds_per_image")
    return {
        "paper_fraction_of_matmul_peak": {
            "value": fraction,
            "of_run_start_peak": paper.get("fraction_of_matmul_peak"),
            "target": f">= {TARGET_PEAK_FRACTION}",
            "met": None if fraction is None else fraction >= TARGET_PEAK_FRACTION,
        },
        "dice_gap_10_vs_1000_steps": {"value": gap, "target": f"<= {TARGET_DICE_GAP}", "met": gap_met},
        "paper_seconds_per_image_10_steps": {
            "value": seconds,
            "estimated": inference.get("estimated", False),
            "target": f"< {TARGET_PAPER_SECONDS} s on 2 CPU cores",
            "met": None if seconds is None else seconds < TARGET_PAPER_SECONDS,
        },
    }


def _paper_inference(profile: Profile, networks: dict[str, Any], device: str, threads: int) -> dict[str, Any]:
    if profile.paper_end_to_end:
        return _in_fresh_process(time_inference, "paper", 10, device, threads)
    paper = networks["paper"]  # conditioner once + 10 evaluations; STAPLE and cleanup are small at one sample
    seconds = (paper["conditioner_ms"] + 10 * paper["ms_per_evaluation"]) / 1000
    return {
        "config": "paper",
        "steps": 10,
        "ensemble": 1,
        "seconds_per_image": seconds,
        "estimated": True,
        "threads": threads,
    }


def run_benchmark(
    out: str | os.PathLike,
    profile: Profile,
    weights: str | os.PathLike | None = None,
    dataset_dir: str | os.PathLike | None = None,
    device: str = "cpu",
    threads: int | None = None,
    phantom_seed: int = 2026,
    seed: int = 0,
) -> dict[str, Any]:
    """Run every measurement of ``profile`` and write the JSON to ``out`` (atomically).

    Args:
        out: JSON file.
        profile: :data:`FULL` or :data:`QUICK`.
        weights: demo checkpoint for the Dice study (default: the bundle's ``models/model.pt``).
        dataset_dir: nnU-Net raw dataset whose ``imagesTs`` are the test set (default: a fresh phantom).
        device: ``cpu`` or ``cuda``.
        threads: torch threads (default: torch's default, all usable cores).
        phantom_seed: seed of the generated phantom test set.
        seed: sampler and input seed.

    Raises:
        EchoDataError: bad arguments or missing weights, before anything is written.
    """
    out = Path(out)
    if out.is_dir():
        raise EchoDataError(out, "--out is a folder; give a JSON file path")
    threads = threads or torch.get_num_threads()
    if threads < 1:
        raise EchoDataError("--threads", f"must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    started = time.perf_counter()
    model, weights_info = _load_weights(Path(weights) if weights else None, profile.name == "quick", device)
    result: dict[str, Any] = {
        "benchmark": "echo_dnd",
        "mode": profile.name,
        "profile": asdict(profile),
        "machine": machine_info(),
        "device": device,
        "threads": threads,
        "weights": weights_info,
    }
    if not profile.dice_only:
        result["matmul_peak"] = matmul_peak(profile.matmul_size, profile.matmul_repeats, device)
        peak = result["matmul_peak"]["gflops"]
        result["networks"] = {
            name: measure_network(name, repeats, device, threads, peak, profile.matmul_size)
            for name, repeats in (("tiny", profile.tiny_repeats), ("paper", profile.paper_repeats))
        }
        result["paper_inference"] = _paper_inference(profile, result["networks"], device, threads)
    with tempfile.TemporaryDirectory(prefix="echo_dnd_bench_") as tmp:
        if dataset_dir:
            test_set, subset = Path(dataset_dir), "Ts"
        else:
            test_set, subset = _phantom_test_set(Path(tmp), profile.phantom_patients, phantom_seed)
        result["test_set"] = {
            "dataset": str(dataset_dir) if dataset_dir else f"phantom seed {phantom_seed}",
            "subset": subset,
        }
        result["dice_vs_steps"] = dice_vs_steps(
            model, test_set, subset, profile.steps, Path(tmp), seed, profile.seeds, profile.ensemble
        )
    result["targets"] = judge_targets(result)
    result["machine"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["total_s"] = time.perf_counter() - started
    atomic_write_json(out, result)
    return result


def _summary(result: dict[str, Any]) -> str:
    lines = [f"Echo-DND benchmark ({result['mode']}, {result['device']}, {result['threads']} thread(s))"]
    if "matmul_peak" in result:
        peak = result["matmul_peak"]
        lines[0] += f"; fp32 matmul peak {peak['gflops']:.1f} GFLOP/s (n = {peak['size']})"
    for name, n in result.get("networks", {}).items():
        lines.append(
            f"  {name:5s} {n['image_size']}^2: {n['parameters']['total'] / 1e6:.2f} M params, "
            f"{n['evaluation_gflop']:.2f} GFLOP/evaluation (+{n['conditioner_gflop']:.2f} once), "
            f"{n['ms_per_evaluation']:.1f} ms/evaluation, {n['achieved_gflops']:.1f} GFLOP/s = "
            f"{100 * n['fraction_of_matmul_peak']:.0f} % of peak "
            f"({100 * n['fraction_of_matmul_peak_same_process']:.0f} % of the peak measured beside it), "
            f"peak memory {n['peak_memory_mb']:.0f} MB"
        )
    inf = result.get("paper_inference")
    if inf:
        lines.append(
            f"  paper 10 steps, 1 sample: {inf['seconds_per_image']:.1f} s/image"
            f"{' (estimated from the parts)' if inf.get('estimated') else ''}"
        )
    trained = "" if result["weights"]["trained"] else " [untrained weights: Dice meaningless]"
    for row in result["dice_vs_steps"]:
        chains = ", ".join(
            f"{c} {v['mean_dice']:.4f} (spread {v['spread']:.4f})" for c, v in row.get("chains", {}).items()
        )
        lines.append(
            f"  {row['steps']:5d} steps: Dice {row['mean_dice']:.4f}"
            f"{' (spread ' + format(row['fused']['spread'], '.4f') + ')' if 'fused' in row else ''}"
            f"{'; members: ' + chains if chains else ''}, {row['seconds_per_image']:.3f} s/image"
            f" ({row['images']} images){trained}"
        )
    verdicts = {True: "met", False: "NOT met", None: "not judged"}
    for key, t in result["targets"].items():
        value = "n/a" if t["value"] is None else f"{t['value']:.4g}"
        lines.append(f"  target {key}: {value} (target {t['target']}): {verdicts[t['met']]}")
    return "\n".join(lines)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/echo_dnd.json", help="JSON file to write")
    parser.add_argument("--quick", action="store_true", help="reduced CPU run (see the module docstring)")
    parser.add_argument(
        "--steps_only", action="store_true", help="only the few-step Dice study, per chain and fused over 3 seeds"
    )
    parser.add_argument("--weights", default=None, help="demo checkpoint (default: bundles/echo_dnd/models/model.pt)")
    parser.add_argument("--dataset_dir", default=None, help="nnU-Net raw dataset whose imagesTs are the test set")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all usable cores)")
    parser.add_argument("--phantom_seed", type=int, default=2026, help="seed of the generated phantom test set")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    args = _parse(argv)
    return _common.run_main(
        lambda: run_benchmark(
            args.out,
            STEPS if args.steps_only else QUICK if args.quick else FULL,
            args.weights,
            args.dataset_dir,
            args.device,
            args.threads,
            args.phantom_seed,
            args.seed,
        ),
        _summary,
        args.out,
    )


if __name__ == "__main__":
    raise SystemExit(main())
