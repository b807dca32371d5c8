"""experiments.common.bootstrap_mean_ci: two-stage bootstrap over training seeds and test patients."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.common import bootstrap_mean_ci


def test_constant_values_give_a_zero_width_interval_at_the_value() -> None:
    assert bootstrap_mean_ci(np.full((3, 8), 0.7), [i // 2 for i in range(8)]) == pytest.approx((0.7, 0.7, 0.7))


def test_mean_is_the_mean_of_the_finite_cells() -> None:
    values = np.array([[0.9, np.nan, 0.8, 0.7], [0.6, 0.5, np.nan, 0.4]])
    mean, lower, upper = bootstrap_mean_ci(values, ["p1", "p1", "p2", "p2"])
    assert mean == pytest.approx(np.nanmean(values)) and lower <= mean <= upper


def test_images_of_one_patient_are_resampled_together() -> None:
    """Four identical images per patient carry the information of one: the interval must not shrink."""
    rng = np.random.default_rng(3)
    one = rng.normal(0.9, 0.05, size=(2, 10))
    four = np.repeat(one, 4, axis=1)
    assert bootstrap_mean_ci(four, np.repeat(np.arange(10), 4)) == pytest.approx(bootstrap_mean_ci(one, np.arange(10)))


def test_seed_to_seed_spread_widens_the_interval() -> None:
    """Rows differing only by a per-seed offset: a patient-only bootstrap would give zero width."""
    values = np.array([[0.80] * 12, [0.85] * 12, [0.90] * 12])
    mean, lower, upper = bootstrap_mean_ci(values, np.arange(12))
    assert mean == pytest.approx(0.85) and upper - lower > 0.04


def test_coverage_of_the_true_mean() -> None:
    rng = np.random.default_rng(0)
    covered = 0
    for rep in range(300):
        values = rng.normal(0.0, 1.0, size=(1, 40))
        _, lower, upper = bootstrap_mean_ci(values, np.arange(40), n_boot=500, seed=rep)
        covered += lower <= 0.0 <= upper
    assert 0.90 <= covered / 300 <= 0.99


def test_bad_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="n_seeds, n_cases"):
        bootstrap_mean_ci(np.zeros((2, 3)), [0, 1])
