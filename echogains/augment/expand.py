"""``echogains expand-dataset``: an nnU-Net raw dataset plus K generative augmentations of each training case.

Per training case of fold ``fold`` and per k = 1..K (EchoGAINS Sec. 2.4, Fig. 8):

1. the source image is resized to the model's square frame (the paper: 256 x 256; ``tiny``/``micro`` demo models
   64/32 px) and its sector (recorded in ``cases.json`` or fitted) carried along;
2. sector transforms are drawn with a generator seeded by (seed, case, k), retried until >= 50 % of the label stays
   in the kept content (:mod:`echogains.augment.transforms`);
3. in the frame, everything but the kept original content (inside the original sector's footprint, Fig. 8) is
   black and unknown; RePaint fills it and a seam band of ``border`` px (10 at 256) inside the kept content, which
   stays generated (known pixels outside the band stay bit-identical in the frame), or with ``repaint=False`` it
   stays black (the paper's baseline);
4. back at the ORIGINAL size: the kept content outside the seam band is resampled from the full-resolution source
   image (so it keeps its resolution), the rest is the repainted frame resized back; the label is resampled from
   the source label, nearest-neighbour, and is 0 outside the kept content (never repainted). Written as 1-channel
   NIfTI in the source's dtype and direction, with the source's spacing times the depth zoom-out (a deeper view
   has larger pixels in mm: the anatomy keeps its physical size; :func:`output_geometry`).

Validation cases of the fold, other training cases and test cases (``imagesTs``) are copied un-augmented; labels
are reduced to ``--labels`` (default LV + MYO, as the paper). ``splits_final.json`` keeps the source folds, adds the
augmented copies of a fold's training cases to that fold's training half and never to a validation half; only fold
``fold`` has all its training cases augmented, so train that fold. ``augment_validation=True``
(``--augment_validation``) is the paper's setting (Sec. 2.6: "a training and validation set that combines all the
original images with five randomly augmented images"): the fold's validation cases get K copies too, listed in the
validation half and marked ``provenance.validation_copy`` (the Echo trainers then validate on them); the default
validates on originals only (a deviation: see ``docs/echogains_deviations.md``).

Determinism, batching, resumption, shards. Training cases are cut into work groups of ``batch_size // K`` cases
(at least one); the K augmentations of a group go through RePaint together (batches of at most ``batch_size``
images, one ``torch.Generator`` per image seeded by (seed, case, k)). Because the groups are fixed, the same
arguments give the same bytes, also after a kill and re-run and with any number of shards. Other batch sizes give
the same images up to the network's batch numerics (floating-point rounding). Every finished case leaves a record
in ``out/.records/{case}.json`` (written after its files): a re-run skips finished cases and rebuilds ``cases.json``
from the records. ``shard=(i, N)`` (``--shard i/N``, or RANK/WORLD_SIZE under torchrun) processes work groups i,
i+N, ... and copies i, i+N, ...; whoever finds all records present (the last shard, or ``merge_shards``) writes
``cases.json``, ``splits_final.json`` and, last, ``dataset.json``. Memory does not grow with the dataset size.

Concurrency and kills. Shards starting at the same instant and shards finishing at the same instant are serialised
by ``out/.records/_lock``, held with ``fcntl.flock``: the kernel drops the lock when its holder dies, even by
SIGKILL, so a lock can never go stale and a re-run with the same arguments always finishes the dataset. Under the
lock a starting shard compares its arguments with the plan (``.records/_plan.json``) or creates the plan with
exclusive creation (written in full to a temporary file, then hard-linked: it cannot exist torn, and a second
creator gets ``FileExistsError`` as with ``O_EXCL``); a finishing shard merges unless ``dataset.json`` is there
already. The lock file keeps the pid and host of its last holder (shown while another shard waits). Several hosts
on one shared file system: Linux NFS clients map ``flock`` onto NFS byte-range locks, which the server shares
between hosts; where a file system offers no locks (``flock`` fails) the shards go on without one and log a
warning: the plan stays exclusive (the hard link) and two merges at once write the same files atomically.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from echogains.augment.cases import (
    Prepared,
    SourceCase,
    compose_output,
    frame_keep_mask,
    frame_transform,
    item_seed,
    label_mapping,
    load_case,
    model_input,
    original_pixels,
    output_geometry,
    prepare_augmentation,
    repaint_frames,
)
from echogains.augment.imaging import from_unit, resize, to_unit
from echogains.augment.plan import (
    PLAN_FILE,
    RECORDS_DIR,
    check_out,
    create_exclusive,
    expected_ids,
    locked,
    make_plan,
    missing_ids,
    same_plan,
)
from echogains.augment.settings import (
    DEFAULT_FRAME_SIZE,
    ExpansionSettings,
    SamplerSettings,
    load_model,
    parse_shard,
)
from echogains.augment.shard import ShardContext, copy_case, process_group
from echogains.augment.transforms import TransformPolicy, check_augment
from echogains.data.labels import label_dict, parse_labels
from echogains.data.nnunet import RawDataset, RawDatasetWriter
from echogains.utils import EchoDataError, check_int, get_logger, read_json, resolve_device, set_progress
from echogains.utils import progress as progress_bar

__all__ = [
    "DEFAULT_FRAME_SIZE",
    "RECORDS_DIR",
    "Prepared",
    "expand_dataset",
    "merge_shards",
    "parse_shard",
    "item_seed",
    "prepare_augmentation",
    "repaint_frames",
    "model_input",
    "compose_output",
    "frame_transform",
    "frame_keep_mask",
    "original_pixels",
    "output_geometry",
    "to_unit",
    "from_unit",
    "resize",
    "load_case",
    "SourceCase",
    "ExpansionSettings",
]

log = get_logger(__name__)


def expand_dataset(
    src: str | os.PathLike,
    out: str | os.PathLike,
    model: str | os.PathLike | None = None,
    augment: str = "combination",
    k: int = 5,
    labels: str | Sequence[str] = "lv,myo",
    repaint: bool = True,
    sampler: str = "fast",
    seed: int = 0,
    fold: int = 0,
    shard: str | Sequence[int] | None = None,
    batch_size: int = 8,
    device: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    *,
    frame_size: int | None = None,
    schedule: Sequence[int] | None = None,
    border: int | None = None,
    policy: TransformPolicy | None = None,
    merge_only: bool = False,
    augment_validation: bool = False,
) -> Path:
    """Write a new nnU-Net raw dataset: every case of ``src`` plus ``k`` generative augmentations per training case.

    Args:
        src: source nnU-Net raw dataset (with ``splits_final.json``; else 5 patient-grouped folds).
        out: output dataset folder (``DatasetXXX_Name``).
        model: DDPM weights or checkpoint (:func:`echogains.ddpm.load_ddpm`); needed unless ``repaint=False``.
        augment: ``depth``, ``tilt``, ``width``, ``sector_angle``, ``translation`` or ``combination`` (the paper's
            four: depth, tilt, width, translation, each with probability 0.5).
        k: augmentations per training case (paper: 5).
        labels: labels kept, from ``lv,myo,la`` (paper: LV + MYO).
        repaint: ``False`` is the paper's baseline: transformed, black outside the kept content.
        sampler: ``fast`` (<= 100 network evaluations) or ``repaint`` (the paper's 250-step schedule with resampling).
        seed: augmentation seed; with (case, k) it fixes every random choice.
        fold: fold of the source ``splits_final.json`` whose training cases are augmented.
        shard: ``"i/N"``: this process writes work groups i, i+N, ...; default RANK/WORLD_SIZE under torchrun.
        batch_size: images per network call (the work group is ``batch_size // k`` cases).
        device: ``cuda``/``cpu``; default CUDA (LOCAL_RANK's GPU under torchrun) when available.
        overwrite: replace an existing output (not allowed with several shards: clear the folder instead).
        progress: progress bar.
        frame_size: model frame without a model (default 256); must equal the model's size otherwise.
        schedule: RePaint (t_T, jump_length, jump_n_sample) instead of the sampler's default, e.g. ``10,1,1`` on
            the command line (10 network evaluations per image, no resampling; ``fast`` allows at most 100).
        border: seam band of RePaint in frame pixels (default 10 px at 256, scaled).
        policy: transform ranges and retry rule (default: the paper's).
        merge_only: only write ``cases.json``, ``splits_final.json`` and ``dataset.json`` (all shards done).
        augment_validation: also augment the fold's validation cases, their copies in the validation half (the
            paper's setting); default: validation on original cases only.

    Returns:
        The output folder.

    Raises:
        EchoDataError: bad arguments, source dataset or model, before anything is written.
    """
    set_progress(progress)
    out = Path(out)
    if merge_only:
        return merge_shards(out)
    setup = _validate(
        src,
        out,
        model,
        augment=augment,
        k=k,
        labels=labels,
        repaint=repaint,
        sampler=sampler,
        seed=seed,
        fold=fold,
        shard=shard,
        batch_size=batch_size,
        device=device,
        overwrite=overwrite,
        frame_size=frame_size,
        schedule=schedule,
        border=border,
        policy=policy,
        augment_validation=augment_validation,
    )
    _start(out, setup, overwrite)
    settings = setup.settings
    writer = RawDatasetWriter(
        out, label_dict(settings.labels), description=settings.description(), overwrite=overwrite, resume=True
    )
    ctx = ShardContext(
        setup.source, out, settings, setup.plan, writer, setup.mapping, setup.model, setup.diffusion, setup.device
    )
    _run_shard(ctx, *setup.shard)
    if missing_ids(out, setup.plan, settings.k):
        log.info("shard %d/%d done; other shards still running (the last one writes dataset.json)", *setup.shard)
        return out
    _merge_once(out)
    return out


class _Setup(NamedTuple):
    """The checked arguments of :func:`expand_dataset`: the settings and what the shard runs with."""

    settings: ExpansionSettings
    shard: tuple[int, int]
    source: RawDataset
    mapping: dict[int, int]
    plan: dict[str, Any]
    model: Any
    diffusion: Any
    device: str


def _validate(
    src: str | os.PathLike,
    out: Path,
    model: str | os.PathLike | None,
    *,
    augment: str,
    k: int,
    labels: str | Sequence[str],
    repaint: bool,
    sampler: str,
    seed: int,
    fold: int,
    shard: str | Sequence[int] | None,
    batch_size: int,
    device: str | None,
    overwrite: bool,
    frame_size: int | None,
    schedule: Sequence[int] | None,
    border: int | None,
    policy: TransformPolicy | None,
    augment_validation: bool,
) -> _Setup:
    """Check every argument, read the source dataset and load the model: the one place the settings are validated.

    Nothing is written here. The arguments are checked first, then the source dataset, the device and the model.
    """
    check_augment(augment)
    k = check_int("k", k, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    seed = check_int("seed", seed, 0)
    fold = check_int("fold", fold, 0)
    if frame_size is not None:
        frame_size = check_int("frame_size", frame_size, 16)
    keys = parse_labels(labels)
    shard_i, shard_n = parse_shard(shard)
    if overwrite and shard_n > 1:
        raise EchoDataError(
            out, "--overwrite with several shards would let shards delete each other's work; remove the folder first"
        )
    source = RawDataset(src)
    mapping = label_mapping(source.labels, keys, source.root / "dataset.json")
    for case_id in source.case_ids("Tr"):
        if not source.has_label(case_id):
            raise EchoDataError(source.label_path(case_id), "missing: every training case needs its label")
    dev = resolve_device(device)
    net, diffusion, model_info, size = load_model(model, bool(repaint), frame_size, dev)
    sampler_info = SamplerSettings.resolve(sampler, schedule, border, size) if repaint else None
    plan = make_plan(source, fold, k, batch_size, bool(augment_validation))
    settings = ExpansionSettings(
        source=source.root.name,
        augment=augment,
        k=k,
        labels=tuple(keys),
        repaint=bool(repaint),
        sampler=sampler_info,
        model=model_info if repaint else None,
        seed=seed,
        fold=fold,
        batch_size=batch_size,
        frame_size=size,
        policy=policy or TransformPolicy(),
        augment_validation=bool(augment_validation),
    )
    return _Setup(settings, (shard_i, shard_n), source, mapping, plan, net, diffusion, dev)


def _start(out: Path, setup: _Setup, overwrite: bool) -> None:
    """Check the output folder; then, under the lock, create the plan or check ours against the one there."""
    settings, plan, source = setup.settings, setup.plan, setup.source
    check_out(out, source, overwrite, settings, plan)
    # --- nothing was written before this line ---
    if overwrite and (out / RECORDS_DIR).is_dir():
        shutil.rmtree(out / RECORDS_DIR)
    # the plan goes first, before any case file: a folder holding only .records/ is an expansion being started
    saved = {"settings": settings.to_dict(), "plan": plan, "source_path": str(source.root.resolve())}
    if overwrite and (out / "dataset.json").is_file():
        (out / "dataset.json").unlink()  # mark incomplete before the plan makes the folder a resumable expansion
    shard_i, shard_n = setup.shard
    with locked(out, f"starting shard {shard_i}/{shard_n}"):
        check_out(out, source, overwrite, settings, plan)  # again, now that no other shard can be writing the plan
        plan_file = out / RECORDS_DIR / PLAN_FILE
        if not plan_file.is_file() and not create_exclusive(plan_file, saved):
            same_plan(plan_file, settings, plan)  # only without file locks: another shard created it meanwhile


def _run_shard(ctx: ShardContext, shard_i: int, shard_n: int) -> None:
    """Work groups i, i+N, ... and copies i, i+N, ... of the plan (finished cases are skipped: resumption)."""
    groups = ctx.plan["groups"][shard_i::shard_n]
    copies = ctx.plan["copies"][shard_i::shard_n]
    work = [("group", g) for g in groups] + [("copy", c) for c in copies]
    log.info(
        "expand %s -> %s: shard %d/%d, %d work groups, %d copies",
        ctx.src.root,
        ctx.out,
        shard_i,
        shard_n,
        len(groups),
        len(copies),
    )
    for kind, what in progress_bar(work, total=len(work), desc=f"expand {shard_i}/{shard_n}"):
        if kind == "group":
            process_group(ctx, what)
        elif not ctx.done(what, ctx.src.is_test(what)):
            copy_case(ctx, what)


def _merge_once(out: Path) -> None:
    """Merge unless a shard that finished at the same moment did (it held the lock; this one waited for it)."""
    with locked(out, "merging"):
        if (out / "dataset.json").is_file():
            log.info("%s: merged by another shard", out)
            return
        _merge_unlocked(out)


def merge_shards(out: str | os.PathLike) -> Path:
    """Write ``cases.json``, ``splits_final.json`` and, last, ``dataset.json`` from the records of all shards.

    Holds the expansion's lock meanwhile (a shard finishing at the same time waits, then finds the dataset merged).

    Raises:
        EchoDataError: not an expansion folder, or some cases are not finished yet.
    """
    out = Path(out)
    if not (out / RECORDS_DIR / PLAN_FILE).is_file():
        return _merge_unlocked(out)  # raises: not an expansion (and nothing is written into the folder)
    with locked(out, "merging"):
        return _merge_unlocked(out)


def _merge_unlocked(out: Path) -> Path:
    """The merge itself (the caller holds the lock): the dataset files from the plan and the records."""
    plan_file = out / RECORDS_DIR / PLAN_FILE
    if not plan_file.is_file():
        raise EchoDataError(plan_file, "missing: not an expand-dataset output (nothing to merge)")
    saved = read_json(plan_file)
    settings, plan = ExpansionSettings.from_dict(saved["settings"]), saved["plan"]
    missing = missing_ids(out, plan, settings.k)
    if missing:
        raise EchoDataError(
            out, f"{len(missing)} case(s) not finished yet (e.g. {missing[:3]}); run the remaining shards"
        )
    writer = RawDatasetWriter(
        out, label_dict(settings.labels), description=settings.description(), overwrite=True, resume=True
    )
    written = set()
    for case_id in expected_ids(plan, settings.k):
        rec = read_json(out / RECORDS_DIR / f"{case_id}.json")
        if rec["status"] != "done":
            continue
        writer.add_case(
            case_id,
            None,
            None,
            spacing=rec["spacing"],
            record=rec["record"],  # type: ignore[arg-type]
            test=rec["test"],
            write=False,
        )
        written.add(case_id)
    splits = [
        {"train": [c for c in s["train"] if c in written], "val": [c for c in s["val"] if c in written]}
        for s in plan["splits"]
    ]
    summary = {key: getattr(settings, key) for key in ("source", "augment", "k", "repaint", "fold", "seed")}
    path = writer.finalize(splits=splits, dataset_name=out.name, extra={"echogains_expansion": summary})
    skipped = sum(1 for _ in expected_ids(plan, settings.k)) - len(written)
    log.info("merged %s: %d cases (%d augmentations skipped by the retry policy)", out, len(written), skipped)
    return path.parent
