"""Evaluating on labelled photos: the scan's own detection and crops, then the figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from photosort.cli import cli
from photosort.datasets import DataError
from photosort.defaults import EMOTIONS
from photosort.evaluating import (
    evaluate_photos,
    format_report,
    is_photo_folder,
    labelled_photos,
    photo_report,
)
from photosort.sample import save_jpeg, skimage_photo

HAPPY, SAD, NEUTRAL = (EMOTIONS.index(e) for e in ("happy", "sad", "neutral"))


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """happy/ holds the astronaut (a smiling face), neutral/ a cat (no human face)."""
    root = tmp_path / "photos"
    save_jpeg(root / "happy" / "astronaut.jpg", skimage_photo("astronaut"))
    save_jpeg(root / "neutral" / "cat.jpg", skimage_photo("chelsea"))
    return root


def test_a_folder_of_emotion_folders_is_photos_and_a_split_folder_is_faces(
    photos: Path, tmp_path: Path
) -> None:
    assert is_photo_folder(photos, None)
    (tmp_path / "faces" / "train" / "happy").mkdir(parents=True)
    assert not is_photo_folder(tmp_path / "faces", None)
    assert not is_photo_folder(tmp_path / "fer2013.csv", None)


def test_photos_are_detected_cropped_and_classified_like_a_scan(photos: Path) -> None:
    report, model = evaluate_photos(photos)
    assert report["photos"] == 2 and report["faces_found"] == 1
    assert report["no_face"] == [{"path": "neutral/cat.jpg", "reason": "no face found"}]
    assert report["per_class"]["happy"]["recall"] == 1.0  # the shipped model sees the smile
    assert report["per_class"]["neutral"]["recall"] == 0.0  # no face: a miss
    assert report["accuracy"] == 0.5
    assert report["precision_at_10"]["happy"] == 0.5  # the cat ranks second, wrongly
    assert report["model_id"] == model.model_id
    text = format_report(report)
    assert "largest-face accuracy 0.5000" in text and "neutral/cat.jpg: no face found" in text


def test_labels_from_a_csv_with_paths_relative_to_the_folder(photos: Path) -> None:
    labels = photos.parent / "labels.csv"
    labels.write_text("path,emotion,source\nhappy/astronaut.jpg,sad,x\nneutral/cat.jpg,happy,y\n")
    found = labelled_photos(photos, labels)
    assert [(p.path.name, p.label, p.group) for p in found] == [
        ("astronaut.jpg", SAD, "happy"),
        ("cat.jpg", HAPPY, "neutral"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,emotion\nhappy/astronaut.jpg,joy\n", "unknown emotion 'joy'"),
        ("path,emotion\n../x.jpg,happy\n", "path must be relative"),
        ("path,emotion\nhappy/none.jpg,happy\n", "no photo at"),
        ("file,label\nx,y\n", "the header must name the columns path and emotion"),
        ("path,emotion\n", "no labelled photos"),
        ("path,emotion\n" + "x" * 300 + "/a.jpg,happy\n", "line 2: cannot use x+/a.jpg: File nam"),
        ("path,emotion\nhappy/a\x00.jpg,happy\n", "line 2: cannot use happy/a"),
        (
            "path,emotion\nhappy/astronaut.jpg,happy\n./happy//astronaut.jpg,happy\n",
            r"line 3: happy/astronaut.jpg repeats line 2; one row per photo",
        ),
        (
            "path,emotion\nhappy/astronaut.jpg,angry\nneutral/cat.jpg,sad\n"
            "happy/astronaut.jpg,happy\n",
            "line 4: happy/astronaut.jpg labels it happy, against angry in line 2",
        ),
    ],
)
def test_bad_labels_files_are_one_line_errors(photos: Path, text: str, message: str) -> None:
    labels = photos.parent / "labels.csv"
    labels.write_text(text)
    with pytest.raises(DataError, match=message):
        labelled_photos(photos, labels)


def test_an_unknown_emotion_folder_is_an_error(photos: Path) -> None:
    (photos / "joy").mkdir()
    with pytest.raises(DataError, match="unknown emotion folder 'joy'"):
        labelled_photos(photos)


def test_precision_at_k_ranks_each_emotion_and_misses_count() -> None:
    labels = np.array([HAPPY, HAPPY, SAD, SAD])
    probs = np.zeros((4, 7))
    probs[0, HAPPY], probs[0, SAD] = 0.9, 0.1
    probs[1, HAPPY], probs[1, SAD] = 0.3, 0.7  # a happy photo read as sad
    probs[2, HAPPY], probs[2, SAD] = 0.2, 0.8
    report = photo_report(probs, labels, [".", ".", ".", "."], k=2)  # photo 3: no face
    assert report["accuracy"] == 0.5
    assert report["per_class"]["sad"] == {"precision": 0.5, "recall": 0.5, "support": 2}
    assert report["precision_at_2"]["happy"] == 1.0  # photos 0 and 1, both happy
    assert report["precision_at_2"]["sad"] == 0.5  # photos 2 and 1
    assert report["faces_found"] == 3
    assert np.asarray(report["confusion_matrix"]).sum() == 3


def test_evaluate_command_on_photos(photos: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["evaluate", str(photos), "--json", "--plots", str(tmp_path / "plots")]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["usage"] == "photos" and report["mean_precision_at_10"] >= 0
    assert (tmp_path / "plots" / "confusion_matrix.png").exists()
    votes = tmp_path / "votes.csv"
    votes.write_text("x\n")
    wrong = CliRunner().invoke(cli, ["evaluate", str(photos), "--votes", str(votes)])
    assert wrong.exit_code == 2 and "--votes goes with fer2013.csv" in wrong.output


def test_a_name_too_long_in_labels_is_one_line_on_the_command_line(
    photos: Path, runner: CliRunner
) -> None:
    labels = photos.parent / "labels.csv"
    labels.write_text("path,emotion\nhappy/astronaut.jpg,happy\n" + "é" * 200 + ".jpg,sad\n")
    result = runner.invoke(cli, ["evaluate", str(photos), "--labels", str(labels)])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: {labels}, line 3: cannot use ")
    assert result.output.endswith(": File name too long\n") and result.output.count("\n") == 1
