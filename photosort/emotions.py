"""Emotion recognition on face crops: the labels, the shared preprocessing and the predictor.

Training and inference both go through :func:`preprocess_faces`, so a face is turned into
model input the same way in both paths. TensorFlow is imported only when a model is loaded:
importing this module (and ``photosort --help``) stays fast.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from photosort.defaults import EMOTIONS
from photosort.errors import PhotosortError, first_line
from photosort.native import quiet_stderr

__all__ = ["EMOTIONS", "EmotionModel", "ModelError", "load_model", "preprocess_faces"]

INPUT_SIZE = 48
BATCH_SIZE = 256
MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = MODELS_DIR / "emotion.keras"

Faces = np.ndarray | Sequence[np.ndarray]
"""An ``(N, H, W)`` uint8 array, or a list of ``(H, W)`` (or ``(H, W, 3)``) crops of any size."""


class ModelError(PhotosortError):
    """An emotion model that is missing, unreadable or not shaped like one."""


def import_tensorflow() -> Any:
    """Import TensorFlow without its start-up log noise; callers import it only when needed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
    # Some C++ start-up messages ignore TF_CPP_MIN_LOG_LEVEL; hide stderr while importing.
    with quiet_stderr():
        import tensorflow as tf
    tf.get_logger().setLevel("ERROR")
    return tf


def _to_grey(face: np.ndarray) -> np.ndarray:
    face = np.asarray(face)
    if face.ndim == 3 and face.shape[2] in (3, 4):
        rgb = face[..., :3].astype(np.float32)
        face = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    elif face.ndim == 3 and face.shape[2] == 1:
        face = face[..., 0]
    if face.ndim != 2 or face.size == 0:
        raise ValueError(f"a face crop must be a non-empty (H, W) array, got shape {face.shape}")
    if face.dtype != np.uint8:
        face = np.clip(np.rint(face), 0, 255).astype(np.uint8)
    return face


def resize_face(crop: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """A grey uint8 crop at the model's input size, resized exactly as the model's input is."""
    if crop.shape == (size, size):
        return crop
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BILINEAR))


