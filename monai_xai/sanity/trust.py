"""Randomisation checks beyond the top-down test, N-D, for classifiers and segmenters, and their verdicts.

Each check gives a per-case statistic (B,); over the cases, its mean is the verdict's statistic and a percentile
bootstrap gives its confidence interval (:func:`bootstrap_ci`). The Spearman checks take the absolute rank
correlation per case (:func:`rank_agreement`: an inverted map is no less dependent). The formulas:

- top-down (:data:`~monai_xai.enums.SanityCheck.TOP_DOWN`): Spearman between the trained network's maps and those of
  a copy with every weight re-initialised (Adebayo et al., NeurIPS 2018, "Sanity Checks for Saliency Maps");
  :func:`~monai_xai.sanity.model_randomisation_check`. Pass: mean <= 0.5.
- bottom-up (``BOTTOM_UP``): the same, with only the lower ``fraction`` of the network re-initialised, from the input
  up (:func:`bottom_up_randomised`). Top-down randomisation keeps the input layers, so a map can keep the input's
  structure through them (Binder et al., CVPR 2023, "Shortcomings of top-down randomization-based sanity checks for
  evaluations of deep neural network explanations"). Pass: mean <= 0.5.
- sMPRT (``SMPRT``): Spearman between the noise-smoothed maps of the trained and of the randomised network
  (:func:`smoothed_maps`: the mean map over ``n_samples - 1`` copies of the input with Gaussian noise of standard
  deviation ``noise_magnitude * (max - min)`` per case, and the clean input); the smoothing removes the shattered
  gradients' noise that otherwise makes maps of a random network look unlike anything (Hedstrom et al., XAI in Action
  workshop, NeurIPS 2023, "Sanity Checks Revisited: An Exploration to Repair the Model Parameter Randomisation Test").
  Pass: mean <= 0.5.
- eMPRT (``EMPRT``): the relative rise of the maps' discrete entropy, ``(H(randomised) - H(trained)) / H(trained)``
  (:func:`complexity_rise`, :func:`discrete_entropy`: Shannon entropy of a ``n_bins`` histogram over each map's range);
  a randomised network should give a less structured, more complex map (Hedstrom et al. 2023, as above). Pass:
  mean > 0.
- random logit (``RANDOM_LOGIT``): Spearman between the map of the explained class and the map of a random other class
  (:func:`random_other_class`) over the same pixel set (a segmenter's) (Sixt et al., ICML 2020, "When Explanations
  Lie: Why Many Modified BP Attributions Fail"). Pass: mean <= 0.5. Left out, with a warning, where it cannot tell
  anything (:func:`random_logit_not_applicable`): a class set or a single output has no other class, and with two
  classes and the probability score the other class's probability is one minus the explained one's, so its gradients
  are the explained ones negated by construction and the check would measure how a method treats the sign.
- data randomisation (``DATA``): Spearman between the maps of the trained network and of the same architecture trained
  on the training set with its labels permuted (Adebayo et al., NeurIPS 2018, section 4.2): a map that stays when
  the labels no longer mean anything does not show what the network learnt from them. The demo bundles' ``train.json``
  take ``--permute_labels true`` (:func:`~monai_xai.data.permuted_labels`). Pass: mean <= 0.5.

A control (:mod:`monai_xai.cams.controls`) passes none of them by construction; a check that one passes is not
discriminating for the bundle (:func:`non_discriminating`).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from monai_xai.cams import get_method
from monai_xai.enums import MethodFamily, SanityCheck, Score
from monai_xai.explanation import ExplainStep, ExplainTarget, Explanation
from monai_xai.sanity.randomisation import (
    MAX_RANDOMISATION_SPEARMAN,
    _reset_seeded,
    _resettable,
    _resettable_execution_order,
    spearman_correlation,
)

__all__ = [
    "MIN_EMPRT_RISE",
    "CheckVerdict",
    "rank_agreement",
    "bootstrap_ci",
    "discrete_entropy",
    "complexity_rise",
    "smoothed_maps",
    "random_other_class",
    "bottom_up_randomised",
    "batch_trust_statistics",
    "random_logit_not_applicable",
    "check_verdict",
    "non_discriminating",
]

# eMPRT passes when the maps' mean relative entropy rise under randomisation is above this
MIN_EMPRT_RISE = 0.0


def rank_agreement(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """The Spearman checks' per-case statistic: ``|Spearman(reference, other)|``.

    The absolute value, because an inverted map depends on the weights no less than a kept one (EigenCAM's principal
    component has no sign). A constant ``other`` against a non-constant ``reference`` counts as 0 (the map is gone: no
    rank agreement left); a constant ``reference`` is undefined (NaN).

    Args:
        reference: (B, 1, *spatial) maps of the trained network (or of the explained class).
        other: maps of the same shape to compare.

    Returns:
        (B,) float64 on the CPU, in [0, 1] or NaN.
    """
    correlation = spearman_correlation(reference, other).double().cpu().abs()
    spread = [(maps.flatten(1).amax(dim=1) > maps.flatten(1).amin(dim=1)).cpu() for maps in (reference, other)]
    return torch.where(spread[0] & ~spread[1], torch.zeros_like(correlation), correlation)


def bootstrap_ci(
    values: torch.Tensor, n_resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values`` over cases (Efron & Tibshirani 1993).

    Args:
        values: (N,) per-case statistics; NaN entries (undefined cases) are left out.
        n_resamples: bootstrap resamples of the cases.
        level: coverage of the interval.
        seed: seed of the resampling.

    Returns:
        (low, high); (nan, nan) without a finite value.
    """
    finite = values[torch.isfinite(values)].double().cpu()
    if finite.numel() == 0:
        return math.nan, math.nan
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, finite.numel(), (n_resamples, finite.numel()), generator=generator)
    means = finite[picks].mean(dim=1)
    tail = (1 - level) / 2
    low, high = torch.quantile(means, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return low.item(), high.item()


def discrete_entropy(maps: torch.Tensor, n_bins: int = 100) -> torch.Tensor:
    """Shannon entropy (nats) of each map's histogram: ``n_bins`` equal bins over the map's [min, max] (as
    ``scipy.stats.entropy(numpy.histogram(map, bins=n_bins)[0])``, Quantus' ``discrete_entropy``).

    Args:
        maps: (B, ...) maps, any number of trailing dims.
        n_bins: histogram bins.

    Returns:
        (B,) float64; 0 for a constant map (one bin holds everything).
    """
    entropies = []
    for values in maps.detach().flatten(1).double().cpu():
        low, high = values.min().item(), values.max().item()
        if high <= low:
            entropies.append(0.0)
            continue
        counts = torch.histc(values, bins=n_bins, min=low, max=high)
        shares = counts[counts > 0] / counts.sum()
        entropies.append(-(shares * shares.log()).sum().item())
    return torch.tensor(entropies, dtype=torch.float64)


def complexity_rise(trained: torch.Tensor, randomised: torch.Tensor, n_bins: int = 100) -> torch.Tensor:
    """eMPRT's statistic: the relative rise of the maps' entropy when the network is randomised,
    ``(H(randomised) - H(trained)) / H(trained)`` per case (:func:`discrete_entropy`).

    Returns:
        (B,) float64; NaN where the trained map is constant (zero entropy).
    """
    before, after = discrete_entropy(trained, n_bins), discrete_entropy(randomised, n_bins)
    return torch.where(before > 0, (after - before) / before.clamp_min(1e-300), torch.full_like(before, math.nan))


def smoothed_maps(
    explain: Callable[[torch.Tensor], Mapping[str, torch.Tensor]],
    images: torch.Tensor,
    n_samples: int = 8,
    noise_magnitude: float = 0.1,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    clean: Mapping[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """sMPRT's maps: the mean of ``explain`` over ``n_samples - 1`` noisy copies of ``images`` and the clean images.

    The noise of a case has standard deviation ``noise_magnitude * (max - min)`` of that case (Hedstrom et al. 2023;
    Quantus' ``SmoothMPRT``, whose last sample is the clean input too).

    Args:
        explain: images (B, C, *spatial) -> {method: (B, 1, *spatial) map}.
        images: (B, C, H, W) or (B, C, D, H, W).
        n_samples: maps averaged, >= 1 (1: the clean map alone).
        noise_magnitude: the noise's standard deviation as a share of each case's intensity range.
        generator: random generator on the images' device (None: the global one).
        noise: (n_samples - 1, B, C, *spatial) standard normal draws to use instead (e.g. to reproduce another
            tool's draws).
        clean: {method: (B, 1, *spatial)} the maps ``explain`` gives the clean images, when they are already known
            (the randomisation checks have them): the clean sample is then not explained again.

    Returns:
        {method: (B, 1, *spatial) mean map}.
    """
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int (maps averaged), got {n_samples!r}.")
    spread = images.flatten(1).amax(dim=1) - images.flatten(1).amin(dim=1)
    scale = (noise_magnitude * spread).reshape(-1, *([1] * (images.ndim - 1)))
    total: dict[str, torch.Tensor] = {}
    for index in range(n_samples):
        if index == n_samples - 1 and clean is not None:
            for method, values in clean.items():
                total[method] = total.get(method, 0) + values.detach().double()
            continue
        if index == n_samples - 1:
            noisy = images
        else:
            draw = (
                noise[index].to(images)
                if noise is not None
                else torch.randn(images.shape, generator=generator, device=images.device)
            )
            noisy = images + draw * scale
        for method, values in explain(noisy).items():
            total[method] = total.get(method, 0) + values.detach().double()
    return {method: (values / n_samples).float() for method, values in total.items()}


def random_other_class(
    classes: torch.Tensor, num_classes: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A class drawn uniformly from the ``num_classes - 1`` classes other than each case's ``classes`` (B,)."""
    offsets = torch.randint(1, num_classes, classes.shape, generator=generator, device=classes.device)
    return (classes + offsets) % num_classes


def bottom_up_randomised(
    model: nn.Module, images: torch.Tensor, step: ExplainStep, fraction: float = 0.5, seed: int = 0
) -> nn.Module:
    """A deep copy of ``model`` whose lower ``fraction`` of modules (those with parameters and ``reset_parameters``,
    in the order a forward pass calls them, at least one) are re-initialised with ``seed``."""
    if not 0 < fraction <= 1:
        raise ValueError(
            f"fraction must be in (0, 1] (the share of modules re-initialised from the input), got {fraction}."
        )
    order = _resettable_execution_order(model, images, step)
    if not order:
        raise ValueError("the model has no module with parameters and reset_parameters: there is nothing to randomise.")
    randomised = copy.deepcopy(model)
    modules = dict(randomised.named_modules())
    lower = order[: max(1, math.ceil(fraction * len(order)))]
    _reset_seeded([module for name in lower for module in modules[name].modules() if _resettable(module)], seed)
    return randomised


def random_logit_not_applicable(num_classes: int, class_idx: torch.Tensor, score: Score | str) -> str | None:
    """Why the random-logit check cannot tell anything about maps of this target; None when it can.

    Args:
        num_classes: the network's output channels.
        class_idx: (B,) the explained class of each case, or (B, K) class sets.
        score: the explained score (:class:`~monai_xai.enums.Score`).
    """
    if class_idx.ndim != 1 or num_classes < 2:
        return "a class set, or a single output, leaves no other class to explain"
    if num_classes == 2 and Score(score) == Score.PROBABILITY:
        return (
            "with two classes and the probability score, the other class's probability is one minus the explained "
            "one's, so its gradients are the explained ones negated by construction: the check would measure how a "
            "method treats the sign, not whether its map follows the class"
        )
    return None


def batch_trust_statistics(
    network: nn.Module,
    images: torch.Tensor,
    step: ExplainStep,
    trained: Explanation,
    randomised_maps: Mapping[str, torch.Tensor],
    randomised_network: nn.Module,
    checks: Sequence[SanityCheck],
    seed: int = 0,
    n_samples: int = 8,
    noise_magnitude: float = 0.1,
    n_bins: int = 100,
    bottom_up_fraction: float = 0.5,
    generator: torch.Generator | None = None,
    permuted_network: nn.Module | None = None,
) -> dict[SanityCheck, dict[str, torch.Tensor]]:
    """Every requested check's per-case statistic of one batch: ``{check: {method: (B,)}}`` (NaN where undefined); the
    random-logit check is left out, with a warning saying why, where it does not apply
    (:func:`random_logit_not_applicable`).

    Args:
        network: the trained network.
        images: (B, C, *spatial) batch.
        step: the explanation step (its layer chosen).
        trained: the trained network's explanation of ``images``.
        randomised_maps: {method: maps} of the fully re-initialised network, explained with the trained target.
        randomised_network: that network.
        checks: the checks to compute.
        seed: re-initialisation seed of the bottom-up copy.
        n_samples, noise_magnitude: sMPRT's smoothing (:func:`smoothed_maps`).
        n_bins: eMPRT's histogram bins (:func:`discrete_entropy`).
        bottom_up_fraction: share of the modules the bottom-up check re-initialises (:func:`bottom_up_randomised`).
        generator: random generator of the noise and the random classes, on the images' device.
        permuted_network: the same architecture trained on permuted labels (the data randomisation check).

    Raises:
        ValueError: the data randomisation check without ``permuted_network``.
    """
    methods = list(trained.maps)
    target = trained.target
    statistics: dict[SanityCheck, dict[str, torch.Tensor]] = {}

    def spearman(first: Mapping[str, torch.Tensor], second: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {method: rank_agreement(first[method], second[method]) for method in methods}

    for check in checks:
        if check == SanityCheck.TOP_DOWN:
            statistics[check] = spearman(trained.maps, randomised_maps)
        elif check == SanityCheck.BOTTOM_UP:
            lower = bottom_up_randomised(network, images, step, bottom_up_fraction, seed)
            statistics[check] = spearman(trained.maps, step(lower, images, target=target).maps)
        elif check == SanityCheck.SMPRT:

            def explain_with(model: nn.Module) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
                return lambda noisy: step(model, noisy, target=target).maps

            # the clean sample's maps are the trained and the randomised network's maps, already computed
            smooth = [
                smoothed_maps(explain_with(model), images, n_samples, noise_magnitude, generator, clean=maps)
                for model, maps in ((network, trained.maps), (randomised_network, randomised_maps))
            ]
            statistics[check] = spearman(*smooth)
        elif check == SanityCheck.EMPRT:
            statistics[check] = {
                method: complexity_rise(trained.maps[method], randomised_maps[method], n_bins) for method in methods
            }
        elif check == SanityCheck.DATA:
            if permuted_network is None:
                raise ValueError(
                    "the data randomisation check needs the network trained on permuted labels (permuted_weights); "
                    "the demo bundles train one with `--permute_labels true` (see their docs/README.md)."
                )
            statistics[check] = spearman(trained.maps, step(permuted_network, images, target=target).maps)
        elif check == SanityCheck.RANDOM_LOGIT:
            num_classes = trained.prediction.shape[1]
            reason = random_logit_not_applicable(num_classes, target.class_idx, step.request.score)
            if reason is not None:
                warnings.warn(f"the random-logit check is left out: {reason}.", stacklevel=2)
                continue
            other = random_other_class(target.class_idx, num_classes, generator)
            other_maps = step(network, images, target=ExplainTarget(other, target.pixel_set)).maps
            statistics[check] = spearman(trained.maps, other_maps)
    return statistics


@dataclass(frozen=True)
class CheckVerdict:
    """One method's verdict in one check.

    Attributes:
        check: the check.
        statistic: the mean per-case statistic over the cases where it is defined (NaN: none).
        ci_low, ci_high: its percentile bootstrap confidence interval (:func:`bootstrap_ci`).
        undefined: cases without a statistic (a constant map; a class set in the random-logit check).
        passed: the verdict (NaN statistics fail: no evidence that the map depends on the network).
    """

    check: SanityCheck
    statistic: float
    ci_low: float
    ci_high: float
    undefined: int
    passed: bool


def check_verdict(check: SanityCheck, values: torch.Tensor, n_resamples: int = 1000, seed: int = 0) -> CheckVerdict:
    """The verdict of ``check`` on per-case ``values`` (N,): eMPRT passes when the mean rise is above
    :data:`MIN_EMPRT_RISE`, the others when the mean Spearman is at most
    :data:`~monai_xai.sanity.MAX_RANDOMISATION_SPEARMAN`."""
    finite = values[torch.isfinite(values)]
    statistic = finite.mean().item() if finite.numel() else math.nan
    low, high = bootstrap_ci(values, n_resamples, seed=seed)
    passed = statistic > MIN_EMPRT_RISE if check == SanityCheck.EMPRT else statistic <= MAX_RANDOMISATION_SPEARMAN
    return CheckVerdict(check, statistic, low, high, int(values.numel() - finite.numel()), bool(passed))


def non_discriminating(verdicts: Mapping[str, Mapping[SanityCheck, CheckVerdict]]) -> dict[SanityCheck, list[str]]:
    """``{check: [controls that pass it]}`` of ``{method: {check: verdict}}``, for the checks some control passes:
    those checks are not discriminating for this bundle."""
    passed: dict[SanityCheck, list[str]] = {}
    for method, by_check in verdicts.items():
        if get_method(method).family != MethodFamily.CONTROL:
            continue
        for check, verdict in by_check.items():
            if verdict.passed:
                passed.setdefault(check, []).append(method)
    return passed
