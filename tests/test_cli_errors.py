"""Every ``echogains`` command answers bad input with one line, exit status 2, no traceback, nothing written.

For each command at least: a missing input path, an unreadable or corrupt file, and a wrong argument value. The
commands run in this process through ``echogains.cli.main`` (as the console script does), so an unexpected exception
fails the test with its traceback, and the check costs no interpreter start-up.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from echogains.augment.expand import expand_dataset
from echogains.cli import main
from echogains.data.phantom import make_phantom

DDPM = Path(__file__).resolve().parents[1] / "echogains" / "ddpm" / "weights" / "ddpm_tiny_phantom.pt"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli_errors")
    size = {"image_size": (48, 40)}
    paths = {
        "root": root,
        "nnunet": make_phantom(
            root / "Dataset561_Err", n_patients=3, layout="nnunet", labels="lv,myo", progress=False, **size
        ),
        "camus": make_phantom(root / "camus", n_patients=2, layout="camus-nifti", progress=False, **size),
        "echonet": make_phantom(root / "echonet", n_patients=2, layout="echonet", progress=False),
    }
    paths["expanded"] = expand_dataset(
        paths["nnunet"], root / "Dataset571_Expanded", k=1, repaint=False, progress=False
    )
    corrupt = root / "corrupt_model.pt"
    corrupt.write_bytes(b"this is not a torch checkpoint")
    paths["corrupt_model"] = corrupt
    return paths


def run_cli(args: list[str], capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``echogains ARGS``; return (exit status, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--progress", "False"] if args[0] != "nnunet-env" else args)
    code = exit_info.value.code
    return (0 if code is None else int(code)), capfd.readouterr().err


def assert_one_line_error(code: int, err: str, expected: int, *names: str) -> None:
    assert code == expected, err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith("echogains: error:")]
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], lines[0]


def assert_not_created(path: Path) -> None:
    assert not path.exists() or not any(path.iterdir()), sorted(path.iterdir())


def corrupt_copy(src: Path, dest: Path, pattern: str) -> Path:
    """Copy a folder and overwrite the first file matching ``pattern`` with garbage; returns that file."""
    shutil.copytree(src, dest)
    victim = sorted(dest.rglob(pattern))[0]
    victim.write_bytes(b"\x00garbage, not an image\x00" * 4)
    return victim


# --- make-phantom ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--n_patients", "0"),
        ("--preset", "bogus"),
        ("--layout", "bogus"),
        ("--labels", "lv,spleen"),
        ("--depth_mm", "(-5, 10)"),
    ],
)
def test_make_phantom_wrong_argument(data, tmp_path, capfd, flag, value) -> None:
    code, err = run_cli(["make-phantom", str(tmp_path / "out"), flag, value], capfd)
    assert_one_line_error(code, err, 2, flag.lstrip("-"))
    assert not (tmp_path / "out").exists()


def test_make_phantom_output_is_a_file(tmp_path, capfd) -> None:
    (tmp_path / "file").write_text("x")
    code, err = run_cli(["make-phantom", str(tmp_path / "file")], capfd)
    assert_one_line_error(code, err, 2, "file")
    assert (tmp_path / "file").read_text() == "x"


# --- converters -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["convert-camus", "convert-echonet"])
def test_converter_missing_input(tmp_path, capfd, command) -> None:
    code, err = run_cli([command, str(tmp_path / "nowhere"), str(tmp_path / "Dataset562_X")], capfd)
    assert_one_line_error(code, err, 2, "nowhere")
    assert not (tmp_path / "Dataset562_X").exists()


def test_convert_camus_corrupt_image(data, tmp_path, capfd) -> None:
    victim = corrupt_copy(data["camus"], tmp_path / "camus", "*_4CH_ED.nii.gz")
    code, err = run_cli(["convert-camus", str(tmp_path / "camus"), str(tmp_path / "Dataset563_X")], capfd)
    assert_one_line_error(code, err, 2, victim.name)
    assert not (tmp_path / "Dataset563_X").exists()


def test_convert_echonet_corrupt_video(data, tmp_path, capfd) -> None:
    victim = corrupt_copy(data["echonet"], tmp_path / "echonet", "*.avi")
    code, err = run_cli(["convert-echonet", str(tmp_path / "echonet"), str(tmp_path / "Dataset564_X")], capfd)
    assert_one_line_error(code, err, 2, victim.name)
    assert not (tmp_path / "Dataset564_X").exists()


@pytest.mark.parametrize(
    ("command", "flag", "value"),
    [
        ("convert-camus", "--labels", "lv,spleen"),
        ("convert-camus", "--views", "3CH"),
        ("convert-camus", "--n_folds", "0"),
        ("convert-echonet", "--limit", "0"),
        ("convert-echonet", "--n_folds", "3"),
    ],
)
def test_converter_wrong_argument(data, tmp_path, capfd, command, flag, value) -> None:
    src = data["camus"] if command == "convert-camus" else data["echonet"]
    code, err = run_cli([command, str(src), str(tmp_path / "Dataset565_X"), flag, value], capfd)
    assert_one_line_error(code, err, 2, flag.lstrip("-"))
    assert not (tmp_path / "Dataset565_X").exists()


# --- verify-dataset: a missing folder or a bad argument is exit 2, a broken dataset is a finding (exit 1) ---
def test_verify_missing_dataset_and_wrong_argument(data, tmp_path, capfd) -> None:
    code, err = run_cli(["verify-dataset", str(tmp_path / "nowhere")], capfd)
    assert_one_line_error(code, err, 2, "nowhere")
    code, err = run_cli(["verify-dataset", str(data["nnunet"]), "--num_processes", "0"], capfd)
    assert_one_line_error(code, err, 2, "num_processes")


def test_verify_corrupt_image_is_a_finding(data, tmp_path, capfd) -> None:
    victim = corrupt_copy(data["nnunet"], tmp_path / "Dataset566_X", "*_0000.nii.gz")
    with pytest.raises(SystemExit) as exit_info:
        main(["verify-dataset", str(tmp_path / "Dataset566_X"), "--nnunet_check", "False", "--progress", "False"])
    captured = capfd.readouterr()
    assert exit_info.value.code == 1 and "Traceback" not in captured.err
    assert victim.name in captured.out


# --- evaluate -------------------------------------------------------------------------------------------------------
def _predictions(data: dict[str, Path], dest: Path) -> Path:
    dest.mkdir()
    for label in (data["nnunet"] / "labelsTs").iterdir():
        shutil.copy(label, dest / label.name)
    return dest


def test_evaluate_missing_predictions(data, tmp_path, capfd) -> None:
    code, err = run_cli(["evaluate", str(tmp_path / "nowhere"), str(data["nnunet"]), str(tmp_path / "report")], capfd)
    assert_one_line_error(code, err, 2, "nowhere")
    assert not (tmp_path / "report").exists()


def test_evaluate_corrupt_prediction(data, tmp_path, capfd) -> None:
    preds = _predictions(data, tmp_path / "preds")
    victim = sorted(preds.iterdir())[0]
    victim.write_bytes(b"not a nifti")
    code, err = run_cli(["evaluate", str(preds), str(data["nnunet"]), str(tmp_path / "report")], capfd)
    assert_one_line_error(code, err, 2, victim.name)
    assert not (tmp_path / "report").exists()


def test_evaluate_wrong_subset(data, tmp_path, capfd) -> None:
    preds = _predictions(data, tmp_path / "preds")
    code, err = run_cli(
        ["evaluate", str(preds), str(data["nnunet"]), str(tmp_path / "report"), "--subset", "Xx"], capfd
    )
    assert_one_line_error(code, err, 2, "subset")
    assert not (tmp_path / "report").exists()


# --- train-ddpm -----------------------------------------------------------------------------------------------------
def test_train_ddpm_missing_data(tmp_path, capfd) -> None:
    code, err = run_cli(["train-ddpm", str(tmp_path / "nowhere"), str(tmp_path / "run"), "--config", "micro"], capfd)
    assert_one_line_error(code, err, 2, "nowhere")
    assert not (tmp_path / "run").exists()


def test_train_ddpm_corrupt_image(data, tmp_path, capfd) -> None:
    victim = corrupt_copy(data["nnunet"], tmp_path / "Dataset567_X", "*_0000.nii.gz")
    code, err = run_cli(
        [
            "train-ddpm",
            str(tmp_path / "Dataset567_X"),
            str(tmp_path / "run"),
            "--config",
            "micro",
            "--steps",
            "1",
            "--device",
            "cpu",
        ],
        capfd,
    )
    assert_one_line_error(code, err, 2, victim.name)
    assert_not_created(tmp_path / "run")


@pytest.mark.parametrize(
    ("flag", "value"), [("--config", "huge"), ("--steps", "-3"), ("--batch_size", "0"), ("--device", "tpu")]
)
def test_train_ddpm_wrong_argument(data, tmp_path, capfd, flag, value) -> None:
    args = ["train-ddpm", str(data["nnunet"]), str(tmp_path / "run"), "--config", "micro", flag, value]
    code, err = run_cli(args, capfd)
    assert_one_line_error(code, err, 2, flag.lstrip("-"))
    assert_not_created(tmp_path / "run")


# --- expand-dataset -------------------------------------------------------------------------------------------------
def test_expand_missing_source(tmp_path, capfd) -> None:
    code, err = run_cli(
        ["expand-dataset", str(tmp_path / "nowhere"), str(tmp_path / "Dataset568_X"), "--model", str(DDPM)], capfd
    )
    assert_one_line_error(code, err, 2, "nowhere")
    assert not (tmp_path / "Dataset568_X").exists()


def test_expand_corrupt_model(data, tmp_path, capfd) -> None:
    code, err = run_cli(
        [
            "expand-dataset",
            str(data["nnunet"]),
            str(tmp_path / "Dataset569_X"),
            "--model",
            str(data["corrupt_model"]),
            "--device",
            "cpu",
        ],
        capfd,
    )
    assert_one_line_error(code, err, 2, data["corrupt_model"].name)
    assert not (tmp_path / "Dataset569_X").exists()


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--augment", "zoom"),
        ("--k", "0"),
        ("--shard", "3/2"),
        ("--sampler", "magic"),
        ("--labels", "lv,spleen"),
        ("--schedule", "10"),
        ("--schedule", "10,1"),
        ("--schedule", "250,10,10"),
        ("--schedule", "0,1,1"),
    ],
)
def test_expand_wrong_argument(data, tmp_path, capfd, flag, value) -> None:
    code, err = run_cli(
        [
            "expand-dataset",
            str(data["nnunet"]),
            str(tmp_path / "Dataset570_X"),
            "--model",
            str(DDPM),
            "--device",
            "cpu",
            flag,
            value,
        ],
        capfd,
    )
    assert_one_line_error(code, err, 2, flag.lstrip("-"))
    assert not (tmp_path / "Dataset570_X").exists()


# --- augmentation-report --------------------------------------------------------------------------------------------
def test_augmentation_report_missing_dataset(tmp_path, capfd) -> None:
    code, err = run_cli(["augmentation-report", str(tmp_path / "nowhere"), str(tmp_path / "report")], capfd)
    assert_one_line_error(code, err, 2, "nowhere")
    assert not (tmp_path / "report").exists()


def test_augmentation_report_corrupt_model_and_wrong_argument(data, tmp_path, capfd) -> None:
    code, err = run_cli(
        [
            "augmentation-report",
            str(data["expanded"]),
            str(tmp_path / "report"),
            "--model",
            str(data["corrupt_model"]),
            "--device",
            "cpu",
        ],
        capfd,
    )
    assert_one_line_error(code, err, 2, data["corrupt_model"].name)
    assert not (tmp_path / "report").exists()
    code, err = run_cli(
        ["augmentation-report", str(data["expanded"]), str(tmp_path / "report"), "--n_samples", "-1"], capfd
    )
    assert_one_line_error(code, err, 2, "n_samples")
    assert not (tmp_path / "report").exists()


def test_augmentation_report_refuses_a_file_or_the_dataset_itself_as_its_folder(data, tmp_path, capfd) -> None:
    target = tmp_path / "report.txt"
    target.write_text("kept")
    code, err = run_cli(["augmentation-report", str(data["expanded"]), str(target), "--n_samples", "0"], capfd)
    assert_one_line_error(code, err, 2, "report.txt")
    assert target.read_text() == "kept"
    before = sorted(p.name for p in data["expanded"].iterdir())
    expanded = str(data["expanded"])
    code, err = run_cli(["augmentation-report", expanded, expanded, "--n_samples", "0"], capfd)
    assert_one_line_error(code, err, 2, "input folder")
    assert sorted(p.name for p in data["expanded"].iterdir()) == before


# --- nnunet-env -----------------------------------------------------------------------------------------------------
def test_nnunet_env_wrong_shell(capfd) -> None:
    code, err = run_cli(["nnunet-env", "--shell", "cmd.exe"], capfd)
    assert_one_line_error(code, err, 2, "shell")


def test_unknown_flag_is_refused(data, tmp_path, capfd) -> None:
    code, err = run_cli(["evaluate", str(tmp_path), str(data["nnunet"]), str(tmp_path / "r"), "--subsett", "Ts"], capfd)
    assert_one_line_error(code, err, 2, "--subsett")
    assert not (tmp_path / "r").exists()
    code, err = run_cli(
        ["expand-dataset", str(data["nnunet"]), str(tmp_path / "Dataset572_X"), "--no-repaint", "--smapler", "repaint"],
        capfd,
    )
    assert_one_line_error(code, err, 2, "--smapler")
    assert not (tmp_path / "Dataset572_X").exists()
