"""Face-mesh alignment against BlazeFace's keypoints, and the shipped pipeline per source and
emotion, on labelled photos; and what the mesh costs.

Each photo's largest face (detected as scan does, kept only if the mesh sees a face) is cut
three ways from the same decode, then read by the shipped model as it runs (int8 LiteRT,
mirror averaging, class offsets):

- BlazeFace framing (shipped): its eye and mouth keypoints place the FER-2013 frame;
- mesh framing, the same FER constants: the mesh's eye centres (mean of each eye's corners)
  and mouth centre (mean of its corners) place it instead;
- mesh framing, FER constants re-measured with the mesh itself on FER-2013 Training faces,
  so that a systematic offset between the two sets of points does not count against it.

Per framing: accuracy of the largest face overall and per source, each emotion's recall
and precision among its first 10, and the paired McNemar test against the shipped framing
(photos one framing gets right and the other wrong). Then the pipeline exactly as
``evaluate`` runs it, as a table per source and emotion. (The mesh's cost per face is
``bench/bench_faces.py``'s.)

    .venv/bin/python bench/bench_mesh.py                 # ../shared/data, the shipped model
    .venv/bin/python bench/bench_mesh.py --json

The photos (``wild/``) are for evaluation only; nothing here is fitted on them.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import photosort.faces as faces_module
from photosort.defaults import DEFAULT_MIN_PRESENCE, EMOTIONS, WORKING_SIDE
from photosort.emotions import DEFAULT_MODEL, load_model, softmax
from photosort.evaluating import labelled_photos, largest_face_crops, photo_report
from photosort.faces import Face, crop_face, face_mesh, make_detector
from photosort.images import read_image
from photosort.landmarks import FaceMesh, Mesh

ROOT = Path(__file__).resolve().parent.parent
FULL_SIDE = 4000


def mesh_keypoints(mesh: Mesh) -> tuple[tuple[float, float], ...]:
    """The mesh's points in BlazeFace's order: right eye, left eye, nose tip, mouth centre."""
    return (
        mesh.part_centre("right eye"),
        mesh.part_centre("left eye"),
        mesh.part_centre("nose tip"),
        mesh.part_centre("mouth corners"),
    )


def fer_constants(faces: np.ndarray, mesh: FaceMesh) -> dict[str, Any]:
    """Median eye midpoint, eye distance and eye-mouth distance of the mesh on FER faces, as
    shares of the 48 px side (what FER_EYES, FER_EYE_DISTANCE and FER_EYE_MOUTH hold)."""
    mids, eyes, mouths = [], [], []
    for face in faces:
        right, left, _, mouth = mesh_keypoints(mesh.run_on_crop(face))
        mid = np.add(right, left) / 2
        mids.append(mid)
        eyes.append(math.dist(right, left))
        mouths.append(math.dist(mid, mouth))
    side = faces.shape[1]
    mid = np.median(np.array(mids), axis=0) / side
    return {
        "FER_EYES": (round(float(mid[0]), 3), round(float(mid[1]), 3)),
        "FER_EYE_DISTANCE": round(float(np.median(eyes)) / side, 3),
        "FER_EYE_MOUTH": round(float(np.median(mouths)) / side, 3),
    }


def largest_faces(photos: list[Any], mesh: FaceMesh) -> list[Any]:
    """Each photo's largest face the mesh sees, with a large decode and the face's mesh."""
    detector = make_detector()
    found = []
    for photo in photos:
        working = read_image(photo.path, max_side=WORKING_SIDE)
        full = read_image(photo.path, max_side=FULL_SIDE)
        scale = full.width / working.width
        candidates = []
        for face in detector.detect(np.asarray(working)):  # type: ignore[attr-defined]
            there = face.scaled(scale)
            seen = face_mesh(mesh, full, there)
            if seen.presence >= DEFAULT_MIN_PRESENCE:
                candidates.append((there, seen))
        if not candidates:
            found.append(None)
            continue
        face, seen = max(candidates, key=lambda c: c[0].w * c[0].h)
        found.append((full, face, seen))
    return found


def figures(probs: np.ndarray, labels: np.ndarray, sources: list[str]) -> dict[str, Any]:
    report = photo_report(probs, labels, sources)
    found = probs.sum(axis=1) > 0
    pred = np.where(found, probs.argmax(axis=1), -1)
    by_source: dict[str, Any] = {}
    for source in sorted(set(sources)):
        mine = np.array([s == source for s in sources])
        recall = {
            name: round(float((pred[mine & (labels == i)] == i).mean()), 3)
            for i, name in enumerate(EMOTIONS)
            if (mine & (labels == i)).any()
        }
        by_source[source] = {
            "photos": int(mine.sum()),
            "accuracy": round(float((pred[mine] == labels[mine]).mean()), 4),
            "recall": recall,
        }
    return {
        "accuracy": report["accuracy"],
        "mean_precision_at_10": report["mean_precision_at_10"],
        "min_recall": report["min_recall"],
        "recall": {k: v["recall"] for k, v in report["per_class"].items()},
        "support": {k: v["support"] for k, v in report["per_class"].items()},
        "precision_at_10": report["precision_at_10"],
        "by_source": by_source,
        "hits": (pred == labels).tolist(),
    }


def mcnemar(a: list[bool], b: list[bool]) -> dict[str, Any]:
    """Photos only ``a`` gets right, only ``b`` does, and the exact two-sided p-value."""
    only_a = sum(x and not y for x, y in zip(a, b, strict=True))
    only_b = sum(y and not x for x, y in zip(a, b, strict=True))
    n, k = only_a + only_b, min(only_a, only_b)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return {"only_this": only_b, "only_shipped": only_a, "p": round(p, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / ".." / "shared" / "data")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--fer-faces", type=int, default=2000, help="FER faces to measure on")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    mesh = FaceMesh()
    result: dict[str, Any] = {}
    folder = args.data / "wild" / "images"
    photos = labelled_photos(folder, args.data / "wild" / "labels.csv")
    labels = np.array([p.label for p in photos])
    sources = [p.group for p in photos]
    model = load_model(args.model)
    fer = np.asarray(Image.open(args.data / "fer2013_faces.png")).reshape(-1, 48, 48)
    constants = fer_constants(fer[: args.fer_faces], mesh)
    result["mesh_fer_constants"] = constants
    found = largest_faces(photos, mesh)

    def blazeface(full: Image.Image, face: Face, seen: Mesh) -> np.ndarray:
        return crop_face(full, face)

    def by_mesh(full: Image.Image, face: Face, seen: Mesh) -> np.ndarray:
        return crop_face(full, Face(*face.box, face.score, mesh_keypoints(seen)))

    def by_mesh_remeasured(full: Image.Image, face: Face, seen: Mesh) -> np.ndarray:
        saved = {name: getattr(faces_module, name) for name in constants}
        for name, value in constants.items():
            setattr(faces_module, name, value)
        try:
            return by_mesh(full, face, seen)
        finally:
            for name, value in saved.items():
                setattr(faces_module, name, value)

    framings = {
        "BlazeFace keypoints (shipped)": blazeface,
        "mesh key points, FER constants as shipped": by_mesh,
        "mesh key points, FER constants re-measured with the mesh": by_mesh_remeasured,
    }
    have = [i for i, item in enumerate(found) if item is not None]
    rows = {}
    for name, cut in framings.items():
        probs = np.zeros((len(photos), len(EMOTIONS)))
        probs[have] = softmax(model.logits([cut(*found[i]) for i in have]), model.temperature)
        rows[name] = figures(probs, labels, sources)
    shipped = rows["BlazeFace keypoints (shipped)"]["hits"]
    for row in rows.values():
        row["mcnemar"] = mcnemar(shipped, row.pop("hits"))
    result["framings"] = rows
    crops, _ = largest_face_crops(photos)
    probs = np.zeros((len(photos), len(EMOTIONS)))
    kept = [i for i, crop in enumerate(crops) if crop is not None]
    probs[kept] = softmax(model.logits([crops[i] for i in kept]), model.temperature)
    pipeline = figures(probs, labels, sources)
    pipeline.pop("hits")
    pipeline["faces_found"] = len(kept)
    result["pipeline"] = pipeline
    result["model_id"] = model.model_id
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"mesh on {args.fer_faces} FER faces: {constants}")
    print(f"{'framing':<58}{'acc':>7}{'P@10':>7}{'min rec':>8}  by source  McNemar")
    for name, row in rows.items():
        src = " ".join(f"{k} {v['accuracy']:.3f}" for k, v in row["by_source"].items())
        m = row["mcnemar"]
        print(
            f"{name:<58}{row['accuracy']:>7.4f}{row['mean_precision_at_10']:>7.3f}"
            f"{row['min_recall']:>8.2f}  {src}  +{m['only_this']}/-{m['only_shipped']} "
            f"p={m['p']}"
        )
    p = pipeline
    print(
        f"\nevaluate's pipeline: faces in {p['faces_found']} of {len(photos)}, accuracy "
        f"{p['accuracy']:.4f}, mean P@10 {p['mean_precision_at_10']:.3f}, lowest recall "
        f"{p['min_recall']:.2f}"
    )
    print(f"{'source':<8}{'photos':>7}{'acc':>7}" + "".join(f"{e:>9}" for e in EMOTIONS))
    for source, row in p["by_source"].items():
        cells = "".join(f"{row['recall'].get(e, float('nan')):>9.2f}" for e in EMOTIONS)
        print(f"{source:<8}{row['photos']:>7}{row['accuracy']:>7.3f}{cells}")
    cells = "".join(f"{p['recall'][e]:>9.2f}" for e in EMOTIONS)
    print(f"{'all':<8}{len(photos):>7}{p['accuracy']:>7.3f}{cells}")
    cells = "".join(f"{p['precision_at_10'][e]:>9.2f}" for e in EMOTIONS)
    print(f"{'P@10':<22}{cells}")


if __name__ == "__main__":
    main()
