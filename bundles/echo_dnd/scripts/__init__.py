"""Echo-DND model code (Rahman et al., Echo-DND, 2025): networks, diffusion processes, loss, sampler and STAPLE.

Importable on its own (the bundle root on ``sys.path``): ``import scripts``.
"""

from __future__ import annotations

from .bernoulli import BernoulliDiffusion
from .common import EchoDataError, timestep_pairs
from .config import ABLATIONS, LOSS_TERMS, EchoDNDConfig
from .gaussian import GaussianDiffusion
from .losses import EchoDNDLoss, build_processes, training_losses
from .mfcm import MFCM, UNetConditioner
from .networks import Condition, EchoDND, NoiseEstimationUNet, SCCHead, count_parameters
from .sampler import EchoDNDSampler, SegmentationWrapper, postprocess_mask, vote_entropy
from .staple import staple, staple_torch

__all__ = [
    "ABLATIONS",
    "LOSS_TERMS",
    "BernoulliDiffusion",
    "Condition",
    "EchoDND",
    "EchoDNDConfig",
    "EchoDNDLoss",
    "EchoDNDSampler",
    "EchoDataError",
    "GaussianDiffusion",
    "MFCM",
    "NoiseEstimationUNet",
    "SCCHead",
    "SegmentationWrapper",
    "UNetConditioner",
    "build_processes",
    "count_parameters",
    "postprocess_mask",
    "staple",
    "staple_torch",
    "timestep_pairs",
    "training_losses",
    "vote_entropy",
]
