#!/usr/bin/env python
"""Echo-DND bundle inference speed per image, before and after a change, in the same run (issue 14).

Usage::

    python benchmarks/bundle_inference_speed.py --before 5b344a0 --repeats 3 \
        --out benchmarks/results/bundle_inference_speed.json

``--before`` is a git revision: its ``bundles/echo_dnd`` is extracted with ``git archive`` into a temporary folder
(with its own configs and demo weights); ``after`` is the working tree's bundle. Both segment the same images (the
working tree's ``sample_data``: 2 images, 96 x 128 px) with their defaults (10 steps, 3 samples per chain, demo
weights) by the command users type, ``python -m monai.bundle run inference --config_file <bundle>/configs/inference.json
--bundle_root <bundle> ...``, one CPU thread, the runs interleaved (before, after, before, ...) so that the load of the
machine affects both alike. Seconds per image are the ``seconds`` of each case in the run record
(``echo_dnd_inference.json``: reading, segmenting and writing that case, without the process start-up), by default in
CPU time of the one-threaded process (``--clock cpu``, see ``CPU_DRIVER``; ``--clock wall``: wall time of the command
line as typed); the result is
the median over cases and repeats, the ratio after / before, and the median of the ratios paired by repeat and case
(the order alternates, before-after then after-before). The outputs of both versions are compared byte for byte
(``outputs_identical``) and by pixels and geometry (``outputs_same_pixels_and_geometry``: bundle 0.4.0 writes its
NIfTI files with MONAI's ``NibabelWriter``, whose headers and compression differ from SimpleITK's), and the largest
absolute pixel difference per output (``max_abs_difference``: masks, uncertainty maps, member samples; bundle 0.5.1
computes its convolutions channels-last on CPU, whose float sums differ in the last bits).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

try:  # imported by path (the tests): the repository root is on sys.path
    from benchmarks import _common
except ImportError:  # run as a script (this folder is sys.path[0]): benchmarks/echogains.py would shadow the package
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common  # takes this folder off sys.path again

REPO = _common.REPO_ROOT
BUNDLE = REPO / "bundles" / "echo_dnd"


def same_image(a: Path, b: Path) -> bool:
    """Two image files with the same pixels (exactly) and geometry (spacing, origin, direction within 1e-6): the
    bytes differ where one version writes NIfTI with SimpleITK and the other with MONAI's ``NibabelWriter``."""
    import numpy as np
    import SimpleITK as sitk

    if not b.is_file():
        return False
    x, y = sitk.ReadImage(str(a)), sitk.ReadImage(str(b))
    if x.GetSize() != y.GetSize() or x.GetPixelID() != y.GetPixelID():
        return False
    geometry = all(
        np.allclose(getattr(x, f)(), getattr(y, f)(), atol=1e-6) for f in ("GetSpacing", "GetOrigin", "GetDirection")
    )
    return geometry and bool(np.array_equal(sitk.GetArrayFromImage(x), sitk.GetArrayFromImage(y)))


def max_difference(a: Path, b: Path) -> float:
    """Largest absolute pixel difference of two images of the same size (``inf`` when ``b`` is missing or the sizes
    differ)."""
    import numpy as np
    import SimpleITK as sitk

    if not b.is_file():
        return float("inf")
    x, y = (sitk.GetArrayFromImage(sitk.ReadImage(str(p))).astype(np.float64) for p in (a, b))
    return float(np.abs(x - y).max()) if x.shape == y.shape else float("inf")


def output_kind(path: Path) -> str:
    """``mask``, ``uncertainty`` or ``samples``: which output a written file is."""
    stem = path.name.split(".")[0]
    return next((k for k in ("uncertainty", "samples") if stem.endswith("_" + k)), "mask")


