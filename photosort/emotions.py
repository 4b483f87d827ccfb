"""Emotion recognition on face crops: the labels, the shared preprocessing and the predictor.

Training and inference both go through :func:`preprocess_faces`, so a face is turned into
model input the same way in both paths. TensorFlow is imported only when a model is loaded:
importing this module (and ``photosort --help``) stays fast.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
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
DEFAULT_MODEL = MODELS_DIR / "emotion.tflite"
KERAS_MODEL = MODELS_DIR / "emotion.keras"
"""The shipped network's Keras weights: the start of a fine-tune (``train --init``)."""

Faces = np.ndarray | Sequence[np.ndarray]
"""An ``(N, H, W)`` uint8 array, or a list of ``(H, W)`` (or ``(H, W, 3)``) crops of any size."""


class ModelError(PhotosortError):
    """An emotion model that is missing, unreadable or not shaped like one."""


TENSORFLOW_MISSING = (
    "{what} needs TensorFlow, which is not installed: pip install 'photosort[train]'"
)
"""Training, export and ``.keras`` models need the ``train`` extra; the rest never does."""


KERAS_BACKEND_MISSING = (
    "{what} runs Keras on its {backend} backend (KERAS_BACKEND), "
    "but {missing} is not installed: pip install keras {backend}"
)


def keras_backend() -> str:
    """The backend Keras will run on: ``KERAS_BACKEND``, TensorFlow unless set.

    Training runs on JAX or PyTorch as well (a GPU machine may have one of them and not
    TensorFlow); export and ``.keras`` inference outside training stay on TensorFlow.
    """
    return os.environ.get("KERAS_BACKEND", "tensorflow")


def _missing(names: Sequence[str]) -> list[str]:
    from importlib.util import find_spec

    def missing(name: str) -> bool:
        try:
            return find_spec(name) is None
        except (ImportError, ValueError):  # a finder that refuses it, a broken install
            return True

    return [name for name in names if missing(name)]


def require_tensorflow(what: str) -> None:
    """Fail in one line, before any work starts, when the ``train`` extra is missing.

    Finding the packages imports nothing, so commands check this up front cheaply.
    """
    if _missing(("tensorflow", "keras", "absl")):
        raise PhotosortError(TENSORFLOW_MISSING.format(what=what))


def require_keras(what: str) -> None:
    """:func:`require_tensorflow`, or for another backend, Keras and that backend."""
    backend = keras_backend()
    if backend == "tensorflow":
        require_tensorflow(what)
        return
    missing = _missing(("keras", backend))
    if missing:
        raise PhotosortError(
            KERAS_BACKEND_MISSING.format(what=what, backend=backend, missing=" and ".join(missing))
        )


def import_keras(what: str = "a Keras model") -> Any:
    """Keras on the backend :func:`keras_backend` names; TensorFlow's quietly."""
    if keras_backend() == "tensorflow":
        import_tensorflow(what)
    else:
        require_keras(what)
    import keras

    return keras


