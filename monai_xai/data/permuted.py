"""Training data with its labels permuted: the data randomisation check's network learns from it.

Adebayo et al. (NeurIPS 2018, "Sanity Checks for Saliency Maps", section 4.2) train the same architecture on the
training set with its labels permuted, so that no relation between image and label is left to learn; a saliency map
that looks the same for that network does not show what the real network learnt (:mod:`monai_xai.sanity.trust`,
check ``data``). The demo bundles' ``train.json`` apply this to their training list with ``--permute_labels true``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["permuted_labels"]


def permuted_labels(items: Sequence[dict[str, Any]], key: str = "label", seed: int = 0) -> list[dict[str, Any]]:
    """Copies of ``items`` with the values of ``key`` permuted among them (a class index, or a mask's path).

    Args:
        items: a MONAI datalist's list, e.g. ``[{"image": ..., "label": 1}, ...]``.
        key: the label key; every item must have it.
        seed: seed of the permutation (numpy's ``default_rng``).

    Raises:
        KeyError: an item without ``key``, naming its position.
    """
    for position, item in enumerate(items):
        if key not in item:
            raise KeyError(f"item {position} of the list has no {key!r} to permute (its keys: {sorted(item)}).")
    order = np.random.default_rng(seed).permutation(len(items))
    return [{**item, key: items[int(source)][key]} for item, source in zip(items, order)]
