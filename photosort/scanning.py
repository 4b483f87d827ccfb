"""Scanning files: walk photo folders and learn what each file is, without decoding pixels.

The walk is streamed folder by folder (memory stays flat however large the library), follows
symlinks without looping, skips hidden files and folders, and never writes anything under the
folders it walks. :func:`examine` reads one file once: it hashes the content in chunks and
keeps the first and last bytes it saw, which is enough to recognise the format and to notice
a file that was cut short.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, TypeVar, cast

from photosort.defaults import MAX_FILE_MB, REPORT_MANIFEST
from photosort.errors import PhotosortError
from photosort.images import (
    DEFAULT_MAX_MEGAPIXELS,
    FORMAT_NAMES,
    ImageError,
    ImageInfo,
    check_complete,
    open_regular,
    probe_image,
    sniff_format,
    sniff_unsupported,
)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".dib", ".tif", ".tiff", ".gif"}
    | {".heic", ".heif", ".hif", ".avif"}
)
UNSUPPORTED_HINT = f"not a format photosort reads ({FORMAT_NAMES}); convert it"
CHUNK = 1 << 20
TAIL = 1 << 16
DEFAULT_MAX_FILE_SIZE = int(MAX_FILE_MB * 1e6)


@dataclass(frozen=True)
class FileEntry:
    """A regular file met by the walk, with the facts that decide whether to read it again."""

    path: str
    folder: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Folder:
    """One listed folder and the files directly in it, in name order."""

    path: str
    files: list[FileEntry]


@dataclass(frozen=True)
class FileFacts:
    """What reading a file taught us: its hash, and either its image facts or why it is bad."""

    content_hash: str | None
    info: ImageInfo | None
    error: str | None


class WalkError(PhotosortError):
    """A folder the user asked for cannot be reached."""


def check_root(path: str) -> str:
    """Return the canonical absolute form of a folder to scan, or raise WalkError."""
    real = os.path.realpath(path)
    if not os.path.exists(real):
        raise WalkError(f"{printable(path)}: no such file or folder (is the drive mounted?)")
    if not storable(real):
        raise WalkError(f"{printable(real)}: {NOT_UTF8}")
    if os.path.isdir(real):
        try:
            with os.scandir(real):
                pass
        except OSError as exc:
            raise WalkError(f"{path}: cannot list folder: {exc.strerror or exc}") from exc
        if os.path.exists(os.path.join(real, REPORT_MANIFEST)):
            raise WalkError(
                f"{printable(path)}: holds an album photosort wrote ({REPORT_MANIFEST}), "
                "which is never scanned; move the album out to scan the photos beside it"
            )
    return real


def _hidden(name: str) -> bool:
    return name.startswith(".")


NOT_UTF8 = "file name is not valid UTF-8"


def storable(name: str) -> bool:
    """Whether a name can go into the library: undecodable bytes in a file name reach Python
    as lone surrogates, which no database driver accepts."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(path: str) -> str:
    """A path fit to show, its undecodable bytes as U+FFFD."""
    return os.fsencode(path).decode("utf-8", "replace")


