"""Echo-DND data: nnU-Net raw datasets to model-frame tensors, the paper's augmentations, and the way back.

The paper feeds 256 x 256 images "padded to keep the aspect ratio": an image of H x W pixels is zero-padded
(centred) to a square of side max(H, W), then resized to ``image_size``. :func:`to_model_frame` does that and
returns the :class:`Frame` needed by :func:`from_model_frame` to put a prediction back on the input's pixel grid,
so that predictions are saved in the input's geometry and spacing. Intensities are scaled to [0, 1] per image.

Masks go back by :func:`mask_to_input`: the network's soft output (e.g. the STAPLE probability) is resampled
bilinearly onto the input grid and thresholded there, so that contours are smooth at the input's resolution
instead of the staircase of a nearest-neighbour upsampling (steps of ``side / image_size`` input pixels). STAPLE's
probability is close to binary, and the 0.5 contour of a bilinearly resampled binary map is the marching-squares
polygon of the coarse grid; a Gaussian of :data:`ANTIALIAS_SIGMA` model pixels before resampling reconstructs a
smooth contour (``tests/bundle/test_bundle_smooth_masks.py`` measures the boundary roughness of both).

Augmentations (paper Sect. 4.1): horizontal flips, minor rotations, slight scaling, brightness/contrast and low
Gaussian noise, applied on the batch with one ``torch.Generator`` (reproducible, no global RNG).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .common import EchoDataError

__all__ = [
    "ANTIALIAS_SIGMA",
    "Frame",
    "normalize_intensity",
    "to_model_frame",
    "from_model_frame",
    "soft_to_input",
    "mask_to_input",
    "augment_batch",
    "load_lv_cases",
]

#: Gaussian anti-aliasing (standard deviation in model pixels) of a soft mask before it is resampled to the input.
#: 0.75 keeps the area of smooth shapes within 1 % and their perimeter within 2 % (test_bundle_smooth_masks.py).
ANTIALIAS_SIGMA = 0.75


@dataclass(frozen=True)
class Frame:
    """How an image was put into the square model frame: its shape and the padding (top, left) to the square."""

    shape: tuple[int, int]
    side: int
    pad_top: int
    pad_left: int


def normalize_intensity(image: np.ndarray) -> np.ndarray:
    """Min-max scale to [0, 1] (float32); a constant image becomes zeros."""
    image = np.asarray(image, dtype=np.float32)
    lo, hi = float(image.min()), float(image.max())
    return (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)


def to_model_frame(array: np.ndarray, size: int, is_label: bool = False) -> tuple[torch.Tensor, Frame]:
    """Zero-pad a 2D array to a centred square, resize to ``size`` (bilinear + antialias; nearest for labels).

    Returns:
        ``(tensor (1, size, size) float32, frame)``.
    """
    arr = np.asarray(array)
    if arr.ndim != 2:
        raise EchoDataError(None, f"expected a 2D frame, got shape {arr.shape}")
    h, w = arr.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    square = np.zeros((side, side), dtype=np.float32)
    square[top : top + h, left : left + w] = arr
    t = torch.from_numpy(square)[None, None]
    if side != size:
        if is_label:
            t = F.interpolate(t, size=(size, size), mode="nearest")
        else:
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=side > size)
    return t[0], Frame((h, w), side, top, left)


def from_model_frame(tensor: torch.Tensor, frame: Frame, is_label: bool = True) -> np.ndarray:
    """Inverse of :func:`to_model_frame`: resize to the padded square, crop to the input's (H, W)."""
    t = tensor.detach().float().cpu().reshape(1, 1, *tensor.shape[-2:])
    if t.shape[-1] != frame.side:
        mode = "nearest" if is_label else "bilinear"
        kwargs = {} if is_label else {"align_corners": False}
        t = F.interpolate(t, size=(frame.side, frame.side), mode=mode, **kwargs)
    h, w = frame.shape
    return t[0, 0, frame.pad_top : frame.pad_top + h, frame.pad_left : frame.pad_left + w].numpy()


