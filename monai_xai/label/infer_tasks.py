"""MONAI Label infer task that explains a bundle's network with class-activation maps, for 3D Slicer and REST clients.

``BundleExplainTask`` reads the same parts of a bundle as MONAI Label's ``BundleInferTask`` (``network_def``,
``preprocessing``, ``inferer`` from ``configs/inference.json``, weights from ``models/model.pt``) and answers an infer
request with the CAM of the requested method, class and (segmentation) pixel set, put back onto the grid of the image
as it was loaded. The result volume is either a ``uint8`` label map of heat bins (named ``"heat 0.5-0.6"``, the form
Slicer's MONAI Label module displays as segments) or the ``float32`` heatmap in [0, 1]; the result JSON says in words
what the heatmap shows (``"description"``). What it shares with the other explain tasks is
:class:`~monai_xai.label.explain_task.ExplainTaskMixin`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from fastapi import HTTPException
from monai.data import MetaTensor
from monai.inferers import SimpleInferer, SlidingWindowInferer
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleConstants, BundleInferTask
from torch import nn

from monai_xai.budgets import BudgetExceeded
from monai_xai.bundle import ExplainSettings
from monai_xai.dicom import DicomSeriesReader, register_dicom_reader
from monai_xai.explanation import ExplainStep, SlidingWindow
from monai_xai.label.explain_task import DEFAULT_METHODS, OPTIONS_KEY, ExplainTaskMixin, default_first
from monai_xai.label.guard import RESULT_EXTENSIONS, GuardedTaskMixin, max_voxels
from monai_xai.label.heatmap_io import HeatmapToInputGridd
from monai_xai.label.options import ExplainOptions
from monai_xai.networks import is_calibrated

__all__ = ["BundleExplainTask", "CompatibleBundleInferTask", "DEFAULT_METHODS", "RESULT_EXTENSIONS"]

logger = logging.getLogger(__name__)


class CompatibleBundleInferTask(GuardedTaskMixin, BundleInferTask):
    """MONAI Label's ``BundleInferTask`` made to run bundles whose preprocessing also names optional keys, on MONAI 1.6,
    and to serve only the bundle's own weights.

    Fixes:

    - the bundle's own ``LoadImaged`` is kept (``extend_load_image=False`` by default): MONAI Label's replacement
      ignores ``allow_missing_keys``, so a bundle loading ``["image", "label"]`` fails on an image-only request;
    - the weights are ``models/model.pt``, loaded with ``weights_only=True`` and strict key matching (a checkpoint of
      another network is an error, not a half-random network), and reloaded when the file changes (its path, size,
      modification and inode-change times: replacing the file always changes the last);
    - what a request may not choose and the errors it gets (a weights file, a result extension, an image too large or
      unreadable, the ``image_path`` string MONAI 1.6's ``Spacingd`` fails on):
      :class:`~monai_xai.label.guard.GuardedTaskMixin`, with ``--conf max_voxels``.

    Args:
        path, conf, kwargs: as ``BundleInferTask`` (``load_strict`` is True unless given).
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        kwargs.setdefault("extend_load_image", False)
        kwargs.setdefault("load_strict", True)
        super().__init__(path, conf, **kwargs)
        self._loaded: tuple[tuple, nn.Module] | None = None
        self.served_name = os.path.basename(os.path.normpath(path))
        self.max_voxels = max_voxels(conf)
        if self.valid:  # MONAI Label's BundleInferTask stops early, without a config, for a bundle without weights
            self._config.pop("model_filename", None)

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


class BundleExplainTask(ExplainTaskMixin, CompatibleBundleInferTask):
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
    written as float32 whatever ``result_dtype`` says; ``"dicom_seg"``: the bins as a DICOM SEG of the series the image
    is, for an image of a DICOM datastore (a series folder, or the NIfTI the datastore converted from the series it
    cached beside it; :mod:`monai_xai.label.dicom_result`), a 422 for any other image).
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
        segmentation = bool(outputs.get("spatial_shape")) or outputs.get("format") == "segmentation"
        channel_def = outputs.get("channel_def", {})
        class_names = [str(channel_def.get(str(c), f"class {c}")) for c in range(int(outputs["num_channels"]))]

        settings = ExplainSettings.from_bundle(path, overlays=())
        offered = tuple(methods) if methods is not None else DEFAULT_METHODS
        self.attribution = settings.attribution
        bundle_layer = [settings.target_layers] if isinstance(settings.target_layers, str) else []
        layers = tuple(target_layers or dict.fromkeys([*bundle_layer, *metadata.get("cam_target_layers", {})]))
        if not layers:
            raise ValueError(
                f"{path}: no target layers; pass target_layers=[...] or list them in the bundle metadata as "
                '"cam_target_layers": {"<dotted layer name>": "<description>"}.'
            )
        self.offer(
            class_names,
            segmentation,
            default_first(offered, next((m for m in settings.methods if m in offered), None)),
            layers,
            n_bins,
            min_heat,
            result_volume,
            pixel_set=settings.pixel_set,
            score=settings.score,
        )
        network_name = metadata.get("name", self.served_name)
        self.description = (
            f"Class-activation maps of '{network_name}' ({'segmentation' if segmentation else 'classification'}"
            f"), as {n_bins} heat bins (segments 'heat <low>-<high>') or a float heatmap (result_volume=heatmap)."
        )

    def pre_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        """The bundle's preprocessing, whose loader also reads a DICOM series folder (a DICOM datastore's cached
        series) with :class:`~monai_xai.dicom.DicomSeriesReader`."""
        transforms = super().pre_transforms(data)
        reader = DicomSeriesReader()
        for transform in transforms:
            register_dicom_reader(transform, reader)
        return transforms

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> dict:
        """Predict once with the bundle's inferer, then explain the preprocessed image with the explanation step (the
        bundle's sliding window, if it has one, explains window by window).

        MONAI Label runs inferers under ``torch.no_grad()``; the explanation enables gradients itself.
        ``data[output_label_key]`` receives the (1, *spatial) heatmap in [0, 1] on the preprocessed grid,
        ``data[output_json_key]`` the explanation summary and ``data[DESCRIBE_KEY]`` the arguments of its description
        (the class probabilities of a classifier, the explained class, the calibration, the method).
        """
        options: ExplainOptions = data[OPTIONS_KEY]
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
        except BudgetExceeded as error:  # refused before it started: the request asks too much (any budget)
            raise HTTPException(status_code=422, detail=str(error)) from error
        affine = image.affine if isinstance(image, MetaTensor) else None
        heatmap = MetaTensor(explanation.maps[options.method][0].detach().cpu(), affine=affine)
        probabilities = explanation.probabilities()
        # a distribution over classes to state (a single output channel states none)
        stated = probabilities[0].cpu() if probabilities is not None and len(self.class_names) > 1 else None
        return self.record(data, options, explanation, heatmap, stated, is_calibrated(network))

    def to_input_grid(self) -> list[Callable]:
        """Resample the heatmap from the preprocessed grid onto the loaded image's (the preprocessing's affine)."""
        return [HeatmapToInputGridd(keys=self.output_label_key, image_key=self.input_key)]
