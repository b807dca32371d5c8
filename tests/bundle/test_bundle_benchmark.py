"""Smoke test of ``benchmarks/echo_dnd.py`` at its smallest size: FLOP counting on meta tensors against real ones,
the Dice arithmetic, the Dice-vs-steps study on a tiny phantom, and the target verdicts. Never a timed test."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from scripts import Condition, EchoDND, EchoDNDConfig
from torch.utils.flop_counter import FlopCounterMode

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "echo_dnd.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("echo_dnd_benchmark_script", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is created
    spec.loader.exec_module(module)
    return module


def test_meta_flop_count_equals_real_count_plus_attention(bench: ModuleType) -> None:
    """On CPU tensors torch's counter misses the fused attention kernel; on meta tensors attention is counted (bmm)."""
    counts = bench.network_flops("tiny")
    assert counts["evaluation_gflop"] == pytest.approx(counts["gnem_gflop"] + counts["bnem_gflop"])
    assert counts["conditioner_gflop"] > 0 and counts["bnem_gflop"] > 0

    def per_op(device: str) -> dict[str, int]:
        torch.manual_seed(0)
        with torch.device(device):
            model = EchoDND(EchoDNDConfig.tiny(64)).eval()
            x = torch.rand(1, 1, 64, 64)
            t = torch.full((1,), 500, dtype=torch.long)
        with torch.no_grad():
            cond = Condition(x, list(model.conditioner(x)))
            with FlopCounterMode(display=False) as counter:
                model.gnem(x, t, cond)
        return {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}

    meta, real = per_op("meta"), per_op("cpu")
    assert {k: meta[k] for k in real} == real  # convolutions and linear layers: identical counts
    assert set(meta) - set(real) <= {"aten.bmm", "aten._scaled_dot_product_flash_attention"}
    assert sum(meta.values()) / 1e9 == pytest.approx(counts["gnem_gflop"], rel=1e-9)
    # attention: at 16 x 16 (256 tokens) QK^T and AV cost 2 * 2 * 256^2 * C FLOP per head group -> a positive share
    assert sum(meta.values()) > sum(real.values())


def test_matmul_peak_and_dice(bench: ModuleType) -> None:
    peak = bench.matmul_peak(64, 2)
    assert peak["gflops"] == pytest.approx(2 * 64**3 / peak["best_s"] / 1e9)
    a = np.zeros((8, 8), bool)
    a[2:5, 2:5] = True
    b = np.zeros((8, 8), bool)
    b[2:5, 2:4] = True  # 6 of a's 9 pixels
    assert bench._dice(a, a) == 1.0 and bench._dice(a, ~a) == 0.0 and bench._dice(a & ~a, a & ~a) == 1.0
    assert bench._dice(a, b) == pytest.approx(2 * 6 / 15)


def test_dice_vs_steps_on_tiny_phantom(bench: ModuleType, tmp_path: Path) -> None:
    from echogains.data.phantom import make_phantom

    root = make_phantom(
        tmp_path / "Dataset990_B", n_patients=2, layout="nnunet", labels="lv", image_size=(40, 32), progress=False
    )
    torch.manual_seed(0)
    model = EchoDND(EchoDNDConfig.tiny(32)).eval()
    rows = bench.dice_vs_steps(model, root, "all", (2, 1), tmp_path / "work", seeds=(0, 1), ensemble=2)
    assert [r["steps"] for r in rows] == [2, 1]
    for row in rows:
        assert row["images"] == 8 and len(row["dice"]) == 8 and 0.0 <= row["mean_dice"] <= 1.0
        assert row["seconds_per_image"] > 0 and row["ensemble"] == 2
        per_seed = row["fused"]["per_seed"]
        assert len(per_seed) == 2 and row["mean_dice"] == pytest.approx(np.mean(per_seed))
        assert row["fused"]["spread"] == pytest.approx(max(per_seed) - min(per_seed))
        assert set(row["chains"]) == {"gaussian", "bernoulli"}
        assert all(len(c["per_seed"]) == 2 and 0.0 <= c["mean_dice"] <= 1.0 for c in row["chains"].values())


def test_member_dice_is_each_chains_mean_over_its_members(bench: ModuleType, tmp_path: Path) -> None:
    """An oracle: members whose Dice against the label is known by construction."""
    import SimpleITK as sitk

    from echogains.data.phantom import make_phantom

    root = make_phantom(
        tmp_path / "Dataset991_B", n_patients=1, layout="nnunet", labels="lv", image_size=(40, 32), progress=False
    )
    from echogains.data.nnunet import RawDataset

    dataset = RawDataset(root)
    preds, record = tmp_path / "preds", {"cases": []}
    preds.mkdir()
    for case in dataset.case_ids("all"):
        truth = (sitk.GetArrayFromImage(dataset.read_label(case)) == dataset.label_value("LV")).astype(np.uint8)
        members = np.stack([truth, np.zeros_like(truth), truth, truth])  # gaussian: 1, 0; bernoulli: 1, 1
        sitk.WriteImage(sitk.GetImageFromArray(members), str(preds / f"{case}_samples.nii.gz"))
        record["cases"].append({"case_id": case, "members": ["gaussian", "gaussian", "bernoulli", "bernoulli"]})
    out = bench._member_dice(root, "all", preds, record)
    n = len(dataset.case_ids("all"))
    assert out == {"gaussian": [0.5] * n, "bernoulli": [1.0] * n}


def test_target_verdicts(bench: ModuleType) -> None:
    result = {
        "networks": {"paper": {"fraction_of_matmul_peak": 0.4, "fraction_of_matmul_peak_same_process": 0.55}},
        "dice_vs_steps": [{"steps": 1000, "mean_dice": 0.90}, {"steps": 10, "mean_dice": 0.885}],
        "paper_inference": {"seconds_per_image": 95.0},
        "weights": {"trained": True},
    }
    targets = bench.judge_targets(result)
    assert targets["paper_fraction_of_matmul_peak"]["met"] is True
    assert targets["dice_gap_10_vs_1000_steps"]["value"] == pytest.approx(0.015)
    assert targets["dice_gap_10_vs_1000_steps"]["met"] is False
    assert targets["paper_seconds_per_image_10_steps"]["met"] is False
    result["weights"]["trained"] = False  # untrained weights: Dice is not judged
    assert bench.judge_targets(result)["dice_gap_10_vs_1000_steps"]["met"] is None
