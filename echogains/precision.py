"""Mixed precision of the training loops (the DDPM's ``train-ddpm`` and the Echo-DND bundle's ``train``).

One definition of the ``--precision`` values, how ``auto`` resolves on a device, and the autocast context, so that the
two loops cannot drift apart.
"""

from __future__ import annotations

import contextlib

import torch

from echogains.utils import EchoDataError

__all__ = ["PRECISIONS", "AUTOCAST_DTYPES", "resolve_precision", "autocast"]

#: ``--precision`` values: ``auto`` is bf16 on a CUDA device that supports it and fp32 elsewhere (so CPU runs, the
#: demo weights' training among them, stay in fp32); ``fp16`` uses a gradient scaler.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
#: The autocast dtype of each reduced precision.
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for ``precision`` (one of :data:`PRECISIONS`) on ``device``.

    Raises:
        EchoDataError: an unknown value, or bf16 asked for on a GPU without it.
    """
    name = str(precision).strip().lower()
    if name not in PRECISIONS:
        raise EchoDataError(None, f"--precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    cuda_bf16 = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if name == "auto":
        return "bf16" if cuda_bf16 else "fp32"
    if name == "bf16" and device.type == "cuda" and not cuda_bf16:
        raise EchoDataError(None, "--precision bf16: this GPU does not support bfloat16; use fp16 or fp32")
    return name


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The forward pass's context for a resolved ``precision``: nothing for fp32, else ``torch.autocast``."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])
