"""Checks shared by the evaluator's image inputs (predictions, uncertainty maps, sample masks): shape and geometry.

Every check compares a file with its label file (the dataset's ``labelsTs``/``labelsTr``) and names the first
difference in words, so that the caller can raise one :class:`~echogains.utils.EchoDataError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from echogains.utils import EchoDataError

__all__ = ["as_2d", "geometry_problem", "in_plane_problem"]


def as_2d(image: sitk.Image, path: Path) -> sitk.Image:
    """A one-channel 2D image (a 3D image of one slice is reduced to its slice).

    Raises:
        EchoDataError: more than one component, or not 2D.
    """
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise EchoDataError(
            path, f"expected a one-channel label image, got {image.GetNumberOfComponentsPerPixel()} components"
        )
    if image.GetDimension() == 3 and image.GetSize()[2] == 1:
        return image[:, :, 0]
    if image.GetDimension() != 2:
        raise EchoDataError(path, f"expected a 2D image, got size {image.GetSize()}")
    return image


def _problem(
    size: tuple, spacing: tuple, origin: tuple, direction: tuple, ref: sitk.Image, what: str = ""
) -> str | None:
    if tuple(size) != tuple(ref.GetSize()):
        return f"{what}size {tuple(size)} != label size {ref.GetSize()}"
    if not np.allclose(spacing, ref.GetSpacing(), rtol=1e-4, atol=1e-7):
        return f"{what}spacing {tuple(spacing)} != label spacing {ref.GetSpacing()}"
    if not np.allclose(origin, ref.GetOrigin(), rtol=0, atol=1e-3 * min(ref.GetSpacing())):
        return f"{what}origin {tuple(origin)} != label origin {ref.GetOrigin()}"
    if not np.allclose(direction, ref.GetDirection(), atol=1e-4):
        return f"{what}direction {direction} != label direction {ref.GetDirection()}"
    return None


def geometry_problem(pred: sitk.Image, ref: sitk.Image) -> str | None:
    """Describe the first geometry mismatch between a 2D image and its 2D label image (None when equal)."""
    return _problem(pred.GetSize(), pred.GetSpacing(), pred.GetOrigin(), pred.GetDirection(), ref)


def in_plane_problem(stack: sitk.Image, ref: sitk.Image) -> str | None:
    """Describe the first mismatch between the in-plane geometry of a 3D stack of slices and a 2D label image.

    In-plane: the first two entries of size, spacing and origin and the top-left 2 x 2 block of the direction (the
    slice axis, e.g. the members of a samples file, is not compared). None when they agree.
    """
    if stack.GetDimension() != 3:
        return f"expected a 3D stack (W, H, members), got a {stack.GetDimension()}D image"
    d = stack.GetDirection()
    direction = (d[0], d[1], d[3], d[4])
    size, spacing, origin = stack.GetSize()[:2], stack.GetSpacing()[:2], stack.GetOrigin()[:2]
    return _problem(size, spacing, origin, direction, ref, what="in-plane ")
