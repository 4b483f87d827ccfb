"""The command line: parses options and calls the importable functions of each stage.

Keep it thin. Heavy modules (TensorFlow above all) are imported inside the commands that
need them, so ``photosort --help`` stays fast.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from photosort import __version__
from photosort.defaults import (
    AUGMENT_MODES,
    DEFAULT_BALANCE,
    DEFAULT_MIN_FACE,
    DEFAULT_MIN_PRESENCE,
    DEFAULT_MIN_PROBABILITY,
    DEFAULT_MIN_SCORE,
    DEFAULT_SAMPLES,
    DEFAULT_SEGMENTS,
    DETECTOR_NAMES,
    EMOTIONS,
    LABEL_MODES,
    MAX_FILE_MB,
    MAX_MEGAPIXELS,
    PEAK_LR,
    QUANTIZE_MODES,
    WIDTHS,
)
from photosort.errors import PhotosortError

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.engine import URL

    from photosort.indexing import LazyClassifier
    from photosort.ranking import Period, PhotoFaces


class DatabaseParam(click.ParamType):
    """``--db``: an SQLAlchemy URL or a file path, checked before any work starts."""

    name = "URL|PATH"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> URL:
        from photosort.store import database_url

        try:
            if isinstance(value, str) and not value.strip():
                raise PhotosortError("it is empty: give a file path or an SQLAlchemy URL")
            return database_url(value)
        except PhotosortError as exc:
            hint = "'--db'"
            if ctx is not None and param is not None and param.name is not None:
                if ctx.get_parameter_source(param.name) == ParameterSource.ENVIRONMENT:
                    hint = "$PHOTOSORT_DB"
            raise click.BadParameter(str(exc), ctx, param, param_hint=hint) from None


class WidthsParam(click.ParamType):
    """``--widths 48,96,192,384``: the network's stage widths, two or more positive numbers."""

    name = "N,N,..."

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        try:
            widths = tuple(int(part) for part in str(value).split(","))
        except ValueError:
            widths = ()
        if len(widths) < 2 or min(widths) < 1:
            self.fail(f"{value!r}: give two or more positive whole numbers, e.g. 48,96,192,384")
        return widths


class DateParam(click.ParamType):
    """``--since``/``--until``: a year, month or day, as the local time it covers."""

    name = "YYYY[-MM[-DD]]"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[datetime, datetime]:
        from photosort.ranking import date_span

        if isinstance(value, tuple):
            return value
        try:
            return date_span(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def date_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--since`` and ``--until``, shared by top and report; see :func:`period_of`."""
    func = click.option(
        "--until",
        type=DateParam(),
        help="Only photos taken up to the end of this year, month or day.",
    )(func)
    return click.option(
        "--since",
        type=DateParam(),
        help="Only photos taken in or after this year, month or day (2023, 2023-06, "
        "2023-06-14; the capture time, else the file's time).",
    )(func)


def period_of(
    since: tuple[datetime, datetime] | None, until: tuple[datetime, datetime] | None
) -> Period:
    """The period --since and --until name, or a one-line usage error when it is empty."""
    from photosort.ranking import Period, RankingError

    try:
        return Period(since[0] if since else None, until[1] if until else None)
    except RankingError as exc:
        raise click.BadParameter(str(exc), param_hint="'--since' / '--until'") from None


class Number(click.FloatRange):
    """Every option that takes a number: a range, and a finite value.

    ``float()`` reads "nan" and "inf", and NaN passes every range check (each comparison
    is false): ``--max-megapixels nan`` would turn the decompression-bomb guard off and
    ``--min-score nan`` would find no face at all.
    """

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)

    def _describe_range(self) -> str:
        """No range to show in the help when there is none (click writes "x<=None")."""
        if self.min is None and self.max is None:
            return ""
        return super()._describe_range()


def db_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--db`` option every library command shares (falls back to $PHOTOSORT_DB)."""
    return click.option(
        "--db",
        "db_url",
        type=DatabaseParam(),
        envvar="PHOTOSORT_DB",
        show_envvar=True,
        help="Library database: a file path or SQLAlchemy URL "
        "[default: $XDG_DATA_HOME/photosort/library.db].",
    )(func)


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")(func)


def min_probability_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--min-probability",
        type=Number(0, 1),
        default=DEFAULT_MIN_PROBABILITY,
        show_default=True,
        help="Only photos whose face shows the emotion at least this likely (0-1).",
    )(func)


def quiet_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")(func)


def needs_tensorflow(what: str) -> None:
    """A one-line error before any work when the ``train`` extra is missing."""
    from photosort.emotions import require_tensorflow

    with user_errors():
        require_tensorflow(what)


def needs_keras(what: str) -> None:
    """:func:`needs_tensorflow`, or Keras and the backend ``KERAS_BACKEND`` names."""
    from photosort.emotions import require_keras

    with user_errors():
        require_keras(what)


MODEL_SUFFIXES = (".tflite", ".keras")
"""The files ``load_model`` reads: LiteRT, or a Keras archive through TensorFlow."""


def check_model_runtime(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A model file's name says how it loads: anything else is refused in one line (not
    loaded as Keras), and a ``.keras`` file needs TensorFlow, said up front."""
    if value is None:
        return value
    suffix = Path(value).suffix
    if suffix not in MODEL_SUFFIXES:
        raise click.BadParameter(
            f"{value} is not an emotion model: its name must end in {' or '.join(MODEL_SUFFIXES)}"
        )
    if suffix == ".keras":
        needs_keras(f"--model {value}")
    return value


def loaded_classifier(model_path: str | None) -> LazyClassifier:
    """The emotion model of ``--model``, loaded now: a file that is no model is refused
    before a scan or a report starts work, not after its first photos."""
    from photosort.indexing import LazyClassifier

    classifier = LazyClassifier(model_path)
    if model_path is not None:
        with user_errors():
            classifier.model  # noqa: B018 - loads it, or raises the model's own error
    return classifier


def model_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--model``: the scan, report and explain commands must agree on which model they use."""
    return click.option(
        "--model",
        "model_path",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        callback=check_model_runtime,
        help="Emotion model (.tflite, or .keras through TensorFlow) [default: the one shipped "
        "with photosort].",
    )(func)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the stages' own errors into one-line messages and a non-zero exit."""
    try:
        yield
    except PhotosortError as exc:
        raise click.ClickException(safe(str(exc))) from None
    except Exception as exc:
        from sqlalchemy.exc import DBAPIError

        from photosort.store import describe_db_error

        if isinstance(exc, DBAPIError):
            raise click.ClickException(safe(describe_db_error(exc))) from None
        raise


