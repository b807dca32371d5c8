"""EchoNet-Dynamic converter: traced ED/ES frames of each video into an nnU-Net raw dataset
(``echogains convert-echonet``).

Source layout (the EchoNet-Dynamic release, Ouyang et al., Nature 2020)::

    src/FileList.csv          FileName, EF, ESV, EDV, FrameHeight, FrameWidth, FPS, NumberOfFrames, Split
    src/VolumeTracings.csv    FileName, X1, Y1, X2, Y2, Frame
    src/Videos/<FileName>.avi

``FileName`` may carry ``.avi`` or not in either csv (the public release: without in FileList, with in
VolumeTracings); both are accepted and matched without the suffix.

Per traced frame of a video, the first VolumeTracings row is the long axis and the others are chords across the
ventricle; the LV contour is the polygon of the ``(X1, Y1)`` points followed by the ``(X2, Y2)`` points in reverse
order (the long-axis row is not part of it). Of the traced frames, the one with the largest polygon area is ED and
the one with the smallest is ES (end-diastole is the largest ventricle), so the csv's row order does not matter.
``Frame`` numbers are 0-based indices into the decoded video (recorded with ``frame_index_base: 0``).

Case ids are ``{FileName}_4CH_{ED|ES}`` (EchoNet-Dynamic is apical four-chamber, the view CAMUS calls ``4CH``);
``patient`` is the FileName (one video per patient). Labels: background 0, LV 1.

Pixel spacing: EchoNet-Dynamic gives none. The NIfTI files get spacing (1, 1) because nnU-Net needs a value, but
``cases.json`` records ``"spacing_known": false``: the (1, 1) is a placeholder in pixels, never millimetres, and
mm-based measures (HD in mm, volumes) must not be computed from it.

Splits: ``Split`` TRAIN/VAL go to ``imagesTr`` with ``split`` train/val (one official fold); TEST goes to
``imagesTs``. Without both TRAIN and VAL, 5 patient-grouped folds are made; with a single training video there are no
folds and no ``splits_final.json`` (a warning says that training needs 2).

Everything is validated before anything is written: each video is decoded to its end and must give
``NumberOfFrames`` frames of ``FrameHeight`` x ``FrameWidth`` (a truncated AVI decodes fewer), and the traced frames
must be among them. With ``skip_bad`` bad videos are left out and listed (by FileName) in ``skipped.csv``. The
two traced frames of every good video are kept in memory between validation and writing (2 x 112 x 112 bytes per video).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from echogains.data.camus import (
    check_flag,
    check_folds_possible,
    check_output_folder,
    fit_sector_record,
    relative_posix,
    validate_cases,
    write_skip_report,
)
from echogains.data.frames import to_grey
from echogains.data.nnunet import CASE_ID_PATTERN, RawDatasetWriter
from echogains.utils import EchoDataError, get_logger
from echogains.utils import progress as progress_bar

__all__ = [
    "ECHONET_VIEW",
    "EchoNetVideo",
    "TracedFrame",
    "Tracings",
    "locate_echonet",
    "read_filelist",
    "read_tracings",
    "video_name",
    "tracing_polygon",
    "polygon_area",
    "rasterise_tracing",
    "read_video_frames",
    "convert_echonet",
]

log = get_logger(__name__)

ECHONET_VIEW = "4CH"
ECHONET_LABELS: dict[str, int] = {"background": 0, "LV": 1}
SPACING_PLACEHOLDER: tuple[float, float] = (1.0, 1.0)
_FILELIST_REQUIRED = ("FileName",)
_FILELIST_NUMBERS = ("EF", "ESV", "EDV", "FPS", "NumberOfFrames", "FrameHeight", "FrameWidth")
#: FileList.csv numbers checked against the decoded video (positive integers when given).
_FILELIST_COUNTS = ("NumberOfFrames", "FrameHeight", "FrameWidth")
_TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
_SPLITS = {"TRAIN": "train", "VAL": "val", "TEST": "test"}


def video_name(file_name: str) -> str:
    """FileName without a trailing ``.avi`` (any case): the key that joins FileList, VolumeTracings and Videos/."""
    name = file_name.strip()
    return name[:-4] if name.lower().endswith(".avi") else name


def locate_echonet(src: str | os.PathLike) -> Path:
    """The folder holding ``FileList.csv`` (``src`` itself or ``src/EchoNet-Dynamic``)."""
    src = Path(src)
    if not src.is_dir():
        raise EchoDataError(src, "EchoNet-Dynamic folder not found")
    for folder in (src, src / "EchoNet-Dynamic"):
        if (folder / "FileList.csv").is_file():
            return folder
    raise EchoDataError(src / "FileList.csv", "file not found: not an EchoNet-Dynamic folder")


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise EchoDataError(path, "file not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in required if c not in columns]
            if missing:
                raise EchoDataError(path, f"missing column(s) {missing}; found {columns}")
            rows = []
            for row in reader:
                if None in row:  # DictReader's key for values beyond the header
                    raise EchoDataError(
                        path,
                        f"line {reader.line_num}: {len(columns) + len(row[None])} values, the header "
                        f"has {len(columns)} columns",
                    )
                rows.append({(k or "").strip(): (v or "").strip() for k, v in row.items()})
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise EchoDataError(path, f"cannot read csv ({err})") from err


@dataclass(frozen=True)
class EchoNetVideo:
    """One FileList row: the video and its reference values (numbers are ``None`` when absent)."""

    name: str
    row_number: int
    values: Mapping[str, float | None]
    split: str | None
    problem: str | None = None

    @property
    def case_id(self) -> str:
        """Name used in the skip report (the video covers the ED and ES cases)."""
        return self.name


def _parse_filelist_row(row: Mapping[str, str], number: int) -> EchoNetVideo:
    name = video_name(row["FileName"])
    values: dict[str, float | None] = {}
    problem = None
    for key in _FILELIST_NUMBERS:
        text = row.get(key, "")
        try:
            values[key] = float(text) if text else None
        except ValueError:
            values[key], problem = None, f"row {number}: {key} {text!r} is not a number"
        if values[key] is not None and not math.isfinite(values[key]):  # type: ignore[arg-type]
            values[key] = None
        count = values[key]
        if key in _FILELIST_COUNTS and count is not None and (count < 1 or count != int(count)) and problem is None:
            problem = f"row {number}: {key} {text!r} is not a positive integer"
    split_text = row.get("Split", "").upper()
    split = _SPLITS.get(split_text)
    if split_text and split is None:
        log.warning(
            "FileList.csv row %d: unknown Split %r for %s; treated as no official split", number, split_text, name
        )
    return EchoNetVideo(name, number, values, split, problem)


def read_filelist(path: str | os.PathLike) -> list[EchoNetVideo]:
    """Read ``FileList.csv`` in file order.

    Raises:
        EchoDataError: missing file or ``FileName`` column, an empty or duplicate FileName.
    """
    path = Path(path)
    videos: list[EchoNetVideo] = []
    seen: set[str] = set()
    for number, row in enumerate(_read_csv(path, _FILELIST_REQUIRED), start=2):
        video = _parse_filelist_row(row, number)
        if not video.name:
            raise EchoDataError(path, f"row {number}: empty FileName")
        if video.name in seen:
            raise EchoDataError(path, f"row {number}: duplicate FileName {video.name}")
        seen.add(video.name)
        videos.append(video)
    if not videos:
        raise EchoDataError(path, "no videos listed")
    return videos


@dataclass
class Tracings:
    """``VolumeTracings.csv`` grouped by video then frame: rows ``[X1, Y1, X2, Y2]`` in file order."""

    by_video: dict[str, dict[int, list[tuple[float, float, float, float]]]]
    problems: dict[str, str]


def read_tracings(path: str | os.PathLike) -> Tracings:
    """Read and group ``VolumeTracings.csv``; a malformed row marks its video bad (reported per video)."""
    path = Path(path)
    tracings = Tracings({}, {})
    for number, row in enumerate(_read_csv(path, _TRACING_COLUMNS), start=2):
        name = video_name(row["FileName"])
        try:
            x1, y1, x2, y2 = (float(row[k]) for k in ("X1", "Y1", "X2", "Y2"))
            frame_value = float(row["Frame"])
        except ValueError:
            tracings.problems.setdefault(name, f"row {number}: a coordinate or Frame is not a number")
            continue
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or frame_value != int(frame_value) or frame_value < 0:
            tracings.problems.setdefault(name, f"row {number}: non-finite coordinate or invalid Frame {row['Frame']!r}")
            continue
        tracings.by_video.setdefault(name, {}).setdefault(int(frame_value), []).append((x1, y1, x2, y2))
    return tracings


def tracing_polygon(rows: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """LV contour of one traced frame: ``(x, y)`` vertices in pixels.

    Args:
        rows: ``[X1, Y1, X2, Y2]`` rows of the frame in file order; the first (long axis) is left out.

    Returns:
        The X1/Y1 points of the chords followed by their X2/Y2 points in reverse order.
    """
    chords = np.asarray(rows, dtype=np.float64)[1:]
    x = np.concatenate([chords[:, 0], chords[::-1, 2]])
    y = np.concatenate([chords[:, 1], chords[::-1, 3]])
    return x, y


def polygon_area(x: np.ndarray, y: np.ndarray) -> float:
    """Area enclosed by a polygon (shoelace formula), in pixels²."""
    # 1. A = 1/2 |sum_i (x_i y_{i+1} - x_{i+1} y_i)|
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y)))


def rasterise_tracing(rows: Sequence[Sequence[float]], shape: tuple[int, int]) -> np.ndarray:
    """Fill the LV polygon of one traced frame into a ``uint8`` mask of ``shape`` (rows, cols).

    Pixel-centre convention: pixel ``[r, c]`` has its centre at ``(x, y) = (c, r)`` in the csv's coordinates and
    is set when that centre lies inside the polygon (:func:`skimage.draw.polygon`); vertices are used as given
    (not rounded), and parts outside the frame are clipped.
    """
    from skimage.draw import polygon

    x, y = tracing_polygon(rows)
    mask = np.zeros(shape, dtype=np.uint8)
    rr, cc = polygon(y, x, shape=shape)
    mask[rr, cc] = 1
    return mask


def _to_grey(frame: np.ndarray) -> np.ndarray:
    """A decoded video frame (OpenCV: BGR) as grey ``uint8``: BT.601 luma (:func:`echogains.data.frames.to_grey`)."""
    if frame.ndim == 2:
        return frame
    return to_grey(frame, "luma", "BGR")


def read_video_frames(
    path: str | os.PathLike,
    indices: Sequence[int],
    n_frames: int | None = None,
    frame_size: tuple[int, int] | None = None,
) -> dict[int, np.ndarray]:
    """Decode ``path`` with OpenCV; return the wanted frames as grey ``uint8`` ``[y, x]``.

    Args:
        path: the AVI.
        indices: 0-based frame indices to return.
        n_frames: frames the video should have (FileList.csv ``NumberOfFrames``): the whole video is decoded and
            fewer decodable frames is an error (a truncated or corrupt file). ``None`` decodes up to the last wanted.
        frame_size: ``(FrameHeight, FrameWidth)`` the frames should have.

    Raises:
        EchoDataError: missing or undecodable file, fewer frames than ``n_frames``, frames of another size, or a
            wanted index beyond the decodable frames (short video).
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise EchoDataError(path, "video file not found")
    wanted = set(int(i) for i in indices)
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own stderr lines about a broken stream: we say it
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise EchoDataError(path, "cannot open video (unreadable or not a video OpenCV decodes)")
    frames: dict[int, np.ndarray] = {}
    count, shape = 0, None
    last = max(wanted) if n_frames is None else None
    try:
        while last is None or count <= last:
            if count in wanted or shape is None:
                ok, frame = capture.read()
                if ok and frame is not None:
                    shape = frame.shape[:2]
                    if count in wanted:
                        frames[count] = _to_grey(frame)
            else:
                ok = capture.grab()  # decoded (a broken frame still stops the loop), not converted
            if not ok:
                break
            count += 1
    finally:
        capture.release()
    if count == 0:
        raise EchoDataError(path, "no decodable frame (unreadable video)")
    if n_frames is not None and count < n_frames:
        raise EchoDataError(
            path,
            f"truncated or corrupt video: {count} of {n_frames} frames decode "
            f"(FileList.csv gives NumberOfFrames {n_frames})",
        )
    if n_frames is not None and count > n_frames:
        log.warning("%s: %d frames decode, FileList.csv NumberOfFrames says %d", path, count, n_frames)
    if frame_size is not None and tuple(shape) != tuple(frame_size):
        raise EchoDataError(
            path,
            f"frames are {shape[0]} x {shape[1]} (rows x cols) but FileList.csv says "
            f"FrameHeight {frame_size[0]}, FrameWidth {frame_size[1]}",
        )
    missing = sorted(wanted - frames.keys())
    if missing:
        raise EchoDataError(
            path, f"traced frame(s) {missing} beyond the video's {count} decodable frames (short video)"
        )
    return frames


