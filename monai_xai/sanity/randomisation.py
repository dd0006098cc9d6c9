"""Model parameter randomisation test (Adebayo et al., 2018, "Sanity Checks for Saliency Maps") for CAM methods.

Explain with the trained network and with a copy whose weights are re-initialised: a map that barely changes (high
Spearman rank correlation) does not depend on what the network learnt.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from monai_xai.cams import LayerSpec
from monai_xai.explanation import ExplainRequest, ExplainStep, Explanation

__all__ = [
    "MAX_RANDOMISATION_SPEARMAN",
    "spearman_correlation",
    "randomize_weights",
    "RandomisationResult",
    "model_randomisation_check",
    "CascadeResult",
    "cascading_randomisation",
]

# Acceptance figure: a CAM's Spearman correlation with the map of the weight-randomised network is at most this.
MAX_RANDOMISATION_SPEARMAN = 0.5


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """(B, N) -> (B, N) float64 ranks 1..N per row; tied values share their average rank (scipy's ``rankdata``).

    One sort: in sorted order, a run of equal values spans positions ``first .. last`` (a running max of the runs'
    starts, a running min of their ends from the right) and each of its values gets ``(first + last) / 2 + 1``,
    scattered back to where the value came from."""
    ordered, order = values.sort(dim=1)
    count = values.shape[1]
    positions = torch.arange(count, device=values.device).expand_as(ordered)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, positions, 0).cummax(dim=1).values
    last = torch.where(ends, positions, count - 1).flip(1).cummin(dim=1).values.flip(1)
    return torch.empty_like(ordered, dtype=torch.float64).scatter_(1, order, (first + last + 2).to(torch.float64) / 2)


def spearman_correlation(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation between two batches of maps, per sample (ties get average ranks).

    Args:
        first: (B, ...) real tensor, e.g. saliency maps (B, 1, *spatial).
        second: tensor of the same shape.

    Returns:
        (B,) float32 tensor in [-1, 1]; NaN where a map is constant (e.g. all zeros), for which no rank correlation
        exists (as ``scipy.stats.spearmanr``).
    """
    if not isinstance(first, torch.Tensor) or not isinstance(second, torch.Tensor):
        raise TypeError("first and second must be torch.Tensors of the same shape (B, ...).")
    if first.shape != second.shape or first.ndim < 2:
        raise ValueError(
            f"first and second must share one shape (B, ...) with a batch dim, got {tuple(first.shape)} and "
            f"{tuple(second.shape)}."
        )
    if not (torch.isfinite(first).all() and torch.isfinite(second).all()):
        raise ValueError("the maps contain NaN or infinite values; rank correlation needs finite values.")
    ranks = [_average_ranks(maps.flatten(1).to(second.device)) for maps in (first, second)]
    centred = [rank - rank.mean(dim=1, keepdim=True) for rank in ranks]
    covariance = (centred[0] * centred[1]).sum(dim=1)
    scale = centred[0].square().sum(dim=1).sqrt() * centred[1].square().sum(dim=1).sqrt()
    correlation = torch.where(scale > 0, covariance / scale.clamp_min(1e-300), torch.full_like(scale, float("nan")))
    return correlation.clamp(-1, 1).to(torch.float32)


def _resettable(module: nn.Module) -> bool:
    return callable(getattr(module, "reset_parameters", None))


def _reset_seeded(modules: Sequence[nn.Module], seed: int) -> None:
    """Re-initialise ``modules`` in order from a random stream seeded with ``seed``; the global state is untouched."""
    cuda_devices = sorted(
        {param.device for module in modules for param in module.parameters() if param.is_cuda}, key=str
    )
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        for module in modules:
            module.reset_parameters()


def randomize_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` whose modules are re-initialised with their own ``reset_parameters`` (seeded).

    This is the full ("cascading" to the input) randomisation of Adebayo et al.; BatchNorm layers also reset their
    running statistics. The global random state and ``model`` itself are left untouched.

    Args:
        model: the trained network.
        seed: seed of the re-initialisation.

    Returns:
        the re-initialised copy, on the same devices as ``model``.

    Warns:
        UserWarning: when some parameters belong to modules without ``reset_parameters`` (they keep the trained
            values, so the test is partial), or nothing could be reset at all.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    randomised = copy.deepcopy(model)
    resettable = [module for module in randomised.modules() if _resettable(module)]
    _reset_seeded(resettable, seed)
    kept = [
        f"{name}.{param_name}" if name else param_name
        for name, module in randomised.named_modules()
        if not _resettable(module)
        for param_name, _ in module.named_parameters(recurse=False)
    ]
    if not resettable:
        warnings.warn(
            "no module of the model has reset_parameters: the 'randomised' copy equals the model.", stacklevel=2
        )
    elif kept:
        warnings.warn(
            f"parameters without a reset_parameters module keep their trained values: {kept[:5]}.", stacklevel=2
        )
    return randomised


@dataclass
class RandomisationResult:
    """Outcome of :func:`model_randomisation_check`.

    Attributes:
        correlation: method -> (B,) Spearman correlation between the trained and the randomised model's maps (NaN
            where a map is constant).
        trained_maps: method -> (B, 1, *spatial) maps of the trained model.
        randomised_maps: method -> (B, 1, *spatial) maps of the re-initialised copy.
        layers: method -> the layer(s) it explained (the request's, or the one chosen on the trained network).
        trained: the trained network's whole explanation (its target, its prediction), for the checks that explain
            again (:mod:`monai_xai.sanity.trust`).
        randomised_network: the re-initialised copy.
    """

    correlation: dict[str, torch.Tensor]
    trained_maps: dict[str, torch.Tensor]
    randomised_maps: dict[str, torch.Tensor]
    layers: dict[str, LayerSpec]
    trained: Explanation | None = field(default=None, repr=False)
    randomised_network: nn.Module | None = field(default=None, repr=False)


def _step(request: ExplainRequest | ExplainStep) -> ExplainStep:
    return request if isinstance(request, ExplainStep) else ExplainStep(request)


def model_randomisation_check(
    model: nn.Module, images: torch.Tensor, request: ExplainRequest | ExplainStep, seed: int = 0
) -> RandomisationResult:
    """Model parameter randomisation test (Adebayo et al., 2018) for CAM methods, 2D or 3D, batched.

    The target is fixed by the TRAINED model and then used for both explanations, so that only the weights change:
    a classifier's predicted class, a segmenter's predicted region (``"pred"``, ``"largest_component"``, ...) are
    those of the trained model, as tensors (:attr:`~monai_xai.explanation.Explanation.target`), not the randomised
    model's.

    A method passes when the correlation is at most :data:`MAX_RANDOMISATION_SPEARMAN` (0.5).

    Args:
        model: trained network (left unchanged; the randomised one is a deep copy).
        images: (B, C, H, W) or (B, C, D, H, W) float tensor on the model's device.
        request: what to explain (methods, layers, class, pixel set, score, window), or an
            :class:`~monai_xai.explanation.ExplainStep` that already chose its layer.
        seed: seed of the re-initialisation (:func:`randomize_weights`).

    Returns:
        a :class:`RandomisationResult` (correlations and both sets of maps).
    """
    step = _step(request)
    trained = step(model, images)
    randomised_network = randomize_weights(model, seed)
    randomised = step(randomised_network, images, target=trained.target)
    correlation = {
        method: spearman_correlation(trained.maps[method], randomised.maps[method]) for method in trained.maps
    }
    return RandomisationResult(correlation, trained.maps, randomised.maps, trained.layers, trained, randomised_network)


def _resettable_execution_order(model: nn.Module, images: torch.Tensor, step: ExplainStep) -> list[str]:
    """Names of the modules that hold parameters of their own and can reset them, in the order a forward pass of
    ``images`` (with the step's window) first calls them (modules the pass never calls are left out: they cannot
    change the output)."""
    candidates = {
        module: name
        for name, module in model.named_modules()
        if _resettable(module) and next(module.parameters(recurse=False), None) is not None
    }
    called: list[str] = []
    handles = [
        module.register_forward_hook(lambda module, _inputs, _output: called.append(candidates[module]))
        for module in candidates
    ]
    try:
        step.predict(model, images)
    finally:
        for handle in handles:
            handle.remove()
    return list(dict.fromkeys(called))


@dataclass
class CascadeResult:
    """Outcome of :func:`cascading_randomisation`.

    Attributes:
        layers: the modules in the order they were randomised, from the output down; step ``k`` has the first
            ``k + 1`` of them re-initialised.
        correlation: method -> (L, B) Spearman correlation between the trained maps and the maps after each step (NaN
            where a map is constant).
    """

    layers: list[str]
    correlation: dict[str, torch.Tensor]


def cascading_randomisation(
    model: nn.Module,
    images: torch.Tensor,
    request: ExplainRequest | ExplainStep,
    seed: int = 0,
    layers: Sequence[str] | None = None,
    progress: bool = False,
) -> CascadeResult:
    """Cascading model parameter randomisation (Adebayo et al., 2018, Fig. 2): re-initialise the network one module
    at a time from the output down, and after each step compare the maps with the trained network's.

    It shows which weights a map depends on: a method whose maps keep a high rank correlation until the modules below
    the CAM layer are reached reads the activations rather than what the layers above learnt (EigenCAM, which uses
    no gradients, is exactly unchanged while only modules above its layer are randomised). The target is fixed by the
    trained model, as in :func:`model_randomisation_check`.

    Args:
        model: trained network (left unchanged; the steps work on a deep copy).
        images: (B, C, H, W) or (B, C, D, H, W) float tensor on the model's device.
        request: what to explain, or an :class:`~monai_xai.explanation.ExplainStep` (see
            :func:`model_randomisation_check`).
        seed: step ``k`` re-initialises its module(s) with seed ``seed + k``, whatever the other steps do.
        layers: module names to randomise, in this order; a name of a container re-initialises everything in it that
            has ``reset_parameters`` in one step (e.g. ``["fc", "layer4", "layer3"]``). None: every module with
            parameters of its own and ``reset_parameters``, in reverse order of a forward pass.
        progress: show a progress bar over the steps (each explains ``images`` once).

    Returns:
        a :class:`CascadeResult`.
    """
    step = _step(request)
    trained = step(model, images)
    layers = list(reversed(_resettable_execution_order(model, images, step))) if layers is None else list(layers)
    randomised = copy.deepcopy(model)
    modules = dict(randomised.named_modules())
    unknown = [name for name in layers if name not in modules]
    if unknown or not layers:
        raise ValueError(
            f"layers to randomise must be module names of the model, got unknown {unknown}"
            if unknown
            else "the model has no module with parameters and reset_parameters: there is nothing to randomise."
        )
    steps: dict[str, list[torch.Tensor]] = {method: [] for method in trained.maps}
    for index, name in enumerate(tqdm(layers, desc="cascading randomisation", unit="step", disable=not progress)):
        _reset_seeded([module for module in modules[name].modules() if _resettable(module)], seed + index)
        maps = step(randomised, images, target=trained.target).maps
        for method in steps:
            steps[method].append(spearman_correlation(trained.maps[method], maps[method]))
    return CascadeResult(layers, {method: torch.stack(values) for method, values in steps.items()})
