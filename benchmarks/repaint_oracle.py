#!/usr/bin/env python
"""Exact-oracle benchmark of inpainting samplers (issue 12): RePaint schedules against a closed-form conditional.

Usage::

    python benchmarks/repaint_oracle.py --out benchmarks/results/repaint_oracle.json \
        --md benchmarks/results/repaint_oracle.md            # the committed run (about 10 minutes on 2 cores)
    python benchmarks/repaint_oracle.py --out /tmp/o.json --quick   # seconds: the pair model, a few schedules

The image model is a Gaussian over d pixels, x_0 ~ N(mu, S), so everything a sampler should produce is known in
closed form:

- the exact denoiser: with x_t = sqrt(a) x_0 + sqrt(1 - a) eps (a = alpha_bar_t), E[x_0 | x_t] =
  mu + sqrt(a) S (a S + (1 - a) I)^-1 (x_t - sqrt(a) mu), computed through S = U diag(lam) U^T; the "network"
  returns eps = (x_t - sqrt(a) E[x_0 | x_t]) / sqrt(1 - a) and a variance value v (below);
- the exact reverse step of the Gaussian model, p(x_{t-1} | x_t) = N(posterior mean at E[x_0 | x_t],
  beta~_t I + c_1^2 Cov[x_0 | x_t]); the sampler's variance is diagonal (as a network's is), so the oracle returns
  the v whose log-space interpolation (improved DDPM Eq. 15) gives that covariance's diagonal (``variance="exact"``;
  ``"small"`` = beta~_t and ``"large"`` = beta_t are the two fixed choices);
- the target: the conditional of the unknown pixels given the known ones, N(m, C) by Gaussian conditioning.

Each sampler runs the repository's own code (:func:`echogains.augment.repaint.repaint` with its jump schedule, its
respacing and :class:`echogains.ddpm.diffusion.GaussianDiffusion`, on the paper's T = 4000 cosine process) with the
oracle in place of the network, on ``n_images`` conditioning images (known pixels drawn from the model, seeded) x
``n_samples`` samples each, in one batch (float32 sampler state, the oracle in float64), without clipping the
predicted x_0 (the oracle is exact; clipping is a network-side safeguard). Metrics over the unknown pixels,
averaged over the conditioning images:

- ``mean_error``: RMS of (sample mean - m) / sqrt(diag C), in conditional standard deviations. Its Monte-Carlo
  floor is 1 / sqrt(n_samples) (``floor.mean_error``; the exact conditional sampler's own value is reported too);
- ``var_error``: RMS of log(sample variance / diag C); ``var_ratio``: mean of sample variance / diag C (below 1:
  the samples are too narrow);
- ``cov_error``: || sample covariance - C ||_F / || C ||_F (the correlations between unknown pixels);
- ``evaluations``: network evaluations per image of the schedule (:func:`echogains.augment.repaint.schedule_counts`).

Samplers: ``repaint`` (t_T, jump_length, jump_n_sample) of the repository; (t_T, 1, 1) is plain "replacement" with
t_T steps. ``ddnm``: the null-space step of DDNM (Wang et al., ICLR 2023) for noise-free inpainting: the known pixels
of the predicted x_0 are replaced by the input before the posterior step, with the same jump (time-travel)
schedule; written here (not in the package) from the paper's Eq. 13 with A = the known-pixel selection.

Search: every (t_T, j, r) on a grid with at most 100 evaluations, for both methods, on the ``field`` model with
seed ``seed``; the best few are re-measured with fresh seeds (``confirm_seeds``: new conditioning images and noise)
and ranked by their mean error over those fresh runs only (the search's minimum is biased low). The result names
the best RePaint schedule at <= 100 evaluations (``choice.best_at_budget``, the ``fast`` sampler's default, since
``fast`` is RePaint on a respaced schedule), the best of either method, and compares them with (250, 1, 1) and
(250, 10, 10) measured on the same fresh runs.

Models: ``pair`` (two pixels, std 0.5, correlation 0.95, known pixel 0.5 std above the mean, as the toy in
issue 12: true conditional mean 0.475) and ``field`` (an 8 x 8 image, squared-exponential covariance, length 1.5 px,
std 0.3; the three right columns and the two bottom rows unknown, 34 of 64 pixels, an L-shaped border like the
outside of a sector).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:  # imported by path (the tests): the repository root is on sys.path
    from benchmarks import _common
except ImportError:  # run as a script (this folder is sys.path[0]) or loaded by path from another folder
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common  # takes this folder off sys.path again
REPO_ROOT = _common.REPO_ROOT

import argparse  # noqa: E402
import itertools  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from echogains.augment.repaint import jump_schedule, repaint, schedule_counts  # noqa: E402
from echogains.ddpm.diffusion import GaussianDiffusion, cosine_betas, randn_tensor  # noqa: E402
from echogains.utils import EchoDataError  # noqa: E402

__all__ = [
    "GaussianImageModel",
    "ExactDenoiser",
    "pair_model",
    "field_model",
    "make_process",
    "conditioning",
    "run_sampler",
    "measure",
    "search_grid",
    "run_benchmark",
    "markdown",
]

#: The paper's training process: T = 4000, cosine schedule.
NUM_TIMESTEPS = 4000
PAPER = (250, 10, 10)
REPLACEMENT_250 = (250, 1, 1)


# ----------------------------------------------------------------------------------------------------------------
# The Gaussian image model and its exact denoiser
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class GaussianImageModel:
    """x_0 ~ N(mean, cov) over the pixels of an (H, W) image; ``known`` marks the conditioning pixels.

    Args:
        name: label in the results.
        shape: (H, W).
        mean: (d,) mean, row-major pixels.
        cov: (d, d) covariance (symmetric positive definite).
        known: (H, W) bool, True where the sampler is given the pixel.
    """

    name: str
    shape: tuple[int, int]
    mean: np.ndarray
    cov: np.ndarray
    known: np.ndarray

    def __post_init__(self) -> None:
        d = self.shape[0] * self.shape[1]
        self.mean = np.asarray(self.mean, dtype=np.float64).reshape(d)
        self.cov = np.asarray(self.cov, dtype=np.float64).reshape(d, d)
        self.known = np.asarray(self.known, dtype=bool).reshape(self.shape)
        lam, vec = np.linalg.eigh(self.cov)
        if lam.min() <= 0:
            raise ValueError("covariance must be positive definite")
        self.eigval, self.eigvec = lam, vec

    @property
    def d(self) -> int:
        return int(self.mean.size)

    def conditional(self, known_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact N(m, C) of the unknown pixels given ``known_values`` (in the order of ``known``'s True pixels)."""
        k = self.known.reshape(-1)
        u = ~k
        s_kk, s_uk, s_uu = self.cov[np.ix_(k, k)], self.cov[np.ix_(u, k)], self.cov[np.ix_(u, u)]
        gain = np.linalg.solve(s_kk, s_uk.T).T  # S_uk S_kk^-1
        m = self.mean[u] + gain @ (np.asarray(known_values, dtype=np.float64) - self.mean[k])
        c = s_uu - gain @ s_uk.T
        return m, 0.5 * (c + c.T)

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n, d) draws from the model."""
        z = rng.standard_normal((n, self.d))
        return self.mean + (z * np.sqrt(self.eigval)) @ self.eigvec.T

    def denoise(self, xt: np.ndarray, alpha_bar: float) -> tuple[np.ndarray, np.ndarray]:
        """E[x_0 | x_t] (n, d) and diag Cov[x_0 | x_t] (d,) for x_t = sqrt(a) x_0 + sqrt(1 - a) eps."""
        a = float(alpha_bar)
        lam, vec = self.eigval, self.eigvec
        z = (xt - math.sqrt(a) * self.mean) @ vec
        x0 = self.mean + (z * (math.sqrt(a) * lam / (a * lam + 1.0 - a))) @ vec.T
        post = lam * (1.0 - a) / (a * lam + 1.0 - a)
        return x0, (vec**2) @ post


def pair_model(sigma: float = 0.5, rho: float = 0.95, known_z: float = 1.0) -> GaussianImageModel:
    """Two pixels (1 x 2), std ``sigma``, correlation ``rho``; the left one known (fixed at ``known_z`` stds)."""
    cov = sigma**2 * np.array([[1.0, rho], [rho, 1.0]])
    model = GaussianImageModel("pair", (1, 2), np.zeros(2), cov, np.array([[True, False]]))
    model.fixed_known = np.array([known_z * sigma])  # type: ignore[attr-defined]
    return model


def field_model(size: int = 8, sigma: float = 0.3, length: float = 1.5, nugget: float = 1e-3) -> GaussianImageModel:
    """An ``size`` x ``size`` Gaussian field (squared-exponential covariance).

    The right 3 columns and the bottom 2 rows are unknown.
    """
    rows, cols = np.mgrid[0:size, 0:size]
    pts = np.stack([rows.ravel(), cols.ravel()], axis=1).astype(np.float64)
    dist2 = ((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
    cov = sigma**2 * (np.exp(-dist2 / (2.0 * length**2)) + nugget * np.eye(size * size))
    known = np.ones((size, size), dtype=bool)
    known[:, size - 3 :] = False
    known[size - 2 :, :] = False
    return GaussianImageModel("field", (size, size), np.zeros(size * size), cov, known)


def make_process(num_timesteps: int = NUM_TIMESTEPS) -> GaussianDiffusion:
    """The paper's cosine process, without clipping the predicted x_0 (the oracle is exact)."""
    return GaussianDiffusion(cosine_betas(num_timesteps), clip_denoised=False)


