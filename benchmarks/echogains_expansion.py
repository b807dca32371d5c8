"""EchoGAINS benchmark, parts (3) and (4): ``expand_dataset`` throughput and peak memory in fresh processes.

Part of ``benchmarks/echogains.py`` (which re-exports the public names and is the worker processes' entry point:
``python benchmarks/echogains.py --worker SPEC``). ``profile`` arguments are that script's ``Profile``.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:  # imported by path (the tests): the repository root is on sys.path
    from benchmarks import _common
except ImportError:  # run as a script (this folder is sys.path[0]) or loaded by path from another folder
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common  # takes this folder off sys.path again

import torch

from echogains.data.nnunet import RawDataset, RawDatasetWriter, copy_dataset_files
from echogains.data.phantom import make_phantom
from echogains.utils import EchoDataError, atomic_write_json, get_logger

__all__ = ["SCRIPT", "make_source", "expansion_throughput", "expansion_memory", "worker"]

log = get_logger("echogains.benchmarks")

#: The script whose ``--worker`` option runs one expansion shard.
SCRIPT = _common.HERE / "echogains.py"
_MIB = 1024.0 * 1024.0

# ----------------------------------------------------------------------------------------------------------------
# (3) and (4): expand_dataset in subprocesses
# ----------------------------------------------------------------------------------------------------------------


def make_source(root: Path, n_cases: int, image_size: Sequence[int], seed: int = 0) -> Path:
    """An nnU-Net raw phantom dataset with exactly ``n_cases`` training cases (labels LV, MYO), 5 patient folds.

    Args:
        root: dataset folder to create (``DatasetXXX_Name``).
        n_cases: source cases (4 per phantom patient: 2CH/4CH at ED/ES; the last patient may be cut).
        image_size: (rows, cols) of the images.
        seed: phantom seed.
    """
    if n_cases < 5:
        raise EchoDataError(root, f"need at least 5 source cases (2 patients) for folds, got {n_cases}")
    full = make_phantom(
        root.parent / "phantoms" / root.name,
        n_patients=math.ceil(n_cases / 4),
        layout="nnunet",
        image_size=tuple(image_size),
        labels="lv,myo",
        seed=seed,
        progress=False,
    )
    src = RawDataset(full)
    writer = RawDatasetWriter(root, src.labels)
    for case_id in sorted(src.case_ids("all"))[:n_cases]:
        copy_dataset_files(src, case_id, writer, test=False)
        writer.records[case_id].pop("split", None)  # patient-grouped folds, not the phantom's official split
    writer.finalize(n_folds=5, seed=seed)
    return root


def _worker_command(spec: dict[str, Any], workdir: Path, tag: str) -> tuple[list[str], Path, dict[str, str]]:
    """Command line, result file and environment of one expansion worker process."""
    spec_path = workdir / f"{tag}.spec.json"
    result = workdir / f"{tag}.result.json"
    atomic_write_json(spec_path, {**spec, "result": str(result)})
    env = dict(os.environ)
    threads = str(spec["threads"])
    env.update(
        {
            "OMP_NUM_THREADS": threads,
            "MKL_NUM_THREADS": threads,
            "ECHOGAINS_NO_PROGRESS": "1",
            "ECHOGAINS_LOGLEVEL": "WARNING",
        }
    )
    return [sys.executable, str(SCRIPT), "--worker", str(spec_path)], result, env


def _run_workers(specs: Sequence[dict[str, Any]], workdir: Path, tag: str) -> tuple[float, list[dict[str, Any]]]:
    """Start one process per spec at once, wait for all; returns (wall seconds, their result JSONs)."""
    commands = [_worker_command(spec, workdir, f"{tag}_{i}") for i, spec in enumerate(specs)]
    logs = [workdir / f"{tag}_{i}.log" for i in range(len(commands))]
    handles = [path.open("w", encoding="utf-8") for path in logs]  # files, not pipes: a full pipe would block
    start = time.perf_counter()
    try:
        procs = [
            subprocess.Popen(cmd, env=env, stdout=h, stderr=subprocess.STDOUT)
            for (cmd, _, env), h in zip(commands, handles)
        ]
        codes = [p.wait() for p in procs]
    finally:
        for handle in handles:
            handle.close()
    wall = time.perf_counter() - start
    for code, path in zip(codes, logs):
        if code != 0:
            tail = path.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise RuntimeError(f"expansion worker {path.stem} failed (exit {code}):\n{tail}")
    return wall, [json.loads(result.read_text(encoding="utf-8")) for _, result, _ in commands]


def _expand_spec(
    src: Path,
    out: Path,
    model: str | None,
    k: int,
    batch: int,
    repaint: bool,
    threads: int,
    shard: str,
    seed: int,
    schedule: Sequence[int] | None,
) -> dict[str, Any]:
    return {
        "src": str(src),
        "out": str(out),
        "model": model,
        "k": k,
        "batch_size": batch,
        "repaint": repaint,
        "threads": threads,
        "shard": shard,
        "seed": seed,
        "schedule": None if schedule is None else list(schedule),
    }


def _count_outputs(out: Path) -> dict[str, int]:
    images = list((out / "imagesTr").glob("*_0000.nii.gz")) + list((out / "imagesTs").glob("*_0000.nii.gz"))
    augmented = sum("_aug" in p.name for p in images)
    return {
        "cases_written": len(images),
        "augmented_images": augmented,
        "complete": int((out / "dataset.json").is_file()),
    }


def expansion_throughput(
    workdir: Path, model_path: str, profile: Any, threads: int = 1, seed: int = 0
) -> dict[str, Any]:
    """Augmented images per minute (wall clock, process start to last exit) with 1 and N concurrent shards."""
    src = make_source(workdir / "Dataset960_ThroughputSrc", profile.throughput_cases, profile.phantom_size, seed)
    result: dict[str, Any] = {
        "settings": {
            "source_cases": profile.throughput_cases,
            "image_size": list(profile.phantom_size),
            "k": profile.throughput_k,
            "batch_size": profile.throughput_batch,
            "repaint": profile.throughput_repaint,
            "sampler": "fast" if profile.throughput_repaint else None,
            "schedule": None if profile.expansion_schedule is None else list(profile.expansion_schedule),
            "threads_per_process": threads,
            "model": model_path,
            "how": "images_per_min: augmented images / wall clock from starting the shard processes to the last one's "
            "exit (imports, model load, merge included); images_per_min_excluding_imports: the same over the "
            "slowest shard's expand_dataset call (model load and merge included); all shards write one folder",
        }
    }
    for i, n in enumerate(profile.shard_counts):
        out = workdir / f"Dataset95{i}_Throughput{n}"
        model = model_path if profile.throughput_repaint else None
        specs = [
            _expand_spec(
                src,
                out,
                model,
                profile.throughput_k,
                profile.throughput_batch,
                profile.throughput_repaint,
                threads,
                f"{j}/{n}",
                seed,
                profile.expansion_schedule,
            )
            for j in range(n)
        ]
        log.info("expansion throughput with %d shard(s)", n)
        wall, shards = _run_workers(specs, workdir, f"throughput{n}")
        counts = _count_outputs(out)
        slowest = max(s["expand_s"] for s in shards)
        result[f"shards_{n}"] = {
            "wall_s": wall,
            **counts,
            "images_per_min": counts["augmented_images"] / wall * 60.0,
            "images_per_min_excluding_imports": counts["augmented_images"] / slowest * 60.0,
            "per_shard": shards,
        }
    return result


def expansion_memory(
    workdir: Path, model_path: str | None, profile: Any, threads: int = 1, seed: int = 0
) -> dict[str, Any]:
    """Peak resident memory of one ``expand_dataset`` process per source dataset size."""
    repaint = profile.memory_repaint
    result: dict[str, Any] = {
        "settings": {
            "k": profile.memory_k,
            "batch_size": profile.throughput_batch,
            "repaint": repaint,
            "model": model_path if repaint else None,
            "image_size": list(profile.phantom_size),
            "threads": threads,
            "how": "peak resident set size (VmHWM; ru_maxrss where there is no /proc) of a fresh "
            "process running expand_dataset alone; rss_after_imports is its peak before "
            "expanding (Python, torch, echogains); ru_maxrss_mib is reported too but on "
            "Linux it inherits the launching process's high-water mark",
        }
    }
    for i, n in enumerate(profile.memory_cases):
        src = make_source(workdir / f"Dataset97{i}_Mem{n}Src", n, profile.phantom_size, seed)
        out = workdir / f"Dataset98{i}_Mem{n}"
        spec = _expand_spec(
            src,
            out,
            model_path if repaint else None,
            profile.memory_k,
            profile.throughput_batch,
            repaint,
            threads,
            "0/1",
            seed,
            profile.expansion_schedule,
        )
        log.info("expansion memory with %d source cases", n)
        _, (res,) = _run_workers([spec], workdir, f"memory{n}")
        result[f"cases_{n}"] = {"source_cases": n, **_count_outputs(out), **res}
    return result


def _ru_maxrss_bytes() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(usage if sys.platform == "darwin" else usage * 1024)  # Linux reports KiB, macOS bytes


def _peak_rss_bytes() -> tuple[int, str]:
    """This process's peak resident set size and where it comes from.

    On Linux ``ru_maxrss`` keeps the high-water mark of the process that forked and exec'd this one (measured: a
    worker of a 0.9 GB parent reports >= 0.9 GB), so the peak is read from ``VmHWM`` of ``/proc/self/status``, which
    starts afresh at exec. Elsewhere ``ru_maxrss`` is used.
    """
    peak = _common.proc_status_bytes("VmHWM")
    return (peak, "VmHWM") if peak is not None else (_ru_maxrss_bytes(), "ru_maxrss")


def _start_expand(spec: dict[str, Any]) -> dict[str, Any]:
    """expand_dataset of a worker spec; concurrent shards may collide while the first one creates the folder."""
    from echogains.augment.expand import expand_dataset  # here: its import is timed and measured by worker()

    kwargs = {
        "model": spec["model"],
        "k": spec["k"],
        "batch_size": spec["batch_size"],
        "repaint": spec["repaint"],
        "seed": spec["seed"],
        "shard": spec["shard"],
        "device": "cpu",
        "progress": False,
        "schedule": spec["schedule"],
    }
    for attempt in range(3):
        try:
            expand_dataset(spec["src"], spec["out"], **kwargs)
            return {"start_retries": attempt}
        except EchoDataError as err:
            # Another shard made the folders but has not written its plan yet (a start-up race of expand_dataset).
            if "not an interrupted expansion" not in str(err) or attempt == 2:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


def worker(spec_path: str) -> None:
    """Subprocess entry: run one expansion shard, write seconds and peak memory to the spec's result file."""
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    torch.set_num_threads(int(spec["threads"]))
    import echogains.augment.expand  # noqa: F401 - imports count as the baseline

    if spec["repaint"]:
        import monai.networks.nets  # noqa: F401 - the network's library too (seconds to import on a small CPU)

    rss_imports, _ = _peak_rss_bytes()
    start = time.perf_counter()
    info = _start_expand(spec)
    seconds = time.perf_counter() - start
    peak, source = _peak_rss_bytes()
    atomic_write_json(
        spec["result"],
        {
            "shard": spec["shard"],
            "expand_s": seconds,
            **info,
            "rss_after_imports_mib": rss_imports / _MIB,
            "peak_rss_mib": peak / _MIB,
            "peak_minus_imports_mib": (peak - rss_imports) / _MIB,
            "peak_rss_source": source,
            "ru_maxrss_mib": _ru_maxrss_bytes() / _MIB,
        },
    )
