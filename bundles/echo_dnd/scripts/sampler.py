"""Echo-DND inference: joint DDIM sampling of the Gaussian and Bernoulli chains, ensemble, STAPLE, post-processing.

Per image: the conditioner (MFCM) runs once; N ensemble members of both chains run batched (one GNEM call and one
BNEM call per step on a batch of B * N); the Gaussian chain takes DDIM steps (eta = 0 by default), the Bernoulli
chain BerDiff's Bernoulli-DDIM steps, over the same timestep grid of any length 1..T (T reproduces the paper's
1000-step DDIM; 10 is the default). The Gaussian x_0 estimate is thresholded at 0, the Bernoulli x_0_hat at 0.5,
and all 2N binary masks are fused by STAPLE (paper Sect. 4.1, eq. 7). The fused mask keeps its largest connected
component with holes filled.

Fusion (``fusion``). STAPLE's EM converges to a fixed point near its start. With one sample per chain (2 raters that
disagree) the start, the plain mean of the raters, is 0.5 wherever they differ, and the estimate follows whichever
chain the noise draw favours: with the demo weights the mean Dice over 5 seeds spread by 0.26 on the bundle's sample
data and by 0.25 on 24 phantom test images (``benchmarks/echo_dnd_stability.py``). The default, ``"reliability"``,
starts STAPLE from the raters' mean weighted by each chain's measured reliability on this image: the mean pairwise
Dice of the chain's N members, where a member that is empty or covers more than half the frame counts as no
agreement (a chain whose samples agree with each other on a plausible LV is trusted more; with N = 1, 1 or 0 by that
plausibility rule); ``"staple"`` is ITK's start (the plain mean), the paper's plain STAPLE. This start is our
addition, not the paper's. The default is N = 3 samples per chain: its
spread is 0.007 and 0.003 on the same sets, against 0.007 and 0.021 for N = 3 with the plain start. A model with
both chains and N = 1 logs a warning (the unstable configuration above). The numbers are in
``benchmarks/results/echo_dnd_stability.json`` and the bundle's ``docs/README.md``.

Uncertainty (``uncertainty``). The default map, ``"soft"``, uses each member's soft output: the Bernoulli chain's
x_0_hat probability and the Gaussian chain's x_0 estimate mapped to [0, 1] by (clip(x_0, -1, 1) + 1) / 2. Each
member's map is set to 0 outside its plausible LV: its largest 8-connected component (holes filled) dilated by
``uncertainty_margin`` model pixels, so that isolated background flips of a member leave no speckle. The maps are
averaged with weights from STAPLE's reliability of each member, Youden's index max(p + q - 1, 0) of its sensitivity
p and specificity q (equal weights where STAPLE did not run), and the map is the binary entropy (bits, in [0, 1]) of
that mean: continuous even with one sample per chain, high where the members are unsure or disagree near the LV.
``"votes"`` is the earlier map: the normalised binary entropy of the vote fraction of the binary masks (0 where all
samples agree, 1 where they split evenly; binary with 2 raters). As a detector of the fused mask's pixel errors on
the 24 phantom images (area under the ROC curve, mean of 5 seeds) the soft map scores 0.991 at the default, the vote
map 0.736; with one sample per chain 0.831 and 0.673.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from .bernoulli import BernoulliDiffusion
from .common import CHOICE_CHECKS, EchoDataError, timestep_pairs
from .config import EchoDNDConfig
from .gaussian import GaussianDiffusion
from .losses import build_processes
from .networks import Condition
from .staple import staple_torch

__all__ = [
    "EchoDNDSampler",
    "SegmentationWrapper",
    "chain_reliability",
    "plausible_members",
    "binary_entropy",
    "lv_region",
    "postprocess_mask",
    "soft_uncertainty",
    "vote_entropy",
]

log = logging.getLogger("echo_dnd.sampler")

FUSIONS = CHOICE_CHECKS["fusion"]
UNCERTAINTIES = CHOICE_CHECKS["uncertainty"]


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


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """Binary entropy in bits (in [0, 1]) of probabilities ``p``."""
    p = p.clamp(0.0, 1.0)
    return (-(torch.xlogy(p, p) + torch.xlogy(1.0 - p, 1.0 - p)) / math.log(2.0)).clamp(0.0, 1.0)


def _dice_matrix(masks: torch.Tensor) -> torch.Tensor:
    """Pairwise Dice ``(B, N, N)`` of binary masks ``(B, N, H, W)`` (1 for two empty masks)."""
    flat = masks.flatten(2).double()
    inter = torch.einsum("bip,bjp->bij", flat, flat)
    size = flat.sum(-1)
    total = size[:, :, None] + size[:, None, :]
    return torch.where(total > 0, 2.0 * inter / total.clamp_min(1e-12), torch.ones_like(total))


#: A member mask that is empty or covers more than this fraction of the frame is not a plausible LV cavity (an apical
#: LV cavity covers a few per cent to about a quarter of the frame); it counts as no agreement in the reliability.
MAX_PLAUSIBLE_FRACTION = 0.5


def plausible_members(masks: torch.Tensor) -> torch.Tensor:
    """``(B, N)`` bool: the members whose mask is neither empty nor above :data:`MAX_PLAUSIBLE_FRACTION`."""
    fraction = masks.flatten(2).double().mean(-1)
    return (fraction > 0) & (fraction <= MAX_PLAUSIBLE_FRACTION)


def chain_reliability(chains: list[torch.Tensor]) -> torch.Tensor:
    """Each chain's reliability on each image: the mean pairwise Dice of its members, ``(B, C)`` in [0, 1].

    A pair with an implausible member (:func:`plausible_members`: empty, or most of the frame) counts 0, so that a
    chain whose samples fail the same way (all empty, or all the whole frame: Dice 1 among themselves) is not
    trusted; a chain with one member gets 1 when it is plausible, else 0.

    Args:
        chains: per chain, its members' binary masks ``(B, N, H, W)``.
    """
    out = []
    for members in chains:
        n = members.shape[1]
        ok = plausible_members(members).double()
        if n < 2:
            out.append(ok[:, 0])
            continue
        d = _dice_matrix(members) * ok[:, :, None] * ok[:, None, :]
        out.append((d.sum((1, 2)) - d.diagonal(dim1=1, dim2=2).sum(-1)) / (n * (n - 1)))
    return torch.stack(out, dim=1)


def lv_region(mask: torch.Tensor, margin: int = 2) -> torch.Tensor:
    """Per 2-D slice: the largest 8-connected component with holes filled, dilated by ``margin`` pixels (3 x 3)."""
    region = postprocess_mask((mask > 0.5).to(torch.float32))
    assert isinstance(region, torch.Tensor)
    arr = region.detach().cpu().numpy() > 0.5
    if margin > 0:
        flat = arr.reshape(-1, *arr.shape[-2:])
        grown = [ndimage.binary_dilation(m, np.ones((3, 3), bool), iterations=margin) if m.any() else m for m in flat]
        arr = np.stack(grown).reshape(arr.shape)
    return torch.from_numpy(arr).to(mask.device)


def soft_uncertainty(
    soft: torch.Tensor, binary: torch.Tensor, weights: torch.Tensor | None = None, margin: int = 2
) -> torch.Tensor:
    """Entropy of the reliability-weighted mean of the members' soft maps, each kept inside its plausible LV.

    Args:
        soft: ``(B, R, H, W)`` each member's foreground probability in [0, 1].
        binary: ``(B, R, H, W)`` each member's binary mask (defines its LV region, :func:`lv_region`).
        weights: ``(B, R)`` non-negative member weights; ``None`` or all zero: equal weights.
        margin: pixels of dilation of each member's LV region.

    Returns:
        ``(B, H, W)`` in [0, 1].
    """
    kept = torch.where(lv_region(binary, margin), soft.clamp(0.0, 1.0), torch.zeros_like(soft)).double()
    b, r = soft.shape[:2]
    w = torch.ones(b, r, dtype=torch.float64, device=soft.device) if weights is None else weights.double().clamp_min(0)
    w = torch.where(w.sum(1, keepdim=True) > 0, w, torch.ones_like(w))
    w = w / w.sum(1, keepdim=True)
    return binary_entropy(torch.einsum("br,brhw->bhw", w, kept)).to(soft.dtype)


class EchoDNDSampler:
    """Sample masks from a trained :class:`~scripts.networks.EchoDND`.

    Args:
        num_steps: network evaluations per chain, 1..T (default 10; T = 1000 reproduces the paper).
        ensemble: samples per image (per chain), batched together (default 3; with both chains, 1 is unstable
            across seeds and logs a warning).
        eta: DDIM stochasticity of the Gaussian chain (0: deterministic).
        postprocess: keep the largest component and fill holes in the fused mask.
        threshold: on the STAPLE probability for the fused mask.
        staple_max_iterations: EM iterations at most (masks of a trained model agree and converge in tens).
        progress: show a tqdm progress bar over the steps.
        fusion: ``reliability`` (STAPLE started from the chain-reliability-weighted mean, the default) or
            ``staple`` (started from the plain mean, as ITK); see the module docstring.
        uncertainty: ``soft`` (entropy of the members' weighted soft maps, the default) or ``votes`` (vote entropy
            of the binary masks).
        uncertainty_margin: model pixels by which each member's LV region is dilated for the ``soft`` map.
    """

    def __init__(
        self,
        num_steps: int = 10,
        ensemble: int = 3,
        eta: float = 0.0,
        postprocess: bool = True,
        threshold: float = 0.5,
        staple_max_iterations: int = 1000,
        progress: bool = False,
        fusion: str = "reliability",
        uncertainty: str = "soft",
        uncertainty_margin: int = 2,
    ) -> None:
        if num_steps < 1 or ensemble < 1:
            raise ValueError(f"num_steps and ensemble must be >= 1, got {num_steps}, {ensemble}")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        if fusion not in FUSIONS or uncertainty not in UNCERTAINTIES:
            raise ValueError(
                f"fusion must be one of {FUSIONS} and uncertainty one of {UNCERTAINTIES}, "
                f"got {fusion!r}, {uncertainty!r}"
            )
        if uncertainty_margin < 0:
            raise ValueError(f"uncertainty_margin must be >= 0, got {uncertainty_margin}")
        self.fusion, self.uncertainty, self.uncertainty_margin = fusion, uncertainty, int(uncertainty_margin)
        self._warned = False
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
        self,
        model: nn.Module,
        image: torch.Tensor,
        generator: torch.Generator | None = None,
        shared_noise: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Segment a batch of images.

        Args:
            model: the Echo-DND model (its ``config`` selects the chains and T).
            image: ``(B, C, H, W)``, on the model's device.
            generator: all randomness (initial noise, Bernoulli draws, DDIM noise) is drawn from it on its own
                device and moved to the image's device, so a CPU generator gives the same samples everywhere;
                ``None`` means a CPU generator seeded with 0.
            shared_noise: draw the noise once for a single image and give it to every image of the batch (member k
                of each image starts from the same x_T and gets the same draws): each image's masks then equal those
                of a call on that image alone with a generator in the same state, whatever the batch size or the
                image's place in it, and the frames of a loop are segmented alike (no frame-to-frame noise from the
                draws, which otherwise jitters a volume curve).

        Returns:
            ``mask`` (B, 1, H, W) fused and post-processed {0, 1}; ``prob`` (B, 1, H, W) STAPLE probability;
            ``uncertainty`` (B, 1, H, W) in [0, 1]; ``gaussian`` / ``bernoulli`` (B, N, H, W) binary masks of each
            chain's members (absent when the chain is off); ``scc`` (B, 1, H, W) the SCC head's probability map.
        """
        pairs = timestep_pairs(model.config.num_train_timesteps, self.num_steps)  # validates the step count first
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        config = model.config
        if self.ensemble < 2 and config.use_gaussian and config.use_bernoulli and not self._warned:
            self._warned = True
            log.warning(
                "ensemble 1 with both chains is unstable: STAPLE of one Gaussian and one Bernoulli sample follows "
                "whichever chain the noise draw favours (mean Dice spread 0.25-0.26 over 5 seeds with the demo "
                "weights); use ensemble >= 2 (default 3)"
            )
        cond = model.condition(image)  # once per image, reused by every step and ensemble member
        scc = torch.sigmoid(model.scc(cond))
        x0_g, p_b = self._run_chains(model, cond.repeat(self.ensemble), pairs, generator, shared_noise)
        return self._fuse(x0_g, p_b, scc, image.shape[0], self.ensemble)

    def _run_chains(
        self,
        model: nn.Module,
        cond: Condition,
        pairs: list[tuple[int, int]],
        generator: torch.Generator,
        shared_noise: bool = False,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Both reverse chains in lockstep on the ensemble batch; returns the Gaussian x_0 and the Bernoulli x_0_hat."""
        config: EchoDNDConfig = model.config
        gaussian, bernoulli = self._get_processes(config)
        image = cond.image
        shape = (image.shape[0], 1, *image.shape[-2:])
        images = image.shape[0] // self.ensemble  # the batch is image-major: row b * ensemble + k is member k of b
        drawn = (self.ensemble, *shape[1:]) if shared_noise else shape

        def draw(kind: str) -> torch.Tensor:
            fn = torch.randn if kind == "normal" else torch.rand
            values = fn(drawn, generator=generator, device=generator.device).to(image)
            return values.repeat(images, 1, 1, 1) if shared_noise else values

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
        chains, softs = [], []
        if x0_g is not None:
            out["gaussian"] = (x0_g > 0).to(scc.dtype).reshape(b, n, *x0_g.shape[-2:])
            chains.append(out["gaussian"])
            softs.append(((x0_g.clamp(-1.0, 1.0) + 1.0) / 2.0).to(scc.dtype).reshape(b, n, *x0_g.shape[-2:]))
        if p_b is not None:
            out["bernoulli"] = (p_b > 0.5).to(scc.dtype).reshape(b, n, *p_b.shape[-2:])
            chains.append(out["bernoulli"])
            softs.append(p_b.to(scc.dtype).reshape(b, n, *p_b.shape[-2:]))
        votes = torch.cat(chains, dim=1)  # (B, R, H, W), R = 2N (or N with one chain)
        weights = None
        if votes.shape[1] == 1:
            prob = votes[:, 0].double()
        else:
            init = None
            if self.fusion == "reliability":
                per_member = chain_reliability(chains).repeat_interleave(n, dim=1)  # (B, R)
                per_member = torch.where(per_member.sum(1, keepdim=True) > 0, per_member, torch.ones_like(per_member))
                init = torch.einsum("br,brhw->bhw", per_member, votes.double()) / per_member.sum(1)[:, None, None]
            prob, sens, spec = staple_torch(votes, max_iterations=self.staple_max_iterations, init=init)
            out.update(sensitivity=sens, specificity=spec)
            weights = (sens + spec - 1.0).clamp_min(0.0)
        prob = prob.to(scc.dtype)[:, None]
        mask = (prob > self.threshold).to(scc.dtype)
        if self.postprocess:
            mask = postprocess_mask(mask)
        if self.uncertainty == "votes":
            uncertainty = vote_entropy(votes)
        else:
            uncertainty = soft_uncertainty(torch.cat(softs, dim=1), votes, weights, self.uncertainty_margin)
        out.update(mask=mask, prob=prob, uncertainty=uncertainty[:, None])
        return out


class SegmentationWrapper(nn.Module):
    """``image -> mask`` module around a model and a sampler (for MONAI ``verify_net_in_out`` and inferers).

    Every call draws from a fresh CPU generator seeded with ``seed``, so the same image gives the same mask.

    Args:
        model: the Echo-DND model.
        sampler: the sampler; ``EchoDNDSampler()`` (10 steps, 3 samples per chain) when ``None``.
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