def soft_to_input(soft: torch.Tensor | np.ndarray, frame: Frame, sigma: float = ANTIALIAS_SIGMA) -> np.ndarray:
    """A soft map (probability in [0, 1]) of the model frame on the input's pixel grid, float32 ``(H, W)``.

    Gaussian anti-aliasing of ``sigma`` model pixels (0: none), then :func:`from_model_frame` (bilinear, the exact
    inverse of the padding and resizing of :func:`to_model_frame`).

    Args:
        soft: ``(S, S)`` (or ``(1, S, S)``) map in the model frame.
        frame: the frame returned by :func:`to_model_frame` for this image.
        sigma: anti-aliasing in model pixels.
    """
    arr = (soft.detach().float().cpu().numpy() if torch.is_tensor(soft) else np.asarray(soft, np.float32)).squeeze()
    if sigma > 0:
        arr = ndimage.gaussian_filter(arr.astype(np.float64), sigma, mode="nearest", truncate=3.0)
    return from_model_frame(torch.from_numpy(arr.astype(np.float32)), frame, is_label=False)


def mask_to_input(
    soft: torch.Tensor | np.ndarray, frame: Frame, threshold: float = 0.5, sigma: float = ANTIALIAS_SIGMA
) -> np.ndarray:
    """Binary mask on the input's pixel grid: :func:`soft_to_input` thresholded at ``threshold`` (bool ``(H, W)``)."""
    return soft_to_input(soft, frame, sigma) > threshold


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=generator)


def augment_batch(
    image: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator,
    flip_prob: float = 0.5,
    max_rotation_deg: float = 10.0,
    scale_range: tuple[float, float] = (0.9, 1.1),
    brightness: float = 0.1,
    contrast: tuple[float, float] = (0.9, 1.1),
    noise_std: float = 0.02,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flip, rotation, scaling (one affine warp; mask nearest), brightness/contrast and Gaussian noise.

    Args:
        image: ``(B, 1, H, W)`` in [0, 1]; mask: ``(B, 1, H, W)`` binary; generator: a CPU generator.
    """
    b = image.shape[0]
    flip = torch.where(torch.rand(b, generator=generator) < flip_prob, -1.0, 1.0)
    angle = _uniform(b, -max_rotation_deg, max_rotation_deg, generator) * math.pi / 180
    scale = _uniform(b, *scale_range, generator)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = cos * flip, -sin
    theta[:, 1, 0], theta[:, 1, 1] = sin * flip, cos
    theta = theta.to(image)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    image = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    mask = F.grid_sample(mask, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    gain = _uniform(b, *contrast, generator).to(image).view(b, 1, 1, 1)
    shift = _uniform(b, -brightness, brightness, generator).to(image).view(b, 1, 1, 1)
    noise = torch.randn(image.shape, generator=generator).to(image) * noise_std
    image = ((image - 0.5) * gain + 0.5 + shift + noise).clamp(0.0, 1.0)
    return image, mask


def load_lv_cases(
    dataset_dir: str, case_ids: list[str] | None, size: int, subset: str = "Tr", label: str = "LV"
) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """Load cases of an nnU-Net raw dataset into model-frame tensors ``(N, 1, S, S)`` (image, binary ``label`` mask).

    Args:
        dataset_dir: the nnU-Net raw dataset.
        case_ids: which cases; ``None`` takes all of ``subset``.
        size: the model's image size.
        subset: ``Tr``, ``Ts`` or ``all`` when ``case_ids`` is ``None``.
        label: the ``dataset.json`` label name segmented (Echo-DND segments the LV).
    """
    from echogains.data.nnunet import RawDataset

    ds = RawDataset(dataset_dir)
    value = ds.label_value(label)
    ids = ds.case_ids(subset) if case_ids is None else list(case_ids)
    if not ids:
        raise EchoDataError(dataset_dir, f"no cases in subset {subset!r}")
    images, masks = [], []
    for case in ids:
        image, lab, _ = ds.load(case)
        if lab is None:
            raise EchoDataError(ds.label_path(case), "label file missing")
        images.append(to_model_frame(normalize_intensity(image), size)[0])
        masks.append(to_model_frame((lab == value).astype(np.float32), size, is_label=True)[0])
    return ids, torch.stack(images), torch.stack(masks)
