#!/usr/bin/env python
"""RePaint schedules with the demo DDPM on phantom frames (issue 12): seam score and KID of the repainted content.

Usage::

    python benchmarks/repaint_demo.py --out benchmarks/results/repaint_demo.json --md benchmarks/results/repaint_demo.md

The demo DDPM (``echogains/ddpm/weights/ddpm_tiny_phantom.pt``, 64 px, trained on ``make-phantom`` seed 1000) repaints
``--n_images`` combination augmentations of phantom frames it never saw (``make-phantom`` seed 2000, camus-like, the
same pipeline as ``expand-dataset``: :func:`echogains.augment.expand.prepare_augmentation`, one generator per image)
with each sampler below; all in the model's 64 px frame. Per sampler:

- ``seam``: median over the images of :func:`echogains.augment.quality.seam_score` at the border between the pixels
  that still hold the source and the generated ones (the kept content minus the seam band, which stays repainted);
  1 = no more edge than inside the kept content. ``seam_band_pasted``: the same with the band pasted back (the
  behaviour before issue 12), scored at the edge of the kept content.
- ``kid``: kernel inception distance without the inception network (no weights are shipped): the unbiased MMD^2
  with KID's cubic polynomial kernel k(x, y) = (x.y / n + 1)^3 between ``crop`` x ``crop`` pixel crops of the
  generated region and crops at the same positions of the untransformed source frames (real phantom content there:
  the kept region is cut to the original sector, so every generated crop inside the sector has a real counterpart).
  Crops lie fully inside the original sector and fully in the generated region (stride ``crop / 2``). Reported x 1000
  as the mean and standard deviation over ``--subsets`` random subsets of ``--subset_size`` crop pairs. A second
  reference, ``kid_real_vs_real``, compares real crops of two disjoint halves of the images: the level two real
  samples reach.

Samplers: ``none`` (the no-repaint baseline: black), the fast default, the pre-issue-12 fast default (15, 3, 7) and
the paper's (250, 10, 10).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:  # imported by path (the tests): the repository root is on sys.path
    from benchmarks import _common
except ImportError:  # run as a script (this folder is sys.path[0]) or loaded by path from another folder
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common  # takes this folder off sys.path again
REPO_ROOT = _common.REPO_ROOT

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from echogains.augment.expand import (  # noqa: E402
    frame_keep_mask,
    load_case,
    model_input,
    prepare_augmentation,
    repaint_frames,
    resize,
    to_unit,
)
from echogains.augment.quality import seam_score  # noqa: E402
from echogains.augment.repaint import FAST_SCHEDULE, PAPER_SCHEDULE, schedule_counts  # noqa: E402
from echogains.augment.transforms import TransformPolicy, regrid_sector  # noqa: E402
from echogains.data.nnunet import RawDataset  # noqa: E402
from echogains.data.phantom import make_phantom  # noqa: E402
from echogains.ddpm.model import load_ddpm  # noqa: E402
from echogains.utils import atomic_write_text  # noqa: E402

DEMO_WEIGHTS = REPO_ROOT / "echogains" / "ddpm" / "weights" / "ddpm_tiny_phantom.pt"
OLD_FAST = (15, 3, 7)


def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with KID's kernel k(a, b) = (a.b / n + 1)^3 between the rows of ``x`` and ``y``."""
    n = x.shape[1]
    kxx = (x @ x.T / n + 1.0) ** 3
    kyy = (y @ y.T / n + 1.0) ** 3
    kxy = (x @ y.T / n + 1.0) ** 3
    m = x.shape[0]
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2.0 * kxy.mean()
    )


def kid(x: np.ndarray, y: np.ndarray, subsets: int, size: int, seed: int) -> dict[str, float]:
    """KID x 1000 as mean and sd over random subsets of paired rows (x[i] and y[i] are drawn together)."""
    rng = np.random.default_rng(seed)
    size = min(size, x.shape[0])
    vals = []
    for _ in range(subsets):
        idx = rng.choice(x.shape[0], size=size, replace=False)
        vals.append(1000.0 * polynomial_mmd2(x[idx], y[idx]))
    return {
        "mean": float(np.mean(vals)),
        "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0,
        "crops": int(x.shape[0]),
        "subset_size": int(size),
    }


