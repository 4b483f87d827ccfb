"""Scanning across machines: the per-photo work on a Dask distributed cluster.

The scan hands the cluster the same calls it gives local worker processes (read, hash,
detect, crop), a batch of photos per task (:data:`BATCH`), with a bounded number in flight,
and keeps the walk, the model and the database writes in its own process. Each photo keeps
its own outcome: a photo whose work raises costs that photo only. The scheduler re-runs the
batch of a worker that dies on another worker, and a result lost with its worker before it
reached the scan is asked for again; a batch that took down several workers is split and
its photos run alone, one after another, so only the photo that kills its workers is
recorded unreadable. A scheduler that goes away fails the calls in flight, which ends the
scan with one line and keeps what was committed. ``distributed`` is an optional extra,
imported only here.
"""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from photosort.errors import PhotosortError
from photosort.native import quiet_logging
from photosort.scanning import WorkerLost

BATCH = 4
"""Photos per cluster task, chosen with ``bench/bench_cluster.py --compare-batches``: 80
photos of 12 MP, two ``dask worker`` processes on one 2-core machine against
``--workers 2``, six runs, compared by CPU time per photo (rates on that shared machine
drifted with its load): one photo per task 0.77-0.95x (median 0.81), 4 photos 0.87-1.03x
(0.92), 8 photos 0.84-1.15x (0.92), 16 photos 0.78-0.90x (0.89, three runs). Each task
costs the scheduler and the scan CPU time on the same cores the workers use; beyond 4 the
saving is lost in the noise, while a worker that dies takes more finished work with it and
the last batches leave workers idle at the end of a scan."""
CONNECT_SECONDS = 5.0
"""How long to wait for a scheduler's port to answer, then for its handshake."""
CLOSE_SECONDS = 2.0
LOST_AFTER = 3.0
"""Seconds without a scheduler after which the calls in flight are given up."""
WATCH_INTERVAL = 0.5
RESENDS = 3
"""How often one batch is sent again after its result was lost with a worker."""
FETCH_SECONDS = 5.0
"""How long fetching a finished batch's result may take (a few crops per photo:
milliseconds) before the batch is sent again: from a worker that has just died, Dask would
retry the dead address for its 30 s connect timeout."""
EXAMPLE = "tcp://scheduler-host:8786"


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20
"""glibc's largest adaptive threshold: a decoded 12 MP frame's buffers come from the heap."""
TRIM_THRESHOLD = 128 << 20


