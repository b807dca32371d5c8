"""``make demo``: the whole chain on the embedded default (synthetic phantom, no data, no GPU).

1. ``make-phantom`` (CAMUS NIfTI layout, ``camus-like``) -> ``convert-camus`` -> nnU-Net raw dataset ->
   ``verify-dataset``.
2. Echo-DND segmentation of the test cases with the bundle's demo weights, run as users run it:
   ``python -m monai.bundle run inference --config_file bundles/echo_dnd/configs/inference.json ...``;
   masks and uncertainty maps in the input geometry.
3. nnU-Net on the same test cases: the committed demo model (``nnUNetTrainerEchoDemo``, trained by
   ``make demo-weights-nnunet`` on the Echo-DND demo weights' phantom data) through
   ``nnUNetv2_predict_from_modelfolder``; with ``--nnunet_trainer nnUNetTrainerEchoSmoke`` / ``...Quick`` it is
   planned and trained here instead, beside step 2 (``experiments/echo_dnd_tables.py`` compares trained models).
   Beside step 2 too: ``echogains analyze`` of one phantom patient's A2C + A4C ultrasound DICOM loops (every frame
   segmented by Echo-DND, ED/ES per beat, Simpson biplane EF with its interval, overlay videos).
4. ``evaluate`` of both with the same evaluator: Dice, HD/MSD in mm, Simpson-biplane EF against the phantom's
   analytic reference, Bland-Altman, overlays, HTML report.
5. EchoGAINS: ``expand-dataset`` of a small ``lv-focused`` phantom with the demo DDPM (fast RePaint sampler),
   then ``augmentation-report`` (gallery, memorisation check, seam scores).
6. ``index.html`` linking everything, and ``demo_timings.json``.

The demo uses one torch thread per process: on a shared 2-core machine two-thread torch can be many times slower.
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fire

from echogains.analysis import analyze
from echogains.augment.expand import expand_dataset
from echogains.augment.quality import augmentation_report
from echogains.data.camus import convert_camus
from echogains.data.phantom import make_phantom
from echogains.data.verify import verify_dataset
from echogains.ddpm import DEMO_WEIGHTS
from echogains.evaluation.evaluate import evaluate
from echogains.locate import find_bundle, nnunet_ext_dir
from echogains.nnunet_runner import NnUNet, nnunet_command
from echogains.utils import EchoDataError, atomic_write_json, atomic_write_text, get_logger, set_progress

log = get_logger("echogains.demo")

#: the committed demo nnU-Net (``make demo-weights-nnunet``), used unless another trainer is asked for
DEMO_NNUNET_TRAINER = "nnUNetTrainerEchoDemo"
DEMO_NNUNET_WHAT = "demo weights (small U-Net, 16 x 25 iterations on another phantom seed; make demo-weights-nnunet)"


def demo_nnunet_model() -> Path:
    """The committed demo nnU-Net model folder (located through the plugin's package, which is not imported)."""
    base = nnunet_ext_dir() / "demo_model"
    return base / "Dataset601_PhantomLV" / f"{DEMO_NNUNET_TRAINER}__nnUNetPlans__2d"


def _run(cmd: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    log.info("$ %s", " ".join(cmd))
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"demo step failed ({proc.returncode}): {' '.join(cmd)}")


def _scores(summary: dict | None) -> dict[str, float | None]:
    """LV Dice/HD and EF agreement of an ``evaluate`` summary."""
    summary = summary if isinstance(summary, dict) else {}
    seg = summary.get("segmentation", {}).get("all", {}).get("LV", {})
    ef = summary.get("clinical", {}).get("agreement", {}).get("prediction vs reference", {}).get("ef_pct") or {}
    return {
        "dice": seg.get("dice", {}).get("mean"),
        "hd_mm": seg.get("hd_mm", {}).get("mean"),
        "ef_bias": ef.get("bias"),
        "ef_loa_low": ef.get("loa_lower"),
        "ef_loa_high": ef.get("loa_upper"),
    }


def _models_table(rows: list[tuple[str, str, dict | None]]) -> str:
    """HTML table: model, what it is, LV Dice, HD, EF bias and limits of agreement, link to its report."""

    def f(v: float | None, d: int = 3) -> str:
        return "–" if v is None else f"{v:.{d}f}"

    body = ""
    for name, (what, link), summary in rows:
        s = _scores(summary)
        loa = "–" if s["ef_loa_low"] is None else f"{s['ef_loa_low']:.1f} .. {s['ef_loa_high']:.1f}"
        body += (
            f'<tr><td><a href="{link}">{html.escape(name)}</a></td><td>{html.escape(what)}</td>'
            f"<td>{f(s['dice'])}</td><td>{f(s['hd_mm'], 2)}</td><td>{f(s['ef_bias'], 1)}</td><td>{loa}</td></tr>"
        )
    return (
        "<table border=1 cellspacing=0><tr><th>model</th><th>what it is</th><th>LV Dice</th><th>HD (mm)</th>"
        f"<th>EF bias (points)</th><th>EF limits of agreement</th></tr>{body}</table>"
    )


def _loops_section(root: Path, record: dict | None) -> str:
    """index.html section of the ``analyze`` run: EF per patient, curves, links to the overlay videos."""
    if not record:
        return ""
    parts = []
    for r in record.get("results", []):
        loop = r["loop"]
        interval = "–" if loop.get("ef_low_pct") is None else f"{loop['ef_low_pct']:.1f} .. {loop['ef_high_pct']:.1f}"
        videos = " ".join(
            f'<a href="analyze/{html.escape(v["overlay_video"])}">{html.escape(view)} overlay video</a>'
            for view, v in r["loops"].items()
            if v.get("overlay_video")
        )
        imgs = "".join(
            f'<img src="analyze/{html.escape(v["curves_png"])}" style="max-width:440px">' for v in r["loops"].values()
        )
        parts.append(
            f"<p>{html.escape(r['patient'])}: {html.escape(r['method'])}, {loop['n_beats']} beat(s), EF "
            f"{loop['ef_pct']:.1f} % (95 % interval from the diffusion samples {interval}); {videos}</p>{imgs}"
        )
    return (
        "<h2>Echo loops: <code>echogains analyze</code></h2><p>One phantom patient's A2C and A4C "
        "multi-frame ultrasound "
        "DICOM loops, every frame segmented by Echo-DND, ED/ES per beat from the volume curve, Simpson biplane EF. "
        '<a href="analyze/report.html">analyze report</a> (masks, curves, overlay videos).</p>' + "".join(parts)
    )


def _index(
    root: Path,
    timings: dict[str, float],
    summary: dict,
    aug_report: Path | None,
    nnunet: tuple[str, dict | None] | None = None,
    loops: dict | None = None,
) -> Path:
    models = [
        (
            "Echo-DND",
            ("demo weights (tiny, 64 px, 3000 steps on another phantom seed); 10 DDIM steps", "report/report.html"),
            summary,
        )
    ]
    if nnunet is not None:
        trainer, nn_summary = nnunet
        what = (
            "2 iterations: checks the nnU-Net path, not a trained model"
            if trainer.endswith("Smoke")
            else DEMO_NNUNET_WHAT
            if trainer == DEMO_NNUNET_TRAINER
            else "nnU-Net 2d, trained here on the same training split"
        )
        models.append((f"nnU-Net ({trainer})", (what, "report_nnunet/report.html"), nn_summary))
    seg = summary.get("segmentation", {}).get("all", {}).get("LV", {})
    dice = seg.get("dice", {}).get("mean")
    hd = seg.get("hd_mm", {}).get("mean")
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.1f}</td></tr>" for k, v in timings.items())
    aug = ""
    if aug_report is not None:
        gallery = [p for p in aug_report.parent.glob("*.png")]
        imgs = "".join(
            f'<img src="{p.relative_to(root).as_posix()}" style="max-width:900px"><br>' for p in sorted(gallery)
        )
        aug = (
            f'<h2>Generative augmentation (EchoGAINS)</h2><p><a href="{aug_report.relative_to(root).as_posix()}">'
            f"augmentation report (JSON)</a></p>{imgs}"
        )
    text = f"""<!doctype html><html><head><meta charset="utf-8"><title>echogains demo</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1000px}} td{{padding:2px 8px}}</style></head><body>
<h1>echogains demo on the synthetic phantom</h1>
<p>Echo-DND (demo weights) on the phantom test split: LV Dice {dice if dice is None else f"{dice:.3f}"},
HD {hd if hd is None else f"{hd:.2f}"} mm. <a href="report/report.html">Full evaluation report</a>
(metrics, Simpson-biplane EF, Bland–Altman, overlays).</p>
<h2>Models on the same test cases (same evaluator)</h2>{_models_table(models)}
<p>EF: Simpson's biplane from the predicted masks against the phantom's analytic EF.</p>
<h2>Uncertainty maps</h2><p>Echo-DND's uncertainty maps as written, drawn by <code>evaluate</code> (colour scale:
0 = every sample agrees, 1 = the samples split evenly; <a href="report/report.html">report</a>).</p>
<img src="report/uncertainty.png" style="max-width:900px">
{_loops_section(root, loops)}
{aug}
<h2>Timings (s)</h2><table>{rows}</table></body></html>
"""
    path = root / "index.html"
    atomic_write_text(path, text)
    return path


