"""Accuracy of ``echogains analyze`` on phantom loops with a known truth: ED/ES frames and EF.

For each phantom patient (``make-phantom --layout dicom``: 2CH and 4CH multi-frame ultrasound DICOM loops; and the
``echonet`` layout: one 4CH AVI per patient, pixel units) the script runs ``analyze`` with the chosen model, then
compares with the analytic truth of ``phantom_curves.json``:

- ED / ES frames: each true beat is matched to the detected beat whose ED is nearest (within half a true cycle);
  the absolute frame errors of ED and ES, and the share of beats with both within +-1 frame (unmatched true beats
  count as misses);
- EF: the loop EF from the detected frames, and the EF the SAME masks give at the TRUE ED/ES frames (biplane for the
  DICOM pairs, area-length for the AVIs, beats paired in order, means over beats), each against the phantom's
  analytic EF (bias and 95 % limits of agreement, 1.96 SD) and against each other;
- the share of patients whose analytic EF lies inside ``analyze``'s 95 % interval from the diffusion samples (as
  written by the run; the other numbers are recomputed from the written masks with the current detection).

Resumable: each patient's ``analyze`` output is kept under ``--work`` and reused when it was written with the same
``--detect_on``, ``--ensemble``, ``--num_steps`` and ``--tta`` (else the patient is analysed again: the interval depends
on the frames the run detected); ``--budget_s`` stops starting new patients after that many seconds (rerun to
continue). Writes ``--out/analyze_phantom.json`` and ``.md``.

    OMP_NUM_THREADS=1 .venv/bin/python -m experiments.analyze_phantom --out experiments/results/analyze_phantom
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from echogains.analysis import analyze
from echogains.analysis.cycles import Beat, curve_noise, detect_beats, fill_gaps
from echogains.analysis.pipeline import DETECT_ON, detection_curve
from echogains.analysis.volumes import LoopCurves, beat_volumes, loop_summary, measure_loop
from echogains.data.phantom import make_phantom
from echogains.utils import EchoDataError, atomic_write_json, atomic_write_text, get_logger, to_jsonable
from experiments.common import machine, markdown_table

log = get_logger("experiments.analyze_phantom")
FAILED = "failed.json"


def nearest_beat(true_beat: Mapping[str, int], detected: Sequence[Mapping[str, int]]) -> Mapping[str, int] | None:
    """The detected beat whose ED is nearest the true beat's, within half a true cycle (``None``: unmatched)."""
    half = (true_beat["next_ed"] - true_beat["ed"]) / 2.0
    near = [d for d in detected if abs(d["ed"] - true_beat["ed"]) <= half]
    return min(near, key=lambda d: abs(d["ed"] - true_beat["ed"])) if near else None


def _match(truth: Sequence[Mapping[str, int]], detected: Sequence[Mapping[str, int]]) -> list[dict[str, Any]]:
    """Per true beat: the detected beat with the nearest ED within half a true cycle, and the frame errors."""
    rows = []
    for t in truth:
        d = nearest_beat(t, detected)
        if d is None:
            rows.append({"matched": False, "ed_error": None, "es_error": None})
            continue
        rows.append({"matched": True, "ed_error": abs(d["ed"] - t["ed"]), "es_error": abs(d["es"] - t["es"])})
    return rows


def _agreement(a: Sequence[float], b: Sequence[float]) -> dict[str, float | int | None]:
    d = np.asarray(a, float) - np.asarray(b, float)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return {"n": int(d.size), "bias": None, "sd": None, "loa_low": None, "loa_high": None, "mae": None}
    sd = float(d.std(ddof=1))
    return {
        "n": int(d.size),
        "bias": float(d.mean()),
        "sd": sd,
        "loa_low": float(d.mean() - 1.96 * sd),
        "loa_high": float(d.mean() + 1.96 * sd),
        "mae": float(np.abs(d).mean()),
    }


