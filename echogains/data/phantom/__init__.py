"""Synthetic apical echo phantom: one 3D left ventricle per patient, cut by the 2CH and 4CH planes.

The phantom is the embedded default data of the toolkit (demos, tests) and the ground truth that real data
cannot give: the true LV volumes and ejection fraction are known in closed form.

Modules, each importing only those above it (one-way, no cycles):

- :mod:`.streams`: the named random streams (seed and integer keys) of every draw.
- :mod:`.difficulty`: the ``hard`` preset's causes of difficulty per quality grade, their draws and image terms.
- :mod:`.anatomy`: the 3D LV (eq. 1-3), the presets and the per-patient parameter sampling.
- :mod:`.rendering`: sector placement, tissue maps and ultrasound formation (eq. 4-7).
- :mod:`.simulate`: patients (stills, half sequences), cine loops, EchoNet tracings, the Simpson reference.
- :mod:`.curves`: the analytic volume curve and true ED/ES frames of every loop.
- :mod:`.validate`: the checked arguments of :func:`make_phantom`.
- :mod:`.figure`: the README figure (:func:`save_sample_figure`) and the grade figure (:func:`save_grades_figure`).
- :mod:`.layouts`: writing: the dataset layouts, truth files, names, splits and the entry point :func:`make_phantom`.

All but ``figure`` and ``layouts`` do no I/O. Everybody imports the public names from here
(``from echogains.data.phantom import X``).
"""

from __future__ import annotations

# private helpers of the former single module, still reached as ``phantom._name`` by tests
from echogains.data.phantom.anatomy import (  # noqa: F401
    _VIEW_AZIMUTH,
    _VIEW_CODE,
    PRESETS,
    QUALITIES,
    VIEWS,
    LVShape,
    PatientParams,
    PresetSpec,
    _heart_frame,
    _lv_plane_to_mm,
    _mm_to_lv_plane,
    lv_shape_at,
    patient_id,
    sample_params,
    truncated_ellipsoid_volume_ml,
)
from echogains.data.phantom.curves import (
    CURVES_DIR,
    CURVES_FILE,
    LoopTruth,
    curve_csv,
    cycle_truth,
    half_sequence_truth,
)
from echogains.data.phantom.difficulty import DifficultySpec
from echogains.data.phantom.figure import save_grades_figure, save_sample_figure
from echogains.data.phantom.layouts import (
    LAYOUT_WRITERS,
    TRUTH_FILE,
    assign_splits,
    echonet_file_name,
    make_phantom,
    write_curves,
    write_layout,
    write_mhd,
)
from echogains.data.phantom.rendering import _ViewRenderer, place_sector  # noqa: F401
from echogains.data.phantom.simulate import (
    PhantomCycle,
    PhantomPatient,
    PhantomView,
    simpson_reference,
    simulate_cycle,
    simulate_patient,
)
from echogains.data.phantom.streams import generator as _rng  # noqa: F401
from echogains.data.phantom.validate import LAYOUTS, PhantomConfig, validate_arguments

__all__ = [
    "PRESETS",
    "LAYOUTS",
    "VIEWS",
    "PresetSpec",
    "DifficultySpec",
    "LVShape",
    "PatientParams",
    "PhantomView",
    "PhantomPatient",
    "PhantomCycle",
    "truncated_ellipsoid_volume_ml",
    "lv_shape_at",
    "sample_params",
    "simulate_patient",
    "simulate_cycle",
    "simpson_reference",
    "assign_splits",
    "patient_id",
    "echonet_file_name",
    "place_sector",
    "QUALITIES",
    "make_phantom",
    # the former ``phantom_layouts`` / ``phantom_curves`` names
    "PhantomConfig",
    "validate_arguments",
    "write_layout",
    "LAYOUT_WRITERS",
    "TRUTH_FILE",
    "write_mhd",
    "save_sample_figure",
    "save_grades_figure",
    "LoopTruth",
    "CURVES_FILE",
    "CURVES_DIR",
    "cycle_truth",
    "half_sequence_truth",
    "curve_csv",
    "write_curves",
]
