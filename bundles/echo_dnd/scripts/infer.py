"""Echo-DND inference I/O: read echo images, sample masks with the diffusion sampler, write them in the input geometry.

Inputs (``dataset_dir``):

- an nnU-Net raw dataset (``dataset.json`` with ``imagesTs``/``imagesTr``): the cases of ``subset`` (``auto``: the
  test cases, or every case when there are none), written as ``{case}.nii.gz`` so ``echogains evaluate`` reads them;
- a folder of images, or one image file: NIfTI (``.nii``/``.nii.gz``), MetaImage (``.mhd``), PNG or ultrasound
  DICOM (``.dcm``/``.dicom``, read by MONAI's ``LoadImage`` with :class:`scripts.readers.UltrasoundDicomReader`: the
  spacing in mm from ``SequenceOfUltrasoundRegions``, a multi-frame file as a 2D+t loop). The case id is the file name
  without its extension and without nnU-Net's ``_0000`` channel suffix; CAMUS ground-truth files (``*_gt.*``) are
  skipped.

A 2D image is one frame; a 3D image (a 2D+t sequence such as a CAMUS half sequence, frames along the third axis) is
segmented frame by frame. RGB(A) PNGs are converted to grey (mean of R, G, B).

Per frame (the same steps as training, ``scripts.data``): min-max intensity scaling to [0, 1], zero padding to a
centred square, resize to the model's ``image_size``; the sampler (batched over frames) gives the fused STAPLE mask
and the uncertainty map (by default the entropy of the members' reliability-weighted soft outputs, each kept inside
its plausible LV: ``scripts.sampler``); both go back onto the
input's pixel grid by bilinear resampling that undoes the padding and resizing exactly (``scripts.data``). The mask is
the STAPLE probability, anti-aliased by a Gaussian of ``scripts.data.ANTIALIAS_SIGMA`` model pixels, resampled and
thresholded on the input grid (the sampler's ``threshold``, 0.5), then post-processed there as the sampler does
(largest component, holes filled), so that its contour is smooth at the input's resolution rather than a staircase of
model pixels; the uncertainty is resampled as it is. Both are written with the input's spacing, origin and
direction (SimpleITK ``CopyInformation``):

- ``{case}.nii.gz``: uint8 mask, ``label_value`` (1) = LV cavity, 0 elsewhere;
- ``{case}_uncertainty.nii.gz``: float32 in [0, 1], 0 where every member is certain (and outside every member's
  LV region);
- ``{case}_samples.nii.gz`` (``save_samples``, 2D inputs only): uint8 image of size ``(W, H, R)``, slice k the
  binary (0/1) mask of ensemble member k, the Gaussian chain's members first, then the Bernoulli chain's (only the
  chains the model has); each made like the fused mask (the member's mask resampled by ``mask_to_input`` at 0.5,
  then the largest component with holes filled); spacing ``(sx, sy, 1)``, origin ``(ox, oy, 0)``, the input's
  direction embedded in a 3 x 3 identity. A 2D+t input gets no samples file;
- ``echo_dnd_inference.json``: settings, weights hash and per-case timings; with the samples, per case
  ``members`` (the chain of each slice) and, when STAPLE ran, ``staple_sensitivity`` / ``staple_specificity``
  (STAPLE's estimate per member, 6 decimals).

Every input is read and checked before the first output is written; a bad file raises
:class:`~echogains.utils.EchoDataError` naming it. The same inputs, weights and seed give the same bytes: each case
draws from its own ``torch.Generator`` seeded with ``seed``, independent of the other cases.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from echogains.data.nnunet import RawDataset, write_image
from echogains.utils import EchoDataError, atomic_path, atomic_write_json, get_logger, progress

from .common import as_bool
from .data import Frame, mask_to_input, normalize_intensity, soft_to_input, to_model_frame
from .readers import DICOM_SUFFIXES, read_image_frames
from .sampler import postprocess_mask

__all__ = [
    "IMAGE_SUFFIXES",
    "InferenceCase",
    "EchoDNDInference",
    "case_id_from_name",
    "find_inputs",
    "read_frames",
    "read_dicom_frames",
    "segment_frames",
    "segment_frames_full",
    "sample_frames",
    "FrameSegmentation",
    "samples_to_image",
    "frames_to_image",
    "make_sample_data",
    "file_sha256",
    "as_bool",
    "resolve_subset",
]

log = get_logger("echo_dnd.infer")

#: File types read as images (SimpleITK picks the reader from the extension; DICOM: ``scripts.readers``).
IMAGE_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".mhd", ".png", ".dcm", ".dicom")
#: Name of the run record written beside the predictions.
RECORD_NAME = "echo_dnd_inference.json"
UNCERTAINTY_SUFFIX = "_uncertainty"
SAMPLES_SUFFIX = "_samples"


@dataclass(frozen=True)
class InferenceCase:
    """One input: its case id (names the outputs) and its image file."""

    case_id: str
    path: Path


# --- finding the inputs -----------------------------------------------------------------------------------------
def _image_suffix(name: str) -> str | None:
    lower = name.lower()
    return next((s for s in IMAGE_SUFFIXES if lower.endswith(s)), None)


def case_id_from_name(name: str) -> str:
    """Case id of an image file name: without its extension and without a trailing ``_0000`` (nnU-Net channel).

    Args:
        name: a file name such as ``patient0001_4CH_ED_0000.nii.gz``.
    """
    suffix = _image_suffix(name)
    stem = name[: -len(suffix)] if suffix else name
    return stem[: -len("_0000")] if stem.endswith("_0000") else stem


def resolve_subset(dataset: RawDataset, subset: str) -> str:
    """``auto`` means the test cases (``Ts``) when the dataset has any, else ``all``; other values pass through."""
    if subset == "auto":
        return "Ts" if dataset.case_ids("Ts") else "all"
    return subset


def _dataset_cases(root: Path, subset: str, fold: int | None) -> list[InferenceCase]:
    dataset = RawDataset(root)
    ids = dataset.case_ids(resolve_subset(dataset, subset), fold)
    return [InferenceCase(c, dataset.image_path(c)) for c in ids]


def _folder_cases(root: Path) -> list[InferenceCase]:
    files = sorted(
        f
        for f in root.iterdir()
        if f.is_file()
        and not f.name.startswith(".")
        and _image_suffix(f.name)
        and not case_id_from_name(f.name).endswith("_gt")
    )
    return [InferenceCase(case_id_from_name(f.name), f) for f in files]


def find_inputs(source: str | os.PathLike, subset: str = "auto", fold: int | None = None) -> list[InferenceCase]:
    """The cases to segment in ``source`` (an nnU-Net raw dataset, a folder of images or one image file).

    Args:
        source: dataset folder, image folder or image file.
        subset: for an nnU-Net raw dataset: ``auto`` (test cases, else all), ``Ts``, ``Tr``, ``all``, ``train``/``val``.
        fold: the fold of ``train``/``val``.

    Raises:
        EchoDataError: missing source, unsupported file type, no images, or two files giving the same case id.
    """
    root = Path(source)
    if root.is_file():
        if not _image_suffix(root.name):
            raise EchoDataError(root, f"unsupported image type; expected one of {', '.join(IMAGE_SUFFIXES)}")
        cases = [InferenceCase(case_id_from_name(root.name), root)]
    elif (root / "dataset.json").is_file():
        cases = _dataset_cases(root, subset, fold)
    elif root.is_dir():
        cases = _folder_cases(root)
    else:
        raise EchoDataError(root, "input not found (expected an nnU-Net raw dataset, an image folder or an image file)")
    if not cases:
        raise EchoDataError(root, f"no input images ({', '.join(IMAGE_SUFFIXES)}) found")
    seen: dict[str, Path] = {}
    for case in cases:
        if case.case_id in seen:
            raise EchoDataError(case.path, f"case id {case.case_id!r} is also given by {seen[case.case_id].name}")
        seen[case.case_id] = case.path
    return cases


# --- reading ----------------------------------------------------------------------------------------------------
def read_dicom_frames(path: str | os.PathLike) -> tuple[np.ndarray, sitk.Image]:
    """Read an ultrasound DICOM file through MONAI's ``LoadImage`` with :class:`scripts.readers.UltrasoundDicomReader`.

    Returns frames ``(T, H, W)`` and a reference image of the input's grid with the physical spacing in mm from
    ``SequenceOfUltrasoundRegions`` (2D for one frame, 3D ``(W, H, T)`` with spacing ``(sx, sy, 1)`` for a loop).

    Raises:
        EchoDataError: unreadable file, no pixel data, no calibrated region (the message names the file).
    """
    from monai.transforms import LoadImage

    from .readers import UltrasoundDicomReader

    path = Path(path)
    image = LoadImage(image_only=True)(str(path), reader=UltrasoundDicomReader())
    array = np.asarray(image, dtype=np.float32)  # (W, H) or (W, H, T)
    frames = array.T[None] if array.ndim == 2 else np.transpose(array, (2, 1, 0))
    spacing = [float(v) for v in np.asarray(image.meta["spacing"])]
    reference = sitk.GetImageFromArray(frames[0] if array.ndim == 2 else frames)
    reference.SetSpacing(spacing)
    return np.ascontiguousarray(frames), reference


def read_frames(path: str | os.PathLike) -> tuple[np.ndarray, sitk.Image]:
    """Read an image as frames ``(T, H, W)`` float32 and keep the image for its geometry.

    A 2D image gives one frame; a 3D image (2D+t) gives its slices along the third axis. A DICOM file (``.dcm``,
    ``.dicom``) is read by :func:`read_dicom_frames` (multi-frame: a 2D+t loop), its spacing from the ultrasound
    calibration in mm.

    Args:
        path: NIfTI, MetaImage, PNG or ultrasound DICOM file.

    Raises:
        EchoDataError: unreadable file, 4D or more, more than one channel (other than RGB), degenerate size,
            NaN or Inf values, a DICOM file without a calibrated ultrasound region.
    """
    path = Path(path)
    if path.name.lower().endswith(DICOM_SUFFIXES):
        return read_dicom_frames(path)
    return read_image_frames(path)


# --- segmenting -------------------------------------------------------------------------------------------------
def _model_batch(frames: np.ndarray, size: int) -> tuple[torch.Tensor, list[Frame]]:
    """Normalise each frame and put it into the square model frame: ``(T, 1, size, size)`` and the inverse maps."""
    pairs = [to_model_frame(normalize_intensity(f), size) for f in frames]
    return torch.stack([p[0] for p in pairs]), [p[1] for p in pairs]


@dataclass
class FrameSegmentation:
    """What :func:`segment_frames_full` gives for frames ``(T, H, W)`` on the input grid.

    Attributes:
        mask: the fused binary mask, uint8 ``(T, H, W)``.
        uncertainty: float32 ``(T, H, W)`` in [0, 1].
        members: each ensemble member's binary mask, uint8 ``(T, R, H, W)`` (the Gaussian chain's members first,
            then the Bernoulli chain's), made like the fused mask; ``None`` when the sampler gives no members.
        member_names: the chain of each of the R members (``"gaussian"`` / ``"bernoulli"``).
        sensitivity, specificity: STAPLE's estimate per frame and member, float64 ``(T, R)``; ``None`` when STAPLE
            did not run (one member, or a sampler without them).
    """

    mask: np.ndarray
    uncertainty: np.ndarray
    members: np.ndarray | None = None
    member_names: tuple[str, ...] = ()
    sensitivity: np.ndarray | None = None
    specificity: np.ndarray | None = None


#: The sampler outputs holding each chain's member masks ``(B, N, H, W)``, in the order of the samples file.
MEMBER_CHAINS: tuple[str, ...] = ("gaussian", "bernoulli")


def _sample(
    sampler: Callable[..., dict[str, torch.Tensor]], model: nn.Module, image: torch.Tensor, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """One batch through a MONAI ``Inferer`` (:class:`scripts.inferer.EchoDNDInferer`: ``inferer(image, model, g)``)
    or a sampler (``sampler(model, image, g)``)."""
    from monai.inferers import Inferer

    if isinstance(sampler, Inferer):
        return sampler(image, model, generator)
    return sampler(model, image, generator)


def sample_frames(
    inferer: Callable[..., dict[str, torch.Tensor]],
    network: nn.Module,
    frames: torch.Tensor,
    generator: torch.Generator,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Model-frame frames ``(T, S, S)`` through the sampler in batches of ``batch_size``.

    ``inferer`` is a MONAI ``Inferer`` (:class:`scripts.inferer.EchoDNDInferer`) or a sampler with the signature
    ``sampler(model, image, generator)`` (see :func:`_sample`).

    Returns ``prob`` (the sampler's STAPLE probability; a sampler without one: its ``mask``) and ``uncertainty``,
    both ``(T, S, S)``; when the sampler gives member masks, ``members`` ``(T, R, S, S)`` (the Gaussian chain's
    first, then the Bernoulli chain's) with ``member_names``, and STAPLE's ``sensitivity`` / ``specificity``
    ``(T, R)`` when every batch ran it. The batches draw from ``generator`` in order.
    """
    device = next(network.parameters()).device
    side = frames.shape[-2:]
    soft, unc, members, sens, spec = [], [], [], [], []
    names: tuple[str, ...] = ()
    for start in range(0, len(frames), max(1, int(batch_size))):
        out = _sample(inferer, network, frames[start : start + batch_size, None].to(device), generator)
        soft.append(out.get("prob", out["mask"]).detach().float().cpu().reshape(-1, *side))
        unc.append(out["uncertainty"].detach().float().cpu().reshape(-1, *side))
        chains = [k for k in MEMBER_CHAINS if k in out]
        if chains:
            names = tuple(k for k in chains for _ in range(out[k].shape[1]))
            members.append(torch.cat([out[k] for k in chains], dim=1).detach().float().cpu())
        if "sensitivity" in out and "specificity" in out:
            sens.append(out["sensitivity"].detach().double().cpu())
            spec.append(out["specificity"].detach().double().cpu())
    result: dict[str, Any] = {"prob": torch.cat(soft), "uncertainty": torch.cat(unc)}
    if members:
        result["members"], result["member_names"] = torch.cat(members), names
    if sens and sum(len(v) for v in sens) == len(frames):
        result["sensitivity"], result["specificity"] = torch.cat(sens), torch.cat(spec)
    return result


