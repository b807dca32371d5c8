"""``python -m monai.bundle run ARGS`` for the bundle tests: one thread, no progress bars, the caller's PYTHONPATH
left out (the bundle must be found as a user's shell finds it); fails the test with the output's tail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_bundle(args: list[str], cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ECHOGAINS_NO_PROGRESS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout + proc.stderr
