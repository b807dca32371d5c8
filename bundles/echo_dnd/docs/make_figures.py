"""Figures and numbers of the bundle docs: LV masks of 256 px phantom frames, nearest-neighbour vs smooth resampling.

The demo network runs at 64 x 64; the frames are 256 x 256 (4 input pixels per model pixel). For every test frame of
a ``camus-like`` phantom at 256 px the network is run once (10 DDIM steps, 3 samples per chain, seed 0, as
``make demo``) and its output is put back on the input grid two ways from the same draw:

- *before*: the fused mask upsampled by nearest neighbour (what ``scripts.infer`` did before);
- *after*: ``scripts.infer.segment_frames`` (the STAPLE probability anti-aliased, resampled bilinearly, thresholded
  and post-processed on the input grid).

Roughness = Crofton perimeter of the mask / Crofton perimeter of the phantom's reference LV mask (a smooth analytic
shape rasterised at 256 px; pixel units). The same ratio is computed against exact ellipse perimeters for synthetic
model-frame masks (as in ``tests/bundle/test_bundle_smooth_masks.py``). Writes ``smooth_masks.png`` (before/after
overlay of one frame) and ``smooth_masks.json`` beside this file::

    OMP_NUM_THREADS=1 python bundles/echo_dnd/docs/make_figures.py
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.axes import Axes
    from torch import nn

BUNDLE = Path(__file__).resolve().parents[1]
if str(BUNDLE) not in sys.path:
    sys.path.insert(0, str(BUNDLE))

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scripts import EchoDNDSampler  # noqa: E402
from scripts.data import ANTIALIAS_SIGMA, from_model_frame, mask_to_input, normalize_intensity, to_model_frame  # noqa: E402
from scripts.infer import segment_frames  # noqa: E402
from scripts.train import load_model  # noqa: E402
from skimage import measure  # noqa: E402

from echogains.utils import atomic_path, atomic_write_json  # noqa: E402

SIZE = 256
PHANTOM = {"n_patients": 20, "seed": 17, "preset": "camus-like"}
SAMPLER = {"num_steps": 10, "ensemble": 3}
FIGURE_CASE_INDEX = 2  # which test frame the figure shows (sorted case ids)


class _Recording:
    """The sampler, keeping its last output (the same draw gives the before and the after mask)."""

    def __init__(self, sampler: EchoDNDSampler) -> None:
        self.sampler, self.threshold, self.postprocess = sampler, sampler.threshold, sampler.postprocess
        self.out: dict[str, torch.Tensor] = {}

    def __call__(
        self, model: nn.Module, image: torch.Tensor, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        self.out = self.sampler(model, image, generator)
        return self.out


def _perimeter(mask: np.ndarray) -> float:
    return float(measure.perimeter_crofton(mask, directions=4))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


def real_frames(model: nn.Module, work: Path) -> list[dict]:
    """Before/after masks and scores of every test frame of the phantom at 256 px."""
    from echogains.data.nnunet import RawDataset
    from echogains.data.phantom import make_phantom

    dataset = RawDataset(
        make_phantom(
            work / "Dataset997_Phantom256", layout="nnunet", image_size=(SIZE, SIZE), progress=False, **PHANTOM
        )
    )
    lv = dataset.label_value("LV")
    rows = []
    for case in dataset.case_ids("Ts"):
        image, label, spacing = dataset.load(case)
        gt = label == lv
        sampler = _Recording(EchoDNDSampler(**SAMPLER))
        after, uncertainty = segment_frames(
            model, sampler, image[None].astype(np.float32), torch.Generator().manual_seed(0)
        )
        frame = to_model_frame(normalize_intensity(image), int(model.config.image_size))[1]
        before = from_model_frame(sampler.out["mask"][0], frame, is_label=True) > 0.5
        after = after[0] > 0
        rows.append(
            {
                "case": case,
                "image": image,
                "gt": gt,
                "before": before,
                "after": after,
                "uncertainty": uncertainty[0],
                "spacing": spacing,
            }
        )
    return rows


def synthetic_ellipses() -> list[dict]:
    """Binary model-frame ellipses (64 px) of a 256 x 192 input: roughness against the exact ellipse perimeter."""
    shape, size = (256, 192), 64
    side = max(shape)
    top, left = (side - shape[0]) // 2, (side - shape[1]) // 2
    frame = to_model_frame(np.zeros(shape, np.float32), size)[1]
    centres = (np.arange(size) + 0.5) * side / size - 0.5
    out = []
    for cy, cx, ry, rx in [(120.3, 97.7, 70.0, 45.0), (101.9, 84.2, 38.5, 29.0), (140.6, 110.1, 55.2, 33.3)]:
        f = ((centres[:, None] - top - cy) / ry) ** 2 + ((centres[None, :] - left - cx) / rx) ** 2
        binary = torch.from_numpy((f <= 1.0).astype(np.float32))
        exact = math.pi * (3 * (ry + rx) - math.sqrt((3 * ry + rx) * (ry + 3 * rx)))
        masks = {
            "nearest": from_model_frame(binary, frame, is_label=True) > 0.5,
            "bilinear_no_antialias": mask_to_input(binary, frame, sigma=0.0),
            "smooth": mask_to_input(binary, frame),
        }
        out.append(
            {
                "ellipse_rows_cols_semi_axes_px": [cy, cx, ry, rx],
                **{f"roughness_{k}": _perimeter(m) / exact for k, m in masks.items()},
                **{f"area_ratio_{k}": float(m.sum()) / (math.pi * ry * rx) for k, m in masks.items()},
            }
        )
    return out


def _draw(
    ax: Axes,
    image: np.ndarray,
    mask: np.ndarray,
    gt: np.ndarray,
    spacing: Sequence[float],
    title: str,
    zoom: tuple[tuple[int, int], tuple[int, int]] | None = None,
) -> None:
    aspect = float(spacing[1]) / float(spacing[0])
    ax.imshow(image, cmap="gray", aspect=aspect, interpolation="nearest")
    tint = np.zeros((*mask.shape, 4))
    tint[mask] = (1.0, 0.2, 0.2, 0.25)
    ax.imshow(tint, aspect=aspect, interpolation="nearest")
    for contour in measure.find_contours(np.pad(gt.astype(float), 1), 0.5):
        ax.plot(contour[:, 1] - 1, contour[:, 0] - 1, color="lime", lw=0.8)
    for contour in measure.find_contours(np.pad(mask.astype(float), 1), 0.5):
        ax.plot(contour[:, 1] - 1, contour[:, 0] - 1, color="red", lw=1.0)
    if zoom is not None:
        (r0, r1), (c0, c1) = zoom
        ax.set_xlim(c0, c1)
        ax.set_ylim(r1, r0)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()


def figure(row: dict, path: Path) -> None:
    """Full frame with the smooth mask, and a zoom on the LV boundary before and after."""
    rr, cc = np.nonzero(row["gt"])
    pad = 12
    zoom = ((rr.min() - pad, rr.min() + (rr.max() - rr.min()) // 2), (cc.min() - pad, cc.max() + pad))
    fig = Figure(figsize=(11.0, 3.3), layout="constrained")
    axes = fig.subplots(1, 3)
    _draw(
        axes[0],
        row["image"],
        row["after"],
        row["gt"],
        row["spacing"],
        f"{row['case']} ({SIZE} x {SIZE} px, network 64 x 64): after",
    )
    _draw(
        axes[1],
        row["image"],
        row["before"],
        row["gt"],
        row["spacing"],
        f"before: nearest-neighbour upsampling, roughness {row['roughness_before']:.3f}",
        zoom,
    )
    _draw(
        axes[2],
        row["image"],
        row["after"],
        row["gt"],
        row["spacing"],
        f"after: STAPLE probability resampled, roughness {row['roughness_after']:.3f}",
        zoom,
    )
    fig.suptitle("Echo-DND LV mask (red, tinted) on the input grid; green: phantom reference", fontsize=9)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png", metadata={"Software": None})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent), help="folder of the PNG and JSON")
    parser.add_argument("--model", default=str(BUNDLE / "models" / "model.pt"), help="Echo-DND weights")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    model = load_model(args.model, device="cpu").eval()
    with tempfile.TemporaryDirectory() as tmp:
        rows = real_frames(model, Path(tmp))
    for row in rows:
        reference = _perimeter(row["gt"])
        for kind in ("before", "after"):
            row[f"roughness_{kind}"] = _perimeter(row[kind]) / reference
            row[f"dice_{kind}"] = _dice(row[kind], row["gt"])
            row[f"area_ratio_{kind}"] = float(row[kind].sum()) / float(row["gt"].sum())
    figure(rows[FIGURE_CASE_INDEX], out / "smooth_masks.png")
    keys = [k for k in rows[0] if k.startswith(("roughness_", "dice_", "area_ratio_"))]
    result = {
        "command": "OMP_NUM_THREADS=1 python bundles/echo_dnd/docs/make_figures.py",
        "phantom": {**PHANTOM, "layout": "nnunet", "image_size": [SIZE, SIZE]},
        "sampler": {**SAMPLER, "seed": 0},
        "network_image_size": int(model.config.image_size),
        "antialias_sigma_model_px": ANTIALIAS_SIGMA,
        "roughness": "Crofton perimeter of the mask / Crofton perimeter of the phantom's reference LV mask (pixels)",
        "figure_case": rows[FIGURE_CASE_INDEX]["case"],
        "frames": [{"case": r["case"], **{k: r[k] for k in keys}} for r in rows],
        "mean": {k: float(np.mean([r[k] for r in rows])) for k in keys},
        "synthetic_ellipses": synthetic_ellipses(),
    }
    atomic_write_json(out / "smooth_masks.json", result)
    print({k: round(v, 4) for k, v in result["mean"].items()})


if __name__ == "__main__":
    main()
