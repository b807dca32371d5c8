"""Segmentation metrics in mm (MONAI) and agreement statistics.

Per case and label: Dice, Hausdorff distance (HD, the 100th percentile, and HD95), and the mean absolute
(average symmetric surface) distance, MSD. Distances are computed by MONAI's
``compute_hausdorff_distance`` / ``compute_average_surface_distance`` on the masks' edge pixels with
``spacing=(sy, sx)`` (MONAI takes the spacing in array-axis order, rows first), so they are in mm.
MSD is MONAI's symmetric average surface distance: the mean over the edge pixels of both masks of the distance
to the other mask's edge.

Empty-mask policy (also written into the summary and the report):

- ground truth and prediction both empty: Dice 1, HD = HD95 = MSD = 0 (a correct "absent");
- exactly one of them empty: Dice 0, HD = HD95 = MSD = NaN, and the case counts as a *failure* of that label.
  Summaries average Dice over all cases (failures included, as 0) and distances over the non-failed cases,
  and report the number of failures next to them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "EMPTY_MASK_POLICY",
    "SegmentationScores",
    "binary_scores",
    "case_scores",
    "describe",
    "agreement_stats",
]

EMPTY_MASK_POLICY = (
    "Both masks empty: Dice 1, distances 0. Exactly one mask empty: Dice 0, distances NaN, counted as a failure; "
    "summaries average Dice over all cases (failures as 0) and distances over the non-failed cases."
)


@dataclass(frozen=True)
class SegmentationScores:
    """Scores of one label of one case; distances in mm.

    Args:
        dice: Dice coefficient in [0, 1].
        hd_mm: Hausdorff distance (maximum of the two directed distances).
        hd95_mm: 95th-percentile Hausdorff distance.
        msd_mm: mean (average symmetric) surface distance.
        gt_empty: the ground-truth mask has no pixel of the label.
        pred_empty: the prediction has no pixel of the label.
    """

    dice: float
    hd_mm: float
    hd95_mm: float
    msd_mm: float
    gt_empty: bool
    pred_empty: bool

    @property
    def failure(self) -> bool:
        """Exactly one of prediction and ground truth is empty."""
        return self.gt_empty != self.pred_empty

    def as_dict(self) -> dict[str, float | bool]:
        return {**asdict(self), "failure": self.failure}


def _monai_scores(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> tuple[float, float, float, float]:
    """Dice, HD, HD95, MSD of two non-empty masks with MONAI (imported here: torch is slow to import)."""
    import torch
    from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance

    p = torch.from_numpy(np.ascontiguousarray(pred, dtype=bool))[None, None]
    g = torch.from_numpy(np.ascontiguousarray(gt, dtype=bool))[None, None]
    sp = (float(spacing[1]), float(spacing[0]))  # MONAI: spacing per array axis (rows, cols) = (sy, sx)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # MONAI-internal deprecation notice
        dice = compute_dice(p, g, include_background=True)
        hd = compute_hausdorff_distance(p, g, include_background=True, spacing=sp)
        hd95 = compute_hausdorff_distance(p, g, include_background=True, percentile=95, spacing=sp)
        msd = compute_average_surface_distance(p, g, include_background=True, symmetric=True, spacing=sp)
    return float(dice), float(hd), float(hd95), float(msd)


def binary_scores(pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]) -> SegmentationScores:
    """Dice, HD, HD95 and MSD of two boolean masks ``[rows, cols]`` with pixel spacing (sx, sy) mm.

    Args:
        pred: predicted mask.
        gt: ground-truth mask of the same shape.
        spacing: (sx, sy) in mm, SimpleITK order.
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"masks must be 2D and of equal shape, got {pred.shape} and {gt.shape}")
    gt_empty, pred_empty = not gt.any(), not pred.any()
    if gt_empty and pred_empty:
        return SegmentationScores(1.0, 0.0, 0.0, 0.0, True, True)
    if gt_empty or pred_empty:
        nan = float("nan")
        return SegmentationScores(0.0, nan, nan, nan, gt_empty, pred_empty)
    return SegmentationScores(*_monai_scores(pred, gt, spacing), False, False)


def case_scores(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], labels: Mapping[str, int]
) -> dict[str, SegmentationScores]:
    """Scores per label of one case.

    Args:
        pred: predicted label map ``[rows, cols]``.
        gt: ground-truth label map of the same shape.
        spacing: (sx, sy) in mm.
        labels: ``{name: value}`` of the foreground labels to score, e.g. ``{"LV": 1, "MYO": 2}``.
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    return {name: binary_scores(pred == value, gt == value, spacing) for name, value in labels.items()}


def describe(values: Iterable[float]) -> dict[str, float | int]:
    """Mean, standard deviation (ddof=1), median, min, max and count of the finite values (NaN when none)."""
    arr = np.asarray([float(v) for v in values], dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    nan = float("nan")
    if arr.size == 0:
        return {"mean": nan, "std": nan, "median": nan, "min": nan, "max": nan, "n": 0}
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else nan,
        "median": float(np.median(arr)),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "n": int(arr.size),
    }


def agreement_stats(measured: Sequence[float], reference: Sequence[float]) -> dict[str, float | int]:
    """Bland-Altman agreement of paired measurements (pairs with a NaN are dropped).

    Returns ``n``, ``bias`` = mean(measured - reference), ``sd`` of the differences (ddof=1), limits of agreement
    ``loa_lower``/``loa_upper`` = bias -/+ 1.96 sd, Pearson ``pearson_r`` and mean absolute error ``mae``.

    Args:
        measured: e.g. automatic EF.
        reference: e.g. manual EF, same length.
    """
    a, b = np.asarray(measured, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"measured and reference differ in length ({a.shape} vs {b.shape})")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    nan = float("nan")
    out: dict[str, float | int] = {
        "n": int(a.size),
        "bias": nan,
        "sd": nan,
        "loa_lower": nan,
        "loa_upper": nan,
        "pearson_r": nan,
        "mae": nan,
    }
    if a.size == 0:
        return out
    diff = a - b
    out["bias"] = float(diff.mean())
    out["mae"] = float(np.abs(diff).mean())
    if a.size > 1:
        out["sd"] = float(diff.std(ddof=1))
        out["loa_lower"] = out["bias"] - 1.96 * out["sd"]
        out["loa_upper"] = out["bias"] + 1.96 * out["sd"]
        if a.std() > 0 and b.std() > 0:
            out["pearson_r"] = float(np.corrcoef(a, b)[0, 1])
    return out
