"""The EchoGAINS Table 3/4 experiment's plan: arms, directions, settings, working folders and the datasets.

Part of :mod:`experiments.echogains_tables` (which re-exports every public name): what a run is made of, validated
before anything runs, and where each chain's data lie in the working folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from echogains.data.nnunet import RawDataset
from echogains.data.phantom import make_phantom
from echogains.utils import EchoDataError

__all__ = [
    "ARMS",
    "QUICK_REVERSE_ARMS",
    "PHANTOM_CUTOFFS",
    "TEST_PRESETS",
    "PAPER_CUTOFFS",
    "TRAINERS",
    "DEFAULT_TRAIN_SEEDS",
    "Arm",
    "Direction",
    "Settings",
    "arm_spec",
    "short_name",
    "plan_directions",
    "parse_train_seeds",
    "make_settings",
    "raw_dir",
    "train_dataset_dir",
    "arm_dataset_dir",
    "test_dataset_dir",
    "test_images_dir",
    "arm_dir",
    "seed_dir",
    "prepare_datasets",
]

#: Arms in the paper's Table 3 order.
ARMS: tuple[str, ...] = ("none", "depth", "tilt", "width", "translation", "combination", "combination_no_repaint")
#: Arms of the reverse direction in quick mode.
QUICK_REVERSE_ARMS: tuple[str, ...] = ("none", "combination")
#: Table 4 cut-offs (depth mm, sector angle deg) by test phantom preset. camus-like (depth 110-180 mm, angle
#: 62-86 deg) spans the paper's 150 mm / 70 deg; lv-focused (112-148 mm, 56-70 deg, depth redrawn until the heart
#: fits, so mostly 135-148 mm) never reaches them, so its subsets split at 140 mm / 62 deg.
#: hard has the camus-like geometry (issue 18), so the camus-like cut-offs.
PHANTOM_CUTOFFS: dict[str, tuple[float, float]] = {
    "camus-like": (150.0, 70.0),
    "lv-focused": (140.0, 62.0),
    "hard": (150.0, 70.0),
}
#: phantom presets that can stand in for CAMUS as the test set of the phantom directions (``--test_preset``).
TEST_PRESETS: tuple[str, ...] = ("camus-like", "hard")
PAPER_CUTOFFS = (150.0, 70.0)
TRAINERS = {"quick": "nnUNetTrainerEchoQuick", "full": "nnUNetTrainerEcho"}
#: nnU-Net training seeds per arm (``ECHOGAINS_NNUNET_SEED``): the arms of one seed differ only by their data.
DEFAULT_TRAIN_SEEDS = {"quick": (0, 1, 2), "full": (0,)}


# --- definitions --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arm:
    """One Table 3 row: ``augment`` is ``None`` for no augmentation."""

    name: str
    augment: str | None
    repaint: bool

    @property
    def label(self) -> str:
        if self.augment is None:
            return "no augmentation"
        return f"{self.augment}{'' if self.repaint else ' without repaint'}"


def arm_spec(name: str) -> Arm:
    """The expansion of an arm name of :data:`ARMS`.

    Raises:
        EchoDataError: unknown arm.
    """
    if name not in ARMS:
        raise EchoDataError(None, f"unknown arm {name!r}; choose from {', '.join(ARMS)}")
    if name == "none":
        return Arm(name, None, True)
    if name.endswith("_no_repaint"):
        return Arm(name, name[: -len("_no_repaint")], False)
    return Arm(name, name, True)


@dataclass(frozen=True)
class Direction:
    """Train on ``train``, test on ``test``; ``train``/``test`` are phantom presets or dataset paths."""

    key: str
    train: str
    test: str
    arms: tuple[str, ...]
    depth_cut_mm: float
    angle_cut_deg: float
    dataset_id: int  # the training dataset's nnU-Net id; arm i gets dataset_id + 1 + i

    @property
    def title(self) -> str:
        return f"{short_name(self.train)} -> {short_name(self.test)}"


def short_name(spec: str) -> str:
    """A phantom preset as it is, a dataset path by its folder name."""
    return spec if spec in PHANTOM_CUTOFFS else Path(spec).name


@dataclass
class Settings:
    """Everything that fixes the results (kept in ``work/settings.json`` to refuse a resume with other settings)."""

    mode: str
    seed: int
    n_train: int
    n_test: int
    image_size: int
    k: int
    sampler: str
    trainer: str
    ddpm: str
    device: str
    tta: bool
    test_subset: str
    train_dataset: str | None
    test_dataset: str | None
    directions: list[dict[str, Any]] = field(default_factory=list)
    train_seeds: list[int] = field(default_factory=lambda: [0])

    def comparable(self) -> dict[str, Any]:
        return asdict(self)


def _parse_arms(arms: str | Sequence[str] | None, default: Sequence[str]) -> tuple[str, ...]:
    if arms is None:
        return tuple(default)
    names = [a.strip() for a in arms.split(",")] if isinstance(arms, str) else [str(a).strip() for a in arms]
    names = [a for a in names if a]
    if not names:
        raise EchoDataError(None, "--arms: empty list")
    for name in names:
        arm_spec(name)
    return tuple(dict.fromkeys(names))


def _check_dataset(path: str | os.PathLike, what: str) -> Path:
    root = Path(path).expanduser().resolve()
    for required in ("dataset.json", "imagesTr"):
        if not (root / required).exists():
            raise EchoDataError(root, f"{what}: not an nnU-Net raw dataset ({required} missing)")
    return root


def plan_directions(
    quick: bool,
    train_dataset: str | None = None,
    test_dataset: str | None = None,
    arms: str | Sequence[str] | None = None,
    reverse: bool = True,
    reverse_arms: str | Sequence[str] | None = None,
    test_preset: str = "camus-like",
) -> list[Direction]:
    """The directions and their arms: the phantom's (lv-focused -> ``test_preset``, reverse) or the given datasets'.

    ``test_preset`` is the phantom standing in for CAMUS: ``camus-like`` or the CAMUS-calibrated ``hard`` preset.

    Raises:
        EchoDataError: only one of the two datasets given, a dataset that is not an nnU-Net raw dataset, an
            unknown arm or test preset.
    """
    if test_preset not in TEST_PRESETS:
        raise EchoDataError(None, f"--test_preset must be one of {', '.join(TEST_PRESETS)}, got {test_preset!r}")
    if (train_dataset is None) != (test_dataset is None):
        raise EchoDataError(train_dataset or test_dataset, "pass both --train_dataset and --test_dataset (or neither)")
    main_arms = _parse_arms(arms, ARMS)
    back_arms = _parse_arms(reverse_arms, QUICK_REVERSE_ARMS if quick else main_arms)
    if quick:
        back_arms = tuple(a for a in back_arms if a in main_arms) or back_arms
    if train_dataset is None:
        a, b = "lv-focused", test_preset
        cut_a, cut_b = PHANTOM_CUTOFFS[b], PHANTOM_CUTOFFS[a]
    else:
        a, b = (
            str(_check_dataset(train_dataset, "--train_dataset")),
            str(_check_dataset(test_dataset, "--test_dataset")),
        )
        if a == b:
            raise EchoDataError(a, "--train_dataset and --test_dataset are the same folder")
        cut_a = cut_b = PAPER_CUTOFFS
    out = [Direction("A", a, b, main_arms, *cut_a, dataset_id=710)]
    if reverse:
        out.append(Direction("B", b, a, back_arms, *cut_b, dataset_id=730))
    return out


def parse_train_seeds(value: str | int | Sequence[int] | None, default: Sequence[int]) -> list[int]:
    """``--train_seeds``: ``0,1,2``, a sequence of integers, or a count ``N`` meaning ``0..N-1``."""
    if value is None:
        return list(default)
    if isinstance(value, int) and not isinstance(value, bool):
        items: list[Any] = list(range(value)) if value >= 1 else []
    elif isinstance(value, str):
        items = [v.strip() for v in value.split(",") if v.strip()]
    else:
        items = list(value)
    seeds = []
    for item in items:
        try:
            seeds.append(int(item))
        except (TypeError, ValueError):
            raise EchoDataError(None, f"--train_seeds: expected integers, got {value!r}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise EchoDataError(None, f"--train_seeds: expected distinct integers >= 0, got {value!r}")
    return seeds


def make_settings(
    quick: bool,
    seed: int,
    directions: Sequence[Direction],
    *,
    n_train: int | None,
    n_test: int | None,
    image_size: int | None,
    k: int | None,
    sampler: str | None,
    trainer: str | None,
    ddpm: str | None,
    device: str,
    tta: bool | None,
    test_subset: str,
    train_dataset: str | None,
    test_dataset: str | None,
    train_seeds: str | int | Sequence[int] | None = None,
) -> Settings:
    """Quick or full defaults, overridden by the given values; validated.

    Raises:
        EchoDataError: a value out of range or a missing DDPM file.
    """
    # here, not at the top: echogains.ddpm loads torch, and the chain workers import this module before they pin
    # OMP_NUM_THREADS (see experiments.echogains_chain.run_chain)
    from echogains.ddpm import DEMO_WEIGHTS

    mode = "quick" if quick else "full"
    defaults = {
        "quick": dict(n_train=8, n_test=8, image_size=64, k=1, sampler="fast", tta=False),
        "full": dict(n_train=60, n_test=30, image_size=256, k=5, sampler="repaint", tta=True),
    }[mode]
    values = {"n_train": n_train, "n_test": n_test, "image_size": image_size, "k": k}
    checked: dict[str, int] = {}
    for name, low in (("n_train", 2), ("n_test", 1), ("image_size", 16), ("k", 1)):
        value = values[name] if values[name] is not None else defaults[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise EchoDataError(None, f"--{name} must be an integer >= {low}, got {value!r}")
        checked[name] = value
    sampler = sampler or str(defaults["sampler"])
    if sampler not in ("fast", "repaint"):
        raise EchoDataError(None, f"--sampler must be fast or repaint, got {sampler!r}")
    if test_subset not in ("all", "Ts", "Tr"):
        raise EchoDataError(None, f"--test_subset must be all, Ts or Tr, got {test_subset!r}")
    model = Path(ddpm).expanduser().resolve() if ddpm else Path(DEMO_WEIGHTS)
    if any(arm_spec(a).repaint and arm_spec(a).augment for d in directions for a in d.arms) and not model.is_file():
        raise EchoDataError(model, "--ddpm: DDPM weights not found")
    if device not in ("cpu", "cuda", "mps"):
        raise EchoDataError(None, f"--device must be cpu, cuda or mps, got {device!r}")
    return Settings(
        mode=mode,
        seed=int(seed),
        sampler=sampler,
        trainer=trainer or TRAINERS[mode],
        ddpm=str(model),
        train_seeds=parse_train_seeds(train_seeds, DEFAULT_TRAIN_SEEDS[mode]),
        device=device,
        tta=bool(defaults["tta"] if tta is None else tta),
        test_subset=test_subset,
        train_dataset=train_dataset and str(Path(train_dataset).resolve()),
        test_dataset=test_dataset and str(Path(test_dataset).resolve()),
        directions=[asdict(d) for d in directions],
        **checked,
    )


# --- working folders ----------------------------------------------------------------------------------------------
def raw_dir(work: Path) -> Path:
    """``nnUNet_raw`` of the working folder: the training datasets of every arm."""
    return work / "nnUNet_raw"


def train_dataset_dir(work: Path, direction: Direction) -> Path:
    return raw_dir(work) / f"Dataset{direction.dataset_id:03d}_EG{direction.key}Train"


def arm_dataset_dir(work: Path, direction: Direction, arm: str) -> Path:
    if arm == "none":
        return train_dataset_dir(work, direction)
    index = ARMS.index(arm)
    return (
        raw_dir(work) / f"Dataset{direction.dataset_id + 1 + index:03d}_EG{direction.key}{arm.title().replace('_', '')}"
    )


def test_dataset_dir(work: Path, direction: Direction) -> Path:
    return work / "test" / f"{direction.key}_{short_name(direction.test)}"


def test_images_dir(work: Path, direction: Direction, subset: str) -> Path:
    """The test images of ``subset`` (links into the test dataset), the folder that nnU-Net predicts."""
    return work / "test" / f"{direction.key}_images_{subset}"


def arm_dir(work: Path, direction: Direction, arm: str) -> Path:
    return work / "arms" / f"{direction.key}_{arm}"


def seed_dir(work: Path, direction: Direction, arm: str, seed: int) -> Path:
    return arm_dir(work, direction, arm) / f"seed{seed}"


def _phantom_seed(seed: int, direction: Direction, role: str) -> int:
    # different seeds for train and test and for both directions' phantoms
    return seed * 100 + {"A": 11, "B": 31}[direction.key] + (0 if role == "train" else 7)


def prepare_datasets(work: Path, settings: Settings, direction: Direction) -> tuple[Path, Path]:
    """The direction's training dataset in ``work/nnUNet_raw`` and its test dataset, made or linked (idempotent)."""
    train_dir, test_dir = train_dataset_dir(work, direction), test_dataset_dir(work, direction)
    for role, spec, target, n in (
        ("train", direction.train, train_dir, settings.n_train),
        ("test", direction.test, test_dir, settings.n_test),
    ):
        if (target / "dataset.json").is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if spec in PHANTOM_CUTOFFS:
            make_phantom(
                target,
                n_patients=n,
                preset=spec,
                layout="nnunet",
                labels="lv,myo",
                image_size=(settings.image_size, settings.image_size),
                seed=_phantom_seed(settings.seed, direction, role),
                overwrite=True,
                progress=False,
            )
        else:
            if target.is_symlink():
                target.unlink()
            target.symlink_to(Path(spec), target_is_directory=True)
    images = test_images_dir(work, direction, settings.test_subset)
    if not images.is_dir():
        ds = RawDataset(test_dir)
        case_ids = ds.case_ids(settings.test_subset)
        if not case_ids:
            raise EchoDataError(test_dir, f"no test cases in subset {settings.test_subset!r}")
        tmp = images.with_name(f".{images.name}.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        for case in case_ids:
            src = ds.image_path(case)
            os.symlink(src.resolve(), tmp / src.name)
        os.replace(tmp, images)  # the folder appears complete or not at all
    return train_dir, test_dir
