"""``python -m monai.bundle run [inference] --config_file configs/inference.json``: from the bundle folder, and from
another folder with ``--bundle_root`` (the model-zoo convention, ``"bundle_root": "."``).

The foreign working folder holds a decoy ``scripts`` package that fails on import: the bundle must import its own.
With no ``--dataset_dir`` the bundle segments its shipped sample images; the two command forms give the same bytes.
"""

from __future__ import annotations

import filecmp
import json
import os
from pathlib import Path

import SimpleITK as sitk
import torch
from scripts import EchoDND, EchoDNDConfig

from tests.bundle_cli import run_bundle

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "echo_dnd"
CONFIG = BUNDLE / "configs" / "inference.json"


def save_tiny_weights(path: Path, size: int = 32) -> Path:
    """Untrained tiny weights (a plain state_dict) and their ``network_config.json``."""
    from scripts.checkpoint import save_weights

    torch.manual_seed(0)
    return save_weights(EchoDND(EchoDNDConfig.tiny(size)), path)


def decoy_folder(path: Path) -> Path:
    """A working folder whose own ``scripts`` package must not be the one imported."""
    (path / "scripts").mkdir(parents=True)
    (path / "scripts" / "__init__.py").write_text("raise ImportError('the decoy scripts package was imported')\n")
    return path


def test_inference_from_the_bundle_folder_and_with_bundle_root(tmp_path: Path) -> None:
    weights = save_tiny_weights(tmp_path / "model.pt")
    network = str(tmp_path / "network_config.json")
    common = ["--model_path", str(weights), "--network_config", network, "--num_steps", "2", "--device", "cpu"]
    common += ["--progress", "False"]
    # the documented form from the bundle folder: run id "inference", relative paths, the shipped sample
    run_bundle(
        ["inference", "--config_file", "configs/inference.json", "--output_dir", str(tmp_path / "a"), *common], BUNDLE
    )
    # plain "run" from another folder (with a decoy scripts package) with --bundle_root and a relative config path
    cwd = decoy_folder(tmp_path / "elsewhere")
    config = os.path.relpath(CONFIG, cwd)
    run_bundle(
        ["--config_file", config, "--bundle_root", str(BUNDLE), "--output_dir", str(tmp_path / "b"), *common], cwd
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
