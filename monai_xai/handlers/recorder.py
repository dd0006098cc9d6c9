"""``XAIRecorder``: each explained case as a record (its name, class, time and each map in words), and at the end of
the run each case's metric values and the summary over cases, in ``engine.state.xai_results``
(:class:`~monai_xai.handlers.records.RunRecords`).

Attach it after the :class:`~monai_xai.inferers.XAIInferer` and before the writers (:class:`SaliencyWriter`,
:class:`XAITableWriter`, :class:`XAIReportWriter`), which read its records; ``configs/explain.json`` does so.

Before the first case the results folder is checked and prepared (:func:`~monai_xai.handlers.results_dir.
prepare_results_dir`: a folder holding an earlier run's results is refused unless ``overwrite``). Per-case records are
gathered from all ranks on ``Events.COMPLETED``, i.e. after the metric handlers computed their values at the end of
the epoch; the metric values are matched to the records through ``engine.state.xai_metric_keys``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite import distributed as idist
from ignite.engine import Events
from monai.data import MetaTensor
from monai.utils import CommonKeys
from torch import nn

from monai_xai.cams.attributions import channel_shares
from monai_xai.describe import WHOLE_IMAGE, CaseDescription, describe, read_sanity_verdicts
from monai_xai.describe.description import is_distribution
from monai_xai.enums import EXPLAINED_CLASS, CaseName, XAIKeys, as_choice, attribution_key, saliency_key, seconds_key
from monai_xai.handlers.engine_data import case_value, engine_cases, metric_keys
from monai_xai.handlers.records import CaseRecord, MethodRecord, RunRecords
from monai_xai.handlers.results_dir import prepare_results_dir
from monai_xai.metrics.catalogue import region_mask
from monai_xai.metrics.stats import summary_table
from monai_xai.naming import CaseNames, strip_image_suffix
from monai_xai.networks import is_calibrated

logger = logging.getLogger(__name__)

__all__ = [
    "EXPLAINED_REGION",
    "GROUND_TRUTH_REGION",
    "XAIRecorder",
    "class_probabilities",
    "explained_classes",
    "gather_rows",
    "ground_truth_mask",
]

# name of the explained pixel set among a segmentation description's masks ("It covers 80% of the explained region")
EXPLAINED_REGION = "explained region"
# name of the ground-truth region among the masks ("It covers 70% of the ground-truth region")
GROUND_TRUTH_REGION = "ground-truth region"
# 2D files without a physical pixel size: MONAI gives them an identity affine (sizes then count the file's pixels)
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def gather_rows(rows: list) -> list:
    """All ranks' rows in rank order (the order MONAI's metric buffers are gathered in)."""
    if idist.get_world_size() == 1:
        return rows
    gathered: list[list] = [[] for _ in range(idist.get_world_size())]
    dist.all_gather_object(gathered, rows)
    return [row for rank_rows in gathered for row in rank_rows]


def _case_source(image: Any, case_name: CaseName) -> str | None:
    """What names the case: its image file's name without its extension (``CaseName.FILE``) or the name of the folder
    holding it (``CaseName.FOLDER``); None for an image without a file. Not yet safe as a file name
    (:class:`~monai_xai.naming.CaseNames` makes it so)."""
    meta = image.meta if isinstance(image, MetaTensor) else {}
    source = meta.get("filename_or_obj")
    if not source or not isinstance(source, str):
        return None
    if case_name == CaseName.FOLDER:
        return Path(source).parent.name or None
    return strip_image_suffix(Path(source).name)


def class_probabilities(pred: torch.Tensor) -> torch.Tensor | None:
    """One classifier case's output as class probabilities.

    Args:
        pred: (num_classes,) the engine output ``pred``: probabilities when the bundle's postprocessing applied a
            softmax, else logits.

    Returns:
        (num_classes,) float64: ``pred`` itself when it is already a distribution (>= 0, summing to 1), else its
        softmax; None for a single output channel, which states no distribution over classes.
    """
    values = torch.as_tensor(pred.as_tensor() if isinstance(pred, MetaTensor) else pred).detach().double().cpu()
    if values.numel() < 2:
        return None
    return values if is_distribution(values) else values.softmax(dim=0)


def explained_classes(explained: Any) -> tuple[int, ...]:
    """The class(es) a case's maps explain, from its engine output ``"xai_class"``: () for one class, (K,) for K
    classes explained together; () when there is none."""
    if explained is None:
        return ()
    return tuple(int(k) for k in torch.as_tensor(explained).reshape(-1).tolist())


def ground_truth_mask(
    label: Any, explained: Sequence[int], region_value: int | str | None, spatial_shape: tuple[int, ...]
) -> torch.Tensor | None:
    """(1, *spatial) bool ground-truth region of one case (:func:`~monai_xai.metrics.region_mask`; of several
    ``explained`` classes: their regions joined), or None when ``label`` is not a map on the image's grid (e.g. a
    classifier's class index) or the explained class is needed and unknown."""
    label = torch.as_tensor(label.as_tensor() if isinstance(label, MetaTensor) else label)
    if label.ndim != len(spatial_shape) + 1 or tuple(label.shape[1:]) != spatial_shape:
        return None
    if region_value == EXPLAINED_CLASS and not explained:
        return None
    class_idx = torch.tensor([list(explained)]) if explained else None
    return region_mask(label[None], class_idx, region_value)[0] > 0.5


