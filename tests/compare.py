"""Comparing generated files with committed ones on another CPU.

What is exact stays exact: integer images (label masks), strings, integers, the set of files and the JSON structure.
Floats (NIfTI intensities and geometry, numbers in JSON and CSV) are compared with a relative tolerance, because the
last digits of a float depend on the CPU's summation order and SIMD kernels (measured: the same seeded phantom gave
``edv_ml`` 124.30271422165558
and 124.30271422165553 on two CPUs).
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

#: Relative tolerance for floats read back from text: written with 10 significant digits, two CPUs differ by at
#: most one unit of the 10th digit (1e-9 relative).
REL_TOL = 1e-8
#: Absolute tolerance for float image intensities, relative to the image's range.
IMAGE_TOL = 1e-5


def assert_close_values(a: Any, b: Any, where: str = "") -> None:
    """Structure, strings, ints and bools equal; floats equal within :data:`REL_TOL`."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for key in a:
            assert_close_values(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close_values(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool), where
        assert math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12), f"{where}: {a!r} != {b!r}"
    else:
        assert a == b and type(a) is type(b), f"{where}: {a!r} != {b!r}"


def _csv_cell(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _read_csv(path: Path) -> list[list[Any]]:
    return [[_csv_cell(c) for c in row] for row in csv.reader(io.StringIO(path.read_text()))]


def assert_same_image(a: Path, b: Path) -> None:
    ia, ib = sitk.ReadImage(str(a)), sitk.ReadImage(str(b))
    assert ia.GetSize() == ib.GetSize(), f"{a.name}: size"
    assert ia.GetPixelID() == ib.GetPixelID(), f"{a.name}: pixel type"
    for name in ("GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(ia, name)(), getattr(ib, name)(), rtol=REL_TOL, atol=1e-9, err_msg=a.name)
    xa, xb = sitk.GetArrayFromImage(ia), sitk.GetArrayFromImage(ib)
    if np.issubdtype(xa.dtype, np.integer):
        np.testing.assert_array_equal(xa, xb, err_msg=f"{a.name}: integer image differs")
    else:
        scale = max(1e-12, float(np.ptp(xa)))
        np.testing.assert_allclose(xa, xb, rtol=0, atol=IMAGE_TOL * scale, err_msg=a.name)


def assert_same_file(a: Path, b: Path) -> None:
    """``a`` and ``b`` hold the same content, up to float tolerance (see the module docstring)."""
    name = a.name
    if name.endswith(".json"):
        assert_close_values(json.loads(a.read_text()), json.loads(b.read_text()), name)
    elif name.endswith(".csv"):
        assert_close_values(_read_csv(a), _read_csv(b), name)
    elif name.endswith((".nii.gz", ".nii", ".mhd", ".nrrd")):
        assert_same_image(a, b)
    else:
        assert a.read_bytes() == b.read_bytes(), name


def assert_same_tree(a: Path, b: Path) -> None:
    """The same relative file names under ``a`` and ``b``.

    Each pair with the same content (:func:`assert_same_file`).
    """
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert_same_file(a / rel, b / rel)
