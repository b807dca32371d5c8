#!/usr/bin/env python
"""Seed stability of Echo-DND's fused mask and error detection by its uncertainty map (issue 13, items 3 and 5).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/echo_dnd_stability.py --out benchmarks/results/echo_dnd_stability.json \
        [--weights bundles/echo_dnd/models/model.pt] [--seeds 5] [--configs old,default]

Two image sets, each case segmented as ``configs/inference.json`` does (``scripts.infer.segment_frames_full``: one
``torch.Generator`` per case seeded with the inference seed, masks back on the images' own pixel grid):

- ``sample``: the bundle's ``sample_data`` (2 images, 96 x 128 px);
- ``phantom``: the quick experiment's test set (``experiments/echo_dnd_tables.py --quick``: ``echogains
  make-phantom``, camus-like, 60 patients, 64 px, seed 0, labels lv,myo,la; its 24 unseen ``imagesTs`` images of 6
  patients), written into a temporary folder.

Configurations (``--configs``): ``old`` is the earlier default (``ensemble`` 1, plain STAPLE start); ``default``
is ``EchoDNDSampler``'s default (10 steps; its ensemble, fusion and uncertainty); ``staple3`` is ensemble 3 with
the plain STAPLE start. For each configuration and inference seed 0..``--seeds``-1:
the mean LV Dice (``echogains evaluate``'s Dice: 2|A and B| / (|A| + |B|) of the binary masks in the images'
geometry, label value from ``dataset.json``) and, over seeds, max - min of that mean (``spread``), and seconds per
image (one image per sampler call, as inference of 2D cases). On the phantom set, the area under the ROC curve of
error detection: every pixel of the 24 images pooled, positive = the fused mask differs from the truth, score = an
uncertainty map on the input grid (resampled as inference writes it); both maps are scored from the same samples and
against the configuration's own fused mask: ``votes`` (vote entropy of the binary member masks, the earlier default
map, ``uncertainty="votes"``) and ``soft`` (today's default map, see ``scripts.sampler``). Ties count one half
(rank formula).

``--quick``: 2 seeds, the sample set only (a smoke run).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:  # imported by path (the tests): the repository root is on sys.path
    from benchmarks import _common
except ImportError:  # run as a script (this folder is sys.path[0]) or loaded by path from another folder
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common  # takes this folder off sys.path again
REPO_ROOT, BUNDLE_ROOT = _common.REPO_ROOT, _common.BUNDLE_ROOT
_common.add_bundle()

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import rankdata  # noqa: E402

from echogains.utils import EchoDataError, get_logger  # noqa: E402

__all__ = ["CONFIGS", "dice", "error_auc", "sampler_for", "score_set", "run", "main"]

log = get_logger("echo_dnd.benchmark.stability")

#: Sampler keyword arguments per configuration (``default``: the class defaults).
CONFIGS: dict[str, dict[str, Any]] = {
    "old": {"ensemble": 1, "fusion": "staple"},
    "default": {},
    "staple3": {"ensemble": 3, "fusion": "staple"},
}


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks (1 when both are empty)."""
    p, t = pred > 0, truth > 0
    total = int(p.sum() + t.sum())
    return 1.0 if total == 0 else 2.0 * float((p & t).sum()) / total


