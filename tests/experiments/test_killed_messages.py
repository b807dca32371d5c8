"""The runners say plainly when a child process was killed by signal 9 (mostly the kernel's out-of-memory killer)."""

from __future__ import annotations

import json
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor

import pytest

from echogains.nnunet_runner import NnUNet, describe_exit
from experiments.common import describe_failure, spawn_context

SUICIDE = "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"


def test_describe_exit_names_the_signal_and_what_to_try():
    assert describe_exit(1) == "exit code 1"
    assert describe_exit(-9) == (
        "killed by signal 9 (SIGKILL): probably out of memory; try --accumulate or a smaller --batch_size"
    )
    assert describe_exit(137).startswith("exit code 137 = 128 + 9: killed by signal 9 (SIGKILL): probably out of")
    assert describe_exit(-15) == "killed by signal 15 (SIGTERM)"


def test_nnunet_runner_reports_a_killed_command(tmp_path):
    nn = NnUNet(raw=tmp_path / "nnUNet_raw", log_dir=tmp_path / "logs")
    with pytest.raises(RuntimeError, match=r"killed by signal 9 \(SIGKILL\): probably out of memory"):
        nn.run([sys.executable, "-c", SUICIDE], "killed")
    with pytest.raises(RuntimeError, match=r"failed \(exit code 3\)"):
        nn.run([sys.executable, "-c", "raise SystemExit(3)"], "exit3")


def test_bundle_runner_reports_a_killed_bundle_command(tmp_path):
    from experiments.echo_dnd_tables import _bundle

    config = tmp_path / "die.json"
    config.write_text(
        json.dumps({"run": [f"$__import__('os').kill(__import__('os').getpid(), {int(signal.SIGKILL)})"]})
    )
    with pytest.raises(RuntimeError) as info:
        _bundle(["--config_file", str(config)], tmp_path / "bundle.log")
    assert str(info.value).startswith(
        "bundle command failed (killed by signal 9 (SIGKILL): probably out of memory; "
        "try --accumulate or a smaller --batch_size)"
    )


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_worker_killed_in_the_pool_is_named():
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn_context()) as pool:
        future = pool.submit(_die)
        with pytest.raises(Exception) as info:
            future.result(timeout=120)
    text = describe_failure(info.value)
    assert text.startswith("BrokenProcessPool: an arm's worker process died abruptly, most often killed by signal 9")
    assert "probably out of memory" in text
    assert describe_failure(ValueError("bad")) == "ValueError: bad"
