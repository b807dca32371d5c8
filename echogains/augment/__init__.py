"""Generative augmentation (EchoGAINS): RePaint with the unconditional DDPM (``repaint``), sector transforms
and the dataset expander.

Modules, each importing only those listed before it (one-way, no cycles):

- ``policy`` (transform ranges, :class:`~echogains.augment.policy.TransformPolicy`), ``coordinates`` (pixel/mm
  coordinates and sector membership), ``sector_transforms`` (the transforms), ``draws`` (random draws, retry rule),
  ``transforms`` (chains, :func:`~echogains.augment.transforms.apply_transforms`; re-exports the four before it);
- ``repaint`` (RePaint on ``echogains.ddpm``), ``imaging`` (intensities, resizing);
- ``cases`` (one case and its augmentations), ``settings`` (the frozen
  :class:`~echogains.augment.settings.ExpansionSettings`), ``plan`` (the plan, records and lock of an expansion),
  ``shard`` (what one shard writes), ``expand`` (``expand-dataset``; re-exports the public names of ``cases``,
  ``imaging``, ``plan`` and ``settings``);
- ``quality`` (``augmentation-report``).
"""

from __future__ import annotations

from echogains.augment.repaint import (
    FAST_SCHEDULE,
    PAPER_SCHEDULE,
    ScheduleCounts,
    jump_schedule,
    network_evaluations,
    repaint,
    repaint_mask,
    schedule_counts,
)

__all__ = [
    "FAST_SCHEDULE",
    "PAPER_SCHEDULE",
    "ScheduleCounts",
    "jump_schedule",
    "network_evaluations",
    "repaint",
    "repaint_mask",
    "schedule_counts",
]
