"""The plan of an expansion and the files that coordinate its shards (``out/.records/``).

The plan (:func:`make_plan`) fixes which cases are augmented, in which work groups, which are copied, and the output
folds; it is written once per expansion, before any case file, with exclusive creation (:func:`create_exclusive`:
a temporary file hard-linked into place, so it can never be seen torn and a second creator fails like ``O_EXCL``).
A shard that starts compares its settings with the plan (:func:`check_out`, :func:`same_plan`) under
``.records/_lock``, held with ``fcntl.flock`` (:func:`locked`: the kernel drops it when the holder dies, so it never
goes stale). Every finished case leaves a record ``.records/{case}.json``; :func:`missing_ids` lists those still to
do. The protocol as a whole is described in :mod:`echogains.augment.expand`.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from echogains.augment.settings import ExpansionSettings
from echogains.data.nnunet import RawDataset, patient_grouped_splits
from echogains.utils import EchoDataError, atomic_write_text, check_output_dir, get_logger, read_json, to_jsonable

try:
    import fcntl
except ImportError:  # not a POSIX system
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "RECORDS_DIR",
    "PLAN_FILE",
    "LOCK_FILE",
    "make_plan",
    "expected_ids",
    "missing_ids",
    "check_out",
    "same_plan",
    "locked",
    "create_exclusive",
]

log = get_logger(__name__)

#: Sidecar folder of per-case records (resume, merge) inside the output dataset.
RECORDS_DIR = ".records"
PLAN_FILE = "_plan.json"  # case ids start with a letter or digit: no clash with a record
LOCK_FILE = "_lock"  # flock'ed while a shard starts (checks/creates the plan) or merges


def _source_splits(src: RawDataset) -> list[dict[str, list[str]]]:
    if src.splits is not None:
        return [{"train": list(s["train"]), "val": list(s["val"])} for s in src.splits]
    tr = src.case_ids("Tr")
    log.warning("%s: no splits_final.json; using 5 patient-grouped folds (seed 0)", src.root)
    return patient_grouped_splits({c: str(src.record(c).get("patient", c.split("_")[0])) for c in tr}, 5, 0)


def make_plan(src: RawDataset, fold: int, k: int, batch_size: int, augment_validation: bool = False) -> dict[str, Any]:
    """Augmented cases and their work groups, un-augmented copies, test cases and the output folds.

    ``augment_validation`` (the paper's setting, Sec. 2.6): the validation cases of ``fold`` are augmented too and
    their copies join the validation half of every fold that validates their source case.
    """
    splits = _source_splits(src)
    if not 0 <= fold < len(splits):
        raise EchoDataError(src.root / "splits_final.json", f"--fold {fold} not in 0..{len(splits) - 1}")
    tr, ts = src.case_ids("Tr"), src.case_ids("Ts")
    for i, s in enumerate(splits):
        unknown = sorted((set(s["train"]) | set(s["val"])) - set(tr))
        if unknown:
            raise EchoDataError(src.root / "splits_final.json", f"fold {i} names cases not in imagesTr: {unknown[:5]}")
    train = sorted(splits[fold]["train"])
    if not train:
        raise EchoDataError(src.root / "splits_final.json", f"fold {fold} has no training cases to augment")
    chosen = sorted(set(train) | set(splits[fold]["val"])) if augment_validation else train
    per_group = max(1, batch_size // k)
    groups = [chosen[i : i + per_group] for i in range(0, len(chosen), per_group)]
    augmented = set(chosen)
    out_splits = []
    for s in splits:
        extra = [f"{c}_aug{j}" for c in s["train"] if c in augmented for j in range(1, k + 1)]
        val_extra = (
            [f"{c}_aug{j}" for c in s["val"] if c in augmented for j in range(1, k + 1)] if augment_validation else []
        )
        out_splits.append({"train": sorted(s["train"]) + sorted(extra), "val": sorted(s["val"]) + sorted(val_extra)})
    copies = [c for c in tr if c not in augmented] + ts
    return {"groups": groups, "copies": copies, "test": ts, "splits": out_splits}


def expected_ids(plan: Mapping[str, Any], k: int) -> Iterator[str]:
    """Every output case of ``plan`` in work order: each group's originals with their k augmentations, then copies."""
    for group in plan["groups"]:
        for c in group:
            yield c
            yield from (f"{c}_aug{j}" for j in range(1, k + 1))
    yield from plan["copies"]


def missing_ids(out: Path, plan: Mapping[str, Any], k: int) -> list[str]:
    """The output cases of ``plan`` without a record in ``out`` yet (not finished by any shard)."""
    records = out / RECORDS_DIR
    return [c for c in expected_ids(plan, k) if not (records / f"{c}.json").is_file()]


def check_out(
    out: Path, src: RawDataset, overwrite: bool, settings: ExpansionSettings, plan: Mapping[str, Any]
) -> None:
    """Refuse to mix with foreign content or with an expansion made with other arguments.

    The generic part is the shared :func:`echogains.utils.check_output_dir` (a folder path, not a file; no complete
    dataset without ``overwrite``); an expansion may resume into a non-empty folder, but only into its own earlier
    output: one whose plan has the same settings, or one that holds nothing but ``.records/``.
    """
    src_root, out_root = src.root.resolve(), out.resolve()
    if out_root == src_root or src_root in out_root.parents or out_root in src_root.parents:
        raise EchoDataError(out, f"output must lie outside the source dataset {src.root} (and not contain it)")
    check_output_dir(out, overwrite, allow_nonempty=not (out / "dataset.json").is_file())
    if overwrite or not out.exists():
        return
    plan_file = out / RECORDS_DIR / PLAN_FILE
    if not plan_file.is_file():
        if any(p.name != RECORDS_DIR for p in out.iterdir()):
            raise EchoDataError(
                out,
                "folder exists, is not empty and is not an interrupted expansion; "
                "choose a new folder or pass --overwrite",
            )
        # empty, or only .records/ without a plan: a shard is starting (it holds the lock) or died before its plan
        return
    same_plan(plan_file, settings, plan)


def same_plan(plan_file: Path, settings: ExpansionSettings, plan: Mapping[str, Any]) -> None:
    """Refuse to resume an expansion whose plan was made with other arguments."""
    previous = read_json(plan_file)
    mine = json.loads(json.dumps(to_jsonable({"settings": settings.to_dict(), "plan": plan})))
    theirs = {"settings": previous.get("settings"), "plan": previous.get("plan")}
    if theirs != mine:
        before = theirs["settings"] or {}
        changed = sorted(key for key in mine["settings"] if mine["settings"].get(key) != before.get(key))
        raise EchoDataError(
            plan_file,
            "an interrupted expansion with other arguments is here "
            f"(differs in {changed or ['source cases']}); "
            "use the same arguments or --overwrite",
        )


@contextlib.contextmanager
def locked(out: Path, what: str) -> Iterator[None]:
    """Hold ``out/.records/_lock`` (``fcntl.flock``, exclusive; waits for a live holder; the kernel frees it when the
    holder dies). Without file locks (no ``fcntl``, or the file system refuses) it goes on unlocked with a warning."""
    path = out / RECORDS_DIR / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        if fcntl is None:
            log.warning("%s: no file locks on this system; do not start or finish two shards at the same instant", path)
        else:
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another shard"
                    log.info("%s: waiting for %s", path, holder)
                    fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as err:  # e.g. ENOLCK / EOPNOTSUPP on a file system without locks
                log.warning("%s: cannot lock (%s); going on without the lock", path, err)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} ({what})\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def create_exclusive(path: Path, payload: Mapping[str, Any]) -> bool:
    """Create ``path`` with ``payload`` only if it does not exist (True if this call created it).

    The JSON goes to a temporary file first, which is then hard-linked to ``path``: like ``O_EXCL`` the link fails
    when ``path`` exists, and unlike an ``O_EXCL`` open no reader can ever see the file half written.
    """
    text = json.dumps(to_jsonable(payload), indent=2) + "\n"
    staged = path.with_name(f".{path.stem}.{os.getpid()}.staged{path.suffix}")
    atomic_write_text(staged, text)
    try:
        try:
            os.link(staged, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links on this file system (FAT, some FUSE mounts): a plain O_EXCL creation
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
        return True
    finally:
        staged.unlink(missing_ok=True)
