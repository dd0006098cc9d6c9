"""Sanity checks for saliency maps: a random-map baseline for localisation metrics and the model randomisation test.

- :mod:`~monai_xai.sanity.baselines`: :func:`random_map_baseline`, the expected score of a random saliency map under a
  localisation metric such as :func:`monai_xai.metrics.ehr_auc`. A CAM that localises a lesion no better than noise has
  learnt nothing about it.
- :mod:`~monai_xai.sanity.randomisation`: :func:`model_randomisation_check`, the model parameter randomisation test of
  Adebayo et al. (2018), "Sanity Checks for Saliency Maps": explain with the trained network and with a copy whose
  weights are re-initialised; a map that barely changes (high Spearman rank correlation) does not depend on what the
  network learnt. :func:`cascading_randomisation` re-initialises one module at a time from the output down, to show
  which weights a map depends on.
- :mod:`~monai_xai.sanity.trust`: the further randomisation checks, each a per-method verdict with a bootstrap CI:
  bottom-up randomisation (Binder et al. 2023), sMPRT and eMPRT (Hedstrom et al. 2023), the random-logit test (Sixt
  et al. 2020); the controls of :mod:`monai_xai.cams.controls` must fail them, and a check one passes is marked not
  discriminating for the bundle.
- :mod:`~monai_xai.sanity.metric_reliability`: :func:`metric_reliability`, whether a metric can rank methods: noise
  resilience (input and weight noise that keep the prediction move it little) and adversary reactivity (a control map
  and a randomised network's map move it more than the noise), after MetaQuantus (Hedstrom et al. 2023); a study
  reports it for every metric.
- :mod:`~monai_xai.sanity.bundle`: :func:`bundle_sanity_checks`, both checks for every CAM method of a MONAI bundle,
  on held-out phantoms (the demo bundles) or on the cases of your own datalist (:mod:`~monai_xai.sanity.cases`),
  giving one :class:`MethodSanity` per method (:mod:`~monai_xai.sanity.results`);
  :mod:`~monai_xai.sanity.report` writes them as a Markdown table and pictures; :func:`sanity_verdicts` gives each
  method's verdicts for a bundle's ``xai_sanity`` (the descriptions' trust note) and
  :mod:`~monai_xai.sanity.tracking` logs a run to MLflow (:func:`track_sanity`). Command line (``monai_xai.cli``)::

      monai-xai sanity bundles/lesion_classification_3d --n_cases 16 --figure randomisation.png
      monai-xai sanity bundles/lesion_classification_3d --n_cases 4 --methods "['gradcam','eigencam']" --checks all
      monai-xai sanity <bundle> --checks all --verdicts_file sanity.json --tracking_uri sqlite:///mlruns.db
      python -m monai_xai.sanity <bundle> --datalist datalist.json --data_list_key validation --target_layer layer4
"""

from monai_xai.sanity.baselines import RANDOM_MAP_KINDS, random_map_baseline, random_saliency_maps
from monai_xai.sanity.bundle import PHANTOM_CASES, bundle_sanity_checks
from monai_xai.sanity.metric_reliability import (
    MAX_NOISE_CHANGE,
    MetricReliability,
    metric_reliability,
    noisy_images,
    perturbed_weights,
    prediction_kept,
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
from monai_xai.sanity.report import (
    sanity_markdown,
    save_cascade_figure,
    save_randomisation_figure,
    trust_markdown,
    write_sanity_verdicts,
)
from monai_xai.sanity.results import MIN_LOCALISATION_RATIO, MethodSanity, sanity_verdicts
from monai_xai.sanity.tracking import track_sanity
from monai_xai.sanity.trust import (
    MIN_EMPRT_RISE,
    CheckVerdict,
    bootstrap_ci,
    bottom_up_randomised,
    complexity_rise,
    discrete_entropy,
    non_discriminating,
    random_other_class,
    smoothed_maps,
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
    "sanity_verdicts",
    "track_sanity",
    "write_sanity_verdicts",
    "bundle_sanity_checks",
    "sanity_markdown",
    "trust_markdown",
    "MIN_EMPRT_RISE",
    "CheckVerdict",
    "bootstrap_ci",
    "bottom_up_randomised",
    "complexity_rise",
    "discrete_entropy",
    "non_discriminating",
    "random_other_class",
    "smoothed_maps",
    "MAX_NOISE_CHANGE",
    "MetricReliability",
    "metric_reliability",
    "noisy_images",
    "perturbed_weights",
    "prediction_kept",
    "save_randomisation_figure",
    "save_cascade_figure",
]
