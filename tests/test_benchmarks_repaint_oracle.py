"""``benchmarks/repaint_oracle.py`` (issue 12) on small configurations: the oracle's closed forms against independent
formulas, the oracle driving the repository's own sampler, the metrics' floor, that the benchmark resolves the
difference between the paper's schedule and plain 250-step replacement, and that the committed result backs the
``fast`` default."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from echogains.augment.repaint import FAST_SCHEDULE, schedule_counts

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "repaint_oracle.py"
RESULT = ROOT / "benchmarks" / "results" / "repaint_oracle.json"


@pytest.fixture(scope="module")
def ro() -> ModuleType:
    spec = importlib.util.spec_from_file_location("repaint_oracle_script", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_pair_conditional_is_the_issues_toy(ro):
    model = ro.pair_model()
    cond = ro.conditioning(model, 1, 0)
    assert cond.means[0, 0] == pytest.approx(0.475)  # rho * known value, as in issue 12
    assert cond.cov[0, 0] == pytest.approx(0.25 * (1 - 0.95**2))


def test_field_conditional_and_denoiser_match_independent_formulas(ro):
    model = ro.field_model()
    rng = np.random.default_rng(3)
    x = model.sample(1, rng)[0]
    k = model.known.ravel()
    m, c = model.conditional(x[k])
    # joint Gaussian conditioning written out with explicit inverses
    s = model.cov
    inv = np.linalg.inv(s[np.ix_(k, k)])
    np.testing.assert_allclose(m, s[np.ix_(~k, k)] @ inv @ x[k], atol=1e-10)
    np.testing.assert_allclose(c, s[np.ix_(~k, ~k)] - s[np.ix_(~k, k)] @ inv @ s[np.ix_(k, ~k)], atol=1e-10)
    # E[x0 | xt] and Cov[x0 | xt] of x_t = sqrt(a) x0 + sqrt(1 - a) eps, by conditioning the joint (x0, x_t)
    a = 0.37
    xt = rng.standard_normal((2, model.d))
    cov_t = a * s + (1 - a) * np.eye(model.d)
    gain = math.sqrt(a) * s @ np.linalg.inv(cov_t)
    x0, post = model.denoise(xt, a)
    np.testing.assert_allclose(x0, (gain @ xt.T).T, atol=1e-10)
    np.testing.assert_allclose(post, np.diag(s - gain @ (math.sqrt(a) * s)), atol=1e-10)


def test_oracle_speaks_the_network_interface_of_the_process(ro):
    """eps gives back the exact x0 through the process's own predict_x0; v gives the exact reverse-step variance."""
    model = ro.field_model()
    full = ro.make_process()
    process = full.respace(25)
    oracle = ro.ExactDenoiser(model, full, process, "exact")
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((3, 1, 8, 8)))
    k = 10
    t = process.timestep_map[k].expand(3)
    out = oracle(x, timesteps=t)
    kk = torch.full((3,), k)
    x0 = process.predict_x0(x, kk, out[:, :1])
    a = float(full.alphas_cumprod[int(t[0])])
    want, post = model.denoise(x.numpy().reshape(3, -1), a)
    np.testing.assert_allclose(x0.numpy().reshape(3, -1), want, atol=1e-9)
    logvar = process.log_variance(out[:, 1:], kk).numpy().reshape(3, -1)
    target = float(process.posterior_variance[k]) + float(process.posterior_mean_coef1[k]) ** 2 * post
    np.testing.assert_allclose(logvar, np.broadcast_to(np.log(target), logvar.shape), atol=1e-9)


def test_unconditional_sampling_with_the_oracle_reproduces_the_prior(ro):
    """The oracle driving the package's ancestral sampler (respaced to 250 steps) samples the model itself."""
    model = ro.pair_model()
    full = ro.make_process()
    process = full.respace(250)
    oracle = ro.ExactDenoiser(model, full, process, "exact")
    x = process.sample(oracle, (4000, 1, 1, 2), torch.Generator().manual_seed(0)).numpy().reshape(-1, 2)
    assert np.abs(x.mean(0)).max() < 4 * 0.5 / math.sqrt(4000)
    np.testing.assert_allclose(np.cov(x, rowvar=False), model.cov, rtol=0.08, atol=0.01)


def test_metrics_floor_and_the_benchmark_resolves_resampling(ro):
    model = ro.pair_model()
    cond = ro.conditioning(model, 1, 0)
    n = 2000
    exact = ro.measure(cond, ro.run_sampler(cond, "exact", (0, 0, 0), n, 0))
    floor = ro.floors(n)
    assert exact["mean_error"] < 3 * floor["mean_error"] and exact["var_error"] < 3 * floor["var_error"]
    paper = ro.measure(cond, ro.run_sampler(cond, "repaint", (250, 10, 10), n, 0))
    plain = ro.measure(cond, ro.run_sampler(cond, "repaint", (250, 1, 1), n, 0))
    # RePaint's resampling pays: (250, 10, 10) is near the floor, plain replacement far off (0.06 vs 0.7 sd)
    assert paper["mean_error"] < 0.15 < 0.5 < plain["mean_error"]
    assert abs(paper["var_ratio"] - 1) < abs(plain["var_ratio"] - 1)
    ddnm = ro.measure(cond, ro.run_sampler(cond, "ddnm", (25, 1, 4), n, 0))
    assert ddnm["mean_error"] < plain["mean_error"]


def test_search_grid_stays_within_the_budget(ro):
    grid = ro.search_grid(100, 50)
    assert grid and all(schedule_counts(*s).evaluations <= 100 for s in grid)
    assert (25, 1, 4) in grid and (15, 3, 7) in grid and len(set(grid)) == len(grid)


def test_committed_result_backs_the_fast_default(ro):
    result = json.loads(RESULT.read_text())
    choice = result["choice"]
    best = choice["best_at_budget"]
    assert tuple(best["schedule"]) == FAST_SCHEDULE and best["method"] == "repaint"
    assert best["evaluations"] == schedule_counts(*FAST_SCHEDULE).evaluations <= 100
    assert choice["within_replacement_250"] is True  # the goal of issue 12
    assert best["mean_error"] < choice["replacement_250"]["mean_error"]
    assert choice["within_paper"] is (best["mean_error"] <= choice["paper_250_10_10"]["mean_error"])
    confirmed = [r for r in result["confirmation"]["rows"] if r["method"] == "repaint" and r["evaluations"] <= 100]
    assert min(r["mean_error"] for r in confirmed) == pytest.approx(best["mean_error"])
