"""Explaining: LIME heatmaps that show which parts of a face drove the CNN's decision.

The stored face crop is reduced to the model's input size, cut into superpixels (SLIC) and
explained the way ``lime_image.LimeImageExplainer`` explains an image:
random on/off masks over the superpixels, the hidden ones filled with the crop's mean grey,
all perturbed crops sent to the model in one batch, and a ridge regression weighted by
closeness to the whole crop gives each superpixel's weight and the fit (R^2). It is done here
in a few lines of numpy, with the same random masks as the ``lime`` package for a given seed
(a test compares the two), because importing ``lime`` pulls in scikit-learn and SciPy's
statistics, over a second of start-up for ``photosort explain``. SLIC is done here too, for
the same reason: scikit-image's brings in SciPy's image and clustering modules (a quarter
of a second), and a 48 px face needs none of its generality.

A deletion check tests faithfulness: hiding the supporting superpixels must lower the
emotion's probability clearly more than hiding as many pixels chosen at random does.
"""

from __future__ import annotations

import io
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image

from photosort.defaults import DEFAULT_SAMPLES, DEFAULT_SEGMENTS, EMOTIONS
from photosort.emotions import INPUT_SIZE, resize_face

KERNEL_WIDTH = 0.25
"""LIME's kernel width for images: a sample's weight falls with its cosine distance from the
whole crop as ``exp(-d^2 / width^2) ** 0.5``."""

RIDGE_ALPHA = 1.0
"""LIME's regulariser for the local linear model."""

SLIC_COMPACTNESS = 0.1
"""Low: superpixels follow the face's light and dark (brows, eyes, mouth) more than a grid."""

SLIC_SIGMA = 0.5
"""Gaussian smoothing before clustering, in pixels."""

SLIC_ITERATIONS = 10

RANDOM_DRAWS = 20
"""Random sets of superpixels the deletion check hides, to know what an uninformed choice does."""

FAITHFUL_SPREADS = 2.0
"""How many standard deviations of the random draws the support's drop must beat."""

FAITHFUL_MARGIN = 0.02
"""...and by at least this much probability (2 points): on a face where hiding anything
barely moves the probability the random draws hardly spread, and a difference of a point
is within what int8 inference shifts."""


class Predictor(Protocol):
    def predict(self, faces: Any) -> np.ndarray: ...


@dataclass(frozen=True)
class Explanation:
    """One face's explanation for one emotion."""

    emotion: str
    probability: float
    segments: np.ndarray
    weights: dict[int, float]
    fit: float
    deletion_support: float
    """Drop in probability with the supporting superpixels hidden."""
    deletion_random: float
    """Mean drop over the random draws hiding as many pixels."""
    deletion_spread: float
    """Standard deviation of the random draws' drops."""

    @property
    def faithful(self) -> bool:
        return is_faithful(self.deletion_support, self.deletion_random, self.deletion_spread)

    def weight_map(self) -> np.ndarray:
        """Per-pixel LIME weight, at the explained size."""
        lookup = np.zeros(int(self.segments.max()) + 1, np.float32)
        for segment, weight in self.weights.items():
            lookup[segment] = weight
        return lookup[self.segments]


def is_faithful(support: float, random_mean: float, random_spread: float) -> bool:
    """Hiding what LIME calls supporting lowers the probability, clearly more than hiding as
    much at random: beyond the random draws' spread, and by a margin a rounding shift cannot
    explain."""
    margin = max(FAITHFUL_SPREADS * random_spread, FAITHFUL_MARGIN)
    return support > 0 and support - random_mean > margin


