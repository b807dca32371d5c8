"""Echo-DND weights files (scripts/checkpoint.py): plain state_dict, the legacy nested format, its conversion."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from scripts import EchoDND, EchoDNDConfig
from scripts.checkpoint import LEGACY_WARNING, convert_weights, load_weights, main, read_weights, save_weights
from scripts.train import load_model

from echogains.utils import EchoDataError

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "echo_dnd"


def tiny(size: int = 32, **fields) -> EchoDND:
    torch.manual_seed(0)
    return EchoDND(EchoDNDConfig.tiny(size, **fields))


def save_legacy(model: EchoDND, path: Path, ablation: str | None = None) -> Path:
    """The deployable format before bundle 0.3.0."""
    state = {"config": model.config.to_dict(), "state_dict": model.state_dict()}
    if ablation:
        state["ablation"] = ablation
    torch.save(state, path)
    return path


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_writes_a_plain_state_dict_and_the_network_config(tmp_path: Path) -> None:
    model = tiny()
    path = save_weights(model, tmp_path / "model.pt", ablation="kl_vb")
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert all(torch.is_tensor(v) for v in state.values()) and set(state) == set(model.state_dict())
    config = json.loads((tmp_path / "network_config.json").read_text())
    assert config.pop("ablation") == "kl_vb" and EchoDNDConfig.from_dict(config) == model.config
    loaded = load_model(path)  # the configuration found beside the weights
    assert loaded.config == model.config and loaded.ablation == "kl_vb" and same_weights(loaded, model)


def test_legacy_nested_file_loads_with_a_warning(tmp_path: Path) -> None:
    model = tiny()
    path = save_legacy(model, tmp_path / "old.pt", ablation="bernoulli_only")
    with pytest.warns(FutureWarning, match=re.escape(LEGACY_WARNING)):
        loaded = load_model(path)
    assert loaded.config == model.config and loaded.ablation == "bernoulli_only" and same_weights(loaded, model)
    with pytest.warns(FutureWarning, match="python -m scripts.checkpoint"):
        load_weights(EchoDND(EchoDNDConfig.tiny(32)), path)
    plain = save_weights(model, tmp_path / "new" / "model.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the plain format loads without one
        load_model(plain)


def test_conversion_command_gives_the_same_network(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    model = tiny()
    old = save_legacy(model, tmp_path / "old.pt", ablation="loss_lg_lb")
    new = tmp_path / "converted" / "model.pt"
    assert main([str(old), str(new)]) == 0
    assert str(new) in capsys.readouterr().out
    assert read_weights(new).kind == "plain"
    converted = load_model(new)
    assert converted.config == model.config and converted.ablation == "loss_lg_lb" and same_weights(converted, model)
    # a plain file has nothing to convert: one line naming it, status 2
    assert main([str(new), str(tmp_path / "again.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("echo_dnd: error: ") and str(new) in err and "nothing to convert" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "again.pt").exists()


def test_converted_legacy_config_keeps_its_legacy_fields(tmp_path: Path) -> None:
    """A legacy file saved before kl_form / mfcm_low_levels existed converts to the behaviour it was trained with."""
    model = tiny()
    state = {"config": model.config.to_dict(), "state_dict": model.state_dict()}
    for key in ("kl_form", "mfcm_low_levels"):
        state["config"].pop(key)
    torch.save(state, tmp_path / "old.pt")
    convert_weights(tmp_path / "old.pt", tmp_path / "new" / "model.pt")
    config = json.loads((tmp_path / "new" / "network_config.json").read_text())
    assert (config["kl_form"], config["mfcm_low_levels"]) == ("vb", "strided")


def test_the_shipped_weights_are_plain_and_take_their_config_from_inference_json() -> None:
    weights = BUNDLE / "models" / "model.pt"
    assert read_weights(weights).kind == "plain"
    network = json.loads((BUNDLE / "configs" / "inference.json").read_text())["demo_network_config"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_model(weights)  # the call of echogains.analysis.segmenters and the benchmarks
    assert model.config.to_dict() == {k: v for k, v in network.items() if k != "ablation"}
    assert model.ablation == network["ablation"] == "full"


def test_weights_of_another_network_are_refused_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    path = save_weights(tiny(32), tmp_path / "run" / "model.pt")
    with pytest.raises(EchoDataError) as info:
        load_weights(EchoDND(EchoDNDConfig.tiny(64, channels=(16, 32, 64, 128))), path)
    text = str(info.value)
    assert str(path) in text and f"--network_config {tmp_path / 'run' / 'network_config.json'}" in text
    assert len(text.splitlines()) == 1
    (tmp_path / "run" / "network_config.json").unlink()
    with pytest.raises(EchoDataError, match="needs its network configuration"):
        load_model(path)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(EchoDataError, match="cannot read model weights"):
        read_weights(tmp_path / "junk.pt")
    torch.save({"weights": [1, 2]}, tmp_path / "other.pt")
    with pytest.raises(EchoDataError, match="not an Echo-DND weights file"):
        read_weights(tmp_path / "other.pt")


def test_channels_last_weights_give_the_same_masks(tmp_path: Path) -> None:
    """``load_weights(..., channels_last=True)`` stores the convolutions channels-last (the CPU default of
    inference.json and evaluate.json): the sampler's masks are those of the default layout, its float maps within
    1e-4."""
    from scripts.sampler import EchoDNDSampler

    path = save_weights(tiny(), tmp_path / "model.pt")
    plain = load_weights(tiny(), path)
    fast = load_weights(tiny(), path, channels_last=True)
    convs = [m.weight for m in fast.modules() if isinstance(m, torch.nn.Conv2d) and m.weight.ndim == 4]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not any(
        m.weight.is_contiguous(memory_format=torch.channels_last) and m.weight.shape[1] > 1 and m.weight.shape[-1] > 1
        for m in plain.modules()
        if isinstance(m, torch.nn.Conv2d)
    )
    assert same_weights(plain, fast)
    sampler = EchoDNDSampler(num_steps=3, ensemble=2)
    image = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    a = sampler(plain, image, torch.Generator().manual_seed(0))
    b = sampler(fast, image, torch.Generator().manual_seed(0))
    for key in ("mask", "gaussian", "bernoulli"):
        assert torch.equal(a[key], b[key]), key
    for key in ("prob", "uncertainty", "scc"):
        torch.testing.assert_close(a[key], b[key], atol=1e-4, rtol=0, msg=key)
