"""Benchmark face detectors on the annotated photos in ../shared/data/faces.

A face counts as found when a detection overlaps it at IoU >= 0.4 (each annotated face is
matched to its best remaining detection, each detection used once); detections on faces the
source left unannotated (``ignore``) count neither way. Prints recall, precision and
milliseconds per photo for each detector, as one run.

The default run also measures scan's own path with and without the mesh, and the mesh's
milliseconds per face. ``--presence`` sweeps that path (:func:`find_faces`: working-size decode,
``--min-face``, the face mesh): recall and precision at each face-presence threshold of the
mesh, and without it, at each ``--min-scores``.

Run: ``python bench/bench_faces.py [--data ../shared/data/faces] [--detectors blazeface,haar]``
     ``python bench/bench_faces.py --presence -4,-2,0,2,4 --min-scores 0.4,0.5,0.6``
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

from photosort import faces as faces_module
from photosort.defaults import DEFAULT_MIN_PRESENCE
from photosort.faces import (
    DEFAULT_MIN_SCORE,
    DETECTORS,
    MESH_INPUT,
    find_faces,
    iou,
    make_detector,
)
from photosort.images import read_array
from photosort.landmarks import FaceMesh

ROOT = Path(__file__).resolve().parent.parent


def match(boxes: list, ignore: list, detections: list, threshold: float = 0.4) -> tuple[int, int]:
    """Return (faces found, false detections) for one photo."""
    unused = list(detections)
    found = 0
    for box in boxes:
        if not unused:
            break
        best = max(unused, key=lambda d: iou(box, d))
        if iou(box, best) >= threshold:
            found += 1
            unused.remove(best)
    false = [d for d in unused if not any(iou(d, g) >= threshold for g in ignore)]
    return found, len(false)


def evaluate(
    name: str, min_score: float, photos: list[dict], folder: Path
) -> tuple[float, float, float, float]:
    """Recall, precision, median and mean milliseconds per photo of one detector."""
    detector = make_detector(name, min_score)
    found = false = total = detected = 0
    times = []
    for item in photos:
        image = read_array(folder / item["path"])
        start = time.perf_counter()
        faces = detector.detect(image)  # type: ignore[attr-defined]
        times.append((time.perf_counter() - start) * 1000)
        boxes = [tuple(f.box) for f in faces]
        hit, fp = match([tuple(b) for b in item["boxes"]], item.get("ignore", []), boxes)
        found += hit
        false += fp
        total += len(item["boxes"])
        detected += hit + fp
    recall = found / total
    precision = found / detected if detected else 1.0
    return recall, precision, statistics.median(times), statistics.mean(times)


def measure(data: Path, detectors: list[str], min_score: float) -> dict:
    photos = json.loads((data / "annotations.json").read_text())
    rows = []
    for name in detectors:
        recall, precision, median, mean = evaluate(name, min_score, photos, data)
        rows.append(
            {
                "detector": name,
                "recall": round(recall, 3),
                "precision": round(precision, 3),
                "ms_median": round(median, 1),
                "ms_mean": round(mean, 1),
            }
        )
    faces = sum(len(p["boxes"]) for p in photos)
    return {"photos": len(photos), "faces": faces, "min_score": min_score, "detectors": rows}


def scan_presence(
    data: Path, min_score: float, thresholds: list[float], mesh: FaceMesh
) -> list[dict]:
    """Recall and precision of scan's face finding at each presence threshold (None: no
    mesh), from one pass that keeps every face with its logit."""
    photos = json.loads((data / "annotations.json").read_text())
    detector = make_detector("blazeface", min_score)
    seen = []
    for item in photos:
        path = data / item["path"]
        with Image.open(path) as img:
            size = img.size
        scan = find_faces(str(path), size, detector=detector, mesh=mesh, min_presence=-np.inf)
        seen.append([(f.box, f.presence) for f in scan.faces])
    rows = []
    for threshold in [None, *thresholds]:
        found = false = total = 0
        for item, faces in zip(photos, seen, strict=True):
            boxes = [b for b, p in faces if threshold is None or p >= threshold]
            hit, fp = match([tuple(b) for b in item["boxes"]], item.get("ignore", []), boxes)
            found, false, total = found + hit, false + fp, total + len(item["boxes"])
        rows.append(
            {
                "min_score": min_score,
                "min_presence": threshold,
                "recall": round(found / total, 3),
                "precision": round(found / (found + false), 3) if found + false else 1.0,
                "false": false,
            }
        )
    return rows


def mesh_cost(mesh: FaceMesh, calls: int = 50, blocks: int = 10) -> dict[str, float]:
    """Milliseconds per face, one thread: the mesh alone on its 192 px input, and with the
    cut and resize of its square from a photo as find_faces runs it. The fastest of several
    blocks of calls, so that other work on the machine counts as little as it can."""
    photo = Image.fromarray(skimage.data.astronaut())
    (face,) = make_detector().detect(np.asarray(photo))  # type: ignore[attr-defined]
    square = np.asarray(photo.resize((MESH_INPUT, MESH_INPUT)))

    def fastest(call) -> float:
        call()
        best = math.inf
        for _ in range(blocks):
            start = time.perf_counter()
            for _ in range(calls):
                call()
            best = min(best, (time.perf_counter() - start) * 1000 / calls)
        return round(best, 3)

    return {
        "mesh_ms_per_face": fastest(lambda: mesh.run(square)),
        "with_cut_ms_per_face": fastest(lambda: faces_module.face_mesh(mesh, photo, face)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "faces")
    parser.add_argument("--detectors", default=",".join(DETECTORS))
    parser.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--presence", help="comma-separated presence thresholds to sweep")
    parser.add_argument("--min-scores", help="detector scores for --presence (comma-separated)")
    args = parser.parse_args()
    if args.presence is not None:
        thresholds = [float(t) for t in args.presence.split(",")]
        scores = [float(t) for t in (args.min_scores or str(args.min_score)).split(",")]
        mesh = FaceMesh()
        rows = [r for s in scores for r in scan_presence(args.data, s, thresholds, mesh)]
        if args.json:
            print(json.dumps(rows, indent=2))
            return
        print(f"{'min score':>9} {'presence':>9} {'recall':>7} {'precision':>9} {'false':>6}")
        for row in rows:
            presence = "no mesh" if row["min_presence"] is None else f"{row['min_presence']:g}"
            print(
                f"{row['min_score']:>9g} {presence:>9} {row['recall']:>7.3f} "
                f"{row['precision']:>9.3f} {row['false']:>6}"
            )
        return
    r = measure(args.data, args.detectors.split(","), args.min_score)
    mesh = FaceMesh()
    without, with_mesh = scan_presence(args.data, args.min_score, [DEFAULT_MIN_PRESENCE], mesh)
    r["scan"] = {"without_mesh": without, "with_mesh": with_mesh, **mesh_cost(mesh)}
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"{r['photos']} photos, {r['faces']} faces, IoU >= 0.4, min score {r['min_score']}")
    print(f"{'detector':<18} {'recall':>7} {'precision':>9} {'ms median':>10} {'ms mean':>8}")
    for row in r["detectors"]:
        print(
            f"{row['detector']:<18} {row['recall']:>7.3f} {row['precision']:>9.3f} "
            f"{row['ms_median']:>10.1f} {row['ms_mean']:>8.1f}"
        )
    s = r["scan"]
    print(
        f"scan's path (working size, --min-face): recall {s['without_mesh']['recall']:.3f}, "
        f"precision {s['without_mesh']['precision']:.3f}; with the mesh at presence "
        f">= {DEFAULT_MIN_PRESENCE:g}: recall {s['with_mesh']['recall']:.3f}, precision "
        f"{s['with_mesh']['precision']:.3f}; mesh {s['mesh_ms_per_face']} ms/face, "
        f"{s['with_cut_ms_per_face']} ms with its cut (1 thread)"
    )


if __name__ == "__main__":
    main()
