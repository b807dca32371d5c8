"""Former module of the phantom's layout writers: now :mod:`echogains.data.phantom.layouts` and ``.validate``.

Kept so that ``from echogains.data.phantom_layouts import ...`` goes on working.
"""

from __future__ import annotations

from echogains.data.phantom.figure import save_sample_figure
from echogains.data.phantom.layouts import (
    LAYOUT_WRITERS,
    TRUTH_FILE,
    CamusMhdWriter,
    CamusNiftiWriter,
    DicomWriter,
    EchoNetWriter,
    NnUNetWriter,
    write_layout,
    write_mhd,
)
from echogains.data.phantom.validate import PhantomConfig, validate_arguments

__all__ = [
    "PhantomConfig",
    "validate_arguments",
    "write_layout",
    "LAYOUT_WRITERS",
    "TRUTH_FILE",
    "write_mhd",
    "save_sample_figure",
    "CamusNiftiWriter",
    "CamusMhdWriter",
    "EchoNetWriter",
    "NnUNetWriter",
    "DicomWriter",
]