class ExactDenoiser:
    """The exact "network" of a :class:`GaussianImageModel` for the (respaced) process ``process``.

    Called as ``model(x, timesteps=...)`` like the repository's networks: ``x`` (B, 1, H, W), ``timesteps`` the
    ORIGINAL training steps (``process.timestep_map``). Returns (B, 2, H, W): eps and the raw variance value v_raw.

    Args:
        model: the Gaussian image model.
        full: the training process (T steps), whose alpha_bar the timesteps index.
        process: the process the sampler runs (``full.respace(t_T)``), whose beta and beta~ the variance refers to.
        variance: ``exact`` (the diagonal of the true reverse-step covariance), ``small`` (beta~) or ``large`` (beta).
    """

    def __init__(
        self, model: GaussianImageModel, full: GaussianDiffusion, process: GaussianDiffusion, variance: str = "exact"
    ) -> None:
        if variance not in ("exact", "small", "large"):
            raise ValueError(f"variance must be exact, small or large, got {variance!r}")
        self.model, self.variance = model, variance
        self.alpha_bar = full.alphas_cumprod.cpu().numpy()
        tmap = process.timestep_map.cpu().numpy()
        self.index = {int(t): k for k, t in enumerate(tmap)}
        self.log_beta = process.log_betas.cpu().numpy()
        self.log_beta_tilde = process.posterior_log_variance_clipped.cpu().numpy()
        self.beta_tilde = process.posterior_variance.cpu().numpy()
        self.coef1 = process.posterior_mean_coef1.cpu().numpy()
        self.calls = 0

    def __call__(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        t = int(timesteps.reshape(-1)[0])
        if not bool((timesteps == t).all()):
            raise ValueError("the oracle expects one timestep for the whole batch")
        b = x.shape[0]
        xt = x.detach().cpu().double().numpy().reshape(b, -1)
        a = float(self.alpha_bar[t])
        x0, post_var = self.model.denoise(xt, a)
        eps = (xt - math.sqrt(a) * x0) / math.sqrt(1.0 - a)
        k = self.index[t]
        lb, lbt = self.log_beta[k], self.log_beta_tilde[k]
        if self.variance == "small":
            v = np.zeros(self.model.d)
        elif self.variance == "large":
            v = np.ones(self.model.d)
        else:
            target = self.beta_tilde[k] + self.coef1[k] ** 2 * post_var
            v = (
                (np.log(np.maximum(target, 1e-300)) - lbt) / (lb - lbt)
                if abs(lb - lbt) > 1e-12
                else np.zeros_like(target)
            )
        v_raw = np.broadcast_to(2.0 * v - 1.0, xt.shape)
        out = np.stack([eps, v_raw], axis=1).reshape(b, 2, *self.model.shape)
        return torch.from_numpy(out).to(x.device, x.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Conditioning images, samplers and metrics
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Conditioning:
    """``n_images`` conditioning images (their known pixels) with the exact conditionals of the unknown pixels."""

    model: GaussianImageModel
    images: np.ndarray  # (n_images, d): known pixels from the model draw, unknown ones 0
    means: np.ndarray  # (n_images, d_u)
    cov: np.ndarray  # (d_u, d_u): the same for every image

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])


