"""MONAI Label app serving MONAI bundles and their class-activation-map explanations from a local studies folder.

Start it (see docs/monai_label.md)::

    monailabel start_server --app <copy of this folder> --studies <folder of NIfTI/NRRD volumes> \
        --uvicorn_app monai_xai.label.server:app \
        --conf bundles <folder holding bundle folders> --conf zoo_source github --conf sam2 false

For every bundle folder with ``configs/inference.json`` and ``models/model.pt`` the app serves two models:
``<bundle>`` (the bundle's own inference, MONAI Label's ``BundleInferTask`` with the fixes of
:class:`monai_xai.label.CompatibleBundleInferTask`) and ``<bundle>_explain`` (CAMs,
:class:`monai_xai.label.BundleExplainTask`). For every nnU-Net v2 trained-model folder (``dataset.json``,
``plans.json``, ``fold_<k>/``; the ``nnunet`` extra) it serves ``<folder>_explain``
(:class:`monai_xai.label.NNUNetExplainTask`: nnU-Net's preprocessing, tiles, mirroring and folds). App conf
(``--conf key value``):

- ``bundles``: folder holding the bundle folders (default ``<app>/model``, MONAI Label's convention).
- ``models``: comma-separated bundle names to serve (default: every valid bundle in ``bundles``).
- ``explain_methods``: comma-separated CAM methods offered (default: all of ``monai_xai.label.DEFAULT_METHODS``).
- ``bins``: default number of heat bins (default 10); ``min_heat``: default unlabelled heat (default 0.1).
- ``result_volume``: the default result (``bins``, ``segments`` or ``heatmap``; default ``bins``).
- ``max_upload_mb`` (default 1024), ``max_voxels`` (default 512 x 512 x 1024): the largest request and the most voxels
  an image may declare; larger ones are refused (413) before they are read.
- ``allow_label_writes``: ``true`` lets a request save its result as a label (``save_label`` with a ``label_tag``
  other than ``final`` or ``original``); default ``false``.

Folders that are neither an nnU-Net folder nor a bundle with ``configs/inference.json`` and trained weights (the
study bundles before training), and nnU-Net folders without nnunetv2 installed, are skipped
with a logged reason, so ``--conf bundles <repository>/bundles`` serves the bundles that have weights.
"""

from __future__ import annotations

import logging
import os

from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask

from monai_xai.label import (
    BundleExplainTask,
    CompatibleBundleInferTask,
    GuardedInferMixin,
    NNUNetExplainTask,
    heat_bins,
)
from monai_xai.label.explain_task import ExplainTaskMixin
from monai_xai.nnunet import is_nnunet_folder
from monai_xai.threads import apply_thread_policy

logger = logging.getLogger(__name__)


def _not_servable(path: str) -> str | None:
    """Why the folder ``path`` is not a bundle this app can serve, or None: a bundle needs
    ``configs/inference.json`` and trained weights (``models/model.pt`` or ``models/model.ts``; the study bundles
    ship without them until trained)."""
    if not os.path.isdir(path):
        return "not a folder"
    if not os.path.exists(os.path.join(path, "configs", "inference.json")):
        return "no configs/inference.json"
    if not any(os.path.exists(os.path.join(path, "models", name)) for name in ("model.pt", "model.ts")):
        return "no trained weights (models/model.pt or models/model.ts): train the bundle first"
    return None


class ExplainApp(GuardedInferMixin, MONAILabelApp):
    """Bundles and their explain tasks; app labels: the segmentation classes, then the default heat bins.

    Requests may explain only images of the studies folder, uploads and their session's image
    (:class:`monai_xai.label.GuardedInferMixin`).
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        apply_thread_policy()  # the server's start: the first code of ours that runs
        self.bundles_dir = os.path.realpath(conf.get("bundles", os.path.join(app_dir, "model")))
        names = conf.get("models")
        self.bundle_names = names.split(",") if names else sorted(os.listdir(self.bundles_dir))
        methods = conf.get("explain_methods")
        self.explain_methods = methods.split(",") if methods else None
        self.n_bins = int(conf.get("bins", 10))
        self.min_heat = float(conf.get("min_heat", 0.1))
        self.result_volume = conf.get("result_volume")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="monai-xai explanations",
            description="MONAI bundles with class-activation-map explanations (monai-xai)",
        )

    def init_infers(self) -> dict[str, InferTask]:
        infers: dict[str, InferTask] = {}
        # what each explain task offers by default (the app's conf)
        offers = {
            "methods": self.explain_methods,
            "n_bins": self.n_bins,
            "min_heat": self.min_heat,
            "result_volume": self.result_volume,
        }
        for name in self.bundle_names:
            path = os.path.join(self.bundles_dir, name)
            if is_nnunet_folder(path):
                try:
                    infers[f"{name}_explain"] = NNUNetExplainTask(path, self.conf, **offers)
                except ImportError as error:  # the nnunet extra is not installed
                    logger.warning(f"skip {path}: {error}")
                continue
            reason = _not_servable(path)
            if reason is not None:
                logger.warning(f"skip {path}: {reason}")
                continue
            task = CompatibleBundleInferTask(path, self.conf)
            if not task.is_valid():
                logger.warning(f"skip {path}: MONAI Label cannot load it (see the lines above)")
                continue
            infers[name] = task
            infers[f"{name}_explain"] = BundleExplainTask(path, self.conf, **offers)
        if not infers:
            logger.warning(f"no servable bundle among {self.bundle_names} in {self.bundles_dir}")
        # Slicer creates one empty segment per app label when a sample opens: the classes first (so auto-segmentation
        # picks a segmentation model), then the default bins.
        classes = [
            label
            for task in infers.values()
            if task.type == "segmentation" and not isinstance(task, ExplainTaskMixin)
            for label in task.labels
        ]
        self.labels = [*dict.fromkeys(classes), *[heat_bin.name for heat_bin in heat_bins(self.n_bins)]]
        return infers
