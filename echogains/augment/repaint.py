"""RePaint (Lugmayr et al., CVPR 2022) with an unconditional improved DDPM: jump schedule, sampler, fast mode.

Per reverse step the known region is drawn from the forward process q(x_{t-1} | x_0) of the input and the unknown
region from the model's p(x_{t-1} | x_t); "jumps" go back up the chain with q(x_t | x_{t-1}) so that the
network can harmonise both regions (resampling). The pixels the diffusion regenerates are the unknown pixels
dilated by ``border`` pixels (a seam band, :func:`repaint_mask`), and they stay generated: the band is where the
generated content meets the original, so the original/generated border lies ``border`` pixels inside the kept
content, where the model has harmonised both. At the end the pixels outside the band (``repaint_mask``) are pasted
back so that they are bit-identical to the input (the public RePaint code of Lugmayr et al., CVPR 2022, omits this
paste).

Schedules run on a respaced process: the T = 4000 model is respaced to ``t_T`` steps (250 for the paper's
setting), which is what makes 250-step RePaint and the fast mode possible. A whole batch (several augmentations
of several cases, each with its own mask) goes through the network in one call per step.

Network evaluations per image: ``sampler="repaint"`` with (250, 10, 10): 2,410; ``sampler="fast"``:
:data:`FAST_SCHEDULE` (25, 1, 4) = 97: 25 respaced steps, each redone 4 times (jumps of one step). It was chosen
as the best RePaint schedule at <= 100 evaluations on an exact Gaussian oracle (``benchmarks/repaint_oracle.py``,
result in ``benchmarks/results/repaint_oracle.json``: an 8 x 8 Gaussian field with 34 unknown pixels, the exact
denoiser in place of the network): conditional-mean error 0.821 conditional standard deviations, against 0.981
for plain 250-step replacement (250, 1, 1) and 0.546 for the paper's (250, 10, 10), measured on the same fresh
conditioning images; the previous default (15, 3, 7) scored 0.857 and (250, 1, 1) 0.870 on the search's images.
So ``fast`` beats 250 steps without resampling but does not reach the paper's schedule; use ``sampler="repaint"``
for the paper's quality. (DDNM's null-space step at (25, 1, 4) measured the same, 0.817: not worth a second code
path.)
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from echogains.ddpm.diffusion import GaussianDiffusion, GeneratorLike, randn_tensor
from echogains.utils import EchoDataError
from echogains.utils import progress as progress_bar

__all__ = [
    "PAPER_SCHEDULE",
    "FAST_SCHEDULE",
    "SAMPLERS",
    "ScheduleCounts",
    "jump_schedule",
    "schedule_counts",
    "network_evaluations",
    "repaint_mask",
    "repaint",
]

#: RePaint's setting used by EchoGAINS: t_T = 250 respaced steps, jumps of 10 steps, 10 resamplings.
PAPER_SCHEDULE: tuple[int, int, int] = (250, 10, 10)
#: The fast mode: 25 respaced steps, jumps of 1 step, 4 resamplings: 97 network evaluations per image (chosen by
#: ``benchmarks/repaint_oracle.py``; see the module docstring for what it measured).
FAST_SCHEDULE: tuple[int, int, int] = (25, 1, 4)
#: Default schedule of each sampler.
SAMPLERS: dict[str, tuple[int, int, int]] = {"repaint": PAPER_SCHEDULE, "fast": FAST_SCHEDULE}
#: The fast mode's budget of network evaluations per image.
FAST_MAX_EVALUATIONS = 100


@dataclass(frozen=True)
class ScheduleCounts:
    """Size of a jump schedule: every transition is a network evaluation (down) or an undo step (up)."""

    transitions: int
    evaluations: int
    undo: int


def _check_schedule(t_T: int, jump_length: int, jump_n_sample: int) -> None:
    if t_T < 1 or jump_length < 1 or jump_n_sample < 1:
        raise EchoDataError(
            None,
            f"RePaint schedule needs t_T, jump_length, jump_n_sample >= 1, got ({t_T}, {jump_length}, {jump_n_sample})",
        )


def jump_schedule(t_T: int, jump_length: int, jump_n_sample: int) -> list[int]:
    """RePaint's time sequence: from ``t_T - 1`` down to ``-1`` (the clean image), with jumps back up.

    At every ``jump_length``-th step ``j`` (``j = 0, L, 2L, ...`` below ``t_T - L``) the chain, once it reaches
    ``j``, jumps back up by ``jump_length`` steps and comes down again, ``jump_n_sample - 1`` times (RePaint
    Sec. 4.2, "resampling"). Consecutive entries form the transitions: a decrease is a reverse step (one network
    evaluation), an increase an undo step x_t ~ q(x_t | x_{t-1}) (no network).

    Args:
        t_T: number of (respaced) diffusion steps.
        jump_length: steps per jump (j in RePaint).
        jump_n_sample: passes over each jump segment (r in RePaint); 1 means no resampling.
    """
    _check_schedule(t_T, jump_length, jump_n_sample)
    jumps_left = {j: jump_n_sample - 1 for j in range(0, t_T - jump_length, jump_length)}
    t = t_T
    times: list[int] = []
    while t >= 1:
        t -= 1
        times.append(t)
        if jumps_left.get(t, 0) > 0:
            jumps_left[t] -= 1
            for _ in range(jump_length):
                t += 1
                times.append(t)
    times.append(-1)
    return times


def schedule_counts(t_T: int, jump_length: int, jump_n_sample: int) -> ScheduleCounts:
    """Transitions, network evaluations and undo steps of :func:`jump_schedule`.

    E.g. (250, 10, 10): 4,570 transitions, 2,410 network evaluations, 2,160 undo steps (RePaint's resampling schedule,
    Lugmayr et al. 2022, Sec. 4.2; asserted in tests/augment/test_repaint.py).
    """
    times = jump_schedule(t_T, jump_length, jump_n_sample)
    down = sum(b < a for a, b in zip(times[:-1], times[1:]))
    return ScheduleCounts(transitions=len(times) - 1, evaluations=down, undo=len(times) - 1 - down)


def network_evaluations(sampler: str = "repaint", schedule: Sequence[int] | None = None) -> int:
    """Network evaluations per image of ``sampler`` with ``schedule`` (default: the sampler's)."""
    return schedule_counts(*_resolve_schedule(sampler, schedule)).evaluations


def _resolve_schedule(sampler: str, schedule: Sequence[int] | None) -> tuple[int, int, int]:
    if sampler not in SAMPLERS:
        raise EchoDataError(None, f"unknown RePaint sampler {sampler!r}; choose from {sorted(SAMPLERS)}")
    given = schedule if schedule is not None else SAMPLERS[sampler]
    if (
        isinstance(given, (str, bytes))
        or not isinstance(given, Sequence)
        or len(given) != 3
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in given)
    ):
        raise EchoDataError(
            "--schedule", f"RePaint schedule must be three integers t_T,jump_length,jump_n_sample, got {schedule!r}"
        )
    sched = (int(given[0]), int(given[1]), int(given[2]))
    _check_schedule(*sched)
    if sampler == "fast" and schedule_counts(*sched).evaluations > FAST_MAX_EVALUATIONS:
        n = schedule_counts(*sched).evaluations
        raise EchoDataError(None, f"fast schedule {sched} needs {n} network evaluations (> {FAST_MAX_EVALUATIONS})")
    return sched


