"""EchoGAINS unconditional improved DDPM: network configurations, diffusion process and training loop.

``model``: :class:`DDPMConfig` (``paper()``, ``tiny()``, ``micro()``) on MONAI's ``DiffusionModelUNet``;
``diffusion``: cosine schedule, learned log-space variance, hybrid loss, respacing; ``train``: ``train_ddpm``
(``echogains train-ddpm``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from echogains.ddpm.diffusion import GaussianDiffusion, cosine_betas, space_timesteps
from echogains.ddpm.model import (
    CONFIGS,
    DDPMConfig,
    build_diffusion,
    build_network,
    get_config,
    load_ddpm,
    micro,
    paper,
    save_weights,
    tiny,
)

#: Demo weights: the ``tiny`` configuration trained on the phantom by ``make demo-weights`` (EMA, 64 x 64).
DEMO_WEIGHTS = Path(__file__).resolve().parent / "weights" / "ddpm_tiny_phantom.pt"

__all__ = [
    "CONFIGS",
    "DEMO_WEIGHTS",
    "DDPMConfig",
    "GaussianDiffusion",
    "build_diffusion",
    "build_network",
    "cosine_betas",
    "get_config",
    "load_ddpm",
    "micro",
    "paper",
    "save_weights",
    "space_timesteps",
    "tiny",
    "train_ddpm",
]


def __getattr__(name: str) -> Any:
    """``train_ddpm`` is imported on first use (it pulls the data readers and the geometry)."""
    if name == "train_ddpm":
        from echogains.ddpm.train import train_ddpm

        return train_ddpm
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
