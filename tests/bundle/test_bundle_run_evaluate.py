"""``monai.bundle run --config_file .../evaluate.json``: predictions for a labelled dataset, then evaluation."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from scripts import EchoDND, EchoDNDConfig

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "echo_dnd"
AUXILIARY = ("_uncertainty.nii.gz", "_samples.nii.gz")  # written beside each mask (save_samples: true)
CONFIG = BUNDLE / "configs" / "evaluate.json"


def save_tiny_weights(path: Path, size: int = 32) -> Path:
    """Untrained tiny weights (a plain state_dict) and their ``network_config.json``."""
    from scripts.checkpoint import save_weights

    torch.manual_seed(0)
    return save_weights(EchoDND(EchoDNDConfig.tiny(size)), path)


def test_evaluate_writes_predictions_and_report(tmp_path: Path) -> None:
    from echogains.data.phantom import make_phantom

    dataset = make_phantom(
        tmp_path / "Dataset001_P", n_patients=3, layout="nnunet", image_size=(48, 40), progress=False
    )
    weights = save_tiny_weights(tmp_path / "model.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ECHOGAINS_NO_PROGRESS="1")
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(CONFIG),
        "--dataset_dir",
        str(dataset),
        "--output_dir",
        str(tmp_path / "eval"),
        "--model_path",
        str(weights),
        "--bundle_root",
        str(BUNDLE),
        "--num_steps",
        "2",
        "--device",
        "cpu",
        "--overlays",
        "False",
        "--progress",
        "False",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    test_ids = sorted(p.name[: -len("_0000.nii.gz")] for p in (dataset / "imagesTs").iterdir())
    preds = tmp_path / "eval" / "predictions"
    masks = [p.name[: -len(".nii.gz")] for p in preds.glob("*.nii.gz") if not p.name.endswith(AUXILIARY)]
    assert sorted(masks) == test_ids
    assert sorted(p.name for p in preds.glob("*_samples.nii.gz")) == [f"{c}_samples.nii.gz" for c in test_ids]
    summary = json.loads((tmp_path / "eval" / "report" / "metrics_summary.json").read_text())
    assert summary["n_cases"] == len(test_ids) and summary["subset"] == "Ts" and summary["labels"] == {"LV": 1}
    with (tmp_path / "eval" / "report" / "metrics_per_case.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["case_id"] for r in rows) == test_ids
    dice = [float(r["LV_dice"]) for r in rows if r.get("LV_dice") not in (None, "")]
    assert len(dice) == len(test_ids) and all(0.0 <= d <= 1.0 for d in dice)
    assert (tmp_path / "eval" / "report" / "report.html").is_file()


def test_unlabelled_case_is_refused_before_any_prediction(tmp_path: Path) -> None:
    import pytest
    from scripts import EchoDNDSampler
    from scripts.evaluate import EchoDNDEvaluation
    from scripts.infer import EchoDNDInference

    from echogains.data.phantom import make_phantom
    from echogains.utils import EchoDataError

    dataset = make_phantom(
        tmp_path / "Dataset001_P", n_patients=3, layout="nnunet", image_size=(48, 40), progress=False
    )
    missing = sorted((dataset / "labelsTs").iterdir())[0]
    missing.unlink()
    torch.manual_seed(0)
    inferer = EchoDNDInference(
        EchoDND(EchoDNDConfig.tiny(32)), EchoDNDSampler(num_steps=1), dataset, tmp_path / "pred", progress=False
    )
    with pytest.raises(EchoDataError, match=missing.name):
        EchoDNDEvaluation(inferer, tmp_path / "report", progress=False).run()
    assert not (tmp_path / "pred").exists() and not (tmp_path / "report").exists()
    with pytest.raises(EchoDataError, match="no label named"):
        EchoDNDEvaluation(inferer, tmp_path / "report", labels="RV", progress=False).check()
