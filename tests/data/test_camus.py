"""CAMUS converter: both releases, label selection, splits, geometry, malformed inputs (tiny hand-made fixtures)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from echogains.data.camus import convert_camus, detect_camus_layout, parse_info_cfg, read_official_split
from echogains.utils import EchoDataError, set_progress

try:
    from tests.data import fixtures as F
except ImportError:  # pytest run without the repository root on sys.path
    import fixtures as F  # type: ignore[no-redef]

set_progress(False)
ALL_CASES = [f"{v}_{p}" for v in ("2CH", "4CH") for p in ("ED", "ES")]


def _read(path: Path) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def _cases(out: Path) -> dict:
    return json.loads((out / "cases.json").read_text())


def _files(folder: Path) -> list[str]:
    return sorted(f.name for f in folder.iterdir()) if folder.is_dir() else []


# ------------------------------------------------------------------------------------------------
# Well-formed sources
# ------------------------------------------------------------------------------------------------
def test_nifti_release_official_split_geometry_and_references(tmp_path: Path) -> None:
    src = F.write_camus(
        tmp_path / "CAMUS",
        "nifti",
        patients=(1, 2, 3, 4),
        splits={"training": [1, 2], "validation": [3], "testing": [4]},
    )
    out = convert_camus(src, tmp_path / "Dataset501_CAMUS", progress=False)

    # official testing -> imagesTs/labelsTs; training/validation -> imagesTr and ONE official fold
    assert _files(out / "imagesTs") == [f"patient0004_{c}_0000.nii.gz" for c in ALL_CASES]
    assert _files(out / "labelsTs") == [f"patient0004_{c}.nii.gz" for c in ALL_CASES]
    assert len(_files(out / "imagesTr")) == 12
    splits = json.loads((out / "splits_final.json").read_text())
    assert splits == [
        {
            "train": [f"patient000{i}_{c}" for i in (1, 2) for c in ALL_CASES],
            "val": [f"patient0003_{c}" for c in ALL_CASES],
        }
    ]
    labels = json.loads((out / "dataset.json").read_text())["labels"]
    assert labels == {"background": 0, "LV": 1, "MYO": 2, "LA": 3}

    records = _cases(out)
    assert set(records) == {f"patient000{i}_{c}" for i in (1, 2, 3, 4) for c in ALL_CASES}
    assert records["patient0004_2CH_ED"]["split"] == "test" and records["patient0004_2CH_ED"]["subset"] == "Ts"
    assert records["patient0003_4CH_ES"]["split"] == "val"
    for index in (1, 2, 3, 4):
        info = F.camus_info(index)
        for case in ALL_CASES:
            rec = records[f"patient000{index}_{case}"]
            view, phase = case.split("_")
            assert (rec["patient"], rec["view"], rec["phase"]) == (F.patient_name(index), view, phase)
            assert rec["reference"] == {"edv_ml": info["LVedv"], "esv_ml": info["LVesv"], "ef_pct": info["LVef"]}
            assert (rec["image_quality"], rec["age"], rec["sex"]) == (info["ImageQuality"], info["Age"], info["Sex"])
            assert rec["frame_index"] == info[phase] and rec["frames"] == {"ED": info["ED"], "ES": info["ES"]}
            assert rec["n_frames"] == info["NbFrame"] and rec["frame_index_base"] == 1
            assert (
                rec["source"]["image"]
                == f"database_nifti/{F.patient_name(index)}/{F.patient_name(index)}_{case}.nii.gz"
            )
            assert rec["spacing_known"] is True

    # native geometry and pixels kept exactly (spacing as float32: what NIfTI stores)
    rec = records["patient0002_4CH_ES"]
    image, img = _read(out / "imagesTr" / "patient0002_4CH_ES_0000.nii.gz")
    label, lab = _read(out / "labelsTr" / "patient0002_4CH_ES.nii.gz")
    src_image, src_label = F.camus_arrays(2, "4CH", "ES")
    np.testing.assert_array_equal(image, src_image)
    np.testing.assert_array_equal(label, src_label)
    for written in (img, lab):
        assert np.array_equal(np.float32(written.GetSpacing()), np.float32(F.CAMUS_SPACING))
        assert np.array_equal(np.float32(written.GetOrigin()), np.float32(F.CAMUS_ORIGIN))
    assert np.allclose(rec["spacing_mm"], F.CAMUS_SPACING, rtol=1e-6)
    # sector fitted in mm: the fixture fan is symmetric about the image's vertical centre line
    sector = rec["sector"]
    if sector is not None:
        assert sector["apex"][0] == pytest.approx((F.CAMUS_SHAPE[1] - 1) / 2 * F.CAMUS_SPACING[0], abs=0.2)
        assert sector["spacing"] == pytest.approx(list(F.CAMUS_SPACING))


def test_mhd_release_without_split_files_gets_patient_grouped_folds(tmp_path: Path) -> None:
    src = F.write_camus(tmp_path / "CAMUS", "mhd", patients=(1, 2, 3, 4, 5))
    out = convert_camus(src / "training", tmp_path / "Dataset502_CAMUS", n_folds=3, seed=7, progress=False)

    assert not (out / "imagesTs").exists() or _files(out / "imagesTs") == []
    splits = json.loads((out / "splits_final.json").read_text())
    assert len(splits) == 3
    all_cases = {f"patient000{i}_{c}" for i in range(1, 6) for c in ALL_CASES}
    vals = [set(s["val"]) for s in splits]
    assert set().union(*vals) == all_cases and sum(len(v) for v in vals) == len(all_cases)  # a partition
    for fold in splits:
        assert set(fold["train"]) == all_cases - set(fold["val"])
        val_patients = {c.split("_")[0] for c in fold["val"]}
        assert {c.split("_")[0] for c in fold["train"]}.isdisjoint(val_patients)  # grouped by patient
    records = _cases(out)
    assert all(r["split"] is None and r["release"] == "mhd" for r in records.values())
    assert records["patient0001_2CH_ED"]["source"]["image"] == "training/patient0001/patient0001_2CH_ED.mhd"

    # the 3D single-slice MetaImage is written as 2D with its in-plane spacing kept as float32
    image, img = _read(out / "imagesTr" / "patient0003_2CH_ED_0000.nii.gz")
    assert img.GetDimension() == 2
    assert np.array_equal(np.float32(img.GetSpacing()), np.float32(F.CAMUS_SPACING))
    np.testing.assert_array_equal(image, F.camus_arrays(3, "2CH", "ED")[0])


@pytest.mark.parametrize(
    ("labels", "expected", "mapping"),
    [
        ("lv,myo", {"background": 0, "LV": 1, "MYO": 2}, {0: 0, 1: 1, 2: 2, 3: 0}),
        ("lv,la", {"background": 0, "LV": 1, "LA": 2}, {0: 0, 1: 1, 2: 0, 3: 2}),
        (("la", "lv"), {"background": 0, "LV": 1, "LA": 2}, {0: 0, 1: 1, 2: 0, 3: 2}),  # as python-fire passes it
    ],
)
def test_label_selection_remaps_values(tmp_path: Path, labels: object, expected: dict, mapping: dict) -> None:
    src = F.write_camus(tmp_path / "CAMUS", "nifti", patients=(1, 2))
    out = convert_camus(src, tmp_path / "Dataset503_CAMUS", labels=labels, views="4CH", phases="ED", progress=False)

    assert json.loads((out / "dataset.json").read_text())["labels"] == expected
    assert _files(out / "labelsTr") == ["patient0001_4CH_ED.nii.gz", "patient0002_4CH_ED.nii.gz"]
    source = F.camus_arrays(1, "4CH", "ED")[1]
    written, _ = _read(out / "labelsTr" / "patient0001_4CH_ED.nii.gz")
    np.testing.assert_array_equal(written, np.vectorize(mapping.get)(source))
    assert _cases(out)["patient0001_4CH_ED"]["labels"] == [k for k in ("lv", "myo", "la") if k in str(labels)]


@pytest.mark.parametrize("where", ["root", "release", "patients"])
def test_layout_detection_from_any_level(tmp_path: Path, where: str) -> None:
    F.write_camus(tmp_path / "CAMUS", "nifti", patients=(1, 2), splits={"training": [1], "testing": [2]})
    src = {
        "root": tmp_path / "CAMUS",
        "release": tmp_path / "CAMUS" / "database_nifti",
        "patients": tmp_path / "CAMUS" / "database_nifti",
    }[where]
    layout = detect_camus_layout(src)
    assert layout.release == "nifti" and layout.root == tmp_path / "CAMUS" / "database_nifti"
    assert layout.split_dir == tmp_path / "CAMUS" / "database_split"
    assert read_official_split(layout.split_dir) == {"patient0001": "train", "patient0002": "test"}


def test_parse_info_cfg_golden(tmp_path: Path) -> None:
    path = tmp_path / "Info_2CH.cfg"
    path.write_text(
        "ED: 1\nES: 13\nNbFrame: 18\nSex: F\nAge: 52\nImageQuality: Medium\nLVedv: 106.2\nLVesv: 50.6\nLVef: 52.4\n"
    )
    info = parse_info_cfg(path)
    assert info == {
        "ED": 1, "ES": 13, "NbFrame": 18, "Sex": "F", "Age": 52, "ImageQuality": "Medium",
        "LVedv": 106.2, "LVesv": 50.6, "LVef": 52.4,
    }  # fmt: skip
    path.write_text("ED: 1\nES: 20\nNbFrame: 18\n")
    with pytest.raises(EchoDataError, match="ES = 20 is outside"):
        parse_info_cfg(path)


def test_conversion_is_deterministic_and_refuses_existing_output(tmp_path: Path) -> None:
    src = F.write_camus(tmp_path / "CAMUS", "nifti", patients=(1, 2))
    a = convert_camus(src, tmp_path / "a" / "Dataset504_CAMUS", views="2CH", progress=False)
    b = convert_camus(src, tmp_path / "b" / "Dataset504_CAMUS", views="2CH", progress=False)
    for name in (
        "cases.json",
        "splits_final.json",
        "imagesTr/patient0001_2CH_ED_0000.nii.gz",
        "labelsTr/patient0002_2CH_ES.nii.gz",
    ):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    before = (a / "cases.json").stat().st_mtime_ns
    with pytest.raises(EchoDataError, match="already exists"):
        convert_camus(src, a, progress=False)
    assert (a / "cases.json").stat().st_mtime_ns == before
    convert_camus(src, a, views="4CH", overwrite=True, progress=False)  # stale 2CH files removed
    assert all("_4CH_" in name for name in _files(a / "imagesTr"))


# ------------------------------------------------------------------------------------------------
# Malformed inputs: EchoDataError naming the file, nothing written; skip_bad converts the rest
# ------------------------------------------------------------------------------------------------
def _write_label(path: Path, array: np.ndarray, spacing: tuple[float, float] = F.CAMUS_SPACING) -> None:
    sitk.WriteImage(
        F.image_from_array(array.astype(np.uint8), spacing, F.CAMUS_ORIGIN, as_3d=path.suffix == ".mhd"), str(path)
    )


def _missing_raw(pdir: Path) -> str:
    (pdir / "patient0002_4CH_ED.raw").unlink()
    return "patient0002_4CH_ED.raw"


def _corrupt_nifti(pdir: Path) -> str:
    (pdir / "patient0002_2CH_ES.nii.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"not a nifti" * 10)
    return "patient0002_2CH_ES.nii.gz"


def _label_value_7(pdir: Path) -> str:
    label = F.camus_arrays(2, "4CH", "ES")[1]
    label[0, 0] = 7
    _write_label(pdir / "patient0002_4CH_ES_gt.nii.gz", label)
    return "patient0002_4CH_ES_gt.nii.gz"


def _size_mismatch(pdir: Path) -> str:
    _write_label(pdir / "patient0002_2CH_ED_gt.nii.gz", F.camus_arrays(2, "2CH", "ED")[1][:-4])
    return "patient0002_2CH_ED_gt.nii.gz"


def _spacing_mismatch(pdir: Path) -> str:
    _write_label(pdir / "patient0002_2CH_ED_gt.nii.gz", F.camus_arrays(2, "2CH", "ED")[1], spacing=(0.3, 0.3))
    return "patient0002_2CH_ED_gt.nii.gz"


def _truncated_raw(pdir: Path) -> str:
    F.truncate(pdir / "patient0002_4CH_ED.raw")
    return "patient0002_4CH_ED.raw"


def _truncated_nifti(pdir: Path) -> str:
    F.truncate(pdir / "patient0002_2CH_ES.nii.gz")  # SimpleITK alone reads it, the lost pixels as 0
    return "patient0002_2CH_ES.nii.gz"


def _cfg_without_ed(pdir: Path) -> str:
    F.write_info_cfg(pdir / "Info_4CH.cfg", F.camus_info(2), drop=("ED",))
    return "Info_4CH.cfg"


MALFORMED: dict[str, tuple[str, Callable[[Path], str], list[str]]] = {
    "missing raw": ("mhd", _missing_raw, ["patient0002_4CH_ED"]),
    "corrupt nifti": ("nifti", _corrupt_nifti, ["patient0002_2CH_ES"]),
    "truncated raw": ("mhd", _truncated_raw, ["patient0002_4CH_ED"]),
    "truncated nifti": ("nifti", _truncated_nifti, ["patient0002_2CH_ES"]),
    "label value 7": ("nifti", _label_value_7, ["patient0002_4CH_ES"]),
    "size mismatch": ("nifti", _size_mismatch, ["patient0002_2CH_ED"]),
    "spacing mismatch": ("nifti", _spacing_mismatch, ["patient0002_2CH_ED"]),
    "cfg without ED": ("nifti", _cfg_without_ed, ["patient0002_4CH_ED", "patient0002_4CH_ES"]),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_input_raises_naming_file_and_writes_nothing(tmp_path: Path, kind: str) -> None:
    release, spoil, bad_cases = MALFORMED[kind]
    src = F.write_camus(tmp_path / "CAMUS", release, patients=(1, 2, 3))
    folder = src / ("database_nifti" if release == "nifti" else "training") / "patient0002"
    bad_file = spoil(folder)
    out = tmp_path / "Dataset505_CAMUS"

    with pytest.raises(EchoDataError) as info:
        convert_camus(src, out, progress=False)
    assert Path(info.value.path).name == bad_file, info.value
    assert bad_file in str(info.value)
    assert not out.exists()

    result = convert_camus(src, out, skip_bad=True, progress=False)
    with (result / "skipped.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["case_id"] for r in rows] == bad_cases
    assert all(Path(r["file"]).name == bad_file and r["problem"] for r in rows)
    converted = set(_cases(result))
    expected = {f"patient000{i}_{c}" for i in (1, 2, 3) for c in ALL_CASES} - set(bad_cases)
    assert converted == expected
    assert (result / "dataset.json").is_file()


def test_patient_missing_from_split_files_is_an_error(tmp_path: Path) -> None:
    src = F.write_camus(tmp_path / "CAMUS", "nifti", patients=(1, 2, 3, 4), splits={"training": [1, 4], "testing": [3]})
    out = tmp_path / "Dataset506_CAMUS"
    with pytest.raises(EchoDataError, match="patient0002 is not listed") as info:
        convert_camus(src, out, progress=False)
    assert Path(info.value.path) == src / "database_split"
    assert not out.exists()
    convert_camus(src, out, skip_bad=True, progress=False)
    assert {r["patient"] for r in _cases(out).values()} == {"patient0001", "patient0003", "patient0004"}
    assert (out / "skipped.csv").read_text().count("patient0002_") == 4
    assert len(json.loads((out / "splits_final.json").read_text())) == 2  # no official val: grouped folds


def test_single_training_patient_converts_without_folds(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from echogains.data.verify import verify_dataset

    out = tmp_path / "Dataset507_CAMUS"
    src = F.write_camus(tmp_path / "CAMUS", "nifti", patients=(1, 2))
    convert_camus(src, out, progress=False)
    assert (out / "splits_final.json").is_file()
    # one training patient (the other is official test): a dataset without folds, stale folds of the old one removed
    F.write_camus(src, "nifti", patients=(1, 2), splits={"training": [1], "testing": [2]})
    with caplog.at_level("WARNING", logger="echogains"):
        convert_camus(src, out, overwrite=True, progress=False)
    assert (out / "dataset.json").is_file() and not (out / "splits_final.json").exists()
    assert len(_files(out / "imagesTr")) == 4 and len(_files(out / "imagesTs")) == 4
    assert any(
        "1 training patient(s)" in r.getMessage() and "needs >= 2 patients" in r.getMessage() for r in caplog.records
    )
    report = verify_dataset(out, nnunet_check=False, progress=False)  # (nnU-Net's check never reads splits)
    assert report.ok, report.summary()


def test_bad_arguments_and_non_camus_folder(tmp_path: Path) -> None:
    src = F.write_camus(tmp_path / "CAMUS", "nifti", patients=(1, 2))
    with pytest.raises(EchoDataError, match="--views"):
        convert_camus(src, tmp_path / "o1", views="3CH", progress=False)
    with pytest.raises(EchoDataError, match="--labels"):
        convert_camus(src, tmp_path / "o2", labels="rv", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EchoDataError, match="not a CAMUS folder"):
        convert_camus(tmp_path / "empty", tmp_path / "o3", progress=False)
    assert not any((tmp_path / n).exists() for n in ("o1", "o2", "o3"))


# ------------------------------------------------------------------------------------------------
# The synthetic phantom's CAMUS layouts (echogains.data.phantom)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["camus-nifti", "camus-mhd"])
def test_phantom_camus_layouts_convert(tmp_path: Path, layout: str) -> None:
    from echogains.data.phantom import make_phantom

    src = make_phantom(tmp_path / "phantom", n_patients=4, layout=layout, seed=3, image_size=(64, 64), progress=False)
    truth = json.loads((Path(src) / "phantom_truth.json").read_text())["patients"]
    out = convert_camus(src, tmp_path / "Dataset510_Phantom", labels="lv,myo", progress=False)

    records = _cases(out)
    assert set(records) == {f"{p}_{c}" for p in truth for c in ALL_CASES}
    release = "database_nifti" if layout == "camus-nifti" else "training"
    ext = ".nii.gz" if layout == "camus-nifti" else ".mhd"
    for case, rec in records.items():
        t = truth[rec["patient"]]
        view = t["views"][rec["view"]]
        assert rec["reference"] == pytest.approx({k: round(t["truth"][k], 2) for k in ("edv_ml", "esv_ml", "ef_pct")})
        assert (rec["age"], rec["sex"], rec["image_quality"]) == (t["age"], t["sex"], t["image_quality"])
        assert rec["frames"] == view["frames"]
        if layout == "camus-nifti":  # official split files -> test cases in imagesTs, the rest in one fold
            assert rec["split"] == t["split"] and rec["subset"] == ("Ts" if t["split"] == "test" else "Tr")
        else:  # the original release has no split files
            assert rec["split"] is None and rec["subset"] == "Tr"
        if rec["sector"] is not None:  # fitted from the image: close to the phantom's true sector
            assert rec["sector"]["opening_deg"] == pytest.approx(view["sector"]["opening_deg"], abs=5.0)
        # pixels, spacing (float32) and origin exactly those of the source file; labels remapped to lv,myo
        src_img = sitk.ReadImage(str(Path(src) / release / rec["patient"] / f"{case}{ext}"))
        src_lab = sitk.ReadImage(str(Path(src) / release / rec["patient"] / f"{case}_gt{ext}"))
        sub = rec["subset"]
        image, img = _read(out / f"images{sub}" / f"{case}_0000.nii.gz")
        label, _ = _read(out / f"labels{sub}" / f"{case}.nii.gz")
        np.testing.assert_array_equal(image, sitk.GetArrayFromImage(src_img).reshape(image.shape))
        source_label = sitk.GetArrayFromImage(src_lab).reshape(label.shape)
        np.testing.assert_array_equal(label, np.where(source_label == 3, 0, source_label))
        assert np.array_equal(np.float32(img.GetSpacing()), np.float32(src_img.GetSpacing()[:2]))
        assert np.allclose(img.GetOrigin(), src_img.GetOrigin()[:2], atol=1e-5)
    n_folds = len(json.loads((out / "splits_final.json").read_text()))
    assert n_folds == (1 if layout == "camus-nifti" else 4)


# ------------------------------------------------------------------------------------------------
# Through the command: one line naming the file and what is wrong with it, exit 2, nothing written
# ------------------------------------------------------------------------------------------------
def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run ``echogains ARGS`` in-process; returns (exit status, stderr)."""
    from echogains.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err


