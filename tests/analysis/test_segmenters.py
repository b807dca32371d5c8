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
