"""``evaluate.json`` on a MONAI engine: a ``SupervisedEvaluator`` writes the same predictions as the direct
inference (``inference.json``'s ``inference_direct``), and its ``MeanDice`` per case is ``echogains evaluate``'s."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scripts import EchoDND, EchoDNDConfig

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "echo_dnd"
CONFIGS = BUNDLE / "configs"
# tiny settings, the test cases; seed 0 (other seeds give these untrained weights masks that miss every LV)
SETTINGS = ["--num_steps", "2", "--ensemble", "2", "--seed", "0", "--subset", "Ts", "--device", "cpu"]
SETTINGS += ["--progress", "False"]
pytestmark = pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ECHOGAINS_NO_PROGRESS="1")
    cmd = [sys.executable, "-m", "monai.bundle", "run", *args, "--bundle_root", str(BUNDLE)]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")  # the module is in GROUPED_MODULES: its tests run back to back on one worker
def runs(tmp_path_factory) -> dict[str, Path]:
    """One phantom dataset and tiny weights; ``evaluate.json`` and ``inference_direct`` on them (built once)."""
    from scripts.checkpoint import save_weights

    from echogains.data.phantom import make_phantom

    tmp = tmp_path_factory.mktemp("engine")
    dataset = make_phantom(tmp / "Dataset001_P", n_patients=3, layout="nnunet", image_size=(48, 40), progress=False)
    torch.manual_seed(0)
    weights = save_weights(EchoDND(EchoDNDConfig.tiny(32)), tmp / "model.pt")
    common = ["--dataset_dir", str(dataset), "--model_path", str(weights), *SETTINGS]
    _run(
        ["--config_file", str(CONFIGS / "evaluate.json"), "--output_dir", str(tmp / "eval"), "--overlays", "False"]
        + common,
        tmp,
    )
    _run(
        ["inference_direct", "--config_file", str(CONFIGS / "inference.json"), "--output_dir", str(tmp / "direct")]
        + common,
        tmp,
    )
    return {
        "dataset": dataset,
        "weights": weights,
        "engine": tmp / "eval" / "predictions",
        "report": tmp / "eval" / "report",
        "direct": tmp / "direct",
    }


def _test_ids(dataset: Path) -> list[str]:
    return sorted(p.name[: -len("_0000.nii.gz")] for p in (dataset / "imagesTs").iterdir())


def test_engine_predictions_equal_the_direct_inference(runs: dict[str, Path]) -> None:
    ids = _test_ids(runs["dataset"])
    names = sorted(p.name for p in runs["direct"].glob("*.nii.gz"))
    expected = sorted(f"{c}{suffix}.nii.gz" for c in ids for suffix in ("", "_uncertainty", "_samples"))
    assert names == expected  # 2D phantom cases: masks, uncertainty maps and member samples
    assert sorted(p.name for p in runs["engine"].glob("*.nii.gz")) == expected
    assert not (runs["engine"] / ".staging").exists()
    for name in names:
        direct = sitk.ReadImage(str(runs["direct"] / name))
        engine = sitk.ReadImage(str(runs["engine"] / name))
        assert engine.GetPixelID() == direct.GetPixelID(), name
        a, b = sitk.GetArrayFromImage(direct), sitk.GetArrayFromImage(engine)
        assert a.shape == b.shape and np.array_equal(a, b), name
        for get in ("GetSpacing", "GetOrigin", "GetDirection"):
            assert np.allclose(getattr(engine, get)(), getattr(direct, get)(), rtol=0, atol=1e-5), (name, get)
        if not name.endswith(("_uncertainty.nii.gz", "_samples.nii.gz")):
            assert a.any() and set(np.unique(a).tolist()) <= {0, 1}, name  # not trivially equal: a mask there
    # the run record, read by echogains' EF intervals and uncertainty plots (cases[].members)
    engine = json.loads((runs["engine"] / "echo_dnd_inference.json").read_text())
    direct = json.loads((runs["direct"] / "echo_dnd_inference.json").read_text())
    assert engine["pipeline"] == "monai.engines.SupervisedEvaluator"
    assert {k: v for k, v in engine.items() if k not in ("cases", "pipeline")} == {
        k: v for k, v in direct.items() if k != "cases"
    }
    assert engine["seed"] == 0 and engine["num_steps"] == 2 and engine["ensemble"] == 2
    assert [c["case_id"] for c in engine["cases"]] == [c["case_id"] for c in direct["cases"]] == ids
    for ours, theirs in zip(engine["cases"], direct["cases"]):
        assert ours["members"] == theirs["members"] == ["gaussian"] * 2 + ["bernoulli"] * 2
        assert abs(ours["mean_uncertainty"] - theirs["mean_uncertainty"]) < 1e-7
        for key in ("input", "frames", "size", "mask_pixels", "staple_sensitivity", "staple_specificity"):
            assert ours[key] == theirs[key], key
        assert np.allclose(ours["spacing"], theirs["spacing"], rtol=0, atol=1e-6)


def test_engine_mean_dice_is_echogains_lv_dice(runs: dict[str, Path]) -> None:
    with (runs["report"] / "lv_dice_raw.csv").open() as f:  # MONAI's MetricsSaver
        engine = {row["filename"]: float(row["class0"]) for row in csv.DictReader(f)}
    with (runs["report"] / "metrics_per_case.csv").open() as f:  # echogains evaluate
        field = {row["case_id"]: float(row["LV_dice"]) for row in csv.DictReader(f)}
    assert sorted(engine) == sorted(field) == _test_ids(runs["dataset"])
    assert len(set(field.values())) > 1  # the cases differ: a mix-up of cases would show
    for case, dice in field.items():
        assert 0.0 < dice < 1.0 and abs(engine[case] - dice) < 1e-6, (case, engine[case], dice)
    summary = json.loads((runs["report"] / "metrics_summary.json").read_text())
    assert summary["n_cases"] == len(field) and summary["subset"] == "Ts" and summary["labels"] == {"LV": 1}


def test_the_engine_is_a_supervised_evaluator(runs: dict[str, Path], tmp_path: Path) -> None:
    from monai.bundle import ConfigParser
    from monai.engines import SupervisedEvaluator
    from monai.handlers import MeanDice, MetricsSaver, StatsHandler
    from monai.transforms import Invertd
    from scripts.engine import EngineEvaluation, FramesInferer

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "evaluate.json"))
    parser.update(
        {
            "bundle_root": str(BUNDLE),
            "dataset_dir": str(runs["dataset"]),
            "model_path": str(runs["weights"]),
            "output_dir": str(tmp_path / "eval"),
            "device": "cpu",
        }
    )
    assert parser["run"] == parser["evaluating"] == ["$@check_arguments", "$@evaluation.run()"]
    evaluation = parser.get_parsed_content("evaluation")
    evaluator = parser.get_parsed_content("evaluator")
    assert isinstance(evaluation, EngineEvaluation) and evaluation.evaluator is evaluator
    assert type(evaluator) is SupervisedEvaluator and isinstance(evaluator.inferer, FramesInferer)
    assert evaluator.data_loader.batch_size == 1 and parser["evaluator"]["decollate"] is True
    handlers = [type(h) for h in parser.get_parsed_content("val_handlers")]
    assert StatsHandler in handlers and MetricsSaver in handlers
    assert isinstance(parser.get_parsed_content("key_metric")["lv_dice"], MeanDice)
    assert [d["label"].endswith(".nii.gz") for d in evaluation.plan.datalist] == [True] * 4
    assert not (tmp_path / "eval").exists()  # parsing checked the cases and wrote nothing
    # the inference postprocessing, reused as it is after the split; Invertd against this config's preprocessing
    inference = json.loads((CONFIGS / "inference.json").read_text())
    ours = json.loads((CONFIGS / "evaluate.json").read_text())
    assert ours["postprocessing"]["transforms"][0]["_target_"] == "scripts.engine.SplitOutputd"
    assert ours["postprocessing"]["transforms"][1:] == inference["postprocessing"]["transforms"]
    invert = [t for t in parser.get_parsed_content("postprocessing").transforms if isinstance(t, Invertd)]
    assert len(invert) == 1 and invert[0].transform is parser.get_parsed_content("preprocessing")
    # the inference preprocessing: the label loaded and put on the channel axis with the image, binarised
    image_steps = [
        dict(t, keys="image") for t in ours["preprocessing"]["transforms"] if t["_target_"] != "LabelToMaskd"
    ]
    assert image_steps == inference["preprocessing"]["transforms"]
