"""Faults, with real processes and real signals: whatever dies or races, nothing is lost.

Each case runs ``photosort`` as a real process on an album big enough to catch it mid-scan
(hard links to one large photo: little disk, real reading and hashing), does something
hostile to it, then checks that the database is sound (``PRAGMA integrity_check``), that
the library holds exactly the album's photos, that no process of the run is left (/proc),
and that the next command works at once. Every process a test starts is ended when it
finishes, also when it fails.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from photosort.cli import cli
from photosort.sample import save_jpeg, skimage_photo
from photosort.scanning import examine
from photosort.store import driver_url, writer_lock
from tests.conftest import ALBUM_PHOTOS, build_test_album

READ_SECONDS = 3.0
"""About how long two workers take to read the bulk of the big album, on any machine."""
DEADLINE = 60.0
"""No case should come near this; it only keeps a regression from hanging the suite."""
PYTHON = os.environ.get("PHOTOSORT_TEST_PYTHON", sys.executable)
"""The Python whose photosort the faults hit: this checkout's, or an installed wheel's
(test_packaging runs the suite against one)."""
PHOTOSORT = [PYTHON, "-m", "photosort"]


@pytest.fixture(scope="session")
def large_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A noisy 1600x1600 PNG (6.7 MB), made once."""
    rng = np.random.default_rng(1)
    base = np.asarray(Image.fromarray(skimage_photo("astronaut")).resize((1600, 1600)))
    noisy = np.clip(base.astype(int) + rng.integers(-40, 40, base.shape), 0, 255)
    path = tmp_path_factory.mktemp("large") / "large.png"
    Image.fromarray(noisy.astype(np.uint8)).save(path, compress_level=1)
    return path


@pytest.fixture(scope="session")
def bulk(large_photo: Path) -> int:
    """How many copies of the large photo keep two workers reading for ``READ_SECONDS`` on
    this machine, so that every case catches its scan midway, fast machine or slow."""
    seconds = min(_timed(examine, str(large_photo)) for _ in range(3))
    return max(60, min(400, round(2 * READ_SECONDS / seconds)))


@pytest.fixture(scope="session")
def face_bulk(large_photo: Path) -> int:
    """The same for one worker that also finds faces: a photo then costs a decode and the
    detector, far more than reading its header and hash (``bulk``), so fewer copies keep a
    scan with faces running for ``2 * READ_SECONDS``, and it still ends within the deadline."""
    from photosort.faces import FaceSettings, find_faces_with

    with Image.open(large_photo) as img:
        size = img.size

    def scanned() -> None:
        examine(str(large_photo))
        find_faces_with(str(large_photo), size, FaceSettings())

    seconds = min(_timed(scanned) for _ in range(3))
    return max(30, min(400, round(2 * READ_SECONDS / seconds)))


@pytest.fixture
def face_album(tmp_path: Path, large_photo: Path, face_bulk: int) -> Path:
    """The test album and ``face_bulk`` names for the large photo, for scans with faces."""
    return _album_with(tmp_path / "faces album", large_photo, face_bulk)


def ended_as_interrupted(returncode: int | None) -> bool:
    """Exit status 130, as photosort ends an interrupted command, or death by SIGINT, which a
    shell reports as the same 130: under ``python -m``, CPython ends that way once any code
    it ran from a string (for example a dataclass built during a lazy import) was
    interrupted, even when photosort caught the interrupt and exited with 130 itself."""
    return returncode in (130, -signal.SIGINT)


def _timed(fn: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


@pytest.fixture
def big_album(tmp_path: Path, large_photo: Path, bulk: int) -> Path:
    """The test album and ``bulk`` names for the large photo: each costs a real read and
    hash, yet they take the disk space of one."""
    return _album_with(tmp_path / "album", large_photo, bulk)


def _album_with(root: Path, large_photo: Path, copies: int) -> Path:
    build_test_album(root)
    folder = root / "bulk"
    folder.mkdir()
    for i in range(copies):
        os.link(large_photo, folder / f"p{i:03d}.png")
    return root


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "library.db"


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """A process that still runs: there, and not a zombie waiting to be reaped."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != b"Z"


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields is not None and fields[0] != b"Z":
                children.setdefault(int(fields[1]), []).append(int(name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class Runs:
    """The processes a test started, and every process they started: all ended at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen[bytes]] = []
        self.seen: set[int] = set()

    def start(self, *args: str, code: str | None = None) -> subprocess.Popen[bytes]:
        """``photosort ARGS`` as a process of its own; with ``code``, that Python first (a
        test's fault), then the command line as the console script runs it."""
        n = len(self.procs)
        if code is None:
            command = [*PHOTOSORT, *args]
        else:
            main = "\nfrom photosort.cli import cli\ncli(prog_name='photosort')\n"
            command = [PYTHON, "-c", code + main, *args]
        proc = subprocess.Popen(
            command,
            stdout=open(self.tmp_path / f"out{n}", "wb"),  # noqa: SIM115 - closed by the child
            stderr=open(self.tmp_path / f"err{n}", "wb"),  # noqa: SIM115
        )
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> tuple[str, str]:
        n = self.procs.index(proc)
        return (
            (self.tmp_path / f"out{n}").read_text(errors="replace"),
            (self.tmp_path / f"err{n}").read_text(errors="replace"),
        )

    def note(self, proc: subprocess.Popen[bytes]) -> set[int]:
        """Remember the processes below ``proc`` now, so they can be checked after it dies."""
        below = descendants(proc.pid)
        self.seen |= below
        return below

    def wait_for(self, proc: subprocess.Popen[bytes], ready: Callable[[], bool]) -> None:
        """Poll ``ready`` while ``proc`` runs, noting its workers as they come."""
        deadline = time.monotonic() + DEADLINE
        while not ready():
            self.note(proc)
            assert proc.poll() is None, f"exited {proc.returncode} too early: {self.output(proc)}"
            assert time.monotonic() < deadline, "never got there"
            time.sleep(0.02)
        self.note(proc)

    def finish(self, proc: subprocess.Popen[bytes]) -> int:
        return proc.wait(timeout=DEADLINE)

    def end_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.seen |= descendants(proc.pid)
                proc.kill()
            proc.wait()
        for pid in self.seen:
            if alive(pid) and _is_photosort(pid):
                os.kill(pid, signal.SIGKILL)


