"""The command line as a whole: help texts, start-up cost, entry points, the demo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from photosort import cli as cli_module
from photosort.cli import cli
from photosort.indexing import FaceOptions, scan_library
from photosort.reporting import explain_photo_face
from photosort.sample import save_jpeg, skimage_photo
from photosort.store import open_engine
from tests.test_report import RegionModel


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


def test_demo_builds_and_scans_the_sample_album(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = runner.invoke(cli, ["demo", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "Scanned 7 photos: 7 new" in result.output
    assert "Scanning" not in result.stderr and "Explaining" not in result.stderr  # no terminal
    monkeypatch.setattr(cli_module, "show_progress", lambda quiet: not quiet)  # a terminal
    again = runner.invoke(cli, ["demo", str(tmp_path / "demo")])
    assert "7 unchanged" in again.stdout
    assert "Scanning" in again.stderr and "Explaining" in again.stderr
    quiet = runner.invoke(cli, ["demo", str(tmp_path / "demo"), "--quiet"])
    assert quiet.exit_code == 0 and quiet.output == ""
    status = runner.invoke(cli, ["status", "--db", str(tmp_path / "demo" / "library.db"), "--json"])
    assert json.loads(status.stdout)["by_status"]["ok"] == 7


@pytest.fixture
def linked(tmp_path: Path, db_url: str) -> Path:
    """An album whose trip/ is a symlink to a folder elsewhere, scanned with faces; the
    album is also reachable through the symlink alias/."""
    save_jpeg(tmp_path / "disk" / "trip" / "astronaut.jpg", skimage_photo("astronaut"))
    album = tmp_path / "album"
    album.mkdir()
    os.symlink(tmp_path / "disk" / "trip", album / "trip")
    os.symlink(album, tmp_path / "alias")
    faces = FaceOptions(classifier=RegionModel())
    scan_library(open_engine(db_url), [str(album)], workers=1, faces=faces)
    return album


def stored_path(linked: Path) -> str:
    """Where the scan recorded the photo: the album's real path, then the names it walked."""
    return os.path.join(os.path.realpath(linked), "trip", "astronaut.jpg")


def top_paths(runner: CliRunner, db_url: str, *args: str) -> list[str]:
    result = runner.invoke(
        cli, ["top", "happy", "--min-probability", "0", "--db", db_url, "--json", *args]
    )
    assert result.exit_code == 0, result.output
    return [pick["path"] for pick in json.loads(result.stdout)]


def test_photos_under_a_symlinked_folder_are_found_however_spelled(
    runner: CliRunner, linked: Path, db_url: str, tmp_path: Path
) -> None:
    engine = open_engine(db_url)
    for trip in (linked / "trip", tmp_path / "alias" / "trip"):
        shown = runner.invoke(cli, ["show", str(trip / "astronaut.jpg"), "--db", db_url])
        assert shown.exit_code == 0, shown.output
        assert shown.stdout.startswith(f"{stored_path(linked)} (ok, 1 face)\n")
        assert top_paths(runner, db_url, "--under", str(trip)) == [stored_path(linked)]
        found, _, _ = explain_photo_face(
            engine, str(trip / "astronaut.jpg"), RegionModel(), samples=60
        )
        assert found.emotion == "happy"
    assert top_paths(runner, db_url, "--under", str(tmp_path / "alias")) == [stored_path(linked)]


def test_top_under_a_folder_that_is_not_there_now(
    runner: CliRunner, linked: Path, db_url: str, tmp_path: Path
) -> None:
    """A drive that is not mounted: its photos stay in the library until a scan says so."""
    linked.rename(tmp_path / "unmounted")
    assert top_paths(runner, db_url, "--under", str(linked)) == [stored_path(linked)]
    assert top_paths(runner, db_url, "--under", str(linked / "trip")) == [stored_path(linked)]
    nowhere = runner.invoke(cli, ["top", "happy", "--under", "never/there", "--db", db_url])
    assert nowhere.exit_code == 0
    assert nowhere.stdout.startswith("No photo shows happy") and "--under)" in nowhere.stdout


def test_show_says_faces_were_not_looked_for(runner: CliRunner, album: Path, db_url: str) -> None:
    scanned = runner.invoke(cli, ["scan", str(album), "--db", db_url, "--no-faces"])
    assert scanned.exit_code == 0, scanned.output
    shown = runner.invoke(cli, ["show", str(album / "people" / "astronaut.jpg"), "--db", db_url])
    assert shown.exit_code == 0, shown.output
    first = shown.stdout.splitlines()[0]
    assert first.endswith("(ok, faces not looked for yet: scan it without --no-faces)"), first


def test_names_with_terminal_escapes_are_shown_escaped(
    runner: CliRunner, db_url: str, tmp_path: Path
) -> None:
    """A file named ``ESC[2J`` would clear the screen, one with a newline forge a line."""
    album = tmp_path / "album"
    photo = save_jpeg(album / "\x1b[2Jsmile\n.jpg", skimage_photo("astronaut"))
    broken = album / "\x1b]0;title\x07broken.jpg"
    broken.write_text("not an image")
    faces = FaceOptions(classifier=RegionModel())
    scan_library(open_engine(db_url), [str(album)], workers=1, faces=faces)
    outputs = [
        runner.invoke(cli, ["scan", str(album), "--db", db_url, "--no-faces"]),
        runner.invoke(cli, ["status", "--errors", "--db", db_url]),
        runner.invoke(cli, ["top", "happy", "--db", db_url, "--min-probability", "0"]),
        runner.invoke(cli, ["show", str(photo), "--db", db_url]),
        runner.invoke(cli, ["show", str(broken), "--db", db_url]),
    ]
    for result in outputs:
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.output and "\x07" not in result.output, result.output
    assert "\\x1b[2Jsmile\\n.jpg" in outputs[2].output + outputs[3].output
    assert "\\x1b]0;title\\x07broken.jpg" in outputs[0].output + outputs[1].output
