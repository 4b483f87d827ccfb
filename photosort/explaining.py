"""Explaining: LIME heatmaps that show which parts of a face drove the CNN's decision.

The stored face crop is reduced to the model's input size, cut into superpixels (SLIC from
scikit-image) and explained by LIME (``lime.lime_base.LimeBase`` fitted to perturbed crops
drawn here and sent to the model in large batches): superpixels that support the emotion,
superpixels that speak against it, and LIME's fit score (R^2 of its local linear model).
A deletion check tests faithfulness: hiding the supporting superpixels must lower the
emotion's probability clearly more than hiding as much area chosen at random does, judged
against enough random draws that another set of draws gives the same verdict. The face
parts the superpixels cover are named from the face mesh's landmarks, and the explanation
is drawn with a colour-blind-safe key and caption.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from photosort.defaults import DEFAULT_SAMPLES, DEFAULT_SEGMENTS, EMOTIONS
from photosort.emotions import INPUT_SIZE, resize_face
from photosort.landmarks import FACE_PARTS, FaceMesh, unpack_landmarks

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

LIME_BATCH = 1000

RANDOM_DRAWS = 500
"""Random sets of superpixels the deletion check hides, to know what an uninformed choice
does. With 20 draws a third of the verdicts flipped with the seed: the mean and spread of 20
drops are too rough a yardstick. With 500 the threshold moves by under a tenth of the spread
from one seed to another, and only borderline faces can flip (see BORDERLINE)."""

FAITHFUL_SPREADS = 2.0
"""How many standard deviations of the random draws the support's drop must beat."""

FAITHFUL_MARGIN = 0.02
"""...and by at least this much probability (2 points): on a face where hiding anything
barely moves the probability the random draws hardly spread, and a difference of a point
is within what int8 inference shifts."""

FIRST_DRAWS = 100
"""Draws the check starts with; it goes on to RANDOM_DRAWS unless the verdict is settled."""

SETTLED = 3.0
BOOTSTRAP = 200
"""A verdict on the first draws is settled when the support's drop is 3 bootstrap standard
errors (200 resamples) of the threshold away from it, beyond the borderline band."""

BORDERLINE_SPREADS = 0.25
BORDERLINE_MARGIN = 0.005
"""A verdict is borderline when the support's drop lies within max(0.25 SD, half a point)
of the threshold: there, another set of random draws may give the other verdict."""

UNCERTAIN = 0.5
"""Below this probability of the explained emotion the check means little: a drop can never
exceed the probability it drops from, and on such faces everything moves it a little."""

HIDE_PROBABILITY = 0.5
"""Chance that LIME's sampling hides each superpixel."""

RUNS = 1
SEGMENT_SCALES = {1: (1.0,), 2: (0.75, 1.25), 3: (0.6, 1.0, 1.4)}
"""LIME runs per explanation and the superpixel counts they use, as shares of ``segments``."""

FEATURES: tuple[int | None, ...] = (2, 3, 5, 8)
"""LIME's ``num_features`` candidates per run; None: every superpixel."""

SCREEN_DRAWS = 40
"""Random draws that screen each candidate's support when several compete."""

CHECK_SEED = 1000
"""Offset of the verdict's random draws from the screening's, so they never coincide."""

KERNEL_WIDTH = 0.25
"""``lime_image``'s kernel width over the cosine distance of a sample to the whole face."""


class Predictor(Protocol):
    def predict(self, faces: Any) -> np.ndarray: ...


