"""A real Dask cluster on this machine: ``dask scheduler`` and ``dask worker`` subprocesses.

The same commands a user runs on their machines (docs/faults.md), started in a process
group of their own so that ending the cluster ends every nanny and worker process with it.
Tests and ``bench/bench_cluster.py`` use it; it needs the ``distributed`` package.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from photosort.store import FaceRow, Photo, open_engine

START_SECONDS = 60.0
ROOT = Path(__file__).resolve().parent.parent


def _dask() -> list[str]:
    """The ``dask`` command of this Python's environment."""
    beside = Path(sys.executable).with_name("dask")
    return [str(beside)] if beside.exists() else [shutil.which("dask") or "dask"]


@dataclass
class DaskProcesses:
    """A running scheduler and its workers; ``stop_scheduler`` ends the scheduler alone."""

    address: str
    scheduler: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop_scheduler(self, sig: int = signal.SIGKILL) -> None:
        _end(self.scheduler, sig)

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            _end(proc, signal.SIGTERM)
        for proc in [*self.workers, self.scheduler]:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _end(proc, signal.SIGKILL)
                proc.wait()


def _end(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the process group ``proc`` leads (a nanny's worker processes too)."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


@contextmanager
def dask_processes(
    worker_processes: int = 2,
    threads: int = 1,
    *,
    separate: bool = False,
    config: dict[str, str] | None = None,
) -> Iterator[DaskProcesses]:
    """Start ``dask scheduler`` and workers with ``threads`` threads each, and end them all.

    ``separate`` starts one ``dask worker`` command per worker process, as on several
    machines; otherwise one ``dask worker --nworkers N`` starts them all. ``config`` holds
    Dask settings as environment variables (``DASK_DISTRIBUTED__...``). The workers import
    this checkout's photosort and tests, as workers with photosort installed would.
    """
    env = {**os.environ, **(config or {})}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    quiet = {
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
        "start_new_session": True,
        "env": env,
    }
    with tempfile.TemporaryDirectory(prefix="photosort-dask-") as tmp:
        info = Path(tmp) / "scheduler.json"
        scheduler = subprocess.Popen(
            [
                *_dask(),
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(info),
            ],
            **quiet,
        )
        cluster = DaskProcesses("", scheduler)
        try:
            deadline = time.monotonic() + START_SECONDS
            while not info.exists() and scheduler.poll() is None:
                if time.monotonic() > deadline:
                    raise RuntimeError("dask scheduler did not start")
                time.sleep(0.1)
            time.sleep(0.1)  # the file is written in one go, but let it land
            cluster.address = json.loads(info.read_text())["address"]
            commands = (
                [["--nworkers", "1"]] * worker_processes
                if separate
                else [["--nworkers", str(worker_processes)]]
            )
            for nworkers in commands:
                cluster.workers.append(
                    subprocess.Popen(
                        [
                            *_dask(),
                            "worker",
                            cluster.address,
                            *nworkers,
                            "--nthreads",
                            str(threads),
                            "--no-dashboard",
                            "--local-directory",
                            tmp,
                        ],
                        **quiet,
                    )
                )
            wait_for_workers(cluster.address, worker_processes)
            yield cluster
        finally:
            cluster.stop()


def wait_for_workers(address: str, count: int) -> None:
    from distributed import Client

    with Client(address, timeout="30s", set_as_default=False) as client:
        client.wait_for_workers(count, timeout=START_SECONDS)


def library_rows(db: str) -> tuple[list[tuple], list[tuple]]:
    """Every photo and face row a scan stores, in a fixed order, without ids: a cluster scan
    and a local one of the same album must store the same."""
    with Session(open_engine(db)) as session:
        photos = session.execute(
            select(
                Photo.path, Photo.status, Photo.content_hash, Photo.width, Photo.height
            ).order_by(Photo.path)
        ).all()
        faces = session.execute(
            select(
                Photo.path,
                FaceRow.x,
                FaceRow.y,
                FaceRow.w,
                FaceRow.h,
                FaceRow.crop,
                FaceRow.landmarks,
                FaceRow.mesh_presence,
            )
            .join(Photo)
            .order_by(Photo.path, FaceRow.x)
        ).all()
    return [tuple(r) for r in photos], [tuple(r) for r in faces]
