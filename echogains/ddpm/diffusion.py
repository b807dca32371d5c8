"""Improved-DDPM Gaussian diffusion process (Nichol & Dhariwal 2021): cosine schedule, learned variance, hybrid loss.

The process object holds only the schedule (as buffers, so ``.to(device)`` and ``state_dict`` work) and takes the
network as an argument, as MONAI's schedulers and inferers do. The network is a MONAI ``DiffusionModelUNet`` with
``2 * C`` output channels: the noise prediction epsilon and the raw variance interpolation value (improved DDPM,
Sec. 3.1). Equation numbers refer to Nichol & Dhariwal, "Improved denoising diffusion probabilistic models"
(ICML 2021). Index convention (as in their code): ``t = 0 .. T-1``; ``q_sample(x0, t)`` gives the latent at step
``t`` (the paper's ``x_{t+1}``) and :meth:`GaussianDiffusion.p_sample` at ``t = 0`` returns the clean image.

What MONAI does not provide and is written here: MONAI's ``DDPMScheduler`` interpolates the learned variance in
variance space (``learned_range``) instead of log space (Eq. 15), and evaluates the cosine schedule in float32,
which for T = 4000 is off by up to 0.9 % in beta at small t (where log beta enters Eq. 15). The schedule is
therefore computed here in float64 from Eq. 17; ``tests/ddpm`` checks it against MONAI's ``"cosine"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from echogains.utils import progress as progress_bar

__all__ = [
    "cosine_alpha_bar",
    "cosine_betas",
    "space_timesteps",
    "normal_kl",
    "discretized_gaussian_log_likelihood",
    "randn_tensor",
    "GeneratorLike",
    "PMeanVariance",
    "GaussianDiffusion",
]

#: One generator for the whole batch, or one per image (batched sampling equal to per-image sampling).
GeneratorLike = torch.Generator | Sequence[torch.Generator]


# --------------------------------------------------------------------------------------------------------------
# Schedule
# --------------------------------------------------------------------------------------------------------------


def cosine_alpha_bar(t: np.ndarray | float, num_timesteps: int, s: float = 0.008) -> np.ndarray:
    """Eq. 17 before normalisation: f(t) = cos^2(((t / T + s) / (1 + s)) * pi / 2), in float64."""
    t = np.asarray(t, dtype=np.float64)
    return np.cos((t / num_timesteps + s) / (1.0 + s) * math.pi / 2.0) ** 2


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Cosine schedule betas (float64): beta_t = min(1 - alpha_bar_t / alpha_bar_{t-1}, max_beta).

    Args:
        num_timesteps: T (the paper: 4000).
        s: offset that keeps beta small near t = 0 (Eq. 17, s = 0.008).
        max_beta: clip that avoids singularities at t = T (Sec. 3.2: 0.999).
    """
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    f = cosine_alpha_bar(np.arange(num_timesteps + 1), num_timesteps, s)
    # (17) alpha_bar_t = f(t) / f(0); beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} (the f(0) cancels).
    return np.minimum(1.0 - f[1:] / f[:-1], max_beta)


def space_timesteps(num_timesteps: int, count: int) -> list[int]:
    """``count`` timesteps of ``0 .. num_timesteps - 1``, evenly spaced, both ends included (respacing, Sec. 4).

    Raises:
        ValueError: ``count`` outside ``1 .. num_timesteps``.
    """
    if not 1 <= count <= num_timesteps:
        raise ValueError(f"cannot respace {num_timesteps} diffusion steps to {count}")
    if count == 1:
        return [num_timesteps - 1]
    return sorted({int(round(v)) for v in np.linspace(0, num_timesteps - 1, count)})


# --------------------------------------------------------------------------------------------------------------
# Gaussian helpers (variational bound)
# --------------------------------------------------------------------------------------------------------------


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats."""
    # ordered so that identical Gaussians give exactly 0
    return 0.5 * (
        (logvar2 - logvar1) + (torch.exp(logvar1 - logvar2) - 1.0) + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def _log_bin_probability(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """log(Phi(upper) - Phi(lower)) for standardised bounds, evaluated in the tail nearer to zero (no cancellation)."""
    flip = lower > 0
    lo = torch.where(flip, -upper, lower)
    hi = torch.where(flip, -lower, upper)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    return log_hi + torch.log(torch.clamp(-torch.expm1(log_lo - log_hi), min=1e-12))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log p(x) of 8-bit data in [-1, 1] under N(mean, exp(log_scale)^2) integrated over each pixel's bin (nats).

    The decoder L_0 = -log p(x_0 | x_1) of Ho et al. (Sec. 3.3) used by Eq. 5: bins are 2/255 wide; the first and
    last bins extend to -inf and +inf.
    """
    inv_std = torch.exp(-log_scale)
    upper = (x - mean + 1.0 / 255.0) * inv_std
    lower = (x - mean - 1.0 / 255.0) * inv_std
    log_cdf_upper = torch.special.log_ndtr(upper)  # bin (-inf, x + 1/255] at the lower edge
    log_one_minus_cdf_lower = torch.special.log_ndtr(-lower)  # bin [x - 1/255, inf) at the upper edge
    middle = _log_bin_probability(lower, upper)
    return torch.where(x < -0.999, log_cdf_upper, torch.where(x > 0.999, log_one_minus_cdf_lower, middle))


