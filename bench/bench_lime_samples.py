"""How many LIME samples an explanation needs: agreement with a 5000-sample reference.

Faces come from scikit-image's photos (the sample album) and, when ``../shared/data/wild``
is there, from a spread of its photos (read in place, never copied), scanned with the shipped
model into a temporary library. Each face is explained for its predicted emotion and for its
runner-up (a report explains a pick's emotion, often not the face's top one) at 250, 500,
750, 1000, 2000 and 5000 samples with the report's seed, and at 5000 samples with another
seed as the reference, each one LIME fit over every superpixel. Agreement is the overlap of
the five most supporting superpixels with the reference's (1.0: the same five); the deletion
check's verdict is compared too. The 5000 row is the reference's own noise: what no sample
count can beat. Seconds are per whole explanation (segmentation, LIME, deletion check),
median over the explanations.

Run: ``python bench/bench_lime_samples.py [--wild 10] [--json]`` (about 4 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from photosort.defaults import DEFAULT_SAMPLES, EMOTIONS
from photosort.emotions import load_model
from photosort.explaining import Explanation, explain_face
from photosort.indexing import FaceOptions, decode_crop, scan_library
from photosort.sample import build_sample_album
from photosort.store import FaceRow, open_engine

ROOT = Path(__file__).resolve().parent.parent
WILD = ROOT.parent / "shared" / "data" / "wild" / "images"
CANDIDATES = (250, 500, 750, 1000, 2000, 5000)
ALL = (None,)
"""One LIME fit over every superpixel: the sample count's effect, not the screening's."""
REFERENCE = 5000
TOP = 5


def top_support(found: Explanation, k: int = TOP) -> set[int]:
    """The ``k`` superpixels with the largest (most supporting) weights."""
    return {s for s, _ in sorted(found.weights.items(), key=lambda kv: -kv[1])[:k]}


def wild_photos(folder: Path, count: int) -> list[Path]:
    """``count`` photos spread evenly over the wild folder's sources, in a fixed order."""
    photos = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if count <= 0 or not photos:
        return []
    step = max(1, len(photos) // count)
    return photos[::step][:count]


def collect_faces(tmp: Path, model: object, wild: int) -> list[tuple[str, np.ndarray]]:
    """(source, grey crop) for every face found in the sample album and the wild photos."""
    album = tmp / "album"
    build_sample_album(album)
    roots = [str(album)] + [str(p) for p in wild_photos(WILD, wild) if WILD.is_dir()]
    engine = open_engine(f"sqlite:///{tmp}/bench.db")
    scan_library(engine, roots, faces=FaceOptions(classifier=model))  # type: ignore[arg-type]
    with Session(engine) as session:
        rows = session.scalars(select(FaceRow).order_by(FaceRow.id))
        return [
            ("skimage" if row.photo.path.startswith(str(album)) else "wild", decode_crop(row.crop))
            for row in rows
            if row.probabilities is not None
        ]


def measure(wild: int) -> dict:
    model = load_model()
    with tempfile.TemporaryDirectory(prefix="photosort-bench-") as tmp:
        faces = collect_faces(Path(tmp), model, wild)
    explain_face(faces[0][1], model, "happy", samples=100)  # warm-up
    overlap: dict[int, list[float]] = {n: [] for n in CANDIDATES}
    verdict: dict[int, list[bool]] = {n: [] for n in CANDIDATES}
    faithful: dict[int, list[bool]] = {n: [] for n in CANDIDATES}
    seconds: dict[int, list[float]] = {n: [] for n in CANDIDATES}
    for _, crop in faces:
        ranked = np.argsort(model.predict(crop[None])[0])[::-1]
        for label in ranked[:2]:
            emotion = EMOTIONS[int(label)]
            reference = explain_face(crop, model, emotion, samples=REFERENCE, seed=1, features=ALL)
            for n in CANDIDATES:
                start = time.perf_counter()
                found = explain_face(crop, model, emotion, samples=n, seed=0, features=ALL)
                seconds[n].append(time.perf_counter() - start)
                overlap[n].append(len(top_support(found) & top_support(reference)) / TOP)
                verdict[n].append(found.faithful == reference.faithful)
                faithful[n].append(found.faithful)
    return {
        "faces": len(faces),
        "faces_wild": sum(source == "wild" for source, _ in faces),
        "explanations": len(overlap[CANDIDATES[0]]),
        "reference_samples": REFERENCE,
        "rows": [
            {
                "samples": n,
                "top5_overlap_mean": round(float(np.mean(overlap[n])), 3),
                "top5_overlap_p10": round(float(np.percentile(overlap[n], 10)), 3),
                "same_verdict": round(float(np.mean(verdict[n])), 3),
                "faithful": round(float(np.mean(faithful[n])), 3),
                "seconds": round(float(np.median(seconds[n])), 3),
            }
            for n in CANDIDATES
        ],
        "default_samples": DEFAULT_SAMPLES,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wild", type=int, default=10, help="wild photos to take faces from")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    r = measure(args.wild)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(
        f"{r['explanations']} explanations of {r['faces']} faces ({r['faces_wild']} from the "
        f"wild photos), against {r['reference_samples']} samples with another seed; "
        f"default {r['default_samples']}"
    )
    print(
        "| samples | top-5 overlap (mean) | top-5 overlap (10th pct) | same verdict "
        "| faithful | s/expl. |"
    )
    print(
        "|--------:|---------------------:|-------------------------:|-------------:"
        "|---------:|--------:|"
    )
    for row in r["rows"]:
        print(
            f"| {row['samples']:>7} | {row['top5_overlap_mean']:>20.2f} "
            f"| {row['top5_overlap_p10']:>24.2f} | {row['same_verdict']:>12.0%} "
            f"| {row['faithful']:>8.0%} | {row['seconds']:>7.2f} |"
        )


if __name__ == "__main__":
    main()
