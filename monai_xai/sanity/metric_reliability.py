"""Can a metric's ranking of methods be trusted? Noise resilience and adversary reactivity, after MetaQuantus.

A metric that ranks explanation methods must do two things (Hedstrom et al., TMLR 2023, "The Meta-Evaluation Problem
in Explainable AI: Identifying Reliable Estimators with MetaQuantus"; Tomsett et al., AAAI 2020, "Sanity Checks for
Saliency Metrics"):

- **stay put** under minor perturbations that leave the model's behaviour as it was: the input with a little Gaussian
  noise (:func:`noisy_images`), and the network with a little multiplicative noise on its weights
  (:func:`perturbed_weights`), each kept only where the prediction is unchanged (:func:`prediction_kept`), the case
  explained again;
- **move** under disruptive ones: the map replaced by a control that knows nothing of the network
  (:func:`~monai_xai.cams.controls.random_control`), and the map of a network whose weights are all re-initialised
  (:func:`~monai_xai.sanity.randomisation.randomize_weights`), both scored against the trained network.

Over the pairs (case, method) of one network and layer, with ``q`` the metric on the method's map, ``q_k`` on the map
after perturbation ``k`` and ``s`` the standard deviation of ``q`` over the pairs (the spread that separates methods
and cases, the unit of the metric's ranking):

- a pair's minor change is the mean over the minor perturbations of ``|q_k - q|`` (those that kept the prediction);
  the noise change is its mean over the pairs divided by ``s``; **resilient** when at most :data:`MAX_NOISE_CHANGE`;
- each disruptive perturbation's change is the mean of ``|q_k - q|`` divided by ``s``; **reactive** when every
  disruptive perturbation changes the metric more than the minor ones do: a one-sided Wilcoxon signed-rank test of
  ``|q_k - q| > minor change`` over the pairs, p < alpha for each ``k``.

A metric is **reliable** when it is both. One that ignores the map (the same value for any map) changes by exactly 0
under the control and is never reactive; one that shifts with the noise as much as with a broken map is not
resilient or not reactive. A metric that is the same for every pair (``s = 0``) cannot rank anything and is neither.
With fewer than :func:`min_pairs` pairs no Wilcoxon test can reach ``alpha`` (its smallest p is ``2^-n``): the check
is undecided (``reliable`` is None), not failed.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats as scipy_stats
from torch import nn

from monai_xai.cams.targets import predicted_mask

__all__ = [
    "MAX_NOISE_CHANGE",
    "MIN_KEPT_DICE",
    "MetricReliability",
    "metric_reliability",
    "min_pairs",
    "noisy_images",
    "perturbed_weights",
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
        n_pairs: the pairs with a clean value, every disruptive value and at least one minor value.
        spread: standard deviation of the clean values over the pairs, the unit of every change.
        noise_change: mean minor change (see the module docstring), in units of ``spread``.
        changes: each perturbation's mean absolute change, in units of ``spread`` (minor ones over the pairs where
            they kept the prediction).
        pvalues: each disruptive perturbation's one-sided Wilcoxon p of changing the metric more than the minor ones.
        resilient: ``noise_change <= MAX_NOISE_CHANGE``.
        reactive: every p below alpha.
        decided: whether there were enough pairs for the test to reach ``alpha`` (:func:`min_pairs`).
        alpha: the significance level of the reactivity tests.
    """

    n_pairs: int
    spread: float
    noise_change: float
    changes: Mapping[str, float]
    pvalues: Mapping[str, float]
    resilient: bool
    reactive: bool
    decided: bool = True
    alpha: float = 0.05

    @property
    def pvalue(self) -> float:
        """The largest (weakest) of the disruptive perturbations' p-values."""
        values = [p for p in self.pvalues.values() if not math.isnan(p)]
        return max(values) if values else math.nan

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
        failed = [] if self.resilient else ["not resilient"]
        if not self.reactive:
            missed = [name for name, p in self.pvalues.items() if not p < self.alpha]
            failed.append(f"not reactive to {', '.join(missed)}")
        return ", ".join(failed)


