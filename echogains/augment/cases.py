"""One source case and its augmentations, from reading to the output arrays (EchoGAINS Sec. 2.4, Fig. 8).

:func:`load_case` reads a source case (label reduced to the output labels, sector recorded or fitted);
:func:`prepare_augmentation` draws augmentation k (retry policy) and transforms it at the source's size and in the
model's frame; :func:`repaint_frames` repaints a batch of frames; :func:`compose_output` puts the kept source pixels
and the repainted frame back together at the source's size, and :func:`output_geometry` gives its spacing and origin.
The whole procedure is described in :mod:`echogains.augment.expand`.
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from echogains.augment.imaging import from_unit, resize, to_unit
from echogains.augment.repaint import repaint, repaint_mask
from echogains.augment.transforms import (
    TransformPolicy,
    TransformResult,
    apply_transforms,
    draw_steps,
    label_kept_fraction,
    regrid_coordinates,
    regrid_sector,
)
from echogains.data.labels import LABEL_NAMES
from echogains.data.nnunet import RawDataset
from echogains.geometry import Sector, fit_sector
from echogains.utils import EchoDataError

__all__ = [
    "SourceCase",
    "Prepared",
    "item_seed",
    "torch_seed",
    "label_mapping",
    "remap",
    "load_case",
    "prepare_augmentation",
    "frame_transform",
    "frame_keep_mask",
    "original_pixels",
    "repaint_frames",
    "model_input",
    "compose_output",
    "output_geometry",
]


def item_seed(seed: int, case_id: str, k: int) -> list[int]:
    """Entropy of augmentation k of ``case_id``: (seed, crc32(case id), k), the same on every machine."""
    return [int(seed), zlib.crc32(case_id.encode("utf-8")), int(k)]


def torch_seed(key: Sequence[int]) -> int:
    """Seed of the ``torch.Generator`` of the augmentation with entropy ``key`` (:func:`item_seed`)."""
    state = np.random.SeedSequence([*key, 1]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


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


def label_mapping(src_labels: Mapping[str, int], keys: Sequence[str], where: Path) -> dict[int, int]:
    """Source label value -> output value for the kept keys (names LV/MYO/LA as in dataset.json)."""
    mapping = {}
    by_name = {name.lower(): int(v) for name, v in src_labels.items()}
    for out_value, key in enumerate(keys, start=1):
        name = LABEL_NAMES[key]
        if name.lower() not in by_name:
            raise EchoDataError(where, f"--labels asks for {name}, but the dataset's labels are {dict(src_labels)}")
        mapping[by_name[name.lower()]] = out_value
    return mapping


def remap(label: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    out = np.zeros(label.shape, dtype=np.uint8)
    for src, dst in mapping.items():
        out[label == src] = dst
    return out


def load_case(src: RawDataset, case_id: str, mapping: Mapping[int, int]) -> SourceCase:
    """Read a source case with its label reduced to the output labels and its sector (recorded, else fitted)."""
    img = src.read_image(case_id)
    image = sitk.GetArrayFromImage(img)
    if image.ndim != 2:
        raise EchoDataError(src.image_path(case_id), f"expected a 2D one-channel image, got array shape {image.shape}")
    label = remap(sitk.GetArrayFromImage(src.read_label(case_id)), mapping)
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
    return SourceCase(
        case_id, image, label, spacing, tuple(img.GetOrigin()), tuple(img.GetDirection()), sector, record, problem
    )


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
    sector = case.sector
    if sector is None:
        return Prepared(case_id, case, k, [], 0, 0.0, False, torch_seed(key), key, reason=case.sector_problem)
    draw = draw_steps(
        augment,
        rng,
        policy,
        frame_size,
        lambda steps: label_kept_fraction(case.label, sector, steps, frame_shape, policy.margin_px, policy.kept_region),
    )
    item = Prepared(case_id, case, k, draw.steps, draw.tries, draw.label_kept, draw.ok, torch_seed(key), key)
    if not draw.ok:
        item.reason = (
            f"no draw in {draw.tries} tries kept >= {policy.min_label_inside:.0%} of the label "
            f"(best {draw.label_kept:.1%})"
        )
        return item
    unit, item.unit_range = to_unit(case.image)
    item.full = apply_transforms(
        unit, case.label, sector, draw.steps, frame_shape, policy.margin_px, policy.kept_region
    )
    item.frame = frame_transform(unit, sector, draw.steps, frame_size, policy)
    return item


def frame_transform(
    unit: np.ndarray, sector: Sector, steps: Sequence[Mapping[str, Any]], frame_size: int, policy: TransformPolicy
) -> TransformResult:
    """The transform of a unit image in the model's square frame (what RePaint sees)."""
    frame_shape = (frame_size, frame_size)
    frame_sector = regrid_sector(sector, unit.shape, frame_shape)
    return apply_transforms(
        resize(unit, frame_shape), None, frame_sector, steps, None, policy.margin_px, policy.kept_region
    )


def frame_keep_mask(frame_known: np.ndarray, border: int) -> np.ndarray:
    """Frame pixels RePaint keeps from its input: the known ones outside the seam band of ``border`` px."""
    known = torch.from_numpy(np.ascontiguousarray(frame_known, dtype=bool))[None, None]
    return repaint_mask(known, int(border))[0, 0].numpy()


def original_pixels(full_known: np.ndarray, frame_keep: np.ndarray) -> np.ndarray:
    """Pixels of the output (source grid) that hold the source: kept content whose frame pixel RePaint kept.

    Each output pixel centre is looked up, nearest-neighbour, in the frame; a kept pixel in the seam band of the
    frame is taken from the repainted frame like the unknown region (the band stays repainted).
    """
    shape = full_known.shape
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    fr, fc = regrid_coordinates(rows, cols, shape, frame_keep.shape)
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
        generated = resize((item.repainted + 1.0) / 2.0, full.image.shape)
        keep = full.known if item.frame_keep is None else original_pixels(full.known, item.frame_keep)
        unit = np.where(keep, full.image, generated)
    else:
        unit = full.image
    image = from_unit(unit, item.unit_range, item.source.image.dtype)
    return image, full.label.astype(np.uint8)  # type: ignore[union-attr]


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
