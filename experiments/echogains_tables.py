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
"""

from __future__ import annotations

import csv
import math
import os
import shlex
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from echogains.utils import EchoDataError, atomic_path, atomic_write_json, get_logger, read_json
from experiments.common import (Stopwatch, bootstrap_mean_ci, check_resume, describe_failure, fmt, machine,
                                markdown_table, positive_int, spawn_context, write_results)

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

NAME = "echogains_tables"
#: Arms in the paper's Table 3 order.
ARMS: tuple[str, ...] = ("none", "depth", "tilt", "width", "translation", "combination", "combination_no_repaint")
#: Arms of the reverse direction in quick mode.
QUICK_REVERSE_ARMS: tuple[str, ...] = ("none", "combination")
#: Table 4 cut-offs (depth mm, sector angle deg) by test phantom preset. camus-like (depth 110-180 mm, angle
#: 62-86 deg) spans the paper's 150 mm / 70 deg; lv-focused (112-148 mm, 56-70 deg, depth redrawn until the heart
#: fits, so mostly 135-148 mm) never reaches them, so its subsets split at 140 mm / 62 deg.
PHANTOM_CUTOFFS: dict[str, tuple[float, float]] = {"camus-like": (150.0, 70.0), "lv-focused": (140.0, 62.0)}
PAPER_CUTOFFS = (150.0, 70.0)
TRAINERS = {"quick": "nnUNetTrainerEchoQuick", "full": "nnUNetTrainerEcho"}
#: nnU-Net training seeds per arm (``ECHOGAINS_NNUNET_SEED``): the arms of one seed differ only by their data.
DEFAULT_TRAIN_SEEDS = {"quick": (0, 1, 2), "full": (0,)}
_BA_PLOT = "bland_altman_ef_pred_vs_reference.png"


# --- definitions --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arm:
    """One Table 3 row: ``augment`` is ``None`` for no augmentation."""

    name: str
    augment: str | None
    repaint: bool

    @property
    def label(self) -> str:
        if self.augment is None:
            return "no augmentation"
        return f"{self.augment}{'' if self.repaint else ' without repaint'}"


def arm_spec(name: str) -> Arm:
    """The expansion of an arm name of :data:`ARMS`.

    Raises:
        EchoDataError: unknown arm.
    """
    if name not in ARMS:
        raise EchoDataError(None, f"unknown arm {name!r}; choose from {', '.join(ARMS)}")
    if name == "none":
        return Arm(name, None, True)
    if name.endswith("_no_repaint"):
        return Arm(name, name[: -len("_no_repaint")], False)
    return Arm(name, name, True)


@dataclass(frozen=True)
class Direction:
    """Train on ``train``, test on ``test``; ``train``/``test`` are phantom presets or dataset paths."""

    key: str
    train: str
    test: str
    arms: tuple[str, ...]
    depth_cut_mm: float
    angle_cut_deg: float
    dataset_id: int  # the training dataset's nnU-Net id; arm i gets dataset_id + 1 + i

    @property
    def title(self) -> str:
        return f"{_short(self.train)} -> {_short(self.test)}"


def _short(spec: str) -> str:
    return spec if spec in PHANTOM_CUTOFFS else Path(spec).name


@dataclass
class Settings:
    """Everything that fixes the results (kept in ``work/settings.json`` to refuse a resume with other settings)."""

    mode: str
    seed: int
    n_train: int
    n_test: int
    image_size: int
    k: int
    sampler: str
    trainer: str
    ddpm: str
    device: str
    tta: bool
    test_subset: str
    train_dataset: str | None
    test_dataset: str | None
    directions: list[dict[str, Any]] = field(default_factory=list)
    train_seeds: list[int] = field(default_factory=lambda: [0])

    def comparable(self) -> dict[str, Any]:
        return asdict(self)


def _parse_arms(arms: str | Sequence[str] | None, default: Sequence[str]) -> tuple[str, ...]:
    if arms is None:
        return tuple(default)
    names = [a.strip() for a in arms.split(",")] if isinstance(arms, str) else [str(a).strip() for a in arms]
    names = [a for a in names if a]
    if not names:
        raise EchoDataError(None, "--arms: empty list")
    for name in names:
        arm_spec(name)
    return tuple(dict.fromkeys(names))


def _check_dataset(path: str | os.PathLike, what: str) -> Path:
    root = Path(path).expanduser().resolve()
    for required in ("dataset.json", "imagesTr"):
        if not (root / required).exists():
            raise EchoDataError(root, f"{what}: not an nnU-Net raw dataset ({required} missing)")
    return root


def plan_directions(quick: bool, train_dataset: str | None = None, test_dataset: str | None = None,
                    arms: str | Sequence[str] | None = None, reverse: bool = True,
                    reverse_arms: str | Sequence[str] | None = None) -> list[Direction]:
    """The directions and their arms: the phantom's (lv-focused -> camus-like, reverse) or the given datasets'.

    Raises:
        EchoDataError: only one of the two datasets given, a dataset that is not an nnU-Net raw dataset, or an
            unknown arm.
    """
    if (train_dataset is None) != (test_dataset is None):
        raise EchoDataError(train_dataset or test_dataset, "pass both --train_dataset and --test_dataset (or neither)")
    main_arms = _parse_arms(arms, ARMS)
    back_arms = _parse_arms(reverse_arms, QUICK_REVERSE_ARMS if quick else main_arms)
    if quick:
        back_arms = tuple(a for a in back_arms if a in main_arms) or back_arms
    if train_dataset is None:
        a, b = "lv-focused", "camus-like"
        cut_a, cut_b = PHANTOM_CUTOFFS[b], PHANTOM_CUTOFFS[a]
    else:
        a, b = str(_check_dataset(train_dataset, "--train_dataset")), str(_check_dataset(test_dataset, "--test_dataset"))
        if a == b:
            raise EchoDataError(a, "--train_dataset and --test_dataset are the same folder")
        cut_a = cut_b = PAPER_CUTOFFS
    out = [Direction("A", a, b, main_arms, *cut_a, dataset_id=710)]
    if reverse:
        out.append(Direction("B", b, a, back_arms, *cut_b, dataset_id=730))
    return out


def parse_train_seeds(value: str | int | Sequence[int] | None, default: Sequence[int]) -> list[int]:
    """``--train_seeds``: ``0,1,2``, a sequence of integers, or a count ``N`` meaning ``0..N-1``."""
    if value is None:
        return list(default)
    if isinstance(value, int) and not isinstance(value, bool):
        items: list[Any] = list(range(value)) if value >= 1 else []
    elif isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
    else:
        items = list(value)
    seeds = []
    for item in items:
        try:
            seeds.append(int(item))
        except (TypeError, ValueError):
            raise EchoDataError(None, f"--train_seeds: expected integers, got {value!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise EchoDataError(None, f"--train_seeds: expected distinct integers >= 0, got {value!r}")
    return seeds


def make_settings(quick: bool, seed: int, directions: Sequence[Direction], *, n_train: int | None, n_test: int | None,
                  image_size: int | None, k: int | None, sampler: str | None, trainer: str | None, ddpm: str | None,
                  device: str, tta: bool | None, test_subset: str, train_dataset: str | None,
                  test_dataset: str | None, train_seeds: str | int | Sequence[int] | None = None) -> Settings:
    """Quick or full defaults, overridden by the given values; validated.

    Raises:
        EchoDataError: a value out of range or a missing DDPM file.
    """
    from echogains.ddpm import DEMO_WEIGHTS

    mode = "quick" if quick else "full"
    defaults = {"quick": dict(n_train=8, n_test=8, image_size=64, k=1, sampler="fast", tta=False),
                "full": dict(n_train=60, n_test=30, image_size=256, k=5, sampler="repaint", tta=True)}[mode]
    values = {"n_train": n_train, "n_test": n_test, "image_size": image_size, "k": k}
    checked: dict[str, int] = {}
    for name, low in (("n_train", 2), ("n_test", 1), ("image_size", 16), ("k", 1)):
        value = values[name] if values[name] is not None else defaults[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise EchoDataError(None, f"--{name} must be an integer >= {low}, got {value!r}")
        checked[name] = value
    sampler = sampler or str(defaults["sampler"])
    if sampler not in ("fast", "repaint"):
        raise EchoDataError(None, f"--sampler must be fast or repaint, got {sampler!r}")
    if test_subset not in ("all", "Ts", "Tr"):
        raise EchoDataError(None, f"--test_subset must be all, Ts or Tr, got {test_subset!r}")
    model = Path(ddpm).expanduser().resolve() if ddpm else Path(DEMO_WEIGHTS)
    if any(arm_spec(a).repaint and arm_spec(a).augment for d in directions for a in d.arms) and not model.is_file():
        raise EchoDataError(model, "--ddpm: DDPM weights not found")
    if device not in ("cpu", "cuda", "mps"):
        raise EchoDataError(None, f"--device must be cpu, cuda or mps, got {device!r}")
    return Settings(mode=mode, seed=int(seed), sampler=sampler, trainer=trainer or TRAINERS[mode], ddpm=str(model),
                    train_seeds=parse_train_seeds(train_seeds, DEFAULT_TRAIN_SEEDS[mode]),
                    device=device, tta=bool(defaults["tta"] if tta is None else tta), test_subset=test_subset,
                    train_dataset=train_dataset and str(Path(train_dataset).resolve()),
                    test_dataset=test_dataset and str(Path(test_dataset).resolve()),
                    directions=[asdict(d) for d in directions], **checked)


# --- working folders ----------------------------------------------------------------------------------------------
def _raw(work: Path) -> Path:
    return work / "nnUNet_raw"


def train_dataset_dir(work: Path, direction: Direction) -> Path:
    return _raw(work) / f"Dataset{direction.dataset_id:03d}_EG{direction.key}Train"


def arm_dataset_dir(work: Path, direction: Direction, arm: str) -> Path:
    if arm == "none":
        return train_dataset_dir(work, direction)
    index = ARMS.index(arm)
    return _raw(work) / f"Dataset{direction.dataset_id + 1 + index:03d}_EG{direction.key}{arm.title().replace('_', '')}"


def test_dataset_dir(work: Path, direction: Direction) -> Path:
    return work / "test" / f"{direction.key}_{_short(direction.test)}"


def arm_dir(work: Path, direction: Direction, arm: str) -> Path:
    return work / "arms" / f"{direction.key}_{arm}"


def _phantom_seed(seed: int, direction: Direction, role: str) -> int:
    # different seeds for train and test and for both directions' phantoms
    return seed * 100 + {"A": 11, "B": 31}[direction.key] + (0 if role == "train" else 7)


def prepare_datasets(work: Path, settings: Settings, direction: Direction) -> tuple[Path, Path]:
    """The direction's training dataset in ``work/nnUNet_raw`` and its test dataset, made or linked (idempotent)."""
    from echogains.data.phantom import make_phantom

    train_dir, test_dir = train_dataset_dir(work, direction), test_dataset_dir(work, direction)
    for role, spec, target, n in (("train", direction.train, train_dir, settings.n_train),
                                  ("test", direction.test, test_dir, settings.n_test)):
        if (target / "dataset.json").is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if spec in PHANTOM_CUTOFFS:
            make_phantom(target, n_patients=n, preset=spec, layout="nnunet", labels="lv,myo",
                         image_size=(settings.image_size, settings.image_size),
                         seed=_phantom_seed(settings.seed, direction, role), overwrite=True, progress=False)
        else:
            if target.is_symlink():
                target.unlink()
            target.symlink_to(Path(spec), target_is_directory=True)
    images = work / "test" / f"{direction.key}_images_{settings.test_subset}"
    if not images.is_dir():
        from echogains.data.nnunet import RawDataset

        ds = RawDataset(test_dir)
        case_ids = ds.case_ids(settings.test_subset)
        if not case_ids:
            raise EchoDataError(test_dir, f"no test cases in subset {settings.test_subset!r}")
        tmp = images.with_name(f".{images.name}.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for case in case_ids:
            src = ds.image_path(case)
            os.symlink(src.resolve(), tmp / src.name)
        os.replace(tmp, images)  # the folder appears complete or not at all
    return train_dir, test_dir


# --- one chain ----------------------------------------------------------------------------------------------------
def _done(path: Path) -> dict[str, Any] | None:
    return read_json(path) if path.is_file() else None


def seed_dir(work: Path, direction: Direction, arm: str, seed: int) -> Path:
    return arm_dir(work, direction, arm) / f"seed{seed}"


def run_chain(work: str, settings: dict[str, Any], direction: dict[str, Any], arm: str) -> dict[str, Any]:
    """Expand and plan one arm of one direction, then train, predict and evaluate it once per training seed.

    Finished steps are skipped. Runs in a worker process (one torch thread). Returns the arm's record (also in
    ``arms/{dir}_{arm}/result.json``); each seed's in ``arms/{dir}_{arm}/seed{s}/result.json``.
    """
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    from echogains.augment.expand import expand_dataset
    from echogains.nnunet_runner import NnUNet

    root, cfg, d = Path(work), Settings(**settings), Direction(**{**direction, "arms": tuple(direction["arms"])})
    spec = arm_spec(arm)
    folder = arm_dir(root, d, arm)
    result_file = folder / "result.json"
    if (previous := _done(result_file)) is not None:
        return previous
    folder.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = dict((_done(folder / "timings.json") or {}))
    step = _stepper(folder / "timings.json", timings)
    train_dir = train_dataset_dir(root, d)
    dataset = arm_dataset_dir(root, d, arm)
    nn = NnUNet(raw=_raw(root), device=cfg.device, threads=1, log_dir=root / "logs")
    if spec.augment is not None and not (dataset / "dataset.json").is_file():
        step("expand", lambda: expand_dataset(train_dir, dataset, model=cfg.ddpm if spec.repaint else None,
                                              augment=spec.augment, k=cfg.k, repaint=spec.repaint,
                                              sampler=cfg.sampler, seed=cfg.seed, fold=0, device=cfg.device,
                                              augment_validation=cfg.mode == "full",  # the paper's Sec. 2.6
                                              progress=False))
    planned = folder / "planned.json"
    if not planned.is_file():
        step("plan", lambda: nn.plan_and_preprocess(dataset))
        atomic_write_json(planned, {"dataset": dataset.name})
    seeds = {str(s): _run_seed(root, cfg, d, arm, dataset, s) for s in cfg.train_seeds}
    record = {"direction": d.key, "arm": arm, "dataset": dataset.name, "timings": timings, "seeds": seeds,
              "n_training_images": _count_training(dataset)}
    atomic_write_json(result_file, record)
    return record


def _stepper(path: Path, timings: dict[str, float]) -> Any:
    def step(name: str, fn: Any) -> None:
        t0 = time.perf_counter()
        fn()
        timings[name] = round(time.perf_counter() - t0, 2)
        atomic_write_json(path, timings)

    return step


def _run_seed(root: Path, cfg: Settings, d: Direction, arm: str, dataset: Path, seed: int) -> dict[str, Any]:
    """Train (seeded), predict and evaluate one arm with one training seed; each step skipped when finished."""
    from echogains.evaluation.evaluate import evaluate
    from echogains.nnunet_runner import NnUNet

    folder = seed_dir(root, d, arm, seed)
    if (previous := _done(folder / "result.json")) is not None:
        return previous
    folder.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = dict((_done(folder / "timings.json") or {}))
    step = _stepper(folder / "timings.json", timings)
    nn = NnUNet(raw=_raw(root), results=root / "nnUNet_results" / f"seed{seed}", device=cfg.device, threads=1,
                seed=seed, log_dir=root / "logs" / f"seed{seed}")
    model = nn.model_folder(dataset, cfg.trainer) / "fold_0" / "checkpoint_final.pth"
    if not model.is_file():
        step("train", lambda: nn.train(dataset, cfg.trainer, fold=0))
    pred = folder / "predictions"
    images = root / "test" / f"{d.key}_images_{cfg.test_subset}"
    if not (folder / "predicted.json").is_file():
        if pred.exists():
            shutil.rmtree(pred)
        step("predict", lambda: nn.predict(images, pred, dataset, cfg.trainer, fold=0, tta=cfg.tta))
        atomic_write_json(folder / "predicted.json", {"n": len(list(pred.glob("*.nii.gz")))})
    evaluation = folder / "evaluation"
    if not (evaluation / "metrics_summary.json").is_file():
        step("evaluate", lambda: evaluate(pred, test_dataset_dir(root, d), evaluation, subset=cfg.test_subset,
                                          overlays=False, progress=False))
    record = {"seed": seed, "timings": timings, "evaluation": str(evaluation)}
    atomic_write_json(folder / "result.json", record)
    return record


def _count_training(dataset: Path) -> int | None:
    splits = dataset / "splits_final.json"
    if not splits.is_file():
        return None
    return len(read_json(splits)[0]["train"])


# --- tables -------------------------------------------------------------------------------------------------------
def _pm(stats: Mapping[str, Any] | None, digits: int) -> str:
    if not stats:
        return "–"
    mean, sd = stats.get("mean"), stats.get("std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{fmt(float(mean), digits)} ± {fmt(None if sd is None else float(sd), digits)}"


def table3_rows(summaries: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Table 3 rows ``{arm: metrics_summary.json}`` -> LV Dice/HD (mean ± sd), MYO Dice, EF bias and LoA."""
    rows = []
    for arm, summary in summaries.items():
        seg = summary.get("segmentation", {}).get("all", {})
        lv, myo = seg.get("LV", {}), seg.get("MYO", {})
        ef = (summary.get("clinical", {}).get("agreement", {}).get("prediction vs reference", {}).get("ef_pct", {}))
        bias, lo, hi = ef.get("bias"), ef.get("loa_lower"), ef.get("loa_upper")
        rows.append({
            "arm": arm_spec(arm).label, "arm_key": arm,
            "n": lv.get("n_cases"),
            "lv_dice": _pm(lv.get("dice"), 3), "lv_hd": _pm(lv.get("hd_mm"), 1),
            "myo_dice": _pm(myo.get("dice"), 3),
            "lv_dice_mean": (lv.get("dice") or {}).get("mean"), "lv_dice_sd": (lv.get("dice") or {}).get("std"),
            "lv_hd_mean": (lv.get("hd_mm") or {}).get("mean"), "lv_hd_sd": (lv.get("hd_mm") or {}).get("std"),
            "failures": lv.get("n_failures"),
            "ef_n": ef.get("n"), "ef_bias": bias, "ef_mae": ef.get("mae"),
            "ef_loa": "–" if lo is None or hi is None else f"[{lo:.1f}, {hi:.1f}]",
            "ef_loa_lower": lo, "ef_loa_upper": hi,
        })
    return rows


TABLE3_COLUMNS = {"arm": "arm", "n": "test images", "lv_dice": "LV Dice", "lv_hd": "LV HD (mm)",
                  "myo_dice": "MYO Dice", "failures": "LV failures", "ef_n": "EF patients",
                  "ef_bias": "EF bias (%)", "ef_loa": "EF 95 % LoA (%)", "ef_mae": "EF MAE (%)"}


def _float(text: str | None) -> float:
    try:
        value = float(text) if text not in (None, "") else float("nan")
    except ValueError:
        return float("nan")
    return value


def _read_rows(per_case_csv: str | os.PathLike) -> list[dict[str, str]]:
    with open(per_case_csv, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def subset_rows(per_case_csv: str | os.PathLike | Sequence[str | os.PathLike], depth_cut_mm: float,
                angle_cut_deg: float, label: str = "LV") -> dict[str, dict[str, Any]]:
    """``{subset: {n, dice: stats, hd_mm: stats}}`` for depth < / >= and sector angle < / >= the cut-offs.

    Reads the evaluator's ``metrics_per_case.csv`` (columns ``depth_mm``, ``opening_deg``, ``{label}_dice``,
    ``{label}_hd_mm``); several files (one per training seed) are pooled, ``n`` counting images per seed.
    """
    from echogains.evaluation.metrics import describe

    paths = [per_case_csv] if isinstance(per_case_csv, (str, os.PathLike)) else list(per_case_csv)
    per_file = [_read_rows(path) for path in paths]
    rows = [row for rows_of_file in per_file for row in rows_of_file]
    if rows and f"{label}_dice" not in rows[0]:
        raise EchoDataError(paths[0], f"no column {label}_dice")
    subsets = {
        f"depth<{depth_cut_mm:g}mm": lambda r: _float(r["depth_mm"]) < depth_cut_mm,
        f"depth>={depth_cut_mm:g}mm": lambda r: _float(r["depth_mm"]) >= depth_cut_mm,
        f"angle<{angle_cut_deg:g}deg": lambda r: _float(r["opening_deg"]) < angle_cut_deg,
        f"angle>={angle_cut_deg:g}deg": lambda r: _float(r["opening_deg"]) >= angle_cut_deg,
    }
    out = {}
    for name, keep in subsets.items():
        members = [r for r in rows if keep(r)]
        out[name] = {"n": len(members) // max(1, len(per_file)),
                     "dice": describe(_float(r[f"{label}_dice"]) for r in members),
                     "hd_mm": describe(_float(r[f"{label}_hd_mm"]) for r in members)}
    return out


def table4_rows(subsets: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Table 4 rows ``{arm: subset_rows(...)}`` -> LV Dice (and HD) per subset; returns (rows, column titles)."""
    columns: dict[str, str] = {"arm": "arm"}
    rows = []
    for arm, groups in subsets.items():
        row: dict[str, Any] = {"arm": arm_spec(arm).label, "arm_key": arm}
        for name, stats in groups.items():
            columns[f"{name}_dice"] = f"Dice {name} (n={stats['n']})"
            columns[f"{name}_hd"] = f"HD mm {name}"
            row[f"{name}_dice"] = _pm(stats["dice"], 3)
            row[f"{name}_hd"] = _pm(stats["hd_mm"], 1)
            row[f"{name}_dice_mean"] = stats["dice"].get("mean")
        rows.append(row)
    return rows, columns


def bar_plot(path: Path, tables: Mapping[str, Sequence[Mapping[str, Any]]]) -> Path:
    """Grouped bars: LV Dice and LV HD (mean ± sd) per arm, one colour per direction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    arms = [a for a in ARMS if any(r["arm_key"] == a for rows in tables.values() for r in rows)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(1, len(tables))
    x = np.arange(len(arms))
    for i, (title, rows) in enumerate(tables.items()):
        by_arm = {r["arm_key"]: r for r in rows}
        for ax, key, name in ((axes[0], "lv_dice", "LV Dice"), (axes[1], "lv_hd", "LV HD (mm)")):
            mean = np.array([_nan(by_arm.get(a, {}).get(f"{key}_mean")) for a in arms])
            lower = np.array([_nan(by_arm.get(a, {}).get(f"{key}_lower")) for a in arms])
            upper = np.array([_nan(by_arm.get(a, {}).get(f"{key}_upper")) for a in arms])
            yerr = np.nan_to_num(np.stack([mean - lower, upper - mean]))
            ax.bar(x + (i - (len(tables) - 1) / 2) * width, mean, width, yerr=yerr, capsize=3, label=title)
            ax.set_ylabel(name)
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels([arm_spec(a).label for a in arms], rotation=30, ha="right", fontsize=8)
        ax.legend(fontsize=8)
    axes[0].set_ylim(0, 1)
    fig.suptitle("EchoGAINS arms: LV Dice and Hausdorff distance on the test set "
                 "(mean, 95 % bootstrap interval over training seeds and test patients)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _per_case(rows: Sequence[Mapping[str, str]], column: str) -> dict[str, tuple[str, float]]:
    return {r["case_id"]: (r.get("patient") or r["case_id"], _float(r.get(column))) for r in rows}


def _matrix(per_seed_rows: Mapping[int, Sequence[Mapping[str, str]]], column: str,
            cases: Sequence[str]) -> Any:
    import numpy as np

    return np.array([[_per_case(rows, column).get(c, ("", float("nan")))[1] for c in cases]
                     for rows in per_seed_rows.values()])


def _ci_text(mean: float, lower: float, upper: float, digits: int, signed: bool = False) -> str:
    if not math.isfinite(mean):
        return "–"
    sign = "+" if signed else ""
    return f"{mean:{sign}.{digits}f} [{lower:{sign}.{digits}f}, {upper:{sign}.{digits}f}]"


def _resolved(lower: float, upper: float, higher_is_better: bool) -> str:
    if not (math.isfinite(lower) and math.isfinite(upper)) or lower <= 0.0 <= upper:
        return "no"
    better = (lower > 0.0) == higher_is_better
    return "yes, better" if better else "yes, worse"


def seeded_table3_rows(per_seed: Mapping[str, Mapping[int, tuple[Mapping[str, Any], Sequence[Mapping[str, str]]]]],
                       reference: str = "none", n_boot: int = 2000) -> list[dict[str, Any]]:
    """Table 3 over training seeds, with bootstrap 95 % intervals and the paired difference to ``reference``.

    ``per_seed`` is ``{arm: {seed: (metrics_summary.json, rows of metrics_per_case.csv)}}``. Per arm: LV Dice and HD
    as mean ± sd of the seeds' means; the interval of the mean over seeds and test patients
    (:func:`experiments.common.bootstrap_mean_ci`); the paired difference to the reference arm image by image for
    the same seed, its interval, and whether the interval excludes 0 ("resolved"). EF bias, limits and MAE are the
    seeds' means. The seeds that the reference and the arm share are paired.
    """
    import numpy as np

    rows = []
    ref = per_seed.get(reference, {})
    for arm, seeds in per_seed.items():
        per_seed_rows = {s: case_rows for s, (_, case_rows) in seeds.items()}
        patient_of = {r["case_id"]: r.get("patient") or r["case_id"] for rr in per_seed_rows.values() for r in rr}
        cases = sorted(patient_of)
        patients = [patient_of[c] for c in cases]
        seed_rows = {s: table3_rows({arm: summary})[0] for s, (summary, _) in seeds.items()}
        row: dict[str, Any] = {"arm": arm_spec(arm).label, "arm_key": arm, "seeds": ",".join(map(str, seeds)),
                               "n": len(cases)}
        for key, column, digits, better_high in (("lv_dice", "LV_dice", 3, True), ("lv_hd", "LV_hd_mm", 1, False)):
            means = np.array([_nan(r[f"{key}_mean"]) for r in seed_rows.values()])
            mean, lower, upper = bootstrap_mean_ci(_matrix(per_seed_rows, column, cases), patients, n_boot=n_boot)
            row[f"{key}_mean"], row[f"{key}_lower"], row[f"{key}_upper"] = mean, lower, upper
            row[f"{key}_sd"] = float(np.std(means, ddof=1)) if len(means) > 1 else float("nan")
            row[key] = f"{fmt(float(np.mean(means)), digits)} ± {fmt(row[f'{key}_sd'], digits)}"
            row[f"{key}_ci"] = _ci_text(mean, lower, upper, digits)
            shared = [s for s in seeds if s in ref]
            if arm != reference and shared:
                diff = (_matrix({s: per_seed_rows[s] for s in shared}, column, cases)
                        - _matrix({s: ref[s][1] for s in shared}, column, cases))
                d_mean, d_lower, d_upper = bootstrap_mean_ci(diff, patients, n_boot=n_boot)
                row[f"{key}_delta"] = _ci_text(d_mean, d_lower, d_upper, digits, signed=True)
                row[f"{key}_delta_mean"], row[f"{key}_delta_lower"], row[f"{key}_delta_upper"] = d_mean, d_lower, d_upper
                row[f"{key}_resolved"] = _resolved(d_lower, d_upper, better_high)
        for key in ("ef_bias", "ef_mae", "ef_loa_lower", "ef_loa_upper"):
            values = [r[key] for r in seed_rows.values() if r.get(key) is not None]
            row[key] = float(np.mean(values)) if values else None
        row["myo_dice"] = fmt(float(np.mean([_nan((seeds[s][0].get("segmentation", {}).get("all", {}).get("MYO") or {})
                                                  .get("dice", {}).get("mean")) for s in seeds])), 3)
        row["failures"] = sum(int(r.get("failures") or 0) for r in seed_rows.values())
        row["ef_n"] = next(iter(seed_rows.values())).get("ef_n")
        lo, hi = row["ef_loa_lower"], row["ef_loa_upper"]
        row["ef_loa"] = "–" if lo is None or hi is None else f"[{lo:.1f}, {hi:.1f}]"
        row["per_seed"] = {str(s): {k: r[k] for k in ("lv_dice_mean", "lv_hd_mean", "ef_bias")} for s, r in seed_rows.items()}
        rows.append(row)
    return rows


SEEDED_COLUMNS = {"arm": "arm", "seeds": "training seeds", "n": "test images",
                  "lv_dice": "LV Dice (mean ± sd over seeds)", "lv_dice_ci": "LV Dice [95 % CI]",
                  "lv_dice_delta": "Δ Dice vs none [95 % CI]", "lv_dice_resolved": "Dice difference resolved",
                  "lv_hd": "LV HD mm (mean ± sd over seeds)", "lv_hd_delta": "Δ HD mm vs none [95 % CI]",
                  "lv_hd_resolved": "HD difference resolved", "myo_dice": "MYO Dice", "failures": "LV failures (all seeds)",
                  "ef_n": "EF patients", "ef_bias": "EF bias (%)", "ef_loa": "EF 95 % LoA (%)", "ef_mae": "EF MAE (%)"}


def build_report(work: Path, out: Path, settings: Settings, directions: Sequence[Direction],
                 records: Mapping[tuple[str, str], Mapping[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Tables 3/4 markdown, the results dict, the bar plot and the Bland-Altman plots (copied to ``out``)."""
    md: list[str] = []
    results: dict[str, Any] = {"directions": {}}
    table3_by_dir: dict[str, list[dict[str, Any]]] = {}
    (out / "bland_altman").mkdir(parents=True, exist_ok=True)
    for d in directions:
        per_seed: dict[str, dict[int, tuple[dict[str, Any], list[dict[str, str]]]]] = {}
        subsets = {}
        for arm in d.arms:
            evaluations = {s: seed_dir(work, d, arm, s) / "evaluation" for s in settings.train_seeds}
            if (d.key, arm) not in records or not all((e / "metrics_summary.json").is_file()
                                                      for e in evaluations.values()):
                continue
            per_seed[arm] = {s: (read_json(e / "metrics_summary.json"), _read_rows(e / "metrics_per_case.csv"))
                             for s, e in evaluations.items()}
            subsets[arm] = subset_rows([e / "metrics_per_case.csv" for e in evaluations.values()], d.depth_cut_mm,
                                       d.angle_cut_deg)
            plot = evaluations[settings.train_seeds[0]] / _BA_PLOT
            if plot.is_file():
                shutil.copyfile(plot, out / "bland_altman" / f"{d.key}_{arm}.png")
        t3 = seeded_table3_rows(per_seed)
        t4, t4_columns = table4_rows(subsets)
        table3_by_dir[d.title] = t3
        missing = [a for a in d.arms if a not in per_seed]
        md.append(f"## Direction {d.key}: train {d.title.split(' -> ')[0]}, test {d.title.split(' -> ')[1]}\n")
        md.append(f"### Table 3 style (all test images, {len(settings.train_seeds)} nnU-Net training seed(s); "
                  "EF vs the analytic reference, per patient)\n")
        md.append(markdown_table(t3, SEEDED_COLUMNS, digits=2))
        md.append("\nIntervals: two-stage percentile bootstrap (2,000 draws) over training seeds and test patients; "
                  "Δ is the arm minus no augmentation, image by image for the same training seed; a difference is "
                  "resolved when its 95 % interval excludes 0.\n")
        md.append(f"\n### Table 4 style (LV, subsets by depth {d.depth_cut_mm:g} mm and sector angle "
                  f"{d.angle_cut_deg:g} deg; images of all seeds pooled)\n")
        md.append(markdown_table(t4, t4_columns) if t4 else "(no finished arm)\n")
        empty = [c for c, title in t4_columns.items() if "(n=0)" in title]
        if empty:
            md.append(f"\nEmpty subsets: {', '.join(empty)} (cut-offs outside the test set's range).\n")
        if missing:
            md.append(f"\nNot finished: {', '.join(missing)}.\n")
        md.append("")
        results["directions"][d.key] = {
            "title": d.title, "train": d.train, "test": d.test, "cutoffs": {"depth_mm": d.depth_cut_mm,
                                                                          "angle_deg": d.angle_cut_deg},
            "table3": t3, "table4": t4, "subsets": subsets, "missing": missing,
            "arms": {arm: {"record": records.get((d.key, arm)),
                           "segmentation_all": {str(s): v[0]["segmentation"]["all"] for s, v in seeds.items()},
                           "clinical_agreement": {str(s): v[0].get("clinical", {}).get("agreement")
                                                  for s, v in seeds.items()}}
                     for arm, seeds in per_seed.items()},
        }
    if any(table3_by_dir.values()):
        bar_plot(out / "dice_hd_per_arm.png", table3_by_dir)
    return "\n".join(md), results


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
        test_dataset: nnU-Net raw dataset to test on instead of the camus-like phantom.
        test_subset: test cases: ``all`` (default), ``Ts`` or ``Tr`` of the test dataset.
        ddpm: DDPM weights for RePaint (default: the demo DDPM, 64 px).
        device: ``cpu`` or ``cuda`` (nnU-Net and RePaint).
        n_train: phantom training patients; n_test: phantom test patients; image_size: phantom pixels;
        k: augmentations per training image; sampler: ``fast`` or ``repaint``; trainer: nnU-Net trainer class;
        tta: nnU-Net test-time mirroring (default: off in quick mode, on in full mode).
        train_seeds: nnU-Net training seeds per arm, ``0,1,2`` or a count (quick default 3 seeds, full 1): each arm
            is trained once per seed (seeded trainers, so that arms of one seed differ only by their data) and
            reported with bootstrap 95 % intervals over seeds and test patients.
        overwrite: delete the working folder first.
        progress: progress bar over finished arms.

    The full mode expands the validation cases too (``augment_validation``, the paper's Sec. 2.6: training and
    validation sets with five copies each); the quick mode validates on original cases only (the toolkit's default).

    Returns:
        The markdown path.
    """
    import torch

    from echogains.utils import progress as progress_bar
    from echogains.utils import set_progress

    torch.set_num_threads(1)
    set_progress(progress)
    jobs = positive_int(jobs, "jobs")
    directions = plan_directions(bool(quick), train_dataset, test_dataset, arms, reverse, reverse_arms)
    settings = make_settings(bool(quick), seed, directions, n_train=n_train, n_test=n_test, image_size=image_size,
                             k=k, sampler=sampler, trainer=trainer, ddpm=ddpm, device=device, tta=tta,
                             test_subset=test_subset, train_dataset=train_dataset, test_dataset=test_dataset,
                             train_seeds=train_seeds)
    if settings.image_size != 64 and ddpm is None and any(arm_spec(a).augment for d in directions for a in d.arms):
        log.warning("the demo DDPM is 64 px; RePaint runs in its 64 px frame and is resized to %d px",
                    settings.image_size)
    work_dir, out_dir = Path(work).resolve(), Path(out).resolve()
    if out_dir == work_dir or work_dir in out_dir.parents:
        raise EchoDataError(out_dir, "--out must not lie inside --work")
    check_resume(work_dir, settings.comparable(), overwrite)
    sw = Stopwatch()
    with sw("datasets"):
        for d in directions:
            prepare_datasets(work_dir, settings, d)
    # longest chains first (expansions with RePaint), so the two workers finish together
    chains = [(d, a) for d in directions for a in d.arms]
    chains.sort(key=lambda c: (arm_spec(c[1]).augment is None, not arm_spec(c[1]).repaint))
    records: dict[tuple[str, str], dict[str, Any]] = {}
    errors: dict[str, str] = {}
    with sw("chains"):
        with ProcessPoolExecutor(max_workers=jobs, mp_context=spawn_context()) as pool:
            futures = {pool.submit(run_chain, str(work_dir), asdict(settings), asdict(d), a): (d.key, a)
                       for d, a in chains}
            for future in progress_bar(as_completed(futures), total=len(futures), desc="arms"):
                key = futures[future]
                try:
                    records[key] = future.result()
                    log.info("arm %s/%s done: %s", *key, records[key]["timings"])
                except Exception as exc:  # noqa: BLE001 - report every arm's failure, then fail
                    errors[f"{key[0]}/{key[1]}"] = describe_failure(exc)
                    log.error("arm %s/%s failed: %s", *key, exc)
    with sw("report"):
        table_md, results = build_report(work_dir, out_dir, settings, directions, records)
    timings = {**sw.timings, "total_wall_s": sw.total(),
               "per_arm": {f"{k0}/{k1}": r["timings"] for (k0, k1), r in sorted(records.items())}}
    header = _header(settings, directions, timings)
    results.update({"settings": asdict(settings), "timings": timings, "machine": machine(), "errors": errors,
                    "resumed_arms_note": "per-arm timings are those of the run that computed each step"})
    command = "python -m experiments.echogains_tables " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    md = write_results(out_dir, NAME, header + "\n" + table_md, results, command)
    if errors:
        raise RuntimeError(f"{len(errors)} arm(s) failed: {errors}")
    print(f"wrote {md} in {timings['total_wall_s']:.0f} s")
    return str(md)


def _header(settings: Settings, directions: Sequence[Direction], timings: Mapping[str, Any]) -> str:
    lines = [
        f"Mode: **{settings.mode}**. Train {settings.n_train} / test {settings.n_test} phantom patients "
        f"(2CH+4CH, ED+ES: 4 images each; fold 0 of the training set trains, its other patients validate), "
        f"{settings.image_size} px; K = {settings.k} augmentation(s) per training image, {settings.sampler} sampler, "
        f"DDPM `{Path(settings.ddpm).name}`; nnU-Net trainer `{settings.trainer}` (2d, fold 0), "
        f"TTA {'on' if settings.tta else 'off'}, device {settings.device}; test subset `{settings.test_subset}`; "
        f"phantom/augmentation seed {settings.seed}; nnU-Net training seeds {settings.train_seeds}."
        if settings.train_dataset is None else
        f"Mode: **{settings.mode}**. Datasets: train `{settings.train_dataset}`, test `{settings.test_dataset}`; "
        f"K = {settings.k}, {settings.sampler} sampler, DDPM `{Path(settings.ddpm).name}`, trainer "
        f"`{settings.trainer}`, TTA {'on' if settings.tta else 'off'}, device {settings.device}, seed {settings.seed}, "
        f"nnU-Net training seeds {settings.train_seeds}.",
        "",
        "Table 4 cut-offs: " + "; ".join(f"{d.key} ({d.title}): depth {d.depth_cut_mm:g} mm, angle "
                                         f"{d.angle_cut_deg:g} deg" for d in directions) + ".",
        "",
        f"Wall time: {timings['total_wall_s']:.0f} s in all (chains {timings.get('chains', 0):.0f} s). "
        "Per-arm step timings in the JSON. Bland-Altman plots of EF (prediction vs reference) per arm in "
        "`bland_altman/`; bar plot `dice_hd_per_arm.png`.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    import fire

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    fire.Fire(run)


if __name__ == "__main__":
    main()