def _disk(radius: int) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1, dtype=torch.float32)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).float()[None, None]


def repaint_mask(known_mask: torch.Tensor, border: int) -> torch.Tensor:
    """Pixels the diffusion keeps from the input: all but the unknown region dilated by a disk of ``border`` px.

    Args:
        known_mask: (B, 1, H, W) bool, True where the input is known.
        border: dilation radius of the unknown region in pixels (0: none).
    """
    unknown = (~known_mask).float()
    if border <= 0:
        return known_mask.clone()
    grown = F.conv2d(unknown, _disk(border).to(unknown.device), padding=border) > 0.5
    return ~grown


def _check_inputs(image: torch.Tensor, known_mask: torch.Tensor) -> torch.Tensor:
    if image.ndim != 4 or image.shape[1] != 1:
        raise EchoDataError(None, f"RePaint expects images of shape (B, 1, H, W), got {tuple(image.shape)}")
    if not torch.is_floating_point(image) or not bool(torch.isfinite(image).all()):
        raise EchoDataError(None, "RePaint input must be a finite floating-point tensor")
    if float(image.abs().max()) > 1.0 + 1e-4:
        raise EchoDataError(None, f"RePaint input must be scaled to [-1, 1] (max |x| = {float(image.abs().max()):.3g})")
    mask = torch.as_tensor(known_mask, device=image.device)
    if mask.ndim == 3:
        mask = mask[:, None]
    fits = mask.ndim == 4 and mask.shape[1] == 1 and mask.shape[2:] == image.shape[2:]
    if not fits or mask.shape[0] not in (1, image.shape[0]):
        raise EchoDataError(None, f"known_mask of shape {tuple(mask.shape)} does not fit images {tuple(image.shape)}")
    return mask.bool().expand(image.shape[0], -1, -1, -1)


