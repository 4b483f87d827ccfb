"""Scanning on a Dask cluster against local worker processes, and the one writer's cap.

The album is bench_pipeline's (annotated photos upscaled to 12 MP JPEGs). In one run:

- ``scan --workers N`` (local processes) and ``scan --cluster`` on a ``LocalCluster`` of N
  single-threaded worker processes: the engine's overhead is the ratio of the two rates.
- The writer's cap: a one-worker scan timed with the per-photo work (read, hash, detect,
  crop) measured apart. What is left, the walk, the model and the database writes, stays
  in the scanning process however many machines do the rest: photos / that time is the most
  photos per second any cluster can feed one library, and the estimate for N machines is
  min(N x per-machine rate, cap).

Run: ``python bench/bench_cluster.py [--photos 24] [--workers 2]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_pipeline import build_album

import photosort.indexing as indexing
from photosort.indexing import FaceOptions, LazyClassifier, scan_library
from photosort.store import open_engine

ROOT = Path(__file__).resolve().parent.parent


def timed(fn: Any, spent: list[float]) -> Any:
    def wrapper(*args: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            spent.append(time.perf_counter() - started)

    return wrapper


def writer_seconds(album: Path, db: str) -> tuple[float, float, int]:
    """Total and per-photo-work seconds of a one-worker scan, and the photos it scanned."""
    spent: list[float] = []
    originals = indexing.examine, indexing.find_faces_with
    indexing.examine = timed(originals[0], spent)
    indexing.find_faces_with = timed(originals[1], spent)
    try:
        report = scan_library(
            open_engine(db), [str(album)], workers=1, faces=FaceOptions(LazyClassifier())
        )
    finally:
        indexing.examine, indexing.find_faces_with = originals
    return report.seconds, sum(spent), report.scanned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "faces")
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from distributed import LocalCluster

    with tempfile.TemporaryDirectory(prefix="photosort-bench-") as tmp:
        album = Path(tmp) / "album"
        build_album(args.data, album, args.photos)
        local = scan_library(
            open_engine(f"sqlite:///{tmp}/local.db"),
            [str(album)],
            workers=args.workers,
            faces=FaceOptions(LazyClassifier()),
        )
        cluster = LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        )
        try:
            remote = scan_library(
                open_engine(f"sqlite:///{tmp}/cluster.db"),
                [str(album)],
                faces=FaceOptions(LazyClassifier()),
                cluster=cluster.scheduler_address,
            )
        finally:
            cluster.close()
        total, work, photos = writer_seconds(album, f"sqlite:///{tmp}/writer.db")
    local_rate = local.scanned / local.seconds
    cluster_rate = remote.scanned / remote.seconds
    cap = photos / max(total - work, 1e-9)
    per_core = photos / total
    result = {
        "photos": args.photos,
        "workers": args.workers,
        "local_photos_per_s": round(local_rate, 2),
        "cluster_photos_per_s": round(cluster_rate, 2),
        "cluster_vs_local": round(cluster_rate / local_rate, 2),
        "one_worker_photos_per_s": round(per_core, 2),
        "writer_cap_photos_per_s": round(cap, 1),
        "writer_share_of_one_worker_scan": round((total - work) / total, 3),
        "hours_per_million_photos": {
            str(machines): round(1e6 / min(machines * args.workers * per_core, cap) / 3600, 1)
            for machines in (1, 4, 10, 40)
        },
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{args.photos} photos of 12 MP: --workers {args.workers} {local_rate:.2f} photos/s, "
        f"a {args.workers}-process LocalCluster {cluster_rate:.2f} photos/s "
        f"(x{result['cluster_vs_local']:.2f})"
    )
    print(
        f"the scanning process's own share: {result['writer_share_of_one_worker_scan']:.1%} of "
        f"a one-worker scan, a cap of {cap:.0f} photos/s for one library"
    )
    hours = ", ".join(
        f"{n} machine{'s' if n != '1' else ''} ({args.workers} cores each): {h} h"
        for n, h in result["hours_per_million_photos"].items()
    )
    print(f"1,000,000 photos: {hours}")


if __name__ == "__main__":
    main()
