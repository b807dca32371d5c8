"""Tables, plot and markdown report of :mod:`experiments.echo_dnd_tables` (its arms, the paper's numbers).

Kept apart from the driver so that the experiment stays within the file-size limit; everything here is
re-exported by :mod:`experiments.echo_dnd_tables`.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from echogains.utils import read_json
from experiments.common import fmt, markdown_table

#: The bundle's ablations (``scripts.config.ABLATIONS``; kept here so that the experiment imports no bundle code).
ECHO_DND_ARMS: tuple[str, ...] = (
    "full",
    "gaussian_only",
    "bernoulli_only",
    "unet_conditioner",
    "loss_lg_lb",
    "loss_lg_lb_kl",
    "kl_vb",
)
OTHER_ARMS: tuple[str, ...] = ("nnunet", "demo_weights")
#: The paper's CAMUS LV Dice (Table 2): (end-systolic, end-diastolic, overall).
PAPER_TABLE2: dict[str, tuple[float, float, float]] = {"full": (0.971, 0.954, 0.962), "nnunet": (0.945, 0.939, 0.942)}
#: The paper's Table 4 rows (component, variation, our arm, reported Dice).
PAPER_TABLE4: tuple[tuple[str, str, str, float], ...] = (
    ("Conditioning module", "U-Net", "unet_conditioner", 0.958),
    ("Conditioning module", "MFCM", "full", 0.962),
    ("Loss function", "L_G + L_B", "loss_lg_lb", 0.951),
    ("Loss function", "+ KL terms", "loss_lg_lb_kl", 0.955),
    ("Loss function", "+ L_SCC (all of eq. 13)", "full", 0.962),
    ("Noise term", "Only Gaussian", "gaussian_only", 0.949),
    ("Noise term", "Only Bernoulli", "bernoulli_only", 0.954),
    ("Noise term", "Both", "full", 0.962),
)
ARM_TITLES = {
    "full": "Echo-DND (MFCM, both noises, eq. 13)",
    "gaussian_only": "Echo-DND, only Gaussian",
    "bernoulli_only": "Echo-DND, only Bernoulli",
    "unet_conditioner": "Echo-DND, U-Net conditioner",
    "loss_lg_lb": "Echo-DND, L_G + L_B",
    "loss_lg_lb_kl": "Echo-DND, L_G + L_B + KL",
    "kl_vb": "Echo-DND, KL as variational bound (not eqs. 10-11)",
    "nnunet": "nnU-Net (2d)",
    "demo_weights": "Echo-DND demo weights (reference)",
}
_LABEL = "LV"


# --- tables -----------------------------------------------------------------------------------------------------
def _stat(summary: Mapping[str, Any], group: str, metric: str, key: str = "mean") -> float:
    try:
        value = summary["segmentation"][group][_LABEL][metric][key]
    except (KeyError, TypeError):
        return float("nan")
    return float("nan") if value is None else float(value)


def arm_summary(evaluation: str | os.PathLike) -> dict[str, Any]:
    """The numbers of one arm from the evaluator's ``metrics_summary.json`` (LV; overall, ED, ES; EF agreement)."""
    summary = read_json(Path(evaluation) / "metrics_summary.json")
    out: dict[str, Any] = {"n_cases": summary.get("n_cases"), "n_patients": summary.get("n_patients")}
    for metric in ("dice", "hd_mm", "hd95_mm", "msd_mm"):
        out[metric] = _stat(summary, "all", metric)
        out[f"{metric}_sd"] = _stat(summary, "all", metric, "std")
    out["dice_ed"] = _stat(summary, "phase=ED", "dice")
    out["dice_es"] = _stat(summary, "phase=ES", "dice")
    try:
        out["failures"] = int(summary["segmentation"]["all"][_LABEL]["n_failures"])
    except (KeyError, TypeError):
        out["failures"] = None
    clinical = summary.get("clinical") or {}
    ef = ((clinical.get("agreement") or {}).get("prediction vs reference") or {}).get("ef_pct") or {}
    out["ef"] = {
        k: (float("nan") if ef.get(k) is None else ef.get(k))
        for k in ("n", "bias", "sd", "loa_lower", "loa_upper", "mae", "pearson_r")
    }
    out["ef_feasible"] = f"{clinical.get('n_feasible_pred', '–')}/{clinical.get('n_patients', '–')}"
    return out