def randn_tensor(
    shape: Sequence[int], generator: GeneratorLike, device: torch.device | str, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Standard normal noise drawn on the generator's device, then moved to ``device`` (same bytes on any device).

    Args:
        shape: (B, ...) output shape.
        generator: one ``torch.Generator`` for the whole batch, or a sequence of B generators, one per image:
            image i then gets exactly the noise a batch of one would get from generator i.
        device: where the result goes.
        dtype: floating dtype.
    """
    if isinstance(generator, torch.Generator):
        return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype).to(device)
    gens = list(generator)
    if len(gens) != shape[0]:
        raise ValueError(f"got {len(gens)} generators for a batch of {shape[0]}")
    parts = [torch.randn((1, *shape[1:]), generator=g, device=g.device, dtype=dtype).to(device) for g in gens]
    return torch.cat(parts, dim=0)


# --------------------------------------------------------------------------------------------------------------
# The process
# --------------------------------------------------------------------------------------------------------------


@dataclass
class PMeanVariance:
    """Reverse-step distribution p(x_{t-1} | x_t) = N(mean, exp(log_variance)) and the model's estimates."""

    mean: torch.Tensor
    log_variance: torch.Tensor
    pred_x0: torch.Tensor
    eps: torch.Tensor


class GaussianDiffusion(nn.Module):
    """Gaussian diffusion with learned (log-space interpolated) variance, optionally respaced.

    Args:
        betas: beta_t for t = 0 .. T-1 (use :meth:`cosine` for the paper's schedule).
        timestep_map: original training timestep of each step (respaced processes); identity by default. The
            network is always called with the original timestep.
        clip_denoised: clip the predicted x_0 to [-1, 1] when sampling.
    """

    def __init__(
        self,
        betas: np.ndarray | Sequence[float] | torch.Tensor,
        timestep_map: Sequence[int] | None = None,
        clip_denoised: bool = True,
    ) -> None:
        super().__init__()
        b = torch.as_tensor(np.asarray(betas, dtype=np.float64))
        if b.ndim != 1 or len(b) < 1 or not bool(((b > 0) & (b <= 1)).all()):
            raise ValueError("betas must be a non-empty 1D sequence in (0, 1]")
        n = len(b)
        tmap = torch.arange(n) if timestep_map is None else torch.as_tensor(list(timestep_map), dtype=torch.long)
        if tmap.shape != (n,):
            raise ValueError(f"timestep_map has {tmap.numel()} entries for {n} steps")
        self.clip_denoised = clip_denoised
        alphas = 1.0 - b
        ac = torch.cumprod(alphas, dim=0)
        ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
        # (12) posterior variance beta~_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t
        post_var = b * (1.0 - ac_prev) / (1.0 - ac)
        # beta~ is 0 at t = 0: its log is clipped to beta~ at t = 1, as improved DDPM does.
        post_log_var = torch.log(torch.cat([post_var[1:2], post_var[1:]]) if n > 1 else b)
        buffers = {
            "betas": b,
            "log_betas": torch.log(b),
            "alphas_cumprod": ac,
            "alphas_cumprod_prev": ac_prev,
            "sqrt_alphas_cumprod": torch.sqrt(ac),
            "sqrt_one_minus_alphas_cumprod": torch.sqrt(1.0 - ac),
            "posterior_variance": post_var,
            "posterior_log_variance_clipped": post_log_var,
            # (11) posterior mean coefficients of x_0 and x_t
            "posterior_mean_coef1": b * torch.sqrt(ac_prev) / (1.0 - ac),
            "posterior_mean_coef2": (1.0 - ac_prev) * torch.sqrt(alphas) / (1.0 - ac),
            "timestep_map": tmap,
        }
        for name, value in buffers.items():
            self.register_buffer(name, value)

    # --- construction ------------------------------------------------------------------------------------------
    @classmethod
    def cosine(cls, num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> GaussianDiffusion:
        """The paper's process: cosine schedule (Eq. 17) with ``num_timesteps`` steps."""
        return cls(cosine_betas(num_timesteps, s, max_beta))

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    def respace(self, timesteps: int | Sequence[int]) -> GaussianDiffusion:
        """A process over a subset of the timesteps with recomputed betas (improved DDPM, Sec. 4).

        The kept steps keep their alpha_bar: beta'_i = 1 - alpha_bar_{k_i} / alpha_bar_{k_{i-1}}.

        Args:
            timesteps: number of evenly spaced steps to keep, or the sorted steps themselves.
        """
        keep = space_timesteps(self.num_timesteps, timesteps) if isinstance(timesteps, int) else sorted(set(timesteps))
        if not keep or keep[0] < 0 or keep[-1] >= self.num_timesteps:
            raise ValueError(f"respaced timesteps must lie in 0..{self.num_timesteps - 1}")
        ac = self.alphas_cumprod.detach().cpu().numpy()
        prev = np.concatenate([[1.0], ac[keep[:-1]]])
        betas = 1.0 - ac[keep] / prev
        out = GaussianDiffusion(betas, self.timestep_map.cpu()[keep].tolist(), self.clip_denoised)
        return out.to(self.betas.device)

    # --- helpers -----------------------------------------------------------------------------------------------
    @staticmethod
    def _at(buffer: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """buffer[t] as (B, 1, ..., 1) in ``like``'s dtype and device."""
        value = buffer.to(like.device)[t.to(like.device)].to(like.dtype)
        return value.reshape(-1, *([1] * (like.ndim - 1)))

    def _check_t(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=torch.long, device=x.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"timesteps must have shape ({x.shape[0]},), got {tuple(t.shape)}")
        return t

    # --- forward process ---------------------------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """(9) x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps."""
        t = self._check_t(t, x0)
        signal = self._at(self.sqrt_alphas_cumprod, t, x0)
        return signal * x0 + self._at(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise

    def q_step(self, x_prev: torch.Tensor, t: torch.Tensor, generator: GeneratorLike) -> torch.Tensor:
        """(2) One forward step x_t ~ q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I) (RePaint's "undo")."""
        t = self._check_t(t, x_prev)
        noise = randn_tensor(x_prev.shape, generator, x_prev.device, x_prev.dtype)
        beta = self._at(self.betas, t, x_prev)
        return torch.sqrt(1.0 - beta) * x_prev + torch.sqrt(beta) * noise

    def q_posterior(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(10)-(12) q(x_{t-1} | x_t, x_0) = N(mu~, beta~): returns (mean, clipped log variance)."""
        t = self._check_t(t, xt)
        mean = self._at(self.posterior_mean_coef1, t, xt) * x0 + self._at(self.posterior_mean_coef2, t, xt) * xt
        return mean, self._at(self.posterior_log_variance_clipped, t, xt)

    # --- reverse process ---------------------------------------------------------------------------------------
    def model_output(
        self, model: Callable[..., torch.Tensor], xt: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the network once: returns (eps, raw variance value), each with ``xt``'s channels."""
        t = self._check_t(t, xt)
        out = model(xt, timesteps=self.timestep_map.to(xt.device)[t])
        c = xt.shape[1]
        if out.shape[1] != 2 * c:
            raise ValueError(
                f"learned variance needs {2 * c} output channels (eps and v), the network gives {out.shape[1]}"
            )
        return out[:, :c], out[:, c:]

    def log_variance(self, v_raw: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(15) log Sigma = v log beta_t + (1 - v) log beta~_t with v = (v_raw + 1) / 2 (v_raw = 0: geometric mean)."""
        v = (v_raw + 1.0) / 2.0
        log_beta_tilde = self._at(self.posterior_log_variance_clipped, t, v_raw)
        return v * self._at(self.log_betas, t, v_raw) + (1.0 - v) * log_beta_tilde

    def predict_x0(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """(9) solved for x_0: x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)."""
        noise_scale = self._at(self.sqrt_one_minus_alphas_cumprod, t, xt)
        return (xt - noise_scale * eps) / self._at(self.sqrt_alphas_cumprod, t, xt)

    def p_mean_variance(
        self, eps: torch.Tensor, v_raw: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, clip: bool
    ) -> PMeanVariance:
        """(3) p(x_{t-1} | x_t) = N(mu_theta, Sigma_theta) from the network's outputs.

        mu_theta is the posterior mean (11) at the predicted x_0, which equals (13) when nothing is clipped.
        """
        t = self._check_t(t, xt)
        pred_x0 = self.predict_x0(xt, t, eps)
        if clip:
            pred_x0 = pred_x0.clamp(-1.0, 1.0)
        mean, _ = self.q_posterior(pred_x0, xt, t)
        return PMeanVariance(mean, self.log_variance(v_raw, t), pred_x0, eps)

    @torch.no_grad()
    def p_sample(
        self, model: Callable[..., torch.Tensor], xt: torch.Tensor, t: int, generator: GeneratorLike
    ) -> torch.Tensor:
        """One ancestral step x_{t-1} ~ p(x_{t-1} | x_t) (one network evaluation); no noise is added at t = 0.

        Args:
            model: the network, called as ``model(x, timesteps=...)``.
            xt: latent at step ``t`` (B, C, H, W).
            t: current step (same for the whole batch).
            generator: noise source (see :func:`randn_tensor`).
        """
        tt = self._check_t(torch.tensor(t), xt)
        eps, v_raw = self.model_output(model, xt, tt)
        p = self.p_mean_variance(eps, v_raw, xt, tt, self.clip_denoised)
        if t == 0:
            return p.mean
        noise = randn_tensor(xt.shape, generator, xt.device, xt.dtype)
        return p.mean + torch.exp(0.5 * p.log_variance) * noise

    @torch.no_grad()
    def sample(
        self,
        model: Callable[..., torch.Tensor],
        shape: Sequence[int],
        generator: GeneratorLike,
        device: torch.device | str = "cpu",
        progress: bool = False,
    ) -> torch.Tensor:
        """Unconditional ancestral sampling from x_T ~ N(0, I) over all steps of this (possibly respaced) process."""
        x = randn_tensor(shape, generator, device)
        steps = range(self.num_timesteps - 1, -1, -1)
        for t in progress_bar(steps, total=self.num_timesteps, desc="sampling", leave=False) if progress else steps:
            x = self.p_sample(model, x, t, generator)
        return x

    # --- training ----------------------------------------------------------------------------------------------
    def vb_term(
        self, mean: torch.Tensor, log_variance: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """Per-image variational bound term L_t in bits per dimension: (6) KL for t > 0, (5) decoder NLL at t = 0."""
        true_mean, true_log_var = self.q_posterior(x0, xt, t)
        # (6) L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))
        kl = normal_kl(true_mean, true_log_var, mean, log_variance).flatten(1).mean(1) / math.log(2.0)
        # (5) L_0 = -log p(x_0 | x_1), discretised Gaussian decoder
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_variance).flatten(1).mean(1) / math.log(2.0)
        return torch.where(t == 0, nll, kl)

    def training_losses(
        self,
        model: Callable[..., torch.Tensor],
        x0: torch.Tensor,
        t: torch.Tensor,
        noise: torch.Tensor,
        vlb_weight: float = 0.001,
    ) -> dict[str, torch.Tensor]:
        """Hybrid loss per image: ``{"loss", "mse", "vb"}``, each of shape (B,).

        Args:
            model: the network (2C outputs: eps and the raw variance value).
            x0: clean images in [-1, 1].
            t: timesteps (B,), drawn uniformly.
            noise: eps ~ N(0, I), shape of ``x0``.
            vlb_weight: lambda of Eq. 16 (0.001).

        Weighting of the variational term: per image the loss is L_simple + lambda T L_t, since T L_t with t uniform
        estimates L_vlb = L_0 + ... + L_{T-1} (Eq. 16). With lambda = 0.001 this is exactly improved DDPM's
        ``rescale_learned_sigmas`` (``LossType.RESCALED_MSE``: L_t x T / 1000; 4 x L_t at T = 4000), the loss the
        paper's reference (Nichol & Dhariwal) trains with. The EchoGAINS public configuration trains with VB weight
        1 (``rescale_learned_sigmas=False``: L_simple + L_t); that is ``vlb_weight = 1 / T`` here
        (``train-ddpm --vb_weighting unit``). The paper's Table 1 says "L_simple": with a learned variance L_simple
        alone does not train Sigma (its gradient does not reach v), so some L_vlb term is implied; the mean is
        trained by L_simple alone in either weighting (the vb term sees a stop-gradient eps).
        """
        t = self._check_t(t, x0)
        xt = self.q_sample(x0, t, noise)
        eps, v_raw = self.model_output(model, xt, t)
        # (14) L_simple = || eps - eps_theta(x_t, t) ||^2
        mse = ((noise - eps) ** 2).flatten(1).mean(1)
        # L_vlb trains only Sigma_theta: the mean is built from a stop-gradient eps (Sec. 3.1).
        p = self.p_mean_variance(eps.detach(), v_raw, xt, t, clip=False)
        vb = self.vb_term(p.mean, p.log_variance, x0, xt, t)
        # (16) L_hybrid = L_simple + lambda L_vlb. With t uniform, T * L_t estimates L_vlb = L_0 + ... + L_{T-1}.
        loss = mse + vlb_weight * self.num_timesteps * vb
        return {"loss": loss, "mse": mse, "vb": vb}
