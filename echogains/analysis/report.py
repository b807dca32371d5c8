"""Outputs of ``echogains analyze`` that are looked at: curve plots, ED/ES frames, the overlay video, ``report.html``.

- ``{loop}_curves.png``: LV area and volume against time (frames without a frame rate), detected ED (up) and ES
  (down) markers; the true curve too when a truth is given (phantom evaluation).
- ``{loop}_phases.png``: the first beat's ED and ES frames with the LV contour.
- ``{loop}_overlay.avi``: every frame with the LV contour (red; green on ED frames, blue on ES frames) and the
  frame number, MJPG AVI at the loop's frame rate (OpenCV, as the phantom's EchoNet videos).
- ``report.html``: per patient the EF (method, loop and per beat, 95 % interval from the diffusion samples), the
  plots, and links to the overlay videos and every written file.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from echogains.analysis.cycles import Beat
from echogains.utils import EchoDataError, atomic_path, atomic_write_text

__all__ = ["plot_curves", "plot_phases", "write_overlay_video", "write_report"]

_RED, _GREEN, _BLUE = (0, 0, 255), (0, 220, 0), (255, 128, 0)  # BGR


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames, dtype=np.float32)
    lo, hi = float(frames.min()), float(frames.max())
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((frames - lo) * scale, 0, 255).astype(np.uint8)


def _time_axis(n: int, fps: float | None) -> tuple[np.ndarray, str]:
    return (np.arange(n) / fps, "time (s)") if fps else (np.arange(n, dtype=float), "frame")


def plot_curves(
    path: Path,
    curves: Any,
    beats: Sequence[Beat],
    fps: float | None,
    title: str,
    truth_volume: np.ndarray | None = None,
) -> Path:
    """Area and volume curves with the detected ED/ES frames
    (``curves``: :class:`~echogains.analysis.volumes.LoopCurves`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, xlabel = _time_axis(len(curves.area), fps)
    units = curves.units
    fig, axes = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    for ax, values, label in (
        (axes[0], curves.area, f"LV area ({units['area']})"),
        (axes[1], curves.volume, f"LV volume, area-length ({units['volume']})"),
    ):
        ax.plot(t, values, "-", color="0.2", lw=1.2, label="segmented")
        ed = ([b.ed for b in beats] + [beats[-1].next_ed]) if beats else []
        es = [b.es for b in beats]
        ax.plot(t[ed], values[ed], "^", color="tab:green", label="ED")
        ax.plot(t[es], values[es], "v", color="tab:blue", label="ES")
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
    if truth_volume is not None:
        axes[1].plot(t, truth_volume, "--", color="tab:orange", lw=1, label="true (phantom, 3D)")
    axes[1].legend(fontsize=7, loc="best")
    axes[1].set_xlabel(xlabel)
    axes[0].set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return path


def plot_phases(
    path: Path, frames: np.ndarray, masks: np.ndarray, beat: Beat | None, spacing: Sequence[float] | None, title: str
) -> Path:
    """The ED and ES frames of ``beat`` (frame 0 and the smallest mask without a beat) with the LV contour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = [("ED", beat.ed), ("ES", beat.es)] if beat else [("first frame", 0)]
    aspect = 1.0 if spacing is None else float(spacing[1]) / float(spacing[0])
    fig, axes = plt.subplots(1, len(picks), figsize=(3.2 * len(picks), 3.4), squeeze=False)
    for ax, (label, k) in zip(axes[0], picks):
        ax.imshow(frames[k], cmap="gray", aspect=aspect)
        if masks[k].any():
            ax.contour(masks[k] > 0, levels=[0.5], colors="r", linewidths=1)
        ax.set_title(f"{label} (frame {k})", fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return path


def write_overlay_video(
    path: Path, frames: np.ndarray, masks: np.ndarray, beats: Sequence[Beat], fps: float | None
) -> Path:
    """MJPG AVI of the frames with the LV contour (green on ED, blue on ES, red otherwise) and the frame number."""
    import cv2

    grey = _to_uint8(frames)
    eds = {b.ed for b in beats} | {b.next_ed for b in beats}
    ess = {b.es for b in beats}
    height, width = grey.shape[1:]
    scale = max(1, int(round(256 / max(height, width))))  # small loops (EchoNet 112 px) are shown larger
    size = (width * scale, height * scale)
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), float(fps or 25.0), size, True)
        if not writer.isOpened():
            raise EchoDataError(path, "OpenCV cannot open an MJPG AVI writer")
        try:
            for k, (frame, mask) in enumerate(zip(grey, masks)):
                big = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR), size, interpolation=cv2.INTER_LINEAR)
                big_mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
                contours, _ = cv2.findContours(big_mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
                colour = _GREEN if k in eds else _BLUE if k in ess else _RED
                cv2.drawContours(big, contours, -1, colour, 1)
                label = f"{k}" + (" ED" if k in eds else " ES" if k in ess else "")
                cv2.putText(big, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
                writer.write(big)
        finally:
            writer.release()
    return path


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else html.escape(str(value))


def _interval_text(low: Any, high: Any) -> str:
    return "–" if low is None or high is None else f"{low:.1f} .. {high:.1f}"


def _patient_section(root: Path, result: Mapping[str, Any]) -> str:
    loop = result["loop"]
    unit = result["units"]["volume"]
    rows = "".join(
        f"<tr><td>{b['beat'] + 1}</td><td>{html.escape(str(b['frames']))}</td><td>{_fmt(b['edv'])}</td>"
        f"<td>{_fmt(b['esv'])}</td><td>{_fmt(b['ef_pct'])}</td>"
        f"<td>{_interval_text(b['ef_low_pct'], b['ef_high_pct'])}</td></tr>"
        for b in result["beats"]
    )
    images, links = "", ""
    for info in result["loops"].values():
        for key in ("curves_png", "phases_png"):
            if info.get(key):
                images += f'<img src="{html.escape(info[key])}" style="max-width:480px;margin:4px">'
        for key in ("overlay_video", "mask", "uncertainty", "curves_csv"):
            if info.get(key):
                links += f'<a href="{html.escape(info[key])}">{html.escape(Path(info[key]).name)}</a> '
    warnings = "".join(f"<li>{html.escape(w)}</li>" for w in result.get("warnings", []))
    return (
        f"<h2>{html.escape(result['patient'])}</h2><p>{html.escape(result['method'])}, units {html.escape(unit)}; "
        f"loop: EDV {_fmt(loop['edv'])}, ESV {_fmt(loop['esv'])}, <b>EF {_fmt(loop['ef_pct'])} %</b> "
        f"(95 % interval from the diffusion samples: {_interval_text(loop['ef_low_pct'], loop['ef_high_pct'])}; "
        f"{loop['n_beats']} beat(s))</p>"
        + (f"<ul>{warnings}</ul>" if warnings else "")
        + "<table border=1 cellspacing=0><tr><th>beat</th><th>ED/ES frames</th><th>EDV</th><th>ESV</th><th>EF (%)</th>"
        f"<th>EF 95 % interval</th></tr>{rows}</table><p>{images}</p><p>files: {links}</p>"
    )


def write_report(
    root: Path, results: Sequence[Mapping[str, Any]], skipped: Sequence[Mapping[str, str]], settings: Mapping[str, Any]
) -> Path:
    """``root/report.html`` for the analysed patients (paths in ``results`` are relative to ``root``)."""
    sections = "".join(_patient_section(root, r) for r in results)
    skip = "".join(f"<li>{html.escape(s['file'])}: {html.escape(s['problem'])}</li>" for s in skipped)
    model = html.escape(", ".join(f"{k}={v}" for k, v in settings.get("model", {}).items() if k != "weights_sha256"))
    text = f"""<!doctype html><html><head><meta charset="utf-8"><title>echogains analyze</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}} td,th{{padding:2px 8px;font-size:90%}}</style></head>
<body><h1>LV volumes and EF from echo loops</h1>
<p>Model: {model}. ED/ES: largest/smallest LV volume of each beat, detected from the volume curve (no ECG).
Volumes: Simpson biplane with 2CH and 4CH (beats paired in order), area-length with one view; pixel units where the
loop gives no physical spacing. The overlay videos are MJPG AVIs (open them in a video player).</p>
{sections}{f"<h2>Skipped</h2><ul>{skip}</ul>" if skip else ""}</body></html>
"""
    path = root / "report.html"
    atomic_write_text(path, text)
    return path


def relative(path: str | os.PathLike, root: Path) -> str:
    return Path(path).resolve().relative_to(root.resolve()).as_posix()
