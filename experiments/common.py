"""Helpers shared by the experiment scripts: tables, timing, the machine description, results folders."""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from echogains.utils import EchoDataError, atomic_write_json, atomic_write_text, get_logger, read_json, to_jsonable

log = get_logger("experiments")

REPO = Path(__file__).resolve().parents[1]

__all__ = ["REPO", "fmt", "markdown_table", "machine", "Stopwatch", "write_results", "positive_int", "check_resume",
           "spawn_context"]


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats rounded, NaN/None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | Mapping[str, str],
                   digits: int | Mapping[str, int] = 3) -> str:
    """A GitHub markdown table of ``rows``; ``columns`` lists keys, or maps keys to header titles."""
    titles = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
    keys = list(titles)

    def cell(row: Mapping[str, Any], key: str) -> str:
        d = digits.get(key, 3) if isinstance(digits, Mapping) else digits
        return fmt(row.get(key), d).replace("|", "\\|")

    lines = ["| " + " | ".join(titles[k] for k in keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
    lines += ["| " + " | ".join(cell(r, k) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def machine() -> dict[str, Any]:
    """What ran the experiment: CPU count, torch threads, Python, git commit."""
    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.is_available(), "python": sys.version.split()[0], "platform": platform.platform(),
            "git_commit": commit}


class Stopwatch:
    """Named wall-clock stages: ``with sw("train"): ...``; ``sw.timings`` in seconds."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.timings: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(self.timings.get(name, 0.0) + time.perf_counter() - t0, 2)

    def total(self) -> float:
        return round(time.perf_counter() - self.start, 2)


def write_results(out: Path, name: str, table_md: str, results: Mapping[str, Any], command: str) -> Path:
    """Write ``out/{name}.md`` (title, command, table) and ``out/{name}.json``; returns the markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"{name}.md"
    atomic_write_text(md, f"# {name}\n\nCommand: `{command}`\n\n{table_md}")
    atomic_write_json(out / f"{name}.json", {**results, "command": command})
    return md


def positive_int(value: Any, name: str) -> int:
    """``value`` as an option ``--name`` that must be an integer >= 1 (booleans refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EchoDataError(None, f"--{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_resume(work: Path, settings: Mapping[str, Any], overwrite: bool) -> None:
    """Make ``work`` hold a run of ``settings``: refuse one made with other settings, unless ``overwrite`` clears it.

    The settings are kept in ``work/settings.json`` (as JSON reads them back, so tuples compare as lists).
    """
    file = work / "settings.json"
    mine = json.loads(json.dumps(to_jsonable(dict(settings))))
    if file.is_file() and not overwrite:
        theirs = read_json(file)
        if theirs != mine:
            changed = sorted(k for k in mine if mine.get(k) != theirs.get(k))
            raise EchoDataError(file, f"working folder holds a run with other settings (differs in {changed}); "
                                      "use another --work or --overwrite")
        return
    if overwrite and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(file, mine)


def spawn_context() -> Any:
    """The ``spawn`` multiprocessing context for arm workers (fresh interpreters: one torch thread each, no fork)."""
    import multiprocessing

    return multiprocessing.get_context("spawn")
