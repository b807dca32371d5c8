"""Tiny hand-made CAMUS (both releases) and EchoNet-Dynamic folders for the converter tests.

Everything is drawn deterministically (fixed seeds) at 32-48 px so each test runs in well under a second.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

#: CAMUS fixture images: (rows, cols) and (x, y) spacing in mm; 0.308/0.154 are not exact in float32 on purpose.
CAMUS_SHAPE: tuple[int, int] = (48, 40)
CAMUS_SPACING: tuple[float, float] = (0.308, 0.154)
CAMUS_ORIGIN: tuple[float, float] = (1.25, -2.5)
QUALITIES = ("Good", "Medium", "Poor")
CAMUS_PHASE_CODE = {"ED": 1, "ES": 2}


def patient_name(index: int) -> str:
    return f"patient{index:04d}"


def _ellipse(shape: tuple[int, int], centre: tuple[float, float], radii: tuple[float, float]) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    return ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2 <= 1.0


def fan_mask(shape: tuple[int, int], half_angle_deg: float = 35.0) -> np.ndarray:
    """A sector (cone) with its apex just above the top centre, like an apical echo image."""
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    dy, dx = rows + 2.0, cols - (shape[1] - 1) / 2
    angle = np.degrees(np.arctan2(dx, dy))
    return (np.hypot(dx, dy) <= shape[0] + 1.0) & (np.abs(angle) <= half_angle_deg)


def camus_arrays(
    index: int, view: str, phase: str, shape: tuple[int, int] = CAMUS_SHAPE
) -> tuple[np.ndarray, np.ndarray]:
    """Image (uint8) and CAMUS label (0 bg, 1 LV, 2 MYO, 3 LA) of one fixture case; ES has a smaller LV."""
    shift = index % 3 - 1 + (1 if view == "2CH" else 0)
    lv_radii = (9.0, 6.0) if phase == "ED" else (7.0, 4.5)
    centre = (18.0, shape[1] / 2 + shift)
    label = np.zeros(shape, dtype=np.uint8)
    label[_ellipse(shape, centre, (lv_radii[0] + 2, lv_radii[1] + 2))] = 2
    label[_ellipse(shape, centre, lv_radii)] = 1
    label[_ellipse(shape, (38.0, centre[1]), (5.0, 6.0))] = 3
    rng = np.random.default_rng(1000 * index + 10 * CAMUS_PHASE_CODE[phase] + (2 if view == "2CH" else 4))
    image = rng.integers(60, 120, size=shape).astype(np.uint8)
    image[label == 1] = 20
    image[label == 2] = 200
    image[label == 3] = 30
    image[~fan_mask(shape)] = 0
    label[~fan_mask(shape)] = 0
    return image, label


def camus_info(index: int) -> dict[str, Any]:
    """Info_*.cfg values of fixture patient ``index`` (the same for both views, as in CAMUS)."""
    edv, esv = 100.5 + index, 40.25 + index
    return {
        "ED": 1,
        "ES": 10 + index,
        "NbFrame": 16 + index,
        "Sex": "F" if index % 2 else "M",
        "Age": 40 + index,
        "ImageQuality": QUALITIES[index % 3],
        "LVedv": edv,
        "LVesv": esv,
        "LVef": round(100 * (edv - esv) / edv, 2),
    }


def write_info_cfg(path: Path, info: Mapping[str, Any], drop: Sequence[str] = ()) -> None:
    lines = [f"{key}: {value}" for key, value in info.items() if key not in drop]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def truncate(path: Path, keep: float = 1 / 3) -> int:
    """Keep the first ``keep`` of ``path``'s bytes (a download or copy cut short); returns the bytes kept."""
    data = path.read_bytes()
    kept = int(len(data) * keep)
    path.write_bytes(data[:kept])
    return kept


def image_from_array(
    array: np.ndarray, spacing: Sequence[float], origin: Sequence[float], as_3d: bool = False
) -> sitk.Image:
    """SimpleITK image of a 2D array; ``as_3d`` adds a singleton z axis (spacing 1.54 mm)."""
    if as_3d:
        image = sitk.GetImageFromArray(array[None])
        image.SetSpacing([*spacing, 1.54])
        image.SetOrigin([*origin, 0.0])
    else:
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(list(spacing))
        image.SetOrigin(list(origin))
    return image


def write_camus(
    root: Path,
    release: str = "nifti",
    patients: Sequence[int] = (1, 2, 3),
    splits: Mapping[str, Sequence[int]] | None = None,
    views: Sequence[str] = ("2CH", "4CH"),
) -> Path:
    """Write a tiny CAMUS release under ``root`` and return ``root``.

    Args:
        root: folder that receives ``database_nifti/`` (``release="nifti"``) or ``training/`` (``release="mhd"``).
        release: ``nifti`` (2D ``.nii.gz``) or ``mhd`` (3D single-slice ``.mhd`` + ``.raw``, as the original release).
        patients: patient numbers.
        splits: ``{"training": [...], "validation": [...], "testing": [...]}`` patient numbers written to
            ``database_split/subgroup_*.txt``; ``None`` writes no split files.
        views: views to write.
    """
    folder = root / ("database_nifti" if release == "nifti" else "training")
    ext = ".nii.gz" if release == "nifti" else ".mhd"
    for index in patients:
        name = patient_name(index)
        pdir = folder / name
        pdir.mkdir(parents=True, exist_ok=True)
        for view in views:
            write_info_cfg(pdir / f"Info_{view}.cfg", camus_info(index))
            for phase in ("ED", "ES"):
                image, label = camus_arrays(index, view, phase)
                for array, suffix in ((image, ""), (label, "_gt")):
                    sitk_image = image_from_array(array, CAMUS_SPACING, CAMUS_ORIGIN, as_3d=release == "mhd")
                    sitk.WriteImage(sitk_image, str(pdir / f"{name}_{view}_{phase}{suffix}{ext}"), release == "nifti")
    if splits is not None:
        split_dir = root / "database_split"
        split_dir.mkdir(parents=True, exist_ok=True)
        for group, members in splits.items():
            text = "".join(f"{patient_name(i)}\n" for i in members)
            (split_dir / f"subgroup_{group}.txt").write_text(text, encoding="utf-8")
    return root


