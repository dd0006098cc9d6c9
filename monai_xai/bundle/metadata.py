"""What a bundle's ``configs/metadata.json`` says about its network's output: the names of its classes."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["metadata_class_names"]


def metadata_class_names(bundle_dir: str | Path) -> list[str] | None:
    """The names of a bundle's output channels in index order, from its ``configs/metadata.json``
    (``network_data_format.outputs.pred.channel_def``, as model-zoo bundles name them; a channel it leaves out is
    named ``"class <index>"``), so that every text that names a class uses them; None when the metadata names none.

    This is the overlays' default ``xai_class_names`` (``configs/explain.json``); a bundle's own explain.json or
    ``--xai_class_names`` replaces it.

    Raises:
        ValueError: a metadata file that is not JSON (naming the file).
    """
    metadata_file = Path(bundle_dir) / "configs" / "metadata.json"
    if not metadata_file.is_file():
        return None
    try:
        metadata = json.loads(metadata_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{metadata_file} is not valid JSON ({error}); fix it or remove it.") from None
    pred = metadata.get("network_data_format", {}).get("outputs", {}).get("pred", {})
    names = pred.get("channel_def")
    if not isinstance(names, dict) or not names:
        return None
    indices = [int(key) for key in names if str(key).isdigit()]
    num_channels = max(int(pred.get("num_channels", 0) or 0), max(indices, default=-1) + 1)
    return [str(names.get(str(index), f"class {index}")) for index in range(num_channels)]
