"""Dice / HD / HD95 / MSD on hand-computed masks with anisotropic spacing, empty-mask policy, agreement stats."""

from __future__ import annotations

import math

import numpy as np
import pytest

from echogains.evaluation.metrics import agreement_stats, binary_scores, case_scores, describe

SX, SY = 0.5, 0.3  # (sx, sy) mm, SimpleITK order: columns 0.5 mm apart, rows 0.3 mm apart


def _square(top: int, left: int, size: int = 10, shape: tuple[int, int] = (32, 32)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


@pytest.mark.parametrize("k", [1, 2, 3])
def test_squares_offset_along_rows(k):
    gt, pred = _square(8, 8), _square(8 + k, 8)
    s = binary_scores(pred, gt, (SX, SY))
    assert s.dice == pytest.approx((10 - k) / 10)  # overlap (10 - k) x 10 of two 10 x 10 squares
    assert s.hd_mm == pytest.approx(k * SY)  # the top and bottom edges move by k rows of SY mm
    assert s.hd95_mm <= s.hd_mm + 1e-9
    assert not s.failure


def test_squares_offset_along_columns_use_sx():
    s = binary_scores(_square(8, 10), _square(8, 8), (SX, SY))
    assert s.hd_mm == pytest.approx(2 * SX)
    assert s.dice == pytest.approx(0.8)


def test_hand_computed_lines_with_mean_surface_distance():
    """gt: row 2, cols 2..4; pred: row 4, cols 2..6. Edges are the pixels themselves."""
    gt = np.zeros((8, 8), bool)
    pred = np.zeros((8, 8), bool)
    gt[2, 2:5] = True
    pred[4, 2:7] = True
    s = binary_scores(pred, gt, (SX, SY))
    # directed pred -> gt: (4,2..4) -> 2 SY; (4,5) -> hypot(2 SY, SX); (4,6) -> hypot(2 SY, 2 SX); gt -> pred: 2 SY each
    d = [2 * SY] * 6 + [math.hypot(2 * SY, SX), math.hypot(2 * SY, 2 * SX)]
    assert s.dice == 0.0
    assert s.hd_mm == pytest.approx(max(d))
    assert s.msd_mm == pytest.approx(sum(d) / len(d))
    assert not s.failure  # both masks present: a miss, not an empty-mask failure


def test_single_pixels():
    gt, pred = np.zeros((6, 9), bool), np.zeros((6, 9), bool)
    gt[2, 2], pred[5, 6] = True, True
    s = binary_scores(pred, gt, (SX, SY))
    expected = math.hypot(3 * SY, 4 * SX)
    assert (s.hd_mm, s.hd95_mm, s.msd_mm) == pytest.approx((expected, expected, expected))


def test_identical_masks_are_perfect():
    m = _square(5, 7, 12)
    s = binary_scores(m, m, (SX, SY))
    assert (s.dice, s.hd_mm, s.hd95_mm, s.msd_mm) == (1.0, 0.0, 0.0, 0.0)


def test_empty_mask_policy():
    empty, full = np.zeros((16, 16), bool), _square(3, 3, 5, (16, 16))
    both = binary_scores(empty, empty, (SX, SY))
    assert (both.dice, both.hd_mm, both.hd95_mm, both.msd_mm, both.failure) == (1.0, 0.0, 0.0, 0.0, False)
    for pred, gt in ((empty, full), (full, empty)):
        s = binary_scores(pred, gt, (SX, SY))
        assert s.dice == 0.0 and s.failure
        assert math.isnan(s.hd_mm) and math.isnan(s.hd95_mm) and math.isnan(s.msd_mm)


def test_case_scores_per_label_value():
    gt = np.zeros((32, 32), np.uint8)
    gt[_square(8, 8)] = 1
    gt[_square(20, 20, 4)] = 2
    pred = gt.copy()
    pred[pred == 2] = 0  # MYO missed entirely
    scores = case_scores(pred, gt, (SX, SY), {"LV": 1, "MYO": 2, "LA": 3})
    assert scores["LV"].dice == 1.0 and scores["LV"].hd_mm == 0.0
    assert scores["MYO"].failure and scores["MYO"].dice == 0.0
    assert scores["LA"].dice == 1.0 and not scores["LA"].failure  # absent in both


def test_agreement_stats_known_numbers():
    stats = agreement_stats([1, 2, 3, 4, float("nan")], [0, 2, 2, 5, 7])
    # differences 1, 0, 1, -1: bias 0.25, sample sd sqrt(2.75 / 3)
    sd = math.sqrt(2.75 / 3)
    assert stats["n"] == 4
    assert stats["bias"] == pytest.approx(0.25)
    assert stats["sd"] == pytest.approx(sd)
    assert stats["loa_lower"] == pytest.approx(0.25 - 1.96 * sd)
    assert stats["loa_upper"] == pytest.approx(0.25 + 1.96 * sd)
    assert stats["mae"] == pytest.approx(0.75)
    assert stats["pearson_r"] == pytest.approx(7.5 / math.sqrt(5 * 12.75))


def test_describe_ignores_nan():
    d = describe([1.0, float("nan"), 3.0, 2.0])
    assert (d["n"], d["mean"], d["median"], d["min"], d["max"]) == (3, 2.0, 2.0, 1.0, 3.0)
    assert d["std"] == pytest.approx(1.0)
    assert describe([])["n"] == 0