def open_library(db_url: URL | None, *, create: bool = False) -> Any:
    """Open the library database, migrating it (``migrate_library``). Only ``scan`` creates
    one: a mistyped --db for any other command is an error, not a new empty library."""
    from photosort.store import database_url, open_engine, sqlite_file

    with user_errors():
        url = database_url(db_url)
        path = sqlite_file(url)
        if not create and path is not None and not path.exists():
            named = click.get_current_context().get_parameter_source("db_url")
            given = f" --db {path}" if named == ParameterSource.COMMANDLINE else ""
            raise click.ClickException(
                f"no library at {path}: scan a folder into it first (photosort scan FOLDER{given})"
            )
        engine = closed_at_end(open_engine(url, migrate=False))
        migrate_library(engine)
        return engine


def closed_at_end(engine: Any) -> Any:
    """The engine, its connections closed when the command ends, however it ends: SQLite
    checkpoints its log and removes it then, and no exit-time collection is relied on."""
    click.get_current_context().call_on_close(engine.dispose)
    return engine


def migrate_library(engine: Any, *, locked: bool = False) -> bool:
    """Bring an older library's schema up to date, under the writer lock (``locked``: the
    caller holds it), and say so first: on a large library a migration takes minutes.
    Returns whether one was applied."""
    from photosort.store import pending_upgrade, upgrade, writer_lock

    pending = pending_upgrade(engine)
    if pending is None:
        return False
    current, head = pending
    if current is None:  # a new library: its tables are made in one short transaction
        return upgrade(engine)
    click.echo(
        f"photosort: upgrading the library's schema from {current} to {head}; on a large "
        "library this takes minutes",
        err=True,
    )
    started = time.monotonic()

    def applied(revision: str) -> None:
        click.echo(
            f"photosort: schema revision {revision} applied ({time.monotonic() - started:.1f} s)",
            err=True,
        )

    if locked:
        return upgrade(engine, applied)
    with writer_lock(engine.url, command="db upgrade"):
        return upgrade(engine, applied)