def _smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur, edges mirrored."""
    radius = int(4 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(x**2) / (2 * sigma**2))
    kernel /= kernel.sum()
    out = np.pad(image, radius, mode="symmetric")
    out = np.apply_along_axis(np.convolve, 0, out, kernel, mode="valid")
    return np.apply_along_axis(np.convolve, 1, out, kernel, mode="valid")


def slic(image: np.ndarray, n_segments: int) -> np.ndarray:
    """SLIC superpixels of a grey uint8 image, labelled 0..n-1 (Achanta et al., 2012).

    k-means over (row, column, brightness) from centres on a regular grid, each pixel
    compared only with the centres within two grid steps; distance is squared spatial
    offset in grid steps plus squared brightness difference over the compactness. The first
    pass is purely spatial (the centres have no brightness yet), as in scikit-image. Then
    each label's pieces are split, and pieces under half a superpixel are merged into a
    neighbour, so every superpixel is one connected region.
    """
    h, w = image.shape
    grey = _smooth(image.astype(np.float64) / 255.0, SLIC_SIGMA) / SLIC_COMPACTNESS
    step = math.sqrt(h * w / n_segments)
    rows, cols = max(1, round(h / step)), max(1, round(w / step))
    grid_y = (np.arange(rows) + 0.5) * h / rows
    grid_x = (np.arange(cols) + 0.5) * w / cols
    centres = np.array([(y, x, 0.0) for y in grid_y for x in grid_x])
    yy, xx = np.mgrid[:h, :w]
    pixels = np.stack([yy.ravel(), xx.ravel(), grey.ravel()], axis=1)
    labels = np.zeros(h * w, np.int64)
    for i in range(SLIC_ITERATIONS):
        dy = pixels[:, None, 0] - centres[None, :, 0]
        dx = pixels[:, None, 1] - centres[None, :, 1]
        dist = (dy**2 + dx**2) / step**2
        if i:
            dist += (pixels[:, None, 2] - centres[None, :, 2]) ** 2
        dist[(np.abs(dy) > 2 * step) | (np.abs(dx) > 2 * step)] = np.inf
        nearest = np.argmin(dist, axis=1)
        if i and np.array_equal(nearest, labels):
            break
        labels = nearest
        counts = np.bincount(labels, minlength=len(centres))
        sums = np.stack([np.bincount(labels, pixels[:, j], len(centres)) for j in range(3)], 1)
        kept = counts > 0
        centres[kept] = sums[kept] / counts[kept, None]
    return _connected(labels.reshape(h, w), int(0.5 * h * w / len(centres)))


def _connected(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Relabel 4-connected pieces of each label 0..n-1, merging small pieces into the label
    of a neighbouring piece."""
    h, w = labels.shape
    flat = labels.ravel()
    out = np.full(h * w, -1, np.int64)
    pieces: list[list[int]] = []
    for start in range(h * w):
        if out[start] >= 0:
            continue
        piece, queue, own = [start], deque([start]), flat[start]
        out[start] = len(pieces)
        while queue:
            p = queue.popleft()
            y, x = divmod(p, w)
            for q, inside in (
                (p - 1, x > 0),
                (p + 1, x < w - 1),
                (p - w, y > 0),
                (p + w, y < h - 1),
            ):
                if inside and out[q] < 0 and flat[q] == own:
                    out[q] = len(pieces)
                    piece.append(q)
                    queue.append(q)
        pieces.append(piece)
    merged = np.arange(len(pieces))
    for index, piece in enumerate(pieces):
        if len(piece) >= min_size or len(pieces) == 1:
            continue
        members = np.asarray(piece)
        y, x = np.divmod(members, w)
        around = np.concatenate(
            [members[x > 0] - 1, members[x < w - 1] + 1, members[y > 0] - w, members[y < h - 1] + w]
        )
        others = merged[out[around]]
        others = others[others != merged[index]]
        if len(others):
            merged[merged == merged[index]] = np.bincount(others).argmax()
    _, relabelled = np.unique(merged[out], return_inverse=True)
    return relabelled.reshape(h, w)


def explain_face(
    crop: np.ndarray,
    model: Predictor,
    emotion: str,
    *,
    samples: int = DEFAULT_SAMPLES,
    segments: int = DEFAULT_SEGMENTS,
    seed: int = 0,
) -> Explanation:
    """Explain ``model``'s probability of ``emotion`` for a grey face crop (any size)."""
    label = EMOTIONS.index(emotion)
    # Resized as the model resizes its input: the explained image is the one it classified,
    # and at the model's input size there are far fewer pixels to perturb.
    small = resize_face(crop, getattr(model, "input_size", INPUT_SIZE))
    segment_map = slic(small, segments)
    weights, fit = lime_weights(small, segment_map, model, label, samples=samples, seed=seed)
    check = deletion_check(small, segment_map, weights, model, label, seed=seed)
    return Explanation(
        emotion=emotion,
        probability=check.probability,
        segments=segment_map,
        weights=weights,
        fit=fit,
        deletion_support=check.support,
        deletion_random=check.random_mean,
        deletion_spread=check.random_spread,
    )


