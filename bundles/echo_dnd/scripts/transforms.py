"""MONAI transforms of the Echo-DND inference pipeline (``configs/inference.json``: ``preprocessing``,
``postprocessing``), each the dictionary form of one step of :mod:`scripts.data` and :mod:`scripts.infer`.

The pipeline holds an image as **frames along the channel axis**: a 2D image ``(W, H)`` becomes ``(1, W, H)``, a
2D+t loop ``(W, H, T)`` (a sequence NIfTI/mhd, a multi-frame DICOM) becomes ``(T, W, H)``, so that MONAI's
``ScaleIntensityd(channel_wise=True)`` scales each frame, the model frame holds ``T`` images and ``SaveImaged``
(channel last) writes the mask back as ``(W, H)`` or ``(W, H, T)`` with the input's affine. Arrays are in MONAI's
``(x, y)`` order; the network was trained on ``(row, column) = (y, x)`` frames (:mod:`scripts.data`), which
:class:`AspectPadResized` swaps in and out.

- :class:`FramesToChanneld`: ``(W, H)`` / ``(W, H, T)`` -> ``(T, W, H)`` (the affine unchanged);
- :class:`AspectPadResized` (invertible): each frame zero-padded to a centred square and resized to the network
  size (:func:`scripts.data.to_model_frame`); its inverse (``Invertd``) puts a soft map back on the input grid by
  bilinear resampling (:func:`scripts.data.from_model_frame`);
- :class:`AntiAliasd`: the Gaussian anti-aliasing of a soft map in the model frame before it is inverted
  (:data:`scripts.data.ANTIALIAS_SIGMA`), so that thresholded contours are smooth at the input's resolution;
- :class:`LargestComponentd`: the sampler's post-processing per frame (largest 8-connected component, holes filled).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, NibabelWriter
from monai.transforms import InvertibleTransform, MapTransform
from scipy import ndimage

from .common import EchoDataError
from .data import ANTIALIAS_SIGMA, Frame, from_model_frame, to_model_frame
from .sampler import postprocess_mask

__all__ = [
    "FramesToChanneld",
    "SimpleITKWriter",
    "AspectPadResized",
    "AntiAliasd",
    "LargestComponentd",
    "MembersToVolumed",
    "FramesToSpatiald",
]


def _name(data: Mapping[Hashable, Any], key: Hashable) -> str:
    value = data[key]
    meta = getattr(value, "meta", {}) or {}
    return str(meta.get("filename_or_obj", key))


def _plain(img: Any) -> torch.Tensor:
    """The tensor of ``img`` without its metadata (operations on a MetaTensor copy its metadata each time)."""
    return img.as_tensor() if isinstance(img, MetaTensor) else torch.as_tensor(img)


def _like(img: Any, out: torch.Tensor) -> torch.Tensor:
    """``out`` with the metadata and the record of applied operations of ``img`` (when it is a MetaTensor)."""
    if isinstance(img, MetaTensor):
        return MetaTensor(out, meta=dict(img.meta), applied_operations=img.applied_operations)
    return out


def _channels_to_volume(img: Any, meta: dict) -> MetaTensor:
    """``(C, W, H)`` as one volume ``(1, W, H, C)`` with ``meta`` (its ``spatial_shape`` set to ``(W, H, C)``)."""
    volume = torch.movedim(_plain(img), 0, -1)[None]
    return MetaTensor(volume, meta={**meta, "spatial_shape": np.asarray(volume.shape[1:])})


class FramesToChanneld(MapTransform):
    """A 2D image ``(W, H)`` or a 2D+t loop ``(W, H, T)`` as frames along the channel axis: ``(T, W, H)``.

    The metadata keep the affine; ``spatial_shape`` becomes the frame's ``(W, H)`` (so that ``SaveImaged`` writes
    the frames axis last again), ``input_shape`` the input's shape and ``sequence`` whether it was a 2D+t input.

    Raises:
        EchoDataError: an image of another dimension (naming its file).
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            if img.ndim not in (2, 3):
                raise EchoDataError(
                    _name(d, key), f"expected a 2D image or a 2D+t sequence, got shape {tuple(img.shape)}"
                )
            frames = _plain(img)[None] if img.ndim == 2 else torch.movedim(_plain(img), -1, 0)
            meta = dict(getattr(img, "meta", {}) or {})
            # SaveImaged reads the channel axis from the spatial shape: the frame's (W, H); the input's kept
            meta.update(
                spatial_shape=np.asarray(img.shape[:2]), input_shape=list(img.shape), sequence=bool(img.ndim == 3)
            )
            if min(frames.shape[1:]) < 2:
                raise EchoDataError(_name(d, key), f"degenerate image of shape {tuple(img.shape)}")
            if not torch.isfinite(frames).all():
                raise EchoDataError(_name(d, key), "contains NaN or Inf")
            d[key] = MetaTensor(frames, meta=meta)
        return d


