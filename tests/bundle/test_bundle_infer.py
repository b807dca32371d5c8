"""Echo-DND bundle inference I/O (scripts/infer.py): geometry round trip, PNG / mhd / 2D+t inputs, errors, determinism.

The I/O path is checked against an oracle: a stub sampler that thresholds the model-frame image, so the written mask
must reproduce the bright shape drawn into the input, on the input's own pixel grid and geometry.
"""

from __future__ import annotations

import filecmp
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scripts import EchoDND, EchoDNDConfig, EchoDNDSampler
from scripts.infer import (
    EchoDNDInference,
    as_bool,
    case_id_from_name,
    find_inputs,
    make_sample_data,
    read_frames,
)
from torch import nn

from echogains.utils import EchoDataError
from tests.compare import assert_same_tree

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "echo_dnd"


class StubModel(nn.Module):
    """Just a ``config.image_size`` and one parameter (for the device)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.config = SimpleNamespace(image_size=size)
        self.weight = nn.Parameter(torch.zeros(1))


class ThresholdSampler:
    """Oracle sampler: mask = model-frame image > 0.5, uncertainty = the model-frame image itself."""

    num_steps, ensemble = 1, 1

    def __call__(self, model: nn.Module, image: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {"mask": (image > 0.5).float(), "uncertainty": image.clone()}


def ellipse(shape: tuple[int, int], center: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return ((yy - center[0]) / radii[0]) ** 2 + ((xx - center[1]) / radii[1]) ** 2 <= 1.0


def phantom_frame(shape: tuple[int, int], center: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    """Background ramp 0..50 with a bright (200) ellipse: after min-max scaling the ellipse is the only part > 0.5."""
    ramp = np.linspace(0, 50, shape[1], dtype=np.float32)[None].repeat(shape[0], 0)
    return np.where(ellipse(shape, center, radii), 200.0, ramp).astype(np.float32)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


def write(array: np.ndarray, path: Path, spacing=None, origin=None, direction=None) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    if spacing is not None:
        image.SetSpacing(spacing)
    if origin is not None:
        image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return image


def stub_inference(src: Path, out: Path, size: int = 64, **kwargs) -> EchoDNDInference:
    return EchoDNDInference(StubModel(size), ThresholdSampler(), src, out, progress=False, **kwargs)


def same_geometry(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing())
        and np.allclose(a.GetOrigin(), b.GetOrigin())
        and np.allclose(a.GetDirection(), b.GetDirection())
    )


# --- oracle: geometry and frames ---------------------------------------------------------------------------------
def test_mask_lands_on_input_grid_with_input_geometry(tmp_path: Path) -> None:
    shape = (40, 56)  # not square: padding to 56 x 56, then resize to 64
    truth = ellipse(shape, (22, 30), (9, 14))
    direction = (0.0, 1.0, 1.0, 0.0)
    ref = write(
        phantom_frame(shape, (22, 30), (9, 14)),
        tmp_path / "in" / "case_a.nii.gz",
        spacing=(0.3, 0.15),
        origin=(-4.0, 7.5),
        direction=direction,
    )
    stub_inference(tmp_path / "in", tmp_path / "out").run()
    mask = sitk.ReadImage(str(tmp_path / "out" / "case_a.nii.gz"))
    unc = sitk.ReadImage(str(tmp_path / "out" / "case_a_uncertainty.nii.gz"))
    assert same_geometry(mask, ref) and same_geometry(unc, ref)
    assert mask.GetPixelID() == sitk.sitkUInt8 and unc.GetPixelID() == sitk.sitkFloat32
    m = sitk.GetArrayFromImage(mask)
    assert set(np.unique(m)) <= {0, 1}
    assert dice(m, truth) > 0.95
    # the stub's "uncertainty" is the scaled image: back on the input grid it is the min-max scaled input
    scaled = phantom_frame(shape, (22, 30), (9, 14)) / 200.0
    inside = ~(ellipse(shape, (22, 30), (11, 16)) ^ ellipse(shape, (22, 30), (7, 12)))  # away from the edge
    assert np.abs(sitk.GetArrayFromImage(unc) - scaled)[inside].mean() < 0.02


def test_sequence_is_segmented_frame_by_frame(tmp_path: Path) -> None:
    shape = (48, 36)
    shapes = [((16, 12), (6, 5)), ((30, 20), (10, 8)), ((24, 18), (14, 10))]
    frames = np.stack([phantom_frame(shape, c, r) for c, r in shapes])
    ref = write(frames, tmp_path / "p_2CH_half_sequence.nii.gz", spacing=(0.3, 0.15, 1.0), origin=(1.0, 2.0, 0.0))
    record = stub_inference(tmp_path / "p_2CH_half_sequence.nii.gz", tmp_path / "out", batch_size=2).run()
    assert record["cases"][0]["frames"] == 3
    out = sitk.ReadImage(str(tmp_path / "out" / "p_2CH_half_sequence.nii.gz"))
    assert same_geometry(out, ref)
    m = sitk.GetArrayFromImage(out)
    for t, (c, r) in enumerate(shapes):
        own = dice(m[t], ellipse(shape, c, r))
        assert own > 0.9
        assert all(own > dice(m[t], ellipse(shape, c2, r2)) for c2, r2 in shapes if (c2, r2) != (c, r))


def test_png_grey_and_rgb_and_mhd_inputs(tmp_path: Path) -> None:
    shape = (50, 42)
    truth = ellipse(shape, (25, 20), (12, 9))
    grey = np.clip(phantom_frame(shape, (25, 20), (12, 9)), 0, 255).astype(np.uint8)
    write(grey, tmp_path / "in" / "grey.png")
    rgb = sitk.Compose([sitk.GetImageFromArray(grey)] * 3)
    sitk.WriteImage(rgb, str(tmp_path / "in" / "colour.png"))
    write(grey, tmp_path / "in" / "meta.mhd", spacing=(0.25, 0.5))
    write(grey, tmp_path / "in" / "meta_gt.mhd")  # CAMUS ground truth: skipped
    assert [c.case_id for c in find_inputs(tmp_path / "in")] == ["colour", "grey", "meta"]
    stub_inference(tmp_path / "in", tmp_path / "out").run()
    for case in ("grey", "colour", "meta"):
        out = sitk.ReadImage(str(tmp_path / "out" / f"{case}.nii.gz"))
        assert out.GetSize() == (42, 50)
        assert dice(sitk.GetArrayFromImage(out), truth) > 0.95
    assert sitk.ReadImage(str(tmp_path / "out" / "meta.nii.gz")).GetSpacing() == pytest.approx((0.25, 0.5))


def test_nnunet_dataset_outputs_named_by_case_id(tmp_path: Path) -> None:
    from echogains.data.phantom import make_phantom

    root = make_phantom(tmp_path / "Dataset001_P", n_patients=3, layout="nnunet", image_size=(48, 40), progress=False)
    record = stub_inference(root, tmp_path / "out").run()
    test_ids = sorted(p.name[: -len("_0000.nii.gz")] for p in (root / "imagesTs").iterdir())
    assert sorted(c["case_id"] for c in record["cases"]) == test_ids
    for case in test_ids:
        pred = sitk.ReadImage(str(tmp_path / "out" / f"{case}.nii.gz"))
        assert same_geometry(pred, sitk.ReadImage(str(root / "labelsTs" / f"{case}.nii.gz")))
    written = json.loads((tmp_path / "out" / "echo_dnd_inference.json").read_text())
    assert written["subset"] == "auto" and len(written["cases"]) == len(test_ids)
    assert len(find_inputs(root, subset="Tr")) == 8 and len(find_inputs(root, subset="all")) == 12


# --- the real model ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model() -> EchoDND:
    torch.manual_seed(0)
    return EchoDND(EchoDNDConfig.tiny(32)).eval()


def test_real_model_outputs_are_deterministic_and_per_case(tmp_path: Path, tiny_model: EchoDND) -> None:
    shape = (40, 36)
    for i, name in enumerate(("a", "b")):
        write(phantom_frame(shape, (18 + 2 * i, 16), (8, 6)), tmp_path / "in" / f"{name}.nii.gz", spacing=(0.4, 0.2))
    sampler = EchoDNDSampler(num_steps=2, ensemble=2)
    for out in ("out1", "out2"):
        EchoDNDInference(tiny_model, sampler, tmp_path / "in", tmp_path / out, seed=3, progress=False).run()
    EchoDNDInference(
        tiny_model, sampler, tmp_path / "in" / "b.nii.gz", tmp_path / "alone", seed=3, progress=False
    ).run()
    for name in ("a.nii.gz", "a_uncertainty.nii.gz", "b.nii.gz", "b_uncertainty.nii.gz"):
        assert filecmp.cmp(tmp_path / "out1" / name, tmp_path / "out2" / name, shallow=False)
    for name in ("b.nii.gz", "b_uncertainty.nii.gz"):  # a case does not depend on the other cases of the run
        assert filecmp.cmp(tmp_path / "out1" / name, tmp_path / "alone" / name, shallow=False)
    unc = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out1" / "a_uncertainty.nii.gz")))
    assert unc.dtype == np.float32 and unc.shape == shape and 0.0 <= unc.min() and unc.max() <= 1.0


# --- bad input: clear errors before anything is written -----------------------------------------------------------
def test_unreadable_input_named_before_any_output(tmp_path: Path) -> None:
    write(phantom_frame((32, 32), (16, 16), (6, 6)), tmp_path / "in" / "a_good.nii.gz")
    (tmp_path / "in" / "b_broken.nii.gz").write_bytes(b"not an image at all")
    with pytest.raises(EchoDataError, match="b_broken.nii.gz"):
        stub_inference(tmp_path / "in", tmp_path / "out").run()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_nan_and_bad_sources_are_errors(tmp_path: Path) -> None:
    bad = np.zeros((16, 16), np.float32)
    bad[3, 4] = np.nan
    write(bad, tmp_path / "nan.nii.gz")
    with pytest.raises(EchoDataError, match="NaN"):
        read_frames(tmp_path / "nan.nii.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EchoDataError, match="no input images"):
        find_inputs(tmp_path / "empty")
    with pytest.raises(EchoDataError, match="not found"):
        find_inputs(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(EchoDataError, match="unsupported"):
        find_inputs(tmp_path / "notes.txt")


def test_outputs_never_overwrite_inputs(tmp_path: Path) -> None:
    write(phantom_frame((32, 32), (16, 16), (6, 6)), tmp_path / "scan.nii.gz")
    before = (tmp_path / "scan.nii.gz").read_bytes()
    with pytest.raises(EchoDataError, match="overwrite an input"):
        stub_inference(tmp_path, tmp_path).run()
    assert (tmp_path / "scan.nii.gz").read_bytes() == before


def test_small_helpers() -> None:
    assert case_id_from_name("patient0001_4CH_ED_0000.nii.gz") == "patient0001_4CH_ED"
    assert case_id_from_name("frame.PNG") == "frame"
    assert case_id_from_name("x_half_sequence.mhd") == "x_half_sequence"
    assert as_bool("False", "p") is False and as_bool("yes", "p") is True and as_bool(0, "p") is False
    with pytest.raises(EchoDataError):
        as_bool("maybe", "p")


# --- the shipped sample data is what the committed command writes ------------------------------------------------
def test_sample_data_is_reproduced_by_its_command(tmp_path: Path) -> None:
    """Committed files against regenerated ones on this CPU.

    Labels exact, floats (JSON, intensities) within tolerance.
    """
    shipped = BUNDLE / "sample_data"
    make_sample_data(tmp_path / "sample")
    assert len(list((shipped / "imagesTs").iterdir())) == 2
    assert_same_tree(shipped, tmp_path / "sample")