def import_tensorflow(what: str = "a Keras model") -> Any:
    """Import TensorFlow without its start-up log noise; callers import it only when needed.

    Without the ``train`` extra this raises a one-line error saying how to get it.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    require_tensorflow(what)
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
    """The JSON metadata beside a model file, shared by its ``.keras`` and ``.tflite`` forms."""
    return Path(model_path).with_suffix(".json")


def compute_model_id(
    model_path: str | os.PathLike[str],
    temperature: float,
    tta: bool,
    offsets: Sequence[float] | None = None,
) -> str:
    """A short hash of the weights and of everything that changes the output probabilities."""
    digest = hashlib.sha256(Path(model_path).read_bytes())
    settings: dict[str, Any] = {"temperature": round(temperature, 6), "tta": tta}
    if offsets is not None:
        settings["offsets"] = [round(float(v), 6) for v in offsets]
    digest.update(json.dumps(settings).encode())
    return digest.hexdigest()[:16]


Forward = Callable[[np.ndarray], np.ndarray]
"""The network itself: model input ``(N, size, size, 1)`` to raw logits ``(N, 7)``."""


class EmotionModel:
    """A loaded emotion model: calibrated probabilities for batches of face crops.

    The network runs through LiteRT (a ``.tflite`` file: no TensorFlow import) or Keras;
    both get the same calibration from the metadata: mirrored-face averaging (``tta``),
    per-class logit offsets (``logit_offsets``) and the temperature.
    """

    def __init__(
        self,
        forward: Forward,
        metadata: dict[str, Any],
        path: Path | None,
        input_size: int,
        keras_model: Any = None,
    ) -> None:
        self._forward = forward
        self.keras_model = keras_model
        self.metadata = metadata
        self.path = path
        self.input_size = input_size
        self.temperature, self.tta, self.offsets = calibration(metadata)
        self.model_id = (
            compute_model_id(path, self.temperature, self.tta, self.offsets) if path else None
        )

    @property
    def backend(self) -> str:
        return "keras" if self.keras_model is not None else "litert"

    def logits(self, faces: Faces, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Calibration-ready logits ``(N, 7)``: mirrored and offset as the metadata says."""
        x = preprocess_faces(faces, self.input_size)
        return self.logits_from_input(x, batch_size)

    def raw_logits(self, x: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """The network's own logits for model input, in batches, without any calibration."""
        out = np.empty((len(x), len(EMOTIONS)), np.float32)
        for start in range(0, len(x), batch_size):
            out[start : start + batch_size] = self._forward(x[start : start + batch_size])
        return out

    def network_logits(self, x: np.ndarray, tta: bool, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """The network's logits, averaged with the mirrored faces' when ``tta``; no offsets."""
        out = self.raw_logits(x, batch_size)
        if tta:
            out = (out + self.raw_logits(np.ascontiguousarray(x[:, :, ::-1]), batch_size)) / 2
        return out

    def logits_from_input(self, x: np.ndarray, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Logits for input already made by :func:`preprocess_faces`, in batches."""
        out = self.network_logits(x, self.tta, batch_size)
        if self.offsets is not None:
            out = out + np.asarray(self.offsets, np.float32)
        return out

    def predict(self, faces: Faces, batch_size: int = BATCH_SIZE) -> np.ndarray:
        """Calibrated probabilities ``(N, 7)`` float32 in :data:`EMOTIONS` order."""
        return softmax(self.logits(faces, batch_size), self.temperature)


def _keras_forward(model: Any, input_size: int) -> Forward:
    """The network's forward pass: one traced TensorFlow graph for every batch size, or
    Keras's own compiled step on another backend."""
    keras = import_keras()
    if keras_backend() != "tensorflow":
        return lambda x: keras.ops.convert_to_numpy(model.predict_on_batch(x))
    tf = import_tensorflow()
    spec = tf.TensorSpec([None, input_size, input_size, 1], tf.float32)
    run = tf.function(lambda batch: model(batch, training=False), input_signature=[spec])
    return lambda x: run(x).numpy()


class _LiteRT:
    """A LiteRT interpreter resized to each batch: it serves one thread only."""

    def __init__(self, path: Path, threads: int) -> None:
        with quiet_stderr():
            from ai_edge_litert.interpreter import Interpreter

            self.interpreter = Interpreter(model_path=str(path), num_threads=threads)
        details = self.interpreter.get_input_details()[0]
        # Plain ints: numpy's would show as np.int32(128) in messages.
        self.input, self.shape = details["index"], tuple(int(v) for v in details["shape"])
        self.output = self.interpreter.get_output_details()[0]["index"]
        self.batch = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if len(x) != self.batch:
            self.interpreter.resize_tensor_input(self.input, [len(x), *self.shape[1:]])
            with quiet_stderr():
                self.interpreter.allocate_tensors()
            self.batch = len(x)
        self.interpreter.set_tensor(self.input, np.ascontiguousarray(x, np.float32))
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output).copy()


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
    offsets = meta.get("logit_offsets")
    if offsets is not None and (
        not isinstance(offsets, list)
        or len(offsets) != len(EMOTIONS)
        or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in offsets
        )
    ):
        raise ModelError(
            f"{meta_file}: logit_offsets must be {len(EMOTIONS)} finite numbers, got {offsets!r}"
        )
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
    return compute_model_id(model_path, *calibration(read_metadata(model_path)))


def calibration(metadata: dict[str, Any]) -> tuple[float, bool, list[float] | None]:
    """The temperature, test-time flip averaging and class offsets the metadata asks for."""
    offsets = metadata.get("logit_offsets")
    return (
        float(metadata.get("temperature", 1.0)),
        bool(metadata.get("tta", False)),
        None if offsets is None else [float(v) for v in offsets],
    )


def load_model(
    path: str | os.PathLike[str] | None = None, *, threads: int | None = None
) -> EmotionModel:
    """Load an emotion model (default: the shipped LiteRT one) and check its shape.

    A ``.tflite`` file runs through LiteRT and never imports TensorFlow; anything else is
    loaded as a Keras model (training and ``evaluate --model x.keras`` use that path).
    """
    model_path = resolve_model_path(path)
    meta = read_metadata(model_path)
    if model_path.suffix == ".tflite":
        return _load_litert(model_path, meta, threads or min(2, os.cpu_count() or 1))
    keras = import_keras()

    try:
        model = keras.models.load_model(model_path, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        raise ModelError(f"{model_path}: not a loadable Keras model: {first_line(exc)}") from exc
    in_shape = tuple(model.input_shape) if not isinstance(model.input_shape, list) else None
    out_shape = tuple(model.output_shape) if not isinstance(model.output_shape, list) else None
    size = int(meta.get("input_size", in_shape[1] if in_shape and len(in_shape) == 4 else 0))
    _check_shape(model_path, size, in_shape, out_shape)
    return keras_emotion_model(model, meta, model_path)


def keras_emotion_model(
    keras_model: Any, metadata: dict[str, Any] | None = None, path: Path | None = None
) -> EmotionModel:
    """An :class:`EmotionModel` around a Keras network in memory (training's own)."""
    size = int(keras_model.input_shape[1])
    forward = _keras_forward(keras_model, size)
    return EmotionModel(forward, metadata or {}, path, size, keras_model)


def _check_shape(path: Path, size: int, in_shape: Any, out_shape: Any) -> None:
    if in_shape != (None, size, size, 1) or out_shape != (None, len(EMOTIONS)):
        raise ModelError(
            f"{path}: wrong model shape: expected input (None, {size}, {size}, 1) and "
            f"output (None, {len(EMOTIONS)}), got {in_shape} -> {out_shape}"
        )


def _load_litert(model_path: Path, meta: dict[str, Any], threads: int) -> EmotionModel:
    try:
        forward = _LiteRT(model_path, threads)
        out_shape = tuple(int(v) for v in forward.interpreter.get_output_details()[0]["shape"])
    except Exception as exc:  # noqa: BLE001 - the runtime raises ValueError/RuntimeError
        raise ModelError(f"{model_path}: not a loadable LiteRT model: {first_line(exc)}") from exc
    size = int(meta.get("input_size", forward.shape[1] if len(forward.shape) == 4 else 0))
    in_shape = (None, *forward.shape[1:])
    _check_shape(model_path, size, in_shape, (None, *out_shape[1:]))
    return EmotionModel(forward, meta, model_path, size)
