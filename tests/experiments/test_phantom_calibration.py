"""experiments/phantom_calibration.py without training: argument checks, the contrast check, the per-grade table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from echogains.data.phantom import PRESETS, make_phantom
from echogains.utils import EchoDataError
from experiments import phantom_calibration as pc


def test_preset_name_checks_and_registers_a_scaled_copy() -> None:
    assert pc.preset_name("hard", 1.0) == "hard"
    name = pc.preset_name("hard", 0.5)
    assert name == "hard-x0.5" and PRESETS[name].difficulty == PRESETS["hard"].difficulty.scaled(0.5)
    for kwargs, word in (({"preset": "nope", "scale": 1.0}, "--preset"), ({"preset": "hard", "scale": 0}, "--scale")):
        with pytest.raises(EchoDataError, match=word):
            pc.preset_name(**kwargs)
    with pytest.raises(EchoDataError, match="--scale: preset 'camus-like' has no causes"):
        pc.preset_name("camus-like", 0.5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cal") / "Dataset950_Cal"
    return make_phantom(root, 4, preset="hard", layout="nnunet", image_size=(48, 48), progress=False)


def test_contrast_check_per_grade(tiny: Path) -> None:
    records = json.loads((tiny / "cases.json").read_text())
    grades = {r["image_quality"] for r in records.values()}
    out = pc.contrast_check(tiny)
    assert set(out) == grades | {"all"} and out["all"]["n"] == len(records)
    assert all(v["cnr"] < 3.0 for v in out.values())


def test_per_grade_from_the_case_metrics(tiny: Path, tmp_path: Path) -> None:
    records = json.loads((tiny / "cases.json").read_text())
    cases = sorted(records)
    with (tmp_path / "metrics_per_case.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case_id", "LV_dice", "LV_hd_mm", "LV_failure"])
        for i, c in enumerate(cases):
            w.writerow([c, 0.9 + 0.01 * (i % 3), 5.0, "false"])
    out = pc.per_grade(tmp_path, tiny)
    assert out["all"]["n"] == len(cases) and out["all"]["hd_mm_mean"] == 5.0
    for grade, stats in out.items():
        if grade != "all":
            members = [i for i, c in enumerate(cases) if records[c]["image_quality"] == grade]
            assert stats["n"] == len(members)
            assert stats["dice_mean"] == pytest.approx(sum(0.9 + 0.01 * (i % 3) for i in members) / len(members))
