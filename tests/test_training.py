"""Training and evaluation on tiny generated faces (a smile, a frown): no shared data needed."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from skimage.draw import disk, ellipse

from photosort import datasets, evaluating, metrics, network, plotting, training
from photosort.cli import cli
from photosort.datasets import DataError
from photosort.emotions import EMOTIONS, ModelError, load_model, preprocess_faces, softmax
from photosort.training import TrainConfig, TrainingError

HAPPY, SAD = EMOTIONS.index("happy"), EMOTIONS.index("sad")


def draw_face(label: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A cartoon face whose mouth curves up (happy) or down (sad), with noise and jitter."""
    img = np.full((size, size), 40.0)
    centre = size / 2 + rng.uniform(-2, 2, 2)
    rr, cc = ellipse(*centre, size * 0.45, size * 0.36, shape=img.shape)
    img[rr, cc] = 170
    for side in (0.35, 0.65):
        rr, cc = disk((size * 0.38, size * side), size * 0.05, shape=img.shape)
        img[rr, cc] = 30
    xs = np.arange(int(size * 0.3), int(size * 0.7))
    bend = ((xs - size / 2) ** 2) / (size * 0.5)
    ys = size * 0.7 + (bend if label == HAPPY else -bend) - (3 if label == HAPPY else -3)
    for x, y in zip(xs, np.clip(ys.astype(int), 0, size - 2), strict=True):
        img[y : y + 2, x] = 20
    return np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)


