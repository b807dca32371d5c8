"""PNG plots for the evaluation report: Bland-Altman, correlation, contour overlays and the uncertainty gallery.

Figures are built with :class:`matplotlib.figure.Figure` and rendered by the Agg backend (no pyplot, no global
state, no display needed) and saved atomically through :func:`echogains.utils.atomic_path`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from skimage import measure

from echogains.evaluation.clinical import LongAxis
from echogains.evaluation.metrics import agreement_stats
from echogains.utils import atomic_path

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "bland_altman_plot",
    "correlation_plot",
    "overlay_plot",
    "uncertainty_gallery",
    "UncertaintyRow",
    "LABEL_COLOURS",
    "UNCERTAINTY_SCALE",
]

#: Contour colour per label name (others cycle through ``_EXTRA``).
LABEL_COLOURS: dict[str, str] = {"LV": "tab:red", "MYO": "tab:green", "LA": "tab:blue"}
_EXTRA = ("tab:orange", "tab:purple", "tab:cyan", "tab:olive")
#: Colour-bar label of the uncertainty gallery: what the map's values mean.
UNCERTAINTY_SCALE = "uncertainty (0 = all samples agree, 1 = samples split evenly)"
#: Legend text of the EchoGAINS Table 4 acquisition subsets (unflagged, flagged points).
_SUBSET_LABELS = ("standard", "deep_or_wide")


def _save(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> None:
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", metadata={"Software": None})


def _pairs(
    measured: Sequence[float], reference: Sequence[float], groups: Sequence[bool] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = np.asarray(measured, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    g = np.zeros(a.shape, dtype=bool) if groups is None else np.asarray(groups, dtype=bool)
    keep = np.isfinite(a) & np.isfinite(b)
    return a[keep], b[keep], g[keep]


def _scatter_groups(
    ax: Axes, x: np.ndarray, y: np.ndarray, g: np.ndarray, group_labels: tuple[str, str] | None
) -> None:
    """Points of each non-empty group in its colour; a legend naming the groups when there are groups."""
    for flag, colour, name in ((False, "tab:blue", 0), (True, "tab:orange", 1)):
        keep = g == flag
        if keep.any():
            ax.scatter(
                x[keep], y[keep], s=18, c=colour, alpha=0.8, label=None if group_labels is None else group_labels[name]
            )
    if group_labels is not None and x.size:
        ax.legend(loc="best", fontsize=7)


def _interval_bars(
    ax: Axes,
    measured: Sequence[float],
    reference: Sequence[float],
    intervals: Sequence[tuple[float, float] | None],
) -> None:
    """Vertical bars of each pair's interval on the Bland-Altman axes (pairs with a NaN or no interval skipped)."""
    x, low, high = [], [], []
    for m, r, i in zip(measured, reference, intervals):
        if i is not None and np.isfinite([m, r, i[0], i[1]]).all():
            x.append((m + r) / 2)
            low.append(i[0] - r)
            high.append(i[1] - r)
    if x:
        ax.vlines(x, low, high, colors="0.45", lw=1, label="95 % interval from samples", zorder=1)
        ax.legend(loc="best", fontsize=7)


def bland_altman_plot(
    measured: Sequence[float],
    reference: Sequence[float],
    path: str | os.PathLike,
    title: str = "",
    quantity: str = "EF (%)",
    groups: Sequence[bool] | None = None,
    group_labels: tuple[str, str] = _SUBSET_LABELS,
    intervals: Sequence[tuple[float, float] | None] | None = None,
) -> dict[str, float | int]:
    """Bland-Altman plot (difference against mean) with bias and 95 % limits of agreement; returns the stats.

    Args:
        measured: automatic values.
        reference: reference values (same length); pairs with a NaN are dropped.
        path: PNG file to write.
        title: figure title.
        quantity: axis quantity, e.g. ``EF (%)``.
        groups: optional flags drawn in a second colour (e.g. the ``deep_or_wide`` acquisition subset).
        group_labels: legend text for unflagged and flagged points.
        intervals: optional ``(low, high)`` of each measured value (e.g. the EF interval from samples; ``None``:
            none), drawn as a vertical bar from ``low - reference`` to ``high - reference`` at the point's mean (the
            point itself need not lie inside its interval).
    """
    a, b, g = _pairs(measured, reference, groups)
    stats = agreement_stats(a, b)
    fig = Figure(figsize=(5, 4))
    ax = fig.add_subplot()
    if intervals is not None:
        _interval_bars(ax, measured, reference, intervals)
    _scatter_groups(ax, (a + b) / 2, a - b, g, None if groups is None else group_labels)
    if stats["n"]:
        ax.axhline(stats["bias"], color="k", lw=1, label="bias")
    if stats["n"] > 1:
        for key in ("loa_lower", "loa_upper"):
            ax.axhline(stats[key], color="k", lw=1, ls="--")
    ax.set_xlabel(f"mean of automatic and reference {quantity}")
    ax.set_ylabel(f"automatic - reference {quantity}")
    ax.set_title(
        f"{title}\nbias {stats['bias']:.2f}, LoA [{stats['loa_lower']:.2f}, {stats['loa_upper']:.2f}], n={stats['n']}",
        fontsize=9,
    )
    fig.tight_layout()
    _save(fig, path)
    return stats