@contextmanager
def writing(engine: Any, command: str, dry_run: bool = False) -> Iterator[None]:
    """Hold the library's writer lock for a command that writes; a dry run only reads, and
    reading goes on while a scan writes."""
    from photosort.store import writer_lock

    if dry_run:
        yield
        return
    with writer_lock(engine.url, command=command):
        yield


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""C0 and C1 control characters, and the bidirectional overrides that reorder a line."""


def safe(text: str) -> str:
    """Text fit for a terminal, escaped where it is not printable (``\\x1b``, ``\\n``).

    File names and the reasons that quote them come from the disk: a name holding ESC[2J
    would clear the screen, a newline would forge a line of output. Bytes that are not
    UTF-8 are shown as U+FFFD.
    """
    return _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), utf8(text))


def utf8(text: str) -> str:
    """``text`` with the bytes of a name that are not UTF-8 (kept by Python as surrogates)
    shown as U+FFFD: a terminal or a JSON reader takes UTF-8 only."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "replace")
    return raw.decode("utf-8", "replace")


def plural(count: int, word: str) -> str:
    """``1 photo``, ``2 photos``: summaries read as sentences."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def show_progress(quiet: bool) -> bool:
    """Progress bars go to stderr, and only to a terminal."""
    return not quiet and sys.stderr.isatty()


@contextmanager
def progress_bar(
    label: str,
    length: int,
    wanted: bool,
    show_item: Callable[[str | None], str] | None = None,
) -> Iterator[Callable[[str], None] | None]:
    """A bar on stderr that the yielded callback advances by one item; the callback is None
    when no bar is wanted, so the work does not even call it."""
    with click.progressbar(
        length=length, label=label, file=sys.stderr, item_show_func=show_item, hidden=not wanted
    ) as bar:
        yield (lambda item: bar.update(1, item)) if wanted else None


def file_label(path: str | None) -> str:
    """A scanned file as the progress bar names it: the start of its file name."""
    return Path(path).name[:40] if path else ""


def suffix_check(
    suffix: str, what: str, *, in_a_folder: bool = False
) -> Callable[[click.Context, click.Parameter, Path], Path]:
    """A callback that insists on a file name ending: the content is always that format.
    With ``in_a_folder`` the file's folder must exist too, checked before the work that
    would be written there, not after it."""

    def check(ctx: click.Context, param: click.Parameter, value: Path) -> Path:
        if value is not None and value.suffix != suffix:
            raise click.BadParameter(f"{what} file name must end in {suffix}")
        if value is not None and in_a_folder and not value.absolute().parent.is_dir():
            raise click.BadParameter(f"{value}: there is no folder {value.parent} to write it in")
        return value

    return check


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


_TERMINATED: list[int] = []


def _raise_interrupt(signum: int, frame: Any) -> None:
    _TERMINATED.append(signum)
    raise KeyboardInterrupt


def _quiet_lost_interrupt(unraisable: Any) -> None:
    """Keep the KeyboardInterrupt a signal raised inside a finalizer off stderr: it is not
    lost (`interruptible` raises it again), so its "Exception ignored" traceback only alarms."""
    if _TERMINATED and isinstance(unraisable.exc_value, KeyboardInterrupt):
        return
    sys.__unraisablehook__(unraisable)


def handle_termination() -> None:
    """Treat SIGTERM like Ctrl-C so a killed scan also rolls back its open batch cleanly; both
    are remembered, so neither is lost when it lands in a garbage-collector callback."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    sys.unraisablehook = _quiet_lost_interrupt


def interruptible(advance: Callable[[str], None] | None) -> Callable[[str], None]:
    """A progress callback that ends the work once SIGTERM or SIGINT came: the KeyboardInterrupt
    the handler raises is lost when it lands in a finalizer or a garbage-collector callback."""

    def step(item: str) -> None:
        if _TERMINATED:
            raise KeyboardInterrupt
        if advance is not None:
            advance(item)

    return step


class Interrupted(click.ClickException):
    """Ctrl-C (or a scan's SIGTERM) ended the command: one line and exit status 130, as a
    shell reports a command SIGINT ended, rather than click's "Aborted!" and status 1."""

    exit_code = 130

    def show(self, file: Any = None) -> None:
        click.echo(f"photosort: {self.message}", err=True)


class Commands(click.Group):
    """The command group: a Ctrl-C landing anywhere in a command, its clean-up included
    (closing the library, stopping LIME's process), ends it as `Interrupted`."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted("interrupted") from None


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="photosort")
def cli() -> None:
    """Sort a personal photo library by the emotions on people's faces.

    \b
    Example:
        photosort scan ~/Pictures
        photosort status
    """


# --- library commands (scan, status, prune, db, demo) ---


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, file_okay=True))
@db_option
@json_option
@quiet_option
@click.option(
    "--max-megapixels",
    type=Number(min=1),
    default=MAX_MEGAPIXELS,
    show_default=True,
    help="Refuse images larger than this (decompression bombs).",
)
@click.option(
    "--max-file-size",
    "max_file_mb",
    type=Number(min=0),
    default=MAX_FILE_MB,
    show_default=True,
    metavar="MB",
    help="Record image files larger than this many megabytes as unreadable, without "
    "reading them (no camera writes one).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes reading files and finding faces [default: number of cores].",
)
@click.option(
    "--faces/--no-faces",
    default=True,
    show_default=True,
    help="Find and classify faces (--no-faces records files only).",
)
@click.option(
    "--detector",
    type=click.Choice(DETECTOR_NAMES),
    default=DETECTOR_NAMES[0],
    show_default=True,
    help="Face detector: tiled BlazeFace, or whole-image only (faster, misses small faces).",
)
@click.option(
    "--min-face",
    type=Number(min=0),
    default=DEFAULT_MIN_FACE,
    show_default=True,
    help="Ignore faces under this many photo pixels on the longer side of their box.",
)
@click.option(
    "--min-score",
    type=Number(0, 1),
    default=DEFAULT_MIN_SCORE,
    show_default=True,
    help="Detector confidence a face needs.",
)
@click.option(
    "--min-presence",
    type=Number(),
    default=DEFAULT_MIN_PRESENCE,
    show_default=True,
    help="Face-presence logit the face mesh must give a detected face (higher drops more "
    "fists and shirts, and more faces in profile or behind sunglasses).",
)
@click.option("--reclassify", is_flag=True, help="Classify every stored face again.")
@click.option(
    "--cluster",
    metavar="ADDRESS",
    envvar="PHOTOSORT_CLUSTER",
    help="Run the per-photo work on the Dask cluster whose scheduler is at ADDRESS "
    "(tcp://host:8786; also $PHOTOSORT_CLUSTER); its workers must see the photos at the "
    "same paths. Needs photosort[cluster].",
)
@model_option
def scan(
    paths: tuple[str, ...],
    db_url: URL | None,
    as_json: bool,
    quiet: bool,
    max_megapixels: float,
    max_file_mb: float,
    workers: int | None,
    faces: bool,
    detector: str,
    min_face: float,
    min_score: float,
    min_presence: float,
    reclassify: bool,
    cluster: str | None,
    model_path: str | None,
) -> None:
    """Scan photo folders into the library, incrementally.

    Unchanged files are not read again, moved files keep their identity, deleted files are
    marked missing. Faces in new and changed photos are detected, cropped and classified;
    when the emotion model changes, stored faces are classified again without re-detection.
    Photo folders are only read, never written.

    \b
    Example:
        photosort scan ~/Pictures /media/usb/DCIM --json
        photosort scan ~/Pictures --min-presence 4
        photosort scan /mnt/nas/photos --cluster tcp://scheduler:8786
    """
    from photosort.indexing import FaceOptions, scan_library, scan_roots
    from photosort.scanning import count_files
    from photosort.store import writer_lock

    engine = open_library(db_url, create=True)
    face_options = None
    if faces:
        face_options = FaceOptions(
            classifier=loaded_classifier(model_path),
            detector=detector,
            min_score=min_score,
            min_face=min_face,
            min_presence=min_presence,
            reclassify=reclassify,
        )
    handle_termination()
    bar_wanted = show_progress(quiet)
    try:
        with user_errors():
            roots = scan_roots(paths)
        with user_errors(), writer_lock(engine.url, roots=roots):
            total = count_files(roots) if bar_wanted else 0
            with progress_bar("Scanning", total, bar_wanted, file_label) as advance:
                report = scan_library(
                    engine,
                    list(paths),
                    max_megapixels=max_megapixels,
                    max_file_size=int(max_file_mb * 1e6),
                    workers=workers,
                    progress=interruptible(advance),
                    faces=face_options,
                    cluster=cluster,
                )
        if _TERMINATED:  # the signal's interrupt was swallowed after the last file
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise Interrupted(
            "scan interrupted; finished work is saved, run it again to carry on"
        ) from None
    if as_json:
        # Every file this scan could not use, and why: names that cannot be stored (not
        # UTF-8) are listed only here and in the summary, not in `status --errors`.
        problems = [{"path": utf8(p), "reason": utf8(why)} for p, why in report.problems]
        emit_json({**report.as_dict(), "problems": problems})
    elif not quiet:
        r = report
        click.echo(
            f"Scanned {plural(r.scanned, 'photo')} in {r.seconds:.1f} s: {r.new} new, "
            f"{r.changed} changed, {r.moved} moved, {r.missing} missing, {r.unchanged} unchanged, "
            f"{plural(r.errors, 'error')}; {plural(r.faces, 'face')} found, "
            f"{r.classified} classified."
        )
        if r.redetected:
            click.echo(
                f"Faces found again in {plural(r.redetected, 'photo')} scanned before: the "
                "face-finding settings changed (your options, or a new photosort's), so "
                "their faces replace those found before."
            )
        for path, reason in r.problems[:10]:
            click.echo(f"  {safe(path)}: {safe(reason)}", err=True)
        if len(r.problems) > 10:
            click.echo(
                f"  ... and {len(r.problems) - 10} more (photosort status --errors lists the "
                "unreadable files)",
                err=True,
            )


@cli.command()
@db_option
@json_option
@click.option(
    "--errors",
    "list_errors",
    is_flag=True,
    help="List unreadable files, and photos whose faces could not be found, and why.",
)
def status(db_url: URL | None, as_json: bool, list_errors: bool) -> None:
    """Show how many photos and faces the library holds, which model classified the faces,
    and when it was last scanned.

    \b
    Example:
        photosort status --json
    """
    from photosort.store import library_status, unreadable_photos

    engine = open_library(db_url)
    with user_errors():
        info = library_status(engine)
        problems = unreadable_photos(engine) if list_errors else []
    if as_json:
        data = info.as_dict()
        if list_errors:
            data["errors"] = [{"path": p, "reason": r} for p, r in problems]
        emit_json(data)
        return
    click.echo(f"Database:   {safe(info.database)}")
    click.echo(
        f"Photos:     {info.photos} ({info.by_status['ok']} ok, "
        f"{info.by_status['unreadable']} unreadable, {info.by_status['missing']} missing)"
    )
    classified = sum(info.models.values())
    awaiting = (
        f"; {plural(info.awaiting_faces, 'photo')} not looked at yet, scan again to find theirs"
        if info.awaiting_faces
        else ""
    )
    click.echo(f"Faces:      {info.faces} ({classified} classified{awaiting})")
    if info.models:
        from photosort.emotions import ModelError, model_id_of

        try:
            shipped = model_id_of(None)
        except ModelError:
            shipped = None
        for model, n in info.models.items():
            label = " (shipped with photosort)" if model == shipped else ""
            click.echo(f"Model:      {model}{label}: {plural(n, 'face')}")
    last = (
        f"{info.last_scan:%Y-%m-%d %H:%M:%S} UTC ({info.last_scan_state})"
        if info.last_scan
        else "never"
    )
    click.echo(f"Last scan:  {last}")
    if list_errors and not problems:
        click.echo("No unreadable files.")
    for path, reason in problems:
        click.echo(f"  {safe(path)}: {safe(reason)}")


@cli.command()
@db_option
@json_option
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def prune(db_url: URL | None, as_json: bool, dry_run: bool) -> None:
    """Forget photos marked missing, with everything derived from them.

    \b
    Example:
        photosort prune --dry-run
    """
    from photosort.store import prune_missing

    engine = open_library(db_url)
    with user_errors(), writing(engine, "prune", dry_run):
        paths = prune_missing(engine, dry_run=dry_run)
    if as_json:
        emit_json({"dry_run": dry_run, "removed": 0 if dry_run else len(paths), "paths": paths})
        return
    for path in paths:
        click.echo(safe(path))
    verb = "Would remove" if dry_run else "Removed"
    click.echo(f"{verb} {plural(len(paths), 'missing photo')}.")


@cli.command()
@click.argument("emotion", type=click.Choice(EMOTIONS, case_sensitive=False), metavar="EMOTION")
@click.option(
    "-n",
    "count",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="How many photos.",
)
@db_option
@json_option
@click.option(
    "--min-face",
    type=Number(min=0),
    default=0,
    show_default=True,
    help="Only count faces at least this many photo pixels wide.",
)
@min_probability_option
@click.option(
    "--under",
    type=click.Path(file_okay=False),
    help="Only photos in this folder (it need not be there now: an unmounted drive).",
)
@click.option(
    "--every-face",
    is_flag=True,
    help="Rank by the weakest face, so everyone in the photo shows the emotion.",
)
@click.option(
    "--keep-duplicates",
    is_flag=True,
    help="Keep near-identical shots (bursts) instead of the best of each.",
)
@date_options
def top(
    emotion: str,
    count: int,
    db_url: URL | None,
    as_json: bool,
    min_face: float,
    min_probability: float,
    under: str | None,
    every_face: bool,
    keep_duplicates: bool,
    since: tuple[datetime, datetime] | None,
    until: tuple[datetime, datetime] | None,
) -> None:
    """List the photos that show EMOTION best.

    EMOTION is one of angry, disgust, fear, happy, sad, surprise, neutral.

    A photo's date is its capture time (EXIF), or for a photo without one its file's
    modification time, marked with a *. --since and --until take a year, a month or a day
    and include the whole of it, in local time.

    \b
    Example:
        photosort top happy -n 10
        photosort top happy --since 2023 --until 2023-08
    """
    from photosort.ranking import top_photos

    period = period_of(since, until)
    engine = open_library(db_url)
    with user_errors():
        ranked = top_photos(
            engine,
            emotion.lower(),
            count,
            min_face=min_face,
            min_probability=min_probability,
            under=under,
            every_face=every_face,
            keep_duplicates=keep_duplicates,
            period=period,
        )
    if as_json:
        emit_json([r.as_dict() for r in ranked])
        return
    if not ranked:
        filters = " (--min-probability" + (", --min-face" if min_face else "")
        filters += (", --under" if under else "") + (", --since" if since else "")
        filters += (", --until" if until else "") + ")"
        taken = f" among the photos taken {period.describe()}" if period.bounded else ""
        click.echo(
            f"No photo shows {emotion.lower()} with a probability of {min_probability:.0%} or "
            f"more{taken}{filters}."
        )
        return
    click.echo(f"{'#':>3}  {emotion.lower():>7}  faces  {'taken':<11}  path")
    for i, r in enumerate(ranked, 1):
        date = f"{r.date:%Y-%m-%d}{'*' if r.date_from_file else ''}" if r.date else ""
        click.echo(f"{i:>3}  {r.score:>7.1%}  {len(r.faces):>5}  {date:<11}  {safe(r.path)}")
    if any(r.date_from_file for r in ranked):
        click.echo("* no capture time in the photo: the date of its file")
    # A short list may be short because bursts were folded: say so.
    hidden = sum(r.folded for r in ranked) if len(ranked) < count else 0
    if hidden:
        click.echo(
            f"({plural(hidden, 'near-identical shot')} hidden; --keep-duplicates lists "
            f"{'it' if hidden == 1 else 'them'})"
        )


@cli.command()
@click.argument("photo", type=click.Path(dir_okay=False))
@db_option
@json_option
def show(photo: str, db_url: URL | None, as_json: bool) -> None:
    """Show the faces found in one photo, with their emotion probabilities.

    \b
    Example:
        photosort show ~/Pictures/2021/beach.jpg
    """
    from photosort.ranking import photo_faces

    engine = open_library(db_url)
    with user_errors():
        found = photo_faces(engine, photo)
    if as_json:
        emit_json(found.as_dict())
        return
    click.echo(f"{safe(found.path)} ({found.status}, {_faces_summary(found)})")
    if found.since_scan:
        click.echo(f"  {stale_note(found.since_scan)}")
    if found.error:
        click.echo(f"  {safe(found.error)}")
    header = "  ".join(f"{e:>8}" for e in EMOTIONS)
    if found.faces:
        click.echo(f"  {'face':<22}  {header}")
    for i, face in enumerate(found.faces, 1):
        x, y, w, h = (round(v) for v in face.box)
        where = f"{i}: {w}x{h} at {x},{y}"
        if face.probabilities is None:
            click.echo(f"  {where:<22}  {safe(face.error or 'not classified yet')}")
            continue
        cells = "  ".join(f"{face.probabilities[e]:>8.0%}" for e in EMOTIONS)
        click.echo(f"  {where:<22}  {cells}  -> {face.emotion}")


def stale_note(since_scan: str) -> str:
    """Say that stored faces are the scanned photo's, not those of the file there now."""
    what = {"changed": "changed", "missing": "gone missing"}[since_scan]
    return (
        f"The file has {what} since the scan: these are the scanned photo's faces. Scan its "
        "folder again to bring the library up to date."
    )


def _faces_summary(found: PhotoFaces) -> str:
    """How many faces, or why there is no count: 0 faces is a finding, not a default."""
    if found.faces_state == "done":
        return plural(len(found.faces), "face")
    if found.faces_state == "error":
        return "face detection failed"
    if found.status == "ok":
        return "faces not looked for yet: scan its folder again (without --no-faces)"
    return "faces not looked for"


def emotion_option(multiple: bool = False) -> Callable[..., Any]:
    return click.option(
        "--emotion",
        "emotion",
        type=click.Choice(EMOTIONS, case_sensitive=False),
        multiple=multiple,
        help="Emotion(s) to include [default: all]."
        if multiple
        else "Emotion to explain [default: the face's predicted one].",
    )


def lime_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--samples`` and ``--segments``, shared by report and explain."""
    func = click.option(
        "--segments",
        type=click.IntRange(4, 200),
        default=DEFAULT_SEGMENTS,
        show_default=True,
        help="Superpixels LIME cuts each face into.",
    )(func)
    return click.option(
        "--samples",
        type=click.IntRange(50, 20000),
        default=DEFAULT_SAMPLES,
        show_default=True,
        help="Perturbed faces LIME asks the model about.",
    )(func)


@cli.command()
@click.argument("outdir", type=click.Path(path_type=Path))
@click.option(
    "-n",
    "count",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Photos per emotion.",
)
@emotion_option(multiple=True)
@min_probability_option
@lime_options
@db_option
@json_option
@quiet_option
@click.option("--open", "open_browser", is_flag=True, help="Open the album in a browser.")
@model_option
@date_options
@click.option(
    "--by-year",
    is_flag=True,
    help="Show each emotion's picks grouped by the year they were taken.",
)
def report(
    outdir: Path,
    count: int,
    emotion: tuple[str, ...],
    min_probability: float,
    samples: int,
    segments: int,
    db_url: URL | None,
    as_json: bool,
    quiet: bool,
    open_browser: bool,
    model_path: str | None,
    since: tuple[datetime, datetime] | None,
    until: tuple[datetime, datetime] | None,
    by_year: bool,
) -> None:
    """Write a static HTML album of the top photos per emotion, with LIME heatmaps.

    Each pick's page explains the pick's emotion on the face that earned the pick; the
    photo's other faces show the `photosort explain` command that explains them.

    --since and --until keep the photos taken in a year, month or day (2023, 2023-06,
    2023-06-14; --until includes the whole of it), by capture time, else by the file's time,
    which the album marks. --by-year groups each emotion's picks by year.

    Re-running into the same OUTDIR updates it. Files photosort did not write are left
    alone, and a report that would overwrite one is refused. Explanations are cached in the
    library, so a re-run costs little.

    \b
    Example:
        photosort report ~/photosort-album -n 10 --emotion happy --emotion surprise --open
        photosort report ~/album-by-year --since 2019 --until 2023-06 --by-year
    """
    from photosort.reporting import build_report
    from photosort.store import shown_url

    period = period_of(since, until)
    engine = open_library(db_url)
    chosen = [e.lower() for e in emotion] or list(EMOTIONS)
    picks = count * len(set(chosen))  # build_report drops repeated emotions
    # The pages' `photosort explain` hints must reach this library and model.
    same_library = []
    source = click.get_current_context().get_parameter_source("db_url")
    if db_url is not None and source == ParameterSource.COMMANDLINE:
        same_library += ["--db", shown_url(db_url, for_command=True)]
    if model_path is not None:
        same_library += ["--model", model_path]
    classifier = loaded_classifier(model_path)
    with user_errors(), progress_bar("Explaining", picks, show_progress(quiet)) as advance:
        summary = build_report(
            engine,
            outdir,
            classifier,
            n=count,
            emotions=chosen,
            min_probability=min_probability,
            samples=samples,
            segments=segments,
            progress=advance,
            explain_options=same_library,
            period=period,
            by_year=by_year,
        )
    if as_json:
        emit_json(
            {
                "index": str(summary.index.resolve()),
                "picks": summary.picks,
                "explained": summary.explained,
                "cached": summary.cached,
                "changed": summary.changed,
            }
        )
    elif not quiet:
        click.echo(
            f"Wrote {summary.index} ({plural(summary.picks, 'pick')}; "
            f"{plural(summary.explained + summary.cached, 'explanation')}, "
            f"{summary.cached} of them from the cache)."
        )
    if summary.changed and not quiet:
        click.echo(
            f"photosort: {plural(summary.changed, 'picked photo')} changed since the last scan, "
            "left out of the album; scan again to rank the new files",
            err=True,
        )
    if open_browser:
        import webbrowser

        webbrowser.open(summary.index.resolve().as_uri())


class LimeFirst(click.Command):
    """A command that starts LIME's helper process before its options are checked: ``--db``
    loads the store (SQLAlchemy), and LIME's imports run beside that too, on the other
    core (``explaining.start_lime_process``). The helper is ended when the command is."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if set(args) & set(ctx.help_option_names):
            return super().parse_args(ctx, args)
        from photosort.explaining import start_lime_process, stop_lime_process

        start_lime_process()
        try:
            parsed = super().parse_args(ctx, args)
        except BaseException:  # a usage error: click closes no context here, so end it now
            stop_lime_process()
            raise
        ctx.call_on_close(stop_lime_process)
        return parsed


@cli.command(cls=LimeFirst)
@click.argument("photo", type=click.Path(dir_okay=False))
@click.option(
    "--face",
    "face_number",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Which face of the photo (as numbered by `photosort show`).",
)
@emotion_option()
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    callback=suffix_check(".png", "the explanation is a PNG image; its", in_a_folder=True),
    help="PNG file to write.",
)
@lime_options
@db_option
@json_option
@model_option
def explain(
    photo: str,
    face_number: int,
    emotion: str | None,
    out_path: Path,
    samples: int,
    segments: int,
    db_url: URL | None,
    as_json: bool,
    model_path: str | None,
) -> None:
    """Write one face's LIME explanation as an image, and say it in words.

    Blue regions support the emotion, orange ones speak against it; the image carries a
    caption (emotion, probability, verdict of the deletion check) and the colour key. The
    text names the face parts the regions cover and where hiding the supporting regions
    ranks among random choices of the same area. Drops are in percentage points.

    \b
    Example:
        photosort explain ~/Pictures/beach.jpg --face 2 --emotion happy --out beach-face2.png
    """
    from photosort.explaining import check_sentences
    from photosort.indexing import LazyClassifier
    from photosort.reporting import explain_photo_face

    engine = open_library(db_url)
    with user_errors():
        found, parts, image, since_scan = explain_photo_face(
            engine,
            photo,
            LazyClassifier(model_path),
            face_number=face_number,
            emotion=emotion.lower() if emotion else None,
            samples=samples,
            segments=segments,
        )
        try:
            image.save(out_path, "PNG")
        except OSError as exc:
            raise click.ClickException(f"cannot write {out_path}: {exc.strerror or exc}") from None
    sentence = parts.sentence(found.emotion)
    data = {
        "emotion": found.emotion,
        "probability": round(found.probability, 4),
        "fit": round(found.fit, 4),
        "deletion_support": round(found.deletion_support, 4),
        "deletion_random": round(found.deletion_random, 4),
        "deletion_spread": round(found.deletion_spread, 4),
        "deletion_threshold": round(found.threshold, 4),
        "deletion_rank": found.deletion_rank,
        "deletion_draws": found.deletion_draws,
        "faithful": found.faithful,
        "borderline": found.borderline,
        "uncertain": found.uncertain,
        "since_scan": since_scan,
        "supporting_parts": list(parts.support),
        "opposing_parts": list(parts.against),
        "in_words": sentence,
        "out": str(out_path),
    }
    if as_json:
        emit_json(data)
    else:
        if since_scan:
            click.echo(stale_note(since_scan), err=True)
        click.echo(f"{out_path}: {found.emotion} {found.probability:.0%}, fit {found.fit:.2f}")
        click.echo(sentence)
        for line in check_sentences(found):
            click.echo(line)


