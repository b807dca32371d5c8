"""Masks in the input geometry are smooth: soft output resampled and thresholded on the input grid (scripts.data).

Boundary roughness = perimeter of the written mask / perimeter of the true smooth contour (an ellipse, Ramanujan's
formula), with the perimeter of a pixel mask measured by the Crofton formula (``skimage.measure.perimeter_crofton``,
unbiased for digitised smooth shapes: 1.000 for the ellipse rasterised directly on the input grid). Input 256 x 192
pixels, model frame 64 x 64: one model pixel is 4 input pixels, so a nearest-neighbour upsampling draws the contour
as a staircase of 4-pixel steps (roughness about 1.15); the tolerance for a smooth contour is 2 %.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scripts.data import from_model_frame, mask_to_input, normalize_intensity, soft_to_input, to_model_frame
from scripts.infer import EchoDNDInference
from skimage import measure
from torch import nn

SHAPE = (256, 192)  # input rows, cols: padded to 256 x 256, then 4x down to the 64 px model frame
SIZE = 64
ROUGHNESS_TOLERANCE = 0.02
#: Smoothing moves a contour of radius R inward by about sigma^2 / (2 R): 1-2 % of the area of the smallest ellipse
#: (semi-axes 7-10 model pixels) once the image's own anti-aliased downsampling adds to it.
AREA_TOLERANCE = 0.025
#: (centre row, centre col, semi-axis rows, semi-axis cols) in input pixels, off the model grid on purpose.
ELLIPSES = [(120.3, 97.7, 70.0, 45.0), (101.9, 84.2, 38.5, 29.0), (140.6, 110.1, 55.2, 33.3)]


def ellipse_perimeter(a: float, b: float) -> float:
    return math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))


def roughness(mask: np.ndarray, ellipse: tuple[float, float, float, float]) -> float:
    return measure.perimeter_crofton(mask, directions=4) / ellipse_perimeter(ellipse[2], ellipse[3])


def level(rows: np.ndarray, cols: np.ndarray, ellipse: tuple[float, float, float, float]) -> np.ndarray:
    """< 1 inside the ellipse (input pixel coordinates)."""
    cy, cx, ry, rx = ellipse
    return ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2


def truth(ellipse: tuple[float, float, float, float]) -> np.ndarray:
    rows, cols = np.mgrid[: SHAPE[0], : SHAPE[1]]
    return level(rows, cols, ellipse) <= 1.0


def model_frame_maps(ellipse: tuple[float, float, float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The ellipse seen in the model frame: a smooth soft map (1-pixel logistic edge) and its binary mask.

    Model pixel i has its centre at input coordinate (i + 0.5) * side / SIZE - 0.5 - pad (the inverse of
    ``to_model_frame``'s padding and resizing).
    """
    side = max(SHAPE)
    top, left = (side - SHAPE[0]) // 2, (side - SHAPE[1]) // 2
    centres = (np.arange(SIZE) + 0.5) * side / SIZE - 0.5
    f = level(centres[:, None] - top, centres[None, :] - left, ellipse)
    signed = (1.0 - np.sqrt(f)) * min(ellipse[2:]) * SIZE / side  # ~ distance to the contour, model pixels
    soft = torch.from_numpy((1.0 / (1.0 + np.exp(-4.0 * signed))).astype(np.float32))
    return soft, (soft > 0.5).float()


def frame():
    return to_model_frame(np.zeros(SHAPE, np.float32), SIZE)[1]


@pytest.mark.parametrize("ellipse", ELLIPSES)
def test_soft_map_resampled_on_input_grid_is_smooth(ellipse) -> None:
    soft, binary = model_frame_maps(ellipse)
    gt = truth(ellipse)
    assert abs(measure.perimeter_crofton(gt, directions=4) / ellipse_perimeter(*ellipse[2:]) - 1) < 0.005  # the ruler
    nearest = from_model_frame(binary, frame(), is_label=True) > 0.5  # the old way back: a staircase
    assert roughness(nearest, ellipse) > 1 + 4 * ROUGHNESS_TOLERANCE
    for name, source in (("soft", soft), ("binary", binary)):  # STAPLE's probability is close to binary
        mask = mask_to_input(source, frame())
        assert mask.shape == SHAPE and mask.dtype == bool
        assert abs(roughness(mask, ellipse) - 1.0) <= ROUGHNESS_TOLERANCE, name
        assert abs(mask.sum() / gt.sum() - 1.0) < AREA_TOLERANCE, name  # no marked shrinking or growing
        assert (mask ^ gt).sum() < (nearest ^ gt).sum(), name  # closer to the true shape, pixel by pixel


