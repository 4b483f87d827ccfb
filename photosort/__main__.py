"""Allow ``python -m photosort``."""

from __future__ import annotations

from photosort.cli import main

if __name__ == "__main__":
    main()
