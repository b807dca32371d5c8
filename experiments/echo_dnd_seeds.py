"""Pool Echo-DND table runs of several training seeds on one dataset: 95 % intervals and paired differences.

``experiments.echo_dnd_tables`` trains and scores every arm once, for one ``--seed``. Run it once per training
seed on the same nnU-Net raw dataset (``--dataset``, so that only the training and sampling seed changes; nnU-Net
is seeded too), each into its own ``--work``, then pool them::

    python -m experiments.echo_dnd_seeds --works W0,W1,W2 --out experiments/results/echo_dnd_quick_hard

Per arm: LV Dice and HD as mean ± sd of the seeds' means; the two-stage bootstrap 95 % interval over training
seeds and test patients (:func:`experiments.common.bootstrap_mean_ci`, as the EchoGAINS tables); the paired
difference to each reference arm (default ``full`` and ``nnunet``) image by image for the same seed, its interval,
and whether it is resolved (the interval excludes 0); LV Dice by image quality grade (the dataset's
``image_quality`` records: Good/Medium/Poor) with its interval. The papers' orderings are rows of their own:
each states the paper's claim and whether these runs resolve it.

Outputs in ``--out``: ``echo_dnd_seeds.md/json`` (the JSON holds every per-case value, so the tables can be
recomputed) and ``dice_per_arm_seeds.png``.
"""

from __future__ import annotations

import csv
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from echogains.data.nnunet import RawDataset
from echogains.utils import EchoDataError, read_json
from experiments.common import bootstrap_mean_ci, fmt, markdown_table, write_results
from experiments.echo_dnd_report import ARM_TITLES
from experiments.echogains_report import _ci_text, _float, _resolved

__all__ = ["NAME", "ORDERINGS", "load_runs", "collect", "seeded_rows", "ordering_rows", "run"]

NAME = "echo_dnd_seeds"
#: (key, per-case column, digits, higher is better)
METRICS: tuple[tuple[str, str, int, bool], ...] = (("dice", "LV_dice", 3, True), ("hd", "LV_hd_mm", 1, False))
GRADES = ("Good", "Medium", "Poor")
#: The papers' orderings (Echo-DND Tables 2 and 4): (better arm, worse arm, where the paper says so).
ORDERINGS: tuple[tuple[str, str, str], ...] = (
    ("full", "nnunet", "Table 2: Echo-DND 0.962 vs nnU-Net 0.942 LV Dice on CAMUS"),
    ("full", "gaussian_only", "Table 4: both noises above the Gaussian process alone"),
    ("full", "bernoulli_only", "Table 4: both noises above the Bernoulli process alone"),
    ("full", "unet_conditioner", "Table 4: the MFCM above a U-Net conditioner"),
    ("full", "kl_vb", "the paper's KL terms (eqs. 10-11) against the variational bound (our option)"),
)


# --- reading ------------------------------------------------------------------------------------------------------
def load_runs(works: Sequence[str | Path]) -> tuple[dict[str, Any], dict[int, Path]]:
    """The runs' common settings and ``{seed: work folder}``.

    Raises:
        EchoDataError: a folder without ``settings.json``, two runs of one seed, or runs whose settings differ in
            more than the seed.
    """
    runs: dict[int, Path] = {}
    common: dict[str, Any] | None = None
    for work in works:
        folder = Path(work).expanduser().resolve()
        file = folder / "settings.json"
        if not file.is_file():
            raise EchoDataError(folder, "not an echo_dnd_tables working folder (no settings.json)")
        settings = dict(read_json(file))
        seed = int(settings.pop("seed"))
        if seed in runs:
            raise EchoDataError(folder, f"a second run of seed {seed} (the other: {runs[seed]})")
        if common is not None and settings != common:
            changed = sorted(k for k in set(settings) | set(common) if settings.get(k) != common.get(k))
            raise EchoDataError(file, f"settings differ from the first run's in more than the seed: {changed}")
        common, runs[seed] = settings, folder
    if common is None:
        raise EchoDataError(None, "--works: no working folders given")
    if not common.get("dataset") and len(runs) > 1:
        raise EchoDataError(
            None, "the runs made their own phantoms (no --dataset): their test sets differ, nothing to pair"
        )
    return common, dict(sorted(runs.items()))


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {r["case_id"]: r for r in csv.DictReader(fh)}


