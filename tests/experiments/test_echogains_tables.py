"""experiments/echogains_tables.py without nnU-Net: arms, directions, argument checks, tables from evaluator outputs
(predictions = the ground-truth labels, so Dice must be 1), the report files and the resume logic."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest

from echogains.data.nnunet import RawDataset
from echogains.data.phantom import make_phantom
from echogains.evaluation.evaluate import evaluate
from echogains.utils import EchoDataError, atomic_write_json, read_json
from experiments import echogains_tables as et
from experiments.common import check_resume


def test_arms_expand_to_the_paper_rows() -> None:
    assert et.arm_spec("none") == et.Arm("none", None, True)
    assert et.arm_spec("depth") == et.Arm("depth", "depth", True)
    assert et.arm_spec("combination_no_repaint") == et.Arm("combination_no_repaint", "combination", False)
    assert [et.arm_spec(a).label for a in et.ARMS][-1] == "combination without repaint"
    with pytest.raises(EchoDataError, match="unknown arm 'zoom'"):
        et.arm_spec("zoom")


def test_directions_quick_and_full() -> None:
    quick = et.plan_directions(True)
    assert [d.title for d in quick] == ["lv-focused -> camus-like", "camus-like -> lv-focused"]
    assert quick[0].arms == et.ARMS and quick[1].arms == et.QUICK_REVERSE_ARMS
    assert (quick[0].depth_cut_mm, quick[0].angle_cut_deg) == (150.0, 70.0)  # the paper's, inside camus-like
    full = et.plan_directions(False)
    assert full[1].arms == et.ARMS
    only = et.plan_directions(True, arms="none,tilt", reverse=False)
    assert len(only) == 1 and only[0].arms == ("none", "tilt")
    with pytest.raises(EchoDataError, match="both --train_dataset and --test_dataset"):
        et.plan_directions(True, train_dataset="somewhere")
    with pytest.raises(EchoDataError, match="not an nnU-Net raw dataset"):
        et.plan_directions(True, train_dataset="/nonexistent/a", test_dataset="/nonexistent/b")
    with pytest.raises(EchoDataError, match="unknown arm"):
        et.plan_directions(True, arms="none,blur")
    hard = et.plan_directions(True, test_preset="hard")  # the CAMUS-calibrated phantom stands in for CAMUS
    assert [d.title for d in hard] == ["lv-focused -> hard", "hard -> lv-focused"]
    assert (hard[0].depth_cut_mm, hard[0].angle_cut_deg) == (150.0, 70.0)  # hard has camus-like geometry
    assert (hard[1].depth_cut_mm, hard[1].angle_cut_deg) == (140.0, 62.0)
    with pytest.raises(EchoDataError, match="--test_preset"):
        et.plan_directions(True, test_preset="lv-focused")


def _settings(**kw):
    base = dict(
        n_train=None,
        n_test=None,
        image_size=None,
        k=None,
        sampler=None,
        trainer=None,
        ddpm=None,
        device="cpu",
        tta=None,
        test_subset="all",
        train_dataset=None,
        test_dataset=None,
    )
    base.update(kw)
    return et.make_settings(True, 0, et.plan_directions(True), **base)


def test_settings_defaults_and_bad_values() -> None:
    s = _settings()
    assert (s.mode, s.n_train, s.k, s.sampler, s.trainer, s.tta, s.image_size) == (
        "quick",
        8,
        1,
        "fast",
        "nnUNetTrainerEchoQuick",
        False,
        64,
    )
    full = et.make_settings(
        False,
        0,
        et.plan_directions(False),
        **{
            **dict(
                n_train=None,
                n_test=None,
                image_size=None,
                k=None,
                sampler=None,
                trainer=None,
                ddpm=None,
                device="cpu",
                tta=None,
                test_subset="all",
                train_dataset=None,
                test_dataset=None,
            )
        },
    )
    assert (full.k, full.sampler, full.trainer, full.image_size, full.tta) == (
        5,
        "repaint",
        "nnUNetTrainerEcho",
        256,
        True,
    )
    for kw, message in (
        (dict(n_train=1), "--n_train"),
        (dict(k=0), "--k"),
        (dict(sampler="ddim"), "--sampler"),
        (dict(device="tpu"), "--device"),
        (dict(test_subset="val"), "--test_subset"),
        (dict(ddpm="/nonexistent/ddpm.pt"), "DDPM weights not found"),
    ):
        with pytest.raises(EchoDataError, match=message):
            _settings(**kw)


def test_run_rejects_bad_arguments_before_writing(tmp_path: Path) -> None:
    with pytest.raises(EchoDataError, match="--jobs"):
        et.run(out=str(tmp_path / "out"), work=str(tmp_path / "work"), quick=True, jobs=0)
    with pytest.raises(EchoDataError, match="inside --work"):
        et.run(out=str(tmp_path / "work" / "out"), work=str(tmp_path / "work"), quick=True)
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A camus-like phantom test set, predictions = its labels, evaluated as the experiment evaluates."""
    root = tmp_path_factory.mktemp("eg")
    ds = make_phantom(
        root / "Dataset950_Test",
        n_patients=6,
        preset="camus-like",
        layout="nnunet",
        labels="lv,myo",
        image_size=(48, 48),
        seed=5,
        progress=False,
    )
    raw = RawDataset(ds)
    pred = root / "pred"
    pred.mkdir()
    for case in raw.case_ids("all"):
        shutil.copyfile(raw.label_path(case), pred / f"{case}.nii.gz")
    summary = evaluate(pred, ds, root / "evaluation", subset="all", overlays=False, progress=False)
    return ds, root / "evaluation", summary


