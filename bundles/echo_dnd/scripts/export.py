"""Export one Echo-DND denoising step to TorchScript (``torch.jit.trace``); the sampling loop stays in Python.

A sampling step evaluates GNEM and BNEM on the current noisy masks given the condition (the image and the MFCM's
features F^i, computed once per image). :func:`export_step` traces, on one module, the methods the sampler calls:

- ``condition(image) -> (F^0, ..., F^L)``: the conditioner, once per image;
- ``scc(F^0) -> logits``: the SCC head;
- ``gnem(x_t, t, image, features)`` / ``bnem(x_t, t, image, features)``: one network evaluation of a chain;
- ``forward(x_gaussian, x_bernoulli, t, image, features)``: one denoising step, both chains (the model's chains).

:class:`ExportedEchoDND` wraps the saved file in the interface of :class:`~scripts.networks.EchoDND` that
:class:`~scripts.sampler.EchoDNDSampler` uses (``config``, ``condition``, ``scc``, ``gnem``, ``bnem``), so the
unchanged Python sampler (DDIM, Bernoulli DDIM, STAPLE, post-processing) runs around the exported networks.

The trace fixes the spatial size (the network's ``image_size``; the 2-D position codes of the cross-attention fusion
are traced as constants) and keeps the batch size free. MONAI's ``ckpt_export`` traces ``network_def`` with one random
image as its only input, which one step cannot take (it needs x_t, t and the condition): the bundle's command is
``python -m monai.bundle run export --config_file configs/inference.json`` (``docs/README.md``).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from .common import EchoDataError, check_image
from .config import EchoDNDConfig, network_config
from .networks import Condition

__all__ = ["StepModule", "ExportedEchoDND", "export_step", "load_exported"]

#: Name of the network configuration inside the TorchScript file (``_extra_files``).
CONFIG_ENTRY = "network_config.json"


class StepModule(nn.Module):
    """The traceable methods around an :class:`~scripts.networks.EchoDND` (tensors and tuples of tensors only)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def condition(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.conditioner(image))

    def scc(self, f0: torch.Tensor) -> torch.Tensor:
        return self.model.scc_head(f0)

    def gnem(self, x: torch.Tensor, t: torch.Tensor, image: torch.Tensor, features: tuple[torch.Tensor, ...]):  # noqa: ANN201
        return self.model.gnem(x, t, Condition(image, list(features)))

    def bnem(self, x: torch.Tensor, t: torch.Tensor, image: torch.Tensor, features: tuple[torch.Tensor, ...]):  # noqa: ANN201
        return self.model.bnem(x, t, Condition(image, list(features)))

    def forward(  # noqa: ANN201
        self,
        x_gaussian: torch.Tensor,
        x_bernoulli: torch.Tensor,
        t: torch.Tensor,
        image: torch.Tensor,
        features: tuple[torch.Tensor, ...],
    ):
        """One denoising step: the outputs of the chains the model has (GNEM's, then BNEM's), as a tuple."""
        out = []
        if self.model.gnem is not None:
            out.append(self.gnem(x_gaussian, t, image, features))
        if self.model.bnem is not None:
            out.append(self.bnem(x_bernoulli, t, image, features))
        return tuple(out)


