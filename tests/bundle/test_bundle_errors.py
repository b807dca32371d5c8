"""Bad input to the bundle's configs: one line naming the file or argument, exit status 2, no traceback, no output.

``python -m monai.bundle run`` wraps every error of a config in ``RuntimeError: Failed to evaluate/instantiate ...``;
the configs' run sections install ``scripts.common.install_bad_input_hook``, which prints bad input as
``echo_dnd: error: <what>: <problem>`` and exits with status 2 instead of the traceback. Two cases run as real processes
(exit status, stderr as a user sees it); the others run the same ``monai.bundle.run`` in this process (faster), where
the exception reaches the caller: its chain must hold the ``EchoDataError`` whose line the hook prints.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from scripts import EchoDND, EchoDNDConfig

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "echo_dnd"
CONFIGS = BUNDLE / "configs"
PREFIX = "echo_dnd: error: "
pytestmark = pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning")  # MONAI's warning on every run


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from scripts.checkpoint import save_weights

    torch.manual_seed(0)
    return save_weights(EchoDND(EchoDNDConfig.tiny(32)), tmp_path_factory.mktemp("weights") / "model.pt")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from echogains.data.phantom import make_phantom

    root = tmp_path_factory.mktemp("data") / "Dataset001_P"
    return make_phantom(root, n_patients=3, layout="nnunet", image_size=(48, 40), progress=False)


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def _bad_png(tmp: Path) -> tuple[Path, Path]:
    folder = tmp / "pngs"
    folder.mkdir()
    (folder / "case1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    return folder, folder / "case1.png"


def _copy_with_truncated(dataset: Path, tmp: Path, sub: str) -> tuple[Path, Path]:
    copy = tmp / dataset.name
    shutil.copytree(dataset, copy)
    victim = sorted((copy / sub).glob("*.nii.gz"))[0]
    return copy, _truncate(victim)


def _no_files(folder: Path) -> bool:
    return not folder.exists() or not any(p.is_file() for p in folder.rglob("*"))


def _run_here(config: str, capsys, run_id: str | None = None, **args) -> str:
    """``monai.bundle.run`` in this process; returns the line the command line prints (the chain holds bad input)."""
    from monai.bundle import run
    from scripts.common import bad_input_line

    if "model_path" in args:  # the tiny weights' own network configuration, written beside them
        args.setdefault("network_config", str(Path(args["model_path"]).parent / "network_config.json"))
    with pytest.raises(Exception) as info:
        run(run_id=run_id, config_file=str(CONFIGS / config), logging_file=False, bundle_root=str(BUNDLE), **args)
    line = bad_input_line(info.value)
    assert line is not None, info.value
    return line


# --- inference ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "case",
    [
        "unreadable_png",
        "missing_input",
        "corrupt_nifti",
        "num_steps_0",
        "num_steps_above_T",
        "ensemble_0",
        "fusion_unknown",
        "batch_size_text",
        "missing_weights",
        "corrupt_weights",
        "no_cuda",
    ],
)
def test_inference_bad_input(case, weights, dataset, tmp_path, capsys):
    if case == "no_cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    out = tmp_path / "out"
    args = {
        "dataset_dir": str(dataset),
        "model_path": str(weights),
        "output_dir": str(out),
        "device": "cpu",
        "num_steps": 2,
        "progress": False,
    }
    if case == "unreadable_png":
        folder, named = _bad_png(tmp_path)
        args["dataset_dir"], expected = str(folder), [str(named), "cannot read"]
    elif case == "missing_input":
        args["dataset_dir"] = str(tmp_path / "nowhere")
        expected = [str(tmp_path / "nowhere"), "not found", "--dataset_dir"]
    elif case == "corrupt_nifti":
        copy, victim = _copy_with_truncated(dataset, tmp_path, "imagesTs")
        args["dataset_dir"], expected = str(copy), [str(victim)]
    elif case == "num_steps_0":
        args["num_steps"], expected = 0, ["--num_steps", "got 0"]
    elif case == "num_steps_above_T":
        args["num_steps"], expected = 5000, ["--num_steps", "1..1000", "got 5000"]
    elif case == "ensemble_0":
        args["ensemble"], expected = 0, ["--ensemble"]
    elif case == "fusion_unknown":
        args["fusion"], expected = "magic", ["--fusion", "'magic'", "reliability"]
    elif case == "batch_size_text":
        args["batch_size"], expected = "eight", ["--batch_size", "'eight'"]
    elif case == "missing_weights":
        args["model_path"] = str(tmp_path / "none.pt")
        args["network_config"] = str(weights.parent / "network_config.json")
        expected = [str(tmp_path / "none.pt"), "not found"]
    elif case == "corrupt_weights":
        bad = tmp_path / "bad.pt"
        bad.write_bytes(weights.read_bytes()[:200])
        args["network_config"] = str(weights.parent / "network_config.json")
        args["model_path"], expected = str(bad), [str(bad), "cannot read model weights"]
    else:
        args["device"], expected = "cuda", ["--device", "CUDA is not available"]
    err = _run_here("inference.json", capsys, run_id="inference", **args)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX), err
    for word in expected:
        assert word in lines[0], (word, lines[0])
    assert _no_files(out)


# --- train --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "case",
    [
        "missing_dataset",
        "not_a_dataset",
        "corrupt_image",
        "steps_0",
        "lr_negative",
        "network_config",
        "image_size",
        "ablation",
    ],
)
def test_train_bad_input(case, dataset, tmp_path, capsys):
    out = tmp_path / "run"
    args = {
        "dataset_dir": str(dataset),
        "output_dir": str(out),
        "network_config": "tiny",
        "image_size": 32,
        "batch_size": 2,
        "steps": 2,
        "val_every": 0,
        "device": "cpu",
        "progress": False,
    }
    if case == "missing_dataset":
        args["dataset_dir"] = str(tmp_path / "nowhere")
        expected = [str(tmp_path / "nowhere"), "--dataset_dir"]
    elif case == "not_a_dataset":
        folder, _ = _bad_png(tmp_path)
        args["dataset_dir"], expected = str(folder), [str(folder / "dataset.json")]
    elif case == "corrupt_image":
        copy, victim = _copy_with_truncated(dataset, tmp_path, "imagesTr")
        args["dataset_dir"], expected = str(copy), [str(victim)]
    elif case == "steps_0":
        args["steps"], expected = 0, ["--steps"]
    elif case == "lr_negative":
        args["lr"], expected = -1.0, ["--lr"]
    elif case == "network_config":
        args["network_config"], expected = "huge", ["--network_config", "'huge'"]
    elif case == "image_size":
        args["image_size"], expected = 30, ["--image_size", "30"]
    else:
        args["ablation"], expected = "no_such", ["ablation", "'no_such'"]
    err = _run_here("train.json", capsys, **args)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX), err
    for word in expected:
        assert word in lines[0], (word, lines[0])
    assert not out.exists()  # not even the empty output folder


# --- evaluate -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["missing_dataset", "image_folder", "corrupt_label", "unknown_label", "ensemble_text"])
def test_evaluate_bad_input(case, weights, dataset, tmp_path, capsys):
    out = tmp_path / "eval"
    args = {
        "dataset_dir": str(dataset),
        "model_path": str(weights),
        "output_dir": str(out),
        "device": "cpu",
        "num_steps": 2,
        "overlays": False,
        "progress": False,
    }
    if case == "missing_dataset":
        args["dataset_dir"] = str(tmp_path / "nowhere")
        expected = [str(tmp_path / "nowhere"), "--dataset_dir"]
    elif case == "image_folder":
        folder, _ = _bad_png(tmp_path)
        args["dataset_dir"], expected = str(folder), [str(folder), "labelled nnU-Net raw dataset"]
    elif case == "corrupt_label":  # found before any prediction is written
        copy, victim = _copy_with_truncated(dataset, tmp_path, "labelsTs")
        args["dataset_dir"], expected = str(copy), [str(victim)]
    elif case == "unknown_label":
        args["labels"], expected = "RV", ["dataset.json", "'RV'"]
    else:
        args["ensemble"], expected = "two", ["--ensemble", "'two'"]
    err = _run_here("evaluate.json", capsys, **args)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX), err
    for word in expected:
        assert word in lines[0], (word, lines[0])
    assert _no_files(out)


# --- as a user runs them: real processes --------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_process(args: list[str], cwd: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ECHOGAINS_NO_PROGRESS="1", **extra_env)
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("config", ["inference", "multi_gpu_train"])  # train.json and evaluate.json: in-process above
def test_the_command_line_gives_one_line_and_status_2(config, weights, dataset, tmp_path):
    out = tmp_path / "out"
    if config == "inference":  # the case: a folder holding an unreadable PNG
        folder, named = _bad_png(tmp_path)
        args = [
            "inference",
            "--config_file",
            str(CONFIGS / "inference.json"),
            "--dataset_dir",
            str(folder),
            "--model_path",
            str(weights),
            "--output_dir",
            str(out),
            "--network_config",
            str(weights.parent / "network_config.json"),
            "--device",
            "cpu",
            "--bundle_root",
            str(BUNDLE),
        ]
    elif config in ("train", "multi_gpu_train"):
        named = tmp_path / "nowhere"
        files = [str(CONFIGS / "train.json")] + ([str(CONFIGS / "multi_gpu_train.json")] if config != "train" else [])
        config_file = files[0] if len(files) == 1 else "[" + ",".join(repr(f) for f in files) + "]"
        args = ["--config_file", config_file, "--dataset_dir", str(named), "--output_dir", str(out), "--device", "cpu"]
    else:
        named = "--num_steps"
        args = [
            "--config_file",
            str(CONFIGS / "evaluate.json"),
            "--dataset_dir",
            str(dataset),
            "--model_path",
            str(weights),
            "--output_dir",
            str(out),
            "--device",
            "cpu",
            "--num_steps",
            "0",
        ]
    # multi_gpu_train.json initialises torch.distributed: one process of a world of one, as torchrun would set it up
    dist_env = dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    proc = _run_process(args, tmp_path, **(dist_env if config == "multi_gpu_train" else {}))
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith(PREFIX)]
    assert len(errors) == 1 and proc.stderr.splitlines()[-1] == errors[0], proc.stderr
    assert str(named) in errors[0]
    assert _no_files(out)
