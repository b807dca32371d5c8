"""The uncertainty gallery of ``echogains evaluate``: the maps ``{case}_uncertainty.nii.gz`` beside the predictions.

Echo-DND writes one per case (in [0, 1]; by default the entropy of its samples' weighted soft maps); the first
:data:`UNCERTAINTY_GALLERY_CASES` of the subset that have one are checked (one channel, the label file's geometry,
finite values in [0, 1]) before anything is written and drawn on their own pixel grid with the contours.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from echogains.data.nnunet import RawDataset, read_image
from echogains.evaluation.images import as_2d as _as_2d
from echogains.evaluation.images import geometry_problem as _geometry_problem
from echogains.evaluation.plots import UncertaintyRow, uncertainty_gallery
from echogains.utils import EchoDataError

__all__ = ["UNCERTAINTY_GALLERY_CASES", "uncertainty_maps", "sampling_note", "write_uncertainty_gallery"]

#: Cases shown in the uncertainty gallery (the first ones of the subset that have a map).
UNCERTAINTY_GALLERY_CASES = 4
_UNCERTAINTY_SUFFIX = "_uncertainty"  # Echo-DND's {case}_uncertainty.nii.gz beside {case}.nii.gz


def uncertainty_maps(dataset: RawDataset, case_ids: Sequence[str], pred_dir: Path) -> dict[str, Path]:
    """Checked uncertainty maps of the first gallery cases, ``{case_id: path}`` (empty when there are none).

    Raises:
        EchoDataError: a map that is unreadable, not in its label file's geometry, not finite or outside [0, 1].
    """
    found = {c: pred_dir / f"{c}{_UNCERTAINTY_SUFFIX}{dataset.file_ending}" for c in case_ids}
    chosen = dict(list((c, p) for c, p in found.items() if p.is_file())[:UNCERTAINTY_GALLERY_CASES])
    for case, path in chosen.items():
        image = read_image(path)
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise EchoDataError(path, "expected a one-channel uncertainty map")
        image = image[:, :, 0] if image.GetDimension() == 3 and image.GetSize()[2] == 1 else image
        label_path = dataset.label_path(case)
        problem = _geometry_problem(image, _as_2d(read_image(label_path), label_path))
        if problem:
            raise EchoDataError(path, f"geometry differs from {label_path.name}: {problem}")
        values = sitk.GetArrayViewFromImage(image)
        if not np.isfinite(values).all() or values.min() < -1e-6 or values.max() > 1 + 1e-6:
            raise EchoDataError(path, "uncertainty map has values outside [0, 1] or NaN/Inf")
    return chosen


def sampling_note(pred_dir: Path) -> str:
    """What the Echo-DND run record says about the samples behind the maps ('' when there is no record)."""
    try:
        record = json.loads((pred_dir / "echo_dnd_inference.json").read_text())
        chains, ensemble = list(record["chains"]), int(record["ensemble"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return f"Echo-DND run: {ensemble} sample(s) per chain of {' and '.join(chains)}, {ensemble * len(chains)} in all."


def write_uncertainty_gallery(
    out: Path, dataset: RawDataset, maps: Mapping[str, Path], pred_paths: Mapping[str, Path], value: int
) -> str:
    """``uncertainty.png``: image with reference / predicted contours of ``value`` and the map as written."""
    rows = []
    for case, path in maps.items():
        image, gt, spacing = dataset.load(case)
        pred = sitk.GetArrayFromImage(_as_2d(read_image(pred_paths[case]), pred_paths[case]))
        unc = sitk.GetArrayFromImage(_as_2d(read_image(path), path)).astype(np.float32)
        rows.append(UncertaintyRow(case, image, gt == value, pred == value, unc, spacing))
    uncertainty_gallery(rows, out / "uncertainty.png")
    return "uncertainty.png"
