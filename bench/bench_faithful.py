"""Which LIME settings make its top regions the ones that matter: the faithful share by an
independent re-check, per variant.

Faces come from libraries scanned with photosort (``photosort scan PHOTOS --db LIB``); the
explanations are an album's: for each emotion, the faces most likely to show it (at least
DEFAULT_MIN_PROBABILITY), explained for that emotion. Each variant explains them and is
re-checked here the way an outsider would, from the explained regions and weights alone:
hide the most supporting regions (at most a quarter of them) with the crop's mean grey,
against 500 random draws of regions of the same area (other draws than photosort's own);
faithful when the support's drop beats the random mean by max(2 SD, 2 points). Also
reported: how often photosort's own verdict agrees with the re-check, the share of faces
whose probability is under UNCERTAIN, and the faithful share among the others.

With ``--album``, the explanations a library already stored (``photosort report OUT --db LIB
-n 5``) are re-checked as they are, from the explanations table and the faces' crops, and
their stored verdicts compared with the re-check's.

Run: ``python bench/bench_faithful.py --db /tmp/wild.db --db /tmp/group.db [--per-emotion 6]``
or ``python bench/bench_faithful.py --album --db /tmp/album.db``
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from photosort.defaults import DEFAULT_MIN_PROBABILITY, EMOTIONS
from photosort.emotions import load_model, resize_face
from photosort.explaining import UNCERTAIN, Explanation, explain_face
from photosort.indexing import decode_crop
from photosort.store import FaceRow, open_engine

RECHECK_DRAWS = 500
RECHECK_SEED = 20261206


def album_faces(dbs: list[str], per_emotion: int) -> list[tuple[np.ndarray, str]]:
    """(crop, emotion): each library's ``per_emotion`` likeliest faces for every emotion."""
    out = []
    for db in dbs:
        engine = open_engine(f"sqlite:///{db}" if "://" not in db else db)
        with Session(engine) as session:
            faces = [f for f in session.scalars(select(FaceRow)) if f.probabilities is not None]
            for i, emotion in enumerate(EMOTIONS):
                ranked = sorted(faces, key=lambda f: -f.probabilities[i])  # type: ignore[index]
                for face in ranked[:per_emotion]:
                    if face.probabilities[i] >= DEFAULT_MIN_PROBABILITY:  # type: ignore[index]
                        out.append((decode_crop(face.crop), emotion))
    return out


