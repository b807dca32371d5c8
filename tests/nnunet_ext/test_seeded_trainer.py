"""Seeded Echo trainers (``ECHOGAINS_NNUNET_SEED``): the same seed and data train the same network on CPU.

This is what lets the experiments' arms differ only by their data. Two smoke trainings (1 epoch of 2 iterations) with
seed 1 must give bit-identical weights; seed 2 must give other weights (else the test could not tell seeding apart
from a trainer that ignores randomness altogether). The trainings skip nnU-Net's final validation
(``nnUNetTrainerEchoSmokeNoVal``: the seeding lives in the shared ``nnUNetTrainerEchoSplits``); the validation path is
exercised by tests/test_end_to_end.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from echogains.data.phantom import make_phantom
from echogains.nnunet_runner import NnUNet

TRAINER = "nnUNetTrainerEchoSmokeNoVal"


def _weights(nn: NnUNet, dataset: Path) -> dict[str, torch.Tensor]:
    checkpoint = nn.model_folder(dataset, TRAINER) / "fold_0" / "checkpoint_final.pth"
    return torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]


@pytest.mark.timeout(600)
def test_same_seed_same_weights_other_seed_other_weights(tmp_path: Path) -> None:
    raw = tmp_path / "nnUNet_raw"
    dataset = make_phantom(
        raw / "Dataset931_Seeded",
        n_patients=4,
        layout="nnunet",
        labels="lv,myo",
        image_size=(48, 48),
        seed=5,
        progress=False,
    )
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        nn = NnUNet(
            raw=raw,
            preprocessed=tmp_path / "pre",
            results=tmp_path / f"results_{name}",
            seed=seed,
            log_dir=tmp_path / f"logs_{name}",
        )
        if name == "a":
            nn.plan_and_preprocess(dataset, verify=False)
        nn.train(dataset, TRAINER, fold=0)
        runs[name] = _weights(nn, dataset)
    assert runs["a"].keys() == runs["b"].keys() == runs["c"].keys()
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"]), "same seed gave other weights"
    assert any(not torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"]), "another seed gave the same weights"
    fold = nn.model_folder(dataset, TRAINER) / "fold_0"
    assert not (fold / "validation").exists()
    assert "final validation skipped" in next(fold.glob("training_log_*.txt")).read_text()
