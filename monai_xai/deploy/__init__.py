"""Deployment: a series explained by a bundle and written as DICOM objects (:mod:`~monai_xai.deploy.explain`, no
deployment SDK needed), and the MONAI Deploy operators around it (:mod:`monai_xai.deploy.operators`, imported
explicitly: it needs monai-deploy-app-sdk, see docs/deploy.md)."""

from monai_xai.deploy.explain import SeriesExplanation, explain_series, without_loader, write_series_explanation

__all__ = ["SeriesExplanation", "explain_series", "write_series_explanation", "without_loader"]