def _is_photosort(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"photosort" in fh.read()
    except OSError:
        return False


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[Runs]:
    started = Runs(tmp_path)
    try:
        yield started
    finally:
        started.end_all()


def query(db: Path, sql: str, *params: object) -> list[tuple]:
    """Read the library as another program would, while a scan may be writing it."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    except sqlite3.OperationalError:
        return []
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        return []  # not created or migrated yet
    finally:
        conn.close()


def committed(db: Path) -> int:
    rows = query(db, "SELECT count(*) FROM photos")
    return rows[0][0] if rows else 0


def holds_lock(db: Path) -> bool:
    """A scan is writing: the lock file names it (written once the lock is taken; an older
    library is upgraded under the lock first, as ``db upgrade``)."""
    try:
        return db.with_name(db.name + ".lock").read_text().strip().endswith(" scan")
    except OSError:
        return False


def gone_within(pids: set[int], seconds: float) -> float:
    """Seconds until none of ``pids`` runs; fails after ``seconds``."""
    start = time.monotonic()
    while left := {p for p in pids if alive(p)}:
        assert time.monotonic() - start < seconds, f"left running: {sorted(left)}"
        time.sleep(0.02)
    return time.monotonic() - start


def assert_sound(db: Path, album: Path, total: int) -> None:
    """Nothing lost, nothing counted twice: every file of the album is one sound row."""
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    rows = query(db, "SELECT path, status FROM photos")
    assert len(rows) == total, len(rows)
    assert len({path for path, _ in rows}) == total
    assert all(path.startswith(str(album) + os.sep) for path, _ in rows)
    assert not [path for path, status in rows if status == "missing"]


def rescan(db: Path, album: Path, *extra: str) -> dict:
    """The next scan: it must start at once (the lock is free) and complete the album."""
    with writer_lock(f"sqlite:///{db}", wait=0):
        pass
    result = CliRunner().invoke(cli, ["scan", str(album), "--db", str(db), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def scan_args(album: Path, db: Path, workers: int) -> list[str]:
    return ["scan", str(album), "--db", str(db), "--no-faces", "--quiet", f"--workers={workers}"]


@pytest.mark.parametrize(
    ("signum", "workers", "stage"),
    [
        (signal.SIGKILL, 2, "workers started"),
        (signal.SIGKILL, 2, "first commit"),
        (signal.SIGKILL, 1, "first commit"),
        (signal.SIGTERM, 2, "first commit"),
        (signal.SIGTERM, 1, "workers started"),
        (signal.SIGINT, 2, "first commit"),
        (signal.SIGKILL, 2, "model loading"),
    ],
    ids=lambda v: v.name if isinstance(v, signal.Signals) else str(v).replace(" ", "-"),
)
def test_scan_killed_leaves_no_process_and_the_next_scan_completes(
    runs: Runs,
    big_album: Path,
    db: Path,
    bulk: int,
    signum: signal.Signals,
    workers: int,
    stage: str,
) -> None:
    args = scan_args(big_album, db, workers)
    if stage == "model loading":  # with faces: the model loads after the first commit
        args.remove("--no-faces")
    proc = runs.start(*args)
    if stage == "model loading":
        runs.wait_for(proc, lambda: committed(db) > 0)
        time.sleep(1.0)
    elif stage == "first commit":
        runs.wait_for(proc, lambda: committed(db) > 0)
    elif workers > 1:
        runs.wait_for(proc, lambda: len(runs.note(proc)) >= workers)
    else:
        runs.wait_for(proc, lambda: holds_lock(db))
    workers_seen = runs.note(proc)
    assert len(workers_seen) >= (workers if workers > 1 else 0)
    assert committed(db) < (ALBUM_PHOTOS + bulk), "the scan was not caught midway"
    proc.send_signal(signum)
    returncode = runs.finish(proc)
    gone_within(workers_seen, 5.0)
    if signum == signal.SIGKILL:
        assert returncode == -signal.SIGKILL
    else:
        out, err = runs.output(proc)
        assert ended_as_interrupted(returncode), (returncode, out, err)
        assert "scan interrupted" in err and "Traceback" not in err, err
    before = committed(db)
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    report = rescan(db, big_album, "--no-faces")
    assert report["unchanged"] == before and report["new"] == (ALBUM_PHOTOS + bulk) - before
    assert_sound(db, big_album, ALBUM_PHOTOS + bulk)


def test_worker_killed_by_a_signal_costs_nothing_and_shows_no_traceback(
    runs: Runs, big_album: Path, db: Path, bulk: int
) -> None:
    """SIGKILL of one worker (the out-of-memory killer): the pool is replaced, its calls are
    run again, and the scan ends as if nothing had happened."""
    proc = runs.start(*scan_args(big_album, db, 2))
    runs.wait_for(proc, lambda: len(runs.note(proc)) >= 2 and committed(db) > 0)
    victim = min(runs.note(proc))
    os.kill(victim, signal.SIGKILL)
    assert runs.finish(proc) == 0, runs.output(proc)
    out, err = runs.output(proc)
    assert "Traceback" not in err and "BrokenProcessPool" not in err, err
    gone_within(runs.seen, 5.0)
    assert_sound(db, big_album, ALBUM_PHOTOS + bulk)
    assert not query(db, "SELECT path FROM photos WHERE error LIKE '%worker process%'")


KILLER = (
    "import os, signal\n"
    "from photosort import indexing\n"
    "real = indexing.examine\n"
    "def examine(path, *args):\n"
    "    if path.endswith('p050.png'):\n"
    "        os.kill(os.getpid(), signal.SIGKILL)\n"
    "    return real(path, *args)\n"
    "indexing.examine = examine\n"
)


def test_photo_that_kills_its_worker_costs_only_that_photo(
    runs: Runs, big_album: Path, db: Path, bulk: int
) -> None:
    """A photo whose reading kills the worker every time (a decoder that runs out of memory
    on it): recorded as unreadable with the reason, and every other photo is read."""
    proc = runs.start(*scan_args(big_album, db, 2), code=KILLER)
    assert runs.finish(proc) == 0, runs.output(proc)
    out, err = runs.output(proc)
    assert "Traceback" not in err, err
    assert_sound(db, big_album, ALBUM_PHOTOS + bulk)
    killer = str(big_album / "bulk" / "p050.png")
    reason = "the worker process reading it was killed (SIGKILL; out of memory?)"
    assert query(db, "SELECT path, status, error FROM photos WHERE error LIKE '%worker%'") == [
        (killer, "unreadable", reason)
    ]
    broken = query(db, "SELECT count(*) FROM photos WHERE status = 'unreadable'")[0][0]
    assert broken == 4 + 1  # the album's broken files, and this one


FIFO_AFTER_WALK = (
    "import os\n"
    "from photosort import indexing\n"
    "real = indexing.walk\n"
    "def walk(*args):\n"
    "    for folder in real(*args):\n"
    "        for entry in folder.files:\n"
    "            if entry.path.endswith('p010.png'):\n"
    "                os.unlink(entry.path)\n"
    "                os.mkfifo(entry.path)\n"
    "        yield folder\n"
    "indexing.walk = walk\n"
)


@pytest.mark.parametrize("workers", [1, 2])
def test_file_that_becomes_a_fifo_after_the_walk_is_recorded_and_skipped(
    runs: Runs, big_album: Path, db: Path, bulk: int, workers: int
) -> None:
    """Opened without blocking: a FIFO where the walk saw a photo would hang open()."""
    proc = runs.start(*scan_args(big_album, db, workers), code=FIFO_AFTER_WALK)
    assert runs.finish(proc) == 0, runs.output(proc)
    fifo = str(big_album / "bulk" / "p010.png")
    assert query(db, "SELECT status, error FROM photos WHERE path = ?", fifo) == [
        ("unreadable", "not a regular file (a FIFO)")
    ]
    assert_sound(db, big_album, ALBUM_PHOTOS + bulk)
    gone_within(runs.seen, 5.0)


def test_sigterm_ends_a_scan_whose_worker_is_stuck(
    runs: Runs, big_album: Path, db: Path, bulk: int
) -> None:
    """A worker stuck in a read that never returns (a hung network drive) must not keep the
    scan from ending on SIGTERM or Ctrl-C: the workers are killed, not waited for."""
    stuck = (
        "import time\n"
        "from photosort import indexing\n"
        "real = indexing.examine\n"
        "def examine(path, *args):\n"
        "    if path.endswith('p030.png'):\n"
        "        time.sleep(3600)\n"
        "    return real(path, *args)\n"
        "indexing.examine = examine\n"
    )
    proc = runs.start(*scan_args(big_album, db, 2), code=stuck)
    runs.wait_for(proc, lambda: holds_lock(db) and len(runs.note(proc)) >= 2)
    time.sleep(2.0)  # p030 is in flight by now, and the scan waits for it
    proc.send_signal(signal.SIGTERM)
    assert ended_as_interrupted(runs.finish(proc))
    gone_within(runs.seen, 5.0)
    assert query(db, "PRAGMA integrity_check") == [("ok",)]
    rescan(db, big_album, "--no-faces")
    assert_sound(db, big_album, ALBUM_PHOTOS + bulk)


def test_a_scan_stopped_midway_blocks_no_reader_and_finishes_when_it_goes_on(
    runs: Runs, big_album: Path, db: Path, bulk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan and its workers stopped between two commits (Ctrl-Z, a laptop put to sleep):
    the library stays readable and a second scan is refused, naming it, within the lock's
    wait; once it goes on it ends normally, every photo stored once."""
    from photosort import store

    monkeypatch.setattr(store, "LOCK_WAIT_SECONDS", 0.5)
    proc = runs.start(*scan_args(big_album, db, 2))
    runs.wait_for(proc, lambda: committed(db) > 0 and len(runs.note(proc)) >= 2)
    stopped = {proc.pid, *runs.note(proc)}
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(0.5)  # a worker's result or a transaction is caught in flight
        assert proc.poll() is None
        before = committed(db)
        assert 0 < before < ALBUM_PHOTOS + bulk, "the scan was not caught midway"
        runner = CliRunner()
        status = runner.invoke(cli, ["status", "--db", str(db), "--json"])
        assert status.exit_code == 0, status.output
        shown = json.loads(status.stdout)
        assert (shown["photos"], shown["last_scan_state"]) == (before, "running")
        refused = runner.invoke(cli, ["scan", str(big_album), "--db", str(db)])
        assert refused.exit_code == 1
        assert f"photosort scan (pid {proc.pid})" in refused.output, refused.output
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    assert runs.finish(proc) == 0, runs.output(proc)
    gone_within(stopped - {proc.pid}, 5.0)
    assert_sound(db, big_album, ALBUM_PHOTOS + bulk)
    assert rescan(db, big_album, "--no-faces")["unchanged"] == ALBUM_PHOTOS + bulk


def wait_until_scanning(runs: Runs, proc: subprocess.Popen[bytes], db: Path) -> None:
    runs.wait_for(proc, lambda: holds_lock(db))


def test_prune_racing_a_scan_loses_no_photo(
    runs: Runs, big_album: Path, db: Path, bulk: int
) -> None:
    """The issue's repro: photos marked missing come back while prune runs beside the scan
    that finds them again. Prune waits for the writer lock, then forgets only what is still
    missing: nothing."""
    runner = CliRunner()
    url = str(db)
    assert rescan(db, big_album, "--no-faces")["new"] == (ALBUM_PHOTOS + bulk)
    away = big_album.parent / "away"
    (big_album / "bulk").rename(away)
    assert rescan(db, big_album, "--no-faces")["missing"] == bulk
    away.rename(big_album / "bulk")
    later = time.time() + 10
    for path in (big_album / "bulk").iterdir():
        os.utime(path, (later, later))
    proc = runs.start(*scan_args(big_album, db, 2))
    wait_until_scanning(runs, proc, db)
    pruned = runner.invoke(cli, ["prune", "--db", url, "--json"])
    if pruned.exit_code == 0:  # the scan had finished: nothing was missing any more
        assert json.loads(pruned.stdout)["removed"] == 0
    else:
        assert pruned.exit_code == 1
        assert f"another photosort scan (pid {proc.pid}) is writing" in pruned.output
        assert pruned.output.count("\n") == 1 and "Warning" not in pruned.output
    assert runs.finish(proc) == 0, runs.output(proc)
    assert_sound(db, big_album, ALBUM_PHOTOS + bulk)
    after = runner.invoke(cli, ["prune", "--db", url, "--json"])
    assert after.exit_code == 0 and json.loads(after.stdout)["removed"] == 0


def test_relocate_racing_a_scan_leaves_no_duplicate(
    runs: Runs, big_album: Path, db: Path, bulk: int, tmp_path: Path
) -> None:
    """The library moved disks: a scan of the new place and a relocate from the old one at
    once. The relocate waits for the writer lock; every photo ends under one path."""
    assert rescan(db, big_album, "--no-faces")["new"] == (ALBUM_PHOTOS + bulk)
    moved = tmp_path / "new-disk"
    big_album.rename(moved)
    proc = runs.start(*scan_args(moved, db, 2))
    wait_until_scanning(runs, proc, db)
    relocate = ["relocate", str(big_album), str(moved), "--db", str(db)]
    relocated = CliRunner().invoke(cli, relocate)
    if relocated.exit_code != 0:  # refused while the scan writes: run it again after
        assert relocated.exit_code == 1
        assert f"another photosort scan (pid {proc.pid}) is writing" in relocated.output
    assert runs.finish(proc) == 0, runs.output(proc)
    if relocated.exit_code != 0:
        relocated = CliRunner().invoke(cli, relocate)
    # The scan took over every photo it could recognise by content; relocating gives the
    # rest (files without a content hash: empty, not an image) their new path.
    assert relocated.exit_code == 0, relocated.output
    assert_sound(db, moved, ALBUM_PHOTOS + bulk)
    assert rescan(db, moved, "--no-faces")["unchanged"] == (ALBUM_PHOTOS + bulk)


def test_report_works_while_a_scan_rereads_changed_photos(
    runs: Runs, album: Path, db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading, and report's caching of explanations, go on while a real scan re-reads
    changed photos, loads the model and finds faces: the scan never keeps a write
    transaction open for long. Here other commands wait 4 s for a lock instead of 10."""
    from photosort import store
    from photosort.indexing import FaceOptions, scan_library
    from photosort.reporting import build_report
    from photosort.store import open_engine
    from tests.test_report import RegionModel

    url = f"sqlite:///{db}"
    scan_library(open_engine(url), [str(album)], workers=1, faces=FaceOptions(RegionModel()))
    for photo in album.rglob("*.jpg"):  # new content: read, detect and classify again
        if not photo.name.startswith(".") and photo.parent.name != "broken":
            Image.open(photo).convert("RGB").save(photo, quality=60)
    monkeypatch.setattr(store, "BUSY_SECONDS", 4)
    proc = runs.start("scan", str(album), "--db", str(db), "--quiet", "--workers=2")
    runs.wait_for(proc, lambda: holds_lock(db))
    reports = 0
    while proc.poll() is None:
        out = tmp_path / f"report{reports}"
        build_report(open_engine(url), out, RegionModel(), n=1, min_probability=0, samples=60)
        status = CliRunner().invoke(cli, ["status", "--db", str(db)])
        assert status.exit_code == 0, status.output
        reports += 1
    assert proc.wait() == 0, runs.output(proc)
    assert reports >= 1
    assert_sound(db, album, ALBUM_PHOTOS)
    # Every face was found again and classified by the shipped model, not the stand-in.
    assert query(db, "SELECT count(*) FROM faces WHERE model_id = ?", RegionModel().model_id) == [
        (0,)
    ]
    assert query(db, "SELECT count(*) FROM faces")[0][0] > 0


# --- PostgreSQL: scans of disjoint folders at once ---


def pg_claims(url: str) -> list[int]:
    """The pids in the library's scan claims, live or left by a killed scan."""
    from sqlalchemy import select

    from photosort.store import ScanClaim

    engine = create_engine(driver_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return sorted(conn.scalars(select(ScanClaim.pid)))
    except DBAPIError:
        return []  # not created yet
    finally:
        engine.dispose()


@contextmanager
def library(url: str) -> Iterator[Any]:
    """A connection to the library, its engine disposed after: no pooled connection lingers
    between the cases' subprocesses."""
    from photosort.store import open_engine

    engine = open_engine(url)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def library_rows(url: str) -> set[tuple]:
    """Every photo as a comparable tuple: what it is, and how many faces it has."""
    from sqlalchemy import func, select

    from photosort.store import FaceRow, Photo

    faces = func.count(FaceRow.id)
    query = (
        select(Photo.path, Photo.content_hash, Photo.status, Photo.faces_state, faces)
        .outerjoin(FaceRow)
        .group_by(Photo.id)
    )
    with library(url) as conn:
        return {tuple(row) for row in conn.execute(query)}


def photo_ids(url: str) -> dict[str, int]:
    from sqlalchemy import select

    from photosort.store import Photo

    with library(url) as conn:
        return dict(conn.execute(select(Photo.path, Photo.id)).all())


def scan_spans(url: str) -> list[tuple]:
    from sqlalchemy import select

    from photosort.store import Scan

    with library(url) as conn:
        return list(conn.execute(select(Scan.started_at, Scan.finished_at).order_by(Scan.id)))


@pytest.fixture
def two_albums(tmp_path: Path, large_photo: Path) -> tuple[Path, Path]:
    """Two folders of the test album, each with a dozen large photos to find faces in: a
    scan of either takes seconds."""
    folders = (tmp_path / "one", tmp_path / "two")
    for folder in folders:
        build_test_album(folder)
        (folder / "bulk").mkdir()
        for i in range(12):
            os.link(large_photo, folder / "bulk" / f"p{i:02d}.png")
    return folders


def scan_at_once(runs: Runs, url: str, folders: tuple[Path, ...]) -> tuple[list[dict], list[int]]:
    """Start one scan per folder together, wait for all; their JSON reports and pids."""
    procs = [runs.start("scan", str(f), "--db", url, "--json", "--workers=1") for f in folders]
    reports = []
    for proc in procs:
        assert runs.finish(proc) == 0, runs.output(proc)
        reports.append(json.loads(runs.output(proc)[0]))
    return reports, [proc.pid for proc in procs]


def test_scans_of_disjoint_folders_run_together_and_equal_one_scan(
    runs: Runs, postgres_url: str, two_albums: tuple[Path, Path], tmp_path: Path
) -> None:
    reports, pids = scan_at_once(runs, postgres_url, two_albums)
    (first_start, first_end), (second_start, second_end) = scan_spans(postgres_url)
    assert first_start < second_end and second_start < first_end, "they ran one after the other"
    alone = f"sqlite:///{tmp_path / 'alone.db'}"
    both = runs.start("scan", *map(str, two_albums), "--db", alone, "--json", "--workers=1")
    assert runs.finish(both) == 0, runs.output(both)
    single = json.loads(runs.output(both)[0])
    for key in ("scanned", "new", "moved", "missing", "errors", "faces", "classified"):
        assert reports[0][key] + reports[1][key] == single[key], key
    assert single["faces"] > 0 and single["new"] == 2 * (ALBUM_PHOTOS + 12)
    assert library_rows(postgres_url) == library_rows(alone)
    assert pg_claims(postgres_url) == sorted(pids)  # left, not live
    gone_within(runs.seen, 5.0)


def test_overlapping_scans_and_prune_are_refused_until_the_scan_is_killed(
    runs: Runs,
    postgres_url: str,
    face_album: Path,
    two_albums: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A scan running (with faces, so it takes long) refuses only scans of its folder, of one
    inside it or of one holding it, naming itself; a scan of another folder runs beside it.
    SIGKILL leaves its claim in the table, and the next scan of its folder sees it is dead."""
    from photosort import store

    monkeypatch.setattr(store, "LOCK_WAIT_SECONDS", 0.5)
    runner = CliRunner()
    root = os.path.realpath(face_album)
    proc = runs.start("scan", str(face_album), "--db", postgres_url, "--quiet", "--workers=1")
    runs.wait_for(proc, lambda: pg_claims(postgres_url) == [proc.pid])
    holder = f"another photosort scan (pid {proc.pid} on {socket.gethostname()})"
    shown = make_url(postgres_url).render_as_string(hide_password=True)
    for overlapping in (face_album, face_album / "bulk", face_album.parent):
        refused = runner.invoke(cli, ["scan", str(overlapping), "--db", postgres_url])
        assert refused.exit_code == 1
        expected = f"Error: {holder} is scanning {root} into {shown}; wait for it to finish\n"
        assert refused.output == expected
    for command in (["prune"], ["relocate", str(face_album), str(tmp_path)], ["db", "upgrade"]):
        refused = runner.invoke(cli, [*command, "--db", postgres_url])
        assert refused.exit_code == 1
        assert refused.output == f"Error: {holder} is writing {shown}; wait for it to finish\n"
    beside = runner.invoke(
        cli, ["scan", str(two_albums[0]), "--db", postgres_url, "--json", "--no-faces"]
    )
    assert beside.exit_code == 0, beside.output
    assert json.loads(beside.stdout)["new"] == ALBUM_PHOTOS + 12
    assert proc.poll() is None, "the scan was not caught midway"
    proc.kill()
    assert runs.finish(proc) == -signal.SIGKILL
    assert proc.pid in pg_claims(postgres_url)
    monkeypatch.setattr(store, "LOCK_WAIT_SECONDS", 3.0)  # time for the server to notice
    after = runner.invoke(cli, ["scan", str(face_album), "--db", postgres_url, "--no-faces"])
    assert after.exit_code == 0, after.output
    assert proc.pid not in pg_claims(postgres_url)
    assert runner.invoke(cli, ["prune", "--db", postgres_url]).exit_code == 0
    gone_within(runs.seen, 5.0)


def test_photos_moved_between_concurrently_scanned_folders_keep_their_identity(
    runs: Runs, postgres_url: str, two_albums: tuple[Path, Path]
) -> None:
    """Each scan takes over the row of the photo that came from the other's folder (by its
    content hash). A scan that ends its walk first may mark its photo that left missing
    (its report says so); the other then takes the row over all the same."""
    one, two = two_albums
    first = runs.start("scan", str(one), str(two), "--db", postgres_url, "--workers=1")
    assert runs.finish(first) == 0, runs.output(first)
    before = photo_ids(postgres_url)
    moves = {
        one / "people" / "astronaut.jpg": two / "people" / "astronaut from one.jpg",
        two / "pets" / "chelsea.jpg": one / "pets" / "chelsea from two.jpg",
    }
    for old, new in moves.items():
        old.rename(new)
    reports, _ = scan_at_once(runs, postgres_url, two_albums)
    assert [(r["moved"], r["new"]) for r in reports] == [(1, 0), (1, 0)]
    assert all(r["missing"] <= 1 for r in reports)
    after = photo_ids(postgres_url)
    assert len(after) == len(before)
    for old, new in moves.items():
        assert after[str(new)] == before[str(old)]
    statuses = {status for _, _, status, _, _ in library_rows(postgres_url)}
    assert "missing" not in statuses
    gone_within(runs.seen, 5.0)


def test_a_signal_landing_in_a_finalizer_is_kept_and_prints_no_traceback() -> None:
    script = """
import os, signal
from photosort import cli

class Finalized:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass

cli.handle_termination()
Finalized()
try:
    cli.interruptible(None)("next photo")
except KeyboardInterrupt:
    print("interrupted after", cli._TERMINATED)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"interrupted after [{int(signal.SIGTERM)}]"
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


# --- PostgreSQL: a writer whose lock session the server ends ---


def pg_execute(postgres_server: Any, sql: str) -> None:
    with postgres_server.connect() as conn:
        conn.exec_driver_sql(sql)


def assert_each_photo_once(url: str, album: Path, total: int) -> None:
    rows = library_rows(url)
    paths = [path for path, *_ in rows]
    assert len(paths) == total and len(set(paths)) == total
    assert all(path.startswith(os.path.realpath(album) + os.sep) for path in paths)
    assert not [row for row in rows if row[2] == "missing"]


def test_a_scan_keeps_its_locks_past_the_servers_idle_session_timeout(
    runs: Runs,
    postgres_server: Any,
    postgres_url: str,
    face_album: Path,
    face_bulk: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server ends sessions idle for 2 s; the scan's lock session sits idle for longer,
    yet a second scan of its folder and a relocate of it are refused while it runs."""
    from photosort import store

    monkeypatch.setattr(store, "LOCK_WAIT_SECONDS", 0.5)
    name = make_url(postgres_url).database
    pg_execute(postgres_server, f"ALTER DATABASE \"{name}\" SET idle_session_timeout = '2s'")
    runner = CliRunner()
    proc = runs.start("scan", str(face_album), "--db", postgres_url, "--quiet", "--workers=1")
    runs.wait_for(proc, lambda: pg_claims(postgres_url) == [proc.pid])
    time.sleep(3.0)
    again = runner.invoke(cli, ["scan", str(face_album), "--db", postgres_url, "--no-faces"])
    assert again.exit_code == 1, again.output
    assert f"(pid {proc.pid} on {socket.gethostname()}) is scanning" in again.output
    relocate = ["relocate", str(face_album), str(tmp_path), "--db", postgres_url]
    moved = runner.invoke(cli, relocate)
    assert moved.exit_code == 1, moved.output
    assert f"(pid {proc.pid} on {socket.gethostname()}) is writing" in moved.output
    assert proc.poll() is None, "the scan was not caught midway"
    assert runs.finish(proc) == 0, runs.output(proc)
    assert "duplicate key" not in "".join(runs.output(proc))
    final = runner.invoke(cli, ["scan", str(face_album), "--db", postgres_url, "--json"])
    assert final.exit_code == 0, final.output
    assert json.loads(final.stdout)["unchanged"] == ALBUM_PHOTOS + face_bulk
    assert_each_photo_once(postgres_url, face_album, ALBUM_PHOTOS + face_bulk)
    gone_within(runs.seen, 5.0)


def test_a_scan_whose_lock_session_is_terminated_stops_writing(
    runs: Runs, postgres_server: Any, postgres_url: str, face_album: Path, face_bulk: int
) -> None:
    """An administrator ends the scan's lock session: a second scan of the folder is then
    admitted, and the first stops at its next commit with one line, keeping what it
    committed; the two never write the same photos at once."""
    name = make_url(postgres_url).database
    first = runs.start("scan", str(face_album), "--db", postgres_url, "--quiet", "--workers=1")
    runs.wait_for(first, lambda: pg_claims(postgres_url) == [first.pid])
    application = f"photosort scan {first.pid}@{socket.gethostname()}"[:63]
    pg_execute(
        postgres_server,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{name}' AND application_name = '{application}'",
    )
    second = runs.start(
        "scan", str(face_album), "--db", postgres_url, "--no-faces", "--quiet", "--workers=1"
    )
    assert runs.finish(first) == 1, runs.output(first)
    out, err = runs.output(first)
    assert err.startswith("Error: photosort scan lost its lock on ") and err.count("\n") == 1
    assert runs.finish(second) == 0, runs.output(second)
    assert "duplicate key" not in "".join(runs.output(second))
    final = runs.start(
        "scan", str(face_album), "--db", postgres_url, "--json", "--no-faces", "--workers=1"
    )
    assert runs.finish(final) == 0, runs.output(final)
    assert json.loads(runs.output(final)[0])["scanned"] == ALBUM_PHOTOS + face_bulk
    assert_each_photo_once(postgres_url, face_album, ALBUM_PHOTOS + face_bulk)
    gone_within(runs.seen, 5.0)


def test_commands_opening_a_new_library_at_once_all_succeed(runs: Runs, postgres_url: str) -> None:
    """Six commands open one empty PostgreSQL library together: one creates the tables,
    the others wait for it and find the library current."""
    procs = [runs.start("status", "--db", postgres_url, "--json") for _ in range(6)]
    for proc in procs:
        assert runs.finish(proc) == 0, runs.output(proc)
        assert json.loads(runs.output(proc)[0])["photos"] == 0


# --- Two reports into one album ---


def broken_links(album: Path) -> list[str]:
    """Every link of the album's pages that names no file in it (pages, copies, crops)."""
    import re

    broken = []
    for page in album.glob("*.html"):
        for target in re.findall(r'(?:href|src)="([^"#:]+)"', page.read_text()):
            if not (album / target).is_file():
                broken.append(f"{page.name} -> {target}")
    return broken


def test_two_reports_into_one_album_leave_every_link_whole(
    runs: Runs, album: Path, db: Path, tmp_path: Path
) -> None:
    """Two reports into one OUTDIR at once: the second waits for the first and is refused
    in one line (or runs after it, when the first is quick); either way the album is whole.
    A third, into another OUTDIR, runs beside them."""
    scanned = runs.start("scan", str(album), "--db", str(db), "--quiet", "--workers=1")
    assert runs.finish(scanned) == 0, runs.output(scanned)
    out = tmp_path / "album-out"
    common = ["--db", str(db), "--min-probability", "0", "--samples", "60", "--quiet"]
    procs = [runs.start("report", str(out), "-n", n, *common) for n in ("20", "8")]
    # Beside them, a report into another album caches the same explanations.
    other = runs.start("report", str(tmp_path / "other"), "-n", "8", *common)
    codes = [runs.finish(proc) for proc in procs]
    assert runs.finish(other) == 0, runs.output(other)
    assert 0 in codes, [runs.output(p) for p in procs]
    for proc, code in zip(procs, codes, strict=True):
        if code != 0:
            assert code == 1
            err = runs.output(proc)[1]
            assert (
                err == f"Error: another photosort report is writing {out}; wait for it to finish\n"
            )
    assert (out / "index.html").is_file()
    assert not broken_links(out)
    listed = set(json.loads((out / ".photosort-report.json").read_text())["files"])
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert on_disk - {".photosort-report.json"} == listed


@pytest.fixture
def face_library(tmp_path: Path) -> tuple[Path, Path]:
    """A library holding one photo with one face (the astronaut), scanned with the shipped
    model."""
    photo = tmp_path / "photos" / "astronaut.jpg"
    photo.parent.mkdir()
    save_jpeg(photo, skimage_photo("astronaut"))
    db = tmp_path / "faces.db"
    result = CliRunner().invoke(cli, ["scan", str(photo.parent), "--db", str(db), "--quiet"])
    assert result.exit_code == 0, result.output
    return photo, db


def explain_args(photo: Path, db: Path) -> list[str]:
    return ["explain", str(photo), "--db", str(db), "--out", str(db.with_suffix(".png")), "--json"]


def explain_started(runs: Runs, photo: Path, db: Path) -> tuple[subprocess.Popen[bytes], set[int]]:
    """``photosort explain`` as a process, once its helper process (LIME's imports) runs."""
    proc = runs.start(*explain_args(photo, db))
    runs.wait_for(proc, lambda: bool(descendants(proc.pid)))
    return proc, runs.note(proc)


@pytest.mark.parametrize(
    "signum", [None, signal.SIGINT, signal.SIGKILL], ids=["finished", "ctrl-c", "sigkill"]
)
def test_explain_leaves_no_process_however_it_ends(
    runs: Runs, face_library: tuple[Path, Path], signum: signal.Signals | None
) -> None:
    photo, db = face_library
    proc, helpers = explain_started(runs, photo, db)
    assert len(helpers) == 1
    if signum is not None:
        proc.send_signal(signum)
    code = runs.finish(proc)
    gone_within(helpers, 5.0)
    out, err = runs.output(proc)
    if signum is None:
        assert code == 0 and json.loads(out)["supporting_parts"], err
    elif signum == signal.SIGINT:
        # CPython exits by SIGINT itself instead when the interrupt landed while an
        # extension module was loading (the old thread did that too).
        assert code in (130, -signal.SIGINT), (code, err)
        assert code == -signal.SIGINT or err == "photosort: interrupted\n", err
    else:
        assert code == -signal.SIGKILL
    again = subprocess.run([*PHOTOSORT, *explain_args(photo, db)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert query(db, "SELECT count(*) FROM explanations") == [(1,)]


def test_explain_whose_helper_process_is_killed_still_explains(
    runs: Runs, face_library: tuple[Path, Path]
) -> None:
    """The helper killed (the OOM killer) while it imports: the fits run in the command."""
    photo, db = face_library
    proc, helpers = explain_started(runs, photo, db)
    for pid in helpers:
        os.kill(pid, signal.SIGKILL)
    assert runs.finish(proc) == 0, runs.output(proc)
    out, err = runs.output(proc)
    assert json.loads(out)["supporting_parts"] and err == ""


def test_explain_with_its_helper_process_gives_the_explanation_made_in_one_process(
    face_library: tuple[Path, Path],
) -> None:
    """The same explanation, fitted in the helper (a fresh process) or here, where LIME is
    imported already and no helper starts."""
    import lime.lime_base  # noqa: F401

    photo, db = face_library
    there = subprocess.run([*PHOTOSORT, *explain_args(photo, db)], capture_output=True, text=True)
    assert there.returncode == 0, there.stderr
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DELETE FROM explanations")
    here = CliRunner().invoke(cli, explain_args(photo, db))
    assert here.exit_code == 0, here.output
    assert json.loads(here.stdout) == json.loads(there.stdout)
