"""The bundle and the nnU-Net plugin are found without importing them, with one clear error when absent."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from echogains import locate
from echogains.nnunet_runner import NnUNet
from echogains.utils import EchoDataError

REPO = Path(__file__).resolve().parents[1]


def test_bundle_from_argument_then_environment_then_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv(locate.BUNDLE_VARIABLE, str(tmp_path / "env"))
    assert locate.find_bundle(tmp_path / "arg") == tmp_path / "arg"
    assert locate.find_bundle() == tmp_path / "env"
    monkeypatch.delenv(locate.BUNDLE_VARIABLE)
    assert locate.find_bundle() == REPO / "bundles" / "echo_dnd"
    monkeypatch.setattr(locate, "REPOSITORY_BUNDLE", tmp_path / "not_a_checkout")
    with pytest.raises(
        EchoDataError, match="no Echo-DND bundle found.*--bundle_root FOLDER or set ECHOGAINS_ECHO_DND_BUNDLE"
    ):
        locate.find_bundle()


def test_plugin_located_not_imported_and_its_absence_named(tmp_path, monkeypatch):
    assert locate.nnunet_trainer_dir() == REPO / "nnunet_ext" / "trainers"
    env = NnUNet(raw=tmp_path / "raw").environ()
    assert env["nnUNet_extTrainer"] == str(REPO / "nnunet_ext" / "trainers")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nnunet_ext" else real(name, *a))
    with pytest.raises(EchoDataError, match="the nnunet_ext package is not installed"):
        NnUNet(raw=tmp_path / "raw").environ()
