"""MONAI Label infer task that explains a bundle's network with class-activation maps, for 3D Slicer and REST clients.

``BundleExplainTask`` reads the same parts of a bundle as MONAI Label's ``BundleInferTask`` (``network_def``,
``preprocessing``, ``inferer`` from ``configs/inference.json``, weights from ``models/model.pt``) and answers an infer
request with the CAM of the requested method, class and (segmentation) pixel set, put back onto the grid of the image
as it was loaded. The result volume is either a ``uint8`` label map of heat bins (named ``"heat 0.5-0.6"``, the form
Slicer's MONAI Label module displays as segments) or the ``float32`` heatmap in [0, 1]; the result JSON says in words
what the heatmap shows (``"description"``).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import torch
from fastapi import HTTPException
from monai.data import MetaTensor
from monai.inferers import SimpleInferer, SlidingWindowInferer
from monai.transforms import SqueezeDimd
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleConstants, BundleInferTask
from torch import nn

from monai_xai.bundle import ExplainSettings
from monai_xai.cams import method_names
from monai_xai.cams.attributions import AttributionBudgetExceeded
from monai_xai.cams.targets import FOREGROUND
from monai_xai.enums import PixelSet, ResultVolume, Score
from monai_xai.explanation import ExplainRequest, ExplainStep, SlidingWindow
from monai_xai.label.guard import DEFAULT_MAX_VOXELS, image_voxels, without_paths
from monai_xai.label.heatmap_io import DescribeHeatmapd, HeatmapToInputGridd, QuantizeHeatmapd, heat_bins
from monai_xai.label.options import (
    BINNED_VOLUMES,
    PREDICTED,
    RESULT_VOLUMES,
    ExplainOptions,
    InvalidExplainRequest,
    parse_explain_options,
)
from monai_xai.label.seg_nrrd import SEG_NRRD_SUFFIX, write_segmentation_nrrd
from monai_xai.networks import is_calibrated

__all__ = ["BundleExplainTask", "CompatibleBundleInferTask", "DEFAULT_METHODS", "RESULT_EXTENSIONS"]

logger = logging.getLogger(__name__)

# Every registered method: gradient CAMs first (one forward and one backward pass), then perturbation CAMs, then the
# input attributions (their cost bounded by the bundle's xai_attribution budget).
DEFAULT_METHODS = tuple(method_names())
_OPTIONS_KEY = "explain_options"
# the describe() arguments of the request's prediction, from run_inferer to the post transforms
_DESCRIBE_KEY = "explain_describe_args"
# result files a request may ask for (MONAI Label writes them with ITK)
RESULT_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".mha")


class CompatibleBundleInferTask(BundleInferTask):
    """MONAI Label's ``BundleInferTask`` made to run bundles whose preprocessing also names optional keys, on MONAI 1.6,
    and to serve only the bundle's own weights.

    Fixes:

    - the bundle's own ``LoadImaged`` is kept (``extend_load_image=False`` by default): MONAI Label's replacement
      ignores ``allow_missing_keys``, so a bundle loading ``["image", "label"]`` fails on an image-only request;
    - the request's ``image_path`` string is hidden from the pre-transforms: MONAI 1.6's ``Spacingd`` updates every
      ``image_*`` entry as a meta dict when the input is NIfTI, and fails on that string;
    - a request cannot choose a weights file (MONAI Label offers ``model_filename``): it is a 422. The weights are
      ``models/model.pt``, loaded with ``weights_only=True`` and strict key matching (a checkpoint of another network
      is an error, not a half-random network), and reloaded when the file changes (its path, size, modification and
      inode-change times: replacing the file always changes the last);
    - an image that cannot be read or preprocessed is a 422 that names the image, one whose header declares more
      voxels than ``--conf max_voxels`` (default :data:`~monai_xai.label.guard.DEFAULT_MAX_VOXELS`) a 413 before it
      is decompressed, and a ``result_extension`` other than :data:`RESULT_EXTENSIONS` a 422; other failures are a
      500 whose message shows no server paths.

    Args:
        path, conf, kwargs: as ``BundleInferTask`` (``load_strict`` is True unless given).
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        kwargs.setdefault("extend_load_image", False)
        kwargs.setdefault("load_strict", True)
        super().__init__(path, conf, **kwargs)
        self._loaded: tuple[tuple, nn.Module] | None = None
        self.max_voxels = int(float(conf.get("max_voxels", DEFAULT_MAX_VOXELS)))
        if self.valid:  # MONAI Label's BundleInferTask stops early, without a config, for a bundle without weights
            self._config.pop("model_filename", None)

    def __call__(self, request: dict[str, Any], callbacks: dict | None = None) -> tuple[str | None, dict]:
        model = request.get("model", os.path.basename(self.bundle_path))
        if "model_filename" in request:
            raise HTTPException(status_code=422, detail=f"{model}: a request cannot choose the weights file.")
        extension = request.get("result_extension")
        if extension is not None and extension not in RESULT_EXTENSIONS:
            raise HTTPException(
                status_code=422,
                detail=f"{model}: result_extension must be one of {list(RESULT_EXTENSIONS)}, got {extension!r}.",
            )
        try:
            return super().__call__(request, callbacks)
        except HTTPException:
            raise
        except Exception as error:
            logger.exception(f"{model}: request failed")
            raise HTTPException(
                status_code=500, detail=f"{model}: failed: {type(error).__name__}: {without_paths(str(error))}"
            ) from error

    def _get_network(self, device: str, data: dict[str, Any]) -> nn.Module:
        """The bundle's network with ``models/model.pt`` (a TorchScript bundle: MONAI Label's own loading)."""
        if self.network is None:
            return super()._get_network(device, data)
        path = self.get_path()
        stat = os.stat(path)
        key = (device, os.path.realpath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        if self._loaded is None or self._loaded[0] != key:
            checkpoint = torch.load(path, map_location=torch.device(device), weights_only=True)
            network = copy.deepcopy(self.network).to(torch.device(device))
            network.load_state_dict(checkpoint.get(self.model_state_dict, checkpoint), strict=self.load_strict)
            self._loaded = (key, network.eval())
        return self._loaded[1]

    def run_pre_transforms(self, data: dict[str, Any], transforms: Sequence[Callable]) -> dict[str, Any]:
        image = data.get(self.input_key)
        voxels = image_voxels(image) if isinstance(image, str) else None
        if voxels is not None and voxels > self.max_voxels:
            raise HTTPException(
                status_code=413,
                detail=f"the image declares {voxels} voxels, more than this server reads ({self.max_voxels}, --conf "
                "max_voxels); send a smaller or cropped volume.",
            )
        hidden = {
            key: data.pop(key)
            for key in list(data)
            if key.startswith(f"{self.input_key}_") and isinstance(data[key], str)
        }
        try:
            data = super().run_pre_transforms(data, transforms)
        except Exception as error:
            logger.exception("the image could not be read or preprocessed")
            name = os.path.basename(str(hidden.get(f"{self.input_key}_path", data.get(self.input_key, ""))))
            raise HTTPException(
                status_code=422,
                detail=f"the image {name!r} could not be read or preprocessed ({type(error).__name__}); send a "
                "complete volume in a format the bundle reads (NIfTI, NRRD, DICOM series).",
            ) from error
        data.update(hidden)
        return data


class BundleExplainTask(CompatibleBundleInferTask):
    """Explain a MONAI bundle's predictions with class-activation maps, as a MONAI Label infer task.

    Request params (each optional; ``/info`` lists the choices under the model's ``config``, the first is the default):
    ``method`` (CAM method, or an input attribution such as ``"integrated_gradients"``, which takes no layer and the
    bundle's ``xai_attribution`` settings, refused with a 422 and its estimate above their budget; also any
    pytorch-grad-cam class as ``"grad-cam:<Class>"``), ``target_layer``, ``class``
    (name, index, or ``"predicted"`` for classifiers; for segmenters also several classes explained together, each
    over its own pixel set: ``"foreground"`` or names / indices joined by ``+``, e.g. ``"kidney+tumour"``),
    ``pixel_set`` (segmentation: ``"pred"`` or ``"largest_component"`` region of the class whose scores are explained,
    ``"image"``: every voxel, ``"empty"``, or ``"peak"``: the voxel of the class's highest score), ``score``
    (``"logit"`` or ``"probability"``; ``"image"`` with ``"probability"`` explains the class's expected volume),
    ``bins`` (1-255), ``min_heat`` (heat below it stays unlabelled), ``result_volume`` (``"bins"``: uint8 label map,
    label ``k`` = bin ``k``; ``"segments"``: the same bins as a 3D Slicer segmentation file ``.seg.nrrd`` whose
    segments carry the bins' names and colours (:mod:`monai_xai.label.seg_nrrd`); ``"heatmap"``: float32 in [0, 1],
    written as float32 whatever ``result_dtype`` says).
    The result JSON holds the explained class, the prediction, the bins (names, edges, colours of a perceptual
    dark-to-bright ramp), for ``"bins"`` and ``"segments"`` ``label_names`` mapping bin names to label values, which
    Slicer uses to name the segments of a label map, and the
    heatmap in words: ``"description"`` (e.g. "Prediction: lesion (71.20% confidence, uncalibrated). Focus: small
    (3.2 ml), round region ... in the left, posterior and superior part of the volume (patient terms) ...") and
    ``"description_fields"`` (its numbers, :meth:`~monai_xai.describe.CaseDescription.as_dict`), measured on the
    loaded image's grid and affine, so sizes are in millimetres and 3D sides are the patient's.

    Bad requests raise ``fastapi.HTTPException`` (422 with the reason; 404 for a missing image) so MONAI Label's REST
    server answers with the message and keeps serving.

    The defaults of a request are what the bundle's own ``configs/explain.json`` recommends when it has one
    (:class:`~monai_xai.bundle.ExplainSettings`: its first method, its layer, pixel set and score come first in the
    offered lists), else the first of each list. The default class stays the predicted one for classifiers and the
    first foreground class for segmenters.

    Args:
        path: bundle folder (``configs/inference.json``, ``configs/metadata.json``, ``models/model.pt``).
        conf: MONAI Label app conf (``preload`` is read, as by ``BundleInferTask``).
        methods: offered CAM methods, the first is the default; default :data:`DEFAULT_METHODS`.
        target_layers: offered layers (dotted names), the first is the default; default the bundle's
            ``xai_target_layer`` (when one layer name), then the keys of the bundle metadata's ``cam_target_layers``.
        n_bins: default number of heat bins.
        min_heat: default heat below which voxels stay unlabelled, in [0, 1].
        result_volume: default result volume (``"bins"``, ``"segments"``, ``"heatmap"``); None: ``"bins"``.
        const: bundle constants (config names and keys), as for ``BundleInferTask``.
        kwargs: passed to ``BundleInferTask`` (e.g. ``load_strict``).
    """

    def __init__(
        self,
        path: str,
        conf: dict[str, str],
        methods: Sequence[str] | None = None,
        target_layers: Sequence[str] | None = None,
        n_bins: int = 10,
        min_heat: float = 0.1,
        result_volume: str | None = None,
        const: BundleConstants | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(path, conf, const=const, type=InferType.SEGMENTATION, add_post_restore=False, **kwargs)
        if not self.valid:
            return
        with open(os.path.join(path, "configs", self.const.metadata_json())) as metadata_file:
            metadata = json.load(metadata_file)
        outputs = metadata["network_data_format"]["outputs"][self.key_pred]
        self.segmentation = bool(outputs.get("spatial_shape")) or outputs.get("format") == "segmentation"
        channel_def = outputs.get("channel_def", {})
        self.class_names = [str(channel_def.get(str(c), f"class {c}")) for c in range(int(outputs["num_channels"]))]

        settings = ExplainSettings.from_bundle(path, overlays=())
        offered = tuple(methods) if methods is not None else DEFAULT_METHODS
        try:
            ExplainRequest(methods=offered)
        except (TypeError, ValueError) as error:
            raise ValueError(f"methods must be a non-empty list of method names, got {methods}: {error}") from None
        self.methods = _default_first(offered, next((m for m in settings.methods if m in offered), None))
        self.attribution = settings.attribution
        bundle_layer = [settings.target_layers] if isinstance(settings.target_layers, str) else []
        self.target_layers = tuple(
            target_layers or dict.fromkeys([*bundle_layer, *metadata.get("cam_target_layers", {})])
        )
        if not self.target_layers:
            raise ValueError(
                f"{path}: no target layers; pass target_layers=[...] or list them in the bundle metadata as "
                '"cam_target_layers": {"<dotted layer name>": "<description>"}.'
            )
        self.n_bins, self.min_heat = n_bins, min_heat
        if result_volume is not None and result_volume not in RESULT_VOLUMES:
            raise ValueError(f"result_volume must be one of {[str(v) for v in RESULT_VOLUMES]}, got {result_volume!r}.")
        self.result_volumes = _default_first(RESULT_VOLUMES, result_volume)
        # Validates the defaults now rather than on the first request.
        parse_explain_options({}, self.methods, self.target_layers, self.class_names, self.segmentation)
        self.labels = {heat_bin.name: heat_bin.label for heat_bin in heat_bins(n_bins)}

        network_name = metadata.get("name", os.path.basename(os.path.normpath(path)))
        self.description = (
            f"Class-activation maps of '{network_name}' ({'segmentation' if self.segmentation else 'classification'}"
            f"), as {n_bins} heat bins (segments 'heat <low>-<high>') or a float heatmap (result_volume=heatmap)."
        )
        foreground = [name for name in self.class_names if name.lower() != "background"]
        class_choices = [*foreground, *[n for n in self.class_names if n not in foreground]]
        if len(foreground) > 1:  # every foreground class explained together, each over its own pixel set
            class_choices.append(FOREGROUND)
        self.pixel_sets = _default_first(tuple(PixelSet), settings.pixel_set)
        self.scores = _default_first(tuple(Score), settings.score)
        self._config.update(
            {
                "method": list(self.methods),
                "target_layer": list(self.target_layers),
                "class": class_choices if self.segmentation else [PREDICTED, *self.class_names],
                **({"pixel_set": [str(name) for name in self.pixel_sets]} if self.segmentation else {}),
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
        """Run one explain request; see the class docstring for the params and errors."""
        model = request.get("model", os.path.basename(self.bundle_path))
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
        result_file, result_json = super().__call__({**request, _OPTIONS_KEY: options}, callbacks)
        if options.result_volume in BINNED_VOLUMES:
            result_json["label_names"] = {heat_bin.name: heat_bin.label for heat_bin in heat_bins(options.n_bins)}
        else:
            result_json.pop("label_names", None)
        return result_file, result_json

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> dict:
        """Predict once with the bundle's inferer, then explain the preprocessed image with the explanation step (the
        bundle's sliding window, if it has one, explains window by window).

        MONAI Label runs inferers under ``torch.no_grad()``; the explanation enables gradients itself.
        ``data[output_label_key]`` receives the (1, *spatial) heatmap in [0, 1] on the preprocessed grid,
        ``data[output_json_key]`` the explanation summary and ``data[_DESCRIBE_KEY]`` the arguments of its description
        (the class probabilities of a classifier, the explained class, the calibration, the method).
        """
        options: ExplainOptions = data[_OPTIONS_KEY]
        network = self._get_network(device, data)
        image = data[self.input_key]
        pixels = torch.as_tensor(image.as_tensor() if isinstance(image, MetaTensor) else image)[None]
        pixels = pixels.to(torch.device(device)).float()
        inferer = self.inferer(data)
        if not isinstance(inferer, SimpleInferer | SlidingWindowInferer):
            logger.warning(f"{type(inferer).__name__} is not a sliding-window inferer: explaining the whole image.")
        with torch.no_grad():
            outputs = inferer(pixels, network)
        step = ExplainStep(options.request.replace(window=SlidingWindow.of(inferer), attribution=self.attribution))
        try:
            explanation = step(network, pixels, prediction=outputs)
        except AttributionBudgetExceeded as error:  # refused before it started: the request asks too much
            raise HTTPException(status_code=422, detail=str(error)) from error
        classes = [int(k) for k in explanation.class_idx[0].reshape(-1).tolist()]
        affine = image.affine if isinstance(image, MetaTensor) else None
        heatmap = explanation.maps[options.method][0]
        data[self.output_label_key] = MetaTensor(heatmap.detach().cpu(), affine=affine)
        data[self.output_json_key] = self._summary(options, classes, explanation.prediction[0])
        probabilities = explanation.probabilities()
        data[_DESCRIBE_KEY] = {
            # a distribution over classes to state (a single output channel states none)
            "probabilities": probabilities[0].cpu()
            if probabilities is not None and len(self.class_names) > 1
            else None,
            "class_names": self.class_names,
            "explained": classes[0] if len(classes) == 1 else None,
            "calibrated": is_calibrated(network),
            "method": options.method,
        }
        return data

    def inverse_transforms(self, data: dict | None = None) -> None:
        """None: the heatmap is put back onto the input grid by affine resampling in :meth:`post_transforms`."""
        return None

    def post_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        """Resample the heatmap onto the loaded image's grid, describe it there, quantise it for ``"bins"`` and
        ``"segments"``, drop the channel dim."""
        options: ExplainOptions = data[_OPTIONS_KEY]
        key = self.output_label_key
        transforms: list[Callable] = [
            HeatmapToInputGridd(keys=key, image_key=self.input_key),
            DescribeHeatmapd(keys=key, json_key=self.output_json_key, **data[_DESCRIBE_KEY]),
        ]
        if options.result_volume in BINNED_VOLUMES:
            transforms.append(QuantizeHeatmapd(keys=key, n_bins=options.n_bins, min_heat=options.min_heat))
        transforms.append(SqueezeDimd(keys=key, dim=0))
        return transforms

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: str | None = None) -> tuple[Any, Any]:
        """MONAI Label's writer with the dtype the result volume needs (Slicer always asks for uint8); ``"segments"``
        is written as a ``.seg.nrrd`` on the loaded image's grid, whatever extension the client asks for."""
        options: ExplainOptions = data[_OPTIONS_KEY]
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

    def _summary(self, options: ExplainOptions, classes: list[int], outputs: torch.Tensor) -> dict[str, Any]:
        """JSON-ready description of the explanation and of the prediction it explains (``classes``: the explained
        class, or the classes explained together; ``outputs``: the network's output for the image)."""
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


def _default_first(choices: tuple[str, ...], default: str | None) -> tuple[str, ...]:
    """``choices`` with ``default`` moved to the front (MONAI Label's convention: the first item is the default)."""
    if default is None or default not in choices:
        return choices
    return (default, *[choice for choice in choices if choice != default])
