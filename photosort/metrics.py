"""Metrics of an emotion model's logits: accuracy per class, FER+ agreement, calibration.

Shared by training (epoch selection), export (calibration) and evaluation (reports).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from photosort.datasets import ferplus_majority
from photosort.emotions import EMOTIONS, softmax

ECE_BINS = 15


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray) -> float:
    """ECE over equal-width confidence bins: how far confidence is from accuracy."""
    if not len(labels):
        return 0.0
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    ece = 0.0
    for b in range(ECE_BINS):
        in_bin = bins == b
        if in_bin.any():
            ece += abs(correct[in_bin].mean() - confidence[in_bin].mean()) * in_bin.mean()
    return float(ece)


def soft_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean cross-entropy of soft (or one-hot) targets under softmax(logits), computed stably."""
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-(targets * log_p).sum(axis=1).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising the negative log-likelihood (golden-section on log T)."""

    onehot = np.eye(logits.shape[1])[labels]

    def nll(log_t: float) -> float:
        return soft_cross_entropy(logits / math.exp(log_t), onehot)

    lo, hi = math.log(0.05), math.log(20.0)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(a), nll(b)
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(b)
    return round(math.exp((lo + hi) / 2), 4)


def ferplus_hits(pred: np.ndarray, majority: np.ndarray) -> np.ndarray:
    """Whether each prediction matches the FER+ majority, over the faces that have one."""
    return pred[majority >= 0] == majority[majority >= 0]


def classification_report(
    logits: np.ndarray,
    labels: np.ndarray,
    temperature: float = 1.0,
    votes: np.ndarray | None = None,
    ferplus_labels: np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall, confusion matrix, FER+ accuracy and ECE.

    With votes: ``ferplus_accuracy`` against the FER+ majority label over the ``ferplus_n``
    faces that have one (``ferplus_labels``, by default derived from ``votes``), and
    ``ferplus_plurality_accuracy`` over every face with a vote, where a prediction counts
    when no class has more votes than the predicted one.
    """
    probs = softmax(logits, temperature)
    pred = probs.argmax(axis=1)
    k = len(EMOTIONS)
    matrix = np.bincount(labels * k + pred, minlength=k * k).reshape(k, k)
    per_class = {}
    for i, name in enumerate(EMOTIONS):
        predicted, support = int(matrix[:, i].sum()), int(matrix[i].sum())
        per_class[name] = {
            "precision": round(matrix[i, i] / predicted, 4) if predicted else 0.0,
            "recall": round(matrix[i, i] / support, 4) if support else 0.0,
            "support": support,
        }
    report: dict[str, Any] = {
        "n": int(len(labels)),
        "accuracy": round(float((pred == labels).mean()), 4) if len(labels) else 0.0,
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }
    if votes is not None:
        majority = ferplus_majority(votes) if ferplus_labels is None else ferplus_labels
        hits = ferplus_hits(pred, majority)
        if len(hits):
            report["ferplus_accuracy"] = round(float(hits.mean()), 4)
        report["ferplus_n"] = len(hits)
        valid = votes.sum(axis=1) > 0
        if valid.any():
            top = votes[np.arange(len(pred)), pred] >= votes.max(axis=1)
            report["ferplus_plurality_accuracy"] = round(float(top[valid].mean()), 4)
    report["ece"] = round(expected_calibration_error(probs, labels), 4)
    report["ece_uncalibrated"] = round(expected_calibration_error(softmax(logits), labels), 4)
    report["temperature"] = temperature
    return report


def label_set_split(
    pred: np.ndarray,
    labels: np.ndarray,
    majority: np.ndarray,
    goals: tuple[float, float] = (0.70, 0.82),
) -> dict[str, Any]:
    """How far one network can meet an original-label goal and a FER+ goal at once.

    The two label sets disagree on many faces, and a prediction can match only one of them
    there; so the faces where they agree (and those without a FER+ majority) must carry both
    goals. ``agree_accuracy_needed`` is the least accuracy on the agreeing faces that meets
    both ``goals`` (original labels, FER+ majority) with the model's hits elsewhere as they
    are, the disagreeing faces' hits shared out between the two label sets at will.
    Predicting the FER+ majority exactly (``ferplus_oracle_accuracy``) misses the original
    label on just the disagreeing faces.
    """
    has = majority >= 0
    agree, disagree, none = has & (labels == majority), has & (labels != majority), ~has
    original, ferplus = pred == labels, pred == majority
    hits_disagree = int((original | ferplus)[disagree].sum())
    hits_none = int(original[none].sum())
    needed = (goals[0] * len(labels) - hits_none + goals[1] * int(has.sum()) - hits_disagree) / 2

    def share(hits: np.ndarray, mask: np.ndarray) -> float:
        return round(float(hits[mask].mean()), 4) if mask.any() else 0.0

    return {
        "agree_n": int(agree.sum()),
        "agree_accuracy": share(original, agree),
        "agree_accuracy_needed": round(needed / agree.sum(), 4) if agree.any() else 0.0,
        "disagree_n": int(disagree.sum()),
        "disagree_original": share(original, disagree),
        "disagree_ferplus": share(ferplus, disagree),
        "no_majority_n": int(none.sum()),
        "no_majority_accuracy": share(original, none),
        "ferplus_oracle_accuracy": round(float((~disagree).mean()), 4),
        "goals": list(goals),
    }
