"""The demo's index page: both models scored from their ``evaluate`` summaries, smoke nnU-Net labelled as such."""

from __future__ import annotations

from echogains.demo import _index, _models_table, _scores


def _summary(dice: float, hd: float, bias: float, lo: float, hi: float) -> dict:
    return {
        "segmentation": {"all": {"LV": {"dice": {"mean": dice}, "hd_mm": {"mean": hd}}}},
        "clinical": {
            "agreement": {"prediction vs reference": {"ef_pct": {"bias": bias, "loa_lower": lo, "loa_upper": hi}}}
        },
    }


def test_scores_read_evaluate_summary():
    s = _scores(_summary(0.95, 4.5, -1.8, -4.7, 1.1))
    assert s == {"dice": 0.95, "hd_mm": 4.5, "ef_bias": -1.8, "ef_loa_low": -4.7, "ef_loa_high": 1.1}
    assert _scores(None)["dice"] is None


def test_index_lists_both_models(tmp_path):
    echo = _summary(0.948, 4.65, -1.8, -4.7, 1.1)
    nn = _summary(0.012, 130.0, -27.5, -40.0, -15.0)
    path = _index(tmp_path, {"total": 100.0}, echo, None, ("nnUNetTrainerEchoSmoke", nn))
    text = path.read_text()
    assert "0.948" in text and "4.65" in text and "-4.7 .. 1.1" in text
    assert "nnU-Net (nnUNetTrainerEchoSmoke)" in text and "not a trained model" in text and "0.012" in text
    assert "report_nnunet/report.html" in text
    table = _models_table([("x", ("y", "z.html"), None)])
    assert table.count("<td>–</td>") == 4


def test_index_explains_the_uncertainty_gallery(tmp_path):
    """The gallery is evaluate's uncertainty.png (maps as written); the index says what its colours mean."""
    text = _index(tmp_path, {"total": 1.0}, _summary(0.9, 5.0, 0.0, -1.0, 1.0), None).read_text()
    assert 'src="report/uncertainty.png"' in text
    assert "0 = every sample agrees, 1 = the samples split evenly" in text
