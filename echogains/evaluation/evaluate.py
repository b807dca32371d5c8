"""``echogains evaluate``: score predictions against an nnU-Net raw dataset and write a report folder.

Inputs: predictions ``pred_dir/{case}.nii.gz`` (nnU-Net predict naming, same geometry as the label files) and
the dataset's labels (``labelsTs`` / ``labelsTr``), records (``cases.json``: patient, view, phase, reference
volumes/EF, sector geometry) and label names (``dataset.json``).

Every prediction is checked first (present, readable, same size/spacing/origin/direction as its label file, label
values of ``dataset.json``); any problem raises :class:`~echogains.utils.EchoDataError` naming the file before a
single output is written. The labels scored are those given with ``labels``, else those the model declares (the
``dataset.json`` that ``nnUNetv2_predict`` writes into its output folder), else the foreground labels of
``dataset.json`` that at least one prediction contains: a label the model never predicts (e.g. MYO and LA for an
LV-only model) is not scored, so it is never counted as a failure; the summary and the report say which labels
were evaluated and which were not. Outputs in ``out_dir`` (all written atomically):

- ``metrics_per_case.csv``: Dice, HD, HD95, MSD (mm) per case and label (see :mod:`.metrics` for the
  empty-mask policy), with patient, view, phase, depth and sector angle;
- ``metrics_summary.json``: mean/std/median per label over all cases, by phase, by view, by image quality grade
  when the records carry one (``quality=Good``/``Medium``/``Poor``, as CAMUS and the phantom record) and, when the
  records carry sector geometry, by depth (< / >= 150 mm) and sector angle (< / >= 70 deg) as in the EchoGAINS paper's
  Table 4; EF/volume agreement (bias, limits of agreement, Pearson r, MAE);
- ``ef_per_patient.csv``: EDV/ESV/EF from the prediction, from the ground-truth masks and the reference, and the
  patient's ``acquisition_subset``; with sample masks ``{case}_samples.nii.gz`` beside the predictions (Echo-DND's
  members) the 95 % EF interval ``ef_low_pct``/``ef_high_pct`` from ``ef_interval_samples`` joint draws (those with
  a finite EF; a draw with an empty member mask has none) of
  ``ef_interval_members`` members per image (:mod:`.ef_intervals`; empty without samples), its coverage of the
  reference and ground-truth-mask EF and its width in the summary's ``clinical.ef_intervals``, error bars in the
  Bland-Altman plots of the prediction;
- ``bland_altman_*.png``, ``correlation_*.png``, ``overlays/{case}.png``, ``uncertainty.png`` (when the prediction
  folder holds ``{case}_uncertainty.nii.gz`` maps, as Echo-DND writes) and ``report.html`` linking them.

Acquisition subsets (EchoGAINS Table 4; its Fig. 14 uses the same cut-offs): a patient is ``deep_or_wide`` when at
least one of its frames was acquired with depth >= 150 mm or sector angle >= 70 deg, else ``standard``. They describe
the acquisition, not the heart.

Nothing is resampled here: predictions must already be in the label files' geometry (the Echo-DND bundle writes
them there from its soft output, ``scripts.data.mask_to_input``; nnU-Net exports them there), and the overlays and
the uncertainty gallery draw every map on its own pixel grid.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from echogains.data.nnunet import RawDataset, read_image
from echogains.evaluation.clinical import LVProfile, PatientEF, ef_from_profiles, lv_profile
from echogains.evaluation.ef_intervals import (
    EFInterval,
    FrameMembers,
    check_samples,
    ef_interval,
    interval_summary,
    member_profiles,
    member_selection,
    read_members,
)
from echogains.evaluation.ef_intervals import (
    chain_names as _chain_names,
)
from echogains.evaluation.images import as_2d as _as_2d
from echogains.evaluation.images import geometry_problem as _geometry_problem
from echogains.evaluation.metrics import EMPTY_MASK_POLICY, SegmentationScores, agreement_stats, case_scores, describe
from echogains.evaluation.plots import (
    bland_altman_plot,
    correlation_plot,
    overlay_plot,
)
from echogains.evaluation.report import write_report
from echogains.evaluation.uncertainty import UNCERTAINTY_GALLERY_CASES as UNCERTAINTY_GALLERY_CASES
from echogains.evaluation.uncertainty import sampling_note as _sampling_note
from echogains.evaluation.uncertainty import uncertainty_maps as _uncertainty_maps
from echogains.evaluation.uncertainty import write_uncertainty_gallery as _write_uncertainty_gallery
from echogains.utils import EchoDataError, atomic_write_json, atomic_write_text, get_logger, to_jsonable
from echogains.utils import progress as progress_bar

__all__ = [
    "evaluate",
    "select_labels",
    "labels_to_evaluate",
    "check_predictions",
    "acquisition_subset",
    "DEPTH_CUTOFF_MM",
    "ANGLE_CUTOFF_DEG",
    "SUBSET_STANDARD",
    "SUBSET_DEEP_OR_WIDE",
]

log = get_logger(__name__)

#: EchoGAINS Table 4 subsets: depth < / >= 150 mm, sector angle < / >= 70 degrees.
DEPTH_CUTOFF_MM = 150.0
ANGLE_CUTOFF_DEG = 70.0
#: Values of ``acquisition_subset`` (``ef_per_patient.csv``, the report): EchoGAINS Table 4's acquisition subsets.
SUBSET_STANDARD = "standard"
SUBSET_DEEP_OR_WIDE = "deep_or_wide"
SUBSET_DEFINITIONS = {
    SUBSET_STANDARD: f"every frame with depth < {DEPTH_CUTOFF_MM:g} mm and sector angle < {ANGLE_CUTOFF_DEG:g} deg",
    SUBSET_DEEP_OR_WIDE: f"a frame with depth >= {DEPTH_CUTOFF_MM:g} mm or sector angle >= {ANGLE_CUTOFF_DEG:g} deg",
}
_SUBSET_NOTE = (
    "Acquisition subsets of EchoGAINS Table 4: deep_or_wide = at least one frame acquired with depth >= "
    f"{DEPTH_CUTOFF_MM:g} mm or sector angle >= {ANGLE_CUTOFF_DEG:g} deg, standard = the others; they describe "
    "the acquisition, not the heart."
)
_METRICS = ("dice", "hd_mm", "hd95_mm", "msd_mm")
#: How the scored labels were chosen (summary ``label_selection``) -> why the others were not scored.
_ASKED = "the labels asked for (labels option)"
_DECLARED = "the labels the model declares (dataset.json of the prediction folder)"
_PRESENT = "the labels of dataset.json that at least one prediction contains"
_ALL = "every foreground label of dataset.json (no prediction contains any foreground label)"
_WHY_NOT = {
    _ASKED: "not asked for",
    _DECLARED: "the model does not declare them and no prediction contains them",
    _PRESENT: "no prediction contains them, so they are not scored and not counted as failures",
    _ALL: "",
}
_CLINICAL_METHOD = (
    "LV volumes by the modified Simpson biplane method of discs (20 discs, long axis from the mitral annulus "
    "midpoint to the apex, L = the longer of the two views' axes) when 2CH and 4CH exist at ED and ES, else "
    "single-view area-length 8A^2/(3 pi L); every 2CH frame paired with every 4CH frame of a phase, volumes averaged; "
    "EF = 100 (EDV - ESV) / EDV."
)


@dataclass
class CaseResult:
    """Everything kept of one evaluated case (the masks themselves are not kept)."""

    case_id: str
    patient: str
    view: str
    phase: str
    depth_mm: float
    opening_deg: float
    scores: dict[str, SegmentationScores]
    pred_profile: LVProfile | None = None
    gt_profile: LVProfile | None = None
    reference: dict[str, Any] = field(default_factory=dict)
    members: list[LVProfile | None] | None = None  # profiles of the sample masks' members (None: no samples)
    quality: str = ""  # the record's image quality grade (CAMUS ImageQuality: Good/Medium/Poor), "" when unknown


# --- input checks -----------------------------------------------------------------------------------------------
def select_labels(dataset: RawDataset, labels: str | Sequence[str] | None = None) -> dict[str, int]:
    """Foreground labels to score, ``{name: value}`` in ``dataset.json`` names (all foreground when ``None``).

    Args:
        dataset: the raw dataset.
        labels: names (case-insensitive), as a list or a comma-separated string.
    """
    foreground = {name: value for name, value in dataset.labels.items() if value != 0}
    if labels is None:
        return dict(sorted(foreground.items(), key=lambda kv: kv[1]))
    names = [s.strip() for s in labels.split(",")] if isinstance(labels, str) else [str(s).strip() for s in labels]
    by_lower = {k.lower(): k for k in foreground}
    unknown = [n for n in names if n.lower() not in by_lower]
    if unknown or not names:
        raise EchoDataError(
            dataset.root / "dataset.json",
            f"labels {unknown or names} not among its foreground labels {sorted(foreground)}",
        )
    chosen = {by_lower[n.lower()]: foreground[by_lower[n.lower()]] for n in names}
    return dict(sorted(chosen.items(), key=lambda kv: kv[1]))


def labels_to_evaluate(
    dataset: RawDataset,
    predicted_values: set[int],
    labels: str | Sequence[str] | None = None,
    declared: Mapping[str, int] | None = None,
) -> tuple[dict[str, int], str]:
    """The labels to score and one sentence saying how they were chosen.

    Args:
        dataset: the raw dataset (its ``dataset.json`` names the labels).
        predicted_values: label values found in the predictions (any case).
        labels: names given by the user (see :func:`select_labels`); first choice.
        declared: the labels the model says it predicts (the ``dataset.json`` that ``nnUNetv2_predict`` writes into
            its output folder); second choice, matched to the dataset's labels by name.

    With neither, the foreground labels of ``dataset.json`` present in at least one prediction, or all of them when
    no prediction has any foreground (then every case is a failure, as it should be).
    """
    if labels is not None:
        return select_labels(dataset, labels), _ASKED
    foreground = select_labels(dataset)
    names = {str(k).lower() for k, v in (declared or {}).items() if v != 0}
    chosen = {k: v for k, v in foreground.items() if k.lower() in names or v in predicted_values}
    if names and chosen:
        return chosen, _DECLARED
    present = {name: value for name, value in foreground.items() if value in predicted_values}
    if not present:
        return foreground, _ALL
    return present, _PRESENT


def _declared_labels(pred_dir: Path) -> dict[str, int] | None:
    """``{name: value}`` of the ``dataset.json`` that ``nnUNetv2_predict`` writes beside its predictions (or None).

    Raises:
        EchoDataError: the file exists but is not a JSON object with a ``labels`` mapping.
    """
    path = pred_dir / "dataset.json"
    if not path.is_file():
        return None
    try:
        labels = json.loads(path.read_text())["labels"]
        return {str(k): int(v) for k, v in labels.items() if not isinstance(v, (list, tuple))}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise EchoDataError(path, f"not a dataset.json with a labels mapping ({err})") from None


def _check_one(pred_path: Path, label_path: Path, allowed: set[int]) -> set[int]:
    pred = _as_2d(read_image(pred_path), pred_path)
    ref = _as_2d(read_image(label_path), label_path)
    problem = _geometry_problem(pred, ref)
    if problem:
        raise EchoDataError(pred_path, f"geometry differs from {label_path.name}: {problem}")
    array = sitk.GetArrayViewFromImage(pred)
    if np.issubdtype(array.dtype, np.floating) and not np.all(np.mod(array, 1) == 0):
        raise EchoDataError(pred_path, "prediction has non-integer values; expected a label map")
    values = {int(v) for v in np.unique(array)}
    if not values <= allowed:
        raise EchoDataError(
            pred_path, f"label values {sorted(values - allowed)} not in dataset.json labels {sorted(allowed)}"
        )
    return values


def check_predictions(dataset: RawDataset, case_ids: Sequence[str], pred_dir: str | os.PathLike) -> dict[str, Path]:
    """Check every prediction of ``case_ids`` against its label file; return ``{case_id: prediction path}``.

    Raises:
        EchoDataError: as :func:`_check_predictions`.
    """
    return _check_predictions(dataset, case_ids, pred_dir)[0]


def _check_predictions(
    dataset: RawDataset, case_ids: Sequence[str], pred_dir: str | os.PathLike
) -> tuple[dict[str, Path], set[int]]:
    """:func:`check_predictions`, and the label values found in the predictions.

    Raises:
        EchoDataError: missing folder, missing predictions or ground truth (all named), unreadable files,
            geometry or label-value mismatches (naming the prediction file).
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise EchoDataError(pred_dir, "prediction folder not found")
    no_gt = [c for c in case_ids if not dataset.has_label(c)]
    if no_gt:
        raise EchoDataError(
            dataset.root, f"{len(no_gt)} cases have no ground-truth label file: {', '.join(no_gt[:10])}"
        )
    paths = {c: pred_dir / f"{c}{dataset.file_ending}" for c in case_ids}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise EchoDataError(
            pred_dir,
            f"{len(missing)} predictions missing: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}",
        )
    allowed = set(dataset.labels.values())
    found: set[int] = set()
    for c, p in paths.items():
        found |= _check_one(p, dataset.label_path(c), allowed)
    return paths, found


