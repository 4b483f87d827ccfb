"""Explaining: LIME heatmaps that show which parts of a face drove the CNN's decision.

The stored face crop is reduced to the model's input size, cut into superpixels (SLIC from
scikit-image) and explained with ``lime_image.LimeImageExplainer``: superpixels that support
the emotion and superpixels that speak against it, and LIME's fit score (R^2 of its local
linear model). Perturbed crops go to the model in large batches (LIME's default batch of 10
makes it about ten times slower). A deletion check tests faithfulness: hiding the supporting
superpixels must lower the emotion's probability clearly more than hiding as many pixels
chosen at random does.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image

from photosort.defaults import DEFAULT_SAMPLES, DEFAULT_SEGMENTS, EMOTIONS
from photosort.emotions import INPUT_SIZE, resize_face

LIME_BATCH = 1000

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


def _no_progress_bar(iterable: Any, *args: Any, **kwargs: Any) -> Any:
    return iterable


def _as_grey_batch(images: np.ndarray) -> np.ndarray:
    """LIME hands over RGB copies of a grey crop; the model wants the grey crop back."""
    arr = np.asarray(images)
    if arr.ndim == 4:
        arr = arr[..., 0]
    return np.ascontiguousarray(np.clip(arr, 0, 255).astype(np.uint8))


def segment(image: np.ndarray, n_segments: int) -> np.ndarray:
    """SLIC superpixels of a grey uint8 crop, labelled from 0; low compactness, so they
    follow the face's light and dark (brows, eyes, mouth) more than a grid."""
    from skimage.segmentation import slic

    return slic(
        image.astype(np.float64) / 255.0,
        n_segments=n_segments,
        compactness=0.1,
        sigma=0.5,
        channel_axis=None,
        start_label=0,
    )


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
    segment_map = segment(small, segments)
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

    Hidden superpixels take the crop's mean grey; all samples go to the model in batches of
    LIME_BATCH.
    """
    from lime import lime_image

    # lime 0.2 wraps its sampling loop in an unconditional tqdm bar; photosort has its own.
    lime_image.tqdm = _no_progress_bar

    def classifier_fn(images: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(_as_grey_batch(images)), dtype=np.float64)

    explainer = lime_image.LimeImageExplainer(random_state=seed)
    result = explainer.explain_instance(
        np.stack([image] * 3, axis=-1),
        classifier_fn,
        labels=(label,),
        top_labels=None,
        hide_color=int(image.mean()),
        num_samples=samples,
        batch_size=LIME_BATCH,
        segmentation_fn=lambda _image: segment_map,
        random_seed=seed,
    )
    return {int(k): float(v) for k, v in result.local_exp[label]}, float(result.score)


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
