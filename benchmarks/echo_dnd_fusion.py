#!/usr/bin/env python
"""Cost of one Echo-DND fusion block per scale of the paper network: cross-attention (SDPA / math) against FiLM.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/echo_dnd_fusion.py --out benchmarks/results/echo_dnd_fusion.json [--threads 1]

For every U-Net level of the paper configuration (256, 128, 64, 32, 16, 8 px; the channels entering the level and
those of the conditional features F^i), writes as one JSON file (atomically):

- GFLOP of one :class:`~scripts.networks.CrossAttentionFusion` and one :class:`~scripts.networks.FiLMFusion` at
  batch 1, counted by ``torch.utils.flop_counter`` on meta tensors (attention decomposed into counted matmuls) and
  checked against the closed form 2 N (2 C^2 + 2 C C_f) + 4 N^2 C (N tokens, C channels, C_f condition channels);
- the size of the attention matrix (heads x N x N, fp32) at batch 1 and at the paper's training batch 8: what the math
  path materialises and ``scaled_dot_product_attention`` (SDPA) does not;
- at the timed scales (default 8 ... 128 px; 256 px costs 2.2 TFLOP per call): seconds per call at batch 1 with
  SDPA, with the math path (materialised matrix; only up to ``--math_max`` px) and for FiLM (median of repeats after
  the first call, ``torch.inference_mode``), each in a fresh process, and the peak resident memory above the inputs
  during its first call (Linux ``VmHWM`` after resetting it through ``/proc/self/clear_refs``);
- one GNEM evaluation of the paper network at batch 1 timed in the same process (what each fusion adds to; with
  cross-attention at 16 and 8 px only, the layout before this measurement), and per scale the fusion's time as a
  fraction of it;
- the GFLOP of that GNEM evaluation and each cross-attention's GFLOP as a fraction of it (load-independent);
- ``layouts``: fusion kinds, parameter counts and GNEM GFLOP of the paper network before (FiLM above 16 px, low
  MFCM levels strided from the 1/8 stream) and after (the configuration's defaults);
- ``decision``: cross-attention where one SDPA call costs at most ``--max_fraction`` (default 0.05) of that GNEM
  evaluation, FiLM above; the ``fusion_attention_max_tokens`` that realises it.

On a shared machine the absolute times move with the load (recorded in ``machine``); the fractions less so.
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
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from echogains.utils import atomic_write_json, get_logger  # noqa: E402

__all__ = [
    "scale_table",
    "fusion_flops",
    "time_call",
    "measure_scale",
    "gnem_seconds",
    "gnem_gflop",
    "decide",
    "run",
    "main",
]

log = get_logger("echo_dnd.benchmark.fusion")


def _machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15": list(os.getloadavg()),
    }


def scale_table(config: Any) -> list[dict[str, int]]:
    """Per U-Net level: side, tokens, channels entering the level, F^i channels, heads (as ``NoiseEstimationUNet``)."""
    from scripts.mfcm import conditioner_channels

    entry = [config.channels[0], *config.channels[:-1]]
    cond = conditioner_channels(config.mfcm_channels, config.num_levels)
    return [
        {
            "level": i,
            "side": r,
            "tokens": r * r,
            "channels": c,
            "cond_channels": cf,
            "heads": max(c // config.num_head_channels, 1),
        }
        for i, (r, c, cf) in enumerate(zip(config.resolutions, entry, cond))
    ]


def _blocks(scale: dict[str, int], config: Any, flash: bool) -> tuple[torch.nn.Module, torch.nn.Module]:
    from scripts.networks import CrossAttentionFusion, FiLMFusion

    attn = CrossAttentionFusion(
        scale["channels"],
        scale["cond_channels"],
        config.num_head_channels,
        config.norm_num_groups,
        use_flash_attention=flash,
    )
    film = FiLMFusion(scale["channels"], scale["cond_channels"], config.norm_num_groups)
    return attn, film


def fusion_flops(scale: dict[str, int], config: Any) -> dict[str, float]:
    """Counted (meta tensors) and closed-form GFLOP of both fusions at batch 1."""
    from torch.utils.flop_counter import FlopCounterMode

    r, c, cf = scale["side"], scale["channels"], scale["cond_channels"]
    out: dict[str, float] = {}
    with torch.device("meta"):
        attn, film = _blocks(scale, config, flash=False)
        h, f = torch.zeros(1, c, r, r), torch.zeros(1, cf, r, r)
        for name, block in (("cross_attention", attn), ("film", film)):
            with FlopCounterMode(display=False) as counter:
                block(h, f)
            out[f"{name}_gflop"] = counter.get_total_flops() / 1e9
    n = r * r
    out["cross_attention_gflop_closed_form"] = (2 * n * (2 * c * c + 2 * c * cf) + 4 * n * n * c) / 1e9
    return out


def _vm_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    raise KeyError(key)


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5", encoding="ascii")
        return True
    except OSError:
        return False


def time_call(fn: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """Peak resident memory above the start of the first call, then the median seconds of ``repeats`` more calls.

    The memory is read on the first call of a fresh process (large buffers are fresh mappings, none reused)."""
    peak_mib = None
    if _reset_peak():
        base = _vm_kib("VmRSS:")
        fn()
        peak_mib = (_vm_kib("VmHWM:") - base) / 1024
    else:
        fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "seconds_all": times, "peak_mib_above_start": peak_mib}


def _measure_one(scale: dict[str, int], config: Any, kind: str, repeats: int, threads: int) -> dict[str, Any]:
    """One fusion kind at one scale, batch 1 (run in a fresh process: its peak memory is its own)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    r, c, cf = scale["side"], scale["channels"], scale["cond_channels"]
    h, f = torch.randn(1, c, r, r, generator=gen), torch.randn(1, cf, r, r, generator=gen)
    attn, film = _blocks(scale, config, flash=kind != "cross_attention_math")
    block = film if kind == "film" else attn
    block.eval()
    with torch.inference_mode():
        return time_call(lambda: block(h, f), repeats)


