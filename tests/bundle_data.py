"""Inputs the bundle tests share: the bundle's sample phantom frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "echo_dnd"
SAMPLE = BUNDLE / "sample_data" / "imagesTs" / "patient0002_4CH_ED_0000.nii.gz"


def echo_frame() -> np.ndarray:
    """The sample phantom frame as uint8 (H, W): something the demo weights segment."""
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE))).astype(np.float32)
    return np.round(255 * (array - array.min()) / (array.max() - array.min())).astype(np.uint8)
