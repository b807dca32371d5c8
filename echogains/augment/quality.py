"""``echogains augmentation-report``: quality checks of an expanded dataset (EchoGAINS Figs. 8 and 12).

Three checks, written to one folder:

- ``gallery.png``: one row per transform kind found in the provenance (``depth``, ``tilt``, ``width``,
  ``translation``, ``combination`` for several transforms at once, ``identity``): the original | the transformed image,
  black outside the kept content (recomputed from the recorded parameters, i.e. the ``--no-repaint`` baseline) | the
  written (repainted) image, with the kept region outlined in green as in the paper's Fig. 8.
- ``nearest_neighbours.csv/.json`` (+ ``.png``): memorisation check by SSIM (Fig. 12). Generated images are
  unconditional DDPM samples when a model is given, and always the repainted content of the augmented cases (SSIM
  averaged over the repainted, non-black pixels only: the kept content is copied from the source by design). Each
  is compared with every original training image at the model's frame size; the top neighbours are listed. As a
  yardstick, ``reference_top1_ssim`` is each training image's nearest neighbour among the other patients' images:
  generated images much closer to a training image than that suggest memorisation.
- ``seam_scores.csv``: the seam score (:func:`seam_score`) at the border between kept and generated content, for the
  written image and for the no-repaint baseline of the same transform.

``report.json`` sums it up.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from echogains.augment.cases import frame_keep_mask, frame_transform, original_pixels
from echogains.augment.imaging import from_unit, resize, to_unit
from echogains.augment.transforms import TRANSFORM_TYPES, TransformPolicy, apply_transforms
from echogains.data.nnunet import RawDataset
from echogains.ddpm.model import load_ddpm
from echogains.geometry import Sector
from echogains.utils import (
    EchoDataError,
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    check_int,
    check_output_dir,
    get_logger,
    resolve_device,
    set_progress,
)
from echogains.utils import progress as progress_bar

__all__ = [
    "seam_score",
    "ssim_map",
    "nearest_neighbours",
    "transform_kind",
    "Rendered",
    "render_case",
    "augmentation_report",
]

log = get_logger(__name__)

_CROSS = ndimage.generate_binary_structure(2, 1)


# ----------------------------------------------------------------------------------------------------------------
# Seam score
# ----------------------------------------------------------------------------------------------------------------


def seam_score(image: np.ndarray, known: np.ndarray, band_px: int = 1, inner_px: int = 3) -> float:
    """How visible the border between kept and generated content is: 1 = no more edge than the kept content.

    (1) g = |grad I| by central differences (one-sided at the image border);
    (2) the seam band: kept pixels within ``band_px`` (4-neighbourhood steps) of a generated pixel, and generated
        pixels within ``band_px`` of a kept one;
    (3) the reference: kept pixels more than ``inner_px`` from any generated pixel (the image border does not count);
    score = mean g over (2) / mean g over (3).

    A seamless continuation of a linear ramp scores exactly 1; content next to black (the no-repaint baseline)
    scores the edge height over the content's typical gradient. NaN when there is no band or no inner content.

    Args:
        image: 2D image (any intensity scale: the score is a ratio).
        known: bool mask of the kept content, same shape.
        band_px: half-width of the seam band in pixels.
        inner_px: erosion of the kept content for the reference.
    """
    image = np.asarray(image, dtype=np.float64)
    known = np.asarray(known, dtype=bool)
    if image.shape != known.shape or image.ndim != 2:
        raise EchoDataError(None, f"seam_score: image {image.shape} and mask {known.shape} must be the same 2D shape")
    gy, gx = np.gradient(image)  # (1)
    grad = np.hypot(gx, gy)
    unknown = ~known
    near_unknown = ndimage.binary_dilation(unknown, _CROSS, iterations=band_px)
    near_known = ndimage.binary_dilation(known, _CROSS, iterations=band_px)
    band = (known & near_unknown) | (unknown & near_known)  # (2)
    inner = ndimage.binary_erosion(known, _CROSS, iterations=inner_px, border_value=1)  # (3)
    if not band.any() or not inner.any():
        return float("nan")
    ref = float(grad[inner].mean())
    return float(grad[band].mean() / ref) if ref > 0 else float("nan")


# ----------------------------------------------------------------------------------------------------------------
# SSIM nearest neighbours
# ----------------------------------------------------------------------------------------------------------------


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Local SSIM (Wang et al. 2004; skimage, 7x7 window) of two images in [0, 1]."""
    from skimage.metrics import structural_similarity

    _, full = structural_similarity(a.astype(np.float64), b.astype(np.float64), data_range=1.0, full=True)
    return full


