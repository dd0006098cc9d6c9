"""Both sanity checks for every CAM method of a MONAI bundle, on held-out phantoms or on your own labelled data.

:func:`bundle_sanity_checks` explains each case with the bundle's trained network and with a weight-randomised copy
(:func:`~monai_xai.sanity.model_randomisation_check`) and, where the case has a ground-truth region, scores both maps
and random maps against it (:func:`~monai_xai.sanity.random_map_baseline`). :func:`bundle_sanity_table` prints the
result as Markdown. Command line::

    monai-xai sanity bundles/lesion_classification_3d --n_cases 16 --figure randomisation.png
    monai-xai sanity <bundle> --datalist datalist.json --data_list_key validation --region_key label \\
        --target_layer layer4 --methods "['gradcam','hirescam']" --class_idx 1
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from torch import nn
from tqdm import tqdm

from monai_xai.cams import GRADIENT_METHODS, LayerSpec, group_methods_by_layer, resolve_layers
from monai_xai.cams.methods import METHODS_WITHOUT_GRADIENTS
from monai_xai.data import write_phantom_dataset
from monai_xai.metrics import ehr_auc
from monai_xai.sanity.baselines import random_map_baseline
from monai_xai.sanity.randomisation import (
    MAX_RANDOMISATION_SPEARMAN,
    CascadeResult,
    RandomisationResult,
    cascading_randomisation,
    model_randomisation_check,
)
from monai_xai.utils import preserved_model_state
from monai_xai.visualize import plot_metric_curves, save_map_grid_png

__all__ = [
    "MIN_LOCALISATION_RATIO",
    "PHANTOM_CASES",
    "MethodSanity",
    "bundle_sanity_checks",
    "sanity_markdown",
    "bundle_sanity_table",
]

# Acceptance figure: a gradient CAM's mean localisation score must be at least this multiple of a random map's.
MIN_LOCALISATION_RATIO = 2.0
# Held-out phantoms checked when no datalist is given.
PHANTOM_CASES = 16


@dataclass
class MethodSanity:
    """Sanity figures of one CAM method over a test set.

    The localisation figures are means over the cases with a non-empty ground-truth region, NaN when there is none.

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
        """EHR-AUC over the larger of the two random baselines (the stricter comparison); NaN without ground truth."""
        return self.ehr_auc / max(self.random_uniform, self.random_smooth)

    @property
    def has_ground_truth(self) -> bool:
        """Whether any checked case had a ground-truth region, so that the localisation figures exist."""
        return not math.isnan(self.ehr_auc)

    @property
    def localisation_passed(self) -> bool:
        return self.localisation_ratio >= MIN_LOCALISATION_RATIO

    @property
    def randomisation_passed(self) -> bool:
        # NaN (every case constant) compares False: no evidence that the map depends on the weights.
        return self.spearman <= MAX_RANDOMISATION_SPEARMAN


def _load_bundle(bundle_dir: Path, device: torch.device) -> tuple[nn.Module, Callable, dict[str, Any]]:
    """Network with trained weights (eval mode), preprocessing transform and the bundle's own explain.json settings.

    The settings are empty when the bundle has no ``configs/explain.json`` (any model-zoo bundle): the caller then
    names the methods and the layer.
    """
    inference = bundle_dir / "configs" / "inference.json"
    if not inference.is_file():
        raise FileNotFoundError(
            f"{inference} is missing: the sanity checks need a bundle in MONAI model-zoo layout, whose "
            "configs/inference.json defines `network_def` and `preprocessing`."
        )
    parser = ConfigParser()
    parser.read_config(str(inference))
    parser["bundle_root"] = str(bundle_dir)
    for config_id in ("network_def", "preprocessing"):
        if config_id not in parser:
            raise ValueError(
                f"{inference} has no `{config_id}`; the sanity checks build the network and load the data with it."
            )
    weights = bundle_dir / "models" / "model.pt"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing; train the bundle first (see its docs/README.md).")
    explain_file = bundle_dir / "configs" / "explain.json"
    settings = json.loads(explain_file.read_text()) if explain_file.is_file() else {}
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return network.to(device).eval(), parser.get_parsed_content("preprocessing"), settings