def conditioning(model: GaussianImageModel, n_images: int, seed: int) -> Conditioning:
    """Draw the known pixels of ``n_images`` images from the model (the pair model uses its fixed known value)."""
    rng = np.random.default_rng([seed, 7])
    k = model.known.reshape(-1)
    draws = model.sample(n_images, rng)
    for i in range(n_images):  # the sampler takes images in [-1, 1]: redraw the rare image beyond 0.95
        while np.abs(draws[i, k]).max() > 0.95:
            draws[i] = model.sample(1, rng)[0]
    fixed = getattr(model, "fixed_known", None)
    if fixed is not None:
        draws[:, k] = fixed
    images = np.where(k, draws, 0.0)
    means, covs = zip(*(model.conditional(img[k]) for img in images))
    return Conditioning(model, images, np.stack(means), covs[0])


def _ddnm(
    model_fn: Callable[..., torch.Tensor],
    diffusion: GaussianDiffusion,
    image: torch.Tensor,
    known: torch.Tensor,
    generator: torch.Generator,
    schedule: Sequence[int],
) -> torch.Tensor:
    """DDNM for noise-free inpainting with time travel: x0 <- known * y + (1 - known) * x0_hat, then the posterior."""
    t_T, jump_length, jump_n_sample = schedule
    process = diffusion.respace(t_T) if t_T < diffusion.num_timesteps else diffusion
    keep = known.to(image.dtype)
    x = randn_tensor(image.shape, generator, image.device, image.dtype)
    times = jump_schedule(t_T, jump_length, jump_n_sample)
    for t_last, t_cur in zip(times[:-1], times[1:]):
        if t_cur < t_last:
            tt = torch.full((image.shape[0],), t_last, dtype=torch.long)
            eps, v_raw = process.model_output(model_fn, x, tt)
            x0 = process.predict_x0(x, tt, eps)
            x0 = keep * image + (1.0 - keep) * x0  # the range-null-space decomposition for a pixel mask
            mean, _ = process.q_posterior(x0, x, tt)
            if t_last == 0:
                x = mean
            else:
                noise = randn_tensor(image.shape, generator, image.device, image.dtype)
                x = mean + torch.exp(0.5 * process.log_variance(v_raw, tt)) * noise
        else:
            x = process.q_step(x, torch.tensor(t_cur), generator)
    return torch.where(known, image, x)


