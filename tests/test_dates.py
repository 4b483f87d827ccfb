"""Dates: --since/--until on the capture time (else the file's time, marked), and --by-year."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from photosort.cli import cli
from photosort.indexing import FaceOptions, scan_library
from photosort.ranking import Period, RankingError, date_span, library_summary, top_photos
from photosort.reporting import build_report
from photosort.sample import save_jpeg, skimage_photo
from photosort.store import open_engine
from tests.test_faces import BrightnessModel
from tests.test_report import RegionModel, links

# A zone five hours behind UTC, all year (a POSIX TZ string: no tz database needed). A file
# written at 22:00 on New Year's Eve here is already in the new year in UTC.
ZONE = "XST+05"

# Distinct shots (no two fold as near-duplicates), each with one face the detector finds.
CAPTURED = {
    "eve.jpg": "2022:12:31 23:59:59",
    "summer.jpg": "2023:06:14 10:00:00",
    "new-year.jpg": "2024:01:01 00:00:00",
}
FILE_TIMES = {
    "no-exif-2023.jpg": datetime(2023, 8, 1, 12, 0),
    "no-exif-2022.jpg": datetime(2022, 12, 31, 22, 0),
}


@pytest.fixture(autouse=True)
def local_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", ZONE)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def shots() -> list[np.ndarray]:
    astronaut = skimage_photo("astronaut")
    camera = np.stack([skimage_photo("camera")] * 3, axis=-1)
    portrait = astronaut[:, 100:400]
    return [
        np.ascontiguousarray(p)
        for p in (astronaut, astronaut[:, ::-1], portrait, camera, camera[:, ::-1])
    ]


@pytest.fixture
def dated(tmp_path: Path, db_url: str) -> Path:
    """Three photos with an EXIF capture time and two without, whose files' times are set."""
    album = tmp_path / "dated"
    names = [*CAPTURED, *FILE_TIMES]
    for name, pixels in zip(names, shots(), strict=True):
        save_jpeg(album / name, pixels, taken=CAPTURED.get(name))
    for name, when in FILE_TIMES.items():
        ns = int(when.timestamp()) * 1_000_000_000
        os.utime(album / name, ns=(ns, ns))
    scan_library(open_engine(db_url), [str(album)], faces=FaceOptions(BrightnessModel()))
    return album


def between(since: str | None, until: str | None) -> Period:
    return Period(date_span(since)[0] if since else None, date_span(until)[1] if until else None)


def names_in(db_url: str, since: str | None, until: str | None) -> set[str]:
    ranked = top_photos(
        open_engine(db_url), "happy", 10, min_probability=0, period=between(since, until)
    )
    return {Path(r.path).name for r in ranked}


def test_date_span_covers_the_whole_year_month_or_day() -> None:
    assert date_span("2023") == (datetime(2023, 1, 1), datetime(2024, 1, 1))
    assert date_span("2023-12") == (datetime(2023, 12, 1), datetime(2024, 1, 1))
    assert date_span("2024-02-29") == (datetime(2024, 2, 29), datetime(2024, 3, 1))
    assert between("2023-06", "2023-08").describe() == "2023-06-01 to 2023-08-31"
    assert between("2023-06-14", "2023-06-14").describe() == "2023-06-14"
    assert between(None, "2023").describe() == "up to 2023-12-31"
    for bad in ("2023-13", "2023-02-30", "June", "2023-6", "23", "2023/06", ""):
        with pytest.raises(ValueError, match="use a year"):
            date_span(bad)
    for far in ("9999", "9999-12-31"):
        with pytest.raises(ValueError, match="too far from today .* a year .* nearer today"):
            date_span(far)
    with pytest.raises(ValueError, match="'0000' is not a date in the calendar"):
        date_span("0000")
    with pytest.raises(RankingError, match="start on 2024-01-01, after it ends on 2023-06-30"):
        between("2024", "2023-06")


