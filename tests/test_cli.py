"""The command line as a whole: help texts, start-up cost, entry points, the demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from photosort.cli import cli


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += all_commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


@pytest.mark.parametrize("command", all_commands(cli), ids=lambda c: " ".join(c) or "photosort")
def test_every_command_has_help_with_an_example(
    runner: CliRunner, command: tuple[str, ...]
) -> None:
    result = runner.invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.output
    example = result.output.split("Example:")[1].strip().splitlines()[0].strip()
    assert example.startswith("photosort " + " ".join(command[:1]).strip()), example


def test_help_does_not_load_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from photosort.cli import cli\n"
        "CliRunner().invoke(cli, ['--help'])\n"
        "CliRunner().invoke(cli, ['scan', '--help'])\n"
        "heavy = {'tensorflow', 'sqlalchemy', 'numpy', 'PIL', 'cv2', 'lime', 'skimage'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_python_dash_m_and_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "photosort", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert out.stdout.startswith("photosort, version ")


def test_missing_path_is_a_one_line_error(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["scan", str(tmp_path / "nope"), "--db", str(tmp_path / "x.db")])
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert not (tmp_path / "x.db").exists()


def test_quiet_scan_prints_nothing_and_no_bar_off_a_terminal(
    runner: CliRunner, album: Path, db_url: str
) -> None:
    quiet = runner.invoke(cli, ["scan", str(album), "--db", db_url, "--quiet", "--no-faces"])
    assert quiet.exit_code == 0 and quiet.stdout == ""
    loud = runner.invoke(cli, ["scan", str(album), "--db", db_url, "--no-faces"])
    assert loud.stdout.startswith("Scanned 16 photos")
    assert "Scanning" not in loud.stderr  # CliRunner's stderr is no terminal


def test_demo_builds_and_scans_the_sample_album(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["demo", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "Scanned 7 photos: 7 new" in result.output
    again = runner.invoke(cli, ["demo", str(tmp_path / "demo")])
    assert "7 unchanged" in again.output
    status = runner.invoke(cli, ["status", "--db", str(tmp_path / "demo" / "library.db"), "--json"])
    assert json.loads(status.stdout)["by_status"]["ok"] == 7
