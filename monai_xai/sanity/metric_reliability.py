"""Can a metric's ranking of methods be trusted? Noise resilience and adversary reactivity, after MetaQuantus.

A metric that ranks explanation methods must do two things (Hedstrom et al., TMLR 2023, "The Meta-Evaluation Problem
in Explainable AI: Identifying Reliable Estimators with MetaQuantus"; Tomsett et al., AAAI 2020, "Sanity Checks for
Saliency Metrics"):

- **stay put** under a minor perturbation that leaves the model's behaviour as it was: the input with a little
  Gaussian noise (:func:`noisy_images`) whose prediction is unchanged (:func:`prediction_kept`), explained again;
- **move** when the explanation is broken on purpose: the map replaced by a control that knows nothing of the network
  (:func:`~monai_xai.cams.controls.random_control`).

Over the pairs (case, method) of one network and layer, with ``q`` the metric on the method's map of the clean input,
``q_noise`` on its map of the noisy input and ``q_control`` on the control map, and ``s`` the standard deviation of
``q`` over the pairs (the spread that separates methods and cases, the unit of the metric's ranking):

- noise change ``mean |q_noise - q| / s``; **resilient** when at most :data:`MAX_NOISE_CHANGE`;
- control change ``mean |q_control - q| / s``; **reactive** when the control changes the metric more than the noise
  does: a one-sided Wilcoxon signed-rank test of ``|q_control - q| > |q_noise - q|`` over the pairs, p < alpha.

A metric is **reliable** when it is both. One that ignores the map (the same value for any map) changes by exactly 0
under the control and is never reactive; one that shifts with the noise as much as with a broken map is not
resilient or not reactive. A metric that is the same for every pair (``s = 0``) cannot rank anything and is neither.
With fewer than :func:`min_pairs` pairs no Wilcoxon test can reach ``alpha`` (its smallest p is ``2^-n``): the check
is undecided (``reliable`` is None), not failed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats as scipy_stats

from monai_xai.cams.targets import predicted_mask

__all__ = [
    "MAX_NOISE_CHANGE",
    "MIN_KEPT_DICE",
    "MetricReliability",
    "metric_reliability",
    "min_pairs",
    "noisy_images",
    "prediction_kept",
]

# the noise may move a reliable metric by at most half its spread over the cases and methods, on average
MAX_NOISE_CHANGE = 0.5
# a segmenter's prediction counts as unchanged under the noise when its explained region keeps this Dice
MIN_KEPT_DICE = 0.95


@dataclass(frozen=True)
class MetricReliability:
    """The reliability check of one metric over the (case, method) pairs of one network and layer.

    Attributes:
        n_pairs: the pairs with all three values (a case whose prediction the noise changed is left out).
        spread: standard deviation of the clean values over the pairs, the unit of both changes.
        noise_change: mean absolute change under the input noise, in units of ``spread``.
        control_change: mean absolute change when the map is replaced by the control, in units of ``spread``.
        pvalue: one-sided Wilcoxon signed-rank p that the control changes the metric more than the noise.
        resilient: ``noise_change <= MAX_NOISE_CHANGE``.
        reactive: ``pvalue < alpha``.
        decided: whether there were enough pairs for the test to reach ``alpha`` (:func:`min_pairs`).
    """

    n_pairs: int
    spread: float
    noise_change: float
    control_change: float
    pvalue: float
    resilient: bool
    reactive: bool
    decided: bool = True

    @property
    def reliable(self) -> bool | None:
        """True or False; None when undecided (too few pairs)."""
        return (self.resilient and self.reactive) if self.decided else None

    @property
    def verdict(self) -> str:
        """One line for the report's table: ``"reliable"``, or why not."""
        if not self.decided:
            return f"undecided: {self.n_pairs} pair(s), a test needs more"
        if self.reliable:
            return "reliable"
        if not self.spread > 0:
            return "the same value for every pair: ranks nothing"
        failed = [("not resilient", not self.resilient), ("not reactive", not self.reactive)]
        return ", ".join(reason for reason, fails in failed if fails)