@dataclass(frozen=True)
class Explanation:
    """One face's explanation for one emotion."""

    emotion: str
    probability: float
    segments: np.ndarray
    weights: dict[int, float]
    fit: float
    deletion_support: float
    """Drop in probability with the supporting superpixels hidden."""
    deletion_random: float
    """Mean drop over the random draws hiding as much area."""
    deletion_spread: float
    """Standard deviation of the random draws' drops."""
    deletion_rank: float | None = None
    """Share of the random draws whose drop the support's beats (None: not recorded)."""
    deletion_draws: int | None = None

    @property
    def faithful(self) -> bool:
        return is_faithful(self.deletion_support, self.deletion_random, self.deletion_spread)

    @property
    def borderline(self) -> bool:
        return is_borderline(self.deletion_support, self.deletion_random, self.deletion_spread)

    @property
    def uncertain(self) -> bool:
        return self.probability < UNCERTAIN

    @property
    def threshold(self) -> float:
        """The drop the support must beat to be faithful."""
        return self.deletion_random + faithful_margin(self.deletion_spread)

    def weight_map(self) -> np.ndarray:
        """Per-pixel LIME weight, at the explained size."""
        lookup = np.zeros(int(self.segments.max()) + 1, np.float32)
        for segment, weight in self.weights.items():
            lookup[segment] = weight
        return lookup[self.segments]


def faithful_margin(random_spread: float) -> float:
    return max(FAITHFUL_SPREADS * random_spread, FAITHFUL_MARGIN)


def is_faithful(support: float, random_mean: float, random_spread: float) -> bool:
    """Hiding what LIME calls supporting lowers the probability, clearly more than hiding as
    much at random: beyond the random draws' spread, and by a margin a rounding shift cannot
    explain."""
    return support > 0 and support - random_mean > faithful_margin(random_spread)


def is_borderline(support: float, random_mean: float, random_spread: float) -> bool:
    """The support's drop is so close to the threshold that the verdict hangs on the draws."""
    if not math.isfinite(random_spread):
        return False
    gap = support - random_mean - faithful_margin(random_spread)
    return abs(gap) < max(BORDERLINE_SPREADS * random_spread, BORDERLINE_MARGIN)


def segment(image: np.ndarray, n_segments: int) -> np.ndarray:
    """SLIC superpixels of a grey uint8 crop, labelled from 0; low compactness, so they
    follow the face's light and dark (brows, eyes, mouth) more than a grid."""
    from skimage.segmentation import slic

    return slic(
        image.astype(np.float64) / 255.0,
        n_segments=n_segments,
        compactness=0.1,
        sigma=0.5,
        channel_axis=None,
        start_label=0,
    )


_lime_process: ProcessPoolExecutor | None = None
"""The helper process that runs LIME's fits (``start_lime_process``), or None."""


def start_lime_process() -> None:
    """Import LIME in a helper process, forked now, that then runs this process's LIME fits.

    A one-face ``photosort explain`` spends most of its time importing: the store, SLIC and,
    for LIME, scikit-learn with SciPy's statistics (most of a second). Imports hold the GIL,
    so a thread (``prefetch_lime``) cannot import scikit-learn while this process imports
    the rest; a process can, on the other core. It is forked before any other thread
    exists, ignores Ctrl-C and dies with this process (``scanning.worker_init``); call
    ``stop_lime_process`` when done. Off Linux (where no parent-death signal guards the
    helper, and macOS's system libraries do not survive a fork), or once threads run, LIME
    is imported here as before.
    """
    global _lime_process
    import multiprocessing
    import os
    import sys
    import threading

    if (
        _lime_process is not None
        or "lime.lime_base" in sys.modules
        or not sys.platform.startswith("linux")
        or threading.active_count() > 1
    ):
        return
    from concurrent.futures import ProcessPoolExecutor

    from photosort.scanning import worker_init

    _lime_process = ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("fork"),
        initializer=worker_init,
        initargs=(os.getpid(),),
    )
    _lime_process.submit(_import_lime)


def stop_lime_process() -> None:
    """End the helper process now, whatever it is doing: an error must not wait for its
    import to finish."""
    global _lime_process
    pool, _lime_process = _lime_process, None
    if pool is not None:
        from photosort.scanning import kill_pool

        kill_pool(pool)


def _import_lime() -> None:
    import lime.lime_base  # noqa: F401


