"""The emotion network (Keras, imported on use) and its training-time augmentations."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from photosort.defaults import WIDTHS
from photosort.emotions import EMOTIONS, INPUT_SIZE, import_keras


def build_model(input_size: int = INPUT_SIZE, widths: tuple[int, ...] = WIDTHS) -> Any:
    """A small VGG-style network, designed for CPU speed (see MODEL_CARD.md).

    One full-resolution convolution, then a strided one: most of the compute of a plain VGG
    is spent at 48x48, where a face has little more to tell than at 24x24. Outputs logits,
    so that calibration can rescale them.
    """
    keras = import_keras()
    from keras import layers

    def conv(x: Any, filters: int, strides: int = 1) -> Any:
        x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x)

    inputs = keras.Input((input_size, input_size, 1), name="face")
    x = conv(inputs, widths[0])
    x = conv(x, widths[1], strides=2)
    x = conv(x, widths[1])
    for filters in widths[2:]:
        x = layers.MaxPooling2D()(x)
        x = conv(x, filters)
        x = conv(x, filters)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.4)(x)
    outputs = layers.Dense(len(EMOTIONS), name="logits", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="photosort_emotion")


def widen(
    weights: list[np.ndarray], shapes: list[tuple[int, ...]], rng: np.random.Generator
) -> list[np.ndarray] | None:
    """A narrower network's weights spread over a wider one that computes the same function.

    Net2WiderNet (Chen et al. 2016): each new channel copies a random old one (its kernel and
    batch-norm statistics), and the layer after divides each copy's incoming weight by the
    number of copies, so sums are unchanged. A little noise on the copies lets them part.
    The wider network starts where the narrower one ended and needs epochs, not a fresh run
    of hours, to use its capacity. None when ``weights`` are not a narrower network of the
    same stages: a different number of layers, or a layer that is not wider or equal.
    """
    if len(weights) != len(shapes) or any(
        w.ndim != len(s) or any(a > b for a, b in zip(w.shape, s, strict=True))
        for w, s in zip(weights, shapes, strict=True)
    ):
        return None
    out: list[np.ndarray] = []
    source: np.ndarray | None = None  # the old channel each current channel copies
    for w, shape in zip(weights, shapes, strict=True):
        if w.ndim in (2, 4):  # a convolution kernel (h, w, in, out) or the dense layer (in, out)
            if w.shape[:-2] != shape[:-2]:
                return None
            into = source if source is not None else np.arange(w.shape[-2])
            if len(into) != shape[-2]:
                return None
            copies = np.bincount(into, minlength=w.shape[-2])[into].astype(w.dtype)
            w = np.take(w, into, axis=-2) / copies[:, None]
            grown = shape[-1] - w.shape[-1]
            source = np.concatenate([np.arange(w.shape[-1]), rng.integers(0, w.shape[-1], grown)])
            w = np.take(w, source, axis=-1)
            if grown:
                noise = rng.normal(0, 0.01 * float(w.std()), w[..., -grown:].shape)
                w[..., -grown:] += noise.astype(w.dtype)
        elif w.shape != shape:  # a batch-norm vector of the layer just widened
            if source is None or len(source) != shape[0]:
                return None
            w = w[source]
        out.append(np.ascontiguousarray(w))
    return out


def _warp(rng: np.random.Generator, x: np.ndarray, turn: float, zoom: float, shift: float):
    """Rotate (radians), scale and shift each face by a random amount within the ranges;
    the border is mirrored, so no black corner tells the network a face was turned."""
    n, size = len(x), x.shape[1]
    angle = rng.uniform(-turn, turn, n)
    scale = rng.uniform(1 - zoom, 1 + zoom, n)
    moves = rng.uniform(-shift, shift, (n, 2)) * size
    c = (size - 1) / 2
    out = np.empty_like(x)
    for i in range(n):
        matrix = cv2.getRotationMatrix2D((c, c), float(np.degrees(angle[i])), float(scale[i]))
        matrix[:, 2] += moves[i]
        out[i, ..., 0] = cv2.warpAffine(
            x[i, ..., 0], matrix, (size, size),
            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT,
        )  # fmt: skip
    return out


def _erase(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Blank a random rectangle in half of the faces: no single region may decide alone."""
    n, size = len(x), x.shape[1]
    side = rng.uniform(0.15, 0.4, (n, 2)) * size
    corner = rng.uniform(0, 1, (n, 2)) * (size - side)
    grid = np.arange(size, dtype=np.float32)
    rows = (grid[None] >= corner[:, :1]) & (grid[None] < corner[:, :1] + side[:, :1])
    cols = (grid[None] >= corner[:, 1:]) & (grid[None] < corner[:, 1:] + side[:, 1:])
    erase = rows[:, :, None] & cols[:, None, :] & (rng.uniform(0, 1, (n, 1, 1)) < 0.5)
    return np.where(erase[..., None], np.float32(0), x)


def _photographic(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    """Make FER faces look like faces cut from photos: light curves, softness, low resolution.

    Works on standardised input: each face is stretched to [0, 1], given a random gamma;
    a third are blurred, and a third shrunk (to 50-100% of the side, as a small face in a photo
    is) and enlarged back; then each face is standardised again as preprocessing does.
    """
    n, size = len(x), x.shape[1]
    lo = x.min(axis=(1, 2, 3), keepdims=True)
    hi = x.max(axis=(1, 2, 3), keepdims=True)
    x = (x - lo) / np.maximum(hi - lo, 1e-6)
    x = x ** np.exp(rng.uniform(-0.4, 0.4, (n, 1, 1, 1))).astype(np.float32)
    sigma = float(rng.uniform(0.4, 1.0))
    small = int(round(rng.uniform(0.5, 1.0) * size))
    blur, shrink = rng.uniform(0, 1, (2, n)) < 0.3
    for i in range(n):
        face = x[i, ..., 0]
        if blur[i]:
            face = cv2.GaussianBlur(face, (5, 5), sigma, borderType=cv2.BORDER_REFLECT)
        if shrink[i]:
            face = cv2.resize(face, (small, small), interpolation=cv2.INTER_AREA)
            face = cv2.resize(face, (size, size), interpolation=cv2.INTER_LINEAR)
        x[i, ..., 0] = face
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    spread = np.maximum(x.std(axis=(1, 2, 3), keepdims=True), 1.0 / 255)
    return ((x - mean) / spread).astype(np.float32)


def augment(x: np.ndarray, rng: np.random.Generator, mode: str = "full") -> np.ndarray:
    """A batch ``(N, size, size, 1)`` augmented: mirror, then (``full``) rotate, scale,
    shift and erase a patch.

    ``flip`` (mirror only) suits a short fine-tune at the end: the heavy distortions that
    keep a long run from overfitting also keep a small network from fitting real faces.
    ``photo`` mirrors, jitters the frame as the detector's landmarks do (a few degrees and
    per cent) and degrades the face as a photo crop is degraded (:func:`_photographic`).
    NumPy and OpenCV on the CPU, so that training runs on any Keras backend.
    """
    if mode == "none":
        return x
    mirror = rng.uniform(0, 1, (len(x), 1, 1, 1)) < 0.5
    x = np.where(mirror, x[:, :, ::-1], x)
    if mode == "flip":
        return x
    if mode == "photo":
        return _photographic(rng, _warp(rng, x, 0.1, 0.06, 0.04))
    return _erase(rng, _warp(rng, x, 0.2, 0.1, 0.1))
