"""A self-contained HTML report that links the evaluation outputs (relative links only)."""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from echogains.utils import atomic_write_text

__all__ = ["write_report", "render_report"]

_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1100px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
.gallery img { width: 240px; margin: 3px; border: 1px solid #ccc; }
.plots img { width: 420px; margin: 6px; }
"""

_METRIC_COLUMNS = (("dice", "Dice"), ("hd_mm", "HD (mm)"), ("hd95_mm", "HD95 (mm)"), ("msd_mm", "MSD (mm)"))
_AGREEMENT_COLUMNS = (
    ("n", "n"),
    ("bias", "bias"),
    ("loa_lower", "LoA low"),
    ("loa_upper", "LoA high"),
    ("pearson_r", "Pearson r"),
    ("mae", "MAE"),
)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _mean_std(stats: Mapping[str, Any]) -> str:
    return f"{_fmt(stats.get('mean'))} ± {_fmt(stats.get('std'))}"


def _segmentation_table(segmentation: Mapping[str, Any]) -> str:
    head = (
        "<tr><th>group</th><th>label</th><th>n</th><th>failures</th>"
        + "".join(f"<th>{t}</th>" for _, t in _METRIC_COLUMNS)
        + "</tr>"
    )
    rows = []
    for group, per_label in segmentation.items():
        for label, stats in per_label.items():
            cells = "".join(f"<td>{_mean_std(stats[key])}</td>" for key, _ in _METRIC_COLUMNS)
            rows.append(
                f"<tr><td class='text'>{html.escape(group)}</td><td class='text'>{html.escape(label)}</td>"
                f"<td>{stats['n_cases']}</td><td>{stats['n_failures']}</td>{cells}</tr>"
            )
    return f"<table>{head}{''.join(rows)}</table>"


def _agreement_table(agreement: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    head = (
        "<tr><th>comparison</th><th>quantity</th>" + "".join(f"<th>{t}</th>" for _, t in _AGREEMENT_COLUMNS) + "</tr>"
    )
    rows = []
    for comparison, quantities in agreement.items():
        for quantity, stats in quantities.items():
            cells = "".join(f"<td>{_fmt(stats.get(key), 2)}</td>" for key, _ in _AGREEMENT_COLUMNS)
            rows.append(
                f"<tr><td class='text'>{html.escape(comparison)}</td>"
                f"<td class='text'>{html.escape(quantity)}</td>{cells}</tr>"
            )
    return f"<table>{head}{''.join(rows)}</table>"


def _labels_line(summary: Mapping[str, Any]) -> str:
    """Which labels were scored, how they were chosen, and which labels of the dataset were not."""
    evaluated = ", ".join(html.escape(str(k)) for k in summary.get("labels", {})) or "none"
    text = f"<p>Labels evaluated: <b>{evaluated}</b> ({html.escape(str(summary.get('label_selection', '')))})"
    skipped = list(summary.get("labels_not_evaluated") or {})
    if skipped:
        because = str(summary.get("labels_not_evaluated_because") or "")
        text += f"; not evaluated: {', '.join(html.escape(str(k)) for k in skipped)}"
        text += f" ({html.escape(because)})" if because else ""
    return text + ".</p>"


def _subset_sections(clinical: Mapping[str, Any]) -> list[str]:
    """One explanatory line and a table per non-empty acquisition subset (none when one subset holds everyone)."""
    subsets = clinical.get("acquisition_subsets")
    if not subsets:
        return []
    counts = {k: int(v) for k, v in subsets.get("n_patients", {}).items()}
    parts = [
        f"<h3>Acquisition subsets</h3><p>{html.escape(str(subsets.get('note', '')))} "
        + ", ".join(f"{html.escape(k)}: {n} patient{'s' if n != 1 else ''}" for k, n in counts.items())
        + ".</p>"
    ]
    by_subset = clinical.get("agreement_by_acquisition_subset", {})
    if len(by_subset) == 1:
        only = next(iter(by_subset))
        parts.append(f"<p>Every patient is in the {html.escape(only)} subset: the table above is that subset.</p>")
        return parts
    for name, agreement in by_subset.items():
        definition = subsets.get("definitions", {}).get(name, "")
        parts += [
            f"<h3>{html.escape(name)} ({html.escape(definition)}; n = {counts.get(name, 0)})</h3>",
            _agreement_table(agreement),
        ]
    return parts


def _uncertainty_section(uncertainty: Mapping[str, Any]) -> list[str]:
    gallery = uncertainty.get("gallery")
    if not gallery:
        return []
    maps = ", ".join(f"<code>{html.escape(str(m))}</code>" for m in uncertainty.get("maps", []))
    note = html.escape(str(uncertainty.get("note") or ""))
    return [
        "<h2>Uncertainty maps</h2>",
        f"<p>The maps as the model wrote them ({maps}), on each image's pixel grid, with a fixed colour scale from 0 "
        f"(every sample agrees) to 1 (the samples split evenly); the dashed contour is the predicted mask. {note}</p>",
        f"<a href='{html.escape(gallery, quote=True)}'><img src='{html.escape(gallery, quote=True)}' "
        "alt='uncertainty maps' style='max-width:760px'></a>",
    ]


def _coverage_text(name: str, stats: Mapping[str, Any] | None) -> str:
    if not stats or not stats.get("n"):
        return ""
    return f"{name}: {stats['covered']} of {stats['n']} ({_fmt(stats.get('fraction'), 2)}); "


def _interval_section(intervals: Mapping[str, Any]) -> list[str]:
    """The EF intervals from the sample masks: coverage, width and one row per patient (nothing without them)."""
    if not intervals:
        return []
    width = intervals.get("width_pct", {})
    level = 100 * float(intervals.get("level", 0.95))
    coverage = (
        _coverage_text("reference EF", intervals.get("coverage_reference"))
        + _coverage_text("ground-truth-mask EF", intervals.get("coverage_gt_masks"))
        + _coverage_text("predicted EF", intervals.get("point_in_interval"))
    )
    rows = "".join(
        f"<tr><td class='text'>{html.escape(str(p['patient']))}</td><td>{_fmt(p.get('ef_pct'), 1)}</td>"
        f"<td>{_fmt(p.get('ef_low_pct'), 1)} – {_fmt(p.get('ef_high_pct'), 1)}</td>"
        f"<td>{_fmt(p.get('ef_ref_pct'), 1)}</td><td>{_fmt(p.get('ef_gt_pct'), 1)}</td></tr>"
        for p in intervals.get("patients", [])
    )
    return [
        f"<h3>EF with a {level:g} % interval from the sample masks</h3>",
        f"<p>Members used: {html.escape(str(intervals.get('members_used', 'all')))}. "
        f"Joint draws: {html.escape(str(intervals.get('joint_draws', '')))}. "
        f"{intervals.get('n_patients', 0)} patients, members per image "
        f"{html.escape(', '.join(str(m) for m in intervals.get('members_per_image', [])))}. "
        f"Intervals containing the {coverage}width mean {_fmt(width.get('mean'), 2)}, "
        f"median {_fmt(width.get('median'), 2)} EF points.</p>",
        "<table><tr><th>patient</th><th>EF (%)</th><th>interval</th><th>reference EF</th><th>GT-mask EF</th></tr>"
        f"{rows}</table>",
    ]


def _link(rel: str) -> str:
    return f"<a href='{html.escape(rel, quote=True)}'>{html.escape(rel)}</a>"


def render_report(
    summary: Mapping[str, Any], files: Mapping[str, str], plots: Sequence[str], overlays: Sequence[str]
) -> str:
    """HTML text of the report.

    Args:
        summary: the summary dictionary written to ``metrics_summary.json``.
        files: ``{description: relative path}`` of the tables to link.
        plots: relative paths of the Bland-Altman / correlation PNGs (shown inline).
        overlays: relative paths of the overlay PNGs (thumbnails linking to the full image).
    """
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>echogains evaluation</title>",
        f"<style>{_STYLE}</style></head><body><h1>Segmentation evaluation</h1>",
        f"<p>Dataset: <code>{html.escape(str(summary.get('dataset', '')))}</code>; predictions: "
        f"<code>{html.escape(str(summary.get('predictions', '')))}</code>; "
        f"subset {html.escape(str(summary.get('subset', '')))}; "
        f"{summary.get('n_cases', 0)} cases, {summary.get('n_patients', 0)} patients.</p>",
        "<h2>Files</h2><ul>" + "".join(f"<li>{html.escape(k)}: {_link(v)}</li>" for k, v in files.items()) + "</ul>",
        "<h2>Segmentation (mean ± std)</h2>",
        _labels_line(summary),
        f"<p>Empty-mask policy: {html.escape(str(summary.get('empty_mask_policy', '')))}</p>",
        _segmentation_table(summary.get("segmentation", {})),
    ]
    clinical = summary.get("clinical", {})
    if clinical:
        parts += [
            "<h2>Ejection fraction and volumes</h2>",
            f"<p>{html.escape(str(clinical.get('method', '')))}</p>",
            f"<p>Patients with an EF from the prediction: {clinical.get('n_feasible_pred', 0)} "
            f"of {clinical.get('n_patients', 0)}.</p>",
            _agreement_table(clinical.get("agreement", {})),
        ]
        parts += _subset_sections(clinical)
        parts += _interval_section(clinical.get("ef_intervals") or {})
    if plots:
        parts.append(
            "<div class='plots'>"
            + "".join(
                f"<a href='{html.escape(p, quote=True)}'>"
                f"<img src='{html.escape(p, quote=True)}' alt='{html.escape(p)}'></a>"
                for p in plots
            )
            + "</div>"
        )
    parts += _uncertainty_section(summary.get("uncertainty") or {})
    if overlays:
        parts.append("<h2>Contour overlays (solid: reference, dashed: prediction)</h2><div class='gallery'>")
        parts += [
            f"<a href='{html.escape(p, quote=True)}'><img src='{html.escape(p, quote=True)}' "
            f"alt='{html.escape(Path(p).stem)}' title='{html.escape(Path(p).stem)}'></a>"
            for p in overlays
        ]
        parts.append("</div>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(
    out_dir: str | os.PathLike,
    summary: Mapping[str, Any],
    files: Mapping[str, str],
    plots: Sequence[str] = (),
    overlays: Sequence[str] = (),
    name: str = "report.html",
) -> Path:
    """Write ``out_dir/report.html`` atomically; all links are relative to ``out_dir``.

    Args:
        out_dir: the evaluation output folder.
        summary: the summary dictionary.
        files: ``{description: relative path}`` of tables/JSON to link.
        plots: relative PNG paths shown inline.
        overlays: relative overlay PNG paths shown as a gallery.
        name: file name of the report.
    """
    path = Path(out_dir) / name
    atomic_write_text(path, render_report(summary, files, plots, overlays))
    return path
