"""Smoke test of ``benchmarks/train_memory.py`` (issue 16) at its smallest size (``--scale tiny``): the per-sample
arithmetic, the memory guard (estimate and kill), the derived table and its markdown. Never a timed test."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "train_memory.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_memory_benchmark_script", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_per_sample_arithmetic(bench):
    fixed, per_sample = bench.fit_line([(1, 7.0), (2, 9.5)])
    assert fixed == pytest.approx(4.5) and per_sample == pytest.approx(2.5)
    assert bench.largest_batch(4.5, 2.5, 24) == 7  # 4.5 + 7 x 2.5 = 22 <= 24 < 24.5
    assert bench.largest_batch(4.5, 2.5, 4.0) == 0
    assert bench.fit_line([(1, 7.0)]) is None
    # what grows with the batch is taken as all of the peak above the built trainer (gradients included)
    first = {"vm_hwm_gb": 7.0, "rss_after_build_gb": 3.0, "gradients_gb": 1.0, "batch": 1}
    assert bench._estimate_gb(first, 3, "cpu") == pytest.approx(7.0 + 2 * 4.0)


def test_tiny_run_table_guard_and_markdown(bench, tmp_path):
    out = tmp_path / "tm.json"
    config = "checkpointing+bf16+acc"
    results = bench.run(
        str(out),
        models=["ddpm"],
        configurations=[config],
        batches=[1, 2],
        threads=1,
        steps=1,
        max_gb=9.0,
        scale="tiny",
        cite=[f"ddpm/{config}/batch_4=3.0@a test's number"],
    )
    assert json.loads(out.read_text())["how"]["scale"] == "tiny"
    for batch in (1, 2):
        record = results["measurements"][f"ddpm/{config}/batch_{batch}"]
        assert "error" not in record, record
        assert 0 < record["rss_after_build_gb"] <= record["vm_hwm_gb"]
        # the child's own peak; ru_maxrss may also hold the parent's (pytest's) high-water mark at the exec
        assert record["ru_maxrss_gb"] >= 0.99 * record["vm_hwm_gb"]
        assert len(record["step_seconds"]) == 1
    row = results["table"]["ddpm"][config]
    assert row["options"] == {"precision": "bf16", "checkpointing": True, "accumulate": 2}
    assert set(row["fits_gb"]) == {"24", "40", "80"} and row["fits_gb"]["24"] <= row["fits_gb"]["80"]
    assert row["sources"] == {"1": "measured", "2": "measured", "4": "cited: a test's number"}
    table = bench.markdown(results)
    assert f"| ddpm | {config} | 1: " in table and "4: 3.00*" in table and "(2 x 32)" in table
    # the guard: an estimate above --max_gb is not run, a child above it is killed (and recorded as such)
    guarded = bench.run(
        str(tmp_path / "guard.json"),
        models=["ddpm"],
        configurations=["baseline"],
        batches=[1],
        threads=1,
        steps=1,
        max_gb=0.2,
        scale="tiny",
    )
    assert "resident memory above 0.2 GB" in guarded["measurements"]["ddpm/baseline/batch_1"]["error"]
    lean = bench.run(
        str(out),
        models=["ddpm"],
        configurations=[config],
        batches=[1],
        threads=1,
        steps=1,
        max_gb=9.0,
        scale="tiny",
        resume=True,
        lean=True,
    )  # the slope mode's child runs (SGD, no EMA)
    assert lean["lean"][f"ddpm/{config}/batch_1"]["vm_hwm_gb"] > 0
    assert lean["table"]["ddpm"][config]["lean_peak_gb"].keys() == {"1"}
    resumed = bench.run(
        str(out),
        models=["ddpm"],
        configurations=[config],
        batches=[1, 2, 4096],
        threads=1,
        steps=1,
        max_gb=2.0,
        scale="tiny",
        resume=True,
    )  # nothing new is run: batch 4096 is estimated too big
    assert "is above --max_gb 2" in resumed["skipped"][f"ddpm/{config}/batch_4096"]
    assert resumed["measurements"].keys() == results["measurements"].keys()  # kept (as written: floats rounded)
    for key, record in results["measurements"].items():
        assert resumed["measurements"][key]["vm_hwm_gb"] == pytest.approx(record["vm_hwm_gb"], rel=1e-6)


def test_derive_takes_the_slope_from_lean_runs_and_keeps_guard_kills(bench):
    results = {
        "measurements": {
            "echo_dnd/checkpointing/batch_1": {"vm_hwm_gb": 7.5, "step_seconds": [200.0]},
            "echo_dnd/checkpointing/batch_2": {"error": "resident memory above 9.0 GB"},
            "echo_dnd/baseline/batch_1": {"vm_hwm_gb": 8.0, "step_seconds": [100.0]},
        },
        "lean": {
            "echo_dnd/checkpointing/batch_1": {"vm_hwm_gb": 4.5},
            "echo_dnd/checkpointing/batch_2": {"vm_hwm_gb": 6.5},
        },
    }
    row = bench.derive(results, "cpu")["echo_dnd"]["checkpointing"]
    assert row["per_sample_from"] == "lean" and row["per_sample_gb"] == pytest.approx(2.0)
    assert row["fixed_gb"] == pytest.approx(5.5) and row["fits_gb"]["24"] == 9
    assert row["peak_above_gb"] == {"2": 9.0} and row["time_vs_baseline"] == pytest.approx(2.0)
    assert "fixed_gb" not in bench.derive(results, "cpu")["echo_dnd"]["baseline"]  # one point, no slope
    # one point and the built trainer's size: bounds (the built part stays resident, so at most peak - built grows)
    results["measurements"]["echo_dnd/baseline/batch_1"]["rss_after_build_gb"] = 5.0
    base = bench.derive(results, "cpu")["echo_dnd"]["baseline"]
    assert base["per_sample_gb_at_most"] == pytest.approx(3.0)
    assert base["fits_gb_at_least"] == {"24": 6, "40": 11, "80": 25}  # 8 + 5 x 3 = 23 <= 24
    table = bench.markdown({"table": bench.derive(results, "cpu")})
    assert "| echo_dnd | checkpointing | 1: 7.50, 2: > 9.0 | 5.50 | 2.00 (slope of lean) |" in table
    assert "<= 3.00" in table and ">= 6 / >= 11 / >= 25" in table
    # a timing pass (all configurations back to back) is preferred for the seconds
    results["timing"] = {
        "echo_dnd/checkpointing/batch_1": {"step_seconds": [30.0]},
        "echo_dnd/baseline/batch_1": {"step_seconds": [20.0]},
    }
    row = bench.derive(results, "cpu")["echo_dnd"]["checkpointing"]
    assert row["seconds_from"] == "timing pass" and row["time_vs_baseline"] == pytest.approx(1.5)
