"""Echo-DND paper Tables 2 and 4 on one dataset: Echo-DND and its ablations, nnU-Net, the demo weights.

``python -m experiments.echo_dnd_tables --out experiments/results/echo_dnd_quick --quick`` (from the repo root).

Arms (each runs in a worker process with one torch thread; ``--jobs`` of them at a time):

- Echo-DND ``full`` and the paper's ablations (``scripts.config.ABLATIONS`` of the bundle: ``gaussian_only``,
  ``bernoulli_only``, ``unet_conditioner``, ``kl_vb`` (the variational-bound KL terms instead of the paper's
  eqs. 10-11, the default), and in full mode ``loss_lg_lb``, ``loss_lg_lb_kl``), all with the same
  step budget, batch, learning rate and seed, trained with the bundle's command
  (``python -m monai.bundle run --config_file bundles/echo_dnd/configs/train.json --ablation NAME ...``) and run
  on the test cases with the bundle's inference command (DDIM steps, ensemble; the chains' masks fused by STAPLE);
- nnU-Net (``nnUNetv2_plan_and_preprocess``/``train``/``predict`` through :class:`echogains.nnunet_runner.NnUNet`,
  2d, fold 0 of the same ``splits_final.json``);
- the committed demo weights ``bundles/echo_dnd/models/model.pt`` as a reference row (inference only: trained
  longer on another phantom seed).

Every arm's predictions go through the same evaluator (:func:`echogains.evaluation.evaluate.evaluate`, subset
``Ts``, label ``LV``: Echo-DND segments the LV only), which gives Dice, HD, HD95 and MSD in mm, per phase (ED/ES)
and EF (Simpson biplane) agreement with the dataset's reference (the phantom's analytic EF).

Outputs in ``--out`` (markdown, JSON and PNG only): ``echo_dnd_tables.md/json`` (Table 2 and Table 4 style tables,
EF agreement, settings, timings, machine, command), ``dice_per_model.png`` and ``bland_altman/{arm}.png``. The
working data (phantom, nnU-Net folders, checkpoints, predictions, evaluations) stay in ``--work``.

Resumable: a finished arm (``{work}/arms/{arm}/result.json``) is not run again, an interrupted Echo-DND training
resumes from its checkpoint, and a working folder made with other settings is refused (``--overwrite`` clears it).
Echo-DND training and sampling are deterministic for a seed; nnU-Net is trained with the seeded Echo trainers
(``ECHOGAINS_NNUNET_SEED`` = ``--seed``), reproducible on one CPU.
"""

from __future__ import annotations

import csv
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import echogains.evaluation.evaluate as evaluation_module  # the module: tests may replace its ``evaluate``
from echogains.data.phantom import PRESETS as PHANTOM_PRESETS
from echogains.data.phantom import make_phantom
from echogains.nnunet_runner import NnUNet, describe_exit
from echogains.utils import EchoDataError, atomic_write_json, get_logger, read_json, set_progress
from experiments.common import (
    REPO,
    StepTimer,
    Stopwatch,
    check_resume,
    machine,
    positive_int,
    run_arms,
    write_results,
)
from experiments.echo_dnd_report import (
    _LABEL,
    ARM_TITLES,
    ECHO_DND_ARMS,
    OTHER_ARMS,
    PAPER_TABLE2,
    PAPER_TABLE4,
    _ordered,
    arm_summary,
    build_report,
    dice_plot,
    ef_rows,
    table2_rows,
    table4_rows,
)
from experiments.echo_dnd_report import EF_COLUMNS as EF_COLUMNS  # re-exported, with the two below
from experiments.echo_dnd_report import TABLE2_COLUMNS as TABLE2_COLUMNS
from experiments.echo_dnd_report import TABLE4_COLUMNS as TABLE4_COLUMNS

log = get_logger("experiments.echo_dnd")

__all__ = [
    "NAME",
    "ECHO_DND_ARMS",
    "QUICK_ARMS",
    "FULL_ARMS",
    "PAPER_TABLE2",
    "PAPER_TABLE4",
    "Settings",
    "make_settings",
    "parse_arms",
    "run_arm",
    "arm_summary",
    "table2_rows",
    "table4_rows",
    "ef_rows",
    "dice_plot",
    "build_report",
    "run",
]

