"""``experiments.echo_dnd_tables`` without the long trainings: tables from real evaluator outputs, validation, resume.

Predictions are the ground-truth labels copied, so every Dice must be 1.0 and every distance 0.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from echogains.utils import EchoDataError, atomic_write_json, read_json
from experiments import echo_dnd_tables as edt
from experiments.common import check_resume


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from echogains.data.phantom import make_phantom

    root = tmp_path_factory.mktemp("edt") / "nnUNet_raw"
    return make_phantom(
        root / edt.DATASET_NAME,
        n_patients=10,
        preset="camus-like",
        layout="nnunet",
        labels="lv,myo,la",
        image_size=(48, 48),
        seed=3,
        progress=False,
    )


def copy_labels(dataset: Path, pred: Path) -> Path:
    pred.mkdir(parents=True, exist_ok=True)
    for f in (dataset / "labelsTs").glob("*.nii.gz"):
        shutil.copyfile(f, pred / f.name)
    return pred


@pytest.fixture(scope="module")
def perfect_evaluation(phantom: Path) -> Path:
    """The evaluator's outputs for predictions that are the labels (one evaluation, shared by the arms below)."""
    from echogains.evaluation.evaluate import evaluate

    folder = phantom.parent.parent / "perfect"
    pred = copy_labels(phantom, folder / "predictions")
    evaluate(pred, phantom, folder / "evaluation", subset="Ts", labels="LV", overlays=False, progress=False)
    return folder / "evaluation"


def test_tables_from_perfect_predictions(phantom: Path, perfect_evaluation: Path, tmp_path: Path) -> None:
    records = {
        arm: {"arm": arm, "training": "copied labels", "timings": {}, "evaluation": str(perfect_evaluation)}
        for arm in ("full", "gaussian_only", "nnunet")
    }
    out = tmp_path / "out"
    md, results = edt.build_report(out, records)
    for arm, numbers in results["arms"].items():
        assert numbers["dice"] == pytest.approx(1.0), arm
        assert numbers["dice_ed"] == pytest.approx(1.0) and numbers["dice_es"] == pytest.approx(1.0)
        assert numbers["hd_mm"] == pytest.approx(0.0) and numbers["msd_mm"] == pytest.approx(0.0)
        assert numbers["failures"] == 0 and numbers["n_cases"] == len(list((phantom / "labelsTs").iterdir()))
        assert numbers["ef"]["n"] >= 1  # EF of the copied masks against the analytic reference
    t4 = {(r["variation"], r["arm"]): r for r in results["table4"]}
    assert t4[("Both", "full")]["ours"].startswith("1.000") and t4[("Both", "full")]["ours_delta"] == "+0.000"
    assert t4[("Only Gaussian", "gaussian_only")]["paper"] == 0.949
    assert t4[("U-Net", "unet_conditioner")]["ours"] == "not run"
    t2 = {r["model"]: r for r in results["table2"]}
    assert t2[edt.ARM_TITLES["full"]]["paper"].startswith("0.962")
    assert t2[edt.ARM_TITLES["nnunet"]]["dice"].startswith("1.000")
    assert "## Table 2" in md and "## Table 4" in md and "Bias" in md
    assert (out / "dice_per_model.png").stat().st_size > 1000
    assert sorted(p.name for p in (out / "bland_altman").iterdir()) == ["full.png", "gaussian_only.png", "nnunet.png"]


