"""``echogains analyze`` end to end with a stub segmenter (thresholds loops whose pixels are the phantom's true LV
label), so that beats, volumes and EF are checked exactly against the analytic truth; bad inputs; the phantom's
DICOM layout."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from echogains.analysis import analyze
from echogains.analysis.segmenters import Segmentation
from echogains.cli import main as cli_main
from echogains.data.dicom import write_ultrasound_dicom
from echogains.data.phantom import make_phantom, simulate_cycle
from echogains.data.phantom_curves import cycle_truth
from echogains.evaluation.clinical import area_length_volume, simpson_biplane_volume
from echogains.utils import EchoDataError

SIZE = (64, 48)  # rows, cols: CAMUS-like anisotropic pixels (sy = sx / 2)


class ThresholdSegmenter:
    """The stub model: the loop's pixels are 255 inside the true LV, so thresholding gives the true mask."""

    name = "threshold"

    def __init__(self, members: int = 0):
        self.members = members

    def settings(self) -> dict:
        return {"model": self.name}

    def segment(self, frames: np.ndarray, spacing_mm, desc: str = "") -> Segmentation:
        masks = (frames > 127).astype(np.uint8)
        if not self.members:
            return Segmentation(masks)

        def member(m: int, t: int) -> np.ndarray:  # member m: the true mask eroded by m pixels at the top row
            out = masks[t].astype(bool).copy()
            rows = np.flatnonzero(out.any(axis=1))
            out[rows[: m + 1]] = False
            return out

        return Segmentation(masks, np.zeros(frames.shape, np.float32), self.members, member)


def _write_avi(path: Path, frames: np.ndarray, fps: float) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (frames.shape[2], frames.shape[1]), True)
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()


def _cycle(index: int, view: str, fps: float = 25.0, n_beats: int = 2):
    return simulate_cycle(
        index,
        "camus-like",
        0,
        image_size=SIZE,
        anisotropy=0.5,
        render_images=False,
        n_beats=n_beats,
        fps=fps,
        view=view,
    )


def _label_dicoms(folder: Path, patients=(1, 2), names: str = "opaque") -> dict:
    """DICOM loops whose pixels are the true LV label (255 inside); returns {(patient, view): (cycle, truth)}."""
    truth = {}
    for index in patients:
        for view in ("2CH", "4CH"):
            cycle = _cycle(index, view)
            name = f"IM_{index}{view[0]}.dcm" if names == "opaque" else f"P{index}_{view}.dcm"
            write_ultrasound_dicom(
                folder / name,
                (cycle.labels == 1).astype(np.uint8) * 255,
                cycle.spacing,
                cycle.fps,
                patient_id=f"P{index}",
                view=view,
                key=f"t/{index}/{view}",
            )
            truth[(f"P{index}", view)] = (cycle, cycle_truth(cycle, name))
    return truth


def test_biplane_beats_and_ef_match_the_truth(tmp_path: Path) -> None:
    truth = _label_dicoms(tmp_path / "in")
    record = analyze(tmp_path / "in", tmp_path / "out", segmenter=ThresholdSegmenter(), progress=False)
    assert [r["patient"] for r in record["results"]] == ["P1", "P2"]
    for result in record["results"]:
        pid = result["patient"]
        assert result["method"] == "simpson biplane" and result["units"]["volume"] == "ml"
        c2, t2 = truth[(pid, "2CH")]
        c4, t4 = truth[(pid, "4CH")]
        assert len(result["beats"]) == len(t2.beats) == 2
        for beat, b2, b4 in zip(result["beats"], t2.beats, t4.beats):
            for view, tb in (("2CH", b2), ("4CH", b4)):
                assert abs(beat["frames"][view]["ed"] - tb[0]) <= 1 and abs(beat["frames"][view]["es"] - tb[1]) <= 1
            f2, f4 = beat["frames"]["2CH"], beat["frames"]["4CH"]
            edv = simpson_biplane_volume(c2.labels[f2["ed"]] == 1, c2.spacing, c4.labels[f4["ed"]] == 1, c4.spacing)
            esv = simpson_biplane_volume(c2.labels[f2["es"]] == 1, c2.spacing, c4.labels[f4["es"]] == 1, c4.spacing)
            assert beat["edv"] == pytest.approx(edv, rel=1e-6) and beat["esv"] == pytest.approx(esv, rel=1e-6)
        # the loop EF from the true masks is close to the analytic EF of the 3D phantom
        assert result["loop"]["ef_pct"] == pytest.approx(t2.true_ef_pct, abs=4.0)
        assert result["loop"]["edv"] == pytest.approx(t2.volume_ml.max(), rel=0.15)
    out = tmp_path / "out"
    for name in ("results.csv", "results.json", "report.html"):
        assert (out / name).is_file()
    for view in ("2CH", "4CH"):
        mask = sitk.ReadImage(str(out / "P1" / f"P1_{view}_mask.nii.gz"))
        cycle = truth[("P1", view)][0]
        assert mask.GetSize() == (SIZE[1], SIZE[0], len(cycle.labels))
        assert mask.GetSpacing()[:2] == pytest.approx(cycle.spacing)  # the DICOM region's spacing, in mm
        assert np.array_equal(sitk.GetArrayFromImage(mask), (cycle.labels == 1).astype(np.uint8))
        rows = list(csv.DictReader((out / "P1" / f"P1_{view}_curves.csv").open()))
        assert len(rows) == len(cycle.labels) and "lv_volume_ml" in rows[0]
        for suffix in ("_curves.png", "_phases.png", "_overlay.avi"):
            assert (out / "P1" / f"P1_{view}{suffix}").stat().st_size > 0
    beats = list(csv.DictReader((out / "P1" / "P1_beats.csv").open()))
    assert len(beats) == 2 and "2CH_ed_frame" in beats[0] and float(beats[0]["ef_pct"]) > 0