def walk(
    roots: Iterable[str],
    on_error: Callable[[str, str, str], None] | None = None,
    on_skip: Callable[[str], None] | None = None,
) -> Iterator[Folder]:
    """Yield every folder under ``roots`` with its files, depth first, in a stable order.

    A folder reached twice (through a symlink, or a loop) is listed once. A subfolder that
    cannot be listed, and a file or subfolder whose name is not valid UTF-8 (it could not be
    stored), are skipped and reported as ``on_error(folder, path, reason)``: ``folder`` was
    not fully listed, so photos recorded under it must not be taken for deleted. A folder
    skipped on purpose (an album photosort wrote, or a second name of a folder already
    listed) is passed to ``on_skip``: what the library holds under that name is not gone.
    """
    seen: set[tuple[int, int]] = set()
    for root in roots:
        if not os.path.isdir(root):
            try:
                entry = _file_entry(root, os.path.dirname(root))
            except OSError as exc:
                if on_error is not None:
                    on_error(root, root, f"cannot read: {_reason(exc)}")
                continue
            if entry is not None:
                yield Folder(os.path.dirname(root), [entry])
            continue
        stack = [root]
        while stack:
            folder = stack.pop()
            try:
                st = os.stat(folder)
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    if on_skip is not None:
                        on_skip(folder)
                    continue
                seen.add(key)
                with os.scandir(folder) as it:
                    names = sorted(it, key=lambda e: e.name)
                if any(entry.name == REPORT_MANIFEST for entry in names):
                    if on_skip is not None:
                        on_skip(folder)
                    continue  # an album photosort wrote: copies of photos, not photos
            except OSError as exc:
                if on_error is not None:
                    on_error(folder, folder, f"cannot list folder: {_reason(exc)}")
                continue
            files: list[FileEntry] = []
            subfolders: list[str] = []
            unreadable = False
            for entry in names:
                if _hidden(entry.name):
                    continue
                try:
                    is_dir = entry.is_dir()  # follows symlinks
                    fe = None if is_dir else _file_entry(entry.path, folder)
                except OSError as exc:
                    # A folder listed but not entered (r without x), a flaky drive (EIO,
                    # ESTALE): the entry may well be a photo still there. Said once per folder,
                    # which then marks nothing missing.
                    if on_error is not None and not unreadable:
                        on_error(folder, printable(entry.path), f"cannot read: {_reason(exc)}")
                    unreadable = True
                    continue
                if not is_dir and fe is None:
                    continue  # gone, a dangling symlink, or not a regular file
                if not storable(entry.name):
                    if on_error is not None:
                        on_error(folder, printable(entry.path), NOT_UTF8)
                elif fe is None:
                    subfolders.append(entry.path)
                else:
                    files.append(fe)
            if files:
                yield Folder(folder, files)
            stack.extend(reversed(subfolders))


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _file_entry(path: str, folder: str) -> FileEntry | None:
    """The walk's facts about one file; None when it is gone or is no regular file.

    Only a file that is not there (deleted meanwhile, a dangling symlink) is None; any other
    failure to stat it (permission, I/O error) is raised, since the file may be there.
    """
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return FileEntry(path, folder, st.st_size, st.st_mtime_ns)


def count_files(roots: Iterable[str]) -> int:
    """Count the files a walk would yield, so a progress bar can show how far along it is."""
    return sum(len(folder.files) for folder in walk(roots))


def examine(
    path: str,
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    max_file_size: int = DEFAULT_MAX_FILE_SIZE,
) -> FileFacts | None:
    """Read one file: hash it and learn whether it is a usable photo.

    Returns None for files that are not photos at all (not an image by content nor by name),
    so sidecars and videos are ignored; files that look like photos but are broken come back
    with ``error`` set to the reason. An image over ``max_file_size`` bytes is one: it is
    not hashed (minutes, for a file no camera makes).
    """
    named_like_image = os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS
    try:
        fh = open_regular(path)
    except FileNotFoundError:
        return None  # deleted since the walk listed it: not a photo, and not a broken one
    except PermissionError:
        return FileFacts(None, None, "permission denied") if named_like_image else None
    except OSError as exc:
        reason = f"cannot read file: {exc.strerror or exc}"
        return FileFacts(None, None, reason) if named_like_image else None
    except ImageError as exc:  # a FIFO or a device where the walk saw a file
        return FileFacts(None, None, str(exc)) if named_like_image else None
    with fh:
        return _examine_open(fh, named_like_image, max_megapixels, max_file_size)


def _examine_open(
    fh: BinaryIO, named_like_image: bool, max_megapixels: float, max_file_size: int
) -> FileFacts | None:
    digest = hashlib.sha256()
    try:
        head = fh.read(32)
        fmt = sniff_format(head)
        if fmt is None:
            unsupported = sniff_unsupported(head)
            if unsupported is not None:
                return FileFacts(None, None, f"{unsupported} photo: {UNSUPPORTED_HINT}")
            if not named_like_image:
                return None
            reason = "empty file" if not head else "not an image (unrecognised content)"
            return FileFacts(None, None, reason)
        size = os.fstat(fh.fileno()).st_size
        if size > max_file_size:
            return FileFacts(
                None,
                None,
                f"file of {size / 1e6:,.6g} MB is over the limit of {max_file_size / 1e6:,.6g} "
                "MB (--max-file-size); not read",
            )
        digest.update(head)
        tail = (head + _digest_rest(fh, digest))[-TAIL:]
    except OSError as exc:
        if not named_like_image:
            return None
        return FileFacts(None, None, f"cannot read file: {exc.strerror or exc}")
    content_hash = digest.hexdigest()
    try:
        check_complete(fmt, tail, fh)
        info = probe_image(fh, max_megapixels=max_megapixels)
    except ImageError as exc:
        return FileFacts(content_hash, None, str(exc))
    return FileFacts(content_hash, info, None)