def _fit(
    neighbourhood: tuple[np.ndarray, np.ndarray, np.ndarray],
    label: int,
    features: int | None,
    seed: int,
) -> tuple[dict[int, float], float]:
    """``lime_fit`` in the helper process where one runs, else here."""
    if _lime_process is not None:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return _lime_process.submit(lime_fit, neighbourhood, label, features, seed).result()
        except BrokenProcessPool:  # the helper was killed (out of memory?): fit here
            stop_lime_process()
    return lime_fit(neighbourhood, label, features, seed)


@cache
def prefetch_lime() -> None:
    """Import LIME (and scikit-learn and SciPy's statistics with it) on a background thread.

    Those imports take most of a second, more than one explanation's own work; the model's
    inference releases the GIL, so a one-face ``photosort explain`` classifies LIME's samples
    on one core while the other imports. The first ``lime_fit`` waits for the import to end.
    """
    import importlib
    import threading

    def load() -> None:
        # A failure shows where LIME is used, as a one-line error; not here as a traceback.
        with contextlib.suppress(Exception):
            importlib.import_module("lime.lime_base")

    threading.Thread(target=load, name="import-lime", daemon=True).start()


def explain_face(
    crop: np.ndarray,
    model: Predictor,
    emotion: str,
    *,
    samples: int = DEFAULT_SAMPLES,
    segments: int = DEFAULT_SEGMENTS,
    seed: int = 0,
    runs: int = RUNS,
    features: tuple[int | None, ...] = FEATURES,
    hide_probability: float = HIDE_PROBABILITY,
    screen_draws: int = SCREEN_DRAWS,
) -> Explanation:
    """Explain ``model``'s probability of ``emotion`` for a grey face crop (any size).

    LIME runs ``runs`` times on superpixels of different sizes (SEGMENT_SCALES around
    ``segments``), sharing ``samples`` between them, and each run is fitted once per
    ``features`` count (LIME's ``num_features``). Where that makes several candidates, each
    candidate's support is screened with SCREEN_DRAWS random draws and the one that beats
    its threshold by most is kept; its verdict then comes from a deletion check with other
    random draws, so the choice does not flatter it.
    """
    label = EMOTIONS.index(emotion)
    # Resized as the model resizes its input: the explained image is the one it classified,
    # and at the model's input size there are far fewer pixels to perturb.
    small = resize_face(crop, getattr(model, "input_size", INPUT_SIZE))
    scales = SEGMENT_SCALES[runs]
    if _lime_process is None:
        prefetch_lime()
    # Every run's samples are classified before the first fit, while LIME's imports finish.
    runs_done = []
    for run, scale in enumerate(scales):
        segment_map = segment(small, max(4, round(segments * scale)))
        neighbourhood = lime_samples(
            small, segment_map, model, samples // len(scales), seed + run, hide_probability
        )
        runs_done.append((run, segment_map, neighbourhood))
    candidates = []
    for run, segment_map, neighbourhood in runs_done:
        for count in features:
            weights, fit = _fit(neighbourhood, label, count, seed + run)
            candidates.append((segment_map, weights, fit))
    best, best_gap = candidates[0], -math.inf
    for run, (segment_map, weights, fit) in enumerate(candidates if len(candidates) > 1 else []):
        screen = deletion_check(
            small, segment_map, weights, model, label, seed=seed + run,
            draws=screen_draws, first_draws=screen_draws,
        )  # fmt: skip
        gap = screen.support - screen.random_mean - faithful_margin(screen.random_spread)
        if gap > best_gap:
            best, best_gap = (segment_map, weights, fit), gap
    segment_map, weights, fit = best
    check = deletion_check(small, segment_map, weights, model, label, seed=seed + CHECK_SEED)
    return Explanation(
        emotion=emotion,
        probability=check.probability,
        segments=segment_map,
        weights=weights,
        fit=fit,
        deletion_support=check.support,
        deletion_random=check.random_mean,
        deletion_spread=check.random_spread,
        deletion_rank=check.rank,
        deletion_draws=check.draws,
    )


