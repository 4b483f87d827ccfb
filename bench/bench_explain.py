"""Time LIME explanations per face and a full report (7 emotions x 10 picks), as one run.

The library is the annotated photos of ../shared/data/faces scanned with the shipped model.
Per face, photosort's explainer (crop at model input size, SLIC superpixels, one batch of
the default sample count) is timed against LIME's defaults as the tutorials call them
(quickshift superpixels on the 96 px crop, ``batch_size=10``, 1000 samples). Then a full
report is built twice: once computing every explanation, once from the cache; and
``photosort explain`` is timed as a whole process (start-up included), its cache emptied
before each run.

Run: ``python bench/bench_explain.py [--faces 8]``, or only the one-face process time on a
library already scanned: ``python bench/bench_explain.py --process-only LIBRARY.db``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from photosort.defaults import DEFAULT_SAMPLES, EMOTIONS
from photosort.emotions import load_model
from photosort.explaining import explain_face
from photosort.indexing import FaceOptions, decode_crop, scan_library
from photosort.reporting import build_report
from photosort.store import FaceRow, Photo, open_engine

ROOT = Path(__file__).resolve().parent.parent


def lime_defaults(crop: np.ndarray, model: object, label: int) -> float:
    """LIME the way its tutorial does it; returns seconds."""
    from lime import lime_image

    lime_image.tqdm = lambda iterable, *args, **kwargs: iterable  # its unconditional bar
    explainer = lime_image.LimeImageExplainer(random_state=0)
    rgb = np.stack([crop] * 3, axis=-1)
    start = time.perf_counter()
    explainer.explain_instance(
        rgb,
        lambda images: model.predict(np.asarray(images)[..., 0].astype(np.uint8)),  # type: ignore[attr-defined]
        labels=(label,),
        top_labels=None,
        num_samples=1000,
    )
    return time.perf_counter() - start


def measure(data: Path, n_faces: int) -> dict:
    """Seconds per explanation (ours and LIME's defaults) and report times, in one run."""
    model = load_model()
    with tempfile.TemporaryDirectory(prefix="photosort-bench-") as tmp:
        engine = open_engine(f"sqlite:///{tmp}/bench.db")
        scan_library(engine, [str(data)], faces=FaceOptions(classifier=model))
        with Session(engine) as session:
            faces = list(session.scalars(select(FaceRow).limit(n_faces)))
            crops = [decode_crop(f.crop) for f in faces]
        explain_face(crops[0], model, "happy", samples=100)  # warm-up
        ours, theirs = [], []
        for crop in crops:
            label = int(np.argmax(model.predict(crop[None])[0]))
            start = time.perf_counter()
            explain_face(crop, model, EMOTIONS[label], samples=DEFAULT_SAMPLES)
            ours.append(time.perf_counter() - start)
            theirs.append(lime_defaults(crop, model, label))
        # Every emotion's ten best, however unlikely: a full album of 70 picks is the workload.
        start = time.perf_counter()
        first = build_report(engine, Path(tmp) / "report", model, n=10, min_probability=0)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        build_report(engine, Path(tmp) / "report", model, n=10, min_probability=0)
        warm = time.perf_counter() - start
        with Session(engine) as session:
            photo = session.scalars(select(Photo).join(FaceRow).limit(1)).first()
            assert photo is not None, "the scanned photos have faces"
            photo_path = photo.path
        process = explain_process_seconds(Path(tmp), photo_path)
    return {
        "faces_timed": len(ours),
        "seconds_per_explanation": round(float(np.median(ours)), 3),
        "lime_defaults_seconds": round(float(np.median(theirs)), 3),
        "speedup_vs_lime_defaults": round(float(np.median(theirs) / np.median(ours)), 1),
        "report_picks": first.picks,
        "report_explanations": first.explained,
        "report_seconds": round(cold, 1),
        "report_cached_seconds": round(warm, 2),
        "samples": DEFAULT_SAMPLES,
        "explain_process_seconds": round(process["photosort"], 2),
        "explain_process_default_gc_seconds": round(process["default_gc"], 2),
        "explain_process_lime_thread_seconds": round(process["lime_thread"], 2),
    }


BASELINES = {
    "default_gc": "from photosort.cli import cli; cli(prog_name='photosort')",
    "lime_thread": (
        "import photosort.explaining as e; e.start_lime_process = lambda: None\n"
        "from photosort.cli import main; main()"
    ),
}
"""The same command without one of its start-up measures: without the console script's
collector settings (``photosort.cli.main``), as Python's defaults run it; and without the
helper process, so that LIME is imported on a thread of the command itself."""


def explain_process_seconds(tmp: Path, photo: str, runs: int = 3) -> dict[str, float]:
    """Median wall time of ``photosort explain PHOTO`` (one face, nothing cached) and of
    each baseline, taken in turn."""
    found = explain_process_runs(tmp / "bench.db", photo, runs)
    return {name: wall for name, (wall, _) in found.items()}


def explain_process_runs(db: Path, photo: str, runs: int) -> dict[str, tuple[float, float]]:
    """``explain_process_times`` of the console script ("photosort") and of each of
    BASELINES, one run of each in turn, so that all see the same machine."""
    commands = {"photosort": None} | {
        name: [sys.executable, "-c", code] for name, code in BASELINES.items()
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            times[name].append(explain_process_times(db, photo, runs=1, command=command))
    return {name: _medians(found) for name, found in times.items()}


def _medians(times: list[tuple[float, float]]) -> tuple[float, float]:
    walls, cpus = zip(*times, strict=True)
    return float(np.median(walls)), float(np.median(cpus))


def explain_process_times(
    db: Path, photo: str, runs: int = 3, command: list[str] | None = None
) -> tuple[float, float]:
    """Median wall and CPU (user + system) seconds of ``photosort explain PHOTO`` as a whole
    process, its cache emptied before each run. The CPU time tells a busy machine's waiting
    apart from the work itself."""
    command = command or [str(Path(sys.executable).with_name("photosort"))]
    walls, cpus = [], []
    for _ in range(runs):
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            conn.execute("DELETE FROM explanations")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        out = str(db.parent / "one.png")
        done = subprocess.run(
            [*command, "explain", photo, "--db", str(db), "--out", out],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise SystemExit(f"photosort explain failed: {done.stderr.strip()}")
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return float(np.median(walls)), float(np.median(cpus))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "faces")
    parser.add_argument("--faces", type=int, default=8, help="faces to time one by one")
    parser.add_argument(
        "--process-only",
        metavar="LIBRARY",
        type=Path,
        help="only time `photosort explain` of one face of this scanned SQLite library (a copy)",
    )
    parser.add_argument("--runs", type=int, default=5, help="--process-only: runs of each")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.process_only:
        with tempfile.TemporaryDirectory(prefix="photosort-bench-") as tmp:
            db = Path(tmp) / "bench.db"
            shutil.copy(args.process_only, db)
            with contextlib.closing(sqlite3.connect(db)) as conn:
                photo = conn.execute(
                    "SELECT path FROM photos JOIN faces ON faces.photo_id = photos.id LIMIT 1"
                ).fetchall()[0][0]
            explain_process_times(db, photo, runs=1)  # upgrades the copy's schema if needed
            found = explain_process_runs(db, photo, runs=args.runs)
        wall, cpu = found["photosort"]
        print(f"photosort explain, one face, nothing cached: {wall:.2f} s wall, {cpu:.2f} s CPU")
        for name, (base_wall, base_cpu) in found.items():
            if name != "photosort":
                print(
                    f"  {name}: {base_wall:.2f} s wall, {base_cpu:.2f} s CPU "
                    f"(x{base_wall / wall:.2f})"
                )
        print("goal <= 1.5 s")
        return
    r = measure(args.data, args.faces)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(
        f"explanation, {r['samples']} samples: photosort "
        f"{r['seconds_per_explanation']:.2f} s/face, LIME defaults "
        f"{r['lime_defaults_seconds']:.2f} s/face (x{r['speedup_vs_lime_defaults']:.1f})"
    )
    print(
        f"report 7 emotions x 10 picks: {r['report_picks']} picks, "
        f"{r['report_explanations']} explanations in {r['report_seconds']:.1f} s; "
        f"re-run from the cache {r['report_cached_seconds']:.2f} s"
    )
    print(
        f"photosort explain, one face, nothing cached: {r['explain_process_seconds']:.2f} s "
        f"(Python's default collector: {r['explain_process_default_gc_seconds']:.2f} s; LIME "
        f"imported on a thread: {r['explain_process_lime_thread_seconds']:.2f} s); "
        "goal <= 1.5 s"
    )


if __name__ == "__main__":
    main()
