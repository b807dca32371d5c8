"""Clinical measurements (Simpson volumes, EF): moved to :mod:`echogains.clinical`, re-exported here.

``echogains.clinical`` is a leaf module (it imports no echogains module) so that both ``echogains.data`` (the
phantom's Simpson reference) and ``echogains.evaluation`` may use it; this module keeps the old import path working.
"""

from __future__ import annotations

from echogains.clinical import *  # noqa: F403
from echogains.clinical import (
    CaseMasks,
    LongAxis,
    LVProfile,
    PatientEF,
    area_length_from_profile,
    area_length_volume,
    biplane_volume_from_profiles,
    canonical_view,
    ef_from_profiles,
    ejection_fraction,
    lv_long_axis,
    lv_profile,
    monoplane_volume_from_profile,
    patient_ef,
    simpson_biplane_volume,
    simpson_monoplane_volume,
)

__all__ = [
    "LongAxis",
    "LVProfile",
    "PatientEF",
    "CaseMasks",
    "lv_long_axis",
    "lv_profile",
    "simpson_biplane_volume",
    "simpson_monoplane_volume",
    "area_length_volume",
    "biplane_volume_from_profiles",
    "monoplane_volume_from_profile",
    "area_length_from_profile",
    "ejection_fraction",
    "ef_from_profiles",
    "patient_ef",
    "canonical_view",
]
