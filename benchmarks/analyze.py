"""Throughput of ``echogains analyze``: seconds and frames per second for a 100+-frame echo loop, per model.

The loop is the phantom's EchoNet-format AVI (112 x 112, 50 fps, three beats: 100+ frames, pixel units). Each model
runs the whole command (read, segment every frame, measure, detect beats, write masks, curves, plots, overlay
video, report) in a fresh process with ``--threads`` torch threads:

- ``echo_dnd``: the bundle's demo weights with the command's defaults (5 DDIM steps, ensemble 4: 8 samples a frame);
- ``nnunet``: the committed demo nnU-Net (``nnunet_ext/demo_model``, ``make demo-weights-nnunet``) with the
  command's defaults (nnU-Net's mirroring TTA on: the analyze default since commit 74a2f75).

Goal (issue 15): a 100-frame loop in under 60 s on 2 CPU cores with the demo weights. The machine's load average is
recorded at the start and end: on a shared machine the seconds move with the load.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/analyze.py --out benchmarks/results/analyze.json --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from echogains.utils import atomic_write_json, to_jsonable  # noqa: E402

DEMO_NNUNET = REPO / "nnunet_ext" / "demo_model" / "Dataset601_PhantomLV" / "nnUNetTrainerEchoDemo__nnUNetPlans__2d"


def _make_loop(folder: Path) -> Path:
    from echogains.data.phantom import make_phantom

    root = make_phantom(
        folder / "echonet", n_patients=1, layout="echonet", seed=7, cycle_frames=33, n_beats=3, progress=False
    )
    (avi,) = sorted((root / "Videos").glob("*.avi"))
    return avi


def _run_model(model: str, avi: Path, out: Path, threads: int, model_path: Path | None) -> dict:
    """One ``echogains analyze`` in a fresh process (imports and model loading included in ``wall_s``)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "nnUNet_def_n_proc": "1"}
    code = (
        f"import torch, time; torch.set_num_threads({threads}); t0 = time.perf_counter();"
        "from echogains.analysis import analyze;"
        f"r = analyze({str(avi)!r}, {str(out)!r}, model={model!r},"
        f" model_path={str(model_path) if model_path else None!r},"
        " views='4CH', progress=False);"
        "import json; print('RESULT', json.dumps({'inner_s': time.perf_counter() - t0, 'record': r}))"
    )
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"model": model, "error": proc.stderr.strip().splitlines()[-1:]}
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    data = json.loads(line[len("RESULT ") :])
    loop = data["record"]["results"][0]["loops"]["4CH"]
    frames, seg = loop["n_frames"], loop["segmentation_seconds"]
    return {
        "model": model,
        "settings": data["record"]["settings"]["model"],
        "frames": frames,
        "wall_s": wall,
        "analyze_s": data["inner_s"],
        "segmentation_s": seg,
        "segmentation_frames_per_s": frames / seg,
        "end_to_end_frames_per_s": frames / wall,
        "seconds_per_100_frames": 100.0 * wall / frames,
        "goal_100_frames_under_60_s": 100.0 * wall / frames < 60.0,
        "beats": data["record"]["results"][0]["loop"]["n_beats"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default="echo_dnd,nnunet")
    parser.add_argument("--nnunet_model", type=Path, default=DEMO_NNUNET)
    args = parser.parse_args()
    record = {
        "benchmark": "analyze",
        "threads": args.threads,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)),
            "load_average_start": os.getloadavg(),
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        avi = _make_loop(Path(tmp))
        record["loop"] = {"file": avi.name, "size": "112 x 112", "layout": "phantom echonet, 3 beats, 50 fps"}
        runs = []
        for model in args.models.split(","):
            path = args.nnunet_model if model == "nnunet" else None
            runs.append(_run_model(model, avi, Path(tmp) / f"out_{model}", args.threads, path))
            print(json.dumps(to_jsonable(runs[-1]), indent=1))
    record["runs"] = runs
    record["machine"]["load_average_end"] = os.getloadavg()
    atomic_write_json(args.out, to_jsonable(record))


if __name__ == "__main__":
    main()
