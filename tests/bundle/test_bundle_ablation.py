"""The paper's ablations (Table 4) from the bundle: ``--ablation NAME`` trains, saves and infers the same network.

Each ablation trains two steps of a tiny 32 px network in-process, is reloaded with ``load_model`` and segments two
images; one run goes through the bundle command lines (``train.json --ablation`` then ``inference.json``). One-chain
models (``gaussian_only``, ``bernoulli_only``) sample and fuse only their own chain.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from scripts.common import EchoDataError
from scripts.config import ABLATIONS, EchoDNDConfig
from scripts.networks import EchoDND
from scripts.sampler import EchoDNDSampler
from scripts.train import EchoDNDTrainer, load_model

from tests.bundle_cli import run_bundle

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "echo_dnd"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from echogains.data.phantom import make_phantom

    root = tmp_path_factory.mktemp("ablation")
    return make_phantom(root / "Dataset001_P", n_patients=3, layout="nnunet", image_size=(40, 36), progress=False)


def train_tiny(dataset: Path, out: Path, ablation: str) -> Path:
    trainer = EchoDNDTrainer(
        dataset,
        out,
        config="tiny",
        image_size=32,
        ablation=ablation,
        steps=2,
        batch_size=2,
        val_every=0,
        save_every=2,
        seed=0,
        device="cpu",
        progress=False,
    )
    return trainer.run()


@pytest.mark.parametrize("ablation", sorted(ABLATIONS))
def test_each_ablation_trains_saves_and_infers(dataset: Path, tmp_path: Path, ablation: str) -> None:
    weights = train_tiny(dataset, tmp_path / "run", ablation)
    expected = EchoDNDConfig.tiny(32).ablation(ablation)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    assert all(torch.is_tensor(v) for v in state.values())  # a plain state_dict
    saved = json.loads((weights.parent / "network_config.json").read_text())
    assert saved == {**expected.to_dict(), "ablation": ablation}
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert checkpoint["ablation"] == ablation and checkpoint["step"] == 2

    model = load_model(weights)
    assert model.ablation == ablation and model.config == expected
    assert (model.gnem is not None) == expected.use_gaussian and (model.bnem is not None) == expected.use_bernoulli
    assert type(model.conditioner) is type(EchoDND(expected).conditioner)

    image = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    out = EchoDNDSampler(num_steps=2, ensemble=2)(model, image, torch.Generator().manual_seed(0))
    assert ("gaussian" in out) == expected.use_gaussian and ("bernoulli" in out) == expected.use_bernoulli
    assert out["mask"].shape == (2, 1, 32, 32) and set(out["mask"].unique().tolist()) <= {0.0, 1.0}
    assert float(out["uncertainty"].min()) >= 0.0 and float(out["uncertainty"].max()) <= 1.0


@pytest.mark.parametrize("chain", ["gaussian", "bernoulli"])
def test_one_chain_fusion_is_that_chains_mask(chain: str) -> None:
    """With one chain and one sample, STAPLE has a single rater: the fused mask is that rater's mask."""
    torch.manual_seed(0)
    config = EchoDNDConfig.tiny(32).ablation(f"{chain}_only")
    model = EchoDND(config).eval()
    image = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    sampler = EchoDNDSampler(num_steps=3, ensemble=1, postprocess=False)
    out = sampler(model, image, torch.Generator().manual_seed(0))
    assert set(out) == {"scc", chain, "mask", "prob", "uncertainty"}
    assert torch.equal(out["mask"][:, 0], out[chain][:, 0])
    assert torch.equal(out["prob"][:, 0], out[chain][:, 0])
    votes = EchoDNDSampler(num_steps=3, ensemble=1, postprocess=False, uncertainty="votes")
    assert float(votes(model, image, torch.Generator().manual_seed(0))["uncertainty"].abs().max()) == 0.0  # one vote


def test_unknown_ablation_fails_before_anything_is_written(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(EchoDataError, match="unknown ablation 'no_mfcm'"):
        EchoDNDTrainer(dataset, tmp_path / "run", config="tiny", image_size=32, ablation="no_mfcm", device="cpu")
    assert not (tmp_path / "run").exists()


def test_bundle_command_lines(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train = [
        "--config_file",
        str(BUNDLE / "configs" / "train.json"),
        "--dataset_dir",
        str(dataset),
        "--output_dir",
        str(out),
        "--network_config",
        "tiny",
        "--image_size",
        "32",
        "--steps",
        "1",
        "--batch_size",
        "2",
        "--val_every",
        "0",
        "--device",
        "cpu",
        "--progress",
        "False",
    ]
    run_bundle([*train, "--ablation", "bernoulli_only"], tmp_path)
    pred = tmp_path / "pred"
    run_bundle(
        [
            "--config_file",
            str(BUNDLE / "configs" / "inference.json"),
            "--dataset_dir",
            str(dataset),
            "--output_dir",
            str(pred),
            "--model_path",
            str(out / "model.pt"),
            "--bundle_root",
            str(BUNDLE),
            "--num_steps",
            "2",
            "--device",
            "cpu",
            "--progress",
            "False",
        ],
        tmp_path,
    )
    record = json.loads((pred / "echo_dnd_inference.json").read_text())
    assert record["ablation"] == "bernoulli_only" and record["chains"] == ["bernoulli"]
    assert record["model_config"]["use_gaussian"] is False and record["cases"]
