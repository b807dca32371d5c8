"""Echo-DND bundle conventions: metadata valid offline, network in/out verified, configs well formed, self-locating."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from scripts import EchoDND, EchoDNDConfig

from echogains.utils import EchoDataError

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "echo_dnd"
CONFIGS = BUNDLE / "configs"
SCHEMA = Path(__file__).resolve().parent / "meta_schema_20240725.json"
SCHEMA_MD5 = "b15c0ddcb570a1858b838bf85029d047"  # MONAI's meta_schema_20240725.json
CONFIG_NAMES = ("inference.json", "train.json", "evaluate.json", "multi_gpu_train.json")


def save_tiny_weights(path: Path, size: int) -> Path:
    """An untrained tiny model in the deployable format ``{"config", "state_dict"}``."""
    torch.manual_seed(0)
    model = EchoDND(EchoDNDConfig.tiny(size))
    torch.save({"config": model.config.to_dict(), "state_dict": model.state_dict()}, path)
    return path


def test_bundle_layout() -> None:
    for rel in [f"configs/{n}" for n in CONFIG_NAMES] + [
        "configs/metadata.json",
        "configs/logging.conf",
        "docs/README.md",
        "LICENSE",
        "scripts/infer.py",
    ]:
        assert (BUNDLE / rel).is_file(), rel
    assert "Apache License" in (BUNDLE / "LICENSE").read_text()


def test_metadata_verifies_offline(tmp_path: Path) -> None:
    from monai.bundle import verify_metadata

    schema = tmp_path / SCHEMA.name
    shutil.copyfile(SCHEMA, schema)  # present, so verify_metadata does not download it
    verify_metadata(meta_file=str(CONFIGS / "metadata.json"), filepath=str(schema), hash_val=SCHEMA_MD5)
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"]
    fmt = meta["network_data_format"]
    assert list(fmt["inputs"]) == ["image"] and list(fmt["outputs"]) == ["pred"]
    assert fmt["inputs"]["image"]["num_channels"] == 1 and fmt["outputs"]["pred"]["num_channels"] == 1
    assert meta["monai_version"] == __import__("monai").__version__


def test_metadata_schema_rejects_missing_fields(tmp_path: Path) -> None:
    """Oracle for the check above: the same schema fails a metadata file without ``network_data_format``."""
    from monai.bundle import verify_metadata

    meta = json.loads((CONFIGS / "metadata.json").read_text())
    del meta["network_data_format"]
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    schema = tmp_path / SCHEMA.name
    shutil.copyfile(SCHEMA, schema)
    with pytest.raises(ValueError):
        verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(schema), hash_val=SCHEMA_MD5)


def test_verify_net_in_out_on_wrapper(tmp_path: Path) -> None:
    """MONAI's check passes, the output is what the metadata promises, and the check fails on wrong metadata."""
    from monai.bundle import verify_net_in_out

    meta = json.loads((CONFIGS / "metadata.json").read_text())
    size = int(meta["network_data_format"]["inputs"]["image"]["spatial_shape"][0])
    weights = save_tiny_weights(tmp_path / "model.pt", size)
    run = {
        "net_id": "network_def",
        "config_file": str(CONFIGS / "inference.json"),
        "device": "cpu",
        "model_path": str(weights),
        "num_steps": 2,
    }
    verify_net_in_out(meta_file=str(CONFIGS / "metadata.json"), **run)
    # what verify_net_in_out leaves unchecked (it compares channels and dtype only): shape, value range, binary
    net = _parse(str(CONFIGS / "inference.json"), model_path=str(weights), num_steps=2).get_parsed_content(
        "network_def"
    )
    with torch.no_grad():
        out = net.eval()(torch.rand(1, 1, size, size))
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert tuple(out.shape) == (1, pred["num_channels"], *pred["spatial_shape"]) and out.dtype == torch.float32
    assert pred["is_binary"] and set(torch.unique(out).tolist()) <= set(map(float, pred["value_range"]))
    # the oracle: metadata promising another number of output channels is refused
    meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 2
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="output channel"):
        verify_net_in_out(meta_file=str(tmp_path / "metadata.json"), **run)


def _parse(config_file: str | list[str], **overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_file)
    parser.read_meta(str(CONFIGS / "metadata.json"))
    parser.update(overrides)
    return parser


@pytest.mark.parametrize("name", ["inference.json", "train.json", "evaluate.json"])
def test_configs_find_their_bundle_root(name: str) -> None:
    config_file = str(CONFIGS / name)  # a local called config_file, as in monai.bundle's entry points
    parser = _parse(config_file)
    assert Path(parser.get_parsed_content("bundle_root")) == BUNDLE
    assert {"initialize", "run"} <= set(parser.get())
    if name == "inference.json":
        assert {"inference", "make_sample_data"} <= set(parser.get())
        assert Path(parser.get_parsed_content("dataset_dir")) == BUNDLE / "sample_data"
        assert Path(parser.get_parsed_content("model_path")) == BUNDLE / "models" / "model.pt"


def test_bundle_root_through_the_workflow_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ConfigWorkflow`` used directly (no ``config_file`` local on the stack): found from the workflow itself."""
    from monai.bundle import ConfigWorkflow

    monkeypatch.chdir(tmp_path)
    workflow = ConfigWorkflow(str(CONFIGS / "inference.json"), workflow_type=None, logging_file=False)
    workflow.initialize()
    assert Path(workflow.parser.get_parsed_content("bundle_root")) == BUNDLE
    assert str(BUNDLE) in __import__("sys").path


def test_multi_gpu_config_overrides_train() -> None:
    config_file = [str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")]
    parser = _parse(config_file)
    assert Path(parser.get_parsed_content("bundle_root")) == BUNDLE
    assert parser.get_parsed_content("backend") == ("nccl" if torch.cuda.is_available() else "gloo")
    assert any("init_process_group" in step for step in parser["initialize"])
    assert parser["trainer"]["_target_"] == "scripts.train.EchoDNDTrainer"
    train = json.loads((CONFIGS / "train.json").read_text())
    assert (train["lr"], train["batch_size"], train["steps"], train["network_config"]) == (5e-5, 8, 200000, "paper")


def test_train_flags_accept_command_line_words(tmp_path: Path) -> None:
    config_file = str(CONFIGS / "train.json")
    parser = _parse(
        config_file,
        dataset_dir=str(tmp_path),
        output_dir=str(tmp_path / "o"),
        network_config="tiny",
        image_size=32,
        progress="False",
        augment="false",
        device="cpu",
    )
    trainer = parser.get_parsed_content("trainer")
    assert trainer.progress is False and trainer.augment is False and trainer.config.image_size == 32


def test_missing_weights_error_names_the_file(tmp_path: Path) -> None:
    config_file = str(CONFIGS / "inference.json")
    missing = tmp_path / "nowhere" / "model.pt"
    parser = _parse(config_file, model_path=str(missing), device="cpu")
    with pytest.raises(Exception) as info:
        parser.get_parsed_content("model")
    chain, err = [], info.value
    while err is not None:
        chain.append(err)
        err = err.__cause__
    assert any(isinstance(e, EchoDataError) and str(missing) in str(e) for e in chain)


def test_logging_conf_is_valid(tmp_path: Path) -> None:
    import logging.config

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        logging.config.fileConfig(CONFIGS / "logging.conf", disable_existing_loggers=False)
        assert root.level == logging.INFO and root.handlers
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
