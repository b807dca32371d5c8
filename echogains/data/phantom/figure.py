"""The phantom's figures: one image beside its label contours (README), and frames at each quality grade."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from echogains.data.phantom.simulate import simulate_patient
from echogains.utils import atomic_path

__all__ = ["save_sample_figure", "save_grades_figure"]


def save_sample_figure(
    path: str | os.PathLike,
    patient_index: int = 2,
    preset: str = "camus-like",
    seed: int = 0,
    image_size: tuple[int, int] = (448, 336),
    view: str = "4CH",
    phase: str = "ED",
) -> Path:
    """Save a PNG of one phantom image beside the same image with its label contours (docs/images/phantom_sample.png).

    Args:
        path: output PNG.
        patient_index: 1-based patient.
        preset: preset name.
        seed: dataset seed.
        image_size: (rows, cols).
        view: ``2CH`` or ``4CH``.
        phase: ``ED`` or ``ES``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    patient = simulate_patient(patient_index, preset, seed, image_size=image_size, views=(view,))
    v = patient.views[view]
    image, label = v.image(phase), v.label(phase)
    sx, sy = v.spacing
    extent = (
        0.0,
        image.shape[1] * sx,
        image.shape[0] * sy,
        0.0,
    )  # physical mm: the anisotropic grid shown true to shape
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), facecolor="black")
    for ax in axes:
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, extent=extent, interpolation="bilinear")
        ax.set_axis_off()
    xs, ys = (np.arange(image.shape[1]) + 0.0) * sx, np.arange(image.shape[0]) * sy
    for value, colour in ((2, "#40ff60"), (3, "#4090ff"), (1, "#ff4040")):
        axes[1].contour(xs, ys, (label == value).astype(float), levels=[0.5], colors=[colour], linewidths=1.2)
    truth = patient.truth
    axes[0].set_title(f"synthetic apical {view} {phase} ({preset})", color="white", fontsize=10)
    axes[1].set_title(f"LV / MYO / LA; true EF {truth['ef_pct']:.1f} %", color="white", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, facecolor="black")
    plt.close(fig)


def save_grades_figure(
    path: str | os.PathLike,
    preset: str = "hard",
    seed: int = 0,
    patients: tuple[int, ...] = (1, 2, 3),
    image_size: tuple[int, int] = (256, 192),
    reference: str | None = "camus-like",
) -> Path:
    """Save a PNG of phantom frames at each image quality grade (docs/images/phantom_hard_grades.png).

    Rows: ``reference`` preset (Good), then ``preset`` at Good, Medium and Poor (the grade is fixed, the patient is
    the same: its heart, sector and EF do not change with the grade). Columns: per patient its 4CH and 2CH ED frame;
    the true LV cavity outline (red) on the last column of each patient.

    Args:
        path: output PNG.
        preset: preset of the graded rows.
        seed: dataset seed.
        patients: 1-based patient indices.
        image_size: (rows, cols).
        reference: preset of the first row (``None``: no reference row).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from echogains.data.phantom.anatomy import QUALITIES

    rows = ([(reference, "Good")] if reference else []) + [(preset, q) for q in QUALITIES]
    cols = [(i, v) for i in patients for v in ("4CH", "2CH")]
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(2.0 * len(cols), 2.1 * len(rows)), facecolor="black")
    for r, (name, quality) in enumerate(rows):
        for c, (index, view) in enumerate(cols):
            patient = simulate_patient(index, name, seed, image_size=image_size, views=(view,), quality=quality)
            v = patient.views[view]
            sx, sy = v.spacing
            image, label = v.image("ED"), v.label("ED")
            ax = axes[r, c]
            ax.imshow(image, cmap="gray", vmin=0, vmax=255, extent=(0, image.shape[1] * sx, image.shape[0] * sy, 0))
            if view == "2CH":
                xs, ys = np.arange(image.shape[1]) * sx, np.arange(image.shape[0]) * sy
                ax.contour(xs, ys, (label == 1).astype(float), levels=[0.5], colors=["#ff4040"], linewidths=0.8)
            ax.set_axis_off()
            ax.set_title(f"{name} {quality} p{index} {view}", color="white", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, facecolor="black")
    plt.close(fig)
    return path
