"""Echo-DND inference: joint DDIM sampling of the Gaussian and Bernoulli chains, ensemble, STAPLE, post-processing.

Per image: the conditioner (MFCM) runs once; N ensemble members of both chains run batched (one GNEM call and one
BNEM call per step on a batch of B * N); the Gaussian chain takes DDIM steps (eta = 0 by default), the Bernoulli
chain BerDiff's Bernoulli-DDIM steps, over the same timestep grid of any length 1..T (T reproduces the paper's
1000-step DDIM; 10 is the default). The Gaussian x_0 estimate is thresholded at 0, the Bernoulli x_0_hat at 0.5,
and all 2N binary masks are fused by STAPLE (paper Sect. 4.1, eq. 7). The fused mask keeps its largest connected
component with holes filled. The uncertainty map is the normalised binary entropy of the vote fraction of the 2N
masks: 0 where all samples of both chains agree, 1 where they split evenly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from .bernoulli import BernoulliDiffusion
from .common import EchoDataError, timestep_pairs
from .config import EchoDNDConfig
from .gaussian import GaussianDiffusion
from .losses import build_processes
from .networks import Condition
from .staple import staple_torch

__all__ = ["EchoDNDSampler", "SegmentationWrapper", "postprocess_mask", "vote_entropy"]


def postprocess_mask(mask: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Keep the largest 8-connected foreground component and fill its holes, per 2-D slice.

    Args:
        mask: binary ``(H, W)`` or ``(..., H, W)`` array or tensor; an empty slice stays empty.

    Returns:
        The same type, shape and dtype.
    """
    is_tensor = torch.is_tensor(mask)
    arr = mask.detach().cpu().numpy() if is_tensor else np.asarray(mask)
    flat = arr.reshape(-1, *arr.shape[-2:]) > 0.5
    out = np.zeros_like(flat)
    for i, m in enumerate(flat):
        labels, n = ndimage.label(m, structure=np.ones((3, 3), dtype=bool))
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        out[i] = ndimage.binary_fill_holes(labels == (int(np.argmax(sizes)) + 1))
    result = out.reshape(arr.shape).astype(arr.dtype)
    return torch.from_numpy(result).to(mask.device) if is_tensor else result


