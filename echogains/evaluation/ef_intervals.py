"""EF with a 95 % interval from a sampler's members (Echo-DND's ``{case}_samples.nii.gz``), per patient.

Input: beside a prediction ``pred_dir/{case}.nii.gz``, the optional ``{case}_samples.nii.gz`` (the Echo-DND bundle
writes it): a uint8 3D image of size ``(W, H, R)``, slice ``k`` the binary (0/1) LV mask of member ``k`` on the
label file's pixel grid (in-plane size, spacing, origin and direction of the label file; the slice axis is not
compared). A folder without samples files evaluates exactly as before (no interval). :func:`check_samples` reads
every samples file of the evaluated cases before anything is written and raises one
:class:`~echogains.utils.EchoDataError` naming the file when it is unreadable, not a 3D stack in its label's
in-plane geometry, not binary, has another member count than the patient's other images, or when some but not all
of a patient's images have one.

Members: each member's LV mask gives its profile as the prediction does (:func:`~echogains.clinical.lv_profile`:
largest component, long axis from the annulus midpoint to the apex, 20 discs), with the prediction's MYO and LA
masks for the annulus when the prediction has them, so that the point estimate and the draws find the annulus by
the same rule. An empty or degenerate member has no profile; the draws using it have no EF.

Joint draws. The model segments each image on its own, so given the images its samples of a patient's 2CH/4CH
ED/ES images are independent; the EF they imply is that of one member of every image, chosen independently. A joint
draw is therefore a combination ``(k_1, ..., k_n)``, one member per image used by the patient's EF, and every
combination counts once: all ``R_1 * ... * R_n`` of them (10^4 for four images of 10 members) are enumerated when
there are at most :data:`MAX_DRAWS`, else :data:`MAX_DRAWS` combinations are drawn uniformly with a generator
seeded by :data:`DRAW_SEED` and the patient id (CRC-32), so the same inputs give the same interval. Pairing member
``k`` of every image instead (``R`` draws) would need ``R`` in the tens for a 95 % interval, and in the Echo-DND
bundle member ``k`` of every case starts from the same noise (each case's generator is seeded with the same seed),
so the paired members share that noise draw rather than being independent.

Which members: every member by default; ``evaluate(..., interval_members="bernoulli")`` keeps those of the named
chains only (:func:`member_selection`, from the run record ``echo_dnd_inference.json``, whose ``cases[].members``
names the chain of every slice). ``experiments/echo_dnd_ef_intervals.py`` measures both on the phantom. With the
demo weights and ``--ensemble 5``, Gaussian member 3 fails on all 80 test images of each phantom, so the intervals
of all members are hundreds of EF points wide. The 5 Bernoulli members (chosen on a development phantom) cover the
analytic EF for 16 of 20 held-out patients, with a mean width of 6.40 EF points: they are narrower than the
prediction's error.

Each draw's EF is computed as the point estimate's (:func:`~echogains.clinical.ef_from_profiles`): the same method
(Simpson biplane when 2CH and 4CH exist at ED and ES, else area-length on one view), the same frames (those whose
predicted LV has a profile), every 2CH x 4CH frame pair of a phase averaged. The interval is the 2.5-97.5 %
percentile range of the finite draw EFs (:func:`~echogains.clinical.percentile_interval`).
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from echogains.data.nnunet import RawDataset, read_image
from echogains.evaluation.clinical import (
    LVProfile,
    area_length_from_profile,
    biplane_volume_from_profiles,
    canonical_view,
    lv_profile,
    percentile_interval,
)
from echogains.evaluation.images import as_2d, in_plane_problem
from echogains.utils import EchoDataError, get_logger

__all__ = [
    "SAMPLES_SUFFIX",
    "MAX_DRAWS",
    "DRAW_SEED",
    "LEVEL",
    "JOINT_DRAWS",
    "EFInterval",
    "FrameMembers",
    "samples_path",
    "check_samples",
    "member_selection",
    "chain_names",
    "read_members",
    "member_profiles",
    "draw_indices",
    "ef_interval",
    "interval_summary",
]

log = get_logger(__name__)

#: Suffix of the samples file beside ``{case}.nii.gz`` (Echo-DND's ``{case}_samples.nii.gz``).
SAMPLES_SUFFIX = "_samples"
#: At most this many joint draws per patient (all combinations when there are no more).
MAX_DRAWS = 20_000
#: Seed of the draws when the combinations are too many to enumerate (with the patient id's CRC-32).
DRAW_SEED = 0
#: Level of the interval.
LEVEL = 0.95
#: The Echo-DND run record beside the predictions: its ``cases[].members`` names the chain of every member.
RECORD_NAME = "echo_dnd_inference.json"
JOINT_DRAWS = (
    "one member of every image used by the patient's EF, chosen independently (the model segments each image on "
    f"its own); every combination once when there are at most {MAX_DRAWS}, else {MAX_DRAWS} combinations drawn "
    f"uniformly (seed {DRAW_SEED} and the patient id); EF of a draw as the point estimate's (same method and "
    f"frames); interval = {100 * (1 - LEVEL) / 2:g}-{100 * (1 + LEVEL) / 2:g} % percentiles of the draws' EF"
)


@dataclass(frozen=True)
class EFInterval:
    """A patient's EF interval: ``low``/``high`` percentiles of ``n_finite`` of ``n_draws`` draws of ``n_members``."""

    low: float
    high: float
    n_members: int
    n_draws: int
    n_finite: int

    @property
    def width(self) -> float:
        return self.high - self.low

    def covers(self, value: float) -> bool | None:
        """Whether ``value`` lies in ``[low, high]`` (``None`` when ``value`` is not finite)."""
        return None if not math.isfinite(value) else bool(self.low <= value <= self.high)


