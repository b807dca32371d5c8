"""The derived table of ``benchmarks/train_memory.py`` and its markdown: per model and configuration the peaks per
batch, the fixed part and the memory per sample (a least-squares line), seconds per sample and what fits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

#: configuration name -> trainer options
CONFIGURATIONS: dict[str, dict[str, Any]] = {
    "baseline": {"precision": "fp32", "checkpointing": False, "accumulate": 1},
    "checkpointing": {"precision": "fp32", "checkpointing": True, "accumulate": 1},
    "bf16": {"precision": "bf16", "checkpointing": False, "accumulate": 1},
    "checkpointing+bf16": {"precision": "bf16", "checkpointing": True, "accumulate": 1},
    "accumulate": {"precision": "fp32", "checkpointing": False, "accumulate": 2},
    "checkpointing+bf16+acc": {"precision": "bf16", "checkpointing": True, "accumulate": 2},
    "fp16": {"precision": "fp16", "checkpointing": False, "accumulate": 1},
    "checkpointing+fp16": {"precision": "fp16", "checkpointing": True, "accumulate": 1},
}
#: model name -> (what it is, the paper's batch per optimiser step)
MODELS: dict[str, tuple[str, int]] = {
    "echo_dnd": ("Echo-DND paper network (C = 128, 256 px, MFCM, GNEM + BNEM), AdamW, EMA", 8),
    "ddpm": ("EchoGAINS DDPM paper network (256 px, T = 4000), Adam, EMA", 64),
}
BUDGETS_GB = (24, 40, 80)


def _peak_gb(record: dict[str, Any], device: str) -> float | None:
    if "error" in record or "skipped" in record:
        return None
    if device.startswith("cuda"):
        return record.get("cuda_max_allocated_gb")
    return record.get("vm_hwm_gb")


def fit_line(points: Sequence[tuple[int, float]]) -> tuple[float, float] | None:
    """``(fixed, per_sample)`` of a least-squares line through ``(batch, peak)`` points (two or more batches)."""
    pts = sorted({int(b): float(m) for b, m in points}.items())
    if len(pts) < 2:
        return None
    n = len(pts)
    mb, mm = sum(b for b, _ in pts) / n, sum(m for _, m in pts) / n
    slope = sum((b - mb) * (m - mm) for b, m in pts) / sum((b - mb) ** 2 for b, _ in pts)
    return mm - slope * mb, slope


def largest_batch(fixed: float, per_sample: float, budget: float) -> int:
    """The largest micro-batch ``b`` with ``fixed + b * per_sample <= budget`` (0 when not even one fits)."""
    if per_sample <= 0:
        return 0 if fixed > budget else 10**6
    return max(0, math.floor((budget - fixed) / per_sample + 1e-9))


def _key(model: str, configuration: str, batch: int) -> str:
    return f"{model}/{configuration}/batch_{batch}"


def _points(
    prefix: str, keys: Sequence[str], measured: dict[str, Any], cited: dict[str, Any], device: str, accumulate: int
) -> tuple[list[tuple[int, float]], dict[int, str], list[float]]:
    """(batch, peak GB) of one model and configuration, measured first, then cited ones at other batches; where
    each comes from; the seconds per sample of the measured ones."""
    points, sources, per_sample_s = [], {}, []
    for k in keys:
        batch = int(k.rsplit("_", 1)[1])
        peak = _peak_gb(measured[k], device)
        if peak is not None:
            points.append((batch, peak))
            sources[batch] = "measured"
            steps = measured[k]["step_seconds"]
            per_sample_s.append(steps[-1] / (batch * accumulate))
    for k, value in cited.items():
        if k.startswith(prefix) and value.get("device", "cpu") == device:
            batch = int(k.rsplit("_", 1)[1])
            if batch not in sources:
                points.append((batch, float(value["peak_gb"])))
                sources[batch] = f"cited: {value['source']}"
    return points, sources, per_sample_s


def _line(
    entry: dict[str, Any],
    points: list[tuple[int, float]],
    sources: dict[int, str],
    lean: dict[int, float],
    done: dict[str, Any],
    measured: dict[str, Any],
    prefix: str,
    device: str,
) -> tuple[float, float] | None:
    """``(fixed, per_sample)`` of one configuration (``entry``, which the fallbacks annotate): the line through its
    points, else the lean runs' slope, else the slope of the same options without accumulation (in ``done``, the
    model's configurations derived so far); a single measured batch adds bounds to ``entry`` instead."""
    opts = entry["options"]
    line = fit_line(points)
    if line is None and points and fit_line(list(lean.items())) is not None:
        # the slope from the lean runs (same options, SGD without moments, no EMA: the same activations),
        # the fixed part from the real trainer's smallest measured batch
        per_sample = fit_line(list(lean.items()))[1]
        b0, m0 = min(points)
        line = (m0 - per_sample * b0, per_sample)
        entry["per_sample_from"] = "lean"
    if line is None and len(points) == 1 and opts["accumulate"] > 1:
        # accumulation measured at one micro-batch: the memory per micro-batch sample is that of the same
        # options without accumulation (same micro-batch, same arithmetic); the fixed part is this one's
        plain = next((c for c, o in CONFIGURATIONS.items() if o == {**opts, "accumulate": 1}), None)
        other = done.get(plain or "", {})
        if "per_sample_gb" in other:
            per_sample = other["per_sample_gb"]
            line = (points[0][1] - per_sample * points[0][0], per_sample)
            entry["per_sample_from"] = plain
    if line is None and len(points) == 1 and sources[points[0][0]] == "measured":
        # one batch only: the built trainer (weights, EMA, moments) stays resident, so the fixed part is at
        # least that and the per-sample part at most (peak - built) / batch; a batch b is then sure to fit
        # G when peak + (b - batch) x that bound <= G
        b0, m0 = points[0]
        record = measured[f"{prefix}{b0}"]
        built = record.get("cuda_after_build_gb" if device.startswith("cuda") else "rss_after_build_gb")
        if built is not None:
            bound = max(0.0, m0 - built) / b0
            entry.update(
                per_sample_gb_at_most=bound,
                fits_gb_at_least={
                    str(g): largest_batch(m0 - b0 * bound, bound, g) if m0 <= g else 0 for g in BUDGETS_GB
                },
            )
    return line


