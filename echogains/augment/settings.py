"""The settings of an expansion (``expand-dataset``), validated once at the entry and then passed down frozen.

:class:`ExpansionSettings` is what makes two runs the same expansion: it is written into the plan
(``.records/_plan.json``), compared with the plan when a shard starts or resumes, and copied into every augmented
case's provenance. :meth:`ExpansionSettings.to_dict` gives that JSON form (keys and order as written since the first
release: the files stay byte-identical); :meth:`ExpansionSettings.from_dict` reads it back (the merge).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from echogains.augment.repaint import SAMPLERS, network_evaluations
from echogains.augment.transforms import TransformPolicy
from echogains.ddpm.model import load_ddpm
from echogains.utils import EchoDataError

__all__ = [
    "DEFAULT_FRAME_SIZE",
    "SamplerSettings",
    "ModelInfo",
    "ExpansionSettings",
    "parse_shard",
    "load_model",
]

#: Frame size without a model (``--no-repaint``): the paper's 256 x 256.
DEFAULT_FRAME_SIZE = 256


@dataclass(frozen=True)
class SamplerSettings:
    """The RePaint sampler of an expansion.

    Args:
        name: ``fast`` or ``repaint`` (:data:`echogains.augment.repaint.SAMPLERS`).
        schedule: (t_T, jump_length, jump_n_sample).
        network_evaluations: network evaluations per image of that schedule.
        border_px: seam band of RePaint in frame pixels.
    """

    name: str
    schedule: tuple[int, ...]
    network_evaluations: int
    border_px: int

    @classmethod
    def resolve(
        cls, sampler: str, schedule: Sequence[int] | None, border: int | None, frame_size: int
    ) -> SamplerSettings:
        """Validate ``sampler`` and ``schedule`` (default: the sampler's); the default border is 10 px at 256."""
        n = network_evaluations(sampler, schedule)  # validates sampler and schedule
        sched = tuple(int(v) for v in (schedule if schedule is not None else SAMPLERS[sampler]))
        border_px = int(border) if border is not None else max(1, int(round(10 * frame_size / 256)))
        return cls(sampler, sched, n, border_px)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "schedule": list(self.schedule)}


@dataclass(frozen=True)
class ModelInfo:
    """Provenance of the DDPM: file name, its sha256, configuration name and image size."""

    file: str
    sha256: str
    config: str
    image_size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ExpansionSettings:
    """Everything that fixes the content of an expansion (not where or how it runs: shard, device, progress).

    Args:
        source: name of the source dataset folder.
        augment: transform mode (:data:`echogains.augment.transforms.AUGMENT_MODES`).
        k: augmentations per case.
        labels: label keys kept, canonical order (``lv``, ``myo``, ``la``).
        repaint: whether RePaint fills the unknown region (else black: the paper's baseline).
        sampler: the RePaint sampler (``None`` without repainting).
        model: the DDPM's provenance (``None`` without repainting).
        seed: augmentation seed.
        fold: source fold whose training cases are augmented.
        batch_size: images per network call (fixes the work groups).
        frame_size: the model's square frame.
        policy: transform ranges and retry rule.
        augment_validation: the fold's validation cases are augmented too (the paper's setting).
    """

    source: str
    augment: str
    k: int
    labels: tuple[str, ...]
    repaint: bool
    sampler: SamplerSettings | None
    model: ModelInfo | None
    seed: int
    fold: int
    batch_size: int
    frame_size: int
    policy: TransformPolicy
    augment_validation: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written into the plan and the provenance (``augment_validation`` only when set)."""
        d: dict[str, Any] = {
            "source": self.source,
            "augment": self.augment,
            "k": self.k,
            "labels": list(self.labels),
            "repaint": self.repaint,
            "sampler": self.sampler.to_dict() if self.sampler is not None else None,
            "model": self.model.to_dict() if self.model is not None else None,
            "seed": self.seed,
            "fold": self.fold,
            "batch_size": self.batch_size,
            "frame_size": self.frame_size,
            "policy": self.policy.to_dict(),
        }
        if self.augment_validation:
            d["augment_validation"] = True
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExpansionSettings:
        """The settings of a plan read back (inverse of :meth:`to_dict`)."""
        sampler, model = d.get("sampler"), d.get("model")
        return cls(
            source=d["source"],
            augment=d["augment"],
            k=int(d["k"]),
            labels=tuple(d["labels"]),
            repaint=bool(d["repaint"]),
            sampler=SamplerSettings(
                sampler["name"],
                tuple(sampler["schedule"]),
                int(sampler["network_evaluations"]),
                int(sampler["border_px"]),
            )
            if sampler is not None
            else None,
            model=ModelInfo(**model) if model is not None else None,
            seed=int(d["seed"]),
            fold=int(d["fold"]),
            batch_size=int(d["batch_size"]),
            frame_size=int(d["frame_size"]),
            policy=TransformPolicy.from_dict(d["policy"]),
            augment_validation=bool(d.get("augment_validation", False)),
        )

    def description(self) -> str:
        """The output ``dataset.json`` description."""
        mode = "repaint" if self.repaint else "no repaint"
        return (
            f"echogains expand-dataset of {self.source}: {self.augment} x{self.k} ({mode}), "
            f"labels {','.join(self.labels)}, fold {self.fold}, seed {self.seed}"
        )


def parse_shard(shard: str | Sequence[int] | None) -> tuple[int, int]:
    """``"i/N"`` or ``(i, N)`` -> (i, N); ``None`` -> RANK/WORLD_SIZE of torchrun, else (0, 1)."""
    if shard is None:
        rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
        if rank is None or world is None:
            return 0, 1
        shard = (rank, world)  # type: ignore[assignment]
    try:
        if isinstance(shard, str):
            i_text, n_text = shard.split("/")
            i, n = int(i_text), int(n_text)
        else:
            i, n = (int(v) for v in shard)  # type: ignore[union-attr]
    except (ValueError, TypeError) as err:
        raise EchoDataError(None, f"--shard: expected i/N (e.g. 0/4), got {shard!r}") from err
    if n < 1 or not 0 <= i < n:
        raise EchoDataError(None, f"--shard: need 0 <= i < N, got {i}/{n}")
    return i, n


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_model(
    model: str | os.PathLike | None, repaint: bool, frame_size: int | None, device: str
) -> tuple[Any, Any, ModelInfo | None, int]:
    """Load the DDPM (when repainting, or to take its frame size); returns (net, diffusion, provenance, frame size)."""
    if model is None:
        if repaint:
            raise EchoDataError(None, "--model is required for repainting (pass a DDPM checkpoint, or --no-repaint)")
        return None, None, None, int(frame_size or DEFAULT_FRAME_SIZE)
    path = Path(model)
    net, diffusion, config = load_ddpm(path, device=device)
    if frame_size is not None and int(frame_size) != config.image_size:
        raise EchoDataError(path, f"--frame_size {frame_size} differs from the model's image size {config.image_size}")
    info = ModelInfo(path.name, _sha256(path), config.name, config.image_size)
    return (net, diffusion, info, config.image_size) if repaint else (None, None, info, config.image_size)
