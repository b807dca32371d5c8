"""STAPLE (Warfield, Zou & Wells 2004): EM estimate of the true mask and each rater's sensitivity/specificity.

Echo-DND fuses its Gaussian and Bernoulli masks (and the members of an ensemble) with STAPLE. This batched torch
implementation follows the same EM as ITK's ``STAPLEImageFilter`` (checked against SimpleITK in the tests):

- start: W_i = mean_j D_ij (or a given ``init``, e.g. a reliability-weighted mean of the raters); prior
  g = mean_i W_i * confidence_weight (kept fixed);
- M-step: p_j = sum_i D_ij W_i / sum_i W_i,  q_j = sum_i (1 - D_ij)(1 - W_i) / sum_i (1 - W_i);
- E-step: W_i = g a_i / (g a_i + (1 - g) b_i),  a_i = prod_j p_j^D_ij (1 - p_j)^(1 - D_ij),
  b_i = prod_j q_j^(1 - D_ij) (1 - q_j)^D_ij  (computed in log space);
- stop when every (p_j - p_j_prev)^2 and (q_j - q_j_prev)^2 is at most 1e-14, as ITK does.

Degenerate inputs where ITK divides 0 by 0 (e.g. every rater empty) are defined here: an empty sum gives p or
q = 1 and probabilities are clamped away from 0 and 1 by 1e-12 inside the logarithms.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .common import EchoDataError

__all__ = ["staple", "staple_torch"]

_TINY = 1e-12


def _m_step(d: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sensitivities p and specificities q ``(B, R)`` from decisions ``d`` ``(B, R, N)`` and truth weights ``w``."""
    w_sum = w.sum(-1, keepdim=True)
    v_sum = (1.0 - w).sum(-1, keepdim=True)
    p_num = torch.einsum("brn,bn->br", d, w)
    q_num = torch.einsum("brn,bn->br", 1.0 - d, 1.0 - w)
    p = torch.where(w_sum > 0, p_num / w_sum.clamp_min(_TINY), torch.ones_like(p_num))
    q = torch.where(v_sum > 0, q_num / v_sum.clamp_min(_TINY), torch.ones_like(q_num))
    return p, q


def _e_step(d: torch.Tensor, p: torch.Tensor, q: torch.Tensor, log_prior_odds: torch.Tensor) -> torch.Tensor:
    """Posterior probability of the foreground per pixel, ``(B, N)``."""
    log_p, log_1mp = p.clamp(_TINY, 1.0).log(), (1.0 - p).clamp(_TINY, 1.0).log()
    log_q, log_1mq = q.clamp(_TINY, 1.0).log(), (1.0 - q).clamp(_TINY, 1.0).log()
    log_a = torch.einsum("brn,br->bn", d, log_p) + torch.einsum("brn,br->bn", 1.0 - d, log_1mp)
    log_b = torch.einsum("brn,br->bn", d, log_1mq) + torch.einsum("brn,br->bn", 1.0 - d, log_q)
    return torch.sigmoid(log_prior_odds[:, None] + log_a - log_b)


def staple_torch(
    masks: torch.Tensor,
    confidence_weight: float = 1.0,
    max_iterations: int = 100_000,
    tolerance: float = 1e-14,
    init: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """STAPLE for a batch of images, each with R binary masks.

    Args:
        masks: ``(B, R, *spatial)`` binary masks (bool or 0/1).
        confidence_weight: scales the foreground prior, as ITK's ``ConfidenceWeight``.
        max_iterations: EM iterations at most (ITK has no practical limit; near-random raters can need > 1000).
        tolerance: convergence threshold on the squared change of every p_j and q_j.
        init: the starting truth estimate W, ``(B, *spatial)`` in [0, 1]; ``None``: the mean of the raters (ITK).
            EM converges to a fixed point near its start: with few raters that disagree (e.g. one sample of each
            Echo-DND chain) the start decides which rater the estimate follows.

    Returns:
        ``(probability (B, *spatial), sensitivities (B, R), specificities (B, R))`` in float64.
    """
    if masks.ndim < 3:
        raise EchoDataError("masks", f"expected (batch, raters, *spatial), got shape {tuple(masks.shape)}")
    b, r = masks.shape[:2]
    d = masks.reshape(b, r, -1).to(torch.float64)
    if not ((d == 0) | (d == 1)).all():
        raise EchoDataError("masks", "STAPLE needs binary masks (0/1)")
    if init is None:
        w = d.mean(1)  # initial W: the average of the raters
    else:
        if tuple(init.shape) != (b, *masks.shape[2:]):
            raise EchoDataError("init", f"expected shape {(b, *masks.shape[2:])}, got {tuple(init.shape)}")
        w = init.reshape(b, -1).to(d).clamp(0.0, 1.0)
    g = (w.mean(-1) * confidence_weight).clamp(_TINY, 1.0 - _TINY)
    log_prior_odds = g.log() - (1.0 - g).log()
    active = torch.ones(b, dtype=torch.bool, device=d.device)
    p_last = q_last = None
    p = q = torch.ones(b, r, dtype=torch.float64, device=d.device)
    for iteration in range(max_iterations):
        p_new, q_new = _m_step(d, w)
        p = torch.where(active[:, None], p_new, p)
        q = torch.where(active[:, None], q_new, q)
        w = torch.where(active[:, None], _e_step(d, p, q, log_prior_odds), w)
        if iteration > 0:
            done = (((p - p_last) ** 2 <= tolerance) & ((q - q_last) ** 2 <= tolerance)).all(-1)
            active = active & ~done
        p_last, q_last = p, q
        if not active.any():
            break
    return w.reshape(b, *masks.shape[2:]), p, q


def staple(
    binary_masks: Sequence[np.ndarray] | np.ndarray | torch.Tensor,
    confidence_weight: float = 1.0,
    max_iterations: int = 100_000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """STAPLE of R binary masks of one image (the API matching SimpleITK's ``STAPLEImageFilter``).

    Args:
        binary_masks: a list of equally shaped arrays, or an array ``(R, *spatial)``; 1 (or True) is foreground.
        confidence_weight: scales the foreground prior.
        max_iterations: EM iterations at most.

    Returns:
        ``(probability map (*spatial), sensitivities (R,), specificities (R,))`` as float64 numpy arrays.
    """
    if isinstance(binary_masks, torch.Tensor):
        stack = binary_masks.detach().cpu()
    else:
        arrays = [np.asarray(m) for m in binary_masks]
        if not arrays:
            raise EchoDataError("binary_masks", "no masks given")
        if len({a.shape for a in arrays}) != 1:
            raise EchoDataError("binary_masks", f"masks differ in shape: {sorted({a.shape for a in arrays})}")
        stack = torch.from_numpy(np.stack(arrays).astype(np.float64))
    prob, sens, spec = staple_torch(stack[None], confidence_weight, max_iterations)
    return prob[0].numpy(), sens[0].numpy(), spec[0].numpy()
