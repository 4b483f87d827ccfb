"""Test albums built on the fly from scikit-image's bundled photos (no shared data needed)."""

from __future__ import annotations

import functools
import os
import shutil
import struct
import subprocess
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from photosort.sample import build_sample_album, save_jpeg, skimage_photo
from photosort.store import driver_url

POSTGRES_SERVER = os.environ.get("PHOTOSORT_TEST_POSTGRES")
"""A server URL whose role may CREATE DATABASE; each test gets a database of its own there."""
NO_POSTGRES = (
    "PostgreSQL variant: set PHOTOSORT_TEST_POSTGRES=postgresql://user:pass@host/postgres "
    "(a role with CREATEDB) to run it; .ci/run starts a server and sets it"
)
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
"""For tests of what only an SQLite file has (PRAGMAs, its lock file, sqlite3 access)."""


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_bomb_png(path: Path, width: int = 40000, height: int = 40000) -> Path:
    """A tiny file whose header declares a huge image, as decompression bombs do."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body + png_chunk(b"IEND", b""))
    return path


def add_broken_files(folder: Path) -> dict[str, Path]:
    """The bad inputs a real library contains; returns them by kind."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "_source.jpg"
    save_jpeg(good, skimage_photo("coffee"))
    data = good.read_bytes()
    good.unlink()
    files = {
        "empty": folder / "zero.jpg",
        "text": folder / "notes.jpg",
        "truncated": folder / "truncated.jpg",
        "bomb": folder / "bomb.png",
    }
    files["empty"].write_bytes(b"")
    files["text"].write_text("these are not the pixels you are looking for\n")
    files["truncated"].write_bytes(data[: len(data) // 2])
    write_bomb_png(files["bomb"])
    return files


def build_test_album(root: Path) -> dict[str, Path]:
    """Sample album plus broken files, odd names, formats, hidden files and a symlink loop."""
    paths = {p.name: p for p in build_sample_album(root)}
    broken = add_broken_files(root / "broken")
    paths.update({f"broken:{k}": v for k, v in broken.items()})
    nested = root / "trips" / "2021" / "日本 café 😀"
    unicode_photo = save_jpeg(
        nested / "チェルシー «cat» 😀.jpg", skimage_photo("chelsea"), quality=70
    )
    paths["unicode"] = unicode_photo
    gif = nested / "animated.gif"
    frames = [Image.fromarray(skimage_photo("coins")), Image.fromarray(skimage_photo("camera"))]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    paths["gif"] = gif
    bmp = root / "trips" / "horse.bmp"
    Image.fromarray(skimage_photo("horse").astype(np.uint8) * 255).save(bmp)
    paths["bmp"] = bmp
    tiff16 = root / "trips" / "moon16.tif"
    Image.fromarray(skimage_photo("moon").astype(np.uint16) * 257).save(tiff16)
    paths["tiff16"] = tiff16
    disguised = root / "trips" / "mystery.dat"
    Image.fromarray(skimage_photo("rocket")).save(disguised, "PNG")
    paths["disguised"] = disguised
    (root / "trips" / "README.txt").write_text("not a photo")
    hidden = root / ".thumbnails"
    hidden.mkdir()
    save_jpeg(hidden / "thumb.jpg", skimage_photo("astronaut")[::8, ::8])
    save_jpeg(root / "people" / "._astronaut.jpg", skimage_photo("astronaut")[::8, ::8])
    os.symlink("..", root / "trips" / "2021" / "loop")
    return paths


# Every entry of build_test_album that is a photo (good or broken) and not hidden.
ALBUM_PHOTOS = 16
ALBUM_BROKEN = 4

ROOT_DROPS = ["--bounding-set=-dac_override,-dac_read_search", "--"]
"""setpriv(1) options that take from root the two capabilities that override file modes."""


@functools.cache
def _as_a_user() -> tuple[str, ...] | None:
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    probe = subprocess.run([setpriv, *ROOT_DROPS, "true"], capture_output=True)
    return (setpriv, *ROOT_DROPS) if probe.returncode == 0 else None


def as_a_user() -> list[str]:
    """A prefix for a command that must meet file modes as a user does: nothing for a user;
    for root (who reads and writes whatever the mode), setpriv without the capabilities
    that override modes, for the command and every process it starts."""
    prefix = _as_a_user()
    if prefix is None:
        pytest.skip("root ignores file modes, and setpriv (util-linux) cannot drop that here")
    return list(prefix)


@pytest.fixture
def album(tmp_path: Path) -> Path:
    root = tmp_path / "album"
    build_test_album(root)
    return root


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Engine]:
    """The server's maintenance database, where test databases are created and dropped."""
    if not POSTGRES_SERVER:
        pytest.skip(NO_POSTGRES)
    engine = create_engine(
        driver_url(POSTGRES_SERVER), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_url(postgres_server: Engine) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    name = f"photosort_test_{uuid.uuid4().hex[:12]}"
    with postgres_server.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    opened: list[Any] = []

    def remember(dbapi_connection: Any, _record: Any) -> None:
        opened.append(dbapi_connection)

    # Tests open engines freely and drop them; their pooled connections are closed here
    # rather than by the garbage collector, which would warn about each one.
    event.listen(Engine, "connect", remember)
    try:
        yield make_url(POSTGRES_SERVER).set(database=name).render_as_string(hide_password=False)
    finally:
        event.remove(Engine, "connect", remember)
        for connection in opened:
            connection.close()
        # Plain DROP stops autovacuum and waits 5 s for exiting sessions (a killed scan's);
        # FORCE, which a non-superuser may not use on autovacuum, ends any left over.
        with postgres_server.connect() as conn:
            try:
                conn.exec_driver_sql(f'DROP DATABASE "{name}"')
            except OperationalError:
                conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(
    params=[
        "sqlite",
        # A skip mark, unlike a skip inside the fixture, folds into one line per file in -ra.
        pytest.param("postgresql", marks=() if POSTGRES_SERVER else pytest.mark.skip(NO_POSTGRES)),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The library every store and CLI test runs on: an SQLite file, then a fresh
    PostgreSQL database when ``PHOTOSORT_TEST_POSTGRES`` names a server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'library.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()