def _predict_demo_nnunet(nn: NnUNet, images: Path, out: Path) -> float:
    """``nnUNetv2_predict_from_modelfolder`` with the committed demo model (``-f 0``, the plugin's trainers)."""
    model = demo_nnunet_model()
    if not (model / "fold_0" / "checkpoint_final.pth").is_file():
        raise EchoDataError(model, "demo nnU-Net weights missing (make demo-weights-nnunet trains them)")
    args = [
        *nnunet_command("nnUNetv2_predict_from_modelfolder"),
        "-i",
        str(images),
        "-o",
        str(out),
        "-m",
        str(model),
        "-f",
        "0",
        "-device",
        "cpu",
        "-npp",
        "1",
        "-nps",
        "1",
    ]
    return nn.run(args, "predict_demo_nnunet")


def _analyze_loops(root: Path, seed: int, progress: bool, bundle: Path) -> dict:
    """One phantom patient's A2C + A4C ultrasound DICOM loops (2 beats at 30 fps), analysed with Echo-DND."""
    loops = make_phantom(
        root / "phantom_dicom",
        n_patients=1,
        layout="dicom",
        seed=seed + 11,
        cycle_frames=24,
        fps=30.0,
        n_beats=2,
        progress=False,
    )
    return analyze(loops / "dicom", root / "analyze", bundle_root=str(bundle), ensemble=2, progress=progress)


