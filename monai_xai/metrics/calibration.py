"""Calibration of classifier confidences: temperature scaling (Guo et al. 2017, as gpleiss/temperature_scaling),
expected calibration error and reliability-diagram bins. Binary (one logit or probability per sample) and
multi-class ((N, C) scores, C >= 2)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from monai.metrics import CumulativeIterationMetric

__all__ = [
    "ReliabilityDiagram",
    "TemperatureNotIdentifiable",
    "fit_temperature",
    "expected_calibration_error",
    "reliability_diagram_data",
    "ExpectedCalibrationErrorMetric",
]


class ReliabilityDiagram(NamedTuple):
    """Per-bin statistics of a reliability diagram; every field is (n_bins,).

    Attributes:
        bin_lower: lower bin edge (excluded).
        bin_upper: upper bin edge (included).
        confidence: mean confidence of the samples in the bin, NaN for an empty bin.
        accuracy: share of correct predictions in the bin, NaN for an empty bin.
        count: number of samples in the bin (int64).
    """

    bin_lower: torch.Tensor
    bin_upper: torch.Tensor
    confidence: torch.Tensor
    accuracy: torch.Tensor
    count: torch.Tensor


class TemperatureNotIdentifiable(ValueError):
    """Validation logits and labels from which no finite, positive temperature follows (the NLL does not depend on
    ``T``, or keeps falling as ``T`` goes to 0 or grows without bound); the message says which and why."""


def _labels_as_indices(labels: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """(N,), (N, 1) class indices or (N, C) one-hot -> (N,) int64 indices, checked against the number of classes."""
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}.")
    classes = scores.shape[1] if scores.ndim == 2 and scores.shape[1] > 1 else 2
    if scores.ndim == 2 and scores.shape[1] > 1 and labels.shape == scores.shape:
        if not (((labels == 0) | (labels == 1)).all() and (labels.sum(dim=1) == 1).all()):
            raise ValueError("labels shaped like the (N, C) scores must be one-hot (one 1 per row).")
        labels = labels.argmax(dim=1)
    labels = labels.reshape(-1) if labels.ndim == 2 and labels.shape[1] == 1 else labels
    if labels.ndim != 1 or labels.shape[0] != scores.shape[0]:
        raise ValueError(
            f"labels must hold one class index per sample, shape ({scores.shape[0]},), or be one-hot like the scores; "
            f"got {tuple(labels.shape)} for scores of shape {tuple(scores.shape)}."
        )
    if labels.is_floating_point() and not (labels == labels.round()).all():
        raise ValueError("labels must be integer class indices.")
    labels = labels.long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(
            f"labels must be class indices in [0, {classes - 1}], got values in "
            f"[{int(labels.min())}, {int(labels.max())}]."
        )
    return labels


def _check_scores(scores: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor) or not scores.is_floating_point():
        raise TypeError(f"{name} must be a floating torch.Tensor of shape (N,), (N, 1) or (N, C).")
    if scores.ndim not in (1, 2) or scores.shape[0] == 0:
        raise ValueError(
            f"{name} must have shape (N,) or (N, 1) for a binary task or (N, C) for C classes, with N >= 1; "
            f"got {tuple(scores.shape)}."
        )
    if not torch.isfinite(scores).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return scores


def _confidence_and_correct(
    probs_or_logits: torch.Tensor, labels: torch.Tensor, from_logits: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Confidence of the predicted class and whether it is right, both (N,).

    Binary scores are the probability (or logit) of class 1; the prediction is 1 when that probability exceeds 0.5
    and the confidence is ``max(p, 1 - p)``.
    """
    scores = _check_scores(probs_or_logits, "probs_or_logits")
    labels = _labels_as_indices(labels, scores)
    if scores.ndim == 2 and scores.shape[1] > 1:
        probs = scores.softmax(dim=1) if from_logits else scores
        if not from_logits and (
            probs.min() < 0
            or probs.max() > 1
            or not torch.allclose(probs.sum(dim=1), torch.ones_like(probs[:, 0]), atol=1e-3)
        ):
            raise ValueError("probabilities must lie in [0, 1] and sum to 1 per row; pass from_logits=True for logits.")
        confidence, predicted = probs.max(dim=1)
        return confidence, predicted == labels
    positive = scores.reshape(-1)
    positive = positive.sigmoid() if from_logits else positive
    if not from_logits and (positive.min() < 0 or positive.max() > 1):
        raise ValueError("binary probabilities must lie in [0, 1]; pass from_logits=True for logits.")
    predicted = (positive > 0.5).long()
    return torch.maximum(positive, 1 - positive), predicted == labels