@cli.command()
@click.argument("old_prefix", type=click.Path())
@click.argument("new_prefix", type=click.Path(exists=True, file_okay=False))
@db_option
@json_option
@click.option("--dry-run", is_flag=True, help="Only show what would change.")
def relocate(
    old_prefix: str, new_prefix: str, db_url: URL | None, as_json: bool, dry_run: bool
) -> None:
    """Tell the library its photos moved from OLD_PREFIX to NEW_PREFIX.

    Faces, scores and explanations are kept; nothing is read or written in the folders.

    \b
    Example:
        photosort relocate /media/old-disk/Pictures /media/new-disk/Pictures --dry-run
    """
    from photosort.store import relocate as relocate_library

    engine = open_library(db_url)
    with user_errors(), writing(engine, "relocate", dry_run):
        moves = relocate_library(engine, old_prefix, new_prefix, dry_run=dry_run)
    if not moves:
        raise click.ClickException(f"no photo in the library is under {old_prefix}")
    there = sum(os.path.exists(after) for _, after in moves)
    if there < len(moves):
        click.echo(
            f"photosort: warning: {len(moves) - there} of {plural(len(moves), 'photo')} "
            f"not found at the new path under {new_prefix}; a scan will mark them missing",
            err=True,
        )
    if as_json:
        emit_json({"dry_run": dry_run, "moves": [{"from": a, "to": b} for a, b in moves]})
        return
    for before, after in moves[:20]:
        click.echo(f"{safe(before)} -> {safe(after)}")
    if len(moves) > 20:
        click.echo(f"... and {len(moves) - 20} more")
    verb = "Would relocate" if dry_run else "Relocated"
    click.echo(f"{verb} {plural(len(moves), 'photo')}.")


