"""The study file: what a comparison explains, on which data, scored how, and how its statistics are made.

A study file is JSON (paths in it are relative to the file's own folder, except ``output_dir``, which is relative to
the working directory)::

    {
        "name": "chaddad-brain-tumour",
        "output_dir": "outputs/studies/chaddad-brain-tumour",
        "data": {"datalist": "datalist.json", "data_list_key": "test", "region_key": null, "label_key": "label"},
        "bundles": [
            {"name": "resnet50", "path": "../../bundles/brain_tumor_mri_classification", "layers": ["layer4"]}
        ],
        "methods": ["gradcampp", "xgradcam", "eigengradcam", "ablationcam", "layercam"],
        "metrics": ["road_morf", "road_lerf", "road_combined", "confidence_increase"],
        "metric_args": {"road_combined": {"percentiles": [10, 20, 30, 40, 50, 70, 90]}},
        "iou_threshold": {"mode": "otsu"},
        "statistics": {"alpha": 0.05, "confidence_level": 0.95, "bootstrap_resamples": 2000, "seed": 0},
        "sanity": {"cases": 8, "seed": 0},
        "reliability": {"cases": 8, "noise": 0.01, "seed": 0},
        "mlflow": {"tracking_uri": null, "experiment": "monai-xai-studies"},
        "batch_size": 4,
        "seed": 0,
        "maps": false
    }

``data`` is a MONAI datalist, or ``{"phantom": {"n_cases": 24, "seed": 4242, ...}}`` (arguments of
:func:`~monai_xai.data.ensure_phantom_dataset`, written under the output folder). A bundle entry may set ``class``,
``pixel_set``, ``score``, ``region_key``, ``region_value`` and ``layers``; what it leaves out comes from the bundle's
own ``configs/explain.json`` (``xai_class``, ``xai_pixel_set``, ``xai_score``, ``xai_region_key``,
``xai_region_value``, ``xai_target_layer``). ``class`` takes what ``xai_class`` takes: an int, several classes of a
segmenter explained together (``"1+2+3"``, ``"foreground"``), or null (a classifier's predicted class, a segmenter's
every foreground class). Each case is predicted and explained as the bundle's own inferer runs the network: window by
window when it is a ``SlidingWindowInferer``, so a volume larger than the network's window fits in memory.
Several ``layers`` make a layer comparison: each layer is explained on its
own. ``overrides`` replaces config ids of the bundle (``{"backbone": "vgg16"}``) and ``weights`` names the weights file
(relative to the bundle; default ``models/model.pt``), so one bundle trained with several backbones gives several
entries: an architecture comparison.

:func:`load_study` reads and checks the whole file, the bundles' weights and every layer before any case is explained.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from monai_xai.budgets import BOOTSTRAP_RESAMPLES, SANITY_CASES, Budget, BudgetExceeded, check_methods, check_phantom
from monai_xai.bundle import load_trained_bundle
from monai_xai.cams import AttributionSettings, ClassSet, method_names, resolve_layers
from monai_xai.cams.registry import get_method
from monai_xai.data.phantom import DEFAULT_SHAPE
from monai_xai.enums import IOU, IoUThresholdMode, PixelSet, Score, as_choice
from monai_xai.explanation import ExplainRequest, SlidingWindow
from monai_xai.metrics.catalogue import METRICS

__all__ = ["StudyBundle", "StudyData", "StudySpec", "load_study", "study_from_dict"]

# thresholds tried when tuning the IoU threshold on the validation split
DEFAULT_TUNING_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))
_KNOWN_KEYS = {
    "name",
    "output_dir",
    "data",
    "bundles",
    "methods",
    "metrics",
    "metric_args",
    "iou_threshold",
    "statistics",
    "sanity",
    "reliability",
    "mlflow",
    "batch_size",
    "seed",
    "device",
    "maps",
}


@dataclass(frozen=True)
class StudyBundle:
    """One compared network ("architecture"): a trained bundle and what to explain in it.

    Attributes:
        name: short name used in tables, e.g. ``"resnet50"``.
        path: bundle folder in model-zoo layout.
        weights: its trained weights (``weights`` in the file is relative to the bundle folder; default: the one
            :func:`~monai_xai.bundle.load_trained_bundle` finds).
        overrides: config ids replaced before parsing ``configs/inference.json`` (e.g. ``{"backbone": "vgg16"}``:
            several entries of one bundle with other backbones and weights make an architecture comparison).
        layers: CAM layers; each is explained on its own (a layer comparison when there are several).
        class_idx: explained class, as ``xai_class`` takes it: an int, several classes of a segmenter explained
            together (:class:`~monai_xai.cams.ClassSet`; ``"1+2+3"`` or ``"foreground"`` in the file), or None (a
            classifier's predicted class; a segmenter's every foreground class together).
        pixel_set: segmentation pixel set (a name or one voxel); None: the predicted region of the class
            (segmentation), nothing (classification).
        score: explained score (``"logit"`` or ``"probability"``).
        region_key: the key under which the bundle's preprocessing loads the ground-truth region (its
            ``xai_region_key``, e.g. ``"mask"`` or ``"label"``), whatever the datalist calls it.
        region_value: which region of the ground-truth label: ``"class"`` (the explained class), None (any
            foreground) or an int.
        window: the sliding window of the bundle's inferer (None: whole images), with which its cases are predicted
            and explained.
        attribution: the input-attribution methods' settings (the entry's ``attribution``, else the bundle's
            ``xai_attribution``; :class:`~monai_xai.cams.AttributionSettings`).
    """

    name: str
    path: Path
    layers: tuple[str, ...]
    weights: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    class_idx: int | ClassSet | None = None
    pixel_set: PixelSet | tuple[int, ...] | None = None
    score: Score = Score.LOGIT
    region_key: str = "label"
    region_value: int | str | None = "class"
    window: SlidingWindow | None = None
    attribution: AttributionSettings = AttributionSettings()

    def request(self, layer: str, methods: Sequence[str]) -> ExplainRequest:
        """What the study explains of this bundle at ``layer`` with ``methods`` (one timed pass per method)."""
        return ExplainRequest(
            methods=tuple(methods),
            target_layers=layer,
            class_idx=self.class_idx,
            pixel_set=self.pixel_set,
            score=self.score,
            window=self.window,
            attribution=self.attribution,
        )


@dataclass(frozen=True)
class StudyData:
    """The cases: a MONAI datalist (or a phantom data set written on first use).

    Attributes:
        datalist: datalist path; None with ``phantom``.
        phantom: arguments of :func:`~monai_xai.data.ensure_phantom_dataset` (``n_cases``, ``seed``, ...), or None.
        data_list_key: list of the datalist holding the test cases.
        validation_key: list holding the validation cases (IoU threshold tuning).
        region_key: datalist key of the ground-truth region (None: the first bundle's ``xai_region_key``; phantoms:
            ``"mask"``).
        label_key: case key of the true class (per-class tables); cases without it are grouped by explained class.
        n_cases: first ``n_cases`` test cases only (None: all).
    """

    datalist: Path | None = None
    phantom: Mapping[str, Any] | None = None
    data_list_key: str = "test"
    validation_key: str = "validation"
    region_key: str | None = None
    label_key: str = "label"
    n_cases: int | None = None


@dataclass(frozen=True)
class StudySpec:
    """A whole study file, checked (see the module docstring for the JSON form).

    Attributes:
        name: study name (MLflow run name, report title).
        source: the study file (None when built from a dict).
        output_dir: folder for the row store, the report and the default MLflow store.
        data: the cases.
        bundles: compared bundles, in report order.
        methods: CAM methods.
        metrics: XAI metric names (:data:`~monai_xai.handlers.XAI_METRICS`); seconds per case are always recorded.
        metric_args: keyword arguments per metric.
        iou_mode, iou_value, iou_grid: the IoU threshold (see :class:`~monai_xai.enums.IoUThresholdMode`).
        alpha, confidence_level, bootstrap_resamples, statistics_seed: the statistics.
        sanity_cases, sanity_seed: cases of the model-randomisation check per method (0: no check).
        reliability_cases, reliability_noise, reliability_seed: cases of the metrics' reliability check (0: no check),
            its input noise (standard deviation as a fraction of each image's intensity range) and the noise's seed
            (:mod:`monai_xai.sanity.metric_reliability`).
        mlflow: ``{"tracking_uri": ..., "experiment": ...}`` (no ``tracking_uri``: the environment's
            ``MLFLOW_TRACKING_URI``, else a sqlite store in the output folder), or None for no tracking.
        batch_size: cases per batch; batches are fixed by case order, so results do not depend on ranks.
        seed: seed of every random stream (ROAD's imputation noise), derived per batch.
        device: ``"cpu"``, ``"cuda"``, ... (None: CUDA when available).
        maps: also write every explained map as NIfTI, ``<output_dir>/maps/<bundle>/<layer>/<method>/<case>.nii.gz``
            on the network's grid with the preprocessed image's affine.
    """

    name: str
    source: Path | None
    output_dir: Path
    data: StudyData
    bundles: tuple[StudyBundle, ...]
    methods: tuple[str, ...]
    metrics: tuple[str, ...]
    metric_args: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    iou_mode: IoUThresholdMode = IoUThresholdMode.OTSU
    iou_value: float = 0.5
    iou_grid: tuple[float, ...] = DEFAULT_TUNING_GRID
    alpha: float = 0.05
    confidence_level: float = 0.95
    bootstrap_resamples: int = 2000
    statistics_seed: int = 0
    sanity_cases: int = 8
    sanity_seed: int = 0
    reliability_cases: int = 8
    reliability_noise: float = 0.01
    reliability_seed: int = 0
    mlflow: Mapping[str, Any] | None = None
    batch_size: int = 4
    seed: int = 0
    device: str | None = None
    maps: bool = False

    def fingerprint(self) -> str:
        """Hash of everything that changes a stored row (not methods or metrics: rows are keyed by them), so that a
        resumed study never mixes rows computed under other settings."""
        content = {
            "data": asdict(self.data),
            "bundles": [asdict(bundle) for bundle in self.bundles],
            "metric_args": self.metric_args,
            "iou": [self.iou_mode, self.iou_value, list(self.iou_grid)],
            "sanity": [self.sanity_cases, self.sanity_seed],
            "reliability": [self.reliability_cases, self.reliability_noise, self.reliability_seed],
            "batch_size": self.batch_size,
            "seed": self.seed,
        }
        return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        """The checked study as JSON-ready data (what the report folder keeps as ``study.json``)."""
        content = asdict(self)
        content["bundles"] = [{**asdict(b), "path": str(b.path)} for b in self.bundles]
        return json.loads(json.dumps(content, default=str))


def _fail(source: str, message: str) -> ValueError:
    return ValueError(f"study {source}: {message}")


def _refused(source: str, error: TypeError | ValueError) -> ValueError:
    """``error`` as a study error: a ``ValueError`` (a refused budget stays a
    :class:`~monai_xai.budgets.BudgetExceeded`)."""
    if isinstance(error, ValueError):
        try:
            return type(error)(f"study {source}: {error}")
        except Exception:  # an error type that takes other arguments
            pass
    return _fail(source, str(error))


def _names(source: str, key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Sequence) or not value or not all(isinstance(item, str) for item in value):
        raise _fail(source, f"{key!r} must be a non-empty list of names, got {value!r}.")
    return tuple(value)


def _number(
    source: str,
    where: str,
    value: Any,
    kind: type,
    low: float,
    high: float,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> Any:
    """``value`` as ``kind`` (int or float) within ``low`` .. ``high`` (open at an end when asked), else a ValueError
    naming ``where``, the range and the value (a bool, a string or NaN is no number here)."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    number = value if is_int or (kind is float and isinstance(value, float)) else None
    in_range = (
        number is not None
        and number == number
        and (low < number if open_low else low <= number)
        and (number < high if open_high else number <= high)
    )
    if not in_range:
        what = "a whole number" if kind is int else "a number"
        if math.isinf(high):
            bounds = f"{'>' if open_low else '>='} {low:g}"
        else:
            bounds = f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise _fail(source, f"{where} must be {what} {bounds}, got {value!r}.")
    return kind(number)


def _section(source: str, content: Mapping[str, Any], key: str, known: set[str]) -> dict[str, Any]:
    value = content.get(key) or {}
    if not isinstance(value, Mapping):
        raise _fail(source, f"{key!r} must be an object, got {value!r}.")
    unknown = sorted(set(value) - known)
    if unknown:
        raise _fail(source, f"{key!r} has unknown keys {unknown}; known: {sorted(known)}.")
    return dict(value)


def _check_section(source: str, content: Mapping[str, Any], key: str, known: set[str]) -> dict[str, Any]:
    """A check's section (``sanity``, ``reliability``): ``false`` runs no check (0 cases), else as :func:`_section`."""
    if content.get(key) is False:
        return {"cases": 0}
    return _section(source, content, key, known)


def _check_methods(source: str, methods: tuple[str, ...]) -> None:
    for method in methods:
        try:
            get_method(method)
        except ValueError:
            raise _fail(source, f"unknown method {method!r}; available: {method_names()}.") from None


def _check_metrics(source: str, metrics: tuple[str, ...], metric_args: Mapping[str, Any]) -> None:
    unknown = [metric for metric in metrics if metric not in METRICS]
    if unknown:
        raise _fail(source, f"unknown metric(s) {unknown}; available: {sorted(METRICS)}.")
    if IOU in metric_args:
        raise _fail(
            source,
            "the IoU threshold is set by 'iou_threshold' ({'mode': 'fixed' | 'otsu' | 'tuned'}), not by metric_args.",
        )
    stray = sorted(set(metric_args) - set(metrics))
    if stray or not all(isinstance(args, Mapping) for args in metric_args.values()):
        raise _fail(source, f"'metric_args' must map the study's metrics to keyword arguments; stray keys {stray}.")
    for metric, args in metric_args.items():
        try:  # built once here so that a wrong argument fails before any case is explained
            METRICS[metric].create(nn.Identity(), **args)
        except (TypeError, ValueError) as error:  # the message names metric_args.<metric>.<argument>
            raise _refused(source, error) from None


def _data(source: str, content: Mapping[str, Any], root: Path) -> StudyData:
    data = _section(source, content, "data", {f.name for f in StudyData.__dataclass_fields__.values()})
    if (data.get("datalist") is None) == (data.get("phantom") is None):
        raise _fail(source, "'data' needs exactly one of 'datalist' (a MONAI datalist) or 'phantom' (phantom cases).")
    if data.get("datalist") is not None:
        datalist = (root / data["datalist"]).resolve()
        if not datalist.is_file():
            raise _fail(source, f"datalist {datalist} does not exist (paths are relative to the study file).")
        data["datalist"] = datalist
    elif not isinstance(data["phantom"], Mapping) or "n_cases" not in data["phantom"]:
        raise _fail(source, "'phantom' must be an object with at least 'n_cases' (and 'seed', 'split', ...).")
    else:
        _check_phantom(source, data["phantom"])
    n_cases = data.get("n_cases")
    if n_cases is not None and (not isinstance(n_cases, int) or isinstance(n_cases, bool) or n_cases < 1):
        raise _fail(source, f"'n_cases' must be a positive int or null, got {n_cases!r}.")
    return StudyData(**data)


def _check_phantom(source: str, phantom: Mapping[str, Any]) -> None:
    """The phantom data set's size within its budgets, before the study writes a case."""
    n_cases, shape = phantom["n_cases"], phantom.get("shape", DEFAULT_SHAPE)
    if isinstance(n_cases, bool) or not isinstance(n_cases, int) or n_cases < 1:
        raise _fail(source, f"'data.phantom.n_cases' must be a positive int, got {n_cases!r}.")
    sizes = shape if isinstance(shape, Sequence) and not isinstance(shape, str) else ()
    if len(sizes) != 3 or not all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in sizes):
        raise _fail(source, f"'data.phantom.shape' must be 3 positive ints (X, Y, Z), got {shape!r}.")
    try:
        check_phantom(n_cases, sizes, "data.phantom.n_cases")
    except BudgetExceeded as error:
        raise _refused(source, error) from None


def _bundle(source: str, index: int, entry: Any, root: Path) -> StudyBundle:
    """One checked bundle entry."""
    known = {"name", "path", "weights", "overrides", "layers", "class", "pixel_set", "score", "region_key"}
    known |= {"region_value", "attribution"}
    if not isinstance(entry, Mapping) or "path" not in entry:
        raise _fail(
            source, f"bundle {index} must be an object with at least 'path' (and 'name', 'layers'), got {entry!r}."
        )
    unknown = sorted(set(entry) - known)
    if unknown:
        raise _fail(source, f"bundle {index} has unknown keys {unknown}; known: {sorted(known)}.")
    path = (root / entry["path"]).resolve()
    name = str(entry.get("name") or path.name)
    overrides = entry.get("overrides") or {}
    if not isinstance(overrides, Mapping):
        raise _fail(source, f"bundle {name!r}: 'overrides' must map config ids to values, got {overrides!r}.")
    weights = entry.get("weights")
    try:
        trained = load_trained_bundle(path, "cpu", overrides, weights)
    except FileNotFoundError as error:
        raise _fail(source, f"bundle {name!r}: {error} (paths are relative to the study file).") from None
    except (RuntimeError, ValueError, KeyError) as error:
        raise _fail(source, f"bundle {name!r} cannot be loaded: {error}") from None
    settings = trained.settings
    layers = entry.get("layers", settings.target_layers)
    if not layers or isinstance(layers, Mapping):
        raise _fail(source, f"bundle {name!r}: give its CAM 'layers' (a list of layer names); the bundle names none.")
    layers = _names(source, f"bundles[{index}].layers", layers)
    for layer in layers:
        try:
            resolve_layers(trained.network, layer)
        except ValueError as error:
            raise _fail(source, f"bundle {name!r}: layer {layer!r} is not in its network ({error}).") from None
    try:
        class_idx = ExplainRequest.check_field("class_idx", entry.get("class", settings.class_idx))
        pixel_set = entry.get("pixel_set", settings.pixel_set)
        pixel_set = None if pixel_set is None else ExplainRequest.check_field("pixel_set", pixel_set)
        score = ExplainRequest.check_field("score", entry.get("score", settings.score))
        attribution = ExplainRequest.check_field("attribution", entry.get("attribution", settings.attribution))
    except (TypeError, ValueError) as error:
        raise _fail(source, f"bundle {name!r}: {error}") from None
    if isinstance(class_idx, tuple):
        raise _fail(
            source,
            f"bundle {name!r}: 'class' must be one class for every case (an int), several of a segmenter explained "
            f"together ('1+2+3', 'foreground') or null, got {class_idx!r}.",
        )
    return StudyBundle(
        name=name,
        path=path,
        weights=trained.weights,
        overrides=dict(overrides),
        layers=layers,
        class_idx=class_idx,
        pixel_set=pixel_set,
        score=score,
        region_key=str(entry.get("region_key") or settings.region_key or "label"),
        region_value=entry.get("region_value", settings.region_value),
        window=trained.window,
        attribution=attribution,
    )


def study_from_dict(content: Mapping[str, Any], root: Path, source: str = "<dict>") -> StudySpec:
    """Check a study given as data; relative paths are relative to ``root``.

    Raises:
        ValueError: naming the first wrong entry: an unknown key, method or metric, a missing bundle, weights file,
            datalist or layer.
    """
    if not isinstance(content, Mapping):
        raise _fail(source, f"a study file holds one JSON object, got {type(content).__name__}.")
    unknown = sorted(set(content) - _KNOWN_KEYS)
    if unknown:
        raise _fail(source, f"unknown keys {unknown}; known: {sorted(_KNOWN_KEYS)}.")
    name = content.get("name")
    if not isinstance(name, str) or not name:
        raise _fail(source, "'name' (the study's name) is missing.")
    methods = _names(source, "methods", content.get("methods"))
    try:
        check_methods(methods, "'methods'")
    except ValueError as error:  # a repeated method, or more than the budget
        raise _refused(source, error) from None
    _check_methods(source, methods)
    metrics = _names(source, "metrics", content.get("metrics"))
    metric_args = content.get("metric_args") or {}
    _check_metrics(source, metrics, metric_args)
    iou = _section(source, content, "iou_threshold", {"mode", "value", "grid"})
    try:
        iou_mode = as_choice(IoUThresholdMode, iou.get("mode", IoUThresholdMode.OTSU), "'iou_threshold.mode'")
    except ValueError as error:
        raise _fail(source, str(error)) from None
    statistics = _section(source, content, "statistics", {"alpha", "confidence_level", "bootstrap_resamples", "seed"})
    sanity = _check_section(source, content, "sanity", {"cases", "seed"})
    reliability = _check_section(source, content, "reliability", {"cases", "noise", "seed"})
    numbers = _numbers(source, content, iou, statistics, sanity, reliability)
    mlflow = content.get("mlflow", {})
    if mlflow is not False:
        mlflow = _section(source, {"mlflow": mlflow}, "mlflow", {"tracking_uri", "experiment"})
    data = _data(source, content, root)
    bundle_entries = content.get("bundles")
    if not isinstance(bundle_entries, Sequence) or not bundle_entries:
        raise _fail(source, "'bundles' must list at least one bundle ({'name': ..., 'path': ..., 'layers': [...]}).")
    bundles = [_bundle(source, index, entry, root) for index, entry in enumerate(bundle_entries)]
    names = [bundle.name for bundle in bundles]
    if len(set(names)) != len(names):
        raise _fail(source, f"bundle names must differ (they label the tables), got {names}.")
    region_key = data.region_key or ("mask" if data.phantom is not None else bundles[0].region_key)
    batch_size = content.get("batch_size", 4)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise _fail(source, f"'batch_size' must be a positive int, got {batch_size!r}.")
    output_dir = Path(content.get("output_dir") or Path("outputs") / "studies" / name)
    maps = content.get("maps", False)
    if not isinstance(maps, bool):
        raise _fail(source, f"'maps' must be true or false (write every map as NIfTI), got {maps!r}.")
    return StudySpec(
        name=name,
        source=None,
        output_dir=output_dir,
        data=StudyData(**{**asdict(data), "region_key": region_key}),
        bundles=tuple(bundles),
        methods=methods,
        metrics=metrics,
        metric_args={metric: dict(args) for metric, args in metric_args.items()},
        iou_mode=iou_mode,
        **numbers,
        mlflow=None if mlflow is False else mlflow,
        batch_size=batch_size,
        device=content.get("device"),
        maps=maps,
    )


def _numbers(
    source: str,
    content: Mapping[str, Any],
    iou: Mapping[str, Any],
    statistics: Mapping[str, Any],
    sanity: Mapping[str, Any],
    reliability: Mapping[str, Any],
) -> dict[str, Any]:
    """The study's numbers (IoU threshold and grid, statistics, sanity and reliability counts, noise, seeds) as
    StudySpec fields, each checked
    for its type and range before any bundle is loaded."""
    seed_range = (int, 0, 2**63 - 1)
    probability = {"open_low": True, "open_high": True}
    return {
        "iou_value": _number(source, "'iou_threshold.value'", iou.get("value", 0.5), float, 0, 1),
        "iou_grid": _iou_grid(source, iou.get("grid", DEFAULT_TUNING_GRID)),
        "alpha": _number(source, "'statistics.alpha'", statistics.get("alpha", 0.05), float, 0, 1, **probability),
        "confidence_level": _number(
            source,
            "'statistics.confidence_level'",
            statistics.get("confidence_level", 0.95),
            float,
            0,
            1,
            **probability,
        ),
        "bootstrap_resamples": _counted(
            source,
            "'statistics.bootstrap_resamples'",
            statistics.get("bootstrap_resamples", 2000),
            1,
            BOOTSTRAP_RESAMPLES,
        ),
        "statistics_seed": _number(source, "'statistics.seed'", statistics.get("seed", 0), *seed_range),
        "sanity_cases": _counted(source, "'sanity.cases'", sanity.get("cases", 8), 0, SANITY_CASES),
        "sanity_seed": _number(source, "'sanity.seed'", sanity.get("seed", 0), *seed_range),
        "reliability_cases": _counted(source, "'reliability.cases'", reliability.get("cases", 8), 0, SANITY_CASES),
        "reliability_noise": _number(
            source, "'reliability.noise'", reliability.get("noise", 0.01), float, 0, 1, **probability
        ),
        "reliability_seed": _number(source, "'reliability.seed'", reliability.get("seed", 0), *seed_range),
        "seed": _number(source, "'seed'", content.get("seed", 0), *seed_range),
    }


def _counted(source: str, where: str, value: Any, low: int, budget: Budget) -> int:
    """A whole number of at least ``low`` within ``budget`` (:mod:`monai_xai.budgets`: raised by its environment
    variable)."""
    count = _number(source, where, value, int, low, math.inf)
    budget.check(count, f"study {source}: {where}")
    return count


def _iou_grid(source: str, grid: Any) -> tuple[float, ...]:
    """The IoU thresholds tried when tuning: a non-empty list of numbers in [0, 1]."""
    if isinstance(grid, str | bytes) or not isinstance(grid, Sequence) or not grid:
        raise _fail(source, f"'iou_threshold.grid' must be a non-empty list of thresholds in [0, 1], got {grid!r}.")
    return tuple(_number(source, "each of 'iou_threshold.grid'", value, float, 0, 1) for value in grid)


def load_study(path: str | Path, **override: Any) -> StudySpec:
    """Read and check a study file (see the module docstring); ``override`` replaces top-level keys
    (``output_dir="..."``) before the check.

    Raises:
        FileNotFoundError: no such file.
        ValueError: invalid JSON, or a wrong entry (see :func:`study_from_dict`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"study file {path} does not exist; the shipped ones are in configs/studies/.")
    try:
        content = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"study {path}: not valid JSON: {error}.") from error
    if isinstance(content, dict):
        content.update({key: value for key, value in override.items() if value is not None})
    spec = study_from_dict(content, path.resolve().parent, source=str(path))
    return StudySpec(**{**spec.__dict__, "source": path.resolve()})
