"""``configs/inference.json`` as a MONAI pipeline: the same outputs as the direct inference, in the input geometry.

``inference`` runs ``preprocessing`` (``LoadImaged`` ... ``AspectPadResized``), the inferer and ``postprocessing``
(``Invertd``, ``SaveImaged``); ``inference_direct`` runs :class:`scripts.infer.EchoDNDInference`, the same steps
written by hand. On a rotated, offset NIfTI, a 2D+t sequence, a single-frame ``(W, H, 1)`` NIfTI (written 3D
again), an RGB PNG, a MetaImage, a single-frame and a
multi-frame ultrasound DICOM, both give the same masks, uncertainty maps and member samples, pixel for pixel, with
the input's geometry (the DICOMs' physical spacing in mm).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from echogains.data.dicom import write_ultrasound_dicom
from tests.bundle_data import echo_frame

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "echo_dnd"
CONFIG = BUNDLE / "configs" / "inference.json"
pytestmark = pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pipeline_inputs")
    frame = echo_frame()  # (H, W)
    rotated = sitk.GetImageFromArray(frame.astype(np.float32))
    a = math.radians(30.0)
    rotated.SetSpacing((0.31, 0.47))
    rotated.SetOrigin((5.0, -3.0))
    rotated.SetDirection((math.cos(a), -math.sin(a), math.sin(a), math.cos(a)))
    sitk.WriteImage(rotated, str(folder / "rotated_0000.nii.gz"))
    loop = np.stack([frame, np.roll(frame, 2, axis=0), np.roll(frame, -2, axis=1)])  # (T, H, W)
    sequence = sitk.GetImageFromArray(loop.astype(np.float32))
    sequence.SetSpacing((0.3, 0.4, 1.0))
    sequence.SetOrigin((1.0, 2.0, 0.0))
    sitk.WriteImage(sequence, str(folder / "sequence.nii.gz"))
    single = sitk.GetImageFromArray(frame[None].astype(np.float32))  # (W, H, 1): a 3D file of one slice
    single.SetSpacing((0.3, 0.4, 2.0))
    single.SetOrigin((5.0, 6.0, 7.0))
    sitk.WriteImage(single, str(folder / "single.nii.gz"))
    rgb = sitk.GetImageFromArray(np.repeat(frame[..., None], 3, axis=-1), isVector=True)
    sitk.WriteImage(rgb, str(folder / "rgb.png"))
    meta = sitk.GetImageFromArray(frame[:, ::-1].astype(np.float32))
    meta.SetSpacing((0.25, 0.35))
    sitk.WriteImage(meta, str(folder / "meta.mhd"))
    write_ultrasound_dicom(
        folder / "still.dcm", frame[None], (0.35, 0.4), None, patient_id="P1", view="4CH", key="still"
    )
    write_ultrasound_dicom(folder / "cine.dcm", loop, (0.3, 0.45), 30.0, patient_id="P1", view="4CH", key="cine")
    return folder


def _run(entry: str, inputs: Path, out: Path) -> None:
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(
        str(CONFIG),
        workflow_type=None,
        run_id=entry,
        logging_file=False,
        bundle_root=str(BUNDLE),
        dataset_dir=str(inputs),
        output_dir=str(out),
        num_steps=3,
        ensemble=2,
        batch_size=2,
        device="cpu",
        progress=False,
    )
    workflow.initialize()
    workflow.run()


def test_pipeline_equals_direct_inference_in_the_input_geometry(inputs: Path, tmp_path: Path) -> None:
    _run("inference", inputs, tmp_path / "pipeline")
    _run("inference_direct", inputs, tmp_path / "direct")
    names = sorted(p.name for p in (tmp_path / "direct").glob("*.nii.gz"))
    assert sorted(p.name for p in (tmp_path / "pipeline").glob("*.nii.gz")) == names
    assert not (tmp_path / "pipeline" / ".staging").exists()
    cases = ("rotated", "sequence", "single", "rgb", "meta", "still", "cine")
    assert {f"{c}.nii.gz" for c in cases} | {f"{c}_uncertainty.nii.gz" for c in cases} <= set(names)
    assert {"rotated_samples.nii.gz", "still_samples.nii.gz"} <= set(names)  # 2D inputs only
    assert "sequence_samples.nii.gz" not in names and "cine_samples.nii.gz" not in names
    for name in names:
        mine, theirs = (sitk.ReadImage(str(tmp_path / d / name)) for d in ("pipeline", "direct"))
        assert mine.GetSize() == theirs.GetSize(), name
        assert mine.GetPixelID() == theirs.GetPixelID(), name
        np.testing.assert_array_equal(sitk.GetArrayFromImage(mine), sitk.GetArrayFromImage(theirs), err_msg=name)
        for what in ("GetSpacing", "GetOrigin", "GetDirection"):
            np.testing.assert_allclose(getattr(mine, what)(), getattr(theirs, what)(), atol=1e-5, err_msg=name)
    # the input's own geometry, not only the direct path's
    geometry = (("rotated", "rotated_0000.nii.gz"), ("sequence", "sequence.nii.gz"), ("single", "single.nii.gz"))
    for case, source in (*geometry, ("meta", "meta.mhd")):
        mask, image = (
            sitk.ReadImage(str(tmp_path / "pipeline" / f"{case}.nii.gz")),
            sitk.ReadImage(str(inputs / source)),
        )
        assert mask.GetSize() == image.GetSize(), case
        for what in ("GetSpacing", "GetOrigin", "GetDirection"):
            np.testing.assert_allclose(getattr(mask, what)(), getattr(image, what)(), atol=1e-5, err_msg=case)
    still, cine = (sitk.ReadImage(str(tmp_path / "pipeline" / f"{c}.nii.gz")) for c in ("still", "cine"))
    np.testing.assert_allclose(still.GetSpacing(), (0.35, 0.4), rtol=1e-6)  # the DICOM's PhysicalDeltaX/Y in mm
    np.testing.assert_allclose(cine.GetSpacing()[:2], (0.3, 0.45), rtol=1e-6)
    assert cine.GetSize()[2] == 3  # the loop segmented frame by frame
    masks = sitk.GetArrayFromImage(cine)
    assert set(np.unique(masks)) <= {0, 1} and all(m.sum() > 0 for m in masks)


def test_the_config_is_a_monai_pipeline() -> None:
    """Load, preprocess, infer, postprocess, invert, save: each a MONAI component of the config."""
    from monai.bundle import ConfigParser
    from monai.inferers import Inferer
    from monai.transforms import Compose, Invertd, LoadImaged, SaveImaged, ScaleIntensityd

    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    parser["bundle_root"] = str(BUNDLE)
    pre, post = parser.get_parsed_content("preprocessing"), parser.get_parsed_content("postprocessing")
    assert isinstance(pre, Compose) and isinstance(post, Compose)
    kinds = [type(t) for t in pre.transforms]
    assert kinds[0] is LoadImaged and ScaleIntensityd in kinds
    assert any(isinstance(t, Invertd) and t.transform is pre for t in post.transforms)
    assert sum(isinstance(t, SaveImaged) for t in post.transforms) == 3  # mask, uncertainty, member samples
    assert isinstance(parser.get_parsed_content("inferer"), Inferer)
    assert parser["inference"] == parser["run"] and "pipeline" in parser["inference"][-1]
