"""DDPM network configurations (EchoGAINS Table 1), weights files."""

from __future__ import annotations

import pytest
import torch

from echogains.ddpm.model import (
    DDPMConfig,
    build_diffusion,
    build_network,
    count_parameters,
    get_config,
    load_ddpm,
    micro,
    paper,
    save_weights,
    tiny,
)
from echogains.utils import EchoDataError


def test_paper_config_follows_table_1():
    cfg = paper()
    assert cfg.image_size == 256 and cfg.num_res_blocks == 3 and cfg.num_heads == 4
    assert cfg.channels[0] == 64 and max(cfg.channels) == 256  # 64 -> 256 -> 64
    assert cfg.resolutions == (256, 128, 64, 32, 16, 8)  # lowest resolution 8 x 8
    assert cfg.attention_levels == (False, False, False, False, True, True)  # attention at 16 and 8
    assert (cfg.num_timesteps, cfg.lr, cfg.batch_size, cfg.steps) == (4000, 1e-4, 64, 500_000)
    net = build_network(cfg)
    # MONAI blocks (no scale-shift norm): 42.2M parameters against the paper's 44.1M
    assert count_parameters(net) == 42_233_666
    assert net.out_channels == 2 and net.num_head_channels[4] == 64  # 256 channels / 4 heads
    d = build_diffusion(cfg)
    assert d.num_timesteps == 4000


def test_tiny_config_is_small_and_runs():
    cfg = tiny()
    net = build_network(cfg)
    assert count_parameters(net) * 4 < 25e6  # demo weights < 25 MB
    assert cfg.attention_levels == (False, False, True, True)
    x = torch.zeros(2, 1, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        out = net(x, timesteps=torch.tensor([0, 3999]))
    assert out.shape == (2, 2, cfg.image_size, cfg.image_size)


@pytest.mark.parametrize(
    "changes",
    [
        {"image_size": 30},  # not divisible by 2^(levels - 1)
        {"attention_resolutions": (4,)},  # not a level
        {"norm_num_groups": 6},  # 16 % 6
        {"num_heads": 3},  # 16 % 3 at an attention level
        {"channels": ()},
    ],
)
def test_invalid_configs_raise(changes):
    with pytest.raises(EchoDataError, match="DDPM config"):
        DDPMConfig(**{**micro().to_dict(), **changes})


def test_get_config_resolves_names_dicts_and_overrides():
    assert get_config("tiny") == tiny()
    assert get_config(micro().to_dict()) == micro()
    assert get_config("micro", num_timesteps=1000).num_timesteps == 1000
    with pytest.raises(EchoDataError, match="unknown DDPM config"):
        get_config("huge")
    with pytest.raises(EchoDataError, match="unknown keys"):
        get_config({**micro().to_dict(), "dropout": 0.1})


def test_weights_roundtrip_and_bad_files(tmp_path):
    cfg = micro()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = build_network(cfg)
        for p in net.parameters():
            p.data.normal_(0, 0.02)
    path = save_weights(tmp_path / "w.pt", cfg, net.state_dict())
    net2, diffusion, cfg2 = load_ddpm(path)
    assert cfg2 == cfg and diffusion.num_timesteps == cfg.num_timesteps and not net2.training
    for (k, a), (_, b) in zip(net.state_dict().items(), net2.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(EchoDataError, match="not found"):
        load_ddpm(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(EchoDataError, match="junk.pt"):
        load_ddpm(tmp_path / "junk.pt")
    bad = save_weights(tmp_path / "bad.pt", tiny(), net.state_dict())
    with pytest.raises(EchoDataError, match="do not match"):
        load_ddpm(bad)