@cli.group()
def db() -> None:
    """Manage the library database.

    \b
    Example:
        photosort db upgrade --db ~/photos.db
    """


@db.command("upgrade")
@db_option
def db_upgrade(db_url: URL | None) -> None:
    """Bring the database schema up to date (scan and the other commands do this too).

    A writer like prune: beside a running scan it waits 3 s and is then refused, even when
    there is nothing to upgrade.

    \b
    Example:
        photosort db upgrade --db ~/photos.db
    """
    from contextlib import nullcontext

    from photosort.store import (
        database_url,
        is_read_only,
        open_engine,
        schema_revisions,
        writer_lock,
    )

    with user_errors():
        engine = closed_at_end(open_engine(database_url(db_url), migrate=False))
        # A library in a read-only folder has no writer to wait for: it is only read.
        lock = (
            nullcontext() if is_read_only(engine) else writer_lock(engine.url, command="db upgrade")
        )
        with lock:
            applied = migrate_library(engine, locked=True)
        current, _ = schema_revisions(engine)
    click.echo(
        f"Schema at revision {current}" + (" (upgraded)." if applied else " (already current).")
    )


def entry_point() -> str:
    """How the user reached photosort, so that printed commands work as they are pasted.

    A console script typed as a path (``.venv/bin/photosort``) keeps that path; one found on
    the PATH is ``photosort``; anything else (``python -m photosort``, tests) is this
    interpreter with ``-m photosort``.
    """
    import shlex
    import shutil

    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "photosort":
        on_path = shutil.which("photosort")
        if on_path and os.path.samefile(on_path, argv0):
            return "photosort"
        return shlex.quote(argv0)
    return shlex.join([sys.executable, "-m", "photosort"])