NAME = "echo_dnd_tables"
BUNDLE = REPO / "bundles" / "echo_dnd"
DEMO_WEIGHTS = BUNDLE / "models" / "model.pt"
DATASET_NAME = "Dataset811_EchoDNDPhantom"
#: phantom presets of ``--preset`` (the phantom's own; ``hard``: CAMUS-calibrated difficulty, issue 18).
PRESETS: tuple[str, ...] = tuple(PHANTOM_PRESETS)

QUICK_ARMS: tuple[str, ...] = (
    "full",
    "gaussian_only",
    "bernoulli_only",
    "unet_conditioner",
    "kl_vb",
    "nnunet",
    "demo_weights",
)
FULL_ARMS: tuple[str, ...] = (*ECHO_DND_ARMS, "nnunet", "demo_weights")
#: Rough relative wall time of an arm in quick mode (measured: nnU-Net plan + train + predict ~400 s, Echo-DND
#: 400 steps 200-300 s, the U-Net conditioner slowest, one-chain arms fastest); the longest start first.
_COST = {
    "nnunet": 1.5,
    "unet_conditioner": 1.2,
    "full": 1.0,
    "loss_lg_lb_kl": 1.0,
    "loss_lg_lb": 1.0,
    "kl_vb": 1.0,
    "gaussian_only": 0.8,
    "bernoulli_only": 0.8,
    "demo_weights": 0.0,
}


# --- settings ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything that decides the results (saved in the working folder; a resumed run must match)."""

    mode: str
    seed: int
    dataset: str | None
    preset: str
    n_patients: int
    phantom_size: int
    network_config: str
    image_size: int
    steps: int
    batch_size: int
    lr: float
    sampling_steps: int
    ensemble: int
    nnunet_trainer: str
    tta: bool
    device: str

    def comparable(self) -> dict[str, Any]:
        return asdict(self)