@dataclass(frozen=True)
class FrameMembers:
    """One image of a patient: its view, phase, the prediction's profile (``None``: not used) and its members'."""

    view: str
    phase: str
    point: LVProfile | None
    members: Sequence[LVProfile | None]


# --- input --------------------------------------------------------------------------------------------------------
def samples_path(pred_dir: Path, case_id: str, file_ending: str = ".nii.gz") -> Path:
    return pred_dir / f"{case_id}{SAMPLES_SUFFIX}{file_ending}"


def _checked_members(path: Path, label_path: Path) -> np.ndarray:
    """The members ``(R, H, W)`` (bool) of one samples file, checked against its label file."""
    image = read_image(path)  # unreadable: EchoDataError naming the file
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise EchoDataError(path, "expected one channel (W, H, members) of 0/1 masks")
    problem = in_plane_problem(image, as_2d(read_image(label_path), label_path))
    if problem:
        raise EchoDataError(path, f"samples geometry differs from {label_path.name}: {problem}")
    members = sitk.GetArrayFromImage(image)
    if not np.isin(members, (0, 1)).all():
        raise EchoDataError(path, "samples must be binary 0/1 masks, found other values")
    return members.astype(bool)


def check_samples(
    dataset: RawDataset, case_ids: Sequence[str], pred_dir: Path, patients: Mapping[str, str]
) -> dict[str, Path]:
    """Check the samples files of ``case_ids``; return ``{case_id: path}`` of those present (empty without any).

    Args:
        dataset: the raw dataset (label files, file ending).
        case_ids: the evaluated cases.
        pred_dir: the prediction folder.
        patients: ``{case_id: patient}``.

    Raises:
        EchoDataError: naming the file (see the module docstring).
    """
    found = {c: samples_path(pred_dir, c, dataset.file_ending) for c in case_ids}
    found = {c: p for c, p in found.items() if p.is_file()}
    counts: dict[str, list[tuple[int, Path]]] = {}
    for case, path in found.items():
        n = _checked_members(path, dataset.label_path(case)).shape[0]
        counts.setdefault(patients[case], []).append((n, path))
    for files in counts.values():  # the odd file out: its count differs from the patient's most common one
        usual = max(dict.fromkeys(n for n, _ in files), key=[n for n, _ in files].count)
        for n, path in files:
            if n != usual:
                raise EchoDataError(path, f"{n} members, but the patient's other images have {usual}")
    for case in case_ids:
        if patients[case] in counts and case not in found:
            raise EchoDataError(
                samples_path(pred_dir, case, dataset.file_ending),
                f"missing, while {counts[patients[case]][0][1].name} of the same patient exists",
            )
    return found


def chain_names(chains: str | Sequence[str]) -> list[str]:
    names = [c.strip() for c in chains.split(",")] if isinstance(chains, str) else [str(c).strip() for c in chains]
    return [n for n in names if n]


