"""Echo-DND training loss (paper eqs. 8-13), each term and each noise type switchable (Table 4 ablations).

    L_total = l1 L_G + l2 L_B + l3 L_KL,G + l4 L_KL,B + l5 L_SCC                              (13)

- L_G (8): MSE between the true and predicted epsilon of the Gaussian chain (``gaussian_prediction="epsilon"``, the
  paper's; the options ``sample`` and ``v_prediction`` regress x_0 or v instead).
- L_B (9): BCE between x_0 and x_0_hat = sigmoid(BNEM logits).
- L_KL,G (10) and L_KL,B (11), in one of two forms (``config.kl_form``):
  ``"prior"`` (default, the paper's equations): KL(N(mu_theta, Sigma_theta) || N(0, I)) of the model's reverse step
  p_theta(x_{t-1} | x_t) = N(mu_theta, Sigma_theta), and KL(B(phi_theta) || B(0.5)) of BNEM's x_0_hat = phi_theta,
  in nats per pixel; the paper's text: "the KL divergence term encourages the learned distributions to remain close
  to their standard priors (standard Normal and uniform Bernoulli)". Gradients reach both GNEM outputs and BNEM.
  ``"vb"``: the variational-bound terms (improved DDPM / BerDiff): the KL between the true posterior
  q(x_{t-1} | x_t, x_0) and the model's reverse step, the decoder NLL at t = 0, in bits per pixel; in L_KL,G epsilon
  is detached so the term trains the learned-range variance and L_G alone trains the mean (improved DDPM's hybrid
  objective). Weights saved before ``kl_form`` existed were trained with this form.
- L_SCC (12): MSE between x_0 and sigmoid(SCC head logits) on the MFCM's full-resolution features.

One timestep per sample, uniform over 0..T-1, is shared by both chains. A disabled term (switched off, or its chain
absent) is a constant zero without a graph, so it adds neither value nor gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .bernoulli import BernoulliDiffusion
from .common import check_mask
from .config import LOSS_TERMS, EchoDNDConfig
from .gaussian import GaussianDiffusion

__all__ = ["EchoDNDLoss", "training_losses", "build_processes", "draw_noise"]


def build_processes(config: EchoDNDConfig) -> tuple[GaussianDiffusion, BernoulliDiffusion]:
    """The Gaussian and Bernoulli processes of a configuration (same T and beta schedule)."""
    args = config.schedule_args()
    gaussian = GaussianDiffusion(
        variance_interp=config.variance_interp, prediction_type=config.gaussian_prediction, **args
    )
    bernoulli = BernoulliDiffusion(**args)
    return gaussian, bernoulli


def draw_noise(
    config: EchoDNDConfig, shape: tuple[int, ...], generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """The random draws of one training batch of masks of ``shape`` ``(B, 1, H, W)``, in the order the loss draws them.

    ``t`` ``(B,)`` uniform over 0..T-1, ``eps`` (Gaussian noise) and ``uniform`` (for the Bernoulli draw), both of
    ``shape``, all from ``generator`` on its device. Drawn once for a whole accumulation cycle and sliced per
    micro-batch, they make N micro-batches of B / N the same samples as one batch of B.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    t = torch.randint(0, config.num_train_timesteps, (shape[0],), generator=generator, device=gen_device)
    eps = torch.randn(shape, generator=generator, device=gen_device)
    uniform = torch.rand(shape, generator=generator, device=gen_device)
    return {"t": t, "eps": eps, "uniform": uniform}


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside DistributedDataParallel / DataParallel wrappers."""
    return model.module if hasattr(model, "module") and not hasattr(model, "config") else model


class EchoDNDLoss(nn.Module):
    """Compute every term of eq. 13 for a batch; ``forward(model, image, mask, generator) -> dict``.

    Args:
        config: the model's configuration (switches and weights); taken from the model when ``None``.
    """

    def __init__(self, config: EchoDNDConfig | None = None) -> None:
        super().__init__()
        self.config = config
        self._processes: tuple[EchoDNDConfig, GaussianDiffusion, BernoulliDiffusion] | None = None

    def _get_processes(self, config: EchoDNDConfig) -> tuple[GaussianDiffusion, BernoulliDiffusion]:
        if self._processes is None or self._processes[0] != config:
            self._processes = (config, *build_processes(config))
        return self._processes[1], self._processes[2]

    def forward(
        self,
        model: nn.Module,
        image: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
        noise: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Sample t and the noises, run the model once, return each term, their weights' sum ``total``.

        Args:
            model: an :class:`~scripts.networks.EchoDND`, possibly wrapped in DDP.
            image: ``(B, C, H, W)`` image batch.
            mask: ``(B, 1, H, W)`` binary ground truth (1 = left ventricle).
            generator: source of all randomness (timesteps, Gaussian noise, Bernoulli draws); its device is used
                for drawing, results are moved to the image's device.
            noise: the draws of :func:`draw_noise` for this batch (then ``generator`` is not used).

        Returns:
            ``gaussian``, ``bernoulli``, ``kl_gaussian``, ``kl_bernoulli``, ``scc`` (scalars, zero when disabled),
            ``total`` and ``timesteps``.
        """
        config = self.config or _unwrap(model).config
        gaussian, bernoulli = self._get_processes(config)
        check_mask(mask, image)
        mask = mask.to(image.dtype)
        terms = set(config.loss_terms)
        run_g = config.use_gaussian and bool(terms & {"gaussian", "kl_gaussian"})
        run_b = config.use_bernoulli and bool(terms & {"bernoulli", "kl_bernoulli"})
        # 1. t ~ U{0..T-1}; eps ~ N(0, I); uniform noise for the Bernoulli draw (all from one generator)
        if noise is None:
            noise = draw_noise(config, tuple(mask.shape), generator)
        if noise["eps"].shape != mask.shape or noise["t"].shape != mask.shape[:1]:
            raise ValueError(f"noise drawn for {tuple(noise['eps'].shape)}, the batch is {tuple(mask.shape)}")
        t, eps, uniform = noise["t"].to(image.device), noise["eps"].to(image), noise["uniform"].to(image)
        # 2. forward processes: x_t^G = sqrt(abar) x_0 + sqrt(1-abar) eps (x_0 in {-1, 1});
        #    x_t^B ~ B(abar x_0 + (1-abar)/2)
        x0_g = 2.0 * mask - 1.0
        x_g = gaussian.q_sample(x0_g, t, eps) if run_g else None
        x_b = bernoulli.q_sample(mask, t, uniform) if run_b else None
        out = model(image, x_g, x_b, t, with_scc="scc" in terms)
        zero = image.new_zeros(())
        losses = {name: zero for name in LOSS_TERMS}
        if run_g:
            pred = out["gaussian"]
            if "gaussian" in terms:  # (8)
                losses["gaussian"] = F.mse_loss(pred[:, :1], gaussian.target(x0_g, eps, t))  # eps by default
            if "kl_gaussian" in terms and config.kl_form == "prior":  # (10) toward N(0, I)
                losses["kl_gaussian"] = gaussian.prior_kl(pred, x_g, t).mean()
            elif "kl_gaussian" in terms:  # (10) as the variational-bound term, mean frozen
                frozen = torch.cat([pred[:, :1].detach(), pred[:, 1:2]], dim=1)
                losses["kl_gaussian"] = gaussian.vb_term(frozen, x0_g, x_g, t).mean()
        if run_b:
            logits = out["bernoulli"]
            if "bernoulli" in terms:  # (9)
                losses["bernoulli"] = bernoulli.bce(logits, mask).mean()
            if "kl_bernoulli" in terms and config.kl_form == "prior":  # (11) toward B(0.5)
                losses["kl_bernoulli"] = bernoulli.prior_kl(logits).mean()
            elif "kl_bernoulli" in terms:  # (11) as the variational-bound term
                losses["kl_bernoulli"] = bernoulli.vb_term(logits, mask, x_b, t).mean()
        if "scc" in terms:  # (12)
            losses["scc"] = F.mse_loss(torch.sigmoid(out["scc"]), mask)
        # 3. (13) weighted sum of the enabled terms
        total = zero
        for name in LOSS_TERMS:
            if losses[name] is not zero:
                total = total + config.loss_weight(name) * losses[name]
        losses["total"] = total
        losses["timesteps"] = t
        return losses


def training_losses(
    model: nn.Module, image: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Functional form of :class:`EchoDNDLoss` with the model's own configuration."""
    return EchoDNDLoss()(model, image, mask, generator)
