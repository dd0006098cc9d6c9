"""The explanation core: one request (:class:`ExplainRequest`), one step (:class:`ExplainStep`), one record
(:class:`Explanation`), behind every front door (bundle overlays, ``monai-xai explain``, ``study``, ``sanity``, MONAI
Label, the Python API :func:`explain`)."""

from monai_xai.explanation.request import (
    BLEND_MODES,
    ClassChoice,
    ExplainRequest,
    SlidingWindow,
    SlidingWindowNetwork,
    network_as_inferred,
)
from monai_xai.explanation.scripted import INPUT_GRADIENT_METHODS, is_scripted, methods_for
from monai_xai.explanation.step import (
    ExplainStep,
    ExplainTarget,
    Explanation,
    class_probabilities,
    explain,
    predicted_class,
)

__all__ = [
    "BLEND_MODES",
    "INPUT_GRADIENT_METHODS",
    "is_scripted",
    "methods_for",
    "ClassChoice",
    "ExplainRequest",
    "ExplainStep",
    "ExplainTarget",
    "Explanation",
    "SlidingWindow",
    "SlidingWindowNetwork",
    "network_as_inferred",
    "class_probabilities",
    "explain",
    "predicted_class",
]