def make_settings(
    quick: bool,
    seed: int = 0,
    dataset: str | None = None,
    n_patients: int | None = None,
    phantom_size: int | None = None,
    network_config: str | None = None,
    image_size: int | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    sampling_steps: int | None = None,
    ensemble: int | None = None,
    nnunet_trainer: str | None = None,
    tta: bool | None = None,
    device: str | None = None,
    preset: str = "camus-like",
) -> Settings:
    """Quick (CPU, 64 px tiny network) or full (paper) settings, with explicit values overriding them.

    Raises:
        EchoDataError: a bad value (non-positive counts, unknown network config, missing dataset).
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise EchoDataError(None, f"--seed must be an integer >= 0, got {seed!r}")
    q = bool(quick)
    values: dict[str, Any] = {
        "n_patients": 60 if q else 100,
        "phantom_size": 64 if q else 256,
        "network_config": "tiny" if q else "paper",
        "image_size": 64 if q else 256,
        "steps": 400 if q else 200_000,
        "batch_size": 8,
        "lr": 2e-4 if q else 5e-5,
        "sampling_steps": 10,
        "ensemble": 3 if q else 5,
        "nnunet_trainer": "nnUNetTrainerEchoQuick" if q else "nnUNetTrainerEcho",
        "tta": not q,
        "device": "cpu" if q else "cuda",
    }
    given = dict(
        n_patients=n_patients,
        phantom_size=phantom_size,
        network_config=network_config,
        image_size=image_size,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        sampling_steps=sampling_steps,
        ensemble=ensemble,
        nnunet_trainer=nnunet_trainer,
        tta=tta,
        device=device,
    )
    values.update({k: v for k, v in given.items() if v is not None})
    for name in ("n_patients", "phantom_size", "image_size", "steps", "batch_size", "sampling_steps", "ensemble"):
        values[name] = positive_int(values[name], name.replace("_", "-"))
    if values["network_config"] not in ("tiny", "paper"):
        raise EchoDataError(None, f"--network_config must be 'tiny' or 'paper', got {values['network_config']!r}")
    if not (isinstance(values["lr"], (int, float)) and values["lr"] > 0):
        raise EchoDataError(None, f"--lr must be > 0, got {values['lr']!r}")
    if values["device"] not in ("cpu", "cuda"):
        raise EchoDataError(None, f"--device must be 'cpu' or 'cuda', got {values['device']!r}")
    if preset not in PRESETS:
        raise EchoDataError(None, f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if values["n_patients"] < 10 and dataset is None:
        raise EchoDataError(None, "--n_patients must be >= 10 (the phantom's test split needs patients)")
    if dataset is not None:
        path = Path(dataset).resolve()
        if not (path / "dataset.json").is_file():
            raise EchoDataError(
                path, "not an nnU-Net raw dataset (no dataset.json); convert CAMUS with `echogains convert-camus` first"
            )
        if not (path / "splits_final.json").is_file():
            raise EchoDataError(path, "no splits_final.json (fold 0 trains Echo-DND and nnU-Net)")
        dataset = str(path)
    return Settings(
        mode="quick" if q else "full",
        seed=int(seed),
        dataset=dataset,
        preset=str(preset),
        lr=float(values.pop("lr")),
        tta=bool(values.pop("tta")),
        **values,
    )


def parse_arms(arms: str | Sequence[str] | None, quick: bool) -> tuple[str, ...]:
    """The arms to run: comma-separated names (default: :data:`QUICK_ARMS` or :data:`FULL_ARMS`)."""
    if arms is None:
        return QUICK_ARMS if quick else FULL_ARMS
    names = [a.strip() for a in arms.split(",")] if isinstance(arms, str) else [str(a).strip() for a in arms]
    names = [n for n in names if n]
    known = (*ECHO_DND_ARMS, *OTHER_ARMS)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise EchoDataError(None, f"unknown arms {unknown or names}; choose from {', '.join(known)}")
    return tuple(dict.fromkeys(names))


# --- folders ----------------------------------------------------------------------------------------------------
def dataset_dir(work: Path, settings: Settings) -> Path:
    """The nnU-Net raw dataset of the run: ``--dataset`` or the phantom in ``{work}/nnUNet_raw``."""
    return Path(settings.dataset) if settings.dataset else work / "nnUNet_raw" / DATASET_NAME


def arm_dir(work: Path, arm: str) -> Path:
    return work / "arms" / arm


def prepare_dataset(work: Path, settings: Settings) -> Path:
    """Write the phantom of ``settings.preset`` (nnU-Net layout; fold 0 of its ``splits_final.json``, unseen
    ``imagesTs``)."""
    ds = dataset_dir(work, settings)
    if settings.dataset or (ds / "dataset.json").is_file():
        return ds
    size = settings.phantom_size
    return make_phantom(
        ds,
        n_patients=settings.n_patients,
        preset=settings.preset,
        layout="nnunet",
        labels="lv,myo,la",
        image_size=(size, size),
        seed=settings.seed,
        overwrite=True,
        progress=False,
    )


# --- one arm (worker process) -----------------------------------------------------------------------------------
def _bundle(args: Sequence[str], log_file: Path) -> None:
    """``python -m monai.bundle run ARGS`` with one thread; output into ``log_file``; raise with its tail."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ECHOGAINS_NO_PROGRESS="1")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "monai.bundle", "run", *args]
    with open(log_file, "w", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(shlex.quote(a) for a in cmd) + "\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = "".join(log_file.read_text(encoding="utf-8", errors="replace").splitlines(True)[-25:])
        raise RuntimeError(
            f"bundle command failed ({describe_exit(proc.returncode)}); last lines of {log_file}:\n{tail}"
        )


def _echo_dnd_train(settings: Settings, ds: Path, folder: Path, ablation: str) -> Path:
    out = folder / "train"
    _bundle(
        [
            "--config_file",
            str(BUNDLE / "configs" / "train.json"),
            "--dataset_dir",
            str(ds),
            "--output_dir",
            str(out),
            "--network_config",
            settings.network_config,
            "--image_size",
            str(settings.image_size),
            "--ablation",
            ablation,
            "--fold",
            "0",
            "--steps",
            str(settings.steps),
            "--batch_size",
            str(settings.batch_size),
            "--lr",
            str(settings.lr),
            "--val_every",
            str(settings.steps),
            "--val_steps",
            str(settings.sampling_steps),
            "--save_every",
            str(max(1, min(500, settings.steps))),
            "--seed",
            str(settings.seed),
            "--device",
            settings.device,
            "--progress",
            "False",
        ],
        folder / "train.log",
    )
    return out / "model.pt"


def _echo_dnd_infer(settings: Settings, ds: Path, weights: Path, pred: Path, log_file: Path) -> None:
    _bundle(
        [
            "inference",
            "--config_file",
            str(BUNDLE / "configs" / "inference.json"),
            "--dataset_dir",
            str(ds),
            "--output_dir",
            str(pred),
            "--subset",
            "Ts",
            "--model_path",
            str(weights),
            "--num_steps",
            str(settings.sampling_steps),
            "--ensemble",
            str(settings.ensemble),
            "--seed",
            str(settings.seed),
            "--device",
            settings.device,
            "--progress",
            "False",
        ],
        log_file,
    )


def _weights_info(path: Path) -> dict[str, Any]:
    """Parameters, ablation and image size of Echo-DND weights, read as the bundle reads them (every format:
    bundle 0.3.0's plain state_dict with ``network_config.json`` beside it or the bundle's own config, the earlier
    nested file, a training checkpoint)."""
    import importlib

    from echogains.analysis.segmenters import load_bundle_scripts

    checkpoint = importlib.import_module(load_bundle_scripts(BUNDLE).__name__ + ".checkpoint")
    weights = checkpoint.read_weights(path)
    config, ablation = checkpoint.resolve_config(path, weights)
    params = sum(v.numel() for v in weights.state_dict.values() if v.is_floating_point())
    return {"parameters": int(params), "ablation": ablation, "image_size": int(config.image_size)}


def _last_val_dice(metrics_csv: Path) -> float | None:
    if not metrics_csv.is_file():
        return None
    with metrics_csv.open() as f:
        rows = list(csv.DictReader(f))
    try:
        return float(rows[-1]["val_dice"]) if rows else None
    except (KeyError, ValueError):
        return None


def run_arm(work: str, settings: dict[str, Any], arm: str) -> dict[str, Any]:
    """Train (or not), predict the test cases and evaluate one arm; finished steps are skipped.

    Runs in a worker process with one torch thread. Returns the arm's record (``arms/{arm}/result.json``).
    """
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch  # only now, after the thread count is pinned

    torch.set_num_threads(1)
    root, cfg = Path(work), Settings(**settings)
    folder = arm_dir(root, arm)
    result_file = folder / "result.json"
    if result_file.is_file():
        return read_json(result_file)
    folder.mkdir(parents=True, exist_ok=True)
    step = StepTimer(folder / "timings.json")

    ds = dataset_dir(root, cfg)
    pred = folder / "predictions"
    record: dict[str, Any] = {"arm": arm, "title": ARM_TITLES[arm]}
    if arm in ECHO_DND_ARMS or arm == "demo_weights":
        if arm == "demo_weights":
            weights = DEMO_WEIGHTS
            record["training"] = "committed demo weights: tiny, 64 px, 3000 steps, lr 2e-4, phantom seed 1000"
        else:
            weights = folder / "train" / "model.pt"
            if not (folder / "trained.json").is_file():
                step("train", lambda: _echo_dnd_train(cfg, ds, folder, arm))
                atomic_write_json(folder / "trained.json", {"steps": cfg.steps})
            record["training"] = f"{cfg.network_config}, {cfg.image_size} px, {cfg.steps} steps, lr {cfg.lr:g}"
            record["val_dice_end"] = _last_val_dice(folder / "train" / "metrics.csv")
        record.update(_weights_info(weights))
        if not (pred / "echo_dnd_inference.json").is_file():
            step("infer", lambda: _echo_dnd_infer(cfg, ds, weights, pred, folder / "infer.log"))
    elif arm == "nnunet":
        nn = NnUNet(
            raw=ds.parent,
            preprocessed=root / "nnUNet_preprocessed",
            results=root / "nnUNet_results",
            device=cfg.device,
            threads=1,
            log_dir=root / "logs",
            seed=cfg.seed,  # the Echo trainers' seed (ECHOGAINS_NNUNET_SEED): the arm is reproducible on one CPU
        )
        if not (folder / "planned.json").is_file():
            step("plan", lambda: nn.plan_and_preprocess(ds))
            atomic_write_json(folder / "planned.json", {"dataset": ds.name})
        if not (nn.model_folder(ds, cfg.nnunet_trainer) / "fold_0" / "checkpoint_final.pth").is_file():
            step("train", lambda: nn.train(ds, cfg.nnunet_trainer, fold=0))
        if not (folder / "predicted.json").is_file():
            if pred.exists():
                shutil.rmtree(pred)
            step("predict", lambda: nn.predict(ds / "imagesTs", pred, ds, cfg.nnunet_trainer, fold=0, tta=cfg.tta))
            atomic_write_json(folder / "predicted.json", {"n": len(list(pred.glob("*.nii.gz")))})
        record["training"] = f"{cfg.nnunet_trainer} (2d, fold 0), TTA {'on' if cfg.tta else 'off'}"
    else:
        raise EchoDataError(None, f"unknown arm {arm!r}")
    evaluation = folder / "evaluation"
    if not (evaluation / "metrics_summary.json").is_file():
        step(
            "evaluate",
            lambda: evaluation_module.evaluate(
                pred, ds, evaluation, subset="Ts", labels=_LABEL, overlays=False, progress=False
            ),
        )
    record.update(timings=step.timings, evaluation=str(evaluation))
    atomic_write_json(result_file, record)
    return record


# --- driver -----------------------------------------------------------------------------------------------------
def _header(settings: Settings, arms: Sequence[str], wall: float, loaded_note: str | None) -> str:
    data = (
        f"nnU-Net raw dataset `{settings.dataset}`"
        if settings.dataset
        else f"{settings.preset} phantom, {settings.n_patients} patients (2CH+4CH, ED+ES), {settings.phantom_size} px, "
        f"seed {settings.seed}; fold 0 trains/validates, the unseen `imagesTs` patients are the test set"
    )
    lines = [
        f"Mode: **{settings.mode}**. Data: {data}.",
        f"Echo-DND: `{settings.network_config}` network at {settings.image_size} px, {settings.steps} steps, batch "
        f"{settings.batch_size}, AdamW lr {settings.lr:g}, seed {settings.seed}, device {settings.device}; "
        f"inference {settings.sampling_steps} DDIM steps, ensemble {settings.ensemble} (STAPLE of the chains' "
        f"masks). nnU-Net: `{settings.nnunet_trainer}`, TTA {'on' if settings.tta else 'off'}. All arms scored "
        "by `echogains.evaluation.evaluate` on the LV label (subset Ts).",
        "The demo-weights row is a reference: trained longer (3000 steps) on another phantom seed (1000), not "
        "with this run's budget.",
        f"Arms: {', '.join(arms)}. Wall time: {wall:.0f} s" + (f" ({loaded_note})." if loaded_note else "."),
        "Plots: `dice_per_model.png`, EF Bland-Altman per arm in `bland_altman/`.",
        "",
    ]
    return "\n".join(lines)


def run(
    out: str = "experiments/results/echo_dnd_quick",
    work: str = "build/experiments/echo_dnd",
    quick: bool = False,
    seed: int = 0,
    dataset: str | None = None,
    arms: str | Sequence[str] | None = None,
    jobs: int = 2,
    n_patients: int | None = None,
    phantom_size: int | None = None,
    network_config: str | None = None,
    image_size: int | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    sampling_steps: int | None = None,
    ensemble: int | None = None,
    nnunet_trainer: str | None = None,
    tta: bool | None = None,
    device: str | None = None,
    preset: str = "camus-like",
    note: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> str:
    """Run the Echo-DND Table 2/4 experiment; write ``out/echo_dnd_tables.{md,json}`` and the plots.

    Args:
        out: results folder (markdown, JSON, PNG only).
        work: working folder (phantom, nnU-Net folders, checkpoints, predictions, evaluations).
        quick: CPU settings: 60-patient 64 px phantom, tiny network at 64 px, 400 steps, lr 2e-4, 10 DDIM steps,
            ensemble 3 (STAPLE of 6 masks), ``nnUNetTrainerEchoQuick`` without TTA, arms
            full/gaussian_only/bernoulli_only/unet_conditioner/nnunet/demo_weights. Otherwise the paper's: ``paper``
            network at 256 px, 200k steps, lr 5e-5, 10 DDIM steps, ensemble 5, ``nnUNetTrainerEcho`` with TTA, every
            ablation, ``cuda``.
        seed: phantom, training and sampling seed (nnU-Net's too, through the seeded Echo trainers); with
            ``dataset`` the training and sampling seed only, so that runs with seeds 0, 1, 2 on one dataset are
            the training seeds that ``experiments.echo_dnd_seeds`` pools.
        dataset: an nnU-Net raw dataset (e.g. CAMUS from ``echogains convert-camus``) instead of the phantom; its
            fold 0 trains, its ``imagesTs``/``labelsTs`` test.
        arms: comma-separated subset of ``full, gaussian_only, bernoulli_only, unet_conditioner, loss_lg_lb,
            loss_lg_lb_kl, nnunet, demo_weights``.
        jobs: arms at the same time (worker processes, one thread each; on one GPU use 1).
        n_patients, phantom_size, network_config, image_size, steps, batch_size, lr, sampling_steps, ensemble,
            nnunet_trainer, tta, device: override the mode's setting.
        preset: phantom preset when no ``dataset`` is given: ``camus-like`` (default), ``lv-focused`` or ``hard``.
        note: a remark on the conditions (e.g. "machine shared with another experiment") for the table header.
        overwrite: delete the working folder first.
        progress: progress bar over finished arms.

    Returns:
        The markdown path.
    """
    import torch  # here, not at the top: importing this module (the workers do) loads no torch

    torch.set_num_threads(1)
    set_progress(bool(progress))
    jobs = positive_int(jobs, "jobs")
    arm_list = parse_arms(arms, bool(quick))
    settings = make_settings(
        bool(quick),
        seed,
        dataset,
        n_patients=n_patients,
        phantom_size=phantom_size,
        network_config=network_config,
        image_size=image_size,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        sampling_steps=sampling_steps,
        ensemble=ensemble,
        nnunet_trainer=nnunet_trainer,
        tta=tta,
        device=device,
        preset=preset,
    )
    work_dir, out_dir = Path(work).resolve(), Path(out).resolve()
    if out_dir == work_dir or work_dir in out_dir.parents or out_dir in work_dir.parents:
        raise EchoDataError(out_dir, "--out and --work must be separate folders (NIfTI working data stay in --work)")
    if "demo_weights" in arm_list and not DEMO_WEIGHTS.is_file():
        raise EchoDataError(DEMO_WEIGHTS, "demo weights not found (drop the demo_weights arm)")
    check_resume(work_dir, settings.comparable(), bool(overwrite))
    sw = Stopwatch()
    with sw("dataset"):
        prepare_dataset(work_dir, settings)
    ordered = sorted(arm_list, key=lambda a: -_COST.get(a, 1.0))
    with sw("arms"):
        records, errors = run_arms(
            run_arm, {a: (str(work_dir), asdict(settings), a) for a in ordered}, jobs, name=str, logger=log
        )
    with sw("report"):
        table_md, results = build_report(out_dir, records)
    return _finish(out_dir, settings, arm_list, note, sw, records, errors, table_md, results)


def _finish(
    out_dir: Path,
    settings: Settings,
    arm_list: Sequence[str],
    note: str | None,
    sw: Stopwatch,
    records: Mapping[str, Mapping[str, Any]],
    errors: Mapping[str, str],
    table_md: str,
    results: dict[str, Any],
) -> str:
    """Write the markdown and JSON (with timings, machine, errors, command); then fail if an arm failed."""
    timings = {
        **sw.timings,
        "total_wall_s": sw.total(),
        "per_arm": {a: records[a]["timings"] for a in _ordered(records)},
    }
    results.update(
        {
            "settings": asdict(settings),
            "arms_run": list(arm_list),
            "timings": timings,
            "machine": machine(),
            "note": note,
            "errors": errors,
            "resume_note": "per-arm timings are those of the run that computed each step; total_wall_s is "
            "this invocation's",
        }
    )
    command = "python -m experiments.echo_dnd_tables " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    md = write_results(
        out_dir, NAME, _header(settings, arm_list, timings["total_wall_s"], note) + "\n" + table_md, results, command
    )
    if errors:
        raise RuntimeError(f"{len(errors)} arm(s) failed: {errors}")
    print(f"wrote {md} in {timings['total_wall_s']:.0f} s")
    return str(md)


def main() -> None:
    import fire  # the command line only

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    fire.Fire(run)


if __name__ == "__main__":
    main()
