"""experiments/analyze_phantom.py reuses a patient's analyze output only when it was written with the same settings."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from experiments.analyze_phantom import _cached_run_matches


def _write(out: Path, model: dict, detect_on: str | None) -> Path:
    out.mkdir(parents=True)
    settings = {"model": model} | ({} if detect_on is None else {"detect_on": detect_on})
    (out / "results.json").write_text(json.dumps({"settings": settings, "results": []}))
    return out


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**({"detect_on": "area", "ensemble": 4, "num_steps": 5, "tta": True} | kw))


ECHO_DND = {"model": "echo_dnd", "ensemble": 4, "num_steps": 5, "seed": 0}
NNUNET = {"model": "nnunet", "tta": True, "fold": 0}


@pytest.mark.parametrize(
    "model, detect_on, args, expected",
    [
        (ECHO_DND, "area", _args(), True),
        (ECHO_DND, "area", _args(tta=False), True),  # TTA is nnU-Net's: it does not matter for Echo-DND
        (ECHO_DND, "volume", _args(), False),  # the interval depends on the frames the run detected
        (ECHO_DND, None, _args(), False),  # written before detect_on existed: the volume curve
        (ECHO_DND, None, _args(detect_on="volume"), True),
        (ECHO_DND, "area", _args(ensemble=2), False),
        (ECHO_DND, "area", _args(num_steps=10), False),
        (NNUNET, "area", _args(ensemble=2), True),
        (NNUNET, "area", _args(tta=False), False),
    ],
)
def test_cached_run_reused_only_with_the_same_settings(tmp_path, model, detect_on, args, expected):
    assert _cached_run_matches(_write(tmp_path / "p", model, detect_on), args) is expected