class _Stages:
    """Runs the demo's steps, logging each and recording its wall time in seconds (``timings``)."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        log.info("demo: %s", name)
        result = fn(*args, **kwargs)
        self.timings[name] = round(time.perf_counter() - t0, 2)
        return result


def _phantom_dataset(stage: _Stages, root: Path, n_patients: int, seed: int, progress: bool) -> Path:
    """Step 1: phantom (CAMUS NIfTI layout) -> nnU-Net raw dataset, verified."""
    camus = root / "phantom_camus"
    dataset = root / "nnUNet_raw" / "Dataset501_PhantomCAMUS"
    stage(
        "make-phantom",
        make_phantom,
        camus,
        n_patients=n_patients,
        preset="camus-like",
        layout="camus-nifti",
        seed=seed,
        progress=progress,
    )
    stage("convert-camus", convert_camus, camus, dataset, labels="lv,myo,la", progress=progress)
    report = stage("verify-dataset", verify_dataset, dataset, progress=progress)
    if not report.ok:
        raise SystemExit(report.summary())
    return dataset


def _start_beside(
    stage: _Stages,
    nn: NnUNet | None,
    dataset: Path,
    trainer: str | None,
    analyze_loops: tuple | None,
    loop_record: dict,
    errors: list[BaseException],
) -> threading.Thread | None:
    """Start nnU-Net planning + training (when ``trainer``) and the loop analysis (``(root, seed, progress, bundle)``)
    in a thread beside Echo-DND inference (one core each); errors are kept in ``errors`` for the main thread."""
    if trainer is None and analyze_loops is None:
        return None

    def beside() -> None:
        try:
            if trainer is not None and nn is not None:
                stage("nnU-Net plan_and_preprocess", nn.plan_and_preprocess, dataset, verify=True)
                stage(f"nnU-Net train ({trainer})", nn.train, dataset, trainer, 0)
            if analyze_loops is not None:
                loop_record.update(stage("analyze (DICOM loops)", _analyze_loops, *analyze_loops))
        except BaseException as err:  # noqa: BLE001 -- deliberate: any failure (even KeyboardInterrupt) is re-raised in the main thread
            errors.append(err)

    thread = threading.Thread(target=beside, name="beside", daemon=True)
    thread.start()
    return thread


def _echo_dnd(
    stage: _Stages, bundle: Path, dataset: Path, root: Path, num_steps: int, ensemble: int, progress: bool
) -> Any:
    """Step 2 and its evaluation: the bundle's inference as users run it, then ``evaluate``."""
    preds = root / "predictions" / "echo_dnd"
    stage(
        "echo-dnd inference",
        _run,
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "inference",
            "--config_file",
            str(bundle / "configs" / "inference.json"),
            "--bundle_root",  # the model-zoo convention: "bundle_root" is "." unless given
            str(bundle),
            "--dataset_dir",
            str(dataset),
            "--output_dir",
            str(preds),
            "--subset",
            "Ts",
            "--num_steps",
            str(num_steps),
            "--ensemble",
            str(ensemble),
            "--device",
            "cpu",
            "--progress",
            str(bool(progress)).lower(),
        ],
    )
    return stage("evaluate", evaluate, preds, dataset, root / "report", subset="Ts", progress=progress)