class AspectPadResized(MapTransform, InvertibleTransform):
    """Each frame of ``(T, W, H)`` zero-padded to a centred square and resized to ``(S, S)``, as in training.

    The output is ``(T, S, S)`` in the network's ``(row, column)`` order (:func:`scripts.data.to_model_frame`:
    bilinear with antialiasing when shrinking). ``inverse`` (through ``Invertd``) maps a model-frame tensor
    ``(T, S, S)`` back to ``(T, W, H)`` by bilinear resampling and cropping (:func:`scripts.data.from_model_frame`).

    Args:
        keys: the image key(s).
        spatial_size: the network's input side ``S``.
    """

    def __init__(self, keys: KeysCollection, spatial_size: int, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.spatial_size = int(spatial_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            array = np.asarray(_plain(img).detach().cpu(), dtype=np.float32)
            pairs = [to_model_frame(frame.T, self.spatial_size) for frame in array]  # (x, y) -> (row, column)
            out = torch.cat([p[0] for p in pairs]).float()  # (T, S, S)
            frame = pairs[0][1]
            meta = dict(img.meta) if isinstance(img, MetaTensor) else {}
            result = MetaTensor(out, meta=meta, applied_operations=list(getattr(img, "applied_operations", [])))
            self.push_transform(
                result,
                orig_size=tuple(int(s) for s in array.shape[1:]),
                extra_info={
                    "shape": list(frame.shape),
                    "side": frame.side,
                    "pad_top": frame.pad_top,
                    "pad_left": frame.pad_left,
                },
            )
            d[key] = result
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            info = self.pop_transform(img)["extra_info"]
            frame = Frame(
                tuple(int(s) for s in info["shape"]), int(info["side"]), int(info["pad_top"]), int(info["pad_left"])
            )
            tensor = _plain(img).float()
            lead = tensor.shape[:-2]
            flat = tensor.reshape(-1, *tensor.shape[-2:])
            back = np.stack([from_model_frame(t, frame, is_label=False).T for t in flat])  # (row, column) -> (x, y)
            out = torch.from_numpy(np.ascontiguousarray(back)).reshape(*lead, *back.shape[-2:])
            d[key] = _like(img, out)
        return d


class AntiAliasd(MapTransform):
    """Gaussian anti-aliasing of each frame of a model-frame soft map ``(T, S, S)`` (``sigma`` model pixels).

    The same filter as :func:`scripts.data.soft_to_input` (``scipy.ndimage.gaussian_filter``, ``mode="nearest"``,
    truncated at 3 sigma); the tensor keeps its metadata and its record of applied operations.
    """

    def __init__(self, keys: KeysCollection, sigma: float = ANTIALIAS_SIGMA, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.sigma = float(sigma)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.sigma <= 0:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            array = np.asarray(_plain(img).detach().float().cpu(), dtype=np.float64)
            flat = array.reshape(-1, *array.shape[-2:])
            smooth = np.stack(
                [ndimage.gaussian_filter(f, self.sigma, mode="nearest", truncate=3.0) for f in flat]
            ).astype(np.float32)
            out = torch.from_numpy(smooth.reshape(array.shape))
            d[key] = _like(img, out)
        return d


class LargestComponentd(MapTransform):
    """Keep each frame's largest 8-connected foreground component and fill its holes (the sampler's
    post-processing, :func:`scripts.sampler.postprocess_mask`); ``enabled=False`` passes the mask through."""

    def __init__(self, keys: KeysCollection, enabled: bool = True, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.enabled = bool(enabled)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if not self.enabled:
            return d
        for key in self.key_iterator(d):
            img = d[key]
            out = postprocess_mask(_plain(img).detach().cpu())
            d[key] = _like(img, out)
        return d


class MembersToVolumed(MapTransform):
    """A 2D image's member masks ``(R, W, H)`` as one volume ``(1, W, H, R)``, a slice per member, for ``SaveImaged``.

    The 2D affine is embedded in 3D (slice spacing 1, origin 0), as :func:`scripts.infer.samples_to_image` writes
    the samples file.
    """

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            meta = dict(getattr(img, "meta", {}) or {})
            given = np.asarray(torch.as_tensor(meta.get("affine", torch.eye(3))), dtype=np.float64)
            if given.shape not in ((3, 3), (4, 4)) or meta.get("sequence"):
                raise EchoDataError(_name(d, key), "member samples are written for 2D inputs only")
            affine = np.eye(4)  # a 2D affine (3 x 3, or 4 x 4 with an identity third axis, as the DICOM reader's)
            affine[:2, :2], affine[:2, 3] = given[:2, :2], given[:2, -1]
            meta["affine"] = torch.as_tensor(affine)
            d[key] = _channels_to_volume(img, meta)  # (1, W, H, R)
        return d


class FramesToSpatiald(MapTransform):
    """Undo :class:`FramesToChanneld` for saving: a 2D+t input's frames ``(T, W, H)`` as ``(1, W, H, T)`` (its
    ``spatial_shape`` the input's), so that ``SaveImaged`` writes the loop as the input's ``(W, H, T)`` volume; a 2D
    input's ``(1, W, H)`` passes as it is."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            meta = dict(getattr(img, "meta", {}) or {})
            if not meta.get("sequence"):
                continue
            d[key] = _channels_to_volume(img, meta)
        return d


class SimpleITKWriter(NibabelWriter):
    """A MONAI image writer that writes with SimpleITK, as ``inference_direct`` and the rest of the toolkit do.

    ``SaveImaged(writer=...)`` uses it like MONAI's ``NibabelWriter`` (whose data and metadata handling it inherits):
    the channel-last array and the RAS ``affine`` become a SimpleITK image with the affine's spacing, origin and
    direction (LPS, as ``ITKWriter`` writes), written by :func:`echogains.data.nnunet.write_image`. Two
    reasons: a single-frame 2D+t input (a ``(W, H, 1)`` file, ``input_shape`` of :class:`FramesToChanneld`) keeps its
    third axis (``SaveImaged`` squeezes every trailing singleton axis, so the plain writer wrote such a mask 2D and
    lost that axis's origin and spacing), and masks and member samples are the same bytes as ``inference_direct``'s.
    """

    def set_metadata(self, meta_dict: Mapping | None = None, resample: bool = True, **options: Any) -> None:
        super().set_metadata(meta_dict, resample=resample, **options)
        self.input_shape = list((meta_dict or {}).get("input_shape") or [])

    def write(self, filename: Any, verbose: bool = False, **kwargs: Any) -> None:
        import SimpleITK as sitk
        from monai.data.utils import orientation_ras_lps, to_affine_nd

        from echogains.data.nnunet import write_image

        data = np.asarray(self.data_obj)
        if self.output_dtype is not None:
            data = data.astype(self.output_dtype, copy=False)
        shape = getattr(self, "input_shape", [])
        if len(shape) == 3 and shape[2] == 1 and data.ndim == 2:
            data = data[..., None]
        rank = data.ndim
        affine = np.eye(rank + 1) if self.affine is None else np.asarray(self.affine, dtype=np.float64)
        affine = orientation_ras_lps(to_affine_nd(rank, affine))  # RAS (MONAI) -> LPS (ITK)
        spacing = np.linalg.norm(affine[:rank, :rank], axis=0)
        image = sitk.GetImageFromArray(np.ascontiguousarray(data.T))  # x-first (W, H[, T]) -> SimpleITK's (T, H, W)
        image.SetSpacing([float(v) for v in spacing])
        image.SetOrigin([float(v) for v in affine[:rank, rank]])
        image.SetDirection([float(v) for v in (affine[:rank, :rank] / spacing).ravel()])
        write_image(image, filename)  # the toolkit's writer: compressed, atomic