def crop_positions(generated: np.ndarray, fan: np.ndarray, crop: int) -> list[tuple[int, int]]:
    """Top-left corners of ``crop`` x ``crop`` windows fully generated and fully inside the fan (stride crop / 2)."""
    ok = generated & fan
    step = max(1, crop // 2)
    out = []
    for r in range(0, ok.shape[0] - crop + 1, step):
        for c in range(0, ok.shape[1] - crop + 1, step):
            if ok[r : r + crop, c : c + crop].all():
                out.append((r, c))
    return out


def _items(args: argparse.Namespace, size: int, policy: TransformPolicy) -> list:
    """The first ``args.n_images`` augmentations of a phantom data set with a region to generate."""
    with tempfile.TemporaryDirectory() as tmp:
        root = make_phantom(
            Path(tmp) / "Dataset950_Unseen",
            n_patients=args.n_patients,
            layout="nnunet",
            seed=args.phantom_seed,
            labels="lv,myo",
            progress=False,
        )
        ds = RawDataset(root)
        items = []
        for case_id in ds.case_ids("all"):
            case = load_case(ds, case_id, {1: 1, 2: 2})
            for k in range(1, args.k + 1):
                it = prepare_augmentation(case, k, "combination", args.seed, size, policy)
                if it.ok and (~it.frame.known).any():
                    items.append(it)
            if len(items) >= args.n_images:
                break
    return items[: args.n_images]


def _sampler_row(
    args: argparse.Namespace,
    sched: tuple | None,
    items: list,
    net: Any,
    diffusion: Any,
    border: int,
    positions: list,
    real: np.ndarray,
) -> dict[str, Any]:
    """One sampler's row: evaluations, seconds, seam scores and KID of its crops against the real ones."""
    start = time.perf_counter()
    if sched is None:
        frames = np.stack([model_input(it) for it in items])
    else:
        frames = np.concatenate(
            [
                repaint_frames(items[s : s + args.batch], net, diffusion, "repaint", sched, border, "cpu")
                for s in range(0, len(items), args.batch)
            ]
        )
    seconds = time.perf_counter() - start
    seams, pasted = [], []
    for i, it in enumerate(items):
        keep = frame_keep_mask(it.frame.known, border)
        seams.append(seam_score(frames[i], keep if sched is not None else it.frame.known))
        if sched is not None:
            old = np.where(it.frame.known, model_input(it), frames[i])
            pasted.append(seam_score(old, it.frame.known))
    gen = np.stack(
        [frames[i][r : r + args.crop, c : c + args.crop].ravel() for i, pos in enumerate(positions) for r, c in pos]
    )
    return {
        "schedule": list(sched) if sched else None,
        "evaluations": schedule_counts(*sched).evaluations if sched else 0,
        "seconds": seconds,
        "seam": float(np.nanmedian(seams)),
        "seam_per_image": seams,
        "seam_band_pasted": float(np.nanmedian(pasted)) if pasted else None,
        "seam_worse_when_pasted": int(sum(p > s for p, s in zip(pasted, seams))) if pasted else None,
        "kid": kid(gen, real, args.subsets, args.subset_size, args.seed),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    net, diffusion, cfg = load_ddpm(args.model)
    size = cfg.image_size
    border = max(1, int(round(10 * size / 256)))
    policy = TransformPolicy()
    items = _items(args, size, policy)
    sources = []
    fans = []
    for it in items:
        unit, _ = to_unit(it.source.image)
        sources.append(np.clip(resize(unit, (size, size)), 0, 1) * 2 - 1)
        fans.append(regrid_sector(it.source.sector, it.source.image.shape, (size, size)).mask((size, size)))
    samplers = [("none", None), ("fast", FAST_SCHEDULE), ("fast_before_issue12", OLD_FAST), ("paper", PAPER_SCHEDULE)]
    result: dict[str, Any] = {
        "benchmark": "repaint_demo",
        "model": str(Path(args.model).name),
        "image_size": size,
        "border_px": border,
        "n_images": len(items),
        "phantom_seed": args.phantom_seed,
        "seed": args.seed,
        "crop": args.crop,
        "transforms": [it.steps for it in items],
        "samplers": {},
    }
    # crops: positions fully generated and inside the original fan, the same for every sampler
    positions = []
    for i, it in enumerate(items):
        keep = frame_keep_mask(it.frame.known, border)
        positions.append(crop_positions(~keep, fans[i], args.crop))
    real = np.stack(
        [sources[i][r : r + args.crop, c : c + args.crop].ravel() for i, pos in enumerate(positions) for r, c in pos]
    )
    owner = np.array([i for i, pos in enumerate(positions) for _ in pos])
    half = owner % 2 == 0
    m = min(half.sum(), (~half).sum())
    result["kid_real_vs_real"] = kid(real[half][:m], real[~half][:m], args.subsets, args.subset_size // 2, args.seed)
    for name, sched in samplers:
        row = _sampler_row(args, sched, items, net, diffusion, border, positions, real)
        result["samplers"][name] = row
        print(
            f"{name}: {row['evaluations']} evals, seam {row['seam']:.3f} (band pasted back: "
            f"{row['seam_band_pasted']}), KID x1000 {row['kid']['mean']:.2f} +- {row['kid']['sd']:.2f} "
            f"({row['seconds']:.0f} s)",
            flush=True,
        )
    return result


def _kid_text(k: dict[str, Any]) -> str:
    """KID with its subset sd, or without one when every subset was the whole set (fewer crops than the size)."""
    if k["subset_size"] >= k["crops"]:
        return f"{k['mean']:.2f} (all {k['crops']} crops, no subsets)"
    return f"{k['mean']:.2f} +- {k['sd']:.2f}"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# RePaint with the demo DDPM on unseen phantom frames",
        "",
        f"Command: `{result['command']}`",
        "",
        f"{result['n_images']} combination augmentations at {result['image_size']} px, seam band "
        f"{result['border_px']} px; KID x 1000 on {result['crop']} x {result['crop']} crops of the generated "
        "region inside the sector vs the source frames at the same positions (cubic polynomial kernel on pixels; "
        f"real vs real: {_kid_text(result['kid_real_vs_real'])}).",
        "",
        "| sampler | schedule | network evaluations | seam (median) | seam, band pasted back | images worse "
        "pasted | KID x 1000 | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["samplers"].items():
        sched = "-" if r["schedule"] is None else "(" + ", ".join(map(str, r["schedule"])) + ")"
        pasted = "-" if r["seam_band_pasted"] is None else f"{r['seam_band_pasted']:.3f}"
        worse = "-" if r["seam_worse_when_pasted"] is None else f"{r['seam_worse_when_pasted']} of {result['n_images']}"
        lines.append(
            f"| {name} | {sched} | {r['evaluations']} | {r['seam']:.3f} | {pasted} | {worse} | "
            f"{_kid_text(r['kid'])} | {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--md", default=None)
    parser.add_argument("--model", default=str(DEMO_WEIGHTS))
    parser.add_argument("--n_images", type=int, default=16)
    parser.add_argument("--n_patients", type=int, default=6)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--phantom_seed", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crop", type=int, default=8)
    parser.add_argument("--subsets", type=int, default=20)
    parser.add_argument("--subset_size", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown_only", action="store_true", help="only rewrite --md from the JSON in --out")
    args = parser.parse_args(argv)
    if args.markdown_only:
        atomic_write_text(args.md, markdown(json.loads(Path(args.out).read_text())))
        return 0
    result = run(args)
    _common.write_outputs(result, "repaint_demo.py", argv, args.out, args.md, markdown)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