@functools.cache
def tune_worker_malloc() -> None:
    """Give a Dask worker process the memory allocation a local worker has.

    Dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, and setting it turns
    off glibc's adaptive thresholds: every large buffer of a decoded photo is then mapped
    and unmapped again. The same reads and detections of 24 photos of 12 MP took 7x the
    page faults and 27% more CPU time (1.03 s of system time instead of 0.17 s), and a
    cluster scan's workers 38% more CPU time than a local scan's. Once per process;
    elsewhere than glibc there is nothing to do.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)


def run_batch(fn: Callable[..., Any], calls: list[tuple[Any, ...]]) -> list[tuple[bool, Any]]:
    """On a worker: ``fn`` on each call's arguments, each outcome (value or exception) kept
    apart, so that one photo's failure is not its batch's."""
    tune_worker_malloc()
    outcomes: list[tuple[bool, Any]] = []
    for args in calls:
        try:
            outcomes.append((True, fn(*args)))
        except Exception as exc:  # noqa: BLE001 - handed back to that photo's future
            outcomes.append((False, exc))
    return outcomes


@dataclass(frozen=True, eq=False)
class _Batch:
    fn: Callable[..., Any]
    calls: list[tuple[Any, ...]]
    futures: list[Future[Any]]
    resends: int

    def again(self) -> _Batch:
        return _Batch(self.fn, self.calls, self.futures, self.resends - 1)

    def singles(self) -> list[_Batch]:
        return [
            _Batch(self.fn, [call], [future], RESENDS)
            for call, future in zip(self.calls, self.futures, strict=True)
        ]

    def fail(self, exc: BaseException) -> None:
        for future in self.futures:
            if not future.done():
                future.set_exception(exc)


class ClusterError(PhotosortError):
    """The cluster cannot be reached, or went away during the scan."""


class ClusterExecutor(Executor):
    """Submits batches to a cluster; a batch lost with the scheduler becomes a ClusterError.

    A watchdog thread fails every call in flight once the client has been out of touch
    with the scheduler for LOST_AFTER seconds: the scan must not wait on work that no
    scheduler will hand back.
    """

    batch = BATCH

    def __init__(self, client: Any, address: str) -> None:
        self.client = client
        self.address = address
        # Each batch beside the cluster's future for it: the cluster forgets a result whose
        # future is garbage-collected, so this keeps it until the batch is done.
        self._outstanding: dict[_Batch, Any] = {}
        self._suspects: deque[_Batch] = deque()
        """Photos of batches the scheduler gave up on, to run alone one after another."""
        self._suspect: _Batch | None = None
        self._broken: BaseException | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, daemon=True)
        self._watchdog.start()

    def _watch(self) -> None:
        lost_since: float | None = None
        while not self._stop.wait(WATCH_INTERVAL):
            if self.client.status == "running":
                lost_since = None
                continue
            lost_since = lost_since or time.monotonic()
            if time.monotonic() - lost_since >= LOST_AFTER:
                self._fail_all(ConnectionError("no scheduler"))
                return

    def _fail_all(self, exc: BaseException) -> None:
        with self._lock:
            pending, self._outstanding = [*self._outstanding, *self._suspects], {}
            self._suspects.clear()
            self._broken = exc
        for batch in pending:
            batch.fail(self.lost(exc))

    def _next_suspect(self, done: object = None) -> None:
        """Send the next suspect once the one before it has its outcome."""
        with self._lock:
            if done is not None:
                self._suspect = None
            if self._suspect is not None or not self._suspects:
                return
            self._suspect = suspect = self._suspects.popleft()
        suspect.futures[0].add_done_callback(self._next_suspect)
        self._resend(suspect)

    @property
    def threads(self) -> int:
        """How many calls the cluster runs at once: it sizes the window of work in flight."""
        return max(1, sum(self.client.nthreads().values()))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        target = functools.partial(fn, **kwargs) if kwargs else fn
        return self.submit_batch(target, [args])[0]

    def submit_batch(
        self, fn: Callable[..., Any], calls: list[tuple[Any, ...]]
    ) -> list[Future[Any]]:
        """One cluster task for all ``calls``, and a future for each."""
        if self._broken is not None:
            raise self.lost(self._broken)
        batch = _Batch(fn, list(calls), [Future() for _ in calls], RESENDS)
        self._send(batch)
        return batch.futures

    def _send(self, batch: _Batch) -> None:
        try:
            inner = self.client.submit(run_batch, batch.fn, batch.calls, pure=False)
        except Exception as exc:  # noqa: BLE001 - a closed client raises many types
            raise self.lost(exc) from None
        with self._lock:
            self._outstanding[batch] = inner
        inner.add_done_callback(lambda done: self._relay(batch, done))

    def _resend(self, batch: _Batch) -> None:
        try:
            self._send(batch)
        except ClusterError as failed:
            batch.fail(failed)

    def _relay(self, batch: _Batch, done: Any) -> None:
        """Hand a finished batch's outcomes on, by the cluster's own account of it."""
        with self._lock:
            if self._outstanding.pop(batch, None) is None:
                return  # already failed by the watchdog
        try:
            if done.status == "finished":
                outcomes = done.result(timeout=FETCH_SECONDS)
                for future, (ok, value) in zip(batch.futures, outcomes, strict=True):
                    if future.done():
                        continue  # failed by the watchdog meanwhile
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
                return
            exc = done.exception() if done.status == "error" else None
        except Exception as lost:  # noqa: BLE001 - the client gone while asking
            exc = lost
        if exc is None or _is_cluster_failure(exc):
            if batch.resends and self._broken is None and self.client.status == "running":
                # A result lost with the worker that held it, the scheduler still there:
                # each call is a pure function of its photo, so the batch runs again.
                self._resend(batch.again())
                return
            batch.fail(self.lost(exc or ConnectionError(done.status)))
        elif type(exc).__name__ == "KilledWorker":
            if len(batch.calls) > 1:
                # The scheduler gave up on a batch that took down several workers: one of
                # its photos does it. Each runs alone, so only that one is lost.
                # The scheduler counts a death against every call the worker held, those
                # only waiting behind the guilty one too: one suspect at a time, so that
                # none waits behind another.
                with self._lock:
                    self._suspects.extend(batch.singles())
                self._next_suspect()
                return
            # It costs its photo only, like a lost local worker.
            batch.fail(WorkerLost("the worker processes reading it were killed, each in turn"))
        else:
            batch.fail(exc)

    def lost(self, exc: BaseException) -> ClusterError:
        return ClusterError(
            f"the cluster at {self.address} went away during the scan ({type(exc).__name__}); "
            "finished work is saved, run the scan again to carry on"
        )

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._stop.set()


def _is_cluster_failure(exc: BaseException) -> bool:
    """A failure of the cluster rather than of the photo's own work."""
    from distributed.client import FutureCancelledError

    if isinstance(exc, (FutureCancelledError, OSError, TimeoutError)):
        return True
    return type(exc).__name__ in {"CancelledError", "CommClosedError"}