def _digest_rest(fh: BinaryIO, digest: Any) -> bytes:
    """Feed the rest of ``fh`` to ``digest`` in chunks; return its last ``TAIL`` bytes."""
    tail = b""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while n := fh.readinto(buf):
        digest.update(view[:n])
        tail = (tail + bytes(view[max(0, n - TAIL) : n]))[-TAIL:]
    return tail


def content_hash(path: str) -> str:
    """The content hash a scan stores for the file at ``path`` (SHA-256, streamed); raises
    OSError or ImageError when it cannot be read."""
    digest = hashlib.sha256()
    with open_regular(path) as fh:
        _digest_rest(fh, digest)
    return digest.hexdigest()


T = TypeVar("T")
R = TypeVar("R")


PR_SET_PDEATHSIG = 1
WATCH_SECONDS = 0.5
"""How often a worker checks that the scan it works for is still there."""


def worker_init(main_pid: int) -> None:
    """Set up a worker process: Ctrl-C is for the main process, which stops the scan cleanly,
    and the worker never outlives the scan ``main_pid``.

    The kernel kills it when its parent dies (``PR_SET_PDEATHSIG``: the scan, or the fork
    server that dies with it); a watchdog thread covers the rest (the parent gone before
    this ran, a system without prctl). An orphaned worker would read on for nobody.
    """
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    parent = os.getppid()
    _kill_me_with_my_parent()
    if not _running(main_pid) or os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=_watch, args=(main_pid, parent), daemon=True).start()


def _kill_me_with_my_parent() -> None:
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the watchdog still ends the worker


def _running(pid: int) -> bool:
    """Whether process ``pid`` is alive: not gone, and not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _watch(main_pid: int, parent: int) -> None:
    while os.getppid() == parent and _running(main_pid):
        time.sleep(WATCH_SECONDS)
    os._exit(1)


class WorkerLost(PhotosortError):
    """A worker process died (killed, out of memory) while doing one call."""


class WorkerPool(Executor):
    """Worker processes that die with the scan and survive the loss of one of their own.

    A worker killed mid-call (the out-of-memory killer, a segfault in a decoder) breaks a
    ``ProcessPoolExecutor`` and fails every call in flight. The next submit starts a new
    pool, and :func:`bounded_map` runs each failed call again alone (``run_alone``): the one
    that killed its worker dies again and is reported, the others only shared its pool.
    Leaving with an exception (Ctrl-C, SIGTERM) kills the workers rather than waiting for
    them: one stuck in a read must not keep the scan from ending.
    """

    def __init__(self, workers: int, context: Callable[[], Any]) -> None:
        self.workers = workers
        self.context = context
        """The multiprocessing context to start workers with, asked each time."""
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=self.context(),
            initializer=worker_init,
            initargs=(os.getpid(),),
        )

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        try:
            return self._pool.submit(fn, *args, **kwargs)
        except BrokenProcessPool:
            self._pool.shutdown(wait=True)  # its workers are gone already
            self._pool = self._start()
            return self._pool.submit(fn, *args, **kwargs)

    def run_alone(self, fn: Callable[..., R], *args: Any) -> R:
        """Call ``fn`` in a worker process of its own; raise WorkerLost if that one dies."""
        from multiprocessing.connection import wait

        context = self.context()
        receive, send = context.Pipe(duplex=False)
        proc = context.Process(
            target=_call_and_send, args=(send, os.getpid(), fn, args), daemon=True
        )
        proc.start()
        send.close()
        try:
            wait([receive, proc.sentinel])
            try:
                ok, value = receive.recv()
            except EOFError:
                pass
            else:
                if ok:
                    return value
                raise value
        finally:
            receive.close()
            if proc.is_alive():  # done, or the scan is being interrupted: never wait on it
                proc.kill()
            proc.join()
        raise WorkerLost(_death(proc.exitcode))

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def kill(self) -> None:
        """End every worker now, whatever it is doing."""
        kill_pool(self._pool)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.shutdown(wait=True)
        else:
            self.kill()


def kill_pool(pool: ProcessPoolExecutor) -> None:
    """End every worker of ``pool`` now, whatever it is doing, and reap them."""
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        proc.kill()
    pool.shutdown(wait=True, cancel_futures=True)


def _call_and_send(send: Any, main_pid: int, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    worker_init(main_pid)
    try:
        outcome = (True, fn(*args))
    except Exception as exc:  # noqa: BLE001 - handed to the caller, as a pool would
        outcome = (False, exc)
    send.send(outcome)
    send.close()


def _death(exitcode: int | None) -> str:
    """Why a worker died, as the reason recorded for the photo it was reading."""
    import signal

    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = "; out of memory?" if name == "SIGKILL" else ""
        return f"the worker process reading it was killed ({name}{hint})"
    return f"the worker process reading it died (exit code {exitcode})"


class InlineExecutor(Executor):
    """Runs each call at once in this process: ``--workers 1``, with no pool to start."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> Future[R]:
        future: Future[R] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(exc)
        return future


