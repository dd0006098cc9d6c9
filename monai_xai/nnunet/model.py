"""An nnU-Net v2 trained-model folder as the explanation step needs it: network, preprocessing, windows, mirroring,
folds, and the way back to the input file's grid, all from nnU-Net's own code.

A trained-model folder (``nnUNet_results/DatasetXXX_Name/<trainer>__<plans>__<configuration>``) holds
``dataset.json``, ``plans.json`` and ``fold_<k>/checkpoint_final.pth``. :func:`load_nnunet` reads it with nnU-Net's
own ``nnUNetPredictor.initialize_from_trained_model_folder`` (the network its trainer class builds, deep supervision
off, the folds' weights, the mirror axes the checkpoint allows); :class:`NNUNetModel` then

- preprocesses image files with the plans' preprocessor (``run_case``: transpose, crop to non-zero, normalise,
  resample to the configuration's spacing);
- explains with the explanation step and a :class:`~monai_xai.cams.tiles.TiledWindow` of the plans' patch size,
  nnU-Net's tile step and Gaussian, the checkpoint's mirror axes (optional, as nnU-Net's ``--disable_tta``) and the
  folds' weights (maps averaged the way nnU-Net averages logits);
- puts a map back on the input file's grid as nnU-Net exports probabilities (``resampling_fn_probabilities``, the crop
  reverted, the transpose reverted) and writes it with the input's geometry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from monai_xai.cams.tiles import TiledWindow
from monai_xai.enums import ModelMode, NetworkOutput
from monai_xai.explanation import ExplainRequest, ExplainStep, Explanation

__all__ = ["CHECKPOINT", "NNUNetExplanation", "NNUNetModel", "NNUNetPreprocessing", "is_nnunet_folder", "load_nnunet"]

# the checkpoint nnU-Net predicts with unless told otherwise
CHECKPOINT = "checkpoint_final.pth"


def is_nnunet_folder(path: str | Path) -> bool:
    """Whether ``path`` is an nnU-Net v2 trained-model folder (``dataset.json``, ``plans.json``, ``fold_*/``)."""
    folder = Path(path)
    return (
        (folder / "dataset.json").is_file()
        and (folder / "plans.json").is_file()
        and any(item.is_dir() for item in folder.glob("fold_*"))
    )


def _import_predictor() -> Any:
    try:
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    except ImportError as error:
        raise ImportError(
            f"explaining an nnU-Net model needs nnunetv2 ({error}); install the extra: pip install 'monai-xai[nnunet]'."
        ) from None
    return nnUNetPredictor


@dataclass(frozen=True)
class NNUNetExplanation:
    """One case explained.

    Attributes:
        explanation: the step's record on nnU-Net's preprocessed grid (maps (1, 1, *spatial) in [0, 1], class,
            pixel set, logits averaged over the folds and mirrored tiles).
        maps: method -> the map on the input file's grid, in the array order nnU-Net's reader gives (SimpleITK:
            (z, y, x)), float32 in [0, 1].
        properties: nnU-Net's properties of the case (geometry, crop, spacing), for writing the maps.
    """

    explanation: Explanation
    maps: dict[str, np.ndarray]
    properties: dict[str, Any]


@dataclass(frozen=True)
class NNUNetModel:
    """An nnU-Net v2 trained-model folder ready to explain (see the module docstring); build it with
    :func:`load_nnunet`.

    Attributes:
        folder: the trained-model folder.
        predictor: nnU-Net's ``nnUNetPredictor`` initialised from it (plans, configuration, dataset.json, labels).
        window: the tiles, Gaussian, mirroring and folds the maps and predictions are computed with.
    """

    folder: Path
    predictor: Any
    window: TiledWindow

    @property
    def network(self) -> nn.Module:
        """The network nnU-Net's trainer class built from the plans (deep supervision off)."""
        return self.predictor.network

    @property
    def class_names(self) -> list[str]:
        """The output channels' names in index order, from dataset.json's ``labels``."""
        labels = self.predictor.dataset_json["labels"]
        names = {int(value): name for name, value in labels.items() if isinstance(value, int)}
        return [
            names.get(index, f"class {index}") for index in range(self.predictor.label_manager.num_segmentation_heads)
        ]

    def preprocess(self, image_files: Sequence[str | Path]) -> tuple[torch.Tensor, dict[str, Any]]:
        """One case's channel files through the plans' preprocessor, as nnU-Net predicts them.

        Args:
            image_files: the case's files, one per input channel in dataset.json's ``channel_names`` order (nnU-Net's
                ``case_0000.nii.gz``, ``case_0001.nii.gz``, ...).

        Returns:
            (1, C, *spatial) float32 preprocessed image, and nnU-Net's properties of the case.
        """
        predictor = self.predictor
        preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
        data, _, properties = preprocessor.run_case(
            [str(item) for item in image_files],
            None,
            predictor.plans_manager,
            predictor.configuration_manager,
            predictor.dataset_json,
        )
        return torch.from_numpy(np.asarray(data, dtype=np.float32))[None], properties

    def predicts_as(self) -> dict[str, Any]:
        """The :class:`~monai_xai.explanation.ExplainRequest` fields that make a request explain as nnU-Net
        predicts: this model's window (tiles, mirroring, folds), logits outputs, eval mode (nnU-Net predicts in eval
        mode); ``request.replace(**model.predicts_as())`` turns any request into one for this model."""
        return {"window": self.window, "model_mode": ModelMode.EVAL, "network_output": NetworkOutput.LOGITS}

    def request(self, **fields: Any) -> ExplainRequest:
        """An :class:`~monai_xai.explanation.ExplainRequest` of :meth:`predicts_as` and ``fields`` (``methods`` at
        least)."""
        return ExplainRequest(**{**self.predicts_as(), **fields})

    def explain(self, image_files: Sequence[str | Path], step: ExplainStep | None = None, **fields: Any):
        """Explain one case.

        Args:
            image_files: the case's channel files (see :meth:`preprocess`).
            step: the step to explain with (keeps the chosen layer and class over cases); None: one built from
                :meth:`request` with ``fields``.
            fields: :class:`~monai_xai.explanation.ExplainRequest` fields, e.g. ``methods=["gradcam"]``,
                ``class_idx=1``.

        Returns:
            an :class:`NNUNetExplanation`.
        """
        step = step or ExplainStep(self.request(**fields))
        images, properties = self.preprocess(image_files)
        device = next(self.network.parameters()).device
        explanation = step(self.network, images.to(device))
        maps = {
            method: self.to_input_grid(values[0].detach().float().cpu().numpy(), properties)[0]
            for method, values in explanation.maps.items()
        }
        return NNUNetExplanation(explanation, maps, properties)

    def to_input_grid(self, values: np.ndarray, properties: dict[str, Any]) -> np.ndarray:
        """(K, *preprocessed) values on the input file's grid, as nnU-Net exports probabilities: resampled with the
        configuration's ``resampling_fn_probabilities`` to the cropped input's shape, the crop reverted (zeros
        outside the non-zero box), the transpose reverted.

        Returns:
            (K, *input) float32 in the array order of nnU-Net's reader.
        """
        from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

        plans, configuration = self.predictor.plans_manager, self.predictor.configuration_manager
        spacing = [properties["spacing"][axis] for axis in plans.transpose_forward]
        cropped_shape = properties["shape_after_cropping_and_before_resampling"]
        current = (
            configuration.spacing
            if len(configuration.spacing) == len(cropped_shape)
            else [spacing[0], *configuration.spacing]
        )
        resampled = np.asarray(configuration.resampling_fn_probabilities(values, cropped_shape, current, spacing))
        full = np.zeros((values.shape[0], *properties["shape_before_cropping"]), dtype=np.float32)
        full = insert_crop_into_image(full, resampled.astype(np.float32), properties["bbox_used_for_cropping"])
        return np.ascontiguousarray(full.transpose([0, *(axis + 1 for axis in plans.transpose_backward)]))

    def write(self, values: np.ndarray, properties: dict[str, Any], path: str | Path) -> Path:
        """Write a map on the input file's grid (:meth:`to_input_grid`) with the input's geometry.

        Raises:
            ValueError: an image reader other than SimpleITK's (the properties then carry no geometry to write).
        """
        import SimpleITK as sitk

        geometry = properties.get("sitk_stuff")
        if geometry is None:
            raise ValueError(
                f"the plans read images with {self.predictor.plans_manager.plans['image_reader_writer']}, whose "
                "properties carry no SimpleITK geometry; maps are written for SimpleITKIO plans (nnU-Net's default "
                "for NIfTI); use NNUNetExplanation.maps and the input's geometry yourself."
            )
        image = sitk.GetImageFromArray(
            values.astype(np.float32) if len(geometry["spacing"]) == values.ndim else values[0]
        )
        image.SetSpacing(geometry["spacing"])
        image.SetOrigin(geometry["origin"])
        image.SetDirection(geometry["direction"])
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(image, str(path), True)
        return path