def preprocess_faces(faces: Faces, size: int = INPUT_SIZE) -> np.ndarray:
    """Turn grey (or RGB) face crops into model input ``(N, size, size, 1)`` float32.

    Converts to grey, resizes to ``size`` x ``size`` with Pillow's antialiased bilinear filter,
    then standardises each face to zero mean and unit variance: the model sees contrast, not
    exposure, so a dark phone photo and a bright studio one look alike to it.
    """
    single = isinstance(faces, np.ndarray) and (
        faces.ndim == 2 or faces.ndim == 3 and faces.shape[2] <= 4
    )
    if single:
        # One crop where a batch belongs: iterating would take its rows for faces and
        # return one "probability" per row.
        raise ValueError(
            f"faces must be a batch (N, H, W) or a list of crops; got one image of shape "
            f"{faces.shape}: pass [crop] instead"
        )
    if isinstance(faces, np.ndarray) and faces.ndim == 3 and faces.shape[1:] == (size, size):
        grey = faces if faces.dtype == np.uint8 else np.stack([_to_grey(f) for f in faces])
    else:
        crops = [_to_grey(f) for f in faces]
        grey = np.empty((len(crops), size, size), np.uint8)
        for i, crop in enumerate(crops):
            grey[i] = resize_face(crop, size)
    x = grey.astype(np.float32)
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = np.maximum(x.std(axis=(1, 2), keepdims=True), 1.0)
    return ((x - mean) / std)[..., None]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` in float32, rows summing to 1."""
    z = np.asarray(logits, np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def metadata_path(model_path: str | os.PathLike[str]) -> Path:
    """The JSON metadata that travels beside a ``.keras`` model file."""
    return Path(model_path).with_suffix(".json")


def compute_model_id(model_path: str | os.PathLike[str], temperature: float, tta: bool) -> str:
    """A short hash of the weights and of everything that changes the output probabilities."""
    digest = hashlib.sha256(Path(model_path).read_bytes())
    digest.update(json.dumps({"temperature": round(temperature, 6), "tta": tta}).encode())
    return digest.hexdigest()[:16]


class EmotionModel:
    """A loaded emotion model: calibrated probabilities for batches of face crops."""

    def __init__(self, keras_model: Any, metadata: dict[str, Any], path: Path | None) -> None:
        self.keras_model = keras_model
        self.metadata = metadata
        self.path = path
        self.input_size = int(keras_model.input_shape[1])
        self.temperature, self.tta = calibration(metadata)
        self.model_id = compute_model_id(path, self.temperature, self.tta) if path else None
        self._forward = None

    def logits(self, faces: Faces, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Uncalibrated logits ``(N, 7)``; averaged with the mirrored face when ``tta`` is on."""
        x = preprocess_faces(faces, self.input_size)
        return self.logits_from_input(x, batch_size)

    def logits_from_input(self, x: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Logits for input already made by :func:`preprocess_faces`, in batches."""
        if self._forward is None:
            tf = import_tensorflow()
            model, tta = self.keras_model, self.tta
            spec = tf.TensorSpec([None, self.input_size, self.input_size, 1], tf.float32)

            @tf.function(input_signature=[spec])
            def forward(batch: Any) -> Any:
                out = model(batch, training=False)
                if tta:
                    out = (out + model(tf.reverse(batch, axis=[2]), training=False)) / 2
                return out

            self._forward = forward
        out = np.empty((len(x), len(EMOTIONS)), np.float32)
        for start in range(0, len(x), batch_size):
            out[start : start + batch_size] = self._forward(x[start : start + batch_size]).numpy()
        return out

    def predict(self, faces: Faces, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Calibrated probabilities ``(N, 7)`` float32 in :data:`EMOTIONS` order."""
        return softmax(self.logits(faces, batch_size), self.temperature)


def read_metadata(model_path: Path) -> dict[str, Any]:
    """The model's metadata, or an empty dict for a bare checkpoint without one."""
    meta_file = metadata_path(model_path)
    if not meta_file.exists():
        return {}
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{meta_file}: unreadable model metadata: {exc}") from exc
    if not isinstance(meta, dict):
        raise ModelError(f"{meta_file}: model metadata must be a JSON object")
    temperature = meta.get("temperature", 1.0)
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ModelError(f"{meta_file}: temperature must be a number, got {temperature!r}")
    if not 0 < temperature < float("inf"):
        # A temperature of 0 divides by zero; a negative one would reverse every ranking.
        raise ModelError(f"{meta_file}: temperature must be positive, got {temperature!r}")
    size = meta.get("input_size", INPUT_SIZE)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ModelError(f"{meta_file}: input_size must be a positive integer, got {size!r}")
    return meta


def resolve_model_path(path: str | os.PathLike[str] | None = None) -> Path:
    """The model file to use (None: the shipped one), or a clear error if it is missing."""
    if path is None:
        if not DEFAULT_MODEL.exists():
            raise ModelError(
                f"no shipped emotion model at {DEFAULT_MODEL}; train one with `photosort train`"
                " and pass it with --model"
            )
        return DEFAULT_MODEL
    model_path = Path(path)
    if not model_path.is_file():
        raise ModelError(f"{model_path}: model file not found")
    return model_path


def model_id_of(path: str | os.PathLike[str] | None = None) -> str:
    """The model's identity from its file and metadata, without starting TensorFlow.

    A rescan with nothing new asks only this, to see whether stored faces need the model.
    """
    model_path = resolve_model_path(path)
    temperature, tta = calibration(read_metadata(model_path))
    return compute_model_id(model_path, temperature, tta)


def calibration(metadata: dict[str, Any]) -> tuple[float, bool]:
    """The temperature and test-time flip averaging a model's metadata asks for."""
    return float(metadata.get("temperature", 1.0)), bool(metadata.get("tta", False))


def load_model(path: str | os.PathLike[str] | None = None) -> EmotionModel:
    """Load an emotion model (default: the one shipped with photosort) and check its shape."""
    model_path = resolve_model_path(path)
    meta = read_metadata(model_path)
    import_tensorflow()
    import keras

    try:
        model = keras.models.load_model(model_path, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        raise ModelError(f"{model_path}: not a loadable Keras model: {first_line(exc)}") from exc
    in_shape = tuple(model.input_shape) if not isinstance(model.input_shape, list) else None
    out_shape = tuple(model.output_shape) if not isinstance(model.output_shape, list) else None
    size = int(meta.get("input_size", in_shape[1] if in_shape and len(in_shape) == 4 else 0))
    if in_shape != (None, size, size, 1) or out_shape != (None, len(EMOTIONS)):
        raise ModelError(
            f"{model_path}: wrong model shape: expected input (None, {size}, {size}, 1) and "
            f"output (None, {len(EMOTIONS)}), got {model.input_shape} -> {model.output_shape}"
        )
    return EmotionModel(model, meta, model_path)
