"""Where the config overlays and the bundle metadata schema are, and the config files that explain a bundle.

The overlays ship inside the package (``monai_xai/configs/``; the repository's ``configs/`` links to them), so a
wheel installed anywhere explains a bundle with the same files as a clone.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path

__all__ = ["OVERLAYS", "overlay_dir", "overlay_path", "metadata_schema_path", "explain_config_files"]

# the overlays a plain explanation run layers on a bundle, in merge order ("explain" first: the others build on it)
OVERLAYS = ("explain", "xai_metrics", "mlflow")


def overlay_dir() -> Path:
    """The folder holding the config overlays (``explain.json``, ``xai_metrics.json``, ``mlflow.json``)."""
    return Path(str(files("monai_xai") / "configs"))


def overlay_path(name: str) -> Path:
    """Path of the overlay ``name`` (``"explain"``, ``"xai_metrics"`` or ``"mlflow"``).

    Raises:
        FileNotFoundError: an unknown overlay name (the message lists the available ones).
    """
    path = overlay_dir() / f"{name}.json"
    if not path.is_file():
        available = sorted(item.stem for item in overlay_dir().glob("*.json") if item.stem != "bundle_metadata_schema")
        raise FileNotFoundError(f"there is no overlay {name!r}; available: {available}.")
    return path


def metadata_schema_path() -> Path:
    """The local JSON schema of a bundle's ``configs/metadata.json`` (for ``monai.bundle verify_metadata`` offline)."""
    return overlay_dir() / "bundle_metadata_schema.json"


def explain_config_files(bundle_dir: str | Path, overlays: Sequence[str] = OVERLAYS) -> list[str]:
    """Config files, in merge order, that explain ``bundle_dir`` with the given overlays.

    The bundle's own ``configs/explain.json`` (when present) comes last, so that its defaults (target layer, class,
    pixel set, metrics) win over the generic overlays; command-line overrides win over both.

    Args:
        bundle_dir: a bundle in MONAI model-zoo layout (``configs/inference.json``).
        overlays: overlay names, in order (``"explain"`` must come first when any is given; none reads only what the
            bundle itself configures).

    Returns:
        paths as strings: the bundle's inference.json, the overlays, then the bundle's own explain.json if any.

    Raises:
        FileNotFoundError: no ``configs/inference.json``, or an unknown overlay.
        ValueError: overlays that do not start with ``"explain"``.
    """
    bundle_dir = Path(bundle_dir)
    inference = bundle_dir / "configs" / "inference.json"
    if not inference.is_file():
        raise FileNotFoundError(f"{inference} does not exist; bundle_dir must be a bundle in model-zoo layout.")
    if overlays and "explain" not in overlays:
        raise ValueError(f"overlays must include 'explain' (the others build on it), got {list(overlays)}.")
    files_in_order = [inference, *(overlay_path(name) for name in overlays)]
    bundle_explain = bundle_dir / "configs" / "explain.json"
    if bundle_explain.is_file():
        files_in_order.append(bundle_explain)
    return [str(path) for path in files_in_order]
