"""The emotion network and its training-time augmentations (TensorFlow, imported on use)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from photosort.emotions import EMOTIONS, INPUT_SIZE, import_tensorflow

WIDTHS = (32, 64, 128, 256)


def build_model(input_size: int = INPUT_SIZE, widths: tuple[int, ...] = WIDTHS) -> Any:
    """A small VGG-style network, designed for CPU speed (see MODEL_CARD.md).

    One full-resolution convolution, then a strided one: most of the compute of a plain VGG
    is spent at 48x48, where a face has little more to tell than at 24x24. Outputs logits,
    so that calibration can rescale them.
    """
    import_tensorflow()
    import keras
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


def _warp(tf: Any, gen: Any, x: Any, turn: float, zoom: float, shift: float) -> Any:
    """Rotate (radians), scale and shift each face by a random amount within the ranges."""
    n, size = tf.shape(x)[0], x.shape[1]
    angle = gen.uniform([n], -turn, turn)
    scale = gen.uniform([n], 1 - zoom, 1 + zoom)
    tx, ty = (gen.uniform([n], -shift, shift) * size for _ in range(2))
    c = (size - 1) / 2
    a0, a1 = tf.cos(angle) / scale, tf.sin(angle) / scale
    b0, b1 = -a1, a0
    a2 = c - a0 * (c + tx) - a1 * (c + ty)
    b2 = c - b0 * (c + tx) - b1 * (c + ty)
    zeros = tf.zeros_like(a0)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x,
        transforms=tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1),
        output_shape=[size, size],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )


def _erase(tf: Any, gen: Any, x: Any) -> Any:
    """Blank a random rectangle in half of the faces: no single region may decide alone."""
    n, size = tf.shape(x)[0], x.shape[1]
    side = gen.uniform([n, 2], 0.15, 0.4) * size
    corner = gen.uniform([n, 2]) * (size - side)
    grid = tf.range(size, dtype=tf.float32)
    rows = (grid[None] >= corner[:, :1]) & (grid[None] < corner[:, :1] + side[:, :1])
    cols = (grid[None] >= corner[:, 1:]) & (grid[None] < corner[:, 1:] + side[:, 1:])
    erase = (rows[:, :, None] & cols[:, None, :]) & (gen.uniform([n, 1, 1]) < 0.5)
    return tf.where(erase[..., None], tf.zeros_like(x), x)


def _photographic(tf: Any, gen: Any, x: Any) -> Any:
    """Make FER faces look like faces cut from photos: light curves, softness, low resolution.

    Works on standardised input: each face is stretched to [0, 1], given a random gamma;
    a third are blurred, and a third shrunk (to 50-100% of the side, as a small face in a photo
    is) and enlarged back; then each face is standardised again as preprocessing does.
    """
    n, size = tf.shape(x)[0], x.shape[1]
    lo = tf.reduce_min(x, axis=[1, 2, 3], keepdims=True)
    hi = tf.reduce_max(x, axis=[1, 2, 3], keepdims=True)
    x = (x - lo) / tf.maximum(hi - lo, 1e-6)
    x = tf.pow(x, tf.exp(gen.uniform([n, 1, 1, 1], -0.4, 0.4)))
    sigma = gen.uniform([], 0.4, 1.0)
    taps = tf.exp(-(tf.range(-2.0, 3.0) ** 2) / (2 * sigma**2))
    taps /= tf.reduce_sum(taps)
    kernel = (taps[:, None] * taps[None, :])[:, :, None, None]
    blurred = tf.nn.conv2d(
        tf.pad(x, [[0, 0], [2, 2], [2, 2], [0, 0]], "SYMMETRIC"), kernel, 1, "VALID"
    )
    x = tf.where(gen.uniform([n, 1, 1, 1]) < 0.3, blurred, x)
    small = tf.cast(tf.round(gen.uniform([], 0.5, 1.0) * size), tf.int32)
    shrunk = tf.image.resize(tf.image.resize(x, [small, small], antialias=True), [size, size])
    x = tf.where(gen.uniform([n, 1, 1, 1]) < 0.3, shrunk, x)
    mean, var = tf.nn.moments(x, axes=[1, 2, 3], keepdims=True)
    return (x - mean) / tf.maximum(tf.sqrt(var), 1.0 / 255)


def augmenter(tf: Any, seed: int, mode: str = "full") -> Callable[..., Any]:
    """A batched augmentation: mirror, then (``full``) rotate, scale, shift and erase a patch.

    ``flip`` (mirror only) suits a short fine-tune at the end: the heavy distortions that
    keep a long run from overfitting also keep a small network from fitting real faces.
    ``photo`` mirrors, jitters the frame as the detector's landmarks do (a few degrees and
    per cent) and degrades the face as a photo crop is degraded (:func:`_photographic`).
    """
    gen = tf.random.Generator.from_seed(seed)

    def augment(x: Any, y: Any, w: Any) -> tuple[Any, Any, Any]:
        if mode == "none":
            return x, y, w
        n = tf.shape(x)[0]
        x = tf.where(gen.uniform([n, 1, 1, 1]) < 0.5, tf.reverse(x, axis=[2]), x)
        if mode == "flip":
            return x, y, w
        if mode == "photo":
            return _photographic(tf, gen, _warp(tf, gen, x, 0.1, 0.06, 0.04)), y, w
        return _erase(tf, gen, _warp(tf, gen, x, 0.2, 0.1, 0.1)), y, w

    return augment
