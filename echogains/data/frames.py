"""The one conversion of colour frames to grey, shared by every frame reader.

Echo recordings are grey, but files often store them as colour: PNG/NIfTI exports as RGB(A) with equal channels,
EchoNet-Dynamic AVIs as decoded BGR video, ultrasound DICOM as RGB (``SamplesPerPixel`` 3). Two weightings are used,
by what the colour is:

- ``mean``: the mean of the three colour channels (alpha dropped). For RGB-encoded grey (the channels are equal)
  it is the grey value itself. Used for image files (the DDPM's training frames, the Echo-DND bundle's inputs).
- ``luma``: ITU-R BT.601 luma, ``Y = 0.299 R + 0.587 G + 0.114 B``, the weighting of video and DICOM colour
  (YBR) encodings. For 8-bit input it is computed as OpenCV's ``cvtColor(..., COLOR_BGR2GRAY)`` does, in 15-bit
  fixed point (``(9798 R + 19235 G + 3735 B + 2**14) >> 15``: equal to OpenCV on all 2**24 colours) and returned
  as ``uint8``; other input in float64, returned as float32.

The caller decides whether a frame is colour (it knows its file's metadata: components per pixel, samples per
pixel, the decoder's output) and passes only colour arrays, channels last.
"""

from __future__ import annotations

import numpy as np

from echogains.utils import EchoDataError

__all__ = ["GREY_WEIGHTS", "LUMA_RGB", "to_grey"]

#: The weightings :func:`to_grey` knows.
GREY_WEIGHTS = ("mean", "luma")
#: BT.601 luma weights of R, G and B.
LUMA_RGB = np.array([0.299, 0.587, 0.114], dtype=np.float64)
#: The same weights in OpenCV's 15-bit fixed point (they sum to 2**15, so equal channels give their value exactly).
_LUMA_RGB_FIXED = (9798, 19235, 3735)
_FIXED_SHIFT = 15


def to_grey(array: np.ndarray, weights: str = "mean", order: str = "RGB", source: str | None = None) -> np.ndarray:
    """Grey frames of a colour array ``(..., C)`` with C in 3..4 (RGB or RGBA, or BGR(A) with ``order="BGR"``).

    ``mean`` also takes C = 2 (grey + alpha) and averages both, as the DDPM's image reader always has.

    Args:
        array: colour pixels, channels last.
        weights: ``mean`` (float32 mean of the colour channels) or ``luma`` (BT.601; ``uint8`` for 8-bit input,
            as OpenCV computes it, else float32).
        order: channel order of ``array``, ``RGB`` or ``BGR``.
        source: file named by the error.

    Raises:
        EchoDataError: not a colour array, or an unknown weighting or order.
    """
    arr = np.asarray(array)
    if weights not in GREY_WEIGHTS or order not in ("RGB", "BGR"):
        raise EchoDataError(source, f"unknown grey conversion {weights!r}/{order!r}; use {GREY_WEIGHTS} and RGB/BGR")
    if arr.ndim < 3 or not (2 if weights == "mean" else 3) <= arr.shape[-1] <= 4:
        raise EchoDataError(source, f"expected colour pixels (..., 3 or 4 channels), got shape {arr.shape}")
    colour = arr[..., :3] if order == "RGB" else arr[..., 2::-1]
    if weights == "mean":
        return colour.astype(np.float32).mean(axis=-1)
    if arr.dtype == np.uint8:
        r, g, b = (colour[..., k].astype(np.int32) * w for k, w in enumerate(_LUMA_RGB_FIXED))
        return ((r + g + b + (1 << (_FIXED_SHIFT - 1))) >> _FIXED_SHIFT).astype(np.uint8)
    return (colour.astype(np.float64) @ LUMA_RGB).astype(np.float32)
