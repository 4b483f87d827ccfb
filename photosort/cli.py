"""The command line: parses options and calls the importable functions of each stage.

Keep it thin. Heavy modules (TensorFlow above all) are imported inside the commands that
need them, so ``photosort --help`` stays fast.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from photosort import __version__
from photosort.defaults import MAX_MEGAPIXELS
from photosort.errors import PhotosortError


class DatabaseParam(click.ParamType):
    """``--db``: an SQLAlchemy URL or a file path, checked before any work starts."""

    name = "URL|PATH"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from photosort.store import database_url

        try:
            return database_url(value)
        except PhotosortError as exc:
            self.fail(str(exc), param, ctx)


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


def quiet_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")(func)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the stages' own errors into one-line messages and a non-zero exit."""
    try:
        yield
    except PhotosortError as exc:
        raise click.ClickException(str(exc)) from None


def open_library(db_url: str | None) -> Any:
    """Open the library database (creating and migrating it on first use)."""
    from photosort.store import database_url, open_engine

    with user_errors():
        return open_engine(db_url or database_url(None))


def show_progress(quiet: bool) -> bool:
    """Progress bars go to stderr, and only to a terminal."""
    return not quiet and sys.stderr.isatty()


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def handle_termination() -> None:
    """Treat SIGTERM like Ctrl-C so a killed scan also rolls back its open batch cleanly."""
    signal.signal(signal.SIGTERM, _raise_interrupt)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    type=click.FloatRange(min=1),
    default=MAX_MEGAPIXELS,
    show_default=True,
    help="Refuse images larger than this (decompression bombs).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Threads reading files [default: number of cores].",
)
def scan(
    paths: tuple[str, ...],
    db_url: str | None,
    as_json: bool,
    quiet: bool,
    max_megapixels: float,
    workers: int | None,
) -> None:
    """Scan photo folders into the library, incrementally.

    Unchanged files are not read again, moved files keep their identity, deleted files are
    marked missing. Photo folders are only read, never written.

    \b
    Example:
        photosort scan ~/Pictures /media/usb/DCIM --json
    """
    from photosort.indexing import scan_library
    from photosort.scanning import check_root, count_files
    from photosort.store import scan_lock

    engine = open_library(db_url)
    handle_termination()
    bar_wanted = show_progress(quiet)
    try:
        with user_errors(), scan_lock(str(engine.url.render_as_string(hide_password=False))):
            total = count_files([check_root(p) for p in paths]) if bar_wanted else 0
            with click.progressbar(
                length=total,
                label="Scanning",
                file=sys.stderr,
                item_show_func=lambda p: Path(p).name[:40] if p else "",
                hidden=not bar_wanted,
            ) as bar:

                def advance(path: str) -> None:
                    bar.update(1, path)

                report = scan_library(
                    engine,
                    list(paths),
                    max_megapixels=max_megapixels,
                    workers=workers,
                    progress=advance if bar_wanted else None,
                )
    except KeyboardInterrupt:
        click.echo(
            "photosort: scan interrupted; finished work is saved, run it again to carry on",
            err=True,
        )
        sys.exit(130)
    if as_json:
        emit_json(report.as_dict())
    elif not quiet:
        r = report
        click.echo(
            f"Scanned {r.scanned} photos in {r.seconds:.1f} s: {r.new} new, {r.changed} changed, "
            f"{r.moved} moved, {r.missing} missing, {r.unchanged} unchanged, {r.errors} errors."
        )
        for path, reason in r.problems[:10]:
            click.echo(f"  {path}: {reason}", err=True)
        if len(r.problems) > 10:
            click.echo(
                f"  ... and {len(r.problems) - 10} more (photosort status --errors)", err=True
            )


@cli.command()
@db_option
@json_option
@click.option("--errors", "list_errors", is_flag=True, help="List unreadable files and why.")
def status(db_url: str | None, as_json: bool, list_errors: bool) -> None:
    """Show how many photos the library holds, by status, and when it was last scanned.

    \b
    Example:
        photosort status --json
    """
    from photosort.store import library_status, unreadable_photos

    engine = open_library(db_url)
    info = library_status(engine)
    problems = unreadable_photos(engine) if list_errors else []
    if as_json:
        data = info.as_dict()
        if list_errors:
            data["errors"] = [{"path": p, "reason": r} for p, r in problems]
        emit_json(data)
        return
    click.echo(f"Database:   {info.database}")
    click.echo(
        f"Photos:     {info.photos} ({info.by_status['ok']} ok, "
        f"{info.by_status['unreadable']} unreadable, {info.by_status['missing']} missing)"
    )
    last = (
        f"{info.last_scan:%Y-%m-%d %H:%M:%S} UTC ({info.last_scan_state})"
        if info.last_scan
        else "never"
    )
    click.echo(f"Last scan:  {last}")
    for path, reason in problems:
        click.echo(f"  {path}: {reason}")


@cli.command()
@db_option
@json_option
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
def prune(db_url: str | None, as_json: bool, dry_run: bool) -> None:
    """Forget photos marked missing, with everything derived from them.

    \b
    Example:
        photosort prune --dry-run
    """
    from photosort.store import prune_missing

    engine = open_library(db_url)
    paths = prune_missing(engine, dry_run=dry_run)
    if as_json:
        emit_json({"removed": 0 if dry_run else len(paths), "paths": paths})
        return
    for path in paths:
        click.echo(path)
    verb = "Would remove" if dry_run else "Removed"
    click.echo(f"{verb} {len(paths)} missing photos.", err=bool(paths))


@cli.group()
def db() -> None:
    """Manage the library database.

    \b
    Example:
        photosort db upgrade --db ~/photos.db
    """


@db.command("upgrade")
@db_option
def db_upgrade(db_url: str | None) -> None:
    """Bring the database schema up to date (scan and the other commands do this too).

    \b
    Example:
        photosort db upgrade --db ~/photos.db
    """
    from photosort.store import database_url, open_engine, schema_revisions, upgrade

    with user_errors():
        engine = open_engine(db_url or database_url(None), migrate=False)
        applied = upgrade(engine)
        current, _ = schema_revisions(engine)
    click.echo(
        f"Schema at revision {current}" + (" (upgraded)." if applied else " (already current).")
    )


@cli.command()
@click.argument(
    "folder", type=click.Path(file_okay=False, path_type=Path), default="photosort-demo"
)
@quiet_option
def demo(folder: Path, quiet: bool) -> None:
    """Build a small sample album from scikit-image's photos and run photosort on it.

    Writes the album and its library database into FOLDER (default: ./photosort-demo).

    \b
    Example:
        photosort demo /tmp/photosort-demo
    """
    from photosort.indexing import scan_library
    from photosort.sample import build_sample_album
    from photosort.store import database_url, library_status, open_engine

    album = folder / "album"
    if not album.exists():
        build_sample_album(album)
    with user_errors():
        engine = open_engine(database_url(str(folder / "library.db")))
        report = scan_library(engine, [str(album)])
    if not quiet:
        info = library_status(engine)
        click.echo(f"Sample album: {album.resolve()}")
        click.echo(f"Library:      {info.database}")
        click.echo(
            f"Scanned {report.scanned} photos: {report.new} new, {report.unchanged} unchanged, "
            f"{report.errors} errors."
        )


# --- model commands (train, evaluate) ---


def main() -> None:
    """Entry point of the console script."""
    cli(prog_name="photosort")
