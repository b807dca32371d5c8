"""Echo-DND networks: GNEM, BNEM (conditioned diffusion U-Nets), the per-scale fusion, the SCC head and the model.

GNEM and BNEM are MONAI ``DiffusionModelUNet``s (sinusoidal timestep embeddings, residual blocks, multi-head
self-attention only where the configuration says: 16 x 16 for GNEM, 8 x 8 for BNEM; MONAI's middle block at the
lowest level always has attention). Their input is the image concatenated with their own noisy mask. This class
adds one thing: at the input of every encoder level i, the conditional features F^i of the MFCM are fused into
the U-Net's features (and into the skip connection of that scale), as the paper's Sect. 4.2 describes.

Fusion per scale (where attention sits decides the speed: MONAI's DiffusionModelUNet shaped like the paper's U-Net
reaches 73 % of this CPU's fp32 matmul peak with attention at 16 x 16 only, 32 % with attention at 64 x 64 and 32 x 32):
- ``CrossAttentionFusion`` where the scale has at most ``fusion_attention_max_tokens`` pixels (64 x 64, 32 x 32,
  16 x 16 and 8 x 8 in the paper configuration, the paper's Sect. 4.2): queries from the U-Net features, keys and
  values from F^i, fixed 2-D sinusoidal position codes on both sides so that attention knows where a token lies,
  zero-initialised output projection; ``scaled_dot_product_attention`` never materialises the attention matrix.
- ``FiLMFusion`` at larger scales (128 x 128 and 256 x 256 in the paper configuration), a speed trade-off: a spatial
  FiLM, h * (1 + gamma(F^i)) + beta(F^i), with gamma, beta from a zero-initialised 1 x 1 convolution of F^i. Its cost
  is linear in the pixels and it depends on the image only. Measured cost per scale: ``benchmarks/echo_dnd_fusion.py``
  (``benchmarks/results/echo_dnd_fusion.json``; the bundle README quotes it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from monai.networks.blocks import Convolution, CrossAttentionBlock
from monai.networks.nets import DiffusionModelUNet
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding, zero_module
from torch import nn

from .common import check_image
from .config import EchoDNDConfig, network_config
from .mfcm import MFCM, UNetConditioner, conditioner_channels, group_norm, maybe_checkpoint

__all__ = [
    "Condition",
    "CrossAttentionFusion",
    "FiLMFusion",
    "NoiseEstimationUNet",
    "SCCHead",
    "EchoDND",
    "count_parameters",
]


@dataclass
class Condition:
    """What the noise estimators need from the image: the image itself and the conditional features F^i.

    Args:
        image: ``(B, C, H, W)`` image batch.
        features: F^i per U-Net level, ``(B, C_i, H / 2**i, W / 2**i)``.
        cache: what the fusion modules compute from ``features`` alone (FiLM's gamma and beta, the normalised
            cross-attention context with its position codes, the query position codes), kept per module while
            gradients are off, so that the steps of a sampling chain, which all reuse one condition, compute it
            once: the same operations on the same inputs, so the same values bit for bit
            (``tests/bundle/test_echodnd_networks.py``). Empty and unused while gradients are recorded.
    """

    image: torch.Tensor
    features: list[torch.Tensor]
    cache: dict[int, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def batch_size(self) -> int:
        return int(self.image.shape[0])

    def repeat(self, n: int) -> Condition:
        """Each image repeated ``n`` times in a row (``repeat_interleave``), for an ensemble of ``n`` samples."""
        if n == 1:
            return self
        return Condition(self.image.repeat_interleave(n, 0), [f.repeat_interleave(n, 0) for f in self.features])


def sinusoidal_position_2d(
    height: int, width: int, channels: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Fixed 2-D sine/cosine position codes, ``(height * width, channels)``; a quarter of the channels per sin/cos
    x/y."""
    quarter = channels // 4
    if quarter == 0:
        return torch.zeros(height * width, channels, device=device, dtype=dtype)
    freqs = torch.exp(-math.log(10000.0) * torch.arange(quarter, device=device, dtype=torch.float32) / quarter)
    ys, xs = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32),
        torch.arange(width, device=device, dtype=torch.float32),
        indexing="ij",
    )
    ay, ax = ys.reshape(-1, 1) * freqs, xs.reshape(-1, 1) * freqs
    pe = torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=1)
    pe = nn.functional.pad(pe, (0, channels - 4 * quarter))
    return pe.to(dtype)


def _cached(cache: dict[int, Any] | None, module: nn.Module, compute: Callable[[], Any]) -> Any:
    """``compute()``, kept in ``cache`` (:attr:`Condition.cache`) under ``module`` and reused from there; computed
    every time without a cache."""
    if cache is None:
        return compute()
    if id(module) not in cache:
        cache[id(module)] = compute()
    return cache[id(module)]


