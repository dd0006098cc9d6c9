"""Run a MONAI bundle's inference with the monai-xai overlays of ``configs/`` layered on top.

This is the Python form of::

    python -m monai.bundle run \
        --config_file "['<bundle>/configs/inference.json','configs/explain.json','configs/xai_metrics.json',
                        'configs/mlflow.json','<bundle>/configs/explain.json']" --bundle_root <bundle> ...

The bundle's own ``configs/explain.json`` (when present) comes last so that its defaults (target layer, class, pixel
set, metrics) win over the generic overlays, and keyword overrides win over both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai.bundle import run

__all__ = ["OVERLAYS", "overlay_dir", "explain_config_files", "explain_bundle"]

OVERLAYS = ("explain", "xai_metrics", "mlflow")


def overlay_dir() -> Path:
    """The repository's ``configs/`` folder holding the overlays (next to the ``monai_xai`` package in a checkout).

    Raises:
        FileNotFoundError: when monai-xai is installed without its repository (e.g. from a wheel).
    """
    configs = Path(__file__).resolve().parent.parent / "configs"
    if not (configs / "explain.json").is_file():
        raise FileNotFoundError(
            f"the config overlays are not at {configs}; run from a clone of the monai-xai repository "
            "(pip install -e .) or pass the overlay paths to `python -m monai.bundle run` yourself."
        )
    return configs


def explain_config_files(bundle_dir: str | Path, overlays: Sequence[str] = OVERLAYS) -> list[str]:
    """Config files, in merge order, that explain ``bundle_dir`` with the given overlays.

    Args:
        bundle_dir: a bundle in MONAI model-zoo layout (``configs/inference.json``).
        overlays: names of files in ``configs/`` to layer, in order (``"explain"`` must come first).

    Returns:
        paths as strings: the bundle's inference.json, the overlays, then the bundle's own explain.json if any.
    """
    bundle_dir = Path(bundle_dir)
    inference = bundle_dir / "configs" / "inference.json"
    if not inference.is_file():
        raise FileNotFoundError(f"{inference} does not exist; bundle_dir must be a bundle in model-zoo layout.")
    if "explain" not in overlays:
        raise ValueError(f"overlays must include 'explain' (the others build on it), got {list(overlays)}.")
    configs = overlay_dir()
    files = [inference, *(configs / f"{name}.json" for name in overlays)]
    bundle_explain = bundle_dir / "configs" / "explain.json"
    if bundle_explain.is_file():
        files.append(bundle_explain)
    return [str(path) for path in files]


def explain_bundle(bundle_dir: str | Path, overlays: Sequence[str] = OVERLAYS, **override: Any) -> None:
    """Explain a bundle's inference data set in-process (``monai.bundle.run`` with the overlays).

    Args:
        bundle_dir: bundle folder; becomes ``bundle_root``, and its ``configs/metadata.json`` and
            ``configs/logging.conf`` are used when present.
        overlays: overlay names from ``configs/`` (default: explain, xai_metrics, mlflow).
        override: config overrides, e.g. ``xai_methods=["gradcam"]``, ``xai_output_dir="out"``,
            ``dataset_dir="data"``; keys with ``#`` address nested ids.
    """
    bundle_dir = Path(bundle_dir).resolve()
    metadata = bundle_dir / "configs" / "metadata.json"
    logging_conf = bundle_dir / "configs" / "logging.conf"
    run(
        config_file=explain_config_files(bundle_dir, overlays),
        meta_file=str(metadata) if metadata.is_file() else None,
        logging_file=str(logging_conf) if logging_conf.is_file() else None,
        bundle_root=str(bundle_dir),
        **override,
    )
