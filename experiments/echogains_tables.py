"""EchoGAINS Tables 3 and 4 on the synthetic phantom (or on real nnU-Net raw datasets).

``python -m experiments.echogains_tables --out experiments/results/echogains_quick --quick``

For each *direction* (train set -> test set; on the phantom ``lv-focused -> camus-like``, the paper's
HUNT4 -> CAMUS, and the reverse ``camus-like -> lv-focused``) and each *arm* (no augmentation, one of the
EchoGAINS sector transforms with RePaint, the combination with RePaint, the combination without RePaint) the
chain is the one a user runs:

1. ``expand_dataset`` of the training dataset (the ``none`` arm uses the training dataset as it is);
2. ``nnUNetv2_plan_and_preprocess``, ``nnUNetv2_train`` fold 0, ``nnUNetv2_predict`` on every image of the test
   dataset (through :class:`echogains.nnunet_runner.NnUNet`);
3. :func:`echogains.evaluation.evaluate.evaluate` against the test dataset's labels and analytic EF reference.

Each arm is trained once per nnU-Net training seed (``--train_seeds``; seeded trainers, so that the arms of one seed
differ only by their data). Table 3: LV Dice and HD (mean +- sd over seeds, and a two-stage bootstrap 95 % interval
over seeds and test patients), the paired difference to no augmentation with its interval and whether it is
resolved (the interval excludes 0), MYO Dice, EF agreement (bias, limits of agreement) per arm.
Table 4: LV Dice/HD by depth and sector-angle subset, from the evaluator's per-case CSV with this direction's
cut-offs (the paper's 150 mm / 70 deg where the test set spans them; the lv-focused phantom never reaches them, so
its direction uses cut-offs inside its own ranges, see :data:`PHANTOM_CUTOFFS`).

Bulky working data (phantoms, expanded datasets, nnU-Net folders, predictions, evaluation folders) go to
``--work``; only markdown, JSON and PNG go to ``--out``. A chain step whose output exists is not recomputed, so a
killed run continues where it stopped (same settings required; the settings are kept in ``work/settings.json``).
Chains run in ``--jobs`` worker processes (one torch thread each).

The pieces: :mod:`experiments.echogains_arms` (arms, directions, settings, working folders, datasets),
:mod:`experiments.echogains_chain` (one chain), :mod:`experiments.echogains_report` (tables, intervals, plots); this
module runs them and re-exports their public names.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from echogains.utils import EchoDataError, get_logger, set_progress
from experiments.common import Stopwatch, check_resume, machine, markdown_table, positive_int, run_arms, write_results
from experiments.echogains_arms import (
    ARMS,
    DEFAULT_TRAIN_SEEDS,
    PAPER_CUTOFFS,
    PHANTOM_CUTOFFS,
    QUICK_REVERSE_ARMS,
    TRAINERS,
    Arm,
    Direction,
    Settings,
    arm_dataset_dir,
    arm_dir,
    arm_spec,
    make_settings,
    parse_train_seeds,
    plan_directions,
    prepare_datasets,
    seed_dir,
    test_dataset_dir,
    train_dataset_dir,
)
from experiments.echogains_chain import run_chain
from experiments.echogains_report import (
    SEEDED_COLUMNS,
    TABLE3_COLUMNS,
    bar_plot,
    build_report,
    header,
    seeded_table3_rows,
    subset_rows,
    table3_rows,
    table4_rows,
)

log = get_logger("experiments.echogains_tables")

__all__ = [
    "ARMS",
    "QUICK_REVERSE_ARMS",
    "PHANTOM_CUTOFFS",
    "Arm",
    "Direction",
    "Settings",
    "arm_spec",
    "make_settings",
    "plan_directions",
    "run_chain",
    "table3_rows",
    "seeded_table3_rows",
    "table4_rows",
    "subset_rows",
    "build_report",
    "run",
]
# also importable from here, as before the split (the tests and scripts use them)
_REEXPORTED = (
    DEFAULT_TRAIN_SEEDS,
    PAPER_CUTOFFS,
    TRAINERS,
    SEEDED_COLUMNS,
    TABLE3_COLUMNS,
    arm_dataset_dir,
    arm_dir,
    bar_plot,
    markdown_table,
    parse_train_seeds,
    seed_dir,
    test_dataset_dir,
    train_dataset_dir,
)

NAME = "echogains_tables"


# --- entry point --------------------------------------------------------------------------------------------------
def run(
    out: str = "experiments/results/echogains_quick",
    work: str = "build/experiments/echogains",
    quick: bool = False,
    seed: int = 0,
    jobs: int = 2,
    arms: str | Sequence[str] | None = None,
    reverse: bool = True,
    reverse_arms: str | Sequence[str] | None = None,
    train_dataset: str | None = None,
    test_dataset: str | None = None,
    test_subset: str = "all",
    ddpm: str | None = None,
    device: str = "cpu",
    n_train: int | None = None,
    n_test: int | None = None,
    image_size: int | None = None,
    k: int | None = None,
    sampler: str | None = None,
    trainer: str | None = None,
    tta: bool | None = None,
    train_seeds: str | int | Sequence[int] | None = None,
    test_preset: str = "camus-like",
    overwrite: bool = False,
    progress: bool = True,
) -> str:
    """Run the EchoGAINS Table 3/4 experiment and write ``out/echogains_tables.{md,json}`` and plots.

    Args:
        out: results folder (markdown, JSON, PNG only).
        work: working folder (phantoms, expanded datasets, nnU-Net folders, predictions, evaluations).
        quick: small settings (8 training / 8 test phantom patients, 64 px, K=1, fast RePaint,
            nnUNetTrainerEchoQuick, no TTA; reverse direction only ``none`` and ``combination``); otherwise the
            paper's (K=5, full RePaint sampler, 256 px, nnUNetTrainerEcho, all arms both directions).
        seed: phantom and augmentation seed.
        jobs: chains run at the same time (worker processes, one torch thread each).
        arms: comma-separated arms (default all of :data:`ARMS`).
        reverse: also the reverse direction (train on the test set's kind, test on the training set's kind).
        reverse_arms: arms of the reverse direction (quick default: none,combination; full: same as ``arms``).
        train_dataset: nnU-Net raw dataset to train on instead of the lv-focused phantom (needs ``test_dataset``).
        test_dataset: nnU-Net raw dataset to test on instead of the ``test_preset`` phantom.
        test_subset: test cases: ``all`` (default), ``Ts`` or ``Tr`` of the test dataset.
        ddpm: DDPM weights for RePaint (default: the demo DDPM, 64 px).
        device: ``cpu`` or ``cuda`` (nnU-Net and RePaint).
        n_train: phantom training patients; n_test: phantom test patients; image_size: phantom pixels;
        k: augmentations per training image; sampler: ``fast`` or ``repaint``; trainer: nnU-Net trainer class;
        tta: nnU-Net test-time mirroring (default: off in quick mode, on in full mode).
        train_seeds: nnU-Net training seeds per arm, ``0,1,2`` or a count (quick default 3 seeds, full 1): each arm
            is trained once per seed (seeded trainers, so that arms of one seed differ only by their data) and
            reported with bootstrap 95 % intervals over seeds and test patients.
        test_preset: the phantom standing in for CAMUS (direction A's test set, B's training set): ``camus-like``
            or ``hard`` (CAMUS-calibrated difficulty, issue 18). Ignored with ``train_dataset``/``test_dataset``.
        overwrite: delete the working folder first.
        progress: progress bar over finished arms.

    The full mode expands the validation cases too (``augment_validation``, the paper's Sec. 2.6: training and
    validation sets with five copies each); the quick mode validates on original cases only (the toolkit's default).

    Returns:
        The markdown path.
    """
    import torch  # here, not at the top: importing this module (the workers do) loads no torch

    torch.set_num_threads(1)
    set_progress(progress)
    jobs = positive_int(jobs, "jobs")
    directions = plan_directions(
        bool(quick), train_dataset, test_dataset, arms, reverse, reverse_arms, test_preset=test_preset
    )
    settings = make_settings(
        bool(quick),
        seed,
        directions,
        n_train=n_train,
        n_test=n_test,
        image_size=image_size,
        k=k,
        sampler=sampler,
        trainer=trainer,
        ddpm=ddpm,
        device=device,
        tta=tta,
        test_subset=test_subset,
        train_dataset=train_dataset,
        test_dataset=test_dataset,
        train_seeds=train_seeds,
    )
    work_dir, out_dir = _check_run(settings, directions, ddpm, work, out, overwrite)
    sw = Stopwatch()
    with sw("datasets"):
        for d in directions:
            prepare_datasets(work_dir, settings, d)
    with sw("chains"):
        records, errors = _run_chains(work_dir, settings, directions, jobs)
    with sw("report"):
        table_md, results = build_report(work_dir, out_dir, settings, directions, records)
    return _finish(out_dir, settings, directions, sw, records, errors, table_md, results)


def _check_run(
    settings: Settings, directions: Sequence[Direction], ddpm: str | None, work: str, out: str, overwrite: bool
) -> tuple[Path, Path]:
    """Warn about a resized demo DDPM, refuse ``out`` inside ``work``, make ``work`` hold a run of ``settings``."""
    if settings.image_size != 64 and ddpm is None and any(arm_spec(a).augment for d in directions for a in d.arms):
        log.warning(
            "the demo DDPM is 64 px; RePaint runs in its 64 px frame and is resized to %d px", settings.image_size
        )
    work_dir, out_dir = Path(work).resolve(), Path(out).resolve()
    if out_dir == work_dir or work_dir in out_dir.parents:
        raise EchoDataError(out_dir, "--out must not lie inside --work")
    check_resume(work_dir, settings.comparable(), overwrite)
    return work_dir, out_dir


def _finish(
    out_dir: Path,
    settings: Settings,
    directions: Sequence[Direction],
    sw: Stopwatch,
    records: Mapping[tuple[str, str], Mapping[str, Any]],
    errors: Mapping[str, str],
    table_md: str,
    results: dict[str, Any],
) -> str:
    """Write the markdown and JSON (with timings, machine, errors, command); then fail if an arm failed."""
    timings = {
        **sw.timings,
        "total_wall_s": sw.total(),
        "per_arm": {f"{k0}/{k1}": r["timings"] for (k0, k1), r in sorted(records.items())},
    }
    results.update(
        {
            "settings": asdict(settings),
            "timings": timings,
            "machine": machine(),
            "errors": errors,
            "resumed_arms_note": "per-arm timings are those of the run that computed each step",
        }
    )
    command = "python -m experiments.echogains_tables " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    md = write_results(out_dir, NAME, header(settings, directions, timings) + "\n" + table_md, results, command)
    if errors:
        raise RuntimeError(f"{len(errors)} arm(s) failed: {errors}")
    print(f"wrote {md} in {timings['total_wall_s']:.0f} s")
    return str(md)


def _run_chains(
    work: Path, settings: Settings, directions: Sequence[Direction], jobs: int
) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, str]]:
    """Every (direction, arm) chain in ``jobs`` workers; returns ({(direction, arm): record}, {"A/arm": failure})."""
    # longest chains first (expansions with RePaint), so the two workers finish together
    chains = [(d, a) for d in directions for a in d.arms]
    chains.sort(key=lambda c: (arm_spec(c[1]).augment is None, not arm_spec(c[1]).repaint))
    tasks = {(d.key, a): (str(work), asdict(settings), asdict(d), a) for d, a in chains}
    return run_arms(run_chain, tasks, jobs, name="/".join, logger=log)


def main() -> None:
    import fire  # the command line only

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    fire.Fire(run)


if __name__ == "__main__":
    main()