def member_selection(
    pred_dir: Path, samples: Mapping[str, Path], chains: str | Sequence[str] | None
) -> dict[str, list[int]]:
    """Members of each samples file that form the draws: ``{}`` (all) when ``chains`` is ``None``, else the indices
    of the members whose chain (``cases[].members`` of the run record, e.g. ``bernoulli``) is among ``chains``.

    Raises:
        EchoDataError: no run record, a case without a ``members`` list of its file's length, or none of ``chains``.
    """
    if chains is not None and not samples:
        log.warning("interval_members %s: no {case}_samples.nii.gz in %s, so no EF interval", chains, pred_dir)
    if chains is None or not samples:
        return {}
    names, record_path = chain_names(chains), pred_dir / RECORD_NAME
    if not record_path.is_file():
        raise EchoDataError(record_path, f"missing; it names the chain of each member (asked for {names})")
    try:
        cases = json.loads(record_path.read_text())["cases"]
        by_case = {str(c["case_id"]): [str(n) for n in c.get("members") or []] for c in cases}
    except (ValueError, KeyError, TypeError) as err:
        raise EchoDataError(record_path, f"not a run record with cases[].members ({err})") from None
    out = {}
    for case, path in samples.items():
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        members, n = by_case.get(case, []), reader.GetSize()[2]
        if len(members) != n:
            raise EchoDataError(record_path, f"{case}: {len(members)} member names for the {n} of {path.name}")
        out[case] = [k for k, n in enumerate(members) if n in names]
        if not out[case]:
            raise EchoDataError(record_path, f"{case}: no member of {names} (its members: {sorted(set(members))})")
    return out


def read_members(path: Path) -> np.ndarray:
    """The member masks ``(R, H, W)`` (bool) of a samples file already checked by :func:`check_samples`."""
    return sitk.GetArrayFromImage(read_image(path)).astype(bool)


def member_profiles(
    members: np.ndarray, spacing: Sequence[float], myo: np.ndarray | None = None, la: np.ndarray | None = None
) -> list[LVProfile | None]:
    """LV profile of every member (``None`` for an empty or degenerate one), the annulus found with ``myo``/``la``."""
    out: list[LVProfile | None] = []
    for mask in members:
        profile = None
        if mask.any():
            try:
                profile = lv_profile(mask, spacing, myo, la)
            except ValueError:
                profile = None
        out.append(profile)
    return out


# --- draws ----------------------------------------------------------------------------------------------------------
def draw_indices(n_members: Sequence[int], patient: str, max_draws: int = MAX_DRAWS) -> np.ndarray:
    """Member index of every image in every joint draw, ``(D, n_images)``: all combinations or a seeded sample."""
    total = math.prod(int(r) for r in n_members)
    if total <= max_draws:
        grids = np.meshgrid(*[np.arange(int(r)) for r in n_members], indexing="ij")
        return np.stack([g.ravel() for g in grids], axis=1) if grids else np.zeros((1, 0), dtype=int)
    rng = np.random.default_rng([DRAW_SEED, zlib.crc32(patient.encode("utf-8"))])
    return np.stack([rng.integers(0, int(r), max_draws) for r in n_members], axis=1)


def _volumes(values: Sequence[float | None]) -> np.ndarray:
    return np.asarray([float("nan") if v is None else v for v in values], dtype=np.float64)


def _phase_volumes(frames: Sequence[FrameMembers], method: str, phase: str, draws: np.ndarray) -> np.ndarray:
    """Volume of ``phase`` in each draw (NaN where a member used has no profile)."""
    index = {id(f): i for i, f in enumerate(frames)}
    of = {v: [f for f in frames if f.phase == phase and f.view == v] for v in ("2CH", "4CH")}
    terms = []
    if method == "biplane":
        for a in of["2CH"]:
            for b in of["4CH"]:
                table = np.array(
                    [
                        _volumes([biplane_volume_from_profiles(p, q) if p and q else None for q in b.members])
                        for p in a.members
                    ]
                )
                terms.append(table[draws[:, index[id(a)]], draws[:, index[id(b)]]])
    else:
        view = method.split()[-1]
        for f in (f for f in frames if f.phase == phase and f.view == view):
            column = _volumes([area_length_from_profile(p) if p else None for p in f.members])
            terms.append(column[draws[:, index[id(f)]]])
    return np.mean(terms, axis=0)


