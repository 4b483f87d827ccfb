"""Training the emotion model: targets, fitting with checkpoints, resuming, saving.

The data comes from :mod:`photosort.datasets`, the network from :mod:`photosort.network`,
the figures from :mod:`photosort.metrics`; export, evaluation and plots live in their own
modules. TensorFlow and Keras are imported inside the functions that need them.
"""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from photosort.datasets import DataError, FaceData, load_data, split_usage
from photosort.defaults import AUGMENT_MODES, LABEL_MODES, PEAK_LR, WIDTHS
from photosort.emotions import (
    EMOTIONS,
    INPUT_SIZE,
    calibration,
    compute_model_id,
    import_keras,
    keras_backend,
    keras_emotion_model,
    load_model,
    metadata_path,
    model_id_of,
    preprocess_faces,
    read_metadata,
    softmax,
)
from photosort.errors import PhotosortError, first_line
from photosort.metrics import (
    classification_report,
    ferplus_hits,
    fit_temperature,
    soft_cross_entropy,
)
from photosort.network import augment, build_model, widen

WEIGHT_DECAY = 0.05
LABEL_SMOOTHING = 0.05
CLASS_WEIGHT_POWER = 0.5
VALIDATION_FRACTION = 0.1

Progress = Callable[[str], None]
_UMASK = os.umask(0)
os.umask(_UMASK)


class TrainingError(PhotosortError):
    """A checkpoint that cannot be resumed with the options given."""


# --- targets and metrics ------------------------------------------------------------------