def test_single_view_area_length_pixel_units_and_interval(tmp_path: Path) -> None:
    cycle = _cycle(3, "4CH", fps=25.0, n_beats=2)
    write_ultrasound_dicom(
        tmp_path / "in" / "X.dcm",
        (cycle.labels == 1).astype(np.uint8) * 255,
        None,
        cycle.fps,
        patient_id="P3",
        view=None,
        key="nospacing",
    )
    record = analyze(
        tmp_path / "in", tmp_path / "out", segmenter=ThresholdSegmenter(members=3), views="4CH", progress=False
    )
    result = record["results"][0]
    assert result["method"] == "area-length 4CH" and result["units"] == {"area": "px2", "length": "px", "volume": "px3"}
    assert any("pixel units" in w for w in result["warnings"])
    beat = result["beats"][0]
    frames = beat["frames"]["4CH"]
    ed = area_length_volume(cycle.labels[frames["ed"]] == 1, (1.0, 1.0)) * 1000  # px^3
    assert beat["edv"] == pytest.approx(ed, rel=1e-6)
    assert beat["n_samples"] == 3 and beat["ef_low_pct"] <= beat["ef_high_pct"]
    assert result["loop"]["ef_low_pct"] is not None and result["loop"]["n_samples"] == 3
    with pytest.raises(EchoDataError, match="require_spacing"):
        analyze(
            tmp_path / "in", tmp_path / "out2", segmenter=ThresholdSegmenter(), require_spacing=True, progress=False
        )


def test_pairing_by_file_name_and_mismatched_views(tmp_path: Path) -> None:
    folder = tmp_path / "named"
    _label_dicoms(folder, patients=(1,), names="pattern")
    record = analyze(folder, tmp_path / "o1", segmenter=ThresholdSegmenter(), progress=False, overlay=False)
    assert record["results"][0]["method"] == "simpson biplane"
    # the tags say 2CH, the file name says 4CH
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "P1_4CH.dcm").write_bytes((folder / "P1_2CH.dcm").read_bytes())
    with pytest.raises(EchoDataError, match="mismatched views"):
        analyze(bad, tmp_path / "o2", segmenter=ThresholdSegmenter(), progress=False)
    # two 4CH loops of one patient
    dup = tmp_path / "dup"
    dup.mkdir()
    for name in ("a.dcm", "b.dcm"):
        (dup / name).write_bytes((folder / "P1_4CH.dcm").read_bytes())
    with pytest.raises(EchoDataError, match="two 4CH loops"):
        analyze(dup, tmp_path / "o3", segmenter=ThresholdSegmenter(), progress=False)


