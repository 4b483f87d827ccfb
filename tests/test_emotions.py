"""The predictor and the shared preprocessing, on a small untrained model (no shared data)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photosort import datasets, emotions, network, training
from photosort.emotions import EMOTIONS, ModelError, load_model, preprocess_faces


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "emotion.keras"
    training.save_model(
        network.build_model(widths=(8, 8, 8)), path, {"input_size": 48, "temperature": 1.7}
    )
    return path


@pytest.fixture(scope="module")
def model(model_path: Path) -> emotions.EmotionModel:
    return load_model(model_path)


def faces(n: int, seed: int = 0, size: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size), dtype=np.uint8)


def test_emotions_are_the_fer2013_classes_in_label_order() -> None:
    assert EMOTIONS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def test_predict_gives_calibrated_probability_rows(model: emotions.EmotionModel) -> None:
    probs = model.predict(faces(5))
    assert probs.shape == (5, 7) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert model.temperature == 1.7
    np.testing.assert_allclose(probs, emotions.softmax(model.logits(faces(5)), 1.7), atol=1e-6)


def test_predict_does_not_depend_on_batch_order_or_size(model: emotions.EmotionModel) -> None:
    batch = faces(9, seed=1)
    order = np.random.default_rng(2).permutation(9)
    whole = model.predict(batch)
    np.testing.assert_allclose(model.predict(batch[order]), whole[order], atol=1e-5)
    np.testing.assert_allclose(model.predict(batch, batch_size=4), whole, atol=1e-5)
    np.testing.assert_allclose(model.predict(batch[3:4]), whole[3:4], atol=1e-5)


def test_predict_takes_crops_of_any_size_rgb_or_grey(model: emotions.EmotionModel) -> None:
    crops = [faces(1, size=48)[0], faces(1, size=120)[0], np.zeros((30, 20, 3), np.uint8)]
    probs = model.predict(crops)
    assert probs.shape == (3, 7)
    np.testing.assert_allclose(probs[0], model.predict(crops[0][None])[0], atol=1e-6)
    assert model.predict([]).shape == (0, 7)


def test_preprocessing_resizes_and_standardises() -> None:
    x = preprocess_faces([faces(1, size=96)[0], np.full((10, 10), 200, np.uint8)])
    assert x.shape == (2, 48, 48, 1) and x.dtype == np.float32
    assert abs(float(x[0].mean())) < 1e-4 and abs(float(x[0].std()) - 1) < 1e-3
    assert not x[1].any()
    rgb = np.stack([faces(1)[0]] * 3, axis=-1)
    np.testing.assert_allclose(preprocess_faces(rgb[None]), preprocess_faces(faces(1)), atol=1e-4)


def test_training_and_inference_prepare_a_face_identically(
    model: emotions.EmotionModel, tmp_path: Path
) -> None:
    assert training.preprocess_faces is emotions.preprocess_faces
    face = faces(1, size=80)[0]
    folder = tmp_path / "train" / "happy"
    folder.mkdir(parents=True)
    Image.fromarray(face).save(folder / "face.png")
    data = datasets.load_data(tmp_path)
    np.testing.assert_array_equal(preprocess_faces(data.faces), preprocess_faces([face]))
    x = preprocess_faces(data.faces)
    np.testing.assert_allclose(model.logits_from_input(x), model.logits([face]), atol=1e-6)


def test_model_id_is_stable_and_tracks_the_weights_and_temperature(model_path: Path) -> None:
    first, again = load_model(model_path), load_model(model_path)
    assert first.model_id == again.model_id and len(first.model_id) == 16
    other = model_path.parent / "other.keras"
    training.save_model(first.keras_model, other, {"temperature": 2.0})
    assert load_model(other).model_id != first.model_id


def test_load_model_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(emotions, "DEFAULT_MODEL", tmp_path / "emotion.keras")
    with pytest.raises(ModelError, match="no shipped emotion model"):
        load_model()
    with pytest.raises(ModelError, match="missing.keras: model file not found"):
        load_model(tmp_path / "missing.keras")
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"PK\x03\x04 truncated")
    broken.with_suffix(".json").write_text("{not json")
    with pytest.raises(ModelError, match="broken.json: unreadable model metadata"):
        load_model(broken)


def test_the_models_a_scan_runs_are_under_10_mb_together() -> None:
    """The size bar: the emotion network as it runs, both detectors and the face mesh."""
    from photosort.faces import CLOSE_UP_MODEL, blazeface_weights
    from photosort.landmarks import MESH_FILE
    from photosort.native import packaged_model

    files = [
        emotions.DEFAULT_MODEL,
        blazeface_weights(),
        blazeface_weights(CLOSE_UP_MODEL[0]),
        packaged_model(MESH_FILE),
    ]
    assert len(set(files)) == 4
    assert sum(f.stat().st_size for f in files) < 10_000_000


def test_importing_the_api_does_not_import_tensorflow() -> None:
    code = "import sys, photosort.emotions; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_one_image_where_a_batch_belongs_is_an_error(model: emotions.EmotionModel) -> None:
    for single in (faces(1)[0], np.zeros((48, 48, 3), np.uint8)):
        with pytest.raises(ValueError, match=r"got one image of shape .*pass \[crop\]"):
            model.predict(single)
    assert model.predict([np.zeros((48, 48, 3), np.uint8)]).shape == (1, 7)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ('{"temperature": -1}', "temperature must be positive"),
        ('{"temperature": 0}', "temperature must be positive"),
        ('{"temperature": "warm"}', "temperature must be a number"),
        ('{"input_size": 0}', "input_size must be a positive integer"),
    ],
)
def test_bad_metadata_is_a_model_error(
    model_path: Path, tmp_path: Path, metadata: str, message: str
) -> None:
    copy = tmp_path / "copy.keras"
    copy.write_bytes(model_path.read_bytes())
    copy.with_suffix(".json").write_text(metadata)
    with pytest.raises(ModelError, match=f"copy.json: {message}"):
        emotions.model_id_of(copy)


def test_a_litert_model_of_another_input_size_names_its_shape_in_plain_numbers(
    tmp_path: Path,
) -> None:
    copy = tmp_path / "copy.tflite"
    copy.write_bytes(emotions.resolve_model_path(None).read_bytes())
    size = emotions.load_model(copy).input_size
    copy.with_suffix(".json").write_text('{"input_size": 7}')
    with pytest.raises(ModelError) as caught:
        emotions.load_model(copy)
    assert f"got (None, {size}, {size}, 1) -> (None, 7)" in str(caught.value)
    assert "np." not in str(caught.value)