def _nnunet(
    stage: _Stages, nn: NnUNet, dataset: Path, root: Path, trainer: str, trained_here: bool, progress: bool
) -> Any:
    """Step 3's predictions (the trained or the committed model) and their evaluation."""
    nn_preds = root / "predictions" / "nnunet"
    if trained_here:
        stage("nnU-Net predict", nn.predict, dataset / "imagesTs", nn_preds, dataset, trainer, 0)
    else:
        stage("nnU-Net predict (demo weights)", _predict_demo_nnunet, nn, dataset / "imagesTs", nn_preds)
    return stage(
        "evaluate nnU-Net", evaluate, nn_preds, dataset, root / "report_nnunet", subset="Ts", progress=progress
    )


def _augment(stage: _Stages, root: Path, seed: int, progress: bool) -> Path:
    """Step 5: ``expand-dataset`` of a small ``lv-focused`` phantom with the demo DDPM, then its report."""
    small = root / "nnUNet_raw" / "Dataset502_PhantomLVFocused"
    stage(
        "make-phantom lv-focused",
        make_phantom,
        small,
        n_patients=4,
        preset="lv-focused",
        layout="nnunet",
        labels="lv,myo",
        seed=seed + 7,
        progress=progress,
    )
    expanded = root / "nnUNet_raw" / "Dataset503_PhantomLVFocusedAug"
    stage(
        "expand-dataset",
        expand_dataset,
        small,
        expanded,
        model=DEMO_WEIGHTS,
        augment="combination",
        k=2,
        sampler="fast",
        seed=seed,
        device="cpu",
        progress=progress,
    )
    return stage(
        "augmentation-report",
        augmentation_report,
        expanded,
        root / "augmentation",
        model=DEMO_WEIGHTS,
        n_samples=8,
        device="cpu",
        progress=progress,
    )


