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

import contextlib
import copy
import hashlib
import json
import os
import shutil
import socket
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from echogains.augment.transforms import (
    TransformPolicy,
    TransformResult,
    apply_transforms,
    check_augment,
    draw_steps,
    label_kept_fraction,
    regrid_coordinates,
    regrid_sector,
)
from echogains.data.labels import LABEL_NAMES, label_dict, parse_labels
from echogains.data.nnunet import RawDataset, RawDatasetWriter, patient_grouped_splits
from echogains.geometry import Sector
from echogains.utils import (
    EchoDataError,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    get_logger,
    read_json,
    resolve_device,
    to_jsonable,
)
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
]

log = get_logger(__name__)

#: Frame size without a model (``--no-repaint``): the paper's 256 x 256.
DEFAULT_FRAME_SIZE = 256
#: Sidecar folder of per-case records (resume, merge) inside the output dataset.
RECORDS_DIR = ".records"
_PLAN = "_plan.json"  # case ids start with a letter or digit: no clash with a record
_LOCK = "_lock"  # flock'ed while a shard starts (checks/creates the plan) or merges


# ----------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------


def parse_shard(shard: str | Sequence[int] | None) -> tuple[int, int]:
    """``"i/N"`` or ``(i, N)`` -> (i, N); ``None`` -> RANK/WORLD_SIZE of torchrun, else (0, 1)."""
    if shard is None:
        rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
        if rank is None or world is None:
            return 0, 1
        shard = (rank, world)  # type: ignore[assignment]
    try:
        if isinstance(shard, str):
            i_text, n_text = shard.split("/")
            i, n = int(i_text), int(n_text)
        else:
            i, n = (int(v) for v in shard)  # type: ignore[union-attr]
    except (ValueError, TypeError) as err:
        raise EchoDataError(None, f"--shard: expected i/N (e.g. 0/4), got {shard!r}") from err
    if n < 1 or not 0 <= i < n:
        raise EchoDataError(None, f"--shard: need 0 <= i < N, got {i}/{n}")
    return i, n


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < low:
        raise EchoDataError(None, f"--{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def _resolve_device(device: str | None) -> str:
    return resolve_device(device)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def item_seed(seed: int, case_id: str, k: int) -> list[int]:
    """Entropy of augmentation k of ``case_id``: (seed, crc32(case id), k), the same on every machine."""
    return [int(seed), zlib.crc32(case_id.encode("utf-8")), int(k)]


def _torch_seed(key: Sequence[int]) -> int:
    state = np.random.SeedSequence([*key, 1]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


# ----------------------------------------------------------------------------------------------------------------
# Intensities and resizing
# ----------------------------------------------------------------------------------------------------------------


def to_unit(image: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """Scale intensities to [0, 1] as the DDPM's training does: 8-bit range / 255, [0, 1] as is, else min-max.

    Returns:
        The float32 unit image and (lo, hi) to map it back with :func:`from_unit`.
    """
    lo, hi = float(image.min()), float(image.max())
    if lo >= 0.0 and hi <= 1.0 and np.issubdtype(image.dtype, np.floating):
        rng = (0.0, 1.0)
    elif lo >= 0.0 and hi <= 255.0:
        rng = (0.0, 255.0)
    else:
        rng = (lo, hi if hi > lo else lo + 1.0)
    return ((image.astype(np.float64) - rng[0]) / (rng[1] - rng[0])).astype(np.float32), rng


def from_unit(unit: np.ndarray, rng: tuple[float, float], dtype: np.dtype) -> np.ndarray:
    """Inverse of :func:`to_unit` into ``dtype`` (integers rounded and clipped to the dtype's range)."""
    values = np.clip(unit.astype(np.float64), 0.0, 1.0) * (rng[1] - rng[0]) + rng[0]
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(np.float32 if dtype == np.float64 else dtype)


def resize(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a float image to ``shape`` (field of view kept), per axis: area averaging to shrink, linear to grow."""
    import cv2

    out = np.ascontiguousarray(array, dtype=np.float32)
    if out.shape[0] != shape[0]:
        mode = cv2.INTER_AREA if shape[0] < out.shape[0] else cv2.INTER_LINEAR
        out = cv2.resize(out, (out.shape[1], int(shape[0])), interpolation=mode)
    if out.shape[1] != shape[1]:
        mode = cv2.INTER_AREA if shape[1] < out.shape[1] else cv2.INTER_LINEAR
        out = cv2.resize(out, (int(shape[1]), out.shape[0]), interpolation=mode)
    return out


# ----------------------------------------------------------------------------------------------------------------
# One case, one augmentation
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class SourceCase:
    """A source case: arrays, geometry, sector and record."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, float]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    sector: Sector | None
    record: dict[str, Any]
    sector_problem: str | None = None


def _label_mapping(src_labels: Mapping[str, int], keys: Sequence[str], where: Path) -> dict[int, int]:
    """Source label value -> output value for the kept keys (names LV/MYO/LA as in dataset.json)."""
    mapping = {}
    by_name = {name.lower(): int(v) for name, v in src_labels.items()}
    for out_value, key in enumerate(keys, start=1):
        name = LABEL_NAMES[key]
        if name.lower() not in by_name:
            raise EchoDataError(where, f"--labels asks for {name}, but the dataset's labels are {dict(src_labels)}")
        mapping[by_name[name.lower()]] = out_value
    return mapping


def _remap(label: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    out = np.zeros(label.shape, dtype=np.uint8)
    for src, dst in mapping.items():
        out[label == src] = dst
    return out


def load_case(src: RawDataset, case_id: str, mapping: Mapping[int, int]) -> SourceCase:
    """Read a source case with its label reduced to the output labels and its sector (recorded, else fitted)."""
    from echogains.geometry import fit_sector

    img = src.read_image(case_id)
    image = sitk.GetArrayFromImage(img)
    if image.ndim != 2:
        raise EchoDataError(src.image_path(case_id), f"expected a 2D one-channel image, got array shape {image.shape}")
    label = _remap(sitk.GetArrayFromImage(src.read_label(case_id)), mapping)
    spacing = (float(img.GetSpacing()[0]), float(img.GetSpacing()[1]))
    record = copy.deepcopy(src.record(case_id))
    sector, problem = None, None
    if isinstance(record.get("sector"), Mapping):
        try:
            sector = Sector.from_dict(record["sector"])
        except (KeyError, TypeError, ValueError) as err:
            problem = f"bad sector record in cases.json ({err})"
    else:
        try:
            sector = fit_sector(image, spacing, source=str(src.image_path(case_id)))
        except EchoDataError as err:
            problem = f"no sector recorded and none fitted: {err.problem}"
    return SourceCase(case_id, image, label, spacing, tuple(img.GetOrigin()), tuple(img.GetDirection()), sector,
                      record, problem)


@dataclass
class Prepared:
    """One augmentation before RePaint.

    Args:
        case_id: output case id ``{source}_aug{k}``.
        source: the source case.
        k: augmentation index (1..K).
        steps, tries, label_kept, ok: outcome of the retry loop (see :func:`draw_steps`).
        full: the transform at the source's size (kept content, label, known mask, sector).
        frame: the transform in the model frame (unit image, black outside ``frame.known``).
        torch_seed: seed of this image's ``torch.Generator``.
        key: the (seed, crc32(case), k) entropy of the parameter draw.
        unit_range: (lo, hi) that maps the source's intensities to [0, 1].
        reason: why the augmentation is skipped (``ok`` False).
        repainted: the RePaint output in the model frame, [-1, 1] (``None`` without repainting).
        frame_keep: the frame pixels RePaint kept from the input: ``frame.known`` minus the seam band
            (:func:`echogains.augment.repaint.repaint_mask`); ``None`` without repainting.
    """

    case_id: str
    source: SourceCase
    k: int
    steps: list[dict[str, Any]]
    tries: int
    label_kept: float
    ok: bool
    torch_seed: int
    key: list[int]
    full: TransformResult | None = None
    frame: TransformResult | None = None
    unit_range: tuple[float, float] = (0.0, 255.0)
    reason: str | None = None
    repainted: np.ndarray | None = field(default=None, repr=False)
    frame_keep: np.ndarray | None = field(default=None, repr=False)


def prepare_augmentation(
    case: SourceCase, k: int, augment: str, seed: int, frame_size: int, policy: TransformPolicy
) -> Prepared:
    """Draw augmentation ``k`` of ``case`` (retry policy) and transform it at full size and in the model frame."""
    key = item_seed(seed, case.case_id, k)
    rng = np.random.default_rng(key)
    case_id = f"{case.case_id}_aug{k}"
    frame_shape = (frame_size, frame_size)
    if case.sector is None:
        return Prepared(case_id, case, k, [], 0, 0.0, False, _torch_seed(key), key, reason=case.sector_problem)
    draw = draw_steps(augment, rng, policy, frame_size,
                      lambda steps: label_kept_fraction(case.label, case.sector, steps, frame_shape, policy.margin_px,
                                                        policy.kept_region))
    item = Prepared(case_id, case, k, draw.steps, draw.tries, draw.label_kept, draw.ok, _torch_seed(key), key)
    if not draw.ok:
        item.reason = (f"no draw in {draw.tries} tries kept >= {policy.min_label_inside:.0%} of the label "
                       f"(best {draw.label_kept:.1%})")
        return item
    unit, item.unit_range = to_unit(case.image)
    item.full = apply_transforms(unit, case.label, case.sector, draw.steps, frame_shape, policy.margin_px,
                                 policy.kept_region)
    item.frame = frame_transform(unit, case.sector, draw.steps, frame_size, policy)
    return item


def frame_transform(unit: np.ndarray, sector: Sector, steps: Sequence[Mapping[str, Any]], frame_size: int,
                    policy: TransformPolicy) -> TransformResult:
    """The transform of a unit image in the model's square frame (what RePaint sees)."""
    frame_shape = (frame_size, frame_size)
    frame_sector = regrid_sector(sector, unit.shape, frame_shape)  # type: ignore[arg-type]
    return apply_transforms(resize(unit, frame_shape), None, frame_sector, steps, None, policy.margin_px,
                            policy.kept_region)


def frame_keep_mask(frame_known: np.ndarray, border: int) -> np.ndarray:
    """Frame pixels RePaint keeps from its input: the known ones outside the seam band of ``border`` px."""
    import torch

    from echogains.augment.repaint import repaint_mask

    known = torch.from_numpy(np.ascontiguousarray(frame_known, dtype=bool))[None, None]
    return repaint_mask(known, int(border))[0, 0].numpy()


def original_pixels(full_known: np.ndarray, frame_keep: np.ndarray) -> np.ndarray:
    """Pixels of the output (source grid) that hold the source: kept content whose frame pixel RePaint kept.

    Each output pixel centre is looked up, nearest-neighbour, in the frame; a kept pixel in the seam band of the
    frame is taken from the repainted frame like the unknown region (the band stays repainted).
    """
    shape = full_known.shape
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    fr, fc = regrid_coordinates(rows, cols, shape, frame_keep.shape)  # type: ignore[arg-type]
    fr = np.clip(np.rint(fr), 0, frame_keep.shape[0] - 1).astype(int)
    fc = np.clip(np.rint(fc), 0, frame_keep.shape[1] - 1).astype(int)
    return full_known & frame_keep[fr, fc]


def repaint_frames(
    items: Sequence[Prepared],
    model: Any,
    diffusion: Any,
    sampler: str,
    schedule: Sequence[int],
    border: int,
    device: str,
) -> np.ndarray:
    """RePaint the frames of ``items`` in one batch, one ``torch.Generator`` per item.

    Returns:
        (B, S, S) float32 frames in the model's range [-1, 1]; the known pixels outside the seam band
        (:func:`frame_keep_mask`) are bit-identical to the input ``2 * frame - 1`` (:func:`model_input`), the band
        and the unknown region are generated.
    """
    import torch

    from echogains.augment.repaint import repaint

    x = torch.from_numpy(np.stack([model_input(it) for it in items])[:, None]).to(device)
    known = torch.from_numpy(np.stack([it.frame.known for it in items])[:, None]).to(device)  # type: ignore[union-attr]
    gens = [torch.Generator().manual_seed(it.torch_seed) for it in items]
    out = repaint(model, diffusion, x, known, gens, schedule=schedule, border=border, sampler=sampler)
    return out.float().cpu().numpy()[:, 0]


def model_input(item: Prepared) -> np.ndarray:
    """The frame as the network sees it: unit intensities mapped to [-1, 1], black (-1) outside the kept content."""
    return (np.clip(item.frame.image, 0.0, 1.0) * 2.0 - 1.0).astype(np.float32)  # type: ignore[union-attr]


def compose_output(item: Prepared) -> tuple[np.ndarray, np.ndarray]:
    """Image and label at the source's size: kept content from the source, the rest from the repainted frame.

    The seam band stays repainted: kept pixels whose frame pixel lies in the band (:func:`original_pixels`) come
    from the repainted frame too. Without a repainted frame (``--no-repaint``) the rest stays black. The label is
    the transformed source label in either case (labels are never repainted).
    """
    assert item.full is not None
    full = item.full
    if item.repainted is not None:
        generated = resize((item.repainted + 1.0) / 2.0, full.image.shape)  # type: ignore[arg-type]
        keep = full.known if item.frame_keep is None else original_pixels(full.known, item.frame_keep)
        unit = np.where(keep, full.image, generated)
    else:
        unit = full.image
    image = from_unit(unit, item.unit_range, item.source.image.dtype)
    return image, full.label.astype(np.uint8)  # type: ignore[union-attr]


# ----------------------------------------------------------------------------------------------------------------
# The plan: which cases, which groups, which folds
# ----------------------------------------------------------------------------------------------------------------


def _source_splits(src: RawDataset) -> list[dict[str, list[str]]]:
    if src.splits is not None:
        return [{"train": list(s["train"]), "val": list(s["val"])} for s in src.splits]
    tr = src.case_ids("Tr")
    log.warning("%s: no splits_final.json; using 5 patient-grouped folds (seed 0)", src.root)
    return patient_grouped_splits({c: str(src.record(c).get("patient", c.split("_")[0])) for c in tr}, 5, 0)


def _make_plan(src: RawDataset, fold: int, k: int, batch_size: int, augment_validation: bool = False) -> dict[str, Any]:
    """Augmented cases and their work groups, un-augmented copies, test cases and the output folds.

    ``augment_validation`` (the paper's setting, Sec. 2.6): the validation cases of ``fold`` are augmented too and
    their copies join the validation half of every fold that validates their source case.
    """
    splits = _source_splits(src)
    if not 0 <= fold < len(splits):
        raise EchoDataError(src.root / "splits_final.json", f"--fold {fold} not in 0..{len(splits) - 1}")
    tr, ts = src.case_ids("Tr"), src.case_ids("Ts")
    for i, s in enumerate(splits):
        unknown = sorted((set(s["train"]) | set(s["val"])) - set(tr))
        if unknown:
            raise EchoDataError(src.root / "splits_final.json", f"fold {i} names cases not in imagesTr: {unknown[:5]}")
    train = sorted(splits[fold]["train"])
    if not train:
        raise EchoDataError(src.root / "splits_final.json", f"fold {fold} has no training cases to augment")
    chosen = sorted(set(train) | set(splits[fold]["val"])) if augment_validation else train
    per_group = max(1, batch_size // k)
    groups = [chosen[i : i + per_group] for i in range(0, len(chosen), per_group)]
    augmented = set(chosen)
    out_splits = []
    for s in splits:
        extra = [f"{c}_aug{j}" for c in s["train"] if c in augmented for j in range(1, k + 1)]
        val_extra = [f"{c}_aug{j}" for c in s["val"] if c in augmented for j in range(1, k + 1)] if augment_validation else []
        out_splits.append({"train": sorted(s["train"]) + sorted(extra), "val": sorted(s["val"]) + sorted(val_extra)})
    copies = [c for c in tr if c not in augmented] + ts
    return {"groups": groups, "copies": copies, "test": ts, "splits": out_splits}


def _expected_ids(plan: Mapping[str, Any], k: int) -> Iterator[str]:
    for group in plan["groups"]:
        for c in group:
            yield c
            yield from (f"{c}_aug{j}" for j in range(1, k + 1))
    yield from plan["copies"]


# ----------------------------------------------------------------------------------------------------------------
# Output bookkeeping
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Context:
    """Everything a shard needs while it writes."""

    src: RawDataset
    out: Path
    settings: dict[str, Any]
    plan: dict[str, Any]
    writer: RawDatasetWriter
    mapping: dict[int, int]
    keys: list[str]
    policy: TransformPolicy
    model: Any = None
    diffusion: Any = None
    device: str = "cpu"

    @property
    def records(self) -> Path:
        return self.out / RECORDS_DIR

    def record_path(self, case_id: str) -> Path:
        return self.records / f"{case_id}.json"

    def done(self, case_id: str, test: bool = False) -> bool:
        """A case is finished when its record exists and (unless skipped) its files do."""
        path = self.record_path(case_id)
        if not path.is_file():
            return False
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return False  # a torn record cannot exist (atomic writes); be safe and redo
        if rec.get("status") == "skipped":
            return True
        if not self.writer.image_path(case_id, test).is_file():
            return False
        return not rec.get("has_label", True) or self.writer.label_path(case_id, test).is_file()

    def save_record(self, case_id: str, status: str, test: bool, spacing: Sequence[float], record: Mapping[str, Any],
                    has_label: bool = True, reason: str | None = None) -> None:
        payload = {"case": case_id, "status": status, "test": test, "has_label": has_label,
                   "spacing": [float(s) for s in spacing], "record": dict(record)}
        if reason:
            payload["reason"] = reason
        atomic_write_json(self.record_path(case_id), payload)


def _copy_case(ctx: _Context, case_id: str) -> None:
    """Copy a case un-augmented: image bytes as they are, label reduced to the output labels."""
    test = ctx.src.is_test(case_id)
    with atomic_path(ctx.writer.image_path(case_id, test)) as tmp:
        shutil.copyfile(ctx.src.image_path(case_id), tmp)
    img = ctx.src.read_image(case_id)
    has_label = ctx.src.has_label(case_id)
    if has_label:
        lab = ctx.src.read_label(case_id)
        identity = all(s == d for s, d in ctx.mapping.items()) and len(ctx.mapping) == len(ctx.src.labels) - 1
        if identity:
            with atomic_path(ctx.writer.label_path(case_id, test)) as tmp:
                shutil.copyfile(ctx.src.label_path(case_id), tmp)
        else:
            arr = _remap(sitk.GetArrayFromImage(lab), ctx.mapping)
            if not arr.any():
                raise EchoDataError(ctx.src.label_path(case_id),
                                    f"no {','.join(ctx.keys)} pixels: empty label after --labels")
            new = sitk.GetImageFromArray(arr)
            new.CopyInformation(lab)
            from echogains.data.nnunet import write_image

            write_image(new, ctx.writer.label_path(case_id, test))
    record = copy.deepcopy(ctx.src.record(case_id))
    record.pop("subset", None)
    record["labels"] = list(ctx.keys)
    record["provenance"] = {"source_case": case_id, "source_dataset": ctx.src.root.name, "augmented": False}
    ctx.save_record(case_id, "done", test, img.GetSpacing()[:2], record, has_label)


def _aug_record(ctx: _Context, item: Prepared, status: str) -> dict[str, Any]:
    s = ctx.settings
    record = copy.deepcopy(item.source.record)
    for key in ("subset", "spacing_mm"):
        record.pop(key, None)
    record["patient"] = str(record.get("patient", item.source.case_id.split("_")[0]))
    record["labels"] = list(ctx.keys)
    if item.full is not None:
        record["sector"] = item.full.sector.to_dict()
    record["provenance"] = {
        "source_case": item.source.case_id,
        "source_dataset": ctx.src.root.name,
        "augmented": True,
        "k": item.k,
        "augment": s["augment"],
        "transforms": to_jsonable(item.steps),
        "source_sector": item.source.sector.to_dict() if item.source.sector is not None else None,
        "tries": item.tries,
        "label_kept_fraction": item.label_kept,
        "policy": s["policy"],
        "seed": s["seed"],
        "rng_key": item.key,
        "torch_seed": item.torch_seed if s["repaint"] else None,
        "frame_size": s["frame_size"],
        "repaint": s["repaint"],
        "model": s["model"] if s["repaint"] else None,
        "sampler": s["sampler"] if s["repaint"] else None,
        "status": status,
    }
    if s.get("augment_validation"):  # the paper's setting: copies of validation cases are validated on
        record["provenance"]["validation_copy"] = item.source.case_id in set(ctx.plan["splits"][s["fold"]]["val"])
    return record


def _write_augmented(ctx: _Context, item: Prepared) -> None:
    """Write one augmented case (image + label) and then its record."""
    test = False
    if not item.ok:
        log.warning("%s: augmentation skipped: %s", item.case_id, item.reason)
        ctx.save_record(item.case_id, "skipped", test, item.source.spacing, _aug_record(ctx, item, "skipped"),
                        reason=item.reason)
        return
    image, label = compose_output(item)
    record = _aug_record(ctx, item, "done")
    spacing, origin = output_geometry(item)
    ctx.writer.add_case(item.case_id, image, label, spacing=spacing, origin=origin,
                        direction=item.source.direction, record=record, test=test)
    ctx.writer.records.pop(item.case_id, None)  # bookkeeping lives in the sidecar records
    ctx.save_record(item.case_id, "done", test, spacing, record)


def output_geometry(item: Prepared) -> tuple[tuple[float, float], tuple[float, ...]]:
    """Spacing and origin of an augmented case: a depth zoom-out by c makes its pixels c times larger in mm.

    The origin moves so that the sector apex (the probe) keeps its physical position:
    origin' = origin + D (apex_mm (1 - c)) with the direction matrix D; without a zoom both are the source's.
    """
    assert item.full is not None
    src = item.source
    c = float(item.full.pixel_scale)
    if src.sector is None or c == 1.0:
        return (float(src.spacing[0]), float(src.spacing[1])), tuple(src.origin)
    direction = np.asarray(src.direction, dtype=np.float64).reshape(len(src.origin), len(src.origin))
    shift = np.zeros(len(src.origin))
    shift[:2] = np.asarray(src.sector.apex, dtype=np.float64) * (1.0 - c)
    origin = tuple(float(v) for v in np.asarray(src.origin, dtype=np.float64) + direction @ shift)
    return (float(src.spacing[0] * c), float(src.spacing[1] * c)), origin


def _process_group(ctx: _Context, group: Sequence[str]) -> None:
    """Copy the group's originals and write their K augmentations (the whole group is one RePaint work unit)."""
    s = ctx.settings
    k_total = s["k"]
    for case_id in group:
        if not ctx.done(case_id):
            _copy_case(ctx, case_id)
    if all(ctx.done(f"{c}_aug{j}") for c in group for j in range(1, k_total + 1)):
        return
    items: list[Prepared] = []
    for case_id in group:
        case = load_case(ctx.src, case_id, ctx.mapping)
        items.extend(prepare_augmentation(case, j, s["augment"], s["seed"], s["frame_size"], ctx.policy)
                     for j in range(1, k_total + 1))
    if s["repaint"]:
        valid = [it for it in items if it.ok]
        for start in range(0, len(valid), s["batch_size"]):
            batch = valid[start : start + s["batch_size"]]
            frames = repaint_frames(batch, ctx.model, ctx.diffusion, s["sampler"]["name"], s["sampler"]["schedule"],
                                    s["sampler"]["border_px"], ctx.device)
            for it, frame in zip(batch, frames):
                it.repainted = frame
                it.frame_keep = frame_keep_mask(it.frame.known, s["sampler"]["border_px"])  # type: ignore[union-attr]
    for it in items:
        if not ctx.done(it.case_id):
            _write_augmented(ctx, it)


# ----------------------------------------------------------------------------------------------------------------
# Entry points
# ----------------------------------------------------------------------------------------------------------------


def _check_out(out: Path, src: RawDataset, overwrite: bool, settings: Mapping[str, Any], plan: Mapping[str, Any]) -> None:
    """Refuse to mix with foreign content or with an expansion made with other arguments."""
    src_root, out_root = src.root.resolve(), out.resolve()
    if out_root == src_root or src_root in out_root.parents or out_root in src_root.parents:
        raise EchoDataError(out, f"output must lie outside the source dataset {src.root} (and not contain it)")
    if overwrite or not out.exists():
        return
    plan_file = out / RECORDS_DIR / _PLAN
    if (out / "dataset.json").is_file():
        raise EchoDataError(out, "a complete dataset already exists here; pass overwrite=True (--overwrite)")
    if not plan_file.is_file():
        if any(p.name != RECORDS_DIR for p in out.iterdir()):
            raise EchoDataError(out, "folder exists, is not empty and is not an interrupted expansion; "
                                     "choose a new folder or pass --overwrite")
        return  # empty, or only .records/ without a plan: a shard is starting (it holds the lock) or died before its plan
    _same_plan(plan_file, settings, plan)


def _same_plan(plan_file: Path, settings: Mapping[str, Any], plan: Mapping[str, Any]) -> None:
    """Refuse to resume an expansion whose plan was made with other arguments."""
    previous = read_json(plan_file)
    mine = json.loads(json.dumps(to_jsonable({"settings": settings, "plan": plan})))
    theirs = {"settings": previous.get("settings"), "plan": previous.get("plan")}
    if theirs != mine:
        changed = sorted(key for key in mine["settings"] if mine["settings"].get(key) != (theirs["settings"] or {}).get(key))
        raise EchoDataError(plan_file, "an interrupted expansion with other arguments is here "
                                       f"(differs in {changed or ['source cases']}); use the same arguments or --overwrite")


@contextlib.contextmanager
def _locked(out: Path, what: str) -> Iterator[None]:
    """Hold ``out/.records/_lock`` (``fcntl.flock``, exclusive; waits for a live holder; the kernel frees it when the
    holder dies). Without file locks (no ``fcntl``, or the file system refuses) it goes on unlocked with a warning."""
    path = out / RECORDS_DIR / _LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            import fcntl
        except ImportError:  # not a POSIX system
            fcntl = None  # type: ignore[assignment]
        if fcntl is None:
            log.warning("%s: no file locks on this system; do not start or finish two shards at the same instant", path)
        else:
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another shard"
                    log.info("%s: waiting for %s", path, holder)
                    fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as err:  # e.g. ENOLCK / EOPNOTSUPP on a file system without locks
                log.warning("%s: cannot lock (%s); going on without the lock", path, err)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} ({what})\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def _create_exclusive(path: Path, payload: Mapping[str, Any]) -> bool:
    """Create ``path`` with ``payload`` only if it does not exist (True if this call created it).

    The JSON goes to a temporary file first, which is then hard-linked to ``path``: like ``O_EXCL`` the link fails
    when ``path`` exists, and unlike an ``O_EXCL`` open no reader can ever see the file half written.
    """
    text = json.dumps(to_jsonable(payload), indent=2) + "\n"
    staged = path.with_name(f".{path.stem}.{os.getpid()}.staged{path.suffix}")
    atomic_write_text(staged, text)
    try:
        try:
            os.link(staged, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links on this file system (FAT, some FUSE mounts): a plain O_EXCL creation
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
        return True
    finally:
        staged.unlink(missing_ok=True)


def _load_model(
    model: str | os.PathLike | None, repaint: bool, frame_size: int | None, device: str
) -> tuple[Any, Any, dict | None, int]:
    """Load the DDPM (when repainting, or to take its frame size); returns (net, diffusion, provenance, frame size)."""
    if model is None:
        if repaint:
            raise EchoDataError(None, "--model is required for repainting (pass a DDPM checkpoint, or --no-repaint)")
        return None, None, None, int(frame_size or DEFAULT_FRAME_SIZE)
    from echogains.ddpm.model import load_ddpm

    path = Path(model)
    net, diffusion, config = load_ddpm(path, device=device)
    if frame_size is not None and int(frame_size) != config.image_size:
        raise EchoDataError(path, f"--frame_size {frame_size} differs from the model's image size {config.image_size}")
    info = {"file": path.name, "sha256": _sha256(path), "config": config.name, "image_size": config.image_size}
    return (net, diffusion, info, config.image_size) if repaint else (None, None, info, config.image_size)


def _sampler_info(sampler: str, schedule: Sequence[int] | None, border: int | None, frame_size: int) -> dict[str, Any]:
    from echogains.augment.repaint import SAMPLERS, network_evaluations

    n = network_evaluations(sampler, schedule)  # validates sampler and schedule
    sched = [int(v) for v in (schedule if schedule is not None else SAMPLERS[sampler])]
    border_px = int(border) if border is not None else max(1, int(round(10 * frame_size / 256)))
    return {"name": sampler, "schedule": sched, "network_evaluations": n, "border_px": border_px}


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
        schedule: RePaint (t_T, jump_length, jump_n_sample) instead of the sampler's default.
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
    from echogains.utils import set_progress

    set_progress(progress)
    out = Path(out)
    if merge_only:
        return merge_shards(out)
    check_augment(augment)
    k = _check_int("k", k, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    seed = _check_int("seed", seed, 0)
    fold = _check_int("fold", fold, 0)
    if frame_size is not None:
        frame_size = _check_int("frame_size", frame_size, 16)
    keys = parse_labels(labels)
    shard_i, shard_n = parse_shard(shard)
    if overwrite and shard_n > 1:
        raise EchoDataError(out, "--overwrite with several shards would let shards delete each other's work; "
                                 "remove the folder first")
    policy = policy or TransformPolicy()
    source = RawDataset(src)
    mapping = _label_mapping(source.labels, keys, source.root / "dataset.json")
    for case_id in source.case_ids("Tr"):
        if not source.has_label(case_id):
            raise EchoDataError(source.label_path(case_id), "missing: every training case needs its label")
    dev = _resolve_device(device)
    net, diffusion, model_info, size = _load_model(model, bool(repaint), frame_size, dev)
    sampler_info = _sampler_info(sampler, schedule, border, size) if repaint else None
    plan = _make_plan(source, fold, k, batch_size, bool(augment_validation))
    settings = {
        "source": source.root.name, "augment": augment, "k": k, "labels": keys, "repaint": bool(repaint),
        "sampler": sampler_info, "model": model_info if repaint else None, "seed": seed, "fold": fold,
        "batch_size": batch_size, "frame_size": size, "policy": policy.to_dict(),
    }
    if augment_validation:
        settings["augment_validation"] = True
    _check_out(out, source, overwrite, settings, plan)
    # --- nothing was written before this line ---
    if overwrite and (out / RECORDS_DIR).is_dir():
        shutil.rmtree(out / RECORDS_DIR)
    # the plan goes first, before any case file: a folder holding only .records/ is an expansion being started
    saved = {"settings": settings, "plan": plan, "source_path": str(source.root.resolve())}
    if overwrite and (out / "dataset.json").is_file():
        (out / "dataset.json").unlink()  # mark incomplete before the plan makes the folder a resumable expansion
    with _locked(out, f"starting shard {shard_i}/{shard_n}"):
        _check_out(out, source, overwrite, settings, plan)  # again, now that no other shard can be writing the plan
        plan_file = out / RECORDS_DIR / _PLAN
        if not plan_file.is_file() and not _create_exclusive(plan_file, saved):
            _same_plan(plan_file, settings, plan)  # only without file locks: another shard created it meanwhile
    writer = RawDatasetWriter(out, label_dict(keys), description=_description(settings), overwrite=overwrite,
                              resume=True)
    ctx = _Context(source, out, settings, plan, writer, mapping, keys, policy, net, diffusion, dev)
    groups = plan["groups"][shard_i::shard_n]
    copies = plan["copies"][shard_i::shard_n]
    work = [("group", g) for g in groups] + [("copy", c) for c in copies]
    log.info("expand %s -> %s: shard %d/%d, %d work groups, %d copies", source.root, out, shard_i, shard_n,
             len(groups), len(copies))
    for kind, what in progress_bar(work, total=len(work), desc=f"expand {shard_i}/{shard_n}"):
        if kind == "group":
            _process_group(ctx, what)
        elif not ctx.done(what, source.is_test(what)):
            _copy_case(ctx, what)
    if _missing(out, plan, k):
        log.info("shard %d/%d done; other shards still running (the last one writes dataset.json)", shard_i, shard_n)
        return out
    _merge_once(out)
    return out


def _merge_once(out: Path) -> None:
    """Merge unless a shard that finished at the same moment did (it held the lock; this one waited for it)."""
    with _locked(out, "merging"):
        if (out / "dataset.json").is_file():
            log.info("%s: merged by another shard", out)
            return
        _merge_unlocked(out)


def _description(settings: Mapping[str, Any]) -> str:
    mode = "repaint" if settings["repaint"] else "no repaint"
    return (f"echogains expand-dataset of {settings['source']}: {settings['augment']} x{settings['k']} ({mode}), "
            f"labels {','.join(settings['labels'])}, fold {settings['fold']}, seed {settings['seed']}")


def _missing(out: Path, plan: Mapping[str, Any], k: int) -> list[str]:
    records = out / RECORDS_DIR
    return [c for c in _expected_ids(plan, k) if not (records / f"{c}.json").is_file()]


def merge_shards(out: str | os.PathLike) -> Path:
    """Write ``cases.json``, ``splits_final.json`` and, last, ``dataset.json`` from the records of all shards.

    Holds the expansion's lock meanwhile (a shard finishing at the same time waits, then finds the dataset merged).

    Raises:
        EchoDataError: not an expansion folder, or some cases are not finished yet.
    """
    out = Path(out)
    if not (out / RECORDS_DIR / _PLAN).is_file():
        return _merge_unlocked(out)  # raises: not an expansion (and nothing is written into the folder)
    with _locked(out, "merging"):
        return _merge_unlocked(out)


def _merge_unlocked(out: Path) -> Path:
    plan_file = out / RECORDS_DIR / _PLAN
    if not plan_file.is_file():
        raise EchoDataError(plan_file, "missing: not an expand-dataset output (nothing to merge)")
    saved = read_json(plan_file)
    settings, plan = saved["settings"], saved["plan"]
    k = int(settings["k"])
    missing = _missing(out, plan, k)
    if missing:
        raise EchoDataError(out, f"{len(missing)} case(s) not finished yet (e.g. {missing[:3]}); run the remaining shards")
    writer = RawDatasetWriter(out, label_dict(settings["labels"]), description=_description(settings), overwrite=True,
                              resume=True)
    written = set()
    for case_id in _expected_ids(plan, k):
        rec = read_json(out / RECORDS_DIR / f"{case_id}.json")
        if rec["status"] != "done":
            continue
        writer.add_case(case_id, None, None, spacing=rec["spacing"], record=rec["record"],  # type: ignore[arg-type]
                        test=rec["test"], write=False)
        written.add(case_id)
    splits = [{"train": [c for c in s["train"] if c in written], "val": [c for c in s["val"] if c in written]}
              for s in plan["splits"]]
    extra = {"echogains_expansion": {key: settings[key] for key in ("source", "augment", "k", "repaint", "fold", "seed")}}
    path = writer.finalize(splits=splits, dataset_name=out.name, extra=extra)
    skipped = sum(1 for _ in _expected_ids(plan, k)) - len(written)
    log.info("merged %s: %d cases (%d augmentations skipped by the retry policy)", out, len(written), skipped)
    return path.parent
