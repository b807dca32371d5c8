"""expand-dataset on a tiny phantom with an untrained micro DDPM: output, provenance, folds, determinism, batching,
resume after a kill, shards + merge, the no-repaint baseline, skipped draws and bad inputs."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import echogains.augment.shard as shard_mod
from echogains.augment.expand import (
    RECORDS_DIR,
    expand_dataset,
    frame_keep_mask,
    frame_transform,
    from_unit,
    load_case,
    merge_shards,
    model_input,
    original_pixels,
    prepare_augmentation,
    repaint_frames,
    to_unit,
)
from echogains.augment.settings import ExpansionSettings
from echogains.augment.transforms import TransformPolicy, apply_transforms
from echogains.data.nnunet import RawDataset
from echogains.data.phantom import make_phantom
from echogains.ddpm.model import build_network, get_config, load_ddpm, save_weights
from echogains.geometry import Sector
from echogains.utils import EchoDataError, to_jsonable

K = 2
SCHEDULE = (4, 2, 2)  # 6 network evaluations per image


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    """3 phantom patients (train, val, test), 48 x 40 px, labels LV, MYO, LA."""
    root = tmp_path_factory.mktemp("src") / "Dataset900_Phantom"
    return make_phantom(root, n_patients=3, layout="nnunet", image_size=(48, 40), labels="lv,myo,la", progress=False)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "micro.pt"
    cfg = get_config("micro")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = build_network(cfg)
    save_weights(path, cfg, net.state_dict())
    return path


def _run(src: Path, out: Path, model: Path | None, **kwargs) -> Path:
    args = dict(k=K, batch_size=2, schedule=SCHEDULE, device="cpu", progress=False)
    args.update(kwargs)
    return expand_dataset(src, out, model=model, **args)


@pytest.fixture(scope="module")
def base(tmp_path_factory, src, model) -> Path:
    return _run(src, tmp_path_factory.mktemp("base") / "Dataset901_Aug", model)


def _files(root: Path) -> dict[str, bytes]:
    """Every dataset file (not the sidecar records) by relative path."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and RECORDS_DIR not in p.parts
    }


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_output_cases_geometry_labels_and_provenance(base, src, model):
    ds, source = RawDataset(base), RawDataset(src)
    train = source.splits[0]["train"]
    augs = [f"{c}_aug{k}" for c in train for k in range(1, K + 1)]
    assert ds.case_ids("Tr") == sorted(source.case_ids("Tr") + augs)
    assert ds.case_ids("Ts") == source.case_ids("Ts")
    assert ds.labels == {"background": 0, "LV": 1, "MYO": 2}  # --labels lv,myo: LA dropped
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    for case in augs:
        rec = ds.record(case)
        prov = rec["provenance"]
        source_case = prov["source_case"]
        assert case.startswith(source_case) and rec["patient"] == source.record(source_case)["patient"]
        assert prov["model"]["sha256"] == sha and prov["sampler"]["network_evaluations"] == 6
        assert prov["sampler"]["schedule"] == list(SCHEDULE) and prov["seed"] == 0 and prov["repaint"] is True
        assert 1 <= prov["tries"] <= 30 and prov["label_kept_fraction"] >= 0.5 and prov["frame_size"] == 32
        assert prov["policy"]["min_label_inside"] == 0.5 and prov["policy"]["max_tries"] == 30
        img, ref = ds.read_image(case), source.read_image(source_case)
        unit, rng = to_unit(_array(source.image_path(source_case)))
        sector = Sector.from_dict(prov["source_sector"])
        res = apply_transforms(unit, None, sector, prov["transforms"], (32, 32))
        for attr in ("GetSize", "GetDirection"):
            assert getattr(img, attr)() == getattr(ref, attr)()
        # a depth zoom-out by c makes the pixels c times larger (the anatomy keeps its size in mm), else the same
        assert img.GetSpacing() == pytest.approx(tuple(v * res.pixel_scale for v in ref.GetSpacing()), rel=1e-6)
        assert rec["sector"]["spacing"] == pytest.approx(img.GetSpacing(), rel=1e-5)
        if res.pixel_scale == 1.0:
            assert img.GetSpacing() == ref.GetSpacing() and img.GetOrigin() == ref.GetOrigin()
        assert img.GetNumberOfComponentsPerPixel() == 1 and _array(ds.image_path(case)).dtype == np.uint8
        label = _array(ds.label_path(case))
        assert set(np.unique(label)) <= {0, 1, 2} and label.any()
        # the kept content outside the seam band is the source resampled at full resolution, untouched by the model
        frame_known = frame_transform(unit, sector, prov["transforms"], 32, TransformPolicy()).known
        original = original_pixels(res.known, frame_keep_mask(frame_known, prov["sampler"]["border_px"]))
        assert original.any() and (res.known & ~original).any()
        written = _array(ds.image_path(case))
        np.testing.assert_array_equal(written[original], from_unit(res.image, rng, np.uint8)[original])
    for case in source.case_ids():
        assert 3 not in np.unique(_array(ds.label_path(case)))  # originals: LA removed
        assert ds.image_path(case).read_bytes() == source.image_path(case).read_bytes()  # image copied as is