def next_commands(library: Path, example: str | None, face: int = 1) -> list[str]:
    """The commands to try after the demo, on its library, ready to paste."""
    import shlex

    run = entry_point()
    db = shlex.quote(str(library))
    lines = [f"{run} top happy -n 5 --db {db}", f"{run} top happy --every-face --db {db}"]
    if example is not None:
        photo = shlex.quote(example)
        lines += [
            f"{run} show {photo} --db {db}",
            f"{run} explain {photo} --face {face} --emotion happy --out happy.png --db {db}",
        ]
    lines.append(f"{run} status --db {db}")
    return lines


@cli.command()
@click.argument(
    "photos", type=click.Path(exists=True, file_okay=False, path_type=Path), required=False
)
@click.option(
    "--out",
    "folder",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("photosort-demo"),
    show_default=True,
    help="Folder for the demo's library, sample album and HTML album.",
)
@quiet_option
def demo(photos: Path | None, folder: Path, quiet: bool) -> None:
    """Run photosort on a sample album, or on PHOTOS, a folder of your own photos.

    Without PHOTOS it builds a sample album (OUT/album) from the photos and faces that
    scikit-image ships. Scans it (faces and emotions included) into the library
    OUT/library.db, lists the top happy photos, writes the HTML album OUT/report/ with its
    LIME heatmaps, and prints the commands to try next. Your photos are only read.

    \b
    Example:
        photosort demo
        photosort demo ~/Pictures --out /tmp/my-demo
    """
    from photosort.indexing import FaceOptions, LazyClassifier, scan_library
    from photosort.ranking import top_photos
    from photosort.reporting import build_report
    from photosort.sample import build_demo_album
    from photosort.scanning import count_files
    from photosort.store import database_url, library_status, open_engine

    album = folder / "album"
    if photos is None and not album.exists():
        build_demo_album(album)
    scanned_folder = album if photos is None else photos
    library = (folder / "library.db").resolve()
    model = LazyClassifier(None)
    bar_wanted = show_progress(quiet)
    with user_errors():
        folder.mkdir(parents=True, exist_ok=True)
        engine = closed_at_end(open_engine(database_url(str(library))))
        total = count_files([str(scanned_folder)]) if bar_wanted else 0
        with progress_bar("Scanning", total, bar_wanted, file_label) as advance:
            scanned = scan_library(
                engine, [str(scanned_folder)], faces=FaceOptions(classifier=model), progress=advance
            )
        happiest = top_photos(engine, "happy", 3)
        with progress_bar("Explaining", 3 * len(EMOTIONS), bar_wanted) as advance:
            summary = build_report(engine, folder / "report", model, n=3, progress=advance)
        held = library_status(engine)
    if quiet:
        return
    label = "Sample album:" if photos is None else "Photos:      "
    click.echo(f"{label} {safe(str(scanned_folder.resolve()))}")
    click.echo(
        f"Scanned {plural(scanned.scanned, 'photo')}: {scanned.new} new, "
        f"{scanned.unchanged} unchanged, {plural(scanned.errors, 'error')}."
    )
    models = ", ".join(held.models) or "none yet"
    click.echo(
        f"Library:      {safe(str(library))} holds {plural(held.by_status['ok'], 'photo')} "
        f"and {plural(held.faces, 'face')} (model {models})"
    )
    if happiest:
        click.echo("Top happy photos:")
        for rank, pick in enumerate(happiest, 1):
            click.echo(f"  {rank}. {pick.score:6.1%}  {safe(pick.path)}")
    else:
        click.echo("No happy photos found.")
    click.echo(f"HTML album:   {safe(str(summary.index.resolve()))}")
    click.echo("Next, try:")
    best = happiest[0] if happiest else None
    face = best.deciding.number if best and best.deciding else 1
    for line in next_commands(library, best.path if best else None, face):
        click.echo(f"  {safe(line)}")
    click.echo(
        f"Your own photos: {safe(entry_point())} demo FOLDER (into this demo library), or "
        f"{safe(entry_point())} scan FOLDER (into your library; see --help)."
    )


