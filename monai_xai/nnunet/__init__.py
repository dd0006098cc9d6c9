"""nnU-Net v2 trained-model folders explained as nnU-Net predicts (its preprocessing, tiles and Gaussian weights,
test-time mirroring, fold ensemble), the maps written on the input files' grids.

- :mod:`~monai_xai.nnunet.model`: :func:`load_nnunet` (nnU-Net's own predictor reads the folder) and
  :class:`NNUNetModel` (preprocess, explain through the explanation step, back to the input grid, write);
- :mod:`~monai_xai.nnunet.run`: :func:`explain_nnunet`, what ``monai-xai explain <model folder> --images ...`` runs.

Needs the ``nnunet`` extra (``nnunetv2``).
"""

from monai_xai.nnunet.model import CHECKPOINT, NNUNetExplanation, NNUNetModel, is_nnunet_folder, load_nnunet
from monai_xai.nnunet.run import case_files, explain_nnunet

__all__ = [
    "CHECKPOINT",
    "NNUNetExplanation",
    "NNUNetModel",
    "case_files",
    "explain_nnunet",
    "is_nnunet_folder",
    "load_nnunet",
]
