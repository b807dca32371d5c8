"""Echo-DND weights files: the deployable ``model.pt`` is a plain ``state_dict`` of ``network_def`` (an ``EchoDND``).

MONAI's ``CheckpointLoader`` and ``python -m monai.bundle ckpt_export`` load such a file into the bundle's
``network_def`` with no key prefix. The network's configuration is not in the file: it is the configs'
``network_config`` (``configs/inference.json`` for the shipped demo weights), and the trainer writes it beside its
``model.pt`` as ``network_config.json`` (:data:`scripts.config.NETWORK_CONFIG_NAME`) for ``--network_config``.

Formats read by :func:`read_weights`:

- ``plain``: a ``state_dict`` (tensor values only), what the trainer writes since bundle 0.3.0;
- ``legacy``: ``{"config", "state_dict", "ablation"}``, the deployable format before 0.3.0 (loaded with a warning;
  ``python -m scripts.checkpoint OLD NEW`` converts it);
- ``checkpoint``: the trainer's full state (``checkpoint.pt``, its EMA weights are used; ``key_in_ckpt="ema"`` for
  MONAI's loaders).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .common import EchoDataError
from .config import NETWORK_CONFIG_NAME, EchoDNDConfig, network_config

__all__ = [
    "WeightsFile",
    "read_weights",
    "load_weights",
    "save_weights",
    "save_network_config",
    "convert_weights",
    "network_config_beside",
    "bundle_network_config",
    "resolve_config",
    "main",
]

#: What the warning on a legacy file says (a test matches it).
LEGACY_WARNING = "nested Echo-DND weights file (the format before bundle 0.3.0)"


@dataclass
class WeightsFile:
    """What a weights file holds.

    Attributes:
        state_dict: the network's weights (the EMA weights of a full checkpoint).
        kind: ``plain``, ``legacy`` or ``checkpoint`` (see the module docstring).
        config: the configuration saved in the file (``legacy`` and ``checkpoint`` only), legacy fields resolved.
        ablation: the ablation name saved in the file, if any.
    """

    state_dict: dict[str, torch.Tensor]
    kind: str
    config: EchoDNDConfig | None = None
    ablation: str | None = None


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        text = str(err)
        if "WeightsUnpickler error:" in text:  # torch's advice around it (weights_only=False) is not for a bad file
            detail = next(
                (line.strip() for line in text.split("WeightsUnpickler error:", 1)[1].splitlines() if line.strip()), ""
            )
            text = f"not a torch.save file of tensors and plain values: {detail}"
        raise EchoDataError(path, f"cannot read model weights ({' '.join(text.split())})") from err


def read_weights(path: str | os.PathLike) -> WeightsFile:
    """Read a weights file of any of the three formats.

    Raises:
        EchoDataError: missing or unreadable file, or not an Echo-DND weights file; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise EchoDataError(path, "model weights not found")
    state = _torch_load(path)
    if not isinstance(state, dict) or not state:
        raise EchoDataError(path, "not an Echo-DND weights file (expected a state_dict)")
    if all(torch.is_tensor(v) for v in state.values()):
        return WeightsFile(dict(state), "plain")
    if "config" in state and ("ema" in state or "state_dict" in state):
        try:
            config = EchoDNDConfig.from_saved(state["config"])
        except (TypeError, ValueError) as err:
            raise EchoDataError(path, f"bad saved network configuration ({err})") from err
        kind = "checkpoint" if "ema" in state else "legacy"
        weights = state["ema"] if kind == "checkpoint" else state["state_dict"]
        return WeightsFile(dict(weights), kind, config, state.get("ablation"))
    raise EchoDataError(path, "not an Echo-DND weights file (neither a state_dict nor {'config', 'state_dict'})")


def network_config_beside(path: str | os.PathLike) -> Path | None:
    """The ``network_config.json`` the trainer wrote beside weights ``path``, if there is one."""
    candidate = Path(path).parent / NETWORK_CONFIG_NAME
    return candidate if candidate.is_file() else None


def bundle_network_config(path: str | os.PathLike) -> Any | None:
    """The demo network (``demo_network_config`` of ``configs/inference.json``) for ``<bundle>/models/*`` weights."""
    import json

    config_file = Path(path).resolve().parent.parent / "configs" / "inference.json"
    if Path(path).resolve().parent.name != "models" or not config_file.is_file():
        return None
    return json.loads(config_file.read_text()).get("demo_network_config")


def resolve_config(
    path: str | os.PathLike, weights: WeightsFile, config: Any | None = None
) -> tuple[EchoDNDConfig, str]:
    """The network configuration of weights ``path``: ``config`` when given, else the file's own (legacy and
    checkpoint files), else ``network_config.json`` beside it, else the bundle's ``configs/inference.json`` (for
    ``<bundle>/models/model.pt``).

    Raises:
        EchoDataError: none of these exists, or the configuration is bad (naming the file).
    """
    if config is None and weights.config is not None:
        return weights.config, str(weights.ablation or "full")
    source: Any = config if config is not None else network_config_beside(path) or bundle_network_config(path)
    if source is None:
        raise EchoDataError(
            path, f"a plain state_dict needs its network configuration: no {NETWORK_CONFIG_NAME} beside it"
        )
    try:
        return network_config(source)
    except (TypeError, ValueError) as err:
        raise EchoDataError(path, f"bad network configuration ({' '.join(str(err).split())})") from err