# --- model commands (train, evaluate) ---


@cli.command("train")
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("emotion.keras"),
    show_default=True,
    callback=suffix_check(".keras", "the model"),
    help="Model file to write; its metadata goes beside it as NAME.json, checkpoints in "
    "NAME.ckpt/ (emotion.keras: emotion.json, emotion.ckpt/).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=40,
    show_default=True,
    help="Epochs: the length of the learning-rate schedule (early stopping may end sooner).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=128,
    show_default=True,
    help="Faces per training step.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Random seed.")
@click.option(
    "--labels",
    type=click.Choice(LABEL_MODES),
    default=None,
    help="Train on the original labels, the FER+ vote distribution, or their average "
    "[default: mix with --votes, else fer2013].",
)
@click.option(
    "--votes",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="FER+ votes (fer2013new.csv), row-aligned with a DATA CSV.",
)
@click.option(
    "--mix-weight",
    type=Number(0, 1),
    default=0.5,
    show_default=True,
    help="With --labels mix: the original label's share of each target, the rest going to "
    "the FER+ vote distribution.",
)
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in NAME.ckpt/.")
@click.option(
    "--init",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Start from this model's weights (a second learning-rate cycle, or a fine-tune); "
    "a narrower network of the same stages is widened to --widths, computing the same.",
)
@click.option(
    "--lr",
    type=Number(min=0, min_open=True),
    default=PEAK_LR,
    show_default=True,
    help="Peak learning rate of the warm-up + cosine schedule.",
)
@click.option(
    "--average",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Also try the weight average of the last N epochs; kept if it validates better.",
)
@click.option(
    "--augment",
    type=click.Choice(AUGMENT_MODES),
    default=AUGMENT_MODES[0],
    show_default=True,
    help="Augmentation: full (mirror, rotate, scale, shift, erase), flip (mirror only, for a "
    "short fine-tune at a low --lr), photo (mirror, slight turns and shifts, light curves, "
    "blur and down-then-up scaling, as photos differ), or none.",
)
@click.option(
    "--widths",
    type=WidthsParam(),
    default=",".join(map(str, WIDTHS)),
    show_default=True,
    help="Convolution widths of the network's stages: wider is stronger and slower.",
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Stop after this many epochs without a better validation score (with --votes: the "
    "mean of original-label and FER+ accuracy).",
)
@click.option(
    "--teacher",
    "teachers",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Distil: a model (.keras or .tflite) whose reading of each training face joins its "
    "target; given more than once, their logits are averaged.",
)
@click.option(
    "--teacher-weight",
    type=Number(0, 1),
    default=0.5,
    show_default=True,
    help="With --teacher: the teachers' share of each target, the rest the labels'.",
)
@click.option(
    "--export/--no-export",
    default=True,
    show_default=True,
    help="Also write NAME.tflite with `photosort export`'s defaults (int8, --tta, --balance 1).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
def train_command(
    data: Path,
    out: Path,
    epochs: int,
    batch_size: int,
    seed: int,
    labels: str | None,
    votes: Path | None,
    mix_weight: float,
    resume: bool,
    init: Path | None,
    lr: float,
    average: int,
    augment: str,
    widths: tuple[int, ...],
    teachers: tuple[Path, ...],
    teacher_weight: float,
    patience: int,
    export: bool,
    quiet: bool,
) -> None:
    """Train the emotion model on FER-2013 or on folders of labelled faces.

    DATA is the Kaggle fer2013.csv (emotion,pixels,Usage; .csv or .csv.gz) or a folder with
    one sub-folder per emotion (train/happy/*.jpg, optionally test/ beside train/).
    Training validates on PublicTest (or test/, else a seeded 10% of train/), keeps the
    best epoch, calibrates its probabilities and writes OUT plus its metadata NAME.json.
    Keras runs on TensorFlow, or on JAX or PyTorch where KERAS_BACKEND says so (a GPU
    machine without TensorFlow); export then runs where TensorFlow is.

    \b
    Example:
        photosort train fer2013.csv.gz --votes fer2013new.csv --out emotion.keras
        photosort train faces/ --epochs 20 --out faces.keras
        photosort train fer2013.csv.gz --votes fer2013new.csv --out emotion.keras --resume
        photosort train fer2013.csv.gz --votes fer2013new.csv --out v2.keras \\
            --init emotion.keras --lr 1e-3 --average 5
        photosort train fer2013.csv.gz --votes fer2013new.csv --out tuned.keras \\
            --init emotion.keras --lr 2e-4 --epochs 4 --augment flip
        photosort train fer2013.csv.gz --votes fer2013new.csv --out taught.keras \\
            --init emotion.keras --teacher emotion.keras --teacher wide.keras \\
            --lr 2e-4 --epochs 4 --augment flip
        KERAS_BACKEND=jax photosort train fer2013.csv.gz --votes fer2013new.csv \\
            --out wide.keras --widths 48,96,192,384 --epochs 80
    """
    import shlex

    from photosort.emotions import keras_backend

    needs_keras("photosort train")
    from photosort import training

    config = training.TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        labels=labels or ("mix" if votes else "fer2013"),
        mix_weight=mix_weight,
        patience=patience,
        lr=lr,
        init=None if init is None else str(init),
        average=average,
        augment=augment,
        widths=widths,
        teachers=tuple(map(str, teachers)),
        teacher_weight=teacher_weight,
    )
    with user_errors():
        meta = training.train(
            data,
            out,
            votes=votes,
            config=config,
            resume=resume,
            progress=None if quiet else lambda line: click.echo(line, err=True),
            command=shlex.join(["photosort", *sys.argv[1:]]),
        )
    figures = meta["figures"]
    summary = f"saved {out}: {figures['validation']} accuracy {figures['accuracy']:.4f}"
    if "ferplus_accuracy" in figures:
        summary += f", FER+ accuracy {figures['ferplus_accuracy']:.4f}"
    click.echo(f"{summary}, temperature {meta['temperature']:g}, model {meta['model_id']}")
    votes_args = [] if votes is None else ["--votes", str(votes)]
    if export and keras_backend() != "tensorflow":
        click.echo(
            f"photosort: not exported: export runs on TensorFlow, not {keras_backend()}; "
            f"run `photosort export {shlex.join([str(out), str(data), *votes_args])}` "
            "where it is installed",
            err=True,
        )
    elif export:
        _export(out, data, votes, QUANTIZE_MODES[0], True, DEFAULT_BALANCE, quiet=quiet)


def _export(
    model: Path,
    data: Path,
    votes: Path | None,
    quantize: str,
    tta: bool,
    balance: float | None,
    *,
    quiet: bool = False,
) -> dict[str, Any]:
    from photosort import exporting

    if not quiet:
        click.echo(f"exporting {model.with_suffix('.tflite')} ({quantize})", err=True)
    with user_errors():
        meta = exporting.export_model(
            model, data, votes=votes, quantize=quantize, tta=tta, balance=balance
        )
    lite = meta["litert"]
    figures = lite["figures"]
    summary = (
        f"saved {model.with_suffix('.tflite')}: {figures['validation']} accuracy "
        f"{figures['accuracy']:.4f}"
    )
    if "ferplus_accuracy" in figures:
        summary += f", FER+ accuracy {figures['ferplus_accuracy']:.4f}"
    lowest = min(figures["recall"], key=figures["recall"].get)
    click.echo(
        f"{summary}, lowest recall {lowest} {figures['recall'][lowest]:.4f}, "
        f"model {lite['model_id']}"
    )
    return meta


@cli.command("export")
@click.argument(
    "model",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    callback=suffix_check(".keras", "the model"),
)
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--votes",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="FER+ votes: also report the exported model's FER+ accuracy.",
)
@click.option(
    "--quantize",
    type=click.Choice(QUANTIZE_MODES),
    default=QUANTIZE_MODES[0],
    show_default=True,
    help="int8: weights and activations in 8 bits, about 3x faster; float: exact.",
)
@click.option(
    "--tta/--no-tta",
    default=True,
    show_default=True,
    help="Average each face's logits with its mirror image's.",
)
@click.option(
    "--balance",
    type=Number(min=0),
    default=DEFAULT_BALANCE,
    show_default=True,
    help="Per-class logit offsets fitted on the validation split with class weights "
    "(1/frequency)**BALANCE: 1 treats every emotion alike, 0 only refits class frequencies.",
)
@click.option("--no-offsets", is_flag=True, help="Fit no per-class offsets at all.")
def export_command(
    model: Path,
    data: Path,
    votes: Path | None,
    quantize: str,
    tta: bool,
    balance: float,
    no_offsets: bool,
) -> None:
    """Write MODEL.tflite, the form scan, report and explain run, and calibrate it.

    The network is converted to LiteRT; its mirrored-face averaging, per-class offsets and
    temperature are fitted on DATA's validation split (PublicTest) from the exported
    network's own logits, and written to the metadata MODEL.json. `train` runs this itself.

    \b
    Example:
        photosort export emotion.keras fer2013.csv.gz --votes fer2013new.csv
        photosort export emotion.keras fer2013.csv.gz --quantize float --no-tta
    """
    needs_tensorflow("photosort export")
    _export(model, data, votes, quantize, tta, None if no_offsets else balance)


