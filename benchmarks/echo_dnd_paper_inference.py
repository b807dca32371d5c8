#!/usr/bin/env python
"""Paper-scale Echo-DND inference time per image (10 steps, one sample) with N torch threads.

``python benchmarks/echo_dnd_paper_inference.py [threads]`` (default 2). Untrained weights: the cost does not depend
on them. Complements ``benchmarks/echo_dnd.py``, whose end-to-end figure uses ``--threads`` (it was recorded with 1).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundles" / "echo_dnd"))

from scripts import EchoDND, EchoDNDConfig, EchoDNDSampler  # noqa: E402


def main(threads: int = 2) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = EchoDND(EchoDNDConfig.paper()).eval()
    image = torch.rand(1, 1, 256, 256)
    sampler = EchoDNDSampler(num_steps=10)
    with torch.inference_mode():
        start = time.perf_counter()
        sampler(model, image, torch.Generator().manual_seed(0))
        seconds = time.perf_counter() - start
    print(f"paper-scale Echo-DND, 10 steps, 1 sample, {threads} thread(s): {seconds:.1f} s/image")
    return seconds


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