def test_folds_keep_augmented_copies_with_their_patient(base, src):
    ds, source = RawDataset(base), RawDataset(src)
    assert len(ds.splits) == len(source.splits)
    for out_fold, src_fold in zip(ds.splits, source.splits):
        assert out_fold["val"] == sorted(src_fold["val"])  # validation cases are never augmented
        aug = [c for c in out_fold["train"] if "_aug" in c]
        assert {c.rsplit("_aug", 1)[0] for c in aug} <= set(src_fold["train"])
    assert len([c for c in ds.splits[0]["train"] if "_aug" in c]) == K * len(source.splits[0]["train"])


def test_output_passes_verify_dataset_with_nnunet_check(base):
    from echogains.data.verify import verify_dataset

    report = verify_dataset(base, nnunet_check=True, progress=False)
    assert report.ok, report.summary()
    assert report.num_training == 16 and report.num_test == 4


def test_same_arguments_give_the_same_bytes(base, src, model, tmp_path):
    again = _run(src, tmp_path / "Dataset901_Aug", model)
    assert _files(again) == _files(base)


def test_results_do_not_depend_on_the_batch_size(base, src, model, tmp_path):
    other = _run(src, tmp_path / "Dataset901_Aug", model, batch_size=8)  # all 8 augmentations in one batch
    a, b = _files(base), _files(other)
    assert a.keys() == b.keys()
    for name in a:
        if name.startswith("labelsTr"):
            assert a[name] == b[name]
        elif name.startswith("imagesTr"):  # equal up to the network's batch numerics: at most one grey level
            diff = np.abs(_array(base / name).astype(int) - _array(other / name).astype(int))
            assert diff.max() <= 1


def test_resume_after_a_kill_finishes_without_redoing_or_duplicating(base, src, model, tmp_path, monkeypatch):
    out = tmp_path / "Dataset901_Aug"
    real = shard_mod.write_augmented
    calls: list[str] = []

    def dying(ctx, item):
        if len(calls) == 3:
            raise RuntimeError("killed")
        calls.append(item.case_id)
        real(ctx, item)

    monkeypatch.setattr(shard_mod, "write_augmented", dying)
    with pytest.raises(RuntimeError, match="killed"):
        _run(src, out, model)
    assert not (out / "dataset.json").exists()
    finished = list(calls)
    calls.clear()
    monkeypatch.setattr(shard_mod, "write_augmented", lambda ctx, item: (calls.append(item.case_id), real(ctx, item)))
    _run(src, out, model)
    assert not set(calls) & set(finished) and len(calls) == 2 * K * 2 - 3  # only the missing ones were written
    assert _files(out) == _files(base)
    records = sorted(p.name for p in (out / RECORDS_DIR).iterdir())
    assert len(records) == len(set(records)) == len(RawDataset(out)) + 2  # one per case + the plan + the lock
    assert {"_plan.json", "_lock"} <= set(records)


def test_resume_with_other_arguments_is_refused(src, model, tmp_path, monkeypatch):
    out = tmp_path / "Dataset901_Aug"
    monkeypatch.setattr(shard_mod, "write_augmented", lambda ctx, item: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError):
        _run(src, out, model)
    monkeypatch.undo()
    with pytest.raises(EchoDataError, match="other arguments.*seed"):
        _run(src, out, model, seed=1)


def test_two_shards_and_merge_equal_one_run(base, src, model, tmp_path, monkeypatch):
    out = tmp_path / "Dataset901_Aug"
    _run(src, out, model, shard="0/2")
    assert not (out / "dataset.json").exists()
    with pytest.raises(EchoDataError, match="not finished"):
        merge_shards(out)
    monkeypatch.setenv("RANK", "1")  # the second shard as torchrun would start it
    monkeypatch.setenv("WORLD_SIZE", "2")
    _run(src, out, model)
    assert (out / "dataset.json").exists()
    assert _files(out) == _files(base)
    merge_shards(out)  # an explicit merge (--merge-only) rewrites the same files
    assert _files(out) == _files(base)


