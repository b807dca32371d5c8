"""augmentation-report: seam score golden values, SSIM nearest neighbours on synthetic data, the report files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from echogains.augment.expand import expand_dataset
from echogains.augment.quality import augmentation_report, nearest_neighbours, seam_score, transform_kind
from echogains.data.phantom import make_phantom
from echogains.ddpm.model import build_network, get_config, save_weights
from echogains.utils import EchoDataError

# --- seam score ------------------------------------------------------------------------------------------------


def _ramp() -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(32, dtype=np.float64)
    image = np.tile(1.0 + 0.01 * x, (32, 1))
    known = np.zeros((32, 32), bool)
    known[:, :16] = True
    return image, known


def test_seamless_continuation_scores_one():
    image, known = _ramp()  # the generated half continues the ramp
    assert seam_score(image, known) == pytest.approx(1.0, abs=1e-9)


def test_edge_to_black_scores_the_edge_height_over_the_inner_gradient():
    image, known = _ramp()
    image[~known] = 0.0
    # band: columns 15 (|1.00 + 0.14 - 0| / 2 apart... central differences) and 16
    # g(15) = |I(16) - I(14)| / 2 = 1.14 / 2, g(16) = |I(17) - I(15)| / 2 = 1.15 / 2; inside: 0.01
    assert seam_score(image, known) == pytest.approx((0.57 + 0.575) / 2 / 0.01, rel=1e-9)


def test_seam_score_is_nan_without_a_border_or_inner_content():
    image, known = _ramp()
    assert np.isnan(seam_score(image, np.ones_like(known)))
    thin = np.zeros_like(known)
    thin[:, :2] = True
    assert np.isnan(seam_score(image, thin))
    with pytest.raises(EchoDataError):
        seam_score(image, known[:, :5])


# --- nearest neighbours ----------------------------------------------------------------------------------------


def _smooth_images(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.stack([ndimage.gaussian_filter(rng.random((32, 32)), 2.0) for _ in range(n)])
    lo, hi = out.min(axis=(1, 2), keepdims=True), out.max(axis=(1, 2), keepdims=True)
    return (out - lo) / (hi - lo)


def test_nearest_neighbour_finds_the_copied_training_image():
    training = _smooth_images(6, 0)
    rng = np.random.default_rng(1)
    copy = np.clip(training[4] + rng.normal(0, 0.01, (32, 32)), 0, 1)  # a memorised sample
    novel = _smooth_images(1, 99)[0]
    half = novel.copy()
    half[:, :16] = training[2][:, :16]  # copies image 2, but only in the left half
    mask = np.zeros((3, 32, 32), bool)
    mask[:2] = True
    mask[2, :, :16] = True
    table = nearest_neighbours(np.stack([copy, novel, half]), training, mask, top=3)
    assert table[0][0][0] == 4 and table[0][0][1] > 0.95 and table[0][1][1] < 0.6
    assert table[1][0][1] < 0.6  # nothing memorised
    assert table[2][0][0] == 2 and table[2][0][1] > 0.85  # judged on the masked (left) half only
    unmasked = nearest_neighbours(half[None], training, top=1)
    assert unmasked[0][0][1] < table[2][0][1] - 0.2
    assert [len(t) for t in table] == [3, 3, 3]
    assert all(t[i][1] >= t[i + 1][1] for t in table for i in range(2))
    excluded = nearest_neighbours(copy[None], training, exclude=[[4]], top=1)
    assert excluded[0][0][0] != 4 and excluded[0][0][1] < 0.6


def test_transform_kind():
    assert transform_kind([]) == "identity"
    assert transform_kind([{"type": "tilt"}]) == "tilt"
    assert transform_kind([{"type": "tilt"}, {"type": "width"}]) == "combination"


# --- the report ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("quality")
    src = make_phantom(root / "Dataset900_Phantom", n_patients=3, layout="nnunet", image_size=(48, 40), progress=False)
    cfg = get_config("micro")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = build_network(cfg)
    model = save_weights(root / "micro.pt", cfg, net.state_dict())
    common = dict(k=3, batch_size=3, device="cpu", progress=False)
    rep = expand_dataset(src, root / "Dataset901_Rep", model=model, schedule=(4, 2, 2), **common)
    norep = expand_dataset(src, root / "Dataset902_NoRep", repaint=False, frame_size=32, **common)
    return {"root": root, "src": src, "model": model, "rep": rep, "norep": norep}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_report_of_a_repainted_dataset(setup):
    out = setup["root"] / "report_rep"
    path = augmentation_report(
        setup["rep"], out, model=setup["model"], n_samples=2, sample_steps=3, top=2, progress=False
    )
    report = json.loads(path.read_text())
    for name in ("gallery.png", "nearest_neighbours.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{name} is not a PNG"
    headers = {
        "nearest_neighbours.csv": "generated,kind,rank,training_case,ssim,same_patient",
        "seam_scores.csv": "case,kind,seam_written,seam_no_repaint,ratio",
    }
    for name, header in headers.items():
        lines = (out / name).read_text().splitlines()
        assert lines and lines[0] == header and len(lines) > 1, f"{name}: wrong header or no rows"
    table = json.loads((out / "nearest_neighbours.json").read_text())  # the CSV's rows, as JSON
    assert isinstance(table, list) and len(table) == len(_read_csv(out / "nearest_neighbours.csv"))
    assert table[0].keys() == set(headers["nearest_neighbours.csv"].split(","))
    assert report["augmented_cases"] == 12 and report["repaint"] is True
    assert report["baseline_recomputed_exactly"]  # the kept content in the files is the recomputed transform
    rows = report["gallery_rows"]
    assert rows and set(rows) <= {"depth", "tilt", "width", "translation", "combination", "identity"}
    from matplotlib.image import imread

    assert imread(out / "gallery.png").shape[0] > 150 * len(rows)  # one row per transform kind
    nn = _read_csv(out / "nearest_neighbours.csv")
    kinds = {r["kind"] for r in nn}
    assert kinds == {"sample", "augmentation"}
    assert len([r for r in nn if r["kind"] == "sample"]) == 2 * 2
    assert all(-1.0 <= float(r["ssim"]) <= 1.0 for r in nn)
    assert report["nearest_neighbours"]["training_images"] == 8
    seams = _read_csv(out / "seam_scores.csv")
    assert len(seams) == 12 and all(np.isfinite(float(s["seam_no_repaint"])) for s in seams)


def test_report_of_the_no_repaint_baseline_scores_equal_seams(setup):
    out = setup["root"] / "report_norep"
    report = json.loads(augmentation_report(setup["norep"], out, progress=False).read_text())
    assert report["repaint"] is False and report["baseline_recomputed_exactly"]
    seams = _read_csv(out / "seam_scores.csv")
    assert all(s["seam_written"] == s["seam_no_repaint"] for s in seams)  # the written image is the baseline
    assert report["seam"]["median_ratio"] == 1.0
    assert report["nearest_neighbours"]["median_top1_ssim_augmented"] is None  # nothing generated


def test_report_needs_augmented_cases(setup):
    with pytest.raises(EchoDataError, match="no augmented cases"):
        augmentation_report(setup["src"], setup["root"] / "report_src", progress=False)
