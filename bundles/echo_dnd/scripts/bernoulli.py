"""Bernoulli diffusion of the mask (Echo-DND's Bernoulli chain), written here: no library has it.

Paper eq. 5 gives the one-step kernel q(x_t | x_{t-1}) = B((1 - beta_t) x_{t-1} + beta_t / 2). Composing it gives
the full forward formula (the ``+ (1 - abar_t) / 2`` term is what makes background pixels flip as t grows, and
q(x_T) -> B(0.5) as eq. 7 assumes; the authors' release drops it):

    q(x_t | x_0) = B(abar_t x_0 + (1 - abar_t) / 2)                                   (B1)

and Bayes' rule gives the posterior

    q(x_{t-1} | x_t, x_0) = B(theta_2 / (theta_1 + theta_2))                           (B2)
    theta_1 = [alpha_t (1 - x_t) + (1 - alpha_t) / 2] [abar_{t-1} (1 - x_0) + (1 - abar_{t-1}) / 2]
    theta_2 = [alpha_t x_t + (1 - alpha_t) / 2] [abar_{t-1} x_0 + (1 - abar_{t-1}) / 2]

BNEM outputs the logits of x_0; x_0_hat = sigmoid(logits) is used as a probability everywhere (eq. 6 and 9).
The reverse model is p_theta(x_{t-1} | x_t) = q(x_{t-1} | x_t, x_0_hat)  (BerDiff). The DDIM step (BerDiff) is

    x_{t-1} ~ B(sigma x_t + (abar_{t-1} - sigma abar_t) x_0_hat + [(1 - abar_{t-1}) - (1 - abar_t) sigma] / 2),
    sigma = (1 - abar_{t-1}) / (1 - abar_t)                                             (B3)

(the last bracket vanishes for this sigma, so the parameter is a convex combination of x_t and x_0_hat). Timesteps
are 0-based like MONAI's: index ``t`` is the paper's ``t + 1`` and abar_{t-1} at ``t = 0`` is 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.schedulers import Scheduler
from torch import nn

from .common import gather

__all__ = ["BernoulliDiffusion", "bernoulli_kl"]

_EPS = 1e-7


def bernoulli_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(B(p) || B(q)) element-wise in nats.

    Args:
        p: parameter of the first (true) Bernoulli; may be exactly 0 or 1.
        q: parameter of the second (model) Bernoulli; clamped away from 0 and 1.
    """
    q = q.clamp(_EPS, 1.0 - _EPS)
    return torch.xlogy(p, p) - torch.xlogy(p, q) + torch.xlogy(1.0 - p, 1.0 - p) - torch.xlogy(1.0 - p, 1.0 - q)