# ------------------------------------------------------------------------------------------------
# EchoNet-Dynamic
# ------------------------------------------------------------------------------------------------
ECHONET_SIZE = 32


def frame_value(index: int) -> int:
    """Grey level of the cone in fixture frame ``index``: tells which frame a converter picked (repeats after 14)."""
    return 40 + 15 * (index % 14)


def rectangle_tracing(
    x0: float, y0: float, x1: float, y1: float, n_chords: int = 4
) -> list[tuple[float, float, float, float]]:
    """EchoNet rows of a rectangle: long axis first, then horizontal chords from left (X1, Y1) to right (X2, Y2)."""
    rows = [((x0 + x1) / 2, y0, (x0 + x1) / 2, y1)]
    rows += [(x0, float(y), x1, float(y)) for y in np.linspace(y0, y1, n_chords)]
    return rows


def triangle_tracing(
    apex: tuple[float, float], base_y: float, base_x: tuple[float, float], n_chords: int = 5
) -> list[tuple[float, float, float, float]]:
    """EchoNet rows of a triangle with its apex on top and a horizontal base (chords along the two edges)."""
    rows = [(apex[0], apex[1], apex[0], base_y)]
    for t in np.linspace(0.0, 1.0, n_chords):
        y = apex[1] + t * (base_y - apex[1])
        rows.append((apex[0] + t * (base_x[0] - apex[0]), y, apex[0] + t * (base_x[1] - apex[0]), y))
    return rows


@dataclass
class VideoSpec:
    """One fixture video: its frames, traced frames (ED box larger than ES box) and FileList values."""

    name: str
    n_frames: int = 8
    ed_frame: int = 1
    es_frame: int = 5
    ed_box: tuple[float, float, float, float] = (9.5, 6.5, 21.5, 24.5)  # 12 x 18 = 216 pixel centres
    es_box: tuple[float, float, float, float] = (11.5, 9.5, 19.5, 21.5)  # 8 x 12 = 96 pixel centres
    split: str = "TRAIN"
    ef: float = 55.5
    esv: float = 40.0
    edv: float = 90.0
    es_rows_first: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def write_video(path: Path, n_frames: int, size: int = ECHONET_SIZE) -> None:
    """MJPG AVI whose frame ``i`` shows a cone of grey level :func:`frame_value` (RGB-encoded grey, as EchoNet)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 50.0, (size, size))
    if not writer.isOpened():
        raise RuntimeError(f"cv2 cannot write {path}")
    cone = fan_mask((size, size), 40.0)
    for index in range(n_frames):
        frame = np.zeros((size, size), dtype=np.uint8)
        frame[cone] = frame_value(index)
        writer.write(np.repeat(frame[:, :, None], 3, axis=2))
    writer.release()


def _tracing_rows(spec: VideoSpec) -> list[list[Any]]:
    blocks = [(spec.ed_frame, rectangle_tracing(*spec.ed_box)), (spec.es_frame, rectangle_tracing(*spec.es_box))]
    if spec.es_rows_first:
        blocks.reverse()
    return [[f"{spec.name}.avi", *row, frame] for frame, rows in blocks for row in rows]


def write_echonet(root: Path, videos: Sequence[VideoSpec], untraced: Sequence[str] = ()) -> Path:
    """Write ``FileList.csv`` (FileName without ``.avi``), ``VolumeTracings.csv`` (with ``.avi``) and ``Videos/``.

    Args:
        root: EchoNet folder to create.
        videos: traced videos.
        untraced: names of extra videos listed in FileList.csv and present in Videos/ but never traced.
    """
    root.mkdir(parents=True, exist_ok=True)
    with (root / "FileList.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split"])
        for spec in videos:
            writer.writerow(
                [spec.name, spec.ef, spec.esv, spec.edv, ECHONET_SIZE, ECHONET_SIZE, 50, spec.n_frames, spec.split]
            )
        for name in untraced:
            writer.writerow([name, 60.0, 30.0, 75.0, ECHONET_SIZE, ECHONET_SIZE, 50, 8, "TRAIN"])
    with (root / "VolumeTracings.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["FileName", "X1", "Y1", "X2", "Y2", "Frame"])
        for spec in videos:
            writer.writerows(_tracing_rows(spec))
    for spec in videos:
        write_video(root / "Videos" / f"{spec.name}.avi", spec.n_frames)
    for name in untraced:
        write_video(root / "Videos" / f"{name}.avi", 8)
    return root


def default_videos() -> list[VideoSpec]:
    """Four traced videos: two TRAIN, one VAL, one TEST; one lists its ES rows first."""
    return [
        VideoSpec("0XAAA1", split="TRAIN"),
        VideoSpec("0XAAA2", split="TRAIN", ed_frame=6, es_frame=2, es_rows_first=True, ef=61.0),
        VideoSpec("0XAAA3", split="VAL", n_frames=6),
        VideoSpec("0XAAA4", split="TEST", ed_frame=0, es_frame=3),
    ]