def nearest_neighbours(
    generated: np.ndarray,
    training: np.ndarray,
    masks: np.ndarray | None = None,
    top: int = 3,
    exclude: Sequence[Sequence[int]] | None = None,
) -> list[list[tuple[int, float]]]:
    """The ``top`` training images most similar to each generated image by SSIM (mean of the SSIM map).

    Args:
        generated: (n, H, W) images in [0, 1].
        training: (m, H, W) images in [0, 1].
        masks: (n, H, W) bool: average the SSIM map over these pixels only (e.g. the repainted content).
        top: neighbours per generated image.
        exclude: per generated image, training indices not to consider (e.g. the same image).

    Returns:
        Per generated image, ``[(training index, ssim), ...]`` best first.
    """
    generated, training = np.asarray(generated), np.asarray(training)
    if generated.ndim != 3 or training.ndim != 3 or generated.shape[1:] != training.shape[1:]:
        raise EchoDataError(None, f"nearest_neighbours: shapes {generated.shape} and {training.shape} do not match")
    results = []
    for i, g in enumerate(generated):
        mask = None if masks is None else np.asarray(masks[i], dtype=bool)
        skip = set(exclude[i]) if exclude is not None else set()
        scores = []
        for j, t in enumerate(training):
            if j in skip:
                continue
            smap = ssim_map(g, t)
            scores.append((j, float(smap[mask].mean() if mask is not None and mask.any() else smap.mean())))
        scores.sort(key=lambda item: (-item[1], item[0]))
        results.append(scores[:top])
    return results


# ----------------------------------------------------------------------------------------------------------------
# Rendering the recorded augmentations
# ----------------------------------------------------------------------------------------------------------------


def transform_kind(steps: Sequence[Mapping[str, Any]]) -> str:
    """Gallery row of an augmentation: its single transform, ``combination`` for several, ``identity`` for none."""
    if not steps:
        return "identity"
    return str(steps[0]["type"]) if len(steps) == 1 else "combination"


@dataclass
class Rendered:
    """One augmented case next to its source, all in [0, 1] at the source's size.

    Args:
        case_id: the augmented case.
        kind: :func:`transform_kind` of its steps.
        original: the source image.
        transformed: the transform, black outside the kept content, quantised as the file (the no-repaint
            baseline, exactly what ``--no-repaint`` writes).
        output: the image written to the dataset.
        known: the kept content.
        baseline_exact: whether ``transformed`` quantised to the file's dtype equals ``output`` on ``original``.
        original_mask: the pixels of ``output`` that hold the source: ``known`` minus the seam band when repainted
            (the band stays repainted), ``known`` without repainting.
    """

    case_id: str
    source_case: str
    kind: str
    original: np.ndarray
    transformed: np.ndarray
    output: np.ndarray
    known: np.ndarray
    baseline_exact: bool
    original_mask: np.ndarray | None = None


def render_case(ds: RawDataset, case_id: str) -> Rendered:
    """Recompute an augmentation's transform from its provenance and load what was written."""
    rec = ds.record(case_id)
    prov = rec.get("provenance") or {}
    source_case = prov.get("source_case")
    if not prov.get("augmented") or source_case not in ds.records:
        raise EchoDataError(ds.root / "cases.json", f"{case_id}: no augmentation provenance with a source case here")
    src = sitk.GetArrayFromImage(ds.read_image(source_case))
    out = sitk.GetArrayFromImage(ds.read_image(case_id))
    unit_src, rng = to_unit(src)
    sector_dict = prov.get("source_sector") or ds.record(source_case).get("sector")
    if not sector_dict:
        raise EchoDataError(ds.root / "cases.json", f"{case_id}: no source sector recorded")
    frame = int(prov["frame_size"])
    recorded = dict(prov.get("policy") or {})
    recorded.setdefault("kept_region", "transformed_sector")  # expansions from before the cut to the footprint
    policy = TransformPolicy.from_dict(recorded)
    sector = Sector.from_dict(sector_dict)
    result = apply_transforms(
        unit_src, None, sector, prov["transforms"], (frame, frame), policy.margin_px, policy.kept_region
    )
    original = result.known
    sampler = prov.get("sampler") or {}
    if prov.get("repaint") and sampler.get("border_px"):
        frame_known = frame_transform(unit_src, sector, prov["transforms"], frame, policy).known
        original = original_pixels(result.known, frame_keep_mask(frame_known, int(sampler["border_px"])))
    baseline = from_unit(result.image, rng, out.dtype)  # what --no-repaint writes
    exact = bool(np.array_equal(baseline[original], out[original]))
    return Rendered(
        case_id,
        source_case,
        transform_kind(prov["transforms"]),
        unit_src,
        _unit(baseline, rng),
        _unit(out, rng),
        result.known,
        exact,
        original,
    )


