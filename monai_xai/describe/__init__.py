"""Explanations in words: a sentence per case saying how confident the model is and where its evidence lies.

:func:`describe` turns one case's saliency map (with the image's affine, the class probabilities, optional masks and
an atlas) into a :class:`CaseDescription`: ``text`` such as "Prediction: NV (93.74% confidence, calibrated). Focus:
medium (312 mm²), elongated region with a smooth boundary in the lower-right part of the image, ..." and the numbers
behind every word (``as_dict()`` for a table). In 3D the sides are the patient's, from the affine.

- :mod:`~monai_xai.describe.regions`: hot regions and their geometry.
- :mod:`~monai_xai.describe.anatomy`: image and patient sides, atlas labels.
- :mod:`~monai_xai.describe.wording`: every word and cut-off (translate here).
- :mod:`~monai_xai.describe.files`: :func:`describe_files` for a saved heatmap with an atlas on any grid.
- :mod:`~monai_xai.describe.sanity_verdicts`: :func:`read_sanity_verdicts`, the randomisation checks' verdicts the
  trust note reads (``xai_sanity``).
"""

from monai_xai.describe.anatomy import read_label_names
from monai_xai.describe.description import WHOLE_IMAGE, CaseDescription, HotRegion, describe
from monai_xai.describe.files import describe_files
from monai_xai.describe.regions import RegionGeometry
from monai_xai.describe.sanity_verdicts import SanityVerdicts, read_sanity_verdicts
from monai_xai.describe.wording import ENGLISH, Wording

__all__ = [
    "ENGLISH",
    "WHOLE_IMAGE",
    "CaseDescription",
    "HotRegion",
    "RegionGeometry",
    "SanityVerdicts",
    "Wording",
    "describe",
    "describe_files",
    "read_label_names",
    "read_sanity_verdicts",
]
