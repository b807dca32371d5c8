"""The Echo-DND sampler as a MONAI ``Inferer``: it holds the sampler and calls the network, as MONAI's
``DiffusionInferer`` holds its scheduler.

``inferer(inputs, network, generator)`` segments a batch of model-frame images ``(B, 1, S, S)`` in [0, 1] with an
:class:`~scripts.networks.EchoDND` (or the exported step, :class:`~scripts.export.ExportedEchoDND`) and returns the
sampler's outputs (``mask``, ``prob``, ``uncertainty``, the chains' member masks, STAPLE's reliabilities). The
sampler's settings (``num_steps``, ``ensemble``, ``fusion``, ``threshold``, ...) read through the inferer.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.inferers import Inferer
from torch import nn

from .sampler import EchoDNDSampler

__all__ = ["EchoDNDInferer"]


class EchoDNDInferer(Inferer):
    """Run :class:`~scripts.sampler.EchoDNDSampler` on a network.

    Args:
        sampler: the sampler (steps, ensemble, fusion, uncertainty); ``EchoDNDSampler()`` when ``None``.
        seed: seed of the CPU generator used when a call gives none (the same image then gives the same masks).
    """

    def __init__(self, sampler: EchoDNDSampler | None = None, seed: int = 0) -> None:
        super().__init__()
        self.sampler = sampler if sampler is not None else EchoDNDSampler()
        self.seed = int(seed)

    def __call__(  # type: ignore[override]
        self,
        inputs: torch.Tensor,
        network: nn.Module,
        generator: torch.Generator | None = None,
        shared_noise: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Segment ``inputs`` ``(B, 1, S, S)`` with ``network``; every draw comes from ``generator``.

        Args:
            inputs: model-frame images, on the network's device.
            network: the Echo-DND model.
            generator: the draws (default: a CPU generator seeded with ``seed``).
            shared_noise: every image of the batch gets the same draws (``EchoDNDSampler.__call__``).
        """
        if generator is None:
            generator = torch.Generator().manual_seed(self.seed)
        return self.sampler(network, inputs, generator, shared_noise=shared_noise)

    def __getattr__(self, name: str) -> Any:
        """The sampler's settings (``num_steps``, ``ensemble``, ``threshold``, ``postprocess``, ...)."""
        sampler = self.__dict__.get("sampler")
        if sampler is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(sampler, name)
