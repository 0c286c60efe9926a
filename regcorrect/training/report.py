"""Figures and tables of a run: the example panel, the training curves, a Markdown table.

Figures are drawn with matplotlib's Agg backend (no display needed) and written as PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

__all__ = ["plot_panel", "plot_curves", "metrics_table"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _image(value: Tensor | np.ndarray) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
    return np.squeeze(array).astype(np.float32)


def plot_panel(
    path: str | Path,
    *,
    source: Tensor,
    aligned_target: Tensor,
    target: Tensor,
    translated: Tensor,
    registered: Tensor | None,
    displacement: Tensor | None,
    mask: Tensor,
    title: str = "",
) -> Path:
    """One held-out slice: T1 | true T2 | misaligned T2 | G(T1) | registered | field | error.

    Args:
        path: the PNG to write.
        source: the input ``x`` ``(H, W)`` (any shape squeezing to it).
        aligned_target: the true target of ``x``.
        target: the misaligned target ``ỹ`` R registers onto.
        translated: ``G(x)``.
        registered: ``G(x)`` warped by R onto ``ỹ`` (``None`` without R).
        displacement: R's field ``(2, H, W)`` in pixels, channels ``(dy, dx)`` (``None`` without R).
        mask: foreground of the true target; the error map is shown on it.
        title: figure title.
    """
    plt = _pyplot()
    images = {
        "T1 (input)": _image(source),
        "true T2": _image(aligned_target),
        "misaligned T2 (label)": _image(target),
        "translated G(T1)": _image(translated),
    }
    if registered is not None:
        images["registered onto label"] = _image(registered)
    columns = len(images) + 2
    figure, axes = plt.subplots(1, columns, figsize=(2.3 * columns, 2.9), constrained_layout=True)
    for axis, (name, image) in zip(axes, images.items(), strict=False):
        axis.imshow(image, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
        axis.set_title(name, fontsize=8)
    field_axis, error_axis = axes[-2], axes[-1]
    if displacement is not None:
        field = _image(displacement)
        magnitude = np.hypot(field[0], field[1])
        shown = field_axis.imshow(magnitude, cmap="viridis", interpolation="nearest")
        figure.colorbar(shown, ax=field_axis, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
        height, width = magnitude.shape
        every = max(1, min(height, width) // 12)
        rows, cols = np.mgrid[every // 2 : height : every, every // 2 : width : every]
        field_axis.quiver(
            cols,
            rows,
            field[1][rows, cols],
            field[0][rows, cols],
            color="white",
            angles="xy",
            scale_units="xy",
            scale=1,
            width=0.006,
        )
        field_axis.set_title("displacement |u| (px), arrows u", fontsize=8)
    else:
        field_axis.text(0.5, 0.5, "no R in this mode", ha="center", va="center", fontsize=8)
        field_axis.set_title("displacement", fontsize=8)
    foreground = _image(mask) > 0
    error = np.abs(_image(translated) - _image(aligned_target)) / 2.0
    error = np.where(foreground, error, np.nan)
    shown = error_axis.imshow(error, cmap="magma", vmin=0, vmax=0.5, interpolation="nearest")
    figure.colorbar(shown, ax=error_axis, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
    error_axis.set_title("|G(T1) - true T2| / 2", fontsize=8)
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    if title:
        figure.suptitle(title, fontsize=9)
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_curves(
    path: str | Path,
    runs: dict[str, tuple[Sequence[dict[str, float]], Sequence[dict[str, float]]]],
    *,
    loss_names: Sequence[str] = ("G/total", "correction", "smoothness", "adversarial", "D/total"),
) -> Path:
    """Losses and held-out metrics over the steps of one or more runs.

    Args:
        path: the PNG to write.
        runs: name -> ``(train_history, eval_history)`` (rows with ``step``, as
            :class:`~regcorrect.training.Trainer` keeps them).
        loss_names: loss terms to draw (those a run lacks are skipped).
    """
    plt = _pyplot()
    figure, axes = plt.subplots(1, 4, figsize=(15, 3.4), constrained_layout=True)
    styles = ["-", "--", ":", "-."]
    for index, (name, (train, evaluation)) in enumerate(runs.items()):
        style = styles[index % len(styles)]
        for loss in loss_names:
            points = [(row["step"], row[loss]) for row in train if loss in row]
            if points:
                steps, values = zip(*points, strict=True)
                axes[0].plot(steps, values, style, label=f"{name}: {loss}", linewidth=1)
        for axis, metric in zip(axes[1:], ("nmae", "psnr", "ssim"), strict=True):
            points = [(row["step"], row[metric]) for row in evaluation if metric in row]
            if points:
                steps, values = zip(*points, strict=True)
                axis.plot(steps, values, style, marker="o", markersize=3, label=name)
    axes[0].set_title("training losses (weighted)")
    axes[0].set_yscale("symlog", linthresh=1e-3)
    for axis, metric in zip(axes[1:], ("NMAE (lower is better)", "PSNR dB", "SSIM"), strict=True):
        axis.set_title(f"held-out {metric}")
    for axis in axes:
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=6)
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def metrics_table(rows: Sequence[tuple[str, str, dict[str, float]]]) -> str:
    """A Markdown table: ``(model, steps, {"nmae", "psnr", "ssim"})`` per row."""
    lines = [
        "| model | training steps | NMAE ↓ | PSNR (dB) ↑ | SSIM ↑ |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, steps, metrics in rows:
        lines.append(
            f"| {name} | {steps} | {metrics['nmae']:.4f} | {metrics['psnr']:.2f} | "
            f"{metrics['ssim']:.4f} |"
        )
    return "\n".join(lines) + "\n"
