"""STAPLE against SimpleITK's STAPLEImageFilter (the oracle), batching and degenerate inputs."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scripts import EchoDataError, staple, staple_torch


def _raters(seed: int, n_raters: int, shape: tuple[int, ...] = (48, 40)) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    truth = (yy - shape[0] / 2) ** 2 / 150 + (xx - shape[1] / 2) ** 2 / 90 < 1
    raters = []
    for _j in range(n_raters):
        flip = rng.random(shape) < rng.uniform(0.02, 0.25)
        shifted = np.roll(truth, rng.integers(-2, 3), axis=0)
        raters.append((shifted ^ flip).astype(np.uint8))
    return raters


def _sitk(masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    filt = sitk.STAPLEImageFilter()
    filt.SetForegroundValue(1.0)
    prob = sitk.GetArrayFromImage(filt.Execute([sitk.GetImageFromArray(m) for m in masks]))
    return prob, np.array(filt.GetSensitivity()), np.array(filt.GetSpecificity())


@pytest.mark.parametrize("seed, n_raters", [(0, 2), (1, 3), (2, 5), (3, 8), (4, 2)])
def test_staple_equals_simpleitk(seed: int, n_raters: int) -> None:
    masks = _raters(seed, n_raters)
    prob, sens, spec = staple(masks)
    ref_prob, ref_sens, ref_spec = _sitk(masks)
    assert prob.shape == masks[0].shape
    assert np.abs(prob - ref_prob).max() < 1e-6
    assert np.allclose(sens, ref_sens, atol=1e-7) and np.allclose(spec, ref_spec, atol=1e-7)


def test_staple_3d_and_batched_equal_single() -> None:
    rng = np.random.default_rng(7)
    masks = [(rng.random((6, 12, 10)) < 0.3 + 0.1 * j).astype(np.uint8) for j in range(4)]
    prob, _, _ = staple(masks)
    assert np.abs(prob - _sitk(masks)[0]).max() < 1e-6
    a, b = _raters(8, 3), _raters(9, 3)
    batch = torch.from_numpy(np.stack([np.stack(a), np.stack(b)]))
    probs, sens, spec = staple_torch(batch)
    for i, masks in enumerate((a, b)):
        p, s, q = staple(masks)
        assert np.allclose(probs[i].numpy(), p) and np.allclose(sens[i].numpy(), s) and np.allclose(spec[i].numpy(), q)


def test_staple_weights_raters_by_reliability() -> None:
    """A good rater outvotes two poor ones where they disagree (majority voting would not)."""
    masks = _raters(11, 3)
    rng = np.random.default_rng(0)
    truth = masks[0].copy()
    good = truth
    poor = [(truth ^ (rng.random(truth.shape) < 0.3)).astype(np.uint8) for _ in range(2)]
    prob, sens, spec = staple([good, *poor])
    assert sens[0] > sens[1] and sens[0] > sens[2] and spec[0] > spec[1]
    assert ((prob > 0.5) == (good > 0)).mean() > 0.99


def test_staple_degenerate_inputs() -> None:
    same = _raters(12, 1)[0]
    prob, sens, spec = staple([same, same])
    assert np.array_equal(prob > 0.5, same > 0) and np.allclose(sens, 1) and np.allclose(spec, 1)
    empty = np.zeros((8, 8), dtype=np.uint8)
    prob, _, _ = staple([empty, empty, empty])
    assert np.all(np.isfinite(prob)) and prob.max() < 1e-6


def test_staple_rejects_bad_input() -> None:
    with pytest.raises(EchoDataError, match="binary"):
        staple([np.full((4, 4), 2), np.zeros((4, 4))])
    with pytest.raises(EchoDataError, match="differ in shape"):
        staple([np.zeros((4, 4)), np.zeros((4, 5))])
    with pytest.raises(EchoDataError, match="no masks"):
        staple([])
