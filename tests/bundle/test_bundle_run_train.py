"""``python -m monai.bundle run --config_file .../train.json``: a few steps on a phantom dataset, then a resume."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from scripts.train import load_model

from tests.bundle_cli import run_bundle

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "echo_dnd"
CONFIG = BUNDLE / "configs" / "train.json"


def test_train_then_resume(tmp_path: Path) -> None:
    from echogains.data.phantom import make_phantom

    dataset = make_phantom(
        tmp_path / "Dataset001_P", n_patients=3, layout="nnunet", image_size=(48, 40), progress=False
    )
    out = tmp_path / "run"
    args = [
        "--config_file",
        str(CONFIG),
        "--dataset_dir",
        str(dataset),
        "--output_dir",
        str(out),
        "--network_config",
        "tiny",
        "--image_size",
        "32",
        "--batch_size",
        "2",
        "--val_every",
        "2",
        "--val_steps",
        "2",
        "--save_every",
        "1",
        "--device",
        "cpu",
        "--progress",
        "False",
    ]
    log1 = run_bundle([*args, "--steps", "2"], tmp_path)
    assert "resumed" not in log1
    first = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert first["step"] == 2 and first["config"]["image_size"] == 32
    log2 = run_bundle([*args, "--steps", "4"], tmp_path)
    assert "at step 2" in log2 and "resumed" in log2
    second = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert second["step"] == 4
    # a restart from step 0 would log step 2 twice; a resume continues: 2, then 4
    with (out / "metrics.csv").open() as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [2, 4]
    assert any(not torch.equal(first["model"][k], second["model"][k]) for k in first["model"])
    model = load_model(out / "model.pt")
    assert model.config.image_size == 32
    assert all(torch.equal(v, second["ema"][k]) for k, v in model.state_dict().items())