def test_no_repaint_baseline_keeps_transforms_and_leaves_black(base, src, tmp_path):
    out = _run(src, tmp_path / "Dataset902_NoRepaint", None, repaint=False, frame_size=32)
    ds, rep = RawDataset(out), RawDataset(base)
    for case in ds.case_ids("Tr"):
        prov = ds.record(case)["provenance"]
        if not prov["augmented"]:
            continue
        assert prov["model"] is None and prov["sampler"] is None and prov["repaint"] is False
        assert prov["transforms"] == rep.record(case)["provenance"]["transforms"]  # same draws as with RePaint
        assert ds.label_path(case).read_bytes() == rep.label_path(case).read_bytes()  # labels never repainted
        source = RawDataset(src)
        unit, _ = to_unit(_array(source.image_path(prov["source_case"])))
        res = apply_transforms(unit, None, Sector.from_dict(prov["source_sector"]), prov["transforms"], (32, 32))
        image = _array(ds.image_path(case))
        assert not image[~res.known].any()  # black outside the kept content
        frame_known = frame_transform(
            unit, Sector.from_dict(prov["source_sector"]), prov["transforms"], 32, TransformPolicy()
        ).known
        border = rep.record(case)["provenance"]["sampler"]["border_px"]
        original = original_pixels(res.known, frame_keep_mask(frame_known, border))
        repainted = _array(rep.image_path(case))
        np.testing.assert_array_equal(image[original], repainted[original])  # the same source pixels
        band = res.known & ~original
        assert np.mean(image[band] != repainted[band]) > 0.5  # the seam band stays repainted


def test_known_pixels_are_identical_after_repainting_in_the_model_frame(src, model):
    source = RawDataset(src)
    mapping = {1: 1, 2: 2}
    net, diffusion, cfg = load_ddpm(model)
    items = [
        prepare_augmentation(load_case(source, c, mapping), k, "combination", 0, cfg.image_size, TransformPolicy())
        for c in source.splits[0]["train"][:2]
        for k in (1, 2)
    ]
    assert all(it.ok for it in items)
    out = repaint_frames(items, net, diffusion, "fast", SCHEDULE, 1, "cpu")
    for it, frame in zip(items, out):
        known = it.frame.known
        keep = frame_keep_mask(known, 1)
        band = known & ~keep
        assert frame.shape == (32, 32) and keep.any() and band.any() and (~known).any()
        np.testing.assert_array_equal(frame[keep], model_input(it)[keep])  # outside the band: bit-identical
        assert np.mean(frame[band] != model_input(it)[band]) > 0.5  # the seam band was generated, not pasted back
        assert np.mean(frame[~known] != model_input(it)[~known]) > 0.5  # the black unknown region was generated


def test_failed_draws_are_skipped_and_recorded(src, tmp_path):
    hopeless = TransformPolicy(translation_px=(600.0, 700.0))  # the label always leaves the image
    out = _run(
        src, tmp_path / "Dataset903_Skip", None, repaint=False, frame_size=32, augment="translation", policy=hopeless
    )
    ds, source = RawDataset(out), RawDataset(src)
    assert ds.case_ids() == source.case_ids() and not any("_aug" in c for s in ds.splits for c in s["train"])
    rec = json.loads((out / RECORDS_DIR / f"{source.splits[0]['train'][0]}_aug1.json").read_text())
    assert rec["status"] == "skipped" and "30 tries" in rec["reason"]
    assert rec["record"]["provenance"]["tries"] == 30


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"src": "missing"}, "dataset folder not found"),
        ({"augment": "rotate"}, "--augment"),
        ({"shard": "2/2"}, "--shard"),
        ({"shard": "one/two"}, "--shard"),
        ({"model": None}, "--model is required"),
        ({"model": "missing.pt"}, "not found"),
        ({"labels": "lv,rv"}, "--labels"),
        ({"sampler": "ddim"}, "sampler"),
        ({"fold": 3}, "--fold"),
        ({"k": 0}, "--k"),
    ],
)
def test_bad_inputs_raise_before_writing(src, model, tmp_path, change, match):
    args = {"src": src, "model": model}
    args.update(change)
    if args["src"] == "missing":
        args["src"] = tmp_path / "missing"
    if args["model"] == "missing.pt":
        args["model"] = tmp_path / "missing.pt"
    out = tmp_path / "Dataset904_Out"
    with pytest.raises(EchoDataError, match=match):
        _run(args.pop("src"), out, args.pop("model"), **args)
    assert not out.exists()