class CrossAttentionFusion(nn.Module):
    """Fuse F^i into U-Net features by cross-attention: queries from the U-Net, keys/values from the conditioner.

    Args:
        channels: U-Net channels at this scale.
        cond_channels: channels of F^i.
        num_head_channels: channels per head.
        groups: GroupNorm groups.
        use_flash_attention: use the fused ``scaled_dot_product_attention`` kernel.
    """

    def __init__(
        self, channels: int, cond_channels: int, num_head_channels: int, groups: int, use_flash_attention: bool = True
    ) -> None:
        super().__init__()
        heads = max(channels // num_head_channels, 1)
        self.norm = group_norm(channels, groups)
        self.cond_norm = group_norm(cond_channels, groups)
        self.attn = CrossAttentionBlock(
            hidden_size=heads * num_head_channels,
            num_heads=heads,
            hidden_input_size=channels,
            context_input_size=cond_channels,
            dim_head=num_head_channels,
            use_flash_attention=use_flash_attention,
        )
        zero_module(self.attn.out_proj)

    def forward(self, h: torch.Tensor, cond: torch.Tensor, cache: dict[int, Any] | None = None) -> torch.Tensor:
        """``h`` fused with ``cond``; ``cache``: :attr:`Condition.cache` (the context and position codes depend on
        ``cond`` only and are kept there between calls)."""
        b, c, height, width = h.shape

        def constants() -> tuple[torch.Tensor, torch.Tensor]:
            context = self.cond_norm(cond).flatten(2).transpose(1, 2)
            context = context + sinusoidal_position_2d(height, width, cond.shape[1], h.device, h.dtype)
            return context, sinusoidal_position_2d(height, width, c, h.device, h.dtype)

        context, query_position = _cached(cache, self, constants)
        query = self.norm(h).flatten(2).transpose(1, 2) + query_position
        out = self.attn(query, context=context)
        return h + out.transpose(1, 2).reshape(b, c, height, width)


class FiLMFusion(nn.Module):
    """Cheaper fusion where attention does not fit: h * (1 + gamma(F)) + beta(F), per pixel and channel.

    Args:
        channels: U-Net channels at this scale.
        cond_channels: channels of F^i.
        groups: GroupNorm groups.
    """

    def __init__(self, channels: int, cond_channels: int, groups: int) -> None:
        super().__init__()
        self.cond_norm = group_norm(cond_channels, groups)
        self.act = nn.SiLU()
        self.proj = zero_module(Convolution(2, cond_channels, 2 * channels, kernel_size=1, padding=0, conv_only=True))

    def forward(self, h: torch.Tensor, cond: torch.Tensor, cache: dict[int, Any] | None = None) -> torch.Tensor:
        """``h`` modulated by ``cond``; ``cache``: :attr:`Condition.cache` (``1 + gamma`` and ``beta`` depend on
        ``cond`` only and are kept there between calls)."""

        def constants() -> tuple[torch.Tensor, torch.Tensor]:
            gamma, beta = self.proj(self.act(self.cond_norm(cond))).chunk(2, dim=1)
            return 1.0 + gamma, beta

        scale, beta = _cached(cache, self, constants)
        return h * scale + beta


class NoiseEstimationUNet(DiffusionModelUNet):
    """GNEM / BNEM: MONAI's diffusion U-Net on ``[image, x_t]`` with F^i fused at every encoder level.

    Args:
        image_channels: channels of the image (concatenated with the one-channel noisy mask).
        out_channels: 2 for GNEM (epsilon and the learned-range variance), 1 for BNEM (x_0 logits).
        channels: channels per level.
        num_res_blocks: residual blocks per level.
        attention_levels: self-attention flags per level.
        num_head_channels: channels per attention head.
        norm_num_groups: GroupNorm groups.
        cond_channels: channels of F^i per level.
        resolutions: side length per level at the configured image size (chooses the fusion kind).
        fusion_attention_max_tokens: cross-attention fusion at scales with at most this many pixels, FiLM above.
        use_flash_attention: fused attention kernels.
    """

    def __init__(
        self,
        image_channels: int,
        out_channels: int,
        channels: Sequence[int],
        num_res_blocks: int,
        attention_levels: Sequence[bool],
        num_head_channels: int,
        norm_num_groups: int,
        cond_channels: Sequence[int],
        resolutions: Sequence[int],
        fusion_attention_max_tokens: int,
        use_flash_attention: bool = True,
    ) -> None:
        super().__init__(
            spatial_dims=2,
            in_channels=image_channels + 1,
            out_channels=out_channels,
            num_res_blocks=num_res_blocks,
            channels=tuple(channels),
            attention_levels=tuple(attention_levels),
            norm_num_groups=norm_num_groups,
            num_head_channels=num_head_channels,
            use_flash_attention=use_flash_attention,
        )
        # the features entering level i have the channels of level i - 1 (conv_in: level 0)
        entry_channels = [channels[0], *channels[:-1]]
        self.fusions = nn.ModuleList(
            CrossAttentionFusion(c, cf, num_head_channels, norm_num_groups, use_flash_attention)
            if r * r <= fusion_attention_max_tokens
            else FiLMFusion(c, cf, norm_num_groups)
            for c, cf, r in zip(entry_channels, cond_channels, resolutions)
        )
        #: activation checkpointing of every encoder level (fusion and down block), the middle block, every decoder
        #: level and the output head (:meth:`EchoDND.set_checkpointing`)
        self.gradient_checkpointing = False

    def _encode(  # noqa: ANN202
        self, level: int, h: torch.Tensor, features: torch.Tensor, emb: torch.Tensor, cache: dict[int, Any] | None
    ):
        fused = self.fusions[level](h, features, cache)
        out, residuals = self.down_blocks[level](hidden_states=fused, temb=emb, context=None)
        return fused, out, residuals

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, cond: Condition) -> torch.Tensor:  # type: ignore[override]
        """Predict from the noisy mask ``x`` ``(B, 1, H, W)`` at ``timesteps`` ``(B,)`` given the image condition."""
        ckpt = self.gradient_checkpointing
        cache = None if torch.is_grad_enabled() else cond.cache  # see Condition.cache
        # 1. time: sinusoidal embedding -> MLP
        emb = self.time_embed(get_timestep_embedding(timesteps, self.block_out_channels[0]).to(dtype=x.dtype))
        # 2. input: the image concatenated with the noisy mask
        h = self.conv_in(torch.cat([cond.image, x], dim=1))
        skips: list[torch.Tensor] = [h]
        # 3. encoder: fuse F^i at the input of level i (the fused map is also that scale's skip)
        for level in range(len(self.down_blocks)):
            fused, h, residuals = maybe_checkpoint(ckpt, self._encode, level, h, cond.features[level], emb, cache)
            skips[-1] = fused
            skips.extend(residuals)
        # 4. middle and decoder, as in MONAI's DiffusionModelUNet
        h = maybe_checkpoint(ckpt, lambda hh, e: self.middle_block(hidden_states=hh, temb=e, context=None), h, emb)
        for block in self.up_blocks:
            n = len(block.resnets)
            residuals, skips = skips[-n:], skips[:-n]
            h = maybe_checkpoint(
                ckpt,
                lambda hh, res, e, b=block: b(hidden_states=hh, res_hidden_states_list=res, temb=e, context=None),
                h,
                residuals,
                emb,
            )
        return maybe_checkpoint(ckpt, self.out, h)


