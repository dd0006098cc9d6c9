"""MONAI Label infer task that explains an nnU-Net v2 trained-model folder as nnU-Net predicts, for 3D Slicer and REST
clients.

:class:`NNUNetExplainTask` answers an infer request like :class:`~monai_xai.label.BundleExplainTask` (the same
params, result volumes and description; :class:`~monai_xai.label.explain_task.ExplainTaskMixin`), with the model
of :func:`~monai_xai.nnunet.load_nnunet`: nnU-Net's own preprocessing of the image file, its Gaussian tiles, test-time
mirroring and fold ensemble, the map put back on the image file's grid as nnU-Net exports probabilities
(:meth:`~monai_xai.nnunet.NNUNetModel.to_input_grid`). The heatmap is the one ``monai-xai explain <model folder>``
writes for the same image and request.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi import HTTPException
from monai.data import MetaTensor
from monai.transforms import EnsureChannelFirstd, LoadImaged
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask

from monai_xai.budgets import BudgetExceeded
from monai_xai.cams.layer_choice import choose_target_layer
from monai_xai.explanation import ExplainStep
from monai_xai.label.explain_task import DEFAULT_METHODS, OPTIONS_KEY, ExplainTaskMixin
from monai_xai.label.guard import GuardedTaskMixin, max_voxels
from monai_xai.label.options import ExplainOptions
from monai_xai.nnunet.model import CHECKPOINT, NNUNetModel, load_nnunet

__all__ = ["NNUNetExplainTask"]

logger = logging.getLogger(__name__)

# the stages of nnU-Net's U-Nets (dynamic_network_architectures: PlainConvUNet, ResidualEncoderUNet), offered as layers
_STAGES = re.compile(r"(en|de)coder\.stages\.\d+")


class NNUNetExplainTask(ExplainTaskMixin, GuardedTaskMixin, BasicInferTask):
    """Explain an nnU-Net v2 trained-model folder's segmentation, as a MONAI Label infer task.

    Request params: as :class:`~monai_xai.label.BundleExplainTask` (``method``, ``target_layer``, ``class``,
    ``pixel_set``, ``score``, ``bins``, ``min_heat``, ``result_volume``). The classes are dataset.json's ``labels``;
    the offered layers are the one :func:`~monai_xai.cams.layer_choice.choose_target_layer` picks (the default), then
    the network's encoder and decoder stages. The image is one file nnU-Net's reader reads (for a model of several
    input channels, the ``<case>_0000<file_ending>`` file whose ``_0001``, ... siblings lie beside it); a series
    folder is a 422.

    Args:
        path: the trained-model folder (``dataset.json``, ``plans.json``, ``fold_<k>/<checkpoint>``).
        conf: MONAI Label app conf (``max_voxels`` is read).
        methods: offered methods, the first is the default; default :data:`DEFAULT_METHODS`.
        n_bins, min_heat, result_volume: the defaults of the result (as :class:`~monai_xai.label.BundleExplainTask`).
        folds, checkpoint, mirroring, step: as :func:`~monai_xai.nnunet.load_nnunet`.
    """

    def __init__(
        self,
        path: str,
        conf: dict[str, str],
        methods: Sequence[str] | None = None,
        n_bins: int = 10,
        min_heat: float = 0.1,
        result_volume: str | None = None,
        folds: Sequence[int | str] | None = None,
        checkpoint: str = CHECKPOINT,
        mirroring: bool = True,
        step: float = 0.5,
    ) -> None:
        self.folder = Path(path)
        self.served_name = self.folder.name
        self.max_voxels = max_voxels(conf)
        self._load = {"folds": folds, "checkpoint": checkpoint, "mirroring": mirroring, "step": step}
        self._models: dict[str, NNUNetModel] = {}
        model = self._model("cpu")
        super().__init__(
            path=str(self.folder),
            network=None,
            type=InferType.SEGMENTATION,
            labels=None,
            dimension=len(model.window.patch_size),
            description=f"Class-activation maps of the nnU-Net model '{self.served_name}', as {n_bins} heat bins "
            "(segments 'heat <low>-<high>') or a float heatmap (result_volume=heatmap).",
        )
        channels = len(model.predictor.dataset_json["channel_names"])
        chosen = choose_target_layer(model.network, torch.zeros(1, channels, *model.window.patch_size))
        logger.info(f"{self.served_name}: explaining layer {chosen.name!r} by default ({chosen.reason})")
        stages = [name for name, _ in model.network.named_modules() if _STAGES.fullmatch(name)]
        self.offer(
            model.class_names,
            True,
            tuple(methods) if methods is not None else DEFAULT_METHODS,
            tuple(dict.fromkeys([chosen.name, *stages])),
            n_bins,
            min_heat,
            result_volume,
        )

    def _model(self, device: str) -> NNUNetModel:
        """The model on ``device``, read by nnU-Net's predictor once per device."""
        if device not in self._models:
            self._models[device] = load_nnunet(self.folder, device=device, **self._load)
        return self._models[device]

    def pre_transforms(self, data: dict | None = None) -> Sequence[Callable]:
        """The image loaded for its grid only (the loaded grid the heatmap is returned on, its affine, its voxels);
        nnU-Net reads and preprocesses the file itself."""
        return [LoadImaged(keys=self.input_key), EnsureChannelFirstd(keys=self.input_key)]

    def channel_files(self, image: str) -> list[str]:
        """The files of the image's case, one per input channel of dataset.json's ``channel_names``.

        Raises:
            HTTPException: 422 for a folder, or for a model of several channels when the image is not a
                ``<case>_0000<file_ending>`` file with all its siblings beside it.
        """
        if os.path.isdir(image):
            raise HTTPException(
                status_code=422,
                detail=f"{self.served_name}: an nnU-Net model reads image files (dataset.json's file_ending), not a "
                "series folder; send the volume as one file (NIfTI, NRRD, MetaImage).",
            )
        dataset = self._model("cpu").predictor.dataset_json
        channels, ending = len(dataset["channel_names"]), dataset["file_ending"]
        if channels == 1:
            return [image]
        name = os.path.basename(image)
        case = name[: -len(f"_0000{ending}")] if name.endswith(f"_0000{ending}") else None
        files = [os.path.join(os.path.dirname(image), f"{case}_{k:04d}{ending}") for k in range(channels)]
        if case is None or not all(os.path.isfile(file) for file in files):
            raise HTTPException(
                status_code=422,
                detail=f"{self.served_name}: the model takes {channels} channel files per case; send the case's "
                f"<case>_0000{ending} file, with <case>_0001{ending}, ... beside it in the studies folder.",
            )
        return files

    def run_inferer(self, data: dict[str, Any], convert_to_batch: bool = True, device: str = "cuda") -> dict:
        """Explain the image file with the model (nnU-Net's preprocessing, tiles, mirroring, folds) and put the map
        on the loaded image's grid: ``data[output_label_key]`` the (1, *spatial) heatmap in [0, 1] with the loaded
        image's affine, ``data[output_json_key]`` the summary, ``data[DESCRIBE_KEY]`` its description's arguments."""
        options: ExplainOptions = data[OPTIONS_KEY]
        files = self.channel_files(str(data.get(f"{self.input_key}_path", data[self.input_key])))
        model = self._model(str(device))
        step = ExplainStep(options.request.replace(**model.predicts_as()))
        try:
            result = model.explain(files, step=step)
        except BudgetExceeded as error:  # refused before it started: the request asks too much (any budget)
            raise HTTPException(status_code=422, detail=str(error)) from error
        image = data[self.input_key]
        # nnU-Net's reader gives (z, y, x), MONAI's loaders (x, y, z)
        heatmap = np.ascontiguousarray(result.maps[options.method].transpose())
        if heatmap.shape != tuple(image.shape[1:]):
            raise ValueError(
                f"the map's grid {heatmap.shape} is not the loaded image's {tuple(image.shape[1:])}: nnU-Net's reader "
                "and MONAI's loader read this file differently."
            )
        return self.record(
            data, options, result.explanation, MetaTensor(torch.from_numpy(heatmap)[None], affine=image.affine)
        )