def error_auc(score: np.ndarray, error: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` detecting ``error`` (rank formula, ties count one half)."""
    error = error.astype(bool).ravel()
    n_pos = int(error.sum())
    n_neg = error.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score.ravel())
    return float((ranks[error].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


class _Recording:
    """A sampler that keeps the raw output of its last call (for the vote-entropy map of the same samples)."""

    def __init__(self, sampler: Any) -> None:
        self.sampler, self.outputs = sampler, []
        self.threshold, self.postprocess = sampler.threshold, sampler.postprocess

    def __call__(self, model: Any, image: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        out = self.sampler(model, image, generator)
        self.outputs.append(out)
        return out


def sampler_for(name: str) -> Any:
    from scripts import EchoDNDSampler

    return EchoDNDSampler(num_steps=10, **CONFIGS[name])


def score_set(model: Any, dataset: Path, config: str, seeds: int, auc: bool) -> dict[str, Any]:
    """Dice per seed, spread, seconds per image and (``auc``) the error-detection AUC of both maps."""
    from scripts.data import soft_to_input, to_model_frame
    from scripts.infer import find_inputs, read_frames, segment_frames_full
    from scripts.sampler import vote_entropy

    from echogains.data.nnunet import RawDataset

    ds = RawDataset(dataset)
    lv = ds.label_value("LV")
    cases = find_inputs(dataset)
    truths = [ds.load(c.case_id)[1] == lv for c in cases]
    frames = [read_frames(c.path)[0] for c in cases]
    per_seed, seconds, aucs = [], [], {"votes": [], "soft": []}
    for seed in range(seeds):
        recording = _Recording(sampler_for(config))
        scores, errors, maps = [], [], {"votes": [], "soft": []}
        start = time.perf_counter()
        for frame, truth in zip(frames, truths):
            result = segment_frames_full(model, recording, frame, torch.Generator().manual_seed(seed), members=False)
            scores.append(dice(result.mask[0], truth))
            if auc:
                out = recording.outputs[-1]
                votes = torch.cat([out[k] for k in ("gaussian", "bernoulli") if k in out], dim=1)
                _, fr = to_model_frame(frame[0], int(model.config.image_size))
                maps["votes"].append(np.clip(soft_to_input(vote_entropy(votes)[0], fr, sigma=0.0), 0, 1))
                maps["soft"].append(result.uncertainty[0])
                errors.append(result.mask[0].astype(bool) != truth)
            recording.outputs.clear()
        seconds.append((time.perf_counter() - start) / len(frames))
        per_seed.append(float(np.mean(scores)))
        if auc:
            e = np.concatenate([x.ravel() for x in errors])
            for key in aucs:
                aucs[key].append(error_auc(np.concatenate([m.ravel() for m in maps[key]]), e))
        log.info("%s seed %d: mean Dice %.4f, %.2f s/image", config, seed, per_seed[-1], seconds[-1])
    record: dict[str, Any] = {
        "images": len(frames),
        "mean_dice_per_seed": [round(v, 6) for v in per_seed],
        "spread": round(max(per_seed) - min(per_seed), 6),
        "seconds_per_image": round(float(np.mean(seconds)), 3),
        "seconds_per_image_per_seed": [round(v, 3) for v in seconds],
    }
    if auc:
        record["error_auc"] = {
            key: {"per_seed": [round(v, 4) for v in vals], "mean": round(float(np.mean(vals)), 4)}
            for key, vals in aucs.items()
        }
    return record


def run(weights: Path, seeds: int, configs: list[str], quick: bool) -> dict[str, Any]:
    from scripts.infer import file_sha256
    from scripts.train import load_model

    from echogains.data.phantom import make_phantom

    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        raise EchoDataError(None, f"--configs: unknown {unknown}; expected some of {sorted(CONFIGS)}")
    model = load_model(weights).eval()
    result: dict[str, Any] = {
        "benchmark": "echo_dnd_stability",
        "weights": {
            "path": str(weights.resolve().relative_to(REPO_ROOT))
            if weights.resolve().is_relative_to(REPO_ROOT)
            else str(weights),
            "sha256": file_sha256(weights),
        },
        "configs": {name: {"num_steps": 10, **CONFIGS[name]} for name in configs},
        "seeds": list(range(seeds)),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "load_average_start": list(os.getloadavg()),
        },
        "sets": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"sample": BUNDLE_ROOT / "sample_data"}
        if not quick:
            sets["phantom"] = make_phantom(
                Path(tmp) / "Dataset990_QuickPhantom",
                n_patients=60,
                preset="camus-like",
                layout="nnunet",
                labels="lv,myo,la",
                image_size=(64, 64),
                seed=0,
                overwrite=True,
                progress=False,
            )
        for set_name, path in sets.items():
            result["sets"][set_name] = {
                name: score_set(model, Path(path), name, seeds, auc=set_name == "phantom") for name in configs
            }
    result["machine"]["load_average_end"] = list(os.getloadavg())
    return result


def _summary(result: dict[str, Any]) -> str:
    lines = []
    for set_name, by_config in result["sets"].items():
        for name, r in by_config.items():
            extra = ""
            if "error_auc" in r:
                extra = f", AUC votes {r['error_auc']['votes']['mean']:.4f} soft {r['error_auc']['soft']['mean']:.4f}"
            lines.append(
                f"{set_name:8s} {name:8s} Dice {r['mean_dice_per_seed']} spread {r['spread']:.4f}, "
                f"{r['seconds_per_image']:.2f} s/image{extra}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "echo_dnd_stability.json"))
    parser.add_argument("--weights", type=Path, default=BUNDLE_ROOT / "models" / "model.pt")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--configs", default="old,default")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = 2 if args.quick else args.seeds
    configs = [c for c in args.configs.split(",") if c]

    def go() -> dict[str, Any]:
        result = run(args.weights, seeds, configs, args.quick)
        _common.write_outputs(result, "echo_dnd_stability.py", argv, args.out, None, lambda r: "")
        return result

    return _common.run_main(go, _summary, args.out)


if __name__ == "__main__":
    sys.exit(main())
