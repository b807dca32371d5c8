"""Ultrasound DICOM reader: files made here with pydicom alone (not with our writer), then our writer round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless, generate_uid

from echogains.data.dicom import read_ultrasound_dicom, view_from_text, write_ultrasound_dicom
from echogains.utils import EchoDataError

T, H, W = 4, 24, 20


def _frames(seed: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return np.stack([((xx * 9 + yy * 4 + 30 * k + seed) % 256) for k in range(T)]).astype(np.uint8)


def _region(units: int = 3, dx: float = 0.031, dy: float = 0.027) -> Dataset:
    r = Dataset()
    r.RegionSpatialFormat, r.RegionDataType, r.RegionFlags = 1, 1, 0
    r.RegionLocationMinX0, r.RegionLocationMinY0, r.RegionLocationMaxX1, r.RegionLocationMaxY1 = 0, 0, W - 1, H - 1
    r.PhysicalUnitsXDirection = r.PhysicalUnitsYDirection = units
    r.PhysicalDeltaX, r.PhysicalDeltaY = dx, dy
    return r


def _dataset(frames: np.ndarray, rgb: bool = False, regions: list | None = None, **tags) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "US"
    ds.NumberOfFrames, ds.Rows, ds.Columns = frames.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if rgb:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
        ds.PixelData = np.repeat(frames[..., None], 3, axis=-1).tobytes()
    else:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.PixelData = frames.tobytes()
    if regions is not None:
        ds.SequenceOfUltrasoundRegions = regions
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(str(path), enforce_file_format=True)
    return path


def test_multiframe_grey_spacing_frame_time_patient_view(tmp_path: Path) -> None:
    frames = _frames()
    path = _save(
        _dataset(frames, regions=[_region()], FrameTime="20", PatientID="P7", SeriesDescription="Apical 4CH"),
        tmp_path / "a.dcm",
    )
    loop = read_ultrasound_dicom(path)
    assert loop.frames.shape == (T, H, W) and np.array_equal(loop.frames, frames.astype(np.float32))
    assert loop.spacing_mm == pytest.approx((0.31, 0.27))  # cm per pixel -> mm
    assert loop.fps == pytest.approx(50.0) and loop.patient_id == "P7" and loop.view == "4CH"


def test_rgb_cine_rate_and_no_calibration(tmp_path: Path) -> None:
    frames = _frames(3)
    path = _save(_dataset(frames, rgb=True, CineRate=25, ViewName="A2C"), tmp_path / "rgb")  # no suffix: preamble
    loop = read_ultrasound_dicom(path)
    assert np.allclose(loop.frames, frames, atol=1e-3)  # grey in every channel -> the same grey
    assert loop.spacing_mm is None and loop.fps == pytest.approx(25.0) and loop.view == "2CH"


def test_region_not_in_cm_gives_no_spacing_and_largest_cm_region_wins(tmp_path: Path) -> None:
    doppler = _region(units=4)  # seconds on an axis: not a tissue image
    small = _region(dx=0.1, dy=0.1)
    small.RegionLocationMaxX1, small.RegionLocationMaxY1 = 3, 3
    path = _save(_dataset(_frames(), regions=[doppler, small, _region()]), tmp_path / "b.dcm")
    assert read_ultrasound_dicom(path).spacing_mm == pytest.approx((0.31, 0.27))
    path = _save(_dataset(_frames(), regions=[doppler]), tmp_path / "c.dcm")
    assert read_ultrasound_dicom(path).spacing_mm is None


def test_rle_and_jpeg_baseline_compressed(tmp_path: Path) -> None:
    import io

    from PIL import Image

    frames = _frames(5)
    ds = _dataset(frames, regions=[_region()], FrameTime="40")
    ds.compress(RLELossless)
    loop = read_ultrasound_dicom(_save(ds, tmp_path / "rle.dcm"))
    assert np.array_equal(loop.frames, frames) and loop.fps == pytest.approx(25.0)
    smooth = np.repeat(np.linspace(40, 200, W, dtype=np.uint8)[None, None], H, axis=1).repeat(T, axis=0)
    jpeg = _dataset(smooth, regions=[_region()])
    encoded = []
    for frame in smooth:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=95)
        encoded.append(buffer.getvalue())
    jpeg.PixelData = encapsulate(encoded)
    jpeg["PixelData"].VR = "OB"
    jpeg.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    loop = read_ultrasound_dicom(_save(jpeg, tmp_path / "jpeg.dcm"))
    assert loop.frames.shape == (T, H, W) and np.abs(loop.frames - smooth).max() <= 4  # lossy


def test_bad_files_one_line_errors(tmp_path: Path) -> None:
    path = _save(_dataset(_frames(), regions=[_region()]), tmp_path / "ok.dcm")
    data = path.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 700])
    with pytest.raises(EchoDataError, match="truncated"):
        read_ultrasound_dicom(tmp_path / "cut.dcm")
    (tmp_path / "junk.dcm").write_bytes(b"not a dicom file at all")
    with pytest.raises(EchoDataError, match="junk.dcm"):
        read_ultrasound_dicom(tmp_path / "junk.dcm")
    with pytest.raises(EchoDataError, match="not found"):
        read_ultrasound_dicom(tmp_path / "missing.dcm")


def test_view_names() -> None:
    assert [
        view_from_text(t) for t in ("A4C", "apical 2CH", "Four chamber", "AP2 zoom", "PLAX", "2CH vs 4CH", None)
    ] == ["4CH", "2CH", "4CH", "2CH", None, None, None]


def test_writer_round_trip_and_same_bytes(tmp_path: Path) -> None:
    frames = _frames(9)
    kwargs = dict(patient_id="patient0003", view="2CH", key="seed/3/2CH")
    a = write_ultrasound_dicom(tmp_path / "a.dcm", frames, (0.4, 0.2), 30.0, **kwargs)
    b = write_ultrasound_dicom(tmp_path / "b.dcm", frames, (0.4, 0.2), 30.0, **kwargs)
    assert a.read_bytes() == b.read_bytes()
    loop = read_ultrasound_dicom(a)
    assert np.array_equal(loop.frames, frames) and loop.spacing_mm == pytest.approx((0.4, 0.2))
    assert loop.fps == pytest.approx(30.0) and loop.view == "2CH" and loop.patient_id == "patient0003"
    ds = pydicom.dcmread(str(a))
    assert ds.SequenceOfUltrasoundRegions[0].PhysicalDeltaX == pytest.approx(0.04)  # written in cm
