"""Shared helpers: errors that name the file, atomic writes, logging and progress bars."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "EchoDataError",
    "atomic_path",
    "atomic_write_text",
    "atomic_write_json",
    "read_json",
    "get_logger",
    "progress",
    "progress_enabled",
    "set_progress",
    "to_jsonable",
    "round_float",
    "FLOAT_DIGITS",
    "check_int",
    "check_output_dir",
    "resolve_device",
    "atomic_torch_save",
]

#: Significant digits of every float written as text (JSON metadata, CSV metrics). The last digits of a float
#: depend on the CPU's summation order (the same seeded phantom gave ``edv_ml`` 124.30271422165558 on one CPU and
#: 124.30271422165553 on another); rounded to 10 significant digits, both are written as 124.3027142.
FLOAT_DIGITS = 10


class EchoDataError(ValueError):
    """Bad input: the message names the file (or argument) and the problem."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` as the integer option ``--name`` in ``low..high`` (booleans refused), else :class:`EchoDataError`."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not ok or int(value) < low or (high is not None and int(value) > high):
        wanted = f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
        raise EchoDataError(None, f"--{name}: expected {wanted}, got {value!r}")
    return int(value)


def check_output_dir(
    out: Any,
    overwrite: bool = False,
    *,
    source: str | os.PathLike | None = None,
    allow_nonempty: bool = False,
    what: str = "out",
) -> Path:
    """The one output-folder check, made before anything is read or written; :class:`EchoDataError` otherwise.

    Refuses a path that is not a folder, a non-empty folder without ``overwrite`` (unless ``allow_nonempty``, for
    commands that resume or merge into their own earlier output), a folder that already holds a complete nnU-Net
    dataset (its ``dataset.json``) without ``overwrite``, and, when ``source`` is given, the input folder itself or
    (with ``overwrite``) a folder inside it.
    """
    if not isinstance(out, (str, os.PathLike)) or not str(out):
        raise EchoDataError(None, f"{what}: expected a folder path, got {out!r}")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise EchoDataError(path, "output path exists and is not a folder")
    if source is not None:
        src, dst = Path(source).resolve(), path.resolve()
        if dst == src or (overwrite and src.is_dir() and src in dst.parents):
            raise EchoDataError(path, "the output folder must not be the input folder")
    if overwrite or allow_nonempty or not path.is_dir():
        return path
    if (path / "dataset.json").exists():
        raise EchoDataError(path, "a complete dataset already exists here; pass overwrite=True (--overwrite)")
    if any(path.iterdir()):
        raise EchoDataError(path, "folder exists and is not empty; choose a new folder or pass --overwrite")
    return path


def resolve_device(device: Any = None, local_rank: int | None = None) -> str:
    """The torch device to run on: ``device``, or ``cuda`` when available (``auto``/``None``), else ``cpu``.

    Under ``torchrun`` (``local_rank`` or ``LOCAL_RANK``) a bare ``cuda`` becomes ``cuda:<local rank>``. Raises
    :class:`EchoDataError` for an unknown device string or ``cuda`` on a machine without CUDA.
    """
    import torch

    if local_rank is None and os.environ.get("LOCAL_RANK", "").isdigit():
        local_rank = int(os.environ["LOCAL_RANK"])
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(str(device))
    except RuntimeError as err:
        raise EchoDataError(None, f"--device: unknown device {device!r}; use cpu, cuda or cuda:N") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EchoDataError(None, f"--device {device}: CUDA is not available on this machine")
    if dev.type == "cuda" and dev.index is None and local_rank is not None:
        dev = torch.device("cuda", local_rank)
    return str(dev)


def get_logger(name: str = "echogains") -> logging.Logger:
    """Return a package logger; configures a stderr handler once if the root has none."""
    logger = logging.getLogger(name)
    root = logging.getLogger("echogains")
    if not root.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(os.environ.get("ECHOGAINS_LOGLEVEL", "INFO"))
    return logger


_PROGRESS = os.environ.get("ECHOGAINS_NO_PROGRESS", "") in ("", "0")


def set_progress(enabled: bool) -> None:
    """Switch tqdm progress bars on or off for the whole package."""
    global _PROGRESS
    _PROGRESS = bool(enabled)


def progress_enabled() -> bool:
    return _PROGRESS


def progress(iterable: Iterable, total: int | None = None, desc: str | None = None, **kwargs: Any) -> Iterable:
    """Wrap ``iterable`` in a tqdm bar unless progress bars are switched off."""
    if not _PROGRESS:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, dynamic_ncols=True, **kwargs)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; move it onto ``path`` only on success.

    The temporary name keeps the full suffix (e.g. ``.nii.gz``) so writers that pick a format from the
    extension (SimpleITK, matplotlib) still work. On error the temporary file is removed and ``path`` is
    left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) if path.suffixes else ""
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions open() would
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through :func:`atomic_path`: the checkpoint at ``path`` is the old one or the whole new one."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def round_float(value: float | np.floating, digits: int = FLOAT_DIGITS) -> float | None:
    """``value`` rounded to ``digits`` significant digits; ``None`` for NaN and infinities (JSON has neither)."""
    value = float(value)
    if not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths and tuples so ``json.dumps`` accepts them.

    Floats are rounded to :data:`FLOAT_DIGITS` significant digits (see there why), NaN/Inf become ``null``.
    """
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        return round_float(obj)
    if isinstance(obj, os.PathLike):
        return str(obj)
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int = 2) -> None:
    atomic_write_text(path, json.dumps(to_jsonable(obj), indent=indent, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON, raising :class:`EchoDataError` naming the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise EchoDataError(path, "file not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EchoDataError(path, f"not valid JSON ({err})") from err
