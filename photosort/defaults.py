"""Defaults shared by the stages and the command line, light enough to import for ``--help``."""

from __future__ import annotations

MAX_MEGAPIXELS = 200.0
"""Larger than any camera sensor sold today, far below what a decompression bomb declares."""
