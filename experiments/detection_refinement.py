"""ED/ES detection: how the extrema of a noisy volume curve are refined (``detect_beats(..., refine=...)``).

``cubic`` (the default) refines on a local cubic fit of the despiked values (9 frames) within +-3 frames, here also
with the other windows and reaches it was chosen from; ``asymmetric`` (opt-in) then fits two half-parabolas around
each extremum over +-0.25 to 0.5 of the systole; ``smoothed`` (what ``detect_beats`` did before) on the
smoothed curve within +-1 frame. The default was chosen on the sets below except the test loops of
``experiments/analyze_phantom.py`` (seed 0), which are reported here after the choice. Each method runs on curves
with a known truth (the phantom's analytic ED/ES frames, the largest and smallest 3D volume of each beat):

- ``analytic``: the analytic volume curves themselves (25, 30 and 50 fps, six patients, three beats);
- ``analytic + 3 % noise``: the same with white noise of SD 3 % of the curve's range (three draws each);
- ``true masks 50 fps`` / ``true masks 30 fps``: the area-length volume of the phantom's TRUE LV masks of every frame
  (EchoNet-like 112 x 112 loops at 50 fps; CAMUS-like 128 x 96 at 30 fps; ten patients of seed 7 and ten of seed 0,
  two beats each): a perfect segmentation, measured on the pixel grid;
- ``--measured NAME=WORK:LAYOUT``: the curves a model gave, from the work folder of ``experiments/analyze_phantom.py``
  (its ``phantom_<layout>/phantom_curves.json`` and ``analyze_<layout>_<model>/*/*/*_curves.csv``).

``--curves volume,area`` runs every set on the area-length volume curve (``analyze --detect_on volume``) and on the LV
area curve (``area``, analyze's default since it was chosen on the seed-7 sets here, ``experiments/results/
detection_curve/``); the analytic sets have no area and run on the volume only.

Per set and method: the share of true beats with both ED and ES within +-1 frame (an unmatched beat is a miss), and
the mean signed errors (detected - true) of ED and ES. Writes ``--out/detection_refinement.json`` and ``.md``.

    .venv/bin/python -m experiments.detection_refinement --out experiments/results/detection_refinement
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from echogains.analysis.cycles import REFINE_REACH, REFINE_WINDOW, detect_beats
from echogains.analysis.volumes import measure_loop
from echogains.data.phantom import simulate_cycle
from echogains.data.phantom_curves import cycle_truth
from echogains.utils import atomic_write_json, atomic_write_text
from experiments.analyze_phantom import nearest_beat
from experiments.common import machine, markdown_table

Curve = tuple[str, np.ndarray, float, list[dict[str, int]]]


def _beats(truth: Any) -> list[dict[str, int]]:
    return [{"ed": int(b[0]), "es": int(b[1]), "next_ed": int(b[2])} for b in truth.beats]


def analytic_curves(noise: float = 0.0, draws: int = 1) -> list[Curve]:
    """The phantom's analytic volume curves (optionally with white noise of SD ``noise`` x the 5-95 % range)."""
    rng = np.random.default_rng(0)
    curves = []
    for fps in (25.0, 30.0, 50.0):
        for index in range(1, 7):
            cycle = simulate_cycle(index, "camus-like", 0, image_size=(64, 64), render_images=False, n_beats=3, fps=fps)
            truth = cycle_truth(cycle, "x.avi")
            v = np.asarray(truth.volume_ml, float)
            spread = float(np.ptp(np.percentile(v, [5, 95])))
            for draw in range(draws):
                noisy = v + noise * spread * rng.standard_normal(len(v)) if noise else v
                curves.append((f"{fps:g}fps_{index}_{draw}", noisy, fps, _beats(truth)))
    return curves


def true_mask_curves(
    fps: float, image_size: tuple[int, int], anisotropy: float, seeds: Sequence[int], curve: str = "volume"
) -> list[Curve]:
    """Area-length volume (``curve="volume"``) or LV area (``"area"``) curves of the phantom's true LV masks (pixel
    units), two beats per loop."""
    curves = []
    for seed in seeds:
        for index in range(1, 11):
            cycle = simulate_cycle(
                index,
                "camus-like",
                seed,
                image_size=image_size,
                fps=fps,
                n_beats=2,
                render_images=False,
                anisotropy=anisotropy,
            )
            truth = cycle_truth(cycle, "x.avi")
            spacing = (1.0, float(anisotropy)) if anisotropy != 1.0 else None
            values = getattr(measure_loop((cycle.labels == 1).astype(np.uint8), spacing), curve)
            curves.append((f"seed{seed}_{index}", np.asarray(values, float), fps, _beats(truth)))
    return curves