def ef_interval(
    patient: str, frames: Sequence[FrameMembers], method: str, pairing: str = "independent"
) -> EFInterval | None:
    """The patient's EF interval from its frames' members, for the point estimate's ``method``.

    Args:
        patient: the patient id (seeds the draws when they are sampled).
        frames: every frame of the patient; those without members or without a point profile are not used.
        method: the point estimate's method (``biplane``, ``area-length <view>``; ``infeasible`` gives ``None``).
        pairing: ``independent`` (the joint draws of the module docstring, what ``evaluate`` uses) or ``index``
            (draw ``k`` = member ``k`` of every image; ``R`` draws; for comparison, e.g. in the experiments).

    Returns:
        ``None`` when the method is infeasible, a used frame has no members, or fewer than two draws have an EF.
    """
    if method == "infeasible":
        return None
    views = ("2CH", "4CH") if method == "biplane" else (method.split()[-1],)
    used = [
        FrameMembers(canonical_view(f.view), f.phase.upper(), f.point, f.members)
        for f in frames
        if f.point is not None and f.phase.upper() in ("ED", "ES") and canonical_view(f.view) in views
    ]
    if not used or any(len(f.members) == 0 for f in used):
        return None
    counts = [len(f.members) for f in used]
    if pairing == "index":
        if len(set(counts)) != 1:
            return None
        draws = np.repeat(np.arange(counts[0])[:, None], len(used), axis=1)
    elif pairing == "independent":
        draws = draw_indices(counts, patient)
    else:
        raise ValueError(f"pairing must be 'independent' or 'index', got {pairing!r}")
    edv, esv = (_phase_volumes(used, method, phase, draws) for phase in ("ED", "ES"))
    ok = np.isfinite(edv) & np.isfinite(esv) & (edv > 0)
    ef = np.where(ok, 100.0 * (edv - esv) / np.where(ok, edv, 1.0), np.nan)
    interval = percentile_interval(ef, LEVEL)
    if interval is None:
        return None
    return EFInterval(interval[0], interval[1], len(used[0].members), int(len(draws)), int(ok.sum()))


# --- summary ------------------------------------------------------------------------------------------------------
def _coverage(intervals: Sequence[EFInterval], values: Sequence[float]) -> dict[str, Any]:
    flags = [i.covers(v) for i, v in zip(intervals, values)]
    known = [f for f in flags if f is not None]
    return {
        "n": len(known),
        "covered": int(sum(known)),
        "fraction": (sum(known) / len(known)) if known else float("nan"),
    }


def interval_summary(
    members_used: str,
    patients: Sequence[str],
    intervals: Sequence[EFInterval | None],
    reference: Sequence[float],
    gt_masks: Sequence[float],
    point: Sequence[float],
) -> dict[str, Any] | None:
    """Coverage and width of the patients' intervals, and each patient's (``None`` when no patient has one).

    Args:
        members_used: which members formed the draws (``all``, or the chains chosen).
        patients: patient ids.
        intervals: per patient (``None``: no interval).
        reference: the reference EF per patient (NaN when unknown).
        gt_masks: the EF of the ground-truth masks per patient.
        point: the predicted (point) EF per patient.
    """
    kept = [(i, r, g, p, n) for n, i, r, g, p in zip(patients, intervals, reference, gt_masks, point) if i]
    if not kept:
        return None
    chosen = [k[0] for k in kept]
    out: dict[str, Any] = {
        "level": LEVEL,
        "joint_draws": JOINT_DRAWS,
        "members_used": members_used,
        "n_patients": len(chosen),
        "members_per_image": sorted({i.n_members for i in chosen}),
        "draws_per_patient": sorted({i.n_draws for i in chosen}),
        "finite_draws_per_patient": sorted({i.n_finite for i in chosen}),  # those the percentiles used
        "width_pct": {
            "mean": float(np.mean([i.width for i in chosen])),
            "median": float(np.median([i.width for i in chosen])),
            "min": float(min(i.width for i in chosen)),
            "max": float(max(i.width for i in chosen)),
        },
        "coverage_gt_masks": _coverage(chosen, [k[2] for k in kept]),
        "point_in_interval": _coverage(chosen, [k[3] for k in kept]),
    }
    if any(math.isfinite(k[1]) for k in kept):
        out["coverage_reference"] = _coverage(chosen, [k[1] for k in kept])
    out["patients"] = [
        {"patient": n, "ef_pct": p, "ef_low_pct": i.low, "ef_high_pct": i.high, "ef_ref_pct": r, "ef_gt_pct": g}
        for i, r, g, p, n in kept
    ]
    return out
