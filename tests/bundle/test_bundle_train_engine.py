"""``configs/train.json`` on MONAI's ``SupervisedTrainer`` (``scripts.train_engine``).

- the config builds a ``SupervisedTrainer`` with MONAI's ``CheckpointLoader`` (when resuming), ``ValidationHandler``,
  ``StatsHandler`` and ``CheckpointSaver`` (subclasses), the same handlers as the Python API
  (``EchoDNDTrainer.run``), and both give the same weights, checkpoint and ``metrics.csv``, bit for bit;
- the validation Dice of the MONAI evaluator (``DiceMetric``, an empty label included) equals the Dice of the
  sampler's masks computed here;
- a save interrupted while writing leaves the previous ``checkpoint.pt`` whole (MONAI's own saver writes in place).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import CheckpointLoader, CheckpointSaver, StatsHandler, ValidationHandler
from scripts.inferer import EchoDNDInferer
from scripts.sampler import EchoDNDSampler
from scripts.train import EchoDNDTrainer, dice_score
from scripts.train_engine import default_handlers

from tests.bundle_cli import run_bundle

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "echo_dnd"
CONFIG = BUNDLE / "configs" / "train.json"
SETTINGS = dict(
    network_config="tiny",
    image_size=32,
    batch_size=2,
    val_every=2,
    val_steps=2,
    save_every=2,
    device="cpu",
    progress=False,
    seed=3,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from echogains.data.phantom import make_phantom

    root = tmp_path_factory.mktemp("engine")
    return make_phantom(root / "Dataset001_P", n_patients=3, layout="nnunet", image_size=(48, 40), progress=False)


def _parse(**overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    parser.update({"bundle_root": str(BUNDLE), **overrides})
    return parser


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_config_builds_a_monai_trainer_with_the_python_handlers(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    parser = _parse(dataset_dir=str(dataset), output_dir=str(out), steps=3, **SETTINGS)
    trainer = parser.get_parsed_content("trainer")
    assert isinstance(trainer, SupervisedTrainer)
    handlers = parser.get_parsed_content("train_handlers")
    prepared = parser.get_parsed_content("prepared")
    assert [type(h) for h in handlers] == [type(h) for h in default_handlers(prepared)]
    assert not any(isinstance(h, CheckpointLoader) for h in handlers)  # nothing to resume yet
    kinds = (ValidationHandler, StatsHandler, CheckpointSaver)
    assert all(any(isinstance(h, kind) for h in handlers) for kind in kinds)
    validator = parser.get_parsed_content("validator")
    assert isinstance(validator, SupervisedEvaluator) and validator.network is prepared.ema
    torch.save(prepared.state_dict(), out / "checkpoint.pt")  # a checkpoint to resume: the loader comes first
    resumed = _parse(dataset_dir=str(dataset), output_dir=str(out), steps=3, **SETTINGS)
    assert isinstance(resumed.get_parsed_content("train_handlers")[0], CheckpointLoader)


def test_config_and_python_api_train_alike(dataset: Path, tmp_path: Path) -> None:
    args = ["--config_file", str(CONFIG), "--dataset_dir", str(dataset), "--output_dir", str(tmp_path / "config")]
    for key, value in SETTINGS.items():
        args += [f"--{key}", str(value)]
    run_bundle([*args, "--steps", "3"], tmp_path)
    kw = {k: v for k, v in SETTINGS.items() if k != "network_config"}
    EchoDNDTrainer(dataset, tmp_path / "python", config="tiny", steps=3, **kw).run()
    a, b = _state(tmp_path / "config" / "checkpoint.pt"), _state(tmp_path / "python" / "checkpoint.pt")
    assert a["step"] == b["step"] == 3
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert torch.equal(a["rng"][0]["noise_gen"], b["rng"][0]["noise_gen"])
    weights = _state(tmp_path / "config" / "model.pt")  # the EMA as a plain state_dict
    assert set(weights) == set(a["ema"]) and all(torch.equal(weights[k], a["ema"][k]) for k in weights)
    rows = [
        [
            {k: v for k, v in r.items() if k != "seconds"}
            for r in csv.DictReader((tmp_path / name / "metrics.csv").open())
        ]
        for name in ("config", "python")
    ]
    assert rows[0] == rows[1]
    assert [int(r["step"]) for r in rows[0]] == [2, 3]  # every val_every steps and at the last step


def test_validation_dice_is_the_dice_of_the_sampler_masks(dataset: Path, tmp_path: Path) -> None:
    kw = {k: v for k, v in SETTINGS.items() if k != "network_config"}
    training = EchoDNDTrainer(dataset, tmp_path / "run", config="tiny", steps=1, **kw).setup()
    training.val_masks[0].zero_()  # an empty label: scored 1 for an empty mask, else 0, as dice_score does
    got = training.validate()
    inferer = EchoDNDInferer(EchoDNDSampler(num_steps=training.val_steps), seed=training.seed)
    scores = []
    for batch in training.validation_batches():
        out = inferer(batch["image"], training.ema)  # one generator seeded with `seed` per batch
        scores.append(dice_score(out["mask"], batch["label"]))
    expected = torch.cat(scores)
    assert 0.0 < float(expected.mean()) < 1.0  # not a degenerate case where any mask scores alike
    assert got == pytest.approx(float(expected.mean()), abs=1e-6)


def test_a_save_interrupted_while_writing_keeps_the_last_checkpoint(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kw = {k: v for k, v in SETTINGS.items() if k not in ("network_config", "save_every", "val_every")}
    out = tmp_path / "run"
    EchoDNDTrainer(dataset, out, config="tiny", steps=1, save_every=1, val_every=0, **kw).run()
    before = (out / "checkpoint.pt").read_bytes()
    real_save = torch.save

    def dying_save(obj, f, *args, **kwargs):  # writes half the file, then the process "dies"
        real_save(obj, f, *args, **kwargs)
        path = Path(f)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        raise RuntimeError("killed while writing")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(RuntimeError, match="killed while writing"):
        EchoDNDTrainer(dataset, out, config="tiny", steps=2, save_every=1, val_every=0, **kw).run()
    monkeypatch.setattr(torch, "save", real_save)
    assert (out / "checkpoint.pt").read_bytes() == before
    assert _state(out / "checkpoint.pt")["step"] == 1


def test_progress_bar_shows_when_asked(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from ignite.engine import Engine
    from scripts.common import ProgressBar

    monkeypatch.delenv("ECHOGAINS_NO_PROGRESS", raising=False)
    for enabled, shown in ((True, True), ("false", False)):
        engine = Engine(lambda engine, batch: {"total": 0.5})
        ProgressBar(enabled, "Echo-DND check", "total").attach(engine)
        engine.run([0, 1, 2], max_epochs=1)
        err = capsys.readouterr().err
        assert ("Echo-DND check" in err and "loss=0.5" in err) is shown, err
