"""From echo loops to LV volumes and EF per beat: ``echogains analyze`` (see :mod:`echogains.analysis.pipeline`)."""

from __future__ import annotations

from echogains.analysis.pipeline import analyze

__all__ = ["analyze"]
