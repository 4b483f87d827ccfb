"""Exporting a trained network for inference: LiteRT conversion and calibration on it.

Scanning, reports and explanations classify through the ``.tflite`` file this writes, so
they never start TensorFlow. The calibration (mirrored-face averaging, per-class logit
offsets, temperature) is fitted on the exported network's own logits, on the validation
split, and written to the metadata both model files share: what is measured is what runs.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from photosort.datasets import load_data
from photosort.defaults import DEFAULT_BALANCE, QUANTIZE_MODES
from photosort.emotions import (
    EMOTIONS,
    import_tensorflow,
    load_model,
    metadata_path,
    model_id_of,
    preprocess_faces,
    read_metadata,
)
from photosort.errors import PhotosortError
from photosort.metrics import classification_report, fit_temperature
from photosort.native import quiet_stderr
from photosort.training import validation_split, write_atomically, write_json

REPRESENTATIVE_FACES = 500
"""Training faces that set int8's activation ranges: a fixed, evenly spaced sample."""


def balance_weights(labels: np.ndarray, k: int, power: float = DEFAULT_BALANCE) -> np.ndarray:
    """Each face's weight ``(mean count / its class's count) ** power``: rare classes count more."""
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    weight = np.where(counts > 0, counts.mean() / np.maximum(counts, 1), 0.0) ** power
    return weight[labels]


def fit_offsets(
    logits: np.ndarray, labels: np.ndarray, power: float = DEFAULT_BALANCE, steps: int = 400
) -> np.ndarray:
    """Per-class logit offsets minimising class-weighted cross-entropy on labelled logits.

    Each face weighs ``(mean count / its class's count) ** power``: 0 refits the prior to
    the labels' own class frequencies, 1 asks every class to count alike, so that neutral
    stops absorbing angry, fear and sad. Gradient descent on a convex loss; zero-mean result.
    """
    k = logits.shape[1]
    w = balance_weights(labels, k, power)
    onehot = np.eye(k)[labels]
    offsets = np.zeros(k)
    for _ in range(steps):
        z = logits + offsets
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        offsets -= 0.5 * k * ((p - onehot) * w[:, None]).sum(axis=0) / w.sum()
    return offsets - offsets.mean()


def calibrate(
    logits: np.ndarray, labels: np.ndarray, balance: float | None = DEFAULT_BALANCE
) -> tuple[np.ndarray | None, float]:
    """Class offsets (None when ``balance`` is None), then the temperature on the moved logits.

    One order for export and for the benchmarks that refit a network's calibration, so
    that what they measure is what ``export`` would ship.
    """
    offsets = None if balance is None else fit_offsets(logits, labels, balance)
    moved = logits if offsets is None else logits + offsets
    return offsets, fit_temperature(moved, labels)


def convert_litert(keras_model: Any, quantize: str, representative: np.ndarray) -> bytes:
    """The network as a LiteRT flatbuffer (frozen graph; int8 calibrated on ``representative``)."""
    if quantize not in QUANTIZE_MODES:
        raise PhotosortError(f"unknown quantisation {quantize!r}; choose from {QUANTIZE_MODES}")
    tf = import_tensorflow("photosort export")
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    size = int(keras_model.input_shape[1])
    spec = tf.TensorSpec([None, size, size, 1], tf.float32)
    forward = tf.function(lambda x: keras_model(x, training=False), input_signature=[spec])
    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    if quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([face[None]] for face in representative)
    with quiet_stderr(), warnings.catch_warnings():
        # "Statistics for quantized inputs were expected": the input stays float on purpose.
        warnings.simplefilter("ignore", UserWarning)
        return converter.convert()


def export_model(
    model_path: str | os.PathLike[str],
    data_path: str | os.PathLike[str],
    *,
    votes: str | os.PathLike[str] | None = None,
    quantize: str = QUANTIZE_MODES[0],
    tta: bool = True,
    balance: float | None = DEFAULT_BALANCE,
) -> dict[str, Any]:
    """Write ``MODEL.tflite`` beside a ``.keras`` model and calibrate it on validation data.

    The validation split is the one training used (PublicTest, or the seeded share of a
    folder). Offsets (``balance``: see :func:`fit_offsets`; None for none) and the
    temperature are fitted on the original labels. Returns the updated metadata.
    """
    model_path = Path(model_path)
    keras = load_model(model_path)
    meta = read_metadata(model_path)
    if keras.keras_model is None:
        raise PhotosortError(f"{model_path}: export takes the .keras model, not a LiteRT file")
    data = load_data(data_path, votes)
    seed = int(meta.get("training", {}).get("seed", 1))
    train_data, val_data, val_name = validation_split(data, seed)
    step = max(1, len(train_data) // REPRESENTATIVE_FACES)
    representative = preprocess_faces(train_data.faces[::step][:REPRESENTATIVE_FACES])
    flatbuffer = convert_litert(keras.keras_model, quantize, representative)
    target = model_path.with_suffix(".tflite")
    write_atomically(target, lambda p: p.write_bytes(flatbuffer))
    runtime = load_model(target)
    x_val = preprocess_faces(val_data.faces, runtime.input_size)
    logits = runtime.network_logits(x_val, tta)
    offsets, temperature = calibrate(logits, val_data.labels, balance)
    if offsets is not None:
        logits = logits + offsets
    report = classification_report(
        logits, val_data.labels, temperature, val_data.votes, val_data.ferplus_labels
    )
    meta.update(
        {
            "temperature": temperature,
            "tta": tta,
            "logit_offsets": None if offsets is None else [round(float(v), 4) for v in offsets],
        }
    )
    meta["litert"] = {
        "file": target.name,
        "quantize": quantize,
        "representative_faces": len(representative),
        "balance": balance,
        "figures": {
            "validation": val_name,
            **{k: report[k] for k in ("n", "accuracy", "ferplus_accuracy", "ece") if k in report},
            "recall": {name: report["per_class"][name]["recall"] for name in EMOTIONS},
        },
    }
    write_json(metadata_path(model_path), meta)
    meta["litert"]["model_id"] = model_id_of(target)
    meta["model_id"] = model_id_of(model_path)
    write_json(metadata_path(model_path), meta)
    return meta