def _explain_settings(
    bundle_settings: Mapping[str, Any],
    methods: Sequence[str] | None,
    target_layer: LayerSpec | Mapping[str, LayerSpec] | None,
    class_idx: int | None,
    mask: str | None,
    score: str | None,
) -> dict[str, Any]:
    """The explanation to check: each argument given, else the bundle's ``configs/explain.json`` entry."""
    settings = {
        "xai_methods": methods if methods is not None else bundle_settings.get("xai_methods"),
        "xai_target_layer": target_layer if target_layer is not None else bundle_settings.get("xai_target_layer"),
        "xai_class": class_idx if class_idx is not None else bundle_settings.get("xai_class"),
        "xai_mask": mask if mask is not None else bundle_settings.get("xai_mask"),
        "xai_score": score if score is not None else bundle_settings.get("xai_score", "logit"),
    }
    missing = [
        f"{name} (--{argument})"
        for name, argument in (("xai_methods", "methods"), ("xai_target_layer", "target_layer"))
        if not settings[name]
    ]
    if missing:
        raise ValueError(
            f"the bundle's configs/explain.json does not set {' and '.join(missing)}: pass them, e.g. "
            "--methods \"['gradcam','hirescam']\" --target_layer layer4 (a name from network.named_modules())."
        )
    if isinstance(settings["xai_methods"], str):
        settings["xai_methods"] = [settings["xai_methods"]]
    return settings


def _read_datalist(datalist: Path, data_list_key: str, region_key: str, n_cases: int | None) -> list[dict[str, str]]:
    """The first ``n_cases`` cases of a MONAI datalist as ``{"image": path[, "region": path of region_key]}``.

    Relative paths are taken relative to the datalist's folder (MONAI's ``load_decathlon_datalist`` convention).
    """
    if not datalist.is_file():
        raise FileNotFoundError(f"datalist {datalist} does not exist.")
    try:
        content = json.loads(datalist.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"datalist {datalist} is not valid JSON: {error}.") from error
    if not isinstance(content, dict) or not isinstance(content.get(data_list_key), list):
        keys = (
            sorted(key for key, value in content.items() if isinstance(value, list))
            if isinstance(content, dict)
            else []
        )
        raise ValueError(
            f"datalist {datalist} has no list of cases under {data_list_key!r}; its lists are {keys} "
            "(choose one with --data_list_key)."
        )
    items = content[data_list_key][:n_cases]
    if not items:
        raise ValueError(f"datalist {datalist} lists no cases under {data_list_key!r}.")
    cases = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("image"), str):
            raise ValueError(
                f"case {index} of {data_list_key!r} in {datalist} has no 'image' path: {item!r}; each case is "
                '{"image": "<file>", "<region key>": "<mask file>"} (the region is optional).'
            )
        case = {"image": str(datalist.parent / item["image"])}
        if isinstance(item.get(region_key), str):
            case["region"] = str(datalist.parent / item[region_key])
        cases.append(case)
    return cases


def _load_case(
    case: Mapping[str, str], preprocessing: Callable, transform_key: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, *spatial) preprocessed image and (1, *spatial) bool region (all False where the case has none).

    The region file goes to ``preprocessing`` under ``transform_key``, the key the bundle's transforms load it with.
    """
    if "region" not in case:
        image = torch.as_tensor(preprocessing({"image": case["image"]})["image"]).float()
        return image, torch.zeros((1, *image.shape[1:]), dtype=torch.bool)
    loaded = preprocessing({"image": case["image"], transform_key: case["region"]})
    image = torch.as_tensor(loaded["image"]).float()
    region = loaded[transform_key]
    if isinstance(region, str) or not hasattr(region, "shape"):
        raise ValueError(
            f"the bundle's preprocessing does not load the ground-truth key {transform_key!r} ({case['region']}): "
            f"add it to the keys of its transforms (e.g. LoadImaged(keys=['image', '{transform_key}'])) so that the "
            "mask lands on the image's grid (the key is the bundle's explain.json `xai_region_key`, else --region_key)."
        )
    region = torch.as_tensor(region) > 0.5
    if tuple(region.shape[1:]) != tuple(image.shape[1:]):
        raise ValueError(
            f"the ground-truth region of {case['image']} has spatial shape {tuple(region.shape[1:])} after the "
            f"bundle's preprocessing, the image {tuple(image.shape[1:])}; the preprocessing must resample both alike."
        )
    return image, region[:1]


def _case_batches(
    cases: Sequence[Mapping[str, str]], preprocessing: Callable, transform_key: str, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(B, C, *spatial)`` images and ``(B, 1, *spatial)`` regions of consecutive cases of the same size.

    Cases are loaded one batch at a time, so memory holds one batch of volumes whatever the number of cases.
    """
    images: list[torch.Tensor] = []
    regions: list[torch.Tensor] = []
    for case in cases:
        image, region = _load_case(case, preprocessing, transform_key)
        if images and (len(images) == batch_size or image.shape != images[0].shape):
            yield torch.stack(images), torch.stack(regions)
            images, regions = [], []
        images.append(image)
        regions.append(region)
    yield torch.stack(images), torch.stack(regions)


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