def test_top_keeps_photos_taken_in_the_period(dated: Path, db_url: str) -> None:
    everything = {*CAPTURED, *FILE_TIMES}
    assert names_in(db_url, None, None) == everything
    assert names_in(db_url, "2023", "2023-12") == {"summer.jpg", "no-exif-2023.jpg"}
    # --until includes its whole day; a file time counts in local time, not UTC (where
    # no-exif-2022.jpg was written on 2023-01-01 03:00).
    assert names_in(db_url, None, "2022") == {"eve.jpg", "no-exif-2022.jpg"}
    assert names_in(db_url, "2022-12-31", "2022-12-31") == {"eve.jpg", "no-exif-2022.jpg"}
    assert names_in(db_url, "2024", None) == {"new-year.jpg"}
    assert names_in(db_url, "2023-06-14", "2023-06-14") == {"summer.jpg"}
    assert names_in(db_url, "2023-06-15", "2023-08") == {"no-exif-2023.jpg"}
    assert names_in(db_url, "2023-08-02", "2023-12-31") == set()

    ranked = top_photos(open_engine(db_url), "happy", 10, min_probability=0)
    dates = {Path(r.path).name: (r.date, r.date_from_file) for r in ranked}
    assert dates["summer.jpg"] == (datetime(2023, 6, 14, 10, 0), False)
    assert dates["no-exif-2023.jpg"] == (FILE_TIMES["no-exif-2023.jpg"], True)


def test_top_since_until_on_the_command_line(dated: Path, db_url: str, runner: CliRunner) -> None:
    base = ["top", "happy", "--db", db_url, "--min-probability", "0"]
    result = runner.invoke(cli, [*base, "--since", "2023", "--until", "2023-12", "--json"])
    assert result.exit_code == 0, result.output
    found = {Path(r["path"]).name: (r["date"], r["date_from"]) for r in json.loads(result.stdout)}
    assert found == {
        "summer.jpg": ("2023-06-14T10:00:00", "capture"),
        "no-exif-2023.jpg": ("2023-08-01T12:00:00", "file"),
    }
    table = runner.invoke(cli, [*base, "--since", "2023", "--until", "2023-12"])
    assert table.exit_code == 0, table.output
    rows = {line.split()[-1]: line for line in table.output.splitlines()[1:3]}
    assert " 2023-06-14  " in rows[str(dated / "summer.jpg")]
    assert " 2023-08-01*  " in rows[str(dated / "no-exif-2023.jpg")]
    assert table.output.endswith("* no capture time in the photo: the date of its file\n")
    none = runner.invoke(cli, [*base, "--since", "2025"])
    assert none.exit_code == 0
    assert none.output == (
        "No photo shows happy with a probability of 0% or more among the photos taken from "
        "2025-01-01 (--min-probability, --since).\n"
    )


@pytest.mark.parametrize("command", ["top happy", "report OUT"])
@pytest.mark.parametrize(
    ("options", "error"),
    [
        (["--since", "2023-13"], "Invalid value for '--since': '2023-13' is not a date in the"),
        (["--until", "last summer"], "Invalid value for '--until': 'last summer' is not a date:"),
        (
            ["--since", "2024", "--until", "2023-06"],
            "Invalid value for '--since' / '--until': the period would start on 2024-01-01, "
            "after it ends on 2023-06-30",
        ),
    ],
)
def test_bad_dates_are_one_line_errors(
    command: str, options: list[str], error: str, runner: CliRunner, tmp_path: Path
) -> None:
    db = tmp_path / "library.db"
    args = command.replace("OUT", str(tmp_path / "album")).split()
    result = runner.invoke(cli, [*args, *options, "--db", str(db)])
    assert result.exit_code == 2
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and error in errors[0], result.output
    assert not db.exists() and not (tmp_path / "album").exists(), "refused before any work"


def cards(index: str) -> list[tuple[str, str]]:
    """The index's cards in order: (page, photo name)."""
    return re.findall(r'class="card" href="([^"]+)">.*?<div class="name muted">([^<]*)</div>',
                      index, re.S)  # fmt: skip


