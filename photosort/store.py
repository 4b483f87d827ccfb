"""Storing: the library database (SQLAlchemy 2.x models, Alembic migrations, locking).

The schema is owned by the Alembic revisions in ``migrations/``; the models here must agree
with them (a test compares the two). Opening a store brings its schema up to date, so users
never run a migration by hand, and refuses a database written by a newer photosort.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    and_,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError, OperationalError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.expression import FunctionElement

from photosort.defaults import EMOTIONS
from photosort.errors import PhotosortError, first_line
from photosort.resources import resource_dir

PHOTO_STATUSES = ("ok", "unreadable", "missing")
SCHEMA_HEAD = "0009"
"""The newest revision in ``migrations/`` (a test holds the two together)."""
BUSY_SECONDS = 10
"""How long a command waits for a database another process has locked before giving up."""
SCAN_LOCK_KEY = 0x70686F746F736F72
"""PostgreSQL advisory lock key ("photosor" in ASCII) of the writer lock; per database."""
MIGRATION_LOCK_KEY = SCAN_LOCK_KEY + 1
CLAIMS_LOCK_KEY = SCAN_LOCK_KEY + 2
"""Held while a writer takes its locks (a scan: reads and adds ``scan_claims`` rows, so
overlapping claims never both pass), and shared by each writer's commit (``_gated``)."""
CLAIM_LOCK_CLASS = 0x70686F74
"""First key of the two-key advisory lock a running scan holds on its claim row's id."""
LOCK_WAIT_SECONDS = 3.0
"""How long a second writer waits for the lock before it is refused with the holder named."""
CONNECT_TIMEOUT_SECONDS = 10
EMOTION_COLUMNS = tuple(f"p_{emotion}" for emotion in EMOTIONS)
"""One column per emotion, in ``photosort.emotions.EMOTIONS`` order, so SQL can rank by any."""
SQL_CHUNK = 900
"""Values per ``IN (...)``: SQLite builds before 3.32 allow only 999 bound variables in a
statement, and every other limit (32766, PostgreSQL's 65535) is higher."""

T = TypeVar("T")


class StoreError(PhotosortError):
    """The database cannot be used; the message says why in one line."""


class Base(DeclarativeBase):
    pass


