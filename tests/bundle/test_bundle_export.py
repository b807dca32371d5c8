"""One Echo-DND denoising step exported by ``torch.jit.trace`` (scripts/export.py), the sampling loop in Python.

The exported networks give the eager outputs within 1e-4 (demo weights, and the paper configuration with random
weights), and a 10-step sample with the exported step equals the eager one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from scripts import EchoDND, EchoDNDConfig, EchoDNDSampler
from scripts.export import CONFIG_ENTRY, ExportedEchoDND, load_exported, trace_step
from scripts.train import load_model

from echogains.utils import EchoDataError

TOL = 1e-4
BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "echo_dnd"


def randomised(model: EchoDND, seed: int = 0) -> EchoDND:
    """Random weights everywhere: MONAI zero-initialises the U-Nets' output layers (and the fusions' projections), so a
    freshly built network outputs zeros whatever its input, and a comparison of such outputs would prove nothing."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    return model.eval()


def _compare(model: EchoDND, exported: ExportedEchoDND, batch: int, seed: int) -> float:
    """Largest |exported - eager| over the condition, SCC and both chains' evaluations at several timesteps."""
    gen = torch.Generator().manual_seed(seed)
    size, worst = model.config.image_size, 0.0
    image = torch.rand(batch, 1, size, size, generator=gen)
    with torch.no_grad():
        cond, cond_x = model.condition(image), exported.condition(image)
        for a, b in zip(cond.features, cond_x.features, strict=True):
            worst = max(worst, float((a - b).abs().max()))
        worst = max(worst, float((model.scc(cond) - exported.scc(cond_x)).abs().max()))
        for t in (0, model.config.num_train_timesteps // 2, model.config.num_train_timesteps - 1):
            ts = torch.full((batch,), t, dtype=torch.long)
            x_g = torch.randn(batch, 1, size, size, generator=gen)
            x_b = (torch.rand(batch, 1, size, size, generator=gen) < 0.5).float()
            eager = (model.gnem(x_g, ts, cond), model.bnem(x_b, ts, cond))
            step = exported(x_g, x_b, ts, cond_x)
            for a, b in zip(eager, step, strict=True):
                assert a.shape == b.shape
                worst = max(worst, float((a - b).abs().max()))
            worst = max(worst, float((eager[0] - exported.gnem(x_g, ts, cond_x)).abs().max()))
            worst = max(worst, float((eager[1] - exported.bnem(x_b, ts, cond_x)).abs().max()))
    return worst


def test_demo_step_exports_and_samples_like_the_eager_model(tmp_path) -> None:
    """The bundle's command (``run export``, in-process) exports the demo weights' step."""
    from monai.bundle import run

    run(
        "export",
        config_file=str(BUNDLE / "configs" / "inference.json"),
        logging_file=False,
        bundle_root=str(BUNDLE),
        export_path=str(tmp_path / "step.ts"),
        device="cpu",
    )
    model = load_model(BUNDLE / "models" / "model.pt")
    exported = load_exported(tmp_path / "step.ts")
    assert exported.config == model.config and exported.ablation == model.ablation
    # other batch sizes than the traced one (the sampler's batch is images x ensemble)
    assert _compare(model, exported, batch=3, seed=1) <= TOL
    assert _compare(model, exported, batch=1, seed=2) <= TOL
    # 10 steps of both chains, 3 samples per chain, STAPLE: the Python loop around the exported step
    image = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    sampler = EchoDNDSampler(num_steps=10)
    eager = sampler(model, image, torch.Generator().manual_seed(0))
    out = sampler(exported, image, torch.Generator().manual_seed(0))
    for key in ("gaussian", "bernoulli", "mask"):
        assert torch.equal(eager[key], out[key]), key
    for key in ("prob", "uncertainty", "scc"):
        assert float((eager[key] - out[key]).abs().max()) <= TOL, key
    assert float(eager["mask"].sum()) > 0  # a real segmentation, not two empty masks


def test_one_chain_model_exports_its_chain_only() -> None:
    torch.manual_seed(0)
    model = randomised(EchoDND(EchoDNDConfig.tiny(32).ablation("bernoulli_only")))
    exported = ExportedEchoDND(trace_step(model), model.config)
    assert _bernoulli_only_close(model, exported)
    assert not hasattr(exported.traced, "gnem")


def _bernoulli_only_close(model: EchoDND, exported: ExportedEchoDND) -> bool:
    image = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    x = (torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    t = torch.tensor([10, 900])
    with torch.no_grad():
        cond, cond_x = model.condition(image), exported.condition(image)
        (step,) = exported(x, x, t, cond_x)
        eager = model.bnem(x, t, cond)
        assert float(eager.std()) > 1e-2  # outputs that depend on the input (see randomised)
        return float((eager - step).abs().max()) <= TOL


def test_bad_exported_files_are_named(tmp_path) -> None:
    with pytest.raises(EchoDataError, match="not found"):
        load_exported(tmp_path / "none.ts")
    (tmp_path / "junk.ts").write_bytes(b"not torchscript")
    with pytest.raises(EchoDataError, match="cannot read the exported step"):
        load_exported(tmp_path / "junk.ts")
    torch.manual_seed(0)
    model = EchoDND(EchoDNDConfig.tiny(32)).eval()
    traced = trace_step(model)
    torch.jit.save(traced, str(tmp_path / "bare.ts"))
    with pytest.raises(EchoDataError, match="no network_config.json inside"):
        load_exported(tmp_path / "bare.ts")
    torch.jit.save(traced, str(tmp_path / "ok.ts"), _extra_files={CONFIG_ENTRY: json.dumps(model.config.to_dict())})
    exported = load_exported(tmp_path / "ok.ts")
    with pytest.raises(EchoDataError, match="takes 32 px"):
        exported.condition(torch.rand(1, 1, 64, 64))


@pytest.mark.slow
def test_paper_configuration_step_exports_within_tolerance() -> None:
    """The paper network (C = 128, 256 px, 242.5 M parameters) with random weights: one batch-1 comparison."""
    torch.manual_seed(0)
    model = randomised(EchoDND(EchoDNDConfig.paper()))
    exported = ExportedEchoDND(trace_step(model, batch_size=1), model.config)
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 1, 256, 256, generator=gen)
    x_g = torch.randn(1, 1, 256, 256, generator=gen)
    x_b = (torch.rand(1, 1, 256, 256, generator=gen) < 0.5).float()
    t = torch.tensor([700])
    with torch.no_grad():
        cond, cond_x = model.condition(image), exported.condition(image)
        worst = max(float((a - b).abs().max()) for a, b in zip(cond.features, cond_x.features, strict=True))
        eager = (model.gnem(x_g, t, cond), model.bnem(x_b, t, cond))
        step = exported(x_g, x_b, t, cond_x)
    assert min(float(e.std()) for e in eager) > 1e-2  # outputs that depend on the input (see randomised)
    worst = max(worst, *(float((a - b).abs().max()) for a, b in zip(eager, step, strict=True)))
    assert worst <= TOL
