"""The per-member samples file of Echo-DND inference (``{case}_samples.nii.gz``) and its run-record fields.

``echogains evaluate`` reads the samples file, so its layout is an interface: a uint8 image (W, H, R), slice k the
binary mask of member k (the Gaussian chain's members first), on the input grid, made like the fused mask; spacing
(sx, sy, 1), origin (ox, oy, 0), the input's direction embedded in a 3 x 3 identity.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scripts import EchoDND, EchoDNDConfig, EchoDNDSampler
from scripts.data import mask_to_input, normalize_intensity, to_model_frame
from scripts.infer import EchoDNDInference
from scripts.sampler import postprocess_mask

SHAPE = (40, 52)  # (H, W), not square
COS, SIN = float(np.cos(np.pi / 6)), float(np.sin(np.pi / 6))
SPACING, ORIGIN, DIRECTION = (0.35, 0.2), (-3.0, 5.5), (COS, -SIN, SIN, COS)  # a rotation: a transpose would show


@pytest.fixture(scope="module")
def tiny_model() -> EchoDND:
    torch.manual_seed(0)
    return EchoDND(EchoDNDConfig.tiny(32)).eval()


def frame(shift: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    inside = ((yy - 20 - shift) / 9.0) ** 2 + ((xx - 26) / 13.0) ** 2 <= 1.0
    return np.where(inside, 200.0, np.linspace(0, 50, SHAPE[1])[None]).astype(np.float32)


def write(array: np.ndarray, path: Path, spacing=SPACING, origin=ORIGIN, direction=DIRECTION) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return image


def expected_members(model: EchoDND, sampler: EchoDNDSampler, image: np.ndarray, seed: int) -> tuple:
    """Each member's mask made as the fused one: the sampler's member mask -> mask_to_input(0.5) -> postprocess."""
    x, fr = to_model_frame(normalize_intensity(image), int(model.config.image_size))
    out = sampler(model, x[None], torch.Generator().manual_seed(seed))
    votes = torch.cat([out["gaussian"], out["bernoulli"]], dim=1)[0]
    masks = np.stack([postprocess_mask(mask_to_input(v, fr, 0.5).astype(np.uint8)) for v in votes])
    return masks, out["sensitivity"][0].numpy(), out["specificity"][0].numpy()


def test_samples_file_layout_geometry_order_and_record(tmp_path: Path, tiny_model: EchoDND) -> None:
    ref = write(frame(), tmp_path / "in" / "a.nii.gz")
    write(frame(3), tmp_path / "in" / "b.nii.gz")
    sampler = EchoDNDSampler(num_steps=2, ensemble=2)
    record = EchoDNDInference(tiny_model, sampler, tmp_path / "in", tmp_path / "out", seed=4, progress=False).run()
    assert record["save_samples"] is True and record["fusion"] == "reliability" and record["uncertainty"] == "soft"
    for case, image in (("a", frame()), ("b", frame(3))):
        path = tmp_path / "out" / f"{case}_samples.nii.gz"
        assert path.is_file(), path
        samples = sitk.ReadImage(str(path))
        assert samples.GetDimension() == 3 and samples.GetPixelID() == sitk.sitkUInt8
        assert samples.GetSize() == (SHAPE[1], SHAPE[0], 4)
        assert samples.GetSpacing() == pytest.approx((*ref.GetSpacing(), 1.0))
        assert samples.GetOrigin() == pytest.approx((*ref.GetOrigin(), 0.0))
        assert samples.GetDirection() == pytest.approx((COS, -SIN, 0.0, SIN, COS, 0.0, 0.0, 0.0, 1.0))
        arr = sitk.GetArrayFromImage(samples)  # (R, H, W)
        assert set(np.unique(arr)) <= {0, 1}
        masks, sens, spec = expected_members(tiny_model, sampler, image, seed=4)
        assert np.array_equal(arr, masks)  # member order: Gaussian members, then Bernoulli members
        entry = next(c for c in record["cases"] if c["case_id"] == case)
        assert entry["members"] == ["gaussian", "gaussian", "bernoulli", "bernoulli"]
        assert entry["staple_sensitivity"] == [round(float(v), 6) for v in sens]
        assert entry["staple_specificity"] == [round(float(v), 6) for v in spec]
    written = json.loads((tmp_path / "out" / "echo_dnd_inference.json").read_text())
    for mine, theirs in zip(written["cases"], record["cases"]):
        for key in ("members", "staple_sensitivity", "staple_specificity"):
            assert mine[key] == theirs[key]


def test_samples_of_a_one_chain_model_and_switched_off(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = EchoDND(EchoDNDConfig.tiny(32).ablation("bernoulli_only")).eval()
    write(frame(), tmp_path / "in" / "a.nii.gz")
    sampler = EchoDNDSampler(num_steps=2, ensemble=1)
    record = EchoDNDInference(model, sampler, tmp_path / "in", tmp_path / "one", progress=False).run()
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "one" / "a_samples.nii.gz")))
    assert arr.shape == (1, *SHAPE)
    case = record["cases"][0]
    assert case["members"] == ["bernoulli"] and "staple_sensitivity" not in case  # one rater: no STAPLE
    fused = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "one" / "a.nii.gz")))
    assert np.array_equal(arr[0], fused)  # one member: the samples slice is the fused mask
    EchoDNDInference(model, sampler, tmp_path / "in", tmp_path / "off", progress=False, save_samples="false").run()
    assert (tmp_path / "off" / "a.nii.gz").is_file() and not (tmp_path / "off" / "a_samples.nii.gz").exists()
    # a rerun without samples into the first folder: the earlier run's samples file is not left to be read as its own
    EchoDNDInference(model, sampler, tmp_path / "in", tmp_path / "one", progress=False, save_samples=False).run()
    assert not (tmp_path / "one" / "a_samples.nii.gz").exists()
    assert "members" not in json.loads((tmp_path / "off" / "echo_dnd_inference.json").read_text())["cases"][0]


def test_no_samples_file_for_a_sequence(tmp_path: Path, tiny_model: EchoDND) -> None:
    write(np.stack([frame(), frame(2)]), tmp_path / "seq.nii.gz", (0.35, 0.2, 1.0), (0.0, 0.0, 0.0), np.eye(3).ravel())
    sampler = EchoDNDSampler(num_steps=1, ensemble=1)
    EchoDNDInference(tiny_model, sampler, tmp_path / "seq.nii.gz", tmp_path / "out", progress=False).run()
    assert (tmp_path / "out" / "seq.nii.gz").is_file() and not (tmp_path / "out" / "seq_samples.nii.gz").exists()