def test_truncated_raw_names_the_data_file_and_its_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = F.write_camus(tmp_path / "CAMUS", "mhd", patients=(1, 2))
    raw = src / "training" / "patient0002" / "patient0002_4CH_ED.raw"
    kept = F.truncate(raw)
    need = F.CAMUS_SHAPE[0] * F.CAMUS_SHAPE[1]  # one uint8 slice
    out = tmp_path / "Dataset508_CAMUS"
    code, err = _cli(capsys, "convert-camus", str(src), str(out), "--progress", "False")
    assert code == 2 and "Traceback" not in err and "No such file" not in err
    assert err.strip().splitlines()[-1] == (
        f"echogains: error: {raw}: raw data file is truncated: {kept} bytes, header patient0002_4CH_ED.mhd "
        f"(DimSize {F.CAMUS_SHAPE[1]} {F.CAMUS_SHAPE[0]} 1, MET_UCHAR) needs {need}"
    )
    assert not out.exists()


def test_truncated_nifti_is_named_not_zero_filled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = F.write_camus(tmp_path / "CAMUS", "nifti", patients=(1, 2))
    image = src / "database_nifti" / "patient0001" / "patient0001_4CH_ES.nii.gz"
    F.truncate(image)  # SimpleITK alone reads this without complaint, the missing pixels as 0
    out = tmp_path / "Dataset509_CAMUS"
    code, err = _cli(capsys, "convert-camus", str(src), str(out), "--progress", "False")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"echogains: error: {image}: truncated/corrupt gzip (")
    assert not out.exists()


