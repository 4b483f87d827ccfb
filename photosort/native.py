"""Quieting libraries: native ones' C++ start-up chatter, which ignores Python's logging, and
Python ones whose logging floods stderr with what photosort reports in one line."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator


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