def test_tables_from_perfect_predictions(evaluated) -> None:
    ds, evaluation, summary = evaluated
    rows = et.table3_rows({"none": summary, "combination": summary})
    assert [r["arm"] for r in rows] == ["no augmentation", "combination"]
    assert rows[0]["lv_dice_mean"] == pytest.approx(1.0) and rows[0]["lv_hd_mean"] == pytest.approx(0.0)
    assert rows[0]["lv_dice"].startswith("1.000 ± 0.000") and rows[0]["n"] == 24
    assert rows[0]["ef_n"] == 6 and abs(rows[0]["ef_bias"]) < 10  # GT masks vs analytic reference: small bias
    subsets = et.subset_rows(evaluation / "metrics_per_case.csv", 150.0, 70.0)
    # same cut-offs as the evaluator's own Table 4 groups -> same subset sizes
    seg = summary["segmentation"]
    # the oracle: group sizes from the phantom's own sector records (cases.json), not from the evaluator's CSV
    sectors = [record["sector"] for record in json.loads((ds / "cases.json").read_text()).values()]
    expected = {
        "depth<150mm": sum(s["depth_mm"] < 150 for s in sectors),
        "depth>=150mm": sum(s["depth_mm"] >= 150 for s in sectors),
        "angle<70deg": sum(s["opening_deg"] < 70 for s in sectors),
        "angle>=70deg": sum(s["opening_deg"] >= 70 for s in sectors),
    }
    assert expected["depth<150mm"] and expected["depth>=150mm"] and expected["angle>=70deg"]  # the data span the cuts
    for name, n in expected.items():
        assert subsets[name]["n"] == n, name
        assert (name in seg) == (n > 0), name  # the evaluator's summary lists exactly the non-empty groups
        if n:
            assert seg[name]["LV"]["n_cases"] == n, name
            assert subsets[name]["dice"]["mean"] == pytest.approx(1.0)
    assert subsets["depth<150mm"]["n"] + subsets["depth>=150mm"]["n"] == 24
    t4, columns = et.table4_rows({"none": subsets})
    assert columns["depth<150mm_dice"].startswith("Dice depth<150mm (n=")
    assert "| no augmentation |" in et.markdown_table(t4, columns)