def vote_distribution(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Votes as probabilities, and the mask of rows with at least one valid vote."""
    total = votes.sum(axis=1)
    return votes / np.maximum(total, 1e-9)[:, None], total > 0


def make_targets(
    data: FaceData, mode: str, mix_weight: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Training targets ``(N, 7)`` for a label mode, and the mask of rows to train on.

    ``fer2013`` is the original one-hot label, ``ferplus`` the FER+ vote distribution and
    ``mix`` their weighted average (``mix_weight`` on the original label), which helps
    accuracy against both label sets. Rows without a valid FER+ vote are skipped whenever
    votes are used.
    """
    onehot = np.eye(len(EMOTIONS), dtype=np.float32)[data.labels]
    if mode == "fer2013":
        return onehot, np.ones(len(data), bool)
    if data.votes is None:
        raise DataError(f"--labels {mode} needs FER+ votes (--votes fer2013new.csv)")
    dist, valid = vote_distribution(data.votes)
    target = dist if mode == "ferplus" else mix_weight * onehot + (1 - mix_weight) * dist
    return target.astype(np.float32), valid


def reference_labels(data: FaceData, mode: str) -> np.ndarray:
    """The hard labels a model trained in ``mode`` is calibrated against."""
    if mode == "ferplus" and data.votes is not None:
        return data.votes.argmax(axis=1)
    return data.labels


def teacher_targets(paths: tuple[str, ...], x: np.ndarray) -> np.ndarray:
    """The teachers' reading of each face (input made by ``preprocess_faces``): the mean of
    their logits, each model's averaged with the mirror image's, as probabilities.

    Mirrored, so one reading holds for a face and its flip: the augmentation may flip it.
    """
    logits = [load_model(path).network_logits(x, tta=True) for path in paths]
    return softmax(np.mean(logits, axis=0))


def class_weights(targets: np.ndarray) -> np.ndarray:
    """Per-class weights ``(count / mean count) ** -0.5``: a mild push towards rare classes."""
    counts = targets.sum(axis=0)
    present = counts > 0
    weights = np.ones(len(counts), np.float32)
    weights[present] = (counts[present] / counts[present].mean()) ** -CLASS_WEIGHT_POWER
    return weights


# --- training -----------------------------------------------------------------------------


def write_atomically(target: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file beside ``target`` so a crash never leaves half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.stem}-", suffix=target.suffix
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(target: Path, obj: Any) -> None:
    write_atomically(target, lambda p: p.write_text(json.dumps(obj, indent=1) + "\n"))


def save_model(keras_model: Any, out: str | os.PathLike[str], metadata: dict[str, Any]) -> str:
    """Save a ``.keras`` model and its metadata JSON atomically; returns the model id."""
    out = Path(out)
    temperature, tta, offsets = calibration(metadata)
    model_id = ""

    def write_model(tmp: Path) -> None:
        nonlocal model_id
        keras_model.save(tmp)
        model_id = compute_model_id(tmp, temperature, tta, offsets)

    write_atomically(out, write_model)
    write_json(metadata_path(out), {**metadata, "model_id": model_id})
    return model_id


def checkpoint_dir(out: str | os.PathLike[str]) -> Path:
    """Where ``train --out OUT`` keeps checkpoints and logs: ``<stem of OUT>.ckpt/`` beside it."""
    out = Path(out)
    return out.parent / f"{out.stem}.ckpt"


@dataclass
class TrainConfig:
    """The options of a training run; a resumed run must match the checkpoint's."""

    epochs: int = 40
    batch_size: int = 128
    seed: int = 1
    labels: str = "fer2013"
    patience: int = 10
    lr: float = PEAK_LR
    init: str | None = None
    """A model whose weights the run starts from: a second learning-rate cycle or a fine-tune."""
    average: int = 1
    """Average the weights of the last ``average`` epochs; kept if it validates better."""
    augment: str = AUGMENT_MODES[0]
    """Training-time augmentation, one of :data:`AUGMENT_MODES`."""
    mix_weight: float = 0.5
    """With ``labels="mix"``: the original label's share of the target, the rest FER+ votes."""
    widths: tuple[int, ...] = WIDTHS
    """Convolution widths of the network's stages (:func:`photosort.network.build_model`)."""
    teachers: tuple[str, ...] = ()
    """Models whose averaged reading of each training face joins its target (distillation):
    what a larger network or an ensemble learnt, carried into this one at its own cost."""
    teacher_weight: float = 0.5
    """With ``teachers``: their share of each target, the rest the labels'."""


def _make_callback(
    keras: Any,
    ckpt: Path,
    state: dict[str, Any],
    val: dict[str, Any],
    progress: Progress | None,
) -> Any:
    """One callback doing, in order: validation, log, checkpoints, progress, early stopping."""
    config = state["config"]

    class EpochEnd(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.started = time.monotonic()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            row = {
                "epoch": epoch + 1,
                "loss": round(float(logs["loss"]), 5),
                "accuracy": round(float(logs["accuracy"]), 5),
                **_validation_scores(self.model, val),
                "lr": round(float(_numpy(keras, self.model.optimizer.learning_rate)), 8),
                "seconds": round(time.monotonic() - self.started, 1),
            }
            state["history"].append(row)
            state["epoch"] = epoch + 1
            improved = row["val_score"] > state["best_score"]
            if improved:
                state["best_score"], state["best_epoch"], state["wait"] = (
                    row["val_score"],
                    epoch + 1,
                    0,
                )
                write_atomically(ckpt / "best.keras", self.model.save)
            else:
                state["wait"] += 1
            # Recorded before the log is written: a finished run must not look resumable.
            stop = state["wait"] >= config["patience"]
            if stop:
                state["stopped_early"] = True
            write_atomically(ckpt / "last.keras", self.model.save)
            if config["average"] > 1:
                write_atomically(ckpt / f"epoch{epoch + 1}.keras", self.model.save)
                (ckpt / f"epoch{epoch + 1 - config['average']}.keras").unlink(missing_ok=True)
            write_json(ckpt / "log.json", state)
            _write_csv_log(ckpt / "log.csv", state["history"])
            if progress:
                progress(_format_epoch(row, config["epochs"], improved))
            if stop:
                if progress:
                    progress(f"early stop: no better val_score for {config['patience']} epochs")
                self.model.stop_training = True

    return EpochEnd()


def _numpy(keras: Any, value: Any) -> np.ndarray:
    """A backend's tensor or variable as NumPy (``.numpy()`` is TensorFlow's alone)."""
    return keras.ops.convert_to_numpy(value)


def _validation_scores(model: Any, val: dict[str, Any]) -> dict[str, float]:
    """Validation loss and accuracies: against the training target, the original labels, FER+."""
    logits = model.predict(val["x"], batch_size=512, verbose=0)
    pred = logits.argmax(axis=1)
    scores = {
        "val_loss": round(soft_cross_entropy(logits, val["targets"]), 5),
        "val_accuracy": round(float((pred == val["targets"].argmax(1)).mean()), 5),
        "val_fer2013_accuracy": round(float((pred == val["labels"]).mean()), 5),
    }
    if val["ferplus_labels"] is not None:
        hits = ferplus_hits(pred, val["ferplus_labels"])
        if len(hits):
            scores["val_ferplus_accuracy"] = round(float(hits.mean()), 5)
    scores["val_score"] = selection_score(scores)
    return scores


def selection_score(scores: dict[str, float]) -> float:
    """What picks the best epoch: the mean of the accuracies the model is judged by.

    With FER+ votes those are the original labels and the FER+ majority; the two disagree
    on a third of the faces, and an epoch that wins on one alone often loses on the other.
    """
    if "val_ferplus_accuracy" in scores:
        return round((scores["val_fer2013_accuracy"] + scores["val_ferplus_accuracy"]) / 2, 5)
    return scores["val_accuracy"]


def average_weights(keras: Any, paths: list[Path]) -> Any:
    """The network whose every weight (batch-norm statistics too) is the mean of the models'.

    Only meaningful for models of one architecture that share a basin: the last epochs of
    one run, or fine-tunes of one network.
    """
    models = [keras.models.load_model(path, compile=False) for path in paths]
    averaged = keras.models.clone_model(models[0])
    groups = zip(*(model.get_weights() for model in models), strict=True)
    averaged.set_weights([np.mean(group, axis=0) for group in groups])
    return averaged


def _average_last_epochs(
    keras: Any,
    best: Any,
    ckpt: Path,
    state: dict[str, Any],
    val: dict[str, Any],
    progress: Progress | None = None,
) -> Any:
    """The weight average of the last epochs' checkpoints if it validates better than ``best``.

    Late in a cosine schedule neighbouring epochs sit in one basin; their average is a
    flatter, often better point (stochastic weight averaging) at no cost at inference.
    """
    last = state["epoch"]
    epochs = [e for e in range(last - state["config"]["average"] + 1, last + 1) if e > 0]
    paths = [ckpt / f"epoch{e}.keras" for e in epochs]
    if len(paths) < 2:
        return best
    if not all(path.exists() for path in paths):
        if progress:
            progress(
                f"not averaging: {ckpt} lacks the checkpoints of epochs {epochs[0]}-{epochs[-1]}"
                " (they are kept only while a run has --average)"
            )
        return best
    averaged = average_weights(keras, paths)
    scores = _validation_scores(averaged, val)
    # Scored again from its logged row: a log from before val_score existed ranked by another rule.
    best_row = state["history"][state["best_epoch"] - 1]
    kept = scores["val_score"] > selection_score(best_row)
    state["averaged"] = {"epochs": epochs, **scores, "kept": bool(kept)}
    return averaged if kept else best


def _format_epoch(row: dict[str, Any], epochs: int, improved: bool) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}"]
    for key in ("loss", "accuracy", "val_loss", "val_fer2013_accuracy", "val_ferplus_accuracy"):
        if key in row:
            parts.append(f"{key} {row[key]:.4f}")
    parts.append(f"lr {row['lr']:.2e}")
    parts.append(f"{row['seconds']:.0f}s" + (" *" if improved else ""))
    return "  ".join(parts)


def _write_csv_log(target: Path, history: list[dict[str, Any]]) -> None:
    fields = list(dict.fromkeys(key for row in history for key in row))

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(history)

    write_atomically(target, write)


def validation_split(data: FaceData, seed: int) -> tuple[FaceData, FaceData, str]:
    """Training and validation rows: PublicTest when present, else a seeded 10% of Training."""
    train = split_usage(data, "Training")
    if (data.usage == "PublicTest").any():
        return train, split_usage(data, "PublicTest"), "PublicTest"
    order = np.random.default_rng(seed).permutation(len(train))
    n_val = max(1, int(round(len(train) * VALIDATION_FRACTION)))
    is_val = np.zeros(len(train), bool)
    is_val[order[:n_val]] = True
    if n_val >= len(train):
        raise DataError(f"{data.source}: too few Training rows to hold out a validation split")
    return train.select(~is_val), train.select(is_val), "10% of Training"


def train(
    data_path: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    votes: str | os.PathLike[str] | None = None,
    config: TrainConfig | None = None,
    resume: bool = False,
    progress: Progress | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Train, calibrate and save an emotion model at ``out`` (a ``.keras`` path).

    Checkpoints and the CSV/JSON training log go to :func:`checkpoint_dir`; ``resume``
    continues from its last checkpoint. Returns the metadata saved beside the model.
    """
    config = config or TrainConfig()
    if config.labels not in LABEL_MODES:
        raise DataError(f"unknown label mode {config.labels!r}, expected one of {LABEL_MODES}")
    if config.augment not in AUGMENT_MODES:
        raise DataError(f"unknown augmentation {config.augment!r}, expected one of {AUGMENT_MODES}")
    for name in ("mix_weight", "teacher_weight"):
        share = getattr(config, name)
        if not 0 <= share <= 1:
            raise DataError(f"{name.replace('_', ' ')} {share} is not between 0 and 1")
    data = load_data(data_path, votes)
    train_data, val_data, val_name = validation_split(data, config.seed)
    train_targets, keep = make_targets(train_data, config.labels, config.mix_weight)
    train_data, train_targets = train_data.select(keep), train_targets[keep]
    val_targets, keep = make_targets(val_data, config.labels, config.mix_weight)
    val_data, val_targets = val_data.select(keep), val_targets[keep]
    if not len(train_data) or not len(val_data):
        raise DataError(f"{data_path}: no rows with valid FER+ votes")

    if any(width < 1 for width in config.widths) or len(config.widths) < 2:
        raise DataError(f"widths {list(config.widths)}: at least two stages, each at least 1")
    keras = import_keras("photosort train")

    ckpt = checkpoint_dir(out)
    # Read before _start_state clears the checkpoints, which the starting model may be one of.
    start_weights = _weights_of(keras, Path(config.init)) if config.init and not resume else None
    rows = [len(train_data), len(val_data)]
    state = _start_state(ckpt, config, data_path, votes, resume, rows)
    keras.utils.set_random_seed(config.seed + state["epoch"])
    x_train = preprocess_faces(train_data.faces)
    # Class weights from the labels alone; each face's weight then follows its target.
    weights = class_weights(train_targets)
    state["class_weights"] = [round(float(w), 4) for w in weights]
    if config.teachers:
        if progress:
            progress(f"reading the training faces with {len(config.teachers)} teacher model(s)")
        taught = teacher_targets(config.teachers, x_train)
        train_targets = (1 - config.teacher_weight) * train_targets + config.teacher_weight * taught
    state.setdefault("command", command)
    sample_weight = (train_targets @ weights).astype(np.float32)
    val = {
        "x": preprocess_faces(val_data.faces),
        "targets": val_targets,
        "labels": val_data.labels,
        "ferplus_labels": val_data.ferplus_labels,
    }
    steps = math.ceil(len(x_train) / config.batch_size)
    model = _compiled_model(keras, steps, config.epochs, config.lr, config.widths)
    if resume:
        _restore_checkpoint(keras, model, ckpt / "last.keras", state["epoch"] * steps)
    else:
        if start_weights is not None:
            shapes = [tuple(w.shape) for w in model.get_weights()]
            if [w.shape for w in start_weights] != shapes:
                start_weights = widen(start_weights, shapes, np.random.default_rng(config.seed))
                if start_weights is None:
                    raise TrainingError(
                        f"{config.init}: its network differs from the one being trained, "
                        "and is not a narrower one of the same stages"
                    )
                state["init"]["widened"] = True
            model.set_weights(start_weights)
        _clear_checkpoints(ckpt)
    if progress:
        progress(
            f"training on {len(x_train)} faces, validating on {len(val['x'])} ({val_name}); "
            f"{model.count_params():,} parameters; checkpoints in {ckpt}"
        )
    dataset = _batches(keras, (x_train, train_targets, sample_weight), config, state["epoch"])
    if state["epoch"] < config.epochs and not state.get("stopped_early"):
        callback = _make_callback(keras, ckpt, state, val, progress)
        model.fit(
            dataset,
            epochs=config.epochs,
            initial_epoch=state["epoch"],
            callbacks=[callback],
            shuffle=False,
            verbose=0,
        )
    best = keras.models.load_model(ckpt / "best.keras", compile=False)
    best = _average_last_epochs(keras, best, ckpt, state, val, progress)
    return _calibrate_and_save(best, out, val_data, val["x"], state, config.labels, val_name)


def _calibrate_and_save(
    model: Any,
    out: str | os.PathLike[str],
    val_data: FaceData,
    x_val: np.ndarray,
    state: dict[str, Any],
    labels: str,
    val_name: str,
) -> dict[str, Any]:
    """Fit the temperature on the validation split, measure, and save model and metadata."""
    logits = keras_emotion_model(model).logits_from_input(x_val)
    temperature = fit_temperature(logits, reference_labels(val_data, labels))
    report = classification_report(
        logits, val_data.labels, temperature, val_data.votes, val_data.ferplus_labels
    )
    figures = {
        key: report[key]
        for key in ("n", "accuracy", "ferplus_accuracy", "ece", "ece_uncalibrated")
        if key in report
    }
    history = state["history"]
    metadata = {
        "format": 1,
        "emotions": list(EMOTIONS),
        "input_size": INPUT_SIZE,
        "outputs": "logits",
        "preprocessing": "grey, bilinear resize to input_size, per-face standardisation",
        "temperature": temperature,
        "tta": False,
        "params": int(model.count_params()),
        "architecture": (
            f"VGG-style CNN, widths {list(state['config'].get('widths', WIDTHS))}, "
            "global average pooling"
        ),
        "training": {
            "command": state.get("command", ""),
            "data": state["data"],
            "votes": state["votes"],
            **state["config"],
            "epochs_run": state["epoch"],
            "best_epoch": state["best_epoch"],
            "seconds": _run_seconds(history),
            "hardware": _hardware(),
            "class_weights": state.get("class_weights"),
            **{key: state[key] for key in ("init", "teachers", "averaged") if key in state},
        },
        "figures": {"validation": val_name, **figures},
        "history": history,
    }
    metadata["model_id"] = save_model(model, out, metadata)
    return metadata


def _batches(
    keras: Any, arrays: tuple[np.ndarray, ...], config: TrainConfig, first_epoch: int
) -> Any:
    """Shuffled, augmented training batches as a ``keras.utils.PyDataset`` (any backend).

    Each epoch's order and each batch's augmentation follow from the seed, the epoch and the
    batch number alone, so a resumed run trains on what an unbroken one would have.
    """
    x, *rest = arrays
    size = config.batch_size

    class Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=1, use_multiprocessing=False)
            self.epoch = first_epoch
            self.order = self._order()

        def _order(self) -> np.ndarray:
            return np.random.default_rng([config.seed, self.epoch]).permutation(len(x))

        def __len__(self) -> int:
            return math.ceil(len(x) / size)

        def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
            rows = self.order[index * size : (index + 1) * size]
            rng = np.random.default_rng([config.seed, self.epoch, index])
            return (augment(x[rows], rng, config.augment), *(a[rows] for a in rest))

        def on_epoch_end(self) -> None:
            self.epoch += 1
            self.order = self._order()

    return Batches()


def _compiled_model(
    keras: Any,
    steps: int,
    epochs: int,
    peak_lr: float = PEAK_LR,
    widths: tuple[int, ...] = WIDTHS,
) -> Any:
    """The network with its optimizer: AdamW on a warm-up + cosine schedule, soft targets."""
    model = build_model(widths=tuple(widths))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak_lr / 10,
        warmup_target=peak_lr,
        warmup_steps=steps,
        decay_steps=max(1, steps * (epochs - 1)),
        alpha=0.01,
    )
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=WEIGHT_DECAY)
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=LABEL_SMOOTHING
        ),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        # XLA fuses the batch-norm and ReLU steps: about 1.7x faster training on 2 CPU cores.
        # Other backends compile as Keras chooses (JAX always does).
        jit_compile=True if keras_backend() == "tensorflow" else "auto",
    )
    return model


def _restore_checkpoint(keras: Any, model: Any, path: Path, step: int) -> None:
    """Copy weights and optimizer state (step count, moments) from a checkpoint.

    Loading into a freshly compiled model, rather than using the loaded one, keeps settings
    that Keras does not save, such as which variables are exempt from weight decay. The
    checkpoint's step count must be where the log says the run stopped: otherwise an epoch
    would be trained twice, and every later one at the wrong learning rate.
    """
    try:
        saved = keras.models.load_model(path)
        model.set_weights(saved.get_weights())
        model.optimizer.build(model.trainable_variables)
        pairs = zip(model.optimizer.variables, saved.optimizer.variables, strict=True)
        for variable, value in pairs:
            variable.assign(value)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        reason = first_line(exc)
        raise TrainingError(f"{path}: cannot resume from this checkpoint: {reason}") from exc
    saved_step = int(_numpy(keras, model.optimizer.iterations))
    if saved_step != step:
        raise TrainingError(
            f"{path}: the checkpoint is at step {saved_step} but its log at step {step} "
            f"(the run stopped while saving); delete {path.parent} to start over"
        )


def _weights_of(keras: Any, path: Path) -> list[np.ndarray]:
    """An earlier model's weights, without its optimizer state: the start of a new cycle."""
    try:
        return keras.models.load_model(path, compile=False).get_weights()
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for a bad file
        reason = first_line(exc)
        raise TrainingError(f"{path}: cannot load the model to start from: {reason}") from exc


def _init_record(init: str) -> dict[str, Any]:
    """What a run started from: its id and training time count towards the new model's.

    A checkpoint (``run.ckpt/best.keras``) has no metadata of its own; the run's log beside it
    says what produced it.
    """
    meta = read_metadata(Path(init))
    training = meta.get("training", {})
    record: dict[str, Any] = {
        "path": init,
        "model_id": meta.get("model_id") if meta else model_id_of(init),
        "command": training.get("command"),
        "seconds": training.get("seconds"),
    }
    if not meta:
        try:
            log = _read_log(Path(init).parent / "log.json")
            record.update(
                command=log.get("command"),
                seconds=_run_seconds(log["history"]),
                epochs_run=log["epoch"],
                best_epoch=log["best_epoch"],
            )
        except (TrainingError, KeyError, TypeError):
            pass
    return record


def _run_seconds(history: list[dict[str, Any]]) -> float:
    """A run's training time: the sum of its epochs' times, pauses between stops left out."""
    return round(sum(row["seconds"] for row in history), 1)


def _hardware() -> str:
    """Where a run ran: the machine, the Keras backend and, on JAX, its device."""
    import keras

    backend = keras_backend()
    where = f"Keras {keras.__version__} on {backend}"
    if backend == "jax":
        import jax

        first = jax.devices()[0]
        where += ", CPU" if first.platform == "cpu" else f", {first.device_kind}"
    return f"{platform.machine()} {os.cpu_count()} CPU threads, {platform.system()}; {where}"


def _start_state(
    ckpt: Path,
    config: TrainConfig,
    data_path: str | os.PathLike[str],
    votes: str | os.PathLike[str] | None,
    resume: bool,
    rows: list[int],
) -> dict[str, Any]:
    """The run's state: fresh, or read back from the checkpoint when resuming.

    A fresh run refuses to start over an unfinished one, which ``--resume`` would continue:
    forgetting that option must not throw away hours of training.
    """
    fresh = {
        "config": {
            **vars(config),
            "widths": list(config.widths),
            "teachers": list(config.teachers),
        },
        "data": str(data_path),
        "votes": None if votes is None else str(votes),
        "epoch": 0,
        "best_score": -1.0,
        "best_epoch": 0,
        "wait": 0,
        "rows": rows,
        "history": [],
    }
    if config.init:
        fresh["init"] = _init_record(config.init)
    if config.teachers:
        fresh["teachers"] = [_init_record(path) for path in config.teachers]
    log = ckpt / "log.json"
    resumable = log.exists() and (ckpt / "last.keras").exists()
    if not resume:
        if resumable:
            done = _read_log(log)
            if done["epoch"] < done["config"]["epochs"] and not done.get("stopped_early"):
                raise TrainingError(
                    f"{ckpt} holds an unfinished run (epoch {done['epoch']} of "
                    f"{done['config']['epochs']}): continue it with --resume, "
                    "or delete that folder to start over"
                )
        return fresh
    if not resumable:
        raise TrainingError(f"{ckpt}: no checkpoint to resume from; train without --resume")
    state = _read_log(log)
    fixed = ("epochs", "batch_size", "seed", "labels", "lr", "init", "augment", "widths")
    fixed += ("teachers", "teacher_weight")
    if config.labels == "mix":
        fixed += ("mix_weight",)
    if any(state["config"].get(k, fresh["config"][k]) != fresh["config"][k] for k in fixed):
        made = {k: state["config"].get(k) for k in fixed}
        if not made["teachers"]:
            made["teacher_weight"] = None
        was = ", ".join(
            " ".join(f"--teacher {path}" for path in v)
            if k == "teachers"
            else f"--{k.replace('_', '-')} {','.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in made.items()
            if v is not None and v != []
        )
        raise TrainingError(f"{ckpt}: the checkpoint was made with {was}; resume with those")
    if state.get("rows", rows) != rows:
        raise TrainingError(
            f"{ckpt}: the checkpoint was trained on {state['rows'][0]} faces and validated on "
            f"{state['rows'][1]}, but this data gives {rows[0]} and {rows[1]}; "
            "resume with the same DATA and --votes"
        )
    if state.get("stopped_early") and config.patience > state["wait"]:
        state["stopped_early"] = False  # more patience than ran out: carry on
    state["config"]["patience"] = config.patience
    state["config"]["average"] = config.average
    return state


def _read_log(log: Path) -> dict[str, Any]:
    try:
        state = json.loads(log.read_text())
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{log}: unreadable training log: {first_line(exc)}") from exc
    if not isinstance(state, dict) or "epochs" not in state.get("config", {}):
        raise TrainingError(f"{log}: not a photosort training log")
    return state


def _clear_checkpoints(ckpt: Path) -> None:
    """Remove a finished run's checkpoints before a new run writes its own."""
    ckpt.mkdir(parents=True, exist_ok=True)
    stale = [ckpt / name for name in ("last.keras", "best.keras", "log.json", "log.csv")]
    for path in [*stale, *ckpt.glob("epoch*.keras")]:
        path.unlink(missing_ok=True)
