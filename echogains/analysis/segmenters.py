"""Models for ``echogains analyze``: Echo-DND (the MONAI bundle, loaded from its folder) and a trained nnU-Net.

Neither is imported statically: the toolkit does not depend on the bundle or on the nnU-Net plugin.

- :class:`EchoDNDSegmenter` loads the bundle's ``scripts`` package from ``bundle_root`` with importlib (under a
  private module name, so that it cannot clash with another ``scripts`` package) and its ``models/model.pt``. The
  bundle root defaults to ``$ECHOGAINS_ECHO_DND_BUNDLE``, else the repository's ``bundles/echo_dnd`` beside the
  installed package. Frames go through the bundle's own preprocessing (min-max scaling, centred square padding,
  resize) and sampler (``scripts.sampler.EchoDNDSampler``: DDIM steps of both chains, ``ensemble`` members each,
  STAPLE); the fused mask and the uncertainty map go back onto the input grid as in the bundle's inference
  (``scripts.data.mask_to_input``, largest component, holes filled). Every member mask of both chains is kept (in the
  model frame) for the EF interval.
- :class:`NnUNetSegmenter` runs ``nnunetv2``'s ``nnUNetPredictor`` from a trained model folder (the
  ``nnUNet_results/DatasetXXX/{trainer}__{plans}__2d`` folder, fold, checkpoint) frame by frame with the loop's
  spacing. When ``nnUNet_extTrainer`` is unset and the ``nnunet_ext`` plugin is installed, it is pointed at the
  plugin's trainers (found with ``importlib.util.find_spec``) so that models of this project's trainers load.

A segmenter is any object with ``name``, ``settings()`` and ``segment(frames, spacing_mm, desc) -> Segmentation``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from echogains.locate import BUNDLE_VARIABLE, find_bundle, nnunet_trainer_dir
from echogains.utils import EchoDataError, get_logger, progress

__all__ = [
    "Segmentation",
    "Segmenter",
    "EchoDNDSegmenter",
    "NnUNetSegmenter",
    "default_bundle_root",
    "load_bundle_scripts",
]

log = get_logger("echogains.analysis")


@dataclass
class Segmentation:
    """Masks of one loop on the input grid.

    Args:
        masks: uint8 ``(T, H, W)``, 1 = LV cavity.
        uncertainty: float32 ``(T, H, W)`` in [0, 1], or ``None``.
        n_members: sampler members per frame (0 for a deterministic model).
        member_mask: ``f(member, frame) -> bool (H, W)``, the member's mask on the input grid.
    """

    masks: np.ndarray
    uncertainty: np.ndarray | None = None
    n_members: int = 0
    member_mask: Callable[[int, int], np.ndarray] | None = None


class Segmenter(Protocol):
    name: str

    def settings(self) -> dict[str, Any]: ...

    def segment(self, frames: np.ndarray, spacing_mm: Sequence[float] | None, desc: str = "") -> Segmentation: ...


def default_bundle_root() -> Path:
    """``$ECHOGAINS_ECHO_DND_BUNDLE``, else ``bundles/echo_dnd`` of the repository holding the installed package.

    :func:`echogains.locate.find_bundle` without an argument (it raises when neither exists).
    """
    return find_bundle()


def load_bundle_scripts(bundle_root: str | os.PathLike) -> ModuleType:
    """Import ``{bundle_root}/scripts`` as a package under a private name (once per bundle folder).

    Raises:
        EchoDataError: no ``scripts/__init__.py`` under ``bundle_root``.
    """
    root = Path(bundle_root).resolve()
    init = root / "scripts" / "__init__.py"
    if not init.is_file():
        raise EchoDataError(
            root, f"not an Echo-DND bundle (no scripts/__init__.py); pass --bundle_root or set {BUNDLE_VARIABLE}"
        )
    name = "_echogains_bundle_" + hashlib.sha1(str(root).encode()).hexdigest()[:10]
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


class EchoDNDSegmenter:
    """Echo-DND from its bundle folder (see the module docstring).

    Args:
        bundle_root: the bundle folder (default :func:`default_bundle_root`).
        model_path: weights (default ``{bundle_root}/models/model.pt``).
        num_steps: DDIM steps per chain.
        ensemble: samples per chain and frame (members: 2 x ensemble with both chains).
        batch_size: frames per sampler call.
        seed: seed of the draws, the same for every frame (the same loop gives the same masks, and each frame the
            masks the bundle's sampler gives it alone with this seed).
        device: torch device.
        progress: progress bar over each loop's frames.
    """

    name = "echo_dnd"

    def __init__(
        self,
        bundle_root: str | os.PathLike | None = None,
        model_path: str | os.PathLike | None = None,
        num_steps: int = 5,
        ensemble: int = 4,
        batch_size: int = 8,
        seed: int = 0,
        device: str = "cpu",
        progress: bool = True,
    ) -> None:
        import torch

        self.bundle_root = Path(bundle_root) if bundle_root else default_bundle_root()
        self.scripts = load_bundle_scripts(self.bundle_root)
        self.model_path = Path(model_path) if model_path else self.bundle_root / "models" / "model.pt"
        train = importlib.import_module(f"{self.scripts.__name__}.train")
        self.data = importlib.import_module(f"{self.scripts.__name__}.data")
        self.model = train.load_model(self.model_path, device)
        self.sampler = self.scripts.EchoDNDSampler(num_steps=int(num_steps), ensemble=int(ensemble))
        self.batch_size, self.seed, self.device, self.progress = int(batch_size), int(seed), device, progress
        self._torch = torch

    def settings(self) -> dict[str, Any]:
        config = self.model.config
        return {
            "model": self.name,
            "bundle_root": str(self.bundle_root),
            "weights": str(self.model_path),
            "weights_sha256": hashlib.sha256(self.model_path.read_bytes()).hexdigest(),
            "image_size": int(config.image_size),
            "num_steps": self.sampler.num_steps,
            "ensemble": self.sampler.ensemble,
            "seed": self.seed,
            "device": str(self.device),
            "chains": [c for c, on in (("gaussian", config.use_gaussian), ("bernoulli", config.use_bernoulli)) if on],
        }

    def segment(self, frames: np.ndarray, spacing_mm: Sequence[float] | None, desc: str = "") -> Segmentation:
        torch, data = self._torch, self.data
        size = int(self.model.config.image_size)
        pairs = [data.to_model_frame(data.normalize_intensity(f), size) for f in frames]
        maps = [p[1] for p in pairs]
        soft, unc, members = [], [], []
        starts = range(0, len(pairs), self.batch_size)
        bar = (
            progress(starts, total=len(starts), desc=f"{desc} (Echo-DND, {len(pairs)} frames)")
            if self.progress
            else starts
        )
        with torch.no_grad():
            for start in bar:
                batch = torch.stack([p[0] for p in pairs[start : start + self.batch_size]]).to(self.device)
                # every frame gets the same draws (shared noise, a fresh generator per batch): a frame's masks are
                # those of the bundle's sampler on that frame alone with this seed, and the draws add no
                # frame-to-frame jitter to the volume curve
                generator = torch.Generator().manual_seed(self.seed)
                out = self.sampler(self.model, batch, generator, shared_noise=True)
                soft.append(out["prob"][:, 0].float().cpu())
                unc.append(out["uncertainty"][:, 0].float().cpu())
                chains = [out[k] for k in ("gaussian", "bernoulli") if k in out]
                members.append(torch.cat(chains, dim=1).to(torch.uint8).cpu())
        soft_t, unc_t, member_t = torch.cat(soft), torch.cat(unc), torch.cat(members).numpy()
        threshold = float(self.sampler.threshold)
        masks = np.stack([data.mask_to_input(soft_t[i], maps[i], threshold) for i in range(len(maps))])
        masks = self.scripts.postprocess_mask(masks).astype(np.uint8)
        uncertainty = np.stack(
            [np.clip(data.soft_to_input(unc_t[i], maps[i], sigma=0.0), 0, 1) for i in range(len(maps))]
        )

        def member_mask(member: int, frame: int) -> np.ndarray:
            mask = data.mask_to_input(member_t[frame, member].astype(np.float32), maps[frame], 0.5)
            return self.scripts.postprocess_mask(mask).astype(bool)

        return Segmentation(masks, uncertainty.astype(np.float32), int(member_t.shape[1]), member_mask)


def _ensure_trainer_path() -> None:
    """Point ``nnUNet_extTrainer`` at the installed plugin's trainers when it is unset (no import of the plugin)."""
    if os.environ.get("nnUNet_extTrainer"):
        return
    try:
        os.environ["nnUNet_extTrainer"] = str(nnunet_trainer_dir())
    except EchoDataError:  # no plugin: nnU-Net's own trainers only
        pass


class NnUNetSegmenter:
    """A trained nnU-Net (2d) from its results folder (see the module docstring).

    Args:
        model_path: ``nnUNet_results/DatasetXXX_Name/{trainer}__{plans}__2d``.
        fold: the fold (``fold_{fold}``), or ``all``.
        checkpoint: checkpoint file name in the fold folder.
        device: torch device.
        tta: mirroring test-time augmentation (nnU-Net's default, and this one's: it lowers the frame-to-frame
            noise of the volume curve; on the phantom's EchoNet-like AVIs with the EchoNet-phantom nnU-Net, ED and
            ES within +-1 frame 85 -> 90 % of 20 test beats, 70 -> 80 % of 20 tuning beats,
            ``experiments/results/analyze_phantom_echonet_nnunet_tta/``); ``False`` is about 4x faster in 2D.
        label: the ``dataset.json`` label of the LV cavity.
        progress: progress bar over each loop's frames.
    """

    name = "nnunet"

    def __init__(
        self,
        model_path: str | os.PathLike,
        fold: int | str = 0,
        checkpoint: str = "checkpoint_final.pth",
        device: str = "cpu",
        tta: bool = True,
        label: str = "LV",
        progress: bool = True,
    ) -> None:
        import torch

        folder = Path(model_path)
        ckpt = folder / f"fold_{fold}" / checkpoint
        for needed in (folder / "plans.json", folder / "dataset.json", ckpt):
            if not needed.is_file():
                raise EchoDataError(
                    needed,
                    "missing: --model_path must be a trained nnU-Net model folder "
                    "(nnUNet_results/DatasetXXX/TRAINER__PLANS__2d) with this fold and checkpoint",
                )
        _ensure_trainer_path()
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        self.predictor = nnUNetPredictor(
            tile_step_size=0.5,
            use_gaussian=True,
            use_mirroring=bool(tta),
            perform_everything_on_device=False,
            device=torch.device(device),
            verbose=False,
            verbose_preprocessing=False,
            allow_tqdm=False,
        )
        fold_value: int | str = fold if fold == "all" else int(fold)
        self.predictor.initialize_from_trained_model_folder(str(folder), (fold_value,), checkpoint)
        labels = self.predictor.dataset_json.get("labels", {})
        value = next((v for k, v in labels.items() if k.lower() == label.lower()), None)
        if value is None:
            raise EchoDataError(folder / "dataset.json", f"no label {label!r} (labels: {', '.join(labels)})")
        self.label_value = int(value)
        self.folder, self.fold, self.checkpoint, self.tta, self.progress = folder, fold, checkpoint, bool(tta), progress
        self.device = device

    def settings(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "model_path": str(self.folder),
            "fold": self.fold,
            "checkpoint": self.checkpoint,
            "tta": self.tta,
            "device": str(self.device),
            "label_value": self.label_value,
        }

    def segment(self, frames: np.ndarray, spacing_mm: Sequence[float] | None, desc: str = "") -> Segmentation:
        sx, sy = (1.0, 1.0) if spacing_mm is None else (float(spacing_mm[0]), float(spacing_mm[1]))
        props = {"spacing": [999.0, sy, sx]}  # nnU-Net's 2D convention: (z, y, x), a large z spacing
        indices = range(len(frames))
        bar = progress(indices, total=len(frames), desc=f"{desc} (nnU-Net)") if self.progress else indices
        masks = []
        for t in bar:
            seg = self.predictor.predict_single_npy_array(frames[t][None, None].astype(np.float32), props)
            masks.append(np.asarray(seg)[0] == self.label_value)
        return Segmentation(np.stack(masks).astype(np.uint8))