def _where_region(
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], regions: torch.Tensor, *maps: Any
) -> torch.Tensor:
    """(B,) ``score(*maps, regions)`` on the cases with a non-empty region, NaN on the others (no metric warnings)."""
    present = regions.flatten(1).any(dim=1)
    values = torch.full((regions.shape[0],), float("nan"), device=regions.device)
    if present.any():
        values[present] = score(*(item[present] for item in maps), regions[present]).to(values.dtype)
    return values


def _save_randomisation_figure(
    result: RandomisationResult,
    image: torch.Tensor,
    region: torch.Tensor,
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
    has_region = bool(region.any())
    save_map_grid_png(
        image,
        {
            "trained": {method: maps[0] for method, maps in result.trained_maps.items()},
            "randomised": {method: maps[0] for method, maps in result.randomised_maps.items()},
        },
        path,
        mask=region if has_region else None,
        column_labels=labels,
        title=f"model randomisation test {where}{' (white: ground truth)' if has_region else ''}",
    )


def _save_cascade_figure(
    cascade: CascadeResult, groups: list[tuple[LayerSpec, tuple[str, ...]]], n_cases: int, path: str | Path
) -> None:
    """Mean Spearman over the cases after each cascade step, one curve per method; "-> " marks the first step that
    reaches inside a CAM layer (from there on its activations change too)."""
    cam_layers = {name for layers, _ in groups for name in ([layers] if isinstance(layers, str) else layers)}
    labels = list(cascade.layers)
    for cam_layer in cam_layers:
        inside = [i for i, name in enumerate(labels) if name == cam_layer or name.startswith(f"{cam_layer}.")]
        if inside:
            labels[inside[0]] = f"-> {labels[inside[0]]}"
    steps = range(len(labels))
    plot_metric_curves(
        {method: (steps, rho.nanmean(dim=1).tolist()) for method, rho in cascade.correlation.items()},
        path,
        xlabel="randomised down to (cumulative, from the output)",
        ylabel="Spearman with the trained maps",
        title=f"cascading randomisation, {n_cases} case(s); CAM layer {', '.join(sorted(cam_layers))}",
        xtick_labels=labels,
        reference=MAX_RANDOMISATION_SPEARMAN,
    )


def _method_subset(
    groups: list[tuple[LayerSpec, tuple[str, ...]]], subset: Sequence[str] | None, argument: str
) -> list[tuple[LayerSpec, tuple[str, ...]]]:
    """``groups`` keeping only the methods of ``subset`` (None: all); an empty or unknown subset raises."""
    if subset is None:
        return groups
    subset = (subset,) if isinstance(subset, str) else tuple(subset)
    checked = [method for _, grouped in groups for method in grouped]
    unknown = [method for method in subset if method not in checked]
    if unknown or not subset:
        raise ValueError(
            f"{argument} must name some of the checked methods {checked}, got {list(subset)}"
            + (f" ({unknown} not checked; add them to --methods)." if unknown else ".")
        )
    kept = [(layers, tuple(method for method in grouped if method in subset)) for layers, grouped in groups]
    return [(layers, grouped) for layers, grouped in kept if grouped]


def bundle_sanity_checks(
    bundle_dir: str | Path,
    n_cases: int | None = None,
    seed: int = 4242,
    methods: Sequence[str] | None = None,
    target_layer: LayerSpec | Mapping[str, LayerSpec] | None = None,
    n_draws: int = 16,
    batch_size: int = 4,
    randomisation_seed: int = 0,
    device: str | None = None,
    figure: str | Path | None = None,
    cascade_figure: str | Path | None = None,
    cascade_methods: Sequence[str] | None = None,
    datalist: str | Path | None = None,
    data_list_key: str = "test",
    region_key: str | None = None,
    class_idx: int | None = None,
    mask: str | None = None,
    score: str | None = None,
    progress: bool = True,
) -> list[MethodSanity]:
    """Localisation-vs-random and model-randomisation checks of every CAM method of a bundle.

    The bundle's ``configs/inference.json`` gives ``network_def`` and ``preprocessing``, ``models/model.pt`` the
    trained weights. What to explain comes from the arguments, else from the bundle's own ``configs/explain.json``
    (``xai_methods``, ``xai_target_layer``, ``xai_class``, ``xai_mask``, ``xai_region_key``), as in the demo
    bundles; a model-zoo bundle without one needs at least ``methods`` and ``target_layer``.

    The cases are the ``data_list_key`` list of a MONAI ``datalist`` (your own held-out data), or else ``n_cases``
    positive phantoms written with ``seed`` (the demo bundles train on seed 0, so these are unseen). Every case is
    loaded with the bundle's ``preprocessing``, which must also load the ground-truth region onto the image's grid.
    Cases without a region, or with an empty one, count in the randomisation test only. For segmentation with
    ``mask="pred"`` the randomised network is explained over the trained network's predicted region (see
    :func:`~monai_xai.sanity.model_randomisation_check`).

    Args:
        bundle_dir: bundle in model-zoo layout with trained weights.
        n_cases: cases to check, >= 1: the first ``n_cases`` of the datalist (None: all), or the number of phantoms
            (None: :data:`PHANTOM_CASES`).
        seed: phantom data set seed (ignored with a datalist).
        methods: CAM methods to check; None uses the bundle's ``xai_methods``.
        target_layer: CAM layer, or ``{method: layer}`` for a layer per method (the smooth baseline then uses each
            method's layer grid); None uses the bundle's ``xai_target_layer``.
        n_draws: random maps per case for each random baseline.
        batch_size: most cases explained per call; consecutive cases of one size share a batch.
        randomisation_seed: seed of the weight re-initialisation and of the random maps.
        device: torch device; None picks CUDA when available, else CPU.
        figure: optional PNG path: the trained and the randomised network's maps of the first case side by side
            (:func:`monai_xai.visualize.save_map_grid_png`, axial slice through its ground truth, Spearman per method).
        cascade_figure: optional PNG path: the cascading randomisation of the first batch
            (:func:`~monai_xai.sanity.cascading_randomisation`), the mean Spearman per method as the modules are
            re-initialised from the output down.
        cascade_methods: the methods the cascade picture shows (a subset of the checked methods); None: all of them.
            The cascade explains its batch once per module of the network, so leaving out the perturbation methods
            (``scorecam``, ``ablationcam``) makes it many times faster.
        datalist: MONAI datalist JSON (``{"test": [{"image": ..., "label": ...}, ...]}``; relative paths are relative
            to its folder); None checks phantoms.
        data_list_key: the datalist's list to check, e.g. ``"validation"``.
        region_key: datalist key of the ground-truth region; None uses the bundle's ``xai_region_key``, else
            ``"mask"``. The bundle's transforms load it under its ``xai_region_key`` when set, else under this key.
        class_idx: class to explain; None uses the bundle's ``xai_class``, else each case's predicted class.
        mask: segmentation pixel set (as :class:`~monai_xai.cams.CAMExplainer`); None uses the bundle's ``xai_mask``,
            else the predicted region.
        score: ``"logit"`` or ``"probability"`` (as :class:`~monai_xai.cams.CAMExplainer`); None uses the bundle's
            ``xai_score``, else ``"logit"``.
        progress: show a progress bar over the cases.

    Returns:
        one :class:`MethodSanity` per method, in the order of the methods.
    """
    if n_cases is not None and (not isinstance(n_cases, int) or n_cases < 1):
        raise ValueError(f"n_cases must be a positive int or None, got {n_cases!r}.")
    bundle_dir = Path(bundle_dir).resolve()
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    network, preprocessing, bundle_settings = _load_bundle(bundle_dir, torch_device)
    settings = _explain_settings(bundle_settings, methods, target_layer, class_idx, mask, score)
    methods = tuple(settings["xai_methods"])
    groups = group_methods_by_layer(settings["xai_target_layer"], methods)
    cascade_groups = _method_subset(groups, cascade_methods, "cascade_methods")
    with tempfile.TemporaryDirectory() as folder:
        if datalist is None:
            datalist = write_phantom_dataset(
                folder, n_cases or PHANTOM_CASES, seed=seed, positive_fraction=1.0, split=(0.0, 0.0, 1.0)
            )
            data_list_key, region_key = "test", "mask"
        region_key = region_key or bundle_settings.get("xai_region_key") or "mask"
        # the key the bundle's transforms load the ground truth with (the demo segmenter's "label")
        transform_key = bundle_settings.get("xai_region_key") or region_key
        cases = _read_datalist(Path(datalist).resolve(), data_list_key, region_key, n_cases)
        batches = _case_batches(cases, preprocessing, transform_key, batch_size)
        with tqdm(total=len(cases), desc="sanity checks", unit="case", disable=not progress) as bar:
            per_case = _check_batches(
                network,
                batches,
                (groups, cascade_groups),
                settings,
                n_draws,
                randomisation_seed,
                (figure, cascade_figure),
                bar,
            )
    return [
        MethodSanity(
            method=method,
            ehr_auc=per_case["ehr_auc"][method].nanmean().item(),
            randomised_ehr_auc=per_case["randomised_ehr_auc"][method].nanmean().item(),
            random_uniform=per_case["random_uniform"][method].nanmean().item(),
            random_smooth=per_case["random_smooth"][method].nanmean().item(),
            spearman=per_case["spearman"][method].nanmean().item(),
            spearman_undefined=int(per_case["spearman"][method].isnan().sum()),
            uses_gradients=method in GRADIENT_METHODS and method not in METHODS_WITHOUT_GRADIENTS,
        )
        for method in methods
    ]


def _check_batches(
    network: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    method_groups: tuple[list[tuple[LayerSpec, tuple[str, ...]]], list[tuple[LayerSpec, tuple[str, ...]]]],
    settings: Mapping[str, Any],
    n_draws: int,
    randomisation_seed: int,
    figures: tuple[str | Path | None, str | Path | None],
    bar: tqdm,
) -> dict[str, dict[str, torch.Tensor]]:
    """Per-case figures ``{figure name: {method: (N,) values}}`` over all batches (NaN where undefined); the maps and
    the cascade pictures (``figures``, either None) of the first batch. ``method_groups``: the ``(layers, methods)``
    groups to check and those the cascade shows."""
    groups, cascade_groups = method_groups
    device = next(network.parameters()).device
    generator = torch.Generator(device=device).manual_seed(randomisation_seed)
    names = ("ehr_auc", "randomised_ehr_auc", "random_uniform", "random_smooth", "spearman")
    collected: dict[str, dict[str, list[torch.Tensor]]] = {
        name: {method: [] for _, grouped in groups for method in grouped} for name in names
    }
    # what is explained, and the re-initialisation seed: the same for the full and the cascading randomisation
    target = {
        "class_idx": settings["xai_class"],
        "mask": settings["xai_mask"],
        "seed": randomisation_seed,
        "score": settings["xai_score"],
    }
    for index, (images, regions) in enumerate(batches):
        images, regions = images.to(device), regions.to(device)
        result = RandomisationResult({}, {}, {})
        for layers, grouped in groups:
            group_result = model_randomisation_check(network, layers, images, grouped, **target)
            result.correlation.update(group_result.correlation)
            result.trained_maps.update(group_result.trained_maps)
            result.randomised_maps.update(group_result.randomised_maps)
        figure, cascade_figure = figures if index == 0 else (None, None)
        if figure is not None:
            _save_randomisation_figure(result, images[0], regions[0], groups, figure)
        if cascade_figure is not None:
            cascade = CascadeResult([], {})
            for layers, grouped in cascade_groups:
                step = cascading_randomisation(network, layers, images, grouped, progress=not bar.disable, **target)
                cascade.layers = step.layers
                cascade.correlation.update(step.correlation)
            _save_cascade_figure(cascade, cascade_groups, images.shape[0], cascade_figure)
        uniform = _where_region(
            lambda region: random_map_baseline(ehr_auc, region, n_draws, "uniform", generator=generator), regions
        )
        for layers, grouped in groups:
            grid = _feature_size(network, layers, images[:1])
            smooth = _where_region(
                lambda region, grid=grid: random_map_baseline(
                    ehr_auc, region, n_draws, "smooth", grid, generator=generator
                ),
                regions,
            )
            for method in grouped:
                collected["random_uniform"][method].append(uniform)
                collected["random_smooth"][method].append(smooth)
        for method, correlation in result.correlation.items():
            collected["spearman"][method].append(correlation)
            collected["ehr_auc"][method].append(_where_region(ehr_auc, regions, result.trained_maps[method]))
            collected["randomised_ehr_auc"][method].append(
                _where_region(ehr_auc, regions, result.randomised_maps[method])
            )
        bar.update(images.shape[0])
    return {
        name: {method: torch.cat(values) for method, values in by_method.items()}
        for name, by_method in collected.items()
    }


def _figure(value: float, digits: int = 4) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def sanity_markdown(summary: Sequence[MethodSanity]) -> str:
    """Markdown table of :func:`bundle_sanity_checks` results, one row per method (``n/a`` without ground truth)."""
    header = (
        "| method | EHR-AUC | random EHR-AUC (uniform / smooth) | ratio | Spearman vs randomised | "
        f"localisation (>= {MIN_LOCALISATION_RATIO:g}x) | randomisation (<= {MAX_RANDOMISATION_SPEARMAN:g}) | "
        "EHR-AUC of the randomised network |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    rows = []
    for row in summary:
        undefined = f" ({row.spearman_undefined} undefined)" if row.spearman_undefined else ""
        if not row.has_ground_truth:
            localisation = "n/a (no ground truth)"
        else:
            localisation = "pass" if row.localisation_passed else "fail"
            localisation += "" if row.uses_gradients else " (not required)"
        rows.append(
            f"| {row.method} | {_figure(row.ehr_auc)} | {_figure(row.random_uniform)} / {_figure(row.random_smooth)} | "
            f"{_figure(row.localisation_ratio, 2)} | {row.spearman:.3f}{undefined} | {localisation} | "
            f"{'pass' if row.randomisation_passed else 'fail'} | {_figure(row.randomised_ehr_auc)} |"
        )
    return "\n".join([header, *rows])


def bundle_sanity_table(
    bundle_dir: str,
    n_cases: int | None = None,
    seed: int = 4242,
    methods: Sequence[str] | None = None,
    target_layer: LayerSpec | Mapping[str, LayerSpec] | None = None,
    n_draws: int = 16,
    batch_size: int = 4,
    randomisation_seed: int = 0,
    device: str | None = None,
    figure: str | None = None,
    cascade_figure: str | None = None,
    cascade_methods: Sequence[str] | None = None,
    datalist: str | None = None,
    data_list_key: str = "test",
    region_key: str | None = None,
    class_idx: int | None = None,
    mask: str | None = None,
    score: str | None = None,
    progress: bool = True,
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
        cascade_figure=cascade_figure,
        cascade_methods=cascade_methods,
        datalist=datalist,
        data_list_key=data_list_key,
        region_key=region_key,
        class_idx=class_idx,
        mask=mask,
        score=score,
        progress=progress,
    )
    elapsed = time.perf_counter() - start
    if datalist is None:
        cases = f"{n_cases or PHANTOM_CASES} positive phantoms (seed {seed})"
    else:
        cases = f"the {data_list_key!r} cases of {datalist}" + (f" (first {n_cases})" if n_cases else "")
    shown = f"\nMaps of the first case, trained and randomised: {figure}" if figure else ""
    shown += f"\nCascading randomisation of the first batch: {cascade_figure}" if cascade_figure else ""
    return (
        f"{sanity_markdown(summary)}\n\n{cases}, {n_draws} random maps per case and baseline, re-initialisation seed "
        f"{randomisation_seed}; {elapsed:.0f} s.{shown}"
    )