class BernoulliDiffusion(nn.Module):
    """Bernoulli forward process (B1), posterior (B2), L_B, L_KL,B (both forms) and the BDDIM step (B3).

    Args:
        num_train_timesteps: T.
        schedule: MONAI ``NoiseSchedules`` name (the beta_t of eq. 5).
        schedule_args: passed to the schedule (e.g. ``beta_start``, ``beta_end``).
    """

    def __init__(self, num_train_timesteps: int = 1000, schedule: str = "linear_beta", **schedule_args: float) -> None:
        super().__init__()
        self.scheduler = Scheduler(num_train_timesteps=num_train_timesteps, schedule=schedule, **schedule_args)
        self.num_train_timesteps = num_train_timesteps
        self.betas = self.scheduler.betas.double()
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])

    # --- forward process -----------------------------------------------------------------------------
    def q_probs(self, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B1): P(x_t = 1 | x_0) = abar_t x_0 + (1 - abar_t) / 2.

        Args:
            x0: clean mask in {0, 1} (or a probability).
            t: 0-based timesteps ``(B,)``.
        """
        abar = gather(self.alphas_cumprod, t, x0)
        return abar * x0 + (1.0 - abar) / 2.0

    def q_step_probs(self, x_prev: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(eq. 5): P(x_t = 1 | x_{t-1}) = (1 - beta_t) x_{t-1} + beta_t / 2."""
        beta = gather(self.betas, t, x_prev)
        return (1.0 - beta) * x_prev + beta / 2.0

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """Draw x_t ~ (B1) given uniform [0, 1) noise from the caller's generator (device-independent sampling)."""
        return (uniform < self.q_probs(x0, t)).to(x0.dtype)

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B2): P(x_{t-1} = 1 | x_t, x_0).

        Args:
            x0: clean mask in {0, 1}, or the probability x_0_hat (then this is p_theta's parameter).
            x_t: binary sample at ``t``.
            t: 0-based timesteps ``(B,)``; at ``t = 0`` the result is ``x0``.
        """
        alpha = gather(self.alphas, t, x_t)
        abar_prev = gather(self.alphas_cumprod_prev, t, x_t)
        # 1. theta_1 = [alpha_t (1 - x_t) + (1 - alpha_t)/2] [abar_{t-1} (1 - x_0) + (1 - abar_{t-1})/2]
        theta1 = (alpha * (1.0 - x_t) + (1.0 - alpha) / 2.0) * (abar_prev * (1.0 - x0) + (1.0 - abar_prev) / 2.0)
        # 2. theta_2 = [alpha_t x_t + (1 - alpha_t)/2] [abar_{t-1} x_0 + (1 - abar_{t-1})/2]
        theta2 = (alpha * x_t + (1.0 - alpha) / 2.0) * (abar_prev * x0 + (1.0 - abar_prev) / 2.0)
        # 3. posterior probability theta_2 / (theta_1 + theta_2); both factors are > 0 unless abar_{t-1} = 1
        return theta2 / (theta1 + theta2).clamp_min(1e-30)

    # --- losses --------------------------------------------------------------------------------------
    @staticmethod
    def bce(logits: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """L_B (eq. 9): binary cross-entropy of x_0_hat = sigmoid(logits) against x_0, per sample (nats)."""
        return F.binary_cross_entropy_with_logits(logits, x0, reduction="none").flatten(1).mean(1)

    def vb_term(self, logits: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """L_KL,B (eq. 11, as the variational-bound term) per sample, in bits per pixel.

        ``t > 0``: KL(q(x_{t-1} | x_t, x_0) || q(x_{t-1} | x_t, x_0_hat)); ``t = 0``: -log p_theta(x_0 | x_1).
        """
        x0_hat = torch.sigmoid(logits)
        true_p = self.q_posterior(x0, x_t, t)
        model_p = self.q_posterior(x0_hat, x_t, t)
        kl = bernoulli_kl(true_p, model_p).flatten(1).mean(1) / math.log(2.0)
        model_p = model_p.clamp(_EPS, 1.0 - _EPS)
        nll = -(torch.xlogy(x0, model_p) + torch.xlogy(1.0 - x0, 1.0 - model_p)).flatten(1).mean(1) / math.log(2.0)
        return torch.where(t.to(kl.device) == 0, nll, kl)

    @staticmethod
    def prior_kl(logits: torch.Tensor) -> torch.Tensor:
        """L_KL,B as the paper's eq. 11 per sample: KL(B(phi_theta) || B(0.5)), in nats per pixel.

        phi_theta = sigmoid(logits) is BNEM's x_0_hat (eq. 9); per pixel the KL is
        phi log phi + (1 - phi) log(1 - phi) + log 2, computed from log-sigmoids (finite for any logit).
        """
        phi = torch.sigmoid(logits)
        kl = phi * F.logsigmoid(logits) + (1.0 - phi) * F.logsigmoid(-logits) + math.log(2.0)
        return kl.flatten(1).mean(1)

    # --- sampling ------------------------------------------------------------------------------------
    def ddim_probs(self, x0_hat: torch.Tensor, x_t: torch.Tensor, t: int, t_prev: int) -> torch.Tensor:
        """(B3): P(x_{t_prev} = 1) of the Bernoulli DDIM step from ``t`` to ``t_prev`` (``-1``: clean sample)."""
        if not -1 <= t_prev < t < self.num_train_timesteps:
            raise ValueError(f"need -1 <= t_prev < t < T, got t={t}, t_prev={t_prev}")
        abar_t = float(self.alphas_cumprod[t])
        abar_prev = float(self.alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
        # 1. sigma = (1 - abar_{t-1}) / (1 - abar_t)
        sigma = (1.0 - abar_prev) / (1.0 - abar_t)
        # 2. p = sigma x_t + (abar_{t-1} - sigma abar_t) x_0_hat + [(1 - abar_{t-1}) - (1 - abar_t) sigma] / 2
        p = sigma * x_t + (abar_prev - sigma * abar_t) * x0_hat + ((1.0 - abar_prev) - (1.0 - abar_t) * sigma) / 2.0
        return p.clamp(0.0, 1.0)

    def ddim_step(
        self, logits: torch.Tensor, x_t: torch.Tensor, t: int, t_prev: int, uniform: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample x_{t_prev} by (B3) with the caller's uniform noise; returns ``(x_prev, p)``, ``p`` its parameter."""
        p = self.ddim_probs(torch.sigmoid(logits), x_t, t, t_prev)
        return (uniform < p).to(x_t.dtype), p