def measured_curves(work: Path, layout: str, curve: str = "volume") -> list[Curve]:
    """The volume (or LV area) curves a model gave in an ``experiments/analyze_phantom.py`` work folder, with their
    truth."""
    truth = json.loads((work / f"phantom_{layout}" / "phantom_curves.json").read_text())
    curves = []
    for name, loop in sorted(truth["loops"].items()):
        view = loop["view"] if layout == "dicom" else "4CH"
        found = sorted(work.glob(f"analyze_{layout}_*/{loop['patient']}/*/*_{view}_curves.csv"))
        if not found:
            continue
        with found[0].open() as f:
            rows = list(csv.DictReader(f))
        key = next(k for k in rows[0] if k.startswith(f"lv_{curve}_"))
        volume = np.array([float(r[key]) if r[key] else np.nan for r in rows])
        curves.append((name, volume, float(loop["fps"]), list(loop["beats"])))
    return curves


#: the refinements compared: the opt-in asymmetric fit over four windows (its candidates), the default, other
#: windows / reaches of the cubic fit (the candidates it was chosen from), and the earlier smoothed-curve refinement
METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("asymmetric 0.25 systole", {"refine": "asymmetric", "asymmetric_window": 0.25}),
    ("asymmetric 0.33 systole", {"refine": "asymmetric", "asymmetric_window": 0.33}),
    ("asymmetric 0.4 systole", {"refine": "asymmetric", "asymmetric_window": 0.4}),
    ("asymmetric 0.5 systole", {"refine": "asymmetric", "asymmetric_window": 0.5}),
    (f"cubic {REFINE_WINDOW} frames +-{REFINE_REACH} (default)", {"refine": "cubic"}),
    ("cubic 5 frames +-2", {"refine": "cubic", "refine_window": 5, "refine_reach": 2}),
    ("cubic 7 frames +-2", {"refine": "cubic", "refine_window": 7, "refine_reach": 2}),
    ("cubic 15 frames +-3", {"refine": "cubic", "refine_window": 15, "refine_reach": 3}),
    ("smoothed +-1 (before)", {"refine": "smoothed"}),
)


def score(curves: Sequence[Curve], options: dict[str, Any]) -> dict[str, Any]:
    """Share of true beats with ED and ES within +-1 frame, and the mean signed errors, for one method."""
    hits, ed_err, es_err = [], [], []
    for _, volume, fps, truth in curves:
        found = [b.to_dict() for b in detect_beats(volume, fps, **options)]
        for t in truth:
            b = nearest_beat(t, found)
            if b is None:
                hits.append(False)
                continue
            ed_err.append(b["ed"] - t["ed"])
            es_err.append(b["es"] - t["es"])
            hits.append(abs(ed_err[-1]) <= 1 and abs(es_err[-1]) <= 1)
    return {
        "beats": len(hits),
        "within_1_frame": round(float(np.mean(hits)), 4) if hits else None,
        "mean_ed_error": round(float(np.mean(ed_err)), 3) if ed_err else None,
        "mean_es_error": round(float(np.mean(es_err)), 3) if es_err else None,
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--measured", action="append", default=[], help="NAME=WORK:LAYOUT (repeatable)")
    parser.add_argument(
        "--curves",
        default="volume",
        help="comma-separated curves to detect on: volume (area-length, analyze's default) and/or area (LV area)",
    )
    args = parser.parse_args(argv)
    kinds = [c.strip() for c in args.curves.split(",") if c.strip()]
    if not kinds or any(c not in ("volume", "area") for c in kinds):
        parser.error(f"--curves: volume and/or area, got {args.curves!r}")
    rows = []
    for kind in kinds:
        sets: dict[str, list[Curve]] = {
            "analytic": analytic_curves() if kind == "volume" else [],
            "analytic + 3 % noise": analytic_curves(0.03, draws=3) if kind == "volume" else [],
            "true masks 50 fps": true_mask_curves(50.0, (112, 112), 1.0, (7, 0), kind),
            "true masks 30 fps": true_mask_curves(30.0, (128, 96), 0.5, (7, 0), kind),
        }
        for item in args.measured:
            name, _, rest = item.partition("=")
            work, _, layout = rest.rpartition(":")
            sets[name] = measured_curves(Path(work), layout, kind)
        rows += [
            {"set": name, "curve": kind, "refine": label, **score(curves, options)}
            for name, curves in sets.items()
            if curves
            for label, options in METHODS
        ]
    result = {"settings": {"measured": args.measured, "curves": kinds}, "rows": rows, "machine": machine()}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "detection_refinement.json", result)
    table = markdown_table(
        rows, ["set", "curve", "refine", "beats", "within_1_frame", "mean_ed_error", "mean_es_error"]
    )
    atomic_write_text(args.out / "detection_refinement.md", "# ED/ES refinement of noisy curves\n\n" + table + "\n")
    print(table)
    return result


if __name__ == "__main__":
    main()
