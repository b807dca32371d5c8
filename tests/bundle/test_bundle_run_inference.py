"""``python -m monai.bundle run [inference] --config_file .../inference.json`` from a foreign folder, both forms.

The working folder holds a decoy ``scripts`` package that fails on import: the bundle must import its own. With no
``--dataset_dir`` the bundle segments its shipped sample images; the two command forms give the same bytes.
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

import SimpleITK as sitk
import torch
from scripts import EchoDND, EchoDNDConfig

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "echo_dnd"
CONFIG = BUNDLE / "configs" / "inference.json"


def save_tiny_weights(path: Path, size: int = 32) -> Path:
    torch.manual_seed(0)
    model = EchoDND(EchoDNDConfig.tiny(size))
    torch.save({"config": model.config.to_dict(), "state_dict": model.state_dict()}, path)
    return path


def decoy_folder(path: Path) -> Path:
    """A working folder whose own ``scripts`` package must not be the one imported."""
    (path / "scripts").mkdir(parents=True)
    (path / "scripts" / "__init__.py").write_text("raise ImportError('the decoy scripts package was imported')\n")
    return path


def run_bundle(args: list[str], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ECHOGAINS_NO_PROGRESS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr


def test_inference_both_forms_from_any_folder(tmp_path: Path) -> None:
    weights = save_tiny_weights(tmp_path / "model.pt")
    cwd = decoy_folder(tmp_path / "elsewhere")
    common = ["--model_path", str(weights), "--num_steps", "2", "--device", "cpu", "--progress", "False"]
    # the form users type: run id "inference", default dataset (the shipped sample)
    run_bundle(["inference", "--config_file", str(CONFIG), "--output_dir", str(tmp_path / "a"), *common], cwd)
    # plain "run", a relative config path and an explicit dataset
    run_bundle(
        [
            "--config_file",
            os.path.relpath(CONFIG, cwd),
            "--dataset_dir",
            str(BUNDLE / "sample_data"),
            "--output_dir",
            str(tmp_path / "b"),
            *common,
        ],
        cwd,
    )
    sample = sorted(p.name[: -len("_0000.nii.gz")] for p in (BUNDLE / "sample_data" / "imagesTs").iterdir())
    for case in sample:
        for name in (f"{case}.nii.gz", f"{case}_uncertainty.nii.gz"):
            assert filecmp.cmp(tmp_path / "a" / name, tmp_path / "b" / name, shallow=False), name
        pred = sitk.ReadImage(str(tmp_path / "a" / f"{case}.nii.gz"))
        image = sitk.ReadImage(str(BUNDLE / "sample_data" / "imagesTs" / f"{case}_0000.nii.gz"))
        assert pred.GetSize() == image.GetSize() and pred.GetSpacing() == image.GetSpacing()
        assert pred.GetOrigin() == image.GetOrigin() and pred.GetDirection() == image.GetDirection()
    record = json.loads((tmp_path / "a" / "echo_dnd_inference.json").read_text())
    assert record["num_steps"] == 2 and record["device"] == "cpu"
    assert sorted(c["case_id"] for c in record["cases"]) == sample
    assert record["model_config"]["image_size"] == 32
