"""``SaliencyWriter``: each case's maps as NIfTI (input affine kept) and PNG overlays, plus per-case and summary tables.

Files under ``output_dir``:

- ``<case>/<case>_<method>.nii.gz``: the (1, *spatial) map. With ``grid="original"`` (the overlay's default,
  ``xai_maps_grid``) it goes through the inverse of the bundle's ``preprocessing`` first (MONAI's ``Invertd``, as a
  bundle inverts its predictions): it is written on the grid and affine of the original image file, voxel for voxel
  with it and with the bundle's inverted predictions. With ``grid="preprocessed"`` it is written as the network saw
  it, with the affine of the preprocessed input (it still overlays the input in world space in 3D Slicer or
  ITK-SNAP). Overlays, descriptions and metrics always use the preprocessed grid, where image and map are the
  network's.
- ``<case>/<case>_<method>.png``: the map over the image (for 3D the three orthogonal slices through the map's peak),
  captioned with the map's description in words.
- ``<case>/<case>_description.md``: each method's description in words (:func:`monai_xai.describe.describe` of the
  map with the image's affine): the prediction and its confidence (classifiers), where the map's focus lies, its size,
  shape and contrast, and (segmenters) how much of the explained pixel set it covers.
- ``cases.csv``: one row per case and method: class, seconds, files, and every per-case metric value found in
  ``engine.state.metric_details`` under ``"<metric>_<method>"`` (the headline, last, column of curve-valued metrics).
- ``descriptions.csv``: one row per case and method: ``case``, ``method``, then the description's fields
  (:meth:`~monai_xai.describe.CaseDescription.as_dict`: prediction, confidence, the largest hot region's geometry and
  words, ..., ``text``). A map that cannot be described (e.g. NaN in it) is warned about, naming the case and method,
  and gets an empty text; its map and overlay are written all the same.
- ``summary.csv`` / ``summary.md``: per metric and method, mean, std, min, max, n and skipped cases;
  ``metrics.png``: one bar chart per metric; ``<metric>_<curve>_curve.png``: the mean curves of curve-valued metrics
  from ``engine.state.metric_curves`` (e.g. ``road_combined_morf_curve.png``: score change vs pixels kept, one line
  per method).
- ``failed_cases.csv``: the cases that could not be read (``engine.state.xai_unreadable``, see
  :mod:`monai_xai.data.unreadable`), also listed at the top of ``summary.md``.

Before the first case the folder is checked and prepared (:func:`~monai_xai.handlers.results_dir.prepare_results_dir`:
a folder holding an earlier run's results is refused unless ``overwrite``). Each map is written to a temporary name in
its folder and renamed when complete, so a killed run or a full disk never leaves a truncated file under a map's name;
a failed write is an error. A case's ``_description.md`` is written with its maps; per-case rows are gathered from all
ranks and the tables are written by rank 0 on ``Events.COMPLETED``, i.e. after the metric handlers computed their
values at the end of the epoch. Attach it before an MLflow handler so the tables exist when the artifacts are logged.
The run ends with an error after the tables are written when no case could be read, or, with ``strict``, when any
could not.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite import distributed as idist
from ignite.engine import Events
from monai.data import ITKWriter, MetaTensor, NibabelWriter
from monai.transforms import Compose, Invertd, InvertibleTransform
from monai.utils import CommonKeys
from torch import nn

from monai_xai.cams import ClassSet
from monai_xai.describe import CaseDescription, describe
from monai_xai.describe.description import is_distribution
from monai_xai.enums import XAIKeys, saliency_key, seconds_key
from monai_xai.handlers.engine_data import case_value, engine_cases
from monai_xai.handlers.results_dir import prepare_results_dir
from monai_xai.handlers.xai_metrics import region_mask
from monai_xai.metrics.per_sample import MetricCurve
from monai_xai.metrics.stats import summary_markdown, summary_table
from monai_xai.networks import is_calibrated
from monai_xai.visualize import plot_metric_bars, plot_metric_curves, save_overlay_png

__all__ = [
    "EXPLAINED_REGION",
    "GROUND_TRUTH_REGION",
    "MAP_GRIDS",
    "SaliencyWriter",
    "class_probabilities",
    "explained_classes",
    "gather_rows",
    "ground_truth_mask",
    "split_metric_name",
    "write_map",
]

_NIFTI_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm", ".png", ".jpg", ".jpeg")
# name of the explained pixel set among a segmentation description's masks ("It covers 80% of the explained region")
EXPLAINED_REGION = "explained region"
# name of the ground-truth region among the masks ("It covers 70% of the ground-truth region")
GROUND_TRUTH_REGION = "ground-truth region"
# where the map files are written: on the original image's grid, or on the network's (preprocessed) grid
MAP_GRIDS = ("original", "preprocessed")


def split_metric_name(name: str, methods: Sequence[str]) -> tuple[str, str] | None:
    """``"ehr_auc_gradcam"`` -> ``("ehr_auc", "gradcam")`` for a known method suffix (longest first), else None."""
    for method in sorted(methods, key=len, reverse=True):
        suffix = f"_{method}"
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], method
    return None


def _case_stem(image: Any, case_name: str = "file") -> str | None:
    """The case's name from its image file: the file name without its extension (``case_name="file"``) or the name
    of the folder holding it (``"folder"``: data sets whose every image has the same name, e.g. KiTS23's
    ``case_00012/imaging.nii.gz``); None for an image without a file."""
    meta = image.meta if isinstance(image, MetaTensor) else {}
    source = meta.get("filename_or_obj")
    if not source or not isinstance(source, str):
        return None
    if case_name == "folder":
        return Path(source).parent.name or None
    name = Path(source).name
    for suffix in _NIFTI_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def _writable(maps: torch.Tensor) -> MetaTensor:
    """The (1, *spatial) map with the meta MONAI 1.6's writer needs: ``spatial_shape`` and, as ``LoadImage`` +
    ``EnsureChannelFirst`` leave it, ``original_channel_dim="no_channel"``; without them ``SaveImage`` fails on 2D
    maps (it counts one spatial dim after squeezing the channel)."""
    meta = dict(maps.meta) if isinstance(maps, MetaTensor) else {}
    meta.update(spatial_shape=tuple(maps.shape[1:]), original_channel_dim="no_channel")
    return MetaTensor(maps.as_tensor() if isinstance(maps, MetaTensor) else maps, meta=meta)


def write_map(maps: torch.Tensor, path: Path) -> Path:
    """Write a (1, *spatial) map (its MetaTensor meta gives the affine) to ``path`` (the extension picks the format),
    through a temporary file in the same folder renamed into place: the file at ``path`` is always complete.

    One writer per format (nibabel for NIfTI, ITK otherwise) and no fallback to another, so a failure is the
    writer's own error (e.g. ``OSError: No space left on device``), never a half-written file under another writer.

    Raises:
        OSError, RuntimeError: the write failed (the temporary file is removed); nothing is written at ``path``.
    """
    name = path.name
    extension = next((suffix for suffix in _NIFTI_SUFFIXES if name.lower().endswith(suffix)), path.suffix)
    partial = path.with_name(f".{name[: len(name) - len(extension)]}.partial-{os.getpid()}{extension}")
    writer = (NibabelWriter if extension in (".nii.gz", ".nii") else ITKWriter)(output_dtype=torch.float32)
    data = _writable(maps)
    try:
        writer.set_data_array(data, channel_dim=0)
        writer.set_metadata(data.meta, resample=False)
        writer.write(str(partial), verbose=False)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


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


def explained_classes(explained: Any) -> list[int]:
    """The class(es) a case's maps explain, from its engine output ``"xai_class"``: () for one class, (K,) for K
    classes explained together; [] when there is none."""
    if explained is None:
        return []
    return [int(k) for k in torch.as_tensor(explained).reshape(-1).tolist()]


def _class_column(classes: Sequence[int]) -> int | str:
    """``cases.csv``'s class: the int, or classes explained together as a config names them (``"1+2"``)."""
    return classes[0] if len(classes) == 1 else str(ClassSet(tuple(classes)))


