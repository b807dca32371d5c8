"""Echo-DND networks: shapes, where attention and fusion sit, the conditioner switch, parameter counts, input checks."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets.diffusion_model_unet import AttnDownBlock, AttnUpBlock, DownBlock
from scripts import ABLATIONS, MFCM, EchoDataError, EchoDND, EchoDNDConfig, UNetConditioner, count_parameters
from scripts.networks import Condition, CrossAttentionFusion, FiLMFusion


def _perturb(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> None:
    """Give zero-initialised layers (output convs, fusion projections) non-zero weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def tiny() -> EchoDND:
    torch.manual_seed(0)
    return EchoDND(EchoDNDConfig.tiny(32)).eval()


def test_paper_parameter_count() -> None:
    """The paper reports 238M parameters; ours (C = 128, 256 x 256) is within 2 % (golden value below)."""
    with torch.device("meta"):
        model = EchoDND(EchoDNDConfig.paper())
    counts = count_parameters(model)
    assert counts["total"] == 242_476_228
    assert abs(counts["total"] - 238e6) / 238e6 < 0.02
    assert counts["gnem"] > 110e6 and counts["bnem"] > 110e6 and 5e6 < counts["conditioner"] < 20e6


def test_attention_and_fusion_placement() -> None:
    with torch.device("meta"):
        model = EchoDND(EchoDNDConfig.paper())
    res = model.config.resolutions
    assert res == (256, 128, 64, 32, 16, 8)
    g_attn = [isinstance(b, AttnDownBlock) for b in model.gnem.down_blocks]
    b_attn = [isinstance(b, AttnDownBlock) for b in model.bnem.down_blocks]
    assert g_attn == [r == 16 for r in res] and b_attn == [r == 8 for r in res]
    assert [isinstance(b, AttnUpBlock) for b in model.gnem.up_blocks] == [r == 16 for r in reversed(res)]
    assert all(isinstance(b, DownBlock) for b, r in zip(model.gnem.down_blocks, res) if r > 16)
    kinds = [type(f) for f in model.gnem.fusions]
    # cross-attention up to 64 x 64 (benchmarks/results/echo_dnd_fusion.json), FiLM at 256 and 128
    assert kinds == [FiLMFusion] * 2 + [CrossAttentionFusion] * 4
    assert [type(f) for f in model.bnem.fusions] == kinds
    assert model.config.fusion_attention_max_tokens == 64 * 64
    # the tiny (demo) network keeps FiLM at 64 and 32 px
    tiny = EchoDND(EchoDNDConfig.tiny(64))
    assert [type(f) for f in tiny.gnem.fusions] == [FiLMFusion] * 2 + [CrossAttentionFusion] * 2