def derive(results: dict[str, Any], device: str) -> dict[str, Any]:
    """Per model and configuration: peaks per batch, fixed part, memory and seconds per sample, what fits."""
    table: dict[str, Any] = {}
    measured = results.get("measurements", {})
    cited = results.get("cited", {})
    for model in MODELS:
        base_seconds = None
        for configuration in CONFIGURATIONS:
            keys = [k for k in measured if k.startswith(f"{model}/{configuration}/batch_")]
            if not keys:
                continue
            opts = CONFIGURATIONS[configuration]
            points, sources, per_sample_s = _points(
                f"{model}/{configuration}/batch_", keys, measured, cited, device, opts["accumulate"]
            )
            entry: dict[str, Any] = {
                "options": opts,
                "peak_gb": {str(b): m for b, m in sorted(points)},
                "sources": {str(b): s for b, s in sorted(sources.items())},
            }
            above = {
                str(int(k.rsplit("_", 1)[1])): float(measured[k]["error"].split("above ")[1].split(" GB")[0])
                for k in keys
                if "resident memory above" in measured[k].get("error", "")
            }
            if above:  # killed by the guard: the peak is known to exceed the limit
                entry["peak_above_gb"] = above
            lean = {
                int(k.rsplit("_", 1)[1]): _peak_gb(v, device)
                for k, v in results.get("lean", {}).items()
                if k.startswith(f"{model}/{configuration}/batch_") and _peak_gb(v, device) is not None
            }
            if lean:
                entry["lean_peak_gb"] = {str(b): m for b, m in sorted(lean.items())}
            timed = results.get("timing", {}).get(_key(model, configuration, 1), {})
            if "step_seconds" in timed:  # the timing pass: all configurations back to back
                per_sample_s = [timed["step_seconds"][-1] / opts["accumulate"]]
                entry["seconds_from"] = "timing pass"
            if per_sample_s:
                entry["seconds_per_sample"] = min(per_sample_s)
                if configuration == "baseline":
                    base_seconds = entry["seconds_per_sample"]
                elif base_seconds:
                    entry["time_vs_baseline"] = entry["seconds_per_sample"] / base_seconds
            line = _line(
                entry, points, sources, lean, table.get(model, {}), measured, f"{model}/{configuration}/batch_", device
            )
            if line is not None:
                fixed, per_sample = line
                entry.update(
                    fixed_gb=fixed,
                    per_sample_gb=per_sample,
                    fits_gb={str(g): largest_batch(fixed, per_sample, g) for g in BUDGETS_GB},
                    # the paper's batch per step, as micro-batches of paper / accumulate
                    paper_batch_gb=fixed + per_sample * MODELS[model][1] / opts["accumulate"],
                )
            table.setdefault(model, {})[configuration] = entry
    return table


