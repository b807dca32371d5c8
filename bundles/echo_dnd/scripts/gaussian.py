"""Gaussian diffusion of the mask (Echo-DND's Gaussian chain) on MONAI's schedulers.

The schedule, the forward process q(x_t | x_0) and the reference posterior come from MONAI's ``DDPMScheduler``
(epsilon prediction, learned-range variance); this file adds what the scheduler does not expose as functions:
the posterior q(x_{t-1} | x_t, x_0) for a batch of timesteps, the learned-variance reverse distribution, the
variational-bound term, the paper's prior-form L_KL,G (eq. 10) and a DDIM step between any two timesteps.
Timesteps are 0-based (MONAI): index ``t`` is the paper's step ``t + 1``; ``alpha_bar_prev`` at ``t = 0`` is 1.
Masks enter the chain as ``x_0 = 2 * mask - 1``.

Networks know nothing of this file: the loss and the sampler pass network outputs in.
"""

from __future__ import annotations

import math

import torch
from monai.networks.schedulers import DDPMScheduler
from torch import nn

from .common import gather

__all__ = ["GaussianDiffusion", "PREDICTION_TYPES", "normal_kl", "binary_gaussian_nll"]

#: What GNEM's first output channel predicts (MONAI's names): ``epsilon`` (the paper, eq. 8), ``sample`` (x_0) or
#: ``v_prediction`` (v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0, Salimans & Ho 2022). The last two are options
#: beyond the paper: an epsilon-MSE weighs an x_0 error by abar_t / (1 - abar_t), ~0 at high noise, so an
#: epsilon network learns little about the mask where x_t carries none (benchmarks/echo_dnd_chains.py).
PREDICTION_TYPES: tuple[str, ...] = ("epsilon", "sample", "v_prediction")


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), element-wise, in nats.

    Args:
        mean1: mean of the first (true) distribution.
        logvar1: its log-variance.
        mean2: mean of the second (model) distribution.
        logvar2: its log-variance.
    """
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def binary_gaussian_nll(x0: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """-log p(x_0 | x_1) of a {-1, +1} mask under N(mean, var) discretised into two bins split at 0, in nats.

    The two-bin form of improved DDPM's discretised decoder: P(x_0 = +1) = Phi(mean / std), P(-1) = Phi(-mean / std),
    i.e. -log Phi(x_0 * mean / std).

    Args:
        x0: the clean mask in {-1, +1}.
        mean: mean of p_theta(x_0 | x_1).
        logvar: its log-variance.
    """
    return -torch.special.log_ndtr(x0 * mean * torch.exp(-0.5 * logvar))


class GaussianDiffusion(nn.Module):
    """Gaussian forward process, posterior, learned-variance reverse step, L_KL,G and DDIM (paper eqs. 1-4, 8, 10).

    Args:
        num_train_timesteps: T.
        schedule: MONAI ``NoiseSchedules`` name.
        variance_interp: learned-range interpolation between beta_tilde_t and beta_t: ``"log"`` (improved DDPM,
            in log-variance) or ``"linear"`` (MONAI's ``DDPMScheduler``, in variance).
        prediction_type: what the network's first channel predicts, :data:`PREDICTION_TYPES` (default
            ``epsilon``, the paper's); every method that takes a model output reads it this way.
        schedule_args: passed to the schedule (e.g. ``beta_start``, ``beta_end``).
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        schedule: str = "linear_beta",
        variance_interp: str = "log",
        prediction_type: str = "epsilon",
        **schedule_args: float,
    ) -> None:
        super().__init__()
        if variance_interp not in ("log", "linear"):
            raise ValueError(f"variance_interp must be 'log' or 'linear', got {variance_interp!r}")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        self.variance_interp = variance_interp
        self.prediction_type = prediction_type
        self.scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            schedule=schedule,
            variance_type="learned_range",
            clip_sample=False,
            prediction_type="epsilon",
            **schedule_args,
        )
        self.num_train_timesteps = num_train_timesteps
        betas = self.scheduler.betas.double()
        abar = self.scheduler.alphas_cumprod.double()
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        # q(x_{t-1} | x_t, x_0) = N(c0 * x_0 + ct * x_t, beta_tilde_t)   (Ho et al. 2020, eqs. 6-7)
        self.betas = betas
        self.alphas_cumprod = abar
        self.alphas_cumprod_prev = abar_prev
        self.posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
        # beta_tilde_0 = 0: clip its log to beta_tilde_1 as improved DDPM does
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]])
        )
        self.posterior_coef_x0 = betas * abar_prev.sqrt() / (1.0 - abar)
        self.posterior_coef_xt = (1.0 - abar_prev) * (1.0 - betas).sqrt() / (1.0 - abar)

    # --- forward process -----------------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (the argument of eq. 8), via MONAI's ``add_noise``.

        Args:
            x0: clean masks scaled to {-1, +1}, ``(B, 1, H, W)``.
            t: 0-based timesteps ``(B,)``.
            noise: standard normal noise of the same shape (drawn by the caller from its generator).
        """
        return self.scheduler.add_noise(x0, noise, t)

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and clipped log-variance of q(x_{t-1} | x_t, x_0) (Ho et al. 2020, eqs. 6-7).

        Args:
            x0: clean (or estimated) sample.
            x_t: noisy sample at ``t``.
            t: 0-based timesteps ``(B,)``.
        """
        mean = gather(self.posterior_coef_x0, t, x_t) * x0 + gather(self.posterior_coef_xt, t, x_t) * x_t
        return mean, gather(self.posterior_log_variance_clipped, t, x_t)

    def predict_x0(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
        abar = gather(self.alphas_cumprod, t, x_t)
        return (x_t - (1.0 - abar).sqrt() * eps) / abar.sqrt()

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """eps = (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t)."""
        abar = gather(self.alphas_cumprod, t, x_t)
        return (x_t - abar.sqrt() * x0) / (1.0 - abar).sqrt()

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the first output channel learns (the MSE target of L_G): eps, x_0 or v, by ``prediction_type``."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "sample":
            return x0
        abar = gather(self.alphas_cumprod, t, x0)
        return abar.sqrt() * noise - (1.0 - abar).sqrt() * x0

    def split(self, prediction: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(eps, x_0)`` implied by the first output channel ``prediction`` at ``x_t``, ``t`` (any prediction type)."""
        if self.prediction_type == "epsilon":
            return prediction, self.predict_x0(x_t, t, prediction)
        if self.prediction_type == "sample":
            return self.predict_eps(x_t, t, prediction), prediction
        abar = gather(self.alphas_cumprod, t, x_t)
        # x_0 = sqrt(abar) x_t - sqrt(1 - abar) v,  eps = sqrt(1 - abar) x_t + sqrt(abar) v
        eps = (1.0 - abar).sqrt() * x_t + abar.sqrt() * prediction
        return eps, abar.sqrt() * x_t - (1.0 - abar).sqrt() * prediction

    # --- learned reverse process (eq. 4) -------------------------------------------------------------
    def model_log_variance(self, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log Sigma_theta from the network's variance channel ``v`` in [-1, 1] (learned range)."""
        frac = (v + 1.0) / 2.0
        if self.variance_interp == "log":
            # log Sigma = frac * log beta_t + (1 - frac) * log beta_tilde_t        (Nichol & Dhariwal 2021, eq. 15)
            max_log = gather(self.betas.log(), t, v)
            min_log = gather(self.posterior_log_variance_clipped, t, v)
            return frac * max_log + (1.0 - frac) * min_log
        # Sigma = frac * beta_t + (1 - frac) * beta_tilde_t                          (MONAI's learned_range)
        var = frac * gather(self.betas, t, v) + (1.0 - frac) * gather(self.posterior_variance, t, v)
        return torch.log(var.clamp_min(1e-20))

    def p_mean_variance(
        self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, log-variance and x_0 estimate of p_theta(x_{t-1} | x_t) from GNEM's output (prediction, variance)."""
        v = model_output[:, 1:2]
        _, x0 = self.split(model_output[:, :1], x_t, t)
        mean, _ = self.q_posterior(x0, x_t, t)
        return mean, self.model_log_variance(v, t), x0

    def vb_term(self, model_output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """One term of the variational bound per sample, in bits per pixel (L_KL,G, eq. 10, as L_vb).

        ``t > 0``: KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)); ``t = 0``: the decoder's -log p(x_0 | x_1)
        under a two-bin discretised Gaussian (masks are binary). The caller detaches epsilon when the mean should
        be trained by L_G only (improved DDPM's hybrid loss).
        """
        true_mean, true_logvar = self.q_posterior(x0, x_t, t)
        mean, logvar, _ = self.p_mean_variance(model_output, x_t, t)
        kl = normal_kl(true_mean, true_logvar, mean, logvar).flatten(1).mean(1) / math.log(2.0)
        nll = binary_gaussian_nll(x0, mean, logvar).flatten(1).mean(1) / math.log(2.0)
        return torch.where(t.to(kl.device) == 0, nll, kl)

    def prior_kl(self, model_output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """L_KL,G as the paper's eq. 10 per sample: KL(N(mu_theta, Sigma_theta) || N(0, I)), in nats per pixel.

        mu_theta and Sigma_theta are the mean and learned-range variance of p_theta(x_{t-1} | x_t) from GNEM's
        ``(eps, v)`` output (:meth:`p_mean_variance`); the KL of each pixel is
        (Sigma + mu^2 - 1 - log Sigma) / 2, averaged over the pixels. Both outputs receive its gradient.
        """
        mean, logvar, _ = self.p_mean_variance(model_output, x_t, t)
        zero = torch.zeros_like(mean)
        return normal_kl(mean, logvar, zero, zero).flatten(1).mean(1)

    # --- sampling ------------------------------------------------------------------------------------
    def ddim_step(
        self,
        eps: torch.Tensor,
        x_t: torch.Tensor,
        t: int,
        t_prev: int,
        eta: float = 0.0,
        clip: bool = True,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One DDIM step from ``t`` to any earlier ``t_prev`` (``-1``: the clean sample). Song et al. 2021, eq. 12.

        Args:
            eps: the network's prediction at ``t``: the noise for the default ``prediction_type`` (``epsilon``),
                else x_0 or v, converted by :meth:`split`.
            x_t: current sample.
            t: current 0-based timestep.
            t_prev: target timestep, ``-1 <= t_prev < t``.
            eta: 0 for deterministic DDIM, 1 for DDPM-like stochasticity.
            clip: clip the x_0 estimate to [-1, 1] and re-derive epsilon from it (improved-diffusion's DDIM).
            noise: standard normal noise for ``eta > 0`` (drawn by the caller from its generator).

        Returns:
            ``(x_prev, x0_estimate)``.
        """
        if not -1 <= t_prev < t < self.num_train_timesteps:
            raise ValueError(f"need -1 <= t_prev < t < T, got t={t}, t_prev={t_prev}")
        abar_t = float(self.alphas_cumprod[t])
        abar_prev = float(self.alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
        # 1. x_0 estimate: (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)                          (DDIM eq. 9)
        if self.prediction_type == "epsilon":
            x0 = (x_t - math.sqrt(1.0 - abar_t) * eps) / math.sqrt(abar_t)
        else:  # x_0 or v: the implied (eps, x_0)
            eps, x0 = self.split(eps, x_t, torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device))
        if clip:
            x0 = x0.clamp(-1.0, 1.0)
            eps = (x_t - math.sqrt(abar_t) * x0) / math.sqrt(1.0 - abar_t)
        # 2. sigma_t(eta) = eta * sqrt((1 - abar_prev) / (1 - abar_t)) * sqrt(1 - abar_t / abar_prev)   (eq. 16)
        sigma = eta * math.sqrt((1.0 - abar_prev) / (1.0 - abar_t) * (1.0 - abar_t / abar_prev))
        # 3. x_prev = sqrt(abar_prev) x_0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z            (eq. 12)
        x_prev = math.sqrt(abar_prev) * x0 + math.sqrt(max(1.0 - abar_prev - sigma**2, 0.0)) * eps
        if sigma > 0.0:
            if noise is None:
                raise ValueError("eta > 0 needs noise drawn from the caller's generator")
            x_prev = x_prev + sigma * noise
        return x_prev, x0
