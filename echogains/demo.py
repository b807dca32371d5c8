"""``make demo``: the whole chain on the embedded default (synthetic phantom, no data, no GPU).

Stages: phantom (CAMUS NIfTI layout) -> ``convert-camus`` -> nnU-Net raw dataset -> ``verify-dataset`` ->
segmentation of the test cases -> ``evaluate`` (Dice, HD/MSD in mm, Simpson-biplane EF, Bland-Altman,
overlays, HTML report). Every stage is the same function the ``echogains`` commands call.

Until a segmentation model ships, the "segmenter" is the oracle: the reference masks themselves, so the
report shows the evaluator's ceiling (Dice 1) and, more usefully, how far Simpson-biplane EF from perfect
masks lies from the phantom's analytic EF.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import fire

from echogains.utils import atomic_write_json, get_logger, set_progress

log = get_logger("echogains.demo")


def _oracle_predictions(dataset_dir: Path, pred_dir: Path) -> None:
    """Copy the reference masks of all cases as 'predictions' (nnU-Net naming ``{case}.nii.gz``)."""
    from echogains.data.nnunet import RawDataset

    ds = RawDataset(dataset_dir)
    pred_dir.mkdir(parents=True, exist_ok=True)
    for case in ds.case_ids("all"):
        shutil.copyfile(ds.label_path(case), pred_dir / f"{case}.nii.gz")


def run_demo(out: str = "demo_output", n_patients: int = 30, seed: int = 0, progress: bool = True) -> str:
    """Run the demo chain and write ``out/report/report.html``.

    Args:
        out: output folder (replaced if it exists).
        n_patients: phantom patients (each: 2CH and 4CH at ED and ES).
        seed: phantom seed.
        progress: show progress bars.
    """
    from echogains.data.camus import convert_camus
    from echogains.data.phantom import make_phantom
    from echogains.data.verify import verify_dataset
    from echogains.evaluation.evaluate import evaluate

    set_progress(progress)
    root = Path(out)
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
    preds = root / "predictions" / "oracle"
    stage("segment (oracle)", _oracle_predictions, dataset, preds)
    stage("evaluate", evaluate, preds, dataset, root / "report", subset="all", progress=progress)
    timings["total"] = round(time.perf_counter() - start, 2)
    atomic_write_json(root / "demo_timings.json", timings)
    html = root / "report" / "report.html"
    print(f"demo finished in {timings['total']:.1f} s; report: {html}")
    return str(html)


def main() -> None:
    fire.Fire(run_demo)


if __name__ == "__main__":
    main()