# --- per case ---------------------------------------------------------------------------------------------------
def _finite_or_nan(value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return value if math.isfinite(value) else float("nan")


def _case_meta(dataset: RawDataset, case_id: str) -> dict[str, Any]:
    rec = dataset.record(case_id)
    parts = case_id.split("_")
    sector = rec.get("sector") or {}
    return {
        "patient": str(rec.get("patient", parts[0])),
        "view": str(rec.get("view") or (parts[1] if len(parts) > 2 else "")),
        "phase": str(rec.get("phase") or (parts[2] if len(parts) > 2 else "")).upper(),
        "depth_mm": _finite_or_nan(sector.get("depth_mm")),
        "opening_deg": _finite_or_nan(sector.get("opening_deg")),
        "reference": dict(rec.get("reference") or {}),
        "quality": str(rec.get("image_quality") or ""),
    }


def _named_value(dataset: RawDataset, name: str) -> int | None:
    return next((v for k, v in dataset.labels.items() if k.lower() == name.lower()), None)


def _safe_profile(
    label: np.ndarray, spacing: Sequence[float], values: Mapping[str, int | None], case_id: str
) -> LVProfile | None:
    """LV profile of a label map, or ``None`` when the LV is empty or degenerate (a failure, not an error)."""
    lv = label == values["LV"]
    if not lv.any():
        return None
    myo = label == values["MYO"] if values["MYO"] is not None else None
    la = label == values["LA"] if values["LA"] is not None else None
    try:
        return lv_profile(lv, spacing, myo, la)
    except ValueError as err:
        log.warning("%s: no LV volume (%s)", case_id, err)
        return None


def _evaluate_case(
    dataset: RawDataset,
    case_id: str,
    pred_path: Path,
    labels: Mapping[str, int],
    overlay_dir: Path | None,
    samples: Path | None = None,
    keep: Sequence[int] | None = None,
) -> CaseResult:
    image, gt, spacing = dataset.load(case_id)
    pred = sitk.GetArrayFromImage(_as_2d(read_image(pred_path), pred_path)).astype(np.int64)
    meta = _case_meta(dataset, case_id)
    result = CaseResult(case_id=case_id, scores=case_scores(pred, gt, spacing, labels), **meta)
    values = {name: _named_value(dataset, name) for name in ("LV", "MYO", "LA")}
    if values["LV"] is not None:
        result.pred_profile = _safe_profile(pred, spacing, values, case_id)
        result.gt_profile = _safe_profile(gt, spacing, values, case_id)
        if samples is not None:  # the prediction's MYO/LA find the members' annulus as they find its own
            myo, la = (pred == values[n] if values[n] is not None else None for n in ("MYO", "LA"))
            members = read_members(samples)
            result.members = member_profiles(members if keep is None else members[list(keep)], spacing, myo, la)
    if overlay_dir is not None:
        first = next(iter(labels), None)
        title = case_id if first is None else f"{case_id}  {first} Dice {result.scores[first].dice:.3f}"
        axes = [p.axis if p else None for p in (result.gt_profile, result.pred_profile)]
        overlay_plot(image, gt, pred, labels, spacing, overlay_dir / f"{case_id}.png", title, long_axes=axes)
    return result


# --- summaries --------------------------------------------------------------------------------------------------
def _groups(results: Sequence[CaseResult]) -> dict[str, list[CaseResult]]:
    """Case groups of the summary: all, by phase, by view, by image quality grade (``quality=Good``, as CAMUS
    records it), by depth and sector-angle subset (when known; no empty group)."""
    groups: dict[str, list[CaseResult]] = {"all": list(results)}
    for key in ("phase", "view", "quality"):
        for value in sorted({getattr(r, key) for r in results if getattr(r, key)}):
            groups[f"{key}={value}"] = [r for r in results if getattr(r, key) == value]
    cuts = (("depth", "depth_mm", DEPTH_CUTOFF_MM, "mm"), ("angle", "opening_deg", ANGLE_CUTOFF_DEG, "deg"))
    for name, attr, cut, unit in cuts:
        known = [r for r in results if math.isfinite(getattr(r, attr))]
        for key, members in (
            (f"{name}<{cut:g}{unit}", [r for r in known if getattr(r, attr) < cut]),
            (f"{name}>={cut:g}{unit}", [r for r in known if getattr(r, attr) >= cut]),
        ):
            if members:
                groups[key] = members
    return groups


def _label_summary(results: Sequence[CaseResult], label: str) -> dict[str, Any]:
    scores = [r.scores[label] for r in results]
    out: dict[str, Any] = {"n_cases": len(scores), "n_failures": sum(s.failure for s in scores)}
    for metric in _METRICS:
        out[metric] = describe(getattr(s, metric) for s in scores)
    return out


def segmentation_summary(results: Sequence[CaseResult], labels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{group: {label: {n_cases, n_failures, dice: stats, hd_mm: stats, ...}}}`` (stats from :func:`describe`)."""
    return {
        group: {label: _label_summary(members, label) for label in labels}
        for group, members in _groups(results).items()
    }


@dataclass
class _PatientRow:
    patient: str
    pred: PatientEF
    gt: PatientEF
    reference: dict[str, float]
    acquisition_subset: str | None  # SUBSET_STANDARD / SUBSET_DEEP_OR_WIDE; None without sector geometry
    interval: EFInterval | None = None  # EF interval from the sample masks (None without samples)


def _reference(results: Sequence[CaseResult]) -> dict[str, float]:
    for r in results:
        ref = {k: _finite_or_nan(r.reference.get(k)) for k in ("edv_ml", "esv_ml", "ef_pct")}
        if any(math.isfinite(v) for v in ref.values()):
            return ref
    return {"edv_ml": float("nan"), "esv_ml": float("nan"), "ef_pct": float("nan")}


def acquisition_subset(results: Sequence[CaseResult]) -> str | None:
    """EchoGAINS Table 4 subset of a patient's frames: ``deep_or_wide`` when a frame has depth >= 150 mm or sector
    angle >= 70 deg, else ``standard``; ``None`` when no frame records its sector geometry."""
    known = [r for r in results if math.isfinite(r.depth_mm) or math.isfinite(r.opening_deg)]
    if not known:
        return None
    deep_or_wide = any(r.depth_mm >= DEPTH_CUTOFF_MM or r.opening_deg >= ANGLE_CUTOFF_DEG for r in known)
    return SUBSET_DEEP_OR_WIDE if deep_or_wide else SUBSET_STANDARD


def patient_rows(results: Sequence[CaseResult]) -> list[_PatientRow]:
    """EF per patient from the predicted and the ground-truth masks, with the reference and the acquisition subset."""
    pred = ef_from_profiles((r.patient, r.view, r.phase, r.pred_profile) for r in results)
    gt = ef_from_profiles((r.patient, r.view, r.phase, r.gt_profile) for r in results)
    rows = []
    for patient in sorted(pred):
        members = [r for r in results if r.patient == patient]
        row = _PatientRow(patient, pred[patient], gt[patient], _reference(members), acquisition_subset(members))
        if any(r.members is not None for r in members):
            frames = [FrameMembers(r.view, r.phase, r.pred_profile, r.members or []) for r in members]
            row.interval = ef_interval(patient, frames, row.pred.method)
        rows.append(row)
    return rows


_COMPARISONS = {
    "prediction vs reference": ("pred_vs_reference", lambda r: r.pred, lambda r: r.reference),
    "prediction vs GT masks": ("pred_vs_gt", lambda r: r.pred, lambda r: r.gt),
    "GT masks vs reference": ("gt_vs_reference", lambda r: r.gt, lambda r: r.reference),
}


def _value(source: PatientEF | Mapping[str, float], key: str) -> float:
    return _finite_or_nan(source[key] if isinstance(source, Mapping) else getattr(source, key))


def _agreement(rows: Sequence[_PatientRow]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, (_, measured, reference) in _COMPARISONS.items():
        out[name] = {
            key: agreement_stats([_value(measured(r), key) for r in rows], [_value(reference(r), key) for r in rows])
            for key in ("ef_pct", "edv_ml", "esv_ml")
        }
    return out


def clinical_summary(rows: Sequence[_PatientRow], interval_members: str = "all") -> dict[str, Any]:
    """EF feasibility and agreement, overall and, with sector geometry, per non-empty acquisition subset.

    ``acquisition_subsets`` gives the definition and the patients of each subset; ``agreement_by_acquisition_subset``
    holds only the subsets with patients (an empty subset has no table).
    """
    summary: dict[str, Any] = {
        "method": _CLINICAL_METHOD,
        "n_patients": len(rows),
        "n_feasible_pred": sum(math.isfinite(r.pred.ef_pct) for r in rows),
        "n_feasible_gt": sum(math.isfinite(r.gt.ef_pct) for r in rows),
        "n_with_reference": sum(math.isfinite(r.reference["ef_pct"]) for r in rows),
        "agreement": _agreement(rows),
    }
    ef = {src: [_value(getattr(r, src), "ef_pct") for r in rows] for src in ("reference", "gt", "pred")}
    intervals = interval_summary(interval_members, [r.patient for r in rows], [r.interval for r in rows], *ef.values())
    if intervals is not None:
        summary["ef_intervals"] = intervals
    if any(r.acquisition_subset is not None for r in rows):
        members = {name: [r for r in rows if r.acquisition_subset == name] for name in SUBSET_DEFINITIONS}
        summary["acquisition_subsets"] = {
            "note": _SUBSET_NOTE,
            "definitions": dict(SUBSET_DEFINITIONS),
            "n_patients": {name: len(m) for name, m in members.items()},
        }
        summary["agreement_by_acquisition_subset"] = {name: _agreement(m) for name, m in members.items() if m}
    return summary


# --- writers ----------------------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (float, np.floating)):
        return "" if not math.isfinite(float(value)) else format(float(value), ".10g")
    return str(value)


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[_cell(v) for v in row] for row in rows])
    atomic_write_text(path, buffer.getvalue())


def _write_case_csv(path: Path, results: Sequence[CaseResult], labels: Sequence[str]) -> None:
    header = ["case_id", "patient", "view", "phase", "depth_mm", "opening_deg"]
    header += [f"{label}_{m}" for label in labels for m in (*_METRICS, "failure")]
    header += ["lv_length_pred_mm", "lv_length_gt_mm", "lv_annulus_method_gt"]
    rows = []
    for r in results:
        row: list[Any] = [r.case_id, r.patient, r.view, r.phase, r.depth_mm, r.opening_deg]
        for label in labels:
            s = r.scores[label]
            row += [s.dice, s.hd_mm, s.hd95_mm, s.msd_mm, s.failure]
        row += [p.axis.length if p else None for p in (r.pred_profile, r.gt_profile)]
        row.append(r.gt_profile.axis.method if r.gt_profile else "")
        rows.append(row)
    _write_csv(path, header, rows)


#: ``ef_per_patient.csv`` columns of the EF interval from the sample masks (empty without samples).
_INTERVAL_COLUMNS = ("ef_low_pct", "ef_high_pct", "ef_interval_members", "ef_interval_samples")


def _write_patient_csv(path: Path, rows: Sequence[_PatientRow]) -> None:
    header = ["patient", "n_ed", "n_es", "acquisition_subset"]
    for src in ("pred", "gt"):
        header += [f"method_{src}", f"edv_{src}_ml", f"esv_{src}_ml", f"ef_{src}_pct"]
    header += ["edv_ref_ml", "esv_ref_ml", "ef_ref_pct", *_INTERVAL_COLUMNS]
    out = []
    for r in rows:
        line: list[Any] = [r.patient, r.pred.n_frames.get("ED", 0), r.pred.n_frames.get("ES", 0), r.acquisition_subset]
        for ef in (r.pred, r.gt):
            line += [ef.method, ef.edv_ml, ef.esv_ml, ef.ef_pct]
        line += [r.reference["edv_ml"], r.reference["esv_ml"], r.reference["ef_pct"]]
        i = r.interval
        line += [None] * len(_INTERVAL_COLUMNS) if i is None else [i.low, i.high, i.n_members, i.n_finite]
        out.append(line)
    _write_csv(path, header, out)


def _write_plots(out_dir: Path, rows: Sequence[_PatientRow]) -> list[str]:
    """Bland-Altman and correlation plots of EF for each comparison with at least one pair; relative paths."""
    written = []
    flags = [r.acquisition_subset == SUBSET_DEEP_OR_WIDE for r in rows]
    groups = flags if any(r.acquisition_subset is not None for r in rows) else None
    group_labels = (SUBSET_STANDARD, SUBSET_DEEP_OR_WIDE)  # defined in the report's text
    for name, (slug, measured, reference) in _COMPARISONS.items():
        a = [_value(measured(r), "ef_pct") for r in rows]
        b = [_value(reference(r), "ef_pct") for r in rows]
        if not any(math.isfinite(x) and math.isfinite(y) for x, y in zip(a, b)):
            continue
        bars = [(r.interval.low, r.interval.high) if r.interval else None for r in rows] if slug[:4] == "pred" else []
        for kind, plot in (("bland_altman", bland_altman_plot), ("correlation", correlation_plot)):
            rel = f"{kind}_ef_{slug}.png"
            extra: dict[str, Any] = {"intervals": bars} if kind == "bland_altman" and any(bars) else {}
            plot(a, b, out_dir / rel, title=f"EF: {name}", groups=groups, group_labels=group_labels, **extra)
            written.append(rel)
    return written


# --- entry point ------------------------------------------------------------------------------------------------
def evaluate(
    pred_dir: str | os.PathLike,
    dataset_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    subset: str = "Ts",
    labels: str | Sequence[str] | None = None,
    overlays: bool = True,
    progress: bool = True,
    fold: int | None = None,
    interval_members: str | Sequence[str] | None = None,
) -> dict[str, Any]:
    """Evaluate predictions of an nnU-Net raw dataset's cases and write metrics, EF agreement, plots and a report.

    Args:
        pred_dir: folder of predictions ``{case}.nii.gz`` in the label files' geometry.
        dataset_dir: the nnU-Net raw dataset (``dataset.json``, ``cases.json``, ``labelsTs``/``labelsTr``).
        out_dir: output folder (created; existing outputs of the same names are replaced).
        subset: which cases: ``Ts`` (default), ``Tr``, ``all``, or ``train``/``val`` of ``fold``.
        labels: label names to score (default: the foreground labels of ``dataset.json`` that at least one
            prediction contains, see :func:`labels_to_evaluate`); EF needs ``LV``.
        overlays: write ``overlays/{case}.png``.
        progress: show a progress bar.
        fold: fold for ``subset="train"``/``"val"``.
        interval_members: with sample masks, the chains whose members form the EF interval's draws (names of the
            run record's ``cases[].members``, e.g. ``bernoulli``); default every member.

    Returns:
        The summary as written to ``metrics_summary.json`` (NaN as ``None``).

    Raises:
        EchoDataError: any input problem, raised before an output is written.
    """
    dataset = RawDataset(dataset_dir)
    case_ids = dataset.case_ids(subset, fold)
    if not case_ids:
        raise EchoDataError(dataset.root, f"no cases in subset {subset!r}")
    if labels is not None:
        select_labels(dataset, labels)  # an unknown name is an error before the predictions are read
    pred_paths, predicted = _check_predictions(dataset, case_ids, pred_dir)
    patients = {c: _case_meta(dataset, c)["patient"] for c in case_ids}
    samples = check_samples(dataset, case_ids, Path(pred_dir), patients)  # {} without sample masks
    keep = member_selection(Path(pred_dir), samples, interval_members)  # {}: every member
    label_map, label_selection = labels_to_evaluate(dataset, predicted, labels, _declared_labels(Path(pred_dir)))
    uncertainty = _uncertainty_maps(dataset, case_ids, Path(pred_dir))
    out = Path(out_dir)
    overlay_dir = out / "overlays" if overlays else None
    iterable = progress_bar(case_ids, total=len(case_ids), desc="evaluate") if progress else case_ids
    results = [
        _evaluate_case(dataset, c, pred_paths[c], label_map, overlay_dir, samples.get(c), keep.get(c)) for c in iterable
    ]
    return _write_outputs(
        out,
        dataset,
        Path(pred_dir),
        subset,
        label_map,
        results,
        overlays,
        label_selection=label_selection,
        uncertainty=uncertainty,
        pred_paths=pred_paths,
        interval_members="all" if interval_members is None else ",".join(_chain_names(interval_members)),
    )


def _write_outputs(
    out: Path,
    dataset: RawDataset,
    pred_dir: Path,
    subset: str,
    label_map: Mapping[str, int],
    results: Sequence[CaseResult],
    overlays: bool,
    label_selection: str = _ASKED,
    uncertainty: Mapping[str, Path] | None = None,
    pred_paths: Mapping[str, Path] | None = None,
    interval_members: str = "all",
) -> dict[str, Any]:
    labels = list(label_map)
    not_evaluated = {k: v for k, v in select_labels(dataset).items() if k not in label_map}
    files = {"per-case metrics": "metrics_per_case.csv", "summary": "metrics_summary.json"}
    summary: dict[str, Any] = {
        "dataset": str(dataset.root),
        "predictions": str(pred_dir),
        "subset": subset,
        "labels": dict(label_map),
        "label_selection": label_selection,
        "labels_not_evaluated": not_evaluated,
        "labels_not_evaluated_because": _WHY_NOT.get(label_selection, "") if not_evaluated else "",
        "n_cases": len(results),
        "n_patients": len({r.patient for r in results}),
        "empty_mask_policy": EMPTY_MASK_POLICY,
        "subset_cutoffs": {"depth_mm": DEPTH_CUTOFF_MM, "opening_deg": ANGLE_CUTOFF_DEG},
        "segmentation": segmentation_summary(results, labels),
    }
    _write_case_csv(out / files["per-case metrics"], results, labels)
    plots: list[str] = []
    if _named_value(dataset, "LV") is not None:
        rows = patient_rows(results)
        files["EF per patient"] = "ef_per_patient.csv"
        _write_patient_csv(out / files["EF per patient"], rows)
        summary["clinical"] = clinical_summary(rows, interval_members)
        plots = _write_plots(out, rows)
    overlay_files = [f"overlays/{r.case_id}.png" for r in results] if overlays else []
    if uncertainty and pred_paths:
        summary["uncertainty"] = {
            "gallery": _write_uncertainty_gallery(
                out, dataset, uncertainty, pred_paths, _named_value(dataset, "LV") or next(iter(label_map.values()), 1)
            ),
            "maps": [p.name for p in uncertainty.values()],
            "note": _sampling_note(pred_dir),
        }
    summary["files"] = {**files, "plots": plots, "overlays": overlay_files, "report": "report.html"}
    atomic_write_json(out / files["summary"], summary)
    write_report(out, summary, files, plots, overlay_files)
    log.info("evaluated %d cases of %s; report at %s", len(results), dataset.root, out / "report.html")
    return to_jsonable(summary)