def min_pairs(alpha: float) -> int:
    """The fewest pairs whose one-sided Wilcoxon signed-rank test can give ``p < alpha`` (``2^-n < alpha``)."""
    return math.floor(math.log2(1 / alpha)) + 1


def metric_reliability(
    clean: np.ndarray, noisy: np.ndarray, control: np.ndarray, alpha: float = 0.05
) -> MetricReliability:
    """The reliability check of one metric (see the module docstring).

    Args:
        clean: (N,) the metric on each pair's map of the clean input.
        noisy: (N,) on the same method's map of the noisy input (NaN where the noise changed the prediction).
        control: (N,) on the control map of the pair's case.
        alpha: significance level of the reactivity test.

    Raises:
        ValueError: arrays of different shapes.
    """
    values = [np.asarray(v, dtype=np.float64).reshape(-1) for v in (clean, noisy, control)]
    if len({v.shape for v in values}) != 1:
        raise ValueError(f"clean, noisy and control values must pair up, got shapes {[v.shape for v in values]}.")
    complete = np.isfinite(values[0]) & np.isfinite(values[1]) & np.isfinite(values[2])
    clean, noisy, control = (v[complete] for v in values)
    n_pairs = int(clean.size)
    decided = n_pairs >= min_pairs(alpha)
    spread = float(clean.std(ddof=1)) if n_pairs > 1 else math.nan
    if not spread > 0:  # NaN (too few pairs) or a metric that is the same for every pair
        return MetricReliability(n_pairs, spread, math.nan, math.nan, math.nan, False, False, decided)
    noise_delta, control_delta = np.abs(noisy - clean), np.abs(control - clean)
    noise_change, control_change = float(noise_delta.mean() / spread), float(control_delta.mean() / spread)
    pvalue = _wilcoxon_greater(control_delta, noise_delta)
    return MetricReliability(
        n_pairs, spread, noise_change, control_change, pvalue, noise_change <= MAX_NOISE_CHANGE, pvalue < alpha, decided
    )


def _wilcoxon_greater(first: np.ndarray, second: np.ndarray) -> float:
    """One-sided Wilcoxon signed-rank p of ``first > second`` (1 when every pair is equal: no evidence)."""
    if np.all(first == second):
        return 1.0
    return float(scipy_stats.wilcoxon(first, second, alternative="greater").pvalue)


def noisy_images(images: torch.Tensor, noise: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``images`` plus Gaussian noise of standard deviation ``noise * (max - min)`` of each image.

    Args:
        images: (B, C, *spatial) float.
        noise: the noise's standard deviation as a fraction of each image's intensity range.
        generator: the random stream (on the images' device); the global one when None.
    """
    flat = images.flatten(1)
    scale = (flat.amax(dim=1) - flat.amin(dim=1)).reshape(-1, *([1] * (images.ndim - 1)))
    draws = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return images + noise * scale * draws


def prediction_kept(prediction: torch.Tensor, noisy_prediction: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """(B,) bool: whether the noise left each case's prediction as it was.

    A classifier ((B, K) outputs) keeps its predicted class; a segmenter ((B, K, *spatial)) keeps the region it
    predicts for the explained class (or classes): Dice >= :data:`MIN_KEPT_DICE` (two empty regions agree).

    Args:
        prediction: the network's outputs on the clean images.
        noisy_prediction: its outputs on the noisy images, same shape.
        classes: (B,) explained class per case, or (B, K) classes explained together.
    """
    if prediction.ndim == 2:
        return prediction.argmax(dim=1) == noisy_prediction.argmax(dim=1)
    first, second = predicted_mask(prediction, classes), predicted_mask(noisy_prediction, classes)
    overlap = (first & second).flatten(1).sum(dim=1).double()
    sizes = first.flatten(1).sum(dim=1).double() + second.flatten(1).sum(dim=1).double()
    dice = torch.where(sizes > 0, 2 * overlap / sizes.clamp_min(1), torch.ones_like(sizes))
    return dice >= MIN_KEPT_DICE
