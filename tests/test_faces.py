"""Faces in the library: detection, crops, batched classification, re-classification, ranking."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from photosort import faces as faces_module
from photosort import indexing
from photosort.cli import cli
from photosort.defaults import EMOTIONS, WORKING_SIDE
from photosort.faces import (
    CROP_SIZE,
    FER_EYES,
    BlazeFace,
    Face,
    FaceSettings,
    crop_face,
    crop_frame,
    crop_transform,
    find_faces,
    iou,
    make_detector,
    sharpness,
    to_crop,
)
from photosort.images import read_array, read_image
from photosort.indexing import FaceOptions, decode_crop, scan_library
from photosort.landmarks import FaceMesh, Mesh, unpack_landmarks
from photosort.ranking import RankingError, top_photos
from photosort.sample import build_sample_album, save_jpeg, skimage_photo, stored_sideways
from photosort.store import FaceRow, Photo, open_engine

# Where the astronaut's face is in skimage.data.astronaut() (512x512), checked by eye.
ASTRONAUT_FACE = (172.0, 67.0, 107.0, 107.0)


class BrightnessModel:
    """A stand-in emotion model: "happy" is the crop's mean brightness, the rest share 1-p.

    Counts its calls, so tests can see batching and re-classification.
    """

    def __init__(self, model_id: str = "test-model-1", fail: bool = False) -> None:
        self.model_id = model_id
        self.fail = fail
        self.calls: list[int] = []

    def predict(self, faces: np.ndarray) -> np.ndarray:
        self.calls.append(len(faces))
        if self.fail:
            raise RuntimeError("model exploded")
        happy = np.asarray(faces, dtype=np.float32).mean(axis=(1, 2)) / 255.0
        probs = np.repeat(((1 - happy) / 6)[:, None], 7, axis=1)
        probs[:, EMOTIONS.index("happy")] = happy
        return probs.astype(np.float32)


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    root = tmp_path / "album"
    build_sample_album(root)
    return root


def scan(db_url: str, album: Path, model: BrightnessModel, workers: int = 1, **options: object):
    """Scan in this process (workers=1), so tests can count calls to the detector."""
    return scan_library(
        open_engine(db_url),
        [str(album)],
        workers=workers,
        faces=FaceOptions(classifier=model, **options),
    )


def faces_by_photo(db_url: str) -> dict[str, list[FaceRow]]:
    with Session(open_engine(db_url), expire_on_commit=False) as session:
        out: dict[str, list[FaceRow]] = {}
        for photo in session.scalars(select(Photo)):
            out[Path(photo.path).name] = list(photo.faces)
        return out


def test_astronaut_has_one_face_at_the_right_place() -> None:
    detector = make_detector()
    faces = detector.detect(skimage_photo("astronaut"))  # type: ignore[attr-defined]
    assert len(faces) == 1
    assert iou(faces[0].box, ASTRONAUT_FACE) > 0.8
    assert faces[0].score > 0.8


def test_exif_rotated_copy_gives_the_same_face(tmp_path: Path) -> None:
    path = save_jpeg(tmp_path / "s.jpg", stored_sideways(skimage_photo("astronaut")), orientation=6)
    faces = make_detector().detect(read_array(path))  # type: ignore[attr-defined]
    assert len(faces) == 1 and iou(faces[0].box, ASTRONAUT_FACE) > 0.75


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_cat_and_coffee_have_no_face(name: str) -> None:
    assert make_detector().detect(skimage_photo(name)) == []  # type: ignore[attr-defined]


def test_small_faces_are_found_on_tiles() -> None:
    """Four astronauts shrunk into a large canvas: too small for one 192 px pass."""
    face = np.asarray(Image.fromarray(skimage_photo("astronaut")).resize((160, 160)))
    canvas = np.full((1000, 1400, 3), 90, np.uint8)
    spots = [(50, 60), (1100, 80), (300, 700), (1000, 760)]
    for x, y in spots:
        canvas[y : y + 160, x : x + 160] = face
    whole = make_detector("blazeface-whole").detect(canvas)  # type: ignore[attr-defined]
    tiled = make_detector("blazeface").detect(canvas)  # type: ignore[attr-defined]
    assert len(tiled) == 4
    assert len(whole) < len(tiled)


def close_up(canvas_share: float) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The astronaut's face cut at its box (brow to chin) on a grey canvas ``canvas_share``
    times its side, as tight portrait crops come (JAFFE's, passport photos); 330 px."""
    x, y, w, h = (int(v) for v in ASTRONAUT_FACE)
    face = skimage_photo("astronaut")[y : y + h, x : x + w]
    side = int(w * canvas_share)
    canvas = np.full((side, side, 3), 128, np.uint8)
    at = (side - w) // 2
    canvas[at : at + h, at : at + w] = face
    scale = 330 / side
    return np.asarray(Image.fromarray(canvas).resize((330, 330))), (
        at * scale,
        at * scale,
        w * scale,
        h * scale,
    )


