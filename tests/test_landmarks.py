"""The face mesh: landmarks where the face parts are, and a presence logit that tells faces
from other things."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from photosort.faces import BlazeFace
from photosort.landmarks import LANDMARKS, FaceMesh, pack_landmarks, unpack_landmarks


@pytest.fixture(scope="module")
def mesh() -> FaceMesh:
    return FaceMesh()


@pytest.fixture(scope="module")
def astronaut_face() -> np.ndarray:
    image = data.astronaut()
    face = BlazeFace().detect(image)[0]
    side = int(max(face.w, face.h) * 1.5)
    left = int(face.x + face.w / 2 - side / 2)
    top = int(face.y + face.h / 2 - side / 2)
    return image[max(top, 0) : top + side, max(left, 0) : left + side]


def test_the_mesh_puts_the_eyes_above_the_mouth_and_the_right_eye_on_the_viewers_left(
    mesh: FaceMesh, astronaut_face: np.ndarray
) -> None:
    found = mesh.run(astronaut_face)
    assert found.points.shape == (LANDMARKS, 3)
    right_eye, left_eye = found.part_centre("right eye"), found.part_centre("left eye")
    mouth = found.part_centre("mouth")
    assert right_eye[0] < mouth[0] < left_eye[0]
    assert max(right_eye[1], left_eye[1]) < found.part_centre("nose")[1] < mouth[1]
    side = astronaut_face.shape[0]
    assert (found.points[:, :2] > -0.1 * side).all() and (found.points[:, :2] < 1.1 * side).all()


def test_presence_is_high_for_a_face_and_low_for_noise(
    mesh: FaceMesh, astronaut_face: np.ndarray
) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (120, 120, 3), dtype=np.uint8)
    assert mesh.run(astronaut_face).presence > 5
    assert mesh.run(noise).presence < 0


def test_a_tight_grey_crop_gets_its_landmarks_in_its_own_pixels(mesh: FaceMesh) -> None:
    image = data.astronaut()
    face = BlazeFace().detect(image)[0]
    left, top, side = int(face.x), int(face.y), int(max(face.w, face.h))
    grey = np.asarray(image[top : top + side, left : left + side].mean(axis=2), dtype=np.uint8)
    found = mesh.run_on_crop(grey)
    assert found.presence > 0
    # The detector's own eye and mouth keypoints, in the crop's pixels, agree with the mesh.
    (rx, ry), (lx, ly), _, (mx, my) = face.keypoints[:4]
    expected = {"right eye": (rx, ry), "left eye": (lx, ly), "mouth": (mx, my)}
    for part, (x, y) in expected.items():
        assert np.allclose(found.part_centre(part), (x - left, y - top), atol=0.08 * side), part


def test_landmarks_round_trip_through_storage() -> None:
    points = np.random.default_rng(1).uniform(0, 96, (LANDMARKS, 3)).astype(np.float32)
    stored = pack_landmarks(points)
    assert len(stored) == LANDMARKS * 3 * 2
    assert np.allclose(unpack_landmarks(stored), points, atol=0.05)
