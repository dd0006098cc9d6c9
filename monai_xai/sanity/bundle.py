"""Both sanity checks for every CAM method of a MONAI bundle, on held-out phantoms or on your own labelled data.

:func:`bundle_sanity_checks` explains each case with the bundle's trained network and with a weight-randomised copy
(:func:`~monai_xai.sanity.model_randomisation_check`) and, where the case has a ground-truth region, scores both maps
and random maps against it (:func:`~monai_xai.sanity.random_map_baseline`). :mod:`~monai_xai.sanity.report` turns the
result into a Markdown table and pictures; ``monai-xai sanity`` (``monai_xai.cli.sanity``) prints them::

    monai-xai sanity bundles/lesion_classification_3d --n_cases 16 --figure randomisation.png
    monai-xai sanity <bundle> --datalist datalist.json --data_list_key validation --region_key label \\
        --target_layer layer4 --methods "['gradcam','hirescam']" --class_idx 1
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from monai.data import MetaTensor
from torch import nn
from tqdm import tqdm

from monai_xai.atomic import check_writable
from monai_xai.bundle import ExplainSettings, load_trained_bundle
from monai_xai.cams import CONTROL_METHODS, LayerSpec, get_method, group_methods_by_layer
from monai_xai.cams.layouts import feature_grid
from monai_xai.data import write_phantom_dataset
from monai_xai.enums import MethodFamily, RandomMap, SanityCheck, as_choice
from monai_xai.explanation import ExplainStep
from monai_xai.handlers.saliency_writer import write_map
from monai_xai.metrics import ehr_auc
from monai_xai.naming import CaseNames, safe_stem, strip_image_suffix
from monai_xai.sanity.baselines import random_map_baseline
from monai_xai.sanity.cases import CaseBatch, case_batches, read_datalist
from monai_xai.sanity.randomisation import RandomisationResult, cascading_randomisation, model_randomisation_check
from monai_xai.sanity.report import save_cascade_figure, save_randomisation_figure
from monai_xai.sanity.results import MethodSanity
from monai_xai.sanity.trust import batch_trust_statistics, check_verdict

__all__ = ["PHANTOM_CASES", "bundle_sanity_checks"]

# Held-out phantoms checked when no datalist is given.
PHANTOM_CASES = 16


def _where_region(
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], regions: torch.Tensor, *maps: Any
) -> torch.Tensor:
    """(B,) ``score(*maps, regions)`` on the cases with a non-empty region, NaN on the others (no metric warnings)."""
    present = regions.flatten(1).any(dim=1)
    values = torch.full((regions.shape[0],), float("nan"), device=regions.device)
    if present.any():
        values[present] = score(*(item[present] for item in maps), regions[present]).to(values.dtype)
    return values


def _method_subset(checked: Sequence[str], subset: Sequence[str] | str, argument: str) -> tuple[str, ...]:
    """``subset`` of the ``checked`` methods; an empty or unknown subset raises."""
    subset = (subset,) if isinstance(subset, str) else tuple(subset)
    unknown = [method for method in subset if method not in checked]
    if unknown or not subset:
        raise ValueError(
            f"{argument} must name some of the checked methods {list(checked)}, got {list(subset)}"
            + (f" ({unknown} not checked; add them to --methods)." if unknown else ".")
        )
    return subset


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
    pixel_set: str | None = None,
    score: str | None = None,
    progress: bool = True,
    maps_dir: str | Path | None = None,
    checks: Sequence[str] | str | None = None,
    controls: bool = True,
    n_noise: int = 8,
    noise_magnitude: float = 0.1,
    bottom_up_fraction: float = 0.5,
    permuted_weights: str | Path | None = None,
) -> list[MethodSanity]:
    """Localisation-vs-random and model-randomisation checks of every CAM method of a bundle.

    The bundle's ``configs/inference.json`` gives ``network_def`` and ``preprocessing``, ``models/model.pt`` the
    trained weights. What to explain comes from the arguments, else from the bundle's own ``configs/explain.json``
    (``xai_methods``, ``xai_target_layer``, ``xai_class``, ``xai_pixel_set``, ``xai_score``, ``xai_region_key``; see
    :class:`~monai_xai.bundle.ExplainSettings`), as in the demo bundles; a model-zoo bundle without one needs at least
    ``methods`` (without a layer, one is chosen on the first case and logged, see
    :func:`~monai_xai.cams.choose_target_layer`).

    The cases are the ``data_list_key`` list of a MONAI ``datalist`` (your own held-out data), or else ``n_cases``
    positive phantoms written with ``seed`` (the demo bundles train on seed 0, so these are unseen). Every case is
    loaded with the bundle's ``preprocessing``, which must also load the ground-truth region onto the image's grid.
    Cases without a region, or with an empty one, count in the randomisation test only. For segmentation with
    ``pixel_set="pred"`` the randomised network is explained over the trained network's predicted region (see
    :func:`~monai_xai.sanity.model_randomisation_check`).

    Args:
        bundle_dir: bundle in model-zoo layout with trained weights.
        n_cases: cases to check, >= 1: the first ``n_cases`` of the datalist (None: all), or the number of phantoms
            (None: :data:`PHANTOM_CASES`).
        seed: phantom data set seed (ignored with a datalist).
        methods: CAM methods to check; None uses the bundle's ``xai_methods``.
        target_layer: CAM layer, or ``{method: layer}`` for a layer per method (the smooth baseline then uses each
            method's layer grid); None uses the bundle's ``xai_target_layer``, else the automatic choice.
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
            A key given here that no checked case has is an error (a typo would turn the localisation check into
            "n/a").
        class_idx: class to explain; None uses the bundle's ``xai_class``, else each case's predicted class.
        pixel_set: segmentation pixel set (as :class:`~monai_xai.cams.CAMExplainer`); None uses the bundle's
            ``xai_pixel_set``, else the predicted region.
        score: ``"logit"`` or ``"probability"`` (as :class:`~monai_xai.cams.CAMExplainer`); None uses the bundle's
            ``xai_score``, else ``"logit"``.
        progress: show a progress bar over the cases.
        maps_dir: a folder for every case's maps, of the trained and of the re-initialised network
            (``<case>_<method>_trained.nii.gz``, ``<case>_<method>_randomised.nii.gz``, on the network's grid with the
            preprocessed image's affine); None: none written.
        checks: the further randomisation checks (:class:`~monai_xai.enums.SanityCheck` names, or ``"all"``):
            ``top_down``, ``bottom_up``, ``smprt``, ``emprt``, ``random_logit``, ``data``
            (:mod:`monai_xai.sanity.trust`), each a verdict with its bootstrap CI in :attr:`MethodSanity.checks`; None:
            the top-down Spearman alone, as :attr:`MethodSanity.spearman`. ``"all"`` takes ``data`` only with
            ``permuted_weights``.
        controls: with ``checks``, also check the controls (:data:`~monai_xai.cams.CONTROL_METHODS`), which must
            fail: a check one of them passes is not discriminating for this bundle; their rows come last.
        n_noise: sMPRT's maps averaged per case (``n_noise - 1`` noisy copies and the clean image); each noisy copy
            costs two explanations of every case (the clean image's maps are the top-down test's).
        noise_magnitude: sMPRT's noise standard deviation as a share of each case's intensity range.
        bottom_up_fraction: share of the network's modules (from the input) the bottom-up check re-initialises.
        permuted_weights: the weights of the same network trained on permuted labels (the ``data`` check), e.g.
            ``models/permuted_labels/model.pt`` after the bundle's ``train.json`` with ``--permute_labels true``; a
            relative path is taken from the working directory.

    Returns:
        one :class:`MethodSanity` per method, in the order of the methods.
    """
    if n_cases is not None and (not isinstance(n_cases, int) or n_cases < 1):
        raise ValueError(f"n_cases must be a positive int or None, got {n_cases!r}.")
    for argument, path in (("figure", figure), ("cascade_figure", cascade_figure)):
        if path is not None:
            check_writable(path, argument)
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    bundle = load_trained_bundle(bundle_dir, torch_device)
    settings = bundle.settings.replace(
        methods=methods, target_layers=target_layer, class_idx=class_idx, pixel_set=pixel_set, score=score
    )
    _check_chosen(settings)
    trust_checks = _trust_checks(checks, permuted_weights is not None)
    permuted_network = None
    if SanityCheck.DATA in trust_checks:
        if permuted_weights is None or not Path(permuted_weights).is_file():
            raise ValueError(
                f"the data randomisation check needs the weights of {bundle_dir}'s network trained on permuted labels "
                f"(permuted_weights), got {permuted_weights!r}; train them with the bundle's train.json and "
                "`--permute_labels true --ckpt_dir <folder>` (see the bundle's docs/README.md)."
            )
        permuted_network = load_trained_bundle(bundle_dir, torch_device, weights=Path(permuted_weights).resolve())
        permuted_network = permuted_network.network
    if trust_checks and controls:
        missing = [control for control in CONTROL_METHODS if control not in settings.methods]
        settings = settings.replace(methods=[*settings.methods, *missing])
    # the maps are compared, not timed: methods at one layer share a pass
    step = ExplainStep(settings.request(window=bundle.window, time_each_method=False))
    if cascade_methods is not None:
        _method_subset(settings.methods, cascade_methods, "cascade_methods")
    with tempfile.TemporaryDirectory() as folder:
        required_region = region_key is not None and datalist is not None
        if datalist is None:
            datalist = write_phantom_dataset(
                folder, n_cases or PHANTOM_CASES, seed=seed, positive_fraction=1.0, split=(0.0, 0.0, 1.0)
            )
            data_list_key, region_key = "test", "mask"
        region_key = region_key or bundle.settings.region_key or "mask"
        # the key the bundle's transforms load the ground truth with (the demo segmenter's "label")
        transform_key = bundle.settings.region_key or region_key
        cases = read_datalist(Path(datalist).resolve(), data_list_key, region_key, n_cases)
        if required_region and not any("region" in case for case in cases):
            raise ValueError(
                f"no case of {data_list_key!r} in {datalist} has the region key {region_key!r}; check --region_key "
                "(the datalist's key of the ground-truth mask) or leave it out to check randomisation only."
            )
        batches = case_batches(cases, bundle.preprocessing, transform_key, batch_size)
        with tqdm(total=len(cases), desc="sanity checks", unit="case", disable=not progress) as bar:
            per_case = _check_batches(
                bundle.network,
                batches,
                step,
                cascade_methods,
                n_draws,
                randomisation_seed,
                (figure, cascade_figure),
                bar,
                maps_dir,
                TrustSettings(trust_checks, n_noise, noise_magnitude, bottom_up_fraction, permuted_network),
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
            uses_gradients=get_method(method).family == MethodFamily.GRADIENT and get_method(method).needs_gradients,
            checks={
                check: check_verdict(check, per_case[check][method], seed=randomisation_seed)
                for check in trust_checks
                if len(per_case[check][method])  # empty: the check does not apply to this bundle's target
            },
        )
        for method in settings.methods
    ]


class TrustSettings(NamedTuple):
    """The further checks of a sanity run and their settings (see :func:`bundle_sanity_checks`)."""

    checks: tuple[SanityCheck, ...]
    n_noise: int = 8
    noise_magnitude: float = 0.1
    bottom_up_fraction: float = 0.5
    permuted_network: nn.Module | None = None


NO_TRUST_CHECKS = TrustSettings(())


def _trust_checks(checks: Sequence[str] | str | None, permuted: bool = False) -> tuple[SanityCheck, ...]:
    """The checks named by ``checks``: None: none; ``"all"``: every one (``data`` only when ``permuted`` weights are
    given); a name or a list of names."""
    if checks is None:
        return ()
    if checks == "all":
        return tuple(check for check in SanityCheck if permuted or check != SanityCheck.DATA)
    names = (checks,) if isinstance(checks, str) else tuple(checks)
    return tuple(dict.fromkeys(as_choice(SanityCheck, name, "checks") for name in names))


def _check_chosen(settings: ExplainSettings) -> None:
    """Raise a ``ValueError`` saying what to pass when neither the arguments nor the bundle choose the methods (the
    layer, when neither names one, is chosen on the first case by :func:`~monai_xai.cams.choose_target_layer`)."""
    if not settings.methods:
        raise ValueError(
            "the bundle's configs/explain.json does not set xai_methods (--methods): pass them, e.g. "
            "--methods \"['gradcam','hirescam']\"."
        )


def _layer_groups(
    layers: Mapping[str, LayerSpec | None], methods: Sequence[str]
) -> list[tuple[LayerSpec | None, tuple[str, ...]]]:
    """``[(layer(s), methods explained there)]`` of an explanation's ``{method: layer(s)}``; the input attributions
    (layer None) as one group of layer None."""
    layered = [method for method in methods if layers[method] is not None]
    groups: list[tuple[LayerSpec | None, tuple[str, ...]]] = (
        list(group_methods_by_layer({method: layers[method] for method in layered}, layered)) if layered else []
    )
    free = tuple(method for method in methods if layers[method] is None)
    return groups + ([(None, free)] if free else [])


def _write_maps(result: RandomisationResult, sources: list[str], affines: list, folder: Path, names: CaseNames) -> None:
    """Each case's maps of both networks as ``<case>_<method>_trained.nii.gz`` / ``..._randomised.nii.gz`` on the
    network's grid (the preprocessed image's affine)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, (source, affine) in enumerate(zip(sources, affines)):
        case = names.stem(strip_image_suffix(Path(source).name))
        for network, maps in (("trained", result.trained_maps), ("randomised", result.randomised_maps)):
            for method, values in maps.items():
                written = MetaTensor(values[index].detach().cpu(), affine=affine)
                write_map(written, folder / f"{case}_{safe_stem(method)}_{network}.nii.gz")


def _check_batches(
    network: nn.Module,
    batches: Iterator[CaseBatch],
    step: ExplainStep,
    cascade_methods: Sequence[str] | None,
    n_draws: int,
    randomisation_seed: int,
    figures: tuple[str | Path | None, str | Path | None],
    bar: tqdm,
    maps_dir: str | Path | None = None,
    trust: TrustSettings = NO_TRUST_CHECKS,
) -> dict[str, dict[str, torch.Tensor]]:
    """Per-case figures ``{figure name: {method: (N,) values}}`` over all batches (NaN where undefined); the maps and
    the cascade pictures (``figures``, either None) of the first batch. ``cascade_methods``: the methods the cascade
    shows (None: all). ``maps_dir``: where every case's maps of both networks are written (None: nowhere). ``trust``:
    the further checks, whose per-case statistics are keyed by the check."""
    case_names = CaseNames()
    methods = step.request.methods
    device = next(network.parameters()).device
    generator = torch.Generator(device=device).manual_seed(randomisation_seed)
    names = ("ehr_auc", "randomised_ehr_auc", "random_uniform", "random_smooth", "spearman", *trust.checks)
    collected: dict[str, dict[str, list[torch.Tensor]]] = {name: {method: [] for method in methods} for name in names}
    for index, (images, regions, sources, affines) in enumerate(batches):
        images, regions = images.to(device), regions.to(device)
        result = model_randomisation_check(network, images, step, randomisation_seed)
        if trust.checks:
            statistics = batch_trust_statistics(
                network,
                images,
                step,
                result.trained,
                result.randomised_maps,
                result.randomised_network,
                trust.checks,
                randomisation_seed,
                trust.n_noise,
                trust.noise_magnitude,
                bottom_up_fraction=trust.bottom_up_fraction,
                generator=generator,
                permuted_network=trust.permuted_network,
            )
            for check, by_method in statistics.items():
                for method, values in by_method.items():
                    collected[check][method].append(values.to(device))
        if maps_dir is not None:
            _write_maps(result, sources, affines, Path(maps_dir), case_names)
        groups = _layer_groups(result.layers, methods)
        figure, cascade_figure = figures if index == 0 else (None, None)
        if figure is not None:
            save_randomisation_figure(result, images[0], regions[0], groups, figure)
        if cascade_figure is not None:
            shown = tuple(cascade_methods or methods)
            layers = {method: result.layers[method] for method in shown}
            cam_layers = {method: layer for method, layer in layers.items() if layer is not None} or None
            cascade_step = ExplainStep(step.request.replace(methods=shown, target_layers=cam_layers))
            cascade = cascading_randomisation(
                network, images, cascade_step, randomisation_seed, progress=not bar.disable
            )
            save_cascade_figure(cascade, _layer_groups(layers, shown), images.shape[0], cascade_figure)
        uniform = _where_region(
            lambda region: random_map_baseline(ehr_auc, region, n_draws, RandomMap.UNIFORM, generator=generator),
            regions,
        )
        for layers, grouped in groups:
            # an input attribution's map has a value per voxel: its smooth baseline is drawn at the input's grid
            grid = tuple(images.shape[2:]) if layers is None else feature_grid(network, layers, images[:1])
            smooth = _where_region(
                lambda region, grid=grid: random_map_baseline(
                    ehr_auc, region, n_draws, RandomMap.SMOOTH, grid, generator=generator
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
        name: {method: torch.cat(values) if values else torch.empty(0) for method, values in by_method.items()}
        for name, by_method in collected.items()
    }
