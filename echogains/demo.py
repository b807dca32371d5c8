"""``make demo``: the whole chain on the embedded default (synthetic phantom, no data, no GPU).

1. ``make-phantom`` (CAMUS NIfTI layout, ``camus-like``) -> ``convert-camus`` -> nnU-Net raw dataset ->
   ``verify-dataset``.
2. Echo-DND segmentation of the test cases with the bundle's demo weights, run as users run it:
   ``python -m monai.bundle run inference --config_file bundles/echo_dnd/configs/inference.json ...``;
   masks and uncertainty maps in the input geometry.
3. nnU-Net on the same training split, run beside step 2 (one core each), as users run it:
   ``nnUNetv2_plan_and_preprocess --verify_dataset_integrity``, ``nnUNetv2_train -tr nnUNetTrainerEchoSmoke``
   (2 iterations: the demo checks the nnU-Net path; ``--nnunet_trainer nnUNetTrainerEchoQuick`` trains for real,
   in tens of CPU minutes; ``experiments/echo_dnd_tables.py`` compares trained models) and ``nnUNetv2_predict``
   on the same test cases.
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
from pathlib import Path

import fire

from echogains.utils import EchoDataError, atomic_write_json, atomic_write_text, get_logger, set_progress

log = get_logger("echogains.demo")

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundles" / "echo_dnd"


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
    return {"dice": seg.get("dice", {}).get("mean"), "hd_mm": seg.get("hd_mm", {}).get("mean"),
            "ef_bias": ef.get("bias"), "ef_loa_low": ef.get("loa_lower"), "ef_loa_high": ef.get("loa_upper")}


def _models_table(rows: list[tuple[str, str, dict | None]]) -> str:
    """HTML table: model, what it is, LV Dice, HD, EF bias and limits of agreement, link to its report."""

    def f(v: float | None, d: int = 3) -> str:
        return "–" if v is None else f"{v:.{d}f}"

    body = ""
    for name, (what, link), summary in rows:
        s = _scores(summary)
        loa = "–" if s["ef_loa_low"] is None else f"{s['ef_loa_low']:.1f} .. {s['ef_loa_high']:.1f}"
        body += (f'<tr><td><a href="{link}">{html.escape(name)}</a></td><td>{html.escape(what)}</td>'
                 f"<td>{f(s['dice'])}</td><td>{f(s['hd_mm'], 2)}</td><td>{f(s['ef_bias'], 1)}</td><td>{loa}</td></tr>")
    return ("<table border=1 cellspacing=0><tr><th>model</th><th>what it is</th><th>LV Dice</th><th>HD (mm)</th>"
            f"<th>EF bias (points)</th><th>EF limits of agreement</th></tr>{body}</table>")


def _index(root: Path, timings: dict[str, float], summary: dict, aug_report: Path | None,
           nnunet: tuple[str, dict | None] | None = None) -> Path:
    models = [("Echo-DND", ("demo weights (tiny, 64 px, 3000 steps on another phantom seed); 10 DDIM steps",
                            "report/report.html"), summary)]
    if nnunet is not None:
        trainer, nn_summary = nnunet
        what = ("2 iterations: checks the nnU-Net path, not a trained model" if trainer.endswith("Smoke")
                else "nnU-Net 2d, trained here on the same training split")
        models.append((f"nnU-Net ({trainer})", (what, "report_nnunet/report.html"), nn_summary))
    seg = summary.get("segmentation", {}).get("all", {}).get("LV", {})
    dice = seg.get("dice", {}).get("mean")
    hd = seg.get("hd_mm", {}).get("mean")
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.1f}</td></tr>" for k, v in timings.items())
    aug = ""
    if aug_report is not None:
        gallery = [p for p in aug_report.parent.glob("*.png")]
        imgs = "".join(f'<img src="{p.relative_to(root).as_posix()}" style="max-width:900px"><br>' for p in sorted(gallery))
        aug = (f'<h2>Generative augmentation (EchoGAINS)</h2><p><a href="{aug_report.relative_to(root).as_posix()}">'
               f"augmentation report (JSON)</a></p>{imgs}")
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
{aug}
<h2>Timings (s)</h2><table>{rows}</table></body></html>
"""
    path = root / "index.html"
    atomic_write_text(path, text)
    return path


