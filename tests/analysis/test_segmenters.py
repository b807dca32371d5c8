"""The model adapters of ``analyze``: no static import of the bundle or the nnU-Net plugin; bundle discovery."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from echogains.analysis import segmenters
from echogains.utils import EchoDataError

REPO = Path(__file__).resolve().parents[2]


def test_importing_analysis_loads_neither_the_bundle_nor_the_plugin() -> None:
    code = (
        "import sys, echogains.analysis, echogains.cli; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('nnunet_ext', 'scripts', 'bundles') "
        "or m.startswith('_echogains_bundle_')]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bundle_root_from_environment_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(segmenters.BUNDLE_VARIABLE, str(tmp_path))
    assert segmenters.default_bundle_root() == tmp_path
    with pytest.raises(EchoDataError, match="not an Echo-DND bundle"):
        segmenters.EchoDNDSegmenter(progress=False)
    monkeypatch.delenv(segmenters.BUNDLE_VARIABLE)
    assert segmenters.default_bundle_root() == REPO / "bundles" / "echo_dnd"
    module = segmenters.load_bundle_scripts(REPO / "bundles" / "echo_dnd")
    assert module.__name__.startswith("_echogains_bundle_") and hasattr(module, "EchoDNDSampler")
    assert segmenters.load_bundle_scripts(REPO / "bundles" / "echo_dnd") is module  # loaded once
    with pytest.raises(EchoDataError, match="model weights not found"):
        segmenters.EchoDNDSegmenter(model_path=tmp_path / "missing.pt", progress=False)


def test_nnunet_model_folder_checked(tmp_path: Path) -> None:
    with pytest.raises(EchoDataError, match="plans.json"):
        segmenters.NnUNetSegmenter(tmp_path, progress=False)


def test_every_frame_gets_the_draws_it_would_get_alone() -> None:
    """Shared noise: a frame's masks do not depend on its place in the loop or the batch (the old per-loop generator
    gave every frame other draws, which jittered the volume curve); members compared, since they follow the draws."""
    import numpy as np
    import SimpleITK as sitk

    images = sorted((REPO / "bundles" / "echo_dnd" / "sample_data" / "imagesTs").glob("*.nii.gz"))[:2]
    a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(p))).squeeze().astype(np.float32) for p in images)
    frames = np.stack([a, b, a, b, a])  # batch 2: frame 0 and 2 at batch position 0, frame 4 alone in its batch
    model = segmenters.EchoDNDSegmenter(num_steps=2, ensemble=2, batch_size=2, seed=3, progress=False)
    loop = model.segment(frames, None)
    alone = model.segment(frames[:1], None)
    assert loop.member_mask is not None and alone.member_mask is not None and loop.n_members == 4
    for member in range(loop.n_members):
        reference = alone.member_mask(member, 0)
        for frame in (0, 2, 4):
            assert np.array_equal(loop.member_mask(member, frame), reference), (member, frame)
    assert np.array_equal(loop.masks[0], alone.masks[0]) and np.array_equal(loop.masks[2], loop.masks[4])
    other = segmenters.EchoDNDSegmenter(num_steps=2, ensemble=2, batch_size=2, seed=4, progress=False)
    moved = other.segment(frames[:1], None)  # another seed: other draws, other members (the test can see draws)
    assert moved.member_mask is not None
    assert any(not np.array_equal(moved.member_mask(m, 0), alone.member_mask(m, 0)) for m in range(loop.n_members))
