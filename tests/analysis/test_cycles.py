"""ED/ES detection against the phantom's analytic truth curves; truth curves of the phantom loops."""

from __future__ import annotations

import numpy as np
import pytest

from echogains.analysis.cycles import Beat, detect_beats, fill_gaps, min_beat_frames
from echogains.data.phantom import sample_params, simulate_cycle
from echogains.data.phantom_curves import cycle_truth, half_sequence_truth


def _truth(index: int, fps: float, n_beats: int = 3, view: str = "4CH"):
    cycle = simulate_cycle(
        index, "camus-like", 0, image_size=(64, 64), render_images=False, n_beats=n_beats, fps=fps, view=view
    )
    return cycle, cycle_truth(cycle, "x.avi")


@pytest.mark.parametrize("fps", [25.0, 50.0])
def test_exact_on_the_analytic_volume_curve(fps: float) -> None:
    for index in (1, 2, 3, 4):
        _, truth = _truth(index, fps)
        beats = detect_beats(truth.volume_ml, fps)
        assert [(b.ed, b.es, b.next_ed) for b in beats] == list(truth.beats)


def test_truth_curve_matches_the_rendered_labels_and_periodicity() -> None:
    cycle, truth = _truth(2, 30.0, n_beats=2, view="2CH")
    area = (cycle.labels == 1).sum(axis=(1, 2))
    assert len(truth.beats) == 2 and truth.ed_frames[0] == cycle.ed_frame
    assert truth.volume_ml[list(truth.ed_frames)] == pytest.approx(truth.volume_ml.max())
    assert truth.volume_ml[list(truth.es_frames)] == pytest.approx(truth.volume_ml.min())
    assert 100 * (1 - truth.volume_ml.min() / truth.volume_ml.max()) == pytest.approx(truth.true_ef_pct, abs=1e-6)
    assert np.corrcoef(area, truth.volume_ml)[0, 1] > 0.95  # the masks follow the 3D volume
    # within +-1 frame on the label area curve (a pixel grid, not the 3D volume)
    for b, t in zip(detect_beats(area.astype(float), 30.0), truth.beats):
        assert abs(b.ed - t[0]) <= 1 and abs(b.es - t[1]) <= 1


def test_one_frame_mask_failure_does_not_move_the_beat() -> None:
    _, truth = _truth(3, 50.0, n_beats=2)
    for offset in (-3, -2, 2):  # two or three frames from the second ED: without the median it would become the ED
        spiked = truth.volume_ml.copy()
        spiked[truth.beats[1][0] + offset] = 1.3 * spiked.max()  # e.g. a mask leaking into the atrium
        assert [(b.ed, b.es, b.next_ed) for b in detect_beats(spiked, 50.0)] == list(truth.beats)


def test_noise_within_one_frame_and_short_loops_have_no_beat() -> None:
    _, truth = _truth(1, 30.0, n_beats=3)
    noisy = truth.volume_ml * (1 + 0.005 * np.random.default_rng(0).standard_normal(len(truth.volume_ml)))
    found = detect_beats(noisy, 30.0)
    assert len(found) == len(truth.beats)
    for b, t in zip(found, truth.beats):
        assert abs(b.ed - t[0]) <= 1 and abs(b.es - t[1]) <= 1 and abs(b.next_ed - t[2]) <= 1
    assert detect_beats(truth.volume_ml[: truth.beats[0][2] - 2], 30.0) == []  # ED -> ES, no second ED
    assert detect_beats(np.full(60, 5.0), 30.0) == []


def test_half_sequence_truth_and_helpers() -> None:
    params = sample_params(1, "camus-like", 0, n_frames=7)
    truth = half_sequence_truth(params, "4CH", "a.nii.gz")
    assert truth.ed_frames == (0,) and truth.es_frames == (6,) and truth.beats == ()
    assert np.all(np.diff(truth.volume_ml) < 0)
    assert min_beat_frames(50.0) == 15 and min_beat_frames(None) == 8
    assert fill_gaps(np.array([1.0, np.nan, 3.0])) == pytest.approx([1.0, 2.0, 3.0])
    assert Beat(1, 2, 3).to_dict() == {"ed": 1, "es": 2, "next_ed": 3}
