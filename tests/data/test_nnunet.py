"""nnU-Net raw dataset writer/reader: layout, geometry, JSON files, folds, atomicity and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from echogains.data.labels import label_dict, parse_labels, remap_camus_labels
from echogains.data.nnunet import RawDataset, RawDatasetWriter, patient_grouped_splits
from echogains.utils import EchoDataError, atomic_path

LABELS = {"background": 0, "LV": 1, "MYO": 2}


def _case(rng: np.random.Generator, shape=(24, 32)) -> tuple[np.ndarray, np.ndarray]:
    image = rng.random(shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[4:12, 6:14] = 2
    label[6:10, 8:12] = 1
    return image, label


def _write(root, n_patients=4, test_patients=(), split=None):
    rng = np.random.default_rng(0)
    w = RawDatasetWriter(root, LABELS, description="test")
    for p in range(n_patients):
        pid = f"patient{p:04d}"
        for phase in ("ED", "ES"):
            image, label = _case(rng)
            rec = {"patient": pid, "view": "4CH", "phase": phase}
            if split:
                rec["split"] = split(p)
            w.add_case(
                f"{pid}_4CH_{phase}",
                image,
                label,
                spacing=(0.154, 0.308),
                origin=(1.5, -2.0),
                record=rec,
                test=p in test_patients,
            )
    w.finalize()
    return w


def test_layout_geometry_and_json(tmp_path):
    root = tmp_path / "Dataset900_Test"
    _write(root, n_patients=4, test_patients=(3,))
    assert sorted(p.name for p in root.iterdir()) == [
        "cases.json",
        "dataset.json",
        "imagesTr",
        "imagesTs",
        "labelsTr",
        "labelsTs",
        "splits_final.json",
    ]
    img = sitk.ReadImage(str(root / "imagesTr" / "patient0000_4CH_ED_0000.nii.gz"))
    assert img.GetDimension() == 2 and img.GetNumberOfComponentsPerPixel() == 1
    np.testing.assert_allclose(img.GetSpacing(), (0.154, 0.308), rtol=1e-6)
    np.testing.assert_allclose(img.GetOrigin(), (1.5, -2.0), rtol=1e-6)
    dj = json.loads((root / "dataset.json").read_text())
    assert dj["labels"] == LABELS and dj["numTraining"] == 6 and dj["numTest"] == 2
    assert dj["file_ending"] == ".nii.gz" and dj["channel_names"] == {"0": "US"}
    cases = json.loads((root / "cases.json").read_text())
    assert cases["patient0003_4CH_ES"]["subset"] == "Ts" and cases["patient0000_4CH_ED"]["subset"] == "Tr"
    ds = RawDataset(root)
    assert ds.case_ids("Ts") == ["patient0003_4CH_ED", "patient0003_4CH_ES"]
    image, label, spacing = ds.load("patient0001_4CH_ES")
    assert image.shape == label.shape == (24, 32)
    assert set(np.unique(label)) == {0, 1, 2}
    assert ds.label_value("lv") == 1


def test_folds_grouped_by_patient(tmp_path):
    root = tmp_path / "Dataset901_Test"
    _write(root, n_patients=6)
    splits = json.loads((root / "splits_final.json").read_text())
    assert len(splits) == 5
    all_val = sorted(c for s in splits for c in s["val"])
    assert len(all_val) == 12 and len(set(all_val)) == 12  # every case validated exactly once
    for s in splits:
        assert {c.split("_")[0] for c in s["train"]}.isdisjoint({c.split("_")[0] for c in s["val"]})


def test_official_split_gives_one_fold(tmp_path):
    root = tmp_path / "Dataset902_Test"
    _write(root, n_patients=4, split=lambda p: "val" if p == 0 else "train")
    splits = json.loads((root / "splits_final.json").read_text())
    assert splits == [
        {
            "train": [f"patient000{p}_4CH_{ph}" for p in (1, 2, 3) for ph in ("ED", "ES")],
            "val": ["patient0000_4CH_ED", "patient0000_4CH_ES"],
        }
    ]


def test_patient_grouped_splits_deterministic():
    cases = {f"p{i}_c{j}": f"p{i}" for i in range(7) for j in range(3)}
    a, b = patient_grouped_splits(cases, 5, seed=3), patient_grouped_splits(cases, 5, seed=3)
    assert a == b
    sizes = sorted(len({c.split("_")[0] for c in s["val"]}) for s in a)
    assert sizes == [1, 1, 1, 2, 2]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda im, lb: (im[None], lb), "2D"),
        (lambda im, lb: (np.where(im > 0.5, np.nan, im), lb), "NaN"),
        (lambda im, lb: (im, lb[:-1]), "shape"),
        (lambda im, lb: (im, np.where(lb == 1, 7, lb).astype(np.uint8)), "not in dataset labels"),
        (lambda im, lb: (im, np.zeros_like(lb)), "empty"),
    ],
)
def test_bad_cases_rejected_before_writing(tmp_path, mutate, message):
    root = tmp_path / "Dataset903_Test"
    w = RawDatasetWriter(root, LABELS)
    image, label = mutate(*_case(np.random.default_rng(1)))
    with pytest.raises(EchoDataError, match=message):
        w.add_case("patient0000_4CH_ED", image, label, spacing=(1, 1))
    assert not any((root / "imagesTr").iterdir()) and not any((root / "labelsTr").iterdir())


def test_duplicate_and_bad_ids(tmp_path):
    w = RawDatasetWriter(tmp_path / "Dataset904_Test", LABELS)
    image, label = _case(np.random.default_rng(2))
    w.add_case("p_4CH_ED", image, label, spacing=(1, 1))
    with pytest.raises(EchoDataError, match="duplicate"):
        w.add_case("p_4CH_ED", image, label, spacing=(1, 1))
    with pytest.raises(EchoDataError, match="letters"):
        w.add_case("p 4CH/ED", image, label, spacing=(1, 1))


def test_existing_dataset_needs_overwrite(tmp_path):
    root = tmp_path / "Dataset905_Test"
    _write(root, n_patients=2)
    before = (root / "dataset.json").read_bytes()
    with pytest.raises(EchoDataError, match="overwrite"):
        RawDatasetWriter(root, LABELS)
    assert (root / "dataset.json").read_bytes() == before
    _write_over = RawDatasetWriter(root, LABELS, overwrite=True)
    assert not (root / "dataset.json").exists()  # incomplete until finalize
    image, label = _case(np.random.default_rng(3))
    for p in ("a", "b"):
        _write_over.add_case(f"{p}_4CH_ED", image, label, spacing=(1, 1))
    _write_over.finalize()
    assert RawDataset(root).case_ids() == ["a_4CH_ED", "b_4CH_ED"]  # stale cases removed


def test_atomic_path_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_labels_parse_and_remap():
    assert parse_labels("LA, lv") == ["lv", "la"]
    assert label_dict(["lv", "la"]) == {"background": 0, "LV": 1, "LA": 2}
    camus = np.array([[0, 1, 2, 3]], np.uint8)
    np.testing.assert_array_equal(remap_camus_labels(camus, ["lv", "la"]), [[0, 1, 0, 2]])
    with pytest.raises(EchoDataError, match="unknown label values"):
        remap_camus_labels(np.array([[0, 4]]), ["lv"], source="x.nii.gz")
    with pytest.raises(EchoDataError, match="--labels"):
        parse_labels("lv,rv")


def test_reader_errors(tmp_path):
    with pytest.raises(EchoDataError, match="not found"):
        RawDataset(tmp_path / "nope")
    (tmp_path / "Dataset906_X").mkdir()
    with pytest.raises(EchoDataError, match="dataset.json"):
        RawDataset(tmp_path / "Dataset906_X")