@pytest.mark.parametrize("canvas_share", [1.0, 1.5])
def test_a_face_filling_the_frame_is_found_as_a_close_up(canvas_share: float) -> None:
    image, where = close_up(canvas_share)
    assert BlazeFace(close_ups=False).detect(image) == [], "the full-range model misses it"
    faces = make_detector().detect(image)  # type: ignore[attr-defined]
    assert len(faces) == 1
    assert iou(faces[0].box, where) > 0.5
    assert crop_frame(faces[0]) is not None, "with landmarks, so it is framed like FER faces"


def test_a_close_up_both_models_find_is_one_face_with_the_full_range_box() -> None:
    image, _ = close_up(2.0)
    full = BlazeFace(close_ups=False).detect(image)
    assert len(full) == 1
    assert make_detector().detect(image) == full  # type: ignore[attr-defined]


def test_short_range_faces_smaller_than_a_close_up_are_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On real photos the short-range model takes chests for faces at a quarter of the
    side: only faces spanning CLOSE_UP_SHARE of it count. The astronaut's face spans a
    fifth; with the full-range model silenced, the short-range one alone still sees it."""
    image = skimage_photo("astronaut")
    detector = BlazeFace()
    monkeypatch.setattr(detector._full, "run", lambda window, min_score: [])
    assert detector._close is not None and detector._close.run(image, 0.6)
    assert detector.detect(image) == []
    monkeypatch.setattr(faces_module, "CLOSE_UP_SHARE", 0.15)
    (face,) = detector.detect(image)
    assert iou(face.box, ASTRONAUT_FACE) > 0.6


def test_scan_stores_faces_crops_and_probabilities(sample: Path, db_url: str) -> None:
    model = BrightnessModel()
    report = scan(db_url, sample, model)
    assert (report.faces, report.classified) == (3, 3)
    assert model.calls == [3], "one predict for the faces of all photos"
    found = faces_by_photo(db_url)
    assert {k: len(v) for k, v in found.items() if v} == {
        "astronaut.jpg": 1,
        "astronaut-sideways.jpg": 1,
        "cameraman.png": 1,
    }
    face = found["astronaut.jpg"][0]
    assert iou((face.x, face.y, face.w, face.h), ASTRONAUT_FACE) > 0.8
    sideways = found["astronaut-sideways.jpg"][0]
    assert iou((sideways.x, sideways.y, sideways.w, sideways.h), ASTRONAUT_FACE) > 0.75
    crop = decode_crop(face.crop)
    assert crop.shape == (96, 96) and crop.dtype == np.uint8
    assert face.model_id == "test-model-1"
    assert face.p_happy == pytest.approx(crop.mean() / 255, abs=1e-5)
    assert sum(face.probabilities) == pytest.approx(1.0, abs=1e-5)
    assert face.sharpness > 0
    with Session(open_engine(db_url)) as session:
        states = dict(session.execute(select(Photo.path, Photo.faces_state)).all())
        assert set(states.values()) == {"done"}  # photos without faces are done too


def test_scanned_faces_have_landmarks_on_their_crops_eyes_and_mouth(
    sample: Path, db_url: str
) -> None:
    """The mesh runs on the photo; its landmarks, moved into the crop's frame, lie where the
    crop has its eyes and mouth: where the framing puts them, and where the mesh finds them
    when it looks at the stored crop itself."""
    scan(db_url, sample, BrightnessModel())
    mesh = FaceMesh()
    for name, faces in faces_by_photo(db_url).items():
        for row in faces:
            assert row.landmarks is not None and row.mesh_presence > 5, name
            stored = Mesh(unpack_landmarks(row.landmarks), row.mesh_presence)
            (rx, ry), (lx, ly) = stored.part_centre("right eye"), stored.part_centre("left eye")
            mx, my = stored.part_centre("mouth")
            assert rx < mx < lx and abs(ry - ly) < 0.05 * CROP_SIZE, name  # levelled eyes
            eyes = np.array([(rx + lx) / 2, (ry + ly) / 2])
            assert 0.25 * CROP_SIZE < my - eyes[1] < 0.5 * CROP_SIZE, name
            if name.startswith("astronaut"):  # frontal: the eyes sit where the framing puts them
                assert np.allclose(eyes, np.array(FER_EYES) * CROP_SIZE, atol=0.03 * CROP_SIZE)
            seen = mesh.run_on_crop(decode_crop(row.crop))
            for part in ("right eye", "left eye", "nose", "mouth"):
                assert np.allclose(
                    stored.part_centre(part), seen.part_centre(part), atol=0.05 * CROP_SIZE
                ), (name, part)


def test_crop_transform_puts_the_landmarks_where_the_crop_shows_them() -> None:
    """The eyes' midpoint lands where the framing places it; a box crop (no keypoints) is a
    plain scale and shift."""
    photo = Image.fromarray(skimage_photo("astronaut"))
    (face,) = make_detector().detect(np.asarray(photo))  # type: ignore[attr-defined]
    moved = to_crop(
        np.array([[*face.keypoints[0], 0.0], [*face.keypoints[1], 0.0]]),
        crop_transform(face, photo.width, photo.height),
    )
    assert np.allclose(moved[:, :2].mean(axis=0), np.array(FER_EYES) * CROP_SIZE, atol=0.01)
    assert abs(moved[0, 1] - moved[1, 1]) < 1e-6  # levelled
    box = Face(100.0, 50.0, 64.0, 64.0, 0.9)
    plain = crop_transform(box, 512, 512)
    corner = to_crop(np.array([[84.0, 34.0, 10.0]]), plain)  # the box + 25% margin's corner
    assert np.allclose(corner, [[0.0, 0.0, 10.0]])


class FixedDetector:
    """A detector that reports one given box: lets a test put a "face" on anything."""

    def __init__(self, face: Face) -> None:
        self.face = face

    def detect(self, image: np.ndarray) -> list[Face]:
        return [self.face]


def test_a_detection_the_mesh_does_not_see_as_a_face_is_dropped(tmp_path: Path) -> None:
    path = save_jpeg(tmp_path / "coffee.jpg", skimage_photo("coffee"))
    cup = FixedDetector(Face(150.0, 100.0, 220.0, 220.0, 0.9))
    size = Image.open(path).size
    mesh = FaceMesh()
    assert len(find_faces(str(path), size, detector=cup).faces) == 1  # no mesh: kept
    dropped = find_faces(str(path), size, detector=cup, mesh=mesh)
    assert (dropped.faces, dropped.rejected) == ([], 1)
    person = save_jpeg(tmp_path / "astronaut.jpg", skimage_photo("astronaut"))
    kept = find_faces(str(person), (512, 512), detector=make_detector(), mesh=mesh)
    assert len(kept.faces) == 1 and kept.faces[0].presence > 10
    strict = find_faces(
        str(person),
        (512, 512),
        detector=make_detector(),
        mesh=mesh,
        min_presence=kept.faces[0].presence + 1,
    )
    assert (strict.faces, strict.rejected) == ([], 1)


def test_faces_found_before_the_mesh_get_landmarks_on_the_next_scan(
    sample: Path, db_url: str
) -> None:
    scan(db_url, sample, BrightnessModel())
    older = "blazeface:0.6:24:fer-eyes-1:close-ups-1"  # the key before the mesh
    with Session(open_engine(db_url)) as session:
        session.execute(update(Photo).values(detector=older))
        session.execute(update(FaceRow).values(landmarks=None, mesh_presence=None))
        session.commit()
    report = scan(db_url, sample, BrightnessModel())
    assert report.faces == 3
    rows = [f for faces in faces_by_photo(db_url).values() for f in faces]
    assert len(rows) == 3 and all(f.landmarks is not None for f in rows)
    with Session(open_engine(db_url)) as session:
        assert set(session.scalars(select(Photo.detector))) == {FaceSettings().key}
    assert FaceSettings(min_presence=4).key != FaceSettings().key  # another threshold: again


def test_scan_min_presence_drops_faces_and_must_be_a_number(
    runner: CliRunner, sample: Path, db_url: str
) -> None:
    for bad in ("nan", "inf", "high"):
        result = runner.invoke(cli, ["scan", str(sample), "--min-presence", bad, "--db", db_url])
        assert result.exit_code == 2 and "--min-presence" in result.output, bad
    args = ["scan", str(sample), "--db", db_url, "--json", "--min-presence", "1000"]
    strict = runner.invoke(cli, args)
    assert strict.exit_code == 0 and json.loads(strict.stdout)["faces"] == 0


def test_crop_of_a_small_face_comes_from_a_larger_decode(tmp_path: Path, db_url: str) -> None:
    """A 12 MP frame where the face is small at working size: the crop must stay sharp."""
    big = np.full((3000, 4000, 3), 120, np.uint8)
    big[1000:2000, 1500:2500] = np.asarray(
        Image.fromarray(skimage_photo("astronaut")).resize((1000, 1000))
    )
    album = tmp_path / "big"
    save_jpeg(album / "big.jpg", big, quality=95)
    scan(db_url, album, BrightnessModel())
    (row,) = faces_by_photo(db_url)["big.jpg"]
    expected = (
        1500 + ASTRONAUT_FACE[0] * 1000 / 512,
        1000 + ASTRONAUT_FACE[1] * 1000 / 512,
        209,
        209,
    )
    assert iou((row.x, row.y, row.w, row.h), expected) > 0.7
    working = read_image(album / "big.jpg", max_side=WORKING_SIDE)
    (face_at_working,) = make_detector().detect(np.asarray(working))
    assert max(face_at_working.w, face_at_working.h) < 96  # small at working size
    soft = sharpness(crop_face(working, face_at_working))  # the same framing, cut small
    assert row.sharpness > 1.5 * soft
    assert decode_crop(row.crop).shape == (96, 96)
    # One decode, at twice the working size, served the detector and this crop.
    decodes: list[int | None] = []
    real = faces_module.read_image

    def counted(path: str, **kwargs: object) -> object:
        decodes.append(kwargs.get("max_side"))  # type: ignore[arg-type]
        return real(path, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(faces_module, "read_image", counted)
        found = faces_module.find_faces_with(str(album / "big.jpg"), (4000, 3000), FaceSettings())
    assert decodes == [2 * WORKING_SIDE]
    (face,) = found.faces
    assert face.sharpness == pytest.approx(row.sharpness) and face.box == (
        row.x,
        row.y,
        row.w,
        row.h,
    )


def test_worker_processes_give_the_same_faces(sample: Path, tmp_path: Path) -> None:
    inline, pooled = f"sqlite:///{tmp_path / 'one.db'}", f"sqlite:///{tmp_path / 'two.db'}"
    scan(inline, sample, BrightnessModel(), workers=1)
    model = BrightnessModel()
    report = scan(pooled, sample, model, workers=2)
    assert report.faces == 3 and model.calls == [3]

    def boxes(url: str) -> dict[str, list[tuple[float, ...]]]:
        return {
            n: [(f.x, f.y, f.w, f.h, f.p_happy, f.landmarks, f.mesh_presence) for f in fs]
            for n, fs in faces_by_photo(url).items()
        }

    assert boxes(inline) == boxes(pooled)


def test_rescan_does_not_detect_again(
    sample: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    scan(db_url, sample, BrightnessModel())
    calls: list[str] = []
    real = indexing.find_faces_with
    monkeypatch.setattr(
        indexing, "find_faces_with", lambda p, *a, **k: calls.append(p) or real(p, *a, **k)
    )
    model = BrightnessModel()
    report = scan(db_url, sample, model)
    assert calls == [] and model.calls == []
    assert report.unchanged == 7


def test_moved_photo_keeps_faces_without_detection(
    sample: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    scan(db_url, sample, BrightnessModel())
    before = faces_by_photo(db_url)["astronaut.jpg"][0]
    shutil.move(sample / "people" / "astronaut.jpg", sample / "pets" / "eileen.jpg")
    calls: list[str] = []
    monkeypatch.setattr(indexing, "find_faces_with", lambda p, *a, **k: calls.append(p))
    report = scan(db_url, sample, BrightnessModel())
    assert report.moved == 1 and calls == []
    after = faces_by_photo(db_url)["eileen.jpg"][0]
    assert (after.id, after.crop, after.p_happy) == (before.id, before.crop, before.p_happy)


def test_changed_photo_is_detected_again(sample: Path, db_url: str) -> None:
    scan(db_url, sample, BrightnessModel())
    save_jpeg(sample / "pets" / "chelsea.jpg", skimage_photo("astronaut")[:, ::-1])
    report = scan(db_url, sample, BrightnessModel())
    assert (report.changed, report.faces) == (1, 1)
    assert len(faces_by_photo(db_url)["chelsea.jpg"]) == 1


def test_new_model_reclassifies_without_detection(
    sample: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    scan(db_url, sample, BrightnessModel("model-a"))
    ids = {f.id for faces in faces_by_photo(db_url).values() for f in faces}
    calls: list[str] = []
    monkeypatch.setattr(indexing, "find_faces_with", lambda p, *a, **k: calls.append(p))
    model_b = BrightnessModel("model-b")
    report = scan(db_url, sample, model_b)
    assert calls == [] and report.classified == 3 and model_b.calls == [3]
    faces = [f for faces in faces_by_photo(db_url).values() for f in faces]
    assert {f.id for f in faces} == ids and {f.model_id for f in faces} == {"model-b"}
    again = BrightnessModel("model-b")
    assert scan(db_url, sample, again).classified == 0 and again.calls == []
    forced = BrightnessModel("model-b")
    assert scan(db_url, sample, forced, reclassify=True).classified == 3


def test_failed_classification_is_recorded_and_scan_goes_on(sample: Path, db_url: str) -> None:
    report = scan(db_url, sample, BrightnessModel(fail=True))
    assert report.faces == 3 and report.classified == 0
    face = faces_by_photo(db_url)["astronaut.jpg"][0]
    assert face.classify_error == "classification failed: model exploded"
    assert face.p_happy is None


def test_min_face_rejects_and_records_done(sample: Path, db_url: str) -> None:
    report = scan(db_url, sample, BrightnessModel(), min_face=2000)
    assert report.faces == 0
    with Session(open_engine(db_url)) as session:
        assert set(session.scalars(select(Photo.faces_state))) == {"done"}
    assert scan(db_url, sample, BrightnessModel(), min_face=2000).faces == 0
    assert scan(db_url, sample, BrightnessModel()).faces > 0  # other settings: searched again


def test_top_ranks_dedupes_and_filters(sample: Path, db_url: str) -> None:
    scan(db_url, sample, BrightnessModel())
    engine = open_engine(db_url)
    ranked = top_photos(engine, "happy", 10)
    # astronaut.jpg and its sideways copy are the same picture: one of them is kept.
    names = [Path(r.path).name for r in ranked]
    assert len(names) == 2 and "cameraman.png" in names
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    everything = top_photos(engine, "happy", 10, keep_duplicates=True)
    assert len(everything) == 3
    by_name = {Path(r.path).name: r for r in everything}
    assert by_name["cameraman.png"].score == pytest.approx(
        by_name["cameraman.png"].faces[0].probabilities["happy"]
    )
    people = top_photos(
        engine, "sad", 10, under=str(sample / "people"), keep_duplicates=True, min_probability=0
    )
    assert people and all("/people/" in r.path for r in people)
    scores = [r.score for r in top_photos(engine, "happy", 10, keep_duplicates=True)]
    cut = (scores[0] + scores[-1]) / 2
    likely = top_photos(engine, "happy", 10, keep_duplicates=True, min_probability=cut)
    assert [r.score for r in likely] == [s for s in scores if s >= cut]
    assert 0 < len(likely) < len(scores)
    assert top_photos(engine, "happy", 10, min_face=100, keep_duplicates=True) == [
        r for r in everything if r.faces[0].box[2] >= 100
    ]
    assert len(top_photos(engine, "happy", 1)) == 1


def test_top_every_face_ranks_by_the_weakest(tmp_path: Path, db_url: str) -> None:
    album = tmp_path / "group"
    astro = skimage_photo("astronaut")
    pair = np.concatenate(
        [astro, np.clip(astro.astype(int) * 0.4, 0, 255).astype(np.uint8)], axis=1
    )
    save_jpeg(album / "pair.jpg", pair)
    save_jpeg(album / "single.jpg", astro[:, :, :] // 2 + 60)
    scan(db_url, album, BrightnessModel())
    engine = open_engine(db_url)
    best = top_photos(engine, "happy", 2, min_probability=0)
    weakest = top_photos(engine, "happy", 2, every_face=True, min_probability=0)
    pair_best = next(r for r in best if r.path.endswith("pair.jpg"))
    pair_weak = next(r for r in weakest if r.path.endswith("pair.jpg"))
    happy = sorted(f.probabilities["happy"] for f in pair_best.faces)
    assert len(happy) == 2
    assert pair_best.score == pytest.approx(happy[1]) and pair_weak.score == pytest.approx(happy[0])


def test_missing_photos_are_left_out_of_top(sample: Path, db_url: str) -> None:
    scan(db_url, sample, BrightnessModel())
    (sample / "people" / "cameraman.png").unlink()
    scan(db_url, sample, BrightnessModel())
    names = [Path(r.path).name for r in top_photos(open_engine(db_url), "happy", 10)]
    assert "cameraman.png" not in names and names


def test_top_and_show_cli(
    runner: CliRunner, sample: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    scan(db_url, sample, BrightnessModel())
    result = runner.invoke(cli, ["top", "happy", "-n", "5", "--db", db_url, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data[0]) == {"path", "score", "date", "date_from", "faces"}
    assert set(data[0]["faces"][0]) == {"box", "emotion", "probabilities"}
    assert set(data[0]["faces"][0]["probabilities"]) == set(EMOTIONS)
    table = runner.invoke(cli, ["top", "HAPPY", "--db", db_url])
    assert table.exit_code == 0 and "cameraman.png" in table.output
    # astronaut.jpg and its sideways copy are one shot: one is listed, the other counted.
    assert table.output.endswith("(1 near-identical shot hidden; --keep-duplicates lists it)\n")
    every = runner.invoke(cli, ["top", "happy", "--keep-duplicates", "--db", db_url])
    # A header, three photos and the note on the PNG, which is dated by its file's time.
    assert "hidden" not in every.output and every.output.count("\n") == 5
    # The stand-in model gives every face a sad probability under 0.1.
    unlikely = runner.invoke(cli, ["top", "sad", "--db", db_url])
    assert unlikely.exit_code == 0
    assert unlikely.output == (
        "No photo shows sad with a probability of 25% or more (--min-probability).\n"
    )
    assert runner.invoke(cli, ["top", "sad", "--db", db_url, "--min-probability", "0"]).output
    assert json.loads(runner.invoke(cli, ["top", "sad", "--db", db_url, "--json"]).stdout) == []
    show = runner.invoke(cli, ["show", str(sample / "people" / "astronaut.jpg"), "--db", db_url])
    assert show.exit_code == 0 and "(ok, 1 face)" in show.output and "surprise" in show.output
    shown = json.loads(
        runner.invoke(
            cli, ["show", str(sample / "pets" / "chelsea.jpg"), "--db", db_url, "--json"]
        ).stdout
    )
    assert shown["faces"] == [] and shown["faces_state"] == "done"
    clean = runner.invoke(cli, ["status", "--errors", "--db", db_url])
    assert clean.exit_code == 0 and clean.output.endswith("\nNo unreadable files.\n")


def test_top_bad_input(runner: CliRunner, tmp_path: Path, db_url: str, sample: Path) -> None:
    bad = runner.invoke(cli, ["top", "joyful", "--db", db_url])
    assert bad.exit_code == 2 and "Invalid value for 'EMOTION'" in bad.output
    assert all(e in bad.output for e in EMOTIONS)
    assert runner.invoke(cli, ["top", "happy", "-n", "0", "--db", db_url]).exit_code == 2
    open_engine(db_url)
    empty = runner.invoke(cli, ["top", "happy", "--db", db_url])
    assert empty.exit_code == 1 and "library is empty" in empty.output
    scan_library(open_engine(db_url), [str(sample)])  # files only, no faces yet
    unscanned = runner.invoke(cli, ["top", "happy", "--db", db_url])
    assert unscanned.exit_code == 1 and "no classified faces" in unscanned.output
    with pytest.raises(RankingError, match="unknown emotion"):
        top_photos(open_engine(db_url), "joy")
    nowhere = runner.invoke(cli, ["show", str(tmp_path / "nope.jpg"), "--db", db_url])
    assert nowhere.exit_code == 1 and "not in the library" in nowhere.output


def test_relocate_keeps_faces_scores_and_explanations(
    runner: CliRunner, sample: Path, db_url: str, tmp_path: Path
) -> None:
    from photosort.reporting import build_report

    scan(db_url, sample, BrightnessModel())
    build_report(open_engine(db_url), tmp_path / "report", BrightnessModel(), n=1, samples=60)
    before = {name: [f.id for f in faces] for name, faces in faces_by_photo(db_url).items()}
    new_home = tmp_path / "new-disk" / "album"
    new_home.parent.mkdir()
    sample.rename(new_home)

    dry = runner.invoke(
        cli, ["relocate", str(sample), str(new_home), "--db", db_url, "--dry-run", "--json"]
    )
    assert dry.exit_code == 0, dry.output
    moves = json.loads(dry.stdout)["moves"]
    assert len(moves) == 7 and all(m["to"].startswith(str(new_home)) for m in moves)
    with Session(open_engine(db_url)) as session:
        assert all(p.startswith(str(sample)) for p in session.scalars(select(Photo.path)))

    typo = runner.invoke(cli, ["relocate", str(sample) + "x", str(new_home), "--db", db_url])
    assert typo.exit_code == 1 and f"no photo in the library is under {sample}x" in typo.output
    wrong = runner.invoke(
        cli, ["relocate", str(sample), str(tmp_path), "--db", db_url, "--dry-run"]
    )
    assert wrong.exit_code == 0 and "Would relocate 7 photos." in wrong.stdout
    assert "warning: 7 of 7 photos not found at the new path" in wrong.stderr
    done = runner.invoke(cli, ["relocate", str(sample), str(new_home), "--db", db_url])
    assert done.exit_code == 0 and "Relocated 7 photos." in done.output and not done.stderr
    model = BrightnessModel()
    report = scan(db_url, new_home, model)
    assert (report.unchanged, report.new, report.missing, report.faces) == (7, 0, 0, 0)
    assert model.calls == []
    assert {n: [f.id for f in fs] for n, fs in faces_by_photo(db_url).items()} == before
    from photosort.store import ExplanationRow

    with Session(open_engine(db_url)) as session:
        assert session.scalars(select(ExplanationRow)).first() is not None


def test_top_happy_puts_the_astronaut_first_with_the_shipped_model(
    runner: CliRunner, sample: Path, db_url: str
) -> None:
    """The real pipeline: shipped CNN, worker processes, the CLI."""
    scanned = runner.invoke(cli, ["scan", str(sample), "--db", db_url, "--json"])
    assert scanned.exit_code == 0, scanned.output
    assert json.loads(scanned.stdout)["faces"] == 3
    top = json.loads(runner.invoke(cli, ["top", "happy", "--db", db_url, "--json"]).stdout)
    assert Path(top[0]["path"]).name.startswith("astronaut")
    assert top[0]["faces"][0]["emotion"] == "happy"
    assert sum(top[0]["faces"][0]["probabilities"].values()) == pytest.approx(1, abs=1e-3)


def test_rescan_with_nothing_new_does_not_start_tensorflow(sample: Path, db_url: str) -> None:
    code = (
        "import sys\n"
        "from photosort.indexing import FaceOptions, LazyClassifier, scan_library\n"
        "from photosort.store import open_engine\n"
        "engine = open_engine(sys.argv[1])\n"
        "report = scan_library(engine, [sys.argv[2]], faces=FaceOptions(LazyClassifier()))\n"
        "print(report.faces, report.classified, 'tensorflow' in sys.modules)\n"
    )
    first = subprocess.run(
        [sys.executable, "-c", code, db_url, str(sample)], capture_output=True, text=True
    )
    assert first.stdout.split() == ["3", "3", "False"], first.stderr  # LiteRT, not TensorFlow
    again = subprocess.run(
        [sys.executable, "-c", code, db_url, str(sample)], capture_output=True, text=True
    )
    assert again.stdout.split() == ["0", "0", "False"], again.stderr


def test_faces_are_numbered_left_to_right_whatever_order_the_detector_gives(
    tmp_path: Path,
) -> None:
    from photosort.sample import LFW_GROUPS, lfw_face

    row = np.concatenate([lfw_face(i) for i in LFW_GROUPS["team"]], axis=1)
    path = save_jpeg(tmp_path / "team.jpg", row)
    real = make_detector()

    class RightToLeft:
        def detect(self, image: np.ndarray) -> list[Face]:
            found = real.detect(image)  # type: ignore[attr-defined]
            return sorted(found, key=lambda face: -face.x)

    found = find_faces(str(path), (row.shape[1], row.shape[0]), detector=RightToLeft()).faces
    assert len(found) == 3
    lefts = [face.box[0] for face in found]
    assert lefts == sorted(lefts), lefts