def test_report_since_until_and_by_year(dated: Path, db_url: str, tmp_path: Path) -> None:
    engine = open_engine(db_url)
    out = tmp_path / "album"
    options = dict(emotions=["happy"], min_probability=0, samples=60)
    build_report(engine, out, BrightnessModel(), period=between("2023", "2023-12"), **options)
    index = (out / "index.html").read_text()
    assert {name for _, name in cards(index)} == {"summer.jpg", "no-exif-2023.jpg"}
    assert "photos taken 2023-01-01 to 2023-12-31" in index
    assert index.count("(file date)") == 1
    page = next(p for p, name in cards(index) if name == "no-exif-2023.jpg")
    assert "file date 2023-08-01 12:00" in (out / page).read_text()

    build_report(engine, out, BrightnessModel(), n=10, by_year=True, **options)
    index = (out / "index.html").read_text()
    years = re.findall(r'<h3 id="happy-(\d{4})">', index)
    assert years == ["2024", "2023", "2022"], "the latest year first"
    groups = index.split('<h3 id="happy-')[1:]
    by_year = {g[:4]: {name for _, name in cards(g)} for g in groups}
    assert by_year == {
        "2024": {"new-year.jpg"},
        "2023": {"summer.jpg", "no-exif-2023.jpg"},
        "2022": {"eve.jpg", "no-exif-2022.jpg"},
    }
    ranked = top_photos(engine, "happy", 10, min_probability=0)
    for group in groups:  # within a year, by rank
        ranks = [int(page[6:8]) for page, _ in cards(group)]
        assert ranks == sorted(ranks)
    assert sorted(int(p[6:8]) for p, _ in cards(index)) == list(range(1, len(ranked) + 1))
    # Previous and next follow the index's order, year by year.
    order = [page for page, _ in cards(index)]
    assert order != sorted(order), "the years reorder the ranks"
    for before, page, after in zip([None, *order[:-1]], order, [*order[1:], None], strict=True):
        nav = links((out / page).read_text())
        assert (nav.get("prev"), nav.get("next")) == (before, after)


def test_library_summary_dates_cover_capture_and_file_times(dated: Path, db_url: str) -> None:
    summary = library_summary(open_engine(db_url))
    assert (summary.photos, summary.faces, summary.dated_by_file) == (5, 5, 2)
    assert summary.first == datetime(2022, 12, 31, 22, 0)
    assert summary.last == datetime(2024, 1, 1)
    assert summary.models == ["test-model-1"]


def test_index_sums_up_the_library_in_local_time(dated: Path, db_url: str, tmp_path: Path) -> None:
    shutil.copy2(dated / "summer.jpg", dated / "summer-copy.jpg")  # a near-duplicate
    engine = open_engine(db_url)
    scan_library(engine, [str(dated)], faces=FaceOptions(BrightnessModel()))
    out = tmp_path / "album"
    before = datetime.now()
    build_report(engine, out, RegionModel(), emotions=["happy"], min_probability=0, samples=60)
    index = (out / "index.html").read_text()
    summary = re.sub(r"\s+", " ", index.split('<dl class="summary">')[1].split("</dl>")[0])
    assert "<dt>Library</dt><dd>6 photos, 6 faces</dd>" in summary
    assert "2022-12-31 to 2024-01-01 (2 dated by their file's time)" in summary
    assert "<dt>Near-duplicates hidden</dt><dd>1</dd>" in summary
    assert "<code>region-model</code> (faces classified by <code>test-model-1</code>)" in summary
    written = re.search(r"written (\d{4}-\d\d-\d\d \d\d:\d\d) XST \(UTC-05:00\)", index)
    assert written, index[:2000]
    stamp = datetime.strptime(written.group(1), "%Y-%m-%d %H:%M")
    assert before.replace(second=0, microsecond=0) <= stamp <= datetime.now()
