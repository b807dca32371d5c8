"""Compare two ``make demo`` output folders (e.g. before and after a refactoring) file by file.

Every file is classed as byte-identical, equal once absolute paths, timings and process ids are masked
(``--mask_paths OLD=NEW`` pairs map each tree's own folders to one name), or different; the result is a JSON file.

    python -m experiments.compare_demo_trees BEFORE AFTER OUT.json --mask_paths /tmp/a=OUT,/tmp/repo_a=REPO ...
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import fire

#: Values that differ from run to run by nature: timings, throughput, process ids and hosts in lock files.
VOLATILE = re.compile(
    r"(seconds|wall|elapsed|duration|frames_per_second|<td>\d+\.\d</td>|^pid \d+ on \S+|"
    r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d|it/s|s/it)",
    re.IGNORECASE,
)


#: Files that hold nothing but timings.
TIMING_FILES = ("demo_timings.json",)


def _masked(text: str, masks: dict[str, str]) -> list[str]:
    for old, new in sorted(masks.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(old, new)
    return [line for line in text.splitlines() if not VOLATILE.search(line)]


def _mask_map(spec: str | tuple | list) -> dict[str, str]:
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    return dict(item.split("=", 1) for item in items if item)


def compare(before: str, after: str, out: str, mask_before: str = "", mask_after: str = "") -> dict:
    """Write and return the comparison of two demo output trees.

    Args:
        before: first tree.
        after: second tree.
        out: JSON result file.
        mask_before: ``PATH=NAME,...``: absolute paths of the first run replaced by names.
        mask_after: the same for the second run.
    """
    a, b = Path(before), Path(after)
    masks = (_mask_map(mask_before), _mask_map(mask_after))
    files_a = {p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()}
    identical, volatile_only, different = [], [], []
    for name in sorted(files_a & files_b):
        x, y = (a / name).read_bytes(), (b / name).read_bytes()
        if x == y:
            identical.append(name)
        elif Path(name).name in TIMING_FILES:
            volatile_only.append(name)
        elif _masked(x.decode(errors="replace"), masks[0]) == _masked(y.decode(errors="replace"), masks[1]):
            volatile_only.append(name)
        else:
            different.append(name)
    result = {
        "before": str(a),
        "after": str(b),
        "files": len(files_a | files_b),
        "only_before": sorted(files_a - files_b),
        "only_after": sorted(files_b - files_a),
        "identical": len(identical),
        "equal_except_paths_timings_pids": volatile_only,
        "different": different,
    }
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    fire.Fire(compare)
