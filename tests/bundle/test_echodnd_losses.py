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
    assert (
        config.lambda_gaussian,
        config.lambda_bernoulli,
        config.lambda_kl_gaussian,
        config.lambda_kl_bernoulli,
        config.lambda_scc,
    ) == (1.0, 1.0, 0.01, 0.01, 0.1)
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


# --- the two KL forms (kl_form): the paper's eqs. 10-11 (default) and the variational-bound option ---------------
def _draws(model: EchoDND, config: EchoDNDConfig, image: torch.Tensor, mask: torch.Tensor, seed: int) -> dict:
    """The loss's draws and network outputs, reproduced outside it (same generator order: t, eps, uniform)."""
    from scripts import build_processes

    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, config.num_train_timesteps, (image.shape[0],), generator=g)
    eps = torch.randn(mask.shape, generator=g)
    uniform = torch.rand(mask.shape, generator=g)
    gaussian, bernoulli = build_processes(config)
    x0_g = 2 * mask - 1
    x_g, x_b = gaussian.q_sample(x0_g, t, eps), bernoulli.q_sample(mask, t, uniform)
    out = model(image, x_g, x_b, t)
    return dict(t=t, x0_g=x0_g, x_g=x_g, x_b=x_b, out=out, gaussian=gaussian, bernoulli=bernoulli)


def test_prior_form_is_the_default_and_matches_torch_distributions() -> None:
    """eq. 10: KL(N(mu_theta, Sigma_theta) || N(0, I)), eq. 11: KL(B(phi_theta) || B(0.5)), per pixel, averaged;
    the oracle is torch.distributions.kl_divergence on mu/Sigma written out from the schedule."""
    from torch.distributions import Bernoulli, Normal, kl_divergence

    config = EchoDNDConfig.tiny(32)
    assert config.kl_form == "prior" and EchoDNDConfig.paper().kl_form == "prior"
    model = _model(config)
    image, mask = _batch()
    losses = training_losses(model, image, mask, torch.Generator().manual_seed(5))
    d = _draws(model, config, image, mask, 5)
    # mu_theta, Sigma_theta of p_theta(x_{t-1} | x_t) from (eps, v), written out (Ho et al. eqs. 6-7, Nichol eq. 15)
    sched = d["gaussian"].scheduler
    beta = sched.betas.double()
    abar = sched.alphas_cumprod.double()
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    t = d["t"]
    a, ap, b = abar[t].view(-1, 1, 1, 1), abar_prev[t].view(-1, 1, 1, 1), beta[t].view(-1, 1, 1, 1)
    pred = d["out"]["gaussian"].double()
    x_t = d["x_g"].double()
    x0 = (x_t - (1 - a).sqrt() * pred[:, :1]) / a.sqrt()
    mean = b * ap.sqrt() / (1 - a) * x0 + (1 - ap) * (1 - b).sqrt() / (1 - a) * x_t
    tilde = beta * (1 - abar_prev) / (1 - abar)
    log_tilde = torch.log(torch.cat([tilde[1:2], tilde[1:]]))[t].view(-1, 1, 1, 1)
    frac = (pred[:, 1:2] + 1) / 2
    var = torch.exp(frac * b.log() + (1 - frac) * log_tilde)
    want_g = kl_divergence(Normal(mean, var.sqrt()), Normal(torch.zeros_like(mean), 1.0)).mean()
    assert torch.allclose(losses["kl_gaussian"].double(), want_g, rtol=1e-4, atol=1e-6)
    phi = torch.sigmoid(d["out"]["bernoulli"].double())
    want_b = kl_divergence(Bernoulli(probs=phi), Bernoulli(probs=torch.full_like(phi, 0.5))).mean()
    assert torch.allclose(losses["kl_bernoulli"].double(), want_b, rtol=1e-4, atol=1e-7)
    # both are regularisers toward the priors: zero at the prior itself, finite for saturated logits
    zero_logits = torch.zeros(2, 1, 4, 4)
    assert d["bernoulli"].prior_kl(zero_logits).abs().max() < 1e-7
    assert torch.isfinite(d["bernoulli"].prior_kl(torch.full((1, 1, 2, 2), 80.0))).all()


def test_vb_option_gives_the_variational_bound_terms() -> None:
    """kl_form="vb" keeps the former terms: KL(q(x_{t-1} | x_t, x_0) || p_theta) with epsilon detached in L_KL,G."""
    config = EchoDNDConfig.tiny(32, kl_form="vb")
    model = _model(config)
    image, mask = _batch()
    losses = training_losses(model, image, mask, torch.Generator().manual_seed(5))
    d = _draws(model, config, image, mask, 5)
    t = d["t"]
    want_g = d["gaussian"].vb_term(d["out"]["gaussian"], d["x0_g"], d["x_g"], t).mean()
    want_b = d["bernoulli"].vb_term(d["out"]["bernoulli"], mask, d["x_b"], t).mean()
    assert torch.allclose(losses["kl_gaussian"], want_g, rtol=1e-5) and losses["kl_gaussian"] > 0
    assert torch.allclose(losses["kl_bernoulli"], want_b, rtol=1e-5) and losses["kl_bernoulli"] > 0
    same_weights = EchoDND(config.replace(kl_form="prior"))
    same_weights.load_state_dict(model.state_dict())
    prior = training_losses(same_weights, image, mask, torch.Generator().manual_seed(5))
    assert torch.equal(prior["gaussian"], losses["gaussian"])  # same draws and outputs, only the KL form differs
    assert abs(prior["kl_gaussian"].item() - losses["kl_gaussian"].item()) > 1e-3
    # vb: L_KL,G reaches GNEM's variance channel only (epsilon detached); prior: the epsilon channel as well
    for form, eps_gets_grad in (("vb", False), ("prior", True)):
        m = _model(config.replace(kl_form=form))
        only_kl = config.replace(kl_form=form, loss_terms=("kl_gaussian",))
        EchoDNDLoss(only_kl)(m, image, mask, torch.Generator().manual_seed(2))["total"].backward()
        grad = m.gnem.out[2].conv.weight.grad
        assert grad[1].abs().max() > 0
        assert (grad[0].abs().max() > 0) == eps_gets_grad, form