def run_demo(
    out: str = "demo_output",
    n_patients: int = 60,
    seed: int = 0,
    num_steps: int = 10,
    ensemble: int = 3,
    augment: bool = True,
    nnunet: bool = True,
    nnunet_trainer: str = DEMO_NNUNET_TRAINER,
    loops: bool = True,
    progress: bool = True,
    bundle_root: str | None = None,
) -> str:
    """Run the demo chain and write ``out/index.html``.

    Args:
        out: output folder (replaced if it exists).
        n_patients: phantom patients (each: 2CH and 4CH at ED and ES); about 10 % form the test split.
        seed: phantom seed (the demo weights were trained on seed 1000, so these patients are unseen).
        num_steps: Echo-DND sampling steps.
        ensemble: Echo-DND samples per image (the uncertainty map needs more than one).
        augment: also run the EchoGAINS expansion and its report.
        nnunet: also evaluate nnU-Net on the same test cases with the same evaluator.
        nnunet_trainer: ``nnUNetTrainerEchoDemo``: the committed demo model (``make demo-weights-nnunet``), predicted
            with ``nnUNetv2_predict_from_modelfolder``; any other trainer is planned and trained here, beside Echo-DND
            inference: ``nnUNetTrainerEchoSmoke`` (2 iterations: checks the path) or ``nnUNetTrainerEchoQuick`` (15
            epochs of 25 iterations, batch 10 at 128 x 80: 78 s per epoch measured on a loaded 2-core machine).
        loops: also ``echogains analyze`` one phantom patient's A2C + A4C DICOM loops (beside Echo-DND inference).
        progress: show progress bars.
        bundle_root: the Echo-DND bundle folder (default: ``$ECHOGAINS_ECHO_DND_BUNDLE``, else the repository's
            ``bundles/echo_dnd``; :func:`echogains.locate.find_bundle`).
    """
    set_progress(progress)
    bundle = find_bundle(bundle_root)
    for path in (bundle / "models" / "model.pt", *([DEMO_WEIGHTS] if augment else [])):
        if not path.is_file():
            raise EchoDataError(path, "demo weights missing (make demo-weights trains them)")
    root = Path(out).resolve()
    if root.exists():
        shutil.rmtree(root)
    stage = _Stages()
    start = time.perf_counter()
    dataset = _phantom_dataset(stage, root, n_patients, seed, progress)
    trains_nnunet = nnunet and nnunet_trainer != DEMO_NNUNET_TRAINER
    nn = NnUNet(raw=root / "nnUNet_raw", device="cpu", threads=1, log_dir=root / "logs") if nnunet else None
    loop_record: dict = {}
    nn_error: list[BaseException] = []
    nn_thread = _start_beside(
        stage,
        nn,
        dataset,
        nnunet_trainer if trains_nnunet else None,
        (root, seed, progress, bundle) if loops else None,
        loop_record,
        nn_error,
    )
    summary = _echo_dnd(stage, bundle, dataset, root, num_steps, ensemble, progress)
    if nn_thread is not None:
        t0 = time.perf_counter()
        nn_thread.join()
        stage.timings["wait for nnU-Net training / analyze"] = round(time.perf_counter() - t0, 2)
        if nn_error:
            raise SystemExit(f"demo step failed: {nn_error[0]}")
    nn_summary = _nnunet(stage, nn, dataset, root, nnunet_trainer, trains_nnunet, progress) if nn else None
    aug_report = _augment(stage, root, seed, progress) if augment else None
    timings = stage.timings
    timings["total"] = round(time.perf_counter() - start, 2)
    atomic_write_json(root / "demo_timings.json", timings)
    index = _index(
        root,
        timings,
        summary if isinstance(summary, dict) else {},
        aug_report,
        (nnunet_trainer, nn_summary) if nnunet else None,
        loop_record,
    )
    print(f"demo finished in {timings['total']:.1f} s; open {index}")
    return str(index)


def main() -> None:
    import torch

    torch.set_num_threads(1)
    fire.Fire(run_demo)


if __name__ == "__main__":
    main()
