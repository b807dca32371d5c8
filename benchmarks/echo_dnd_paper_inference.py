#!/usr/bin/env python
"""Paper-scale Echo-DND inference time per image (10 steps, one sample) with N torch threads.

``python benchmarks/echo_dnd_paper_inference.py [threads] [--layout current|legacy] [--out JSON]`` (default 2
threads, the current paper configuration). Untrained weights: the cost does not depend on them. Complements
``benchmarks/echo_dnd.py``, whose end-to-end figure uses ``--threads`` (it was recorded with 1).

``--layout legacy`` builds the paper network as it was before issue 13 (FiLM fusion above 16 x 16, the MFCM's
16 x 16 and 8 x 8 levels strided from its 1/8 stream), for a before/after comparison on the same machine; ``--out``
appends the measurement (seconds, threads, layout, load averages before and after) to a JSON list.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

# this folder's echogains.py would shadow the toolkit (``--out`` writes with echogains.utils)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bundles" / "echo_dnd"))

from scripts import EchoDND, EchoDNDConfig, EchoDNDSampler  # noqa: E402

LEGACY = {"fusion_attention_max_tokens": 256, "mfcm_low_levels": "strided"}


def main(threads: int = 2, layout: str = "current", out: Path | None = None) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    load = list(os.getloadavg())
    model = EchoDND(EchoDNDConfig.paper(**(LEGACY if layout == "legacy" else {}))).eval()
    image = torch.rand(1, 1, 256, 256)
    sampler = EchoDNDSampler(num_steps=10, ensemble=1)  # one sample per chain, as the recorded "ensemble" says
    with torch.inference_mode():
        start = time.perf_counter()
        sampler(model, image, torch.Generator().manual_seed(0))
        seconds = time.perf_counter() - start
    print(f"paper-scale Echo-DND ({layout} layout), 10 steps, 1 sample, {threads} thread(s): {seconds:.1f} s/image")
    if out is not None:
        from echogains.utils import atomic_write_json

        records = json.loads(out.read_text()) if out.is_file() else []
        records.append(
            {
                "layout": layout,
                "threads": threads,
                "steps": 10,
                "ensemble": 1,
                "seconds_per_image": seconds,
                "load_average_1_5_15": load,
                "load_average_at_end": list(os.getloadavg()),
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
        )
        atomic_write_json(out, records)
    return seconds


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="paper-scale Echo-DND 10-step inference time per image")
    parser.add_argument("threads", nargs="?", type=int, default=2)
    parser.add_argument("--layout", choices=("current", "legacy"), default="current")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    main(args.threads, args.layout, args.out)
