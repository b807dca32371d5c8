"""Each config of the Echo-DND bundle on random NIfTI files, the MONAI model-zoo way (``ci/unit_tests/test_*.py``).

The test writes an nnU-Net raw dataset of float noise with a random ellipse of LV in each label (not the phantom),
in a non-unit spacing, a non-zero origin and a non-identity direction, then runs
``python -m monai.bundle run`` with ``train.json`` (2 steps, then a resume to 4), ``inference.json`` and
``evaluate.json`` on the weights that training wrote. One test: every run needs the one before it.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from tests.bundle_cli import run_bundle

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "echo_dnd"
CONFIGS = BUNDLE / "configs"
SHAPE = (48, 40)  # (rows, columns): SimpleITK size (40, 48)
SPACING = (0.3, 0.45)
ORIGIN = (-12.5, 7.25)
DIRECTION = (0.0, 1.0, 1.0, 0.0)  # axes swapped: a copied grid keeps it, a default one does not
TRAIN_IDS = [f"rand{i:04d}_4CH_{phase}" for i in (1, 2) for phase in ("ED", "ES")]
TEST_IDS = ["rand0003_4CH_ED", "rand0003_4CH_ES"]
AUXILIARY = ("_uncertainty.nii.gz", "_samples.nii.gz")
SMALL = ["--device", "cpu", "--batch_size", "2", "--seed", "0", "--progress", "False"]


def write_nifti(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION)
    sitk.WriteImage(image, str(path))


def random_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Float noise and a label holding one random ellipse of 1 (LV) well inside the image."""
    rows, cols = SHAPE
    y, x = np.mgrid[:rows, :cols].astype(np.float64)
    cy, cx = rng.uniform(0.4, 0.6) * rows, rng.uniform(0.4, 0.6) * cols
    ay, ax = rng.uniform(0.15, 0.3) * rows, rng.uniform(0.15, 0.3) * cols
    angle = rng.uniform(0, math.pi)
    u = (x - cx) * math.cos(angle) + (y - cy) * math.sin(angle)
    v = -(x - cx) * math.sin(angle) + (y - cy) * math.cos(angle)
    label = ((u / ax) ** 2 + (v / ay) ** 2 <= 1.0).astype(np.uint8)
    image = rng.normal(0.0, 1.0, SHAPE).astype(np.float32) + 0.5 * label
    return image, label