def segment_frames_full(
    model: nn.Module,
    sampler: Callable[..., dict[str, torch.Tensor]],
    frames: np.ndarray,
    generator: torch.Generator,
    batch_size: int = 8,
    members: bool = True,
) -> FrameSegmentation:
    """Segment frames ``(T, H, W)``: the fused mask, the uncertainty and (``members``) every member's mask.

    Args:
        model: the Echo-DND model (``model.config.image_size`` is its input side).
        sampler: a MONAI ``Inferer`` (:class:`scripts.inferer.EchoDNDInferer`, ``inferer(image, model, generator)``)
            or ``sampler(model, image, generator) -> {"mask", "uncertainty", ...}``, e.g. an ``EchoDNDSampler``;
            its ``prob`` (the soft mask), when given, is what is resampled and thresholded on the input grid; its
            ``gaussian`` / ``bernoulli`` member masks and ``sensitivity`` / ``specificity``, when given, are kept.
        frames: the frames on the input's pixel grid.
        generator: every random draw of the sampler; the frames' batches draw from it in order.
        batch_size: frames per sampler call.
        members: also put each member's mask on the input grid (as the fused mask: its map resampled with
            :func:`~scripts.data.mask_to_input` at 0.5, then the largest component with holes filled).
    """
    batch, maps = _model_batch(frames, int(model.config.image_size))
    threshold = float(getattr(sampler, "threshold", 0.5))
    out = sample_frames(sampler, model, batch[:, 0], generator, batch_size)
    votes = out.get("members") if members else None
    masks, uncertainty, member_masks = [], [], []
    for i, frame in enumerate(maps):
        masks.append(mask_to_input(out["prob"][i], frame, threshold))
        uncertainty.append(np.clip(soft_to_input(out["uncertainty"][i], frame, sigma=0.0), 0.0, 1.0))
        if votes is not None:
            member_masks.append(np.stack([mask_to_input(v, frame, 0.5) for v in votes[i]]))
    masks_array = np.stack(masks)
    if getattr(sampler, "postprocess", False):  # the sampler's post-processing, redone on the input grid
        masks_array = postprocess_mask(masks_array)
    members_array = None
    if member_masks:
        members_array = np.asarray(postprocess_mask(np.stack(member_masks).astype(np.uint8)), dtype=np.uint8)
    staple_ran = "sensitivity" in out  # every batch ran STAPLE
    return FrameSegmentation(
        mask=masks_array.astype(np.uint8),
        uncertainty=np.stack(uncertainty).astype(np.float32),
        members=members_array,
        member_names=tuple(out.get("member_names", ())) if member_masks else (),
        sensitivity=out["sensitivity"].numpy() if staple_ran else None,
        specificity=out["specificity"].numpy() if staple_ran else None,
    )


