"""Scanning across machines: the per-photo work on a Dask distributed cluster.

A ``distributed.Client``'s executor is a ``concurrent.futures.Executor``, as the local
worker pool is, so the scan streams the same calls to it (read, hash, detect, crop) with a
bounded number in flight, and keeps the walk, the model and the database writes in its own
process. The scheduler re-runs the calls of a worker that dies on another worker, and a
result lost with its worker before it reached the scan is asked for again; a scheduler
that goes away fails the calls in flight, which ends the scan with one line and
keeps what was committed. ``distributed`` is an optional extra, imported only here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from photosort.errors import PhotosortError
from photosort.scanning import WorkerLost

CONNECT_TIMEOUT = "10s"
LOST_AFTER = 3.0
"""Seconds without a scheduler after which the calls in flight are given up."""
WATCH_INTERVAL = 0.5
RESENDS = 3
"""How often one call is sent again after its result was lost with a worker."""
FETCH_SECONDS = 5.0
"""How long fetching a finished call's result may take (it is a few crops: milliseconds)
before the call is sent again: from a worker that has just died, Dask would retry the
dead address for its 30 s connect timeout."""


@dataclass(frozen=True)
class _Call:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    resends: int

    def again(self) -> _Call:
        return _Call(self.fn, self.args, self.kwargs, self.resends - 1)


class ClusterError(PhotosortError):
    """The cluster cannot be reached, or went away during the scan."""


class ClusterExecutor(Executor):
    """Submits to a cluster; a call lost with the scheduler becomes a ClusterError.

    A watchdog thread fails every call in flight once the client has been out of touch
    with the scheduler for LOST_AFTER seconds: the scan must not wait on work that no
    scheduler will hand back.
    """

    def __init__(self, client: Any, address: str) -> None:
        self.client = client
        self.address = address
        # Each call's own future beside the cluster's: the cluster forgets a result whose
        # future is garbage-collected, so this keeps it until the call is done.
        self._outstanding: dict[Future[Any], Any] = {}
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
            pending, self._outstanding = self._outstanding, {}
            self._broken = exc
        for future in pending:
            if not future.done():
                future.set_exception(self.lost(exc))

    @property
    def threads(self) -> int:
        """How many calls the cluster runs at once: it sizes the window of work in flight."""
        return max(1, sum(self.client.nthreads().values()))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._broken is not None:
            raise self.lost(self._broken)
        outer: Future[Any] = Future()
        self._send(outer, _Call(fn, args, kwargs, RESENDS))
        return outer

    def _send(self, outer: Future[Any], call: _Call) -> None:
        try:
            inner = self.client.submit(call.fn, *call.args, pure=False, **call.kwargs)
        except Exception as exc:  # noqa: BLE001 - a closed client raises many types
            raise self.lost(exc) from None
        with self._lock:
            self._outstanding[outer] = inner
        inner.add_done_callback(lambda done: self._relay(outer, done, call))

    def _relay(self, outer: Future[Any], done: Any, call: _Call) -> None:
        """Hand a finished call's outcome on, by the cluster's own account of it."""
        with self._lock:
            if self._outstanding.pop(outer, None) is None:
                return  # already failed by the watchdog
        try:
            if done.status == "finished":
                outer.set_result(done.result(timeout=FETCH_SECONDS))
                return
            exc = done.exception() if done.status == "error" else None
        except Exception as lost:  # noqa: BLE001 - the client gone while asking
            exc = lost
        if exc is None or _is_cluster_failure(exc):
            if call.resends and self._broken is None and self.client.status == "running":
                # A result lost with the worker that held it, the scheduler still there:
                # the call is a pure function of its photo, so it runs again.
                try:
                    self._send(outer, call.again())
                except ClusterError as failed:
                    outer.set_exception(failed)
                return
            outer.set_exception(self.lost(exc or ConnectionError(done.status)))
        elif type(exc).__name__ == "KilledWorker":
            # The scheduler gave up on this call after it took down several workers: it
            # costs its photo only, like a lost local worker.
            outer.set_exception(
                WorkerLost("the worker processes reading it were killed, each in turn")
            )
        else:
            outer.set_exception(exc)

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


@contextmanager
def cluster_executor(address: str) -> Iterator[ClusterExecutor]:
    """Connect to the scheduler at ``address`` for the duration of a scan."""
    try:
        from distributed import Client
    except ImportError:
        raise ClusterError(
            "scanning on a cluster needs the distributed package: pip install 'photosort[cluster]'"
        ) from None
    # distributed logs every reconnection attempt; what matters reaches the user as one line.
    logging.getLogger("distributed").setLevel(logging.CRITICAL)
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(f"cannot reach a Dask scheduler at {address}: {exc}") from None
    try:
        if not client.nthreads():
            try:
                client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
            except TimeoutError:
                raise ClusterError(f"the Dask scheduler at {address} has no workers") from None
        executor = ClusterExecutor(client, address)
        try:
            yield executor
        finally:
            executor.shutdown()
    finally:
        try:
            client.close(timeout=2)
        except Exception:  # noqa: BLE001 - the scheduler may be gone already
            pass