def _reliability_bins(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int) -> ReliabilityDiagram:
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be an int >= 1, got {n_bins!r}.")
    edges = torch.linspace(0, 1, n_bins + 1, dtype=confidence.dtype, device=confidence.device)
    confidence = confidence.contiguous()  # a column of the cumulative buffer is a strided view
    # bucketize(right=False) gives i with edges[i-1] < c <= edges[i]: the "lower < conf <= upper" bins of the
    # reference; a confidence of exactly 0 (impossible for a predicted class) would fall in no bin there, here bin 0
    bins = (torch.bucketize(confidence, edges) - 1).clamp(0, n_bins - 1)
    count = torch.bincount(bins, minlength=n_bins)
    confidence_sum = torch.zeros(n_bins, dtype=confidence.dtype, device=confidence.device).index_add_(
        0, bins, confidence
    )
    correct_sum = torch.zeros_like(confidence_sum).index_add_(0, bins, correct.to(confidence.dtype))
    occupied = count > 0
    divisor = torch.where(occupied, count, 1).to(confidence.dtype)
    nan = torch.full_like(confidence_sum, float("nan"))
    return ReliabilityDiagram(
        bin_lower=edges[:-1],
        bin_upper=edges[1:],
        confidence=torch.where(occupied, confidence_sum / divisor, nan),
        accuracy=torch.where(occupied, correct_sum / divisor, nan),
        count=count,
    )


def _ece_from_bins(bins: ReliabilityDiagram) -> torch.Tensor:
    weight = bins.count.to(bins.bin_upper.dtype) / bins.count.sum()
    gap = torch.where(bins.count > 0, (bins.confidence - bins.accuracy).abs(), torch.zeros_like(weight))
    return (weight * gap).sum()


def reliability_diagram_data(
    probs_or_logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15, from_logits: bool = False
) -> ReliabilityDiagram:
    """Per-bin mean confidence, accuracy and count over ``n_bins`` equal-width bins ``lower < conf <= upper``.

    Args:
        probs_or_logits: (N, C) class probabilities (or logits with ``from_logits=True``), C >= 2; or (N,) / (N, 1)
            probability (logit) of class 1 for a binary task.
        labels: (N,) or (N, 1) class indices, or (N, C) one-hot.
        n_bins: number of bins on [0, 1] (default 15).
        from_logits: apply softmax (sigmoid for binary) first.

    Returns:
        :class:`ReliabilityDiagram` with (n_bins,) fields; empty bins have NaN confidence and accuracy.
    """
    confidence, correct = _confidence_and_correct(probs_or_logits, labels, from_logits)
    return _reliability_bins(confidence, correct, n_bins)


def expected_calibration_error(
    probs_or_logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15, from_logits: bool = False
) -> torch.Tensor:
    """Expected calibration error ``sum_b (n_b / n) |conf_b - acc_b|`` over equal-width bins (Guo et al.).

    Arguments as :func:`reliability_diagram_data`.

    Returns:
        0-dim tensor in [0, 1].
    """
    return _ece_from_bins(reliability_diagram_data(probs_or_logits, labels, n_bins=n_bins, from_logits=from_logits))