def test_binary_map_needs_the_antialiasing() -> None:
    """Without the Gaussian, the 0.5 contour of a bilinearly resampled binary map is the coarse grid's polygon."""
    ellipse = ELLIPSES[0]
    _, binary = model_frame_maps(ellipse)
    plain = mask_to_input(binary, frame(), sigma=0.0)
    assert roughness(plain, ellipse) > 1 + ROUGHNESS_TOLERANCE
    assert roughness(mask_to_input(binary, frame()), ellipse) < roughness(plain, ellipse)


def test_uncertainty_is_resampled_continuously() -> None:
    """A smooth map in the model frame comes back smooth and in place: no 4 x 4 blocks, values of the true map."""
    side = max(SHAPE)
    top, left = (side - SHAPE[0]) // 2, (side - SHAPE[1]) // 2
    centres = (np.arange(SIZE) + 0.5) * side / SIZE - 0.5
    ramp = lambda r, c: 0.5 + 0.4 * np.sin(r / 40.0) * np.cos(c / 50.0)  # noqa: E731  (input coordinates)
    model_map = torch.from_numpy(ramp(centres[:, None] - top, centres[None, :] - left).astype(np.float32))
    back = soft_to_input(model_map, frame(), sigma=0.0)
    rows, cols = np.mgrid[: SHAPE[0], : SHAPE[1]]
    inner = (slice(4, -4), slice(4, -4))  # bilinear extrapolation holds the edge values in the outer half pixel
    assert np.abs(back - ramp(rows, cols))[inner].max() < 2e-3
    blocky = from_model_frame(model_map, frame(), is_label=True)
    assert np.mean(np.diff(back, axis=1) == 0) < 0.05 < np.mean(np.diff(blocky, axis=1) == 0)


class _Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(image_size=SIZE)
        self.weight = nn.Parameter(torch.zeros(1))


class _SoftSampler:
    """Oracle: the soft mask is the model-frame image (a bright smooth ellipse); the mask is its 0.5 threshold."""

    num_steps, ensemble, threshold, postprocess = 1, 1, 0.5, True

    def __init__(self, with_prob: bool) -> None:
        self.with_prob = with_prob

    def __call__(self, model: nn.Module, image: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        out = {"mask": (image > 0.5).float(), "uncertainty": torch.zeros_like(image)}
        if self.with_prob:
            out["prob"] = image.clone()
        return out


@pytest.mark.parametrize("with_prob", [True, False])
def test_bundle_writes_smooth_masks_at_4x_the_network_size(tmp_path: Path, with_prob: bool) -> None:
    ellipse = ELLIPSES[1]
    gt = truth(ellipse)
    image = np.where(gt, 220.0, 30.0).astype(np.float32)
    written = sitk.GetImageFromArray(image)
    written.SetSpacing((0.3, 0.3))
    sitk.WriteImage(written, str(tmp_path / "frame.nii.gz"))
    EchoDNDInference(
        _Model(), _SoftSampler(with_prob), tmp_path / "frame.nii.gz", tmp_path / "out", progress=False
    ).run()
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "frame.nii.gz"))) > 0
    assert abs(roughness(mask, ellipse) - 1.0) <= ROUGHNESS_TOLERANCE
    assert abs(mask.sum() / gt.sum() - 1.0) < AREA_TOLERANCE
    model_image = to_model_frame(normalize_intensity(image), SIZE)[0]
    nearest = from_model_frame((model_image > 0.5).float(), frame(), is_label=True) > 0.5  # the old way back
    assert roughness(nearest, ellipse) > 1 + 4 * ROUGHNESS_TOLERANCE
    assert (mask ^ gt).sum() < (nearest ^ gt).sum()
