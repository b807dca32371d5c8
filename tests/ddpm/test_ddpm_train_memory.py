"""DDPM training memory options (tiny networks): activation checkpointing, gradient accumulation, bf16 / fp16.

- checkpointing gives the gradients of the plain network (fp32, 1e-6);
- ``accumulate`` N micro-batches of B give the gradient of one batch of N x B (same samples, same noise);
- bf16 autocast gives the fp32 loss within 0.1 % on a fixed batch (and is really used; the loss sees float32);
- a run killed inside an accumulation cycle resumes exactly (fp32, and fp16 with its gradient scaler's state).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from echogains.ddpm.model import build_diffusion, build_network, get_config
from echogains.ddpm.train import DDPMTrainer, TrainingImages, TrainSettings, train_ddpm
from echogains.utils import EchoDataError
from tests.faults import fail_on_call

CFG = get_config("micro", num_timesteps=1000)
#: bf16 autocast vs fp32 on the fixed batch of test_bf16_loss_is_close_to_fp32: the loss's relative difference may be
#: at most this (1e-5 measured on the development machine; the hybrid loss in bf16 arithmetic throughout: 1e-4)
BF16_LOSS_RTOL = 1e-3


def _images(n: int = 6, size: int = 32) -> TrainingImages:
    rng = np.random.default_rng(0)
    return TrainingImages(
        rng.integers(0, 256, (n, size, size), dtype=np.uint8), [None] * n, [f"i{k}" for k in range(n)]
    )


def _settings(**kw) -> TrainSettings:
    base = dict(
        steps=1,
        batch_size=4,
        lr=1e-4,
        ema=0.99,
        seed=3,
        max_narrowing_deg=0.0,
        sample_every=0,
        checkpoint_every=1,
        n_samples=1,
        sample_steps=2,
        precision="fp32",
        checkpointing=False,
    )
    return TrainSettings(**{**base, **kw})


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


def _perturb(net: torch.nn.Module) -> torch.nn.Module:
    """Random weights everywhere (MONAI zero-initialises the output convolution: the output would be exactly 0)."""
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return net


def _fixed_batch(b: int = 3):
    gen = torch.Generator().manual_seed(5)
    x0 = torch.rand(b, 1, CFG.image_size, CFG.image_size, generator=gen) * 2 - 1
    t = torch.randint(0, CFG.num_timesteps, (b,), generator=gen)
    return x0, t, torch.randn(x0.shape, generator=gen)


def test_checkpointing_gives_the_same_gradients():
    diffusion = build_diffusion(CFG)
    x0, t, noise = _fixed_batch()
    grads, losses = [], []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        net = _perturb(build_network(CFG, checkpointing=checkpointing))
        loss = diffusion.training_losses(net, x0, t, noise, vlb_weight=CFG.vlb_weight)["loss"].mean()
        loss.backward()
        grads.append(_grads(net))
        losses.append(float(loss.detach()))
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == len(list(net.parameters()))
    assert all(float(g.abs().max()) > 0 for g in grads[0].values())  # every parameter gets a gradient
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=0, atol=1e-6, msg=name)
    # the option really recomputes: a checkpointed forward keeps fewer tensors for the backward pass
    saved = []
    for checkpointing in (False, True):
        net = build_network(CFG, checkpointing=checkpointing)
        count = [0]
        with torch.autograd.graph.saved_tensors_hooks(
            lambda x, count=count: count.__setitem__(0, count[0] + 1) or x, lambda x: x
        ):
            net(x0, t)
        saved.append(count[0])
    assert saved[1] < saved[0] / 2, saved


def test_accumulation_equals_one_big_batch():
    images = _images()
    grads, losses = [], []
    for batch_size, accumulate in ((4, 1), (2, 2), (1, 4)):
        trainer = DDPMTrainer(
            images, "unused", CFG, _settings(batch_size=batch_size, accumulate=accumulate), device="cpu", progress=False
        )
        _perturb(trainer.model)
        losses.append(trainer.train_step(0))
        grads.append(_grads(trainer.model))
    # float32 sums in another order: differences of ~1e-6 of the largest gradient (the attention key biases, whose
    # true gradient is 0 since softmax ignores them, are pure rounding)
    scale = max(float(g.abs().max()) for g in grads[0].values())
    for other, loss in zip(grads[1:], losses[1:]):
        assert loss == pytest.approx(losses[0], rel=1e-6)
        assert other.keys() == grads[0].keys()
        for name in grads[0]:
            torch.testing.assert_close(other[name], grads[0][name], rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_bf16_loss_is_close_to_fp32():
    diffusion = build_diffusion(CFG)
    x0, t, noise = _fixed_batch(4)
    torch.manual_seed(0)
    net = _perturb(build_network(CFG))
    loss32 = float(diffusion.training_losses(net, x0, t, noise, vlb_weight=CFG.vlb_weight)["loss"].mean().detach())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x0, t)
        loss16 = float(diffusion.training_losses(net, x0, t, noise, vlb_weight=CFG.vlb_weight)["loss"].mean().detach())
    assert out.dtype == torch.float32  # the network hands the loss float32 outputs
    assert loss16 != loss32  # bf16 arithmetic did run
    assert abs(loss16 - loss32) <= BF16_LOSS_RTOL * abs(loss32), (loss16, loss32)
    # the trainer's bf16 step: the same loss as the autocast forward above gives, up to the same tolerance
    trainer = DDPMTrainer(_images(), "unused", CFG, _settings(precision="bf16"), device="cpu", progress=False)
    ref = DDPMTrainer(_images(), "unused", CFG, _settings(precision="fp32"), device="cpu", progress=False)
    _perturb(trainer.model), _perturb(ref.model)
    a, b = trainer.train_step(0), ref.train_step(0)
    assert a != b and abs(a - b) <= BF16_LOSS_RTOL * abs(b)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay fp32


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_kill_inside_an_accumulation_cycle_resumes_exactly(tmp_path, monkeypatch, precision):
    import cv2

    folder = tmp_path / "pngs"
    folder.mkdir()
    for k, img in enumerate(_images(4).images):
        cv2.imwrite(str(folder / f"img{k}.png"), img)
    kw = dict(
        config=CFG,
        steps=3,
        batch_size=2,
        accumulate=2,
        precision=precision,
        checkpointing=True,
        seed=1,
        checkpoint_every=1,
        sample_every=0,
        max_narrowing_deg=0.0,
        progress=False,
    )
    train_ddpm(folder, tmp_path / "a", **kw)

    diffusion_cls = type(build_diffusion(CFG))
    real = diffusion_cls.training_losses
    fail_on_call(
        monkeypatch, diffusion_cls, "training_losses", 6
    )  # the second micro-batch of step 3: killed inside the cycle
    with pytest.raises(RuntimeError, match="killed"):
        train_ddpm(folder, tmp_path / "b", **kw)
    assert _state(tmp_path / "b" / "checkpoint.pt")["step"] == 2
    monkeypatch.setattr(diffusion_cls, "training_losses", real)
    train_ddpm(folder, tmp_path / "b", **kw)
    a, b = _state(tmp_path / "a" / "checkpoint.pt"), _state(tmp_path / "b" / "checkpoint.pt")
    assert a["step"] == b["step"] == 3
    assert a["scaler"] == b["scaler"]
    if precision == "fp16":  # the scaler's state moved with the steps, so it has to be checkpointed
        assert a["scaler"]["_growth_tracker"] == 3
    for key in ("model", "ema"):
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(pa["exp_avg"], pb["exp_avg"]) and torch.equal(pa["exp_avg_sq"], pb["exp_avg_sq"])


def test_bad_memory_options_are_refused(tmp_path):
    for kw, match in (
        ({"accumulate": 0}, "--accumulate"),
        ({"precision": "fp8"}, "--precision"),
        ({"checkpointing": "maybe"}, "--checkpointing"),
    ):
        with pytest.raises(EchoDataError, match=match):
            train_ddpm(tmp_path / "missing", tmp_path / "out", config=CFG, **kw)
    assert not (tmp_path / "out").exists()