@pytest.mark.parametrize("size", [32, 64])
def test_forward_shapes(size: int) -> None:
    torch.manual_seed(0)
    model = EchoDND(EchoDNDConfig.tiny(size))
    image = torch.randn(2, 1, size, size)
    x = torch.randn(2, 1, size, size)
    out = model(image, x, (x > 0).float(), torch.tensor([0, 999]))
    assert out["gaussian"].shape == (2, 2, size, size)
    assert out["bernoulli"].shape == (2, 1, size, size) and out["scc"].shape == (2, 1, size, size)
    cond = model.condition(image)
    assert [f.shape[-1] for f in cond.features] == [size // 2**i for i in range(4)]
    assert [f.shape[1] for f in cond.features] == list(model.conditioner.out_channels)


def test_conditioner_switch_gives_same_feature_shapes() -> None:
    torch.manual_seed(0)
    config = EchoDNDConfig.tiny(32)
    mfcm, unet = EchoDND(config), EchoDND(config.ablation("unet_conditioner"))
    assert isinstance(mfcm.conditioner, MFCM) and isinstance(unet.conditioner, UNetConditioner)
    image = torch.randn(1, 1, 32, 32)
    shapes_a = [f.shape for f in mfcm.condition(image).features]
    shapes_b = [f.shape for f in unet.condition(image).features]
    assert shapes_a == shapes_b
    assert set(count_parameters(mfcm)) == set(count_parameters(unet))


def test_mfcm_keeps_four_streams_and_exchanges_across_them() -> None:
    """Changing one corner of the image changes the full-resolution F^0 far away (cross-resolution fusion)."""
    torch.manual_seed(0)
    mfcm = MFCM(1, (8, 16, 32, 64), num_levels=6, blocks=1, modules_per_stage=(1, 1, 1, 1), groups=8).eval()
    image = torch.randn(1, 1, 64, 64)
    feats = mfcm(image)
    assert [tuple(f.shape[1:]) for f in feats] == [
        (8, 64, 64),
        (16, 32, 32),
        (32, 16, 16),
        (64, 8, 8),
        (64, 4, 4),
        (64, 2, 2),
    ]
    changed = image.clone()
    changed[..., :4, :4] += 3.0
    diff = (mfcm(changed)[0] - feats[0]).abs().sum(1)[0]
    assert diff[48:, 48:].max() > 1e-4  # only reachable through the low-resolution streams
    assert len(mfcm.stages) == 4 and len(mfcm.stages[3][0].branches) == 4


def test_mfcm_feeds_the_levels_below_its_streams_from_every_stream() -> None:
    """Paper configuration: F^4 (16 x 16) and F^5 (8 x 8) come from all four HRNet streams, not the 1/8 stream alone."""
    torch.manual_seed(0)
    kw = dict(num_levels=6, blocks=1, modules_per_stage=(1, 1, 1, 1), groups=8)
    mfcm = MFCM(1, (8, 16, 32, 64), **kw).eval()
    assert EchoDNDConfig.paper().mfcm_low_levels == "exchange"
    streams = [torch.randn(1, c, 64 // 2**i, 64 // 2**i, requires_grad=True) for i, c in enumerate((8, 16, 32, 64))]
    for level in mfcm.low_exchange(streams):
        grads = torch.autograd.grad(level.square().sum(), streams, retain_graph=True)
        assert all(g.abs().sum() > 0 for g in grads)
    assert [tuple(f.shape[1:]) for f in mfcm(torch.randn(1, 1, 64, 64))][4:] == [(64, 4, 4), (64, 2, 2)]
    legacy = MFCM(1, (8, 16, 32, 64), low_levels="strided", **kw)  # the layout of weights saved before the option
    assert legacy.low_exchange is None and len(legacy.extensions) == 2
    with torch.device("meta"):
        old = EchoDND(
            EchoDNDConfig.from_saved(
                {k: v for k, v in EchoDNDConfig.paper().to_dict().items() if k != "mfcm_low_levels"}
            )
        )
    assert count_parameters(old)["conditioner"] == 11_535_040  # the conditioner as before: old checkpoints load


def test_fusions_are_identity_at_init_and_use_the_condition() -> None:
    torch.manual_seed(0)
    h, f = torch.randn(2, 16, 8, 8), torch.randn(2, 8, 8, 8)
    for fusion in (CrossAttentionFusion(16, 8, 8, 4), FiLMFusion(16, 8, 4)):
        assert torch.equal(fusion(h, f), h)
        _perturb(fusion)
        other = torch.randn(f.shape, generator=torch.Generator().manual_seed(1))
        assert not torch.allclose(fusion(h, f), fusion(h, other))


def test_noise_estimators_depend_on_timestep_image_and_condition(tiny: EchoDND) -> None:
    model = EchoDND(EchoDNDConfig.tiny(32))
    _perturb(model)
    image, x = torch.randn(1, 1, 32, 32), torch.randn(1, 1, 32, 32)
    cond = model.condition(image)
    with torch.no_grad():
        base = model.gnem(x, torch.tensor([10]), cond)
        assert not torch.allclose(base, model.gnem(x, torch.tensor([900]), cond))
        other = model.condition(torch.randn(1, 1, 32, 32))
        assert not torch.allclose(base, model.gnem(x, torch.tensor([10]), other))
        assert torch.equal(base, model.gnem(x, torch.tensor([10]), cond))


def test_condition_cache_gives_the_uncached_values_and_stays_out_of_training() -> None:
    """A chain's steps reuse one condition: what the fusions compute from F^i alone is kept in ``Condition.cache``
    while gradients are off, and every output equals, bit for bit, that of a fresh (uncached) condition, with GNEM and
    BNEM (their own fusions at every level, FiLM and cross-attention) sharing it; with gradients on it stays empty and
    the fusions' weights get gradients."""
    torch.manual_seed(0)
    model = EchoDND(EchoDNDConfig.tiny(64))
    _perturb(model)
    assert {type(f) for f in model.gnem.fusions} == {FiLMFusion, CrossAttentionFusion}
    image = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        cond = model.condition(image)
        fresh = lambda: Condition(cond.image, list(cond.features))  # noqa: E731
        for step, t in enumerate((900, 500, 10)):
            x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(step))
            for net in (model.gnem, model.bnem):
                assert torch.equal(net(x, torch.tensor([t, t]), cond), net(x, torch.tensor([t, t]), fresh()))
        assert len(cond.cache) == len(model.gnem.fusions) + len(model.bnem.fusions)
    cond = model.condition(image)
    model.gnem(torch.randn(2, 1, 64, 64), torch.tensor([5, 5]), cond).square().mean().backward()
    assert cond.cache == {}
    assert all(f.proj.conv.weight.grad is not None for f in model.gnem.fusions if isinstance(f, FiLMFusion))


def test_chain_switches_drop_networks() -> None:
    assert EchoDND(EchoDNDConfig.tiny(32).ablation("gaussian_only")).bnem is None
    assert EchoDND(EchoDNDConfig.tiny(32).ablation("bernoulli_only")).gnem is None


@pytest.mark.parametrize(
    "image, problem",
    [
        (torch.randn(1, 2, 32, 32), "channel"),
        (torch.randn(1, 1, 36, 32), "multiples of 8"),
        (torch.randn(1, 32, 32), "(batch, channel, H, W)"),
        (torch.full((1, 1, 32, 32), float("nan")), "NaN"),
    ],
)
def test_bad_images_raise(tiny: EchoDND, image: torch.Tensor, problem: str) -> None:
    with pytest.raises(EchoDataError, match=problem if problem != "(batch, channel, H, W)" else r"\(batch"):
        tiny.condition(image)


def test_config_roundtrip_and_validation() -> None:
    config = EchoDNDConfig.tiny(64)
    assert EchoDNDConfig.from_dict(config.to_dict()) == config
    assert EchoDND(config.to_dict()).config == config
    assert EchoDNDConfig.paper().loss_weight("kl_bernoulli") == 0.01 and EchoDNDConfig.paper().loss_weight("scc") == 0.1
    assert set(ABLATIONS) >= {"gaussian_only", "bernoulli_only", "unet_conditioner", "loss_lg_lb", "loss_lg_lb_kl"}
    for bad in (
        {"conditioner": "resnet"},
        {"use_gaussian": False, "use_bernoulli": False},
        {"loss_terms": ["dice"]},
        {"image_size": 60},
        {"gnem_attention_resolutions": [12]},
    ):
        with pytest.raises(ValueError):
            EchoDNDConfig.tiny(32).replace(**bad)
    with pytest.raises(ValueError, match="unknown"):
        EchoDNDConfig.from_dict({"chanels": [1]})
