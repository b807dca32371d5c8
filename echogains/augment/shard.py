"""What one shard writes: copies of source cases and the augmentations of its work groups, each followed by its
record in ``.records/`` (written after the case's files, so that a record means the case is complete).
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import SimpleITK as sitk

from echogains.augment.cases import (
    Prepared,
    compose_output,
    frame_keep_mask,
    load_case,
    output_geometry,
    prepare_augmentation,
    remap,
    repaint_frames,
)
from echogains.augment.plan import RECORDS_DIR
from echogains.augment.settings import ExpansionSettings
from echogains.data.nnunet import RawDataset, RawDatasetWriter, write_image
from echogains.utils import EchoDataError, atomic_path, atomic_write_json, get_logger, to_jsonable

__all__ = ["ShardContext", "copy_case", "write_augmented", "process_group"]

log = get_logger(__name__)


@dataclass
class ShardContext:
    """Everything a shard needs while it writes.

    Args:
        src: the source dataset.
        out: the output dataset folder.
        settings: the expansion's settings (validated by :func:`echogains.augment.expand.expand_dataset`).
        plan: the expansion's plan (:func:`echogains.augment.plan.make_plan`).
        writer: writes the output's case files.
        mapping: source label value -> output label value (:func:`echogains.augment.cases.label_mapping`).
        model, diffusion, device: the DDPM when repainting (``None`` otherwise).
    """

    src: RawDataset
    out: Path
    settings: ExpansionSettings
    plan: dict[str, Any]
    writer: RawDatasetWriter
    mapping: dict[int, int]
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

    def save_record(
        self,
        case_id: str,
        status: str,
        test: bool,
        spacing: Sequence[float],
        record: Mapping[str, Any],
        has_label: bool = True,
        reason: str | None = None,
    ) -> None:
        """Write the record of a finished (or skipped) case: the last file of the case."""
        payload = {
            "case": case_id,
            "status": status,
            "test": test,
            "has_label": has_label,
            "spacing": [float(s) for s in spacing],
            "record": dict(record),
        }
        if reason:
            payload["reason"] = reason
        atomic_write_json(self.record_path(case_id), payload)


def copy_case(ctx: ShardContext, case_id: str) -> None:
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
            arr = remap(sitk.GetArrayFromImage(lab), ctx.mapping)
            if not arr.any():
                raise EchoDataError(
                    ctx.src.label_path(case_id),
                    f"no {','.join(ctx.settings.labels)} pixels: empty label after --labels",
                )
            new = sitk.GetImageFromArray(arr)
            new.CopyInformation(lab)
            write_image(new, ctx.writer.label_path(case_id, test))
    record = copy.deepcopy(ctx.src.record(case_id))
    record.pop("subset", None)
    record["labels"] = list(ctx.settings.labels)
    record["provenance"] = {"source_case": case_id, "source_dataset": ctx.src.root.name, "augmented": False}
    ctx.save_record(case_id, "done", test, img.GetSpacing()[:2], record, has_label)


def _aug_record(ctx: ShardContext, item: Prepared, status: str) -> dict[str, Any]:
    """The record of an augmented case: the source's, with the augmentation's sector and provenance."""
    s = ctx.settings
    record = copy.deepcopy(item.source.record)
    for key in ("subset", "spacing_mm"):
        record.pop(key, None)
    record["patient"] = str(record.get("patient", item.source.case_id.split("_")[0]))
    record["labels"] = list(ctx.settings.labels)
    if item.full is not None:
        record["sector"] = item.full.sector.to_dict()
    record["provenance"] = {
        "source_case": item.source.case_id,
        "source_dataset": ctx.src.root.name,
        "augmented": True,
        "k": item.k,
        "augment": s.augment,
        "transforms": to_jsonable(item.steps),
        "source_sector": item.source.sector.to_dict() if item.source.sector is not None else None,
        "tries": item.tries,
        "label_kept_fraction": item.label_kept,
        "policy": s.policy.to_dict(),
        "seed": s.seed,
        "rng_key": item.key,
        "torch_seed": item.torch_seed if s.repaint else None,
        "frame_size": s.frame_size,
        "repaint": s.repaint,
        "model": s.model.to_dict() if s.repaint and s.model is not None else None,
        "sampler": s.sampler.to_dict() if s.repaint and s.sampler is not None else None,
        "status": status,
    }
    if s.augment_validation:  # the paper's setting: copies of validation cases are validated on
        record["provenance"]["validation_copy"] = item.source.case_id in set(ctx.plan["splits"][s.fold]["val"])
    return record


def write_augmented(ctx: ShardContext, item: Prepared) -> None:
    """Write one augmented case (image + label) and then its record."""
    test = False
    if not item.ok:
        log.warning("%s: augmentation skipped: %s", item.case_id, item.reason)
        ctx.save_record(
            item.case_id, "skipped", test, item.source.spacing, _aug_record(ctx, item, "skipped"), reason=item.reason
        )
        return
    image, label = compose_output(item)
    record = _aug_record(ctx, item, "done")
    spacing, origin = output_geometry(item)
    ctx.writer.add_case(
        item.case_id,
        image,
        label,
        spacing=spacing,
        origin=origin,
        direction=item.source.direction,
        record=record,
        test=test,
    )
    ctx.writer.records.pop(item.case_id, None)  # bookkeeping lives in the sidecar records
    ctx.save_record(item.case_id, "done", test, spacing, record)


def process_group(ctx: ShardContext, group: Sequence[str]) -> None:
    """Copy the group's originals and write their K augmentations (the whole group is one RePaint work unit)."""
    s = ctx.settings
    for case_id in group:
        if not ctx.done(case_id):
            copy_case(ctx, case_id)
    if all(ctx.done(f"{c}_aug{j}") for c in group for j in range(1, s.k + 1)):
        return
    items: list[Prepared] = []
    for case_id in group:
        case = load_case(ctx.src, case_id, ctx.mapping)
        items.extend(
            prepare_augmentation(case, j, s.augment, s.seed, s.frame_size, s.policy) for j in range(1, s.k + 1)
        )
    if s.repaint:
        _repaint_items(ctx, [it for it in items if it.ok])
    for it in items:
        if not ctx.done(it.case_id):
            write_augmented(ctx, it)


def _repaint_items(ctx: ShardContext, valid: Sequence[Prepared]) -> None:
    """RePaint the frames of ``valid`` in batches of ``batch_size`` images; fills ``repainted`` and ``frame_keep``."""
    s = ctx.settings
    sampler = s.sampler
    assert sampler is not None  # repainting always has a sampler (expand_dataset)
    for start in range(0, len(valid), s.batch_size):
        batch = valid[start : start + s.batch_size]
        frames = repaint_frames(
            batch, ctx.model, ctx.diffusion, sampler.name, sampler.schedule, sampler.border_px, ctx.device
        )
        for it, frame in zip(batch, frames):
            it.repainted = frame
            it.frame_keep = frame_keep_mask(it.frame.known, sampler.border_px)  # type: ignore[union-attr]
