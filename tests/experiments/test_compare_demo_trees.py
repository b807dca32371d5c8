"""``experiments/compare_demo_trees.py``: byte-identical, equal but for paths/timings/pids, or different."""

from __future__ import annotations

import json

from experiments.compare_demo_trees import compare


def test_classes_each_file(tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root in (a, b):
        (root / "sub").mkdir(parents=True)
        (root / "same.bin").write_bytes(b"\x00\x01")
    (a / "sub" / "run.json").write_text(json.dumps({"dataset": str(a / "x"), "seconds": 1.5, "dice": 0.9}, indent=1))
    (b / "sub" / "run.json").write_text(json.dumps({"dataset": str(b / "x"), "seconds": 4.2, "dice": 0.9}, indent=1))
    (a / "scores.json").write_text(json.dumps({"dataset": str(a), "dice": 0.91}, indent=1))
    (b / "scores.json").write_text(json.dumps({"dataset": str(b), "dice": 0.92}, indent=1))
    (a / "only_a.txt").write_text("x")
    result = compare(str(a), str(b), str(tmp_path / "out.json"), mask_before=f"{a}=OUT", mask_after=f"{b}=OUT")
    assert result["identical"] == 1
    assert result["equal_except_paths_timings_pids"] == ["sub/run.json"]
    assert result["different"] == ["scores.json"]  # a changed Dice is never masked
    assert result["only_before"] == ["only_a.txt"] and result["only_after"] == []
    assert json.loads((tmp_path / "out.json").read_text()) == result