def test_argument_validation(tmp_path: Path) -> None:
    with pytest.raises(EchoDataError, match="unknown arms"):
        edt.parse_arms("full,no_noise", quick=True)
    assert edt.parse_arms(None, quick=True) == edt.QUICK_ARMS
    assert edt.parse_arms("nnunet, full,full", quick=True) == ("nnunet", "full")
    with pytest.raises(EchoDataError, match="--steps"):
        edt.make_settings(True, steps=0)
    with pytest.raises(EchoDataError, match="--network_config"):
        edt.make_settings(True, network_config="huge")
    with pytest.raises(EchoDataError, match="dataset.json"):
        edt.make_settings(False, dataset=str(tmp_path / "missing"))
    with pytest.raises(EchoDataError, match="--preset"):
        edt.make_settings(True, preset="easy")
    assert edt.make_settings(True, preset="hard").preset == "hard"
    quick, full = edt.make_settings(True), edt.make_settings(False)
    assert quick.preset == "camus-like"
    assert (quick.network_config, quick.image_size, quick.ensemble, quick.device) == ("tiny", 64, 3, "cpu")
    assert (full.network_config, full.image_size, full.steps, full.nnunet_trainer) == (
        "paper",
        256,
        200_000,
        "nnUNetTrainerEcho",
    )
    work = tmp_path / "work"
    with pytest.raises(EchoDataError, match="separate folders"):
        edt.run(out=str(work / "out"), work=str(work), quick=True, progress=False)
    with pytest.raises(EchoDataError, match="unknown arms"):
        edt.run(out=str(tmp_path / "o"), work=str(work), quick=True, arms="bogus", progress=False)
    assert not work.exists()  # nothing written before the arguments are checked


def test_resume_skips_finished_steps_and_refuses_other_settings(
    phantom: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = phantom.parent.parent
    settings = edt.make_settings(True, steps=5, n_patients=10, phantom_size=48, seed=3)
    check_resume(work, settings.comparable(), overwrite=False)
    with pytest.raises(EchoDataError, match="other settings"):
        check_resume(work, edt.make_settings(True, steps=6, n_patients=10, phantom_size=48, seed=3).comparable(), False)

    def no_bundle(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished step was run again")

    monkeypatch.setattr(edt, "_bundle", no_bundle)
    monkeypatch.setattr(edt, "_weights_info", lambda path: {"parameters": 0})
    # trained and predicted, not yet evaluated: only the evaluation runs
    folder = edt.arm_dir(work, "full")
    atomic_write_json(folder / "trained.json", {"steps": 5})
    copy_labels(phantom, folder / "predictions")
    atomic_write_json(folder / "predictions" / "echo_dnd_inference.json", {"cases": []})
    record = edt.run_arm(str(work), asdict(settings), "full")
    assert set(record["timings"]) == {"evaluate"}
    assert read_json(folder / "result.json")["arm"] == "full"
    # finished: returned as stored
    (folder / "evaluation" / "metrics_summary.json").unlink()
    assert edt.run_arm(str(work), asdict(settings), "full") == record
    assert not (folder / "evaluation" / "metrics_summary.json").exists()


def test_weights_info_reads_both_checkpoint_formats(tmp_path: Path) -> None:
    """Bundle 0.3.0's plain state_dict (the committed demo weights: their config is the bundle's; a trainer's: its
    network_config.json beside it) and the earlier nested format. Every Echo-DND arm of a run failed with KeyError
    'state_dict' before."""
    import torch

    shipped = edt.BUNDLE / "models" / "model.pt"
    state = torch.load(shipped, map_location="cpu", weights_only=True)
    floats = sum(v.numel() for v in state.values() if v.is_floating_point())
    assert floats > 0
    expected = {"parameters": floats, "ablation": "full", "image_size": 64}
    assert edt._weights_info(shipped) == expected
    import importlib

    from echogains.analysis.segmenters import load_bundle_scripts

    name = load_bundle_scripts(edt.BUNDLE).__name__
    model = importlib.import_module(name + ".train").load_model(shipped)
    trained = importlib.import_module(name + ".checkpoint").save_weights(model, tmp_path / "arm" / "model.pt", "kl_vb")
    assert edt._weights_info(trained) == {**expected, "ablation": "kl_vb"}  # network_config.json beside it
    nested = tmp_path / "nested.pt"
    torch.save({"config": model.config.to_dict(), "state_dict": state, "ablation": "bernoulli_only"}, nested)
    assert edt._weights_info(nested) == {**expected, "ablation": "bernoulli_only"}


def test_prepare_dataset_writes_the_preset(tmp_path, monkeypatch) -> None:
    seen = {}
    monkeypatch.setattr(edt, "make_phantom", lambda path, **kw: seen.update(kw) or path)
    edt.prepare_dataset(tmp_path, edt.make_settings(True, preset="hard", seed=4))
    assert (seen["preset"], seen["seed"], seen["labels"]) == ("hard", 4, "lv,myo,la")