@cli.command("evaluate")
@click.argument("data", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--model",
    "model_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    callback=check_model_runtime,
    help="Model file (.tflite or .keras) [default: the shipped model].",
)
@click.option(
    "--labels",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With a folder of photos: a CSV of path,emotion (paths relative to DATA).",
)
@click.option(
    "--usage",
    type=click.Choice(["Training", "PublicTest", "PrivateTest"]),
    default="PublicTest",
    show_default=True,
    help="Which split of a face data set to evaluate (a folder's test/ is PublicTest, "
    "train/ is Training).",
)
@click.option(
    "--votes",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="FER+ votes: also report accuracy against the FER+ majority.",
)
@json_option
@click.option(
    "--plots",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write confusion_matrix.png, and training_curves.png when the model records its "
    "training history, into this folder.",
)
def evaluate_command(
    data: Path,
    model_path: Path | None,
    labels: Path | None,
    usage: str,
    votes: Path | None,
    as_json: bool,
    plots: Path | None,
) -> None:
    """Report a model's accuracy, per-class precision and recall and confusion matrix.

    DATA is a face data set (fer2013.csv, or a folder with train/ and test/ of face crops),
    or a folder of photos labelled by emotion sub-folders (angry/, happy/, ...) or by
    --labels. Photos are read, their faces detected and cropped as `scan` does, and the
    largest face of each is classified; the report adds the photos without a face and the
    precision of each emotion's first 10 photos, as `top EMOTION` would rank them.

    \b
    Example:
        photosort evaluate fer2013.csv.gz --votes fer2013new.csv
        photosort evaluate fer2013.csv.gz --model emotion.keras --json --plots plots/
        photosort evaluate ~/labelled-photos/
        photosort evaluate wild/images --labels wild/labels.csv --json
    """
    from photosort import evaluating, plotting

    with user_errors():
        if evaluating.is_photo_folder(data, labels):
            if votes is not None:
                raise click.UsageError("--votes goes with fer2013.csv, not with photos")
            report, model = evaluating.evaluate_photos(data, model_path, labels=labels)
        elif labels is not None:
            raise click.UsageError("--labels goes with a folder of photos")
        else:
            report, model = evaluating.evaluate(data, model_path, usage=usage, votes=votes)
        written = plotting.write_plots(report, model, plots) if plots else []
    if as_json:
        emit_json(report)
    else:
        click.echo(evaluating.format_report(report))
    for path in written:
        click.echo(f"wrote {path}", err=True)


GC_THRESHOLD = (50_000, 20, 20)
"""The cyclic garbage collector's thresholds for a command (Python's are 700, 10, 10).
Importing SciPy and scikit-learn (for LIME) creates millions of objects that live until the
process ends; at the default thresholds the collector walks them again and again while they
load. Reference counting still frees everything else at once."""


def main() -> None:
    """Entry point of the console script.

    The collector runs less often (GC_THRESHOLD) and skips its last walk of every object at
    exit (``gc.freeze``, run after every other exit handler): together a fifth of a
    one-face ``explain``. Whatever holds a file or a connection closes it itself, as the
    library does through the click context (``open_library``).
    """
    import atexit
    import gc

    gc.set_threshold(*GC_THRESHOLD)
    atexit.register(gc.freeze)
    cli(prog_name="photosort")
