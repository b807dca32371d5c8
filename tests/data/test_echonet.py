"""EchoNet-Dynamic converter: polygon rasterisation, ED/ES frame choice, splits, unknown spacing, malformed inputs."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from matplotlib.path import Path as MplPath

from echogains.data.echonet import (
    convert_echonet,
    polygon_area,
    rasterise_tracing,
    read_tracings,
    tracing_polygon,
    video_name,
)
from echogains.utils import EchoDataError, set_progress

try:
    from tests.data import fixtures as F
except ImportError:  # pytest run without the repository root on sys.path
    import fixtures as F  # type: ignore[no-redef]

set_progress(False)


def _cases(out: Path) -> dict:
    return json.loads((out / "cases.json").read_text())


def _array(path: Path) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


# ------------------------------------------------------------------------------------------------
# Polygon and rasterisation
# ------------------------------------------------------------------------------------------------
def test_polygon_is_x1y1_then_reversed_x2y2_without_long_axis() -> None:
    rows = [(9, 9, 9, 9), (1, 2, 5, 2), (1.5, 4, 4.5, 4), (2, 6, 4, 6)]
    x, y = tracing_polygon(rows)
    np.testing.assert_array_equal(x, [1, 1.5, 2, 4, 4.5, 5])
    np.testing.assert_array_equal(y, [2, 4, 6, 6, 4, 2])
    assert polygon_area(*tracing_polygon(F.rectangle_tracing(9.5, 6.5, 21.5, 24.5))) == pytest.approx(12 * 18)


def test_square_rasterises_to_the_pixel_centres_inside() -> None:
    # pixel [r, c] has its centre at (x, y) = (c, r): the square 1.5..5.5 holds centres 2..5 in both axes
    mask = rasterise_tracing(F.rectangle_tracing(1.5, 1.5, 5.5, 5.5), (10, 10))
    expected = np.zeros((10, 10), dtype=np.uint8)
    expected[2:6, 2:6] = 1
    np.testing.assert_array_equal(mask, expected)
    assert mask.sum() == 16


def test_triangle_rasterisation_matches_point_in_polygon_oracle() -> None:
    rows = F.triangle_tracing(apex=(7.3, 1.2), base_y=17.6, base_x=(1.7, 14.1))
    mask = rasterise_tracing(rows, (20, 20))
    r, c = np.mgrid[:20, :20]
    triangle = MplPath(np.array([[7.3, 1.2], [1.7, 17.6], [14.1, 17.6]]))
    oracle = triangle.contains_points(np.c_[c.ravel(), r.ravel()]).reshape(20, 20)
    np.testing.assert_array_equal(mask.astype(bool), oracle)
    assert mask.sum() == 101  # close to the area 0.5 * 12.4 * 16.4 = 101.68
    clipped = rasterise_tracing(rows, (10, 20))  # parts outside the frame are clipped, not wrapped
    assert clipped.sum() == oracle[:10].sum()


def test_file_names_with_and_without_avi_join() -> None:
    assert video_name("0X1A.avi") == video_name("0X1A") == video_name(" 0X1A.AVI ") == "0X1A"


# ------------------------------------------------------------------------------------------------
# Conversion
# ------------------------------------------------------------------------------------------------
def test_conversion_picks_traced_frames_splits_and_records(tmp_path: Path) -> None:
    specs = F.default_videos()
    F.write_echonet(tmp_path / "EchoNet-Dynamic", specs)
    out = convert_echonet(tmp_path, tmp_path / "Dataset601_EchoNet", progress=False)  # src one level above

    assert json.loads((out / "dataset.json").read_text())["labels"] == {"background": 0, "LV": 1}
    assert sorted(p.name for p in (out / "imagesTs").iterdir()) == [
        "0XAAA4_4CH_ED_0000.nii.gz",
        "0XAAA4_4CH_ES_0000.nii.gz",
    ]
    splits = json.loads((out / "splits_final.json").read_text())
    assert splits == [
        {
            "train": ["0XAAA1_4CH_ED", "0XAAA1_4CH_ES", "0XAAA2_4CH_ED", "0XAAA2_4CH_ES"],
            "val": ["0XAAA3_4CH_ED", "0XAAA3_4CH_ES"],
        }
    ]
    records = _cases(out)
    assert len(records) == 8
    for spec in specs:
        for phase, frame, count in (("ED", spec.ed_frame, 216), ("ES", spec.es_frame, 96)):
            case = f"{spec.name}_4CH_{phase}"
            rec = records[case]
            assert rec["frame_index"] == frame and rec["frame_index_base"] == 0
            assert rec["frames"] == {"ED": spec.ed_frame, "ES": spec.es_frame}
            assert rec["split"] == spec.split.lower() and rec["patient"] == spec.name and rec["view"] == "4CH"
            assert rec["reference"] == {"edv_ml": spec.edv, "esv_ml": spec.esv, "ef_pct": spec.ef}
            assert rec["spacing_known"] is False and rec["n_frames"] == spec.n_frames
            assert rec["source"]["video"] == f"Videos/{spec.name}.avi"
            sub = "Ts" if spec.split == "TEST" else "Tr"
            image, img = _array(out / f"images{sub}" / f"{case}_0000.nii.gz")
            label, _ = _array(out / f"labels{sub}" / f"{case}.nii.gz")
            # the written frame is the traced one (its cone's grey level encodes the frame index; MJPG is lossy)
            cone = F.fan_mask(image.shape, 30.0)
            assert abs(float(np.median(image[cone])) - F.frame_value(frame)) <= 3
            assert image.dtype == np.uint8 and image.shape == (F.ECHONET_SIZE, F.ECHONET_SIZE)
            assert int(label.sum()) == count and set(np.unique(label)) == {0, 1}
            assert img.GetSpacing() == (1.0, 1.0)  # placeholder, flagged by spacing_known = false


def test_limit_and_filelist_names_with_avi(tmp_path: Path) -> None:
    src = F.write_echonet(tmp_path / "echonet", F.default_videos())
    text = (src / "FileList.csv").read_text().replace("0XAAA1,", "0XAAA1.avi,")
    (src / "FileList.csv").write_text(text)
    out = convert_echonet(src, tmp_path / "Dataset602_EchoNet", limit=2, progress=False)
    assert sorted(_cases(out)) == ["0XAAA1_4CH_ED", "0XAAA1_4CH_ES", "0XAAA2_4CH_ED", "0XAAA2_4CH_ES"]
    # only train cases and no official val: patient-grouped folds instead of the official fold
    splits = json.loads((out / "splits_final.json").read_text())
    assert len(splits) == 2 and all({c[:6] for c in s["val"]} in ({"0XAAA1"}, {"0XAAA2"}) for s in splits)


# ------------------------------------------------------------------------------------------------
# Malformed inputs
# ------------------------------------------------------------------------------------------------
def _unreadable_avi(src: Path) -> tuple[str, str]:
    (src / "Videos" / "0XBAD0.avi").write_bytes(b"RIFF" + b"\x00garbage" * 64)
    return "0XBAD0.avi", "cannot open video|no decodable frame"


def _no_tracings(src: Path) -> tuple[str, str]:
    rows = (src / "VolumeTracings.csv").read_text().splitlines()
    (src / "VolumeTracings.csv").write_text("\n".join(r for r in rows if not r.startswith("0XBAD0")) + "\n")
    return "VolumeTracings.csv", "no tracings for video 0XBAD0"


def _missing_video(src: Path) -> tuple[str, str]:
    (src / "Videos" / "0XBAD0.avi").unlink()
    return "0XBAD0.avi", "not found"


def _one_traced_frame(src: Path) -> tuple[str, str]:
    rows = (src / "VolumeTracings.csv").read_text().splitlines()
    (src / "VolumeTracings.csv").write_text(
        "\n".join(r for r in rows if not (r.startswith("0XBAD0") and r.endswith(",5"))) + "\n"
    )
    return "VolumeTracings.csv", "need 2"


def _truncated_avi(src: Path) -> tuple[str, str]:
    F.truncate(src / "Videos" / "0XBAD0.avi")  # the traced frames 1 and 5 still decode
    return "0XBAD0.avi", r"truncated or corrupt video: \d+ of 140 frames decode"


def _frame_size_disagrees(src: Path) -> tuple[str, str]:
    rows = (src / "FileList.csv").read_text().splitlines()
    size = f",{F.ECHONET_SIZE},{F.ECHONET_SIZE},"
    (src / "FileList.csv").write_text(
        "\n".join(
            r.replace(size, f",{F.ECHONET_SIZE + 8},{F.ECHONET_SIZE},") if r.startswith("0XBAD0") else r for r in rows
        )
        + "\n"
    )
    return (
        "0XBAD0.avi",
        f"frames are {F.ECHONET_SIZE} x {F.ECHONET_SIZE} .*"
        f" FrameHeight {F.ECHONET_SIZE + 8}, FrameWidth {F.ECHONET_SIZE}",
    )


MALFORMED = {
    "frame beyond video": ({"ed_frame": 9}, None),
    "truncated avi": ({"n_frames": 140}, _truncated_avi),
    "frame size disagrees": ({}, _frame_size_disagrees),
    "unreadable avi": ({}, _unreadable_avi),
    "no tracings": ({}, _no_tracings),
    "missing video": ({}, _missing_video),
    "one traced frame": ({}, _one_traced_frame),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_input_raises_naming_file_and_writes_nothing(tmp_path: Path, kind: str) -> None:
    overrides, spoil = MALFORMED[kind]
    specs = F.default_videos()[:3] + [F.VideoSpec("0XBAD0", **overrides)]
    src = F.write_echonet(tmp_path / "echonet", specs)
    bad_file, problem = ("0XBAD0.avi", "beyond the video's 8 decodable frames") if spoil is None else spoil(src)
    out = tmp_path / "Dataset603_EchoNet"

    with pytest.raises(EchoDataError, match=problem) as info:
        convert_echonet(src, out, progress=False)
    assert Path(info.value.path).name == bad_file
    assert not out.exists()

    result = convert_echonet(src, out, skip_bad=True, progress=False)
    with (result / "skipped.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["case_id"], Path(r["file"]).name) for r in rows] == [("0XBAD0", bad_file)]
    assert {c.split("_")[0] for c in _cases(result)} == {"0XAAA1", "0XAAA2", "0XAAA3"}
    assert (result / "dataset.json").is_file()


def test_untraced_video_listed_in_filelist(tmp_path: Path) -> None:
    src = F.write_echonet(tmp_path / "echonet", F.default_videos()[:2], untraced=["0XNONE"])
    with pytest.raises(EchoDataError, match="no tracings for video 0XNONE"):
        convert_echonet(src, tmp_path / "o", progress=False)
    out = convert_echonet(src, tmp_path / "o", skip_bad=True, progress=False)
    assert "0XNONE" in (out / "skipped.csv").read_text()


def test_malformed_csv_files(tmp_path: Path) -> None:
    src = F.write_echonet(tmp_path / "echonet", F.default_videos()[:2])
    tracings = (src / "VolumeTracings.csv").read_text().splitlines()
    tracings[3] = tracings[3].replace("9.5", "abc", 1)
    (src / "VolumeTracings.csv").write_text("\n".join(tracings) + "\n")
    assert "row 4" in read_tracings(src / "VolumeTracings.csv").problems["0XAAA1"]
    with pytest.raises(EchoDataError, match="row 4"):
        convert_echonet(src, tmp_path / "o1", progress=False)
    (src / "FileList.csv").write_text("Name,EF\nx,1\n")
    with pytest.raises(EchoDataError, match="missing column") as info:
        convert_echonet(src, tmp_path / "o2", progress=False)
    assert Path(info.value.path).name == "FileList.csv"
    with pytest.raises(EchoDataError, match="--limit"):
        convert_echonet(src, tmp_path / "o3", limit=0, progress=False)
    assert not any((tmp_path / n).exists() for n in ("o1", "o2", "o3"))


# ------------------------------------------------------------------------------------------------
# The synthetic phantom's EchoNet layout (echogains.data.phantom)
# ------------------------------------------------------------------------------------------------
def test_phantom_echonet_layout_converts(tmp_path: Path) -> None:
    from echogains.data.phantom import make_phantom

    src = make_phantom(
        tmp_path / "phantom", n_patients=4, layout="echonet", seed=5, image_size=(64, 64), progress=False
    )
    truth = {
        p["echonet"]["file_name"]: p
        for p in json.loads((Path(src) / "phantom_truth.json").read_text())["patients"].values()
    }
    out = convert_echonet(src, tmp_path / "Dataset610_Phantom", progress=False)

    records = _cases(out)
    assert set(records) == {f"{name}_4CH_{phase}" for name in truth for phase in ("ED", "ES")}
    for name, t in truth.items():
        ed = records[f"{name}_4CH_ED"]
        # the phantom lists the ES tracing first: ED/ES must come from the traced areas, not the row order
        assert ed["frames"] == {"ED": t["echonet"]["ed_frame"], "ES": t["echonet"]["es_frame"]}
        assert ed["reference"]["ef_pct"] == pytest.approx(t["truth"]["ef_pct"], abs=1e-3)
        assert ed["split"] == t["split"] and ed["spacing_known"] is False
        sub = "Ts" if t["split"] == "test" else "Tr"
        ed_mask, img = _array(out / f"labels{sub}" / f"{name}_4CH_ED.nii.gz")
        es_mask, _ = _array(out / f"labels{sub}" / f"{name}_4CH_ES.nii.gz")
        assert ed_mask.shape == (64, 64) and img.GetSpacing() == (1.0, 1.0)
        assert ed_mask.sum() > es_mask.sum() > 0
        if ed["sector"] is not None:
            assert ed["sector"]["opening_deg"] == pytest.approx(t["echonet"]["sector"]["opening_deg"], abs=5.0)


# ------------------------------------------------------------------------------------------------
# A handful of videos; bad input through the command (one line, exit 2, nothing written)
# ------------------------------------------------------------------------------------------------
def test_single_video_converts_without_folds(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from echogains.data.verify import verify_dataset

    src = F.write_echonet(tmp_path / "echonet", [F.VideoSpec("0XONE1")])
    with caplog.at_level("WARNING", logger="echogains"):
        out = convert_echonet(src, tmp_path / "Dataset611_One", progress=False)
    assert sorted(_cases(out)) == ["0XONE1_4CH_ED", "0XONE1_4CH_ES"]
    assert (out / "dataset.json").is_file() and not (out / "splits_final.json").exists()
    assert any(
        "1 training patient(s)" in r.getMessage() and "needs >= 2 patients" in r.getMessage() for r in caplog.records
    )
    report = verify_dataset(out, nnunet_check=False, progress=False)
    assert report.ok, report.summary()
    assert [(Path(p.path).name, p.message.split(" (")[0]) for p in report.warnings] == [
        ("splits_final.json", "missing: no folds")
    ]


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run ``echogains ARGS`` in-process; returns (exit status, stderr)."""
    from echogains.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, capsys.readouterr().err