def _curves_and_beats(
    result: Mapping[str, Any], out: Path, curves_truth: Mapping[str, Any], detect_on: str = "area"
) -> tuple[dict[str, LoopCurves], dict[str, list[Beat]], dict[str, list[Beat]]]:
    """Per view: the curves of the written masks, the beats the CURRENT detection finds on them, the true beats.

    Segmenting is the costly step and is cached; measuring and detecting are redone here, so that a change of the
    detection is evaluated on the same masks (the run's own ``results.json`` holds the beats of its version).
    """
    curves, detected, true = {}, {}, {}
    for view, rec in result["loops"].items():
        masks = sitk.GetArrayFromImage(sitk.ReadImage(str(out / rec["mask"]))) > 0
        curves[view] = measure_loop(masks, rec["spacing_mm"])
        detected[view] = detect_beats(detection_curve(curves[view], detect_on), rec["fps"])
        true[view] = [Beat(b["ed"], b["es"], b["next_ed"]) for b in curves_truth[view]["beats"]]
    return curves, detected, true


def _noise_pct(values: np.ndarray) -> float:
    v = fill_gaps(values)
    return 100 * curve_noise(v) / float(np.ptp(np.percentile(v, [5, 95])))


def _patient_rows(
    layout: str,
    pid: str,
    result: Mapping[str, Any],
    out: Path,
    truth: Mapping[str, Any],
    loop_names: Mapping[str, str],
    detect_on: str = "area",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    beat_rows = []
    curves_truth = {view: truth["loops"][name] for view, name in loop_names.items() if view in result["loops"]}
    curves, detected, true = _curves_and_beats(result, out, curves_truth, detect_on)
    for view in result["loops"]:
        for row in _match(curves_truth[view]["beats"], [b.to_dict() for b in detected[view]]):
            beat_rows.append({"layout": layout, "patient": pid, "view": view, **row})
    true_ef = next(iter(curves_truth.values()))["true_ef_pct"]
    ef_detected = (
        float(loop_summary(beat_volumes(curves, detected))["ef_pct"]) if all(detected.values()) else float("nan")
    )
    ef_row = {
        "layout": layout,
        "patient": pid,
        "method": result["method"],
        "ef_true": true_ef,
        "ef_detected": ef_detected,
        "ef_true_frames": float(loop_summary(beat_volumes(curves, true))["ef_pct"]),
        "ef_low": result["loop"]["ef_low_pct"],
        "ef_high": result["loop"]["ef_high_pct"],
        "n_beats": result["loop"]["n_beats"],
        "seconds": sum(r["segmentation_seconds"] for r in result["loops"].values()),
        "frames": sum(r["n_frames"] for r in result["loops"].values()),
        # frame-to-frame noise of each view's detection curve (area or volume), % of its 5-95 % range
        # (cycles.curve_noise: the detection's clean-curve test refines on the raw values below cycles.CLEAN_NOISE)
        "curve_noise_pct": {view: _noise_pct(detection_curve(c, detect_on)) for view, c in curves.items()},
    }
    return beat_rows, ef_row


def _cached_run_matches(out: Path, args: argparse.Namespace) -> bool:
    """Whether ``out/results.json`` was written with this run's detection curve and sampler / TTA settings."""
    settings = json.loads((out / "results.json").read_text())["settings"]
    model = settings["model"]
    wanted: dict[str, Any] = {"detect_on": args.detect_on}
    if model.get("model") == "echo_dnd":
        wanted |= {"ensemble": args.ensemble, "num_steps": args.num_steps}
    else:
        wanted |= {"tta": args.tta}
    found = {"detect_on": settings.get("detect_on", "volume"), **model}
    return all(found.get(k) == v for k, v in wanted.items())


def _run_layout(layout: str, args: argparse.Namespace, deadline: float) -> tuple[list[dict], list[dict], bool]:
    data = args.work / f"phantom_{layout}"
    if not (data / "phantom_curves.json").is_file():
        options = {"fps": 30.0, "n_beats": 2} if layout == "dicom" else {"n_beats": 2}
        make_phantom(
            data, n_patients=args.n_patients, layout=layout, seed=args.seed, overwrite=True, progress=False, **options
        )
    truth = json.loads((data / "phantom_curves.json").read_text())
    by_patient: dict[str, dict[str, str]] = {}
    for name, loop in truth["loops"].items():
        by_patient.setdefault(loop["patient"], {})[loop["view"] if layout == "dicom" else "4CH"] = name
    beats, efs, complete = [], [], True
    for pid in sorted(by_patient):
        out = args.work / f"analyze_{layout}_{args.model}" / pid
        if (out / "results.json").is_file() and not _cached_run_matches(out, args):
            (out / "results.json").unlink()  # written with other settings: analysed again below (overwrite=True)
        if not (out / "results.json").is_file() and not (out / FAILED).is_file():
            if time.monotonic() > deadline:
                complete = False
                continue
            source = (
                data / "dicom" / pid if layout == "dicom" else data / truth["loops"][by_patient[pid]["4CH"]]["file"]
            )
            try:
                analyze(
                    source,
                    out,
                    model=args.model,
                    model_path=args.model_path,
                    num_steps=args.num_steps,
                    views="auto" if layout == "dicom" else "4CH",
                    ensemble=args.ensemble,
                    tta=args.tta,
                    detect_on=args.detect_on,
                    overwrite=True,
                    progress=False,
                    overlay=False,
                )
            except EchoDataError as err:  # e.g. no beat found in a loop: a failure of the method, counted as such
                atomic_write_json(out / FAILED, {"problem": str(err)})
        if (out / FAILED).is_file():
            failed = json.loads((out / FAILED).read_text())["problem"]
            for view, name in by_patient[pid].items():
                beats += [
                    {
                        "layout": layout,
                        "patient": pid,
                        "view": view,
                        "matched": False,
                        "ed_error": None,
                        "es_error": None,
                    }
                    for _ in truth["loops"][name]["beats"]
                ]
            efs.append(
                {
                    "layout": layout,
                    "patient": pid,
                    "method": "failed",
                    "problem": failed,
                    "frames": 0,
                    "seconds": 0.0,
                    "ef_true": truth["loops"][next(iter(by_patient[pid].values()))]["true_ef_pct"],
                    "ef_detected": float("nan"),
                    "ef_true_frames": float("nan"),
                    "ef_low": None,
                    "ef_high": None,
                }
            )
            continue
        result = json.loads((out / "results.json").read_text())["results"][0]
        b, e = _patient_rows(layout, pid, result, out, truth, by_patient[pid], args.detect_on)
        beats += b
        efs.append(e)
    return beats, efs, complete


def _summary(beats: Sequence[Mapping[str, Any]], efs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    ok = [b["matched"] and b["ed_error"] <= 1 and b["es_error"] <= 1 for b in beats]
    ed = [b["ed_error"] for b in beats if b["matched"]]
    es = [b["es_error"] for b in beats if b["matched"]]
    frames, seconds = sum(e["frames"] for e in efs), sum(e["seconds"] for e in efs)
    with_interval = [e for e in efs if e["ef_low"] is not None]
    noise = [v for e in efs for v in e.get("curve_noise_pct", {}).values()]
    return {
        "patients": len(efs),
        "failed_patients": sum(e["method"] == "failed" for e in efs),
        "true_beats": len(beats),
        "matched_beats": len(ed),
        "beats_ed_es_within_1_frame": float(np.mean(ok)) if ok else None,
        "ed_within_1": float(np.mean([e <= 1 for e in ed])) if ed else None,
        "es_within_1": float(np.mean([e <= 1 for e in es])) if es else None,
        "ed_error_mean": float(np.mean(ed)) if ed else None,
        "es_error_mean": float(np.mean(es)) if es else None,
        "ef_detected_vs_true": _agreement([e["ef_detected"] for e in efs], [e["ef_true"] for e in efs]),
        "ef_true_frames_vs_true": _agreement([e["ef_true_frames"] for e in efs], [e["ef_true"] for e in efs]),
        "ef_detected_vs_true_frames": _agreement([e["ef_detected"] for e in efs], [e["ef_true_frames"] for e in efs]),
        # a model without samples (nnU-Net) has no interval: None, not 0
        "true_ef_inside_interval": float(np.mean([e["ef_low"] <= e["ef_true"] <= e["ef_high"] for e in with_interval]))
        if with_interval
        else None,
        "segmentation_frames_per_s": frames / seconds if seconds > 0 else None,
        "curve_noise_pct_min_max": [min(noise), max(noise)] if noise else None,
    }


def _markdown(summaries: Mapping[str, Mapping[str, Any]], args: argparse.Namespace) -> str:
    rows = []
    for layout, s in summaries.items():
        for key, title in (
            ("ef_detected_vs_true", "EF detected frames - true EF"),
            ("ef_true_frames_vs_true", "EF true frames - true EF"),
            ("ef_detected_vs_true_frames", "EF detected - EF true frames"),
        ):
            a = s[key]
            rows.append(
                {
                    "layout": layout,
                    "comparison": title,
                    "n": a["n"],
                    "bias": a["bias"],
                    "loa_low": a["loa_low"],
                    "loa_high": a["loa_high"],
                    "mae": a["mae"],
                }
            )
    beats = [
        {
            "layout": k,
            "patients": s["patients"],
            "no beat found": s["failed_patients"],
            "true beats": s["true_beats"],
            "matched": s["matched_beats"],
            "ED and ES within 1 frame": s["beats_ed_es_within_1_frame"],
            "ED within 1": s["ed_within_1"],
            "ES within 1": s["es_within_1"],
            "mean ED error": s["ed_error_mean"],
            "mean ES error": s["es_error_mean"],
            "true EF in interval": s["true_ef_inside_interval"],
            "frames/s": s["segmentation_frames_per_s"],
        }
        for k, s in summaries.items()
    ]
    sampler = f"{args.num_steps} steps, ensemble {args.ensemble}, " if args.model == "echo_dnd" else ""
    if args.model == "nnunet":
        sampler += "mirroring TTA, " if getattr(args, "tta", True) else "no TTA, "
    sampler += f"ED/ES on the {getattr(args, 'detect_on', 'volume')} curve, "
    head = f"# analyze on the phantom ({args.model}, {sampler}{args.n_patients} patients, seed {args.seed})\n\n"
    return head + markdown_table(beats, list(beats[0]), 3) + "\n" + markdown_table(rows, list(rows[0]), 2)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("build/analyze_phantom"))
    parser.add_argument("--n_patients", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--layouts", default="dicom,echonet")
    parser.add_argument("--model", default="echo_dnd")
    parser.add_argument("--model_path", default=None)
    parser.add_argument("--num_steps", type=int, default=5)
    parser.add_argument("--ensemble", type=int, default=4)
    parser.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="nnU-Net: mirroring test-time augmentation (analyze's default; --no-tta: the runs before it was)",
    )
    parser.add_argument(
        "--detect_on",
        choices=DETECT_ON,
        default="area",
        help="the curve ED/ES are detected on (analyze's --detect_on; volume: the runs before area was the default)",
    )
    parser.add_argument("--budget_s", type=float, default=540.0, help="start no new patient after this many seconds")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    summaries, details, complete = {}, {}, True
    for layout in args.layouts.split(","):
        beats, efs, done = _run_layout(layout, args, t0 + args.budget_s)
        complete &= done
        if efs:
            summaries[layout], details[layout] = _summary(beats, efs), {"beats": beats, "ef": efs}
    record = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "complete": complete,
        "summary": summaries,
        "details": details,
        "machine": machine(),
        "wall_s": time.monotonic() - t0,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "analyze_phantom.json", to_jsonable(record))
    if summaries:
        atomic_write_text(args.out / "analyze_phantom.md", _markdown(summaries, args))
    print(json.dumps(to_jsonable(summaries), indent=1))
    print("complete" if complete else "INCOMPLETE: rerun the same command to continue")


if __name__ == "__main__":
    main()