def write_fer_csv(path: Path, per_class: tuple[int, int] = (16, 6), seed: int = 0) -> Path:
    """A FER-2013-layout CSV with Training and PublicTest rows of happy and sad faces."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["emotion", "pixels", "Usage"])
        for usage, n in zip(("Training", "PublicTest"), per_class, strict=True):
            for i in range(2 * n):
                label = (HAPPY, SAD)[i % 2]
                pixels = " ".join(map(str, draw_face(label, rng).ravel()))
                writer.writerow([label, pixels, usage])
    return path


def write_votes(data_csv: Path, path: Path) -> Path:
    """FER+ votes row-aligned with ``data_csv``: mostly agreeing, with some neutral votes."""
    with open(data_csv, newline="") as fh:
        labels = [int(row["emotion"]) for row in csv.DictReader(fh)]
    header = ["Usage", "Image name", "neutral", "happiness", "surprise", "sadness", "anger"]
    header += ["disgust", "fear", "contempt", "unknown", "NF"]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for i, label in enumerate(labels):
            votes = [2, 8 if label == HAPPY else 0, 0, 8 if label == SAD else 0, 0, 0, 0, 0, 0, 0]
            writer.writerow(["Training", f"fer{i:07d}.png", *votes])
    return path


def write_face_folder(root: Path, per_class: tuple[int, int] = (16, 6), size: int = 64) -> Path:
    """``train/<emotion>/*.png`` and ``test/<emotion>/*.jpg`` with faces of another size."""
    rng = np.random.default_rng(1)
    for split, n, ext in (("train", per_class[0], "png"), ("test", per_class[1], "jpg")):
        for label in (HAPPY, SAD):
            folder = root / split / EMOTIONS[label]
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(draw_face(label, rng, size)).save(folder / f"{i}.{ext}")
    return root


FAST = TrainConfig(epochs=1, batch_size=8, seed=3)


@pytest.fixture(scope="module")
def fer_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fer_csv(tmp_path_factory.mktemp("fer") / "fer2013.csv")


@pytest.fixture(scope="module")
def votes_csv(fer_csv: Path) -> Path:
    return write_votes(fer_csv, fer_csv.parent / "fer2013new.csv")


@pytest.fixture(scope="module")
def csv_model(fer_csv: Path, votes_csv: Path) -> Path:
    out = fer_csv.parent / "out" / "emotion.keras"
    training.train(fer_csv, out, votes=votes_csv, config=replace(FAST, labels="mix"))
    return out


def test_train_on_csv_with_votes_writes_model_metadata_and_logs(csv_model: Path) -> None:
    meta = json.loads(csv_model.with_suffix(".json").read_text())
    assert meta["input_size"] == 48 and meta["emotions"] == list(EMOTIONS)
    assert meta["training"]["labels"] == "mix" and meta["training"]["seed"] == 3
    assert meta["temperature"] > 0 and len(meta["history"]) == 1
    assert {"accuracy", "ferplus_accuracy", "ece"} <= set(meta["figures"])
    ckpt = training.checkpoint_dir(csv_model)
    assert (ckpt / "log.csv").read_text().startswith("epoch,loss,accuracy")
    assert json.loads((ckpt / "log.json").read_text())["epoch"] == 1
    model = load_model(csv_model)
    assert model.model_id == meta["model_id"]
    assert model.predict(np.zeros((3, 48, 48), np.uint8)).shape == (3, len(EMOTIONS))


def test_train_on_folder_via_cli(runner: CliRunner, tmp_path: Path) -> None:
    root = write_face_folder(tmp_path / "faces")
    out = tmp_path / "faces.keras"
    args = ["train", str(root), "--out", str(out), "--epochs", "1", "--batch-size", "8"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "epoch 1/1" in result.output and f"saved {out}" in result.output
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["figures"]["validation"] == "PublicTest" and meta["figures"]["n"] == 12
    assert load_model(out).predict([np.zeros((64, 64), np.uint8)]).shape == (1, 7)
    result = runner.invoke(cli, ["evaluate", str(root), "--model", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["per_class"]["sad"]["support"] == 6


def test_interrupted_training_resumes_from_its_checkpoint(fer_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "emotion.keras"
    config = TrainConfig(epochs=2, batch_size=16, seed=1)

    def crash(line: str) -> None:
        if line.startswith("epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(fer_csv, out, config=config, progress=crash)
    assert not out.exists() and not out.with_suffix(".json").exists()
    with pytest.raises(TrainingError, match="--epochs 2"):
        training.train(fer_csv, out, config=TrainConfig(epochs=3), resume=True)
    with pytest.raises(TrainingError, match="--augment full"):
        training.train(fer_csv, out, config=replace(config, augment="flip"), resume=True)
    with pytest.raises(TrainingError, match="--widths 32,64,128,256"):
        training.train(fer_csv, out, config=replace(config, widths=(8, 16)), resume=True)
    lines: list[str] = []
    meta = training.train(fer_csv, out, config=config, resume=True, progress=lines.append)
    assert [row["epoch"] for row in meta["history"]] == [1, 2]
    assert meta["history"][1]["lr"] < 1e-4  # the step count came back: the schedule ended
    assert any(line.startswith("epoch 2/2") for line in lines)
    assert not any(line.startswith("epoch 1/") for line in lines)


def _crashed_run(fer_csv: Path, out: Path, config: TrainConfig) -> Path:
    """Train ``config`` into ``out`` and stop it after its first epoch, as Ctrl-C would."""

    def crash(line: str) -> None:
        if line.startswith("epoch 1/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        training.train(fer_csv, out, config=config, progress=crash)
    return training.checkpoint_dir(out)


def test_resuming_checks_seed_data_and_step(fer_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "emotion.keras"
    config = TrainConfig(epochs=2, batch_size=16, seed=5)
    ckpt = _crashed_run(fer_csv, out, config)
    kept = sorted(p.name for p in ckpt.iterdir())
    # Forgetting --resume does not throw the unfinished run away.
    with pytest.raises(TrainingError, match=r"unfinished run \(epoch 1 of 2\).*--resume"):
        training.train(fer_csv, out, config=config)
    assert sorted(p.name for p in ckpt.iterdir()) == kept
    # The seed drives the shuffle, the augmentation and a held-out split: it must not change.
    with pytest.raises(TrainingError, match="--seed 5"):
        training.train(fer_csv, out, config=replace(config, seed=1), resume=True)
    other = write_fer_csv(tmp_path / "other.csv", per_class=(12, 6))
    with pytest.raises(TrainingError, match="trained on 32 faces .* this data gives 24"):
        training.train(other, out, config=config, resume=True)
    # A log that lags its checkpoint (a crash between the two writes) is caught.
    log = json.loads((ckpt / "log.json").read_text())
    (ckpt / "log.json").write_text(json.dumps({**log, "epoch": 0}))
    with pytest.raises(TrainingError, match="checkpoint is at step 2 but its log at step 0"):
        training.train(fer_csv, out, config=config, resume=True)


def test_an_early_stop_is_recorded_and_more_patience_carries_on(
    fer_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training, "selection_score", lambda scores: 0.5)  # never improves
    out = tmp_path / "emotion.keras"
    config = TrainConfig(epochs=3, batch_size=16, seed=1, patience=1)
    assert len(training.train(fer_csv, out, config=config)["history"]) == 2
    log = json.loads((training.checkpoint_dir(out) / "log.json").read_text())
    assert log["stopped_early"] is True
    # A finished run is not an unfinished one: training into the same --out may start over.
    assert len(training.train(fer_csv, out, config=config)["history"]) == 2
    meta = training.train(fer_csv, out, config=replace(config, patience=3), resume=True)
    assert [row["epoch"] for row in meta["history"]] == [1, 2, 3]


def test_a_run_can_start_from_an_earlier_model(
    fer_csv: Path, csv_model: Path, tmp_path: Path
) -> None:
    import keras

    start = keras.models.load_model(csv_model, compile=False).get_layer("logits").get_weights()
    config = replace(FAST, lr=1e-9, init=str(csv_model))
    meta = training.train(fer_csv, tmp_path / "next.keras", config=config)
    after = keras.models.load_model(tmp_path / "next.keras", compile=False)
    np.testing.assert_allclose(after.get_layer("logits").get_weights()[0], start[0], atol=1e-6)
    assert meta["training"]["init"]["model_id"] == load_model(csv_model).model_id
    assert meta["training"]["lr"] == 1e-9
    # The run's own checkpoint can be the start of the next run with the same --out.
    # A checkpoint has no metadata; the log beside it says which run made it.
    again = replace(config, init=str(tmp_path / "next.ckpt" / "best.keras"))
    init = training.train(fer_csv, tmp_path / "next.keras", config=again)["training"]["init"]
    assert init["model_id"] and init["model_id"] != meta["model_id"]
    assert init["command"] == meta["training"]["command"]
    assert init["seconds"] == meta["training"]["seconds"]
    assert (init["epochs_run"], init["best_epoch"]) == (1, meta["training"]["best_epoch"])


def test_teachers_reading_joins_the_targets_and_is_kept_on_resume(
    fer_csv: Path, csv_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x = preprocess_faces(datasets.load_data(fer_csv).faces)
    lone = training.teacher_targets((str(csv_model),), x)
    expected = softmax(load_model(csv_model).network_logits(x, tta=True))
    np.testing.assert_allclose(lone, expected, atol=1e-5)
    # Mirrored: a flipped face is read the same, so flip augmentation keeps its target.
    flipped = training.teacher_targets((str(csv_model),), np.ascontiguousarray(x[:, :, ::-1]))
    np.testing.assert_allclose(flipped, lone, atol=1e-5)
    assert np.abs(lone - softmax(load_model(csv_model).raw_logits(x))).max() > 1e-4

    seen: dict[str, np.ndarray] = {}
    real_batches = training._batches

    def keep_targets(keras: Any, arrays: tuple[np.ndarray, ...], *rest: Any) -> Any:
        seen.setdefault("targets", arrays[1])
        return real_batches(keras, arrays, *rest)

    monkeypatch.setattr(training, "_batches", keep_targets)
    out = tmp_path / "taught.keras"
    config = replace(FAST, teachers=(str(csv_model),), teacher_weight=0.75)
    meta = training.train(fer_csv, out, config=config)
    train_data, _, _ = training.validation_split(datasets.load_data(fer_csv), FAST.seed)
    onehot = np.eye(len(EMOTIONS))[train_data.labels]
    taught = training.teacher_targets((str(csv_model),), preprocess_faces(train_data.faces))
    np.testing.assert_allclose(seen["targets"], 0.25 * onehot + 0.75 * taught, atol=1e-5)
    teacher = meta["training"]["teachers"][0]
    assert teacher["model_id"] == load_model(csv_model).model_id
    assert meta["training"]["teacher_weight"] == 0.75
    # A resumed run keeps its teachers: a checkpoint taught by one is not finished without it.
    ckpt = _crashed_run(fer_csv, tmp_path / "again.keras", replace(config, epochs=2))
    with pytest.raises(TrainingError, match=f"--teacher {csv_model}, --teacher-weight 0.75"):
        training.train(
            fer_csv, ckpt.with_suffix(".keras"), config=replace(FAST, epochs=2), resume=True
        )
    assert (ckpt / "last.keras").exists()
    with pytest.raises(DataError, match="teacher weight 2 is not between 0 and 1"):
        training.train(fer_csv, out, config=replace(config, teacher_weight=2))


def test_the_last_epochs_can_be_averaged(fer_csv: Path, tmp_path: Path) -> None:
    import keras

    out = tmp_path / "swa.keras"
    config = replace(FAST, epochs=3, average=2)
    meta = training.train(fer_csv, out, config=config)
    ckpt = training.checkpoint_dir(out)
    assert sorted(p.name for p in ckpt.glob("epoch*.keras")) == ["epoch2.keras", "epoch3.keras"]
    averaged = meta["training"]["averaged"]
    assert averaged["epochs"] == [2, 3]
    snapshots = [ckpt / "epoch2.keras", ckpt / "epoch3.keras"]
    mean = np.mean(
        [keras.models.load_model(p).get_layer("logits").get_weights()[0] for p in snapshots], 0
    )
    best = keras.models.load_model(ckpt / "best.keras").get_layer("logits").get_weights()[0]
    saved = keras.models.load_model(out).get_layer("logits").get_weights()[0]
    np.testing.assert_allclose(saved, mean if averaged["kept"] else best, atol=1e-6)
    assert averaged["kept"] == (
        averaged["val_score"] > max(r["val_score"] for r in meta["history"])
    )


def test_starting_from_a_different_network_is_an_error(fer_csv: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.keras"
    network.build_model(widths=(8, 16, 32)).save(other)
    training.train(fer_csv, tmp_path / "m.keras", config=FAST)
    ckpt = training.checkpoint_dir(tmp_path / "m.keras")
    kept = sorted(p.name for p in ckpt.iterdir())
    with pytest.raises(TrainingError, match="other.keras: its network differs"):
        training.train(fer_csv, tmp_path / "m.keras", config=replace(FAST, init=str(other)))
    assert sorted(p.name for p in ckpt.iterdir()) == kept, "the refused run deleted nothing"
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(TrainingError, match="broken.keras: cannot load the model to start from"):
        training.train(fer_csv, tmp_path / "n.keras", config=replace(FAST, init=str(broken)))


def shapes_of(model: Any) -> list[tuple[int, ...]]:
    return [tuple(w.shape) for w in model.get_weights()]


def test_widening_keeps_what_the_network_computes() -> None:
    rng = np.random.default_rng(0)
    narrow, wide = network.build_model(widths=(8, 16, 24)), network.build_model(widths=(12, 16, 40))
    # Batch-norm statistics away from their defaults, so a wrong copy shows in the output.
    narrow.set_weights([w + rng.uniform(0.5, 1.5, w.shape) for w in narrow.get_weights()])
    weights = network.widen(narrow.get_weights(), shapes_of(wide), rng)
    assert weights is not None and [w.shape for w in weights] == shapes_of(wide)
    wide.set_weights(weights)
    x = rng.standard_normal((16, 48, 48, 1)).astype(np.float32)
    before, after = narrow.predict(x, verbose=0), wide.predict(x, verbose=0)
    assert np.abs(before - after).max() < 0.05 * np.abs(before).max()
    same = network.widen(narrow.get_weights(), shapes_of(narrow), rng)
    assert all(np.array_equal(a, b) for a, b in zip(same, narrow.get_weights(), strict=True))
    assert network.widen(wide.get_weights(), shapes_of(narrow), rng) is None, "narrower"
    deeper = network.build_model(widths=(12, 16, 40, 48))
    assert network.widen(narrow.get_weights(), shapes_of(deeper), rng) is None, "another stage"


def test_a_run_can_start_from_a_narrower_network(fer_csv: Path, tmp_path: Path) -> None:
    narrow = tmp_path / "narrow.keras"
    network.build_model(widths=(16, 32, 64, 128)).save(narrow)
    meta = training.train(fer_csv, tmp_path / "wide.keras", config=replace(FAST, init=str(narrow)))
    assert meta["training"]["init"]["widened"] is True
    assert load_model(tmp_path / "wide.keras").raw_logits(np.zeros((1, 48, 48, 1))).shape == (1, 7)
    wider = tmp_path / "wider.keras"
    network.build_model(widths=(64, 64, 128, 256)).save(wider)
    with pytest.raises(TrainingError, match="not a narrower one of the same stages"):
        training.train(fer_csv, tmp_path / "n.keras", config=replace(FAST, init=str(wider)))


def test_augmentation_modes() -> None:
    x = preprocess_faces(np.stack([draw_face(HAPPY, np.random.default_rng(i)) for i in range(64)]))

    def run(mode: str, seed: int = 5) -> np.ndarray:
        return network.augment(x.copy(), np.random.default_rng(seed), mode)

    plain, mirrored = x, x[:, :, ::-1]
    np.testing.assert_array_equal(run("none"), plain)
    flipped = run("flip")
    same = np.all(flipped == plain, axis=(1, 2, 3))
    mirror = np.all(flipped == mirrored, axis=(1, 2, 3))
    assert np.all(same | mirror) and same.any() and mirror.any()
    for mode in ("full", "photo"):
        out = run(mode)
        assert out.shape == x.shape and out.dtype == np.float32 and np.isfinite(out).all()
        unchanged = np.all(out == plain, axis=(1, 2, 3)) | np.all(out == mirrored, axis=(1, 2, 3))
        assert not unchanged.any(), mode
        np.testing.assert_array_equal(out, run(mode), err_msg="the seed fixes the augmentation")
        assert not np.array_equal(out, run(mode, seed=6))
    # A photo-style face is standardised again, as preprocessing leaves it.
    photo = run("photo")
    np.testing.assert_allclose(photo.mean(axis=(1, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(photo.std(axis=(1, 2, 3)), 1, atol=1e-3)
    # Turning, scaling and shifting keeps most of a face: it is not noise.
    full = run("full")
    kept = [np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in zip(full, plain, strict=True)]
    assert (
        np.median(
            np.maximum(
                kept,
                [
                    np.corrcoef(a.ravel(), b.ravel())[0, 1]
                    for a, b in zip(full, mirrored, strict=True)
                ],
            )
        )
        > 0.3
    )


def test_the_compact_strip_reads_as_the_csv(fer_csv: Path, tmp_path: Path) -> None:
    csv_data = datasets.load_data(fer_csv)
    strip = tmp_path / "fer_faces.png"
    Image.fromarray(np.concatenate(list(csv_data.faces))).save(strip)
    with open(tmp_path / "fer_labels.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["emotion", "Usage"])
        writer.writerows(zip(csv_data.labels, csv_data.usage, strict=True))
    data = datasets.load_data(strip)
    np.testing.assert_array_equal(data.faces, csv_data.faces)
    np.testing.assert_array_equal(data.labels, csv_data.labels)
    np.testing.assert_array_equal(data.usage, csv_data.usage)
    (tmp_path / "fer_labels.csv").write_text("emotion,Usage\n3,Training\n")
    with pytest.raises(DataError, match=r"fer_labels.csv: 1 labels for \d+ faces"):
        datasets.load_data(strip)
    (tmp_path / "fer_labels.csv").unlink()
    with pytest.raises(DataError, match="cannot read the labels of fer_faces.png"):
        datasets.load_data(strip)


def test_unknown_augmentation_is_an_error(fer_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown augmentation 'blur'"):
        training.train(fer_csv, tmp_path / "m.keras", config=replace(FAST, augment="blur"))


def test_resume_without_checkpoint_is_an_error(fer_csv: Path, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="no checkpoint"):
        training.train(fer_csv, tmp_path / "m.keras", config=FAST, resume=True)


def test_evaluate_json_report_and_plots(
    runner: CliRunner, csv_model: Path, fer_csv: Path, votes_csv: Path, tmp_path: Path
) -> None:
    args = ["evaluate", str(fer_csv), "--model", str(csv_model), "--votes", str(votes_csv)]
    result = runner.invoke(cli, [*args, "--json", "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {"accuracy", "per_class", "confusion_matrix", "ferplus_accuracy", "ece"} <= set(report)
    assert "ece_uncalibrated" in report and report["n"] == 12
    assert list(report["per_class"]) == list(EMOTIONS)
    assert set(report["per_class"]["happy"]) == {"precision", "recall", "support"}
    assert report["per_class"]["happy"]["support"] == 6
    assert np.asarray(report["confusion_matrix"]).shape == (7, 7)
    assert np.asarray(report["confusion_matrix"]).sum() == 12
    for name in ("confusion_matrix.png", "training_curves.png"):
        with Image.open(tmp_path / "plots" / name) as img:
            assert img.format == "PNG" and img.width > 300


def test_evaluate_function_and_text_report(csv_model: Path, fer_csv: Path) -> None:
    report, model = evaluating.evaluate(fer_csv, csv_model, usage="Training")
    assert report["n"] == 32 and report["model_id"] == model.model_id
    assert "ferplus_accuracy" not in report
    checkpoint = load_model(training.checkpoint_dir(csv_model) / "best.keras")
    assert checkpoint.temperature == 1.0 and len(plotting.training_history(checkpoint)) == 1
    text = evaluating.format_report(report)
    assert "accuracy" in text and "confusion matrix" in text and "happy" in text


def test_evaluate_with_a_missing_split_is_an_error(
    runner: CliRunner, csv_model: Path, fer_csv: Path
) -> None:
    args = ["evaluate", str(fer_csv), "--model", str(csv_model), "--usage", "PrivateTest"]
    result = runner.invoke(cli, args)
    assert result.exit_code != 0 and "no PrivateTest rows" in result.output


# --- bad input -----------------------------------------------------------------------------


def _csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


GOOD = " ".join(["7"] * 2304)


@pytest.mark.parametrize(
    ("header", "row", "message"),
    [
        ("label,pixels,Usage", f"3,{GOOD},Training", "missing column(s) emotion"),
        ("emotion,Usage", "3,Training", "missing column(s) pixels"),
        ("emotion,pixels,Usage", "3,1 2 x,Training", "row 2 (line 3): malformed pixels"),
        ("emotion,pixels,Usage", "3,1 2 3,Training", "row 2 (line 3): malformed pixels"),
        ("emotion,pixels,Usage", f"3,{GOOD[:-1]}300,Training", "row 2 (line 3): malformed"),
        ("emotion,pixels,Usage", f"3,{GOOD} 1{'0' * 20},Training", "row 2 (line 3): malformed"),
        ("emotion,pixels,Usage", f"7,{GOOD},Training", "row 2 (line 3): emotion label 7 out"),
        ("emotion,pixels,Usage", f"-1,{GOOD},Training", "row 2 (line 3): emotion label -1"),
        ("emotion,pixels,Usage", f"sad,{GOOD},Training", "row 2 (line 3): emotion label 'sad'"),
        ("emotion,pixels,Usage", f"3,{GOOD},Test", "row 2 (line 3): unknown Usage"),
        ("emotion,pixels,Usage", "3", "row 2 (line 3): 1 fields"),
    ],
)
def test_bad_csv_names_file_and_row(
    runner: CliRunner, tmp_path: Path, header: str, row: str, message: str
) -> None:
    bad = _csv(tmp_path / "bad.csv", header, f"3,{GOOD},Training", row)
    with pytest.raises(DataError, match=None) as info:
        datasets.load_data(bad)
    assert str(bad) in str(info.value) and message in str(info.value)
    out = tmp_path / "out.keras"
    result = runner.invoke(cli, ["train", str(bad), "--out", str(out)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: {info.value}"]
    assert list(tmp_path.iterdir()) == [bad]


def test_empty_csv_and_gzip_csv(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no data rows"):
        datasets.load_csv(_csv(tmp_path / "empty.csv", "emotion,pixels,Usage"))
    import gzip

    corrupt = tmp_path / "corrupt.csv.gz"
    corrupt.write_bytes(gzip.compress(b"emotion,pixels,Usage\n" * 50)[:30] + b"\x00" * 40)
    with pytest.raises(DataError, match="corrupt.csv.gz: cannot read CSV"):
        datasets.load_csv(corrupt)

    gz = tmp_path / "fer.csv.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(f"emotion,pixels,Usage\n3,{GOOD},PrivateTest\n5,{GOOD},Training\n")
    data = datasets.load_data(gz)
    assert data.faces.shape == (2, 48, 48) and list(data.usage) == ["PrivateTest", "Training"]
    # A spreadsheet's byte-order mark and a blank line are not errors.
    saved = tmp_path / "excel.csv"
    saved.write_bytes(f"\ufeffemotion,pixels,Usage\n3,{GOOD},Training\n\n".encode())
    assert len(datasets.load_csv(saved)) == 1


def test_votes_must_be_row_aligned_and_well_formed(fer_csv: Path, tmp_path: Path) -> None:
    short = tmp_path / "short.csv"
    short.write_text(
        "".join(Path(fer_csv.parent / "fer2013new.csv").read_text().splitlines(True)[:5])
    )
    with pytest.raises(DataError, match="4 vote rows but the data has 44"):
        datasets.load_data(fer_csv, short)
    bad = _csv(tmp_path / "bad.csv", "neutral,happiness,surprise,sadness,anger,disgust,fear", "1,x")
    with pytest.raises(DataError, match=r"bad.csv, row 1 \(line 2\): malformed vote counts"):
        datasets.load_votes(bad, 1)
    with pytest.raises(DataError, match="missing FER\\+ vote column"):
        datasets.load_votes(_csv(tmp_path / "v.csv", "neutral,happiness", "1,2"), 1)


def test_ferplus_labels_need_votes(fer_csv: Path, tmp_path: Path) -> None:
    config = TrainConfig(epochs=1, labels="ferplus")
    with pytest.raises(DataError, match="needs FER\\+ votes"):
        training.train(fer_csv, tmp_path / "m.keras", config=config)


def test_bad_folders(runner: CliRunner, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no class folders"):
        datasets.load_data(empty)
    (empty / "happy").mkdir()
    with pytest.raises(DataError, match="no Training images"):
        datasets.load_data(empty)
    odd = tmp_path / "odd"
    (odd / "train" / "grumpy").mkdir(parents=True)
    with pytest.raises(DataError, match="unknown emotion folder 'grumpy'"):
        datasets.load_data(odd)
    root = write_face_folder(tmp_path / "faces", per_class=(2, 1))
    broken = root / "train" / "sad" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(DataError, match="broken.jpg: unreadable image"):
        datasets.load_data(root)
    out = tmp_path / "m.keras"
    result = runner.invoke(cli, ["train", str(root), "--out", str(out)])
    assert result.exit_code == 1 and "broken.jpg: unreadable image" in result.output
    assert not out.exists()
    with pytest.raises(DataError, match="row-aligned"):
        datasets.load_data(
            root, write_votes(write_fer_csv(tmp_path / "f.csv", (1, 1)), tmp_path / "v.csv")
        )


def test_out_must_be_a_keras_file(runner: CliRunner, fer_csv: Path, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["train", str(fer_csv), "--out", str(tmp_path / "m.h5")])
    assert result.exit_code == 2 and "must end in .keras" in result.output


def test_evaluate_rejects_a_model_of_the_wrong_shape(
    runner: CliRunner, fer_csv: Path, tmp_path: Path
) -> None:
    import keras

    wrong = keras.Sequential(
        [keras.Input((48, 48, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    path = tmp_path / "wrong.keras"
    wrong.save(path)
    result = runner.invoke(cli, ["evaluate", str(fer_csv), "--model", str(path)])
    assert result.exit_code == 1 and f"{path}: wrong model shape" in result.output
    garbage = tmp_path / "garbage.keras"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(ModelError, match="garbage.keras: not a loadable Keras model"):
        load_model(garbage)


# --- metrics and plots ---------------------------------------------------------------------


def test_temperature_fit_recovers_the_scale_of_overconfident_logits() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 1.5, (4000, 7))
    labels = np.array(
        [
            rng.choice(7, p=p)
            for p in np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
        ]
    )
    temperature = metrics.fit_temperature(true_logits * 3, labels)
    assert 2.6 < temperature < 3.4
    report = metrics.classification_report(true_logits * 3, labels, temperature)
    assert report["ece"] < report["ece_uncalibrated"]


def test_classification_report_counts() -> None:
    labels = np.array([3, 3, 4, 4])
    logits = np.eye(7)[[3, 4, 4, 4]] * 5
    votes = np.zeros((4, 7))
    votes[:, 4] = 3
    report = metrics.classification_report(logits, labels, votes=votes)
    assert report["accuracy"] == 0.75 and report["ferplus_accuracy"] == 0.75
    assert report["per_class"]["happy"] == {"precision": 1.0, "recall": 0.5, "support": 2}
    assert report["per_class"]["sad"]["precision"] == pytest.approx(0.6667)
    assert report["confusion_matrix"][3][4] == 1
    assert report["per_class"]["angry"] == {"precision": 0.0, "recall": 0.0, "support": 0}


def test_label_set_split_says_what_accuracy_both_goals_need_where_the_labels_agree() -> None:
    # faces 0-5: both label sets agree; 6-7: they disagree; 8-9: no FER+ majority
    labels = np.array([0, 1, 2, 3, 4, 5, 2, 4, 6, 6])
    majority = np.array([0, 1, 2, 3, 4, 5, 6, 6, -1, -1])
    pred = np.array([0, 1, 2, 3, 0, 0, 2, 6, 6, 0])
    split = metrics.label_set_split(pred, labels, majority, goals=(0.8, 0.75))
    assert (split["agree_n"], split["disagree_n"], split["no_majority_n"]) == (6, 2, 2)
    assert split["agree_accuracy"] == round(4 / 6, 4)
    assert (split["disagree_original"], split["disagree_ferplus"]) == (0.5, 0.5)
    assert split["no_majority_accuracy"] == 0.5
    assert split["ferplus_oracle_accuracy"] == 0.8  # predicting FER+ loses the 2 disagreeing
    # goals: 8 of 10 original hits and 6 of 8 FER+ hits; the disagreeing 2 give one of them,
    # the unlabelled 1: the agreeing faces must give x with x + 2 + 1 + x >= 14, x >= 5.5
    assert split["agree_accuracy_needed"] == round(5.5 / 6, 4)


def test_ferplus_majority_follows_the_ferplus_papers_rule() -> None:
    #                   an  di fe ha sa su ne  contempt unknown NF
    counts = np.array(
        [
            [0, 0, 0, 6, 0, 0, 4, 0, 0, 0],  # 6 of 10: happy
            [0, 0, 0, 0, 4, 0, 4, 0, 2, 0],  # a tie, no class above half: none
            [1, 1, 1, 1, 1, 0, 5, 0, 0, 0],  # single votes are outliers: 5 of 5 neutral
            [0, 0, 0, 2, 0, 0, 0, 0, 8, 0],  # the majority says unknown: none
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # no votes: none
        ],
        np.float32,
    )
    assert datasets.ferplus_majority(counts).tolist() == [3, -1, 6, -1, -1]
    # Scored over the faces with a majority; the most-voted-class score credits ties.
    logits = np.eye(7)[[3, 6, 6, 3, 0]]
    report = metrics.classification_report(
        logits,
        np.array([3, 4, 6, 3, 0]),
        votes=counts[:, :7],
        ferplus_labels=datasets.ferplus_majority(counts),
    )
    assert report["ferplus_n"] == 2 and report["ferplus_accuracy"] == 1.0
    assert report["ferplus_plurality_accuracy"] == 1.0  # 4 voted faces, the tie counts
    assert "FER+ majority accuracy 1.0000 (2 faces with a clear majority)" in (
        evaluating.format_report({"usage": "PublicTest", "model_id": "m", **report})
    )


def test_votes_file_gives_the_majority_with_contempt_unknown_and_nf(
    fer_csv: Path, tmp_path: Path
) -> None:
    header = "neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
    votes = _csv(tmp_path / "v.csv", header, "2,8,0,0,0,0,0,0,0,0", "0,3,0,0,0,0,0,0,7,0")
    counts, majority = datasets.load_votes(votes, 2)
    assert counts.shape == (2, 7) and counts[1, 3] == 3
    assert majority.tolist() == [3, -1]


def test_targets_mix_labels_and_votes_and_skip_rows_without_votes() -> None:
    votes = np.zeros((2, 7), np.float32)
    votes[0, [3, 6]] = [6, 2]
    data = datasets.FaceData(
        np.zeros((2, 48, 48), np.uint8), np.array([3, 4]), np.array(["Training"] * 2), "x", votes
    )
    mix, keep = training.make_targets(data, "mix")
    assert keep.tolist() == [True, False]
    assert mix[0].tolist() == pytest.approx([0, 0, 0, 0.875, 0, 0, 0.125])
    mostly_original, _ = training.make_targets(data, "mix", mix_weight=0.8)
    assert mostly_original[0].tolist() == pytest.approx([0, 0, 0, 0.95, 0, 0, 0.05])
    ferplus, _ = training.make_targets(data, "ferplus")
    assert ferplus[0, 3] == pytest.approx(0.75)
    weights = training.class_weights(np.eye(7)[[3, 3, 3, 1]])
    assert weights[1] > 1 > weights[3]


def test_preprocessing_is_shared_by_training_and_inference() -> None:
    assert training.preprocess_faces is preprocess_faces


def test_plot_history_without_validation_metrics(tmp_path: Path) -> None:
    history = [
        {"epoch": 1, "loss": 2.0, "accuracy": 0.3},
        {"epoch": 2, "loss": 1.5, "accuracy": 0.5},
    ]
    target = plotting.plot_history(history, tmp_path / "curves.png")
    with Image.open(target) as img:
        assert img.size == (900, 380)


def test_the_best_epoch_is_judged_on_both_label_sets_when_votes_are_given() -> None:
    both = {"val_accuracy": 0.9, "val_fer2013_accuracy": 0.6, "val_ferplus_accuracy": 0.8}
    assert training.selection_score(both) == pytest.approx(0.7)
    assert training.selection_score({"val_accuracy": 0.9, "val_fer2013_accuracy": 0.6}) == 0.9


def test_training_runs_on_jax_and_its_model_runs_on_tensorflow(
    fer_csv: Path, votes_csv: Path, tmp_path: Path
) -> None:
    """A GPU machine may have JAX and not TensorFlow: the run there must give the model that
    TensorFlow loads and exports here, with the same outputs."""
    out = tmp_path / "wide.keras"
    args = [str(fer_csv), "--votes", str(votes_csv), "--out", str(out), "--epochs", "2"]
    args += ["--batch-size", "8", "--widths", "8,16,24"]
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    run = subprocess.run(
        [sys.executable, "-m", "photosort", "train", *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "epoch 2/2" in run.stderr
    assert "not exported: export runs on TensorFlow, not jax" in run.stderr
    assert f"photosort export {out} {fer_csv} --votes {votes_csv}" in run.stderr
    assert not out.with_suffix(".tflite").exists()
    meta = json.loads(out.with_suffix(".json").read_text())
    assert "on jax" in meta["training"]["hardware"] and meta["training"]["widths"] == [8, 16, 24]
    assert meta["architecture"].startswith("VGG-style CNN, widths [8, 16, 24]")
    # Here Keras runs on TensorFlow: the same weights give the figures JAX measured.
    data = datasets.split_usage(datasets.load_data(fer_csv, votes_csv), "PublicTest")
    probs = load_model(out).predict(data.faces)
    assert round(float((probs.argmax(1) == data.labels).mean()), 4) == meta["figures"]["accuracy"]


def test_widths_are_checked_at_the_edge(runner: CliRunner, fer_csv: Path, tmp_path: Path) -> None:
    for bad in ("64", "32,0", "a,b"):
        result = runner.invoke(cli, ["train", str(fer_csv), "--out", "m.keras", "--widths", bad])
        assert result.exit_code == 2 and "two or more positive whole numbers" in result.output
