"""The database: location, migrations that agree with the models, refusals."""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner
from sqlalchemy import Engine, create_engine, event, func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from photosort import store
from photosort.cli import cli
from photosort.resources import resource_dir
from photosort.store import (
    CODEPOINT_PATH_INDEX,
    SCHEMA_HEAD,
    SQL_CHUNK,
    Base,
    FaceRow,
    Photo,
    Scan,
    StoreError,
    database_url,
    driver_url,
    include_object,
    library_status,
    open_engine,
    path_under,
    relocate,
    roots_overlap,
    schema_revisions,
    stored_paths,
    utcnow,
    writer_lock,
)
from tests.conftest import ALBUM_PHOTOS, as_a_user


def test_migrations_and_models_agree(db_url: str) -> None:
    engine = open_engine(db_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": include_object})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []
    current, head = schema_revisions(engine)
    assert current == head


def test_schema_head_is_the_newest_migration() -> None:
    from alembic.script import ScriptDirectory

    assert ScriptDirectory(str(resource_dir("migrations"))).get_current_head() == SCHEMA_HEAD


def test_a_current_library_opens_without_loading_alembic(tmp_path: Path) -> None:
    """Read commands (top, show, explain) on a current library skip Alembic's import."""
    url = f"sqlite:///{tmp_path / 'lib.db'}"
    open_engine(url).dispose()
    probe = (
        "import sys; from photosort.store import open_engine; "
        f"open_engine({url!r}); print(sorted(m for m in sys.modules if m.startswith('alembic')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_db_upgrade_command(runner: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "lib.db"
    result = runner.invoke(cli, ["db", "upgrade", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "(upgraded)" in result.output
    again = runner.invoke(cli, ["db", "upgrade", "--db", str(db)])
    assert "(already current)" in again.output
    tables = {r[0] for r in sqlite3.connect(db).execute("select name from sqlite_master")}
    assert {"photos", "scans", "alembic_version"} <= tables
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_database_from_a_newer_photosort_is_refused(runner: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    open_engine(f"sqlite:///{db}")
    with sqlite3.connect(db) as conn:
        conn.execute("update alembic_version set version_num = '9999_future'")
    with pytest.raises(StoreError, match="newer photosort"):
        open_engine(f"sqlite:///{db}")
    result = runner.invoke(cli, ["status", "--db", str(db)])
    assert result.exit_code == 1
    assert "written by a newer photosort" in result.output


def test_empty_alembic_version_is_a_one_line_error(runner: CliRunner, tmp_path: Path) -> None:
    db = tmp_path / "damaged.db"
    open_engine(f"sqlite:///{db}")
    with sqlite3.connect(db) as conn:
        conn.execute("delete from alembic_version")
    result = runner.invoke(cli, ["status", "--db", str(db)])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert "holds photosort's tables but no schema revision" in result.output


@pytest.mark.parametrize("leftover_wal", [False, True], ids=["checkpointed", "wal-left"])
def test_library_in_a_read_only_folder_is_read(
    runner: CliRunner, tmp_path: Path, leftover_wal: bool
) -> None:
    """A read-only bind mount of the library's folder (root only): reading commands work,
    writing ones are refused in one line, also when a killed scan left its -wal file."""
    from photosort.indexing import FaceOptions, scan_library
    from photosort.reporting import build_report
    from tests.conftest import build_test_album
    from tests.test_report import RegionModel

    album = tmp_path / "album"
    build_test_album(album)
    folder = tmp_path / "lib"
    folder.mkdir()
    db = folder / "library.db"
    faces = FaceOptions(classifier=RegionModel())
    scan_library(open_engine(f"sqlite:///{db}"), [str(album)], workers=1, faces=faces)
    if leftover_wal:  # a scan killed before SQLite could checkpoint: work only in the -wal
        gc.collect()
        shutil.copy(db, tmp_path / "before")
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("update photos set error = 'from the wal' where status = 'unreadable'")
        conn.commit()
        for suffix in ("-wal", "-shm"):
            shutil.copy(db.with_name(db.name + suffix), tmp_path / suffix)
        conn.close()
        shutil.copy(tmp_path / "before", db)
        for suffix in ("-wal", "-shm"):
            shutil.copy(tmp_path / suffix, db.with_name(db.name + suffix))
    mount = tmp_path / "readonly"
    mount.mkdir()
    bound = subprocess.run(["mount", "--bind", str(folder), str(mount)], capture_output=True)
    if bound.returncode != 0:
        pytest.skip("needs root and mount(8) to make a read-only folder")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], check=True)
        url = str(mount / "library.db")
        status = runner.invoke(cli, ["status", "--db", url, "--errors", "--json"])
        assert status.exit_code == 0, status.output
        data = json.loads(status.stdout)
        assert data["photos"] == 16
        assert ({e["reason"] for e in data["errors"]} == {"from the wal"}) == leftover_wal
        shown = runner.invoke(cli, ["show", str(album / "people" / "astronaut.jpg"), "--db", url])
        assert shown.exit_code == 0, shown.output
        album_out = tmp_path / "report"
        engine = open_engine(f"sqlite:///{url}")
        summary = build_report(engine, album_out, RegionModel(), n=1, samples=60)
        assert summary.picks > 0 and summary.cached == 0  # explained, not cached
        assert (album_out / "index.html").exists()
        refused = runner.invoke(cli, ["prune", "--db", url])
        assert refused.exit_code == 1 and "read-only" in refused.output, refused.output
        assert refused.output.count("\n") == 1
    finally:
        gc.collect()  # the commands' engines, which hold the file open
        if subprocess.run(["umount", str(mount)]).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount)], check=True)


