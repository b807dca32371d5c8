"""Improved-DDPM process: cosine schedule, posterior, log-space learned variance, VLB terms, hybrid loss, respacing."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from echogains.ddpm.diffusion import (
    GaussianDiffusion,
    cosine_betas,
    discretized_gaussian_log_likelihood,
    normal_kl,
    randn_tensor,
    space_timesteps,
)

# Golden values of Eq. 17 with T = 4000, s = 0.008 (computed with Python's math module, float64).
GOLDEN_BETAS = {
    0: 9.865818813681315e-06,
    1: 1.01694148842979e-05,
    1999: 0.000788321276598114,
    3998: 0.749999962056056,
    3999: 0.999,
}
GOLDEN_ALPHA_BAR = {
    0: 0.9999901341811863,
    1: 0.9999799648666315,
    1999: 0.49384359044063775,
    3998: 1.517980468851458e-07,
}


def test_cosine_schedule_golden_values():
    betas = cosine_betas(4000)
    assert betas.dtype == np.float64 and betas.shape == (4000,)
    for t, value in GOLDEN_BETAS.items():
        assert betas[t] == pytest.approx(value, rel=1e-12)
    d = GaussianDiffusion.cosine(4000)
    for t, value in GOLDEN_ALPHA_BAR.items():
        assert float(d.alphas_cumprod[t]) == pytest.approx(value, rel=1e-10)
    # only the last step is clipped at max_beta = 0.999
    assert (betas[:-1] < 0.999).all() and betas[-1] == 0.999


def test_cosine_schedule_agrees_with_monai_within_float32():
    from monai.networks.schedulers import DDPMScheduler

    ours = cosine_betas(4000)
    monai = DDPMScheduler(num_train_timesteps=4000, schedule="cosine").betas.double().numpy()
    rel = np.abs(monai - ours) / ours
    assert rel.max() < 0.01  # same formula; MONAI's float32 evaluation loses up to ~0.9 % at small t
    monai_ab = DDPMScheduler(num_train_timesteps=4000, schedule="cosine").alphas_cumprod.double().numpy()
    assert np.abs(monai_ab - GaussianDiffusion.cosine(4000).alphas_cumprod.numpy()).max() < 1e-6


def test_posterior_matches_bayes_rule():
    d = GaussianDiffusion.cosine(100)
    x0, xt = torch.full((1, 1, 1, 1), 0.3, dtype=torch.float64), torch.full((1, 1, 1, 1), -0.7, dtype=torch.float64)
    for t in (1, 10, 50, 99):
        a_t, beta = 1 - float(d.betas[t]), float(d.betas[t])
        ab_prev = float(d.alphas_cumprod[t - 1])
        # q(x_{t-1} | x_t, x_0) ∝ N(x_t; sqrt(a_t) x_{t-1}, beta) N(x_{t-1}; sqrt(ab_prev) x_0, 1 - ab_prev)
        precision = a_t / beta + 1 / (1 - ab_prev)
        mean = (math.sqrt(a_t) * -0.7 / beta + math.sqrt(ab_prev) * 0.3 / (1 - ab_prev)) / precision
        m, logvar = d.q_posterior(x0, xt, torch.tensor([t]))
        assert float(m) == pytest.approx(mean, rel=1e-9)
        assert math.exp(float(logvar)) == pytest.approx(1 / precision, rel=1e-9)


def test_log_variance_interpolation_endpoints():
    d = GaussianDiffusion.cosine(1000)
    t = torch.tensor([0, 5, 500, 999])
    ones = torch.ones(4, 1, 2, 2, dtype=torch.float64)
    log_beta = d.log_betas[t].reshape(-1, 1, 1, 1)
    log_beta_tilde = d.posterior_log_variance_clipped[t].reshape(-1, 1, 1, 1)
    assert torch.allclose(d.log_variance(ones, t), log_beta.expand_as(ones))  # v = 1: beta_t
    assert torch.allclose(d.log_variance(-ones, t), log_beta_tilde.expand_as(ones))  # v = 0: beta~_t
    mid = d.log_variance(0 * ones, t)
    assert torch.allclose(mid, ((log_beta + log_beta_tilde) / 2).expand_as(ones))  # log-space, not variance-space
    # beta~_0 = 0 is clipped to beta~_1
    assert float(d.posterior_log_variance_clipped[0]) == float(d.posterior_log_variance_clipped[1])
    assert (d.posterior_variance[1:] < d.betas[1:]).all()


def test_normal_kl():
    m, lv = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    assert torch.equal(normal_kl(m, lv, m, lv), torch.zeros(5, dtype=torch.float64))
    z = torch.zeros(1, dtype=torch.float64)
    assert float(normal_kl(z, z, z + 1, z)) == pytest.approx(0.5)  # KL(N(0,1) || N(1,1)) = 1/2
    # KL(N(0, 1) || N(0, 4)) = log 2 + 1/8 - 1/2
    assert float(normal_kl(z, z, z, z + math.log(4))) == pytest.approx(math.log(2) + 1 / 8 - 1 / 2)


@pytest.mark.parametrize(("mean", "sigma"), [(0.0, 0.01), (0.3, 0.002), (-0.99, 0.05), (1.2, 0.3)])
def test_discretized_likelihood_is_a_distribution_over_the_256_levels(mean, sigma):
    x = torch.linspace(-1, 1, 256, dtype=torch.float64)
    logp = discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), torch.full_like(x, math.log(sigma)))
    assert float(torch.exp(logp).sum()) == pytest.approx(1.0, abs=1e-6)
    assert torch.isfinite(logp).all()


class _Leaf:
    """A 'network' whose output is a leaf tensor, so the gradient reaching each output channel can be inspected."""

    def __init__(self, shape: tuple[int, ...], seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.out = (0.3 * torch.randn(shape, generator=g)).requires_grad_(True)

    def __call__(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.out


def test_hybrid_loss_gradients_and_stop_gradient():
    d = GaussianDiffusion.cosine(4000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    t = torch.tensor([0, 3, 1000, 3999])
    noise = torch.randn(x0.shape, generator=g)
    net = _Leaf((4, 2, 8, 8))
    losses = d.training_losses(net, x0, t, noise)
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert torch.allclose(losses["loss"], losses["mse"] + 0.001 * 4000 * losses["vb"])
    losses["loss"].sum().backward()
    assert net.out.grad[:, 0].abs().sum() > 0 and net.out.grad[:, 1].abs().sum() > 0  # both channels learn
    # The VLB term alone trains only the variance channel (stop-gradient on the mean).
    net2 = _Leaf((4, 2, 8, 8))
    d.training_losses(net2, x0, t, noise)["vb"].sum().backward()
    assert torch.count_nonzero(net2.out.grad[:, 0]) == 0
    assert net2.out.grad[:, 1].abs().sum() > 0


def test_vb_term_is_zero_for_the_true_posterior_and_nll_at_t0():
    d = GaussianDiffusion.cosine(100)
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(2, 1, 4, 4, generator=g) * 2 - 1
    xt = torch.randn(2, 1, 4, 4, generator=g)
    t = torch.tensor([5, 50])
    mean, logvar = d.q_posterior(x0, xt, t)
    assert torch.allclose(d.vb_term(mean, logvar, x0, xt, t), torch.zeros(2), atol=1e-6)
    t0 = torch.tensor([0, 0])
    nll = d.vb_term(x0, torch.full_like(x0, -20.0), x0, xt, t0)  # a very sharp decoder at the right values
    assert torch.allclose(nll, torch.zeros(2), atol=1e-6)


def test_respacing_keeps_alphas_cumprod():
    d = GaussianDiffusion.cosine(4000)
    keep = space_timesteps(4000, 250)
    assert len(keep) == 250 and keep[0] == 0 and keep[-1] == 3999
    r = d.respace(250)
    assert r.num_timesteps == 250
    assert torch.equal(r.timestep_map, torch.tensor(keep))
    assert torch.allclose(r.alphas_cumprod, d.alphas_cumprod[keep], rtol=1e-12, atol=0)
    # respacing composes: 4000 -> 250 -> 25 equals 4000 -> those 25 steps
    rr = r.respace(25)
    direct = d.respace(rr.timestep_map.tolist())
    assert torch.allclose(rr.alphas_cumprod, direct.alphas_cumprod, rtol=1e-12, atol=0)
    assert torch.equal(rr.timestep_map, direct.timestep_map)
    with pytest.raises(ValueError):
        d.respace(5000)


def test_model_is_called_with_original_timesteps_and_p_sample_is_deterministic():
    seen = []

    def net(x, timesteps):
        seen.append(timesteps.clone())
        return torch.cat([0.1 * x, torch.zeros_like(x)], dim=1)

    r = GaussianDiffusion.cosine(4000).respace(10)
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    a = r.p_sample(net, x, 4, torch.Generator().manual_seed(7))
    b = r.p_sample(net, x, 4, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert torch.equal(seen[0], torch.full((3,), int(r.timestep_map[4])))
    # no noise at t = 0: the result does not depend on the generator
    last_a = r.p_sample(net, x, 0, torch.Generator().manual_seed(1))
    assert torch.equal(last_a, r.p_sample(net, x, 0, torch.Generator().manual_seed(2)))


def test_randn_tensor_per_image_generators_match_single_draws():
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    batch = randn_tensor((2, 1, 5, 5), gens, "cpu")
    for i, s in enumerate((3, 4)):
        single = randn_tensor((1, 1, 5, 5), torch.Generator().manual_seed(s), "cpu")
        assert torch.equal(batch[i : i + 1], single)
    with pytest.raises(ValueError):
        randn_tensor((3, 1, 5, 5), gens, "cpu")


def test_q_sample_and_q_step_statistics():
    d = GaussianDiffusion.cosine(1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((1, 1, 200, 200), 0.5)
    t = 300
    xt = d.q_sample(x0, torch.tensor([t]), torch.randn(x0.shape, generator=g))
    ab = float(d.alphas_cumprod[t])
    assert float(xt.mean()) == pytest.approx(math.sqrt(ab) * 0.5, abs=0.01)
    assert float(xt.var()) == pytest.approx(1 - ab, rel=0.03)
    # one undo step from q(x_{t-1} | x_0) lands on q(x_t | x_0)
    x_prev = d.q_sample(x0, torch.tensor([t - 1]), torch.randn(x0.shape, generator=g))
    x_next = d.q_step(x_prev, torch.tensor([t]), g)
    assert float(x_next.mean()) == pytest.approx(math.sqrt(ab) * 0.5, abs=0.01)
    assert float(x_next.var()) == pytest.approx(1 - ab, rel=0.03)
