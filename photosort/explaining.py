"""Explaining: LIME heatmaps that show which parts of a face drove the CNN's decision.

The stored face crop is reduced to the model's input size, cut into superpixels (SLIC from
scikit-image) and explained with ``lime_image.LimeImageExplainer``: superpixels that support
the emotion and superpixels that speak against it, and LIME's fit score (R^2 of its local
linear model). Perturbed crops go to the model in large batches (LIME's default batch of 10
makes it about ten times slower). A deletion check tests faithfulness: hiding the supporting
superpixels must lower the emotion's probability more than hiding as many random ones.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from PIL import Image

from photosort.defaults import DEFAULT_SAMPLES, DEFAULT_SEGMENTS, EMOTIONS
from photosort.emotions import INPUT_SIZE, resize_face

LIME_BATCH = 1000
RANDOM_TRIALS = 20


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
    deletion_random: float

    @property
    def faithful(self) -> bool:
        """Hiding what LIME calls supporting hurts more than hiding as much at random."""
        return self.deletion_support > self.deletion_random

    def weight_map(self) -> np.ndarray:
        """Per-pixel LIME weight, at the explained size."""
        lookup = np.zeros(int(self.segments.max()) + 1, np.float32)
        for segment, weight in self.weights.items():
            lookup[segment] = weight
        return lookup[self.segments]


def _no_progress_bar(iterable: Any, *args: Any, **kwargs: Any) -> Any:
    return iterable


def _as_grey_batch(images: np.ndarray) -> np.ndarray:
    """LIME hands over RGB copies of a grey crop; the model wants the grey crop back."""
    arr = np.asarray(images)
    if arr.ndim == 4:
        arr = arr[..., 0]
    return np.clip(arr, 0, 255).astype(np.uint8)


def _segment(image: np.ndarray, n_segments: int) -> np.ndarray:
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
    from lime import lime_image

    # lime 0.2 wraps its sampling loop in an unconditional tqdm bar; photosort has its own.
    lime_image.tqdm = _no_progress_bar
    label = EMOTIONS.index(emotion)
    # Resized as the model resizes its input: the explained image is the one it classified,
    # and at the model's input size there are far fewer pixels to perturb.
    small = resize_face(crop, getattr(model, "input_size", INPUT_SIZE))
    segment_map = _segment(small, segments)
    fill = int(small.mean())

    def classifier_fn(images: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(_as_grey_batch(images)), dtype=np.float64)

    explainer = lime_image.LimeImageExplainer(random_state=seed)
    result = explainer.explain_instance(
        np.stack([small] * 3, axis=-1),
        classifier_fn,
        labels=(label,),
        top_labels=None,
        hide_color=fill,
        num_samples=samples,
        batch_size=LIME_BATCH,
        segmentation_fn=lambda _image: segment_map,
        random_seed=seed,
    )
    weights = {int(k): float(v) for k, v in result.local_exp[label]}
    base, support, random_drop = _deletion_check(small, segment_map, weights, model, label, seed)
    return Explanation(
        emotion=emotion,
        probability=base,
        segments=segment_map,
        weights=weights,
        fit=float(result.score),
        deletion_support=support,
        deletion_random=random_drop,
    )


def _hide(image: np.ndarray, segment_map: np.ndarray, hidden: list[int]) -> np.ndarray:
    """Fill superpixels with the crop's mean grey, as the LIME perturbations do."""
    out = image.copy()
    out[np.isin(segment_map, hidden)] = int(image.mean())
    return out


def _deletion_check(
    image: np.ndarray,
    segment_map: np.ndarray,
    weights: dict[int, float],
    model: Predictor,
    label: int,
    seed: int,
) -> tuple[float, float, float]:
    """Probability, its drop with the supporting superpixels hidden, and with random ones."""
    supporting = [s for s, w in sorted(weights.items(), key=lambda kv: -kv[1]) if w > 0]
    all_segments = np.unique(segment_map)
    k = max(1, min(len(supporting), len(all_segments) // 4))
    rng = np.random.default_rng(seed)
    batch = [image, _hide(image, segment_map, supporting[:k])]
    batch += [
        _hide(image, segment_map, list(rng.choice(all_segments, size=k, replace=False)))
        for _ in range(RANDOM_TRIALS)
    ]
    probs = np.asarray(model.predict(np.stack(batch)), dtype=np.float64)[:, label]
    base = float(probs[0])
    return base, base - float(probs[1]), base - float(probs[2:].mean())


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
