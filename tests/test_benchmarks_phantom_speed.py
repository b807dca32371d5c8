"""``benchmarks/phantom_speed.py`` (issue 18) at its smallest size, and the committed result it backs."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "phantom_speed.py"
RESULT = ROOT / "benchmarks" / "results" / "phantom_speed.json"


def _module():
    spec = importlib.util.spec_from_file_location("phantom_speed_script", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_smallest_run_writes_every_cell(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    assert _module().main(["--patients", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for cells in result["rates"].values():
        assert set(cells) == {"camus-like", "hard", "hard/Good", "hard/Medium", "hard/Poor"}
        assert all(c["frames"] == 4 and c["frames_per_s"] > 0 for c in cells.values())  # ED + ES of both views
    for cells in result["make_phantom"].values():  # the command end to end, files written
        assert set(cells) == {"camus-like", "hard"} and all(c["frames"] == 4 for c in cells.values())
    assert _module().main(["--patients", "0", "--out", str(out)]) == 2


def test_committed_result_keeps_the_hard_preset_fast() -> None:
    """The recorded rate (one core, shared machine): the hard preset within a factor 2 of camus-like."""
    result = json.loads(RESULT.read_text())
    assert result["patients_per_cell"] >= 10
    assert all(0.5 <= ratio for ratio in result["ratios"].values())
    assert result["machine"]["cpus"] == 2 and result["machine"]["omp_num_threads"] is None  # the 2-core figure
    assert all(c["hard"]["frames_per_s"] > 0 for c in result["make_phantom"].values())
