"""Diffusion math of Echo-DND: Bernoulli laws (closed forms, Bayes oracle) and the Gaussian chain against MONAI."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from scripts import BernoulliDiffusion, EchoDNDConfig, GaussianDiffusion, build_processes, timestep_pairs


def _t(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


@pytest.fixture(scope="module")
def paper_processes() -> tuple[GaussianDiffusion, BernoulliDiffusion]:
    return build_processes(EchoDNDConfig.paper())


# --- Bernoulli: forward process ----------------------------------------------------------------------------
@pytest.mark.parametrize("T", [1000, 50])
def test_bernoulli_q_xT_is_fair_coin(T: int) -> None:
    bern = build_processes(EchoDNDConfig.tiny(32, num_train_timesteps=T))[1]
    x0 = torch.tensor([0.0, 1.0]).reshape(2, 1, 1, 1)
    p = bern.q_probs(x0, _t(T - 1, T - 1))
    assert torch.allclose(p, torch.full_like(p, 0.5), atol=1e-3)


def test_bernoulli_forward_formula_is_the_composed_one_step_kernel(paper_processes) -> None:
    _, bern = paper_processes
    x0 = torch.tensor([0.0, 1.0], dtype=torch.float64).reshape(2, 1)
    p = x0.clone()  # P(x_t = 1) propagated with eq. 5 step by step
    for t in range(1000):
        p = bern.q_step_probs(p, _t(t, t))
        if t in (0, 9, 250, 999):
            assert torch.allclose(p, bern.q_probs(x0, _t(t, t)), atol=1e-10)


def test_bernoulli_background_flips_at_large_t(paper_processes) -> None:
    """The (1 - abar_t)/2 term: a background pixel is 1 with probability ~1/2 at large t, ~beta_1/2 at t = 0."""
    _, bern = paper_processes
    x0 = torch.zeros(2, 1, 64, 64)
    u = torch.rand(x0.shape, generator=torch.Generator().manual_seed(0))
    xt = bern.q_sample(x0, _t(0, 999), u)
    assert xt[0].mean() < 1e-3
    assert abs(xt[1].mean().item() - 0.5) < 0.03
    # golden value of the closed form at t = 500 (0-based) for background
    assert bern.q_probs(torch.zeros(1, 1), _t(500)).item() == pytest.approx((1 - bern.alphas_cumprod[500].item()) / 2)
    assert bern.q_probs(torch.zeros(1, 1), _t(500)).item() > 0.45


# --- Bernoulli: posterior --------------------------------------------------------------------------------
def test_bernoulli_posterior_hand_values() -> None:
    """T = 2, betas (0.1, 0.3): alpha_2 = 0.7, abar_1 = 0.9; theta_1, theta_2 of the Bernoulli posterior by hand."""
    bern = BernoulliDiffusion(num_train_timesteps=2, schedule="linear_beta", beta_start=0.1, beta_end=0.3)
    x_t = torch.tensor([1.0, 1.0, 0.0, 0.0]).reshape(4, 1)
    x0 = torch.tensor([1.0, 0.0, 1.0, 0.0]).reshape(4, 1)
    got = bern.q_posterior(x0, x_t, _t(1, 1, 1, 1)).flatten()
    expected = torch.tensor(
        [
            0.85 * 0.95 / (0.85 * 0.95 + 0.15 * 0.05),
            0.85 * 0.05 / (0.85 * 0.05 + 0.15 * 0.95),
            0.15 * 0.95 / (0.15 * 0.95 + 0.85 * 0.05),
            0.15 * 0.05 / (0.15 * 0.05 + 0.85 * 0.95),
        ]
    )
    assert torch.allclose(got, expected, atol=1e-6)
    assert got[0].item() == pytest.approx(0.990797546, abs=1e-6)


def test_bernoulli_posterior_equals_bayes_rule(paper_processes) -> None:
    """q(x_{t-1} | x_t, x_0) = q(x_t | x_{t-1}) q(x_{t-1} | x_0) / q(x_t | x_0), enumerated over binary values."""
    _, bern = paper_processes
    for t, xt, x0 in itertools.product((1, 7, 300, 999), (0.0, 1.0), (0.0, 1.0)):
        tt = _t(t)
        prev1 = bern.q_probs(torch.tensor([[x0]], dtype=torch.float64), _t(t - 1))  # P(x_{t-1} = 1 | x0)
        like = {v: bern.q_step_probs(torch.tensor([[v]], dtype=torch.float64), tt) for v in (0.0, 1.0)}
        lik = {v: like[v] if xt == 1.0 else 1 - like[v] for v in (0.0, 1.0)}  # q(x_t | x_{t-1} = v)
        num = lik[1.0] * prev1
        bayes = num / (num + lik[0.0] * (1 - prev1))
        got = bern.q_posterior(torch.tensor([[x0]], dtype=torch.float64), torch.tensor([[xt]], dtype=torch.float64), tt)
        assert got.item() == pytest.approx(bayes.item(), abs=1e-9)


def test_bernoulli_posterior_is_probability_and_marginalises(paper_processes) -> None:
    _, bern = paper_processes
    g = torch.Generator().manual_seed(1)
    t = torch.randint(1, 1000, (256,), generator=g)
    x0 = torch.rand(256, 1, generator=g, dtype=torch.float64)  # soft x_0 (as x_0_hat) also allowed
    for xt in (torch.zeros_like(x0), torch.ones_like(x0)):
        p = bern.q_posterior(x0, xt, t)
        assert torch.all((p >= 0) & (p <= 1))
    # sum_{x_t} q(x_t | x_0) q(x_{t-1} = 1 | x_t, x_0) = q(x_{t-1} = 1 | x_0) for binary x_0
    x0 = (x0 > 0.5).double()
    qt = bern.q_probs(x0, t)
    mix = qt * bern.q_posterior(x0, torch.ones_like(x0), t) + (1 - qt) * bern.q_posterior(x0, torch.zeros_like(x0), t)
    assert torch.allclose(mix, bern.q_probs(x0, t - 1), atol=1e-9)


def test_bernoulli_posterior_at_first_step_returns_x0(paper_processes) -> None:
    _, bern = paper_processes
    x0 = torch.tensor([0.0, 1.0, 0.0, 1.0]).reshape(4, 1)
    xt = torch.tensor([0.0, 0.0, 1.0, 1.0]).reshape(4, 1)
    assert torch.equal(bern.q_posterior(x0, xt, _t(0, 0, 0, 0)), x0)


def test_bernoulli_ddim_step_preserves_marginals_and_ends_at_x0(paper_processes) -> None:
    _, bern = paper_processes
    x0 = torch.tensor([0.0, 1.0], dtype=torch.float64).reshape(2, 1)
    for t, t_prev in [(999, 899), (500, 17), (40, 0), (3, 2)]:
        qt = bern.q_probs(x0, _t(t, t))
        p1 = bern.ddim_probs(x0, torch.ones_like(x0), t, t_prev)
        p0 = bern.ddim_probs(x0, torch.zeros_like(x0), t, t_prev)
        assert torch.all((p0 >= 0) & (p1 <= 1))
        assert torch.allclose(qt * p1 + (1 - qt) * p0, bern.q_probs(x0, _t(t_prev, t_prev)), atol=1e-9)
    x0_hat = torch.tensor([[0.2], [0.9]], dtype=torch.float64)
    assert torch.allclose(bern.ddim_probs(x0_hat, torch.ones_like(x0_hat), 5, -1), x0_hat)


def test_bernoulli_vb_term_vanishes_for_a_perfect_prediction(paper_processes) -> None:
    _, bern = paper_processes
    g = torch.Generator().manual_seed(2)
    x0 = (torch.rand(4, 1, 8, 8, generator=g) > 0.5).float()
    t = _t(0, 3, 400, 999)
    xt = bern.q_sample(x0, t, torch.rand(x0.shape, generator=g))
    perfect = bern.vb_term((2 * x0 - 1) * 30, x0, xt, t)
    wrong = bern.vb_term((1 - 2 * x0) * 3, x0, xt, t)
    assert torch.all(perfect < 1e-6) and torch.all(wrong[:3] > 1e-3)
    assert torch.all(torch.isfinite(wrong))


# --- Gaussian: against MONAI's schedulers --------------------------------------------------------------
def test_gaussian_schedule_and_q_sample_golden(paper_processes) -> None:
    gauss, _ = paper_processes
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    assert np.allclose(gauss.alphas_cumprod.numpy(), abar, rtol=1e-5)
    x0 = torch.tensor([-1.0, 1.0, 1.0]).reshape(3, 1, 1, 1)
    eps = torch.tensor([0.5, -2.0, 0.1]).reshape(3, 1, 1, 1)
    t = _t(0, 250, 999)
    expected = (
        np.sqrt(abar[[0, 250, 999]]) * x0.flatten().numpy() + np.sqrt(1 - abar[[0, 250, 999]]) * eps.flatten().numpy()
    )
    assert np.allclose(gauss.q_sample(x0, t, eps).flatten().numpy(), expected, atol=1e-5)


def test_gaussian_posterior_matches_monai(paper_processes) -> None:
    gauss, _ = paper_processes
    ref = DDPMScheduler(1000, variance_type="learned_range", clip_sample=False)
    g = torch.Generator().manual_seed(3)
    x0, xt = torch.randn(1, 1, 4, 4, generator=g), torch.randn(1, 1, 4, 4, generator=g)
    for t in (0, 1, 10, 500, 999):
        mean, logvar = gauss.q_posterior(x0, xt, _t(t))
        assert torch.allclose(mean, ref._get_mean(t, x0, xt), atol=1e-5)
        if t > 0:
            assert torch.allclose(logvar.exp().flatten()[0], ref._get_variance(t).float(), rtol=1e-4)


def test_learned_range_variance(paper_processes) -> None:
    gauss, _ = paper_processes
    linear = GaussianDiffusion(1000, variance_interp="linear", beta_start=1e-4, beta_end=0.02)
    ref = DDPMScheduler(1000, variance_type="learned_range")
    v = torch.tensor([-1.0, -0.3, 0.4, 1.0]).reshape(4, 1, 1, 1)
    for t in (1, 100, 999):
        tt = torch.full((4,), t)
        want = torch.stack([ref._get_variance(t, predicted_variance=vi) for vi in v.flatten()])
        assert torch.allclose(linear.model_log_variance(v, tt).exp().flatten(), want.float(), rtol=1e-4)
        beta, tilde = gauss.betas[t].item(), gauss.posterior_variance[t].item()
        frac = (v.flatten().double() + 1) / 2
        log_ref = frac * np.log(beta) + (1 - frac) * np.log(tilde)  # improved DDPM, eq. 15
        assert torch.allclose(gauss.model_log_variance(v, tt).flatten().double(), log_ref, atol=1e-5)


def test_gaussian_vb_term_is_zero_for_the_true_posterior(paper_processes) -> None:
    gauss, _ = paper_processes
    g = torch.Generator().manual_seed(4)
    x0 = torch.where(torch.rand(3, 1, 8, 8, generator=g) > 0.5, 1.0, -1.0)
    eps = torch.randn(x0.shape, generator=g)
    t = _t(1, 300, 999)
    xt = gauss.q_sample(x0, t, eps)
    exact = torch.cat([eps, -torch.ones_like(eps)], dim=1)  # true epsilon, variance = beta_tilde
    assert torch.all(gauss.vb_term(exact, x0, xt, t).abs() < 1e-3)
    off = torch.cat([eps + 0.5, torch.ones_like(eps)], dim=1)
    assert torch.all(gauss.vb_term(off, x0, xt, t) > 1e-3)
    # t = 0: two-bin decoder NLL is small for the right mean, large for the wrong sign
    t0 = _t(0, 0, 0)
    xt0 = gauss.q_sample(x0, t0, eps)
    good = gauss.vb_term(torch.cat([gauss.predict_eps(xt0, t0, x0), torch.zeros_like(eps)], 1), x0, xt0, t0)
    bad = gauss.vb_term(torch.cat([gauss.predict_eps(xt0, t0, -x0), torch.zeros_like(eps)], 1), x0, xt0, t0)
    assert torch.all(good < 1e-3) and torch.all(bad > 10)


@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_gaussian_ddim_step_matches_monai(paper_processes, eta: float) -> None:
    gauss, _ = paper_processes
    ref = DDIMScheduler(1000, clip_sample=False)
    ref.set_timesteps(10)  # MONAI steps to t - 1000 // 10
    g = torch.Generator().manual_seed(5)
    xt, eps = torch.randn(2, 1, 8, 8, generator=g), torch.randn(2, 1, 8, 8, generator=g)
    for t in (999, 500, 99):
        want, want_x0 = ref.step(eps, t, xt, eta=eta, generator=torch.Generator().manual_seed(9))
        noise = torch.randn(xt.shape, generator=torch.Generator().manual_seed(9))
        got, got_x0 = gauss.ddim_step(eps, xt, t, t - 100, eta=eta, clip=False, noise=noise)
        assert torch.allclose(got, want, atol=1e-4) and torch.allclose(got_x0, want_x0, atol=1e-3)


def test_timestep_pairs() -> None:
    assert timestep_pairs(1000, 1) == [(999, -1)]
    pairs = timestep_pairs(1000, 10)
    assert pairs[0] == (999, 888) and pairs[-1] == (0, -1) and len(pairs) == 10
    for n in (5, 17, 1000):
        pairs = timestep_pairs(1000, n)
        assert len(pairs) == n and all(a > b for a, b in pairs)
        assert all(pairs[i][1] == pairs[i + 1][0] for i in range(n - 1))
    assert timestep_pairs(50, 50) == [(t, t - 1) for t in range(49, -1, -1)]
    with pytest.raises(ValueError):
        timestep_pairs(50, 51)


@pytest.mark.parametrize("prediction", ["sample", "v_prediction"])
def test_gaussian_prediction_options_are_reparameterisations_of_epsilon(prediction: str) -> None:
    """x_0- and v-prediction (options beyond the paper): the exact target implies the exact (eps, x_0), and DDIM,
    the posterior mean and the loss's target agree with the epsilon process fed the true noise."""
    eps_proc = GaussianDiffusion(prediction_type="epsilon")
    other = GaussianDiffusion(prediction_type=prediction)
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(3, 1, 8, 8, generator=g) > 0.5).double() * 2 - 1
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 500, 999])
    x_t = other.q_sample(x0, t, noise)
    target = other.target(x0, noise, t)
    assert not torch.allclose(target, noise)
    eps_hat, x0_hat = other.split(target, x_t, t)
    assert torch.allclose(eps_hat, noise, atol=1e-8) and torch.allclose(x0_hat, x0, atol=1e-6)
    var = torch.zeros_like(x0)
    m1, _, _ = eps_proc.p_mean_variance(torch.cat([noise, var], 1), x_t, t)
    m2, _, _ = other.p_mean_variance(torch.cat([target, var], 1), x_t, t)
    assert torch.allclose(m1, m2, atol=1e-6)
    for tt, tp in [(999, 500), (500, -1)]:
        xt = other.q_sample(x0, torch.full((3,), tt), noise)
        a = eps_proc.ddim_step(noise, xt, tt, tp, clip=False)
        b = other.ddim_step(other.target(x0, noise, torch.full((3,), tt)), xt, tt, tp, clip=False)
        assert all(torch.allclose(u, v, atol=1e-5) for u, v in zip(a, b))
        assert torch.allclose(b[1], x0, atol=1e-5)
    assert build_processes(EchoDNDConfig.tiny(32, gaussian_prediction=prediction))[0].prediction_type == prediction
    assert EchoDNDConfig.paper().gaussian_prediction == "epsilon"
    with pytest.raises(ValueError):
        GaussianDiffusion(prediction_type="score")
