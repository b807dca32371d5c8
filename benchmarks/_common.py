"""What the benchmark scripts share: the ``sys.path`` set-up, ``/proc`` memory readings and the command-line tail.

Importing this module sets up ``sys.path`` once for every script: run as ``python benchmarks/NAME.py``, the script's
folder is ``sys.path[0]``, where ``benchmarks/echogains.py`` would shadow the ``echogains`` package, so that folder
is taken off and the repository root put on. :func:`add_bundle` puts the Echo-DND bundle's root on too (its
``scripts`` package). A script imports it as ``from benchmarks import _common`` (imported by path, e.g. by the tests,
the repository root is on ``sys.path``) or, run as a script, ``import _common``.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
BUNDLE_ROOT = REPO_ROOT / "bundles" / "echo_dnd"


def _add(path: Path) -> None:
    if str(path) not in sys.path:
        sys.path.append(str(path))


sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
_add(REPO_ROOT)

from collections.abc import Callable, Mapping  # noqa: E402
from typing import Any  # noqa: E402

from echogains.utils import EchoDataError, atomic_write_json, atomic_write_text  # noqa: E402

__all__ = ["HERE", "REPO_ROOT", "BUNDLE_ROOT", "add_bundle", "proc_status_bytes", "run_main", "write_outputs"]


def add_bundle() -> None:
    """Put the Echo-DND bundle's root on ``sys.path`` (after the repository root) for its ``scripts`` package."""
    _add(BUNDLE_ROOT)


def proc_status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmHWM``, ``VmRSS``) in bytes; ``None`` where it cannot be read."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def run_main(run: Callable[[], Mapping[str, Any]], summary: Callable[[Any], str], out: str) -> int:
    """The scripts' command-line tail: ``run()``; an :class:`EchoDataError` printed as ``error: ...`` (exit 2);
    else the ``summary`` of the result and ``wrote OUT`` (exit 0)."""
    try:
        result = run()
    except EchoDataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary(result))
    print(f"wrote {out}")
    return 0


def write_outputs(
    result: dict[str, Any],
    script: str,
    argv: list[str] | None,
    out: str,
    md: str | None,
    markdown: Callable[[dict[str, Any]], str],
) -> None:
    """Record the command line in ``result``, write it to ``out`` (JSON) and, given ``md``, its ``markdown``."""
    result["command"] = f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:])
    atomic_write_json(out, result)
    if md:
        atomic_write_text(md, markdown(result))
