"""The LiteRT export: same predictions as Keras, calibration fitted on it, no TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from photosort import emotions, exporting, training
from photosort.cli import cli
from photosort.emotions import EMOTIONS, load_model
from tests.test_training import write_fer_csv


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small network fitted for one epoch on drawn faces, and its data."""
    folder = tmp_path_factory.mktemp("export")
    data = write_fer_csv(folder / "fer2013.csv")
    out = folder / "emotion.keras"
    training.train(data, out, config=training.TrainConfig(epochs=1, batch_size=8, seed=3))
    return out, data


def faces(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48), dtype=np.uint8)


def test_float_litert_gives_the_keras_logits(trained: tuple[Path, Path]) -> None:
    model_path, data = trained
    keras = load_model(model_path)
    flatbuffer = exporting.convert_litert(keras.keras_model, "float", np.zeros((1, 48, 48, 1)))
    lite_path = model_path.parent / "float.tflite"
    lite_path.write_bytes(flatbuffer)
    lite = load_model(lite_path)
    assert lite.backend == "litert" and keras.backend == "keras"
    batch = emotions.preprocess_faces(faces(40))
    np.testing.assert_allclose(lite.raw_logits(batch), keras.raw_logits(batch), atol=1e-4)


def test_export_writes_a_calibrated_int8_model(trained: tuple[Path, Path]) -> None:
    model_path, data = trained
    meta = exporting.export_model(model_path, data)
    lite_path = model_path.with_suffix(".tflite")
    assert meta["tta"] is True and len(meta["logit_offsets"]) == len(EMOTIONS)
    assert abs(sum(meta["logit_offsets"])) < 1e-3
    assert meta["litert"]["quantize"] == "int8"
    assert meta["litert"]["figures"]["validation"] == "PublicTest"
    assert json.loads(model_path.with_suffix(".json").read_text())["logit_offsets"]
    lite, keras = load_model(lite_path), load_model(model_path)
    assert lite.model_id == meta["litert"]["model_id"] != keras.model_id
    assert lite.offsets == keras.offsets and lite.tta and keras.tta
    # int8 changes logits a little, not the decisions on most faces.
    batch = faces(64, seed=1)
    agree = (lite.predict(batch).argmax(1) == keras.predict(batch).argmax(1)).mean()
    assert agree >= 0.85
    # Mirrored-face averaging: a face and its mirror image get the same probabilities.
    np.testing.assert_allclose(lite.predict(batch), lite.predict(batch[:, :, ::-1]), atol=1e-5)


def test_offsets_are_applied_to_the_logits(trained: tuple[Path, Path], tmp_path: Path) -> None:
    model_path, _ = trained
    copy = tmp_path / "m.keras"
    copy.write_bytes(model_path.read_bytes())
    meta = {"input_size": 48, "logit_offsets": [5.0, 0, 0, 0, 0, 0, 0]}
    copy.with_suffix(".json").write_text(json.dumps(meta))
    shifted, plain = load_model(copy), load_model(model_path)
    batch = emotions.preprocess_faces(faces(8))
    base = plain.network_logits(batch, tta=False)
    np.testing.assert_allclose(shifted.logits_from_input(batch)[:, 0], base[:, 0] + 5, atol=1e-4)
    assert shifted.model_id != emotions.compute_model_id(copy, 1.0, False)


def test_bad_offsets_in_metadata_are_one_line_errors(tmp_path: Path) -> None:
    model = tmp_path / "m.keras"
    model.write_bytes(b"x")
    model.with_suffix(".json").write_text(json.dumps({"logit_offsets": [1, 2]}))
    with pytest.raises(emotions.ModelError, match="logit_offsets must be 7 finite numbers"):
        emotions.read_metadata(model)


def test_fit_offsets_gives_a_swallowed_class_its_recall_back() -> None:
    """Logits that favour neutral: class-balanced offsets raise the minority's recall."""
    rng = np.random.default_rng(0)
    labels = rng.choice([0, 6], size=2000, p=[0.3, 0.7])
    logits = rng.normal(0, 1, (2000, 7))
    logits[:, 0] += np.where(labels == 0, 1.0, 0.0)
    logits[:, 6] += 1.5 + np.where(labels == 6, 1.0, 0.0)

    def recall(z: np.ndarray) -> float:
        return float(((z.argmax(1) == 0) & (labels == 0)).sum() / (labels == 0).sum())

    offsets = exporting.fit_offsets(logits, labels, power=1.0)
    assert recall(logits) < 0.3
    assert recall(logits + offsets) > 0.5
    assert offsets[0] > offsets[6]


def test_calibrate_moves_a_biased_class_back_then_undoes_overconfidence() -> None:
    """Logits three times too sharp and pushed towards neutral: the offsets pull neutral
    down, and the temperature fitted after them reads close to 3 (None: no offsets)."""
    rng = np.random.default_rng(1)
    true = rng.normal(0, 1.5, (4000, 7))
    p = np.exp(true) / np.exp(true).sum(1, keepdims=True)
    labels = np.array([rng.choice(7, p=row) for row in p])
    sharp = 3 * true
    offsets, temperature = exporting.calibrate(sharp, labels, None)
    assert offsets is None and 2.5 < temperature < 3.5
    biased = sharp.copy()
    biased[:, 6] += 4.0
    offsets, temperature = exporting.calibrate(biased, labels, 0.0)
    assert offsets is not None and offsets[6] < -2.0
    assert 2.5 < temperature < 3.5


def test_classifying_through_litert_never_imports_tensorflow() -> None:
    code = (
        "import sys, numpy as np\n"
        "from photosort.emotions import load_model\n"
        "m = load_model()\n"
        "p = m.predict(np.zeros((3, 96, 96), np.uint8))\n"
        "print(m.backend, p.shape, 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["litert", "(3,", "7)", "False"]


def test_export_command(trained: tuple[Path, Path], tmp_path: Path) -> None:
    model_path, data = trained
    copy = tmp_path / "c.keras"
    copy.write_bytes(model_path.read_bytes())
    result = CliRunner().invoke(
        cli, ["export", str(copy), str(data), "--quantize", "float", "--no-tta", "--no-offsets"]
    )
    assert result.exit_code == 0, result.output
    assert "saved" in result.output and copy.with_suffix(".tflite").exists()
    meta = json.loads(copy.with_suffix(".json").read_text())
    assert meta["tta"] is False and meta["logit_offsets"] is None
    wrong = CliRunner().invoke(cli, ["export", str(copy.with_suffix(".tflite")), str(data)])
    assert wrong.exit_code == 2 and "must end in .keras" in wrong.output


def test_a_broken_litert_file_is_a_one_line_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer")
    with pytest.raises(emotions.ModelError, match="not a loadable LiteRT model") as caught:
        load_model(broken)
    assert "\n" not in str(caught.value)
