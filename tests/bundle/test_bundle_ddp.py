"""A 2-process DDP step on CPU (gloo)::

torchrun --standalone --nproc_per_node 2 -m monai.bundle run --config_file "[train.json, multi_gpu_train.json]" ...
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "echo_dnd"


def run_group(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 240) -> tuple[int, str]:
    """Run a launcher in its own process group; on timeout kill the whole group (the workers included)."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"torchrun timed out after {timeout} s:\n{out[-4000:]}")
    return proc.returncode, out


def test_two_process_gloo_step(tmp_path: Path) -> None:
    from echogains.data.phantom import make_phantom

    dataset = make_phantom(
        tmp_path / "Dataset001_P", n_patients=3, layout="nnunet", image_size=(48, 40), progress=False
    )
    configs = [str(BUNDLE / "configs" / "train.json"), str(BUNDLE / "configs" / "multi_gpu_train.json")]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CUDA_VISIBLE_DEVICES")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ECHOGAINS_NO_PROGRESS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        repr(configs),
        "--dataset_dir",
        str(dataset),
        "--output_dir",
        str(tmp_path / "run"),
        "--network_config",
        "tiny",
        "--image_size",
        "32",
        "--steps",
        "1",
        "--batch_size",
        "2",
        "--val_every",
        "1",
        "--val_steps",
        "1",
        "--progress",
        "False",
    ]
    returncode, log = run_group(cmd, tmp_path, env)
    assert returncode == 0, log[-6000:]
    assert log.count("training on 4 cases") == 2  # both ranks trained
    # both ranks ran the validator (MONAI's metric gathers across ranks), rank 0 wrote the one row
    with (tmp_path / "run" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["1"] and 0.0 <= float(rows[0]["val_dice"]) <= 1.0
    state = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 1
    # the saved (rank 0) weights moved away from the shared initialisation
    from scripts import EchoDND, EchoDNDConfig

    torch.manual_seed(0)
    init = EchoDND(EchoDNDConfig.tiny(32)).state_dict()
    assert any(not torch.equal(init[k], state["model"][k]) for k in init)
    assert set(state["model"]) == set(init)


_RESUME_SCRIPT = """
import logging, os, sys
sys.path.insert(0, {bundle!r})
logging.basicConfig(level=logging.INFO)
import torch
import torch.distributed as dist
from scripts.train import EchoDNDTrainer

dist.init_process_group("gloo")
rank = dist.get_rank()
common = dict(dataset_dir={dataset!r}, config="tiny", image_size=32, batch_size=2, val_every=0, save_every=1,
              progress=False, device="cpu", seed=3)
out = {{}}
for name, steps in (("straight", 2), ("killed", 1), ("killed", 2)):  # the second "killed" run resumes at step 1
    trainer = EchoDNDTrainer(output_dir=os.path.join({root!r}, name), steps=steps, **common)
    trainer.run()
    out[name] = {{"data_gen": trainer.data_gen.get_state(), "noise_gen": trainer.noise_gen.get_state(),
                  "torch": torch.get_rng_state(),
                  "weights": {{k: v.clone() for k, v in trainer.model.state_dict().items()}}}}
torch.save(out, os.path.join({root!r}, f"rank{{rank}}.pt"))
dist.destroy_process_group()
"""


def test_two_process_resume_restores_every_rank(tmp_path: Path) -> None:
    """Killed after step 1 and resumed, both ranks continue exactly as a run that was never stopped: each rank's
    generators and global torch state, and the weights (rank 1's batch enters the averaged gradient)."""
    from echogains.data.phantom import make_phantom

    dataset = make_phantom(
        tmp_path / "Dataset001_P", n_patients=3, layout="nnunet", image_size=(48, 40), progress=False
    )
    script = tmp_path / "resume.py"
    script.write_text(_RESUME_SCRIPT.format(bundle=str(BUNDLE), dataset=str(dataset), root=str(tmp_path)))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CUDA_VISIBLE_DEVICES")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ECHOGAINS_NO_PROGRESS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    returncode, log = run_group(cmd, tmp_path, env)
    assert returncode == 0, log[-6000:]
    assert "resumed" in log and "resume is not exact" not in log
    state = torch.load(tmp_path / "killed" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["step"] == 2 and len(state["rng"]) == 2  # every rank's random state is in the checkpoint
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", map_location="cpu", weights_only=True)
        straight, resumed = got["straight"], got["killed"]
        for key in ("data_gen", "noise_gen", "torch"):
            assert torch.equal(straight[key], resumed[key]), (rank, key)
        assert all(torch.equal(straight["weights"][k], resumed["weights"][k]) for k in straight["weights"]), rank
        assert torch.equal(state["rng"][rank]["noise_gen"], resumed["noise_gen"])
