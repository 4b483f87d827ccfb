"""Benchmark ``top`` with --since/--until, and whether indexes on the dates would help.

Fills a new library with generated rows (no photos are read): N photos spread over 20
years, 30% of them without a capture time (dated by their file's time), one classified
face each. Times ``top happy -n 10`` unfiltered and for one year, month and day, then adds
an index on ``photos (taken_at, mtime_ns)`` (to this throw-away library only) and times the
same again.

Run: ``python bench/bench_dates.py [--photos 100000] [--db postgresql://.../empty_db]``.
``--db`` names an empty database to fill (default: a temporary SQLite file).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, text

from photosort.defaults import EMOTIONS
from photosort.ranking import Period, date_span, top_photos
from photosort.store import EMOTION_COLUMNS, FaceRow, Photo, open_engine

PERIODS = {"unfiltered": None, "year": "2015", "month": "2015-06", "day": "2015-06-14"}


def fill(engine: Engine, count: int) -> None:
    rng = random.Random(0)
    start, now = datetime(2005, 1, 1), datetime(2025, 1, 1)
    photos, faces = [], []
    for i in range(1, count + 1):
        taken = start + timedelta(seconds=rng.randrange(20 * 365 * 86400))
        photos.append(
            dict(
                id=i, path=f"/album/{i}.jpg", folder="/album", size=1, status="ok",
                mtime_ns=int(taken.timestamp()) * 1_000_000_000,
                taken_at=taken if rng.random() < 0.7 else None,
                first_seen=now, last_seen=now, read_at=now, faces_state="done",
            )
        )  # fmt: skip
        probs = [rng.random() for _ in EMOTIONS]
        faces.append(
            dict(
                photo_id=i, idx=0, x=0, y=0, w=100, h=100, score=1, sharpness=1, crop=b"",
                model_id="bench",
                **{c: p / sum(probs) for c, p in zip(EMOTION_COLUMNS, probs, strict=True)},
            )
        )  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(Photo), photos)
        conn.execute(insert(FaceRow), faces)


def timings(engine: Engine, repeat: int) -> dict[str, float]:
    """Best of ``repeat`` runs of ``top happy -n 10`` per period, in ms."""
    out = {}
    for label, value in PERIODS.items():
        period = Period(*date_span(value)) if value else None
        best = min(_timed(engine, period) for _ in range(repeat))
        out[label] = round(best * 1000, 1)
    return out


def _timed(engine: Engine, period: Period | None) -> float:
    started = time.perf_counter()
    top_photos(engine, "happy", 10, period=period)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--db", help="an empty database to fill [default: temporary SQLite]")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = open_engine(args.db or f"sqlite:///{tmp}/library.db")
        fill(engine, args.photos)
        result: dict[str, Any] = {"photos": args.photos, "backend": engine.dialect.name}
        result["ms"] = timings(engine, args.repeat)
        with engine.begin() as conn:
            # Both branches of the filter become index ranges: the capture time's, and the
            # file time's among the photos without one (taken_at IS NULL, then mtime_ns).
            conn.execute(text("CREATE INDEX bench_dates ON photos (taken_at, mtime_ns)"))
            conn.execute(text("ANALYZE"))
        result["ms_with_date_indexes"] = timings(engine, args.repeat)
        engine.dispose()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"top happy -n 10, {result['photos']} photos, {result['backend']} (best of {args.repeat})"
    )
    print(f"{'period':<12}  {'ms':>7}  {'with indexes':>12}")
    for label in PERIODS:
        plain, indexed = result["ms"][label], result["ms_with_date_indexes"][label]
        print(f"{label:<12}  {plain:>7.1f}  {indexed:>12.1f}")


if __name__ == "__main__":
    main()