class BatchExecutor(Protocol):
    """An executor that runs several calls of one function as one task (a cluster's)."""

    def submit_batch(self, fn: Callable[..., R], calls: list[tuple[Any, ...]]) -> list[Future[R]]:
        """One future per call, each settled on its own."""
        ...


_UNSENT: Any = object()
"""A pending item's future while its batch is still being filled."""


def bounded_map(
    executor: Executor,
    fn: Callable[..., R | None],
    items: Iterable[T],
    *,
    args: Callable[[T], tuple[Any, ...]],
    needs_work: Callable[[T], bool],
    window: int,
    lost: Callable[[T, str], R],
    batch: int = 1,
) -> Iterator[tuple[T, R | None]]:
    """Like ``executor.map`` but lazy, in order, and with at most ``window`` items in flight.

    ``fn`` gets ``args(item)``, plain values a worker process can receive. Items for which
    ``needs_work`` is false are passed through with None, without a trip to the executor.
    The input is consumed only as fast as results are taken, which keeps memory flat on
    libraries of any size. A call whose worker died is run again alone; if it kills that
    worker too, its result is ``lost(item, reason)``. With ``batch`` above one, the
    executor is a :class:`BatchExecutor` and gets the calls ``batch`` at a time (fewer
    when the oldest item is waited for); each item still has its own outcome.
    """

    def result(entry: list[Any]) -> tuple[T, R | None]:
        item, future = entry
        if future is None:
            return item, None
        try:
            return item, future.result()
        except WorkerLost as exc:  # a cluster's workers died of it, each in turn
            return item, lost(item, str(exc))
        except BrokenProcessPool:
            if not isinstance(executor, WorkerPool):
                raise
            try:
                return item, executor.run_alone(fn, *args(item))
            except WorkerLost as exc:
                return item, lost(item, str(exc))

    group: list[list[Any]] = []

    def send() -> None:
        if batch == 1:
            futures = [executor.submit(fn, *args(entry[0])) for entry in group]
        else:
            batcher = cast(BatchExecutor, executor)
            futures = batcher.submit_batch(fn, [args(entry[0]) for entry in group])
        for entry, future in zip(group, futures, strict=True):
            entry[1] = future
        group.clear()

    pending: deque[list[Any]] = deque()
    for item in items:
        entry = [item, None]
        if needs_work(item):
            entry[1] = _UNSENT
            group.append(entry)
            if len(group) >= batch:
                send()
        pending.append(entry)
        while len(pending) >= window or (pending and _ready(pending[0][1])):
            if pending[0][1] is _UNSENT:
                send()
            yield result(pending.popleft())
    send()
    while pending:
        yield result(pending.popleft())


def _ready(future: Future[object] | None) -> bool:
    return future is None or (future is not _UNSENT and future.done())
