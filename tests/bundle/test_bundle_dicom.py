"""Ultrasound DICOM at the bundle: MONAI ``LoadImage`` with ``scripts.readers.UltrasoundDicomReader``.

The masks of a pydicom-made single-frame ultrasound DICOM, a multi-frame one and pydicom's own multi-frame
ultrasound test file carry the physical spacing of ``SequenceOfUltrasoundRegions`` (PhysicalDeltaX/Y in cm) in mm.
The configs run from the bundle folder (``"bundle_root": "."``) and from another folder with ``bundle_root``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scripts.readers import UltrasoundDicomReader

from echogains.data.dicom import write_ultrasound_dicom
from echogains.utils import EchoDataError
from tests.bundle_data import SAMPLE, echo_frame

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "echo_dnd"
CONFIG = BUNDLE / "configs" / "inference.json"
pytestmark = pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning")


def single_frame_dicom(path: Path, frame: np.ndarray, delta_cm: tuple[float, float] | None) -> Path:
    """An "Ultrasound Image Storage" file (one frame, MONOCHROME2) made with pydicom, one calibrated region."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path.name)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "US", "P1"
    ds.Rows, ds.Columns = frame.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(frame, dtype=np.uint8).tobytes()
    if delta_cm is not None:
        region = Dataset()
        region.RegionSpatialFormat, region.RegionDataType = 1, 1
        region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
        region.RegionLocationMaxX1, region.RegionLocationMaxY1 = frame.shape[1] - 1, frame.shape[0] - 1
        region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3  # cm
        region.PhysicalDeltaX, region.PhysicalDeltaY = delta_cm
        ds.SequenceOfUltrasoundRegions = [region]
    ds.save_as(str(path), enforce_file_format=True)
    return path


def test_reader_gives_monai_the_physical_spacing(tmp_path: Path) -> None:
    from monai.transforms import LoadImage

    frame = echo_frame()
    one = single_frame_dicom(tmp_path / "one.dcm", frame, (0.031, 0.0465))
    image = LoadImage(image_only=True)(str(one), reader=UltrasoundDicomReader())
    assert tuple(image.shape) == (frame.shape[1], frame.shape[0])  # MONAI's (W, H)
    assert np.allclose(image.meta["spacing"], [0.31, 0.465])
    assert np.allclose(np.diag(image.affine)[:2], [-0.31, -0.465])  # RAS, as MONAI's ITKReader
    assert torch.equal(image.T, torch.from_numpy(frame.astype(np.float32)))
    loop = write_ultrasound_dicom(
        tmp_path / "loop.dcm",
        np.stack([frame, frame[::-1], frame]),
        (0.25, 0.3),
        30.0,
        patient_id="P",
        view="4CH",
        key="k",
    )
    image = LoadImage(image_only=True)(str(loop), reader=UltrasoundDicomReader())
    assert tuple(image.shape) == (frame.shape[1], frame.shape[0], 3) and image.meta["fps"] == pytest.approx(30.0)
    assert np.allclose(image.meta["spacing"], [0.25, 0.3, 1.0])
    assert UltrasoundDicomReader().verify_suffix(str(loop)) and not UltrasoundDicomReader().verify_suffix(str(SAMPLE))


def test_a_dicom_without_calibration_is_refused_naming_it(tmp_path: Path) -> None:
    bare = single_frame_dicom(tmp_path / "bare.dcm", echo_frame(), None)
    with pytest.raises(EchoDataError) as info:
        UltrasoundDicomReader().read(str(bare))
    assert str(bare) in str(info.value) and "SequenceOfUltrasoundRegions" in str(info.value)
    assert UltrasoundDicomReader(require_spacing=False).read(str(bare)).spacing_mm is None


def _run(tmp: Path, dataset: Path, out: Path, **args) -> dict:
    from monai.bundle import run

    run(
        "inference",
        config_file=args.pop("config_file", str(CONFIG)),
        logging_file=False,
        dataset_dir=str(dataset),
        output_dir=str(out),
        num_steps=2,
        ensemble=2,
        device="cpu",
        progress=False,
        **args,
    )
    return json.loads((out / "echo_dnd_inference.json").read_text())


