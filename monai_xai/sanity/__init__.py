"""Sanity checks for saliency maps: a random-map baseline for localisation metrics and the model randomisation test.

- :mod:`~monai_xai.sanity.baselines`: :func:`random_map_baseline`, the expected score of a random saliency map under a
  localisation metric such as :func:`monai_xai.metrics.ehr_auc`. A CAM that localises a lesion no better than noise has
  learnt nothing about it.
- :mod:`~monai_xai.sanity.randomisation`: :func:`model_randomisation_check`, the model parameter randomisation test of
  Adebayo et al. (2018), "Sanity Checks for Saliency Maps": explain with the trained network and with a copy whose
  weights are re-initialised; a map that barely changes (high Spearman rank correlation) does not depend on what the
  network learnt. :func:`cascading_randomisation` re-initialises one module at a time from the output down, to show
  which weights a map depends on.
- :mod:`~monai_xai.sanity.bundle`: :func:`bundle_sanity_checks` / :func:`bundle_sanity_table`, both checks for every
  CAM method of a MONAI bundle, on held-out phantoms (the demo bundles) or on the cases of your own datalist, with an
  optional picture of both networks' maps of the first case. Command line::

      monai-xai sanity bundles/lesion_classification_3d --n_cases 16 --figure randomisation.png
      python -m monai_xai.sanity <bundle> --datalist datalist.json --data_list_key validation --target_layer layer4
"""

from monai_xai.sanity.baselines import RANDOM_MAP_KINDS, random_map_baseline, random_saliency_maps
from monai_xai.sanity.bundle import (
    MIN_LOCALISATION_RATIO,
    PHANTOM_CASES,
    MethodSanity,
    bundle_sanity_checks,
    bundle_sanity_table,
    sanity_markdown,
)
from monai_xai.sanity.randomisation import (
    MAX_RANDOMISATION_SPEARMAN,
    CascadeResult,
    RandomisationResult,
    cascading_randomisation,
    model_randomisation_check,
    randomize_weights,
    spearman_correlation,
)

__all__ = [
    "RANDOM_MAP_KINDS",
    "MIN_LOCALISATION_RATIO",
    "MAX_RANDOMISATION_SPEARMAN",
    "PHANTOM_CASES",
    "random_saliency_maps",
    "random_map_baseline",
    "spearman_correlation",
    "randomize_weights",
    "RandomisationResult",
    "model_randomisation_check",
    "CascadeResult",
    "cascading_randomisation",
    "MethodSanity",
    "bundle_sanity_checks",
    "sanity_markdown",
    "bundle_sanity_table",
]