def _description_inputs(
    case: Mapping[str, Any], network: nn.Module | None, class_names: Sequence[str] | None
) -> dict[str, Any]:
    """The :func:`~monai_xai.describe.describe` arguments that one case's methods share, from its engine output.

    Args:
        case: one case's engine output: ``pred`` ((num_classes,) for a classifier, (C, *spatial) for a segmenter),
            :attr:`XAIKeys.CLASS` and, for a segmenter, :attr:`XAIKeys.PIXEL_SET` ((1, *spatial) in [0, 1]; (K,
            *spatial) for K classes explained together, whose sets are joined).
        network: the evaluator's network (a temperature-scaled one makes the probabilities calibrated).
        class_names: names of the classes in index order, or None.

    Returns:
        ``class_names``, ``explained`` (None for several classes) and ``calibrated``; for a classifier
        ``probabilities`` (:func:`class_probabilities`); for a segmenter whose pixel set is not the whole image
        ``masks={"explained region": (1, *spatial) bool}``.
    """
    classes = explained_classes(case.get(XAIKeys.CLASS))
    inputs: dict[str, Any] = {
        "class_names": class_names,
        "explained": classes[0] if len(classes) == 1 else None,
        "calibrated": network is not None and is_calibrated(network),
    }
    pred = case.get(CommonKeys.PRED)
    if pred is not None and pred.ndim == 1:
        inputs["probabilities"] = class_probabilities(pred)
    elif XAIKeys.PIXEL_SET in case:
        pixel_set = (torch.as_tensor(case[XAIKeys.PIXEL_SET]) > 0.5).any(dim=0, keepdim=True)
        if not pixel_set.all():  # every voxel (pixel set "image"): the hot area's share of it says nothing
            inputs["masks"] = {EXPLAINED_REGION: pixel_set}
    return inputs


