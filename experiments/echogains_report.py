"""The EchoGAINS Table 3/4 experiment's report: tables from the evaluator's outputs, intervals, plots, markdown.

Part of :mod:`experiments.echogains_tables` (which re-exports every public name). Table 3 per arm over training seeds
with two-stage bootstrap intervals (:func:`experiments.common.bootstrap_mean_ci`) and the paired difference to no
augmentation; Table 4 by depth and sector-angle subset.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from echogains.evaluation.metrics import describe
from echogains.utils import EchoDataError, atomic_path, read_json
from experiments.common import bootstrap_mean_ci, fmt, markdown_table
from experiments.echogains_arms import ARMS, Direction, Settings, arm_spec, seed_dir

__all__ = [
    "TABLE3_COLUMNS",
    "SEEDED_COLUMNS",
    "table3_rows",
    "seeded_table3_rows",
    "subset_rows",
    "table4_rows",
    "bar_plot",
    "build_report",
    "header",
]

_BA_PLOT = "bland_altman_ef_pred_vs_reference.png"


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
        ef = summary.get("clinical", {}).get("agreement", {}).get("prediction vs reference", {}).get("ef_pct", {})
        bias, lo, hi = ef.get("bias"), ef.get("loa_lower"), ef.get("loa_upper")
        rows.append(
            {
                "arm": arm_spec(arm).label,
                "arm_key": arm,
                "n": lv.get("n_cases"),
                "lv_dice": _pm(lv.get("dice"), 3),
                "lv_hd": _pm(lv.get("hd_mm"), 1),
                "myo_dice": _pm(myo.get("dice"), 3),
                "lv_dice_mean": (lv.get("dice") or {}).get("mean"),
                "lv_dice_sd": (lv.get("dice") or {}).get("std"),
                "lv_hd_mean": (lv.get("hd_mm") or {}).get("mean"),
                "lv_hd_sd": (lv.get("hd_mm") or {}).get("std"),
                "failures": lv.get("n_failures"),
                "ef_n": ef.get("n"),
                "ef_bias": bias,
                "ef_mae": ef.get("mae"),
                "ef_loa": "–" if lo is None or hi is None else f"[{lo:.1f}, {hi:.1f}]",
                "ef_loa_lower": lo,
                "ef_loa_upper": hi,
            }
        )
    return rows


TABLE3_COLUMNS = {
    "arm": "arm",
    "n": "test images",
    "lv_dice": "LV Dice",
    "lv_hd": "LV HD (mm)",
    "myo_dice": "MYO Dice",
    "failures": "LV failures",
    "ef_n": "EF patients",
    "ef_bias": "EF bias (%)",
    "ef_loa": "EF 95 % LoA (%)",
    "ef_mae": "EF MAE (%)",
}


def _float(text: str | None) -> float:
    try:
        value = float(text) if text not in (None, "") else float("nan")
    except ValueError:
        return float("nan")
    return value


def _read_rows(per_case_csv: str | os.PathLike) -> list[dict[str, str]]:
    with open(per_case_csv, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def subset_rows(
    per_case_csv: str | os.PathLike | Sequence[str | os.PathLike],
    depth_cut_mm: float,
    angle_cut_deg: float,
    label: str = "LV",
) -> dict[str, dict[str, Any]]:
    """``{subset: {n, dice: stats, hd_mm: stats}}`` for depth < / >= and sector angle < / >= the cut-offs.

    Reads the evaluator's ``metrics_per_case.csv`` (columns ``depth_mm``, ``opening_deg``, ``{label}_dice``,
    ``{label}_hd_mm``); several files (one per training seed) are pooled, ``n`` counting images per seed.
    """
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
        out[name] = {
            "n": len(members) // max(1, len(per_file)),
            "dice": describe(_float(r[f"{label}_dice"]) for r in members),
            "hd_mm": describe(_float(r[f"{label}_hd_mm"]) for r in members),
        }
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
    import matplotlib  # here: the Agg backend must be chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.suptitle(
        "EchoGAINS arms: LV Dice and Hausdorff distance on the test set "
        "(mean, 95 % bootstrap interval over training seeds and test patients)"
    )
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path


def _nan(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _per_case(rows: Sequence[Mapping[str, str]], column: str) -> dict[str, tuple[str, float]]:
    return {r["case_id"]: (r.get("patient") or r["case_id"], _float(r.get(column))) for r in rows}


def _matrix(per_seed_rows: Mapping[int, Sequence[Mapping[str, str]]], column: str, cases: Sequence[str]) -> Any:
    return np.array(
        [[_per_case(rows, column).get(c, ("", float("nan")))[1] for c in cases] for rows in per_seed_rows.values()]
    )


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


def seeded_table3_rows(
    per_seed: Mapping[str, Mapping[int, tuple[Mapping[str, Any], Sequence[Mapping[str, str]]]]],
    reference: str = "none",
    n_boot: int = 2000,
) -> list[dict[str, Any]]:
    """Table 3 over training seeds, with bootstrap 95 % intervals and the paired difference to ``reference``.

    ``per_seed`` is ``{arm: {seed: (metrics_summary.json, rows of metrics_per_case.csv)}}``. Per arm: LV Dice and HD
    as mean ± sd of the seeds' means; the interval of the mean over seeds and test patients
    (:func:`experiments.common.bootstrap_mean_ci`); the paired difference to the reference arm image by image for
    the same seed, its interval, and whether the interval excludes 0 ("resolved"). EF bias, limits and MAE are the
    seeds' means. The seeds that the reference and the arm share are paired.
    """
    rows = []
    ref = per_seed.get(reference, {})
    for arm, seeds in per_seed.items():
        per_seed_rows = {s: case_rows for s, (_, case_rows) in seeds.items()}
        patient_of = {r["case_id"]: r.get("patient") or r["case_id"] for rr in per_seed_rows.values() for r in rr}
        cases = sorted(patient_of)
        patients = [patient_of[c] for c in cases]
        seed_rows = {s: table3_rows({arm: summary})[0] for s, (summary, _) in seeds.items()}
        row: dict[str, Any] = {
            "arm": arm_spec(arm).label,
            "arm_key": arm,
            "seeds": ",".join(map(str, seeds)),
            "n": len(cases),
        }
        for key, column, digits, better_high in (("lv_dice", "LV_dice", 3, True), ("lv_hd", "LV_hd_mm", 1, False)):
            means = np.array([_nan(r[f"{key}_mean"]) for r in seed_rows.values()])
            mean, lower, upper = bootstrap_mean_ci(_matrix(per_seed_rows, column, cases), patients, n_boot=n_boot)
            row[f"{key}_mean"], row[f"{key}_lower"], row[f"{key}_upper"] = mean, lower, upper
            row[f"{key}_sd"] = float(np.std(means, ddof=1)) if len(means) > 1 else float("nan")
            row[key] = f"{fmt(float(np.mean(means)), digits)} ± {fmt(row[f'{key}_sd'], digits)}"
            row[f"{key}_ci"] = _ci_text(mean, lower, upper, digits)
            shared = [s for s in seeds if s in ref]
            if arm != reference and shared:
                diff = _matrix({s: per_seed_rows[s] for s in shared}, column, cases) - _matrix(
                    {s: ref[s][1] for s in shared}, column, cases
                )
                d_mean, d_lower, d_upper = bootstrap_mean_ci(diff, patients, n_boot=n_boot)
                row[f"{key}_delta"] = _ci_text(d_mean, d_lower, d_upper, digits, signed=True)
                row[f"{key}_delta_mean"], row[f"{key}_delta_lower"], row[f"{key}_delta_upper"] = (
                    d_mean,
                    d_lower,
                    d_upper,
                )
                row[f"{key}_resolved"] = _resolved(d_lower, d_upper, better_high)
        for key in ("ef_bias", "ef_mae", "ef_loa_lower", "ef_loa_upper"):
            values = [r[key] for r in seed_rows.values() if r.get(key) is not None]
            row[key] = float(np.mean(values)) if values else None
        row["myo_dice"] = fmt(
            float(
                np.mean(
                    [
                        _nan(
                            (seeds[s][0].get("segmentation", {}).get("all", {}).get("MYO") or {})
                            .get("dice", {})
                            .get("mean")
                        )
                        for s in seeds
                    ]
                )
            ),
            3,
        )
        row["failures"] = sum(int(r.get("failures") or 0) for r in seed_rows.values())
        row["ef_n"] = next(iter(seed_rows.values())).get("ef_n")
        lo, hi = row["ef_loa_lower"], row["ef_loa_upper"]
        row["ef_loa"] = "–" if lo is None or hi is None else f"[{lo:.1f}, {hi:.1f}]"
        row["per_seed"] = {
            str(s): {k: r[k] for k in ("lv_dice_mean", "lv_hd_mean", "ef_bias")} for s, r in seed_rows.items()
        }
        rows.append(row)
    return rows


SEEDED_COLUMNS = {
    "arm": "arm",
    "seeds": "training seeds",
    "n": "test images",
    "lv_dice": "LV Dice (mean ± sd over seeds)",
    "lv_dice_ci": "LV Dice [95 % CI]",
    "lv_dice_delta": "Δ Dice vs none [95 % CI]",
    "lv_dice_resolved": "Dice difference resolved",
    "lv_hd": "LV HD mm (mean ± sd over seeds)",
    "lv_hd_delta": "Δ HD mm vs none [95 % CI]",
    "lv_hd_resolved": "HD difference resolved",
    "myo_dice": "MYO Dice",
    "failures": "LV failures (all seeds)",
    "ef_n": "EF patients",
    "ef_bias": "EF bias (%)",
    "ef_loa": "EF 95 % LoA (%)",
    "ef_mae": "EF MAE (%)",
}


def build_report(
    work: Path,
    out: Path,
    settings: Settings,
    directions: Sequence[Direction],
    records: Mapping[tuple[str, str], Mapping[str, Any]],
) -> tuple[str, dict[str, Any]]:
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
            if (d.key, arm) not in records or not all(
                (e / "metrics_summary.json").is_file() for e in evaluations.values()
            ):
                continue
            per_seed[arm] = {
                s: (read_json(e / "metrics_summary.json"), _read_rows(e / "metrics_per_case.csv"))
                for s, e in evaluations.items()
            }
            subsets[arm] = subset_rows(
                [e / "metrics_per_case.csv" for e in evaluations.values()], d.depth_cut_mm, d.angle_cut_deg
            )
            plot = evaluations[settings.train_seeds[0]] / _BA_PLOT
            if plot.is_file():
                shutil.copyfile(plot, out / "bland_altman" / f"{d.key}_{arm}.png")
        t3 = seeded_table3_rows(per_seed)
        t4, t4_columns = table4_rows(subsets)
        table3_by_dir[d.title] = t3
        missing = [a for a in d.arms if a not in per_seed]
        md.append(f"## Direction {d.key}: train {d.title.split(' -> ')[0]}, test {d.title.split(' -> ')[1]}\n")
        md.append(
            f"### Table 3 style (all test images, {len(settings.train_seeds)} nnU-Net training seed(s); "
            "EF vs the analytic reference, per patient)\n"
        )
        md.append(markdown_table(t3, SEEDED_COLUMNS, digits=2))
        md.append(
            "\nIntervals: two-stage percentile bootstrap (2,000 draws) over training seeds and test patients; "
            "Δ is the arm minus no augmentation, image by image for the same training seed; a difference is "
            "resolved when its 95 % interval excludes 0.\n"
        )
        md.append(
            f"\n### Table 4 style (LV, subsets by depth {d.depth_cut_mm:g} mm and sector angle "
            f"{d.angle_cut_deg:g} deg; images of all seeds pooled)\n"
        )
        md.append(markdown_table(t4, t4_columns) if t4 else "(no finished arm)\n")
        empty = [c for c, title in t4_columns.items() if "(n=0)" in title]
        if empty:
            md.append(f"\nEmpty subsets: {', '.join(empty)} (cut-offs outside the test set's range).\n")
        if missing:
            md.append(f"\nNot finished: {', '.join(missing)}.\n")
        md.append("")
        results["directions"][d.key] = {
            "title": d.title,
            "train": d.train,
            "test": d.test,
            "cutoffs": {"depth_mm": d.depth_cut_mm, "angle_deg": d.angle_cut_deg},
            "table3": t3,
            "table4": t4,
            "subsets": subsets,
            "missing": missing,
            "arms": {
                arm: {
                    "record": records.get((d.key, arm)),
                    "segmentation_all": {str(s): v[0]["segmentation"]["all"] for s, v in seeds.items()},
                    "clinical_agreement": {str(s): v[0].get("clinical", {}).get("agreement") for s, v in seeds.items()},
                }
                for arm, seeds in per_seed.items()
            },
        }
    if any(table3_by_dir.values()):
        bar_plot(out / "dice_hd_per_arm.png", table3_by_dir)
    return "\n".join(md), results


def header(settings: Settings, directions: Sequence[Direction], timings: Mapping[str, Any]) -> str:
    """The settings, the Table 4 cut-offs and the wall time, in words, above the tables."""
    lines = [
        f"Mode: **{settings.mode}**. Train {settings.n_train} / test {settings.n_test} phantom patients "
        f"(2CH+4CH, ED+ES: 4 images each; fold 0 of the training set trains, its other patients validate), "
        f"{settings.image_size} px; K = {settings.k} augmentation(s) per training image, {settings.sampler} sampler, "
        f"DDPM `{Path(settings.ddpm).name}`; nnU-Net trainer `{settings.trainer}` (2d, fold 0), "
        f"TTA {'on' if settings.tta else 'off'}, device {settings.device}; test subset `{settings.test_subset}`; "
        f"phantom/augmentation seed {settings.seed}; nnU-Net training seeds {settings.train_seeds}."
        if settings.train_dataset is None
        else f"Mode: **{settings.mode}**. Datasets: train `{settings.train_dataset}`, test `{settings.test_dataset}`; "
        f"K = {settings.k}, {settings.sampler} sampler, DDPM `{Path(settings.ddpm).name}`, trainer "
        f"`{settings.trainer}`, TTA {'on' if settings.tta else 'off'}, device {settings.device}, seed {settings.seed}, "
        f"nnU-Net training seeds {settings.train_seeds}.",
        "",
        "Table 4 cut-offs: "
        + "; ".join(
            f"{d.key} ({d.title}): depth {d.depth_cut_mm:g} mm, angle {d.angle_cut_deg:g} deg" for d in directions
        )
        + ".",
        "",
        f"Wall time: {timings['total_wall_s']:.0f} s in all (chains {timings.get('chains', 0):.0f} s). "
        "Per-arm step timings in the JSON. Bland-Altman plots of EF (prediction vs reference) per arm in "
        "`bland_altman/`; bar plot `dice_hd_per_arm.png`.",
        "",
    ]
    return "\n".join(lines)