def lime_weights(
    image: np.ndarray,
    segment_map: np.ndarray,
    model: Predictor,
    label: int,
    *,
    samples: int,
    seed: int,
) -> tuple[dict[int, float], float]:
    """Each superpixel's LIME weight for class ``label``, and the local model's R^2.

    LIME's image explainer step by step: the same masks as ``lime`` draws for ``seed`` (the
    first sample is the whole crop), hidden superpixels at the crop's mean grey, cosine
    distance to the whole crop through LIME's kernel, then ridge regression with intercept.
    """
    ids, features = np.unique(segment_map, return_inverse=True)
    features = features.reshape(segment_map.shape)
    n = len(ids)
    masks = np.random.RandomState(seed).randint(0, 2, samples * n).reshape(samples, n)
    masks[0, :] = 1
    fill = np.uint8(int(image.mean()))
    # C order, as a stack of crops would be: float32 sums (each face's mean and spread)
    # depend on memory order, and int8 inference turns such last-bit changes into visible ones.
    perturbed = np.ascontiguousarray(np.where(masks[:, features].astype(bool), image, fill))
    target = np.asarray(model.predict(perturbed), dtype=np.float64)[:, label]
    on = masks.sum(axis=1)
    distance = 1.0 - np.sqrt(on / n)  # cosine distance of a 0/1 mask from all ones
    weight = np.sqrt(np.exp(-(distance**2) / KERNEL_WIDTH**2))
    x = masks.astype(np.float64)
    total = weight.sum()
    x_mean = weight @ x / total
    y_mean = float(weight @ target / total)
    xc, yc = x - x_mean, target - y_mean
    gram = (xc * weight[:, None]).T @ xc + RIDGE_ALPHA * np.eye(n)
    coef = np.linalg.solve(gram, (xc * weight[:, None]).T @ yc)
    residual = yc - xc @ coef
    spread = float(weight @ yc**2)
    fit = 1.0 - float(weight @ residual**2) / spread if spread > 0 else 0.0
    return {int(s): float(c) for s, c in zip(ids, coef, strict=True)}, fit


def _hide(image: np.ndarray, segment_map: np.ndarray, hidden: Any) -> np.ndarray:
    """Fill superpixels with the crop's mean grey, as the LIME perturbations do."""
    out = image.copy()
    out[np.isin(segment_map, hidden)] = int(image.mean())
    return out


@dataclass(frozen=True)
class DeletionCheck:
    probability: float
    support: float
    """Drop in probability with the supporting superpixels hidden."""
    random_mean: float
    random_spread: float
    """Mean and standard deviation of the drop over random draws hiding as many pixels."""

    @property
    def faithful(self) -> bool:
        return is_faithful(self.support, self.random_mean, self.random_spread)


def deletion_check(
    image: np.ndarray,
    segment_map: np.ndarray,
    weights: dict[int, float],
    model: Predictor,
    label: int,
    *,
    seed: int = 0,
    draws: int = RANDOM_DRAWS,
) -> DeletionCheck:
    """Hide the most supporting superpixels (at most a quarter of them) and, ``draws`` times,
    random superpixels covering as many pixels as whole superpixels allow; compare the drops."""
    supporting = [s for s, w in sorted(weights.items(), key=lambda kv: -kv[1]) if w > 0]
    ids, areas = np.unique(segment_map, return_counts=True)
    k = max(1, min(len(supporting), len(ids) // 4))
    hidden = supporting[:k]
    target = int(np.isin(segment_map, hidden).sum())
    rng = np.random.default_rng(seed)
    batch = [image, _hide(image, segment_map, hidden)]
    for _ in range(draws):
        order = rng.permutation(len(ids))
        covered = np.cumsum(areas[order])
        # The prefix of the shuffled superpixels whose area is closest to the support's.
        cut = int(np.argmin(np.abs(covered - target))) + 1
        batch.append(_hide(image, segment_map, ids[order[:cut]]))
    probs = np.asarray(model.predict(np.stack(batch)), dtype=np.float64)[:, label]
    base = float(probs[0])
    drops = base - probs[2:]
    return DeletionCheck(
        probability=base,
        support=base - float(probs[1]),
        random_mean=float(drops.mean()),
        random_spread=float(drops.std(ddof=1)) if draws > 1 else math.inf,
    )


def heatmap_image(crop: np.ndarray, explanation: Explanation, size: int = 192) -> Image.Image:
    """The crop in grey with supporting regions tinted green and opposing ones red."""
    weights = np.asarray(
        Image.fromarray(explanation.weight_map()).resize((size, size), Image.Resampling.NEAREST)
    )
    grey = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.LANCZOS))
    base = np.stack([grey] * 3, axis=-1).astype(np.float32) * 0.75
    peak = float(np.abs(weights).max()) or 1.0
    alpha = (np.abs(weights) / peak)[..., None] * 0.65
    green = np.array([40, 200, 90], np.float32)
    red = np.array([220, 50, 50], np.float32)
    tint = np.where((weights > 0)[..., None], green, red)
    out = base * (1 - alpha) + tint * alpha
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()