def fit_temperature(
    logits: torch.Tensor,
    labels: torch.Tensor,
    init_temperature: float = 1.5,
    lr: float = 1.0,
    max_iter: int = 100,
    line_search: bool = True,
) -> float:
    """Fit the temperature ``T`` of ``logits / T`` by minimising the validation NLL with LBFGS (Guo et al.).

    Multi-class logits use cross-entropy of the softmax; binary logits ((N,) or (N, 1), logit of class 1) use binary
    cross-entropy of the sigmoid. As gpleiss/temperature_scaling, ``T`` itself is the LBFGS parameter and starts at
    1.5. The reference's settings (``lr=0.01, max_iter=50``, no line search) usually stop far from the optimum
    (gpleiss/temperature_scaling issues #28, #34); the defaults here add a strong-Wolfe line search, which reaches it.
    Pass ``lr=0.01, max_iter=50, line_search=False`` to reproduce the reference exactly.

    Calibrated probabilities are then ``softmax(logits / T)`` (``sigmoid(logits / T)``).

    Args:
        logits: (N, C) or (N,) / (N, 1) validation logits (pre-softmax), not probabilities.
        labels: (N,) or (N, 1) class indices, or (N, C) one-hot.
        init_temperature: starting temperature, > 0.
        lr: LBFGS learning rate.
        max_iter: LBFGS iterations.
        line_search: use LBFGS's strong-Wolfe line search.

    Returns:
        the fitted temperature, a positive float.

    Raises:
        TemperatureNotIdentifiable: a ``ValueError``, before fitting, for data without a finite positive optimum:
            logits that do not depend on ``T`` (every row constant), logits that rank every label first (``T`` -> 0;
            e.g. a validation split of one class that the model always predicts), or logits that score the labels at
            or below their row's mean (``T`` -> infinity).
        RuntimeError: when the fit diverges (temperature or NLL not finite, or temperature <= 0), or stays at
            ``init_temperature`` where the NLL's slope is not 0 (the optimiser did not run).
    """
    logits = _check_scores(logits, "logits").detach()
    labels = _labels_as_indices(labels, logits)
    if init_temperature <= 0:
        raise ValueError(f"init_temperature must be > 0, got {init_temperature!r}.")
    multiclass = logits.ndim == 2 and logits.shape[1] > 1
    if not multiclass:
        logits, targets = logits.reshape(-1), labels.to(logits.dtype)

    def nll(temperature: torch.Tensor) -> torch.Tensor:
        if multiclass:
            return F.cross_entropy(logits / temperature, labels)
        return F.binary_cross_entropy_with_logits(logits / temperature, targets)

    _check_identifiable(logits, labels, multiclass)

    temperature = torch.full(
        (1,), float(init_temperature), dtype=logits.dtype, device=logits.device, requires_grad=True
    )
    optimizer = torch.optim.LBFGS(
        [temperature], lr=lr, max_iter=max_iter, line_search_fn="strong_wolfe" if line_search else None
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = nll(temperature)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    fitted = float(temperature.detach())
    with torch.no_grad():
        final_nll = float(nll(temperature.detach()))
    if not (fitted > 0 and math.isfinite(fitted) and math.isfinite(final_nll)):
        raise RuntimeError(
            f"temperature scaling diverged (T = {fitted}, NLL = {final_nll}); check that `logits` are raw pre-softmax "
            "scores and `labels` match them, or lower `lr`."
        )
    if fitted == float(init_temperature):
        start = temperature.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (slope,) = torch.autograd.grad(nll(start), start)
        if abs(float(slope)) > _FLAT_SLOPE:  # the optimum has slope 0; this is where the optimiser stopped
            raise RuntimeError(
                f"temperature scaling stayed at its initial value {fitted} although the NLL's slope there is "
                f"{float(slope):.3g}: the optimiser did not move (max_iter={max_iter}, lr={lr}); raise max_iter or lr."
            )
    return fitted


# below this |dNLL/dT| a fit that stays at its initial value has found the optimum there
_FLAT_SLOPE = 1e-6


def _check_identifiable(logits: torch.Tensor, labels: torch.Tensor, multiclass: bool) -> None:
    """Refuse data whose NLL has no minimum at a finite T > 0 (the fit would return where it happened to stop).

    As a function of ``b = 1 / T`` the NLL is convex: it is flat when no logit row varies; it falls as b grows (T to 0)
    when every label's logit is its row's largest; and it rises from b = 0 (T infinite) when the label's logit is on
    average at most the mean of its row. Otherwise its slope is negative at b = 0 and positive for large b: a finite
    positive T minimises it.

    Raises:
        TemperatureNotIdentifiable: naming which case and what to do.
    """
    if multiclass:
        label_logit = logits.gather(1, labels[:, None])[:, 0]
        flat = bool((logits.amax(dim=1) == logits.amin(dim=1)).all())
        ranked_first = bool((label_logit >= logits.amax(dim=1)).all())
        margin = float((label_logit - logits.mean(dim=1)).mean())
    else:
        signed = logits * (2 * labels.to(logits.dtype) - 1)  # > 0: the label is predicted
        flat = bool((logits == 0).all())
        ranked_first = bool((signed >= 0).all())
        margin = float(signed.mean()) / 2
    cases = labels.shape[0]
    if flat:
        same = "are all 0" if not multiclass else f"give every class the same logit in each of their {cases} rows"
        raise TemperatureNotIdentifiable(
            f"the logits {same}: the NLL is the same for every temperature, so none can be fitted; pass the "
            "network's raw logits of the validation split (not constant outputs, e.g. of an untrained or collapsed "
            "network)."
        )
    if ranked_first:
        classes = labels.unique()
        single = f"; all {cases} labels are class {int(classes[0])}" if classes.numel() == 1 else ""
        raise TemperatureNotIdentifiable(
            f"the logits rank every label first (all {cases} validation cases are predicted right{single}): the NLL "
            "keeps falling as T goes to 0, so no finite temperature fits; calibrate on a validation split with cases "
            "of several classes, some of which the model gets wrong (a temperature needs its mistakes)."
        )
    if margin <= 0:
        raise TemperatureNotIdentifiable(
            f"the logits score the labels at or below the mean of the classes' logits (by {-margin:.3g} on average "
            f"over {cases} cases): the NLL keeps falling as T grows, so no finite temperature fits (the uniform "
            "prediction is the best calibration of these logits); check that the labels follow the logits' class "
            "order."
        )


class ExpectedCalibrationErrorMetric(CumulativeIterationMetric):
    """Cumulative expected calibration error over a dataset (:func:`expected_calibration_error`).

    Call with ``y_pred`` (B, C) probabilities or logits ((B,) / (B, 1) for binary) and ``y`` labels ((B,), (B, 1) or
    one-hot (B, C)). Each call buffers every sample's confidence and correctness; ``aggregate`` bins them all at once,
    so the result over several iterations or ranks equals one call over the whole dataset (ECE is not a mean of
    per-batch values).

    Args:
        n_bins: number of equal-width bins (default 15).
        from_logits: ``y_pred`` holds logits (softmax / sigmoid applied first).
    """

    def __init__(self, n_bins: int = 15, from_logits: bool = False) -> None:
        super().__init__()
        self.n_bins = n_bins
        self.from_logits = from_logits

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        if y is None:
            raise ValueError("ExpectedCalibrationErrorMetric needs labels y next to y_pred.")
        confidence, correct = _confidence_and_correct(y_pred, y, self.from_logits)
        return torch.stack([confidence, correct.to(confidence.dtype)], dim=1)

    def reliability(self) -> ReliabilityDiagram:
        """Reliability-diagram bins of everything buffered so far."""
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise ValueError("ExpectedCalibrationErrorMetric has nothing to aggregate; call it on a batch first.")
        return _reliability_bins(data[:, 0], data[:, 1].bool(), self.n_bins)

    def aggregate(self) -> torch.Tensor:
        """Expected calibration error of everything buffered so far, a 0-dim tensor."""
        return _ece_from_bins(self.reliability())
