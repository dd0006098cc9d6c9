"""Everything about reading a MONAI bundle for explanation: the overlays, the typed settings, the checked workflow.

- :mod:`~monai_xai.bundle.overlays`: where the config overlays and the metadata schema are; the config files that
  explain a bundle, in merge order.
- :mod:`~monai_xai.bundle.settings`: :class:`ExplainSettings`, the ``xai_*`` config ids as one typed record, and
  :func:`check_explain_config` (the overlay's early check of methods and layers).
- :mod:`~monai_xai.bundle.workflow`: :class:`ExplainWorkflow` (MONAI's ``ConfigWorkflow`` that checks the bundle has
  what the overlays need) and :func:`explain_bundle`, what ``monai-xai explain`` runs.
- :mod:`~monai_xai.bundle.loading`: :func:`load_trained_bundle`, network + preprocessing + settings of a trained
  bundle, for explaining cases outside an engine (the sanity checks).
- :mod:`~monai_xai.bundle.metadata`: :func:`metadata_class_names`, the class names of a bundle's metadata.
"""

from monai_xai.bundle.loading import TrainedBundle, load_trained_bundle
from monai_xai.bundle.metadata import metadata_class_names
from monai_xai.bundle.overlays import (
    OVERLAYS,
    explain_config_files,
    metadata_schema_path,
    overlay_dir,
    overlay_path,
)
from monai_xai.bundle.settings import ExplainSettings, check_explain_config
from monai_xai.bundle.workflow import (
    REQUIRED_BUNDLE_IDS,
    ExplainRun,
    ExplainWorkflow,
    check_bundle_ids,
    explain_bundle,
    segmentation_classes,
)

__all__ = [
    "OVERLAYS",
    "overlay_dir",
    "overlay_path",
    "metadata_schema_path",
    "explain_config_files",
    "ExplainSettings",
    "check_explain_config",
    "REQUIRED_BUNDLE_IDS",
    "check_bundle_ids",
    "ExplainRun",
    "ExplainWorkflow",
    "explain_bundle",
    "segmentation_classes",
    "TrainedBundle",
    "load_trained_bundle",
    "metadata_class_names",
]