def segment_frames(
    model: nn.Module,
    sampler: Callable[..., dict[str, torch.Tensor]],
    frames: np.ndarray,
    generator: torch.Generator,
    batch_size: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Segment frames ``(T, H, W)``; returns the binary mask (uint8) and the uncertainty (float32), both ``(T, H, W)``.

    :func:`segment_frames_full` without the members (the same masks and uncertainty for the same draws).
    """
    result = segment_frames_full(model, sampler, frames, generator, batch_size, members=False)
    return result.mask, result.uncertainty


# --- writing ----------------------------------------------------------------------------------------------------
def frames_to_image(frames: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """Frames ``(T, H, W)`` as an image of the reference's dimension, size, spacing, origin and direction."""
    array = frames[0] if reference.GetDimension() == 2 else frames
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def samples_to_image(members: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """One 2D frame's member masks ``(R, H, W)`` as a 3D uint8 image of size ``(W, H, R)``.

    Spacing ``(sx, sy, 1)``, origin ``(ox, oy, 0)`` and the reference's 2 x 2 direction embedded in a 3 x 3 identity.
    """
    if reference.GetDimension() != 2:
        raise EchoDataError(None, "member samples are written for 2D inputs only")
    image = sitk.GetImageFromArray(np.ascontiguousarray(members, dtype=np.uint8))
    sx, sy = reference.GetSpacing()
    ox, oy = reference.GetOrigin()
    d = reference.GetDirection()
    image.SetSpacing((float(sx), float(sy), 1.0))
    image.SetOrigin((float(ox), float(oy), 0.0))
    image.SetDirection((d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0))
    return image


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file (provenance of the weights)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class EchoDNDInference:
    """Segment every input of ``dataset_dir`` with an Echo-DND model and write masks and uncertainty maps.

    Args:
        model: the Echo-DND model (``scripts.train.load_model``), on the device to run on.
        sampler: the configs' ``inferer`` (:class:`scripts.inferer.EchoDNDInferer`, a MONAI ``Inferer`` holding the
            sampler), an ``EchoDNDSampler`` (steps, ensemble) or any callable with its signature.
        dataset_dir: nnU-Net raw dataset, image folder or image file (see the module docstring).
        output_dir: where ``{case}.nii.gz``, ``{case}_uncertainty.nii.gz`` and the run record go.
        subset: cases of an nnU-Net raw dataset: ``auto``, ``Ts``, ``Tr``, ``all``, ``train``/``val`` (of ``fold``).
        fold: fold for ``train``/``val``.
        seed: seed of each case's generator.
        batch_size: frames per sampler call.
        label_value: value of the LV in the written mask.
        weights: path of the weights, recorded with its SHA-256.
        progress: show a progress bar over the cases.
        save_samples: also write ``{case}_samples.nii.gz``, every ensemble member's mask, for each 2D input
            (``true``/``false`` strings accepted).
    """

    def __init__(
        self,
        model: nn.Module,
        sampler: Callable[..., dict[str, torch.Tensor]],
        dataset_dir: str | os.PathLike,
        output_dir: str | os.PathLike,
        subset: str = "auto",
        fold: int | None = None,
        seed: int = 0,
        batch_size: int = 8,
        label_value: int = 1,
        weights: str | os.PathLike | None = None,
        progress: bool = True,
        save_samples: bool = True,
    ) -> None:
        if batch_size < 1:
            raise EchoDataError("batch_size", f"must be >= 1, got {batch_size}")
        if not 1 <= int(label_value) <= 255:
            raise EchoDataError("label_value", f"must be in 1..255, got {label_value}")
        self.model, self.sampler = model, sampler
        self.dataset_dir, self.output_dir = Path(dataset_dir), Path(output_dir)
        self.subset, self.fold, self.seed = subset, fold, int(seed)
        self.batch_size, self.label_value = int(batch_size), int(label_value)
        self.weights = None if weights is None else Path(weights)
        self.progress = as_bool(progress, "progress")
        self.save_samples = as_bool(save_samples, "save_samples")

    def output_paths(self, case_id: str) -> tuple[Path, Path]:
        """Paths of the mask and the uncertainty map of a case."""
        return (self.output_dir / f"{case_id}.nii.gz", self.output_dir / f"{case_id}{UNCERTAINTY_SUFFIX}.nii.gz")

    def samples_path(self, case_id: str) -> Path:
        """Path of a 2D case's member masks (written when ``save_samples``)."""
        return self.output_dir / f"{case_id}{SAMPLES_SUFFIX}.nii.gz"

    def check(self) -> list[InferenceCase]:
        """Find and read every input, and check that no output would replace an input; nothing is written.

        Raises:
            EchoDataError: the first bad input, naming its file (or ``--num_steps`` beyond the model's T).
        """
        steps = getattr(self.sampler, "num_steps", None)
        trained = getattr(getattr(self.model, "config", None), "num_train_timesteps", None)
        if isinstance(steps, int) and isinstance(trained, int) and not 1 <= steps <= trained:
            raise EchoDataError(None, f"--num_steps: expected 1..{trained} (the model's trained T), got {steps}")
        cases = find_inputs(self.dataset_dir, self.subset, self.fold)
        inputs = {c.path.resolve() for c in cases}
        for case in cases:
            _, image = read_frames(case.path)
            outputs = list(self.output_paths(case.case_id))
            if self.save_samples and image.GetDimension() == 2:
                outputs.append(self.samples_path(case.case_id))
            for out in outputs:
                if out.resolve() in inputs:
                    raise EchoDataError(out, "an output would overwrite an input image; choose another output_dir")
        return cases

    def segment_case(self, case: InferenceCase) -> dict[str, Any]:
        """Segment one case, write its images atomically and return its record."""
        start = time.perf_counter()
        frames, reference = read_frames(case.path)
        generator = torch.Generator().manual_seed(self.seed)
        two_d = reference.GetDimension() == 2
        result = segment_frames_full(
            self.model, self.sampler, frames, generator, self.batch_size, members=self.save_samples and two_d
        )
        masks, uncertainty = result.mask, result.uncertainty
        mask_path, unc_path = self.output_paths(case.case_id)
        write_image(frames_to_image(masks * np.uint8(self.label_value), reference), mask_path)
        write_image(frames_to_image(uncertainty, reference), unc_path)
        if result.members is not None:
            write_image(samples_to_image(result.members[0], reference), self.samples_path(case.case_id))
        else:  # a samples file of an earlier run would be read as this run's (``echogains evaluate``): remove it
            self.samples_path(case.case_id).unlink(missing_ok=True)
        record: dict[str, Any] = {
            "case_id": case.case_id,
            "input": str(case.path),
            "frames": int(len(frames)),
            "size": list(reference.GetSize()),
            "spacing": list(reference.GetSpacing()),
            "mask_pixels": int(masks.sum()),
            "mean_uncertainty": float(uncertainty.mean()),
        }
        if result.members is not None:
            record["members"] = list(result.member_names)
            if result.sensitivity is not None and result.specificity is not None:
                record["staple_sensitivity"] = [round(float(v), 6) for v in result.sensitivity[0]]
                record["staple_specificity"] = [round(float(v), 6) for v in result.specificity[0]]
        record["seconds"] = round(time.perf_counter() - start, 3)
        return record

    def settings(self) -> dict[str, Any]:
        """What produced the outputs: sampler settings, seed, model configuration and ablation, weights hash.

        ``chains`` lists the diffusion chains the model has (one for the ``gaussian_only`` / ``bernoulli_only``
        ablations: then the fused mask is that chain's mask, or the STAPLE of its ensemble members).
        """
        config = getattr(self.model, "config", None)
        return {
            "num_steps": getattr(self.sampler, "num_steps", None),
            "ensemble": getattr(self.sampler, "ensemble", None),
            **{
                name: getattr(self.sampler, name)
                for name in ("fusion", "uncertainty", "uncertainty_margin", "eta", "threshold")
                if hasattr(self.sampler, name)
            },
            "seed": self.seed,
            "batch_size": self.batch_size,
            "save_samples": self.save_samples,
            "device": str(next(self.model.parameters()).device),
            "weights": None if self.weights is None else str(self.weights),
            "weights_sha256": file_sha256(self.weights) if self.weights and self.weights.is_file() else None,
            "model_config": config.to_dict() if hasattr(config, "to_dict") else None,
            "ablation": getattr(self.model, "ablation", None),
            "chains": [
                name
                for name, on in (
                    ("gaussian", getattr(config, "use_gaussian", True)),
                    ("bernoulli", getattr(config, "use_bernoulli", True)),
                )
                if on
            ],
        }

    def run(self) -> dict[str, Any]:
        """Check all inputs, then segment them; returns the run record (also written as ``echo_dnd_inference.json``)."""
        cases = self.check()
        self.model.eval()
        log.info("segmenting %d case(s) from %s into %s", len(cases), self.dataset_dir, self.output_dir)
        iterable: Sequence[InferenceCase] = cases
        if self.progress:
            iterable = progress(cases, total=len(cases), desc="Echo-DND inference")  # type: ignore[assignment]
        records = [self.segment_case(case) for case in iterable]
        record = {"dataset_dir": str(self.dataset_dir), "subset": self.subset, **self.settings(), "cases": records}
        atomic_write_json(self.output_dir / RECORD_NAME, record)
        log.info("wrote %d prediction(s) to %s", len(records), self.output_dir)
        return record


# --- the bundle's sample data -----------------------------------------------------------------------------------
#: The shipped sample: the 4CH ED and ES test images of one phantom patient (seed below, CAMUS-like preset).
SAMPLE_SEED = 2025
SAMPLE_VIEW = "4CH"


def _copy_file(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        tmp.write_bytes(src.read_bytes())


def _remove_stale(out: Path, cases: Sequence[str], ending: str) -> None:
    """Remove image/label files of earlier samples that are not among ``cases``."""
    keep = {f"{c}_0000{ending}" for c in cases} | {f"{c}{ending}" for c in cases}
    for sub in ("imagesTs", "labelsTs"):
        for f in (out / sub).glob(f"*{ending}"):
            if f.name not in keep:
                f.unlink()


def make_sample_data(
    out_dir: str | os.PathLike, seed: int = SAMPLE_SEED, view: str = SAMPLE_VIEW, overwrite: bool = False
) -> Path:
    """Write the bundle's ``sample_data``: a small nnU-Net raw dataset of two labelled phantom test images.

    The images are the ``view`` ED and ES frames of the first test patient of ``echogains make-phantom`` (nnU-Net
    layout, CAMUS-like preset, ``seed``), with their LV/MYO/LA labels and ``cases.json`` records, so that
    ``configs/inference.json`` and ``configs/evaluate.json`` run with no arguments. Same seed, same bytes.

    Args:
        out_dir: the sample-data folder (``<bundle>/sample_data``).
        seed: phantom seed.
        view: ``2CH`` or ``4CH``.
        overwrite: replace an existing sample.
    """
    import tempfile

    from echogains.data.phantom import make_phantom

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise EchoDataError(out, "folder exists and is not empty; pass overwrite=True")
    if (out / "dataset.json").is_file():
        (out / "dataset.json").unlink()  # incomplete until rewritten
    with tempfile.TemporaryDirectory() as tmp:
        src = RawDataset(
            make_phantom(
                Path(tmp) / "Dataset999_EchoDNDSample", n_patients=3, layout="nnunet", seed=seed, progress=False
            )
        )
        patient = src.record(src.case_ids("Ts")[0])["patient"]
        cases = [f"{patient}_{view}_{phase}" for phase in ("ED", "ES")]
        for case in cases:
            _copy_file(src.image_path(case), out / "imagesTs" / f"{case}_0000{src.file_ending}")
            _copy_file(src.label_path(case), out / "labelsTs" / f"{case}{src.file_ending}")
        _remove_stale(out, cases, src.file_ending)
        atomic_write_json(out / "cases.json", {c: src.record(c) for c in cases})
        dataset_json = {
            **src.dataset_json,
            "numTraining": 0,
            "numTest": len(cases),
            "name": "EchoDNDSample",
            "description": f"Echo-DND bundle sample: {patient} {view} ED/ES of the echogains phantom "
            f"(camus-like preset, seed {seed}); scripts.infer.make_sample_data",
        }
        atomic_write_json(out / "dataset.json", dataset_json)  # written last: marks the sample complete
    log.info("wrote sample data %s (%s)", out, ", ".join(cases))
    return out
