"""Phantom generation speed (issue 18): frames per second of each preset on one core, per quality grade.

``OMP_NUM_THREADS=1 python benchmarks/phantom_speed.py --out benchmarks/results/phantom_speed.json``

A frame is one rendered still (image + label) of ``simulate_patient`` (ED and ES of both views), timed over
``--patients`` patients per preset and grade after one warm-up patient, at the preset's CAMUS-style default size
(128 x 96) and at the 64 x 64 of the quick experiments. One process, one thread; the load average of the machine at
start and end is recorded (on a shared machine compare the ratio hard / camus-like, not the absolute rate).
``make_phantom``: the ``make-phantom`` command end to end (rendering, label maps, NIfTI files, records), wall time,
in one process: run it with ``OMP_NUM_THREADS`` unset on the 2-core machine for the 2-core figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

if "--all_threads" not in sys.argv:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

try:
    from benchmarks import _common
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    import _common  # type: ignore[no-redef]

from echogains.data.phantom import QUALITIES, simulate_patient


def _rate(preset: str, quality: str | None, patients: int, size: tuple[int, int] | None) -> dict[str, Any]:
    extra = {} if quality is None else {"quality": quality}
    simulate_patient(1000, preset, 0, image_size=size, **extra)  # warm-up (imports, caches)
    frames, t0 = 0, time.perf_counter()
    for i in range(1, patients + 1):
        p = simulate_patient(i, preset, 0, image_size=size, **extra)
        frames += sum(v.images.shape[0] for v in p.views.values())
    seconds = time.perf_counter() - t0
    return {"frames": frames, "seconds": round(seconds, 3), "frames_per_s": round(frames / seconds, 2)}


def _make_phantom_rate(preset: str, patients: int, size: tuple[int, int] | None) -> dict[str, Any]:
    """``make-phantom`` end to end (nnU-Net layout, LV/MYO/LA, files written): frames per second of wall time."""
    import tempfile

    from echogains.data.phantom import make_phantom

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        make_phantom(
            os.path.join(tmp, "Dataset999_Speed"),
            n_patients=patients,
            preset=preset,
            layout="nnunet",
            labels="lv,myo,la",
            image_size=size,
            seed=0,
            progress=False,
        )
        seconds = time.perf_counter() - t0
    frames = 4 * patients  # ED and ES of 2CH and 4CH
    return {"frames": frames, "seconds": round(seconds, 3), "frames_per_s": round(frames / seconds, 2)}


def run(patients: int = 10) -> dict[str, Any]:
    load_start = os.getloadavg()
    sizes = {"default": None, "64x64": (64, 64)}
    result: dict[str, Any] = {"patients_per_cell": patients, "rates": {}}
    for size_name, size in sizes.items():
        cells: dict[str, Any] = {
            "camus-like": _rate("camus-like", None, patients, size),
            "hard": _rate("hard", None, patients, size),
        }
        for q in QUALITIES:
            cells[f"hard/{q}"] = _rate("hard", q, patients, size)
        result["rates"][size_name] = cells
    # the command as users run it (one process; with OMP_NUM_THREADS unset numpy/scipy may use every core)
    result["make_phantom"] = {
        name: {p: _make_phantom_rate(p, patients, size) for p in ("camus-like", "hard")} for name, size in sizes.items()
    }
    result["ratios"] = {
        s: round(c["hard"]["frames_per_s"] / c["camus-like"]["frames_per_s"], 3) for s, c in result["rates"].items()
    }
    result["machine"] = {
        "cpus": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": sys.version.split()[0],
        "load_average_start": [round(v, 2) for v in load_start],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
    }
    return result


def _summary(result: dict[str, Any]) -> str:
    lines = []
    for size, cells in result["rates"].items():
        lines.append(f"{size}: " + ", ".join(f"{k} {v['frames_per_s']:.1f} frames/s" for k, v in cells.items()))
    for size, cells in result.get("make_phantom", {}).items():
        lines.append(
            f"make-phantom {size}: " + ", ".join(f"{k} {v['frames_per_s']:.1f} frames/s" for k, v in cells.items())
        )
    lines.append(f"hard / camus-like: {result['ratios']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/phantom_speed.json")
    parser.add_argument("--patients", type=int, default=10)
    parser.add_argument("--all_threads", action="store_true", help="leave OMP_NUM_THREADS unset (every core)")
    args = parser.parse_args(argv)
    if args.patients < 1:
        print("error: --patients must be an integer >= 1", file=sys.stderr)
        return 2

    def go() -> dict[str, Any]:
        result = run(args.patients)
        _common.write_outputs(result, "phantom_speed.py", argv, args.out, None, lambda r: "")
        return result

    return _common.run_main(go, _summary, args.out)


if __name__ == "__main__":
    sys.exit(main())
