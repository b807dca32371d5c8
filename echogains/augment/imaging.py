"""Intensities and resizing between a source image and the DDPM's frame: the [0, 1] unit range the DDPM was trained
on (:func:`to_unit`, :func:`from_unit`) and a field-of-view-preserving resize (:func:`resize`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["to_unit", "from_unit", "resize"]


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

    out: np.ndarray = np.ascontiguousarray(array, dtype=np.float32)
    if out.shape[0] != shape[0]:
        mode = cv2.INTER_AREA if shape[0] < out.shape[0] else cv2.INTER_LINEAR
        out = cv2.resize(out, (out.shape[1], int(shape[0])), interpolation=mode)
    if out.shape[1] != shape[1]:
        mode = cv2.INTER_AREA if shape[1] < out.shape[1] else cv2.INTER_LINEAR
        out = cv2.resize(out, (int(shape[1]), out.shape[0]), interpolation=mode)
    return out
