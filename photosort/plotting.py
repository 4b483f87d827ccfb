"""Plotting evaluations: a confusion matrix, and a model's training curves, as PNG files.

Drawn with Pillow, which photosort already needs, so plots add no dependency.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from photosort.emotions import EMOTIONS, EmotionModel
from photosort.training import checkpoint_dir, write_atomically


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType
        return ImageFont.load_default()


def _save_png(image: Image.Image, target: Path) -> None:
    write_atomically(target, lambda p: image.save(p, format="PNG"))


def plot_confusion(matrix: list[list[int]], target: str | os.PathLike[str]) -> Path:
    """A confusion-matrix heat map (shaded by recall, labelled with counts) as PNG."""
    target = Path(target)
    cell, left, top = 72, 90, 60
    k = len(EMOTIONS)
    image = Image.new("RGB", (left + k * cell + 20, top + k * cell + 50), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(14), _font(12)
    counts = np.asarray(matrix, dtype=float)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    draw.text((left, 8), "Confusion matrix (rows: true, columns: predicted)", "black", font)
    for i, name in enumerate(EMOTIONS):
        draw.text((left + i * cell + cell // 2, top - 8), name, "black", small, anchor="md")
        draw.text((left - 8, top + i * cell + cell // 2), name, "black", small, anchor="rm")
        for j in range(k):
            shade = int(255 * (1 - share[i, j]))
            box = (left + j * cell, top + i * cell, left + (j + 1) * cell, top + (i + 1) * cell)
            draw.rectangle(box, fill=(shade, shade, 255), outline="grey")
            colour = "white" if share[i, j] > 0.5 else "black"
            centre = (box[0] + cell // 2, box[1] + cell // 2)
            draw.text(centre, f"{int(counts[i, j])}", colour, small, anchor="mm")
    draw.text((left, top + k * cell + 16), "shade: share of the true class", "grey", small)
    _save_png(image, target)
    return target


def _draw_panel(
    draw: ImageDraw.ImageDraw,
    box: tuple[int, int, int, int],
    title: str,
    history: list[dict[str, Any]],
    series: list[tuple[str, str, tuple[int, int, int]]],
) -> None:
    """One line chart of per-epoch values: a framed box, min/max ticks and a legend."""
    x0, y0, x1, y1 = box
    font, small = _font(14), _font(11)
    draw.rectangle(box, outline="black")
    draw.text(((x0 + x1) // 2, y0 - 10), f"{title} per epoch", "black", font, anchor="md")
    draw.text(((x0 + x1) // 2, y1 + 18), "epoch", "black", small, anchor="mt")
    present = [s for s in series if all(s[0] in row for row in history)]
    values = [row[key] for row in history for key, _, _ in present]
    if not values:
        return
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1
    first = history[0]["epoch"]
    last = max(history[-1]["epoch"], first + 1)

    def point(epoch: float, value: float) -> tuple[float, float]:
        return (
            x0 + (epoch - first) / (last - first) * (x1 - x0),
            y1 - (value - lo) / (hi - lo) * (y1 - y0),
        )

    for value in (lo, hi):
        draw.text((x0 - 4, point(first, value)[1]), f"{value:.3g}", "black", small, anchor="rm")
    for epoch in (first, history[-1]["epoch"]):
        draw.text((point(epoch, lo)[0], y1 + 4), str(epoch), "black", small, anchor="mt")
    for n, (key, name, colour) in enumerate(present):
        points = [point(row["epoch"], row[key]) for row in history]
        if len(points) > 1:
            draw.line(points, fill=colour, width=2)
        for px, py in points:
            draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=colour)
        draw.text((x0 + 8, y0 + 8 + 14 * n), name, colour, small)


def plot_history(history: list[dict[str, Any]], target: str | os.PathLike[str]) -> Path:
    """Loss and accuracy per epoch, training and validation, as PNG."""
    target = Path(target)
    width, height, pad = 900, 380, 50
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    blue, orange, green = (31, 119, 180), (255, 127, 14), (44, 160, 44)
    panel_w = (width - 3 * pad) // 2
    panels = (
        ("loss", [("loss", "train", blue), ("val_loss", "validation", orange)]),
        (
            "accuracy",
            [
                ("accuracy", "train", blue),
                ("val_accuracy", "validation", orange),
                ("val_ferplus_accuracy", "validation, FER+ majority", green),
            ],
        ),
    )
    for p, (title, series) in enumerate(panels):
        x0 = pad + p * (panel_w + pad)
        _draw_panel(draw, (x0, pad, x0 + panel_w, height - pad), title, history, series)
    _save_png(image, target)
    return target


def training_history(model: EmotionModel) -> list[dict[str, Any]]:
    """Per-epoch metrics: from the model's metadata, or the log of the checkpoint it came from."""
    if model.metadata.get("history"):
        return model.metadata["history"]
    if model.path is None:
        return []
    for log in (model.path.parent / "log.json", checkpoint_dir(model.path) / "log.json"):
        try:
            return json.loads(log.read_text()).get("history", [])
        except (OSError, ValueError, AttributeError):
            continue
    return []


def write_plots(
    report: dict[str, Any], model: EmotionModel, folder: str | os.PathLike[str]
) -> list[Path]:
    """The confusion matrix, and the training curves when the model has a training log."""
    folder = Path(folder)
    written = [plot_confusion(report["confusion_matrix"], folder / "confusion_matrix.png")]
    history = training_history(model)
    if history:
        written.append(plot_history(history, folder / "training_curves.png"))
    return written
