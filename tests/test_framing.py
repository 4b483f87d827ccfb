"""Crops framed like the training faces: landmarks found, eyes levelled, scale kept."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from photosort import faces
from photosort.faces import (
    CROP_SIZE,
    FER_EYE_DISTANCE,
    FER_EYES,
    Face,
    FaceSettings,
    _box_crop,
    crop_face,
    crop_frame,
    make_detector,
)
from photosort.sample import skimage_photo


def largest(image: np.ndarray) -> Face:
    return max(make_detector().detect(image), key=lambda f: f.w * f.h)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.astype(float).ravel(), b.astype(float).ravel())[0, 1])


def test_detector_gives_six_landmarks_on_the_face() -> None:
    face = largest(skimage_photo("astronaut"))
    assert len(face.keypoints) == 6
    (rx, ry), (lx, ly), (nx, ny), (mx, my) = face.keypoints[:4]
    assert rx < nx < lx  # the subject's right eye is on the image's left
    assert max(ry, ly) < ny < my  # eyes above the nose, the mouth below it
    for x, y in face.keypoints[:4]:
        assert face.x <= x <= face.x + face.w and face.y <= y <= face.y + face.h


def test_landmarks_follow_the_face_when_scaled_and_shifted() -> None:
    face = largest(skimage_photo("astronaut"))
    moved = face.scaled(2.0).shifted(10, 20)
    assert moved.keypoints[0] == (face.keypoints[0][0] * 2 + 10, face.keypoints[0][1] * 2 + 20)


def test_the_frame_puts_the_eyes_where_fer2013_has_them() -> None:
    face = Face(100, 100, 100, 100, 0.9, ((130, 140), (170, 140), (150, 160), (150, 180)))
    cx, cy, side, angle = crop_frame(face)
    assert angle == 0
    # 40 px between the eyes is FER_EYE_DISTANCE of the side; the eye-mouth estimate is
    # 40 px too (0.398 of 100.5): the larger wins.
    assert side == max(40 / FER_EYE_DISTANCE, 40 / 0.398)
    assert abs((150 - (cx - side / 2)) / side - FER_EYES[0]) < 1e-9
    assert abs((140 - (cy - side / 2)) / side - FER_EYES[1]) < 1e-9


def test_a_tilted_head_is_levelled() -> None:
    """The same face rotated by 20 degrees gives nearly the same crop; a box crop does not."""
    photo = skimage_photo("astronaut")
    tilted = np.asarray(Image.fromarray(photo).rotate(20, Image.Resampling.BICUBIC))
    upright, turned = largest(photo), largest(tilted)
    (rx, ry), (lx, ly) = turned.keypoints[:2]
    assert abs(np.degrees(np.arctan2(ly - ry, lx - rx)) + 20) < 6  # the landmarks see the tilt
    a = crop_face(Image.fromarray(photo), upright)
    b = crop_face(Image.fromarray(tilted), turned)
    boxed = correlation(
        _box_crop(Image.fromarray(photo), upright, CROP_SIZE),
        _box_crop(Image.fromarray(tilted), turned, CROP_SIZE),
    )
    assert a.shape == b.shape == (CROP_SIZE, CROP_SIZE)
    assert correlation(a, b) > 0.85
    assert correlation(a, b) > boxed + 0.1


def test_a_face_at_the_edge_is_padded_black_as_fer_pads() -> None:
    photo = skimage_photo("astronaut")
    face = largest(photo)
    cut = Image.fromarray(photo).crop((int(face.x + face.w * 0.4), 0, 512, 512))
    edge = largest(np.asarray(cut)) if make_detector().detect(np.asarray(cut)) else None
    if edge is None:  # a half face need not be found; frame the shifted one instead
        edge = face.shifted(-int(face.x + face.w * 0.4), 0)
    crop = crop_face(cut, edge)
    assert crop.shape == (CROP_SIZE, CROP_SIZE)
    assert (crop[:, :5] < 5).mean() > 0.9  # left of the photo: nothing but padding


def test_the_framing_and_the_models_are_part_of_the_settings_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A library cropped another way, or whose faces other models found, has its faces
    found and cut again on the next scan."""
    key = FaceSettings().key
    assert ":fer-eyes-1:" in key
    for name in ("CROP_FRAMING", "DETECTION"):
        with monkeypatch.context() as patch:
            patch.setattr(faces, name, "another")
            assert FaceSettings().key != key