@dataclass(frozen=True)
class TracedFrame:
    """A validated ED or ES frame: its index, grey image and LV mask."""

    index: int
    image: np.ndarray
    mask: np.ndarray


class _EchoNetChecker:
    """Validate one video: FileList row, tracings, decodable frames, non-empty masks."""

    def __init__(self, root: Path, tracings: Tracings):
        self.root = root
        self.tracings = tracings
        self.filelist = root / "FileList.csv"
        self.tracings_path = root / "VolumeTracings.csv"

    def video_path(self, video: EchoNetVideo) -> Path:
        return self.root / "Videos" / f"{video.name}.avi"

    def ed_es(self, video: EchoNetVideo) -> dict[str, tuple[int, list[tuple[float, float, float, float]]]]:
        """Pick ED (largest traced area) and ES (smallest) among the traced frames."""
        if video.name in self.tracings.problems:
            raise EchoDataError(self.tracings_path, f"{video.name}: {self.tracings.problems[video.name]}")
        frames = self.tracings.by_video.get(video.name)
        if not frames:
            raise EchoDataError(self.tracings_path, f"no tracings for video {video.name}")
        if len(frames) < 2:
            raise EchoDataError(self.tracings_path, f"{video.name}: {len(frames)} traced frame, need 2 (ED and ES)")
        areas = {}
        for index, rows in sorted(frames.items()):
            area = polygon_area(*tracing_polygon(rows)) if len(rows) >= 3 else 0.0
            if area <= 0:
                raise EchoDataError(
                    self.tracings_path, f"{video.name} frame {index}: tracing encloses no area ({len(rows)} rows)"
                )
            areas[index] = area
        if len(frames) > 2:
            log.warning("%s: %d traced frames; using the largest as ED and the smallest as ES", video.name, len(frames))
        order = sorted(areas, key=lambda i: (areas[i], i))
        return {"ED": (order[-1], frames[order[-1]]), "ES": (order[0], frames[order[0]])}

    def __call__(self, video: EchoNetVideo) -> dict[str, TracedFrame]:
        if video.problem:
            raise EchoDataError(self.filelist, f"{video.name}: {video.problem}")
        if not CASE_ID_PATTERN.match(video.name):
            raise EchoDataError(self.filelist, f"row {video.row_number}: FileName {video.name!r} cannot form a case id")
        picked = self.ed_es(video)
        path = self.video_path(video)
        n_frames = video.values.get("NumberOfFrames")
        height, width = video.values.get("FrameHeight"), video.values.get("FrameWidth")
        decoded = read_video_frames(
            path,
            [index for index, _ in picked.values()],
            n_frames=int(n_frames) if n_frames is not None else None,
            frame_size=(int(height), int(width)) if height is not None and width is not None else None,
        )
        out = {}
        for phase, (index, rows) in picked.items():
            image = decoded[index]
            mask = rasterise_tracing(rows, image.shape[:2])
            if not mask.any():
                raise EchoDataError(
                    self.tracings_path,
                    f"{video.name} frame {index}: tracing covers no pixel of the {image.shape} frame",
                )
            out[phase] = TracedFrame(index, image, mask)
        return out