def lime_weights(
    image: np.ndarray,
    segment_map: np.ndarray,
    model: Predictor,
    label: int,
    *,
    samples: int,
    seed: int,
    hide_probability: float = HIDE_PROBABILITY,
    features: int | None = None,
) -> tuple[dict[int, float], float]:
    """Each superpixel's LIME weight for class ``label``, and the local model's R^2.

    ``features`` limits the explanation to that many superpixels, as LIME's
    ``num_features`` does (the others weigh 0); None keeps them all.
    """
    samples_ = lime_samples(image, segment_map, model, samples, seed, hide_probability)
    return lime_fit(samples_, label, features, seed)


def lime_samples(
    image: np.ndarray,
    segment_map: np.ndarray,
    model: Predictor,
    samples: int,
    seed: int,
    hide_probability: float = HIDE_PROBABILITY,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LIME's neighbourhood of the crop: which superpixels each sample keeps, the model's
    probabilities for it, and its distance to the whole crop.

    Each superpixel is hidden with probability ``hide_probability``, in the crop's mean grey
    as in the deletion check; the distance and kernel are ``lime_image``'s. Drawing them
    here builds all masks at once and sends them to the model in one batch; ``lime_image``
    builds each mask in a Python loop, which costs more than the model.
    """
    n = int(segment_map.max()) + 1
    rng = np.random.default_rng(seed)
    data = (rng.random((samples, n)) >= hide_probability).astype(np.float64)
    data[0] = 1.0
    probs = _predict_hidden(image, segment_map, model, data == 0)
    kept = data.sum(axis=1)
    distances = 1.0 - kept / np.sqrt(np.maximum(kept, 1e-12) * n)
    return data, probs, distances


def lime_fit(
    neighbourhood: tuple[np.ndarray, np.ndarray, np.ndarray],
    label: int,
    features: int | None,
    seed: int,
) -> tuple[dict[int, float], float]:
    """Fit ``lime.lime_base.LimeBase`` to a neighbourhood: every superpixel's weight (0 for
    those ``features`` leaves out, by LIME's "highest_weights" selection) and the R^2."""
    from lime.lime_base import LimeBase

    data, probs, distances = neighbourhood
    n = data.shape[1]
    base = LimeBase(lambda d: np.sqrt(np.exp(-(d**2) / KERNEL_WIDTH**2)), random_state=seed)
    selection = "none" if features is None or features >= n else "highest_weights"
    _, local_exp, score, _ = base.explain_instance_with_data(
        data, probs, distances, label, features or n, feature_selection=selection
    )
    weights = dict.fromkeys(range(n), 0.0)
    weights.update({int(k): float(v) for k, v in local_exp})
    return weights, float(score)


def hide_value(image: np.ndarray) -> int:
    """The grey a hidden superpixel takes: the crop's mean, so hiding adds no new edge or
    exposure the model could react to."""
    return int(round(float(image.mean())))


def _predict_hidden(
    image: np.ndarray, segment_map: np.ndarray, model: Predictor, hidden: np.ndarray
) -> np.ndarray:
    """Probabilities for copies of ``image`` with, per row of ``hidden`` (``(N, regions)``
    bool), those superpixels filled with the mean grey; in batches of LIME_BATCH."""
    fill = hide_value(image)
    out = []
    for start in range(0, len(hidden), LIME_BATCH):
        masks = hidden[start : start + LIME_BATCH][:, segment_map]
        batch = np.where(masks, np.uint8(fill), image[None]).astype(np.uint8)
        out.append(np.asarray(model.predict(batch), dtype=np.float64))
    return np.concatenate(out)


@dataclass(frozen=True)
class DeletionCheck:
    probability: float
    support: float
    """Drop in probability with the supporting superpixels hidden."""
    random_mean: float
    random_spread: float
    """Mean and standard deviation of the drop over random draws hiding as much area."""
    rank: float
    """Share of the random draws whose drop the support's drop beats."""
    draws: int

    @property
    def faithful(self) -> bool:
        return is_faithful(self.support, self.random_mean, self.random_spread)


def supporting_regions(weights: dict[int, float], n_regions: int) -> list[int]:
    """The superpixels the deletion check hides: the most supporting ones, at most a quarter
    of all (at least one)."""
    supporting = [s for s, w in sorted(weights.items(), key=lambda kv: -kv[1]) if w > 0]
    return supporting[: max(1, min(len(supporting), n_regions // 4))]


OPPOSING_FLOOR = 0.25
"""An opposing superpixel is named only when its weight is at least this share of the
strongest weight: LIME gives every region some weight, and noise must not speak."""


def opposing_regions(weights: dict[int, float], n_regions: int) -> list[int]:
    """The superpixels that speak most against the emotion, at most a quarter of all."""
    floor = OPPOSING_FLOOR * max((abs(w) for w in weights.values()), default=0.0)
    opposing = [s for s, w in sorted(weights.items(), key=lambda kv: kv[1]) if w < -floor]
    return opposing[: max(1, n_regions // 4)]


def random_draws(segment_map: np.ndarray, target: int, draws: int, seed: int) -> np.ndarray:
    """``(draws, regions)`` bool: random sets of whole superpixels, each covering as close to
    ``target`` pixels as whole superpixels allow. The same segmentation, area and seed give
    the same sets."""
    ids, areas = np.unique(segment_map, return_counts=True)
    rng = np.random.default_rng([seed, target])
    order = np.argsort(rng.random((draws, len(ids))), axis=1)
    covered = np.cumsum(areas[order], axis=1)
    # Each draw is the prefix of its shuffled superpixels whose area is closest to the target.
    cut = np.argmin(np.abs(covered - target), axis=1) + 1
    chosen = np.arange(len(ids))[None, :] < cut[:, None]
    hidden = np.zeros((draws, int(ids.max()) + 1), bool)
    np.put_along_axis(hidden, ids[order], chosen, axis=1)
    return hidden


def deletion_check(
    image: np.ndarray,
    segment_map: np.ndarray,
    weights: dict[int, float],
    model: Predictor,
    label: int,
    *,
    seed: int = 0,
    draws: int = RANDOM_DRAWS,
    first_draws: int = FIRST_DRAWS,
) -> DeletionCheck:
    """Hide the most supporting superpixels (at most a quarter of them) and random
    superpixels covering as much area; compare the drops.

    ``first_draws`` random draws come first; when the support's drop lies so far from the
    threshold that no other set of draws could move it across (SETTLED times the threshold's
    bootstrap standard error), the verdict stands on them; otherwise the check goes on to
    ``draws`` in all. Most faces are clear-cut, so the check costs a fifth of its draws.
    """
    n = int(segment_map.max()) + 1
    support_row = np.zeros((1, n), bool)
    support_row[0, supporting_regions(weights, n)] = True
    target = int(support_row[0][segment_map].sum())
    random_rows = random_draws(segment_map, target, draws, seed)
    first = min(first_draws, draws)
    rows = np.concatenate([np.zeros((1, n), bool), support_row, random_rows[:first]])
    probs = _predict_hidden(image, segment_map, model, rows)[:, label]
    base, support = float(probs[0]), float(probs[0] - probs[1])
    drops = base - probs[2:]
    if first < draws and not _settled(support, drops, seed):
        more = _predict_hidden(image, segment_map, model, random_rows[first:])[:, label]
        drops = np.concatenate([drops, base - more])
    return DeletionCheck(
        probability=base,
        support=support,
        random_mean=float(drops.mean()),
        random_spread=float(drops.std(ddof=1)) if len(drops) > 1 else math.inf,
        rank=float(np.mean(drops < support)),
        draws=len(drops),
    )


def _settled(support: float, drops: np.ndarray, seed: int) -> bool:
    """Whether the verdict on these drops would survive any other set of draws: the
    support's distance to the threshold is SETTLED bootstrap standard errors of the
    threshold, and beyond the borderline band."""
    rng = np.random.default_rng([seed, len(drops)])
    resampled = drops[rng.integers(0, len(drops), (BOOTSTRAP, len(drops)))]
    margins = np.maximum(FAITHFUL_SPREADS * resampled.std(axis=1, ddof=1), FAITHFUL_MARGIN)
    error = float((resampled.mean(axis=1) + margins).std())
    spread = float(drops.std(ddof=1))
    gap = support - float(drops.mean()) - faithful_margin(spread)
    band = max(BORDERLINE_SPREADS * spread, BORDERLINE_MARGIN)
    return abs(gap) > SETTLED * error + band


SUPPORT_RGB = (0, 114, 178)
AGAINST_RGB = (230, 159, 0)
"""Okabe and Ito's blue and orange: told apart with every common colour-vision deficiency,
unlike green against red."""

FAIL_RGB = (190, 40, 0)
"""The colour of a failed verdict: it must not look like a pass."""

ADJECTIVES = {
    "angry": "angry",
    "disgust": "disgusted",
    "fear": "afraid",
    "happy": "happy",
    "sad": "sad",
    "surprise": "surprised",
    "neutral": "neutral",
}

PAIRS = {
    "eyes": ("right eye", "left eye"),
    "brows": ("right brow", "left brow"),
    "cheeks": ("right cheek", "left cheek"),
}
"""Face parts named once, in the plural, when both sides are covered."""


@dataclass(frozen=True)
class FaceParts:
    """The face parts the supporting and the opposing superpixels cover, most covered first."""

    support: tuple[str, ...]
    against: tuple[str, ...]

    def sentence(self, emotion: str) -> str:
        """One sentence, e.g. "The mouth and the eyes make this face look happy; the brows
        speak against it." A part of one side is the person's ("the person's left cheek"):
        readers take a bare "left" for their own, the heatmap's left."""
        look = f"look {ADJECTIVES.get(emotion, emotion)}"
        if self.support:
            verb = "make" if _plural(self.support) else "makes"
            text = f"{_join(self.support).capitalize()} {verb} this face {look}"
        else:
            text = f"No face part clearly makes this face {look}"
        if self.against:
            verb = "speak" if _plural(self.against) else "speaks"
            text += f"; {_join(self.against)} {verb} against it"
        return text + "."


def _plural(parts: tuple[str, ...]) -> bool:
    return len(parts) > 1 or parts[0] in PAIRS


ONE_SIDED = frozenset(side for both in PAIRS.values() for side in both)
"""Parts named by the subject's own side: the person's left eye is on the viewer's right."""


def _join(parts: tuple[str, ...]) -> str:
    named = [f"the person's {p}" if p in ONE_SIDED else f"the {p}" for p in parts]
    return named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]


def _merge_pairs(parts: list[str]) -> tuple[str, ...]:
    """Both eyes (brows, cheeks) named become "eyes", in the place of the first."""
    out: list[str] = []
    for part in parts:
        pair = next((name for name, both in PAIRS.items() if part in both), None)
        if pair and all(p in parts for p in PAIRS[pair]):
            if pair not in out:
                out.append(pair)
        else:
            out.append(part)
    return tuple(out)


MAX_PARTS = 3
"""Parts named per side: a sentence that lists the whole face says nothing."""

PART_SHARE = 0.5
"""A face part counts as covered when at least half of its landmarks lie in the regions."""


def face_parts(explanation: Explanation, landmarks: np.ndarray, crop_side: int) -> FaceParts:
    """Name the face parts under the supporting regions (those the deletion check hides) and
    under the most opposing ones, from the face mesh's landmarks in the crop's pixels.

    At least one supporting part is named whenever any region supports the emotion: if no
    part is half covered, the most covered one (or the one with the highest mean weight).
    """
    seg = explanation.segments
    n = int(seg.max()) + 1
    scale = seg.shape[0] / crop_side
    xy = np.clip(np.round(landmarks[:, :2] * scale - 0.5), 0, seg.shape[0] - 1).astype(int)
    under = seg[xy[:, 1], xy[:, 0]]
    lookup = np.zeros(n, np.float64)
    for region, weight in explanation.weights.items():
        lookup[region] = weight
    support = np.zeros(n, bool)
    support[supporting_regions(explanation.weights, n)] = True
    against = np.zeros(n, bool)
    against[opposing_regions(explanation.weights, n)] = True
    share_for, share_against, mean_weight = {}, {}, {}
    for name, indices in FACE_PARTS.items():
        regions = under[list(indices)]
        share_for[name] = float(support[regions].mean())
        share_against[name] = float(against[regions].mean())
        mean_weight[name] = float(lookup[regions].mean())
    pro = [p for p in FACE_PARTS if share_for[p] >= PART_SHARE]
    con = [p for p in FACE_PARTS if share_against[p] >= PART_SHARE]
    if not pro and any(w > 0 for w in explanation.weights.values()):
        pro = [max(FACE_PARTS, key=lambda p: (share_for[p], mean_weight[p]))]
        con = [p for p in con if p not in pro]
    pro.sort(key=lambda p: (-share_for[p], -mean_weight[p]))
    con.sort(key=lambda p: (-share_against[p], mean_weight[p]))
    return FaceParts(_merge_pairs(pro)[:MAX_PARTS], _merge_pairs(con)[:MAX_PARTS])


@cache
def _mesh() -> FaceMesh:
    """One mesh interpreter for this process, made on first use: most faces have stored
    landmarks and never need it."""
    return FaceMesh()


def crop_landmarks(crop: np.ndarray, stored: bytes | None = None) -> np.ndarray:
    """The face mesh's landmarks in the crop's pixels: the stored ones, else the mesh's."""
    if stored is not None:
        return unpack_landmarks(stored)
    return _mesh().run_on_crop(crop).points


def points(drop: float) -> str:
    """A drop in probability, in percentage points: the one unit drops are shown in."""
    return f"{drop * 100:.1f} points"


def _share(rank: float) -> str:
    """A share under 1 rounded down, never to 100%: "98%", "99.8%"."""
    if rank >= 0.99:
        return f"{math.floor(rank * 1000) / 10:.1f}%"
    return f"{math.floor(rank * 100)}%"


def verdict_words(explanation: Explanation) -> str:
    """The check's verdict in a few words: "faithful", "NOT faithful", plus its caveats."""
    words = "faithful" if explanation.faithful else "NOT faithful"
    if explanation.borderline:
        words += " (borderline)"
    if explanation.uncertain:
        words += " (uncertain face)"
    return words


def check_sentences(explanation: Explanation) -> list[str]:
    """The deletion check in sentences: the drops, where the support's drop ranks among the
    random draws, the verdict and its caveats."""
    ex = explanation
    emotion = ex.emotion
    lines = [
        f"Hiding the supporting regions lowers {emotion} by {points(ex.deletion_support)}; "
        f"hiding as much area at random lowers it by {points(ex.deletion_random)} on average "
        f"(spread {points(ex.deletion_spread)})."
    ]
    if ex.deletion_random < 0:
        lines.append(
            "A negative random drop means hiding random regions raises "
            f"{emotion} on average: what they cover held it back."
        )
    if ex.deletion_rank is not None and ex.deletion_draws:
        share = "all" if ex.deletion_rank >= 1 else _share(ex.deletion_rank)
        lines.append(
            f"Hiding them lowers it more than {share} of "
            f"{ex.deletion_draws} random choices of the same area do."
        )
    need = points(ex.threshold)
    if ex.faithful:
        lines.append(f"Faithful: the drop beats the {need} it needs.")
    else:
        lines.append(_shortfall(ex))
    if ex.borderline:
        lines.append("Borderline: so close to that line that other random draws may disagree.")
    if ex.uncertain:
        lines.append(
            f"Uncertain face: at {ex.probability:.0%} the model is unsure of {emotion}, and no "
            "drop can exceed the probability it drops from; the check means little here."
        )
    return lines


def _shortfall(ex: Explanation) -> str:
    """Why the check failed, with its numbers: the support's drop can beat most random
    choices and still fall short of the threshold, which is built from their spread."""
    rule = (
        f"NOT faithful: the drop needs to exceed {points(ex.threshold)}, the random drops' "
        f"mean plus {FAITHFUL_SPREADS:g} times their spread "
        f"(at least {points(FAITHFUL_MARGIN)} above the mean)"
    )
    if ex.deletion_support <= 0:
        return f"{rule}, and hiding the supporting regions does not lower {ex.emotion} at all."
    return f"{rule}; it falls {points(ex.threshold - ex.deletion_support)} short."


def heatmap_image(crop: np.ndarray, explanation: Explanation, size: int = 192) -> Image.Image:
    """The crop in grey with supporting regions tinted blue and opposing ones orange."""
    weights = np.asarray(
        Image.fromarray(explanation.weight_map()).resize((size, size), Image.Resampling.NEAREST)
    )
    grey = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.LANCZOS))
    base = np.stack([grey] * 3, axis=-1).astype(np.float32) * 0.75
    peak = float(np.abs(weights).max()) or 1.0
    alpha = (np.abs(weights) / peak)[..., None] * 0.7
    support = np.array(SUPPORT_RGB, np.float32)
    against = np.array(AGAINST_RGB, np.float32)
    tint = np.where((weights > 0)[..., None], support, against)
    out = base * (1 - alpha) + tint * alpha
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8), "RGB")


def explanation_card(
    crop: np.ndarray, explanation: Explanation, parts: FaceParts | None = None, size: int = 288
) -> Image.Image:
    """The heatmap with what a reader needs burnt in: a caption (emotion, probability,
    verdict), the colour key and, when known, the face parts in words."""
    from PIL import ImageDraw, ImageFont

    heat = heatmap_image(crop, explanation, size)
    font = ImageFont.load_default(size=13)
    bold = ImageFont.load_default(size=15)
    width = max(size, 360)
    lines = _wrap(parts.sentence(explanation.emotion), font, width - 16) if parts else []
    height = size + 62 + 17 * len(lines)
    card = Image.new("RGB", (width, height), "white")
    card.paste(heat, ((width - size) // 2, 0))
    draw = ImageDraw.Draw(card)
    y = size + 6
    caption = f"{explanation.emotion} {explanation.probability:.0%}"
    draw.text((8, y), caption, fill="black", font=bold)
    verdict = verdict_words(explanation)
    x = 16 + draw.textlength(caption, font=bold)
    if explanation.faithful:
        draw.text((x, y), verdict, fill=(40, 40, 40), font=bold)
    else:
        box = draw.textbbox((x, y), verdict, font=bold)
        draw.rectangle((box[0] - 4, box[1] - 3, box[2] + 4, box[3] + 3), fill=FAIL_RGB)
        draw.text((x, y), verdict, fill="white", font=bold)
    y += 24
    keys = ((SUPPORT_RGB, "supports"), (AGAINST_RGB, "speaks against"))
    for left, (colour, label) in zip((8, width // 2), keys, strict=True):
        draw.rectangle((left, y + 1, left + 14, y + 15), fill=colour)
        draw.text((left + 20, y), f"{label} {explanation.emotion}", fill="black", font=font)
    y += 24
    for line in lines:
        draw.text((8, y), line, fill="black", font=font)
        y += 17
    return card


def _wrap(text: str, font: Any, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()