def test_a_library_file_a_user_may_only_read_is_read_and_left_as_it_was(
    runner: CliRunner, album: Path, tmp_path: Path
) -> None:
    """Someone else's library, shared read-only: reading commands work and leave no -wal or
    -shm beside it, which would keep its owner's next scan from writing; writers refuse in
    one line before any work; a file that cannot be read at all says so."""
    from photosort.indexing import FaceOptions, scan_library
    from tests.test_report import RegionModel

    db = tmp_path / "library.db"
    engine = open_engine(database_url(str(db)))
    scan_library(engine, [str(album)], workers=1, faces=FaceOptions(classifier=RegionModel()))
    engine.dispose()
    before = runner.invoke(cli, ["status", "--db", str(db), "--json"])

    def as_a_user_run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [*as_a_user(), sys.executable, "-m", "photosort", *args, "--db", str(db)]
        return subprocess.run(command, capture_output=True, text=True)

    db.chmod(0o444)
    status = as_a_user_run("status", "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout) == json.loads(before.stdout)
    top = as_a_user_run("top", "happy", "--json")
    assert top.returncode == 0, top.stderr
    scan = as_a_user_run("scan", str(album), "--no-faces")
    assert scan.returncode == 1
    assert scan.stderr == f"Error: cannot write {db}: the file is read-only\n"
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(("-wal", "-shm"))]
    db.chmod(0o644)
    again = as_a_user_run("scan", str(album), "--no-faces", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["unchanged"] == ALBUM_PHOTOS
    db.chmod(0)
    try:
        unreadable = as_a_user_run("status")
    finally:
        db.chmod(0o644)
    assert unreadable.returncode == 1
    assert unreadable.stderr == f"Error: cannot open database {db}: permission denied\n"


def test_database_location_order(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("PHOTOSORT_DB", raising=False)
    # Only scan and `db upgrade` create a library; the others refuse a path that has none.
    missing = runner.invoke(cli, ["status"])
    assert missing.exit_code == 1 and "no library at" in missing.output
    assert "photosort scan FOLDER)" in missing.output
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    status = json.loads(runner.invoke(cli, ["status", "--json"]).stdout)
    assert status["database"] == str(tmp_path / "xdg" / "photosort" / "library.db")
    monkeypatch.setenv("PHOTOSORT_DB", str(tmp_path / "env.db"))
    assert runner.invoke(cli, ["db", "upgrade"]).exit_code == 0
    assert json.loads(runner.invoke(cli, ["status", "--json"]).stdout)["database"] == str(
        tmp_path / "env.db"
    )
    url = f"sqlite:///{tmp_path / 'u.db'}"
    assert runner.invoke(cli, ["db", "upgrade", "--db", url]).exit_code == 0
    flag = runner.invoke(cli, ["status", "--json", "--db", url])
    assert json.loads(flag.stdout)["database"] == str(tmp_path / "u.db")


def test_commands_other_than_scan_never_create_a_library(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    typo = tmp_path / "libary.db"
    for args in (["status"], ["top", "happy"], ["prune"], ["report", str(tmp_path / "album")]):
        result = runner.invoke(cli, [*args, "--db", str(typo)])
        assert result.exit_code == 1, args
        assert result.output == (
            f"Error: no library at {typo}: scan a folder into it first "
            f"(photosort scan FOLDER --db {typo})\n"
        )
    assert not typo.exists() and not (tmp_path / "album").exists()
    monkeypatch.setenv("PHOTOSORT_DB", str(typo))
    assert runner.invoke(cli, ["status"]).output.endswith("(photosort scan FOLDER)\n")
    monkeypatch.setenv("PHOTOSORT_DB", str(tmp_path / "nofolder" / "x.db"))
    from_env = runner.invoke(cli, ["status"])
    assert from_env.exit_code == 2 and "Invalid value for $PHOTOSORT_DB" in from_env.output
    flag = runner.invoke(cli, ["status", "--db", str(tmp_path / "nofolder" / "x.db")])
    assert "Invalid value for '--db': cannot open database" in flag.output


def test_database_url_resolution(tmp_path: Path) -> None:
    assert database_url(str(tmp_path / "x.db")) == make_url(f"sqlite:///{tmp_path / 'x.db'}")
    assert database_url("postgresql://u@localhost/photos") == make_url(
        "postgresql://u@localhost/photos"
    )
    with pytest.raises(StoreError, match="does not exist"):
        database_url(str(tmp_path / "typo" / "x.db"))
    with pytest.raises(StoreError, match="is a folder"):
        database_url(str(tmp_path))


@pytest.mark.parametrize(
    ("make_db", "message"),
    [
        (lambda p: str(p / "nofolder" / "x.db"), "does not exist"),
        (lambda p: str(p), "is a folder"),
        (lambda p: "nosuchdialect://x/y", "unsupported URL"),
        (
            lambda p: (p / "junk.db").write_text("not sqlite" * 100) and str(p / "junk.db"),
            "not a database",
        ),
    ],
)
def test_bad_database_is_a_one_line_error(
    runner: CliRunner, tmp_path: Path, make_db, message: str
) -> None:
    album = tmp_path / "album"
    album.mkdir()
    result = runner.invoke(cli, ["scan", str(album), "--db", make_db(tmp_path)])
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0]


OLD_FACE = (
    "insert into faces (photo_id, idx, x, y, w, h, score, sharpness, crop, model_id, p_happy)"
    " values (1, 0, 1, 2, 3, 4, 0.9, 10, x'00', 'm', 0.5)"
)
"""A face row as revisions 0002 to 0004 store it, for the migration tests."""


def add_old_face(conn: sqlite3.Connection) -> None:
    """A photo with one face, in any schema from 0002 on."""
    conn.execute(
        "insert into photos (path, folder, size, mtime_ns, status, first_seen, last_seen,"
        " read_at) values ('/a/b.jpg', '/a', 10, 5, 'ok', '2024-01-01', '2024-01-01',"
        " '2024-01-01')"
    )
    conn.execute(OLD_FACE)


def add_old_explained_face(conn: sqlite3.Connection) -> None:
    """A photo with one face and one cached explanation, in the schema of 0004 and 0005."""
    add_old_face(conn)
    conn.execute(
        "insert into explanations (face_id, model_id, emotion, samples, segments, seed,"
        " probability, fit, deletion_support, deletion_random, segment_map, weights,"
        " created_at) values (1, 'm', 'happy', 10, 4, 0, 0.98, 0.5, 0.1, 0.0, x'00', '{}',"
        " '2024-01-01')"
    )


def upgrade_old_explained_face(tmp_path: Path, revision: str) -> Engine:
    """A library at ``revision`` with one explained face, upgraded to the head."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate_to(url, revision)
    with sqlite3.connect(tmp_path / "old.db") as conn:
        add_old_explained_face(conn)
    return open_engine(url)


def assert_explanations_retired(conn: sqlite3.Connection, *columns: str) -> None:
    """The old explanations are gone, the face is kept, and the columns were added in place."""
    assert conn.execute("select count(*) from explanations").fetchone() == (0,)
    assert conn.execute("select p_happy from faces").fetchall() == [(0.5,)]
    found = {row[1] for row in conn.execute("pragma table_info(explanations)")}
    assert set(columns) <= found
    assert conn.execute("pragma freelist_count").fetchone() == (0,), "added in place"


def migrate_to(url: str, revision: str) -> None:
    from alembic import command

    from photosort.store import _migrations_config

    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(_migrations_config(conn), revision)


def test_upgrades_keep_every_row(tmp_path: Path) -> None:
    """A database made at the first revision, with rows, survives every later migration."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate_to(url, "0001")
    with sqlite3.connect(tmp_path / "old.db") as conn:
        conn.execute(
            "insert into photos (path, folder, size, mtime_ns, content_hash, format, width,"
            " height, status, first_seen, last_seen, read_at) values ('/a/b.jpg', '/a', 10, 5,"
            " 'ab', 'JPEG', 4, 3, 'ok', '2024-01-01', '2024-01-01', '2024-01-01')"
        )
        conn.execute(
            "insert into scans (started_at, roots, state) values ('2024-01-01', '[]', 'done')"
        )
    migrate_to(url, "0002")
    with sqlite3.connect(tmp_path / "old.db") as conn:
        assert conn.execute("select path, faces_state from photos").fetchall() == [
            ("/a/b.jpg", "pending")
        ]
        conn.execute(OLD_FACE)
    engine = open_engine(url)  # the rest happens on first use
    assert schema_revisions(engine)[0] == schema_revisions(engine)[1]
    with sqlite3.connect(tmp_path / "old.db") as conn:
        assert conn.execute("select path, size, width from photos").fetchall() == [
            ("/a/b.jpg", 10, 4)
        ]
        assert conn.execute("select count(*) from scans").fetchone() == (1,)
        assert conn.execute("select p_happy, model_id from faces").fetchall() == [(0.5, "m")]
        assert conn.execute("select count(*) from explanations").fetchone() == (0,)


def test_upgrade_drops_explanations_from_before_0005(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate_to(url, "0004")
    with sqlite3.connect(tmp_path / "old.db") as conn:
        add_old_explained_face(conn)
    open_engine(url)
    with sqlite3.connect(tmp_path / "old.db") as conn:
        assert conn.execute("select count(*) from explanations").fetchone() == (0,)
        assert conn.execute("select p_happy from faces").fetchall() == [(0.5,)]


def test_an_older_library_is_upgraded_under_the_writer_lock_and_says_so(
    runner: CliRunner, tmp_path: Path
) -> None:
    """A migration rewrites a large library for minutes: never silently, never beside a
    scan."""
    db = tmp_path / "old.db"
    url = f"sqlite:///{db}"
    migrate_to(url, "0004")
    with writer_lock(url):
        refused = runner.invoke(cli, ["status", "--db", str(db)])
    assert refused.exit_code == 1
    assert f"another photosort scan (pid {os.getpid()}) is writing" in refused.output
    assert schema_revisions(open_engine(url, migrate=False))[0] == "0004"
    status = runner.invoke(cli, ["status", "--db", str(db)])
    assert status.exit_code == 0, status.output
    head = schema_revisions(open_engine(url, migrate=False))[1]
    assert f"upgrading the library's schema from 0004 to {head}" in status.stderr
    # Each revision says when it is done: a long upgrade shows where it is.
    assert "schema revision 0005 applied" in status.stderr
    assert f"schema revision {head} applied" in status.stderr
    assert runner.invoke(cli, ["status", "--db", str(db)]).stderr == ""


def test_upgrade_to_0006_retires_explanations_without_the_random_spread(tmp_path: Path) -> None:
    engine = upgrade_old_explained_face(tmp_path, "0005")
    with sqlite3.connect(tmp_path / "old.db") as conn:
        assert_explanations_retired(conn, "deletion_spread")
        indexes = {row[1] for row in conn.execute("pragma index_list(explanations)")}
        assert "ix_explanations_face_id" in indexes
        # Deleting the face still deletes its explanations (the rebuilt table keeps the FK).
        conn.execute("pragma foreign_keys = on")
        conn.execute(
            "insert into explanations (face_id, model_id, emotion, samples, segments, seed,"
            " probability, fit, deletion_support, deletion_random, deletion_spread,"
            " segment_map, weights, created_at) values (1, 'm', 'happy', 10, 4, 0, 0.98, 0.5,"
            " 0.1, 0.0, 0.02, x'00', '{}', '2024-01-01')"
        )
        conn.execute("delete from faces")
        assert conn.execute("select count(*) from explanations").fetchone() == (0,)
    current, head = schema_revisions(engine)
    assert current == head


def test_upgrade_to_0007_adds_an_empty_claims_table_and_keeps_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate_to(url, "0006")
    with sqlite3.connect(tmp_path / "old.db") as conn:
        add_old_face(conn)
    engine = open_engine(url)
    with sqlite3.connect(tmp_path / "old.db") as conn:
        assert conn.execute("select path from photos").fetchall() == [("/a/b.jpg",)]
        assert conn.execute("select p_happy from faces").fetchall() == [(0.5,)]
        columns = [row[1] for row in conn.execute("pragma table_info(scan_claims)")]
        assert columns == ["id", "roots", "host", "pid", "claimed_at"]
        assert conn.execute("select count(*) from scan_claims").fetchone() == (0,)
    assert schema_revisions(engine) == ("0009", "0009")


def test_upgrade_to_0008_adds_empty_landmark_columns_and_keeps_faces(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    migrate_to(url, "0007")
    with sqlite3.connect(tmp_path / "old.db") as conn:
        add_old_face(conn)
    open_engine(url)
    with sqlite3.connect(tmp_path / "old.db") as conn:
        rows = conn.execute("select p_happy, landmarks, mesh_presence from faces").fetchall()
    assert rows == [(0.5, None, None)]


def test_upgrade_to_0009_retires_explanations_checked_against_20_draws(tmp_path: Path) -> None:
    engine = upgrade_old_explained_face(tmp_path, "0008")
    with sqlite3.connect(tmp_path / "old.db") as conn:
        assert_explanations_retired(
            conn, "deletion_rank", "deletion_draws", "segment_map", "weights"
        )
    assert schema_revisions(engine) == ("0009", "0009")


@pytest.mark.parametrize(
    ("a", "b", "overlap"),
    [
        ("/p/a", "/p/a", True),
        ("/p/a", "/p/a/b", True),
        ("/p/a/b", "/p/a", True),
        ("/", "/p", True),
        ("/p/a", "/p/ab", False),
        ("/p/a", "/p/b", False),
        ("/p/a.jpg", "/p/a", False),
    ],
)
def test_roots_overlap_when_equal_or_nested(a: str, b: str, overlap: bool) -> None:
    assert roots_overlap(a, b) is overlap


def test_unreachable_postgres_is_a_one_line_error(runner: CliRunner, tmp_path: Path) -> None:
    url = "postgresql://nobody@127.0.0.1:1/photos"  # nothing listens on port 1
    result = runner.invoke(cli, ["status", "--db", url])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: cannot open database {url}: connection")
    assert "refused" in result.output.lower()
    assert result.output.count("\n") == 1


def test_missing_postgres_driver_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails
    with pytest.raises(StoreError, match=r"driver psycopg is not installed \(pip install"):
        open_engine("postgresql://nobody@127.0.0.1:1/photos")


def test_path_under_compares_by_codepoint(db_url: str) -> None:
    """Locale collations sort "#" and "+" between "/" and "0"; folders must not care."""
    engine = open_engine(db_url)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql(
                'ALTER TABLE photos ALTER COLUMN path TYPE text COLLATE "und-x-icu"'
            )
    inside = ["/p/a", "/p/a/x.jpg", "/p/a/b/y.jpg"]
    outside = ["/p/a#2/z.jpg", "/p/a+b/z.jpg", "/p/a0/z.jpg", "/p/a.b/z.jpg", "/p/ab/z.jpg"]
    now = utcnow()
    rows = [
        dict(path=p, folder=os.path.dirname(p), size=1, mtime_ns=1, status="ok",
             first_seen=now, last_seen=now, read_at=now)
        for p in inside + outside
    ]  # fmt: skip
    with Session(engine) as session, session.begin():
        session.execute(insert(Photo), rows)
    with Session(engine) as session:
        found = session.scalars(select(Photo.path).where(path_under(Photo.path, "/p/a")))
        assert sorted(found) == sorted(inside)


def test_path_under_is_served_by_an_index(db_url: str) -> None:
    """Folder queries (``top --under``, ``relocate``, a scan's missing check) need no full scan."""
    engine = open_engine(db_url)
    query = select(Photo.id).where(path_under(Photo.path, "/p/a"))
    sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SET enable_seqscan = off")  # an empty table, judged as if large
            plan = " ".join(row[0] for row in conn.exec_driver_sql(f"EXPLAIN {sql}"))
            assert CODEPOINT_PATH_INDEX in plan, plan
        else:
            plan = " ".join(row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
            assert "USING" in plan and "INDEX" in plan and "SCAN photos" not in plan, plan


def test_second_writer_is_refused_with_the_holder_named(db_url: str) -> None:
    url = open_engine(db_url).url.render_as_string(hide_password=False)  # as the CLI does
    with writer_lock(url, wait=0.2):
        with pytest.raises(StoreError) as refused:
            with writer_lock(url, wait=0.2):
                pass
    message = str(refused.value)
    assert "\n" not in message
    holder = rf"\(pid {os.getpid()}( on {re.escape(socket.gethostname())})?\)"
    assert re.match(rf"another photosort scan {holder} is writing ", message), message
    assert "photosort:photosort@" not in message  # the password stays hidden
    assert "+psycopg" not in message  # the URL as the user wrote it
    with writer_lock(url, wait=0):  # released on the way out
        pass


def test_a_scan_is_running_only_while_a_scan_holds_the_library(db_url: str, tmp_path: Path) -> None:
    """A scan killed outright leaves its row "running"; with no scan's lock held, status
    calls it interrupted."""
    engine = open_engine(db_url)
    url = engine.url.render_as_string(hide_password=False)
    with Session(engine) as session, session.begin():
        session.add(Scan(started_at=utcnow(), roots="[]", state="running"))
    assert library_status(engine).last_scan_state == "interrupted"
    with writer_lock(url, roots=[str(tmp_path)]):
        assert library_status(engine).last_scan_state == "running"
    assert library_status(engine).last_scan_state == "interrupted"


def test_locked_postgres_table_waits_a_bounded_time(
    runner: CliRunner, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Like SQLite's busy timeout: wait for another session's lock, then one line, no hang."""
    monkeypatch.setattr(store, "BUSY_SECONDS", 1)
    open_engine(postgres_url)
    blocker = create_engine(driver_url(postgres_url), poolclass=NullPool)
    with blocker.connect() as conn, conn.begin():
        conn.exec_driver_sql("LOCK TABLE photos IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        result = runner.invoke(cli, ["scan", str(tmp_path), "--db", postgres_url, "--no-faces"])
        waited = time.monotonic() - started
    blocker.dispose()
    assert result.exit_code == 1
    assert result.output.startswith("Error: the database is locked by another process; waited 1 s")
    assert result.output.count("\n") == 1
    assert 1 <= waited < 8


def test_database_path_with_url_characters_is_a_plain_path(
    runner: CliRunner, tmp_path: Path
) -> None:
    """ "?" starts a URL's query and "%20" is an escape, but in a --db path they are names."""
    folder = tmp_path / "what? 100%20 mine"
    folder.mkdir()
    db = folder / "lib.db"
    album = tmp_path / "album"
    album.mkdir()
    scanned = runner.invoke(cli, ["scan", str(album), "--db", str(db), "--no-faces"])
    assert scanned.exit_code == 0, scanned.output
    status = runner.invoke(cli, ["status", "--db", str(db), "--json"])
    assert json.loads(status.stdout)["database"] == str(db)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["album", folder.name]
    assert {"lib.db", "lib.db.lock"} <= {p.name for p in folder.iterdir()}
    typo = runner.invoke(cli, ["status", "--db", str(folder / "other.db")])
    assert f"no library at {folder / 'other.db'}:" in typo.output


def test_stored_paths_try_each_ancestor_resolved(tmp_path: Path) -> None:
    """A scan stores its root's real path plus the names it walked, symlinks included."""
    (tmp_path / "disk" / "trip").mkdir(parents=True)
    (tmp_path / "album").mkdir()
    os.symlink(tmp_path / "disk" / "trip", tmp_path / "album" / "trip")
    os.symlink(tmp_path / "album", tmp_path / "alias")
    real = os.path.realpath(tmp_path)
    found = stored_paths(str(tmp_path / "alias" / "trip" / "x.jpg"))
    assert found[0] == str(tmp_path / "alias" / "trip" / "x.jpg")  # as the user spelled it
    assert os.path.join(real, "album", "trip", "x.jpg") in found  # scanned as album/
    assert os.path.join(real, "disk", "trip", "x.jpg") in found  # scanned as disk/trip/
    assert len(found) == len(set(found))
    gone = tmp_path / "unmounted" / "x.jpg"
    assert stored_paths(str(gone))[0] == str(gone)


def add_photos(engine: Engine, paths: list[str], content_hash: str | None = None) -> None:
    """Photo rows as a scan writes them, inserted directly (fast, no files needed)."""
    now = utcnow()
    rows = [
        dict(path=p, folder=os.path.dirname(p), size=1, mtime_ns=1, status="ok",
             content_hash=content_hash or p, first_seen=now, last_seen=now, read_at=now)
        for p in paths
    ]  # fmt: skip
    with Session(engine) as session, session.begin():
        session.execute(insert(Photo), rows)


def library_paths(engine: Engine) -> list[tuple[str, str]]:
    with Session(engine) as session:
        return sorted(
            (path, folder) for path, folder in session.execute(select(Photo.path, Photo.folder))
        )


def test_relocate_to_and_from_the_root(db_url: str) -> None:
    engine = open_engine(db_url)
    add_photos(engine, ["/a.jpg", "/trip/b.jpg"])
    relocate(engine, "/", "/mnt/disk")
    assert library_paths(engine) == [
        ("/mnt/disk/a.jpg", "/mnt/disk"),
        ("/mnt/disk/trip/b.jpg", "/mnt/disk/trip"),
    ]
    moves = relocate(engine, "/mnt/disk/", "/")
    assert moves == [("/mnt/disk/a.jpg", "/a.jpg"), ("/mnt/disk/trip/b.jpg", "/trip/b.jpg")]
    assert library_paths(engine) == [("/a.jpg", "/"), ("/trip/b.jpg", "/trip")]


def test_large_libraries_stay_under_the_bound_variable_limit(db_url: str) -> None:
    """``relocate`` and ``top`` look up more rows than one statement may bind."""
    engine = open_engine(db_url)
    if engine.dialect.name == "sqlite":
        # Builds before SQLite 3.32 allow 999 variables; newer ones 32766, which a large
        # library also passes. Lower the limit so that a modest test reaches it.
        def limit(dbapi_connection: sqlite3.Connection, _record: object) -> None:
            dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)

        event.listen(engine, "connect", limit)
        engine.dispose()
    n = SQL_CHUNK + 150
    add_photos(engine, [f"/old/{i:04d}.jpg" for i in range(n)], content_hash="same")
    add_photos(engine, [f"/new/{n - 1:04d}.jpg"], content_hash="same")  # scanned there already
    with Session(engine) as session, session.begin():
        ids = session.scalars(select(Photo.id).where(path_under(Photo.path, "/old"))).all()
        faces = [
            dict(photo_id=i, idx=0, x=0, y=0, w=10, h=10, score=0.9, sharpness=1, crop=b"",
                 **{c: 1 / 7 for c in store.EMOTION_COLUMNS})
            for i in ids
        ]  # fmt: skip
        session.execute(insert(FaceRow), faces)
    from photosort.ranking import top_photos

    ranked = top_photos(engine, "happy", n, min_probability=0, keep_duplicates=True)
    assert len(ranked) == n and all(len(r.faces) == 1 for r in ranked)
    assert len(relocate(engine, "/old", "/new")) == n
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Photo)) == n  # the twin gave way
        assert session.scalar(select(func.count()).where(path_under(Photo.path, "/new"))) == n


def test_a_writer_whose_lock_session_the_server_ends_commits_nothing_more(
    postgres_url: str, postgres_server: Engine, album: Path
) -> None:
    """The lock session ended (an administrator, a timeout): the writer's next commit is
    refused in one line, and the library keeps what it held."""
    from photosort.indexing import scan_library

    engine = open_engine(postgres_url)
    scan_library(engine, [str(album)], workers=1)
    with writer_lock(engine.url, command="relocate"):
        with postgres_server.connect() as conn:
            ended = conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name LIKE :name"
                ),
                {"name": f"photosort relocate {os.getpid()}@%"},
            ).all()
        assert ended == [(True,)]
        gone = text("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE :name")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the backend ends its session, then exits
            with postgres_server.connect() as conn:
                if not conn.execute(gone, {"name": f"photosort relocate {os.getpid()}@%"}).scalar():
                    break
            time.sleep(0.05)
        with pytest.raises(
            StoreError, match=r"^photosort relocate lost its lock on .*run it again$"
        ):
            relocate(engine, str(album), str(album.parent))
    with Session(engine) as session:
        paths = list(session.scalars(select(Photo.path)))
    assert paths and all(path.startswith(str(album) + os.sep) for path in paths)
    engine.dispose()


KILLED_MIGRATION = """
import os, signal, sys
from photosort.store import open_engine, upgrade

def applied(revision):
    if revision == sys.argv[2]:  # that revision has run: the process dies before its commit
        os.kill(os.getpid(), signal.SIGKILL)

upgrade(open_engine(sys.argv[1], migrate=False), applied)
"""


def kill_migration_after(url: str, revision: str) -> None:
    """Run photosort's upgrade in a process that SIGKILLs itself once ``revision`` ran."""
    done = subprocess.run(
        [sys.executable, "-c", KILLED_MIGRATION, url, revision], capture_output=True, timeout=120
    )
    assert done.returncode == -9, done.stderr


def test_a_new_library_killed_while_its_tables_are_made_opens_as_new(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    url = f"sqlite:///{db}"
    kill_migration_after(url, "0003")
    with sqlite3.connect(db) as conn:  # nothing of the killed migration is left
        assert conn.execute("select name from sqlite_master").fetchall() == []
    engine = open_engine(url)
    assert schema_revisions(engine)[0] == SCHEMA_HEAD


def test_an_upgrade_killed_midway_leaves_the_library_as_it_was(tmp_path: Path) -> None:
    """Killed after 0008, with 0007's new table made: the library is at 0006 as before,
    without that table, and the next command upgrades it."""
    db = tmp_path / "old.db"
    url = f"sqlite:///{db}"
    migrate_to(url, "0006")
    with sqlite3.connect(db) as conn:
        add_old_face(conn)
    kill_migration_after(url, "0008")
    assert schema_revisions(open_engine(url, migrate=False))[0] == "0006"
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("select name from sqlite_master")}
        columns = {row[1] for row in conn.execute("pragma table_info(faces)")}
    assert "scan_claims" not in tables and not any("alembic_tmp" in t for t in tables)
    assert "landmarks" not in columns
    open_engine(url)
    with sqlite3.connect(db) as conn:
        assert conn.execute("select p_happy, landmarks from faces").fetchall() == [(0.5, None)]
        assert conn.execute("select count(*) from scan_claims").fetchone() == (0,)


TABLES = ("photos", "faces", "explanations")


def with_extra_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> None:
    """photosort's migrations plus a revision 0010 after the head, whose upgrade is ``body``."""
    folder = tmp_path / "migrations"
    shutil.copytree(resource_dir("migrations"), folder)
    (folder / "versions" / "0010_extra.py").write_text(
        "from alembic import op\n"
        f"revision = '0010'\ndown_revision = '{SCHEMA_HEAD}'\n"
        "branch_labels = None\ndepends_on = None\n\n"
        f"def upgrade():\n    {body}\n\n"
        "def downgrade():\n    pass\n"
    )
    monkeypatch.setattr(
        store, "resource_dir", lambda name: folder if name == "migrations" else resource_dir(name)
    )
    monkeypatch.setattr(store, "SCHEMA_HEAD", "0010")


def test_a_migration_that_recreates_photos_keeps_their_faces_and_explanations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batch mode copies a table and drops the old one: with SQLite's foreign keys on, the
    drop would delete every face and explanation (ON DELETE CASCADE)."""
    db = tmp_path / "lib.db"
    url = f"sqlite:///{db}"
    open_engine(url)
    with sqlite3.connect(db) as conn:
        add_old_explained_face(conn)
    with_extra_revision(
        tmp_path,
        monkeypatch,
        "with op.batch_alter_table('photos', recreate='always'):\n" + " " * 8 + "pass",
    )
    engine = open_engine(url)
    assert schema_revisions(engine)[0] == "0010"
    with sqlite3.connect(db) as conn:
        counts = [conn.execute(f"select count(*) from {t}").fetchone()[0] for t in TABLES]
    assert counts == [1, 1, 1]
    with engine.connect() as conn:  # the pooled connection has its foreign keys back
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_a_migration_that_would_orphan_rows_is_refused_and_rolled_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "lib.db"
    url = f"sqlite:///{db}"
    open_engine(url)
    with sqlite3.connect(db) as conn:
        add_old_explained_face(conn)
    with_extra_revision(tmp_path, monkeypatch, "op.execute('DELETE FROM photos')")
    orphaned = r"would leave rows that refer to nothing \(1, the first: faces row 1 -> photos\)"
    with pytest.raises(StoreError, match=orphaned):
        open_engine(url)
    assert schema_revisions(open_engine(url, migrate=False))[0] == SCHEMA_HEAD
    with sqlite3.connect(db) as conn:
        counts = [conn.execute(f"select count(*) from {t}").fetchone()[0] for t in TABLES]
    assert counts == [1, 1, 1]