def test_bad_inputs_one_line_and_skipped_csv(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    _label_dicoms(folder, patients=(1,))
    good = (folder / "IM_12.dcm").read_bytes()
    (folder / "cut.dcm").write_bytes(good[: len(good) // 2])  # truncated DICOM
    cycle = _cycle(2, "4CH")
    short = (cycle.labels[:5] == 1).astype(np.uint8) * 255
    write_ultrasound_dicom(folder / "short.dcm", short, cycle.spacing, cycle.fps, patient_id="S", view="4CH", key="s")
    (folder / "broken.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(200))
    _write_avi(folder / "zz_cut.avi", (cycle.labels == 1).astype(np.uint8) * 255, cycle.fps)
    data = (folder / "zz_cut.avi").read_bytes()
    (folder / "zz_cut.avi").write_bytes(data[: len(data) // 2])  # truncated video: fewer frames than its header
    with pytest.raises(EchoDataError, match="broken.avi"):  # the first bad file, in sorted order
        analyze(folder, tmp_path / "o1", segmenter=ThresholdSegmenter(), progress=False)
    assert not (tmp_path / "o1").exists()  # nothing written before the inputs were checked
    record = analyze(folder, tmp_path / "o2", segmenter=ThresholdSegmenter(), skip_bad=True, progress=False)
    rows = {Path(r["file"]).name: r["problem"] for r in csv.DictReader((tmp_path / "o2" / "skipped.csv").open())}
    assert set(rows) == {"cut.dcm", "short.dcm", "broken.avi", "zz_cut.avi"}
    assert "truncated" in rows["cut.dcm"] and "too short for a beat" in rows["short.dcm"]
    assert "cannot open video" in rows["broken.avi"] and "truncated or corrupt video" in rows["zz_cut.avi"]
    assert [r["patient"] for r in record["results"]] == ["P1"]
    with pytest.raises(EchoDataError, match="not empty"):
        analyze(folder, tmp_path / "o2", segmenter=ThresholdSegmenter(), progress=False)
    with pytest.raises(EchoDataError, match="--views"):
        analyze(folder, tmp_path / "o3", segmenter=ThresholdSegmenter(), views="PLAX", progress=False)
    with pytest.raises(EchoDataError, match="--detect_on"):
        analyze(folder, tmp_path / "o4", segmenter=ThresholdSegmenter(), detect_on="length", progress=False)
    assert not (tmp_path / "o4").exists()


class NoisySegmenter(ThresholdSegmenter):
    """The true mask, dilated, eroded or left as it is and cut by 0-2 apex rows at random per frame (seeded): noisy
    area and volume curves whose extrema fall on different frames."""

    def segment(self, frames: np.ndarray, spacing_mm, desc: str = "") -> Segmentation:
        from scipy.ndimage import binary_dilation, binary_erosion

        rng = np.random.default_rng(4)
        masks = []
        for truth in frames > 127:
            step = int(rng.integers(-1, 2))
            mask = binary_erosion(truth) if step < 0 else binary_dilation(truth) if step > 0 else truth.copy()
            mask[np.flatnonzero(mask.any(axis=1))[: int(rng.integers(0, 3))]] = False
            masks.append(mask.astype(np.uint8))
        return Segmentation(np.stack(masks))


def test_ed_es_detected_on_the_area_curve_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import echogains.analysis.pipeline as pipeline
    from echogains.analysis.cycles import detect_beats

    _label_dicoms(tmp_path / "in")
    read = []  # the curves the detection was given
    monkeypatch.setattr(
        pipeline, "detect_beats", lambda curve, *a, **k: read.append(curve) or detect_beats(curve, *a, **k)
    )
    frames = {}
    for detect_on in ("area", "volume", None):
        out = tmp_path / f"out_{detect_on}"
        options = {} if detect_on is None else {"detect_on": detect_on}
        read.clear()
        record = analyze(tmp_path / "in", out, segmenter=NoisySegmenter(), progress=False, overlay=False, **options)
        assert record["settings"]["detect_on"] == (detect_on or "area")
        rows = list(csv.DictReader((out / "P1" / "P1_2CH_curves.csv").open()))
        column = "lv_area_mm2" if detect_on in ("area", None) else "lv_volume_ml"
        assert np.asarray(read[0]) == pytest.approx([float(r[column]) for r in rows], rel=1e-4)
        frames[detect_on] = [b["frames"] for r in record["results"] for b in r["beats"]]
    assert frames[None] == frames["area"] != frames["volume"]  # the two curves' extrema differ on these masks


def test_cli_bad_input_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "x.avi").write_bytes(b"nothing")
    with pytest.raises(SystemExit) as stop:
        cli_main(["analyze", str(tmp_path / "x.avi"), str(tmp_path / "out"), "--progress=False"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x.avi" in err[0] and "Traceback" not in err[0]


def test_phantom_dicom_layout_and_truth(tmp_path: Path) -> None:
    out = make_phantom(
        tmp_path / "d",
        n_patients=2,
        layout="dicom",
        image_size=SIZE,
        cycle_frames=12,
        fps=25.0,
        n_beats=2,
        progress=False,
    )
    curves = json.loads((out / "phantom_curves.json").read_text())["loops"]
    truth = json.loads((out / "phantom_truth.json").read_text())["patients"]
    assert sorted(curves) == ["patient0001_2CH", "patient0001_4CH", "patient0002_2CH", "patient0002_4CH"]
    for _name, loop in curves.items():
        ds = pydicom.dcmread(str(out / loop["file"]))
        region = ds.SequenceOfUltrasoundRegions[0]
        spacing = truth[loop["patient"]]["dicom"][loop["view"]]["spacing_mm"]
        assert int(ds.NumberOfFrames) == loop["n_frames"] == len(loop["volume_ml"])
        assert region.PhysicalDeltaX * 10 == pytest.approx(spacing[0]) and region.PhysicalUnitsXDirection == 3
        assert spacing[1] == pytest.approx(spacing[0] / 2)  # CAMUS-like anisotropy
        assert float(ds.FrameTime) == pytest.approx(40.0) and ds.PatientID == loop["patient"]
        assert [b["next_ed"] - b["ed"] for b in loop["beats"]] == [12, 12]
        rows = list(csv.DictReader((out / loop["curve_csv"]).open()))
        assert [r["phase"] for r in rows].count("ED") == len(loop["ed_frames"])
    again = make_phantom(
        tmp_path / "e",
        n_patients=2,
        layout="dicom",
        image_size=SIZE,
        cycle_frames=12,
        fps=25.0,
        n_beats=2,
        progress=False,
    )
    for path in sorted(out.rglob("*.dcm")):
        assert path.read_bytes() == (again / path.relative_to(out)).read_bytes()


def test_demo_echo_dnd_weights_on_a_phantom_echonet_avi(tmp_path: Path) -> None:
    """The real path: the bundle loaded from its folder, its demo weights, a 112 x 112 AVI of 100+ frames."""
    make_phantom(tmp_path / "e", n_patients=1, layout="echonet", cycle_frames=36, n_beats=3, progress=False)
    (avi,) = sorted((tmp_path / "e" / "Videos").glob("*.avi"))
    record = analyze(avi, tmp_path / "out", num_steps=1, ensemble=1, progress=False)
    result = record["results"][0]
    loop = result["loops"]["unknown view"]
    assert loop["n_frames"] >= 100 and loop["size_hw"] == [112, 112] and loop["units"] == "pixels"
    assert record["settings"]["model"]["model"] == "echo_dnd" and record["settings"]["model"]["chains"] == [
        "gaussian",
        "bernoulli",
    ]
    assert result["units"]["volume"] == "px3" and result["loop"]["n_beats"] >= 1 and result["loop"]["n_samples"] == 2
    for key in ("mask", "uncertainty", "curves_csv", "curves_png", "phases_png", "overlay_video"):
        assert (tmp_path / "out" / loop[key]).stat().st_size > 0, key
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / loop["mask"])))
    assert mask.shape == (loop["n_frames"], 112, 112) and 0 < mask.mean() < 0.5
    for name in ("results.csv", "results.json", "report.html"):
        assert (tmp_path / "out" / name).is_file()
    assert "overlay.avi" in (tmp_path / "out" / "report.html").read_text()


def test_committed_demo_nnunet_on_phantom_dicom_loops(tmp_path: Path) -> None:
    """``--model nnunet`` with the committed demo model folder (nnUNetPredictor, the plugin's trainer found by path)."""
    from echogains.demo import demo_nnunet_model

    model = demo_nnunet_model()
    data = make_phantom(
        tmp_path / "d", n_patients=1, layout="dicom", cycle_frames=12, fps=25.0, n_beats=2, progress=False
    )
    record = analyze(
        data / "dicom", tmp_path / "out", model="nnunet", model_path=str(model), progress=False, overlay=False
    )
    result = record["results"][0]
    assert record["settings"]["model"]["model"] == "nnunet" and result["method"] == "simpson biplane"
    assert record["settings"]["model"]["tta"] is True  # nnU-Net's mirroring, analyze's default
    truth = json.loads((data / "phantom_curves.json").read_text())["loops"]
    for view, loop in result["loops"].items():
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / loop["mask"]))) > 0
        labels = (
            simulate_cycle(
                1,
                "camus-like",
                0,
                image_size=(128, 96),
                anisotropy=0.5,
                cycle_frames=12,
                fps=25.0,
                n_beats=2,
                view=view,
                render_images=False,
            ).labels
            == 1
        )
        assert mask.shape == labels.shape and mask.shape[0] == truth[f"patient0001_{view}"]["n_frames"]
        assert 2 * (mask & labels).sum() / (mask.sum() + labels.sum()) > 0.85  # a trained model, every frame
    assert result["loop"]["n_beats"] >= 1 and 5.0 < result["loop"]["ef_pct"] < 90.0
    assert result["loop"]["n_samples"] == 0  # a deterministic model: no interval