def run_sampler(
    cond: Conditioning,
    method: str,
    schedule: Sequence[int],
    n_samples: int,
    seed: int,
    variance: str = "exact",
    diffusion: GaussianDiffusion | None = None,
) -> np.ndarray:
    """Samples (n_images, n_samples, d_u) of the unknown pixels: ``repaint``, ``ddnm`` or ``exact`` (direct draws)."""
    model = cond.model
    u = ~model.known.reshape(-1)
    if method == "exact":
        rng = np.random.default_rng([seed, 11])
        chol = np.linalg.cholesky(cond.cov)
        z = rng.standard_normal((cond.n_images, n_samples, int(u.sum())))
        return cond.means[:, None, :] + z @ chol.T
    diffusion = diffusion or make_process()
    t_T = int(schedule[0])
    process = diffusion.respace(t_T) if t_T < diffusion.num_timesteps else diffusion
    oracle = ExactDenoiser(model, diffusion, process, variance)
    image = torch.from_numpy(np.repeat(cond.images, n_samples, axis=0).astype(np.float32)).reshape(-1, 1, *model.shape)
    known = torch.from_numpy(np.broadcast_to(model.known, image.shape[:1] + (1, *model.shape)).copy())
    gen = torch.Generator().manual_seed(int(seed))
    if method == "repaint":
        out = repaint(oracle, diffusion, image, known, gen, schedule=tuple(schedule), border=0, sampler="repaint")
    elif method == "ddnm":
        out = _ddnm(oracle, diffusion, image, known, gen, schedule)
    else:
        raise ValueError(f"unknown method {method!r}")
    flat = out.double().numpy().reshape(cond.n_images, n_samples, -1)
    return flat[:, :, u]


