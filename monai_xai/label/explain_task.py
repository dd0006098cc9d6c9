"""What every MONAI Label explain task shares, whatever network it serves (a bundle, an nnU-Net folder): the offered
options and ``/info``, a request's options, and the result volume it gets back (heat bins, a Slicer segmentation, the
float heatmap or a DICOM SEG, with the heatmap described in words).

A task mixes :class:`ExplainTaskMixin` in before its MONAI Label base class, calls :meth:`~ExplainTaskMixin.offer`
in its ``__init__``, and ends its ``run_inferer`` with :meth:`~ExplainTaskMixin.record` (the heatmap, the summary,
the description's arguments); the heatmap's way back onto the loaded image's grid is the task's
:meth:`~ExplainTaskMixin.to_input_grid` transforms.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import torch
from fastapi import HTTPException
from monai.data import MetaTensor
from monai.transforms import SqueezeDimd

from monai_xai.cams import get_method, method_names
from monai_xai.cams.targets import FOREGROUND
from monai_xai.dicom import DicomSeries
from monai_xai.enums import MethodFamily, PixelSet, ResultVolume, Score
from monai_xai.explanation import ExplainRequest, Explanation
from monai_xai.label.dicom_result import datastore_series, write_dicom_seg_result
from monai_xai.label.guard import without_paths
from monai_xai.label.heatmap_io import DescribeHeatmapd, QuantizeHeatmapd, heat_bins
from monai_xai.label.options import (
    BINNED_VOLUMES,
    PREDICTED,
    RESULT_VOLUMES,
    ExplainOptions,
    InvalidExplainRequest,
    parse_explain_options,
)
from monai_xai.label.seg_nrrd import SEG_NRRD_SUFFIX, write_segmentation_nrrd

__all__ = ["DEFAULT_METHODS", "DESCRIBE_KEY", "OPTIONS_KEY", "ExplainTaskMixin"]

# Every registered method: gradient CAMs first (one forward and one backward pass), then perturbation CAMs, then the
# input attributions (their cost bounded by the task's attribution budget); not the sanity checks' controls.
DEFAULT_METHODS = tuple(name for name in method_names() if get_method(name).family != MethodFamily.CONTROL)
# the request's parsed options, from __call__ to run_inferer and the post transforms
OPTIONS_KEY = "explain_options"
# the describe() arguments of the request's prediction, from run_inferer to the post transforms
DESCRIBE_KEY = "explain_describe_args"
# the request's image path, whose DICOM series a "dicom_seg" result refers to (the loader replaces "image")
_SERIES_KEY = "explain_dicom_image"


def default_first(choices: tuple[str, ...], default: str | None) -> tuple[str, ...]:
    """``choices`` with ``default`` moved to the front (MONAI Label's convention: the first item is the default)."""
    if default is None or default not in choices:
        return choices
    return (default, *[choice for choice in choices if choice != default])


class ExplainTaskMixin:
    """The options, request handling and result volumes of an explain task (see the module docstring).

    Attributes set by :meth:`offer`: ``class_names``, ``segmentation``, ``methods``, ``target_layers``,
    ``pixel_sets``, ``scores``, ``result_volumes``, ``n_bins``, ``min_heat``, ``labels`` (the default bins' names).
    """

    def offer(
        self,
        class_names: Sequence[str],
        segmentation: bool,
        methods: Sequence[str],
        target_layers: Sequence[str],
        n_bins: int,
        min_heat: float,
        result_volume: str | None,
        pixel_set: str | None = None,
        score: str | None = None,
    ) -> None:
        """Set what the task offers (``/info``'s ``config``: each list's first item is the default).

        Args:
            class_names: one name per output channel.
            segmentation: whether the network is a segmenter.
            methods: offered methods, the first is the default.
            target_layers: offered layers (dotted names), the first is the default.
            n_bins, min_heat: the default heat bins and unlabelled heat.
            result_volume: the default result volume; None: ``"bins"``.
            pixel_set, score: the defaults the network's own settings recommend (None: the first of each).

        Raises:
            ValueError: no method or an unknown one, no layer, or an unknown result volume.
        """
        try:
            ExplainRequest(methods=tuple(methods))
        except (TypeError, ValueError) as error:
            raise ValueError(f"methods must be a non-empty list of method names, got {methods}: {error}") from None
        if not target_layers:
            raise ValueError("no target layers to offer: name at least one layer.")
        if result_volume is not None and result_volume not in RESULT_VOLUMES:
            raise ValueError(f"result_volume must be one of {[str(v) for v in RESULT_VOLUMES]}, got {result_volume!r}.")
        self.class_names, self.segmentation = list(class_names), segmentation
        self.methods, self.target_layers = tuple(methods), tuple(target_layers)
        self.n_bins, self.min_heat = n_bins, min_heat
        self.result_volumes = default_first(RESULT_VOLUMES, result_volume)
        self.pixel_sets = default_first(tuple(PixelSet), pixel_set)
        self.scores = default_first(tuple(Score), score)
        # Validates the defaults now rather than on the first request.
        parse_explain_options({}, self.methods, self.target_layers, self.class_names, self.segmentation)
        self.labels = {heat_bin.name: heat_bin.label for heat_bin in heat_bins(n_bins)}
        foreground = [name for name in self.class_names if name.lower() != "background"]
        class_choices = [*foreground, *[n for n in self.class_names if n not in foreground]]
        if len(foreground) > 1:  # every foreground class explained together, each over its own pixel set
            class_choices.append(FOREGROUND)
        self._config.update(
            {
                "method": list(self.methods),
                "target_layer": list(self.target_layers),
                "class": class_choices if segmentation else [PREDICTED, *self.class_names],
                **({"pixel_set": [str(name) for name in self.pixel_sets]} if segmentation else {}),
                "score": [str(name) for name in self.scores],
                "bins": n_bins,
                "min_heat": min_heat,
                "result_volume": list(self.result_volumes),
            }
        )

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["explain"] = {
            "segmentation": self.segmentation,
            "classes": self.class_names,
            "methods": list(self.methods),
            "target_layers": list(self.target_layers),
            "pixel_sets": [str(name) for name in self.pixel_sets] if self.segmentation else [],
            "scores": [str(name) for name in self.scores],
            "result_volumes": list(self.result_volumes),
            "bins": self.n_bins,
            "min_heat": self.min_heat,
        }
        return info

    def __call__(self, request: dict[str, Any], callbacks: dict | None = None) -> tuple[str | None, dict]:
        """Run one explain request: its options are read (a 422 names what is wrong), the image checked (a 404 for a
        missing one), then the task's pipeline runs."""
        model = request.get("model", self.served_name)
        try:
            options = parse_explain_options(
                {**self._config, **request},
                self.methods,
                self.target_layers,
                self.class_names,
                self.segmentation,
                default_bins=self.n_bins,
                default_min_heat=self.min_heat,
            )
        except InvalidExplainRequest as error:
            raise HTTPException(status_code=422, detail=f"{model}: {error}") from error
        image = request.get("image")
        if isinstance(image, str) and not os.path.exists(image):
            raise HTTPException(
                status_code=404,
                detail=f"{model}: image {os.path.basename(image)!r} not found (give an image id of the studies "
                "folder).",
            )
        extra: dict[str, Any] = {OPTIONS_KEY: options}
        if options.result_volume == ResultVolume.DICOM_SEG:
            self._dicom_series(model, image)  # checked before the network runs
            extra[_SERIES_KEY] = image
        result_file, result_json = super().__call__({**request, **extra}, callbacks)
        if options.result_volume in BINNED_VOLUMES:
            result_json["label_names"] = {heat_bin.name: heat_bin.label for heat_bin in heat_bins(options.n_bins)}
        else:
            result_json.pop("label_names", None)
        return result_file, result_json

    @staticmethod
    def _dicom_series(model: str, image: Any) -> DicomSeries:
        """The DICOM series a ``"dicom_seg"`` result refers to; a 422 for an image that is not one."""
        try:
            series = datastore_series(image) if isinstance(image, str) else None
        except ValueError as error:
            raise HTTPException(status_code=422, detail=f"{model}: {without_paths(str(error))}") from error
        if series is None:
            raise HTTPException(
                status_code=422,
                detail=f"{model}: result_volume 'dicom_seg' needs an image of a DICOM datastore (a DICOM series, or "
                "the NIfTI the datastore converted from it); this image is not one: ask for 'segments' or 'bins'.",
            )
        return series

    def to_input_grid(self) -> list[Callable]:
        """The post transforms that put the heatmap onto the loaded image's grid (none: it already lies there)."""
        return []

    def inverse_transforms(self, data: dict | None = None) -> None:
        """None: the heatmap is put back onto the input grid by :meth:`to_input_grid`."""
        return None

    def post_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        """Put the heatmap onto the loaded image's grid, describe it there, quantise it for ``"bins"`` and
        ``"segments"``, drop the channel dim."""
        options: ExplainOptions = data[OPTIONS_KEY]
        key = self.output_label_key
        transforms: list[Callable] = [
            *self.to_input_grid(),
            DescribeHeatmapd(keys=key, json_key=self.output_json_key, **data[DESCRIBE_KEY]),
        ]
        if options.result_volume in BINNED_VOLUMES:
            transforms.append(QuantizeHeatmapd(keys=key, n_bins=options.n_bins, min_heat=options.min_heat))
        transforms.append(SqueezeDimd(keys=key, dim=0))
        return transforms

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: str | None = None) -> tuple[Any, Any]:
        """MONAI Label's writer with the dtype the result volume needs (Slicer always asks for uint8); ``"segments"``
        is written as a ``.seg.nrrd`` on the loaded image's grid, whatever extension the client asks for;
        ``"dicom_seg"`` as a DICOM SEG of the image's series."""
        options: ExplainOptions = data[OPTIONS_KEY]
        if options.result_volume == ResultVolume.DICOM_SEG:
            heatmap = data[self.output_label_key]
            affine = heatmap.affine if isinstance(heatmap, MetaTensor) else data[self.input_key].affine
            path = write_dicom_seg_result(
                heatmap, affine, datastore_series(data[_SERIES_KEY]), options.method, options.n_bins, options.min_heat,
                model_name=self.served_name,
            )  # fmt: skip
            return path, data.get(self.output_json_key, {})
        if options.result_volume == ResultVolume.SEGMENTS:
            labels = data[self.output_label_key]
            affine = labels.affine if isinstance(labels, MetaTensor) else data[self.input_key].affine
            result = data.get(self.output_json_key, {})
            with tempfile.NamedTemporaryFile(suffix=SEG_NRRD_SUFFIX, delete=False) as file:
                path = file.name
            write_segmentation_nrrd(path, labels, affine, heat_bins(options.n_bins), result.get("description"))
            return path, result
        return super().writer(
            data, extension=extension, dtype="uint8" if options.result_volume in BINNED_VOLUMES else "float32"
        )

    def record(
        self,
        data: dict[str, Any],
        options: ExplainOptions,
        explanation: Explanation,
        heatmap: MetaTensor,
        probabilities: torch.Tensor | None = None,
        calibrated: bool = False,
    ) -> dict[str, Any]:
        """Store what the post transforms and the writer need of one explained image: ``data[output_label_key]``
        the (1, *spatial) ``heatmap`` (with its affine), ``data[output_json_key]`` the :meth:`summary`,
        ``data[DESCRIBE_KEY]`` the arguments of its description.

        Args:
            data: the request's data.
            options: the request's options.
            explanation: the explanation of the image (batch of one).
            heatmap: the request's method's map, on the grid :meth:`to_input_grid` starts from.
            probabilities: (K,) class probabilities to state (a classifier's), else None.
            calibrated: whether the probabilities are calibrated.
        """
        classes = [int(k) for k in explanation.class_idx[0].reshape(-1).tolist()]
        data[self.output_label_key] = heatmap
        data[self.output_json_key] = self.summary(options, classes, explanation.prediction[0])
        data[DESCRIBE_KEY] = {
            "probabilities": probabilities,
            "class_names": self.class_names,
            "explained": classes[0] if len(classes) == 1 else None,
            "calibrated": calibrated,
            "method": options.method,
        }
        return data

    def summary(self, options: ExplainOptions, classes: list[int], outputs: torch.Tensor) -> dict[str, Any]:
        """JSON-ready description of the explanation and of the prediction it explains (``classes``: the explained
        class, or the classes explained together; ``outputs``: (K, *spatial) or (K,) the network's output for the
        image)."""
        request = options.request
        summary: dict[str, Any] = {
            "method": options.method,
            "target_layer": options.target_layer,
            "class": "+".join(self.class_names[k] for k in classes),
            "class_index": classes[0] if len(classes) == 1 else classes,
            "score": request.score,
            "result_volume": options.result_volume,
        }
        if self.segmentation:
            labels = outputs.argmax(dim=0) if outputs.shape[0] > 1 else (outputs[0] > 0).long()
            predicted = torch.isin(labels, torch.tensor(classes, device=labels.device))
            summary["pixel_set"] = request.pixel_set
            summary["predicted_voxels"] = int(predicted.sum())
            if not predicted.any() and request.pixel_set != PixelSet.IMAGE:
                summary["warning"] = (
                    f"the network predicts no voxel of class '{summary['class']}': the pixel set is empty and the "
                    "heatmap is all zeros."
                )
        else:
            scores = outputs.softmax(dim=0) if outputs.shape[0] > 1 else outputs.sigmoid()
            summary["predicted_class"] = self.class_names[int(outputs.argmax())]
            summary["probabilities"] = {name: float(p) for name, p in zip(self.class_names, scores)}
        bins = heat_bins(options.n_bins)
        summary["bins"] = [
            {"label": b.label, "name": b.name, "low": b.low, "high": b.high, "color": list(b.color)} for b in bins
        ]
        summary["min_heat"] = options.min_heat
        summary["label_colors"] = {b.name: list(b.color) for b in bins}
        return summary