def test_saved_configs_without_the_new_fields_load_with_the_legacy_behaviour() -> None:
    from scripts.config import LEGACY_FIELDS

    old = EchoDNDConfig.tiny(64).to_dict()
    for key in LEGACY_FIELDS:
        old.pop(key)
    saved = EchoDNDConfig.from_saved(old)
    assert saved.kl_form == "vb" and saved.mfcm_low_levels == "strided"
    assert EchoDNDConfig.from_dict(old).kl_form == "prior"  # a new config written by hand gets the defaults
    assert EchoDNDConfig.from_saved(EchoDNDConfig.tiny(64).to_dict()) == EchoDNDConfig.tiny(64)
    with pytest.raises(ValueError, match="kl_form"):
        EchoDNDConfig.tiny(32, kl_form="elbo")


def test_trainer_adamw_decay_and_kl_form_options(tmp_path) -> None:
    from scripts.train import EchoDNDTrainer

    trainer = EchoDNDTrainer(
        tmp_path / "data", tmp_path / "run", config="tiny", image_size=32, progress=False, device="cpu"
    )
    trainer._build()
    assert isinstance(trainer.optimizer, torch.optim.AdamW)
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 1e-2  # decoupled decay, the stated default
    assert trainer.config.kl_form == "prior"
    legacy = EchoDNDTrainer(
        tmp_path / "data",
        tmp_path / "run2",
        config="tiny",
        image_size=32,
        weight_decay=0.0,
        kl_form="vb",
        progress=False,
        device="cpu",
    )
    legacy._build()
    assert legacy.config.kl_form == "vb" and legacy.optimizer.param_groups[0]["weight_decay"] == 0.0
    assert EchoDNDTrainer(tmp_path / "d", tmp_path / "r", config="tiny", ablation="kl_vb").config.kl_form == "vb"
    with pytest.raises(EchoDataError, match="KL form"):
        EchoDNDTrainer(tmp_path / "d", tmp_path / "r", config="tiny", kl_form="elbo")


def test_demo_weights_command_pins_the_settings_the_weights_were_trained_with() -> None:
    """`make demo-weights` must still produce the committed weights: legacy KL form and no weight decay."""
    import shlex
    from pathlib import Path

    from scripts.train import load_model

    root = Path(__file__).resolve().parents[2]
    recipe = (root / "Makefile").read_text().split("demo-weights: ")[1].split("\n\n")[0].replace("\\\n", " ")
    line = next(cmd for cmd in recipe.splitlines() if "configs/train.json" in cmd)
    args = shlex.split(line)
    option = {a: b for a, b in zip(args, args[1:]) if a.startswith("--")}
    model = load_model(root / "bundles" / "echo_dnd" / "models" / "model.pt")
    assert option["--kl_form"] == model.config.kl_form == "vb"  # saved without the field: the legacy form
    assert float(option["--weight_decay"]) == 0.0
    assert model.config.fusion_attention_max_tokens == EchoDNDConfig.tiny(64).fusion_attention_max_tokens
    rebuilt = EchoDNDConfig.tiny(int(option["--image_size"]), kl_form=option["--kl_form"])
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert {k: v.shape for k, v in EchoDND(rebuilt).state_dict().items()} == shapes


def test_a_checkpoint_from_before_the_new_fields_resumes_with_its_own_settings(tmp_path) -> None:
    from scripts.config import LEGACY_FIELDS
    from scripts.train import EchoDNDTrainer

    from echogains.data.phantom import make_phantom

    data = make_phantom(tmp_path / "Dataset001_P", n_patients=2, layout="nnunet", image_size=(32, 32), progress=False)
    kw = dict(config="tiny", image_size=32, batch_size=2, val_every=0, progress=False, device="cpu")
    EchoDNDTrainer(data, tmp_path / "run", steps=1, **kw).run()
    path = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in LEGACY_FIELDS:  # as written before kl_form / mfcm_low_levels existed
        state["config"].pop(key)
    torch.save(state, path)
    resumed = EchoDNDTrainer(data, tmp_path / "run", steps=2, **kw)
    resumed.run()
    assert resumed.step == 2 and resumed.config.kl_form == "vb" and resumed.config.mfcm_low_levels == "strided"
    # the resumed run's checkpoint names the fields now: today's defaults (prior, exchange) are another configuration
    assert torch.load(path, map_location="cpu", weights_only=True)["config"]["kl_form"] == "vb"
    with pytest.raises(EchoDataError, match="another configuration"):
        EchoDNDTrainer(data, tmp_path / "run", steps=3, **kw).run()
    EchoDNDTrainer(
        data,
        tmp_path / "run",
        steps=3,
        kl_form="vb",
        **{**kw, "config": EchoDNDConfig.tiny(32, mfcm_low_levels="strided").to_dict()},
    ).run()  # the same settings given explicitly resume