def measure(cond: Conditioning, samples: np.ndarray) -> dict[str, float]:
    """Conditional-mean, -variance and -covariance errors of ``samples`` (n_images, n, d_u).

    Measured against the exact N(m, C).
    """
    var = np.diag(cond.cov)
    m_hat = samples.mean(axis=1)
    v_hat = samples.var(axis=1, ddof=1)
    z = (m_hat - cond.means) / np.sqrt(var)
    cov_err = []
    for i in range(samples.shape[0]):
        c_hat = np.atleast_2d(np.cov(samples[i], rowvar=False))
        cov_err.append(np.linalg.norm(c_hat - cond.cov) / np.linalg.norm(cond.cov))
    return {
        "mean_error": float(np.sqrt(np.mean(z**2))),
        "mean_bias": float(np.mean(z)),
        "var_error": float(np.sqrt(np.mean(np.log(v_hat / var) ** 2))),
        "var_ratio": float(np.mean(v_hat / var)),
        "cov_error": float(np.mean(cov_err)),
        "mean_abs": float(np.sqrt(np.mean((m_hat - cond.means) ** 2))),
    }


def floors(n_samples: int) -> dict[str, float]:
    """Monte-Carlo floors of the metrics for exact samples: E[z^2] = 1 / n; sd(log s^2) ~ sqrt(2 / (n - 1))."""
    return {"mean_error": 1.0 / math.sqrt(n_samples), "var_error": math.sqrt(2.0 / (n_samples - 1))}


def search_grid(budget: int, max_t: int = 100) -> list[tuple[int, int, int]]:
    """Every (t_T, j, r) with at most ``budget`` evaluations: r = 1 once per t_T (j is then irrelevant), else the
    jump lengths and resampling counts below, j < t_T."""
    grid = [(t, 1, 1) for t in range(5, max_t + 1, 5) if schedule_counts(t, 1, 1).evaluations <= budget]
    for t, j, r in itertools.product(range(5, max_t + 1, 5), (1, 2, 3, 4, 5, 6, 8, 10), range(2, 11)):
        if j < t and schedule_counts(t, j, r).evaluations <= budget:
            grid.append((t, j, r))
    return grid


# ----------------------------------------------------------------------------------------------------------------
# The benchmark
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    n_images: int
    n_samples: int
    search_images: int
    search_samples: int
    budget: int
    max_t: int
    confirm_top: int
    confirm_seeds: tuple[int, ...]
    models: tuple[str, ...]
    search: bool