def extract_bundle(revision: str, into: Path) -> Path:
    """The bundle folder of ``revision`` (``git archive``), under ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    archive = into / "bundle.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "archive", revision, "bundles/echo_dnd"], cwd=REPO, stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "bundles" / "echo_dnd"


#: ``--clock cpu``: the inference command run by ``monai.bundle``'s ``run`` in a fresh process whose
#: ``time.perf_counter`` is ``time.process_time``, so each case's ``seconds`` in the record is the CPU time of the
#: (one-threaded) process for that case: what the code costs, much less sensitive than wall time to other jobs on a
#: shared machine. ``--clock wall``: the command line as users type it, wall time.
CPU_DRIVER = (
    "import sys, time; time.perf_counter = time.process_time\n"
    "from monai.bundle import run\n"
    "b, d, o = sys.argv[1:4]\n"
    "run('inference', config_file=b + '/configs/inference.json', bundle_root=b, dataset_dir=d, output_dir=o,"
    " device='cpu', progress=False, logging_file=False)\n"
)


def run_inference(bundle: Path, dataset: Path, out: Path, clock: str = "cpu") -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ECHOGAINS_NO_PROGRESS="1")
    if clock == "cpu":
        cmd = [sys.executable, "-c", CPU_DRIVER, str(bundle), str(dataset), str(out)]
    else:
        config = str(bundle / "configs" / "inference.json")
        cmd = [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", config]
        cmd += ["--bundle_root", str(bundle), "--dataset_dir", str(dataset), "--output_dir", str(out)]
        cmd += ["--device", "cpu", "--progress", "False"]
    proc = subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError(f"{bundle}: inference failed\n{proc.stderr[-3000:]}")
    return json.loads((out / "echo_dnd_inference.json").read_text())["cases"]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="5b344a0", help="git revision of the bundle before the change")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="CPU time per case (default) or wall")
    args = parser.parse_args(argv)
    dataset = BUNDLE / "sample_data"
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        bundles = {"before": extract_bundle(args.before, tmp / "before"), "after": BUNDLE}
        seconds: dict[str, list[float]] = {"before": [], "after": []}
        identical = same_pixels = True
        difference = {"mask": 0.0, "uncertainty": 0.0, "samples": 0.0}
        load = []
        ratios = []
        for r in range(args.repeats):
            outs, per_case = {}, {}
            order = ["before", "after"] if r % 2 == 0 else ["after", "before"]  # ABBA: drift in the load cancels
            for name in order:
                bundle = bundles[name]
                outs[name] = tmp / f"{name}_{r}"
                load.append(os.getloadavg()[0])
                cases = run_inference(bundle, dataset, outs[name], args.clock)
                seconds[name] += [float(c["seconds"]) for c in cases]
                per_case[name] = {c["case_id"]: float(c["seconds"]) for c in cases}
            ratios += [per_case["after"][c] / per_case["before"][c] for c in per_case["before"]]
            for mask in sorted(outs["before"].glob("*.nii.gz")):
                identical &= filecmp.cmp(mask, outs["after"] / mask.name, shallow=False)
                same_pixels &= same_image(mask, outs["after"] / mask.name)
                kind = output_kind(mask)
                difference[kind] = max(difference[kind], max_difference(mask, outs["after"] / mask.name))
    median = {k: statistics.median(v) for k, v in seconds.items()}
    result = {
        "benchmark": "bundle_inference_speed",
        "command": "python benchmarks/bundle_inference_speed.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "before": args.before,
        "after": "working tree",
        "images": sorted(p.name for p in (dataset / "imagesTs").iterdir()),
        "settings": "bundle defaults: 10 steps, 3 samples per chain, demo weights, --device cpu, OMP_NUM_THREADS=1",
        "repeats": args.repeats,
        "clock": args.clock,
        "seconds_per_image": {k: [round(x, 3) for x in v] for k, v in seconds.items()},
        "median_seconds_per_image": {k: round(v, 3) for k, v in median.items()},
        "ratio_after_over_before": round(median["after"] / median["before"], 3),
        "paired_ratios_after_over_before": [round(x, 3) for x in ratios],
        "median_paired_ratio": round(statistics.median(ratios), 3),
        "min_seconds_per_image": {k: round(min(v), 3) for k, v in seconds.items()},
        "outputs_identical": bool(identical),
        "outputs_same_pixels_and_geometry": bool(same_pixels),
        "max_abs_difference": {k: float(f"{v:.3g}") for k, v in difference.items()},
        "load_average_1min": [round(x, 2) for x in load],
        "cpu_count": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        _common.atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
