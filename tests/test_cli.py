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
    assert "None" not in result.output, "a default or range shown as Python's None"


def number_options() -> list[tuple[tuple[str, ...], str]]:
    """Every option of every command that takes a number with a fraction."""
    found = []
    for command in all_commands(cli):
        target: click.Command = cli
        for name in command:
            target = target.commands[name]  # type: ignore[attr-defined]
        for param in target.params:
            if isinstance(param, click.Option) and isinstance(
                param.type, (click.types.FloatParamType, click.FloatRange)
            ):
                found.append((command, param.opts[0]))
    return found


def test_every_number_option_refuses_what_is_no_finite_number(runner: CliRunner) -> None:
    """NaN passes every range check; infinity passes those with no upper end."""
    options = number_options()
    assert {"--max-megapixels", "--min-score", "--min-probability", "--lr"} <= {
        option for _, option in options
    }
    for command, option in options:
        assert isinstance(_option_type(command, option), cli_module.Number), (command, option)
        args = [*command, option]
        for value in ("nan", "inf", "-inf", "NaN"):
            result = runner.invoke(cli, [*args, value])  # checked before anything runs
            assert result.exit_code == 2, (args, value, result.output)
            assert f"'{value}' is not a finite number." in result.output


def _option_type(command: tuple[str, ...], option: str) -> click.ParamType:
    target: click.Command = cli
    for name in command:
        target = target.commands[name]  # type: ignore[attr-defined]
    return next(p.type for p in target.params if option in p.opts)


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
    empty = runner.invoke(cli, ["status", "--db", ""])
    assert empty.exit_code == 2
    assert "Invalid value for '--db': it is empty: give a file path or an SQLAlchemy URL" in (
        empty.stderr
    )