def vote_entropy(masks: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Binary entropy (bits, in [0, 1]) of the foreground vote fraction of binary masks.

    Args:
        masks: binary masks; the raters (ensemble members of both chains) along ``dim``.
        dim: the rater dimension.
    """
    v = masks.float().mean(dim)
    h = -(torch.xlogy(v, v) + torch.xlogy(1.0 - v, 1.0 - v)) / math.log(2.0)
    return h.clamp(0.0, 1.0)


class EchoDNDSampler:
    """Sample masks from a trained :class:`~scripts.networks.EchoDND`.

    Args:
        num_steps: network evaluations per chain, 1..T (default 10; T = 1000 reproduces the paper).
        ensemble: samples per image (per chain), batched together.
        eta: DDIM stochasticity of the Gaussian chain (0: deterministic).
        postprocess: keep the largest component and fill holes in the fused mask.
        threshold: on the STAPLE probability for the fused mask.
        staple_max_iterations: EM iterations at most (masks of a trained model agree and converge in tens).
        progress: show a tqdm progress bar over the steps.
    """

    def __init__(
        self,
        num_steps: int = 10,
        ensemble: int = 1,
        eta: float = 0.0,
        postprocess: bool = True,
        threshold: float = 0.5,
        staple_max_iterations: int = 1000,
        progress: bool = False,
    ) -> None:
        if num_steps < 1 or ensemble < 1:
            raise ValueError(f"num_steps and ensemble must be >= 1, got {num_steps}, {ensemble}")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        self.num_steps = num_steps
        self.ensemble = ensemble
        self.eta = eta
        self.postprocess = postprocess
        self.threshold = threshold
        self.staple_max_iterations = staple_max_iterations
        self.progress = progress
        self._processes: tuple[EchoDNDConfig, GaussianDiffusion, BernoulliDiffusion] | None = None

    def _get_processes(self, config: EchoDNDConfig) -> tuple[GaussianDiffusion, BernoulliDiffusion]:
        if self._processes is None or self._processes[0] != config:
            self._processes = (config, *build_processes(config))
        return self._processes[1], self._processes[2]

    def _steps(self, pairs: list[tuple[int, int]]) -> Any:
        if not self.progress:
            return pairs
        from tqdm.auto import tqdm

        return tqdm(pairs, desc="Echo-DND sampling", dynamic_ncols=True)

    @torch.no_grad()
    def __call__(
        self, model: nn.Module, image: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Segment a batch of images.

        Args:
            model: the Echo-DND model (its ``config`` selects the chains and T).
            image: ``(B, C, H, W)``, on the model's device.
            generator: all randomness (initial noise, Bernoulli draws, DDIM noise) is drawn from it on its own
                device and moved to the image's device, so a CPU generator gives the same samples everywhere;
                ``None`` means a CPU generator seeded with 0.

        Returns:
            ``mask`` (B, 1, H, W) fused and post-processed {0, 1}; ``prob`` (B, 1, H, W) STAPLE probability;
            ``uncertainty`` (B, 1, H, W) in [0, 1]; ``gaussian`` / ``bernoulli`` (B, N, H, W) binary masks of each
            chain's members (absent when the chain is off); ``scc`` (B, 1, H, W) the SCC head's probability map.
        """
        pairs = timestep_pairs(model.config.num_train_timesteps, self.num_steps)  # validates the step count first
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        cond = model.condition(image)  # once per image, reused by every step and ensemble member
        scc = torch.sigmoid(model.scc(cond))
        x0_g, p_b = self._run_chains(model, cond.repeat(self.ensemble), pairs, generator)
        return self._fuse(x0_g, p_b, scc, image.shape[0], self.ensemble)

    def _run_chains(
        self, model: nn.Module, cond: Condition, pairs: list[tuple[int, int]], generator: torch.Generator
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Both reverse chains in lockstep on the ensemble batch; returns the Gaussian x_0 and the Bernoulli x_0_hat."""
        config: EchoDNDConfig = model.config
        gaussian, bernoulli = self._get_processes(config)
        image = cond.image
        shape = (image.shape[0], 1, *image.shape[-2:])

        def draw(kind: str) -> torch.Tensor:
            fn = torch.randn if kind == "normal" else torch.rand
            return fn(shape, generator=generator, device=generator.device).to(image)

        # eq. 7: x_T ~ (N(0, I), B(0.5))
        x_g = draw("normal") if config.use_gaussian else None
        x_b = (draw("uniform") < 0.5).to(image.dtype) if config.use_bernoulli else None
        x0_g = p_b = None
        for t, t_prev in self._steps(pairs):
            t_batch = torch.full((shape[0],), t, device=image.device, dtype=torch.long)
            if x_g is not None:  # DDIM (Song et al. eq. 12) on GNEM's epsilon
                eps = model.gnem(x_g, t_batch, cond)[:, :1]
                noise = draw("normal") if self.eta > 0 and t_prev >= 0 else None
                x_g, x0_g = gaussian.ddim_step(eps, x_g, t, t_prev, eta=self.eta, noise=noise)
            if x_b is not None:  # Bernoulli DDIM (B3) on BNEM's x_0 logits
                logits = model.bnem(x_b, t_batch, cond)
                if t_prev >= 0:
                    x_b, p_b = bernoulli.ddim_step(logits, x_b, t, t_prev, draw("uniform"))
                else:  # last step: keep the probability x_0_hat, thresholded in _fuse
                    p_b = bernoulli.ddim_probs(torch.sigmoid(logits), x_b, t, t_prev)
        return x0_g, p_b

    def _fuse(
        self, x0_g: torch.Tensor | None, p_b: torch.Tensor | None, scc: torch.Tensor, b: int, n: int
    ) -> dict[str, torch.Tensor]:
        """Binary masks of both chains -> STAPLE -> threshold -> post-processing, plus the uncertainty map."""
        out: dict[str, torch.Tensor] = {"scc": scc}
        members = []
        if x0_g is not None:
            out["gaussian"] = (x0_g > 0).to(scc.dtype).reshape(b, n, *x0_g.shape[-2:])
            members.append(out["gaussian"])
        if p_b is not None:
            out["bernoulli"] = (p_b > 0.5).to(scc.dtype).reshape(b, n, *p_b.shape[-2:])
            members.append(out["bernoulli"])
        votes = torch.cat(members, dim=1)  # (B, R, H, W), R = 2N (or N with one chain)
        if votes.shape[1] == 1:
            prob = votes[:, 0].double()
        else:
            prob, sens, spec = staple_torch(votes, max_iterations=self.staple_max_iterations)
            out.update(sensitivity=sens, specificity=spec)
        prob = prob.to(scc.dtype)[:, None]
        mask = (prob > self.threshold).to(scc.dtype)
        if self.postprocess:
            mask = postprocess_mask(mask)
        out.update(mask=mask, prob=prob, uncertainty=vote_entropy(votes)[:, None])
        return out


class SegmentationWrapper(nn.Module):
    """``image -> mask`` module around a model and a sampler (for MONAI ``verify_net_in_out`` and inferers).

    Every call draws from a fresh CPU generator seeded with ``seed``, so the same image gives the same mask.

    Args:
        model: the Echo-DND model.
        sampler: the sampler; ``EchoDNDSampler()`` (10 steps, one sample) when ``None``.
        seed: generator seed.
        output: which sampler output to return (``mask``, ``prob``, ``uncertainty``).
    """

    def __init__(
        self, model: nn.Module, sampler: EchoDNDSampler | None = None, seed: int = 0, output: str = "mask"
    ) -> None:
        super().__init__()
        if output not in ("mask", "prob", "uncertainty", "scc"):
            raise ValueError(f"output must be mask, prob, uncertainty or scc, got {output!r}")
        self.model = model
        self.sampler = sampler or EchoDNDSampler()
        self.seed = seed
        self.output = output

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4:
            raise EchoDataError("image", f"expected (batch, channel, H, W), got shape {tuple(image.shape)}")
        generator = torch.Generator().manual_seed(self.seed)
        return self.sampler(self.model, image, generator)[self.output]
