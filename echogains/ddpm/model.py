"""Network configurations of the EchoGAINS unconditional DDPM on MONAI's ``DiffusionModelUNet``.

``paper()`` follows EchoGAINS Table 1 (after Nichol & Dhariwal's 256x256 model): channels 64 down to 256 and up to
64 over six levels (256 .. 8 px), 3 residual blocks per level, self-attention at 16x16 and 8x8 with 4 heads,
GroupNorm, SiLU, average-pooling down- and nearest-neighbour up-sampling (MONAI's ``resblock_updown=True``),
learned variance (2 output channels), cosine schedule with T = 4000, Adam lr 1e-4, batch 64, 500k steps.
MONAI's blocks have no scale-shift norm, so this network has 42.2M parameters against the paper's 44.1M.

:func:`build_network` returns a ``DDPMUNet`` (:func:`ddpm_unet_class`), MONAI's network with the same weights and
outputs plus two training options: activation checkpointing of its blocks (``gradient_checkpointing``) and float32
outputs under autocast.

``tiny()`` is the CPU demo configuration (64x64, 1.4M parameters, < 6 MB of weights) and ``micro()`` the one of
the unit tests (32x32).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from echogains.ddpm.diffusion import GaussianDiffusion
from echogains.utils import EchoDataError, atomic_torch_save

__all__ = [
    "DDPMConfig",
    "CONFIGS",
    "paper",
    "tiny",
    "micro",
    "get_config",
    "build_network",
    "ddpm_unet_class",
    "build_diffusion",
    "count_parameters",
    "WEIGHTS_FORMAT",
    "save_weights",
    "load_ddpm",
]

#: Marker of a weights-only file written by :func:`save_weights`.
WEIGHTS_FORMAT = "echogains-ddpm-weights-v1"


@dataclass(frozen=True)
class DDPMConfig:
    """Network, diffusion process and default training settings of one DDPM.

    Args:
        name: configuration name (recorded in checkpoints).
        image_size: square input size in pixels.
        channels: output channels of each resolution level (level i works at ``image_size / 2**i``).
        num_res_blocks: residual blocks per level.
        attention_resolutions: resolutions (px) whose level has self-attention.
        num_heads: attention heads.
        norm_num_groups: GroupNorm groups (divides every entry of ``channels``).
        in_channels: image channels (1: grey ultrasound).
        num_timesteps: diffusion steps T.
        cosine_s: offset s of the cosine schedule (Eq. 17).
        batch_size: default global batch size.
        steps: default number of training steps.
        lr: Adam learning rate.
        ema: EMA decay of the weights used for sampling.
        vlb_weight: lambda of the hybrid loss.
    """

    name: str
    image_size: int
    channels: tuple[int, ...]
    num_res_blocks: int
    attention_resolutions: tuple[int, ...]
    num_heads: int = 4
    norm_num_groups: int = 32
    in_channels: int = 1
    num_timesteps: int = 4000
    cosine_s: float = 0.008
    batch_size: int = 64
    steps: int = 500_000
    lr: float = 1e-4
    ema: float = 0.9999
    vlb_weight: float = 0.001

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "attention_resolutions", tuple(int(r) for r in self.attention_resolutions))
        self.validate()

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Feature-map size of each level."""
        return tuple(self.image_size // 2**i for i in range(len(self.channels)))

    @property
    def attention_levels(self) -> tuple[bool, ...]:
        return tuple(r in self.attention_resolutions for r in self.resolutions)

    def validate(self) -> None:
        """Raise :class:`EchoDataError` (naming the config) when the network cannot be built."""
        where = f"DDPM config {self.name!r}"
        if not self.channels or self.num_res_blocks < 1 or self.num_heads < 1 or self.num_timesteps < 1:
            raise EchoDataError(where, "channels, num_res_blocks, num_heads and num_timesteps must be positive")
        if self.image_size % 2 ** (len(self.channels) - 1):
            raise EchoDataError(where, f"image_size {self.image_size} is not divisible by 2^{len(self.channels) - 1}")
        for c, att in zip(self.channels, self.attention_levels):
            if c % self.norm_num_groups:
                raise EchoDataError(where, f"channels {c} not divisible by norm_num_groups {self.norm_num_groups}")
            if att and c % self.num_heads:
                raise EchoDataError(where, f"attention channels {c} not divisible by num_heads {self.num_heads}")
        missing = set(self.attention_resolutions) - set(self.resolutions)
        if missing:
            raise EchoDataError(
                where, f"attention_resolutions {sorted(missing)} not among the levels {self.resolutions}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"], d["attention_resolutions"] = list(self.channels), list(self.attention_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DDPMConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise EchoDataError("DDPM config", f"unknown keys {sorted(unknown)}")
        return cls(**dict(d))


def paper() -> DDPMConfig:
    """EchoGAINS Table 1: 256x256, 64 -> 256 -> 64 channels, 3 res blocks, attention at 16 and 8 with 4 heads."""
    return DDPMConfig(
        name="paper",
        image_size=256,
        channels=(64, 64, 128, 128, 256, 256),
        num_res_blocks=3,
        attention_resolutions=(16, 8),
        num_heads=4,
        norm_num_groups=32,
    )


def tiny() -> DDPMConfig:
    """CPU demo: 64x64, channels 32 -> 64, 1 res block, attention at 16 and 8 with 4 heads (1.4M parameters)."""
    return DDPMConfig(
        name="tiny",
        image_size=64,
        channels=(32, 32, 64, 64),
        num_res_blocks=1,
        attention_resolutions=(16, 8),
        num_heads=4,
        norm_num_groups=16,
        batch_size=8,
        steps=10_000,
    )


def micro() -> DDPMConfig:
    """Unit tests: 32x32, channels 16 -> 32, 1 res block, attention at 16 and 8 (0.2M parameters)."""
    return DDPMConfig(
        name="micro",
        image_size=32,
        channels=(16, 16, 32),
        num_res_blocks=1,
        attention_resolutions=(16, 8),
        num_heads=4,
        norm_num_groups=8,
        batch_size=4,
        steps=100,
    )


#: Named configurations (``--config NAME``).
CONFIGS: dict[str, Callable[[], DDPMConfig]] = {"paper": paper, "tiny": tiny, "micro": micro}


def get_config(config: str | DDPMConfig | Mapping[str, Any], **overrides: Any) -> DDPMConfig:
    """Resolve a configuration name, dict or object, then apply ``overrides`` (e.g. ``num_timesteps=1000``)."""
    if isinstance(config, DDPMConfig):
        cfg = config
    elif isinstance(config, str):
        if config not in CONFIGS:
            raise EchoDataError(None, f"unknown DDPM config {config!r}; choose from {sorted(CONFIGS)}")
        cfg = CONFIGS[config]()
    elif isinstance(config, Mapping):
        cfg = DDPMConfig.from_dict(config)
    else:
        raise EchoDataError(None, f"DDPM config must be a name, a dict or a DDPMConfig, got {type(config).__name__}")
    return replace(cfg, **overrides) if overrides else cfg


@functools.cache
def ddpm_unet_class() -> type:
    """The ``DDPMUNet`` class (defined on first use: MONAI is imported lazily by this module)."""
    from monai.networks.nets import DiffusionModelUNet
    from monai.networks.nets.diffusion_model_unet import get_timestep_embedding
    from torch.utils.checkpoint import checkpoint

    class DDPMUNet(DiffusionModelUNet):
        """MONAI's ``DiffusionModelUNet`` (same parameters, same state dict) with two training options.

        ``gradient_checkpointing`` (default off): the input convolution, every down block, the middle block, every up
        block and the output head run under ``torch.utils.checkpoint`` (non-reentrant) while gradients are recorded:
        their activations are recomputed in the backward pass instead of kept, the same values and gradients for
        about one more forward pass of compute. Under autocast the output is returned in float32, so the loss is
        computed in full precision.
        """

        gradient_checkpointing: bool = False

        def forward(
            self,
            x: torch.Tensor,
            timesteps: torch.Tensor,
            context: torch.Tensor | None = None,
            class_labels: torch.Tensor | None = None,
            **kwargs: Any,
        ) -> torch.Tensor:
            plain = (
                not (self.gradient_checkpointing and torch.is_grad_enabled())
                or context is not None
                or class_labels is not None
                or any(v is not None for v in kwargs.values())
            )
            if plain:  # MONAI's own forward
                out = super().forward(x, timesteps, context, class_labels, **kwargs)
            else:  # MONAI's forward (steps 1, 3-7) with each block checkpointed
                emb = self.time_embed(get_timestep_embedding(timesteps, self.block_out_channels[0]).to(dtype=x.dtype))
                h = checkpoint(self.conv_in, x, use_reentrant=False)
                skips: list[torch.Tensor] = [h]
                for block in self.down_blocks:
                    h, residuals = checkpoint(
                        lambda hh, e, b=block: b(hidden_states=hh, temb=e, context=None), h, emb, use_reentrant=False
                    )
                    skips.extend(residuals)
                h = checkpoint(
                    lambda hh, e: self.middle_block(hidden_states=hh, temb=e, context=None), h, emb, use_reentrant=False
                )
                for block in self.up_blocks:
                    n = len(block.resnets)
                    residuals, skips = skips[-n:], skips[:-n]
                    h = checkpoint(
                        lambda hh, res, e, b=block: b(
                            hidden_states=hh, res_hidden_states_list=res, temb=e, context=None
                        ),
                        h,
                        residuals,
                        emb,
                        use_reentrant=False,
                    )
                out = checkpoint(self.out, h, use_reentrant=False)
            return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out

    return DDPMUNet


def build_network(config: DDPMConfig, checkpointing: bool = False) -> nn.Module:
    """The network of ``config``, 2 x in_channels outputs (eps and the variance value v).

    A ``DDPMUNet`` (:func:`ddpm_unet_class`): MONAI's ``DiffusionModelUNet`` with the same state dict and outputs.

    Args:
        config: the configuration.
        checkpointing: activation checkpointing of the blocks while training (``net.gradient_checkpointing``).
    """
    net = ddpm_unet_class()(
        spatial_dims=2,
        in_channels=config.in_channels,
        out_channels=2 * config.in_channels,
        num_res_blocks=config.num_res_blocks,
        channels=config.channels,
        attention_levels=config.attention_levels,
        norm_num_groups=config.norm_num_groups,
        resblock_updown=True,  # average-pooling down / nearest-neighbour up sampling (Table 1)
        num_head_channels=[c // config.num_heads for c in config.channels],
    )
    net.gradient_checkpointing = bool(checkpointing)
    return net


def build_diffusion(config: DDPMConfig) -> GaussianDiffusion:
    """The training process of ``config``: cosine schedule with T = ``num_timesteps``."""
    return GaussianDiffusion.cosine(config.num_timesteps, s=config.cosine_s)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def save_weights(
    path: str | os.PathLike,
    config: DDPMConfig,
    state_dict: Mapping[str, torch.Tensor],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a weights-only file (config + network state) atomically; what :func:`load_ddpm` and the demo read."""
    payload = {"format": WEIGHTS_FORMAT, "config": config.to_dict(), "state_dict": dict(state_dict)}
    payload.update(extra or {})
    atomic_torch_save(payload, path)
    return Path(path)


def _ema_network_state(ema_state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Network weights inside a ``torch.optim.swa_utils.AveragedModel`` state dict."""
    return {k[len("module.") :]: v for k, v in ema_state.items() if k.startswith("module.")}


def load_ddpm(
    path: str | os.PathLike, device: str | torch.device = "cpu", use_ema: bool = True
) -> tuple[nn.Module, GaussianDiffusion, DDPMConfig]:
    """Load a network (in eval mode) and its diffusion process from a weights file or a training checkpoint.

    Args:
        path: file written by :func:`save_weights` or a ``checkpoint.pt`` of :func:`echogains.ddpm.train.train_ddpm`.
        device: where to put the network and the process.
        use_ema: from a checkpoint, take the EMA weights (else the raw training weights).

    Raises:
        EchoDataError: missing, unreadable or foreign file, or weights that do not fit the recorded config.
    """
    path = Path(path)
    if not path.is_file():
        raise EchoDataError(path, "DDPM weights file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise EchoDataError(path, f"cannot read DDPM weights ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or "config" not in payload:
        raise EchoDataError(path, "not an echogains DDPM weights file or checkpoint (no 'config')")
    config = get_config(payload["config"])
    if "state_dict" in payload:
        state = payload["state_dict"]
    elif "ema" in payload and use_ema:
        state = _ema_network_state(payload["ema"])
    elif "model" in payload:
        state = payload["model"]
    else:
        raise EchoDataError(path, "no network weights in the file")
    net = build_network(config)
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        raise EchoDataError(path, f"weights do not match config {config.name!r}: {str(err).splitlines()[0]}") from err
    net.to(device).eval()
    return net, build_diffusion(config).to(device), config