@torch.no_grad()
def repaint(
    model: Callable[..., torch.Tensor],
    diffusion: GaussianDiffusion,
    image: torch.Tensor,
    known_mask: torch.Tensor,
    generator: GeneratorLike,
    schedule: Sequence[int] | None = None,
    border: int = 10,
    sampler: str = "repaint",
    progress: bool = False,
) -> torch.Tensor:
    """Inpaint the unknown pixels of a batch of images with an unconditional DDPM (RePaint, Algorithm 1).

    Args:
        model: the network (called as ``model(x, timesteps=...)``, 2 output channels: eps and v), in eval mode.
        diffusion: the model's training process (T steps); it is respaced to ``t_T`` steps here.
        image: (B, 1, H, W) images in [-1, 1]; unknown pixels may hold anything (e.g. -1, black).
        known_mask: (B, 1, H, W) or (B, H, W) bool, True where the input is kept; one mask per image.
        generator: one ``torch.Generator`` for the batch, or B generators, one per image: then image i gets the
            result that repainting it alone with generator i gives (up to the network's batch numerics).
        schedule: (t_T, jump_length, jump_n_sample); default (250, 10, 10) for ``"repaint"`` and
            :data:`FAST_SCHEDULE` for ``"fast"`` (which must stay within 100 network evaluations).
        border: the unknown region is dilated by this many pixels for the diffusion (seam band); 10 at 256 px.
        sampler: ``"repaint"`` (full schedule) or ``"fast"``.
        progress: progress bar over the transitions.

    Returns:
        (B, 1, H, W) images: the pixels of :func:`repaint_mask` (known, outside the seam band) bit-identical to
        ``image``; the unknown pixels and the seam band generated, in [-1, 1].
    """
    t_T, jump_length, jump_n_sample = _resolve_schedule(sampler, schedule)
    known = _check_inputs(image, known_mask)
    if t_T > diffusion.num_timesteps:
        raise EchoDataError(None, f"schedule t_T = {t_T} exceeds the model's {diffusion.num_timesteps} diffusion steps")
    if bool(known.all()):
        return image.clone()
    process = diffusion.respace(t_T) if t_T < diffusion.num_timesteps else diffusion
    process = process.to(image.device)
    keep = repaint_mask(known, border).to(image.dtype)
    x0 = image
    # x_T ~ N(0, I) with the kept region taken from q(x_T | x_0).
    x = randn_tensor(image.shape, generator, image.device, image.dtype)
    x = _combine(process, keep, x0, x, t_T - 1, generator)
    times = jump_schedule(t_T, jump_length, jump_n_sample)
    pairs = list(zip(times[:-1], times[1:]))
    for t_last, t_cur in progress_bar(pairs, total=len(pairs), desc="repaint", leave=False) if progress else pairs:
        if t_cur < t_last:
            # unknown: x_{t-1} ~ p_theta(x_{t-1} | x_t) (one network evaluation; no noise at the last step)
            x_unknown = process.p_sample(model, x, t_last, generator)
            # known: x_{t-1} ~ q(x_{t-1} | x_0); combined: m * known + (1 - m) * unknown (Algorithm 1)
            x = _combine(process, keep, x0, x_unknown, t_cur, generator)
        else:
            # undo (resampling): x_t ~ q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)
            x = process.q_step(x, torch.tensor(t_cur), generator)
    # Pixels outside the seam band pasted back exactly; the unknown region and the band stay generated, clipped to
    # the data range (pasting the band back too would move the seam to the edge of the known region).
    return torch.where(keep.bool(), image, x.clamp(-1.0, 1.0))


def _combine(
    process: GaussianDiffusion,
    keep: torch.Tensor,
    x0: torch.Tensor,
    x_unknown: torch.Tensor,
    t: int,
    generator: GeneratorLike,
) -> torch.Tensor:
    """m * x_t^known + (1 - m) * x_t^unknown with x_t^known ~ q(x_t | x_0) (x_0 itself at t = -1)."""
    if t < 0:
        x_known = x0
    else:
        noise = randn_tensor(x0.shape, generator, x0.device, x0.dtype)
        x_known = process.q_sample(x0, torch.tensor(t), noise)
    return keep * x_known + (1.0 - keep) * x_unknown