def _echonet_record(
    video: EchoNetVideo, phase: str, frames: Mapping[str, TracedFrame], root: Path, checker: _EchoNetChecker
) -> dict[str, Any]:
    n_frames = video.values.get("NumberOfFrames")
    return {
        "dataset": "EchoNet-Dynamic",
        "patient": video.name,
        "video": video.name,
        "view": ECHONET_VIEW,
        "phase": phase,
        "split": video.split,
        "reference": {
            "edv_ml": video.values.get("EDV"),
            "esv_ml": video.values.get("ESV"),
            "ef_pct": video.values.get("EF"),
        },
        "image_quality": None,
        "age": None,
        "sex": None,
        "frame_index": frames[phase].index,
        "frame_index_base": 0,
        "frames": {"ED": frames["ED"].index, "ES": frames["ES"].index},
        "n_frames": int(n_frames) if n_frames is not None else None,
        "fps": video.values.get("FPS"),
        "spacing_known": False,
        "labels": ["lv"],
        "source": {
            "video": relative_posix(checker.video_path(video), root),
            "tracings": relative_posix(checker.tracings_path, root),
            "filelist": relative_posix(checker.filelist, root),
        },
    }


def convert_echonet(
    src: str | os.PathLike,
    out: str | os.PathLike,
    skip_bad: bool = False,
    limit: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert EchoNet-Dynamic into an nnU-Net raw dataset of ED and ES frames with LV masks.

    Pixel spacing is unknown in EchoNet-Dynamic: images are written with a placeholder spacing of (1, 1) and
    ``cases.json`` records ``"spacing_known": false`` (see the module docstring). Records also hold the official
    split, reference ``{edv_ml, esv_ml, ef_pct}`` from FileList.csv, the 0-based frame indices, FPS, source paths
    (relative to the EchoNet folder) and the fitted sector in pixels (``null`` when the fit fails).

    Args:
        src: folder holding ``FileList.csv``, ``VolumeTracings.csv`` and ``Videos/``.
        out: dataset folder to create, e.g. ``$nnUNet_raw/Dataset502_EchoNet``.
        skip_bad: leave bad videos out (listed in ``out/skipped.csv``) instead of raising on the first.
        limit: convert only the first ``limit`` videos of FileList.csv (a quick look at the data).
        overwrite: replace an existing dataset in ``out``.
        progress: show progress bars.

    Returns:
        The dataset folder.

    Raises:
        EchoDataError: naming the file and the problem, before anything is written.
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise EchoDataError(None, f"--limit must be a positive integer, got {limit!r}")
    overwrite, skip_bad = check_flag("overwrite", overwrite), check_flag("skip_bad", skip_bad)
    progress = check_flag("progress", progress)
    out = check_output_folder(out, overwrite)
    root = locate_echonet(src)
    videos = read_filelist(root / "FileList.csv")
    tracings = read_tracings(root / "VolumeTracings.csv")
    if limit is not None:
        videos = videos[:limit]
    checker = _EchoNetChecker(root, tracings)
    good, bad = validate_cases(videos, checker, skip_bad, progress, "checking EchoNet")
    if not good:
        raise EchoDataError(root, f"no valid video to convert ({len(bad)} bad)")
    check_folds_possible([(v.name, v.split) for v, _ in good if v.split != "test"], root)
    writer = RawDatasetWriter(
        out,
        ECHONET_LABELS,
        description="EchoNet-Dynamic ED/ES frames, LV; pixel spacing unknown (1, 1 placeholder)",
        overwrite=overwrite,
    )
    iterable = progress_bar(good, total=len(good), desc="writing EchoNet") if progress else good
    for video, frames in iterable:
        for phase in ("ED", "ES"):
            case_id = f"{video.name}_{ECHONET_VIEW}_{phase}"
            record = _echonet_record(video, phase, frames, root, checker)
            record["sector"] = fit_sector_record(frames[phase].image, SPACING_PLACEHOLDER, case_id)
            writer.add_case(
                case_id,
                frames[phase].image,
                frames[phase].mask,
                spacing=SPACING_PLACEHOLDER,
                record=record,
                test=video.split == "test",
            )
    write_skip_report(out, bad)
    writer.finalize()
    return writer.root
