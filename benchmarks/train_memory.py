#!/usr/bin/env python
"""Training memory and time per sample of the paper configurations, for each memory option alone and combined.

Usage::

    python benchmarks/train_memory.py --out benchmarks/results/train_memory.json            # CPU, both models
    python benchmarks/train_memory.py --out ... --models ddpm --device cuda --batches 8,16   # on a GPU
    python benchmarks/train_memory.py --out ... --max_gb 9 --resume                          # skip what is measured

What one measurement is: a fresh Python process (``--child``) builds the real trainer at paper scale on random
in-memory images (:class:`scripts.train.EchoDNDTrainer`, 241M parameters, 256 px, with its EMA copy and AdamW; or
:class:`echogains.ddpm.train.DDPMTrainer`, 42M parameters, 256 px, EMA and Adam) and runs ``--steps`` full
optimiser steps (forward, backward, optimiser, EMA) through the trainers' own ``train_step``, with the options of one
configuration. Before the timed steps the optimiser state is allocated (one optimiser step on zero gradients, which
only applies AdamW's weight decay), so that even the first timed step has the memory profile of every later one:
moments present during the backward pass, which fills the gradients.

==========================  =========================================================================
``baseline``                fp32, no checkpointing, no accumulation (the trainers before the options)
``checkpointing``           activation checkpointing of the U-Net blocks (and of the MFCM)
``bf16``                    bf16 autocast
``checkpointing+bf16``      both
``accumulate``              ``--accumulate 2``: two micro-batches of ``batch`` per step
``checkpointing+bf16+acc``  all three
==========================  =========================================================================

Peak memory: on CPU the process's peak resident set (``VmHWM`` of ``/proc/self/status`` at its end, and the
``ru_maxrss`` that ``os.wait4`` returns for it; the parent imports no torch, so the child inherits no high-water
mark); on CUDA ``torch.cuda.max_memory_allocated`` (and ``max_memory_reserved``). Time: seconds of the last step
(the first one allocates the optimiser state), per sample = per ``batch x accumulate``. Each configuration is
measured at two micro-batch sizes (``--batches``, default 1 and 2): the slope is the memory per sample, the
intercept the fixed part (weights, EMA, optimiser state, gradients, the interpreter), and the largest micro-batch
that fits 24, 40 and 80 GB follows from them (``fits_gb``). With accumulation the effective batch is micro-batch x N
x processes at the memory of the micro-batch.

Memory safety on a shared machine: a measurement whose estimated peak (the configuration's batch-1 peak times the
batch: the batch-1 peak plus, per further sample, that peak less the process after building: weights, EMA, moments)
exceeds ``--max_gb`` is not run but recorded as ``skipped`` with the reason; the parent also polls the
child's resident memory every 0.25 s and kills it above ``--max_gb`` (recorded as ``error``: the peak is then known
to exceed that limit). ``--cite`` adds numbers
measured elsewhere (e.g. the issue's Echo-DND baseline at batch 2), kept apart under ``cited`` and marked as such in
the derived table. ``--lean`` measures in slope mode (SGD without moments and no EMA copy, under ``lean``): the same
activations at a smaller fixed part, for configurations whose second batch would not fit ``--max_gb`` with the real
trainer; the derived table then takes the per-sample part from the lean runs and the fixed part from the real one.
Results are written after every measurement (atomically); ``--resume`` keeps those already in ``--out``.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:  # imported by path (the tests): the repository root is on sys.path
    from benchmarks import _common, train_memory_report
except ImportError:  # run as a script (this folder is sys.path[0]) or loaded by path from another folder
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import train_memory_report  # noqa: I001  (before _common, which takes this folder off sys.path again)
    import _common
REPO_ROOT, BUNDLE_ROOT = _common.REPO_ROOT, _common.BUNDLE_ROOT
_r = train_memory_report  # re-exported: the tables and their arithmetic
BUDGETS_GB, CONFIGURATIONS, MODELS = _r.BUDGETS_GB, _r.CONFIGURATIONS, _r.MODELS
_estimate_gb, _key, _peak_gb, _points = _r._estimate_gb, _r._key, _r._peak_gb, _r._points
derive, fit_line, largest_batch, markdown = _r.derive, _r.fit_line, _r.largest_batch, _r.markdown
_common.add_bundle()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

__all__ = ["CONFIGURATIONS", "MODELS", "fit_line", "largest_batch", "derive", "markdown", "measure", "run", "main"]

DEFAULT_CONFIGURATIONS = (
    "baseline",
    "checkpointing",
    "bf16",
    "checkpointing+bf16",
    "accumulate",
    "checkpointing+bf16+acc",
)
#: ``--scale``: the networks measured (``tiny``: the smoke test's)
SCALES: dict[str, dict[str, str]] = {
    "paper": {"echo_dnd": "paper", "ddpm": "paper"},
    "tiny": {"echo_dnd": "tiny", "ddpm": "micro"},
}
GB = 1e9


# --- the child: one measurement -----------------------------------------------------------------------------------
def _vm_hwm_bytes() -> int | None:
    return _common.proc_status_bytes("VmHWM")


def _vm_rss_bytes() -> int | None:
    return _common.proc_status_bytes("VmRSS")


def _echo_dnd_trainer(spec: dict[str, Any], device: str, out: str):  # noqa: ANN202
    import torch
    from scripts.losses import EchoDNDLoss
    from scripts.train import EchoDNDTrainer

    opts = CONFIGURATIONS[spec["configuration"]]
    trainer = EchoDNDTrainer(
        dataset_dir="unused",
        output_dir=out,
        config=SCALES[spec["scale"]]["echo_dnd"],
        batch_size=spec["batch"],
        val_every=0,
        progress=False,
        device=device,
        seed=0,
        **opts,
    )
    size = trainer.config.image_size
    gen = torch.Generator().manual_seed(0)
    trainer.train_images = torch.rand(8, 1, size, size, generator=gen)
    trainer.train_masks = (torch.rand(8, 1, size, size, generator=gen) > 0.5).float()
    trainer._build()
    loss_fn = EchoDNDLoss()

    lean = bool(spec.get("lean"))
    if lean:  # slope mode: no EMA copy, SGD without moments (what grows with the batch is the same)
        trainer.ema = None
        trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=1e-6)

    def step(k: int) -> None:
        trainer.train_step(loss_fn)
        trainer.step += 1
        if not lean:
            trainer._update_ema()

    _prime(trainer.model, trainer.optimizer)
    params = sum(p.numel() for p in trainer.model.parameters())
    return step, params


def _prime(model, optimizer) -> None:  # noqa: ANN001
    """Allocate the optimiser's moments: a step on zero gradients, then the gradients freed."""
    import torch

    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _ddpm_trainer(spec: dict[str, Any], device: str, out: str):  # noqa: ANN202
    import numpy as np

    from echogains.ddpm.model import get_config
    from echogains.ddpm.train import DDPMTrainer, TrainingImages, TrainSettings

    opts = CONFIGURATIONS[spec["configuration"]]
    cfg = get_config(SCALES[spec["scale"]]["ddpm"])
    rng = np.random.default_rng(0)
    images = TrainingImages(
        rng.integers(0, 256, (8, cfg.image_size, cfg.image_size), dtype=np.uint8),
        [None] * 8,
        [f"random{k}" for k in range(8)],
    )
    settings = TrainSettings(
        steps=spec["steps"],
        batch_size=spec["batch"],
        lr=cfg.lr,
        ema=cfg.ema,
        seed=0,
        max_narrowing_deg=0.0,
        sample_every=0,
        checkpoint_every=10**9,
        n_samples=1,
        sample_steps=1,
        **opts,
    )
    trainer = DDPMTrainer(images, out, cfg, settings, device=device, progress=False)
    if spec.get("lean"):  # slope mode: no EMA copy, SGD without moments (what grows with the batch is the same)
        import torch

        class _NoEMA:
            def update_parameters(self, model) -> None:  # noqa: ANN001
                pass

        trainer.ema = _NoEMA()
        trainer.optimizer = torch.optim.SGD(trainer.model.parameters(), lr=1e-6)

    def step(k: int) -> None:
        trainer.train_step(k)
        trainer.step = k + 1

    _prime(trainer.model, trainer.optimizer)
    return step, sum(p.numel() for p in trainer.model.parameters())


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in this process (a fresh one: the parent starts it); returns the record."""
    import torch

    torch.set_num_threads(int(spec["threads"]))
    device = spec["device"]
    cuda = device.startswith("cuda")
    rss_start = _vm_rss_bytes()
    with tempfile.TemporaryDirectory() as out:
        build = _echo_dnd_trainer if spec["model"] == "echo_dnd" else _ddpm_trainer
        step, params = build(spec, device, out)
        rss_built = _vm_rss_bytes()
        if cuda:
            torch.cuda.synchronize()
            built_allocated = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        seconds = []
        for k in range(int(spec["steps"])):
            t0 = time.perf_counter()
            step(k)
            if cuda:
                torch.cuda.synchronize()
            seconds.append(time.perf_counter() - t0)
    record: dict[str, Any] = {
        "parameters": params,
        "step_seconds": seconds,
        "rss_after_imports_gb": rss_start / GB if rss_start else None,
        "rss_after_build_gb": rss_built / GB if rss_built else None,
        "vm_hwm_gb": (_vm_hwm_bytes() or 0) / GB,
        "gradients_gb": params * 4 / GB,  # fp32 gradients: allocated in the step (the moments already are)
        "torch": torch.__version__,
    }
    if cuda:
        record.update(
            cuda_max_allocated_gb=torch.cuda.max_memory_allocated() / GB,
            cuda_max_reserved_gb=torch.cuda.max_memory_reserved() / GB,
            cuda_after_build_gb=built_allocated / GB,
            cuda_device=torch.cuda.get_device_name(),
        )
    return record


# --- the parent ---------------------------------------------------------------------------------------------------
def _proc_rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def measure(spec: dict[str, Any], kill_gb: float, timeout_s: float) -> dict[str, Any]:
    """Run :func:`child` for ``spec`` in a fresh interpreter; its record plus the peak RSS ``os.wait4`` reports."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(spec["threads"]),
        "MKL_NUM_THREADS": str(spec["threads"]),
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(BUNDLE_ROOT)]),
    }
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    t0 = time.perf_counter()
    load_before = os.getloadavg()[0]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    killed: list[str] = []
    done = threading.Event()

    def watch() -> None:  # the machine is shared: never let one measurement grow past kill_gb
        while not done.wait(0.25):
            if _proc_rss_bytes(proc.pid) > kill_gb * GB:
                killed.append(f"resident memory above {kill_gb:.1f} GB")
                proc.kill()
                return
            if time.perf_counter() - t0 > timeout_s:
                killed.append(f"ran past {timeout_s:.0f} s")
                proc.kill()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out_chunks: list[str] = []
    err_chunks: list[str] = []
    readers = [
        threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True),
        threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True),
    ]
    for r in readers:
        r.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    for r in readers:
        r.join()
    wall = time.perf_counter() - t0
    if killed or proc.returncode != 0:
        why = killed[0] if killed else f"exit status {proc.returncode}"
        if proc.returncode == -9 and not killed:
            why = "killed by signal 9: probably out of memory"
        tail = "".join(err_chunks)[-1500:]
        return {"error": why, "stderr_tail": tail, "wall_s": wall}
    lines = [ln for ln in "".join(out_chunks).splitlines() if ln.startswith("{")]
    record = json.loads(lines[-1])
    record["ru_maxrss_gb"] = usage.ru_maxrss * 1024 / GB
    record["wall_s"] = wall
    record["load_average_1min_before_after"] = [load_before, os.getloadavg()[0]]
    return record


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": list(os.getloadavg()),
    }
    try:
        info["cpu_model"] = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        mem = {ln.split(":")[0]: int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines()[:3]}
        info["mem_total_gb"] = mem.get("MemTotal", 0) * 1024 / GB
    except (OSError, StopIteration, ValueError, IndexError):
        pass
    return info