def ground_truth_mask(
    label: Any, explained: int | Sequence[int] | None, region_value: int | str | None, spatial_shape: tuple[int, ...]
) -> torch.Tensor | None:
    """(1, *spatial) bool ground-truth region of one case (:func:`~monai_xai.handlers.xai_metrics.region_mask`; of
    several ``explained`` classes: their regions joined), or None when ``label`` is not a map on the image's grid
    (e.g. a classifier's class index) or the explained class is needed and unknown."""
    label = torch.as_tensor(label.as_tensor() if isinstance(label, MetaTensor) else label)
    if label.ndim != len(spatial_shape) + 1 or tuple(label.shape[1:]) != spatial_shape:
        return None
    classes = explained_classes(explained)
    if region_value == "class" and not classes:
        return None
    class_idx = torch.tensor([classes]) if classes else None
    return region_mask(label[None], class_idx, region_value)[0] > 0.5


# 2D files without a physical pixel size: MONAI gives them an identity affine (sizes then count the file's pixels)
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def _size_units(image: Any) -> str | None:
    """``"pixels"`` for a 2D photo (JPEG, PNG, ...: no spacing in the file), None (millimetres from the affine)
    otherwise."""
    source = image.meta.get("filename_or_obj") if isinstance(image, MetaTensor) else None
    if image.ndim == 3 and isinstance(source, str) and source.lower().endswith(PHOTO_SUFFIXES):
        return "pixels"
    return None


