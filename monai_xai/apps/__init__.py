"""Applications above the explanation core: what one bundle or one study needs and the core does not.

- :mod:`~monai_xai.apps.classification`: :func:`evaluate_classifier` (temperature scaling on the validation split,
  then accuracy, balanced accuracy, per-class P/R/F1/AUC, ECE and a reliability diagram on the test split), what the
  study bundles' ``evaluate.json`` runs.
- :mod:`~monai_xai.apps.segmentation`: :func:`class_dice_metrics`, Dice per class and per union of classes as MONAI
  ``MeanDice`` handlers, what the segmentation bundles' evaluators report.
- :mod:`~monai_xai.apps.gaze`: the gaze-saliency bundle's training stages, inferer, evaluation and agreement handler
  (``bundles/gaze_saliency_cxr``).

The core (``monai_xai.explanation``, ``cams``, ``metrics``, ``handlers``, ``bundle``) never imports from here.
"""

from monai_xai.apps.classification import classification_metrics, evaluate_classifier
from monai_xai.apps.segmentation import channel_union, class_dice_metrics

__all__ = ["classification_metrics", "channel_union", "class_dice_metrics", "evaluate_classifier"]