def _size_units(image: Any) -> str | None:
    """``"pixels"`` for a 2D photo (JPEG, PNG, ...: no spacing in the file), None (millimetres from the affine)
    otherwise."""
    source = image.meta.get("filename_or_obj") if isinstance(image, MetaTensor) else None
    if image.ndim == 3 and isinstance(source, str) and source.lower().endswith(PHOTO_SUFFIXES):
        return "pixels"
    return None


class XAIRecorder:
    """Record each explained case, then its metrics and the run's summary (see the module docstring).

    Args:
        output_dir: the run's results folder (checked and prepared before the first case; the writers write there).
        methods: the ``XAIInferer``'s methods.
        image_key: output/batch key of the input image (its file names the case; its affine sizes the descriptions).
        overwrite: replace the results of an earlier run in ``output_dir`` (else such a folder is refused).
        class_names: names of the classes in index order, for the descriptions (default: the class indices).
        sanity: each method's randomisation checks for this model when they are known: ``{method: {check:
            passed}}``, ``{method: passed}`` (the top-down check), or the path of the JSON file ``monai-xai sanity
            --verdicts_file`` wrote (read by :func:`~monai_xai.describe.read_sanity_verdicts`, which refuses a
            malformed one before the first case): the descriptions then say which checks the map passed and failed.
        case_name: ``"file"``: cases are named after their image file (without extension); ``"folder"``: after the
            folder holding it, for data sets whose images all share one name (KiTS23's ``case_XXXXX/imaging.nii.gz``).
            Names are made safe as file names and unique (:class:`~monai_xai.naming.CaseNames`: ``../x`` becomes
            ``x``, a name the run uses itself such as ``index.html`` gets ``_case``, repeated names ``_1``, ``_2``).
        region_key: output or batch key of the ground-truth region (as the XAI metrics read it, ``xai_region_key``);
            the descriptions then say how much of it the hot area covers. A value that is not a map on the image's
            grid (a classifier's class label) is not a region and is ignored.
        region_value: which region of ``region_key``: None (any foreground), an int, or ``"class"`` (the explained
            class), as ``xai_region_value``.
        channel_names: the input channels' names for the per-channel shares of input attributions (e.g. ``["T1",
            "FLAIR"]``, ``xai_channel_names``); default ``"channel 0"``, ``"channel 1"``, ...
    """

    def __init__(
        self,
        output_dir: str | Path,
        methods: str | Sequence[str],
        image_key: str = CommonKeys.IMAGE,
        overwrite: bool = False,
        class_names: Sequence[str] | None = None,
        sanity: Mapping[str, bool | Mapping[str, bool]] | str | Path | None = None,
        case_name: CaseName | str = CaseName.FILE,
        region_key: str | None = None,
        region_value: int | str | None = EXPLAINED_CLASS,
        channel_names: Sequence[str] | None = None,
    ) -> None:
        if output_dir is None or not str(output_dir).strip():
            raise ValueError("output_dir is empty; set the results folder, e.g. --xai_output_dir eval/xai.")
        self.output_dir = Path(output_dir)
        self.methods = (methods,) if isinstance(methods, str) else tuple(methods)
        self.image_key = image_key
        self.overwrite = overwrite
        self.class_names = list(class_names) if class_names is not None else None
        self.sanity = read_sanity_verdicts(sanity)
        self.case_name = as_choice(CaseName, case_name, "case_name (xai_case_name)")
        self.region_key = region_key
        self.region_value = region_value
        self.channel_names = list(channel_names) if channel_names is not None else None
        self.records = self._new_records()
        self._names = CaseNames()

    def _new_records(self) -> RunRecords:
        names = None if self.class_names is None else tuple(self.class_names)
        return RunRecords(self.output_dir, self.methods, class_names=names)

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.record_cases)
        engine.add_event_handler(Events.COMPLETED, self.complete)

    def _start(self, engine: Any) -> None:
        """Prepare the results folder (rank 0, the other ranks wait) and start with empty records."""
        if idist.get_rank() == 0:
            prepare_results_dir(self.output_dir, self.overwrite)
        idist.barrier()
        self.records = self._new_records()
        self._names = CaseNames()
        setattr(engine.state, XAIKeys.UNREADABLE, [])
        setattr(engine.state, XAIKeys.RESULTS, self.records)

    def _unique_name(self, image: Any) -> str:
        source = _case_source(image, self.case_name)
        if source is None:  # no file: a numbered name, per rank so that ranks never collide
            source = f"case_{len(self._names):04d}"
            source = f"rank{idist.get_rank()}_{source}" if idist.get_rank() > 0 else source
        return self._names.stem(source)

    def _description_inputs(self, engine: Any, index: int, case: Mapping[str, Any], image: Any) -> dict[str, Any]:
        """The :func:`~monai_xai.describe.describe` arguments that one case's methods share: ``class_names``,
        ``explained`` (None for several classes), ``calibrated``; a classifier's ``probabilities``; a segmenter's
        explained pixel set (unless it is the whole image) and the ground-truth region, as ``masks``."""
        classes = explained_classes(case.get(XAIKeys.CLASS))
        network = getattr(engine, "network", None)
        inputs: dict[str, Any] = {
            "class_names": self.class_names,
            "explained": classes[0] if len(classes) == 1 else None,
            "calibrated": network is not None and isinstance(network, nn.Module) and is_calibrated(network),
        }
        masks = {}
        pred = case.get(CommonKeys.PRED)
        if pred is not None and pred.ndim == 1:
            inputs["probabilities"] = class_probabilities(pred)
        elif XAIKeys.PIXEL_SET in case:
            pixel_set = (torch.as_tensor(case[XAIKeys.PIXEL_SET]) > 0.5).any(dim=0, keepdim=True)
            if not pixel_set.all():  # every voxel (pixel set "image"): the hot area's share of it says nothing
                masks[EXPLAINED_REGION] = pixel_set
        truth = self._ground_truth(engine, index, image, classes)
        if truth is not None:
            masks[GROUND_TRUTH_REGION] = truth
        if masks:
            inputs["masks"] = masks
        return inputs

    def _ground_truth(self, engine: Any, index: int, image: Any, explained: Sequence[int]) -> torch.Tensor | None:
        """(1, *spatial) bool ground-truth region of case ``index`` when ``region_key`` names one on its grid."""
        if self.region_key is None:
            return None
        try:
            label = case_value(engine, index, self.region_key)
        except KeyError:  # this case has no ground truth
            return None
        if label is None:
            return None
        return ground_truth_mask(label, explained, self.region_value, tuple(image.shape[1:]))

    @staticmethod
    def _channel_shares(attributions: Any, inputs: Mapping[str, Any]) -> dict[str, tuple[float, ...]]:
        """An input attribution's share per input channel over the whole image and each of the description's masks
        (the explained and the ground-truth region); {} for a CAM (``attributions`` None)."""
        if attributions is None:
            return {}
        signed = torch.as_tensor(attributions)[None]
        regions = {WHOLE_IMAGE: None, **inputs.get("masks", {})}
        return {
            region: tuple(channel_shares(signed, None if mask is None else torch.as_tensor(mask)[None])[0].tolist())
            for region, mask in regions.items()
        }

    def _describe(
        self,
        maps: torch.Tensor,
        image: Any,
        inputs: Mapping[str, Any],
        case: str,
        method: str,
        shares: Mapping[str, tuple[float, ...]],
    ) -> CaseDescription | None:
        """:func:`~monai_xai.describe.describe` of one case's (1, *spatial) map (with its channel shares); a map that
        cannot be described gives a warning naming ``case`` and ``method``, and None."""
        affine = image.affine if isinstance(image, MetaTensor) else None
        sanity = {"sanity_passed": self.sanity[method]} if method in self.sanity else {}
        channels = {"channel_shares": shares, "channel_names": self.channel_names} if shares else {}
        try:
            return describe(
                maps, affine=affine, method=method, units=_size_units(image), **inputs, **sanity, **channels
            )
        except ValueError as error:
            warnings.warn(
                f"case {case}: the {method} map could not be described, its text is left empty: {error}", stacklevel=2
            )
            return None

    def record_cases(self, engine: Any) -> None:
        """Record the current iteration's cases (:attr:`RunRecords.iteration`, appended to the run's cases)."""
        self.records.iteration = []
        for index, case in enumerate(engine_cases(engine.state.output)):
            image = case_value(engine, index, self.image_key)
            name = self._unique_name(image)
            inputs = self._description_inputs(engine, index, case, image)
            methods = {}
            for method in self.methods:
                seconds = case.get(seconds_key(method))
                shares = self._channel_shares(case.get(attribution_key(method)), inputs)
                methods[method] = MethodRecord(
                    seconds=math.nan if seconds is None else float(seconds),
                    description=self._describe(
                        case_value(engine, index, saliency_key(method)), image, inputs, name, method, shares
                    ),
                    channel_shares=shares,
                )
            record = CaseRecord(name, explained_classes(case.get(XAIKeys.CLASS)), methods)
            self.records.iteration.append(record)
            self.records.cases.append(record)

    def complete(self, engine: Any) -> None:
        """Gather the records of all ranks and fill in each case's metric values, the summary and the curves."""
        records = self.records
        records.iteration = []
        records.cases = gather_rows(records.cases)
        records.unreadable = gather_rows(list(getattr(engine.state, XAIKeys.UNREADABLE, [])))
        details = getattr(engine.state, "metric_details", {}) or {}
        values = getattr(engine.state, "metrics", {}) or {}
        curves = getattr(engine.state, "metric_curves", {}) or {}
        per_case: dict[str, dict[str, list[float]]] = {}
        for name, key in metric_keys(engine).items():
            if key.method not in self.methods:
                continue
            if key.metric not in records.metrics:
                records.metrics.append(key.metric)
            buffer = details.get(name)
            if isinstance(buffer, torch.Tensor):
                # the last column is the headline value of curve-valued metrics (ROAD's mean or combined score)
                column = [float(v) for v in buffer.reshape(buffer.shape[0], -1)[:, -1].tolist()]
                if len(column) == len(records.cases):
                    for case, value in zip(records.cases, column):
                        case.methods[key.method].metrics[key.metric] = value
                    per_case.setdefault(key.metric, {})[key.method] = column
            if key.method not in per_case.get(key.metric, {}) and isinstance(values.get(name), int | float):
                per_case.setdefault(key.metric, {})[key.method] = [float(values[name])]
            if name in curves:
                records.curves.setdefault(key.metric, {})[key.method] = curves[name]
        records.summary = {metric: summary_table(scores) for metric, scores in per_case.items()}
        records.layers = getattr(engine.state, XAIKeys.LAYERS, None)
        records.skipped_metrics = dict(getattr(engine.state, XAIKeys.SKIPPED_METRICS, None) or {})
        records.complete = True
        if records.layers is not None:
            logger.info(
                "xai: explained layer %s, class(es) %s; results in %s",
                records.layers.text(),
                records.explained_classes() or "-",
                records.output_dir,
            )