def _describe_map(
    maps: torch.Tensor, image: Any, inputs: Mapping[str, Any], case: str, method: str
) -> CaseDescription | None:
    """:func:`~monai_xai.describe.describe` of one case's (1, *spatial) map with the (C, *spatial) image's affine and
    ``inputs`` (:func:`_description_inputs`); a map that cannot be described gives a warning naming ``case`` and
    ``method``, and None."""
    affine = image.affine if isinstance(image, MetaTensor) else None
    try:
        return describe(maps, affine=affine, method=method, units=_size_units(image), **inputs)
    except ValueError as error:
        warnings.warn(
            f"case {case}: the {method} map could not be described, its text is left empty: {error}", stacklevel=2
        )
        return None


def _description_markdown(case: str, texts: Mapping[str, str]) -> str:
    """The Markdown of ``<case>_description.md``: a section per method with its description (``texts``: {method:
    text}; an empty text says that the map could not be described)."""
    missing = "No description: the map could not be described (see the run's warnings)."
    lines = [f"# {case}", ""]
    for method, text in texts.items():
        lines += [f"## {method}", "", text or missing, ""]
    return "\n".join(lines)


def _changes_the_grid(preprocessing: InvertibleTransform) -> bool:
    """Whether ``preprocessing`` holds an invertible transform (else the original grid is the preprocessed one, and
    MONAI's ``Compose.inverse`` would warn on every map that it has nothing to invert)."""
    if isinstance(preprocessing, Compose):
        return any(isinstance(item, InvertibleTransform) for item in preprocessing.flatten().transforms)
    return True


def gather_rows(rows: list[dict]) -> list[dict]:
    """All ranks' rows in rank order (the order MONAI's metric buffers are gathered in)."""
    if idist.get_world_size() == 1:
        return rows
    gathered: list[list[dict]] = [[] for _ in range(idist.get_world_size())]
    dist.all_gather_object(gathered, rows)
    return [row for rank_rows in gathered for row in rank_rows]