def test_quiet_scan_prints_nothing_and_no_bar_off_a_terminal(
    runner: CliRunner, album: Path, db_url: str
) -> None:
    quiet = runner.invoke(cli, ["scan", str(album), "--db", db_url, "--quiet", "--no-faces"])
    assert quiet.exit_code == 0 and quiet.stdout == ""
    loud = runner.invoke(cli, ["scan", str(album), "--db", db_url, "--no-faces"])
    assert loud.stdout.startswith("Scanned 16 photos")
    assert "Scanning" not in loud.stderr  # CliRunner's stderr is no terminal


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One demo, shared: it scans and explains a few dozen faces."""
    cwd = tmp_path_factory.mktemp("demo")
    out = cwd / "photosort-demo"
    result = CliRunner().invoke(cli, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Scanning" not in result.stderr and "Explaining" not in result.stderr  # no terminal
    return out, result.stdout


def test_demo_builds_and_scans_the_sample_album(
    runner: CliRunner, demo_run: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out, first = demo_run
    photos = sum(1 for p in (out / "album").rglob("*") if p.is_file())
    assert f"Scanned {photos} photos: {photos} new" in first
    status = json.loads(
        runner.invoke(cli, ["status", "--db", str(out / "library.db"), "--json"]).stdout
    )
    assert status["by_status"]["ok"] == photos
    faces = status["faces"]
    assert faces > 10 and list(status["models"].values()) == [faces]
    assert f"holds {photos} photos and {faces} faces" in first
    # Every emotion's section of the album has photos to show.
    index = (out / "report" / "index.html").read_text()
    assert "No photo shows" not in index
    monkeypatch.setattr(cli_module, "show_progress", lambda quiet: not quiet)  # a terminal
    again = runner.invoke(cli, ["demo", "--out", str(out)])
    assert f"0 new, {photos} unchanged" in again.stdout
    assert f"holds {photos} photos and {faces} faces" in again.stdout  # what the library holds
    assert "Scanning" in again.stderr and "Explaining" in again.stderr
    quiet = runner.invoke(cli, ["demo", "--out", str(out), "--quiet"])
    assert quiet.exit_code == 0 and quiet.output == ""
    text = runner.invoke(cli, ["status", "--db", str(out / "library.db")]).stdout
    assert f"Faces:      {faces} ({faces} classified)" in text
    assert "(shipped with photosort)" in text


def test_the_demos_next_commands_work_as_printed(
    demo_run: tuple[Path, str], tmp_path: Path
) -> None:
    out, printed = demo_run
    lines = printed.split("Next, try:\n")[1].splitlines()
    commands = [line.strip() for line in lines if line.startswith("  ")]
    assert len(commands) == 5
    assert all(str(out / "library.db") in c for c in commands)
    for command in commands:
        ran = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True)
        assert ran.returncode == 0, (command, ran.stderr)
        assert ran.stdout.strip(), command
        # Each command closed the library: SQLite checkpointed and removed its log.
        assert not (out / "library.db-wal").exists(), command
    assert (tmp_path / "happy.png").is_file()


def test_demo_scans_a_folder_of_ones_own_photos(runner: CliRunner, tmp_path: Path) -> None:
    mine = tmp_path / "Pictures"
    save_jpeg(mine / "beach.jpg", skimage_photo("astronaut"))
    save_jpeg(mine / "cat.jpg", skimage_photo("chelsea"))
    out = tmp_path / "out"
    result = runner.invoke(cli, ["demo", str(mine), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"Photos:       {mine}" in result.stdout
    assert "holds 2 photos and 1 face " in result.stdout
    assert str(mine / "beach.jpg") in result.stdout.split("Top happy photos:")[1]
    assert not (out / "album").exists()
    assert sorted(p.name for p in mine.iterdir()) == ["beach.jpg", "cat.jpg"]  # only read


def test_printed_commands_start_the_way_photosort_was_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = tmp_path / "venv" / "bin" / "photosort"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(sys, "argv", ["venv/bin/photosort", "demo"])
    assert cli_module.entry_point() == "venv/bin/photosort"  # typed as a path
    monkeypatch.setattr(sys, "argv", [str(script), "demo"])
    assert cli_module.entry_point() == str(script)
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    assert cli_module.entry_point() == "photosort"  # found on the PATH
    monkeypatch.setattr(sys, "argv", ["/somewhere/photosort/__main__.py"])
    assert cli_module.entry_point() == f"{sys.executable} -m photosort"


def test_status_counts_faces_by_the_model_that_classified_them(
    runner: CliRunner, linked: Path, db_url: str
) -> None:
    data = json.loads(runner.invoke(cli, ["status", "--db", db_url, "--json"]).stdout)
    assert data["faces"] == 1 and data["models"] == {"region-model": 1}
    text = runner.invoke(cli, ["status", "--db", db_url]).stdout
    assert "Faces:      1 (1 classified)" in text
    assert "Model:      region-model: 1 face\n" in text


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
        found, *_ = explain_photo_face(
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
    assert first.endswith(
        "(ok, faces not looked for yet: scan its folder again (without --no-faces))"
    ), first
    held = json.loads(runner.invoke(cli, ["status", "--db", db_url, "--json"]).stdout)
    assert held["awaiting_faces"] == held["by_status"]["ok"] > 0
    status = runner.invoke(cli, ["status", "--db", db_url])
    waiting = f"(0 classified; {held['awaiting_faces']} photos not looked at yet, scan again"
    assert waiting in status.stdout, status.stdout
    runner.invoke(cli, ["scan", str(album), "--db", db_url])
    status = runner.invoke(cli, ["status", "--db", db_url])
    assert "not looked at" not in status.stdout, status.stdout


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


@pytest.mark.parametrize(
    "command",
    [
        ["train", "{data}"],
        ["export", "{model}", "{data}"],
        ["scan", "{album}", "--model", "{model}", "--db", "{db}"],
    ],
    ids=["train", "export", "scan --model x.keras"],
)
def test_without_tensorflow_the_commands_that_need_it_say_how_to_get_it(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "tensorflow" else real(name, *a),
    )
    db = tmp_path / "library.db"
    files = {"data": tmp_path / "fer.csv", "model": tmp_path / "m.keras", "album": tmp_path}
    for path in (files["data"], files["model"]):
        path.write_text("")
    result = runner.invoke(cli, [a.format(db=db, **files) for a in command])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "needs TensorFlow, which is not installed: pip install 'photosort[train]'" in (
        result.output
    )
    assert not db.exists()  # refused before any work


def test_training_on_another_backend_says_which_package_it_lacks(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    data = tmp_path / "fer.csv"
    data.write_text("")
    result = runner.invoke(cli, ["train", str(data), "--out", str(tmp_path / "m.keras")])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert (
        "photosort train runs Keras on its torch backend (KERAS_BACKEND), but torch is not "
        "installed: pip install keras torch"
    ) in result.output
    assert not (tmp_path / "m.ckpt").exists()


def test_a_file_that_is_no_model_is_refused_before_any_work(
    runner: CliRunner, album: Path, tmp_path: Path
) -> None:
    db = tmp_path / "library.db"
    notes = tmp_path / "notes.py"
    notes.write_text("print('not a model')\n")
    named = runner.invoke(cli, ["scan", str(album), "--db", str(db), "--model", str(notes)])
    assert named.exit_code == 2
    assert "is not an emotion model: its name must end in .tflite or .keras" in named.stderr
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"no flatbuffer here")
    for command in (["scan", str(album)], ["report", str(tmp_path / "my-album")]):
        refused = runner.invoke(cli, [*command, "--db", str(db), "--model", str(junk)])
        assert refused.exit_code == 1, refused.output
        assert refused.stderr.startswith(f"Error: {junk}: not a loadable LiteRT model")
        assert refused.stderr.count("\n") == 1, refused.stderr
    held = json.loads(runner.invoke(cli, ["status", "--db", str(db), "--json"]).stdout)
    assert held["photos"] == 0 and held["last_scan"] is None, "nothing read, no scan begun"
    assert not (tmp_path / "my-album").exists()


def test_explain_refuses_an_out_file_in_no_folder_before_any_work(
    runner: CliRunner, tmp_path: Path
) -> None:
    """Checked with the options, before the library is opened or LIME is fitted."""
    out = tmp_path / "not" / "there" / "face.png"
    refused = runner.invoke(cli, ["explain", str(tmp_path / "a.jpg"), "--out", str(out)])
    assert refused.exit_code == 2, refused.output
    assert f"there is no folder {out.parent} to write it in" in refused.stderr


def test_show_and_explain_say_when_the_file_is_no_longer_the_photo_scanned(
    runner: CliRunner, tmp_path: Path
) -> None:
    folder, db = tmp_path / "photos", str(tmp_path / "library.db")
    kept, replaced, deleted = (folder / f"{name}.jpg" for name in ("kept", "replaced", "deleted"))
    for path in (kept, replaced, deleted):
        save_jpeg(path, skimage_photo("astronaut"))
    assert runner.invoke(cli, ["scan", str(folder), "--db", db, "--quiet"]).exit_code == 0
    save_jpeg(replaced, skimage_photo("coffee"))
    deleted.unlink()
    notes = {}
    for path in (kept, replaced, deleted):
        shown = runner.invoke(cli, ["show", str(path), "--db", db])
        assert shown.exit_code == 0, shown.output
        notes[path.stem] = shown.stdout.splitlines()[1].strip()
        data = json.loads(runner.invoke(cli, ["show", str(path), "--db", db, "--json"]).stdout)
        assert len(data["faces"]) == 1, "the scanned photo's faces stay shown"
        notes[path.stem + " json"] = data["since_scan"]
    assert notes["kept"].startswith("face ") and notes["kept json"] is None
    assert notes["replaced"].startswith("The file has changed since the scan: these are the")
    assert notes["deleted"].startswith("The file has gone missing since the scan")
    assert (notes["replaced json"], notes["deleted json"]) == ("changed", "missing")
    explained = runner.invoke(
        cli,
        ["explain", str(deleted), "--db", db, "--out", str(tmp_path / "e.png"), "--samples", "50"],
    )
    assert explained.exit_code == 0, explained.output
    assert explained.stderr.startswith("The file has gone missing since the scan: these are")
    assert (tmp_path / "e.png").is_file(), "the stored crop is still explained"


def test_explain_says_why_a_photo_has_no_such_face(runner: CliRunner, tmp_path: Path) -> None:
    folder, db = tmp_path / "photos", str(tmp_path / "library.db")
    save_jpeg(folder / "one.jpg", skimage_photo("astronaut"))
    (folder / "torn.jpg").write_bytes(b"\xff\xd8\xff not the rest of a JPEG")
    out = str(tmp_path / "e.png")
    assert runner.invoke(cli, ["scan", str(folder), "--db", db, "--quiet"]).exit_code == 0
    args = ["explain", str(folder / "one.jpg"), "--face", "2", "--db", db, "--out", out]
    second = runner.invoke(cli, args)
    assert second.exit_code == 1
    assert second.stderr.endswith("one.jpg has 1 face; there is no face 2\n"), second.stderr
    torn = runner.invoke(cli, ["explain", str(folder / "torn.jpg"), "--db", db, "--out", out])
    assert torn.exit_code == 1
    assert "torn.jpg could not be read when it was scanned (" in torn.stderr, torn.stderr
    assert torn.stderr.endswith("): it has no faces\n") and not (tmp_path / "e.png").exists()
    (folder / "one.jpg").unlink()
    assert runner.invoke(cli, ["scan", str(folder), "--db", db, "--quiet"]).exit_code == 0
    gone = runner.invoke(cli, args)
    assert gone.stderr.endswith("one.jpg has 1 face; there is no face 2\n"), "kept faces count"


def test_a_scan_with_other_detector_settings_says_it_replaced_the_faces(
    runner: CliRunner, tmp_path: Path
) -> None:
    folder, db = tmp_path / "photos", str(tmp_path / "library.db")
    for name in ("astronaut", "chelsea"):
        save_jpeg(folder / f"{name}.jpg", skimage_photo(name))
    first = runner.invoke(cli, ["scan", str(folder), "--db", db])
    assert first.exit_code == 0 and "found again" not in first.stdout, first.output
    strict = runner.invoke(cli, ["scan", str(folder), "--db", db, "--min-score", "0.999"])
    assert strict.exit_code == 0, strict.output
    assert "2 unchanged" in strict.stdout
    assert "Faces found again in 2 photos scanned before: the face-finding settings changed" in (
        strict.stdout
    )
    again = runner.invoke(cli, ["scan", str(folder), "--db", db, "--min-score", "0.999", "--json"])
    assert json.loads(again.stdout)["redetected"] == 0