FULL = Profile(
    n_images=4,
    n_samples=1000,
    search_images=2,
    search_samples=500,
    budget=100,
    max_t=100,
    confirm_top=8,
    confirm_seeds=(1, 2),
    models=("field", "pair"),
    search=True,
)
QUICK = Profile(
    n_images=1,
    n_samples=1000,
    search_images=1,
    search_samples=1000,
    budget=100,
    max_t=30,
    confirm_top=2,
    confirm_seeds=(1,),
    models=("pair",),
    search=True,
)

MODELS: dict[str, Callable[[], GaussianImageModel]] = {"pair": pair_model, "field": field_model}

#: Schedules measured on every model besides the search: the paper's, plain replacement at 250 steps, the
#: pre-issue-12 fast default and the issue's examples.
REFERENCES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("repaint", PAPER),
    ("repaint", REPLACEMENT_250),
    ("repaint", (15, 3, 7)),
    ("repaint", (30, 3, 3)),
    ("repaint", (50, 5, 2)),
    ("repaint", (100, 1, 1)),
    ("ddnm", (100, 1, 1)),
    ("ddnm", (250, 1, 1)),
)


def _row(method: str, schedule: Sequence[int], metrics: dict[str, float], seconds: float, **extra: Any) -> dict:
    counts = schedule_counts(*schedule)
    return {
        "method": method,
        "schedule": list(schedule),
        "evaluations": counts.evaluations,
        "transitions": counts.transitions,
        **metrics,
        "seconds": seconds,
        **extra,
    }


def _measure_one(
    cond: Conditioning,
    method: str,
    schedule: Sequence[int],
    n: int,
    seed: int,
    variance: str,
    diffusion: GaussianDiffusion,
) -> dict:
    start = time.perf_counter()
    samples = run_sampler(cond, method, schedule, n, seed, variance, diffusion)
    return _row(method, schedule, measure(cond, samples), time.perf_counter() - start, seed=seed, variance=variance)