def write_random_dataset(root: Path, seed: int = 0) -> Path:
    """An nnU-Net raw dataset of random cases: imagesTr/labelsTr, imagesTs/labelsTs, splits_final.json, dataset.json."""
    rng = np.random.default_rng(seed)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True)
    for ids, suffix in ((TRAIN_IDS, "Tr"), (TEST_IDS, "Ts")):
        for case in ids:
            image, label = random_case(rng)
            assert label.any() and not label.all()
            write_nifti(image, root / f"images{suffix}" / f"{case}_0000.nii.gz")
            write_nifti(label, root / f"labels{suffix}" / f"{case}.nii.gz")
    # one fold: three cases train, one validates (train.json's --val_every then has cases to score)
    splits = [{"train": TRAIN_IDS[:3], "val": TRAIN_IDS[3:]}]
    (root / "splits_final.json").write_text(json.dumps(splits))
    dataset = {
        "channel_names": {"0": "US"},
        "labels": {"background": 0, "LV": 1},
        "numTraining": len(TRAIN_IDS),
        "numTest": len(TEST_IDS),
        "file_ending": ".nii.gz",
        "name": "RandomNoise",
    }
    (root / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return root


def train(dataset: Path, out: Path, steps: int, cwd: Path) -> str:
    args = ["--config_file", str(CONFIGS / "train.json"), "--dataset_dir", str(dataset), "--output_dir", str(out)]
    args += ["--network_config", "tiny", "--image_size", "32", "--steps", str(steps)]
    args += ["--val_every", "2", "--val_steps", "2", "--save_every", "1", *SMALL]
    return run_bundle(args, cwd)


def case_ids(folder: Path) -> list[str]:
    ending = ".nii.gz"
    masks = [p.name for p in folder.glob(f"*{ending}") if not p.name.endswith(AUXILIARY)]
    return sorted(name[: -len(ending)] for name in masks)


def read_array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_train_resume_infer_evaluate_on_random_nifti(tmp_path: Path) -> None:
    dataset = write_random_dataset(tmp_path / "Dataset900_Random")

    # --- train.json: 2 steps, then a resume to 4 from the checkpoint it wrote
    out = tmp_path / "train"
    log1 = train(dataset, out, 2, tmp_path)
    assert "resumed" not in log1
    first = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert first["step"] == 2 and first["config"]["image_size"] == 32
    log2 = train(dataset, out, 4, tmp_path)
    assert f"resumed {out / 'checkpoint.pt'} at step 2" in log2
    second = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert second["step"] == 4
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    # a restart from step 0 would log step 2 twice; a resume continues: 2, then 4
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert all(0.0 <= float(r["val_dice"]) <= 1.0 for r in rows)  # the validation case was scored
    assert all(math.isfinite(float(r["total"])) for r in rows)
    weights = out / "model.pt"
    assert weights.is_file() and (out / "network_config.json").is_file()

    # --- inference.json with the trained weights: masks on each input's grid, values 0/1
    pred = tmp_path / "pred"
    args = ["--config_file", str(CONFIGS / "inference.json"), "--bundle_root", str(BUNDLE)]
    args += ["--dataset_dir", str(dataset), "--output_dir", str(pred), "--model_path", str(weights)]
    run_bundle([*args, "--num_steps", "2", "--ensemble", "1", *SMALL], tmp_path)
    assert case_ids(pred) == TEST_IDS  # subset auto: the test cases
    for case in TEST_IDS:
        mask = sitk.ReadImage(str(pred / f"{case}.nii.gz"))
        image = sitk.ReadImage(str(dataset / "imagesTs" / f"{case}_0000.nii.gz"))
        assert mask.GetSize() == image.GetSize() == SHAPE[::-1]
        assert np.allclose(mask.GetSpacing(), SPACING) and np.allclose(mask.GetOrigin(), ORIGIN)
        assert np.allclose(mask.GetDirection(), DIRECTION)
        assert set(np.unique(read_array(pred / f"{case}.nii.gz")).tolist()) <= {0, 1}
    record = json.loads((pred / "echo_dnd_inference.json").read_text())
    assert record["num_steps"] == 2 and record["ensemble"] == 1 and record["model_config"]["image_size"] == 32
    assert record["weights"] == str(weights)

    # --- evaluate.json on the same dataset and weights: a finite LV Dice in [0, 1] per test case
    report = tmp_path / "eval" / "report"
    args = ["--config_file", str(CONFIGS / "evaluate.json"), "--bundle_root", str(BUNDLE)]
    args += ["--dataset_dir", str(dataset), "--output_dir", str(tmp_path / "eval"), "--model_path", str(weights)]
    run_bundle([*args, "--num_steps", "2", "--ensemble", "1", "--overlays", "False", *SMALL], tmp_path)
    evaluated = tmp_path / "eval" / "predictions"
    assert case_ids(evaluated) == TEST_IDS
    for case in TEST_IDS:  # same weights, seed and sampler settings as inference.json: the same masks
        assert np.array_equal(read_array(pred / f"{case}.nii.gz"), read_array(evaluated / f"{case}.nii.gz")), case
    summary = json.loads((report / "metrics_summary.json").read_text())
    assert summary["n_cases"] == len(TEST_IDS) and summary["subset"] == "Ts" and summary["labels"] == {"LV": 1}
    with (report / "metrics_per_case.csv").open() as f:
        per_case = {r["case_id"]: r for r in csv.DictReader(f)}
    assert sorted(per_case) == TEST_IDS
    for case, row in per_case.items():
        dice = float(row["LV_dice"])
        assert math.isfinite(dice) and 0.0 <= dice <= 1.0, (case, row["LV_dice"])