def test_bad_output_folders_are_refused(src, model, tmp_path):
    with pytest.raises(EchoDataError, match="outside the source"):
        _run(src, src / "Dataset905_In", model)
    foreign = tmp_path / "Dataset906_Foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(EchoDataError, match="not an interrupted expansion"):
        _run(src, foreign, model)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    a_file = tmp_path / "Dataset908_File"
    a_file.write_text("mine")
    with pytest.raises(EchoDataError, match="not a folder"):  # the shared output-folder check
        _run(src, a_file, model)
    assert a_file.read_text() == "mine"


def test_settings_round_trip_through_the_plan_in_the_written_order(base):
    saved = json.loads((base / RECORDS_DIR / "_plan.json").read_text())
    # the JSON form stays byte-identical: the keys in the order they were always written
    assert list(saved["settings"]) == [
        "source",
        "augment",
        "k",
        "labels",
        "repaint",
        "sampler",
        "model",
        "seed",
        "fold",
        "batch_size",
        "frame_size",
        "policy",
    ]
    assert list(saved["settings"]["sampler"]) == ["name", "schedule", "network_evaluations", "border_px"]
    assert list(saved["settings"]["model"]) == ["file", "sha256", "config", "image_size"]
    settings = ExpansionSettings.from_dict(saved["settings"])
    assert json.loads(json.dumps(to_jsonable(settings.to_dict()))) == saved["settings"]
    assert settings.sampler.schedule == SCHEDULE and settings.k == K and settings.labels == ("lv", "myo")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.k = K + 1  # type: ignore[misc]


# ----------------------------------------------------------------------------------------------------------------
# Real processes: a merge killed by SIGKILL, two shards starting at the same instant
# ----------------------------------------------------------------------------------------------------------------

_CHILD = r"""
import json, os, sys, time
from pathlib import Path

import torch

torch.set_num_threads(1)
import echogains.data.nnunet as nnunet
from echogains.augment.expand import expand_dataset

args = json.loads(sys.argv[1])
ready, go, delay = Path(args.pop("ready")), args.pop("go", None), args.pop("delay", 0.0)
slow_plan, merging = args.pop("slow_plan", 0.0), args.pop("merging", None)
if slow_plan:  # a slow disk just when the plan appears: widens the window in which another shard could see a half start
    def slowed(real):
        def call(src, dst, *a, **kw):
            if Path(dst).name == "_plan.json":
                time.sleep(slow_plan)
            return real(src, dst, *a, **kw)
        return call
    os.replace, os.link = slowed(os.replace), slowed(os.link)
if merging:  # the merge never ends: the test kills this process (SIGKILL) while it holds the lock
    def hang(self, *a, **kw):
        Path(merging).touch()
        time.sleep(600)
    nnunet.RawDatasetWriter.finalize = hang
ready.touch()
if go:
    while not os.path.exists(go):
        time.sleep(0.001)
if delay:
    time.sleep(delay)
expand_dataset(args.pop("src"), args.pop("out"), **args)
"""

_PLAIN = dict(k=K, batch_size=2, repaint=False, frame_size=32, device="cpu", progress=False)


@pytest.fixture(scope="module")
def plain(tmp_path_factory, src) -> Path:
    """A serial no-repaint expansion (the reference for the process tests)."""
    return _run(src, tmp_path_factory.mktemp("plain") / "Dataset910_Plain", None, repaint=False, frame_size=32)