def _example_inputs(config: EchoDNDConfig, batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    shape = (batch_size, 1, config.image_size, config.image_size)
    return {
        "image": torch.rand((batch_size, config.in_channels, *shape[2:]), generator=generator),
        "x_gaussian": torch.randn(shape, generator=generator),
        "x_bernoulli": (torch.rand(shape, generator=generator) < 0.5).float(),
        "t": torch.randint(0, config.num_train_timesteps, (batch_size,), generator=generator),
    }


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """Silence what tracing says that is no news here: MONAI's and torch's shape checks (Python booleans of sizes,
    constant for a fixed image size) and TorchScript's deprecation notices (``torch.jit`` still traces, saves and
    loads in torch 2.14; ``docs/README.md`` says so)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.jit.* is deprecated")
        warnings.filterwarnings("ignore", message=r".*trace_method.* is deprecated")
        yield


def trace_step(model: nn.Module, batch_size: int = 2, seed: int = 0) -> torch.jit.ScriptModule:
    """Trace :class:`StepModule` of ``model`` (on its device, eval mode) on random inputs of ``batch_size`` images."""
    model = model.eval()
    device = next(model.parameters()).device
    inputs = {
        k: v.to(device)
        for k, v in _example_inputs(model.config, batch_size, torch.Generator().manual_seed(seed)).items()
    }
    step = StepModule(model).eval()
    with torch.no_grad():
        features = step.condition(inputs["image"])
        x, t, image = inputs["x_gaussian"], inputs["t"], inputs["image"]
        methods: dict[str, tuple] = {"condition": (image,), "scc": (features[0],)}
        methods["forward"] = (x, inputs["x_bernoulli"], t, image, features)
        if model.gnem is not None:
            methods["gnem"] = (x, t, image, features)
        if model.bnem is not None:
            methods["bnem"] = (inputs["x_bernoulli"], t, image, features)
        with _quiet_jit():
            return torch.jit.trace_module(step, methods, check_trace=False)


def export_step(model: nn.Module, path: str | os.PathLike, batch_size: int = 2, seed: int = 0) -> Path:
    """Trace one denoising step of ``model`` and save it as TorchScript, with the network configuration inside.

    Args:
        model: an :class:`~scripts.networks.EchoDND` with its weights (the configs' ``model``).
        path: the ``.ts`` file to write (atomically).
        batch_size: images of the example batch (the traced methods take any batch size).
        seed: seed of the example inputs.
    """
    from echogains.utils import atomic_path

    traced = trace_step(model, batch_size, seed)
    config = {**model.config.to_dict(), "ablation": str(getattr(model, "ablation", "full"))}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, _quiet_jit():
        torch.jit.save(traced, str(tmp), _extra_files={CONFIG_ENTRY: json.dumps(config)})
    return path


class ExportedEchoDND(nn.Module):
    """The exported step in the interface the sampler uses: ``config``, ``ablation``, ``condition``, ``scc``,
    ``gnem`` and ``bnem`` (each a call of the traced module).

    Args:
        traced: the module :func:`trace_step` gives or :func:`torch.jit.load` reads.
        config: its network configuration (:func:`load_exported` reads it from the file).
        ablation: the ablation's name.
    """

    def __init__(self, traced: torch.jit.ScriptModule, config: EchoDNDConfig, ablation: str = "full") -> None:
        super().__init__()
        self.traced = traced
        self.config = config
        self.ablation = ablation

    def condition(self, image: torch.Tensor) -> Condition:
        check_image(image, self.config.in_channels, self.config.size_divisor)
        if tuple(image.shape[-2:]) != (self.config.image_size,) * 2:
            raise EchoDataError(
                "image", f"the exported step takes {self.config.image_size} px, got {tuple(image.shape)}"
            )
        return Condition(image, list(self.traced.condition(image)))

    def scc(self, cond: Condition) -> torch.Tensor:
        return self.traced.scc(cond.features[0])

    def gnem(self, x: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        return self.traced.gnem(x, t, cond.image, tuple(cond.features))

    def bnem(self, x: torch.Tensor, t: torch.Tensor, cond: Condition) -> torch.Tensor:
        return self.traced.bnem(x, t, cond.image, tuple(cond.features))

    def forward(  # type: ignore[override]
        self, x_gaussian: torch.Tensor, x_bernoulli: torch.Tensor, t: torch.Tensor, cond: Condition
    ) -> tuple[torch.Tensor, ...]:
        """One denoising step of both chains (the traced ``forward``)."""
        return self.traced(x_gaussian, x_bernoulli, t, cond.image, tuple(cond.features))


def load_exported(path: str | os.PathLike, device: str | torch.device = "cpu") -> ExportedEchoDND:
    """Read a file written by :func:`export_step`.

    Raises:
        EchoDataError: missing or unreadable file, or no network configuration inside (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise EchoDataError(path, "exported step not found")
    extra = {CONFIG_ENTRY: ""}
    try:
        with _quiet_jit():
            traced = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as err:  # torch raises RuntimeError / ValueError for a file that is not TorchScript
        raise EchoDataError(path, f"cannot read the exported step ({' '.join(str(err).split())[:200]})") from err
    if not extra[CONFIG_ENTRY]:
        raise EchoDataError(path, f"no {CONFIG_ENTRY} inside: not written by scripts.export.export_step")
    config, ablation = network_config(json.loads(extra[CONFIG_ENTRY]))
    return ExportedEchoDND(traced, config, ablation).eval()
