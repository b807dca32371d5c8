"""The demo's index page: the committed nnU-Net row and the ``analyze`` section with its overlay videos."""

from __future__ import annotations

from echogains.demo import DEMO_NNUNET_TRAINER, _index


def test_index_shows_the_trained_nnunet_and_the_loops(tmp_path):
    summary = {"segmentation": {"all": {"LV": {"dice": {"mean": 0.91}, "hd_mm": {"mean": 5.0}}}}}
    loops = {
        "results": [
            {
                "patient": "patient0001",
                "method": "simpson biplane",
                "loop": {"n_beats": 2, "ef_pct": 55.25, "ef_low_pct": 50.0, "ef_high_pct": 60.5},
                "loops": {
                    "2CH": {
                        "overlay_video": "patient0001/patient0001_2CH_overlay.avi",
                        "curves_png": "patient0001/patient0001_2CH_curves.png",
                    }
                },
            }
        ]
    }
    text = _index(tmp_path, {"total": 1.0}, summary, None, (DEMO_NNUNET_TRAINER, summary), loops).read_text()
    assert f"nnU-Net ({DEMO_NNUNET_TRAINER})" in text and "not a trained model" not in text
    assert "demo weights (small U-Net" in text
    assert 'href="analyze/patient0001/patient0001_2CH_overlay.avi"' in text and 'href="analyze/report.html"' in text
    assert "EF 55.2 %" in text and "50.0 .. 60.5" in text and "simpson biplane" in text
    assert "echogains analyze" not in _index(tmp_path, {"total": 1.0}, summary, None).read_text()
