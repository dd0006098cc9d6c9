"""Sanity checks for saliency maps: a random-map baseline for localisation metrics and the model randomisation test.

- :func:`random_map_baseline`: the expected score of a random saliency map under a localisation metric such as
  :func:`monai_xai.metrics.ehr_auc`. A CAM that localises a lesion no better than noise has learnt nothing about it.
- :func:`model_randomisation_check`: Adebayo et al. (2018), "Sanity Checks for Saliency Maps", model parameter
  randomisation test: explain with the trained network and with a copy whose weights are re-initialised; a map that
  barely changes (high Spearman rank correlation) does not depend on what the network learnt.
- :func:`bundle_sanity_checks` / :func:`bundle_sanity_table`: both checks for every CAM method of a MONAI bundle on a
  held-out phantom test set with ground-truth lesion masks, optionally with a picture of both networks' maps of the
  first case. Command line::

      python -m monai_xai.sanity bundles/lesion_classification_3d --n_cases 16 --figure randomisation.png
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from torch import nn

from monai_xai.cams import GRADIENT_METHODS, CAMExplainer, LayerSpec, group_methods_by_layer, resolve_layers
from monai_xai.cams.methods import METHODS_WITHOUT_GRADIENTS
from monai_xai.cams.targets import SegmentationTarget, build_target
from monai_xai.data import write_phantom_dataset
from monai_xai.metrics import ehr_auc
from monai_xai.utils import normalize_per_sample, preserved_model_state
from monai_xai.visualize import save_map_grid_png

__all__ = [
    "RANDOM_MAP_KINDS",
    "MIN_LOCALISATION_RATIO",
    "MAX_RANDOMISATION_SPEARMAN",
    "random_saliency_maps",
    "random_map_baseline",
    "spearman_correlation",
    "randomize_weights",
    "RandomisationResult",
    "model_randomisation_check",
    "MethodSanity",
    "bundle_sanity_checks",
    "sanity_markdown",
    "bundle_sanity_table",
]

RANDOM_MAP_KINDS = ("uniform", "smooth")
# Acceptance figures: a CAM's mean localisation score must be at least this multiple of a random map's ...
MIN_LOCALISATION_RATIO = 2.0
# ... and its Spearman correlation with the map of the weight-randomised network at most this.
MAX_RANDOMISATION_SPEARMAN = 0.5


def _check_batch_masks(masks: torch.Tensor) -> None:
    if not isinstance(masks, torch.Tensor):
        raise TypeError(f"masks must be a torch.Tensor (B, 1, *spatial), got {type(masks).__name__}.")
    if masks.ndim not in (4, 5) or masks.shape[1] != 1:
        raise ValueError(
            f"masks must have shape (B, 1, H, W) or (B, 1, D, H, W), got {tuple(masks.shape)}; "
            "add the channel dim, e.g. masks[:, None]."
        )


def _grid_shape(grid_size: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    grid = (grid_size,) * spatial_dims if isinstance(grid_size, int) else tuple(grid_size)
    if len(grid) != spatial_dims or not all(isinstance(size, int) and size >= 1 for size in grid):
        raise ValueError(
            f"grid_size must be a positive int or {spatial_dims} positive ints (one per spatial dim), "
            f"got {grid_size!r}."
        )
    return grid


def random_saliency_maps(
    shape: Sequence[int],
    kind: str = "uniform",
    grid_size: int | Sequence[int] = 4,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Random saliency maps, min-max normalised per sample like CAMs (so each map spans exactly [0, 1]).

    Args:
        shape: (B, 1, *spatial) of the maps, 2 or 3 spatial dims.
        kind: ``"uniform"``: i.i.d. uniform values per voxel. ``"smooth"``: i.i.d. uniform values on a coarse grid
            of ``grid_size``, upsampled (bilinear / trilinear, ``align_corners=False``, as
            :class:`~monai_xai.cams.CAMExplainer` upsamples its maps); with the target layer's feature size as grid,
            this is the fairer baseline for CAMs, whose maps are just as smooth.
        grid_size: coarse grid of ``kind="smooth"``: one int for every spatial dim or one per dim. Default 4.
        generator: torch random generator on ``device``; None uses the global one.
        device: device of the maps (default CPU).

    Returns:
        float32 tensor of ``shape`` with values in [0, 1].
    """
    shape = tuple(shape)
    if len(shape) not in (4, 5) or shape[1] != 1:
        raise ValueError(f"shape must be (B, 1, H, W) or (B, 1, D, H, W), got {shape}.")
    if kind not in RANDOM_MAP_KINDS:
        raise ValueError(f"kind must be one of {RANDOM_MAP_KINDS}, got {kind!r}.")
    if kind == "uniform":
        maps = torch.rand(shape, generator=generator, device=device)
    else:
        coarse = torch.rand((*shape[:2], *_grid_shape(grid_size, len(shape) - 2)), generator=generator, device=device)
        mode = "bilinear" if len(shape) == 4 else "trilinear"
        maps = F.interpolate(coarse, size=shape[2:], mode=mode, align_corners=False)
    return normalize_per_sample(maps)