def load_weights(
    network: nn.Module,
    path: str | os.PathLike,
    device: str | torch.device | None = None,
    strict: bool = True,
    weights: WeightsFile | None = None,
    channels_last: bool = False,
) -> nn.Module:
    """Load a weights file into ``network`` (``network_def``), move it to ``device`` and switch it to eval mode.

    A ``legacy`` file loads with a warning; a file whose keys or shapes do not fit the network is refused with a
    message naming the file and what to pass.

    Args:
        network: the architecture (the configs' ``network_def``).
        path: the weights file.
        device: where the network goes (default ``cpu``).
        strict: require the keys to match exactly.
        weights: ``path`` already read by :func:`read_weights` (not read again).
        channels_last: store the convolution weights channels-last (``torch.channels_last``), so the convolutions
            compute channels-last: the same masks, float maps within about 1e-5 (another summation order), and on
            one CPU thread 4-7 % less time per image with the demo weights (``benchmarks/bundle_inference_speed.py``,
            ``benchmarks/results/bundle_inference_speed_channels_last.json``). ``inference.json`` and ``evaluate.json``
            set it on CPU only (not measured on a GPU).

    Raises:
        EchoDataError: unreadable file, or weights of another network configuration.
    """
    path = Path(path)
    weights = weights or read_weights(path)
    if weights.kind == "legacy":
        warnings.warn(
            f"{path}: {LEGACY_WARNING}; convert it with `python -m scripts.checkpoint {path} NEW.pt`",
            FutureWarning,
            stacklevel=2,
        )
    try:
        network.load_state_dict(weights.state_dict, strict=strict)
    except RuntimeError as err:
        hint = network_config_beside(path)
        where = f"--network_config {hint}" if hint else "the --network_config they were trained with"
        first = " ".join(str(err).split())[:300]
        raise EchoDataError(path, f"weights do not fit the network configuration; pass {where} ({first})") from err
    network = network.to(device or "cpu")
    if channels_last:
        network = network.to(memory_format=torch.channels_last)
    return network.eval()


def save_weights(network: nn.Module, path: str | os.PathLike, ablation: str | None = None) -> Path:
    """Write ``network``'s ``state_dict`` to ``path`` and its configuration to ``network_config.json`` beside it.

    Both atomically (temporary file in the same folder, then ``os.replace``).

    Args:
        network: an ``EchoDND`` (its ``config`` is written).
        path: the weights file (``model.pt``).
        ablation: the name recorded in the configuration file (default: ``network.ablation`` or ``full``).
    """
    from echogains.utils import atomic_torch_save

    path = Path(path)
    atomic_torch_save({k: v.detach().cpu() for k, v in network.state_dict().items()}, path)
    config = getattr(network, "config", None)
    if isinstance(config, EchoDNDConfig):
        save_network_config(config, path.parent, ablation or str(getattr(network, "ablation", "full")))
    return path


def save_network_config(config: EchoDNDConfig, folder: str | os.PathLike, ablation: str = "full") -> Path:
    """Write ``config`` and the ablation's name to ``folder/network_config.json`` (atomically); returns the path."""
    from echogains.utils import atomic_write_json

    path = Path(folder) / NETWORK_CONFIG_NAME
    atomic_write_json(path, {**config.to_dict(), "ablation": str(ablation)})
    return path


def convert_weights(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Convert a ``legacy`` (or ``checkpoint``) weights file to a plain ``state_dict`` plus ``network_config.json``.

    The weights are loaded into the network of the saved configuration first (so a file that does not fit fails
    here, not at inference); the tensors written are the same values.
    """
    from .networks import EchoDND

    weights = read_weights(source)
    if weights.config is None:
        raise EchoDataError(source, "already a plain state_dict: nothing to convert")
    network = EchoDND(weights.config, ablation=weights.ablation or "full")
    network.load_state_dict(weights.state_dict)
    return save_weights(network, target)


def main(argv: list[str] | None = None) -> int:
    """``python -m scripts.checkpoint OLD.pt NEW.pt`` (from the bundle folder): convert a weights file."""
    parser = argparse.ArgumentParser(prog="python -m scripts.checkpoint", description=convert_weights.__doc__)
    parser.add_argument("source", help="nested weights file ({'config', 'state_dict'}) or a training checkpoint.pt")
    parser.add_argument("target", help="plain state_dict to write; network_config.json is written beside it")
    args = parser.parse_args(argv)
    try:
        out = convert_weights(args.source, args.target)
    except EchoDataError as err:
        print(f"echo_dnd: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} and {out.parent / NETWORK_CONFIG_NAME}")
    return 0


if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess in the tests
    raise SystemExit(main())
