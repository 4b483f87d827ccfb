"""The base of every error photosort reports to users as one line.

Each stage raises its own subclass with a message fit to show as is; the command line turns
any of them into a clean error and a non-zero exit. This module stays import-free so that
``photosort --help`` does not pay for the stages.
"""

from __future__ import annotations


class PhotosortError(Exception):
    """A problem with the user's input or environment, explained in one line."""