class SCCHead(nn.Module):
    """Spatial coherence calibration head (eq. 12): an FCN from F^0 to a mask-sized map of logits.

    Args:
        in_channels: channels of the MFCM's full-resolution features.
        hidden_channels: hidden width.
        groups: GroupNorm groups.
    """

    def __init__(self, in_channels: int, hidden_channels: int = 32, groups: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            Convolution(2, in_channels, hidden_channels, kernel_size=3, padding=1, conv_only=True),
            group_norm(hidden_channels, groups),
            nn.SiLU(),
            Convolution(2, hidden_channels, hidden_channels, kernel_size=3, padding=1, conv_only=True),
            group_norm(hidden_channels, groups),
            nn.SiLU(),
            Convolution(2, hidden_channels, 1, kernel_size=1, padding=0, conv_only=True),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def _build_conditioner(config: EchoDNDConfig) -> nn.Module:
    """The conditioner switch: the MFCM, or the plain U-Net of the paper's ablation."""
    channels = conditioner_channels(config.mfcm_channels, config.num_levels)
    if config.conditioner == "mfcm":
        return MFCM(
            config.in_channels,
            config.mfcm_channels,
            config.num_levels,
            config.mfcm_blocks,
            config.mfcm_modules,
            config.norm_num_groups,
            config.mfcm_low_levels,
        )
    return UNetConditioner(config.in_channels, channels, config.unet_conditioner_blocks, config.norm_num_groups)


def _build_estimator(config: EchoDNDConfig, out_channels: int, attention: tuple[int, ...]) -> NoiseEstimationUNet:
    return NoiseEstimationUNet(
        image_channels=config.in_channels,
        out_channels=out_channels,
        channels=config.channels,
        num_res_blocks=config.num_res_blocks,
        attention_levels=config.attention_levels(attention),
        num_head_channels=config.num_head_channels,
        norm_num_groups=config.norm_num_groups,
        cond_channels=conditioner_channels(config.mfcm_channels, config.num_levels),
        resolutions=config.resolutions,
        fusion_attention_max_tokens=config.fusion_attention_max_tokens,
        use_flash_attention=config.use_flash_attention,
    )


class EchoDND(nn.Module):
    """The Echo-DND model: conditioner (MFCM or U-Net), GNEM, BNEM and the SCC head (paper Fig. 3).

    Networks only: the diffusion processes, losses and samplers take this model as an argument.
    ``gnem(x_t, t, cond)`` returns ``(B, 2, H, W)`` (epsilon, learned-range variance in [-1, 1] nominal);
    ``bnem(x_t, t, cond)`` returns ``(B, 1, H, W)`` logits of x_0. Either is ``None`` when its noise is switched off.

    This is the bundle's ``network_def`` (``configs/inference.json``): the architecture alone, built from the
    configs' ``network_config``; ``models/model.pt`` is a plain ``state_dict`` of it (``scripts.checkpoint``).

    Args:
        config: an :class:`EchoDNDConfig`; a mapping of its fields, optionally with ``"ablation"``; ``"paper"`` or
            ``"tiny"``; a JSON file of such a mapping (:func:`scripts.config.network_config`); or ``None`` for the
            paper's configuration.
        ablation: the ablation's name (kept as ``self.ablation`` for the records), when ``config`` does not name it.
    """

    def __init__(
        self,
        config: EchoDNDConfig | Mapping[str, Any] | str | os.PathLike | None = None,
        ablation: str | None = None,
    ) -> None:
        super().__init__()
        config, named = network_config("paper" if config is None else config)
        self.config = config
        self.ablation = str(ablation or named)
        self.conditioner = _build_conditioner(config)
        self.gnem = _build_estimator(config, 2, config.gnem_attention_resolutions) if config.use_gaussian else None
        self.bnem = _build_estimator(config, 1, config.bnem_attention_resolutions) if config.use_bernoulli else None
        self.scc_head = SCCHead(self.conditioner.out_channels[0], config.scc_channels, config.norm_num_groups)

    def set_checkpointing(self, enabled: bool = True) -> EchoDND:
        """Switch activation checkpointing of the conditioner's and both U-Nets' blocks on or off (training memory).

        Recomputes each block's activations in the backward pass instead of keeping them: the same values and
        gradients (to float rounding), less memory per sample, about one more forward pass of time per step.
        Measured by ``benchmarks/train_memory.py``. Not saved with the weights; has no effect without gradients.
        """
        for module in (self.conditioner, self.gnem, self.bnem):
            if module is not None:
                module.gradient_checkpointing = bool(enabled)
        return self

    @property
    def checkpointing(self) -> bool:
        """Whether :meth:`set_checkpointing` is on."""
        return bool(getattr(self.conditioner, "gradient_checkpointing", False))

    def condition(self, image: torch.Tensor) -> Condition:
        """Run the conditioner once: the image and its F^i for every level (reuse it across sampling steps)."""
        check_image(image, self.config.in_channels, self.config.size_divisor)
        return Condition(image, list(self.conditioner(image)))

    def scc(self, cond: Condition) -> torch.Tensor:
        """SCC head logits ``(B, 1, H, W)`` from F^0."""
        return self.scc_head(cond.features[0])

    def forward(
        self,
        image: torch.Tensor,
        x_gaussian: torch.Tensor | None,
        x_bernoulli: torch.Tensor | None,
        timesteps: torch.Tensor,
        with_scc: bool = True,
    ) -> dict[str, torch.Tensor]:
        """All network outputs of one training step in one call (so that DDP sees a single forward).

        Args:
            image: ``(B, C, H, W)``.
            x_gaussian: noisy mask of the Gaussian chain, or ``None`` to skip GNEM.
            x_bernoulli: noisy mask of the Bernoulli chain, or ``None`` to skip BNEM.
            timesteps: ``(B,)`` 0-based timesteps (shared by both chains).
            with_scc: also run the SCC head.

        Returns:
            ``gaussian`` (GNEM output), ``bernoulli`` (BNEM logits) and ``scc`` (SCC logits), those that ran.
        """
        cond = self.condition(image)
        out: dict[str, torch.Tensor] = {}
        if x_gaussian is not None:
            if self.gnem is None:
                raise ValueError("this model has no GNEM (use_gaussian=False)")
            out["gaussian"] = self.gnem(x_gaussian, timesteps, cond)
        if x_bernoulli is not None:
            if self.bnem is None:
                raise ValueError("this model has no BNEM (use_bernoulli=False)")
            out["bernoulli"] = self.bnem(x_bernoulli, timesteps, cond)
        if with_scc:
            out["scc"] = self.scc(cond)
        # under mixed precision (autocast) the outputs are half-precision: the losses are computed in float32
        return {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for k, v in out.items()}


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Parameter counts: ``total`` and one entry per direct child module."""
    counts = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts
