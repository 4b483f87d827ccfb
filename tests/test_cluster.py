"""Scanning on a Dask cluster of real ``dask scheduler`` and ``dask worker`` processes."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from photosort.cluster import BATCH, ClusterError, ClusterExecutor
from photosort.indexing import FaceOptions, scan_library
from photosort.sample import save_jpeg, skimage_photo
from photosort.scanning import bounded_map, count_files
from photosort.store import open_engine
from tests.conftest import ALBUM_PHOTOS, build_test_album
from tests.dask_processes import DaskProcesses, dask_processes, library_rows
from tests.test_faces import BrightnessModel

distributed = pytest.importorskip("distributed", reason="needs photosort[cluster]")


@pytest.fixture(scope="module")
def cluster() -> Iterator[DaskProcesses]:
    """``dask scheduler`` and ``dask worker --nworkers 2 --nthreads 1``, as a user starts them."""
    with dask_processes(2, 1) as processes:
        yield processes


@pytest.fixture(scope="module")
def album(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cluster") / "album"
    build_test_album(root)
    return root


def scan(db: str, album: Path, **options: object):
    return scan_library(
        open_engine(db), [str(album)], faces=FaceOptions(classifier=BrightnessModel()), **options
    )


def test_a_cluster_scan_gives_exactly_the_local_rows(
    cluster: DaskProcesses, album: Path, tmp_path: Path
) -> None:
    local, remote = f"sqlite:///{tmp_path}/local.db", f"sqlite:///{tmp_path}/remote.db"
    scan(local, album, workers=2)
    with distributed.Client(cluster.address, set_as_default=False) as client:
        with distributed.get_task_stream(client=client) as stream:
            report = scan(remote, album, cluster=cluster.address)
    assert report.scanned == ALBUM_PHOTOS and report.faces > 0
    assert library_rows(remote) == library_rows(local)
    # One task per batch of photos, not per photo: files to read, then photos to search.
    tasks = {t["key"] for t in stream.data if "run_batch" in str(t["key"])}
    files = count_files([str(album)])
    assert 0 < len(tasks) <= math.ceil(files / BATCH) + math.ceil(ALBUM_PHOTOS / BATCH)


def pid_after_a_first_stall(marker: str) -> int:
    """Stalls on its first run only (the marker is a file), until a ``.done`` file beside
    it appears (30 s at most); gives the worker's pid."""
    if not os.path.exists(marker):
        Path(marker).touch()
        deadline = time.monotonic() + 30
        while not os.path.exists(marker + ".done") and time.monotonic() < deadline:
            time.sleep(0.05)
    return os.getpid()


def test_a_call_the_cluster_dropped_runs_again(cluster: DaskProcesses, tmp_path: Path) -> None:
    """A worker killed while the scan fetches a finished call's result leaves that call
    "lost" or "cancelled" with the scheduler still there (seen in about one kill in six):
    the call runs again rather than ending the scan as if the cluster had gone."""
    with distributed.Client(cluster.address, set_as_default=False) as client:
        executor = ClusterExecutor(client, cluster.address)
        try:
            marker = str(tmp_path / "stalled")
            call = executor.submit(pid_after_a_first_stall, marker)
            deadline = time.monotonic() + 30
            while not os.path.exists(marker) and time.monotonic() < deadline:
                time.sleep(0.05)
            running = [k for keys in client.processing().values() for k in keys]
            assert len(running) == 1
            client.cancel([distributed.Future(running[0], client=client)])
            assert call.result(timeout=30) in client.run(os.getpid).values()
        finally:
            Path(marker + ".done").touch()  # frees the cancelled call's worker thread
            executor.shutdown()


def test_a_worker_killed_mid_scan_loses_nothing(
    cluster: DaskProcesses, album: Path, tmp_path: Path
) -> None:
    """SIGKILL of a worker process: its calls run again elsewhere, nothing twice."""
    with distributed.Client(cluster.address, set_as_default=False) as client:
        pids = list(client.run(os.getpid).values())
    seen: list[str] = []

    def kill_after_three(path: str) -> None:
        seen.append(path)
        if len(seen) == 3:
            os.kill(pids[0], signal.SIGKILL)

    db = f"sqlite:///{tmp_path}/killed.db"
    report = scan(db, album, cluster=cluster.address, progress=kill_after_three)
    assert report.scanned == ALBUM_PHOTOS
    photos, faces = library_rows(db)
    assert len(photos) == len({p[0] for p in photos}) == ALBUM_PHOTOS
    reference = f"sqlite:///{tmp_path}/reference.db"
    scan(reference, album, workers=1)
    assert (photos, faces) == library_rows(reference)
    with open_engine(db).connect() as conn:
        assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    with distributed.Client(cluster.address, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=30)  # the nanny restarted it for the next test


def test_a_scheduler_that_goes_away_ends_the_scan_with_one_line(
    album: Path, tmp_path: Path
) -> None:
    seen: list[str] = []
    db = f"sqlite:///{tmp_path}/gone.db"
    with dask_processes(1, 1) as doomed:

        def kill_after_two(path: str) -> None:
            seen.append(path)
            if len(seen) == 2:
                doomed.stop_scheduler()

        with pytest.raises(ClusterError, match="went away during the scan") as caught:
            scan(db, album, cluster=doomed.address, progress=kill_after_two)
    assert "\n" not in str(caught.value)
    again = scan(db, album, workers=1)  # the library is fine; a local scan completes it
    assert len(library_rows(db)[0]) == ALBUM_PHOTOS
    assert again.errors == 4  # the album's broken files, once each


def photosort_command(*args: str) -> tuple[subprocess.Popen[str], float]:
    """``python -m photosort ARGS`` started, with when it started."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "photosort", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, time.monotonic()


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("http://127.0.0.1:1", "not a Dask scheduler address (unknown scheme http://"),
        ("", "no Dask scheduler address given"),
        ("not an address", "not a Dask scheduler address"),
        ("tcp://127.0.0.1:9", "cannot reach a Dask scheduler at tcp://127.0.0.1:9"),
    ],
)
def test_a_bad_cluster_address_is_one_line_within_seconds(
    album: Path, tmp_path: Path, address: str, says: str
) -> None:
    """As a user runs it: no 20 s wait at exit, no traceback from the client's ``__del__``."""
    proc, started = photosort_command(
        "scan", str(album), "--db", str(tmp_path / "x.db"), "--cluster", address
    )
    code, out, err = finish(proc)
    assert time.monotonic() - started < 10
    assert code != 0
    assert says in err
    assert len((out + err).strip().splitlines()) == 1


def test_a_server_that_is_no_scheduler_is_one_line_within_seconds(
    album: Path, tmp_path: Path
) -> None:
    """Something else listening there (a web server) answers Dask's handshake with bytes
    that distributed fails on in its own ways."""
    server = socket.create_server(("127.0.0.1", 0))
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"

    def answer() -> None:
        with contextlib.suppress(OSError):  # the server closed: the test is over
            while True:
                conn, _ = server.accept()
                with conn:
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 4)

    answering = threading.Thread(target=answer, daemon=True)
    answering.start()
    try:
        proc, started = photosort_command(
            "scan", str(album), "--db", str(tmp_path / "x.db"), "--cluster", address
        )
        code, out, err = finish(proc)
    finally:
        server.shutdown(socket.SHUT_RDWR)
        server.close()
        answering.join(timeout=5)
    assert time.monotonic() - started < 10
    assert code != 0
    assert (out + err).strip() == f"Error: what answers at {address} is not a Dask scheduler"


def many_photos(folder: Path, count: int) -> None:
    """``count`` distinct small photos (each shifted), enough for a scan of seconds."""
    folder.mkdir()
    source = skimage_photo("astronaut")
    for i in range(count):
        save_jpeg(folder / f"p{i:04d}.jpg", source[i % 40 :, i // 40 :])


def test_killing_the_scheduler_mid_scan_prints_one_line(tmp_path: Path) -> None:
    """SIGKILL of ``dask scheduler`` while ``photosort scan --cluster`` runs: one line on
    stderr (no ``distributed`` log flood) within seconds, and the committed photos kept."""
    folder = tmp_path / "many"
    many_photos(folder, 500)
    db = tmp_path / "lib.db"
    with dask_processes(2, 1) as doomed:
        proc, _ = photosort_command(
            "scan", str(folder), "--db", str(db), "--cluster", doomed.address
        )
        try:
            deadline = time.monotonic() + 60
            stored = 0
            while stored == 0 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
                stored = len(library_rows(f"sqlite:///{db}")[0]) if db.exists() else 0
            assert 0 < stored < 500, "the scan should be under way"
            for worker in doomed.workers:  # the scan cannot finish meanwhile
                os.killpg(worker.pid, signal.SIGSTOP)
            doomed.stop_scheduler()
            killed = time.monotonic()
            code, out, err = finish(proc)
            assert time.monotonic() - killed < 10
        finally:
            for worker in doomed.workers:
                os.killpg(worker.pid, signal.SIGCONT)
    assert code == 1
    (line,) = err.strip().splitlines()
    assert line.startswith(f"Error: the cluster at {doomed.address} went away during the scan")
    assert line.endswith("finished work is saved, run the scan again to carry on")
    assert "distributed" not in out and "Traceback" not in out
    assert len(library_rows(f"sqlite:///{db}")[0]) >= stored


def record_and_maybe_die(log: str, poison: int, n: int) -> int:
    """Appends ``n`` to ``log``; the process dies of SIGKILL on ``poison``, like a decoder
    that crashes on one photo."""
    with open(log, "a") as fh:
        fh.write(f"{n}\n")
        fh.flush()
    if n == poison:
        os.kill(os.getpid(), signal.SIGKILL)
    return n * n


@pytest.mark.slow
def test_a_photo_that_kills_its_workers_is_lost_alone(tmp_path: Path) -> None:
    """A batch that takes down its workers is split; only the photo that kills the workers
    alone too is lost, after a bounded number of tries, and every other photo has its
    result once."""
    log = str(tmp_path / "calls")
    once = {"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
    with dask_processes(2, 1, config=once) as processes:
        with distributed.Client(processes.address, set_as_default=False) as client:
            executor = ClusterExecutor(client, processes.address)
            try:
                results = list(
                    bounded_map(
                        executor,
                        record_and_maybe_die,
                        range(6),
                        args=lambda n: (log, 2, n),
                        needs_work=lambda n: True,
                        window=12,
                        lost=lambda n, reason: reason,
                        batch=3,
                    )
                )
            finally:
                executor.shutdown()
    calls = [int(n) for n in Path(log).read_text().split()]
    assert [n for n, _ in results] == list(range(6))
    assert [r for n, r in results if n != 2] == [0, 1, 9, 16, 25], (results, calls)
    assert "killed" in results[2][1], results
    # Batch (0, 1, 2) twice, then 0, 1 and 2 alone, 2 twice: each try counted. The others
    # run again only if they waited on a worker that died.
    assert calls.count(2) == 4, calls
    assert all(1 <= calls.count(n) <= 1 + calls.count(2) for n in (0, 1, 3, 4, 5)), calls


def test_bounded_map_sends_batches_in_order(cluster: DaskProcesses) -> None:
    """Calls go out ``batch`` at a time, a short one when the window is full, each item
    with its own result, in order."""
    with distributed.Client(cluster.address, set_as_default=False) as client:
        executor = ClusterExecutor(client, cluster.address)
        sent: list[int] = []
        real = executor.submit_batch

        def counting(fn, calls):  # type: ignore[no-untyped-def]
            sent.append(len(calls))
            return real(fn, calls)

        executor.submit_batch = counting  # type: ignore[method-assign]
        try:
            out = list(
                bounded_map(
                    executor,
                    abs,
                    range(-11, 0),
                    args=lambda n: (n,),
                    needs_work=lambda n: n % 5 != 0,
                    window=6,
                    lost=lambda n, reason: None,
                    batch=4,
                )
            )
        finally:
            executor.shutdown()
    assert out == [(n, abs(n) if n % 5 else None) for n in range(-11, 0)]
    assert sum(sent) == 9 and max(sent) == 4 and len(sent) < 9
