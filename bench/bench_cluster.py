"""Scanning on a Dask cluster of real ``dask worker`` processes, and the one writer's cap.

The album is bench_pipeline's (annotated photos upscaled to 12 MP JPEGs). In one run:

- ``scan --workers N`` (local processes) and ``scan --cluster`` on ``dask scheduler`` plus
  ``dask worker --nworkers N --nthreads 1``, started here as subprocesses on this machine
  and ended at the end, the two scans taken in turn ``--runs`` times on the same album: the
  engine's overhead is the ratio of the two rates, and both must store the same rows. On a
  machine shared with other work the rates drift with its load, so the CPU time that every
  process involved spent per photo is given too: its ratio is the rate ratio the two would
  have on an otherwise idle machine whose cores they keep busy.
- The writer's cap: a one-worker scan timed with the per-photo work (read, hash, detect,
  crop) measured apart. What is left, the walk, the model and the database writes, stays
  in the scanning process however many machines do the rest: photos / that time is the most
  photos per second any cluster can feed one library, and the estimate for N machines is
  min(N x per-machine rate, cap).

Run: ``python bench/bench_cluster.py [--photos 80] [--workers 2] [--runs 3]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_pipeline import build_album

import photosort.indexing as indexing
from photosort.cluster import ClusterExecutor
from photosort.indexing import FaceOptions, LazyClassifier, scan_library
from photosort.store import open_engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.dask_processes import dask_processes, library_rows  # noqa: E402 - needs ROOT on the path


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


def cpu_seconds(trees: list[int]) -> float:
    """CPU time so far of this process, its ended children (a local scan's workers), and
    the process trees led by ``trees`` (the Dask scheduler and workers)."""
    import resource

    import psutil

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    for pid in trees:
        try:
            leader = psutil.Process(pid)
            procs = [leader, *leader.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


def timed_scan(db: str, album: Path, trees: list[int], **where: Any) -> tuple[float, float]:
    """Photos per second, and CPU seconds per photo spent by every process involved."""
    cpu = cpu_seconds(trees)
    report = scan_library(
        open_engine(db), [str(album)], faces=FaceOptions(LazyClassifier()), **where
    )
    return report.scanned / report.seconds, (cpu_seconds(trees) - cpu) / report.scanned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "faces")
    parser.add_argument("--photos", type=int, default=80)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--album", type=Path, help="build the album here once and reuse it")
    parser.add_argument(
        "--batch", type=int, default=ClusterExecutor.batch, help="photos per cluster task"
    )
    parser.add_argument(
        "--compare-batches",
        default="",
        help="other batch sizes to time in each run, e.g. 1,4,16 (how BATCH was chosen)",
    )
    parser.add_argument("--no-cap", action="store_true", help="skip the writer's cap")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    batches = [args.batch] + [int(b) for b in args.compare_batches.split(",") if b]

    local: list[tuple[float, float]] = []
    remote: dict[int, list[tuple[float, float]]] = {b: [] for b in batches}
    same_rows = True
    with tempfile.TemporaryDirectory(prefix="photosort-bench-") as tmp:
        album = args.album or Path(tmp) / "album"
        if not album.is_dir() or len(list(album.iterdir())) != args.photos:
            build_album(args.data, album, args.photos)
        with dask_processes(args.workers, 1) as cluster:
            trees = [cluster.scheduler.pid, *(w.pid for w in cluster.workers)]
            for run in range(args.runs):
                # Local first in even runs, last in odd ones: a load that drifts on this
                # machine then favours neither side.
                reference = f"sqlite:///{tmp}/local{run}.db"
                if run % 2 == 0:
                    local.append(timed_scan(reference, album, [], workers=args.workers))
                for b in batches:
                    ClusterExecutor.batch = b
                    db = f"sqlite:///{tmp}/cluster{run}-{b}.db"
                    remote[b].append(timed_scan(db, album, trees, cluster=cluster.address))
                if run % 2 == 1:
                    local.append(timed_scan(reference, album, [], workers=args.workers))
                for b in batches:
                    same_rows &= library_rows(reference) == library_rows(
                        f"sqlite:///{tmp}/cluster{run}-{b}.db"
                    )
        cap_figures = None
        if not args.no_cap:
            cap_figures = writer_seconds(album, f"sqlite:///{tmp}/writer.db")

    def versus_local(b: int, which: int) -> list[float]:
        """Per run: the cluster's rate over the local one (which=0), or the local CPU time
        per photo over the cluster's (which=1): the rate ratio on an otherwise idle machine."""
        pairs = zip(remote[b], local, strict=True)
        if which == 0:
            return [round(c[0] / loc[0], 2) for c, loc in pairs]
        return [round(loc[1] / c[1], 2) for c, loc in pairs]

    ratios = versus_local(args.batch, 0)
    result: dict[str, Any] = {
        "photos": args.photos,
        "workers": args.workers,
        "batch": args.batch,
        "local_photos_per_s": round(statistics.median(r for r, _ in local), 2),
        "cluster_photos_per_s": round(statistics.median(r for r, _ in remote[args.batch]), 2),
        "cluster_vs_local": statistics.median(ratios),
        "cluster_vs_local_runs": ratios,
        "cluster_vs_local_by_cpu": statistics.median(versus_local(args.batch, 1)),
        "cluster_vs_local_by_cpu_runs": versus_local(args.batch, 1),
        "local_cpu_s_per_photo": [round(c, 3) for _, c in local],
        "cluster_cpu_s_per_photo": [round(c, 3) for _, c in remote[args.batch]],
        "same_rows": same_rows,
        "batches": {
            str(b): {"by_rate": versus_local(b, 0), "by_cpu": versus_local(b, 1)} for b in batches
        },
    }
    if cap_figures is not None:
        total, work, photos = cap_figures
        cap = photos / max(total - work, 1e-9)
        per_core = photos / total
        result |= {
            "one_worker_photos_per_s": round(per_core, 2),
            "writer_cap_photos_per_s": round(cap, 1),
            "writer_share_of_one_worker_scan": round((total - work) / total, 3),
            "hours_per_million_photos": {
                str(n): round(1e6 / min(n * args.workers * per_core, cap) / 3600, 1)
                for n in (1, 4, 10, 40)
            },
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    runs = ", ".join(
        f"{loc[0]:.2f} vs {c[0]:.2f} (x{r:.2f}, x{rc:.2f} by CPU time)"
        for loc, c, r, rc in zip(
            local, remote[args.batch], ratios, result["cluster_vs_local_by_cpu_runs"], strict=True
        )
    )
    print(
        f"{args.photos} photos of 12 MP, photos/s of --workers {args.workers} vs "
        f"{args.workers} dask worker processes, {args.batch} photos per task: {runs}; "
        f"same rows: {same_rows}"
    )
    for b in batches[1:]:
        print(f"{b} photos per task: x{result['batches'][str(b)]}")
    if cap_figures is not None:
        print(
            f"the scanning process's own share: {result['writer_share_of_one_worker_scan']:.1%} "
            f"of a one-worker scan, a cap of {result['writer_cap_photos_per_s']:.0f} photos/s "
            "for one library"
        )
        hours = ", ".join(
            f"{n} machine{'s' if n != '1' else ''} ({args.workers} cores each): {h} h"
            for n, h in result["hours_per_million_photos"].items()
        )
        print(f"1,000,000 photos: {hours}")


if __name__ == "__main__":
    main()