def recheck(crop: np.ndarray, found: Explanation, model: object) -> bool:
    """The outsider's check, written apart from photosort's own."""
    shape = found.segments.shape
    small = resize_face(crop, shape[0])
    label = EMOTIONS.index(found.emotion)
    grey = int(round(float(small.mean())))
    ids, areas = np.unique(found.segments, return_counts=True)
    positive = sorted((w, s) for s, w in found.weights.items() if w > 0)[::-1]
    k = max(1, min(len(positive), len(ids) // 4))
    support = [s for _, s in positive[:k]]
    target = int(np.isin(found.segments, support).sum())
    rng = np.random.default_rng(RECHECK_SEED)
    images = [small, np.where(np.isin(found.segments, support), grey, small)]
    for _ in range(RECHECK_DRAWS):
        order = rng.permutation(len(ids))
        cut = int(np.argmin(np.abs(np.cumsum(areas[order]) - target))) + 1
        images.append(np.where(np.isin(found.segments, ids[order[:cut]]), grey, small))
    probs = model.predict(np.stack(images).astype(np.uint8))[:, label]  # type: ignore[attr-defined]
    drops = probs[0] - probs[2:]
    gap = (probs[0] - probs[1]) - drops.mean()
    return bool(probs[0] - probs[1] > 0 and gap > max(2 * drops.std(ddof=1), 0.02))


def _variant(**options: object) -> Callable[..., Explanation]:
    return lambda crop, model, emotion: explain_face(crop, model, emotion, **options)


VARIANTS: dict[str, Callable[..., Explanation]] = {
    "photosort default": _variant(),
    "plain LIME": _variant(features=(None,), samples=1000),
    "hide 0.25": _variant(features=(None,), samples=1000, hide_probability=0.25),
    "hide 0.75": _variant(features=(None,), samples=1000, hide_probability=0.75),
    "25 segments": _variant(features=(None,), samples=1000, segments=25),
    "60 segments": _variant(features=(None,), samples=1000, segments=60),
    "2 runs": _variant(runs=2, features=(None,), samples=1000, screen_draws=60),
    "3 runs": _variant(runs=3, features=(None,), samples=1000, screen_draws=60),
    "top 5": _variant(features=(5,), samples=1000),
    "best of top 3/5/8/all": _variant(features=(3, 5, 8, None), samples=1000, screen_draws=60),
    "best of top 4/all": _variant(features=(4, None), samples=1000, screen_draws=60),
    "best of top 3/5/8/all, 750 samples": _variant(features=(3, 5, 8, None), screen_draws=40),
    "best of top 2/3/5/8, 750 samples": _variant(features=(2, 3, 5, 8), screen_draws=40),
}


def measure(dbs: list[str], per_emotion: int, names: list[str], details: Path | None) -> dict:
    model = load_model()
    faces = album_faces(dbs, per_emotion)
    rows = []
    for name in names:
        explain = VARIANTS[name]
        passed, agree, confident_passed, confident = [], [], [], 0
        start = time.perf_counter()
        for crop, emotion in faces:
            found = explain(crop, model, emotion)
            ok = recheck(crop, found, model)
            if details:
                with details.open("a") as f:
                    row = {
                        "variant": name,
                        "emotion": emotion,
                        "probability": found.probability,
                        "support": found.deletion_support,
                        "random": found.deletion_random,
                        "spread": found.deletion_spread,
                        "faithful": found.faithful,
                        "recheck": ok,
                    }
                    f.write(json.dumps(row) + "\n")
            passed.append(ok)
            agree.append(ok == found.faithful)
            if found.probability >= UNCERTAIN:
                confident += 1
                confident_passed.append(ok)
        rows.append(
            {
                "variant": name,
                "faithful": round(float(np.mean(passed)), 3),
                "own_verdict_agrees": round(float(np.mean(agree)), 3),
                "faithful_confident": round(float(np.mean(confident_passed or [0])), 3),
                "confident": confident,
                "seconds": round((time.perf_counter() - start) / len(faces), 2),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return {"explanations": len(faces), "rows": rows}


def recheck_album(db: str) -> dict:
    """Re-check every explanation a library stored (after ``photosort report``) from the
    explanations table alone: ``segment_map``, ``weights`` and the face's crop; and compare
    with the verdict stored beside them."""
    import sqlite3

    model = load_model()
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT e.emotion, e.segment_map, e.weights, e.deletion_support, e.deletion_random,"
            " e.deletion_spread, e.probability, f.crop FROM explanations e"
            " JOIN faces f ON f.id = e.face_id"
        ).fetchall()
    passed, agree, confident = [], [], []
    for emotion, segment_map, weights, support, random_mean, spread, probability, crop in rows:
        shape = json.loads(weights)
        segments = np.frombuffer(segment_map, np.int16).reshape(shape["shape"])
        found = Explanation(
            emotion,
            probability,
            segments,
            {int(k): v for k, v in shape["weights"].items()},
            0.0,
            support,
            random_mean,
            spread if spread is not None else float("inf"),
        )
        ok = recheck(decode_crop(crop), found, model)
        passed.append(ok)
        agree.append(ok == found.faithful)
        if probability >= UNCERTAIN:
            confident.append(ok)
    return {
        "explanations": len(rows),
        "faithful": round(float(np.mean(passed)), 3),
        "stored_verdict_agrees": round(float(np.mean(agree)), 3),
        "faithful_confident": round(float(np.mean(confident or [0])), 3),
        "confident": len(confident),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", action="append", required=True, help="scanned library")
    parser.add_argument(
        "--album",
        action="store_true",
        help="re-check the explanations the (one) library stored instead of explaining anew",
    )
    parser.add_argument("--per-emotion", type=int, default=6)
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    parser.add_argument("--details", type=Path, help="append one JSON line per explanation")
    args = parser.parse_args()
    if args.album:
        print(json.dumps(recheck_album(args.db[0]), indent=1))
        return
    result = measure(args.db, args.per_emotion, args.variant or list(VARIANTS), args.details)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