def _unit(image: np.ndarray, rng: tuple[float, float]) -> np.ndarray:
    return ((image.astype(np.float64) - rng[0]) / (rng[1] - rng[0])).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------------


def _save_figure(fig: Any, path: Path, dpi: int = 100) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", metadata={"Software": None})


def _gallery(rows: Sequence[Rendered], path: Path) -> None:
    """original | transformed | repainted per transform kind, the kept region outlined in green (Fig. 8)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 2.6 * len(rows)))
    axes = fig.subplots(len(rows), 3, squeeze=False)
    for r, row in enumerate(rows):
        for c, (title, img) in enumerate(
            (("original", row.original), ("transformed", row.transformed), ("repainted", row.output))
        ):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            kept = row.known if c == 1 or row.original_mask is None else row.original_mask
            if c > 0 and kept.any() and not kept.all():
                ax.contour(kept.astype(float), levels=[0.5], colors="lime", linewidths=0.8)
            ax.set_title(f"{row.kind}: {title}" if c == 0 else title, fontsize=8)
            ax.axis("off")
        axes[r, 0].text(0.0, -0.05, row.case_id, transform=axes[r, 0].transAxes, fontsize=6, va="top")
    fig.tight_layout()
    _save_figure(fig, path)


def _neighbour_figure(
    generated: Sequence[tuple[str, np.ndarray]],
    training: np.ndarray,
    names: Sequence[str],
    table: Sequence[Sequence[tuple[int, float]]],
    path: Path,
) -> None:
    """Generated image | its nearest training image (Fig. 12)."""
    from matplotlib.figure import Figure

    n = len(generated)
    fig = Figure(figsize=(4.4, 2.3 * n))
    axes = fig.subplots(n, 2, squeeze=False)
    for i, ((name, img), best) in enumerate(zip(generated, table)):
        j, score = best[0]
        for ax, im, title in ((axes[i, 0], img, name), (axes[i, 1], training[j], f"{names[j]}\nSSIM {score:.3f}")):
            ax.imshow(im, cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_title(title, fontsize=6)
            ax.axis("off")
    fig.tight_layout()
    _save_figure(fig, path)


def _csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: (f"{row[c]:.6g}" if isinstance(row[c], float) else row[c]) for c in columns})
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------------------------


def _patient(ds: RawDataset, case_id: str) -> str:
    return str(ds.record(case_id).get("patient", case_id.split("_")[0]))


def _frame_unit(ds: RawDataset, case_id: str, size: int) -> np.ndarray:
    unit, _ = to_unit(sitk.GetArrayFromImage(ds.read_image(case_id)))
    return np.clip(resize(unit, (size, size)), 0.0, 1.0)


def _samples(loaded: tuple[Any, Any, Any], n: int, steps: int, seed: int, device: str) -> tuple[np.ndarray, int]:
    """Unconditional samples of the DDPM (respaced to ``steps``) in [0, 1]; returns them and the model's size.

    ``loaded`` is what :func:`echogains.ddpm.model.load_ddpm` returned (network, process, config).
    """
    net, diffusion, config = loaded
    process = diffusion.respace(min(steps, diffusion.num_timesteps))
    gens = [torch.Generator().manual_seed(seed * 1000 + i) for i in range(n)]
    x = process.sample(net, (n, 1, config.image_size, config.image_size), gens, device=device)
    return ((x.clamp(-1, 1).float().cpu().numpy()[:, 0] + 1.0) / 2.0), config.image_size


def _seam_rows(rendered: Sequence[Rendered]) -> list[dict[str, Any]]:
    rows = []
    for r in rendered:
        # each image's own border between source and generated pixels: the written image's lies at the inner edge of
        # the seam band (the band stays repainted), the no-repaint baseline's at the edge of the kept content
        original = r.original_mask if r.original_mask is not None else r.known
        written, baseline = seam_score(r.output, original), seam_score(r.transformed, r.known)
        rows.append(
            {
                "case": r.case_id,
                "kind": r.kind,
                "seam_written": written,
                "seam_no_repaint": baseline,
                "ratio": written / baseline if np.isfinite(baseline) and baseline > 0 else float("nan"),
            }
        )
    return rows


def _gallery_rows(rendered: Sequence[Rendered]) -> list[Rendered]:
    order = [*TRANSFORM_TYPES, "combination", "identity"]
    first: dict[str, Rendered] = {}
    for r in rendered:
        first.setdefault(r.kind, r)
    return [first[k] for k in order if k in first]


def _median(values: Sequence[float]) -> float | None:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.median(finite)) if finite else None


def augmentation_report(
    dataset: str | os.PathLike,
    out: str | os.PathLike,
    model: str | os.PathLike | None = None,
    n_samples: int = 8,
    sample_steps: int = 50,
    max_cases: int = 50,
    max_training: int = 200,
    top: int = 3,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
) -> Path:
    """Gallery, SSIM nearest neighbours and seam scores of an ``expand-dataset`` output.

    Args:
        dataset: the expanded nnU-Net raw dataset (with ``cases.json`` provenance).
        out: report folder.
        model: DDPM weights: also draw ``n_samples`` unconditional samples for the memorisation check.
        n_samples: unconditional samples.
        sample_steps: respaced steps of the unconditional sampler.
        max_cases: augmented cases checked (the first ones by id).
        max_training: original training images compared against (the first ones by id).
        top: neighbours listed per generated image.
        seed: seed of the unconditional samples.
        device: ``cuda``/``cpu`` for sampling (default: CUDA when available).
        progress: progress bar.

    Returns:
        Path of ``report.json``.
    """
    set_progress(progress)
    out = check_output_dir(out, source=dataset, allow_nonempty=True)  # a report folder is rewritten in place
    for name, value in (
        ("n_samples", n_samples),
        ("sample_steps", sample_steps),
        ("max_cases", max_cases),
        ("max_training", max_training),
        ("top", top),
    ):
        check_int(name, value, 0 if name == "n_samples" else 1)
    device = resolve_device(device)
    ds = RawDataset(dataset)
    augmented = sorted(c for c in ds.case_ids("Tr") if (ds.record(c).get("provenance") or {}).get("augmented"))
    if not augmented:
        raise EchoDataError(ds.root / "cases.json", "no augmented cases with provenance: run expand-dataset first")
    originals = sorted(c for c in ds.case_ids("Tr") if c not in set(augmented))[:max_training]
    if not originals:
        raise EchoDataError(ds.root / "imagesTr", "no original training images to compare with")
    loaded = load_ddpm(model, device=device) if model is not None and n_samples > 0 else None  # before any output
    cases = augmented[:max_cases]
    rendered = [render_case(ds, c) for c in progress_bar(cases, total=len(cases), desc="render")]
    frame = int(ds.record(cases[0])["provenance"]["frame_size"])
    _gallery(_gallery_rows(rendered), out / "gallery.png")
    seams = _seam_rows(rendered)
    seam_columns = ["case", "kind", "seam_written", "seam_no_repaint", "ratio"]
    atomic_write_text(out / "seam_scores.csv", _csv(seams, seam_columns))
    repainted = bool(ds.record(cases[0])["provenance"].get("repaint"))
    nn = _neighbour_check(
        ds, rendered, originals, frame, loaded, n_samples, sample_steps, top, seed, device, out, repainted
    )
    summary = {
        "dataset": str(ds.root),
        "augmented_cases": len(augmented),
        "checked_cases": len(cases),
        "repaint": repainted,
        "baseline_recomputed_exactly": all(r.baseline_exact for r in rendered),
        "gallery": "gallery.png",
        "gallery_rows": [r.kind for r in _gallery_rows(rendered)],
        "seam": {
            "definition": "mean |grad I| in the 1-px band either side of the source/generated border "
            "/ mean |grad I| inside the source content (>= 3 px from the border); 1 = seamless. "
            "Written image: the border of the pixels still holding the source (kept content minus "
            "the repainted seam band); no-repaint baseline: the border of the kept content",
            "median_written": _median([s["seam_written"] for s in seams]),
            "median_no_repaint": _median([s["seam_no_repaint"] for s in seams]),
            "median_ratio": _median([s["ratio"] for s in seams]),
        },
        "nearest_neighbours": nn,
    }
    atomic_write_json(out / "report.json", summary)
    log.info("augmentation report: %s", out / "report.json")
    return out / "report.json"


def _neighbour_check(
    ds: RawDataset,
    rendered: Sequence[Rendered],
    originals: Sequence[str],
    frame: int,
    model: Any,
    n_samples: int,
    sample_steps: int,
    top: int,
    seed: int,
    device: str,
    out: Path,
    repainted_dataset: bool,
) -> dict[str, Any]:
    """SSIM nearest neighbours of samples and repainted content among the original training images.

    ``model`` is the loaded DDPM (network, process, config) or ``None``.
    """
    size = frame
    samples = None
    if model is not None and n_samples > 0:
        samples, size = _samples(model, n_samples, sample_steps, seed, device)
    training = np.stack([_frame_unit(ds, c, size) for c in originals])
    patients = [_patient(ds, c) for c in originals]
    generated: list[tuple[str, str, np.ndarray, np.ndarray | None]] = []
    if samples is not None:
        generated += [(f"sample{i}", "sample", s, None) for i, s in enumerate(samples)]
    for r in rendered if repainted_dataset else ():  # without RePaint nothing was generated
        output = np.clip(resize(r.output, (size, size)), 0.0, 1.0)
        repainted = (resize((~r.known).astype(np.float32), (size, size)) > 0.5) & (output > 0.02)
        if repainted.any():
            generated.append((r.case_id, "augmentation", output, repainted))
    table = (
        nearest_neighbours(
            np.stack([g[2] for g in generated]),
            training,
            np.stack([g[3] if g[3] is not None else np.ones((size, size), bool) for g in generated]),
            top=top,
        )
        if generated
        else []
    )
    rows = []
    for (name, kind, _, _), best in zip(generated, table):
        source = ds.record(name).get("provenance", {}).get("source_case") if kind == "augmentation" else None
        for rank, (j, score) in enumerate(best, start=1):
            rows.append(
                {
                    "generated": name,
                    "kind": kind,
                    "rank": rank,
                    "training_case": originals[j],
                    "ssim": score,
                    "same_patient": bool(source) and patients[j] == _patient(ds, str(source)),
                }
            )
    atomic_write_text(
        out / "nearest_neighbours.csv",
        _csv(rows, ["generated", "kind", "rank", "training_case", "ssim", "same_patient"]),
    )
    atomic_write_json(out / "nearest_neighbours.json", rows)
    if generated:
        shown = [(g[0], g[2]) for g in generated[:8]]
        _neighbour_figure(shown, training, originals, table[:8], out / "nearest_neighbours.png")
    reference = _reference_top1(training, patients)
    top1 = {
        kind: [b[0][1] for (name, k, _, _), b in zip(generated, table) if k == kind and b]
        for kind in ("sample", "augmentation")
    }
    return {
        "size": size,
        "training_images": len(originals),
        "median_top1_ssim_samples": _median(top1["sample"]),
        "max_top1_ssim_samples": max(top1["sample"]) if top1["sample"] else None,
        "median_top1_ssim_augmented": _median(top1["augmentation"]),
        "reference_top1_ssim": _median(reference),
        "table": "nearest_neighbours.csv",
    }


def _reference_top1(training: np.ndarray, patients: Sequence[str], limit: int = 50) -> list[float]:
    """Each training image's nearest neighbour SSIM among the other patients' images (the yardstick)."""
    idx = list(range(min(limit, len(training))))
    exclude = [[j for j in range(len(training)) if patients[j] == patients[i]] for i in idx]
    if all(len(e) == len(training) for e in exclude):
        return []
    table = nearest_neighbours(training[idx], training, exclude=exclude, top=1)
    return [t[0][1] for t in table if t]