def measure_scale(scale: dict[str, int], config: Any, repeats: int, math_max: int, threads: int) -> dict[str, Any]:
    """Time and peak memory of SDPA cross-attention, math-path cross-attention (up to ``math_max`` px) and FiLM."""
    import concurrent.futures
    import multiprocessing

    kinds = ["cross_attention_sdpa", *(["cross_attention_math"] if scale["side"] <= math_max else []), "film"]
    out: dict[str, Any] = {}
    ctx = multiprocessing.get_context("spawn")
    for kind in kinds:
        with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            out[kind] = pool.submit(_measure_one, scale, config, kind, repeats, threads).result()
    return out


def gnem_seconds(config: Any, repeats: int) -> float:
    """Median seconds of one GNEM evaluation of ``config`` at batch 1 (condition precomputed, no BNEM built)."""
    from scripts import EchoDND

    torch.manual_seed(0)
    model = EchoDND(config.replace(use_bernoulli=False)).eval()
    size = config.image_size
    gen = torch.Generator().manual_seed(0)
    image, x = torch.rand(1, 1, size, size, generator=gen), torch.randn(1, 1, size, size, generator=gen)
    t = torch.full((1,), config.num_train_timesteps // 2, dtype=torch.long)
    with torch.inference_mode():
        cond = model.condition(image)
        return time_call(lambda: model.gnem(x, t, cond), repeats)["seconds"]


def gnem_gflop(config: Any) -> float:
    """GFLOP of one GNEM evaluation of ``config`` at batch 1 (meta tensors, as ``benchmarks/echo_dnd.py``)."""
    from scripts import Condition, EchoDND
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = EchoDND(config.replace(use_bernoulli=False, use_flash_attention=False))
        size = config.image_size
        x = torch.zeros(1, 1, size, size)
        t = torch.full((1,), config.num_train_timesteps // 2, dtype=torch.long)
        cond = Condition(x, list(model.conditioner(x)))
        with FlopCounterMode(display=False) as counter:
            model.gnem(x, t, cond)
    return counter.get_total_flops() / 1e9


def _layout(config: Any) -> dict[str, Any]:
    """Fusion kinds, parameters and GNEM GFLOP of one paper-network layout (meta tensors)."""
    from scripts import EchoDND, count_parameters

    with torch.device("meta"):
        model = EchoDND(config)
    return {
        "fusion_attention_max_tokens": config.fusion_attention_max_tokens,
        "mfcm_low_levels": config.mfcm_low_levels,
        "fusions": [type(f).__name__ for f in model.gnem.fusions],
        "parameters": count_parameters(model),
        "gnem_gflop": gnem_gflop(config),
    }


def decide(scales: Sequence[dict[str, Any]], gnem_s: float, max_fraction: float) -> dict[str, Any]:
    """Cross-attention from the smallest scale up to the last one whose SDPA call is within ``max_fraction`` of a GNEM
    evaluation (the configuration's rule is a token threshold, so the chosen scales are all those below a size)."""
    largest = 0
    for s in sorted((s for s in scales if s.get("timing")), key=lambda s: s["side"]):
        if s["timing"]["cross_attention_sdpa"]["seconds"] > max_fraction * gnem_s:
            break
        largest = s["side"]
    return {
        "rule": f"cross-attention where one SDPA call at batch 1 costs <= {max_fraction:g} of one GNEM evaluation",
        "cross_attention_sides": sorted((s["side"] for s in scales if s["side"] <= largest), reverse=True),
        "film_sides": sorted((s["side"] for s in scales if s["side"] > largest), reverse=True),
        "fusion_attention_max_tokens": largest * largest,
    }


def run(
    out: Path, threads: int, timed_max: int, math_max: int, repeats: int, gnem_repeats: int, max_fraction: float
) -> dict[str, Any]:
    """Measure every scale; write and return the JSON record."""
    from scripts import EchoDNDConfig

    torch.set_num_threads(threads)
    started = time.perf_counter()
    machine = _machine()
    config = EchoDNDConfig.paper()
    scales = []
    for scale in scale_table(config):
        record: dict[str, Any] = dict(scale)
        record.update(fusion_flops(scale, config))
        matrix = scale["heads"] * scale["tokens"] ** 2 * 4
        record["attention_matrix_gib_batch_1"] = matrix / 2**30
        record["attention_matrix_gib_batch_8"] = 8 * matrix / 2**30
        if scale["side"] <= timed_max:
            log.info("timing the fusions at %d x %d", scale["side"], scale["side"])
            record["timing"] = measure_scale(scale, config, repeats, math_max, threads)
        scales.append(record)
    log.info("timing one paper GNEM evaluation")
    reference = config.replace(fusion_attention_max_tokens=256)  # the layout before this benchmark: FiLM above 16 px
    gnem_s = gnem_seconds(reference, gnem_repeats)
    gnem_g = gnem_gflop(reference)
    for record in scales:
        record["gflop_fraction_of_gnem_evaluation"] = record["cross_attention_gflop"] / gnem_g
        if record.get("timing"):
            record["sdpa_fraction_of_gnem_evaluation"] = record["timing"]["cross_attention_sdpa"]["seconds"] / gnem_s
            record["film_fraction_of_gnem_evaluation"] = record["timing"]["film"]["seconds"] / gnem_s
    machine["load_average_at_end"] = list(os.getloadavg())
    result = {
        "benchmark": "echo_dnd_fusion",
        "command": " ".join(["python", "benchmarks/echo_dnd_fusion.py", *sys.argv[1:]]),
        "machine": machine,
        "threads": threads,
        "config": {
            "num_head_channels": config.num_head_channels,
            "channels": list(config.channels),
            "mfcm_channels": list(config.mfcm_channels),
            "image_size": config.image_size,
        },
        "scales": scales,
        "gnem_evaluation_seconds_batch_1": gnem_s,
        "gnem_evaluation_gflop_batch_1": gnem_g,
        "layouts": {
            name: _layout(cfg)
            for name, cfg in (("before", reference.replace(mfcm_low_levels="strided")), ("after", config))
        },
        "decision": decide(scales, gnem_s, max_fraction),
        "total_s": time.perf_counter() - started,
    }
    atomic_write_json(out, result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "echo_dnd_fusion.json")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timed_max", type=int, default=128, help="largest side to time (256 px: ~2.2 TFLOP a call)")
    parser.add_argument("--math_max", type=int, default=64, help="largest side to time the materialising math path")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gnem_repeats", type=int, default=2)
    parser.add_argument("--max_fraction", type=float, default=0.05)
    args = parser.parse_args(argv)
    result = run(
        args.out, args.threads, args.timed_max, args.math_max, args.repeats, args.gnem_repeats, args.max_fraction
    )
    for s in result["scales"]:
        timing = s.get("timing") or {}
        sdpa = timing.get("cross_attention_sdpa", {}).get("seconds")
        print(
            f"{s['side']:>4} px: attention {s['cross_attention_gflop']:.2f} GFLOP, FiLM {s['film_gflop']:.3f} GFLOP, "
            f"matrix at batch 8 {s['attention_matrix_gib_batch_8']:.2f} GiB"
            + (
                f", SDPA {sdpa:.3f} s ({s['sdpa_fraction_of_gnem_evaluation']:.1%} of a GNEM evaluation)"
                if sdpa
                else ""
            )
        )
    print(f"GNEM evaluation {result['gnem_evaluation_seconds_batch_1']:.2f} s; decision: {result['decision']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