class SaliencyWriter:
    """Write maps, overlays and tables of an explaining evaluator (see the module docstring for the files).

    Args:
        output_dir: folder for all files (created).
        methods: the ``XAIInferer``'s methods.
        image_key: output/batch key of the input image, drawn under the overlays and naming the cases.
        nifti: write the maps as NIfTI.
        png: write the PNG overlays.
        output_ext: extension of the map files (``".nii.gz"``; ``".nii"``, ``".nrrd"``, ``".mha"``).
        overwrite: replace the results of an earlier run in ``output_dir`` (else such a folder is refused).
        strict: end the run with an error when any case could not be read (else only when none could).
        class_names: names of the classes in index order, for the descriptions (default: the class indices).
        sanity: ``{method: passed}``, each method's randomisation check for this model when it is known (e.g. from
            ``monai-xai sanity``): the descriptions then say whether the map can be trusted to depend on the model.
        case_name: ``"file"``: cases are named after their image file (without extension); ``"folder"``: after the
            folder holding it, for data sets whose images all share one name (KiTS23's ``case_XXXXX/imaging.nii.gz``).
            Repeated names get ``_1``, ``_2``, ...
        region_key: output or batch key of the ground-truth region (as the XAI metrics read it, ``xai_region_key``);
            the descriptions then say how much of it the hot area covers. A value that is not a map on the image's
            grid (a classifier's class label) is not a region and is ignored.
        region_value: which region of ``region_key``: None (any foreground), an int, or ``"class"`` (the explained
            class), as ``xai_region_value``.
        grid: ``"preprocessed"`` (default): map files on the network's grid; ``"original"``: on the original image's
            grid, through the inverse of ``preprocessing``.
        preprocessing: the bundle's invertible preprocessing (``@preprocessing``), needed for ``grid="original"``;
            the image (``image_key``) carries its trace (MetaTensor ``applied_operations``).
    """

    def __init__(
        self,
        output_dir: str | Path,
        methods: str | Sequence[str],
        image_key: str = "image",
        nifti: bool = True,
        png: bool = True,
        output_ext: str = ".nii.gz",
        overwrite: bool = False,
        strict: bool = False,
        class_names: Sequence[str] | None = None,
        sanity: Mapping[str, bool] | None = None,
        case_name: str = "file",
        region_key: str | None = None,
        region_value: int | str | None = "class",
        grid: str = "preprocessed",
        preprocessing: InvertibleTransform | None = None,
    ) -> None:
        if case_name not in ("file", "folder"):
            raise ValueError(f'case_name must be "file" or "folder", got {case_name!r}.')
        if grid not in MAP_GRIDS:
            raise ValueError(f"grid (xai_maps_grid) must be one of {list(MAP_GRIDS)}, got {grid!r}.")
        if grid == "original" and not isinstance(preprocessing, InvertibleTransform):
            raise ValueError(
                "maps on the original grid (xai_maps_grid 'original') need the bundle's invertible preprocessing "
                f"(xai_preprocessing, '@preprocessing' in configs/explain.json), got {type(preprocessing).__name__}; "
                "point xai_preprocessing at the bundle's Compose of preprocessing transforms, or set "
                "--xai_maps_grid preprocessed."
            )
        self.grid = grid
        self._inverse = None
        if grid == "original" and _changes_the_grid(preprocessing):
            self._inverse = Invertd("map", preprocessing, orig_keys=image_key, nearest_interp=False, to_tensor=True)
        if output_dir is None or not str(output_dir).strip():
            raise ValueError("output_dir is empty; set the results folder, e.g. --xai_output_dir eval/xai.")
        self.output_dir = Path(output_dir)
        self.methods = (methods,) if isinstance(methods, str) else tuple(methods)
        self.image_key = image_key
        self.nifti = nifti
        self.png = png
        self.output_ext = output_ext
        self.overwrite = overwrite
        self.strict = strict
        self.class_names = list(class_names) if class_names is not None else None
        self.sanity = dict(sanity or {})
        self.case_name = case_name
        self.region_key = region_key
        self.region_value = region_value
        self.rows: list[dict] = []
        self.descriptions: list[dict] = []
        self._names: set[str] = set()

    def attach(self, engine: Any) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.write_cases)
        engine.add_event_handler(Events.COMPLETED, self.write_tables)

    def _reset(self, engine: Any) -> None:
        """Prepare the results folder (rank 0, the other ranks wait) and start empty."""
        if idist.get_rank() == 0:
            prepare_results_dir(self.output_dir, self.overwrite)
        idist.barrier()
        self.rows, self.descriptions, self._names = [], [], set()
        setattr(engine.state, XAIKeys.UNREADABLE, [])

    def _case_name(self, image: Any) -> str:
        stem = _case_stem(image, self.case_name)
        if stem is None:  # no file: a numbered name, per rank so that ranks never collide
            stem = f"case_{len(self._names):04d}"
            stem = f"rank{idist.get_rank()}_{stem}" if idist.get_rank() > 0 else stem
        name, repeat = stem, 1
        while name in self._names:
            name, repeat = f"{stem}_{repeat}", repeat + 1
        self._names.add(name)
        return name

    def _ground_truth(self, engine: Any, index: int, image: Any, explained: Sequence[int]) -> torch.Tensor | None:
        """(1, *spatial) bool ground-truth region of case ``index`` when ``region_key`` names one on its grid."""
        if self.region_key is None:
            return None
        try:
            label = case_value(engine, index, self.region_key)
        except KeyError:  # this case has no ground truth
            return None
        return ground_truth_mask(label, explained, self.region_value, tuple(image.shape[1:]))

    def _on_grid(self, maps: Mapping[str, torch.Tensor], image: Any) -> dict[str, torch.Tensor]:
        """A case's (1, *spatial) maps on the grid their files are written on: as they are, or back through the
        preprocessing that made ``image`` (the case's preprocessed image, whose MetaTensor trace says how), all
        methods in one inversion."""
        if self._inverse is None:
            return dict(maps)
        if not isinstance(image, MetaTensor):
            raise ValueError(
                f"maps on the original grid need the preprocessed image as a MetaTensor with its transform trace, got "
                f"{type(image).__name__} under {self.image_key!r}; keep MONAI's MetaTensors (track_meta) or set "
                "--xai_maps_grid preprocessed."
            )
        stacked = torch.cat([torch.as_tensor(value) for value in maps.values()])
        inverted = self._inverse({"map": MetaTensor(stacked, meta=image.meta), self.image_key: image})["map"]
        return {method: inverted[channel : channel + 1] for channel, method in enumerate(maps)}

    def write_cases(self, engine: Any) -> None:
        """Write the current iteration's maps, overlays and descriptions, and remember one row per case and method
        for ``cases.csv`` and one for ``descriptions.csv``."""
        for index, case in enumerate(engine_cases(engine.state.output)):
            image = case_value(engine, index, self.image_key)
            name = self._case_name(image)
            case_dir = self.output_dir / name
            case_dir.mkdir(parents=True, exist_ok=True)
            explained = explained_classes(case.get(XAIKeys.CLASS))
            inputs = _description_inputs(case, getattr(engine, "network", None), self.class_names)
            truth = self._ground_truth(engine, index, image, explained)
            if truth is not None:
                inputs["masks"] = {**inputs.get("masks", {}), GROUND_TRUTH_REGION: truth}
            texts = {}
            case_maps = {method: case_value(engine, index, saliency_key(method)) for method in self.methods}
            files = self._on_grid(case_maps, image) if self.nifti else {}
            for method, maps in case_maps.items():
                sanity = {"sanity_passed": self.sanity[method]} if method in self.sanity else {}
                description = _describe_map(maps, image, {**inputs, **sanity}, name, method)
                texts[method] = description.text if description is not None else ""
                fields = description.as_dict() if description is not None else {"text": ""}
                self.descriptions.append({"case": name, "method": method, **fields})
                row = {
                    "case": name,
                    "method": method,
                    "class": _class_column(explained) if explained else "",
                    "seconds": float(case[seconds_key(method)]) if seconds_key(method) in case else math.nan,
                    "nifti": "",
                    "png": "",
                }
                if self.nifti:
                    row["nifti"] = str(write_map(files[method], case_dir / f"{name}_{method}{self.output_ext}"))
                if self.png:
                    png = save_overlay_png(
                        image, maps, case_dir / f"{name}_{method}.png", title=f"{name}: {method}", caption=texts[method]
                    )
                    row["png"] = str(png)
                self.rows.append(row)
            (case_dir / f"{name}_description.md").write_text(_description_markdown(name, texts))

    def _per_case_metrics(self, engine: Any) -> dict[tuple[str, str], list[float]]:
        """{(metric, method): per-case values} from ``engine.state.metric_details`` (all ranks, gathered order)."""
        details = getattr(engine.state, "metric_details", {}) or {}
        values = {}
        for name, buffer in details.items():
            parsed = split_metric_name(name, self.methods)
            if parsed is None or not isinstance(buffer, torch.Tensor):
                continue
            # the last column is the headline value of curve-valued metrics (ROAD's mean or combined score)
            values[parsed] = [float(v) for v in buffer.reshape(buffer.shape[0], -1)[:, -1].tolist()]
        return values

    def write_tables(self, engine: Any) -> None:
        """Write ``cases.csv``, ``descriptions.csv``, ``summary.csv``, ``summary.md`` and ``metrics.png`` (rank 0)."""
        rows = gather_rows(self.rows)
        descriptions = gather_rows(self.descriptions)
        unreadable = gather_rows(list(getattr(engine.state, XAIKeys.UNREADABLE, [])))
        per_case = self._per_case_metrics(engine)
        if idist.get_rank() > 0:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        metric_columns = sorted({metric for metric, _ in per_case if metric != XAIKeys.SECONDS.rstrip("_")})
        for method in self.methods:
            method_rows = [row for row in rows if row["method"] == method]
            for metric in metric_columns:
                case_values = per_case.get((metric, method))
                if case_values is not None and len(case_values) == len(method_rows):
                    for row, value in zip(method_rows, case_values):
                        row[metric] = value
        columns = ["case", "method", "class", "seconds", *metric_columns, "nifti", "png"]
        with open(self.output_dir / "cases.csv", "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)
        self._write_descriptions(descriptions)
        if unreadable:
            with open(self.output_dir / "failed_cases.csv", "w", newline="") as stream:
                writer = csv.DictWriter(stream, fieldnames=["case", "files", "reason"])
                writer.writeheader()
                writer.writerows({**record, "files": " ".join(record["files"])} for record in unreadable)
        self._write_summary(engine, per_case, unreadable)
        if unreadable and (self.strict or not rows):
            names = [record["case"] for record in unreadable]
            raise RuntimeError(
                f"{len(unreadable)} case(s) could not be read ({names[:10]}; reasons in "
                f"{self.output_dir / 'failed_cases.csv'}), "
                + ("and no case could be explained." if not rows else "and strict=True (xai_strict) was asked.")
            )

    def _write_descriptions(self, descriptions: list[dict]) -> None:
        """``descriptions.csv``: ``case``, ``method``, then every description field in first-seen order (a
        segmentation's overlap columns, for example, appear only with a pixel set)."""
        columns = list(dict.fromkeys(["case", "method", *(key for row in descriptions for key in row)]))
        with open(self.output_dir / "descriptions.csv", "w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(descriptions)

    def _write_summary(self, engine: Any, per_case: dict[tuple[str, str], list[float]], unreadable: list[dict]) -> None:
        metrics: dict[str, dict[str, float]] = {}
        for name, value in engine.state.metrics.items():
            parsed = split_metric_name(name, self.methods)
            if parsed is not None and isinstance(value, (int, float)):
                metrics.setdefault(parsed[0], {})[parsed[1]] = float(value)
        lines = ["# XAI summary", ""]
        if unreadable:
            lines += [f"**{len(unreadable)} case(s) could not be read and were skipped** (failed_cases.csv):", ""]
            lines += [f"- {record['case']}: {record['reason']}" for record in unreadable] + [""]
        with open(self.output_dir / "summary.csv", "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["metric", "method", "mean", "std", "min", "max", "n", "n_skipped"])
            for metric, per_method in metrics.items():
                scores = {m: per_case.get((metric, m), [per_method[m]]) for m in per_method}
                table = summary_table(scores)
                for row in table:
                    writer.writerow([metric, row.method, row.mean, row.std, row.min, row.max, row.n, row.n_skipped])
                lines += [f"## {metric}", "", summary_markdown(table), ""]
        (self.output_dir / "summary.md").write_text("\n".join(lines))
        if metrics:
            plot_metric_bars(metrics, self.output_dir / "metrics.png", title="XAI metrics per method")
        self._plot_curves(getattr(engine.state, "metric_curves", {}) or {})

    def _plot_curves(self, metric_curves: dict[str, dict[str, MetricCurve]]) -> None:
        """One plot per metric and curve (e.g. ROAD MoRF), one line per method."""
        figures: dict[tuple[str, str], dict[str, MetricCurve]] = {}
        for name, curves in metric_curves.items():
            parsed = split_metric_name(name, self.methods)
            if parsed is None:
                continue
            metric, method = parsed
            for curve_name, curve in curves.items():
                figures.setdefault((metric, curve_name), {})[method] = curve
        for (metric, curve_name), per_method in figures.items():
            first = next(iter(per_method.values()))
            plot_metric_curves(
                {method: (curve.x, curve.y) for method, curve in per_method.items()},
                self.output_dir / f"{metric}_{curve_name}_curve.png",
                xlabel=first.x_label,
                ylabel=first.y_label,
                title=f"{metric}: {curve_name}",
            )