def check_address(address: str) -> None:
    """Refuse at once an address that no scheduler can have, or where nothing answers:
    Dask would try a refused connection again and again until its timeout."""
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import backends

    if not address.strip():
        raise ClusterError(f"no Dask scheduler address given; give one such as {EXAMPLE}")
    try:
        scheme, location = parse_address(address)
        if scheme not in backends:
            raise ValueError(f"unknown scheme {scheme}://, Dask speaks {', '.join(backends)}")
        if scheme not in {"tcp", "tls"}:
            return
        host, port = parse_host_port(location)
    except ValueError as exc:
        raise ClusterError(
            f"{address!r} is not a Dask scheduler address ({exc}); give one such as {EXAMPLE}"
        ) from None
    try:
        socket.create_connection((host, port), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ClusterError(f"cannot reach a Dask scheduler at {address}: {reason}") from None


def connect(address: str) -> Any:
    """A client of the scheduler at ``address``; ClusterError in one line if there is none."""
    try:
        from distributed import Client
    except ImportError:
        raise ClusterError(
            "scanning on a cluster needs the distributed package: pip install 'photosort[cluster]'"
        ) from None
    # distributed logs every reconnection attempt; what matters reaches the user as one line.
    quiet_logging("distributed", "tornado")
    check_address(address)

    class QuietClient(Client):
        """Closes itself when it cannot start: distributed's own client is closed at exit by
        its ``__del__``, which waits 20 s on the scheduler that never answered, then prints
        a traceback."""

        def start(self, **kwargs: Any) -> None:
            try:
                super().start(**kwargs)
            except BaseException:
                close(self)
                raise

    try:
        return QuietClient(address, timeout=f"{CONNECT_SECONDS}s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"cannot reach a Dask scheduler at {address}: {exc}") from None
    except Exception:  # noqa: BLE001 - whatever a stranger's reply makes Dask raise
        raise ClusterError(f"what answers at {address} is not a Dask scheduler") from None


def close(client: Any) -> None:
    """Close ``client`` within CLOSE_SECONDS, its scheduler there or not."""
    try:
        client.close(timeout=CLOSE_SECONDS)
    except Exception:  # noqa: BLE001 - the scheduler may be gone already
        pass
    client.status = "closed"  # nothing left for its __del__ to wait on


@contextmanager
def cluster_executor(address: str) -> Iterator[ClusterExecutor]:
    """Connect to the scheduler at ``address`` for the duration of a scan."""
    client = connect(address)
    try:
        if not client.nthreads():
            try:
                client.wait_for_workers(1, timeout=f"{CONNECT_SECONDS}s")
            except TimeoutError:
                raise ClusterError(f"the Dask scheduler at {address} has no workers") from None
        executor = ClusterExecutor(client, address)
        try:
            yield executor
        finally:
            executor.shutdown()
    finally:
        close(client)