def correlation_plot(
    measured: Sequence[float],
    reference: Sequence[float],
    path: str | os.PathLike,
    title: str = "",
    quantity: str = "EF (%)",
    groups: Sequence[bool] | None = None,
    group_labels: tuple[str, str] = _SUBSET_LABELS,
) -> dict[str, float | int]:
    """Scatter of automatic against reference values with the identity line, Pearson r and MAE; returns the stats.

    Args:
        measured: automatic values.
        reference: reference values (same length); pairs with a NaN are dropped.
        path: PNG file to write.
        title: figure title.
        quantity: axis quantity.
        groups: optional flags drawn in a second colour.
        group_labels: legend text for unflagged and flagged points.
    """
    a, b, g = _pairs(measured, reference, groups)
    stats = agreement_stats(a, b)
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.add_subplot()
    _scatter_groups(ax, b, a, g, None if groups is None else group_labels)
    if a.size:
        lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
        pad = 0.05 * (hi - lo) + 1e-6
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="k", lw=1, ls="--")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_aspect("equal")
    ax.set_xlabel(f"reference {quantity}")
    ax.set_ylabel(f"automatic {quantity}")
    ax.set_title(f"{title}\nr = {stats['pearson_r']:.3f}, MAE {stats['mae']:.2f}, n={stats['n']}", fontsize=9)
    fig.tight_layout()
    _save(fig, path)
    return stats


def _colour(name: str, index: int) -> str:
    return LABEL_COLOURS.get(name.upper(), _EXTRA[index % len(_EXTRA)])


def _draw_contours(ax: Axes, mask: np.ndarray, colour: str, style: str) -> None:
    for contour in measure.find_contours(np.pad(mask.astype(float), 1), 0.5):
        ax.plot(contour[:, 1] - 1, contour[:, 0] - 1, color=colour, lw=1.0, ls=style)


def _draw_long_axis(ax: Axes, axis: LongAxis, spacing: tuple[float, float], style: str) -> None:
    """Annulus points and the line from their midpoint to the apex, converted from mm to pixel coordinates."""
    sx, sy = spacing
    (x0, y0), (x1, y1) = axis.base
    ax.plot([x0 / sx, x1 / sx], [y0 / sy, y1 / sy], ls="none", marker="o", ms=3, color="yellow")
    ax.plot(
        [axis.base_mid[0] / sx, axis.apex[0] / sx],
        [axis.base_mid[1] / sy, axis.apex[1] / sy],
        color="yellow",
        lw=0.8,
        ls=style,
    )