def _decodable_frames(path: Path) -> int:
    import cv2

    capture, count = cv2.VideoCapture(str(path)), 0
    while capture.read()[0]:
        count += 1
    capture.release()
    return count


def test_truncated_avi_is_refused_with_its_frame_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = F.write_echonet(
        tmp_path / "echonet", [F.VideoSpec("0XCUT1", n_frames=140), F.VideoSpec("0XOK01", split="VAL")]
    )
    video = src / "Videos" / "0XCUT1.avi"
    F.truncate(video)  # to a third, as the user did; the traced frames 1 and 5 still decode
    decodable = _decodable_frames(video)
    assert 5 < decodable < 140
    out = tmp_path / "Dataset612_Cut"
    code, err = _cli(capsys, "convert-echonet", str(src), str(out), "--progress", "False")
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"echogains: error: {video}: truncated or corrupt video: {decodable} of 140 "
        "frames decode (FileList.csv gives NumberOfFrames 140)"
    )
    assert not out.exists()
    code, err = _cli(capsys, "convert-echonet", str(src), str(out), "--skip_bad", "--progress", "False")
    assert code == 0, err
    rows = list(csv.DictReader((out / "skipped.csv").open()))
    assert [(r["case_id"], r["file"]) for r in rows] == [("0XCUT1", str(video))]
    assert re.search(rf"\b{decodable} of 140 frames\b", rows[0]["problem"])
    assert sorted(_cases(out)) == ["0XOK01_4CH_ED", "0XOK01_4CH_ES"]


