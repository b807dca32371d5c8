"""Shared test settings: no progress bars, one torch thread (tiny models gain nothing from more, and on a
loaded 2-core machine multi-threaded torch slows down by an order of magnitude)."""

from __future__ import annotations

import os

os.environ.setdefault("ECHOGAINS_NO_PROGRESS", "1")
os.environ.setdefault("nnUNet_def_n_proc", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
