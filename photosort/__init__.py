"""photosort: sort a personal photo library by the emotions on people's faces."""

from __future__ import annotations

__version__ = "0.1.0"
