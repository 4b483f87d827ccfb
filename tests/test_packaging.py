"""A built wheel carries the migrations and templates, so `pip install .` gives a working tool."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def build_wheel(out: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return next(out.glob("photosort-*.whl"))


def test_wheel_carries_migrations_and_templates(tmp_path: Path) -> None:
    names = set(zipfile.ZipFile(build_wheel(tmp_path)).namelist())
    expected = {
        f"photosort/_migrations/{p.relative_to(ROOT / 'migrations')}"
        for p in (ROOT / "migrations").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    } | {
        f"photosort/_templates/{p.relative_to(ROOT / 'templates')}"
        for p in (ROOT / "templates").rglob("*")
        if p.is_file()
    }
    assert "photosort/_migrations/versions/0001_photos_and_scans.py" in expected
    assert expected <= names, expected - names
    assert "photosort/cli.py" in names
    models = ("emotion.tflite", "emotion.keras", "emotion.json")
    assert {f"photosort/models/{name}" for name in models} <= names


@pytest.mark.slow
def test_installed_wheel_works_in_a_fresh_venv(tmp_path: Path) -> None:
    """Install the wheel alone into a new venv (dependencies borrowed from this one)."""
    wheel = build_wheel(tmp_path / "dist")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run(
        [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(purelib, "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    env.pop("PHOTOSORT_DB", None)
    demo = subprocess.run(
        [venv / "bin" / "photosort", "demo", "d"], cwd=work, env=env, capture_output=True, text=True
    )
    assert demo.returncode == 0, demo.stderr
    assert "7 new" in demo.stdout
    located = subprocess.run(
        [py, "-c", "from photosort.resources import resource_dir as r; print(r('migrations'))"],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "site-packages/photosort/_migrations" in located
    # The bar, from the wheel: kill -9 of a two-worker scan, a killed worker, and
    # prune and relocate racing a scan.
    faults = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_faults.py"]
        + ["-k", "SIGKILL-2 or worker or racing"],
        cwd=ROOT,
        env={**env, "PHOTOSORT_TEST_PYTHON": str(py)},
        capture_output=True,
        text=True,
    )
    assert faults.returncode == 0, faults.stdout[-3000:]


def test_every_library_the_package_imports_is_declared() -> None:
    """A library that only arrives as another one's dependency may vanish in its next
    release; whatever photosort imports itself, pyproject.toml names."""
    import ast
    import re
    from importlib.metadata import packages_distributions

    tomllib = pytest.importorskip("tomllib", reason="tomllib is new in Python 3.11")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + sum(project["optional-dependencies"].values(), [])

    def canonical(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    declared = {canonical(re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0]) for spec in wanted}
    imported: set[str] = set()
    for source in (ROOT / "photosort").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"photosort", "__future__"}
    dists = packages_distributions()
    undeclared = {
        name: dists.get(name)
        for name in third_party
        if not declared & {canonical(d) for d in dists.get(name, [name])}
    }
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