def _estimate_gb(first: dict[str, Any] | None, batch: int, device: str) -> float | None:
    """An upper bound of the peak at ``batch`` from a measurement at a smaller batch (``None``: no measurement).

    What grows with the batch is taken as all the smaller batch needed above the built trainer (weights, EMA,
    optimiser moments: resident memory, or CUDA allocation, after building), its gradients included: an overestimate
    by the gradients where the allocator returned their memory after building, and none where it kept it.
    """
    if first is None:
        return None
    peak = _peak_gb(first, device)
    if peak is None:
        return None
    built = first.get("cuda_after_build_gb" if device.startswith("cuda") else "rss_after_build_gb") or 0.0
    per_sample = max(0.0, peak - built) / first["batch"]
    return peak + (batch - first["batch"]) * per_sample


def markdown(results: dict[str, Any]) -> str:
    """The README table of ``results["table"]``: per model and configuration what one sample costs and what fits.

    A peak marked ``*`` was measured elsewhere (``cited``), ``> x`` is a measurement the guard stopped at x GB;
    ``<=`` / ``>=``: bounds from a single measured batch; ``-``: not measured.
    """
    device = results.get("how", {}).get("device", "cpu")
    unit = "peak allocated" if device.startswith("cuda") else "peak resident"
    paper = ", ".join(f"{m} {b}" for m, (_, b) in MODELS.items())
    lines = [
        f"| model | configuration | {unit} GB by micro-batch | fixed GB | GB per sample | s per sample | time vs "
        f"baseline | largest micro-batch in 24 / 40 / 80 GB | GB for the paper's batch ({paper}) |",
        "|" + "---|" * 9,
    ]

    def num(value: Any, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for model, rows in results.get("table", {}).items():
        for configuration, e in rows.items():
            peaks = [f"{b}: {v:.2f}" for b, v in e["peak_gb"].items() if e["sources"][b] == "measured"]
            peaks += [f"{b}: > {v:.1f}" for b, v in e.get("peak_above_gb", {}).items()]
            cited = [f"{b}: {v:.2f}*" for b, v in e["peak_gb"].items() if e["sources"][b] != "measured"]
            peaks = ", ".join(peaks) + ("; cited " + ", ".join(cited) if cited else "")
            per_sample = num(e.get("per_sample_gb"), 2)
            if "per_sample_from" in e:
                per_sample += f" (slope of {e['per_sample_from']})"
            fits = " / ".join(str(e["fits_gb"][str(g)]) for g in BUDGETS_GB) if "fits_gb" in e else "-"
            if "per_sample_gb_at_most" in e:  # one batch measured: bounds
                per_sample = f"<= {e['per_sample_gb_at_most']:.2f}"
                fits = " / ".join(f">= {e['fits_gb_at_least'][str(g)]}" for g in BUDGETS_GB)
            acc = e["options"]["accumulate"]
            need = num(e.get("paper_batch_gb"), 1)
            if acc > 1 and "paper_batch_gb" in e:
                need += f" ({acc} x {MODELS[model][1] // acc})"
            lines.append(
                f"| {model} | {configuration} | {peaks} | {num(e.get('fixed_gb'), 2)} | {per_sample} | "
                f"{num(e.get('seconds_per_sample'), 1)} | {num(e.get('time_vs_baseline'), 2)} | {fits} | "
                f"{need} |"
            )
    return "\n".join(lines)