def _child(tmp: Path, name: str, **args) -> tuple[subprocess.Popen, Path]:
    ready = tmp / f"{name}.ready"
    args = {key: str(v) if isinstance(v, Path) else v for key, v in {**_PLAIN, **args, "ready": ready}.items()}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, json.dumps(args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, ready


def _wait_for(path: Path, *procs: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        for proc in procs:
            if proc.poll() is not None:
                pytest.fail(f"child ended early (rc {proc.returncode}): {proc.stdout.read()}")
        if time.monotonic() > end:
            pytest.fail(f"{path.name} did not appear within {timeout} s")
        time.sleep(0.01)


def test_a_merge_killed_by_sigkill_leaves_no_stale_lock(src, plain, tmp_path):
    out = tmp_path / "Dataset910_Plain"
    proc, ready = _child(tmp_path, "killed", src=src, out=out, merging=tmp_path / "merging")
    try:
        _wait_for(tmp_path / "merging", proc)  # every case is written; the process holds the lock and merges
        lock = out / RECORDS_DIR / "_lock"
        assert f"pid {proc.pid} " in lock.read_text() and "merging" in lock.read_text()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert lock.is_file() and not (out / "dataset.json").exists()
    _run(src, out, None, repaint=False, frame_size=32)  # the same arguments again
    assert (out / "dataset.json").is_file()
    assert _files(out) == _files(plain)


@pytest.mark.parametrize("stagger", [0.0, 0.2], ids=["same-instant", "second-during-first-plan-write"])
def test_two_shards_started_at_the_same_instant_both_finish(src, plain, tmp_path, stagger):
    out = tmp_path / "Dataset910_Plain"
    go = tmp_path / "go"
    procs = []
    try:
        first, ready0 = _child(tmp_path, "shard0", src=src, out=out, shard="0/2", go=go, slow_plan=0.5)
        second, ready1 = _child(tmp_path, "shard1", src=src, out=out, shard="1/2", go=go, delay=stagger)
        procs = [first, second]
        _wait_for(ready0, *procs)
        _wait_for(ready1, *procs)
        go.touch()  # the barrier: both start now
        logs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=30)
    assert [p.returncode for p in procs] == [0, 0], logs
    assert (out / "dataset.json").is_file()
    assert _files(out) == _files(plain)


def test_two_runs_with_other_arguments_at_the_same_instant_do_not_mix(src, plain, tmp_path):
    out = tmp_path / "Dataset910_Plain"
    go = tmp_path / "go"
    procs = []
    try:
        for seed in (0, 1):  # seed 0 writes its plan slowly: the other one is then sure to come while it does
            procs.append(
                _child(tmp_path, f"seed{seed}", src=src, out=out, seed=seed, go=go, slow_plan=0.5 * (1 - seed))
            )
        for _, ready in procs:
            _wait_for(ready, *(p for p, _ in procs))
        go.touch()
        logs = [p.communicate(timeout=120)[0] for p, _ in procs]
    finally:
        for p, _ in procs:
            p.kill()
            p.wait(timeout=30)
    codes = [p.returncode for p, _ in procs]
    assert sorted(codes) == [0, 1], logs  # exactly one is refused ...
    loser = codes.index(1)
    assert "an interrupted expansion with other arguments is here" in logs[loser] and "seed" in logs[loser]
    winner = 1 - loser  # ... and the other one's dataset is exactly its serial run
    reference = (
        plain if winner == 0 else _run(src, tmp_path / "serial" / out.name, None, repaint=False, frame_size=32, seed=1)
    )
    assert _files(out) == _files(reference)


def test_validation_copies_are_the_papers_option_and_originals_only_the_default(base, src, tmp_path):
    from nnunet_ext.splits import echo_split

    source = RawDataset(src)
    val = source.splits[0]["val"]
    out = _run(src, tmp_path / "Dataset907_Val", None, repaint=False, frame_size=32, augment_validation=True)
    ds = RawDataset(out)
    copies = [f"{c}_aug{j}" for c in val for j in range(1, K + 1)]
    assert sorted(ds.splits[0]["val"]) == sorted(val + copies)  # Sec. 2.6: validation set = originals + copies
    assert all(ds.record(c)["provenance"]["validation_copy"] is True for c in copies)
    train_copies = [c for c in ds.splits[0]["train"] if "_aug" in c]
    assert train_copies and not any(ds.record(c)["provenance"]["validation_copy"] for c in train_copies)
    records = json.loads((out / "cases.json").read_text())
    train, validation = echo_split(ds.splits, 0, records, ds.case_ids("Tr"))
    assert validation == sorted(val + copies)  # the Echo trainers validate on them
    assert not {ds.record(c)["patient"] for c in train} & {ds.record(c)["patient"] for c in validation}
    # the default (originals-only validation, the documented deviation): no copy of a validation case anywhere
    default = RawDataset(base)
    assert default.splits[0]["val"] == sorted(val)
    assert not any(c.startswith(tuple(val)) and "_aug" in c for c in default.case_ids("Tr"))
    train, validation = echo_split(
        default.splits, 0, json.loads((base / "cases.json").read_text()), default.case_ids("Tr")
    )
    assert validation == sorted(val)