def load_nnunet(
    folder: str | Path,
    folds: Sequence[int | str] | None = None,
    checkpoint: str = CHECKPOINT,
    mirroring: bool = True,
    step: float = 0.5,
    device: torch.device | str = "cpu",
) -> NNUNetModel:
    """Read an nnU-Net v2 trained-model folder with nnU-Net's own predictor.

    Args:
        folder: the trained-model folder (``dataset.json``, ``plans.json``, ``fold_<k>/<checkpoint>``).
        folds: the folds to ensemble (e.g. ``(0,)``, ``("all",)``); None: every fold with the checkpoint.
        checkpoint: the checkpoint file in each fold folder.
        mirroring: nnU-Net's test-time mirroring along the axes the checkpoint allows (``--disable_tta`` off).
        step: nnU-Net's tile step (``-step_size``), a fraction of the patch in (0, 1].
        device: where the network runs.

    Raises:
        FileNotFoundError: not a trained-model folder (the message names what is missing).
        ImportError: nnunetv2 not installed.
    """
    folder = Path(folder).resolve()
    if not is_nnunet_folder(folder):
        raise FileNotFoundError(
            f"{folder} is not an nnU-Net v2 trained-model folder: it needs dataset.json, plans.json and fold_<k>/"
            f"{checkpoint} (nnUNet_results/DatasetXXX_Name/<trainer>__<plans>__<configuration>)."
        )
    predictor = _import_predictor()(
        tile_step_size=step, use_gaussian=True, use_mirroring=mirroring, device=torch.device(device), verbose=False
    )
    predictor.initialize_from_trained_model_folder(str(folder), None if folds is None else tuple(folds), checkpoint)
    patch_size = tuple(int(size) for size in predictor.configuration_manager.patch_size)
    axes = predictor.allowed_mirroring_axes if mirroring else None
    window = TiledWindow(
        patch_size,
        step=step,
        mirror_axes=None if axes is None else tuple(int(axis) for axis in axes),
        weights=tuple(predictor.list_of_parameters),
    )
    predictor.network.to(torch.device(device)).eval()
    return NNUNetModel(folder, predictor, window)


class NNUNetPreprocessing:
    """An nnU-Net model's preprocessing as a bundle's dict transform, for the front doors that load cases with a
    bundle's ``preprocessing`` (the study, the sanity checks): ``{"image": file(s), key: label file}`` -> ``{"image":
    (C, *spatial) preprocessed, key: (1, *spatial) label on the same grid}``, both through nnU-Net's ``run_case``.

    Args:
        model: the loaded model.
    """

    def __init__(self, model: NNUNetModel) -> None:
        self.model = model

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        predictor = self.model.predictor
        files = item["image"] if isinstance(item["image"], list | tuple) else [item["image"]]
        labels = [key for key in item if key != "image"]
        preprocessor = predictor.configuration_manager.preprocessor_class(verbose=False)
        data, seg, _ = preprocessor.run_case(
            [str(file) for file in files],
            str(item[labels[0]]) if labels else None,
            predictor.plans_manager,
            predictor.configuration_manager,
            predictor.dataset_json,
        )
        loaded = {"image": torch.from_numpy(np.asarray(data, dtype=np.float32))}
        if labels:
            loaded[labels[0]] = torch.from_numpy(np.asarray(seg, dtype=np.float32))
        return loaded