def random_map_baseline(
    metric_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    masks: torch.Tensor,
    n_draws: int = 32,
    kind: str = "uniform",
    grid_size: int | Sequence[int] = 4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Expected score of a random saliency map under a localisation metric, per sample (Monte Carlo mean).

    For ``kind="uniform"`` and :func:`monai_xai.metrics.ehr_auc` (equidistant thresholds, voxel counts) the exact
    expectation is the mask's share of the image: every voxel is equally likely to be above any threshold.

    Args:
        metric_fn: ``metric_fn(saliency, masks) -> (B,)``, saliency (B, 1, *spatial) in [0, 1], e.g. ``ehr_auc`` or
            ``functools.partial(ehr_auc, thresholds="quantile")``.
        masks: (B, 1, *spatial) ground-truth regions (bool or 0/1), 2D or 3D.
        n_draws: random maps per sample, >= 1 (the standard error shrinks as ``1 / sqrt(n_draws)``). Default 32.
        kind: ``"uniform"`` or ``"smooth"``; see :func:`random_saliency_maps`.
        grid_size: coarse grid of ``kind="smooth"`` (e.g. the CAM target layer's feature size).
        generator: torch random generator on the masks' device, for reproducible baselines; None uses the global one.

    Returns:
        (B,) float tensor on the masks' device: the mean score over the draws (NaN where the metric is undefined,
        e.g. an empty mask).
    """
    if not callable(metric_fn):
        raise TypeError(f"metric_fn must be callable as metric_fn(saliency, masks) -> (B,), got {metric_fn!r}.")
    _check_batch_masks(masks)
    if not isinstance(n_draws, int) or n_draws < 1:
        raise ValueError(f"n_draws must be a positive int (random maps per sample), got {n_draws!r}.")
    total = torch.zeros(masks.shape[0], dtype=torch.float64, device=masks.device)
    for _ in range(n_draws):
        saliency = random_saliency_maps(masks.shape, kind, grid_size, generator, masks.device)
        scores = metric_fn(saliency, masks)
        if not isinstance(scores, torch.Tensor) or scores.shape != (masks.shape[0],):
            raise ValueError(
                f"metric_fn must return one score per sample, shape ({masks.shape[0]},), "
                f"got {getattr(scores, 'shape', type(scores).__name__)}."
            )
        total += scores.to(torch.float64)
    return (total / n_draws).to(torch.float32)


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """(B, N) -> (B, N) float64 ranks 1..N per row; tied values share their average rank (scipy's ``rankdata``)."""
    ordered = values.sort(dim=1).values
    below = torch.searchsorted(ordered, values, right=False)
    up_to = torch.searchsorted(ordered, values, right=True)
    return (below + up_to + 1).to(torch.float64) / 2


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
    cuda_devices = sorted({param.device for param in randomised.parameters() if param.device.type == "cuda"}, key=str)
    resettable = [module for module in randomised.modules() if callable(getattr(module, "reset_parameters", None))]
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        for module in resettable:
            module.reset_parameters()
    kept = [
        f"{name}.{param_name}" if name else param_name
        for name, module in randomised.named_modules()
        if not callable(getattr(module, "reset_parameters", None))
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
    """

    correlation: dict[str, torch.Tensor]
    trained_maps: dict[str, torch.Tensor]
    randomised_maps: dict[str, torch.Tensor]


def model_randomisation_check(
    model: nn.Module,
    target_layers: str | nn.Module | Sequence[str | nn.Module],
    images: torch.Tensor,
    methods: str | Sequence[str] = ("gradcam",),
    class_idx: int | Sequence[int] | torch.Tensor | None = None,
    mask: str | torch.Tensor | Sequence[int | slice] | None = None,
    seed: int = 0,
    **explainer_kwargs,
) -> RandomisationResult:
    """Model parameter randomisation test (Adebayo et al., 2018) for CAM methods, 2D or 3D, batched.

    The target is fixed by the TRAINED model and then used for both explanations, so that only the weights change:
    ``class_idx=None`` becomes the trained model's predicted class per sample, and a segmentation pixel set given as
    ``"pred"`` / ``"largest_component"`` becomes the trained model's predicted region (as a tensor mask), not the
    randomised model's.

    A method passes when the correlation is at most :data:`MAX_RANDOMISATION_SPEARMAN` (0.5).

    Args:
        model: trained network (left unchanged; the randomised one is a deep copy).
        target_layers: CAM layer name(s) or module(s) of ``model`` (names are looked up in the copy).
        images: (B, C, H, W) or (B, C, D, H, W) float tensor on the model's device.
        methods: CAM method names, as :class:`monai_xai.cams.CAMExplainer`.
        class_idx: class to explain, as :class:`~monai_xai.cams.CAMExplainer` (None: trained model's prediction).
        mask: segmentation pixel set, as :class:`~monai_xai.cams.CAMExplainer`.
        seed: seed of the re-initialisation (:func:`randomize_weights`).
        explainer_kwargs: further :class:`~monai_xai.cams.CAMExplainer` arguments (``score``, ``batch_size``, ...).

    Returns:
        a :class:`RandomisationResult` (correlations and both sets of maps).
    """
    layer_names = [name for name, _ in resolve_layers(model, target_layers)]
    trained = CAMExplainer(model, layer_names, methods, **explainer_kwargs)
    with torch.no_grad(), preserved_model_state(model):
        outputs = model(images)
    target = build_target(outputs, class_idx, mask, trained.score, warn_empty=False)
    fixed_class = target.class_idx
    fixed_mask = target.pixel_set if isinstance(target, SegmentationTarget) else None
    trained_maps = trained(images, class_idx=fixed_class, mask=fixed_mask)
    randomised = CAMExplainer(randomize_weights(model, seed), layer_names, methods, **explainer_kwargs)
    randomised_maps = randomised(images, class_idx=fixed_class, mask=fixed_mask)
    correlation = {
        method: spearman_correlation(trained_maps[method], randomised_maps[method]) for method in trained_maps
    }
    return RandomisationResult(correlation, trained_maps, randomised_maps)


@dataclass
class MethodSanity:
    """Sanity figures of one CAM method over a test set.

    Attributes:
        method: CAM method name.
        ehr_auc: mean EHR-AUC of the method's maps against the ground-truth masks.
        randomised_ehr_auc: the same for the weight-randomised network's maps. Close to ``ehr_auc`` (or above it), the
            maps localise the lesion whatever the weights, even when their rank correlation is low: for segmentation
            CAMs the rank correlation over the whole image can be driven by the faint background alone.
        random_uniform: mean EHR-AUC of i.i.d. uniform random maps (expected value: the mask's share of the image).
        random_smooth: mean EHR-AUC of smooth random maps on the target layer's feature grid.
        spearman: mean Spearman correlation between trained and randomised maps over the cases where it exists.
        spearman_undefined: number of cases with a constant map (no rank correlation).
        uses_gradients: whether the method is a gradient CAM (the localisation acceptance applies to these).
    """

    method: str
    ehr_auc: float
    randomised_ehr_auc: float
    random_uniform: float
    random_smooth: float
    spearman: float
    spearman_undefined: int
    uses_gradients: bool

    @property
    def localisation_ratio(self) -> float:
        """EHR-AUC over the larger of the two random baselines (the stricter comparison)."""
        return self.ehr_auc / max(self.random_uniform, self.random_smooth)

    @property
    def localisation_passed(self) -> bool:
        return self.localisation_ratio >= MIN_LOCALISATION_RATIO

    @property
    def randomisation_passed(self) -> bool:
        # NaN (every case constant) compares False: no evidence that the map depends on the weights.
        return self.spearman <= MAX_RANDOMISATION_SPEARMAN


def _load_bundle(bundle_dir: Path, device: torch.device) -> tuple[nn.Module, Callable, dict]:
    """Network with trained weights (eval mode), preprocessing transform and the explain.json settings of a bundle."""
    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_dir)
    explain_file = bundle_dir / "configs" / "explain.json"
    if not explain_file.is_file():
        raise FileNotFoundError(f"{explain_file} is missing; it names the CAM layer, class and methods to check.")
    settings = json.loads(explain_file.read_text())
    weights = bundle_dir / "models" / "model.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing; train the bundle first (see its docs/README.md).")
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return network.to(device).eval(), parser.get_parsed_content("preprocessing"), settings


def _phantom_test_set(
    preprocessing: Callable, region_key: str, n_cases: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, *spatial) preprocessed images and bool ground-truth masks of ``n_cases`` positive phantoms."""
    with tempfile.TemporaryDirectory() as folder:
        datalist = json.loads(
            write_phantom_dataset(folder, n_cases, seed=seed, positive_fraction=1.0, split=(0.0, 0.0, 1.0)).read_text()
        )
        cases = [
            preprocessing({"image": f"{folder}/{item['image']}", region_key: f"{folder}/{item['mask']}"})
            for item in datalist["test"]
        ]
    images = torch.stack([torch.as_tensor(case["image"]).float() for case in cases])
    masks = torch.stack([torch.as_tensor(case[region_key]) > 0.5 for case in cases])
    return images, masks


def _feature_size(model: nn.Module, layers: LayerSpec, images: torch.Tensor) -> tuple[int, ...]:
    """Spatial size of the (first) layer's output for ``images`` (one forward pass without gradients)."""
    (_, module), *_ = resolve_layers(model, layers)
    sizes: list[tuple[int, ...]] = []
    handle = module.register_forward_hook(lambda _module, _inputs, output: sizes.append(tuple(output.shape[2:])))
    try:
        with torch.no_grad(), preserved_model_state(model):
            model(images)
    finally:
        handle.remove()
    return sizes[0]


def _save_randomisation_figure(
    result: RandomisationResult,
    image: torch.Tensor,
    mask: torch.Tensor,
    groups: list[tuple[LayerSpec, tuple[str, ...]]],
    path: str | Path,
) -> None:
    """Both networks' maps of the first case of ``result`` side by side, Spearman (and layer) per method."""
    layer_of = {method: layers for layers, grouped in groups for method in grouped}
    labels = {
        method: f"{method}{'' if len(groups) == 1 else f' at {layer_of[method]}'}\nSpearman {rho[0].item():.2f}"
        for method, rho in result.correlation.items()
    }
    where = f"at {groups[0][0]}" if len(groups) == 1 else "at each method's layer"
    save_map_grid_png(
        image,
        {
            "trained": {method: maps[0] for method, maps in result.trained_maps.items()},
            "randomised": {method: maps[0] for method, maps in result.randomised_maps.items()},
        },
        path,
        mask=mask,
        column_labels=labels,
        title=f"model randomisation test {where} (white: true lesion)",
    )


def bundle_sanity_checks(
    bundle_dir: str | Path,
    n_cases: int = 16,
    seed: int = 4242,
    methods: Sequence[str] | None = None,
    target_layer: LayerSpec | Mapping[str, LayerSpec] | None = None,
    n_draws: int = 16,
    batch_size: int = 4,
    randomisation_seed: int = 0,
    device: str | None = None,
    figure: str | Path | None = None,
) -> list[MethodSanity]:
    """Localisation-vs-random and model-randomisation checks of every CAM method of a bundle on held-out phantoms.

    The bundle's ``configs/inference.json`` gives ``network_def`` and ``preprocessing``, ``models/model.pt`` the
    trained weights and ``configs/explain.json`` the methods (``xai_methods``), layer (``xai_target_layer``), class
    (``xai_class``), segmentation pixel set (``xai_mask``) and the datalist key of the ground-truth region
    (``xai_region_key``). The test set is ``n_cases`` positive phantoms written with ``seed`` (the bundles train on
    seed 0, so these cases are unseen). For segmentation with ``xai_mask="pred"`` the randomised network is explained
    over the trained network's predicted region (see :func:`model_randomisation_check`).

    Args:
        bundle_dir: bundle in model-zoo layout with trained weights.
        n_cases: number of test phantoms, >= 1.
        seed: phantom data set seed.
        methods: CAM methods to check; None uses the bundle's ``xai_methods``.
        target_layer: CAM layer, or ``{method: layer}`` for a layer per method (the smooth baseline then uses each
            method's layer grid); None uses the bundle's ``xai_target_layer``.
        n_draws: random maps per case for each random baseline.
        batch_size: cases explained per call.
        randomisation_seed: seed of the weight re-initialisation and of the random maps.
        device: torch device; None picks CUDA when available, else CPU.
        figure: optional PNG path: the trained and the randomised network's maps of the first case side by side
            (:func:`monai_xai.visualize.save_map_grid_png`, axial slice through its lesion, Spearman per method).

    Returns:
        one :class:`MethodSanity` per method, in the order of ``methods``.
    """
    bundle_dir = Path(bundle_dir).resolve()
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    network, preprocessing, settings = _load_bundle(bundle_dir, torch_device)
    methods = tuple(settings["xai_methods"] if methods is None else methods)
    groups = group_methods_by_layer(settings["xai_target_layer"] if target_layer is None else target_layer, methods)
    class_idx = settings["xai_class"]
    images, masks = _phantom_test_set(preprocessing, settings.get("xai_region_key", "mask"), n_cases, seed)
    grids = [_feature_size(network, layers, images[:1].to(torch_device)) for layers, _ in groups]
    generator = torch.Generator(device=torch_device).manual_seed(randomisation_seed)

    scores: dict[str, list[torch.Tensor]] = {method: [] for method in methods}
    randomised_scores: dict[str, list[torch.Tensor]] = {method: [] for method in methods}
    correlations: dict[str, list[torch.Tensor]] = {method: [] for method in methods}
    uniform: list[torch.Tensor] = []
    smooth: list[list[torch.Tensor]] = [[] for _ in groups]
    for start in range(0, n_cases, batch_size):
        batch_images = images[start : start + batch_size].to(torch_device)
        batch_masks = masks[start : start + batch_size].to(torch_device)
        result = RandomisationResult({}, {}, {})
        for layers, grouped in groups:
            group_result = model_randomisation_check(
                network, layers, batch_images, grouped, class_idx, settings.get("xai_mask"), randomisation_seed
            )
            result.correlation.update(group_result.correlation)
            result.trained_maps.update(group_result.trained_maps)
            result.randomised_maps.update(group_result.randomised_maps)
        for method in methods:
            scores[method].append(ehr_auc(result.trained_maps[method], batch_masks))
            randomised_scores[method].append(ehr_auc(result.randomised_maps[method], batch_masks))
            correlations[method].append(result.correlation[method])
        if figure is not None and start == 0:
            _save_randomisation_figure(result, batch_images[0], batch_masks[0], groups, figure)
        uniform.append(random_map_baseline(ehr_auc, batch_masks, n_draws, "uniform", generator=generator))
        for index, grid in enumerate(grids):
            smooth[index].append(
                random_map_baseline(ehr_auc, batch_masks, n_draws, "smooth", grid, generator=generator)
            )

    random_uniform = torch.cat(uniform).nanmean().item()
    random_smooth = {
        method: torch.cat(smooth[index]).nanmean().item()
        for index, (_, grouped) in enumerate(groups)
        for method in grouped
    }
    summary = []
    for method in methods:
        correlation = torch.cat(correlations[method])
        summary.append(
            MethodSanity(
                method=method,
                ehr_auc=torch.cat(scores[method]).nanmean().item(),
                randomised_ehr_auc=torch.cat(randomised_scores[method]).nanmean().item(),
                random_uniform=random_uniform,
                random_smooth=random_smooth[method],
                spearman=correlation.nanmean().item(),
                spearman_undefined=int(correlation.isnan().sum()),
                uses_gradients=method in GRADIENT_METHODS and method not in METHODS_WITHOUT_GRADIENTS,
            )
        )
    return summary


def sanity_markdown(summary: Sequence[MethodSanity]) -> str:
    """Markdown table of :func:`bundle_sanity_checks` results, one row per method."""
    header = (
        "| method | EHR-AUC | random EHR-AUC (uniform / smooth) | ratio | Spearman vs randomised | "
        f"localisation (>= {MIN_LOCALISATION_RATIO:g}x) | randomisation (<= {MAX_RANDOMISATION_SPEARMAN:g}) | "
        "EHR-AUC of the randomised network |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    rows = []
    for row in summary:
        undefined = f" ({row.spearman_undefined} undefined)" if row.spearman_undefined else ""
        localisation = "pass" if row.localisation_passed else "fail"
        rows.append(
            f"| {row.method} | {row.ehr_auc:.4f} | {row.random_uniform:.4f} / {row.random_smooth:.4f} | "
            f"{row.localisation_ratio:.2f} | {row.spearman:.3f}{undefined} | "
            f"{localisation if row.uses_gradients else localisation + ' (not required)'} | "
            f"{'pass' if row.randomisation_passed else 'fail'} | {row.randomised_ehr_auc:.4f} |"
        )
    return "\n".join([header, *rows])


def bundle_sanity_table(
    bundle_dir: str,
    n_cases: int = 16,
    seed: int = 4242,
    methods: Sequence[str] | None = None,
    target_layer: LayerSpec | Mapping[str, LayerSpec] | None = None,
    n_draws: int = 16,
    batch_size: int = 4,
    randomisation_seed: int = 0,
    device: str | None = None,
    figure: str | None = None,
) -> str:
    """Run :func:`bundle_sanity_checks` and return its Markdown table with a line on the run (fire-friendly).

    Arguments as :func:`bundle_sanity_checks`.
    """
    start = time.perf_counter()
    summary = bundle_sanity_checks(
        bundle_dir,
        n_cases=n_cases,
        seed=seed,
        methods=methods,
        target_layer=target_layer,
        n_draws=n_draws,
        batch_size=batch_size,
        randomisation_seed=randomisation_seed,
        device=device,
        figure=figure,
    )
    elapsed = time.perf_counter() - start
    shown = f"\nMaps of the first case, trained and randomised: {figure}" if figure else ""
    return (
        f"{sanity_markdown(summary)}\n\n{n_cases} positive phantoms (seed {seed}), {n_draws} random maps per case and "
        f"baseline, re-initialisation seed {randomisation_seed}; {elapsed:.0f} s.{shown}"
    )


if __name__ == "__main__":
    import fire

    fire.Fire(bundle_sanity_table)
