"""Shared test settings: no progress bars, quiet logs, fixed thread count for reproducible timings."""

from __future__ import annotations

import os

os.environ.setdefault("ECHOGAINS_NO_PROGRESS", "1")
os.environ.setdefault("nnUNet_def_n_proc", "1")

import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
