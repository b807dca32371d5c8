"""The committed demo weights load and do their job (the weights `make demo` ships with)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "echo_dnd"


def test_echo_dnd_demo_weights_segment_the_sample_images(tmp_path):
    sys.path.insert(0, str(BUNDLE))
    try:
        from scripts.infer import EchoDNDInference
        from scripts.sampler import EchoDNDSampler
        from scripts.train import load_model
    finally:
        sys.path.remove(str(BUNDLE))
    weights = BUNDLE / "models" / "model.pt"
    model = load_model(weights)
    assert model.config.image_size == 64
    EchoDNDInference(
        model, EchoDNDSampler(num_steps=10), BUNDLE / "sample_data", tmp_path, weights=weights, progress=False
    ).run()
    for label in sorted((BUNDLE / "sample_data" / "labelsTs").iterdir()):
        ref = sitk.ReadImage(str(label))
        pred = sitk.ReadImage(str(tmp_path / label.name))
        assert pred.GetSize() == ref.GetSize() and np.allclose(pred.GetSpacing(), ref.GetSpacing())
        p, r = sitk.GetArrayFromImage(pred) == 1, sitk.GetArrayFromImage(ref) == 1
        dice = 2 * (p & r).sum() / (p.sum() + r.sum())
        assert dice > 0.85, (label.name, dice)


def test_ddpm_demo_weights_repaint_an_echo(tmp_path):
    from echogains.augment.repaint import network_evaluations, repaint, repaint_mask
    from echogains.data.phantom import simulate_patient
    from echogains.ddpm import DEMO_WEIGHTS, load_ddpm

    net, diffusion, cfg = load_ddpm(DEMO_WEIGHTS)
    assert cfg.image_size == 64 and diffusion.num_timesteps == 4000
    view = simulate_patient(5, preset="lv-focused", seed=99, image_size=(64, 64)).views["4CH"]
    image = torch.from_numpy(view.image("ED").astype(np.float32) / 127.5 - 1.0)[None, None]
    known = torch.ones_like(image, dtype=torch.bool)
    known[..., 44:, :] = False  # the deep part of the sector is unknown
    out = repaint(net, diffusion, image, known, torch.Generator().manual_seed(0), sampler="fast", border=3)
    assert network_evaluations("fast") <= 100
    keep = repaint_mask(known, 3)  # the 3 px seam band inside the known region stays repainted
    assert torch.equal(out[keep], image[keep])  # known pixels outside the band bit-identical
    gen = out[~known]
    assert torch.isfinite(gen).all() and gen.min() >= -1 and gen.max() <= 1
    assert 0.02 < float(gen.std()) < 0.8  # neither flat nor saturated
    # the model has learned echo texture: neighbouring pixels of the repainted band are correlated as in an echo
    # (the phantom's own band: 0.87; the demo model: 0.94), which pixel-wise noise of the same mean and spread is not
    # (0.04): the oracle below shows the statistic tells the two apart
    band = out[..., 44:, :]
    noise = torch.randn(band.shape, generator=torch.Generator().manual_seed(1)) * band.std() + band.mean()
    assert neighbour_correlation(image[..., 44:, :]) > 0.5
    assert neighbour_correlation(noise.clamp(-1, 1)) < 0.2
    assert neighbour_correlation(band) > 0.5


def neighbour_correlation(x: torch.Tensor) -> float:
    """Pearson correlation of horizontally adjacent pixels (speckle and anatomy: high; independent noise: ~0)."""
    left, right = x[..., :, :-1].flatten(), x[..., :, 1:].flatten()
    return float(torch.corrcoef(torch.stack([left, right]))[0, 1])
