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
    assert "nnUNetTrainerEcho nnUNetTrainerEcho ['nnUNetTrainerEcho', 'nnUNetTrainerEchoSplits', 'nnUNetTrainer']" in out
    assert "nnUNetTrainerEchoSmoke nnUNetTrainerEchoSmoke" in out


def test_nnunet_env_command_prints_trainer_dir():
    from echogains.cli import EchoGains

    line = EchoGains().nnunet_env()
    assert line == f"export nnUNet_extTrainer={TRAINER_DIR}"
    assert Path(line.split("=", 1)[1]).joinpath("echo_trainers.py").is_file()
