#!/usr/bin/env python
"""EchoGAINS performance benchmark (issue 5): RePaint cost, the paper-size network, expansion throughput and memory.

Usage::

    python benchmarks/echogains.py --out benchmarks/results/echogains.json [--model PATH] [--quick]

Measures, and writes as one JSON file (atomically):

1. network evaluations per augmented image (counted by a wrapper around the network) and seconds per image of the
   full RePaint schedule (``sampler="repaint"``, (250, 10, 10)) and of the fast mode, at batch sizes 1 and 5, with
   the demo DDPM (``--model``; default: the committed demo weights when present, else an untrained ``tiny`` network:
   the cost of a network evaluation does not depend on the weights). ``--quick`` stops the full schedule after a
   few evaluations and extrapolates per evaluation (the JSON says so);
2. the paper-size network (config ``paper``, 256 x 256): milliseconds per evaluation at batch 1 with 1 and 2 threads,
   its GFLOP per evaluation and the implied hours per image on this machine;
3. ``expand_dataset`` throughput (augmented images per minute, wall clock) with one shard and with two shard
   processes started together (each process gets ``--threads`` threads);
4. peak resident memory (VmHWM of a fresh process; see ``echogains_expansion._peak_rss_bytes``) of
   ``expand_dataset`` on 10 and 100 source cases (``--quick``: ``--no-repaint``): the expander streams work groups,
   so it should not grow with them.

Machine-independent ratios (fast / full time, 2-shard / 1-shard throughput, mem100 / mem10) are printed and stored.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:  # imported by path (the tests): the repository root is on sys.path
    from benchmarks import _common
except ImportError:  # run as a script (this folder is sys.path[0]) or loaded by path from another folder
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common  # takes this folder off sys.path again
REPO_ROOT = _common.REPO_ROOT

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks import echogains_expansion as expansion  # noqa: E402 - the repository root is on sys.path now
from benchmarks.echogains_expansion import expansion_memory, expansion_throughput, make_source  # noqa: E402
from echogains.utils import EchoDataError, atomic_write_json, get_logger  # noqa: E402

__all__ = [
    "DEFAULT_MODEL_GLOBS",
    "Profile",
    "QUICK",
    "FULL",
    "CountingNetwork",
    "StopSampling",
    "machine_info",
    "resolve_model",
    "count_evaluations",
    "time_sampler",
    "sampler_benchmark",
    "time_network",
    "make_source",
    "expansion_throughput",
    "expansion_memory",
    "ratios",
    "run_benchmark",
    "main",
]

log = get_logger("echogains.benchmarks")

#: Where the committed demo DDPM weights are looked for (first match wins), relative to the repository root.
DEFAULT_MODEL_GLOBS: tuple[str, ...] = (
    "echogains/ddpm/weights/*.pt",
    "echogains/ddpm/weights/*.pth",
    "echogains/weights/*ddpm*.pt",
)


# ----------------------------------------------------------------------------------------------------------------
# Sizes
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """Sizes of one benchmark run.

    Args:
        name: ``quick`` or ``full`` (or a test's own).
        repaint_max_evaluations: stop the full RePaint schedule after this many evaluations and extrapolate
            (``None``: run it to the end).
        fast_max_evaluations: the same for the fast mode.
        batch_sizes: images per RePaint batch.
        paper_config: DDPM config of the "paper-size network" timing.
        paper_threads: torch thread counts of that timing.
        paper_repeats: timed evaluations per thread count (after one warm-up).
        phantom_size: (rows, cols) of the phantom source images.
        throughput_cases: source cases of the throughput dataset.
        throughput_k: augmentations per training case in the throughput run.
        throughput_batch: ``batch_size`` of ``expand_dataset`` in the throughput run.
        throughput_repaint: repaint in the throughput run (``False`` only to test the harness quickly).
        shard_counts: numbers of concurrent shard processes to compare.
        memory_cases: source dataset sizes of the memory runs.
        memory_k: augmentations per training case in the memory runs.
        memory_repaint: repaint in the memory runs (else ``--no-repaint``).
        expansion_schedule: RePaint schedule of the expansions (``None``: the fast mode's default).
    """

    name: str
    repaint_max_evaluations: int | None
    fast_max_evaluations: int | None
    batch_sizes: tuple[int, ...] = (1, 5)
    paper_config: str = "paper"
    paper_threads: tuple[int, ...] = (1, 2)
    paper_repeats: int = 3
    phantom_size: tuple[int, int] = (128, 112)
    throughput_cases: int = 8
    throughput_k: int = 2
    throughput_batch: int = 4
    throughput_repaint: bool = True
    shard_counts: tuple[int, ...] = (1, 2)
    memory_cases: tuple[int, ...] = (10, 100)
    memory_k: int = 2
    memory_repaint: bool = False
    expansion_schedule: tuple[int, int, int] | None = None


#: ``--quick``: a few minutes on two shared CPU cores.
QUICK = Profile(name="quick", repaint_max_evaluations=40, fast_max_evaluations=None, paper_repeats=2)
#: The default: full schedules, paper-like K = 5, repainting in the memory runs.
FULL = Profile(
    name="full",
    repaint_max_evaluations=None,
    fast_max_evaluations=None,
    throughput_cases=24,
    throughput_k=5,
    throughput_batch=10,
    memory_repaint=True,
)


# ----------------------------------------------------------------------------------------------------------------
# Machine and model
# ----------------------------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """CPU count, usable cores, torch threads and versions, load average (the machine may be shared)."""
    import monai

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads_default": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "monai_version": monai.__version__,
        "numpy_version": np.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cuda_available": torch.cuda.is_available(),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _default_model_path() -> Path | None:
    for pattern in DEFAULT_MODEL_GLOBS:
        found = sorted(REPO_ROOT.glob(pattern))
        if found:
            return found[0]
    return None


def _seeded_network(config_name: str, seed: int) -> torch.nn.Module:
    """An untrained network of ``config_name`` with weights drawn from ``seed`` (global RNG state untouched)."""
    from echogains.ddpm.model import build_network, get_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_network(get_config(config_name)).eval()


def resolve_model(model: str | os.PathLike | None, workdir: Path, seed: int = 0) -> tuple[Any, Any, Any, dict]:
    """Load ``model`` (or the demo weights, or an untrained ``tiny`` network saved to ``workdir``).

    Args:
        model: DDPM weights/checkpoint; ``None``: first match of :data:`DEFAULT_MODEL_GLOBS`, else untrained ``tiny``.
        workdir: where an untrained network is saved (the expansion subprocesses load it from there).
        seed: seed of the untrained weights.

    Returns:
        (network, diffusion, config, info); ``info["path"]`` is a weights file the subprocesses can load.

    Raises:
        EchoDataError: ``model`` is missing or not a DDPM weights file.
    """
    from echogains.ddpm.model import count_parameters, get_config, load_ddpm, save_weights

    path = Path(model) if model is not None else _default_model_path()
    if path is not None:
        net, diffusion, cfg = load_ddpm(path)
        source = "file" if model is not None else "demo weights (found by default)"
        note = "weights loaded from the file"
    else:
        cfg = get_config("tiny")
        net = _seeded_network("tiny", seed)
        path = workdir / "untrained_tiny.pt"
        save_weights(path, cfg, net.state_dict())
        net, diffusion, cfg = load_ddpm(path)
        source = "untrained"
        note = (
            "no demo weights found: an untrained 'tiny' network; timings do not depend on the weights "
            f"(searched {list(DEFAULT_MODEL_GLOBS)})"
        )
    info = {
        "source": source,
        "path": str(path),
        "config": cfg.name,
        "image_size": cfg.image_size,
        "parameters": count_parameters(net),
        "num_timesteps": cfg.num_timesteps,
        "note": note,
    }
    return net, diffusion, cfg, info


# ----------------------------------------------------------------------------------------------------------------
# (1) RePaint: network evaluations and time per image
# ----------------------------------------------------------------------------------------------------------------


class StopSampling(Exception):
    """Raised by :class:`CountingNetwork` when its evaluation limit is reached (a truncated, timed run)."""


class CountingNetwork(torch.nn.Module):
    """Wrap a network and count its calls (= network evaluations of every image in the batch).

    Args:
        net: the network, called as ``net(x, timesteps=...)``.
        limit: raise :class:`StopSampling` instead of making call ``limit + 1`` (``None``: no limit).
    """

    def __init__(self, net: torch.nn.Module, limit: int | None = None) -> None:
        super().__init__()
        self.net = net
        self.limit = limit
        self.calls = 0
        self.images = 0

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if self.limit is not None and self.calls >= self.limit:
            raise StopSampling
        self.calls += 1
        self.images += int(x.shape[0])
        return self.net(x, timesteps=timesteps)


class _NullNetwork(torch.nn.Module):
    """Zero eps and variance value: the sampler's own cost, without any network."""

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return torch.zeros((x.shape[0], 2 * x.shape[1], *x.shape[2:]), dtype=x.dtype, device=x.device)


def _inpainting_problem(batch: int, size: int, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [-1, 1] and known masks like an augmentation's: a 30 deg half-angle cone from the top centre."""
    rng = np.random.default_rng(seed)
    image = np.tanh(rng.standard_normal((batch, 1, size, size))).astype(np.float32)
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    angle = np.degrees(np.arctan2(cols - (size - 1) / 2.0, rows + 1.0))
    known = np.broadcast_to(np.abs(angle) <= 30.0, (batch, 1, size, size)).copy()
    return torch.from_numpy(image).to(device), torch.from_numpy(known).to(device)


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _run_repaint(
    net: torch.nn.Module,
    diffusion: Any,
    sampler: str,
    batch: int,
    size: int,
    seed: int,
    device: str,
    schedule: Sequence[int] | None = None,
) -> float:
    """One RePaint run (until the network raises :class:`StopSampling`); returns wall seconds."""
    from echogains.augment.repaint import repaint

    image, known = _inpainting_problem(batch, size, seed, device)
    gens = [torch.Generator().manual_seed(seed * 1000 + i) for i in range(batch)]
    border = max(1, round(10 * size / 256))
    _sync(device)
    start = time.perf_counter()
    try:
        repaint(net, diffusion, image, known, gens, schedule=schedule, border=border, sampler=sampler)
    except StopSampling:
        pass
    _sync(device)
    return time.perf_counter() - start


def count_evaluations(
    diffusion: Any, sampler: str, size: int, schedule: Sequence[int] | None = None, seed: int = 0
) -> dict[str, Any]:
    """Run a whole ``sampler`` schedule with a counting zero network: exact evaluations per image, sampler overhead.

    Args:
        diffusion: the model's training process (respaced inside RePaint).
        sampler: ``repaint`` or ``fast``.
        size: image size in pixels.
        schedule: (t_T, jump_length, jump_n_sample); default: the sampler's.
        seed: seed of the inputs and generators.
    """
    from echogains.augment.repaint import SAMPLERS, schedule_counts

    sched = tuple(schedule) if schedule is not None else SAMPLERS[sampler]
    counter = CountingNetwork(_NullNetwork())
    seconds = _run_repaint(counter, diffusion, sampler, 1, size, seed, "cpu", sched)
    expected = schedule_counts(*sched)
    return {
        "schedule": list(sched),
        "network_evaluations_per_image": counter.calls,
        "network_evaluations_expected": expected.evaluations,
        "undo_steps": expected.undo,
        "transitions": expected.transitions,
        "sampler_overhead_s_per_image": seconds,
        "how": "counted with a wrapper around a zero network over the whole schedule, batch 1",
    }


def time_sampler(
    net: torch.nn.Module,
    diffusion: Any,
    sampler: str,
    batch: int,
    size: int,
    max_evaluations: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    schedule: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Seconds per image of RePaint with ``sampler`` at ``batch``; truncated after ``max_evaluations`` if given.

    Per image: t_image = t_run / n_run * N / B, with n_run evaluations of the N of the schedule in the run (n_run = N
    without truncation) and B images per batch. A truncated run covers the schedule's start, whose mix of network
    evaluations and undo steps matches the whole schedule's up to a few per cent.
    """
    from echogains.augment.repaint import network_evaluations

    total = network_evaluations(sampler, schedule)
    with torch.no_grad():  # warm-up: first-call allocations do not belong to the timing
        net(*_warmup_inputs(batch, size, device))
    counter = CountingNetwork(net, limit=max_evaluations)
    seconds = _run_repaint(counter, diffusion, sampler, batch, size, seed, device, schedule)
    truncated = counter.calls < total
    per_eval = seconds / max(counter.calls, 1)
    how = (
        f"extrapolated: the first {counter.calls} of {total} network evaluations were timed"
        if truncated
        else "measured: the whole schedule was run"
    )
    return {
        "batch": batch,
        "network_evaluations_per_image": total,
        "network_evaluations_run": counter.calls,
        "images_per_evaluation": counter.images / max(counter.calls, 1),
        "truncated": truncated,
        "seconds_run": seconds,
        "s_per_evaluation": per_eval,
        "s_per_image": per_eval * total / batch,
        "how": how,
    }


def _warmup_inputs(batch: int, size: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(batch, 1, size, size, device=device), torch.full((batch,), 10, device=device, dtype=torch.long)


def sampler_benchmark(
    net: torch.nn.Module, diffusion: Any, size: int, profile: Profile, seed: int, device: str
) -> dict[str, Any]:
    """Counts and timings of both samplers at every batch size of ``profile``."""
    limits = {"repaint": profile.repaint_max_evaluations, "fast": profile.fast_max_evaluations}
    counts = {s: count_evaluations(diffusion, s, size, seed=seed) for s in limits}
    timing: dict[str, dict[str, Any]] = {s: {} for s in limits}
    for sampler, limit in limits.items():
        for batch in profile.batch_sizes:
            log.info("timing RePaint sampler=%s batch=%d", sampler, batch)
            timing[sampler][f"batch_{batch}"] = time_sampler(net, diffusion, sampler, batch, size, limit, seed, device)
    return {"counts": counts, "timing": timing, "device": device, "torch_threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------------------------------------------
# (2) The paper-size network
# ----------------------------------------------------------------------------------------------------------------


def _flops(net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> float | None:
    """Floating-point operations of one forward pass (torch's FLOP counter), ``None`` if it cannot count."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(x, timesteps=t)
        return float(counter.get_total_flops())
    except Exception as err:  # noqa: BLE001 - the counter is a nicety; timings do not need it
        log.warning("FLOP counter failed (%s): GFLOP not reported", err)
        return None


def time_network(
    config: str = "paper", batch: int = 1, threads: Sequence[int] = (1, 2), repeats: int = 3, seed: int = 0
) -> dict[str, Any]:
    """Milliseconds per network evaluation of an untrained ``config`` network on the CPU, per thread count.

    Args:
        config: DDPM configuration name (``paper``: 256 x 256, 42M parameters).
        batch: images per evaluation.
        threads: torch intra-op thread counts to time.
        repeats: timed evaluations per thread count, after one warm-up (the median is reported).
        seed: seed of the weights and the input.
    """
    from echogains.augment.repaint import network_evaluations
    from echogains.ddpm.model import count_parameters, get_config

    cfg = get_config(config)
    net = _seeded_network(config, seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size, generator=gen)
    t = torch.full((batch,), cfg.num_timesteps // 2, dtype=torch.long)
    flops = _flops(net, x, t)  # also the first warm-up
    old = torch.get_num_threads()
    per_threads: dict[str, Any] = {}
    try:
        for n in threads:
            torch.set_num_threads(int(n))
            per_threads[str(n)] = _time_forward(net, x, t, repeats, flops)
    finally:
        torch.set_num_threads(old)
    evals = {s: network_evaluations(s) for s in ("repaint", "fast")}
    best = min(v["ms_per_evaluation"] for v in per_threads.values())
    return {
        "config": cfg.name,
        "image_size": cfg.image_size,
        "batch": batch,
        "device": "cpu",
        "parameters": count_parameters(net),
        "gflop_per_evaluation": None if flops is None else flops / 1e9,
        "threads": per_threads,
        "projected_s_per_image_at_best_threads": {s: best / 1000.0 * n / batch for s, n in evals.items()},
        "how": f"untrained weights, median of {repeats} evaluations after a warm-up; projection = ms x evaluations",
    }


def _time_forward(
    net: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, repeats: int, flops: float | None
) -> dict[str, Any]:
    runs = []
    with torch.no_grad():
        net(x, timesteps=t)  # warm-up at this thread count
        for _ in range(max(1, repeats)):
            start = time.perf_counter()
            net(x, timesteps=t)
            runs.append((time.perf_counter() - start) * 1000.0)
    ms = statistics.median(runs)
    return {
        "ms_per_evaluation": ms,
        "runs_ms": runs,
        "gflop_per_s": None if flops is None else flops / 1e9 / (ms / 1000.0),
    }


# ----------------------------------------------------------------------------------------------------------------
# Ratios, the run, the command line
# ----------------------------------------------------------------------------------------------------------------


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or den is None or den == 0 else num / den


def ratios(result: dict[str, Any], profile: Profile) -> dict[str, Any]:
    """Machine-independent ratios of a benchmark result."""
    timing = result["repaint"]["timing"]
    out: dict[str, Any] = {}
    for batch in profile.batch_sizes:
        key = f"batch_{batch}"
        out[f"fast_over_full_time_{key}"] = _ratio(
            timing["fast"][key]["s_per_image"], timing["repaint"][key]["s_per_image"]
        )
    counts = result["repaint"]["counts"]
    out["fast_over_full_evaluations"] = _ratio(
        counts["fast"]["network_evaluations_per_image"], counts["repaint"]["network_evaluations_per_image"]
    )
    b_lo, b_hi = min(profile.batch_sizes), max(profile.batch_sizes)
    out[f"batch_{b_hi}_over_batch_{b_lo}_time_per_image_full"] = _ratio(
        timing["repaint"][f"batch_{b_hi}"]["s_per_image"], timing["repaint"][f"batch_{b_lo}"]["s_per_image"]
    )
    thr = result["expansion"]["throughput"]
    n_lo, n_hi = min(profile.shard_counts), max(profile.shard_counts)
    for key in ("images_per_min", "images_per_min_excluding_imports"):
        suffix = key[len("images_per_min") :]
        out[f"shards_{n_hi}_over_shards_{n_lo}_throughput{suffix}"] = _ratio(
            thr[f"shards_{n_hi}"][key], thr[f"shards_{n_lo}"][key]
        )
    mem = result["expansion"]["memory"]
    m_lo, m_hi = min(profile.memory_cases), max(profile.memory_cases)
    out[f"mem{m_hi}_over_mem{m_lo}"] = _ratio(
        mem[f"cases_{m_hi}"]["peak_rss_mib"], mem[f"cases_{m_lo}"]["peak_rss_mib"]
    )
    out[f"mem{m_hi}_over_mem{m_lo}_above_imports"] = _ratio(
        mem[f"cases_{m_hi}"]["peak_minus_imports_mib"], mem[f"cases_{m_lo}"]["peak_minus_imports_mib"]
    )
    paper = result["paper_network"]["threads"]
    t_lo, t_hi = min(profile.paper_threads), max(profile.paper_threads)
    out[f"paper_network_{t_hi}_over_{t_lo}_threads_time"] = _ratio(
        paper[str(t_hi)]["ms_per_evaluation"], paper[str(t_lo)]["ms_per_evaluation"]
    )
    return out


def run_benchmark(
    out: str | os.PathLike,
    model: str | os.PathLike | None = None,
    profile: Profile = QUICK,
    threads: int = 1,
    device: str = "cpu",
    seed: int = 0,
    workdir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Run every measurement of ``profile`` and write the JSON to ``out`` (atomically); returns the result.

    Args:
        out: JSON file to write.
        model: DDPM weights (see :func:`resolve_model`).
        profile: :data:`QUICK`, :data:`FULL` or a custom :class:`Profile`.
        threads: torch threads of this process's sampler timings and of each expansion process.
        device: device of the sampler timings (the paper-size network and the expansions stay on the CPU).
        seed: seed of inputs, untrained weights and phantoms.
        workdir: scratch folder (default: a temporary folder, removed afterwards).

    Raises:
        EchoDataError: bad ``model`` or arguments, before anything is written.
    """
    if threads < 1:
        raise EchoDataError(None, f"--threads must be >= 1, got {threads}")
    if Path(out).is_dir():
        raise EchoDataError(out, "--out is a folder; give a JSON file path")
    with tempfile.TemporaryDirectory(prefix="echogains_bench_", dir=workdir) as tmp:
        return _run_in(Path(tmp), Path(out), model, profile, threads, device, seed)


def _run_in(
    work: Path, out: Path, model: str | os.PathLike | None, profile: Profile, threads: int, device: str, seed: int
) -> dict[str, Any]:
    started = time.perf_counter()
    info = machine_info()
    net, diffusion, cfg, model_info = resolve_model(model, work, seed)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        net, diffusion = net.to(device), diffusion.to(device)
        result: dict[str, Any] = {
            "benchmark": "echogains",
            "mode": profile.name,
            "profile": dataclasses.asdict(profile),
            "note": _note(profile, info),
            "machine": info,
            "model": model_info,
            "threads": threads,
            "seed": seed,
            "repaint": sampler_benchmark(net, diffusion, cfg.image_size, profile, seed, device),
            "paper_network": time_network(profile.paper_config, 1, profile.paper_threads, profile.paper_repeats, seed),
        }
        result["expansion"] = {
            "throughput": expansion_throughput(work, model_info["path"], profile, threads, seed),
            "memory": expansion_memory(work, model_info["path"], profile, threads, seed),
        }
    finally:
        torch.set_num_threads(old_threads)
    result["ratios"] = ratios(result, profile)
    result["machine"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    result["total_s"] = time.perf_counter() - started
    atomic_write_json(out, result)
    return result


def _note(profile: Profile, info: dict[str, Any]) -> str:
    quick = (
        f" Quick mode: the full RePaint schedule was stopped after {profile.repaint_max_evaluations} network "
        "evaluations and its time per image extrapolated per evaluation; memory runs without repainting."
        if profile.name == "quick"
        else ""
    )
    return (
        f"Wall-clock numbers from a machine with {info['usable_cpus']} usable CPU(s) (load average at start "
        f"{info['load_average_1_5_15']}); a shared, loaded machine inflates and scatters them: compare ratios." + quick
    )


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results/echogains.json", help="JSON file to write")
    parser.add_argument("--model", default=None, help="DDPM weights (default: the demo weights, else untrained tiny)")
    parser.add_argument("--quick", action="store_true", help="truncated full schedule, no repaint in memory runs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--device", default="cpu", help="device of the RePaint timings (default cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="scratch folder (default: system temp)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _summary(result: dict[str, Any]) -> str:
    lines = [
        f"echogains benchmark ({result['mode']}, model {result['model']['config']} [{result['model']['source']}]):"
    ]
    for sampler, per_batch in result["repaint"]["timing"].items():
        for key, t in per_batch.items():
            lines.append(
                f"  {sampler:7s} {key}: {t['network_evaluations_per_image']} evaluations/image, "
                f"{t['s_per_image']:.2f} s/image ({'extrapolated' if t['truncated'] else 'measured'})"
            )
    for n, t in result["paper_network"]["threads"].items():
        lines.append(f"  paper network 256x256, {n} thread(s): {t['ms_per_evaluation']:.0f} ms/evaluation")
    lines += [f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}" for k, v in result["ratios"].items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    args = _parse(argv)
    if args.worker:
        expansion.worker(args.worker)
        return 0
    profile = QUICK if args.quick else FULL
    return _common.run_main(
        lambda: run_benchmark(args.out, args.model, profile, args.threads, args.device, args.seed, args.workdir),
        _summary,
        args.out,
    )


if __name__ == "__main__":
    raise SystemExit(main())
