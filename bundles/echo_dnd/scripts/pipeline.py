"""The inference pipeline of ``configs/inference.json`` as MONAI components: load, preprocess, infer, postprocess,
invert, save.

The config holds each step as a transform or component that a user can swap:

- ``preprocessing``: ``LoadImaged`` (readers :class:`scripts.readers.UltrasoundDicomReader` for ultrasound DICOM,
  spacing from ``SequenceOfUltrasoundRegions``; :class:`scripts.readers.EchoImageReader` for NIfTI, MetaImage,
  PNG), :class:`scripts.transforms.FramesToChanneld` (frames on the channel axis), ``ScaleIntensityd`` per frame
  (min-max to [0, 1]), :class:`scripts.transforms.AspectPadResized` (the paper's aspect-preserving pad and resize);
- ``inferer``: :class:`scripts.inferer.EchoDNDInferer` (the sampler: DDIM chains, STAPLE, uncertainty), run by
  :class:`EchoDNDPipeline` on the frames in batches of ``batch_size`` with one generator per case;
- ``postprocessing``: :class:`scripts.transforms.AntiAliasd`, ``Invertd`` (the pad and resize undone: the maps on
  the input's pixel grid), ``AsDiscreted`` (the sampler's threshold), :class:`scripts.transforms.LargestComponentd`,
  ``Lambdad`` (the label value), ``ScaleIntensityRanged`` (uncertainty clipped to [0, 1]), ``SaveImaged`` for the
  mask (uint8) and the uncertainty map (float32), in the input's affine.

  With ``save_samples``, a 2D input's ensemble members (``members``) go the same way (anti-aliased, inverted,
  thresholded at 0.5, largest component) into ``{case}_samples.nii.gz``, ``(W, H, R)``.

These are the steps of :class:`scripts.infer.EchoDNDInference` (same functions, same order), so the outputs agree
with it (``tests/bundle/test_bundle_pipeline.py`` compares them); the config's ``inference_direct`` entry runs
that class.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from torch import nn

from .common import EchoDataError
from .infer import EchoDNDInference, InferenceCase, case_id_from_name, sample_frames
from .transforms import _plain

__all__ = ["EchoDNDPipeline", "case_name_formatter", "finish_case", "sample_frames"]


def case_name_formatter(metadict: Mapping[str, Any], saver: Any = None) -> dict[str, Any]:
    """``SaveImaged``'s ``output_name_formatter``: outputs named by the case id (file name without extension and
    without nnU-Net's ``_0000``), as ``echogains evaluate`` and the direct inference name them."""
    name = os.path.basename(str(metadict.get("filename_or_obj", "case")))
    return {"subject": case_id_from_name(name), "idx": None}


def finish_case(
    inference: EchoDNDInference,
    staging_dir: Path,
    case_id: str,
    input_path: str,
    item: Mapping[str, Any],
    sampled: Mapping[str, Any],
    meta: Mapping[str, Any],
    start: float,
) -> dict[str, Any]:
    """Move a case's files saved by the postprocessing from ``staging_dir`` into the inference's ``output_dir``, and
    return its record (as :meth:`scripts.infer.EchoDNDInference.segment_case` gives it).

    Args:
        inference: gives the output paths.
        staging_dir: where ``SaveImaged`` wrote the mask, the uncertainty map and (with ``members``) the samples.
        case_id, input_path: the case and its image file.
        item: the postprocessed item (``pred``, ``uncertainty``, ``members`` when samples were saved).
        sampled: :func:`scripts.infer.sample_frames`' output for the case (``member_names``, STAPLE's estimates).
        meta: the preprocessed image's metadata (``input_shape``, ``spacing``).
        start: ``time.perf_counter()`` when the case began.

    Raises:
        EchoDataError: an output the postprocessing did not save.
    """
    mask_path, unc_path = inference.output_paths(case_id)
    outputs = [mask_path, unc_path] + ([inference.samples_path(case_id)] if "members" in item else [])
    for path in outputs:
        staged = staging_dir / path.name
        if not staged.is_file():
            raise EchoDataError(staged, "postprocessing did not save this output (check its SaveImaged)")
    for path in outputs:
        os.replace(staging_dir / path.name, path)
    shutil.rmtree(staging_dir, ignore_errors=True)
    if "members" not in item:  # a samples file of an earlier run would be read as this run's: remove it
        inference.samples_path(case_id).unlink(missing_ok=True)
    record: dict[str, Any] = {
        "case_id": case_id,
        "input": input_path,
        "frames": int(item["image"].shape[0]),
        "size": [int(s) for s in meta.get("input_shape", [])],
        "spacing": [float(s) for s in np.asarray(meta.get("spacing", []))],
        "mask_pixels": int((np.asarray(_plain(item["pred"]).cpu()) > 0).sum()),
        "mean_uncertainty": float(np.asarray(_plain(item["uncertainty"]).cpu()).mean()),
    }
    if "members" in item:
        record["members"] = list(sampled.get("member_names", ()))
        if "sensitivity" in sampled:
            record["staple_sensitivity"] = [round(float(v), 6) for v in sampled["sensitivity"][0]]
            record["staple_specificity"] = [round(float(v), 6) for v in sampled["specificity"][0]]
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record


