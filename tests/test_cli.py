"""The ``echogains`` command as a user types it: one run per data command, errors as one line with exit 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

ENV = {**os.environ, "ECHOGAINS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "nnUNet_def_n_proc": "1"}


def echogains(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "echogains", *args], capture_output=True, text=True, env=ENV)
    if check and proc.returncode != 0:
        raise AssertionError(f"echogains {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    camus, echonet = root / "camus", root / "echonet"
    echogains("make-phantom", str(camus), "--n_patients", "6", "--seed", "3", "--progress", "False")
    echogains("make-phantom", str(echonet), "--n_patients", "4", "--layout", "echonet", "--progress", "False")
    ds = root / "Dataset551_CliCamus"
    echogains("convert-camus", str(camus), str(ds), "--labels", "lv,myo", "--progress", "False")
    return root, camus, echonet, ds


def test_convert_verify_evaluate(chain):
    root, _, echonet, ds = chain
    dj = json.loads((ds / "dataset.json").read_text())
    assert dj["labels"] == {"background": 0, "LV": 1, "MYO": 2}
    out = echogains("verify-dataset", str(ds), "--progress", "False")
    assert "0 error(s)" in out.stdout
    en = root / "Dataset552_CliEchonet"
    echogains("convert-echonet", str(echonet), str(en), "--progress", "False")
    assert "0 error(s)" in echogains("verify-dataset", str(en), "--nnunet_check", "False", "--progress", "False").stdout
    # evaluate the reference masks of the test split against themselves: Dice 1, HD 0
    preds = root / "preds"
    preds.mkdir()
    for f in (ds / "labelsTs").iterdir():
        shutil.copy(f, preds / f.name)
    report = root / "report"
    echogains("evaluate", str(preds), str(ds), str(report), "--overlays", "False", "--progress", "False")
    summary = json.loads((report / "metrics_summary.json").read_text())
    assert summary["segmentation"]["all"]["LV"]["dice"]["mean"] == 1.0
    assert (report / "report.html").is_file() and (report / "metrics_per_case.csv").is_file()


def test_bad_input_is_one_line_exit_2(chain, tmp_path):
    root, camus, _, ds = chain
    proc = echogains("convert-camus", str(tmp_path / "missing"), str(tmp_path / "Dataset553_X"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("echogains: error:") and "missing" in proc.stderr
    assert not (tmp_path / "Dataset553_X").exists()
    proc = echogains("convert-camus", str(camus), str(ds), check=False)  # existing dataset, no --overwrite
    assert proc.returncode == 2 and "overwrite" in proc.stderr


def test_verify_exit_status_on_broken_dataset(chain, tmp_path):
    _, _, _, ds = chain
    broken = tmp_path / "Dataset554_Broken"
    shutil.copytree(ds, broken)
    next((broken / "labelsTr").iterdir()).unlink()
    proc = echogains("verify-dataset", str(broken), "--nnunet_check", "False", "--progress", "False", check=False)
    assert proc.returncode == 1 and "without a label" in proc.stdout


def test_help_lists_commands():
    out = echogains("--help", check=False)
    text = out.stdout + out.stderr
    for command in ("make_phantom", "convert_camus", "convert_echonet", "verify_dataset", "evaluate", "train_ddpm",
                    "expand_dataset", "augmentation_report",
                    "nnunet_env"):
        assert command in text
