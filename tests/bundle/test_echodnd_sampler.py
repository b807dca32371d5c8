"""Echo-DND sampler: exactness with an oracle network for any step count, batching, MFCM once, determinism,
post-processing and the uncertainty map."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scripts import (
    Condition,
    EchoDND,
    EchoDNDConfig,
    EchoDNDSampler,
    SegmentationWrapper,
    build_processes,
    postprocess_mask,
    vote_entropy,
)
from torch import nn


def _disk(size: int = 32, radius: float = 9.0, b: int = 2) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disks = [(((yy - size / 2 - i) ** 2 + (xx - size / 2) ** 2) < (radius - 2 * i) ** 2).float() for i in range(b)]
    return torch.stack(disks)[:, None]


class OracleModel(nn.Module):
    """Stands in for a perfectly trained Echo-DND whose image *is* the mask: exact epsilon, confident x_0 logits."""

    def __init__(self, config: EchoDNDConfig) -> None:
        super().__init__()
        self.config = config
        self.gaussian, _ = build_processes(config)
        self.condition_calls = 0
        self.gnem = self._gnem if config.use_gaussian else None
        self.bnem = self._bnem if config.use_bernoulli else None

    def condition(self, image: torch.Tensor) -> Condition:
        self.condition_calls += 1
        return Condition(image, [])

    def scc(self, cond: Condition) -> torch.Tensor:
        return torch.zeros_like(cond.image)

    def _gnem(self, x: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        eps = self.gaussian.predict_eps(x, t, 2 * cond.image - 1)
        return torch.cat([eps, torch.zeros_like(eps)], dim=1)

    def _bnem(self, x: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        return (2 * cond.image - 1) * 20.0


@pytest.mark.parametrize("T, steps", [(50, 1), (50, 5), (50, 17), (50, 50), (1000, 1000)])
def test_oracle_network_gives_the_exact_mask_for_any_step_count(T: int, steps: int) -> None:
    model = OracleModel(EchoDNDConfig.tiny(32, num_train_timesteps=T))
    mask = _disk()
    out = EchoDNDSampler(num_steps=steps, ensemble=2)(model, mask, torch.Generator().manual_seed(0))
    assert out["gaussian"].shape == (2, 2, 32, 32) and out["bernoulli"].shape == (2, 2, 32, 32)
    assert torch.equal(out["gaussian"], mask.expand(-1, 2, -1, -1))
    assert torch.equal(out["bernoulli"], mask.expand(-1, 2, -1, -1))
    assert torch.equal(out["mask"], mask)
    assert torch.allclose(out["prob"], mask, atol=1e-6)
    # confident members that all agree: the soft map is ~0 (float32 x_0 within 5e-5 of +-1), the vote map 0
    assert torch.allclose(out["uncertainty"], torch.zeros_like(mask), atol=1e-3)
    votes = EchoDNDSampler(num_steps=steps, ensemble=2, uncertainty="votes")(model, mask, torch.Generator())
    assert torch.equal(votes["uncertainty"], torch.zeros_like(mask))
    assert model.condition_calls == 2


@pytest.mark.parametrize("ablation", ["gaussian_only", "bernoulli_only"])
def test_single_chain_sampling(ablation: str) -> None:
    model = OracleModel(EchoDNDConfig.tiny(32, num_train_timesteps=50).ablation(ablation))
    mask = _disk()
    out = EchoDNDSampler(num_steps=4, ensemble=1)(model, mask, torch.Generator().manual_seed(0))
    present = "gaussian" if ablation == "gaussian_only" else "bernoulli"
    assert present in out and ({"gaussian", "bernoulli"} - {present}).isdisjoint(out)
    assert torch.equal(out["mask"], mask) and torch.equal(out["prob"], mask)


@pytest.fixture(scope="module")
def tiny_model() -> EchoDND:
    torch.manual_seed(0)
    model = EchoDND(EchoDNDConfig.tiny(32)).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def test_ensemble_is_one_batched_call_per_step_and_mfcm_runs_once(tiny_model: EchoDND) -> None:
    calls = {"conditioner": [], "gnem": [], "bnem": []}
    hooks = [
        getattr(tiny_model, name).register_forward_hook(lambda m, args, out, n=name: calls[n].append(args[0].shape[0]))
        for name in calls
    ]
    try:
        image = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
        out = EchoDNDSampler(num_steps=3, ensemble=4)(tiny_model, image, torch.Generator().manual_seed(0))
    finally:
        for h in hooks:
            h.remove()
    assert calls["conditioner"] == [2]
    assert calls["gnem"] == [8, 8, 8] and calls["bnem"] == [8, 8, 8]
    assert out["gaussian"].shape == (2, 4, 32, 32) and out["bernoulli"].shape == (2, 4, 32, 32)
    for key in ("mask", "prob", "uncertainty", "scc"):
        assert out[key].shape == (2, 1, 32, 32), key
    assert set(out["mask"].unique().tolist()) <= {0.0, 1.0}
    assert torch.all((out["prob"] >= 0) & (out["prob"] <= 1))
    assert torch.all((out["uncertainty"] >= 0) & (out["uncertainty"] <= 1))


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_same_generator_same_samples(tiny_model: EchoDND, eta: float) -> None:
    image = torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    sampler = EchoDNDSampler(num_steps=3, ensemble=2, eta=eta)
    a = sampler(tiny_model, image, torch.Generator().manual_seed(5))
    b = sampler(tiny_model, image, torch.Generator().manual_seed(5))
    c = sampler(tiny_model, image, torch.Generator().manual_seed(6))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["bernoulli"], c["bernoulli"]) or not torch.equal(a["gaussian"], c["gaussian"])


def test_uncertainty_is_disagreement_between_members_and_chains() -> None:
    votes = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 0], [1, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.float32)
    h = vote_entropy(votes.T[None, :, :, None], dim=1).flatten()
    h75 = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert torch.allclose(h, torch.tensor([0.0, 1.0, h75, 0.0]), atol=1e-6)


def test_postprocess_keeps_largest_component_and_fills_holes() -> None:
    mask = np.zeros((20, 20), dtype=np.uint8)
    mask[2:12, 2:12] = 1
    mask[5:8, 5:8] = 0  # a hole in the big blob
    mask[15:18, 15:18] = 1  # a small separate blob
    expected = np.zeros_like(mask)
    expected[2:12, 2:12] = 1
    got = postprocess_mask(mask)
    assert got.dtype == mask.dtype and np.array_equal(got, expected)
    batch = torch.from_numpy(np.stack([mask, np.zeros_like(mask)])[:, None].astype(np.float32))
    out = postprocess_mask(batch)
    assert torch.is_tensor(out) and out.shape == batch.shape
    assert torch.equal(out[0, 0], torch.from_numpy(expected.astype(np.float32))) and out[1].sum() == 0
    diagonal = np.eye(6, dtype=np.uint8)  # 8-connected: one component
    assert np.array_equal(postprocess_mask(diagonal), diagonal)


def test_segmentation_wrapper_is_deterministic(tiny_model: EchoDND) -> None:
    wrapper = SegmentationWrapper(tiny_model, EchoDNDSampler(num_steps=2), seed=3)
    image = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    a, b = wrapper(image), wrapper(image)
    assert a.shape == (2, 1, 32, 32) and torch.equal(a, b)
    assert set(a.unique().tolist()) <= {0.0, 1.0}


def test_step_count_beyond_T_is_rejected(tiny_model: EchoDND) -> None:
    with pytest.raises(ValueError, match="num_steps"):
        EchoDNDSampler(num_steps=1001)(tiny_model, torch.zeros(1, 1, 32, 32))
