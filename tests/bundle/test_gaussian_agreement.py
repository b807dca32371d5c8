"""The bundle's Gaussian chain (``scripts/gaussian.py``) and the DDPM's core (``echogains/ddpm/diffusion.py``) agree.

The bundle keeps its own process (``bundles/echo_dnd/docs/README.md``, "Why the bundle keeps its own Gaussian
diffusion"); this test holds the shared mathematics together. On one schedule, linear and cosine, at several
timesteps: the forward sample, the posterior mean and log-variance, the learned-range log-variance, the Gaussian KL
and the variational-bound term at t > 0 agree to float64 rounding, when the bundle's MONAI scheduler is given
float64 tables (the :func:`float64_monai` fixture; MONAI itself keeps them in float32, where 1 - alpha_bar near
t = 0 loses digits, so the real bundle agrees only to float32 rounding there: see the last test). The t = 0 terms
differ on purpose (binary masks: a two-bin decoder; 8-bit images: 256 bins) and are not compared.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import scripts.gaussian as bundle_gaussian
import torch
from monai.networks.schedulers import DDPMScheduler

from echogains.ddpm.diffusion import GaussianDiffusion as CoreDiffusion
from echogains.ddpm.diffusion import cosine_betas, normal_kl

T = 1000
TIMESTEPS = (1, 2, 10, 250, 500, 999)
SCHEDULES = ("linear_beta", "cosine")
#: float64 rounding: a wrong formula is off by far more (the test was seen failing on a posterior coefficient
#: without its sqrt, a KL with a flipped sign and a log-variance interpolated the wrong way round).
TIGHT = dict(rtol=1e-10, atol=1e-12)


class _Float64Scheduler(DDPMScheduler):
    """MONAI's scheduler with its betas and alpha_bar in float64 (alpha_bar = cumprod(1 - beta), as the core's)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.betas = self.betas.double()
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)


@pytest.fixture
def float64_monai(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(bundle_gaussian, "DDPMScheduler", _Float64Scheduler)
    yield


def _pair(schedule: str) -> tuple[bundle_gaussian.GaussianDiffusion, CoreDiffusion]:
    bundle = bundle_gaussian.GaussianDiffusion(T, schedule=schedule, variance_interp="log")
    return bundle, CoreDiffusion(bundle.betas.numpy(), clip_denoised=False)


def _batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = len(TIMESTEPS)
    x0 = torch.where(torch.rand(n, 1, 8, 8, generator=g) > 0.5, 1.0, -1.0).double()  # masks in {-1, +1}
    return {
        "x0": x0,
        "noise": torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64),
        "xt": torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64),
        "out": torch.randn(n, 2, 8, 8, generator=g, dtype=torch.float64).clamp(-1, 1),
        "t": torch.tensor(TIMESTEPS),
    }


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_forward_process_and_posterior_agree(schedule: str, float64_monai: None) -> None:
    bundle, core = _pair(schedule)
    b = _batch(0)
    torch.testing.assert_close(bundle.alphas_cumprod, core.alphas_cumprod, **TIGHT)
    torch.testing.assert_close(
        bundle.q_sample(b["x0"], b["t"], b["noise"]), core.q_sample(b["x0"], b["t"], b["noise"]), **TIGHT
    )
    for got, want in zip(bundle.q_posterior(b["x0"], b["xt"], b["t"]), core.q_posterior(b["x0"], b["xt"], b["t"])):
        torch.testing.assert_close(got, want, **TIGHT)


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_learned_variance_kl_and_vb_term_agree(schedule: str, float64_monai: None) -> None:
    bundle, core = _pair(schedule)
    b = _batch(1)
    v = b["out"][:, 1:2]
    torch.testing.assert_close(bundle.model_log_variance(v, b["t"]), core.log_variance(v, b["t"]), **TIGHT)
    m1, m2, l1, l2 = b["xt"], b["noise"], 0.3 * b["out"][:, :1], -0.2 * b["out"][:, 1:]
    torch.testing.assert_close(bundle_gaussian.normal_kl(m1, l1, m2, l2), normal_kl(m1, l1, m2, l2), **TIGHT)
    # vb term at t > 0: the same reverse step (epsilon prediction, learned range in log space), the same KL in bits
    p = core.p_mean_variance(b["out"][:, :1], v, b["xt"], b["t"], clip=False)
    want = core.vb_term(p.mean, p.log_variance, b["x0"], b["xt"], b["t"])
    torch.testing.assert_close(bundle.vb_term(b["out"], b["x0"], b["xt"], b["t"]), want, **TIGHT)


def test_the_bundle_as_shipped_agrees_to_float32_rounding() -> None:
    """MONAI's float32 tables: alpha_bar to float32 rounding; the cosine betas are the core's eq. 17 ones."""
    bundle, core = _pair("cosine")
    torch.testing.assert_close(bundle.betas, torch.from_numpy(cosine_betas(T)), rtol=2e-4, atol=1e-6)
    torch.testing.assert_close(bundle.alphas_cumprod, core.alphas_cumprod, rtol=1e-6, atol=1e-7)
    b = _batch(2)
    torch.testing.assert_close(
        bundle.q_sample(b["x0"].float(), b["t"], b["noise"].float()),
        core.q_sample(b["x0"], b["t"], b["noise"]).float(),
        rtol=1e-5,
        atol=1e-6,
    )
