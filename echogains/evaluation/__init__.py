"""Evaluation: segmentation metrics in mm, clinical measures (Simpson biplane volumes, EF), plots and report.

Submodules are imported on first use so that ``echogains.evaluation.clinical`` stays light (no MONAI/torch):

- :mod:`.metrics`: Dice, HD, HD95, mean surface distance (MONAI), empty-mask policy, agreement statistics;
- :mod:`.clinical`: LV long axis, Simpson biplane / monoplane and area-length volumes, EF per patient;
- :mod:`.plots`: Bland-Altman, correlation and contour-overlay PNGs;
- :mod:`.report`: the HTML report;
- :mod:`.evaluate`: ``evaluate()``, the ``echogains evaluate`` command. Import it as
  ``from echogains.evaluation.evaluate import evaluate`` (the submodule and the function share the name).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "binary_scores",
    "case_scores",
    "agreement_stats",
    "EMPTY_MASK_POLICY",
    "lv_long_axis",
    "simpson_biplane_volume",
    "simpson_monoplane_volume",
    "area_length_volume",
    "ejection_fraction",
    "patient_ef",
]

_WHERE = {
    "binary_scores": "metrics",
    "case_scores": "metrics",
    "agreement_stats": "metrics",
    "EMPTY_MASK_POLICY": "metrics",
    "lv_long_axis": "clinical",
    "simpson_biplane_volume": "clinical",
    "simpson_monoplane_volume": "clinical",
    "area_length_volume": "clinical",
    "ejection_fraction": "clinical",
    "patient_ef": "clinical",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
