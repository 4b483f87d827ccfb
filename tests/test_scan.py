"""The scanner and its store: first scan, incremental rescans, bad files, interruption, locks."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from photosort import cli as cli_module
from photosort import emotions, indexing, scanning
from photosort.cli import cli
from photosort.faces import FaceScan, FaceSettings
from photosort.indexing import FaceOptions, ScanReport, scan_library
from photosort.sample import save_jpeg, skimage_photo
from photosort.scanning import WalkError
from photosort.store import (
    ExplanationRow,
    FaceRow,
    Photo,
    Scan,
    library_status,
    open_engine,
    utcnow,
)
from tests.conftest import ALBUM_BROKEN, ALBUM_PHOTOS, as_a_user, sqlite_only, write_bomb_png
from tests.test_faces import BrightnessModel

KEYS = {"scanned", "new", "changed", "moved", "missing", "unchanged", "errors", "seconds"}


def scan_json(runner: CliRunner, db_url: str, *paths: Path | str) -> dict:
    result = runner.invoke(cli, ["scan", *map(str, paths), "--db", db_url, "--json", "--no-faces"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def photos(db_url: str) -> dict[str, Photo]:
    with Session(open_engine(db_url), expire_on_commit=False) as session:
        return {p.path: p for p in session.scalars(select(Photo))}


def face_scan(db_url: str, folder: Path, model: BrightnessModel, **options: object) -> ScanReport:
    """Scan with faces, in this process so that tests can watch detection."""
    faces = FaceOptions(classifier=model, **options)  # type: ignore[arg-type]
    return scan_library(open_engine(db_url), [str(folder)], workers=1, faces=faces)


def stored_faces(db_url: str) -> list[FaceRow]:
    with Session(open_engine(db_url), expire_on_commit=False) as session:
        return list(session.scalars(select(FaceRow).order_by(FaceRow.id)))


def tree_fingerprint(root: Path) -> dict[str, tuple[str, int]]:
    """Content hash and mtime of every file: proof that a scan wrote nothing."""
    out = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as fh:
                out[path] = (hashlib.sha256(fh.read()).hexdigest(), os.stat(path).st_mtime_ns)
    return out


def test_first_scan_records_every_photo(runner: CliRunner, album: Path, db_url: str) -> None:
    before = tree_fingerprint(album)
    report = scan_json(runner, db_url, album)
    assert KEYS <= set(report)
    assert report["scanned"] == report["new"] == ALBUM_PHOTOS
    assert report["errors"] == ALBUM_BROKEN
    rows = photos(db_url)
    assert len(rows) == ALBUM_PHOTOS
    assert tree_fingerprint(album) == before  # nothing written, renamed or deleted
    assert sorted(os.listdir(album)) == sorted(before_names(before, album))

    astronaut = rows[str(album / "people" / "astronaut.jpg")]
    assert (astronaut.status, astronaut.format, astronaut.width, astronaut.height) == (
        "ok",
        "JPEG",
        512,
        512,
    )
    assert astronaut.taken_at is not None and astronaut.taken_at.year == 2019
    data = (album / "people" / "astronaut.jpg").read_bytes()
    assert astronaut.content_hash == hashlib.sha256(data).hexdigest()
    assert astronaut.size == len(data)
    sideways = rows[str(album / "people" / "astronaut-sideways.jpg")]
    assert (sideways.width, sideways.height) == (512, 512)

    assert rows[str(album / "trips" / "mystery.dat")].format == "PNG"  # by content
    assert rows[str(album / "trips" / "moon16.tif")].status == "ok"
    assert rows[str(album / "trips" / "2021" / "日本 café 😀" / "animated.gif")].format == "GIF"
    unicode = [p for p in rows if "チェルシー «cat» 😀.jpg" in p]
    assert len(unicode) == 1 and rows[unicode[0]].status == "ok"
    assert not any("/." in p for p in rows), "hidden files and folders are skipped"
    assert not any(p.endswith("README.txt") for p in rows)
    assert not any("/loop/" in p for p in rows), "the symlink loop is walked once"


def before_names(fingerprint: dict[str, tuple[str, int]], root: Path) -> set[str]:
    return {Path(p).relative_to(root).parts[0] for p in fingerprint} | {".thumbnails"}


def test_bad_files_are_recorded_with_reasons(runner: CliRunner, album: Path, db_url: str) -> None:
    result = runner.invoke(cli, ["scan", str(album), "--db", db_url, "--no-faces"])
    assert result.exit_code == 0
    assert "4 errors" in result.stdout
    reasons = {Path(p).name: r.error for p, r in photos(db_url).items() if r.status != "ok"}
    assert reasons == {
        "zero.jpg": "empty file",
        "notes.jpg": "not an image (unrecognised content)",
        "truncated.jpg": "truncated JPEG: no end-of-image marker",
        "bomb.png": "decompression bomb: 40000x40000 is 1600 MP, over the limit of 200 MP",
    }
    status = runner.invoke(cli, ["status", "--db", db_url, "--errors", "--json"])
    data = json.loads(status.stdout)
    assert data["by_status"] == {"ok": ALBUM_PHOTOS - 4, "unreadable": 4, "missing": 0}
    assert {Path(e["path"]).name for e in data["errors"]} == set(reasons)
    assert data["last_scan_state"] == "done"


def deny_reading(monkeypatch: pytest.MonkeyPatch, locked: str) -> None:
    """Make the scanner's ``open`` of one file fail as a file without read permission does
    (tests run as root, whom chmod does not stop)."""
    real_open = scanning.open_regular

    def fake_open(path):  # type: ignore[no-untyped-def]
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path)

    monkeypatch.setattr(scanning, "open_regular", fake_open)


def test_unreadable_permission_is_recorded(
    album: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    locked = str(album / "people" / "astronaut.jpg")
    deny_reading(monkeypatch, locked)
    report = scan_library(open_engine(db_url), [str(album)], workers=1)
    assert report.errors == ALBUM_BROKEN + 1
    assert photos(db_url)[locked].error == "permission denied"


def scan_as_a_user(db_url: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    """``photosort scan`` in a process that meets file modes as a user does (not as root)."""
    command = [*as_a_user(), sys.executable, "-m", "photosort", "scan", *map(str, paths)]
    return subprocess.run(
        [*command, "--db", db_url, "--no-faces", "--json"], capture_output=True, text=True
    )


def test_unreadable_permission_for_real(album: Path, db_url: str) -> None:
    locked = album / "people" / "astronaut.jpg"
    locked.chmod(0)
    try:
        done = scan_as_a_user(db_url, album)
    finally:
        locked.chmod(0o644)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["errors"] == ALBUM_BROKEN + 1
    assert photos(db_url)[str(locked)].error == "permission denied"


def test_rescan_of_unchanged_album_opens_no_photo(
    runner: CliRunner, album: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    scan_json(runner, db_url, album)
    first_seen = {p: r.last_seen for p, r in photos(db_url).items()}
    opened: list[str] = []
    real_examine = indexing.examine

    def counting_examine(path: str, *args: object) -> scanning.FileFacts | None:
        opened.append(path)
        return real_examine(path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(indexing, "examine", counting_examine)
    report = scan_json(runner, db_url, album, "--workers", "1")
    # Only files that are not photos (no row) and unreadable ones are read again.
    assert sorted(Path(p).name for p in opened) == [
        "README.txt",
        "bomb.png",
        "notes.jpg",
        "truncated.jpg",
        "zero.jpg",
    ], "good photos must not be reopened"
    assert report["unchanged"] == report["scanned"] == ALBUM_PHOTOS
    assert report["new"] == report["changed"] == report["missing"] == 0
    assert report["errors"] == ALBUM_BROKEN, "still broken, and still reported"
    assert all(r.last_seen > first_seen[p] for p, r in photos(db_url).items())


def test_changed_file_is_reread(runner: CliRunner, album: Path, db_url: str) -> None:
    scan_json(runner, db_url, album)
    path = album / "pets" / "chelsea.jpg"
    before = photos(db_url)[str(path)]
    save_jpeg(path, skimage_photo("astronaut")[:300, :200], taken="2001:01:01 00:00:00")
    report = scan_json(runner, db_url, album)
    assert (report["changed"], report["unchanged"]) == (1, ALBUM_PHOTOS - 1)
    after = photos(db_url)[str(path)]
    assert after.id == before.id
    assert after.content_hash != before.content_hash
    assert (after.width, after.height, after.taken_at.year) == (200, 300, 2001)


def test_touched_file_keeps_its_data(runner: CliRunner, album: Path, db_url: str) -> None:
    scan_json(runner, db_url, album)
    path = album / "pets" / "chelsea.jpg"
    before = photos(db_url)[str(path)]
    os.utime(path, ns=(before.mtime_ns + 10**9, before.mtime_ns + 10**9))
    report = scan_json(runner, db_url, album)
    assert (report["changed"], report["unchanged"]) == (0, ALBUM_PHOTOS)
    after = photos(db_url)[str(path)]
    assert after.read_at == before.read_at and after.mtime_ns == before.mtime_ns + 10**9


def test_moved_file_keeps_identity(runner: CliRunner, album: Path, db_url: str) -> None:
    scan_json(runner, db_url, album)
    old = album / "pets" / "chelsea.jpg"
    before = photos(db_url)[str(old)]
    new = album / "trips" / "2021" / "renamed cat.jpg"
    shutil.move(old, new)
    report = scan_json(runner, db_url, album)
    assert (report["moved"], report["new"], report["missing"]) == (1, 0, 0)
    rows = photos(db_url)
    assert str(old) not in rows
    moved = rows[str(new)]
    assert (moved.id, moved.read_at, moved.first_seen) == (
        before.id,
        before.read_at,
        before.first_seen,
    )
    assert moved.folder == str(new.parent)


def test_move_into_a_folder_scanned_first_and_copy(
    runner: CliRunner, album: Path, db_url: str
) -> None:
    scan_json(runner, db_url, album)
    old = album / "trips" / "horse.bmp"
    before = photos(db_url)[str(old)]
    new = album / "broken" / "horse.bmp"  # "broken" is walked before "trips"
    shutil.move(old, new)
    copy = album / "people" / "astronaut copy.jpg"
    shutil.copy2(album / "people" / "astronaut.jpg", copy)
    report = scan_json(runner, db_url, album)
    assert (report["moved"], report["new"], report["missing"]) == (1, 1, 0)
    rows = photos(db_url)
    assert rows[str(new)].id == before.id
    assert rows[str(copy)].id != rows[str(album / "people" / "astronaut.jpg")].id


def race_take_over(
    monkeypatch: pytest.MonkeyPatch, other_scan: Callable[[], ScanReport]
) -> list[ScanReport]:
    """Run ``other_scan`` once, between a scan reading a moved photo's row and moving it."""
    take_over = indexing._Writer._take_over
    raced: list[ScanReport] = []

    def other_scan_first(self: object, row: Photo, entry: object, **kw: bool) -> bool:
        monkeypatch.setattr(indexing._Writer, "_take_over", take_over)
        raced.append(other_scan())
        return take_over(self, row, entry, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(indexing._Writer, "_take_over", other_scan_first)
    return raced


def test_copies_of_a_moved_photo_found_at_once_never_share_its_row(
    album: Path, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two scans of other folders each find a copy of a photo that left its place, at the
    same moment: the one that moves the row first keeps it, the other records a new photo."""
    engine = open_engine(db_url)
    scan_library(engine, [str(album)], workers=1)
    old = album / "pets" / "chelsea.jpg"
    before = photos(db_url)[str(old)]
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    shutil.copy2(old, second / "chelsea.jpg")
    shutil.move(old, first / "chelsea.jpg")
    raced = race_take_over(monkeypatch, lambda: scan_library(engine, [str(second)], workers=1))
    report = scan_library(engine, [str(first)], workers=1)
    assert (raced[0].moved, raced[0].new) == (1, 0)
    assert (report.moved, report.new) == (0, 1)
    rows = photos(db_url)
    assert rows[str(second / "chelsea.jpg")].id == before.id
    assert rows[str(first / "chelsea.jpg")].id != before.id
    assert str(old) not in rows


def test_a_missing_photo_found_again_at_its_place_keeps_its_row_from_a_copy(
    album: Path, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A photo marked missing comes back: the scan of its folder finds it again while a scan
    of another folder finds a copy. The copy never takes the row the original got back."""
    engine = open_engine(db_url)
    scan_library(engine, [str(album)], workers=1)
    photo = album / "pets" / "chelsea.jpg"
    before = photos(db_url)[str(photo)]
    away = tmp_path / "chelsea.jpg"
    shutil.move(photo, away)
    assert scan_library(engine, [str(album)], workers=1).missing == 1
    shutil.move(away, photo)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy2(photo, other / "chelsea.jpg")
    raced = race_take_over(monkeypatch, lambda: scan_library(engine, [str(album)], workers=1))
    report = scan_library(engine, [str(other)], workers=1)
    assert raced[0].missing == 0 and (report.moved, report.new) == (0, 1)
    rows = photos(db_url)
    assert (rows[str(photo)].id, rows[str(photo)].status) == (before.id, "ok")
    assert rows[str(other / "chelsea.jpg")].id != before.id


def test_deleted_file_is_missing_then_pruned(runner: CliRunner, album: Path, db_url: str) -> None:
    scan_json(runner, db_url, album)
    gone = album / "things" / "rocket.jpg"
    gone.unlink()
    shutil.rmtree(album / "trips" / "2021")
    report = scan_json(runner, db_url, album)
    assert report["missing"] == 3
    rows = photos(db_url)
    assert rows[str(gone)].status == "missing"
    assert len(rows) == ALBUM_PHOTOS
    status = json.loads(runner.invoke(cli, ["status", "--db", db_url, "--json"]).stdout)
    assert status["by_status"]["missing"] == 3

    dry = json.loads(runner.invoke(cli, ["prune", "--db", db_url, "--dry-run", "--json"]).stdout)
    assert dry["dry_run"] and dry["removed"] == 0 and len(dry["paths"]) == 3
    assert len(photos(db_url)) == ALBUM_PHOTOS
    table = runner.invoke(cli, ["prune", "--db", db_url, "--dry-run"])
    assert table.stdout.splitlines()[-1] == "Would remove 3 missing photos." and not table.stderr
    result = runner.invoke(cli, ["prune", "--db", db_url, "--json"])
    assert json.loads(result.stdout)["removed"] == 3 and not json.loads(result.stdout)["dry_run"]
    assert len(photos(db_url)) == ALBUM_PHOTOS - 3
    assert scan_json(runner, db_url, album)["missing"] == 0


def test_missing_file_that_returns_is_ok_again(runner: CliRunner, album: Path, db_url: str) -> None:
    scan_json(runner, db_url, album)
    path = album / "things" / "rocket.jpg"
    keep = path.read_bytes()
    path.unlink()
    scan_json(runner, db_url, album)
    path.write_bytes(keep)
    report = scan_json(runner, db_url, album)
    assert (report["unchanged"], report["new"]) == (ALBUM_PHOTOS, 0)  # identity kept
    assert photos(db_url)[str(path)].status == "ok"


def test_scanning_a_subfolder_only_touches_that_subfolder(
    runner: CliRunner, album: Path, db_url: str
) -> None:
    scan_json(runner, db_url, album)
    report = scan_json(runner, db_url, album / "pets")
    assert (report["scanned"], report["missing"]) == (1, 0)
    assert all(r.status != "missing" for r in photos(db_url).values())


def test_unreachable_folder_is_an_error_and_marks_nothing_missing(
    runner: CliRunner, album: Path, db_url: str, tmp_path: Path
) -> None:
    scan_json(runner, db_url, album)
    moved_away = tmp_path / "unmounted"
    album.rename(moved_away)  # the drive is gone
    result = runner.invoke(cli, ["scan", str(album), "--db", db_url])
    assert result.exit_code == 2
    assert "does not exist" in result.output
    with pytest.raises(WalkError, match="no such file or folder"):
        scan_library(open_engine(db_url), [str(album)])
    assert all(r.status != "missing" for r in photos(db_url).values())


def test_folder_that_cannot_be_listed_keeps_its_photos(
    album: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = open_engine(db_url)
    scan_library(engine, [str(album)])
    real_scandir = os.scandir
    blocked = str(album / "people")

    def fake_scandir(path):  # type: ignore[no-untyped-def]
        if str(path) == blocked:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(scanning.os, "scandir", fake_scandir)
    report = scan_library(engine, [str(album)])
    assert report.errors == 1 + ALBUM_BROKEN  # the folder, and the broken files read again
    assert report.missing == 0
    assert (blocked, "cannot list folder: Permission denied") in report.problems


def test_file_that_cannot_be_stat_marks_nothing_missing(
    album: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flaky drive (EIO, ESTALE) fails a stat: the photo may well be there, so its folder
    marks nothing missing and the error is reported."""
    engine = open_engine(db_url)
    scan_library(engine, [str(album)], workers=1)
    real_stat = os.stat
    flaky = str(album / "people" / "astronaut.jpg")

    def failing_stat(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path) == flaky:
            raise OSError(errno.EIO, "Input/output error", path)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(scanning.os, "stat", failing_stat)
    report = scan_library(engine, [str(album)], workers=1)
    assert report.missing == 0
    assert (flaky, "cannot read: Input/output error") in report.problems
    assert photos(db_url)[flaky].status == "ok"


def test_file_deleted_while_the_scan_runs_is_not_a_new_unreadable_photo(
    album: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_walk = indexing.walk
    doomed = album / "people" / "astronaut.jpg"

    def walk_then_delete(*args):  # type: ignore[no-untyped-def]
        for folder in real_walk(*args):
            if any(entry.path == str(doomed) for entry in folder.files):
                doomed.unlink()  # listed by the walk, gone before it is read
            yield folder

    monkeypatch.setattr(indexing, "walk", walk_then_delete)
    report = scan_library(open_engine(db_url), [str(album)], workers=1)
    assert (report.new, report.errors) == (ALBUM_PHOTOS - 1, ALBUM_BROKEN)
    assert str(doomed) not in photos(db_url)


def test_folder_that_can_be_listed_but_not_entered_keeps_its_photos(
    album: Path, db_url: str
) -> None:
    scan_library(open_engine(db_url), [str(album)], workers=1)
    people = album / "people"
    people.chmod(0o644)  # r without x: names can be listed, files not reached
    try:
        done = scan_as_a_user(db_url, album)
    finally:
        people.chmod(0o755)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["missing"], report["errors"]) == (0, ALBUM_BROKEN + 1)  # the folder, once
    assert all(r.status != "missing" for r in photos(db_url).values())


def test_interrupted_scan_resumes(
    album: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = open_engine(db_url)
    monkeypatch.setattr(indexing, "BATCH_PHOTOS", 3)
    done: list[str] = []

    def interrupt_after_seven(path: str) -> None:
        done.append(path)
        if len(done) == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        scan_library(engine, [str(album)], progress=interrupt_after_seven)
    saved = photos(db_url)
    assert len(saved) == 6  # two full batches committed, the open one rolled back
    with Session(engine) as session:
        assert session.scalars(select(Scan.state)).all() == ["interrupted"]
    report = scan_library(engine, [str(album)])
    assert (report.unchanged, report.new, report.missing) == (6, ALBUM_PHOTOS - 6, 0)
    assert {p: r.id for p, r in saved.items()} == {
        p: r.id for p, r in photos(db_url).items() if p in saved
    }


def test_interrupted_cli_scan_exits_130(
    runner: CliRunner, album: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(indexing, "scan_library", boom)
    result = runner.invoke(cli, ["scan", str(album), "--db", db_url, "--no-faces"])
    assert result.exit_code == 130
    assert "run it again to carry on" in result.output


def test_ctrl_c_in_any_command_or_its_clean_up_exits_130(
    runner: CliRunner, album: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C landing after the scan's summary, as the library closes, or in any other
    command, says so in one line and exits 130, as a shell expects of Ctrl-C."""
    assert runner.invoke(cli, ["scan", str(album), "--db", db_url, "--no-faces"]).exit_code == 0

    def close_then_interrupt(engine: Engine) -> Engine:
        """The library closes as the command ends, and a Ctrl-C lands right then."""

        def close() -> None:
            engine.dispose()
            raise KeyboardInterrupt

        click.get_current_context().call_on_close(close)
        return engine

    monkeypatch.setattr(cli_module, "closed_at_end", close_then_interrupt)
    for args in (["scan", str(album), "--no-faces"], ["status"], ["top", "happy"]):
        result = runner.invoke(cli, [*args, "--db", db_url])
        assert result.exit_code == 130, (args, result.output)
        assert result.stderr.splitlines()[-1] == "photosort: interrupted", args
        assert "Aborted" not in result.output
        assert ("Scanned" in result.stdout) == (args[0] == "scan")  # the summary came first


def test_second_scan_while_one_runs_is_refused(
    runner: CliRunner, album: Path, db_url: str, tmp_path: Path
) -> None:
    """A real second process holds the writer lock, as a running scan does; on PostgreSQL
    that is the advisory lock, named by pid and host."""
    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, pathlib\n"
            "from photosort.store import writer_lock\n"
            "with writer_lock(sys.argv[1]):\n"
            "    pathlib.Path(sys.argv[2]).touch()\n"
            "    time.sleep(30)\n",
            db_url,
            str(ready),
        ]
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert time.monotonic() < deadline and holder.poll() is None
            time.sleep(0.05)
        result = runner.invoke(cli, ["scan", str(album), "--db", db_url, "--no-faces"])
        assert result.exit_code == 1
        refusal = rf"another photosort scan \(pid {holder.pid}( on .+)?\) is writing"
        assert re.search(refusal, result.output), result.output
        assert result.output.count("\n") == 1
        # Reading goes on while a scan writes (WAL on SQLite).
        assert runner.invoke(cli, ["status", "--db", db_url]).exit_code == 0
    finally:
        holder.kill()
        holder.wait()
    assert scan_json(runner, db_url, album)["new"] == ALBUM_PHOTOS


def test_scan_killed_midway_leaves_a_sound_database(album: Path, tmp_path: Path) -> None:
    """SIGKILL a real scan process, then scan again: nothing lost, nothing redone."""
    db = tmp_path / "killed.db"
    code = (
        "import sys\n"
        "from photosort import indexing\n"
        "from photosort.store import open_engine, writer_lock\n"
        "indexing.BATCH_PHOTOS = 2\n"
        "n = []\n"
        "def slow(path):\n"
        "    n.append(path)\n"
        "    if len(n) == 9:\n"
        "        print('ready', flush=True)\n"
        "        import time; time.sleep(60)\n"
        "with writer_lock(sys.argv[1], roots=[sys.argv[2]]):  # as the CLI's scan\n"
        "    indexing.scan_library(open_engine(sys.argv[1]), [sys.argv[2]], progress=slow)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, f"sqlite:///{db}", str(album)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    url = f"sqlite:///{db}"
    engine = open_engine(url)
    assert library_status(engine).last_scan_state == "running"
    proc.kill()
    proc.wait()
    proc.stdout.close()
    assert library_status(engine).last_scan_state == "interrupted"
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    saved = photos(url)
    assert len(saved) == 8
    report = scan_library(engine, [str(album)])
    assert (report.unchanged, report.new) == (8, ALBUM_PHOTOS - 8)


def test_an_album_photosort_wrote_is_not_scanned(
    runner: CliRunner, album: Path, db_url: str
) -> None:
    """Its copies of photos would top the rankings; the manifest marks the folder."""
    site = album / "site"
    save_jpeg(site / "photos" / "copy.jpg", skimage_photo("astronaut"))
    (site / ".photosort-report.json").write_text('{"files": ["photos/copy.jpg"]}')
    assert scan_json(runner, db_url, album)["new"] == ALBUM_PHOTOS
    assert not [p for p in photos(db_url) if p.startswith(str(site))]


def test_an_album_written_among_scanned_photos_loses_none_of_them(
    runner: CliRunner, album: Path, db_url: str
) -> None:
    """A folder of photos that an album was written into is skipped, but its photos are not
    taken for deleted; scanning that folder itself says why it is not scanned."""
    scan_json(runner, db_url, album)
    people = [p for p in photos(db_url) if p.startswith(str(album / "people"))]
    (album / "people" / ".photosort-report.json").write_text('{"files": []}')
    assert scan_json(runner, db_url, album)["missing"] == 0
    assert {photos(db_url)[p].status for p in people} == {"ok"}
    refused = runner.invoke(cli, ["scan", str(album / "people"), "--db", db_url])
    assert refused.exit_code == 1
    assert "holds an album photosort wrote" in refused.output
    assert len(refused.output.strip().splitlines()) == 1


def test_a_folder_scanned_by_two_names_is_one_set_of_photos(
    runner: CliRunner, album: Path, db_url: str
) -> None:
    """A symlinked folder scanned through the link and on its own: one row per file, in
    either order, and none of them ever missing."""
    (album / "trips" / "pets-link").symlink_to(album / "pets", target_is_directory=True)
    pets = [p for p in album.joinpath("pets").iterdir() if p.suffix == ".jpg"]
    assert pets
    os.link(pets[0], album / "trips" / "hard-link.jpg")  # a second file entry: a photo of its own
    scan_json(runner, db_url, album / "trips")
    stored = len(photos(db_url))
    assert str(album / "trips" / "hard-link.jpg") in photos(db_url)
    assert scan_json(runner, db_url, album / "pets")["new"] == 0
    for roots in ((album / "trips", album / "pets"), (album / "pets", album / "trips")):
        assert scan_json(runner, db_url, *roots)["missing"] == 0
    assert len(photos(db_url)) == stored
    assert not [p for p in photos(db_url).values() if p.status == "missing"]


def test_files_given_directly_and_nested_roots(runner: CliRunner, album: Path, db_url: str) -> None:
    one = album / "pets" / "chelsea.jpg"
    report = scan_json(runner, db_url, one, album / "people", album)
    assert report["new"] == ALBUM_PHOTOS  # overlapping roots walked once
    assert scan_json(runner, db_url, one)["unchanged"] == 1
    notes = album.parent / "notes.txt"
    notes.write_text("shopping list")
    named = runner.invoke(cli, ["scan", str(notes), str(one), "--db", db_url, "--no-faces"])
    assert named.exit_code == 0 and f"{notes}: not a photo photosort reads" in named.stderr
    assert "1 unchanged, 1 error;" in named.stdout
    inside = album / "people" / "notes.txt"
    inside.write_text("not named: ignored like any sidecar")
    assert scan_json(runner, db_url, album)["errors"] == ALBUM_BROKEN


@sqlite_only  # fills the disk with PRAGMA max_page_count
def test_disk_full_is_one_line_and_loses_nothing(album: Path, db_url: str, tmp_path: Path) -> None:
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    from photosort.store import describe_db_error

    scan_library(open_engine(db_url), [str(album / "people")], workers=1)
    before = photos(db_url)
    full = open_engine(db_url)

    @event.listens_for(full, "connect")
    def no_room(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        pages = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
        dbapi_connection.execute(f"PRAGMA max_page_count={pages}")

    full.dispose()
    with pytest.raises(OperationalError) as caught:
        scan_library(full, [str(album)], workers=1)
    message = describe_db_error(caught.value)
    assert message.startswith("the disk holding the database is full") and "\n" not in message
    engine = open_engine(db_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    assert set(photos(db_url)) >= set(before)


def test_library_on_a_read_only_disk_scans_fine(album: Path, tmp_path: Path) -> None:
    """A read-only bind mount of the album (root only): photosort never needs to write there."""
    mount = tmp_path / "readonly"
    mount.mkdir()
    bound = subprocess.run(["mount", "--bind", str(album), str(mount)], capture_output=True)
    if bound.returncode != 0:
        pytest.skip("needs root and mount(8) to make a read-only disk")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True)
        with pytest.raises(OSError):
            (mount / "probe").write_text("x")
        url = f"sqlite:///{tmp_path / 'ro.db'}"
        report = scan_library(open_engine(url), [str(mount)], workers=2)
        assert (report.new, report.errors) == (ALBUM_PHOTOS, ALBUM_BROKEN)
        assert scan_library(open_engine(url), [str(mount)]).unchanged == ALBUM_PHOTOS
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_names_that_are_not_utf8_are_reported_and_skipped(
    runner: CliRunner, tmp_path: Path, db_url: str
) -> None:
    """Bytes that are not UTF-8 in a name cannot be stored: such a file or folder is reported
    and skipped, the photos beside it are kept, and its folder counts as not fully listed."""
    root = tmp_path / "library"
    sub = root / "sub"
    kept = save_jpeg(sub / "kept.jpg", skimage_photo("coffee"))
    deleted_here = save_jpeg(sub / "deleted.jpg", skimage_photo("rocket"))
    deleted_there = save_jpeg(root / "other" / "deleted.jpg", skimage_photo("chelsea"))
    scan_json(runner, db_url, root)
    deleted_here.unlink()
    deleted_there.unlink()
    fresh = save_jpeg(sub / "fresh.jpg", skimage_photo("astronaut"))
    raw = os.fsencode(sub)
    try:
        os.mkdir(raw + b"/\xff")
    except OSError:
        pytest.skip("this file system takes only UTF-8 names")
    for name in (b"/caf\xe9.jpg", b"/\xff/inside.jpg"):
        with open(raw + name, "wb") as fh:
            fh.write(kept.read_bytes())

    for _ in range(2):  # and every rescan goes through too
        result = runner.invoke(cli, ["scan", str(root), "--db", db_url, "--no-faces"])
        assert result.exit_code == 0, result.output
        assert "2 errors" in result.stdout
        assert f"{sub}/caf\ufffd.jpg: file name is not valid UTF-8" in result.stderr
        assert f"{sub}/\ufffd: file name is not valid UTF-8" in result.stderr
        statuses = {p: r.status for p, r in photos(db_url).items()}
        assert statuses == {
            str(kept): "ok",
            str(fresh): "ok",  # read in the same batch as the bad name, and kept
            str(deleted_here): "ok",  # its folder was not fully listed: not known to be gone
            str(deleted_there): "missing",
        }
    listed = runner.invoke(cli, ["scan", str(root), "--db", db_url, "--no-faces", "--json"])
    assert listed.exit_code == 0, listed.output
    assert sorted(p["path"] for p in json.loads(listed.stdout)["problems"]) == [
        f"{sub}/caf\ufffd.jpg",
        f"{sub}/\ufffd",
    ], "listed where a script finds them: status --errors cannot store such names"
    with pytest.raises(WalkError, match="not valid UTF-8"):
        scan_library(open_engine(db_url), [os.fsdecode(raw + b"/\xff")])


def test_failed_classification_is_tried_again(album: Path, db_url: str) -> None:
    people = album / "people"
    first = face_scan(db_url, people, BrightnessModel(fail=True))
    assert (first.faces, first.classified) == (3, 0)
    failed = stored_faces(db_url)
    assert all(f.model_id is None and f.p_happy is None and f.classify_error for f in failed)
    with Session(open_engine(db_url)) as session:  # as libraries written before the fix have it
        session.execute(update(FaceRow).values(model_id="test-model-1"))
        session.commit()

    again = face_scan(db_url, people, BrightnessModel())
    assert (again.faces, again.classified) == (0, 3)  # from the stored crops, no detection
    faces = stored_faces(db_url)
    assert [f.id for f in faces] == [f.id for f in failed]
    assert all(f.model_id == "test-model-1" and f.classify_error is None for f in faces)
    assert all(f.p_happy is not None for f in faces)

    assert face_scan(db_url, people, BrightnessModel("model-b", fail=True)).classified == 0
    kept = stored_faces(db_url)
    assert [(f.model_id, f.p_happy) for f in kept] == [(f.model_id, f.p_happy) for f in faces]
    assert {f.classify_error for f in kept} == {"classification failed: model exploded"}
    assert face_scan(db_url, people, BrightnessModel("model-b")).classified == 3


class LoadingModel(BrightnessModel):
    """A model that loads on its first ``predict``, as the real one does (seconds): it looks
    at the library from another connection meanwhile."""

    def __init__(self, db_file: Path) -> None:
        super().__init__()
        self.db_file = db_file
        self.seen: tuple[str, int] | None = None

    def predict(self, faces: np.ndarray) -> np.ndarray:
        if self.seen is None:
            conn = sqlite3.connect(self.db_file, timeout=0.2)
            try:
                committed = conn.execute("SELECT count(*) FROM photos").fetchone()[0]
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.rollback()
                    writable = "writable"
                except sqlite3.OperationalError as exc:
                    writable = str(exc)
            finally:
                conn.close()
            self.seen = (writable, committed)
        return super().predict(faces)


@sqlite_only
def test_no_write_transaction_stays_open_while_the_model_loads(album: Path, db_url: str) -> None:
    """Other commands (``report`` caching an explanation, ``prune``) wait 10 s for a lock:
    the scan commits what it found before the model loads, and holds no lock meanwhile."""
    model = LoadingModel(Path(db_url.removeprefix("sqlite:///")))
    report = face_scan(db_url, album, model)
    assert report.classified > 0
    assert model.seen is not None
    writable, committed = model.seen
    assert writable == "writable"
    assert committed > 0


def test_model_that_cannot_be_loaded_fails_the_scan_and_keeps_its_work(
    runner: CliRunner, album: Path, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A --model is loaded before any work; the shipped one only once a photo needs it, so a
    damaged install fails midway and must keep what the scan found."""
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a model")

    def cannot_load(path: object = None) -> object:
        raise emotions.ModelError(f"{path or 'the shipped model'}: not loadable: damaged")

    monkeypatch.setattr(emotions, "load_model", cannot_load)
    args = ["scan", str(album / "people"), "--db", db_url, "--workers", "1"]
    given = runner.invoke(cli, [*args, "--model", str(broken)])
    assert given.exit_code == 1
    assert given.stderr == f"Error: {broken}: not loadable: damaged\n"
    assert not photos(db_url), "refused before a photo was read"

    result = runner.invoke(cli, args)
    assert result.exit_code == 1
    assert result.stderr == "Error: the shipped model: not loadable: damaged\n"
    assert len(photos(db_url)) == 3  # the photos and faces found so far are kept
    faces = stored_faces(db_url)
    assert len(faces) == 3 and all(f.p_happy is None and f.model_id is None for f in faces)

    monkeypatch.setattr(emotions, "load_model", lambda path=None: BrightnessModel())
    fixed = runner.invoke(cli, [*args, "--json"])
    assert fixed.exit_code == 0, fixed.output
    assert json.loads(fixed.stdout)["classified"] == 3


def test_model_that_failed_to_load_is_not_loaded_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def failing_load(path: object = None) -> object:
        calls.append("load")
        raise RuntimeError("no TensorFlow here")

    def model_id_of(path: object = None) -> str:
        calls.append("hash")
        return "abc"

    monkeypatch.setattr(emotions, "load_model", failing_load)
    monkeypatch.setattr(emotions, "model_id_of", model_id_of)
    lazy = indexing.LazyClassifier("model.keras")
    for _ in range(3):
        with pytest.raises(RuntimeError, match="no TensorFlow here"):
            lazy.predict(np.zeros((1, 96, 96), np.uint8))
        assert lazy.model_id == "abc"
    assert calls == ["load", "hash"]


def test_unreadable_files_are_read_again(
    album: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fixed permission or a higher --max-megapixels cures a file that did not change."""
    engine = open_engine(db_url)
    locked = str(album / "people" / "astronaut.jpg")
    deny_reading(monkeypatch, locked)
    scan_library(engine, [str(album)], workers=1)
    assert photos(db_url)[locked].error == "permission denied"
    monkeypatch.undo()
    report = scan_library(engine, [str(album)], workers=1, max_megapixels=2000)
    assert (report.changed, report.unchanged) == (2, ALBUM_PHOTOS - 2)
    assert report.errors == ALBUM_BROKEN - 1  # the other broken files, still broken
    rows = photos(db_url)
    assert (rows[locked].status, rows[locked].error, rows[locked].format) == ("ok", None, "JPEG")
    bomb = rows[str(album / "broken" / "bomb.png")]
    assert (bomb.status, bomb.error, bomb.width) == ("ok", None, 40000)


def test_other_detector_settings_find_faces_again(
    album: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = album / "people"
    face_scan(db_url, people, BrightnessModel())
    before = photos(db_url)
    face_id = stored_faces(db_url)[0].id
    with Session(open_engine(db_url)) as session:  # a cached LIME explanation of one face
        session.add(
            ExplanationRow(
                face_id=face_id,
                model_id="test-model-1",
                emotion="happy",
                samples=10,
                segments=4,
                seed=0,
                probability=0.5,
                fit=0.5,
                deletion_support=0.1,
                deletion_random=0.0,
                deletion_spread=0.0,
                segment_map=b"",
                weights="[]",
                created_at=utcnow(),
            )
        )
        session.commit()
    detected: list[str] = []
    real = indexing.find_faces_with
    monkeypatch.setattr(
        indexing, "find_faces_with", lambda p, *a: detected.append(p) or real(p, *a)
    )

    report = face_scan(db_url, people, BrightnessModel(), min_face=2000)
    assert (len(detected), report.faces, report.unchanged) == (3, 0, 3)
    assert stored_faces(db_url) == []
    with Session(open_engine(db_url)) as session:
        assert session.scalar(select(func.count()).select_from(ExplanationRow)) == 0
    after = photos(db_url)
    assert {p.detector for p in after.values()} == {FaceSettings(min_face=2000).key}
    assert {p: (r.id, r.content_hash, r.phash) for p, r in after.items()} == {
        p: (r.id, r.content_hash, r.phash) for p, r in before.items()
    }

    report = face_scan(db_url, people, BrightnessModel())  # back to the defaults
    assert (len(detected), report.faces, report.classified) == (6, 3, 3)
    face_scan(db_url, people, BrightnessModel())
    assert len(detected) == 6, "same settings: not searched again"


def test_a_scan_counts_the_photos_whose_faces_other_settings_replaced(
    album: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New detector settings replace the faces of photos whose files did not change: the
    report counts those photos (``redetected``, also in ``scan --json``), apart from new and
    changed ones, so that a summary of unchanged photos does not hide it."""
    people = album / "people"
    assert face_scan(db_url, people, BrightnessModel()).redetected == 0  # all of them new
    detected: list[str] = []
    real = indexing.find_faces_with
    monkeypatch.setattr(
        indexing, "find_faces_with", lambda p, *a: detected.append(p) or real(p, *a)
    )
    save_jpeg(people / "chelsea.jpg", skimage_photo("chelsea"))
    save_jpeg(people / "astronaut.jpg", skimage_photo("astronaut")[:, ::-1])

    report = face_scan(db_url, people, BrightnessModel(), min_score=0.999)
    assert (report.new, report.changed, report.unchanged) == (1, 1, 2)
    assert len(detected) == 4
    assert report.redetected == report.as_dict()["redetected"] == 2
    again = face_scan(db_url, people, BrightnessModel(), min_score=0.999)
    assert (len(detected), again.redetected) == (4, 0), "same settings: none found again"


@pytest.mark.parametrize("workers", [1, 2])
def test_a_photo_too_large_for_memory_fails_alone_and_is_tried_again(
    db_url: str, tmp_path: Path, runner: CliRunner, workers: int
) -> None:
    """A header promising more pixels than memory holds, let through by a high
    --max-megapixels: the decode that finds no memory (a MemoryError, at once for a row this
    wide) is that photo's failure, in this process or in a worker, and the photo beside it
    gets its faces. Memory is the machine's, not the file's: the next scan tries again."""
    album = tmp_path / "album"
    save_jpeg(album / "astronaut.jpg", skimage_photo("astronaut"))
    wide = write_bomb_png(album / "wide.png", 600_000_000, 1)
    with Image.open(wide) as img, pytest.raises(MemoryError):
        img.load()
    reason = "out of memory decoding it (600000000x1, 600 MP)"
    faces = FaceOptions(classifier=BrightnessModel())
    for scan in range(2):
        report = scan_library(
            open_engine(db_url), [str(album)], workers=workers, max_megapixels=1000, faces=faces
        )
        assert report.problems == [(str(wide), reason)], "tried, and failed, on every scan"
        assert (report.new, report.unchanged) == ((2, 0), (0, 2))[scan]
    stored = photos(db_url)[str(wide)]
    assert (stored.status, stored.faces_state, stored.faces_error) == ("ok", "error", reason)
    assert [f.photo_id for f in stored_faces(db_url)] == [
        photos(db_url)[str(album / "astronaut.jpg")].id
    ]
    listed = runner.invoke(cli, ["status", "--errors", "--db", db_url])
    assert f"{wide}: faces not found: {reason}" in listed.output


def test_failed_face_detection_is_tried_again(
    album: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = album / "people"
    failing = FaceScan([], None, error="cannot decode: out of memory")
    monkeypatch.setattr(indexing, "find_faces_with", lambda *a: failing)
    first = face_scan(db_url, people, BrightnessModel())
    assert (first.errors, first.faces) == (3, 0)
    assert {r.faces_state for r in photos(db_url).values()} == {"error"}
    monkeypatch.undo()
    again = face_scan(db_url, people, BrightnessModel())
    assert (again.errors, again.faces, again.classified) == (0, 3, 3)
    assert {r.faces_state for r in photos(db_url).values()} == {"done"}

    monkeypatch.setattr(indexing, "find_faces_with", lambda *a: failing)
    face_scan(db_url, people, BrightnessModel(), min_face=1)
    assert len(stored_faces(db_url)) == 3, "faces found before stay until a retry succeeds"


def test_phone_photos_are_read_and_formats_photosort_cannot_read_are_named(
    album: Path, db_url: str
) -> None:
    """An iPhone library is HEIC: its photos are read, their faces found; a Canon CR3 is
    named as a format photosort does not read; a video is no photo at all."""
    folder = album / "phone"
    heic = save_jpeg(folder / "IMG_0001.HEIC", skimage_photo("astronaut"), fmt="HEIF")
    cut = folder / "IMG_0002.HEIC"
    cut.write_bytes(heic.read_bytes()[:2000])  # header whole, pixels gone
    raw = folder / "IMG_0003.CR3"
    raw.write_bytes(b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01crx isom" + bytes(64))
    video = folder / "clip.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(64))
    report = face_scan(db_url, folder, BrightnessModel())
    assert (report.new, report.errors) == (3, 2)
    stored = photos(db_url)
    assert (stored[str(heic)].status, stored[str(heic)].format) == ("ok", "HEIF")
    assert [f.photo_id for f in stored_faces(db_url)] == [stored[str(heic)].id]
    assert stored[str(cut)].status == "unreadable" and "\n" not in stored[str(cut)].error
    assert stored[str(raw)].status == "unreadable"
    assert stored[str(raw)].error.startswith("camera RAW (CR3) photo: not a format photosort")
    assert str(video) not in stored, "videos stay ignored"


def cut_wide_jpeg(path: Path) -> Path:
    """A JPEG whose header promises 65535x1 pixels and whose data stops a third of the way,
    with an end-of-image marker after it: the header and the tail pass, the decode fails."""
    import io

    rows = np.random.default_rng(0).integers(0, 255, (8, 4000, 3)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rows).save(buf, "JPEG", quality=90)
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = (1).to_bytes(2, "big") + (65535).to_bytes(2, "big")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data[: len(data) // 3]) + b"\xff\xd9")
    return path


def test_a_photo_whose_pixels_do_not_decode_is_never_stored_ok(
    db_url: str, tmp_path: Path, runner: CliRunner
) -> None:
    photo = cut_wide_jpeg(tmp_path / "album" / "wide.jpg")
    for scan in range(2):  # reported again by the next scan, which does not decode it again
        report = face_scan(db_url, photo.parent, BrightnessModel())
        assert report.errors == 1 and report.problems[0][0] == str(photo)
        assert (report.new, report.changed, report.unchanged) == ((1, 0, 0), (0, 0, 1))[scan]
        row = photos(db_url)[str(photo)]
        assert (row.status, row.faces_state) == ("unreadable", "error")
        assert row.error is not None and "truncated" in row.error
    listed = runner.invoke(cli, ["status", "--errors", "--db", db_url])
    assert f"{photo}: {row.error}" in listed.output


def test_a_file_over_the_size_cap_is_unreadable_and_never_hashed(
    db_url: str, tmp_path: Path, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 3 GB sparse file that starts like a JPEG: over the default 2,000 MB, it is refused
    before a byte past its head is read. A lower --max-file-size refuses smaller photos."""
    album = tmp_path / "album"
    save_jpeg(album / "small.jpg", skimage_photo("astronaut"))
    huge = album / "huge.jpg"
    with open(huge, "wb") as fh:
        fh.write((album / "small.jpg").read_bytes()[:64])
        fh.truncate(3_000_000_000)
    hashed: list[int] = []
    digest_rest = scanning._digest_rest
    monkeypatch.setattr(
        scanning, "_digest_rest", lambda fh, d: hashed.append(1) or digest_rest(fh, d)
    )
    report = scan_library(open_engine(db_url), [str(album)], workers=1)
    assert (report.new, report.errors) == (2, 1)
    assert len(hashed) == 1, "only the small photo is hashed"
    row = photos(db_url)[str(huge)]
    assert (row.status, row.content_hash) == ("unreadable", None)
    assert row.error == (
        "file of 3,000 MB is over the limit of 2,000 MB (--max-file-size); not read"
    )
    save_jpeg(album / "new.jpg", skimage_photo("chelsea"))  # read by the next scan
    capped = runner.invoke(
        cli, ["scan", str(album), "--db", db_url, "--no-faces", "--max-file-size", "0.01"]
    )
    assert capped.exit_code == 0, capped.output
    assert photos(db_url)[str(album / "new.jpg")].status == "unreadable"
