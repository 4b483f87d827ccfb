"""Data flows one way: lower stages never import higher ones; only the CLI knows them all."""

from __future__ import annotations

import ast
from pathlib import Path

import photosort

# Lowest first. A module may import only modules of a lower or equal rank.
LAYERS = [
    {"errors", "defaults", "resources", "native"},
    {"images"},
    {"scanning", "cluster"},
    {"landmarks"},
    {"faces"},
    {"emotions"},
    {"datasets", "network", "explaining"},
    {"metrics"},
    {"training"},
    {"exporting", "evaluating", "plotting"},
    {"store"},
    {"indexing", "sample"},
    {"ranking"},
    {"reporting"},
    {"cli", "__main__"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
PACKAGE = Path(photosort.__file__).parent


def imported_stages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("photosort"):
            parts = node.module.split(".")
            if len(parts) > 1:
                found.add(parts[1])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("photosort."):
                    found.add(alias.name.split(".")[1])
    return found - {"__version__"}


def test_every_module_has_a_layer() -> None:
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules <= set(RANK), modules - set(RANK)


def test_no_module_imports_a_higher_stage() -> None:
    for path in PACKAGE.glob("*.py"):
        if path.stem == "__init__":
            continue
        for stage in imported_stages(path):
            assert RANK[stage] <= RANK[path.stem], f"{path.stem} imports higher stage {stage}"