def min_pairs(alpha: float) -> int:
    """The fewest pairs whose one-sided Wilcoxon signed-rank test can give ``p < alpha`` (``2^-n < alpha``)."""
    return math.floor(math.log2(1 / alpha)) + 1


def metric_reliability(
    clean: np.ndarray,
    minor: Mapping[str, np.ndarray],
    disruptive: Mapping[str, np.ndarray],
    alpha: float = 0.05,
) -> MetricReliability:
    """The reliability check of one metric (see the module docstring).

    Args:
        clean: (N,) the metric on each pair's map.
        minor: {perturbation: (N,) the metric on the pair's map after it}, NaN where it changed the prediction (e.g.
            ``{"input noise": ..., "model noise": ...}``).
        disruptive: {perturbation: (N,) the metric on the pair's map after it} (e.g. ``{"random map": ...,
            "random model": ...}``).
        alpha: significance level of the reactivity tests.

    Raises:
        ValueError: no minor or no disruptive perturbation, or arrays of different shapes.
    """
    if not minor or not disruptive:
        raise ValueError("the check needs at least one minor and one disruptive perturbation.")
    clean = np.asarray(clean, dtype=np.float64).reshape(-1)
    minor = {name: np.asarray(v, dtype=np.float64).reshape(-1) for name, v in minor.items()}
    disruptive = {name: np.asarray(v, dtype=np.float64).reshape(-1) for name, v in disruptive.items()}
    shapes = {v.shape for v in (clean, *minor.values(), *disruptive.values())}
    if len(shapes) != 1:
        raise ValueError(f"the clean and perturbed values must pair up, got shapes {sorted(shapes)}.")
    minor_deltas = np.abs(np.stack(list(minor.values())) - clean)
    kept = np.isfinite(minor_deltas).any(axis=0)
    complete = np.isfinite(clean) & kept & np.all([np.isfinite(v) for v in disruptive.values()], axis=0)
    clean, minor_deltas = clean[complete], minor_deltas[:, complete]
    n_pairs = int(clean.size)
    decided = n_pairs >= min_pairs(alpha)
    spread = float(clean.std(ddof=1)) if n_pairs > 1 else math.nan
    names = [*minor, *disruptive]
    if not spread > 0:  # NaN (too few pairs) or a metric that is the same for every pair
        undefined = dict.fromkeys(names, math.nan)
        return MetricReliability(
            n_pairs, spread, math.nan, undefined, dict.fromkeys(disruptive, math.nan), False, False, decided, alpha
        )
    pair_minor = np.nanmean(minor_deltas, axis=0)
    changes = {name: float(np.nanmean(deltas) / spread) for name, deltas in zip(minor, minor_deltas)}
    pvalues = {}
    for name, values in disruptive.items():
        deltas = np.abs(values[complete] - clean)
        changes[name] = float(deltas.mean() / spread)
        pvalues[name] = _wilcoxon_greater(deltas, pair_minor)
    noise_change = float(pair_minor.mean() / spread)
    reactive = all(p < alpha for p in pvalues.values())
    return MetricReliability(
        n_pairs, spread, noise_change, changes, pvalues, noise_change <= MAX_NOISE_CHANGE, reactive, decided, alpha
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


def perturbed_weights(model: nn.Module, noise: float, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with every floating-point parameter multiplied by ``1 + noise * N(0, 1)`` (drawn per
    element from ``seed``; MetaQuantus's minor model perturbation). ``model`` and the global random state are left as
    they were.

    Args:
        model: the trained network.
        noise: the relative standard deviation of the weight noise (e.g. 0.01).
        seed: seed of the noise.
    """
    perturbed = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in perturbed.parameters():
            if parameter.is_floating_point():
                draws = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
                parameter.mul_(1 + noise * draws.to(parameter.device))
    return perturbed


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