def overlay_plot(
    image: np.ndarray,
    gt: np.ndarray,
    pred: np.ndarray,
    labels: Mapping[str, int],
    spacing: Sequence[float],
    path: str | os.PathLike,
    title: str = "",
    long_axes: Sequence[LongAxis | None] = (),
) -> None:
    """Grey image with ground-truth (solid) and predicted (dashed) contours of each label, in physical aspect.

    Args:
        image: 2D grey image ``[rows, cols]``.
        gt: ground-truth label map.
        pred: predicted label map.
        labels: ``{name: value}`` of the labels to draw.
        spacing: (sx, sy) mm, so that pixels are drawn ``sx`` wide and ``sy`` tall.
        path: PNG file to write.
        title: figure title (e.g. the case id and its Dice).
        long_axes: LV long axes to draw (annulus points and annulus midpoint to apex): the reference's solid, the
            prediction's dashed, in that order; ``None`` entries are skipped.
    """
    rows, cols = image.shape
    sx, sy = float(spacing[0]), float(spacing[1])
    width_mm, height_mm = cols * sx, rows * sy
    scale = 5.0 / max(width_mm, height_mm)
    fig = Figure(figsize=(max(2.5, width_mm * scale), max(2.5, height_mm * scale) + 0.3))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0 - 0.3 / fig.get_figheight()))  # no tight_layout: the axes are off
    ax.imshow(image, cmap="gray", aspect=sy / sx, interpolation="nearest")
    handles = []
    for i, (name, value) in reversed(list(enumerate(labels.items()))):  # first label (LV) drawn last, on top
        colour = _colour(name, i)
        _draw_contours(ax, gt == value, colour, "-")
        _draw_contours(ax, pred == value, colour, "--")
        handles.insert(0, ax.plot([], [], color=colour, lw=1.0, label=name)[0])
    for axis, style in zip(long_axes, ("-", "--")):
        if axis is not None:
            _draw_long_axis(ax, axis, (sx, sy), style)
    handles.append(ax.plot([], [], color="w", lw=1.0, ls="-", label="reference")[0])
    handles.append(ax.plot([], [], color="w", lw=1.0, ls="--", label="prediction")[0])
    ax.legend(handles=handles, loc="lower right", fontsize=6, facecolor="0.3", labelcolor="w", framealpha=0.6)
    ax.set_xlim(-0.5, cols - 0.5)
    ax.set_ylim(rows - 0.5, -0.5)
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    _save(fig, path)


@dataclass(frozen=True)
class UncertaintyRow:
    """One case of the uncertainty gallery, every array on the image's own pixel grid.

    Args:
        case_id: the case.
        image: grey image ``[rows, cols]``.
        reference: reference mask of the label shown.
        prediction: predicted mask of that label.
        uncertainty: the uncertainty map as the model wrote it, in [0, 1].
        spacing: (sx, sy) mm, for the physical aspect.
    """

    case_id: str
    image: np.ndarray
    reference: np.ndarray
    prediction: np.ndarray
    uncertainty: np.ndarray
    spacing: Sequence[float]


def uncertainty_gallery(
    rows: Sequence[UncertaintyRow], path: str | os.PathLike, scale_label: str = UNCERTAINTY_SCALE
) -> None:
    """Per case: the image with reference (solid) and predicted (dashed) contours, and the uncertainty map as written.

    The map is drawn with a fixed colour scale from 0 to 1 (no rescaling per image, no smoothing, nearest display
    interpolation), the predicted contour on top, and one colour bar labelled with what the values mean.

    Args:
        rows: the cases, one row of the figure each.
        path: PNG file to write.
        scale_label: the colour bar's label.
    """
    if not rows:
        raise ValueError("uncertainty_gallery needs at least one case")
    first = rows[0]
    height_over_width = (first.image.shape[0] * float(first.spacing[1])) / (
        first.image.shape[1] * float(first.spacing[0])
    )
    panel = 3.2  # inches per image
    fig = Figure(figsize=(2 * panel + 1.3, len(rows) * (panel * height_over_width + 0.35) + 0.2), layout="constrained")
    axes = fig.subplots(len(rows), 2, squeeze=False)
    im = None
    for (left, right), row in zip(axes, rows):
        aspect = float(row.spacing[1]) / float(row.spacing[0])
        left.imshow(row.image, cmap="gray", aspect=aspect, interpolation="nearest")
        _draw_contours(left, row.reference, "tab:green", "-")
        _draw_contours(left, row.prediction, "tab:red", "--")
        left.set_title(f"{row.case_id}: reference (solid), prediction (dashed)", fontsize=8)
        im = right.imshow(row.uncertainty, cmap="magma", vmin=0.0, vmax=1.0, aspect=aspect, interpolation="nearest")
        _draw_contours(right, row.prediction, "cyan", "--")
        right.set_title("uncertainty map as written; prediction (dashed)", fontsize=8)
        for ax in (left, right):
            ax.set_axis_off()
    bar = fig.colorbar(im, ax=axes[:, 1].tolist(), shrink=min(1.0, 0.5 + 0.15 * len(rows)), aspect=30)
    bar.set_label(scale_label, fontsize=10)
    bar.ax.tick_params(labelsize=8)
    _save(fig, path, dpi=90)