class EchoDNDPipeline(EchoDNDInference):
    """Segment every input with the config's MONAI ``preprocessing``, ``inferer`` and ``postprocessing``.

    The inputs, checks, run record (``echo_dnd_inference.json``) and options are those of
    :class:`scripts.infer.EchoDNDInference`; each case goes through ``preprocessing`` (a dict ``{"image": path}``),
    the inferer, then ``postprocessing``, whose ``SaveImaged`` transforms write into ``staging_dir``; the case's
    files are then moved into ``output_dir`` (so an interrupted case leaves no half-written file there).

    Args:
        model: the Echo-DND network with its weights.
        inferer: :class:`scripts.inferer.EchoDNDInferer`.
        preprocessing: the config's ``preprocessing`` (a MONAI ``Compose``), ending in model-frame ``(T, S, S)``.
        postprocessing: the config's ``postprocessing`` (``Invertd`` against ``preprocessing``, ``SaveImaged``).
        staging_dir: the folder ``postprocessing`` saves into (inside ``output_dir``; removed at the end).
        dataset_dir, output_dir, subset, fold, seed, batch_size, weights, progress, save_samples: as
            :class:`scripts.infer.EchoDNDInference`.
    """

    def __init__(
        self,
        model: nn.Module,
        inferer: Callable[..., dict[str, torch.Tensor]],
        preprocessing: Callable[[dict], dict],
        postprocessing: Callable[[dict], dict],
        dataset_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        staging_dir: str | os.PathLike,
        subset: str = "auto",
        fold: int | None = None,
        seed: int = 0,
        batch_size: int = 8,
        weights: str | os.PathLike | None = None,
        progress: bool = True,
        save_samples: bool = True,
    ) -> None:
        super().__init__(
            model,
            inferer,
            dataset_dir,
            output_dir,
            subset=subset,
            fold=fold,
            seed=seed,
            batch_size=batch_size,
            weights=weights,
            progress=progress,
            save_samples=save_samples,
        )
        self.preprocessing, self.postprocessing = preprocessing, postprocessing
        self.staging_dir = Path(staging_dir)

    def segment_case(self, case: InferenceCase) -> dict[str, Any]:
        """Preprocess, sample, postprocess and save one case; returns its record."""
        start = time.perf_counter()
        item = self.preprocessing({"image": str(case.path)})
        image = item["image"]
        if not isinstance(image, MetaTensor) or image.ndim != 3:
            raise EchoDataError(case.path, "preprocessing must give a model-frame MetaTensor (T, S, S)")
        generator = torch.Generator().manual_seed(self.seed)
        out = sample_frames(self.sampler, self.model, image.as_tensor(), generator, self.batch_size)
        # MetaTensors, so that Invertd undoes the preprocessing recorded on the image (and gives them its metadata)
        item["pred"], item["uncertainty"] = MetaTensor(out["prob"]), MetaTensor(out["uncertainty"])
        two_d = not image.meta.get("sequence", True)
        if self.save_samples and two_d and "members" in out:
            item["members"] = MetaTensor(out["members"][0])  # (R, S, S): saved as (W, H, R), a slice per member
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        item = self.postprocessing(item)
        return finish_case(self, self.staging_dir, case.case_id, str(case.path), item, out, image.meta, start)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "pipeline": "monai"}
