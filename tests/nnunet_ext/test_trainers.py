"""nnU-Net plugin: echo folds (grouped by patient, original-only validation) and the trainers found by nnU-Net."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_ext import TRAINER_DIR
from nnunet_ext.splits import echo_split, is_augmented, load_raw_splits


def test_is_augmented():
    assert is_augmented("patient0001_4CH_ED_aug3")
    assert not is_augmented("patient0001_4CH_ED")
    assert is_augmented("x", {"provenance": {"source_case": "y"}})
    # expand-dataset's records: originals name themselves as source, with augmented: false
    assert not is_augmented("p1_ED", {"provenance": {"source_case": "p1_ED", "augmented": False}})
    assert not is_augmented("p1_ED", {"provenance": {"source_case": "p1_ED"}})
    assert is_augmented("p1_ED_aug1", {"provenance": {"source_case": "p1_ED", "augmented": True}})
    assert not is_augmented("patient_aug_4CH_ED")


def test_echo_split_filters_augmented_and_leaks():
    records = {c: {"patient": c.split("_")[0]} for c in ["a_ED", "a_ED_aug0", "b_ED", "b_ED_aug0", "c_ED"]}
    # a hand-made bad fold: an augmented copy of the validated patient b sits in train, and one in val
    splits = [{"train": ["a_ED", "a_ED_aug0", "b_ED_aug0", "c_ED"], "val": ["b_ED", "b_ED_aug0"]}]
    train, val = echo_split(splits, 0, records, list(records))
    assert val == ["b_ED"]
    assert train == ["a_ED", "a_ED_aug0", "c_ED"]
    with pytest.raises(ValueError, match="fold 3"):
        echo_split(splits, 3, records, list(records))


def test_folds_from_cases_json_when_no_splits(tmp_path):
    ids = [f"p{i}_{v}_{ph}" for i in range(6) for v in ("2CH", "4CH") for ph in ("ED", "ES")]
    ids += [f"{c}_aug0" for c in ids]
    (tmp_path / "cases.json").write_text(json.dumps({c: {"patient": c.split("_")[0]} for c in ids}))
    splits, records = load_raw_splits(tmp_path, ids)
    assert len(splits) == 5
    for fold in range(5):
        train, val = echo_split(splits, fold, records, ids)
        assert not any(is_augmented(c) for c in val)
        assert {c.split("_")[0] for c in train}.isdisjoint({c.split("_")[0] for c in val})


def test_nnunet_finds_trainers_through_ext_path(monkeypatch):
    code = (
        "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f\n"
        "for n in ('nnUNetTrainerEcho', 'nnUNetTrainerEchoSmoke', 'nnUNetTrainerEchoSplits'):\n"
        "    c = f(n); print(n, c.__name__, [b.__name__ for b in c.__mro__][:3])\n"
    )
    env = {**os.environ, "nnUNet_extTrainer": str(TRAINER_DIR)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert (
        "nnUNetTrainerEcho nnUNetTrainerEcho ['nnUNetTrainerEcho', 'nnUNetTrainerEchoSplits', 'nnUNetTrainer']" in out
    )
    assert "nnUNetTrainerEchoSmoke nnUNetTrainerEchoSmoke" in out


def test_nnunet_env_command_prints_trainer_dir():
    from echogains.cli import EchoGains

    line = EchoGains().nnunet_env()
    assert line == f"export nnUNet_extTrainer={TRAINER_DIR}"
    assert Path(line.split("=", 1)[1]).joinpath("echo_trainers.py").is_file()


def test_raw_dataset_folder_refuses_a_missing_nnunet_raw(tmp_path):
    from echogains.utils import EchoDataError
    from nnunet_ext.splits import raw_dataset_folder

    with pytest.raises(EchoDataError, match=r"^nnUNet_raw is not set: .*Dataset501_X.*export nnUNet_raw="):
        raw_dataset_folder("Dataset501_X", {})
    with pytest.raises(EchoDataError, match="nnUNet_raw is not set"):
        raw_dataset_folder("Dataset501_X", {"nnUNet_raw": "  "})
    with pytest.raises(EchoDataError, match=r"Dataset501_X: raw dataset not found: .*set nnUNet_raw"):
        raw_dataset_folder("Dataset501_X", {"nnUNet_raw": str(tmp_path)})
    (tmp_path / "Dataset501_X").mkdir()
    assert raw_dataset_folder("Dataset501_X", {"nnUNet_raw": str(tmp_path)}) == tmp_path / "Dataset501_X"


@pytest.mark.parametrize("raw", [None, "missing"])
def test_echo_trainer_split_without_the_raw_dataset_is_an_error_not_a_random_split(tmp_path, monkeypatch, raw):
    """``do_split`` of the Echo trainers: no silent fallback to nnU-Net's random 5 folds.

    (They leak augmented copies.)
    """
    from types import SimpleNamespace

    from echogains.utils import EchoDataError
    from nnunet_ext.trainers.echo_trainers import nnUNetTrainerEcho

    if raw is None:
        monkeypatch.delenv("nnUNet_raw", raising=False)
    else:
        monkeypatch.setenv("nnUNet_raw", str(tmp_path))  # set, but the dataset is not in it
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    random_split: list[str] = []
    monkeypatch.setattr(nnUNetTrainer, "do_split", lambda self: random_split.append("used") or (["a"], ["b"]))
    trainer = nnUNetTrainerEcho.__new__(nnUNetTrainerEcho)  # the attributes do_split reads, without plans on disk
    trainer.fold, trainer.plans_manager = 0, SimpleNamespace(dataset_name="Dataset501_X")
    trainer.print_to_log_file = lambda *args, **kwargs: None
    with pytest.raises(EchoDataError, match="nnUNet_raw" if raw is None else "Dataset501_X: raw dataset not found"):
        trainer.do_split()
    assert not random_split


@pytest.mark.parametrize(
    ("name", "schedule"),
    [
        ("nnUNetTrainerEcho", (500, 250, 50)),
        ("nnUNetTrainerEchoSmoke", (1, 2, 1)),
        ("nnUNetTrainerEchoSmokeNoVal", (1, 2, 1)),
        ("nnUNetTrainerEchoQuick", (15, 25, 5)),
        ("nnUNetTrainerEchoDemo", (16, 25, 5)),
        ("nnUNetTrainerEchoSplits", (1000, 250, 50)),
    ],
)
def test_each_trainer_sets_its_schedule(monkeypatch, name, schedule) -> None:
    """The schedule each trainer's docstring names, over nnU-Net's defaults (its __init__ stubbed: no plans needed)."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_ext.trainers import echo_trainers

    def defaults(self, plans, configuration, fold, dataset_json, device) -> None:
        self.num_epochs, self.num_iterations_per_epoch, self.num_val_iterations_per_epoch = 1000, 250, 50
        self.device = device

    monkeypatch.setattr(nnUNetTrainer, "__init__", defaults)
    monkeypatch.delenv("ECHOGAINS_NNUNET_SEED", raising=False)
    trainer = getattr(echo_trainers, name)({}, "2d", 0, {}, torch.device("cpu"))
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch) == schedule