def collect(runs: Mapping[int, Path], arms: Sequence[str] | None = None) -> dict[str, dict[int, dict[str, dict]]]:
    """``{arm: {seed: {case_id: per-case row}}}`` for the arms evaluated in every run (or the ``arms`` given).

    Raises:
        EchoDataError: a requested arm missing from a run, or runs whose test cases differ.
    """
    found: dict[str, dict[int, dict[str, dict]]] = {}
    names = arms or sorted({p.parent.name for w in runs.values() for p in w.glob("arms/*/evaluation")})
    for arm in names:
        files = {s: w / "arms" / arm / "evaluation" / "metrics_per_case.csv" for s, w in runs.items()}
        missing = [str(f) for f in files.values() if not f.is_file()]
        if missing:
            if arms:
                raise EchoDataError(missing[0], f"arm {arm!r} was not evaluated in this run")
            continue
        found[arm] = {s: _rows(f) for s, f in files.items()}
    cases = {frozenset(rows) for per_seed in found.values() for rows in per_seed.values()}
    if len(cases) > 1:
        raise EchoDataError(None, "the runs' test cases differ (not the same --dataset?)")
    if not found:
        raise EchoDataError(None, "no arm was evaluated in every run")
    return found


def _matrix(per_seed: Mapping[int, Mapping[str, Mapping[str, str]]], column: str, cases: Sequence[str]) -> Any:
    return np.array([[_float(rows[c].get(column)) for c in cases] for rows in per_seed.values()])


# --- tables -------------------------------------------------------------------------------------------------------
def _ordered(arms: Sequence[str]) -> list[str]:
    known = list(ARM_TITLES)
    return sorted(arms, key=lambda a: known.index(a) if a in known else len(known))


