"""RePaint: jump schedule counts (golden values of Lugmayr et al.'s schedule), masks, known pixels, determinism,
batching, fast mode."""

from __future__ import annotations

import pytest
import torch

from echogains.augment.repaint import (
    FAST_SCHEDULE,
    PAPER_SCHEDULE,
    jump_schedule,
    network_evaluations,
    repaint,
    repaint_mask,
    schedule_counts,
)
from echogains.ddpm.diffusion import GaussianDiffusion
from echogains.ddpm.model import DDPMConfig, build_network
from echogains.utils import EchoDataError

SIZE = 16


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    """A small random network (MONAI's zero-initialised output conv re-drawn so both outputs vary)."""
    cfg = DDPMConfig(
        "t",
        image_size=SIZE,
        channels=(8, 16),
        num_res_blocks=1,
        attention_resolutions=(8,),
        num_heads=2,
        norm_num_groups=4,
        num_timesteps=1000,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_network(cfg)
        for p in model.parameters():
            p.data.normal_(0, 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def diffusion() -> GaussianDiffusion:
    return GaussianDiffusion.cosine(1000)


def _inputs(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 1, SIZE, SIZE, generator=g) * 2 - 1
    known = torch.ones(batch, 1, SIZE, SIZE, dtype=torch.bool)
    for i in range(batch):
        known[i, :, : 4 + i, :] = False  # unknown band at the top, different per image
        known[i, :, :, : 2 + i] = False
    image = torch.where(known, image, torch.full_like(image, -1.0))  # blacked-out pixels
    return image, known


# --- jump schedule ---------------------------------------------------------------------------------------------


def test_jump_schedule_counts_match_facts():
    assert schedule_counts(*PAPER_SCHEDULE) == schedule_counts(250, 10, 10)
    c = schedule_counts(250, 10, 10)
    assert (c.transitions, c.evaluations, c.undo) == (4570, 2410, 2160)
    assert schedule_counts(250, 10, 1).evaluations == 250 and schedule_counts(250, 10, 1).undo == 0
    assert schedule_counts(250, 1, 1).evaluations == 250
    assert schedule_counts(50, 5, 5).evaluations == 230
    assert network_evaluations("repaint") == 2410
    assert network_evaluations("fast") == schedule_counts(*FAST_SCHEDULE).evaluations <= 100


def test_jump_schedule_small_golden_sequence():
    assert jump_schedule(6, 2, 2) == [5, 4, 3, 2, 3, 4, 3, 2, 1, 0, 1, 2, 1, 0, -1]
    times = jump_schedule(250, 10, 10)
    assert times[0] == 249 and times[-1] == -1 and min(times[:-1]) == 0
    assert all(abs(b - a) == 1 for a, b in zip(times[:-1], times[1:]))


def test_bad_schedules_raise():
    with pytest.raises(EchoDataError):
        jump_schedule(0, 10, 10)
    with pytest.raises(EchoDataError, match="fast schedule"):
        network_evaluations("fast", (250, 10, 10))
    with pytest.raises(EchoDataError, match="unknown RePaint sampler"):
        network_evaluations("ddim")


# --- masks -----------------------------------------------------------------------------------------------------


def test_repaint_mask_dilates_the_unknown_region_by_a_disk():
    known = torch.ones(1, 1, 21, 21, dtype=torch.bool)
    known[0, 0, 10, 10] = False
    keep = repaint_mask(known, 3)[0, 0]
    yy, xx = torch.meshgrid(torch.arange(21), torch.arange(21), indexing="ij")
    dist2 = (yy - 10) ** 2 + (xx - 10) ** 2
    assert torch.equal(keep, dist2 > 9)
    assert torch.equal(repaint_mask(known, 0), known)


# --- sampler ---------------------------------------------------------------------------------------------------


def test_known_pixels_outside_the_seam_band_are_bit_identical_and_the_rest_is_generated(net, diffusion):
    image, known = _inputs(2)
    out = repaint(net, diffusion, image, known, torch.Generator().manual_seed(0), schedule=(8, 2, 2), border=2)
    assert out.shape == image.shape and out.dtype == image.dtype
    keep = repaint_mask(known, 2)
    band = known & ~keep
    assert band.any() and keep.any()
    assert torch.equal(out[keep], image[keep])  # known pixels outside the band: bit-identical
    assert (out[band] != image[band]).float().mean() > 0.9  # the seam band stays repainted (not pasted back)
    assert out.abs().max() <= 1.0
    assert (out[~known] != -1.0).float().mean() > 0.9


def test_repaint_is_deterministic(net, diffusion):
    image, known = _inputs(2)
    a = repaint(net, diffusion, image, known, torch.Generator().manual_seed(5), schedule=(8, 2, 2), border=2)
    b = repaint(net, diffusion, image, known, torch.Generator().manual_seed(5), schedule=(8, 2, 2), border=2)
    c = repaint(net, diffusion, image, known, torch.Generator().manual_seed(6), schedule=(8, 2, 2), border=2)
    assert torch.equal(a, b)
    assert not torch.equal(a[~known], c[~known])


def test_batched_equals_per_image_with_per_image_generators(net, diffusion):
    image, known = _inputs(3)
    seeds = (11, 12, 13)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    batched = repaint(net, diffusion, image, known, gens, schedule=(8, 2, 2), border=2)
    for i, s in enumerate(seeds):
        g = torch.Generator().manual_seed(s)
        single = repaint(net, diffusion, image[i : i + 1], known[i : i + 1], g, schedule=(8, 2, 2), border=2)
        torch.testing.assert_close(batched[i : i + 1], single, rtol=0, atol=1e-5)


class _CountingNet:
    """Cheap stand-in network that records each call's batch size."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return torch.cat([0.5 * x, torch.zeros_like(x)], dim=1)


@pytest.mark.parametrize("sampler", ["repaint", "fast"])
def test_one_network_call_per_step_for_the_whole_batch(sampler):
    counting = _CountingNet()
    image, known = _inputs(3)
    g = torch.Generator().manual_seed(0)
    out = repaint(counting, GaussianDiffusion.cosine(4000), image, known, g, sampler=sampler, border=1)
    assert len(counting.batches) == network_evaluations(sampler)  # 2410 full, <= 100 fast
    assert set(counting.batches) == {3}
    keep = repaint_mask(known, 1)
    assert torch.equal(out[keep], image[keep])


def test_nothing_unknown_returns_the_input_without_network_calls():
    counting = _CountingNet()
    image = torch.zeros(1, 1, SIZE, SIZE)
    all_known = torch.ones_like(image, dtype=torch.bool)
    out = repaint(counting, GaussianDiffusion.cosine(1000), image, all_known, torch.Generator())
    assert torch.equal(out, image) and counting.batches == []


def test_bad_inputs_raise(net, diffusion):
    image, known = _inputs(2)
    g = torch.Generator()
    with pytest.raises(EchoDataError, match="B, 1, H, W"):
        repaint(net, diffusion, image[:, 0], known, g)
    with pytest.raises(EchoDataError, match=r"\[-1, 1\]"):
        repaint(net, diffusion, image * 3, known, g)
    with pytest.raises(EchoDataError, match="known_mask"):
        repaint(net, diffusion, image, known[..., :-1], g)
    with pytest.raises(EchoDataError, match="exceeds"):
        repaint(net, GaussianDiffusion.cosine(100), image, known, g)  # t_T = 250 > 100
