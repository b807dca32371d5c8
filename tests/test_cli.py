"""The ``echogains`` command as a user types it: one run per data command, errors as one line with exit 2.

The data the commands run on is made in this process (``echogains.cli.main``, the console script's entry, with the
same arguments), and the full command list of ``--help`` is read there too; the commands under test run as
``python -m echogains`` in a fresh interpreter. (``tests/test_end_to_end.py`` runs make-phantom and convert-camus as
console scripts.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

ENV = {**os.environ, "ECHOGAINS_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "nnUNet_def_n_proc": "1"}


def in_process(*args: str) -> None:
    """``echogains ARGS`` through the console script's entry point in this process; fails unless it returns."""
    from echogains.cli import main

    try:
        main(list(args))
    except SystemExit as stop:
        raise AssertionError(f"echogains {' '.join(args)} exited with {stop.code}") from None


def echogains(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "echogains", *args], capture_output=True, text=True, env=ENV)
    if check and proc.returncode != 0:
        raise AssertionError(f"echogains {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    camus, echonet = root / "camus", root / "echonet"
    in_process("make-phantom", str(camus), "--n_patients", "6", "--seed", "3", "--progress", "False")
    in_process("make-phantom", str(echonet), "--n_patients", "4", "--layout", "echonet", "--progress", "False")
    ds = root / "Dataset551_CliCamus"
    in_process("convert-camus", str(camus), str(ds), "--labels", "lv,myo", "--progress", "False")
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


def test_help_lists_commands(capsys):
    from echogains.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code in (0, None)
    out = capsys.readouterr()
    text = out.out + out.err
    for command in (
        "make_phantom",
        "convert_camus",
        "convert_echonet",
        "verify_dataset",
        "evaluate",
        "train_ddpm",
        "expand_dataset",
        "augmentation_report",
        "nnunet_env",
    ):
        assert command in text


# --- options and help come from the library functions ---------------------------------------------------------------
#: Every command's options in order with their defaults, as the command line has always had them (a changed name,
#: order or default is a change of the command line, not of a docstring).
OPTIONS = {
    "make_phantom": "out n_patients=10 preset='camus-like' layout='camus-nifti' seed=0 sequence=False "
    "labels='lv,myo,la' image_size=None overwrite=False progress=True **overrides",
    "convert_camus": "src out labels='lv,myo,la' views='2CH,4CH' phases='ED,ES' n_folds=5 seed=0 overwrite=False "
    "skip_bad=False progress=True",
    "convert_echonet": "src out skip_bad=False limit=None overwrite=False progress=True",
    "verify_dataset": "dataset nnunet_check=True num_processes=1 progress=True",
    "evaluate": "pred dataset out subset='Ts' labels=None overlays=True interval_members=None progress=True",
    "train_ddpm": "data out config='tiny' steps=None batch_size=None lr=None ema=None seed=0 resume=True "
    "sample_every=1000 checkpoint_every=1000 device=None max_narrowing_deg=20.0 fold=0 "
    "include_validation=False all_patients=False vb_weighting='rescaled' accumulate=1 precision='auto' "
    "checkpointing='auto' progress=True",
    "expand_dataset": "src out model=None augment='combination' k=5 labels='lv,myo' no_repaint=False sampler='fast' "
    "seed=0 fold=0 shard=None batch_size=8 device=None overwrite=False schedule=None merge_only=False "
    "augment_validation=False depth_mode='zoom' kept_region='original_sector' progress=True",
    "augmentation_report": "dataset out model=None n_samples=8 max_cases=50 seed=0 device=None progress=True",
    "analyze": "input out model='echo_dnd' model_path=None bundle_root=None views='auto' skip_bad=False "
    "require_spacing=False fps=None spacing_mm=None num_steps=5 ensemble=4 batch_size=8 seed=0 fold=0 "
    "checkpoint='checkpoint_final.pth' tta=True device='cpu' min_beat_s=0.3 detect_on='area' overlay=True "
    "overwrite=False progress=True",
    "nnunet_env": "shell='bash'",
}


def _options(command) -> str:
    import inspect

    def show(p: inspect.Parameter) -> str:
        if p.kind is p.VAR_KEYWORD:
            return f"**{p.name}"
        return p.name if p.default is p.empty else f"{p.name}={p.default!r}"

    return " ".join(show(p) for p in inspect.signature(command).parameters.values())


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_options_and_defaults_unchanged(name) -> None:
    from echogains.cli import EchoGains

    assert _options(getattr(EchoGains, name)) == OPTIONS[name]


def test_commands_are_the_listed_ones() -> None:
    from echogains.cli import EchoGains

    assert sorted(n for n in dir(EchoGains) if not n.startswith("_")) == sorted(OPTIONS)


@pytest.mark.parametrize("name", sorted(set(OPTIONS) - {"nnunet_env"}))
def test_help_is_the_library_docstring(name) -> None:
    """Every option is documented, and by the library function's own words (renamed options by their new name)."""
    import inspect

    from echogains.cli import EchoGains, arg_docs

    command = getattr(EchoGains, name)
    spec = EchoGains.__dict__[name]
    library = spec.loader()
    docs, library_docs = arg_docs(command.__doc__), arg_docs(library.__doc__)
    assert command.__doc__.splitlines()[0] == inspect.cleandoc(library.__doc__).splitlines()[0]
    own = {o.name for o in spec.options()}
    back = {new: old for old, new in spec.rename.items()}
    for option in inspect.signature(command).parameters:
        assert docs.get(option), f"{name}: --{option} has no help"
        if option not in own:
            old = back.get(option, option)
            if old not in library_docs and option == "progress":  # the older names of the progress switch
                old = next(a for a in ("show_progress", "verbose") if a in library_docs)
            expected = library_docs[old]
            for a, b in spec.rename.items():
                expected = re.sub(rf"``{a}\b", f"``{b}", expected)
            assert docs[option] == expected, f"{name}: --{option}"


def test_help_output_shows_the_library_docs() -> None:
    out = echogains("make-phantom", "--help", check=False)
    text = out.stdout + out.stderr
    assert "(rows, cols)" in text and "(EchoNet-Dynamic: AVI + FileList.csv + VolumeTracings.csv)" in text
    assert "OUT" in text and "--n_patients" in text


def test_rewrite_doc() -> None:
    from echogains.cli import arg_docs, rewrite_doc

    doc = """Do it.

    Args:
        out_dir: the folder; see ``out_dir``.
        secret: not an option.
        layout: ``echonet``
            (EchoNet-Dynamic: AVI + CSV), or ``dicom``.

    Returns:
        The folder.
    """
    text = rewrite_doc(doc, {"out_dir": "out"}, ["secret"], {"extra": "added."})
    assert arg_docs(text) == {
        "out": "the folder; see ``out``.",
        "layout": "``echonet`` (EchoNet-Dynamic: AVI + CSV), or ``dicom``.",
        "extra": "added.",
    }
    assert text.splitlines()[0] == "Do it." and text.rstrip().endswith("Returns:\n    The folder.")