@pytest.mark.parametrize(
    "args, problem",
    [
        (("--skip_bad", "maybe"), "--skip_bad: expected True or False, got 'maybe'"),
        (("--overwrite", "2"), "--overwrite: expected True or False, got 2"),
        (("--limit", "-3"), "--limit must be a positive integer, got -3"),
    ],
)
def test_bad_argument_values_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], problem: str
) -> None:
    src = F.write_echonet(tmp_path / "echonet", F.default_videos()[:2])
    out = tmp_path / "Dataset613_Args"
    code, err = _cli(capsys, "convert-echonet", str(src), str(out), "--progress", "False", *args)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"echogains: error: {problem}"
    assert not out.exists()


def test_missing_source_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "Dataset614_Missing"
    code, err = _cli(capsys, "convert-echonet", str(tmp_path / "nowhere"), str(out), "--progress", "False")
    assert code == 2
    assert err.strip().splitlines()[-1] == f"echogains: error: {tmp_path / 'nowhere'}: EchoNet-Dynamic folder not found"
    assert not out.exists()


def test_filelist_counts_must_be_positive_integers_and_rows_fit_the_header(tmp_path: Path) -> None:
    src = F.write_echonet(tmp_path / "echonet", F.default_videos()[:3])
    text = (src / "FileList.csv").read_text()
    (src / "FileList.csv").write_text(text.replace(",8,TRAIN", ",0,TRAIN", 1))  # 0XAAA1's NumberOfFrames
    with pytest.raises(EchoDataError, match=r"0XAAA1: row 2: NumberOfFrames '0' is not a positive integer") as info:
        convert_echonet(src, tmp_path / "o1", progress=False)
    assert Path(info.value.path).name == "FileList.csv"
    (src / "FileList.csv").write_text(text.replace("0XAAA2,", "0XAAA2,1,2,", 1))
    with pytest.raises(EchoDataError, match="line 3: 11 values, the header has 9 columns"):
        convert_echonet(src, tmp_path / "o2", progress=False)
    assert not any((tmp_path / n).exists() for n in ("o1", "o2"))