def seeded_rows(
    found: Mapping[str, Mapping[int, Mapping[str, Mapping[str, str]]]],
    grades: Mapping[str, str],
    references: Sequence[str] = ("full", "nnunet"),
    n_boot: int = 2000,
) -> list[dict[str, Any]]:
    """One row per arm: means over seeds, intervals, paired differences to each reference, Dice per grade."""
    rows = []
    for arm in _ordered(list(found)):
        per_seed = found[arm]
        any_rows = next(iter(per_seed.values()))
        cases = sorted(any_rows)
        patients = [any_rows[c].get("patient") or c for c in cases]
        row: dict[str, Any] = {
            "arm": arm,
            "title": ARM_TITLES.get(arm, arm),
            "seeds": ",".join(map(str, per_seed)),
            "n": len(cases),
        }
        for key, column, digits, higher in METRICS:
            values = _matrix(per_seed, column, cases)
            seed_means = np.nanmean(values, axis=1)
            mean, lower, upper = bootstrap_mean_ci(values, patients, n_boot=n_boot)
            sd = float(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else float("nan")
            row.update({f"{key}_mean": mean, f"{key}_lower": lower, f"{key}_upper": upper, f"{key}_sd": sd})
            row[f"{key}_per_seed"] = {str(s): float(m) for s, m in zip(per_seed, seed_means)}
            row[key] = f"{fmt(float(np.mean(seed_means)), digits)} ± {fmt(sd, digits)}"
            row[f"{key}_ci"] = _ci_text(mean, lower, upper, digits)
            for ref in references:
                shared = [s for s in per_seed if s in found.get(ref, {})]
                if ref == arm or not shared:
                    continue
                diff = _matrix({s: per_seed[s] for s in shared}, column, cases) - _matrix(
                    {s: found[ref][s] for s in shared}, column, cases
                )
                d_mean, d_lower, d_upper = bootstrap_mean_ci(diff, patients, n_boot=n_boot)
                row[f"{key}_vs_{ref}"] = _ci_text(d_mean, d_lower, d_upper, digits, signed=True)
                row[f"{key}_vs_{ref}_values"] = [d_mean, d_lower, d_upper]
                row[f"{key}_vs_{ref}_resolved"] = _resolved(d_lower, d_upper, higher)
        values = _matrix(per_seed, "LV_dice", cases)
        for grade in GRADES:
            keep = [i for i, c in enumerate(cases) if grades.get(c) == grade]
            if keep:
                g_mean, g_lower, g_upper = bootstrap_mean_ci(
                    values[:, keep], [patients[i] for i in keep], n_boot=n_boot
                )
                row[f"dice_{grade}"] = _ci_text(g_mean, g_lower, g_upper, 3)
                row[f"dice_{grade}_values"] = [g_mean, g_lower, g_upper]
                row[f"n_{grade}"] = len(keep)
        rows.append(row)
    return rows


def ordering_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The papers' orderings that both arms of these runs have: the paired LV Dice difference and its verdict."""
    by_arm = {r["arm"]: r for r in rows}
    out = []
    for better, worse, claim in ORDERINGS:
        if better not in by_arm or worse not in by_arm:
            continue
        key = f"dice_vs_{worse}"
        if key in by_arm[better]:
            mean, lower, upper = by_arm[better][f"{key}_values"]
        else:  # the difference was taken the other way round (worse - better)
            m, lo, hi = by_arm[worse][f"dice_vs_{better}_values"]
            mean, lower, upper = -m, -hi, -lo
        resolved = _resolved(lower, upper, True)
        verdict = {
            "yes, better": "resolved, as the paper orders",
            "yes, worse": "resolved, the reverse of the paper",
            "no": "not resolved",
        }[resolved]
        out.append(
            {
                "claim": claim,
                "pair": f"{better} − {worse}",
                "delta": _ci_text(mean, lower, upper, 3, signed=True),
                "values": [mean, lower, upper],
                "verdict": verdict,
            }
        )
    return out


COLUMNS = {
    "title": "arm",
    "seeds": "training seeds",
    "n": "test images",
    "dice": "LV Dice (mean ± sd over seeds)",
    "dice_ci": "LV Dice [95 % CI]",
    "dice_vs_full": "Δ Dice vs full [95 % CI]",
    "dice_vs_full_resolved": "resolved",
    "dice_vs_nnunet": "Δ Dice vs nnU-Net [95 % CI]",
    "dice_vs_nnunet_resolved": "resolved",
    "hd": "LV HD mm (mean ± sd over seeds)",
    "hd_vs_full": "Δ HD mm vs full [95 % CI]",
    "hd_vs_full_resolved": "resolved",
}
ORDERING_COLUMNS = {"claim": "claim", "pair": "pair", "delta": "Δ LV Dice [95 % CI]", "verdict": "verdict"}
GRADE_COLUMNS = {"title": "arm", **{f"dice_{g}": f"LV Dice {g} [95 % CI]" for g in GRADES}}


def dice_plot(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    """LV Dice per arm: the mean over seeds and test images with its 95 % interval; the seeds' means as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 0.5 + 0.45 * len(rows)))
    for i, r in enumerate(rows):
        ax.errorbar(
            r["dice_mean"],
            i,
            xerr=[[r["dice_mean"] - r["dice_lower"]], [r["dice_upper"] - r["dice_mean"]]],
            fmt="o",
            color="k",
            capsize=3,
        )
        ax.plot(list(r["dice_per_seed"].values()), [i] * len(r["dice_per_seed"]), ".", color="tab:blue", alpha=0.7)
    ax.set_yticks(range(len(rows)), [r["title"] for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("LV Dice (mean, 95 % bootstrap interval over seeds and patients; dots: seeds)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _grades(settings: Mapping[str, Any], cases: Sequence[str]) -> dict[str, str]:
    dataset = RawDataset(Path(settings["dataset"]))
    return {c: str(dataset.record(c).get("image_quality") or "") for c in cases}


def run(
    works: str | Sequence[str],
    out: str = "experiments/results/echo_dnd_seeds",
    arms: str | Sequence[str] | None = None,
    n_boot: int = 2000,
    note: str | None = None,
) -> str:
    """Pool the runs in ``works`` (comma-separated working folders of ``echo_dnd_tables``, one per seed).

    Args:
        works: the working folders.
        out: results folder (markdown, JSON, PNG).
        arms: comma-separated arms (default: every arm evaluated in all runs).
        n_boot: bootstrap draws.
        note: a remark on the conditions for the header.

    Returns:
        The markdown path.
    """
    folders = [w.strip() for w in works.split(",")] if isinstance(works, str) else [str(w) for w in works]
    names = None if arms is None else ([a.strip() for a in arms.split(",")] if isinstance(arms, str) else list(arms))
    settings, runs = load_runs([f for f in folders if f])
    found = collect(runs, names)
    cases = sorted(next(iter(next(iter(found.values())).values())))
    grades = _grades(settings, cases) if settings.get("dataset") else {}
    rows = seeded_rows(found, grades, n_boot=int(n_boot))
    orderings = ordering_rows(rows)
    out_dir = Path(out).resolve()
    dice_plot(out_dir / "dice_per_arm_seeds.png", rows)
    counts = {g: sum(1 for c in cases if grades.get(c) == g) for g in GRADES}
    lines = [
        f"Runs: seeds {', '.join(map(str, runs))} of `experiments.echo_dnd_tables` ({settings.get('mode')} mode) on "
        f"`{settings.get('dataset')}`; {len(cases)} test images; grades {counts}.",
        f"Echo-DND `{settings.get('network_config')}` at {settings.get('image_size')} px, {settings.get('steps')} "
        f"steps, {settings.get('sampling_steps')} DDIM steps, ensemble {settings.get('ensemble')}; nnU-Net "
        f"`{settings.get('nnunet_trainer')}` seeded with the same seed.",
        "Intervals: two-stage percentile bootstrap "
        f"({n_boot:,} draws) over training seeds and test patients; Δ is the arm minus the reference, image by image "
        "for the same seed; a difference is resolved when its 95 % interval excludes 0.",
        *([f"Note: {note}"] if note else []),
        "",
        "## LV, all test images",
        "",
        markdown_table(rows, COLUMNS),
        "",
        "## LV Dice by image quality grade",
        "",
        markdown_table(rows, GRADE_COLUMNS),
        "",
        "## The papers' orderings",
        "",
        markdown_table(orderings, ORDERING_COLUMNS),
        "",
        "Plot: `dice_per_arm_seeds.png`.",
        "",
    ]
    per_case = {
        arm: {
            str(s): {c: [_float(r[c].get(col)) for _, col, _, _ in METRICS] for c in cases} for s, r in per_seed.items()
        }
        for arm, per_seed in found.items()
    }
    results = {
        "runs": {str(s): str(w) for s, w in runs.items()},
        "settings": settings,
        "rows": rows,
        "orderings": orderings,
        "grades": grades,
        "per_case": {"columns": [col for _, col, _, _ in METRICS], "values": per_case},
        "note": note,
    }
    command = "python -m experiments.echo_dnd_seeds " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    md = write_results(out_dir, NAME, "\n".join(lines), results, command)
    print(f"wrote {md}")
    return str(md)


def main() -> None:
    import fire  # the command line only

    fire.Fire(run)


if __name__ == "__main__":
    main()