def run_benchmark(profile: Profile, seed: int = 0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure the references on every model, search the <= budget schedules on the first model, confirm the best."""
    diffusion = make_process()
    result: dict[str, Any] = {
        "benchmark": "repaint_oracle",
        "command": None,
        "profile": profile.__dict__ | {"confirm_seeds": list(profile.confirm_seeds), "models": list(profile.models)},
        "process": {
            "num_timesteps": NUM_TIMESTEPS,
            "schedule": "cosine",
            "clip_denoised": False,
            "dtype": "float32 state, float64 oracle",
        },
        "floor": floors(profile.n_samples),
        "models": {},
    }
    for name in profile.models:
        model = MODELS[name]()
        cond = conditioning(model, profile.n_images, seed)
        entry: dict[str, Any] = {
            "d": model.d,
            "unknown": int((~model.known).sum()),
            "conditional_mean": cond.means.tolist() if model.d <= 4 else None,
            "conditional_var": np.diag(cond.cov).tolist() if model.d <= 4 else None,
            "exact_sampler": measure(cond, run_sampler(cond, "exact", (0, 0, 0), profile.n_samples, seed)),
            "references": [],
            "variance_modes": [],
        }
        for method, sched in REFERENCES:
            row = _measure_one(cond, method, sched, profile.n_samples, seed, "exact", diffusion)
            entry["references"].append(row)
            log(
                f"{name} {method} {sched}: {row['evaluations']} evals, mean {row['mean_error']:.3f}, "
                f"var {row['var_error']:.3f} ({row['seconds']:.1f} s)"
            )
        result["models"][name] = entry
    if profile.search:
        _search(result, profile, seed, diffusion, log)
    result["machine"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    return result


def _search(
    result: dict[str, Any], profile: Profile, seed: int, diffusion: GaussianDiffusion, log: Callable[[str], None]
) -> None:
    """The <= budget grid on the first model, its best re-measured with fresh seeds, the choice, and the chosen
    schedule on every model with fixed variances too; into ``result``."""
    first = profile.models[0]
    model = MODELS[first]()
    cond = conditioning(model, profile.search_images, seed)
    rows = []
    for method in ("repaint", "ddnm"):
        for sched in search_grid(profile.budget, profile.max_t):
            rows.append(_measure_one(cond, method, sched, profile.search_samples, seed, "exact", diffusion))
    rows.sort(key=lambda r: r["mean_error"])
    log(
        f"search on {first}: {len(rows)} runs; best {rows[0]['method']} {rows[0]['schedule']} "
        f"mean {rows[0]['mean_error']:.3f}"
    )
    top = rows[: profile.confirm_top]
    confirm = []
    candidates = [(r["method"], tuple(r["schedule"])) for r in top]
    candidates += [("repaint", REPLACEMENT_250), ("repaint", PAPER)]
    for method, sched in candidates:
        runs = []
        for s in profile.confirm_seeds:
            c = conditioning(model, profile.n_images, 1000 + s)
            runs.append(_measure_one(c, method, sched, profile.n_samples, 1000 + s, "exact", diffusion))
        avg = {
            k: float(np.mean([r[k] for r in runs]))
            for k in ("mean_error", "var_error", "var_ratio", "cov_error", "mean_abs")
        }
        confirm.append(
            _row(
                method,
                sched,
                avg,
                float(sum(r["seconds"] for r in runs)),
                seeds=[1000 + s for s in profile.confirm_seeds],
            )
        )
    within = [c for c in confirm if c["evaluations"] <= profile.budget]
    best_any = min(within, key=lambda r: r["mean_error"])
    # the fast sampler is RePaint on a respaced schedule: its default is the best RePaint schedule
    best = min((c for c in within if c["method"] == "repaint"), key=lambda r: r["mean_error"])
    ref = {tuple(c["schedule"]): c for c in confirm if c["method"] == "repaint"}
    result["search"] = {"model": first, "seed": seed, "grid_size": len(rows), "rows": rows}
    result["confirmation"] = {"model": first, "rows": confirm}
    result["choice"] = {
        "rule": f"lowest confirmed mean error among the RePaint schedules with <= {profile.budget} evaluations",
        "best_at_budget": best,
        "best_any_method_at_budget": best_any,
        "replacement_250": ref[REPLACEMENT_250],
        "paper_250_10_10": ref[PAPER],
        "within_replacement_250": best["mean_error"] <= ref[REPLACEMENT_250]["mean_error"],
        "within_paper": best["mean_error"] <= ref[PAPER]["mean_error"],
    }
    # the chosen schedule on every model, and with the fixed variances (robustness; search size)
    for name in profile.models:
        model = MODELS[name]()
        cond = conditioning(model, profile.search_images, seed)
        for variance in ("small", "large"):
            for method, sched in (
                (best["method"], tuple(best["schedule"])),
                ("repaint", REPLACEMENT_250),
                ("repaint", PAPER),
            ):
                result["models"][name]["variance_modes"].append(
                    _measure_one(cond, method, sched, profile.search_samples, seed, variance, diffusion)
                )
        cond = conditioning(model, profile.n_images, seed)
        if name != first:
            result["models"][name]["chosen"] = _measure_one(
                cond, best["method"], tuple(best["schedule"]), profile.n_samples, seed, "exact", diffusion
            )


def _fmt(row: dict) -> str:
    sched = "(" + ", ".join(str(v) for v in row["schedule"]) + ")"
    return (
        f"| {row['method']} | {sched} | {row['evaluations']} | {row['mean_error']:.3f} | {row['var_error']:.3f} "
        f"| {row['var_ratio']:.2f} | {row['cov_error']:.3f} |"
    )


def markdown(result: dict[str, Any]) -> str:
    """The tables of a result as markdown."""
    head = (
        "| sampler | (t_T, jump, resamples) | network evaluations | mean error (cond. sd) | var error (log) "
        "| var ratio | cov error |\n|---|---|---|---|---|---|---|"
    )
    floor = result["floor"]
    lines = [
        "# RePaint schedules against an exact Gaussian oracle",
        "",
        f"Command: `{result.get('command')}`",
        "",
        "Metrics over the unknown pixels (see `benchmarks/repaint_oracle.py`): mean error = RMS of (sample mean "
        "- exact conditional mean) in conditional standard deviations; var error = RMS of log(sample variance / "
        "exact); var ratio = sample / exact variance; cov error = relative Frobenius error of the covariance. "
        f"Monte-Carlo floor with {result['profile']['n_samples']} samples per image: mean error "
        f"{floor['mean_error']:.3f}, var error {floor['var_error']:.3f}.",
        "",
    ]
    for name, entry in result["models"].items():
        ex = entry["exact_sampler"]
        lines += [
            f"## Model `{name}` (d = {entry['d']}, {entry['unknown']} unknown pixels)",
            "",
            f"Exact conditional sampler (the floor, measured): mean error {ex['mean_error']:.3f}, var error "
            f"{ex['var_error']:.3f}.",
            "",
            head,
        ]
        lines += [_fmt(r) for r in entry["references"]]
        if "chosen" in entry:
            lines.append(_fmt(entry["chosen"]) + " chosen")
        if entry["variance_modes"]:
            lines += [
                "",
                "Fixed variances instead of the oracle's exact diagonal one (search size):",
                "",
                head.replace("| sampler |", "| sampler (variance) |"),
            ]
            for r in entry["variance_modes"]:
                lines.append(_fmt({**r, "method": f"{r['method']} ({r['variance']})"}))
        lines.append("")
    if "confirmation" in result:
        conf = result["confirmation"]
        prof = result["profile"]
        lines += [
            f"## Search at <= {prof['budget']} evaluations (model `{conf['model']}`)",
            "",
            f"{result['search']['grid_size']} runs (seed {result['search']['seed']}, {prof['search_images']} "
            f"images x {prof['search_samples']} samples, floor {1 / math.sqrt(prof['search_samples']):.3f}); "
            "best 10 by mean error:",
            "",
            head,
        ]
        lines += [_fmt(r) for r in result["search"]["rows"][:10]]
        lines += ["", f"Re-measured with fresh seeds {conf['rows'][0]['seeds']} (mean of the runs):", "", head]
        lines += [_fmt(r) for r in conf["rows"]]
        ch = result["choice"]
        b, a = ch["best_at_budget"], ch["best_any_method_at_budget"]
        lines += [
            "",
            f"Best of any method at <= {result['profile']['budget']} evaluations: {a['method']} "
            f"{tuple(a['schedule'])}, mean error {a['mean_error']:.3f}.",
            "",
            f"Best RePaint schedule at <= {result['profile']['budget']} evaluations (the `fast` default): "
            f"{b['method']} {tuple(b['schedule'])}, "
            f"{b['evaluations']} evaluations, mean error {b['mean_error']:.3f} vs (250, 1, 1) "
            f"{ch['replacement_250']['mean_error']:.3f} and (250, 10, 10) "
            f"{ch['paper_250_10_10']['mean_error']:.3f}: within (250, 1, 1): "
            f"{'yes' if ch['within_replacement_250'] else 'no'}; within (250, 10, 10): "
            f"{'yes' if ch['within_paper'] else 'no'}.",
            "",
        ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="JSON result file")
    parser.add_argument("--md", default=None, help="markdown table file")
    parser.add_argument("--quick", action="store_true", help="pair model, short search (seconds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.threads < 1 or args.seed < 0:
        raise EchoDataError(None, "--threads must be >= 1 and --seed >= 0")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    result = run_benchmark(QUICK if args.quick else FULL, args.seed, log=lambda s: print(s, flush=True))
    result["wall_seconds"] = time.perf_counter() - start
    _common.write_outputs(result, "repaint_oracle.py", argv, args.out, args.md, markdown)
    print(f"wrote {args.out} ({result['wall_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
