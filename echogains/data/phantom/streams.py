"""Named random streams of the phantom: every random draw comes from ``generator(seed, *keys)``.

A stream is keyed by the dataset seed and a tuple of integers, so each patient, view and purpose has its own
generator: the same keys give the same numbers in any run order, and adding a draw to one purpose leaves every other
unchanged. The integer values below are part of the phantom's output (the same seed gives the same bytes): never
renumber them, add new keys instead.

Key tuples (``i`` is the 1-based patient index, ``v`` the view code 2 or 4):

- ``(seed, i, STREAM_PARAMS)``: patient parameters (:func:`~echogains.data.phantom.anatomy.sample_params`).
- ``(seed, i, STREAM_CYCLE)``: heart rate, systole length and first ED frame of a cine loop; the 2CH loop's ED
  frame from ``(seed, i, STREAM_CYCLE, 2)``.
- ``(seed, i, STREAM_DROPOUT + v)``: signal dropout blobs of view ``v``.
- ``(seed, i, STREAM_DIFFICULTY)``: the causes of difficulty of a preset that has them (``hard``; see
  :mod:`.difficulty`); the other presets never draw from it.
- ``(seed, i, render_stream(kind, v), ...)``: the renderer of one view: ``STREAM_TEXTURES`` for the tissue
  textures, ``NOISE_FIRST``/``NOISE_LAST``/``(NOISE_STEP, k)`` for the speckle, ``(NOISE_RECEIVER, k)`` for the
  receiver noise of frame ``k``.
- ``(seed, SPLIT_PATIENT, STREAM_SPLITS)``: the train/val/test permutation of the patients.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "STREAM_PARAMS",
    "STREAM_CYCLE",
    "STREAM_DROPOUT",
    "STREAM_SPLITS",
    "STREAM_DIFFICULTY",
    "SPLIT_PATIENT",
    "RENDER_STILLS",
    "RENDER_CYCLE",
    "STREAM_TEXTURES",
    "NOISE_FIRST",
    "NOISE_LAST",
    "NOISE_STEP",
    "NOISE_RECEIVER",
    "render_stream",
    "generator",
]

#: per patient: sex, age, quality, LV shape, EF, sector, heart position, appearance and anatomy, in this order.
STREAM_PARAMS = 0
#: per patient: the cine loop's timing (heart rate, systole fraction, first ED frame).
STREAM_CYCLE = 7
#: per patient and view: base of the dropout stream, ``STREAM_DROPOUT + view code`` (12: 2CH, 14: 4CH).
STREAM_DROPOUT = 10
#: per patient: the difficulty parameters of a preset with a DifficultySpec (``hard``).
STREAM_DIFFICULTY = 20
#: once per dataset: the patient split permutation (keyed with the patient slot ``SPLIT_PATIENT``).
STREAM_SPLITS = 99
#: the patient slot of the split stream (patient indices start at 1, so 0 belongs to no patient).
SPLIT_PATIENT = 0
#: renderer kind of the CAMUS-style stills and half sequences.
RENDER_STILLS = 0
#: renderer kind of the cine loops (EchoNet, DICOM): independent of the stills' speckle and textures.
RENDER_CYCLE = 1
#: renderer sub-stream: the smooth tissue textures.
STREAM_TEXTURES = 9
#: renderer sub-stream: speckle of the first frame (ED).
NOISE_FIRST = 0
#: renderer sub-stream: innovation of the last frame (ES) of a half sequence.
NOISE_LAST = 1
#: renderer sub-stream: innovation of frame ``k``, keyed ``(NOISE_STEP, k)``.
NOISE_STEP = 2
#: renderer sub-stream: receiver noise of frame ``k``, keyed ``(NOISE_RECEIVER, k)``.
NOISE_RECEIVER = 3


def render_stream(kind: int, view_code: int) -> int:
    """Stream key of a view renderer: ``100 (kind + 1) + view code`` (102/104 stills, 202/204 loops)."""
    return 100 * (kind + 1) + view_code


def generator(seed: int, *keys: int) -> np.random.Generator:
    """Independent generator for (seed, keys...): the same keys give the same stream in any run order."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *[int(k) for k in keys]]))
