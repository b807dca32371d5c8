"""Echo-DND loss (eqs. 8-13): finite terms, weights, switches (value and gradient), learning, determinism, bad input."""

from __future__ import annotations

import pytest
import torch

from scripts import LOSS_TERMS, EchoDataError, EchoDND, EchoDNDConfig, EchoDNDLoss, training_losses


def _batch(size: int = 32, b: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    masks = []
    for i in range(b):
        r = size / 4 + 2 * i
        masks.append((((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < r * r).float())
    mask = torch.stack(masks)[:, None]
    image = 0.8 * mask + 0.2 * torch.randn(mask.shape, generator=g)
    return image, mask


def _model(config: EchoDNDConfig, seed: int = 0) -> EchoDND:
    torch.manual_seed(seed)
    model = EchoDND(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # wake up the zero-initialised output layers so that every path carries gradient
        for p in model.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    return model


def test_all_terms_finite_and_weighted_sum() -> None:
    config = EchoDNDConfig.tiny(32)
    image, mask = _batch()
    losses = training_losses(_model(config), image, mask, torch.Generator().manual_seed(0))
    for name in LOSS_TERMS:
        assert torch.isfinite(losses[name]) and losses[name] > 0, name
    expected = sum(config.loss_weight(n) * losses[n] for n in LOSS_TERMS)
    assert torch.allclose(losses["total"], expected)
    assert (config.lambda_gaussian, config.lambda_bernoulli, config.lambda_kl_gaussian, config.lambda_kl_bernoulli,
            config.lambda_scc) == (1.0, 1.0, 0.01, 0.01, 0.1)
    assert losses["timesteps"].shape == (2,) and losses["timesteps"].max() < 1000


def _grads(model: EchoDND, config: EchoDNDConfig) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | None]]:
    image, mask = _batch()
    losses = EchoDNDLoss(config)(model, image, mask, torch.Generator().manual_seed(1))
    losses["total"].backward()
    return losses, {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("off", LOSS_TERMS)
def test_disabled_term_is_zero_and_sends_no_gradient(off: str) -> None:
    config = EchoDNDConfig.tiny(32, loss_terms=tuple(t for t in LOSS_TERMS if t != off))
    model = _model(config)
    losses, grads = _grads(model, config)
    assert losses[off].item() == 0.0 and losses[off].grad_fn is None
    var_row = grads["gnem.out.2.conv.weight"][1]  # the GNEM output channel of the learned variance
    if off == "scc":
        assert all(g is None for n, g in grads.items() if n.startswith("scc_head"))
    if off == "kl_gaussian":
        assert var_row.abs().max() == 0.0  # only L_KL,G trains the variance
    else:
        assert var_row.abs().max() > 0.0
    if off in ("gaussian", "bernoulli"):  # the other terms of the same chain still train it
        net = "gnem" if off == "gaussian" else "bnem"
        assert any(g is not None and g.abs().max() > 0 for n, g in grads.items() if n.startswith(net))


def test_chain_switches_and_loss_subsets() -> None:
    image, mask = _batch()
    gen = torch.Generator
    only_g = EchoDNDConfig.tiny(32).ablation("gaussian_only")
    losses = training_losses(_model(only_g), image, mask, gen().manual_seed(0))
    assert losses["bernoulli"].item() == 0.0 and losses["kl_bernoulli"].item() == 0.0 and losses["gaussian"] > 0
    only_b = EchoDNDConfig.tiny(32).ablation("bernoulli_only")
    losses = training_losses(_model(only_b), image, mask, gen().manual_seed(0))
    assert losses["gaussian"].item() == 0.0 and losses["kl_gaussian"].item() == 0.0 and losses["bernoulli"] > 0
    subset = EchoDNDConfig.tiny(32).ablation("loss_lg_lb")
    losses = training_losses(_model(subset), image, mask, gen().manual_seed(0))
    assert [n for n in LOSS_TERMS if losses[n].item() != 0.0] == ["gaussian", "bernoulli"]
    scc_only = EchoDNDConfig.tiny(32, loss_terms=("scc",))
    model = _model(scc_only)
    _, grads = _grads(model, scc_only)
    assert all(g is None for n, g in grads.items() if n.startswith(("gnem", "bnem")))


def test_train_steps_reach_every_submodule_and_reduce_the_loss() -> None:
    torch.manual_seed(0)
    config = EchoDNDConfig.tiny(32)
    model = EchoDND(config)  # zero-initialised output layers as built: the first step wakes them up
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    image, mask = _batch()
    history = []
    for step in range(12):
        opt.zero_grad()
        losses = training_losses(model, image, mask, torch.Generator().manual_seed(7))  # same t and noise
        losses["total"].backward()
        if step == 1:
            for name, p in model.named_parameters():
                assert p.grad is not None, name
            modules = ["conditioner", "gnem", "bnem", "scc_head", "gnem.fusions.0", "gnem.fusions.3", "bnem.fusions.2"]
            for prefix in modules:
                norm = sum(p.grad.abs().sum() for n, p in model.named_parameters() if n.startswith(prefix))
                assert norm > 0, prefix
        history.append(losses["total"].item())
        opt.step()
    assert history[-1] < 0.7 * history[0]


def test_same_generator_same_losses() -> None:
    config = EchoDNDConfig.tiny(32)
    model = _model(config)
    image, mask = _batch()
    a = training_losses(model, image, mask, torch.Generator().manual_seed(3))
    b = training_losses(model, image, mask, torch.Generator().manual_seed(3))
    c = training_losses(model, image, mask, torch.Generator().manual_seed(4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["total"], c["total"])


def test_bad_masks_raise_before_the_model_runs() -> None:
    model = _model(EchoDNDConfig.tiny(32))
    image, mask = _batch()
    with pytest.raises(EchoDataError, match="binary"):
        training_losses(model, image, mask * 2, torch.Generator())
    with pytest.raises(EchoDataError, match="does not match"):
        training_losses(model, image, mask[..., :16], torch.Generator())
    with pytest.raises(EchoDataError, match=r"\(batch, 1, H, W\)"):
        training_losses(model, image, mask[:, 0], torch.Generator())
