"""``monai-xai`` command line (python-fire): ``demo``, ``explain`` a bundle, ``sanity`` checks, ``phantom`` data.

Examples::

    monai-xai demo
    monai-xai explain bundles/lesion_segmentation_3d --xai_methods "['gradcam','hirescam']"
    monai-xai sanity bundles/lesion_classification_3d
    monai-xai phantom outputs/phantoms --n_cases 20
"""

from __future__ import annotations

from collections.abc import Sequence

import fire

from monai_xai.bundle_explain import OVERLAYS, explain_bundle
from monai_xai.data import write_phantom_dataset
from monai_xai.demo import run_demo
from monai_xai.sanity import bundle_sanity_table

__all__ = ["main"]


def explain(bundle_dir: str, overlays: Sequence[str] = OVERLAYS, **override) -> None:
    """Explain a MONAI bundle's inference data with the ``configs/`` overlays; extra ``--id value`` flags override ids.

    Args:
        bundle_dir: bundle in model-zoo layout.
        overlays: overlay names from ``configs/`` (default: explain, xai_metrics, mlflow).
    """
    explain_bundle(bundle_dir, overlays=tuple(overlays), **override)


def phantom(out_dir: str, n_cases: int = 20, seed: int = 0, dim: int = 3, positive_fraction: float = 0.5) -> str:
    """Write a phantom lesion data set (NIfTI volumes, lesion masks, MONAI datalist) and return the datalist path."""
    return str(write_phantom_dataset(out_dir, n_cases, seed=seed, dim=dim, positive_fraction=positive_fraction))


def main() -> None:
    """Entry point of the ``monai-xai`` console script."""
    fire.Fire({"demo": run_demo, "explain": explain, "sanity": bundle_sanity_table, "phantom": phantom})


if __name__ == "__main__":
    main()
