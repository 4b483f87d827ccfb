"""The base of every error photosort reports to users as one line.

Each stage raises its own subclass with a message fit to show as is; the command line turns
any of them into a clean error and a non-zero exit. This module stays import-free so that
``photosort --help`` does not pay for the stages.
"""

from __future__ import annotations


class PhotosortError(Exception):
    """A problem with the user's input or environment, explained in one line."""


def first_line(exc: BaseException) -> str:
    """The first line of an error's message, or its type when it has none.

    Libraries raise multi-line messages (Keras adds context, libpq adds hints); a user sees
    one line.
    """
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__


class DetectorError(PhotosortError):
    """A face model cannot run (its weights or runtime are missing)."""
