"""Where the Alembic migrations and Jinja2 templates live, installed or in a checkout.

A built wheel carries the top-level ``migrations/`` and ``templates/`` folders inside the
package (as ``_migrations`` and ``_templates``); a source checkout has them beside it.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """Return the folder ``migrations`` or ``templates``, wherever this install keeps it."""
    for candidate in (_PACKAGE / f"_{name}", _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"photosort is installed without its {name} folder")