class Photo(Base):
    """One file in the library. Its id is its identity: it survives moves and renames."""

    __tablename__ = "photos"
    __table_args__ = (
        CheckConstraint("status IN ('ok', 'unreadable', 'missing')", name="ck_photos_status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    folder: Mapped[str] = mapped_column(Text, index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    format: Mapped[str | None] = mapped_column(String(8))
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    taken_at: Mapped[datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(16), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(DateTime)
    last_seen: Mapped[datetime] = mapped_column(DateTime)
    read_at: Mapped[datetime] = mapped_column(DateTime)
    faces_state: Mapped[str] = mapped_column(String(16), server_default="pending", index=True)
    faces_error: Mapped[str | None] = mapped_column(Text)
    detector: Mapped[str | None] = mapped_column(String(64))
    phash: Mapped[str | None] = mapped_column(String(16))

    faces: Mapped[list[FaceRow]] = relationship(
        back_populates="photo", cascade="all, delete-orphan", order_by="FaceRow.idx"
    )


class FaceRow(Base):
    """One face in a photo: where it is, its stored crop, and its emotion probabilities.

    The crop (a small greyscale PNG) lets later stages classify again and explain without
    decoding the photo. ``model_id`` says which model gave the probabilities, so a new model
    re-classifies stored crops instead of detecting again.
    """

    __tablename__ = "faces"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    photo_id: Mapped[int] = mapped_column(ForeignKey("photos.id", ondelete="CASCADE"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)
    w: Mapped[float] = mapped_column(Float)
    h: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    sharpness: Mapped[float] = mapped_column(Float)
    crop: Mapped[bytes] = mapped_column(LargeBinary)
    model_id: Mapped[str | None] = mapped_column(String(64), index=True)
    classify_error: Mapped[str | None] = mapped_column(Text)
    p_angry: Mapped[float | None] = mapped_column(Float)
    p_disgust: Mapped[float | None] = mapped_column(Float)
    p_fear: Mapped[float | None] = mapped_column(Float)
    p_happy: Mapped[float | None] = mapped_column(Float)
    p_sad: Mapped[float | None] = mapped_column(Float)
    p_surprise: Mapped[float | None] = mapped_column(Float)
    p_neutral: Mapped[float | None] = mapped_column(Float)
    landmarks: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    """The face mesh's ``(468, 3)`` float16 landmarks in the crop's pixels."""
    mesh_presence: Mapped[float | None] = mapped_column(Float, nullable=True)

    photo: Mapped[Photo] = relationship(back_populates="faces")
    explanations: Mapped[list[ExplanationRow]] = relationship(
        back_populates="face", cascade="all, delete-orphan"
    )

    @property
    def probabilities(self) -> list[float] | None:
        values = [getattr(self, c) for c in EMOTION_COLUMNS]
        return None if any(v is None for v in values) else values


class Scan(Base):
    """One run of ``photosort scan``: when, over which folders, and how it ended."""

    __tablename__ = "scans"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    roots: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))
    counts: Mapped[str | None] = mapped_column(Text)


class ScanClaim(Base):
    """The folders a running scan of a PostgreSQL library writes (``writer_lock``)."""

    __tablename__ = "scan_claims"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    roots: Mapped[str] = mapped_column(Text)
    host: Mapped[str] = mapped_column(Text)
    pid: Mapped[int] = mapped_column(Integer)
    claimed_at: Mapped[datetime] = mapped_column(DateTime)


class ExplanationRow(Base):
    """A cached LIME explanation, keyed by face, model and parameters.

    Re-rendering a report reuses it; a new model or other parameters make a new one.
    """

    __tablename__ = "explanations"
    __table_args__ = (
        UniqueConstraint(
            "face_id", "model_id", "emotion", "samples", "segments", "seed", name="uq_explanation"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    face_id: Mapped[int] = mapped_column(ForeignKey("faces.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(String(64))
    emotion: Mapped[str] = mapped_column(String(16))
    samples: Mapped[int] = mapped_column(Integer)
    segments: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    probability: Mapped[float] = mapped_column(Float)
    fit: Mapped[float] = mapped_column(Float)
    deletion_support: Mapped[float] = mapped_column(Float)
    deletion_random: Mapped[float] = mapped_column(Float)
    deletion_spread: Mapped[float | None] = mapped_column(Float, nullable=True)
    """None only in principle (revision 0006 added it and dropped the rows without it)."""
    deletion_rank: Mapped[float | None] = mapped_column(Float, nullable=True)
    """Share of the random draws whose drop the support's beats (revision 0009)."""
    deletion_draws: Mapped[int | None] = mapped_column(Integer, nullable=True)
    segment_map: Mapped[bytes] = mapped_column(LargeBinary)
    weights: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime)

    face: Mapped[FaceRow] = relationship(back_populates="explanations")


class _CodepointOrder(FunctionElement[str]):
    """A text expression compared by codepoint, which the range in ``path_under`` needs.

    SQLite compares text by codepoint already, so the expression renders unchanged and the
    index on the bare column serves the range. PostgreSQL compares in the database's locale,
    where "/" need not sort between its neighbours, so there it gets ``COLLATE "C"``.
    """

    type = Text()
    inherit_cache = True


@compiles(_CodepointOrder)
def _compile_codepoint_order(element: _CodepointOrder, compiler: Any, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(_CodepointOrder, "postgresql")
def _compile_codepoint_order_pg(element: _CodepointOrder, compiler: Any, **kw: Any) -> str:
    return f'{compiler.process(element.clauses, **kw)} COLLATE "C"'


# On PostgreSQL only (migration 0004): an index on ``path COLLATE "C"`` for ``path_under``.
# SQLAlchemy models cannot declare an index for one dialect alone, so it lives in the
# migration, and comparisons of models with the database leave it out.
CODEPOINT_PATH_INDEX = "ix_photos_path_codepoint"


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic's filter for comparing models with a database: skip the dialect-only index."""
    return not (type_ == "index" and name == CODEPOINT_PATH_INDEX)


def path_under(column: Any, folder: str) -> Any:
    """SQL for "this path is ``folder`` or inside it", as an index-friendly range."""
    prefix = folder.rstrip(os.sep) + os.sep
    upper = prefix[:-1] + chr(ord(os.sep) + 1)
    ordered = _CodepointOrder(column)
    return or_(column == folder, and_(ordered >= prefix, ordered < upper))


def roots_overlap(a: str, b: str) -> bool:
    """Whether two scanned paths share photos: the same, or one inside the other."""
    a_dir, b_dir = a.rstrip(os.sep) + os.sep, b.rstrip(os.sep) + os.sep
    return a == b or a.startswith(b_dir) or b.startswith(a_dir)


def chunked(items: Sequence[T], size: int = SQL_CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in slices small enough to bind in one ``IN (...)``, whatever the library's size."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def stored_paths(path: str) -> list[str]:
    """Every path a scan may have stored for the user's ``path``, their spelling first.

    A scan stores the real path of the folder it was given and, below it, the names it
    walked, symlinked subfolders included. So any ancestor of ``path`` may be the resolved
    one: ``show``, ``explain`` and ``top --under`` try each. Nothing needs to exist (a photo
    on an unmounted drive is still in the library).
    """
    absolute = os.path.abspath(path)
    found = [absolute]
    head, tail = absolute, ""
    while True:
        found.append(os.path.join(os.path.realpath(head), tail) if tail else os.path.realpath(head))
        parent, name = os.path.split(head)
        if not name:
            break
        head, tail = parent, os.path.join(name, tail) if tail else name
    return list(dict.fromkeys(found))


def photo_under(engine: Engine, folder: str) -> str | None:
    """A photo of the library recorded in ``folder`` or below it, under any spelling a scan
    may have stored (:func:`stored_paths`); None when there is none."""
    spellings = stored_paths(folder)
    with Session(engine) as session:
        return session.scalars(
            select(Photo.path).where(or_(*(path_under(Photo.path, p) for p in spellings))).limit(1)
        ).first()


def utcnow() -> datetime:
    """Naive UTC, the form SQLite stores; all timestamps in the library use it."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def default_db_path() -> Path:
    """The library file when neither ``--db`` nor ``PHOTOSORT_DB`` names one (XDG data dir)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "photosort" / "library.db"


def database_url(value: str | URL | None) -> URL:
    """Turn ``--db``'s value (a URL or a file path) into an SQLAlchemy URL.

    None means the default file, whose folder is created; a path the user names must be in
    an existing folder, so a typo is an error rather than a new empty library somewhere.
    A path becomes a URL object, never URL text: "?" or "%20" in a folder name would be
    read as a query or an escape.
    """
    if isinstance(value, URL):
        return value
    if value is None:
        path = default_db_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        return URL.create("sqlite", database=str(path))
    if "://" in value:
        try:
            return make_url(value)
        except ArgumentError as exc:
            raise StoreError(f"not a database URL: {value}") from exc
    path = Path(value).expanduser().absolute()
    if path.is_dir():
        raise StoreError(f"cannot open database {value}: it is a folder")
    if not path.parent.is_dir():
        raise StoreError(f"cannot open database {value}: folder {path.parent} does not exist")
    return URL.create("sqlite", database=str(path))


def driver_url(url: str | URL) -> URL:
    """The URL to connect with: plain ``postgresql://`` means psycopg 3, which the
    ``postgresql`` extra installs, not SQLAlchemy's default psycopg2."""
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def shown_url(url: str | URL, *, for_command: bool = False) -> str:
    """The library for messages: an SQLite file's plain path, else its URL with the password
    hidden and the driver photosort picks left out. ``for_command``: the password left out
    altogether, for a command written into a page (libpq finds it in ~/.pgpass or
    $PGPASSWORD), rather than a masked one no command could use."""
    db_file = sqlite_file(url)
    if db_file is not None:
        return str(db_file)
    parsed = make_url(url)
    if parsed.drivername == "postgresql+psycopg":
        parsed = parsed.set(drivername="postgresql")
    if for_command:
        return parsed._replace(password=None).render_as_string(hide_password=False)
    return parsed.render_as_string(hide_password=True)


def _connect_args(url: URL, application_name: str = "photosort") -> dict[str, Any]:
    """A bounded wait for a PostgreSQL server that does not answer, and a name in
    ``pg_stat_activity``; what the URL itself says wins."""
    if url.get_backend_name() != "postgresql":
        return {}
    args: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "application_name": application_name,
    }
    return {k: v for k, v in args.items() if k not in url.query}


def sqlite_file(url: str | URL) -> Path | None:
    """The database file behind an SQLite URL, or None for in-memory and server databases."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.query.get("uri") == "true" and parsed.database.startswith("file:"):
        return Path(unquote(parsed.database.removeprefix("file:")))
    return Path(parsed.database)


def _read_only_sqlite(url: URL) -> URL | None:
    """The URL that opens an SQLite library photosort cannot write (its file or its folder
    is read-only), else None.

    SQLite in WAL mode writes ``-wal`` and ``-shm`` files beside the database even to read
    it. Made by a reader that may not write the library (someone else's, shared read-only),
    they would stay behind, and the owner's next scan could not write its own library. So
    the file is opened ``immutable``: nothing written, nothing locked (a scan its owner
    starts meanwhile can at worst make that one read fail). A ``-wal`` left there by a scan
    holds committed work, and is read in plain read-only mode.
    """
    db_file = sqlite_file(url)
    if db_file is None or url.query.get("uri") or not db_file.exists():
        return None
    if _writable_folder(db_file) and os.access(db_file, os.W_OK):
        return None
    wal = db_file.with_name(db_file.name + "-wal")
    has_wal = wal.exists() and wal.stat().st_size > 0
    query = {"uri": "true", **({"mode": "ro"} if has_wal else {"immutable": "1"})}
    return url.set(database="file:" + quote(str(db_file)), query=query)


def is_read_only(engine: Engine) -> bool:
    """Whether the library was opened read-only (its file or its folder cannot be written)."""
    query = engine.url.query
    return query.get("immutable") == "1" or query.get("mode") == "ro"


def _sqlite_pragmas(read_only: bool) -> Callable[[Any, Any], None]:
    def set_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        if not read_only:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_SECONDS * 1000}")
        cursor.close()

    return set_pragmas


def _pg_session(dbapi_connection: Any, _record: Any) -> None:
    """SQLite's busy timeout on PostgreSQL: wait for another session's lock, but not forever.

    A SET rather than a startup option, which connection poolers such as PgBouncer refuse.
    """
    with dbapi_connection.cursor() as cursor:
        cursor.execute(f"SET lock_timeout = '{BUSY_SECONDS}s'")
    dbapi_connection.commit()


def _migrations_config(connection: Any, applied: Callable[[str], None] | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resource_dir("migrations")))
    cfg.attributes["connection"] = connection
    if applied is not None:
        cfg.attributes["on_version_apply"] = lambda *, step, **_: applied(
            ", ".join(step.up_revision_ids)
        )
    return cfg


def schema_revisions(engine: Engine) -> tuple[str | None, str]:
    """The database's Alembic revision and the newest one this photosort knows."""
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(resource_dir("migrations")))
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, script.get_current_head() or ""


def _known_revision(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory(str(resource_dir("migrations"))).get_revision(revision) is not None
    except CommandError:
        return False


def _is_current(engine: Engine) -> bool:
    """The library records SCHEMA_HEAD alone, read with plain SQL: a read command on a
    current library never loads Alembic and its migration scripts (60 ms)."""
    try:
        with engine.connect() as conn:
            rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
    except DatabaseError:  # no such table yet: Alembic tells the rest
        return False
    return [tuple(row) for row in rows] == [(SCHEMA_HEAD,)]


def pending_upgrade(engine: Engine) -> tuple[str | None, str] | None:
    """The schema's revision and the newest one when the library must be upgraded, None
    when it is current; a schema this photosort must not upgrade is a StoreError.

    The schema is read in one transaction, on PostgreSQL under the migration lock
    (``upgrade``): a command opening a new library while another creates its tables sees
    all of them with their revision or none, rather than tables without a revision, which
    would make it call the library damaged.
    """
    if _is_current(engine):
        return None
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect

    with engine.begin() as conn:
        schema_transaction(conn, write=False)
        current = MigrationContext.configure(conn).get_current_revision()
        has_tables = current is None and inspect(conn).has_table(Photo.__tablename__)
    head = ScriptDirectory(str(resource_dir("migrations"))).get_current_head() or ""
    if current == head:
        return None
    shown = shown_url(engine.url)
    if has_tables:
        raise StoreError(
            f"database {shown} holds photosort's tables but no schema revision "
            "(its alembic_version table is empty or gone); restore it from a backup"
        )
    if current is not None and not _known_revision(current):
        raise StoreError(
            f"database {shown} was written by a "
            f"newer photosort (schema {current}); upgrade photosort to use it"
        )
    if is_read_only(engine):
        raise StoreError(
            f"database {shown} is read-only and needs an upgrade (schema "
            f"{current}); run photosort db upgrade where it is writable"
        )
    return current, head


def upgrade(engine: Engine, applied: Callable[[str], None] | None = None) -> bool:
    """Bring the schema up to the newest revision; return whether anything was applied.

    ``applied`` is called with each revision's id once it has run: a long upgrade shows
    where it is.
    """
    if pending_upgrade(engine) is None:
        return False
    from alembic import command

    with engine.connect() as conn, _foreign_keys_off(conn):
        with conn.begin():
            schema_transaction(conn, write=True)
            command.upgrade(_migrations_config(conn, applied), "head")
            _check_foreign_keys(conn)
    return True


@contextmanager
def _foreign_keys_off(conn: Any) -> Iterator[None]:
    """SQLite's foreign keys off while the schema changes, as SQLite's own procedure for
    altering tables asks: a batch migration recreates a table by copying it and dropping the
    old one, and with foreign keys on, dropping ``photos`` or ``faces`` deletes every row
    that refers to it (ON DELETE CASCADE). The pragma has no effect inside a transaction, so
    it is set around it, and set back however the migration ends."""
    if conn.dialect.name != "sqlite":
        yield
        return
    conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
    conn.commit()
    try:
        yield
    finally:
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        conn.commit()


def _check_foreign_keys(conn: Any) -> None:
    """With foreign keys off, nothing stops a migration from leaving a row that refers to
    nothing: the migration is refused and rolled back instead."""
    if conn.dialect.name != "sqlite":
        return
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
    if broken:
        table, rowid, parent, _ = broken[0]
        raise StoreError(
            f"a schema migration would leave rows that refer to nothing ({len(broken)}, the "
            f"first: {table} row {rowid} -> {parent}); the library was left as it was"
        )


def schema_transaction(conn: Any, *, write: bool) -> None:
    """Make the connection's transaction one that a schema change or a read of the schema
    can rely on, at its start.

    SQLite: Python's driver opens a transaction only before a row is written, so without an
    explicit BEGIN each CREATE TABLE of a migration would commit on its own, and a migration
    killed midway would leave tables without a revision: a library no command opens again.
    In one transaction a killed migration leaves the library as it was. IMMEDIATE takes the
    write lock first, so that two commands creating one library take turns; a read gets
    one snapshot. PostgreSQL: machines opening a new library at once wait on an advisory
    lock, so one migrates and the others read the schema after it committed.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    elif conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def open_engine(url: str | URL, *, migrate: bool = True) -> Engine:
    """Open (creating if needed) a library database and bring its schema up to date."""
    shown = shown_url(url)
    try:
        parsed = driver_url(url)
        db_file = sqlite_file(parsed)
        if db_file is not None and db_file.is_file() and not os.access(db_file, os.R_OK):
            raise StoreError(f"cannot open database {shown}: permission denied")
        read_only = _read_only_sqlite(parsed)
        if read_only is not None:
            parsed = read_only
        postgresql = parsed.get_backend_name() == "postgresql"
        # A pooled PostgreSQL connection may have been ended by the server while it sat in
        # the pool (an idle-session timeout): pinged first, a dead one is replaced.
        engine = create_engine(parsed, connect_args=_connect_args(parsed), pool_pre_ping=postgresql)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas(read_only is not None))
        elif engine.dialect.name == "postgresql":
            event.listen(engine, "connect", _pg_session)
            event.listen(engine, "commit", _check_held_lock)
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        if migrate:
            upgrade(engine)
    except StoreError:
        raise
    except (NoSuchModuleError, ArgumentError) as exc:
        raise StoreError(f"cannot open database {shown}: unsupported URL ({exc})") from exc
    except ModuleNotFoundError as exc:
        hint = " (pip install 'psycopg[binary]')" if exc.name == "psycopg" else ""
        raise StoreError(
            f"cannot open database {shown}: driver {exc.name} is not installed{hint}"
        ) from exc
    except ImportError as exc:
        raise StoreError(
            f"cannot open database {shown}: driver cannot be loaded ({first_line(exc)})"
        ) from exc
    except (OperationalError, DatabaseError) as exc:
        raise StoreError(f"cannot open database {shown}: {first_line(exc.orig or exc)}") from exc
    except Exception as exc:
        from alembic.util import CommandError

        if isinstance(exc, CommandError):
            raise StoreError(f"cannot migrate database {shown}: {exc}") from exc
        raise
    return engine


def try_for(wait: float, attempt: Callable[[], bool]) -> bool:
    """Call ``attempt`` until it succeeds or ``wait`` seconds have passed."""
    deadline = time.monotonic() + wait
    while not attempt():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def try_flock(fd: int) -> bool:
    """Take an exclusive ``flock`` on ``fd`` if no other open file holds one; never waits."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def describe_db_error(exc: BaseException, url: str | URL | None = None) -> str:
    """One line for a database failure in the middle of work (disk full, locked, gone).

    Committed batches are safe: SQLite and PostgreSQL roll the failed transaction back, so
    the library stays readable at its previous state.
    """
    orig = getattr(exc, "orig", exc)
    text = first_line(orig)
    if "locked" in text or "lock timeout" in text:  # SQLite, PostgreSQL
        holder = _lock_holder(url) if url else None
        who = f" ({holder} holds it)" if holder else ""
        return f"the database is locked by another process{who}; waited {BUSY_SECONDS} s: {text}"
    if "full" in text or "No space" in text:
        return f"the disk holding the database is full ({text}); nothing committed was lost"
    return f"database error: {text}"


def _lock_holder(url: str | URL) -> str | None:
    db_file = sqlite_file(url)
    if db_file is None:
        return None
    try:
        content = db_file.with_name(db_file.name + ".lock").read_bytes()
    except OSError:
        return None
    return _holder_text(content) if content.strip() else None


_HELD_LOCK_FDS: set[int] = set()
"""Lock files this process holds open; a forked child closes its copies at once."""


def _close_held_locks_in_child() -> None:
    """A worker forked while the writer lock is held must not keep it: an ``flock`` belongs
    to the open file, which the child shares, so an orphaned worker would hold the lock of a
    scan killed long ago and every later one would be refused."""
    for fd in _HELD_LOCK_FDS:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCK_FDS.clear()


os.register_at_fork(after_in_child=_close_held_locks_in_child)


@contextmanager
def writer_lock(
    url: str | URL,
    *,
    command: str = "scan",
    wait: float | None = None,
    roots: Sequence[str] | None = None,
) -> Iterator[None]:
    """Hold the library's writer lock, so that commands never write the same photos at once.

    Every command that writes takes it. ``prune``, ``relocate`` and ``db upgrade`` (no
    ``roots``) take the whole library. A scan passes its ``roots``: on PostgreSQL it shares
    the library with scans of other folders and is refused only beside one whose roots
    overlap its own (``_pg_writer_lock``); an SQLite file has one writer at a time. A writer
    that cannot start waits up to ``wait`` seconds (default ``LOCK_WAIT_SECONDS``: a scan
    that is just finishing), then is refused with the holder named. For an SQLite file the
    lock is an advisory ``flock`` on ``<db>.lock`` beside it, which the kernel releases when
    the process dies, even by SIGKILL, and which forked workers do not keep
    (``_close_held_locks_in_child``): no stale locks to clean up.
    """
    wait = LOCK_WAIT_SECONDS if wait is None else wait
    if make_url(url).get_backend_name() == "postgresql":
        with _pg_writer_lock(url, command, wait, roots):
            yield
        return
    db_file = sqlite_file(url)
    if db_file is None:
        yield
        return
    if db_file.exists() and not os.access(db_file, os.W_OK):
        raise StoreError(f"cannot write {db_file}: the file is read-only")
    lock_path = db_file.with_name(db_file.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if _writable_folder(db_file):
            raise StoreError(f"cannot lock {db_file}: {exc.strerror or exc}") from exc
        raise StoreError(f"cannot write {db_file}: its folder is read-only") from exc
    _HELD_LOCK_FDS.add(fd)
    try:
        if not try_for(wait, lambda: try_flock(fd)):
            holder = _holder_text(os.pread(fd, 64, 0))
            raise StoreError(f"another {holder} is writing {db_file}; wait for it to finish")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {command}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        _HELD_LOCK_FDS.discard(fd)
        os.close(fd)


def _holder_text(content: bytes) -> str:
    """``photosort scan (pid 4242)`` from a lock file holding ``4242 scan``."""
    pid, _, command = content.decode(errors="replace").strip().partition(" ")
    return f"photosort {command or 'scan'} (pid {pid or 'unknown'})"


def _writable_folder(db_file: Path) -> bool:
    return os.access(db_file.parent, os.W_OK)


_HOLDER_QUERY = text(
    """
    SELECT a.application_name, host(a.client_addr), a.pid
    FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid::bigint = :high AND l.objid::bigint = :low
    """
)
_WRITER_NAME = re.compile(r"photosort (\w[\w ]*) (\d+)@(.*)")


@contextmanager
def _pg_writer_lock(
    url: str | URL, command: str, wait: float, roots: Sequence[str] | None
) -> Iterator[None]:
    """The writer lock on PostgreSQL: session-level advisory locks on a connection of its own.

    The library lock is taken shared by scans and exclusively by the other writers, so
    scans run together and ``prune`` runs alone. A scan then claims its roots
    (``_claim_roots``). Machines that share the library see the same locks. The
    connection's ``application_name`` carries this process's id and host, which
    ``pg_stat_activity`` shows to every role, so a refused writer can name the holder. The
    server drops the locks when the session ends: when the holder exits or is killed, and,
    through the TCP keepalives set here, within about two minutes of its machine vanishing.
    While the writer runs, the session is kept from timing out (``_keep_session``) and each
    of its commits checks that the locks are still there (``_check_held_lock``).
    """
    parsed = driver_url(url)
    shown = shown_url(url)
    name = f"photosort {command} {os.getpid()}@{socket.gethostname()}"[:63]
    args = {**_connect_args(parsed), "application_name": name}
    engine = create_engine(
        parsed, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args=args
    )
    conn = None
    key = _held_lock_key(parsed)
    try:
        try:
            conn = engine.connect()
            _keep_session(conn)
            mode = "_shared" if roots is not None else ""
            lock = text(f"SELECT pg_try_advisory_lock{mode}(:key)").bindparams(key=SCAN_LOCK_KEY)
            refusal = ""
            claim_id = None
            if not try_for(wait, lambda: _gated(conn, lambda: bool(conn.scalar(lock)))):
                refusal = f"another {_pg_lock_holder(conn)} is writing {shown}"
            elif roots is not None:
                refusal, claim_id = _claim_roots(conn, roots, wait, shown)
            backend = conn.scalar(text("SELECT pg_backend_pid()"))
        except (OperationalError, DatabaseError) as exc:
            reason = first_line(exc.orig or exc)
            raise StoreError(f"cannot lock database {shown}: {reason}") from exc
        if refusal:
            raise StoreError(f"{refusal}; wait for it to finish")
        _HELD_LOCKS[key] = _HeldLock(command, shown, int(backend), roots is not None, claim_id)
        try:
            yield
        finally:
            _HELD_LOCKS.pop(key, None)
    finally:
        if conn is not None:
            conn.close()  # ends the session, which releases the locks
        engine.dispose()


def _keep_session(conn: Any) -> None:
    """Keep the lock session open for as long as the writer runs.

    The server drops advisory locks with their session, and servers end sessions that look
    idle (``idle_session_timeout``, set per database or role by an administrator): the lock
    session is idle by design, so it turns those timeouts off for itself (the settings that
    this server has). TCP keepalives keep firewalls from dropping the connection, and let
    the server notice a writer's machine that vanished.
    """
    for setting in ("idle = 60", "interval = 10", "count = 6"):
        conn.exec_driver_sql(f"SET tcp_keepalives_{setting}")
    conn.execute(
        text(
            "SELECT set_config(name, '0', false) FROM pg_settings WHERE name IN "
            "('idle_session_timeout', 'idle_in_transaction_session_timeout')"
        )
    )


def _gated(conn: Any, attempt: Callable[[], T]) -> T:
    """Run a lock attempt while no writer of this library is committing.

    A writer checks in each commit, holding ``CLAIMS_LOCK_KEY`` shared, that its locks are
    still held (``_check_held_lock``); a writer taking locks holds the key exclusively. So
    a commit whose locks were lost after its check still ends before anyone takes them.
    """
    conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": CLAIMS_LOCK_KEY})
    try:
        return attempt()
    finally:
        conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": CLAIMS_LOCK_KEY})


@dataclass(frozen=True)
class _HeldLock:
    """The writer lock this process holds on one PostgreSQL library, as its commits check it."""

    command: str
    shown: str
    backend_pid: int
    """The lock session's server process, whose locks ``pg_locks`` lists."""
    shared: bool
    claim_id: int | None


_HELD_LOCKS: dict[str, _HeldLock] = {}
"""The writer locks this process holds, by library (``_held_lock_key``)."""

_STILL_HELD = """
    SELECT count(*) FROM pg_locks
    WHERE locktype = 'advisory' AND granted AND pid = %(pid)s
      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND ((objsubid = 1 AND classid::bigint = %(high)s AND objid::bigint = %(low)s
            AND mode = %(mode)s)
        OR (objsubid = 2 AND classid::bigint = %(cls)s AND objid::bigint = %(claim)s))
"""


def _held_lock_key(url: URL) -> str:
    return driver_url(url).render_as_string(hide_password=False)


def _check_held_lock(conn: Any) -> None:
    """Refuse a commit of a writer whose lock session the server ended.

    A server ends sessions for reasons of its own (an administrator's
    ``pg_terminate_backend``, a pooler, a restart), and with the session go the locks: a
    second scan of the same folders could then be admitted. So each commit first checks,
    in its own transaction, that the lock session still holds every lock the writer took;
    if not, the commit is refused and the writer ends with one line, keeping what it
    committed before.
    """
    held = _HELD_LOCKS.get(_held_lock_key(conn.engine.url))
    if held is None:
        return
    params = {
        "pid": held.backend_pid,
        "high": SCAN_LOCK_KEY >> 32,
        "low": SCAN_LOCK_KEY & 0xFFFFFFFF,
        "mode": "ShareLock" if held.shared else "ExclusiveLock",
        "cls": CLAIM_LOCK_CLASS,
        "claim": -1 if held.claim_id is None else held.claim_id,
    }
    try:
        with conn.connection.dbapi_connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock_shared(%(key)s)", {"key": CLAIMS_LOCK_KEY})
            cursor.execute(_STILL_HELD, params)
            (found,) = cursor.fetchone()
    except conn.dialect.loaded_dbapi.Error as exc:
        raise StoreError(f"database error: {first_line(exc)}") from exc
    if found < (1 if held.claim_id is None else 2):
        raise StoreError(
            f"photosort {held.command} lost its lock on {held.shown}: the server ended the "
            "lock's session (an administrator, a timeout or the network), so it stopped "
            "writing; what it committed is kept, run it again"
        )


_CLAIM_HELD = """EXISTS (
        SELECT FROM pg_locks AS l
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.classid::bigint = :cls AND l.objid::bigint = c.id)"""
"""A claim whose scan is alive: its session still holds the advisory lock on the claim."""

_DELETE_STALE_CLAIMS = text(f"DELETE FROM scan_claims AS c WHERE NOT {_CLAIM_HELD}").bindparams(
    cls=CLAIM_LOCK_CLASS
)

_LIVE_CLAIMS = text(f"SELECT EXISTS (SELECT FROM scan_claims AS c WHERE {_CLAIM_HELD})").bindparams(
    cls=CLAIM_LOCK_CLASS
)


def _scan_alive(engine: Engine) -> bool:
    """Whether a scan is writing the library now.

    A scan killed outright (SIGKILL, power cut) leaves its row ``running``; its lock went
    with it. SQLite: the writer lock on ``<db>.lock`` is free. PostgreSQL: no claim is held.
    """
    if engine.url.get_backend_name() == "postgresql":
        with engine.connect() as conn:
            return bool(conn.scalar(_LIVE_CLAIMS))
    db_file = sqlite_file(engine.url)
    if db_file is None:
        return True  # an in-memory library: only this process writes it
    try:
        fd = os.open(db_file.with_name(db_file.name + ".lock"), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False  # no writer ever locked it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # and with it the shared lock, at once
    return False


def _claim_roots(
    conn: Any, roots: Sequence[str], wait: float, shown: str
) -> tuple[str, int | None]:
    """Record this scan's roots unless a running scan's overlap them; return the refusal,
    else the claim's id.

    The row is tied to this session by an advisory lock on its id, which the server drops
    with the session: a row without its lock was left by a killed scan, and is deleted
    here. Claims are read and added under ``CLAIMS_LOCK_KEY``, so two scans of one folder
    starting together never both pass. The row needs no deleting on the way out.
    """
    table = ScanClaim.__table__
    refusal = ""
    claimed: list[int] = []

    def claim() -> bool:
        nonlocal refusal
        conn.execute(_DELETE_STALE_CLAIMS)
        for row in conn.execute(select(table)):
            theirs = json.loads(row.roots)
            clash = next((r for r in theirs for o in roots if roots_overlap(r, o)), None)
            if clash is not None:
                refusal = f"another photosort scan (pid {row.pid} on {row.host}) is "
                refusal += f"scanning {clash} into {shown}"
                return False
        claim_id = conn.scalar(
            table.insert()
            .values(
                roots=json.dumps(list(roots)),
                host=socket.gethostname(),
                pid=os.getpid(),
                claimed_at=utcnow(),
            )
            .returning(table.c.id)
        )
        conn.execute(
            text("SELECT pg_advisory_lock(:cls, :id)"),
            {"cls": CLAIM_LOCK_CLASS, "id": claim_id},
        )
        claimed.append(claim_id)
        return True

    passed = try_for(wait, lambda: _gated(conn, claim))
    return ("", claimed[0]) if passed else (refusal, None)


def _pg_lock_holder(conn: Any) -> str:
    """Who holds the writer lock: a photosort command's pid and host, else the server's view."""
    row = conn.execute(
        _HOLDER_QUERY, {"high": SCAN_LOCK_KEY >> 32, "low": SCAN_LOCK_KEY & 0xFFFFFFFF}
    ).first()
    if row is None:
        return "photosort command (pid unknown)"
    application_name, client, backend_pid = row
    ours = _WRITER_NAME.fullmatch(application_name or "")
    if ours:
        return f"photosort {ours[1]} (pid {ours[2]} on {ours[3]})"
    return f"photosort command (server pid {backend_pid}, client {client or 'local'})"


@dataclass(frozen=True)
class LibraryStatus:
    """What ``photosort status`` reports."""

    database: str
    photos: int
    by_status: dict[str, int]
    last_scan: datetime | None
    last_scan_state: str | None
    faces: int = 0
    models: dict[str, int] = field(default_factory=dict)
    """Faces classified, by the id of the model that classified them (most faces first)."""
    awaiting_faces: int = 0
    """Readable photos whose faces were never looked for: a scan with ``--no-faces``, or
    one stopped before it reached them. The next scan looks."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "photos": self.photos,
            "by_status": self.by_status,
            "awaiting_faces": self.awaiting_faces,
            "faces": self.faces,
            "models": self.models,
            "last_scan": self.last_scan.isoformat() + "Z" if self.last_scan else None,
            "last_scan_state": self.last_scan_state,
        }


def library_status(engine: Engine) -> LibraryStatus:
    """Count photos by status and faces by the model that classified them; find the last
    scan."""
    with Session(engine) as session:
        counts = dict.fromkeys(PHOTO_STATUSES, 0)
        for status, n in session.execute(select(Photo.status, func.count()).group_by(Photo.status)):
            counts[status] = n
        faces = session.scalar(select(func.count()).select_from(FaceRow)) or 0
        by_model = session.execute(
            select(FaceRow.model_id, func.count())
            .where(FaceRow.model_id.is_not(None))
            .group_by(FaceRow.model_id)
        ).all()
        awaiting = session.scalar(
            select(func.count())
            .select_from(Photo)
            .where(Photo.status == "ok", Photo.faces_state == "pending")
        )
        last = session.scalars(select(Scan).order_by(Scan.id.desc()).limit(1)).first()
    state = last.state if last else None
    if state == "running" and not _scan_alive(engine):
        state = "interrupted"
    return LibraryStatus(
        database=shown_url(engine.url),
        photos=sum(counts.values()),
        by_status=counts,
        last_scan=(last.finished_at or last.started_at) if last else None,
        last_scan_state=state,
        faces=faces,
        models={m: n for m, n in sorted(by_model, key=lambda row: (-row[1], row[0]))},
        awaiting_faces=awaiting or 0,
    )


def unreadable_photos(engine: Engine) -> list[tuple[str, str]]:
    """Paths recorded as unreadable, and readable photos whose faces could not be found (the
    next scan tries those again), with the reason, for ``status --errors``."""
    faces_failed = and_(Photo.status == "ok", Photo.faces_state == "error")
    with Session(engine) as session:
        rows = session.execute(
            select(Photo.path, Photo.error, Photo.faces_error, faces_failed)
            .where(or_(Photo.status == "unreadable", faces_failed))
            .order_by(Photo.path)
        )
        return [
            (path, f"faces not found: {faces_error}" if failed else error or "")
            for path, error, faces_error, failed in rows
        ]


def prune_missing(engine: Engine, *, dry_run: bool = False) -> list[str]:
    """Forget photos marked missing; return their paths. Derived rows go with them.

    One ``DELETE ... WHERE status = 'missing'`` decides and deletes in the same statement,
    so a photo a scan has just found again is never forgotten, and a large library is pruned
    without loading its rows (the foreign keys cascade to faces and explanations).
    """
    missing = Photo.status == "missing"
    with Session(engine) as session, session.begin():
        if dry_run:
            return list(session.scalars(select(Photo.path).where(missing).order_by(Photo.path)))
        deleted = session.scalars(
            delete(Photo).where(missing).returning(Photo.path),
            execution_options={"synchronize_session": False},
        )
        return sorted(deleted)


def dumps_counts(counts: dict[str, Any]) -> str:
    """Counts are kept as JSON text so new kinds of counts need no migration."""
    return json.dumps(counts, sort_keys=True)


def relocate(engine: Engine, old: str, new: str, *, dry_run: bool = False) -> list[tuple[str, str]]:
    """Point every photo under folder ``old`` to the same place under ``new``.

    For a library whose files moved wholesale (a new mount point, a new disk): identities,
    faces, scores and explanations stay. A photo already recorded at its new path (scanned
    there before relocating) is the same file when the content hashes agree, and that newer
    duplicate row gives way; a different file there is an error, and nothing changes.
    """
    old = os.path.abspath(old).rstrip(os.sep) or os.sep
    new = os.path.realpath(new).rstrip(os.sep) or os.sep
    if old == new:
        raise StoreError("the old and new locations are the same")
    moves: list[tuple[str, str]] = []
    with Session(engine) as session, session.begin():
        rows = session.scalars(
            select(Photo).where(path_under(Photo.path, old)).order_by(Photo.path)
        )
        photos = list(rows)
        targets = {p.path: _moved(p.path, old, new) for p in photos}
        existing = {
            p.path: p
            for chunk in chunked(list(targets.values()))
            for p in session.scalars(select(Photo).where(Photo.path.in_(chunk)))
            if p.path not in targets
        }
        for photo in photos:
            clash = existing.get(targets[photo.path])
            if clash is not None and clash.content_hash != photo.content_hash:
                raise StoreError(
                    f"{clash.path} is already in the library as a different file; "
                    "nothing was relocated"
                )
        for photo in photos:
            target = targets[photo.path]
            moves.append((photo.path, target))
            if dry_run:
                continue
            clash = existing.get(target)
            if clash is not None:
                session.delete(clash)
                session.flush()
            photo.folder = _moved(photo.folder, old, new)
            photo.path = target
        if dry_run:
            session.rollback()
    return moves


def _moved(path: str, old: str, new: str) -> str:
    """``path``, which is folder ``old`` or inside it, placed the same way in ``new``.

    Joined rather than concatenated, so that either folder may be "/".
    """
    rest = path[len(old) :].lstrip(os.sep)
    return os.path.join(new, rest) if rest else new
