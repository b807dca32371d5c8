"""Echo-DND configuration: the paper's network (C = 128 at 256 x 256) and a tiny one for CPU tests and the demo.

Settings from the paper (Rahman et al., Echo-DND, 2025, Sect. 4-5): GNEM and BNEM are diffusion U-Nets with multi-head
self-attention at 16 x 16 (GNEM) and 8 x 8 (BNEM), sinusoidal timestep embeddings, C = 128; T = 1000;
loss weights lambda_1 = lambda_2 = 1, lambda_3 = lambda_4 = 0.01, lambda_5 = 0.1 (eq. 13). The U-Net layout
(channels 128, 128, 256, 256, 512, 512; two residual blocks per level) is the improved-DDPM / MedSegDiff layout
for 256 x 256 that the paper builds on.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "LOSS_TERMS",
    "ABLATIONS",
    "KL_FORMS",
    "LEGACY_FIELDS",
    "NETWORK_CONFIG_NAME",
    "EchoDNDConfig",
    "network_config",
]

#: File written beside deployable weights (``model.pt``, a plain state dict): the network configuration as JSON,
#: ``EchoDNDConfig.to_dict()`` plus ``"ablation"``; ``--network_config <this file>`` rebuilds the network.
NETWORK_CONFIG_NAME = "network_config.json"

#: The five terms of eq. 13, in order (lambda_1 .. lambda_5).
LOSS_TERMS: tuple[str, ...] = ("gaussian", "bernoulli", "kl_gaussian", "kl_bernoulli", "scc")

#: The paper's ablations (Table 4) as overrides of a configuration.
ABLATIONS: dict[str, dict[str, Any]] = {
    "full": {},
    "gaussian_only": {"use_bernoulli": False},
    "bernoulli_only": {"use_gaussian": False},
    "unet_conditioner": {"conditioner": "unet"},
    "loss_lg_lb": {"loss_terms": ("gaussian", "bernoulli")},
    "loss_lg_lb_kl": {"loss_terms": ("gaussian", "bernoulli", "kl_gaussian", "kl_bernoulli")},
    # not in the paper: its KL terms (eqs. 10-11, the default) replaced by the variational-bound terms
    "kl_vb": {"kl_form": "vb"},
}

#: The two forms of L_KL,G and L_KL,B (``kl_form``): ``prior`` is the paper's eqs. 10-11,
#: KL(N(mu_theta, Sigma_theta) || N(0, I)) and KL(B(phi_theta) || B(0.5)); ``vb`` the variational-bound terms
#: KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)).
KL_FORMS: tuple[str, ...] = ("prior", "vb")

#: Values of fields added after weights were first saved: a saved configuration without the field was trained with
#: this behaviour (:meth:`EchoDNDConfig.from_saved`), which is not the default of a new configuration.
LEGACY_FIELDS: dict[str, Any] = {"kl_form": "vb", "mfcm_low_levels": "strided"}

_TUPLE_FIELDS = (
    "channels",
    "gnem_attention_resolutions",
    "bnem_attention_resolutions",
    "mfcm_channels",
    "mfcm_modules",
    "loss_terms",
)


@dataclass
class EchoDNDConfig:
    """Everything that shapes the Echo-DND networks, diffusion processes and loss.

    Args:
        image_size: training/inference side length (square images, padded to keep the aspect ratio).
        in_channels: image channels (1 for B-mode echo).
        channels: U-Net channels per level; level ``i`` runs at ``image_size / 2**i``.
        num_res_blocks: residual blocks per U-Net level.
        gnem_attention_resolutions: resolutions (side length) where GNEM has self-attention (paper: 16).
        bnem_attention_resolutions: resolutions where BNEM has self-attention (paper: 8).
        num_head_channels: channels per attention head in the U-Nets and the cross-attention fusion.
        norm_num_groups: GroupNorm groups of the U-Nets (every entry of ``channels`` must be a multiple).
        use_flash_attention: use ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels, CPU and GPU).
        conditioner: ``"mfcm"`` (HRNet-like multi-scale fusion conditioning module) or ``"unet"`` (the ablation).
        mfcm_channels: widths of the MFCM streams at 1, 1/2, 1/4, 1/8 resolution (HRNet-W32 at C = 128).
        mfcm_blocks: residual blocks per stream in each MFCM module.
        mfcm_modules: number of multi-resolution modules (each ending in a cross-resolution fusion) per stage 1-4.
        mfcm_low_levels: how the MFCM serves U-Net levels below its 1/8 stream (16 x 16 and 8 x 8 at 256 x 256):
            ``"exchange"`` (default) from a last cross-resolution exchange of all four streams, so every fused scale
            is fed by the multi-resolution streams; ``"strided"`` (weights saved before the field existed) from
            strided convolutions of the 1/8 stream alone.
        unet_conditioner_blocks: residual blocks per level and path of the U-Net conditioner (ablation); 1 gives
            about the MFCM's parameter count (10.1M vs 11.5M at C = 128).
        fusion_attention_max_tokens: scales with at most this many pixels fuse conditional features by
            cross-attention; larger scales use the cheaper spatial FiLM fusion (documented in ``networks``). The
            paper configuration: 4096 (cross-attention at 64 x 64 and below, FiLM at 128 x 128 and 256 x 256, a speed
            trade-off measured by ``benchmarks/echo_dnd_fusion.py``); ``tiny`` keeps 256 (FiLM at 64 and 32 px).
        scc_channels: hidden width of the SCC head (the FCN on the MFCM's full-resolution features).
        num_train_timesteps: T.
        schedule: MONAI ``NoiseSchedules`` name shared by the Gaussian and Bernoulli processes.
        beta_start: first beta; ``None`` gives ``1e-4 * 1000 / T`` (improved-DDPM scaling, 1e-4 at T = 1000).
        beta_end: last beta; ``None`` gives ``0.02 * 1000 / T``.
        variance_interp: learned-range variance, ``"log"`` (improved DDPM) or ``"linear"`` (MONAI's DDPMScheduler).
        use_gaussian: build GNEM and run the Gaussian chain.
        use_bernoulli: build BNEM and run the Bernoulli chain.
        loss_terms: enabled terms of eq. 13, a subset of :data:`LOSS_TERMS`.
        lambda_gaussian: lambda_1 (L_G, MSE on epsilon).
        lambda_bernoulli: lambda_2 (L_B, BCE on x_0).
        lambda_kl_gaussian: lambda_3 (L_KL,G).
        lambda_kl_bernoulli: lambda_4 (L_KL,B).
        lambda_scc: lambda_5 (L_SCC).
        gaussian_prediction: what GNEM's first channel predicts: ``"epsilon"`` (default, the paper's eq. 8),
            ``"sample"`` (x_0) or ``"v_prediction"`` (v), options beyond the paper (``scripts.gaussian``).
        kl_form: ``"prior"`` (default, the paper's eqs. 10-11: KL(N(mu_theta, Sigma_theta) || N(0, I)) and
            KL(B(phi_theta) || B(0.5)), see :data:`KL_FORMS`) or ``"vb"`` (the variational-bound terms of improved DDPM
            and BerDiff, what weights saved before the field existed were trained with).
    """

    image_size: int = 256
    in_channels: int = 1
    channels: tuple[int, ...] = (128, 128, 256, 256, 512, 512)
    num_res_blocks: int = 2
    gnem_attention_resolutions: tuple[int, ...] = (16,)
    bnem_attention_resolutions: tuple[int, ...] = (8,)
    num_head_channels: int = 64
    norm_num_groups: int = 32
    use_flash_attention: bool = True
    conditioner: str = "mfcm"
    mfcm_channels: tuple[int, ...] = (32, 64, 128, 256)
    mfcm_blocks: int = 2
    mfcm_modules: tuple[int, ...] = (1, 1, 2, 2)
    unet_conditioner_blocks: int = 1
    fusion_attention_max_tokens: int = 4096
    scc_channels: int = 32
    num_train_timesteps: int = 1000
    schedule: str = "linear_beta"
    beta_start: float | None = None
    beta_end: float | None = None
    variance_interp: str = "log"
    use_gaussian: bool = True
    use_bernoulli: bool = True
    loss_terms: tuple[str, ...] = field(default=LOSS_TERMS)
    lambda_gaussian: float = 1.0
    lambda_bernoulli: float = 1.0
    lambda_kl_gaussian: float = 0.01
    lambda_kl_bernoulli: float = 0.01
    lambda_scc: float = 0.1
    kl_form: str = "prior"
    gaussian_prediction: str = "epsilon"
    mfcm_low_levels: str = "exchange"

    def __post_init__(self) -> None:
        for name in _TUPLE_FIELDS:
            setattr(self, name, tuple(getattr(self, name)))
        self._validate()

    # --- constructors --------------------------------------------------------------------------------
    @classmethod
    def paper(cls, **overrides: Any) -> EchoDNDConfig:
        """The paper's configuration (256 x 256, C = 128, T = 1000, eq. 13 weights)."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, image_size: int = 64, **overrides: Any) -> EchoDNDConfig:
        """A small configuration for CPU tests and the demo (attention still at 16 x 16 and 8 x 8).

        The U-Nets go down to 8 x 8 (at least four levels: 32 -> 4 x 4): channels 16, 32, 64, 64, ...

        Args:
            image_size: a power of two, 32 or more.
            overrides: any other field.
        """
        if image_size < 32 or image_size & (image_size - 1):
            raise ValueError(f"tiny(): image_size must be a power of two >= 32, got {image_size}")
        levels = max(4, int(math.log2(image_size // 8)) + 1)
        base: dict[str, Any] = dict(
            image_size=image_size,
            channels=(16, 32) + (64,) * (levels - 2),
            num_res_blocks=1,
            num_head_channels=16,
            norm_num_groups=8,
            mfcm_channels=(8, 16, 32, 64),
            mfcm_blocks=1,
            mfcm_modules=(1, 1, 1, 1),
            fusion_attention_max_tokens=256,
            scc_channels=8,
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EchoDNDConfig:
        """Build from a mapping (e.g. a bundle's JSON); unknown keys are an error, absent ones take the defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown EchoDNDConfig fields {unknown}; known: {sorted(known)}")
        return cls(**dict(values))

    @classmethod
    def from_saved(cls, values: Mapping[str, Any]) -> EchoDNDConfig:
        """Rebuild the configuration saved with weights or a checkpoint (``to_dict`` output).

        A field that did not exist when the file was written takes its behaviour of that time
        (:data:`LEGACY_FIELDS`: the variational-bound KL form, the strided low MFCM levels), not today's default,
        so older weights (e.g. the committed demo weights) load into the network they were trained as.
        """
        return cls.from_dict({**LEGACY_FIELDS, **dict(values)})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def replace(self, **changes: Any) -> EchoDNDConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def ablation(self, name: str) -> EchoDNDConfig:
        """A copy set up for one of the paper's ablations (Table 4), see :data:`ABLATIONS`."""
        if name not in ABLATIONS:
            raise ValueError(f"unknown ablation {name!r}; choose from {sorted(ABLATIONS)}")
        return self.replace(**ABLATIONS[name])

    # --- derived values ------------------------------------------------------------------------------
    @property
    def num_levels(self) -> int:
        return len(self.channels)

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Side length of each U-Net level."""
        return tuple(self.image_size // 2**i for i in range(self.num_levels))

    @property
    def size_divisor(self) -> int:
        """Image sides must be multiples of this."""
        return 2 ** (self.num_levels - 1)

    def attention_levels(self, resolutions: tuple[int, ...]) -> tuple[bool, ...]:
        """Per-level self-attention flags for the given attention resolutions."""
        return tuple(r in resolutions for r in self.resolutions)

    @property
    def betas(self) -> tuple[float, float]:
        """(beta_start, beta_end) with the improved-DDPM scaling when unset."""
        scale = 1000.0 / self.num_train_timesteps
        start = self.beta_start if self.beta_start is not None else 1e-4 * scale
        end = self.beta_end if self.beta_end is not None else 0.02 * scale
        return float(start), float(end)

    def schedule_args(self) -> dict[str, Any]:
        """Keyword arguments for a MONAI scheduler (``num_train_timesteps``, ``schedule`` and its arguments)."""
        args: dict[str, Any] = {"num_train_timesteps": self.num_train_timesteps, "schedule": self.schedule}
        if self.schedule in ("linear_beta", "scaled_linear_beta", "sigmoid_beta"):
            args["beta_start"], args["beta_end"] = self.betas
        return args

    def loss_weight(self, term: str) -> float:
        """lambda of one term of eq. 13."""
        return float(getattr(self, f"lambda_{term}"))

    # --- validation ----------------------------------------------------------------------------------
    def _validate(self) -> None:
        if self.conditioner not in ("mfcm", "unet"):
            raise ValueError(f"conditioner must be 'mfcm' or 'unet', got {self.conditioner!r}")
        if not (self.use_gaussian or self.use_bernoulli):
            raise ValueError("at least one of use_gaussian / use_bernoulli must be True")
        if self.kl_form not in KL_FORMS:
            raise ValueError(f"kl_form must be one of {KL_FORMS}, got {self.kl_form!r}")
        if self.gaussian_prediction not in ("epsilon", "sample", "v_prediction"):
            raise ValueError(
                f"gaussian_prediction must be epsilon, sample or v_prediction, got {self.gaussian_prediction!r}"
            )
        if self.mfcm_low_levels not in ("exchange", "strided"):
            raise ValueError(f"mfcm_low_levels must be 'exchange' or 'strided', got {self.mfcm_low_levels!r}")
        if self.fusion_attention_max_tokens < 0:
            raise ValueError(f"fusion_attention_max_tokens must be >= 0, got {self.fusion_attention_max_tokens}")
        if self.variance_interp not in ("log", "linear"):
            raise ValueError(f"variance_interp must be 'log' or 'linear', got {self.variance_interp!r}")
        unknown = [t for t in self.loss_terms if t not in LOSS_TERMS]
        if unknown:
            raise ValueError(f"unknown loss terms {unknown}; choose from {LOSS_TERMS}")
        if self.image_size < 8 or self.image_size % self.size_divisor:
            raise ValueError(f"image_size {self.image_size} must be a multiple of {self.size_divisor} (U-Net depth)")
        bad = [c for c in self.channels if c % self.norm_num_groups or c % self.num_head_channels]
        if bad:
            raise ValueError(
                f"channels {bad} must be multiples of norm_num_groups={self.norm_num_groups} "
                f"and num_head_channels={self.num_head_channels}"
            )
        for name in ("gnem_attention_resolutions", "bnem_attention_resolutions"):
            missing = [r for r in getattr(self, name) if r not in self.resolutions]
            if missing:
                raise ValueError(f"{name} {missing} are not U-Net levels {self.resolutions}")
        if len(self.mfcm_channels) != 4 or len(self.mfcm_modules) != 4 or min(self.mfcm_modules) < 1:
            raise ValueError(
                "mfcm_channels and mfcm_modules need 4 entries (streams at 1, 1/2, 1/4, 1/8), modules >= 1"
            )
        if self.unet_conditioner_blocks < 1 or self.mfcm_blocks < 1:
            raise ValueError("mfcm_blocks and unet_conditioner_blocks must be >= 1")
        if self.num_levels < 2:
            raise ValueError("the U-Nets need at least 2 levels")
        if self.num_train_timesteps < 2:
            raise ValueError("num_train_timesteps must be at least 2")
        start, end = self.betas
        if not 0.0 < start <= end < 1.0 or not math.isfinite(end):
            raise ValueError(f"betas must satisfy 0 < beta_start <= beta_end < 1, got {start}, {end}")


def network_config(value: EchoDNDConfig | Mapping[str, Any] | str | os.PathLike) -> tuple[EchoDNDConfig, str]:
    """The network configuration and its ablation name from what a bundle config or the command line gives.

    Args:
        value: an :class:`EchoDNDConfig`; a mapping of its fields, optionally with ``"ablation"`` (the configs'
            ``network_config``); ``"paper"`` or ``"tiny"``; or the path of a JSON file holding such a mapping (the
            :data:`NETWORK_CONFIG_NAME` file the trainer writes beside ``model.pt``).

    Returns:
        ``(config, ablation)``; ablation ``"full"`` unless the mapping names another.

    Raises:
        ValueError: unknown fields or values, or an unreadable JSON file (the message names it).
    """
    if isinstance(value, EchoDNDConfig):
        return value, "full"
    if isinstance(value, (str, os.PathLike)):
        text = str(value)
        if text == "paper":
            return EchoDNDConfig.paper(), "full"
        if text == "tiny":
            return EchoDNDConfig.tiny(), "full"
        path = Path(text)
        try:
            value = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: cannot read the network configuration ({err})") from err
        if not isinstance(value, Mapping):
            raise ValueError(f"{path}: expected a JSON object of EchoDNDConfig fields")
    if not isinstance(value, Mapping):
        raise ValueError(f"network_config: expected paper, tiny, a mapping or a JSON file, got {value!r}")
    fields = dict(value)
    ablation = str(fields.pop("ablation", "full"))
    if ablation not in ABLATIONS:
        raise ValueError(f"network_config: unknown ablation {ablation!r}; choose from {', '.join(ABLATIONS)}")
    return EchoDNDConfig.from_dict(fields), ablation
