"""Helpers shared by the experiment scripts: tables, timing, the machine description, results folders."""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from echogains.utils import (
    EchoDataError,
    atomic_write_json,
    atomic_write_text,
    get_logger,
    progress,
    read_json,
    to_jsonable,
)

log = get_logger("experiments")

REPO = Path(__file__).resolve().parents[1]

__all__ = [
    "REPO",
    "fmt",
    "markdown_table",
    "machine",
    "Stopwatch",
    "StepTimer",
    "write_results",
    "positive_int",
    "check_resume",
    "spawn_context",
    "run_arms",
    "bootstrap_mean_ci",
    "describe_failure",
]


def describe_failure(exc: BaseException) -> str:
    """One arm's failure in words; a worker process that died (``BrokenProcessPool``) is said to be so, with what
    usually killed it (the kernel's out-of-memory killer, signal 9) and what to try."""
    if isinstance(exc, BrokenProcessPool):
        return (
            "BrokenProcessPool: an arm's worker process died abruptly, most often killed by signal 9: probably "
            "out of memory; try --jobs 1, --accumulate or a smaller --batch_size"
        )
    return f"{type(exc).__name__}: {exc}"


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: floats rounded, NaN/None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | Mapping[str, str], digits: int | Mapping[str, int] = 3
) -> str:
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
    import torch  # here, not at the top: the arm workers pin OMP_NUM_THREADS before torch loads

    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": commit,
    }


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


class StepTimer:
    """The timed steps of one arm, kept across a kill: ``step("train", fn)`` runs ``fn`` and returns its value.

    Each step's wall seconds go into ``timings`` and are written to ``path`` (``timings.json``) after the step, so a
    resumed run starts from the timings of the steps an earlier run finished.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.timings: dict[str, float] = dict(read_json(path)) if path.is_file() else {}

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        value = fn()
        self.timings[name] = round(time.perf_counter() - t0, 2)
        atomic_write_json(self.path, self.timings)
        return value


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
            raise EchoDataError(
                file,
                f"working folder holds a run with other settings (differs in {changed}); "
                "use another --work or --overwrite",
            )
        return
    if overwrite and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_json(file, mine)


def spawn_context() -> Any:
    """The ``spawn`` multiprocessing context for arm workers (fresh interpreters: one torch thread each, no fork)."""
    return multiprocessing.get_context("spawn")


def run_arms(
    fn: Callable[..., dict[str, Any]],
    tasks: Mapping[Hashable, Sequence[Any]],
    jobs: int,
    name: Callable[[Any], str],
    logger: logging.Logger,
) -> tuple[dict[Any, dict[str, Any]], dict[str, str]]:
    """``fn(*args)`` for every ``{key: args}`` of ``tasks`` in ``jobs`` spawned worker processes, in that order.

    Every arm runs even when others fail: returns ``({key: record}, {name(key): failure in words})``, the caller
    reports both and then fails. A progress bar counts the finished arms; each arm's end is logged on ``logger``.
    """
    records: dict[Any, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=spawn_context()) as pool:
        futures = {pool.submit(fn, *args): key for key, args in tasks.items()}
        for future in progress(as_completed(futures), total=len(futures), desc="arms"):
            key = futures[future]
            try:
                records[key] = future.result()
                logger.info("arm %s done: %s", name(key), records[key]["timings"])
            except Exception as exc:  # noqa: BLE001 - report every arm's failure, then fail
                errors[name(key)] = describe_failure(exc)
                logger.error("arm %s failed: %s", name(key), exc)
    return records, errors


def bootstrap_mean_ci(
    values: Any, groups: Sequence[Any], n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``values`` and its two-stage percentile bootstrap interval over training seeds and patients.

    ``values`` is an array ``[n_seeds, n_cases]`` (one row per training seed, one column per test image, e.g. LV
    Dice, or the paired difference of two arms image by image); ``groups`` gives each image's patient. Each bootstrap
    draw resamples the seeds with replacement and, independently, the patients with replacement (all images of a
    drawn patient go along: images of one patient are not independent), and takes the mean of the drawn cells. The
    interval thus holds both the run-to-run spread of training and the sampling spread of the test set.

    Returns:
        ``(mean, lower, upper)``; NaN cells (undefined metrics) are left out of every mean.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != len(groups) or data.size == 0:
        raise ValueError(f"values must be [n_seeds, n_cases] with n_cases = {len(groups)}, got {data.shape}")
    labels, index = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    n_seeds, n_groups = data.shape[0], len(labels)
    finite = np.isfinite(data)
    sums = np.zeros((n_seeds, n_groups))
    counts = np.zeros((n_seeds, n_groups))
    for s in range(n_seeds):  # per seed and patient: sum and number of finite cells
        np.add.at(sums[s], index[finite[s]], data[s, finite[s]])
        np.add.at(counts[s], index[finite[s]], 1.0)
    rng = np.random.default_rng(seed)
    seed_draws = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    group_draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    seed_sums, seed_counts = sums[seed_draws].sum(axis=1), counts[seed_draws].sum(axis=1)  # [n_boot, n_groups]
    total = np.take_along_axis(seed_sums, group_draws, axis=1).sum(axis=1)
    number = np.take_along_axis(seed_counts, group_draws, axis=1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = total / number
    means = means[np.isfinite(means)]
    mean = float(sums.sum() / counts.sum()) if counts.sum() else float("nan")
    if not means.size:
        return mean, float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    lower, upper = np.percentile(means, [tail, 100.0 - tail])
    return mean, float(lower), float(upper)
