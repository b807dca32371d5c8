"""Label conventions. CAMUS values: 0 background, 1 LV cavity, 2 myocardium, 3 left atrium."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from echogains.utils import EchoDataError

__all__ = ["CAMUS_LABELS", "LABEL_NAMES", "parse_labels", "label_dict", "remap_camus_labels"]

#: CAMUS label values by short key.
CAMUS_LABELS: dict[str, int] = {"lv": 1, "myo": 2, "la": 3}
#: Names written into ``dataset.json`` for each key (nnU-Net's ``labels`` mapping).
LABEL_NAMES: dict[str, str] = {"lv": "LV", "myo": "MYO", "la": "LA"}
_ORDER = ("lv", "myo", "la")


def parse_labels(spec: str | Sequence[str]) -> list[str]:
    """Parse ``"lv,myo,la"`` (or a list) into canonical keys in CAMUS order.

    Raises:
        EchoDataError: unknown or empty label selection.
    """
    if isinstance(spec, str):
        items = [s.strip().lower() for s in spec.split(",") if s.strip()]
    else:
        items = [str(s).strip().lower() for s in spec]
    alias = {"lv": "lv", "endo": "lv", "myo": "myo", "myocardium": "myo", "epi": "myo", "la": "la", "atrium": "la"}
    unknown = [s for s in items if s not in alias]
    if unknown or not items:
        raise EchoDataError(None, f"--labels: unknown or empty label selection {spec!r}; choose from lv,myo,la")
    keys = {alias[s] for s in items}
    return [k for k in _ORDER if k in keys]


def label_dict(keys: Sequence[str]) -> dict[str, int]:
    """nnU-Net ``labels`` mapping for the kept keys: consecutive values in CAMUS order."""
    out = {"background": 0}
    for i, key in enumerate(parse_labels(list(keys)), start=1):
        out[LABEL_NAMES[key]] = i
    return out


def remap_camus_labels(label: np.ndarray, keys: Sequence[str], source: str | None = None) -> np.ndarray:
    """Map a CAMUS-valued mask (0..3) onto consecutive values for the kept keys; dropped labels become 0.

    Raises:
        EchoDataError: values outside 0..3 (naming ``source``).
    """
    values = np.unique(label)
    bad = [int(v) for v in values if v not in (0, 1, 2, 3)]
    if bad:
        raise EchoDataError(source, f"unknown label values {bad}; expected CAMUS labels 0..3")
    out = np.zeros(label.shape, dtype=np.uint8)
    for i, key in enumerate(parse_labels(list(keys)), start=1):
        out[label == CAMUS_LABELS[key]] = i
    return out