def _available_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GB
    except OSError:
        pass
    return float("inf")


def run(
    out: str,
    models: Sequence[str] = tuple(MODELS),
    configurations: Sequence[str] = DEFAULT_CONFIGURATIONS,
    batches: Sequence[int] = (1, 2),
    device: str = "cpu",
    threads: int = 2,
    steps: int = 2,
    max_gb: float = 9.0,
    timeout_s: float = 900.0,
    resume: bool = False,
    cite: Sequence[str] = (),
    skip: Sequence[str] = (),
    scale: str = "paper",
    lean: bool = False,
    timing: bool = False,
) -> dict[str, Any]:
    """Measure every (model, configuration, batch) not yet in ``out`` (with ``resume``), then write the table.

    ``lean``: measure in slope mode (SGD without moments, no EMA copy; kept under ``lean``), for configurations whose
    second batch does not fit ``max_gb`` with the real trainer: the per-sample part is the same, the fixed part less.
    ``timing``: the same slope mode, kept under ``timing``: one pass over the configurations back to back, whose step
    times the table prefers (on a shared machine the load moves; one pass keeps the configurations comparable).
    """
    from echogains.utils import atomic_write_json

    path = Path(out)
    results: dict[str, Any] = json.loads(path.read_text()) if resume and path.is_file() else {}
    results.setdefault("measurements", {})
    results.setdefault("skipped", {})
    lean = lean or timing
    bucket = results.setdefault("timing" if timing else "lean", {}) if lean else results["measurements"]
    for item in cite:  # "model/configuration/batch_B=PEAK_GB@source text"
        key, rest = item.split("=", 1)
        peak, source = rest.split("@", 1)
        results.setdefault("cited", {})[key] = {"peak_gb": float(peak), "source": source, "device": device}
    if resume and results.get("how", {}).get("scale", scale) != scale:
        raise SystemExit(f"{path} holds --scale {results['how']['scale']} measurements, not {scale}")
    results["how"] = {
        "device": device,
        "scale": scale,
        "threads": threads,
        "steps": steps,
        "max_gb": max_gb,
        "peak": "torch.cuda.max_memory_allocated"
        if device.startswith("cuda")
        else "VmHWM of the child process (peak resident set); ru_maxrss from os.wait4 alongside",
        "seconds": "the last of the steps (the first allocates the optimiser state)",
        "models": {m: MODELS[m][0] for m in models},
    }
    results["machine"] = _machine()
    for model in models:
        for configuration in configurations:
            first: dict[str, Any] | None = None  # the smallest batch's record
            for batch in sorted(batches):
                key = _key(model, configuration, batch)
                if key in bucket and "error" not in bucket[key]:
                    first = first or {**bucket[key], "batch": batch}
                    continue
                reason = None
                estimate = _estimate_gb(first, batch, device)
                if key in skip:
                    reason = "skipped on request (--skip)"
                elif estimate is not None and estimate > max_gb:
                    reason = (
                        f"estimated peak {estimate:.1f} GB (from batch {first['batch']}: its peak plus, per "
                        f"further sample, its peak above the built trainer) is above "
                        f"--max_gb {max_gb:g}"
                    )
                elif not device.startswith("cuda") and _available_gb() < max_gb + 2:
                    reason = f"only {_available_gb():.1f} GB available now, below --max_gb + 2 GB"
                key_skip = f"{key} ({'timing' if timing else 'lean'})" if lean else key
                if reason:
                    results["skipped"][key_skip] = reason
                    print(f"skip {key}: {reason}", flush=True)
                    continue
                spec = {
                    "model": model,
                    "configuration": configuration,
                    "batch": batch,
                    "device": device,
                    "threads": threads,
                    "steps": steps,
                    "scale": scale,
                    "lean": lean,
                }
                print(f"measure {key} ...", flush=True)
                record = measure(spec, kill_gb=max_gb, timeout_s=timeout_s)
                record["available_gb_before"] = _available_gb()
                bucket[key] = record
                results["skipped"].pop(key_skip, None)
                peak = _peak_gb(record, device)
                if peak is not None:
                    first = first or {**record, "batch": batch}
                print(
                    f"  {key}: peak {peak} GB, steps {record.get('step_seconds')}, error {record.get('error')}",
                    flush=True,
                )
                results["table"] = derive(results, device)
                atomic_write_json(path, results)
    results["table"] = derive(results, device)
    atomic_write_json(path, results)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--table", metavar="JSON", help="print the markdown table of a results file and exit")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "train_memory.json"))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument(
        "--configurations", default=",".join(DEFAULT_CONFIGURATIONS), help=f"from {', '.join(CONFIGURATIONS)}"
    )
    parser.add_argument("--batches", default="1,2", help="micro-batch sizes (at least two for the slope)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--scale", default="paper", choices=sorted(SCALES), help="paper networks, or tiny ones (smoke)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--max_gb", type=float, default=9.0, help="do not run a measurement estimated above this")
    parser.add_argument("--timeout_s", type=float, default=900.0)
    parser.add_argument("--resume", action="store_true", help="keep the measurements already in --out")
    parser.add_argument(
        "--cite",
        action="append",
        default=[],
        help="MODEL/CONFIGURATION/batch_B=PEAK_GB@SOURCE: a peak measured elsewhere (marked as cited)",
    )
    parser.add_argument("--skip", action="append", default=[], help="MODEL/CONFIGURATION/batch_B not to measure")
    parser.add_argument(
        "--timing",
        action="store_true",
        help="one timing pass in slope mode at batch 1, all configurations back to back",
    )
    parser.add_argument(
        "--lean",
        action="store_true",
        help="slope mode: SGD without moments and no EMA (the per-sample part at a smaller fixed part)",
    )
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return
    if args.table:
        print(markdown(json.loads(Path(args.table).read_text())))
        return
    run(
        args.out,
        [m for m in args.models.split(",") if m],
        [c for c in args.configurations.split(",") if c],
        [int(b) for b in args.batches.split(",")],
        args.device,
        args.threads,
        args.steps,
        args.max_gb,
        args.timeout_s,
        args.resume,
        args.cite,
        args.skip,
        args.scale,
        args.lean,
        args.timing,
    )


if __name__ == "__main__":
    main()