def _pm(mean: float, sd: float, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}" if sd is not None and not math.isnan(sd) else f"{mean:.{digits}f}"


def table2_rows(
    summaries: Mapping[str, Mapping[str, Any]], records: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Table 2 style: every arm with Dice (overall, ED, ES), HD, HD95, MSD and the paper's CAMUS Dice."""
    rows = []
    for arm in _ordered(summaries):
        s, r = summaries[arm], records.get(arm, {})
        paper = PAPER_TABLE2.get(arm)
        rows.append(
            {
                "model": ARM_TITLES.get(arm, arm),
                "training": r.get("training", ""),
                "dice": _pm(s["dice"], s["dice_sd"]),
                "dice_ed": s["dice_ed"],
                "dice_es": s["dice_es"],
                "hd": _pm(s["hd_mm"], s["hd_mm_sd"], 2),
                "hd95": _pm(s["hd95_mm"], s["hd95_mm_sd"], 2),
                "msd": _pm(s["msd_mm"], s["msd_mm_sd"], 2),
                "failures": s.get("failures"),
                "train_s": _seconds(r.get("timings", {}), ("plan", "train")),
                "test_s": _seconds(r.get("timings", {}), ("infer", "predict")),
                "paper": "–" if paper is None else f"{paper[2]:.3f} (ED {paper[1]:.3f}, ES {paper[0]:.3f})",
            }
        )
    return rows


TABLE2_COLUMNS = {
    "model": "Model",
    "training": "Training",
    "dice": "Dice",
    "dice_ed": "Dice ED",
    "dice_es": "Dice ES",
    "hd": "HD (mm)",
    "hd95": "HD95 (mm)",
    "msd": "MSD (mm)",
    "failures": "Failures",
    "train_s": "Train (s)",
    "test_s": "Test-set inference (s)",
    "paper": "Paper CAMUS Dice",
}


def _seconds(timings: Mapping[str, Any], keys: Sequence[str]) -> str:
    """Sum of the given stage timings as whole seconds; an en dash when none ran (or it was resumed past them)."""
    values = [float(timings[k]) for k in keys if k in timings]
    return f"{sum(values):.0f}" if values else "–"


def table4_rows(summaries: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Table 4 style: the paper's ablation rows with its Dice and ours (and both differences to ``full``)."""
    full = summaries.get("full", {}).get("dice", float("nan"))
    rows = []
    for component, variation, arm, paper in PAPER_TABLE4:
        s = summaries.get(arm)
        ours = float("nan") if s is None else s["dice"]
        rows.append(
            {
                "component": component,
                "variation": variation,
                "arm": arm,
                "paper": paper,
                "paper_delta": f"{paper - 0.962:+.3f}",
                "ours": "not run" if s is None else _pm(s["dice"], s["dice_sd"]),
                "ours_delta": "–" if s is None or math.isnan(full) else f"{ours - full:+.3f}",
            }
        )
    return rows


TABLE4_COLUMNS = {
    "component": "Component",
    "variation": "Variation",
    "arm": "Arm",
    "paper": "Paper Dice",
    "paper_delta": "Paper Δ vs full",
    "ours": "Our Dice",
    "ours_delta": "Our Δ vs full",
}


def ef_rows(summaries: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """EF (Simpson biplane) agreement of each arm's masks with the reference: bias, limits of agreement, MAE, r."""
    rows = []
    for arm in _ordered(summaries):
        ef = summaries[arm]["ef"]
        rows.append(
            {
                "model": ARM_TITLES.get(arm, arm),
                "n": ef.get("n"),
                "feasible": summaries[arm]["ef_feasible"],
                "bias": ef.get("bias"),
                "loa": f"{fmt(ef.get('loa_lower'), 1)} to {fmt(ef.get('loa_upper'), 1)}",
                "mae": ef.get("mae"),
                "r": ef.get("pearson_r"),
            }
        )
    return rows


EF_COLUMNS = {
    "model": "Model",
    "n": "Patients",
    "feasible": "EF feasible",
    "bias": "Bias (EF points)",
    "loa": "Limits of agreement",
    "mae": "MAE",
    "r": "Pearson r",
}


def _ordered(summaries: Mapping[str, Any]) -> list[str]:
    order = [*ECHO_DND_ARMS, *OTHER_ARMS]
    return sorted(summaries, key=lambda a: order.index(a) if a in order else len(order))


def dice_plot(path: Path, summaries: Mapping[str, Mapping[str, Any]]) -> Path:
    """Bar plot: LV Dice (mean ± SD over the test images) per arm, the paper's reported Dice as markers."""
    import matplotlib  # here: the Agg backend must be chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = _ordered(summaries)
    means = [summaries[a]["dice"] for a in arms]
    sds = [0.0 if math.isnan(summaries[a]["dice_sd"]) else summaries[a]["dice_sd"] for a in arms]
    paper = {arm: d for _, _, arm, d in PAPER_TABLE4} | {a: v[2] for a, v in PAPER_TABLE2.items()}
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(arms)), 4.0))
    x = range(len(arms))
    ax.bar(x, means, yerr=sds, capsize=4, color="#4c72b0", label="ours (phantom test images)")
    px = [i for i, a in enumerate(arms) if a in paper]
    if px:
        ax.scatter(
            px, [paper[arms[i]] for i in px], marker="D", color="#dd8452", zorder=3, label="paper (CAMUS, Tables 2/4)"
        )
    ax.set_xticks(list(x), [a.replace("_", "\n") for a in arms], fontsize=8)
    finite = [m for m in means if not math.isnan(m)]
    ax.set_ylim(max(0.0, min(finite + [0.9]) - 0.1) if finite else 0.0, 1.0)
    ax.set_ylabel("LV Dice")
    ax.set_title("Echo-DND arms, nnU-Net and the demo weights: LV Dice (mean ± SD)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def build_report(out: Path, records: Mapping[str, Mapping[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Tables (markdown), per-arm numbers and plots from the arms' evaluations; returns (markdown, results)."""
    summaries = {arm: arm_summary(r["evaluation"]) for arm, r in records.items()}
    plots = {"dice": str(dice_plot(out / "dice_per_model.png", summaries).relative_to(out))}
    for arm, r in records.items():
        src = Path(r["evaluation"]) / "bland_altman_ef_pred_vs_reference.png"
        if src.is_file():
            dst = out / "bland_altman" / f"{arm}.png"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            plots[f"bland_altman_{arm}"] = str(dst.relative_to(out))
    t2, t4, ef = table2_rows(summaries, records), table4_rows(summaries), ef_rows(summaries)
    md = (
        "## Table 2 style: LV segmentation of the unseen test images\n\n"
        + markdown_table(t2, TABLE2_COLUMNS)
        + "\n## Table 4 style: ablations (same data, steps, batch, lr and seed)\n\n"
        + markdown_table(t4, TABLE4_COLUMNS)
        + "\n## EF agreement (Simpson biplane from the predicted LV vs the reference EF)\n\n"
        + markdown_table(ef_rows(summaries), EF_COLUMNS, digits=2)
    )
    results = {
        "arms": {
            a: {**summaries[a], **{k: v for k, v in records[a].items() if k != "evaluation"}}
            for a in _ordered(summaries)
        },
        "table2": t2,
        "table4": t4,
        "ef": ef,
        "plots": plots,
    }
    return md, results