@pytest.mark.parametrize(
    "args, problem",
    [
        (("--n_folds", "1"), "--n_folds: expected an integer >= 2, got 1"),
        (("--seed=-1",), "--seed: expected an integer >= 0, got -1"),
        (("--skip_bad", "maybe"), "--skip_bad: expected True or False, got 'maybe'"),
    ],
)
def test_bad_argument_values_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], problem: str
) -> None:
    src = F.write_camus(tmp_path / "CAMUS", "nifti", patients=(1, 2))
    out = tmp_path / "Dataset511_CAMUS"
    code, err = _cli(capsys, "convert-camus", str(src), str(out), "--progress", "False", *args)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"echogains: error: {problem}"
    assert not out.exists()


def test_geometry_mismatch_message_is_plain_numbers(tmp_path: Path) -> None:
    src = F.write_camus(tmp_path / "CAMUS", "nifti", patients=(1, 2))
    _spacing_mismatch(src / "database_nifti" / "patient0002")
    with pytest.raises(EchoDataError) as info:
        convert_camus(src, tmp_path / "Dataset513_CAMUS", progress=False)
    assert (
        info.value.problem == "spacing (0.3, 0.3) differs from the image's (0.308, 0.154) (patient0002_2CH_ED.nii.gz)"
    )


def test_missing_source_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "Dataset512_CAMUS"
    code, err = _cli(capsys, "convert-camus", str(tmp_path / "nowhere"), str(out), "--progress", "False")
    assert (
        code == 2
        and err.strip().splitlines()[-1] == f"echogains: error: {tmp_path / 'nowhere'}: CAMUS folder not found"
    )
    assert not out.exists()