def run_demo(
    out: str = "demo_output",
    n_patients: int = 60,
    seed: int = 0,
    num_steps: int = 10,
    ensemble: int = 3,
    augment: bool = True,
    nnunet: bool = True,
    nnunet_trainer: str = "nnUNetTrainerEchoSmoke",
    progress: bool = True,
) -> str:
    """Run the demo chain and write ``out/index.html``.

    Args:
        out: output folder (replaced if it exists).
        n_patients: phantom patients (each: 2CH and 4CH at ED and ES); about 10 % form the test split.
        seed: phantom seed (the demo weights were trained on seed 1000, so these patients are unseen).
        num_steps: Echo-DND sampling steps.
        ensemble: Echo-DND samples per image (the uncertainty map needs more than one).
        augment: also run the EchoGAINS expansion and its report.
        nnunet: also train and evaluate nnU-Net (``nnunet_trainer``) on the same data, beside Echo-DND inference.
        nnunet_trainer: ``nnUNetTrainerEchoSmoke`` (2 iterations: checks the nnU-Net path within the demo's time)
            or ``nnUNetTrainerEchoQuick`` (15 epochs of 25 iterations, batch 10 at 128 x 80: 78 s per epoch measured on
            a loaded 2-core machine).
        progress: show progress bars.
    """
    from echogains.augment.expand import expand_dataset
    from echogains.augment.quality import augmentation_report
    from echogains.data.camus import convert_camus
    from echogains.data.phantom import make_phantom
    from echogains.data.verify import verify_dataset
    from echogains.ddpm import DEMO_WEIGHTS
    from echogains.evaluation.evaluate import evaluate

    set_progress(progress)
    weights = BUNDLE / "models" / "model.pt"
    for path in (weights, *([DEMO_WEIGHTS] if augment else [])):
        if not path.is_file():
            raise EchoDataError(path, "demo weights missing (make demo-weights trains them)")
    root = Path(out).resolve()
    if root.exists():
        shutil.rmtree(root)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    def stage(name: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        log.info("demo: %s", name)
        result = fn(*args, **kwargs)
        timings[name] = round(time.perf_counter() - t0, 2)
        return result

    camus = root / "phantom_camus"
    dataset = root / "nnUNet_raw" / "Dataset501_PhantomCAMUS"
    stage("make-phantom", make_phantom, camus, n_patients=n_patients, preset="camus-like", layout="camus-nifti",
          seed=seed, progress=progress)
    stage("convert-camus", convert_camus, camus, dataset, labels="lv,myo,la", progress=progress)
    report = stage("verify-dataset", verify_dataset, dataset, show_progress=progress)
    if not report.ok:
        raise SystemExit(report.summary())
    nn = nn_thread = None
    nn_error: list[BaseException] = []
    if nnunet:
        from echogains.nnunet_runner import NnUNet

        nn = NnUNet(raw=root / "nnUNet_raw", device="cpu", threads=1, log_dir=root / "logs")

        def nnunet_train() -> None:  # beside Echo-DND inference: one core each
            try:
                stage("nnU-Net plan_and_preprocess", nn.plan_and_preprocess, dataset, verify=True)
                stage(f"nnU-Net train ({nnunet_trainer})", nn.train, dataset, nnunet_trainer, 0)
            except BaseException as err:  # re-raised in the main thread
                nn_error.append(err)

        nn_thread = threading.Thread(target=nnunet_train, name="nnunet", daemon=True)
        nn_thread.start()
    preds = root / "predictions" / "echo_dnd"
    stage("echo-dnd inference", _run, [
        sys.executable, "-m", "monai.bundle", "run", "inference",
        "--config_file", str(BUNDLE / "configs" / "inference.json"),
        "--dataset_dir", str(dataset), "--output_dir", str(preds), "--subset", "Ts",
        "--num_steps", str(num_steps), "--ensemble", str(ensemble), "--device", "cpu",
        "--progress", str(bool(progress)).lower()])
    summary = stage("evaluate", evaluate, preds, dataset, root / "report", subset="Ts", progress=progress)
    nn_summary = None
    if nn is not None and nn_thread is not None:
        t0 = time.perf_counter()
        nn_thread.join()
        timings["wait for nnU-Net training"] = round(time.perf_counter() - t0, 2)
        if nn_error:
            raise SystemExit(f"demo step failed: {nn_error[0]}")
        nn_preds = root / "predictions" / "nnunet"
        stage("nnU-Net predict", nn.predict, dataset / "imagesTs", nn_preds, dataset, nnunet_trainer, 0)
        nn_summary = stage("evaluate nnU-Net", evaluate, nn_preds, dataset, root / "report_nnunet", subset="Ts",
                           progress=progress)
    aug_report = None
    if augment:
        small = root / "nnUNet_raw" / "Dataset502_PhantomLVFocused"
        stage("make-phantom lv-focused", make_phantom, small, n_patients=4, preset="lv-focused", layout="nnunet",
              labels="lv,myo", seed=seed + 7, progress=progress)
        expanded = root / "nnUNet_raw" / "Dataset503_PhantomLVFocusedAug"
        stage("expand-dataset", expand_dataset, small, expanded, model=DEMO_WEIGHTS, augment="combination", k=2,
              sampler="fast", seed=seed, device="cpu", progress=progress)
        aug_report = stage("augmentation-report", augmentation_report, expanded, root / "augmentation",
                           model=DEMO_WEIGHTS, n_samples=8, device="cpu", progress=progress)
    timings["total"] = round(time.perf_counter() - start, 2)
    atomic_write_json(root / "demo_timings.json", timings)
    index = _index(root, timings, summary if isinstance(summary, dict) else {}, aug_report,
                   (nnunet_trainer, nn_summary) if nnunet else None)
    print(f"demo finished in {timings['total']:.1f} s; open {index}")
    return str(index)


def main() -> None:
    import torch

    torch.set_num_threads(1)
    fire.Fire(run_demo)


if __name__ == "__main__":
    main()
