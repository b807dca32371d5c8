"""Folds for augmented echo datasets: grouped by source patient, validated on original cases only.

Kept apart from the trainer classes so the logic is testable without building an nnU-Net trainer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from echogains.data.nnunet import patient_grouped_splits
from echogains.utils import EchoDataError

__all__ = ["is_augmented", "is_validation_copy", "load_raw_splits", "echo_split", "raw_dataset_folder"]

#: nnU-Net's own default seed for generated splits; reused so our grouped folds are as reproducible.
SPLIT_SEED = 12345


def is_augmented(case_id: str, record: Mapping[str, Any] | None = None) -> bool:
    """True for a generated copy.

    ``expand-dataset`` records ``provenance.augmented`` for every case (originals carry ``source_case`` = themselves,
    with ``augmented: false``); without that flag, a ``source_case`` other than the case itself, or an id ending in
    ``_aug{k}``, marks a copy.
    """
    prov = record.get("provenance") if record else None
    if isinstance(prov, Mapping):
        if "augmented" in prov:
            return bool(prov["augmented"])
        if prov.get("source_case") and prov["source_case"] != case_id:
            return True
    stem, _, k = case_id.rpartition("_aug")
    return bool(stem) and k.isdigit()


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def raw_dataset_folder(dataset_name: str, environ: Mapping[str, str] | None = None) -> Path:
    """``$nnUNet_raw/{dataset_name}``, the raw dataset the Echo trainers take their folds from.

    There is no fallback to nnU-Net's own split: its random 5 folds ignore patients and would train on augmented
    copies of validation patients.

    Raises:
        EchoDataError: ``nnUNet_raw`` is not set, or ``dataset_name`` is not in it.
    """
    env = os.environ if environ is None else environ
    root = env.get("nnUNet_raw", "").strip()
    if not root:
        raise EchoDataError(
            None,
            f"nnUNet_raw is not set: the nnUNetTrainerEcho* trainers take their patient-grouped "
            f"folds from the raw dataset {dataset_name} (splits_final.json / cases.json); "
            "export nnUNet_raw=<the folder holding it> (nnU-Net's random split would train on "
            "augmented copies of validation patients; -tr nnUNetTrainer if you want that)",
        )
    raw = Path(root) / dataset_name
    if not raw.is_dir():
        raise EchoDataError(
            raw,
            "raw dataset not found: the nnUNetTrainerEcho* trainers take their patient-grouped "
            f"folds from it; set nnUNet_raw (now {root}) to the folder holding {dataset_name}",
        )
    return raw


def load_raw_splits(raw_dataset: Path, identifiers: Sequence[str], n_folds: int = 5) -> tuple[list[dict], dict]:
    """Folds and records of a raw dataset: its ``splits_final.json``, else folds grouped by ``cases.json`` patient.

    Args:
        raw_dataset: the nnU-Net raw dataset folder.
        identifiers: the case ids present in the preprocessed dataset.
        n_folds: folds to make when the dataset has no ``splits_final.json``.

    Returns:
        ``(splits, records)``; ``records`` is empty when there is no ``cases.json``.
    """
    cases_file = raw_dataset / "cases.json"
    records: dict[str, Any] = _read(cases_file) if cases_file.is_file() else {}
    splits_file = raw_dataset / "splits_final.json"
    if splits_file.is_file():
        return _read(splits_file), records
    patients = {c: str(records.get(c, {}).get("patient", c.split("_")[0])) for c in identifiers}
    return patient_grouped_splits(patients, n_folds=n_folds, seed=SPLIT_SEED), records


def is_validation_copy(record: Mapping[str, Any] | None) -> bool:
    """True for a copy that ``expand-dataset --augment_validation`` made of a validation case (the paper's setting)."""
    prov = record.get("provenance") if record else None
    return isinstance(prov, Mapping) and bool(prov.get("augmented")) and bool(prov.get("validation_copy"))


def echo_split(
    splits: Sequence[Mapping[str, Sequence[str]]], fold: int, records: Mapping[str, Any], identifiers: Sequence[str]
) -> tuple[list[str], list[str]]:
    """Training and validation keys of ``fold``.

    Validation keeps original cases, and the copies that ``expand-dataset --augment_validation`` made of them
    (marked ``provenance.validation_copy``: the paper's setting, Sec. 2.6); any other augmented case listed as
    validation is dropped. Training drops every case (original or augmented) of a patient that is being
    validated, so no augmented copy of a validation patient is ever trained on.
    """
    if not 0 <= fold < len(splits):
        raise ValueError(f"fold {fold} not in the {len(splits)} folds of splits_final.json")
    present = set(identifiers)
    train = [c for c in splits[fold]["train"] if c in present]
    val = [
        c
        for c in splits[fold]["val"]
        if c in present and (not is_augmented(c, records.get(c)) or is_validation_copy(records.get(c)))
    ]

    def patient(case: str) -> str:
        return str(records.get(case, {}).get("patient", case.split("_")[0]))

    val_patients = {patient(c) for c in val}
    train = [c for c in train if patient(c) not in val_patients]
    if not train or not val:
        raise ValueError(f"fold {fold} leaves {len(train)} training and {len(val)} validation cases")
    return sorted(train), sorted(val)
