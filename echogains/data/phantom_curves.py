"""Former module of the phantom's loop truth: now :mod:`echogains.data.phantom.curves` (the curves) and
:func:`echogains.data.phantom.layouts.write_curves` (their files).

Kept so that ``from echogains.data.phantom_curves import ...`` goes on working.
"""

from __future__ import annotations

from echogains.data.phantom.curves import (
    CURVES_DIR,
    CURVES_FILE,
    LoopTruth,
    curve_csv,
    cycle_truth,
    half_sequence_truth,
    loop_name,
)
from echogains.data.phantom.layouts import write_curves

__all__ = [
    "LoopTruth",
    "CURVES_FILE",
    "CURVES_DIR",
    "cycle_truth",
    "half_sequence_truth",
    "curve_csv",
    "write_curves",
    "loop_name",
]
