"""Generative augmentation (EchoGAINS): RePaint with the unconditional DDPM (``repaint``), sector transforms
and the dataset expander.
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
