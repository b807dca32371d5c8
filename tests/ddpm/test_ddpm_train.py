"""DDPM training: data sources, sector narrowing, checkpoints (kill + resume == uninterrupted), sample grids, DDP."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from echogains.data.nnunet import RawDatasetWriter, make_image, write_image
from echogains.ddpm import images as images_mod
from echogains.ddpm import train as train_mod
from echogains.ddpm.model import get_config, load_ddpm
from echogains.ddpm.train import (
    DDPMTrainer,
    TrainSettings,
    find_image_files,
    load_training_images,
    make_batch,
    narrow_sector,
    train_ddpm,
)
from echogains.geometry import Sector
from echogains.utils import EchoDataError

CFG = get_config("micro", num_timesteps=1000)


def _sector_image(
    size: int,
    rng: np.random.Generator,
    opening: float = 72.0,
    cols: int | None = None,
    spacing: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """A speckled uint8 sector image (apex at the top centre, circular in mm), black outside."""
    sx, sy = spacing
    shape = (size, cols or size)
    apex = ((shape[1] / 2 - 0.5) * sx, -sy)
    sector = Sector(apex, -opening / 2, opening / 2, r_max=0.95 * size * sy, spacing=spacing)
    speckle = ndimage.gaussian_filter(rng.rayleigh(1.0, shape), 0.7) * 80 + 40
    return (speckle.clip(0, 255) * sector.mask(shape)).astype(np.uint8)


def _png_folder(root: Path, n: int = 4, size: int = 48) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cv2.imwrite(str(root / f"img{i}.png"), _sector_image(size, rng))
    cv2.imwrite(str(root / "img0_gt.png"), np.zeros((size, size), np.uint8))  # labels are skipped
    return root


def test_find_sources_nnunet_camus_and_folder(tmp_path):
    rng = np.random.default_rng(1)
    # nnU-Net raw dataset: imagesTr only (test images stay unseen)
    ds = tmp_path / "Dataset001_Toy"
    writer = RawDatasetWriter(ds, {"background": 0, "LV": 1})
    for i in range(3):
        label = np.zeros((40, 40), np.uint8)
        label[10:20, 10:20] = 1
        writer.add_case(f"p{i}_4CH_ED", _sector_image(40, rng), label, spacing=(0.3, 0.3), test=i == 2)
    writer.finalize(n_folds=2)
    kind, files = find_image_files(ds)  # fold 0's training half: one case (the other is its validation case)
    assert kind == "nnunet" and len(files) == 1 and all("imagesTr" in str(f) for f in files)
    assert len(find_image_files(ds, include_validation=True)[1]) == 2
    # CAMUS: sequences, every N-th frame with N in 8..12
    camus = tmp_path / "camus" / "patient0001"
    camus.mkdir(parents=True)
    seq = np.stack([_sector_image(40, rng, cols=20, spacing=(0.3, 0.15)) for _ in range(30)])
    img = sitk.GetImageFromArray(seq)
    img.SetSpacing((0.3, 0.15, 1.0))
    write_image(img, camus / "patient0001_4CH_half_sequence.nii.gz")
    write_image(make_image(seq[0]), camus / "patient0001_4CH_ED.nii.gz")
    write_image(make_image((seq[0] > 0).astype(np.uint8)), camus / "patient0001_4CH_ED_gt.nii.gz")
    with pytest.raises(EchoDataError, match="all_patients"):  # no split files: its test patients are unknown
        find_image_files(tmp_path / "camus")
    kind, files = find_image_files(tmp_path / "camus", all_patients=True)
    assert kind == "camus" and [f.name for f in files] == ["patient0001_4CH_half_sequence.nii.gz"]
    data = load_training_images(tmp_path / "camus", 32, seed=3, all_patients=True)
    n = int(data.sources[1].split("frame ")[1].rstrip("]"))
    assert 8 <= n <= 12 and len(data) == len(range(0, 30, n))
    assert data.images.shape[1:] == (32, 32) and data.images.dtype == np.uint8
    assert all(s is not None for s in data.sectors)
    # the physical size is kept: 20 x 0.3 mm wide and 40 x 0.15 mm deep over 32 x 32 pixels
    assert data.sectors[0].spacing == pytest.approx((0.3 * 20 / 32, 0.15 * 40 / 32))
    assert data.sectors[0].opening_deg == pytest.approx(72, abs=4)
    assert np.array_equal(load_training_images(tmp_path / "camus", 32, seed=3, all_patients=True).images, data.images)
    # folder of PNGs
    kind, files = find_image_files(_png_folder(tmp_path / "pngs"))
    assert kind == "folder" and len(files) == 4
    (tmp_path / "empty").mkdir()
    with pytest.raises(EchoDataError, match="no training images"):
        find_image_files(tmp_path / "empty")


def test_camus_test_patients_never_reach_the_ddpm(tmp_path):
    from tests.data.fixtures import patient_name, write_camus

    splits = {"training": [1, 2], "validation": [3], "testing": [4, 5]}
    root = write_camus(tmp_path / "CAMUS", "nifti", patients=(1, 2, 3, 4, 5), splits=splits)

    def patients(sources):
        return {p for p in (patient_name(i) for i in range(1, 6)) if any(p in s for s in sources)}

    kind, files = find_image_files(root)
    assert kind == "camus" and patients(map(str, files)) == {"patient0001", "patient0002"}
    assert not any(f.name.endswith(("_gt.nii.gz",)) for f in files)
    _, with_val = find_image_files(root / "database_nifti", include_validation=True)  # the release folder itself
    assert patients(map(str, with_val)) == {"patient0001", "patient0002", "patient0003"}
    # the whole training run: only the training patients' images are read, recorded in config.json
    read: list[str] = []
    real = images_mod._read_frames
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(images_mod, "_read_frames", lambda path, *a: (read.append(str(path)), real(path, *a))[1])
        train_ddpm(
            root,
            tmp_path / "run",
            config=CFG,
            steps=1,
            batch_size=2,
            sample_every=0,
            n_samples=1,
            progress=False,
            max_narrowing_deg=0.0,
        )
    assert read and patients(read) == {"patient0001", "patient0002"}
    record = train_mod.read_json(tmp_path / "run" / "config.json")
    assert record["selection"] == {"fold": 0, "include_validation": False, "all_patients": False, "files": len(read)}
    # a raw folder without split files is refused unless asked for every patient
    (root / "database_split").rename(tmp_path / "hidden_split")
    with pytest.raises(EchoDataError, match="all_patients"):
        find_image_files(root)
    assert len(patients(map(str, find_image_files(root, all_patients=True)[1]))) == 5


def test_dataset_validation_and_test_cases_never_reach_the_ddpm(tmp_path):
    from echogains.data.nnunet import RawDataset
    from echogains.data.phantom import make_phantom

    root = make_phantom(tmp_path / "Dataset990_P", n_patients=4, layout="nnunet", image_size=(40, 36), progress=False)
    ds = RawDataset(root)
    train, val, test = ds.case_ids("train", 0), ds.case_ids("val", 0), ds.case_ids("Ts")
    assert train and val and test
    _, files = find_image_files(root)
    assert sorted(f.name for f in files) == sorted(ds.image_path(c).name for c in train)
    _, files = find_image_files(root, include_validation=True)
    assert sorted(f.name for f in files) == sorted(ds.image_path(c).name for c in train + val)


def test_narrow_sector_cuts_and_stretches_back():
    size = 64
    rng = np.random.default_rng(0)
    sector = Sector(apex=(size / 2 - 0.5, -1.0), theta_min=-30, theta_max=30, r_max=0.95 * size)
    img = _sector_image(size, rng, opening=60.0).astype(np.float32) / 255
    assert np.array_equal(narrow_sector(img, sector, 0.0), img)
    out = narrow_sector(img, sector, 20.0)
    # (1) the cut sector, stretched back, spans the original sector's columns again
    cols_in, cols_out = np.flatnonzero(img.any(0)), np.flatnonzero(out.any(0))
    assert abs(cols_out[0] - cols_in[0]) <= 1 and abs(cols_out[-1] - cols_in[-1]) <= 1
    # (2) the centre column is unchanged (symmetric cut about the bisector)
    # (below the apex, where the narrowed sector covers that column)
    np.testing.assert_allclose(out[4:, size // 2 - 1], img[4:, size // 2 - 1], atol=0.05)
    # (3) a narrower sector: on a shallow row the content is narrower, stretched away from the edges
    row = 10
    assert np.count_nonzero(out[row]) >= np.count_nonzero(img[row])
    assert out.min() >= 0 and out.max() <= 1


def test_make_batch_is_seeded_and_scaled(tmp_path):
    data = load_training_images(_png_folder(tmp_path / "pngs"), 32, seed=0)
    a = make_batch(data, np.random.default_rng(4), 3, 20.0)
    b = make_batch(data, np.random.default_rng(4), 3, 20.0)
    assert a.shape == (3, 1, 32, 32) and torch.equal(a, b)
    assert a.min() >= -1 and a.max() <= 1 and a.min() == -1  # black background maps to -1


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["step"] == b["step"]
    for key in ("model", "ema"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(pa["exp_avg"], pb["exp_avg"]) and torch.equal(pa["exp_avg_sq"], pb["exp_avg_sq"])


def test_kill_and_resume_gives_the_uninterrupted_weights(tmp_path, monkeypatch):
    data = _png_folder(tmp_path / "pngs")
    kw = dict(config=CFG, steps=4, batch_size=2, seed=1, checkpoint_every=2, sample_every=0, progress=False)
    ref = train_ddpm(data, tmp_path / "a", **kw)
    assert ref.name == "ddpm_ema.pt" and (tmp_path / "a" / "checkpoint.pt").is_file()

    real_step = DDPMTrainer.train_step

    def dying_step(self, step):
        if step == 3:
            raise RuntimeError("killed")  # a crash after the step-2 checkpoint, before step 3 completes
        return real_step(self, step)

    monkeypatch.setattr(DDPMTrainer, "train_step", dying_step)
    with pytest.raises(RuntimeError, match="killed"):
        train_ddpm(data, tmp_path / "b", **kw)
    assert _state(tmp_path / "b" / "checkpoint.pt")["step"] == 2
    monkeypatch.setattr(DDPMTrainer, "train_step", real_step)
    train_ddpm(data, tmp_path / "b", **kw)
    _assert_same_state(_state(tmp_path / "a" / "checkpoint.pt"), _state(tmp_path / "b" / "checkpoint.pt"))
    # the exported EMA weights load for sampling
    net, diffusion, cfg = load_ddpm(tmp_path / "b" / "ddpm_ema.pt")
    assert cfg == CFG and diffusion.num_timesteps == 1000
    # a different config in the same folder is refused before anything is written
    with pytest.raises(EchoDataError, match="checkpoint was trained with config"):
        train_ddpm(data, tmp_path / "b", **{**kw, "config": get_config("micro")})


def test_sample_grid_and_history(tmp_path):
    import cv2

    data = _png_folder(tmp_path / "pngs")
    out = tmp_path / "run"
    train_ddpm(
        data, out, config=CFG, steps=2, batch_size=2, sample_every=2, n_samples=4, sample_steps=3, progress=False
    )
    grid = cv2.imread(str(out / "samples" / "step_0000002.png"), cv2.IMREAD_UNCHANGED)
    assert grid.shape == (2 * 34, 2 * 34) and grid.dtype == np.uint8
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary files left
    hist = train_mod.read_history(out)
    assert hist[-1]["step"] == 2 and np.isfinite(hist[-1]["loss"])


def test_bad_inputs_raise_before_writing(tmp_path):
    with pytest.raises(EchoDataError, match="not found"):
        train_ddpm(tmp_path / "nope", tmp_path / "out", config=CFG, steps=1, progress=False)
    data = _png_folder(tmp_path / "pngs")
    (data / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(EchoDataError, match="broken.png"):
        train_ddpm(data, tmp_path / "out", config=CFG, steps=1, progress=False)
    assert not (tmp_path / "out").exists()


# --- DDP (2 gloo processes on CPU) -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_settings() -> TrainSettings:
    return TrainSettings(
        steps=2,
        batch_size=4,
        lr=1e-4,
        ema=0.9999,
        seed=0,
        max_narrowing_deg=20.0,
        sample_every=0,
        checkpoint_every=2,
        n_samples=1,
        sample_steps=1,
    )


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    images = load_training_images(data, CFG.image_size, seed=0)
    trainer = DDPMTrainer(images, out, CFG, _ddp_settings(), device="cpu", progress=False)
    trainer.run()
    torch.save({k: v.clone() for k, v in trainer.model.state_dict().items()}, Path(out).parent / f"rank{rank}.pt")


def test_ddp_two_gloo_processes_agree(tmp_path):
    import torch.multiprocessing as mp

    data = _png_folder(tmp_path / "pngs")
    out = tmp_path / "ddp"
    # fork (not spawn) keeps the test fast; the workers use one thread, so no OpenMP pool crosses the fork
    args = (2, _free_port(), str(data), str(out))
    mp.start_processes(_ddp_worker, args=args, nprocs=2, join=True, start_method="fork")
    w0, w1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    ckpt = _state(out / "checkpoint.pt")  # written by rank 0 only
    assert ckpt["step"] == 2 and ckpt["world_size"] == 2
    assert all(torch.equal(ckpt["model"][k], w0[k]) for k in w0)
    images = load_training_images(data, CFG.image_size)
    init = DDPMTrainer(images, tmp_path / "x", CFG, _ddp_settings(), "cpu", progress=False)
    assert any(not torch.equal(init.model.state_dict()[k], w0[k]) for k in w0)  # the ranks trained


def test_vb_weighting_unit_is_the_public_configs_weight_one(tmp_path):
    data = _png_folder(tmp_path / "pngs")
    kw = dict(config=CFG, steps=1, batch_size=2, sample_every=0, n_samples=1, progress=False)
    train_ddpm(data, tmp_path / "unit", vb_weighting="unit", **kw)
    cfg = train_mod.read_json(tmp_path / "unit" / "config.json")["config"]
    assert cfg["vlb_weight"] * cfg["num_timesteps"] == pytest.approx(1.0)  # loss = L_simple + 1 x L_t
    train_ddpm(data, tmp_path / "rescaled", **kw)
    cfg = train_mod.read_json(tmp_path / "rescaled" / "config.json")["config"]
    assert cfg["vlb_weight"] == 0.001  # improved DDPM's rescaled hybrid: L_simple + 0.001 T L_t
    with pytest.raises(EchoDataError, match="vb_weighting"):
        train_ddpm(data, tmp_path / "bad", vb_weighting="half", **kw)
