"""Run nnU-Net v2's own commands (plan/preprocess, train, predict) as a user would, from Python.

Used by ``make demo``, the ``experiments/`` scripts and the end-to-end test. Every step is the documented nnU-Net
command line, run in a subprocess with the environment nnU-Net needs (``nnUNet_raw``, ``nnUNet_preprocessed``,
``nnUNet_results``, ``nnUNet_extTrainer`` for this project's trainers). Output of each command goes to a log file;
a failing command raises with the log's tail, so the cause is visible.

On CPU: ``device="cpu"``, one worker process (``nnUNet_def_n_proc=1``: nnU-Net's default 8 spawned workers made
validation 3.6x slower on 2 cores), one torch thread by default.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from echogains.locate import nnunet_trainer_dir
from echogains.utils import EchoDataError, get_logger

log = get_logger("echogains.nnunet")

__all__ = ["NnUNet", "dataset_id_of", "nnunet_command", "describe_exit", "OOM_HINT"]

#: What to try when a training process was killed by signal 9 (on Linux mostly the kernel's out-of-memory killer).
OOM_HINT = "probably out of memory; try --accumulate or a smaller --batch_size"


def describe_exit(returncode: int, hint: str = OOM_HINT) -> str:
    """A child's exit status in words: ``exit code N``, or ``killed by signal 9 (SIGKILL): <hint>`` and the like.

    A negative ``returncode`` is Python's way of reporting a signal; 128 + N is a shell's (or a launcher's).
    """
    number = -returncode if returncode < 0 else returncode - 128 if 128 < returncode < 160 else None
    if number is None:
        return f"exit code {returncode}"
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = "unknown signal"
    via = "" if returncode < 0 else f"exit code {returncode} = 128 + {number}: "
    if number == signal.SIGKILL:
        return f"{via}killed by signal 9 ({name}): {hint}"
    return f"{via}killed by signal {number} ({name})"


def dataset_id_of(dataset: str | os.PathLike) -> int:
    """The integer id of an nnU-Net dataset folder named ``DatasetXXX_Name``."""
    match = re.fullmatch(r"Dataset(\d{3})_.+", Path(dataset).name)
    if not match:
        raise EchoDataError(dataset, "not an nnU-Net dataset folder name (DatasetXXX_Name)")
    return int(match.group(1))


def nnunet_command(name: str) -> list[str]:
    """The console script ``name`` (e.g. ``nnUNetv2_train``) of the running interpreter's environment."""
    exe = Path(sys.executable).parent / name
    if exe.is_file():
        return [str(exe)]
    found = shutil.which(name)
    if found is None:
        raise EchoDataError(None, f"{name} not found: install nnunetv2 in this environment (pip install -e .)")
    return [found]


@dataclass
class NnUNet:
    """nnU-Net's three folders and how to run its commands.

    Args:
        raw: ``nnUNet_raw`` (holds the ``DatasetXXX_Name`` raw datasets).
        preprocessed: ``nnUNet_preprocessed`` (default: ``raw``'s sibling ``nnUNet_preprocessed``).
        results: ``nnUNet_results`` (default: ``raw``'s sibling ``nnUNet_results``).
        device: ``cpu``, ``cuda`` or ``mps`` (nnU-Net's ``-device``).
        threads: torch/OpenMP threads per command (``None`` leaves the environment as it is).
        processes: nnU-Net worker processes (``nnUNet_def_n_proc`` and ``-np``/``-npp``/``-nps``).
        log_dir: where each command's output goes (default: ``results/logs``).
        seed: seed of the Echo trainers (``ECHOGAINS_NNUNET_SEED``: network initialisation, sampling and
            augmentation, in the training process); ``None`` leaves nnU-Net unseeded, as it is by default.
    """

    raw: Path
    preprocessed: Path | None = None
    results: Path | None = None
    device: str = "cpu"
    threads: int | None = 1
    processes: int = 1
    log_dir: Path | None = None
    seed: int | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.raw = Path(self.raw).resolve()
        self.preprocessed = Path(self.preprocessed or self.raw.parent / "nnUNet_preprocessed").resolve()
        self.results = Path(self.results or self.raw.parent / "nnUNet_results").resolve()
        self.log_dir = Path(self.log_dir or self.results / "logs").resolve()

    def environ(self) -> dict[str, str]:
        """The environment nnU-Net's commands get (``nnUNet_extTrainer``: the installed plugin's trainers).

        Raises:
            EchoDataError: the ``nnunet_ext`` plugin is not installed.
        """
        env = {
            **os.environ,
            "nnUNet_raw": str(self.raw),
            "nnUNet_preprocessed": str(self.preprocessed),
            "nnUNet_results": str(self.results),
            "nnUNet_extTrainer": str(nnunet_trainer_dir()),
            "nnUNet_def_n_proc": str(self.processes),
        }
        # data-augmentation workers per training: nnU-Net's default is tuned for its own GPU servers
        env.setdefault("nnUNet_n_proc_DA", str(max(1, self.processes)))
        if self.threads is not None:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
        if self.seed is not None:
            env["ECHOGAINS_NNUNET_SEED"] = str(int(self.seed))
        return env

    def run(self, args: Sequence[str], tag: str) -> float:
        """Run one nnU-Net command; its output goes to ``log_dir/tag.log``. Returns the seconds it took."""
        for folder in (self.preprocessed, self.results, self.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        log_file = self.log_dir / f"{tag}.log"
        log.info("$ %s  (log: %s)", " ".join(args), log_file)
        t0 = time.perf_counter()
        with open(log_file, "w", encoding="utf-8") as fh:
            proc = subprocess.run(list(args), env=self.environ(), stdout=fh, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - t0
        self.timings[tag] = round(seconds, 2)
        if proc.returncode != 0:
            tail = "".join(log_file.read_text(encoding="utf-8", errors="replace").splitlines(True)[-25:])
            # nnU-Net takes its batch size from the plans (no --accumulate): say what helps it
            why = describe_exit(
                proc.returncode,
                "probably out of memory; run fewer jobs at once, or lower "
                "'batch_size' in the nnU-Net plans (nnUNetPlans.json)",
            )
            raise RuntimeError(f"{' '.join(args)} failed ({why}); last lines of {log_file}:\n{tail}")
        return seconds

    def plan_and_preprocess(
        self, dataset: str | os.PathLike | int, verify: bool = True, configuration: str = "2d"
    ) -> float:
        """``nnUNetv2_plan_and_preprocess -d ID -c 2d [--verify_dataset_integrity]``."""
        did = dataset if isinstance(dataset, int) else dataset_id_of(dataset)
        args = [
            *nnunet_command("nnUNetv2_plan_and_preprocess"),
            "-d",
            str(did),
            "-c",
            configuration,
            "-np",
            str(self.processes),
            "-npfp",
            str(self.processes),
        ]
        if verify:
            args.append("--verify_dataset_integrity")
        return self.run(args, f"plan_{did:03d}")

    def train(
        self,
        dataset: str | os.PathLike | int,
        trainer: str,
        fold: int | str = 0,
        configuration: str = "2d",
        extra: Sequence[str] = (),
    ) -> float:
        """``nnUNetv2_train ID 2d FOLD -tr TRAINER -device DEVICE``."""
        did = dataset if isinstance(dataset, int) else dataset_id_of(dataset)
        args = [
            *nnunet_command("nnUNetv2_train"),
            str(did),
            configuration,
            str(fold),
            "-tr",
            trainer,
            "-device",
            self.device,
            *extra,
        ]
        return self.run(args, f"train_{did:03d}_{trainer}_{fold}")

    def predict(
        self,
        images: str | os.PathLike,
        out: str | os.PathLike,
        dataset: str | os.PathLike | int,
        trainer: str,
        fold: int | str = 0,
        configuration: str = "2d",
        tta: bool = True,
        extra: Sequence[str] = (),
    ) -> float:
        """``nnUNetv2_predict -i IMAGES -o OUT -d ID -c 2d -f FOLD -tr TRAINER``; masks in the inputs' geometry."""
        did = dataset if isinstance(dataset, int) else dataset_id_of(dataset)
        if not Path(images).is_dir():
            raise EchoDataError(images, "input folder for nnUNetv2_predict does not exist")
        args = [
            *nnunet_command("nnUNetv2_predict"),
            "-i",
            str(images),
            "-o",
            str(out),
            "-d",
            str(did),
            "-c",
            configuration,
            "-f",
            str(fold),
            "-tr",
            trainer,
            "-device",
            self.device,
            "-npp",
            str(self.processes),
            "-nps",
            str(self.processes),
            *extra,
        ]
        if not tta:
            args.append("--disable_tta")
        return self.run(args, f"predict_{did:03d}_{trainer}_{fold}_{Path(out).name}")

    def model_folder(
        self, dataset: str | os.PathLike, trainer: str, configuration: str = "2d", plans: str = "nnUNetPlans"
    ) -> Path:
        """Where ``nnUNetv2_train`` wrote the trained model."""
        return self.results / Path(dataset).name / f"{trainer}__{plans}__{configuration}"

    def summary(self) -> Mapping[str, float]:
        return dict(self.timings)