def test_inference_from_the_bundle_folder_writes_masks_in_the_dicom_spacing(tmp_path: Path, monkeypatch) -> None:
    frame = echo_frame()
    data = tmp_path / "dicoms"
    data.mkdir()
    single_frame_dicom(data / "one.dcm", frame, (0.031, 0.0465))
    loop = np.stack([frame, np.roll(frame, 2, axis=1), np.roll(frame, -2, axis=0)])
    write_ultrasound_dicom(data / "loop.dcm", loop, (0.25, 0.3), 25.0, patient_id="P", view="4CH", key="loop")
    monkeypatch.chdir(BUNDLE)  # the documented form: from the bundle folder, bundle_root "."
    record = _run(tmp_path, data, tmp_path / "out", config_file="configs/inference.json")
    assert sorted(c["case_id"] for c in record["cases"]) == ["loop", "one"]
    one = sitk.ReadImage(str(tmp_path / "out" / "one.nii.gz"))
    assert one.GetSize() == (frame.shape[1], frame.shape[0]) and np.allclose(one.GetSpacing(), (0.31, 0.465))
    assert sitk.GetArrayFromImage(one).sum() > 0.02 * frame.size  # the demo weights found the LV
    unc = sitk.ReadImage(str(tmp_path / "out" / "one_uncertainty.nii.gz"))
    assert np.allclose(unc.GetSpacing(), (0.31, 0.465)) and unc.GetSize() == one.GetSize()
    seq = sitk.ReadImage(str(tmp_path / "out" / "loop.nii.gz"))
    assert seq.GetSize() == (frame.shape[1], frame.shape[0], 3) and np.allclose(seq.GetSpacing()[:2], (0.25, 0.3))
    masks = sitk.GetArrayFromImage(seq)
    assert all(m.sum() > 0.02 * frame.size for m in masks)  # frame by frame
    assert not (tmp_path / "out" / "loop_samples.nii.gz").exists()  # 2D+t: no samples file


def test_pydicom_ultrasound_test_file_with_bundle_root_from_elsewhere(tmp_path: Path, monkeypatch) -> None:
    """pydicom's own multi-frame ultrasound file (30 YBR frames, 320 x 240, one region of 0.0510 cm)."""
    from pydicom.data import get_testdata_file

    source = get_testdata_file("examples_ybr_color.dcm")
    if source is None:
        pytest.skip("pydicom's test files are not installed")
    data = tmp_path / "pydicom"
    data.mkdir()
    (data / "ybr.dcm").write_bytes(Path(source).read_bytes())
    monkeypatch.chdir(tmp_path)
    record = _run(tmp_path, data, tmp_path / "out", bundle_root=str(BUNDLE), batch_size=30)
    assert record["cases"][0]["frames"] == 30
    mask = sitk.ReadImage(str(tmp_path / "out" / "ybr.nii.gz"))
    assert mask.GetSize() == (320, 240, 30) and np.allclose(mask.GetSpacing()[:2], (0.5104970559477806,) * 2)


@pytest.mark.parametrize("case", ["no_calibration", "truncated"])
def test_bad_dicom_gives_one_line_naming_the_file(case: str, tmp_path: Path) -> None:
    from scripts.common import bad_input_line

    data = tmp_path / "in"
    data.mkdir()
    good = single_frame_dicom(data / "a.dcm", echo_frame(), (0.03, 0.03))
    if case == "no_calibration":
        bad = single_frame_dicom(data / "b.dcm", echo_frame(), None)
        words = ["SequenceOfUltrasoundRegions"]
    else:
        bad = data / "b.dcm"
        bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
        words = []
    with pytest.raises(Exception) as info:
        _run(tmp_path, data, tmp_path / "out", bundle_root=str(BUNDLE))
    line = bad_input_line(info.value)
    assert line is not None and len(line.splitlines()) == 1 and str(bad) in line, info.value
    assert all(w in line for w in words)
    assert not (tmp_path / "out").exists()  # every input is checked before the first output
