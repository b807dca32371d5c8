"""Smoke test of ``benchmarks/echogains.py`` (issue 5) at its smallest size: counts against the jump schedule's golden
values, the truncation arithmetic, the source datasets, the JSON's keys and types and the command line's refusals.
The benchmark itself is never a timed test."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from echogains.augment.repaint import FAST_SCHEDULE, schedule_counts
from echogains.data.nnunet import RawDataset
from echogains.ddpm.model import build_diffusion, get_config, save_weights

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "echogains.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script as a module (its file name would shadow the ``echogains`` package on sys.path)."""
    spec = importlib.util.spec_from_file_location("echogains_benchmark_script", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is created
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def micro(tmp_path_factory, bench) -> Path:
    path = tmp_path_factory.mktemp("model") / "micro.pt"
    save_weights(path, get_config("micro"), bench._seeded_network("micro", 0).state_dict())
    return path


def test_counting_wrapper_finds_the_jump_schedule_golden_values(bench):
    diffusion = build_diffusion(get_config("micro"))
    full = bench.count_evaluations(diffusion, "repaint", 8)
    fast = bench.count_evaluations(diffusion, "fast", 8)
    # RePaint's jump schedule (Lugmayr et al. 2022): (250, 10, 10) has 4,570 transitions, 2,410 network evaluations and
    # 2,160 undo steps.
    assert (full["network_evaluations_per_image"], full["undo_steps"], full["transitions"]) == (2410, 2160, 4570)
    n_fast = schedule_counts(*FAST_SCHEDULE).evaluations  # the fast default (benchmarks/repaint_oracle.py)
    assert fast["schedule"] == list(FAST_SCHEDULE) and fast["network_evaluations_per_image"] == n_fast <= 100
    assert full["network_evaluations_expected"] == 2410 and fast["network_evaluations_expected"] == n_fast


def test_truncated_run_counts_and_extrapolates_per_evaluation(bench):
    cfg = get_config("micro")
    net, diffusion = bench._seeded_network("micro", 0), build_diffusion(cfg)
    cut = bench.time_sampler(net, diffusion, "repaint", 2, cfg.image_size, max_evaluations=3)
    assert cut["truncated"] and cut["network_evaluations_run"] == 3 and cut["images_per_evaluation"] == 2
    assert cut["s_per_evaluation"] == pytest.approx(cut["seconds_run"] / 3)
    assert cut["s_per_image"] == pytest.approx(cut["s_per_evaluation"] * 2410 / 2)  # t_run / n_run * N / B
    assert cut["how"].startswith("extrapolated")
    whole = bench.time_sampler(net, diffusion, "fast", 1, cfg.image_size, schedule=(4, 2, 2))
    assert not whole["truncated"] and whole["network_evaluations_run"] == 6  # 4 steps, 2 down again after a jump
    assert whole["s_per_image"] == pytest.approx(whole["seconds_run"])


def test_make_source_has_exactly_n_training_cases_in_patient_folds(bench, tmp_path):
    root = bench.make_source(tmp_path / "Dataset970_Src", 6, (48, 40))
    ds = RawDataset(root)
    assert len(ds.case_ids("Tr")) == 6 and ds.case_ids("Ts") == []
    patient = {c: c.split("_")[0] for c in ds.case_ids("Tr")}
    for fold in ds.splits:
        assert not {patient[c] for c in fold["train"]} & {patient[c] for c in fold["val"]}


def test_smoke_run_writes_the_json_with_its_keys_types_and_ratios(bench, micro, tmp_path):
    profile = dataclasses.replace(
        bench.QUICK,
        name="smoke",
        repaint_max_evaluations=2,
        fast_max_evaluations=2,
        batch_sizes=(1, 2),
        paper_config="micro",
        paper_threads=(1,),
        paper_repeats=1,
        phantom_size=(48, 40),
        throughput_cases=8,
        throughput_k=1,
        throughput_batch=2,
        throughput_repaint=False,
        memory_cases=(5, 8),
        memory_k=1,
    )
    out = tmp_path / "results" / "echogains.json"
    returned = bench.run_benchmark(out, micro, profile, workdir=tmp_path)
    result = json.loads(out.read_text())
    assert result["ratios"] == pytest.approx(returned["ratios"])
    assert {"machine", "model", "repaint", "paper_network", "expansion", "ratios", "note"} <= set(result)
    assert isinstance(result["machine"]["cpu_count"], int) and isinstance(result["machine"]["torch_version"], str)
    assert result["model"]["source"] == "file" and result["model"]["config"] == "micro"
    for sampler, n in (("repaint", 2410), ("fast", schedule_counts(*FAST_SCHEDULE).evaluations)):
        assert result["repaint"]["counts"][sampler]["network_evaluations_per_image"] == n
        for batch in (1, 2):
            row = result["repaint"]["timing"][sampler][f"batch_{batch}"]
            assert row["truncated"] and row["network_evaluations_run"] == 2 and row["s_per_image"] > 0
    paper = result["paper_network"]
    assert paper["gflop_per_evaluation"] > 0 and paper["threads"]["1"]["ms_per_evaluation"] > 0
    thr = result["expansion"]["throughput"]
    # 2 patients -> 2 folds; fold 0 trains on one patient's 4 cases, K = 1: 4 augmented images, whatever the shards
    for n in (1, 2):
        assert thr[f"shards_{n}"]["augmented_images"] == 4 and thr[f"shards_{n}"]["complete"] == 1
        assert len(thr[f"shards_{n}"]["per_shard"]) == n
        assert thr[f"shards_{n}"]["images_per_min"] == pytest.approx(4 / thr[f"shards_{n}"]["wall_s"] * 60)
    mem = result["expansion"]["memory"]
    for n in (5, 8):
        row = mem[f"cases_{n}"]
        assert row["source_cases"] == n and row["complete"] == 1 and row["peak_rss_source"] == "VmHWM"
        assert 0 < row["rss_after_imports_mib"] <= row["peak_rss_mib"]
    ratios = result["ratios"]
    timing = result["repaint"]["timing"]
    assert ratios["fast_over_full_time_batch_1"] == pytest.approx(
        timing["fast"]["batch_1"]["s_per_image"] / timing["repaint"]["batch_1"]["s_per_image"]
    )
    assert ratios["fast_over_full_evaluations"] == pytest.approx(schedule_counts(*FAST_SCHEDULE).evaluations / 2410)
    assert ratios["mem8_over_mem5"] == pytest.approx(mem["cases_8"]["peak_rss_mib"] / mem["cases_5"]["peak_rss_mib"])
    assert ratios["shards_2_over_shards_1_throughput"] == pytest.approx(
        thr["shards_2"]["images_per_min"] / thr["shards_1"]["images_per_min"]
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--threads", "0"], "--threads must be >= 1"),
        (["--model", "missing.pt"], "DDPM weights file not found"),
    ],
)
def test_command_line_refuses_bad_arguments_before_writing(bench, tmp_path, capsys, args, message):
    out = tmp_path / "echogains.json"
    assert bench.main(["--out", str(out), "--quick", "--workdir", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
    assert bench.main(["--out", str(tmp_path), "--quick"]) == 2  # a folder is no JSON file