def test_seeded_rows_intervals_and_resolved_differences(evaluated, tmp_path: Path) -> None:
    """Perfect predictions (Dice 1) against copies 0.2 worse on one patient's images: the difference is resolved
    only when it holds on every seed and its interval is as the bootstrap over patients says."""
    import csv

    _, evaluation, summary = evaluated
    rows = list(csv.DictReader(open(evaluation / "metrics_per_case.csv", newline="")))
    patients = sorted({r["patient"] for r in rows})
    worse = [dict(r, LV_dice=str(float(r["LV_dice"]) - 0.2)) for r in rows]  # every image 0.2 lower
    one = [dict(r, LV_dice=str(float(r["LV_dice"]) - (0.2 if r["patient"] == patients[0] else 0.0))) for r in rows]
    per_seed = {
        "none": {s: (summary, rows) for s in (0, 1, 2)},
        "depth": {s: (summary, worse) for s in (0, 1, 2)},
        "tilt": {s: (summary, one) for s in (0, 1, 2)},
    }
    table = {r["arm_key"]: r for r in et.seeded_table3_rows(per_seed, n_boot=500)}
    assert table["none"]["lv_dice_ci"] == "1.000 [1.000, 1.000]" and "lv_dice_delta" not in table["none"]
    assert table["depth"]["lv_dice_delta_mean"] == pytest.approx(-0.2)
    assert table["depth"]["lv_dice_delta"] == "-0.200 [-0.200, -0.200]"
    assert table["depth"]["lv_dice_resolved"] == "yes, worse"
    # one patient of six worse by 0.2: mean difference -0.2/6; patient resampling can leave that patient out
    assert table["tilt"]["lv_dice_delta_mean"] == pytest.approx(-0.2 / len(patients))
    assert table["tilt"]["lv_dice_delta_upper"] == pytest.approx(0.0) and table["tilt"]["lv_dice_resolved"] == "no"
    assert table["tilt"]["lv_dice_delta_lower"] < -0.2 / len(patients)


def test_report_and_resume(evaluated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds, evaluation, _ = evaluated
    work, out = tmp_path / "work", tmp_path / "out"
    settings = _settings(n_test=6)
    direction = et.plan_directions(True, arms="none,combination", reverse=False)[0]
    check_resume(work, settings.comparable(), overwrite=False)
    with pytest.raises(EchoDataError, match="other settings"):
        check_resume(work, _settings(n_test=7).comparable(), overwrite=False)
    check_resume(work, settings.comparable(), overwrite=False)  # same settings: resume allowed
    assert settings.train_seeds == [0, 1, 2]
    # every step of the 'none' arm looks finished: run_chain must not call expand, nnU-Net or evaluate
    folder = et.arm_dir(work, direction, "none")
    atomic_write_json(folder / "planned.json", {})
    for seed in settings.train_seeds:
        shutil.copytree(evaluation, et.seed_dir(work, direction, "none", seed) / "evaluation")
        atomic_write_json(et.seed_dir(work, direction, "none", seed) / "predicted.json", {})
        nn_model = work / "nnUNet_results" / f"seed{seed}" / et.train_dataset_dir(work, direction).name
        ckpt = nn_model / f"{settings.trainer}__nnUNetPlans__2d" / "fold_0" / "checkpoint_final.pth"
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"")

    def boom(*args, **kwargs):
        raise AssertionError("a finished step was recomputed")

    import echogains.evaluation.evaluate as ev
    import echogains.nnunet_runner as runner

    for name in ("plan_and_preprocess", "train", "predict"):
        monkeypatch.setattr(runner.NnUNet, name, boom)
    monkeypatch.setattr(ev, "evaluate", boom)
    record = et.run_chain(str(work), asdict(settings), asdict(direction), "none")
    assert record["timings"] == {} and read_json(folder / "result.json") == record
    assert et.run_chain(str(work), asdict(settings), asdict(direction), "none") == record  # from result.json
    # the report: the finished arm in both tables, the unfinished one listed, plots written
    (out).mkdir()
    md, results = et.build_report(work, out, settings, [direction], {("A", "none"): record})
    assert "| no augmentation | 0,1,2 | 24 | 1.000 ± 0.000 | 1.000 [1.000, 1.000] | – | – | 0.0 ± 0.0 |" in md
    assert "Not finished: combination." in md
    assert results["directions"]["A"]["table3"][0]["lv_dice_mean"] == pytest.approx(1.0)
    assert (out / "dice_hd_per_arm.png").stat().st_size > 1000
    assert (out / "bland_altman" / "A_none.png").is_file()
