"""What the attribution engine needs to know about an input-attribution method besides its formula: how many passes
of the network it costs (the budget) and whether it removes feature groups.

:func:`register_attribution` registers the function in the method registry (:mod:`monai_xai.cams.registry`, family
``ATTRIBUTION``, so every front door accepts its name) and keeps this record next to it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from monai_xai.cams.attributions.settings import AttributionSettings
from monai_xai.cams.registry import register_method
from monai_xai.enums import MethodFamily

__all__ = ["AttributionMethod", "Passes", "PassCount", "attribution_method", "register_attribution"]


class Passes(NamedTuple):
    """Passes of the network per explained image: forward passes and backward passes (each of one image)."""

    forward: int
    backward: int


# (settings, input channels, spatial shape, feature groups per channel) -> passes per image
PassCount = Callable[[AttributionSettings, int, Sequence[int], int], Passes]


@dataclass(frozen=True)
class AttributionMethod:
    """An input-attribution method's cost and needs.

    Attributes:
        name: its registered name.
        passes: its :data:`PassCount`.
        uses_features: whether it removes feature groups (:mod:`monai_xai.cams.attributions.features`).
    """

    name: str
    passes: PassCount
    uses_features: bool = False


_ATTRIBUTIONS: dict[str, AttributionMethod] = {}


def register_attribution(name: str, passes: PassCount, uses_features: bool = False) -> Callable[[Callable], Callable]:
    """Decorator registering ``function(score, images, context) -> (B, C, *spatial)`` as the attribution method
    ``name`` (see :mod:`monai_xai.cams.attributions.methods`); the function is returned unchanged."""

    def register(function: Callable) -> Callable:
        # needs_gradients=False: an attribution takes its own gradients, never the CAMs' shared backward pass
        register_method(name, MethodFamily.ATTRIBUTION, needs_gradients=False)(function)
        _ATTRIBUTIONS[name] = AttributionMethod(name, passes, uses_features)
        return function

    return register


def attribution_method(name: str) -> AttributionMethod:
    """The record of a registered attribution method.

    Raises:
        ValueError: ``name`` is not an attribution method; the message lists them.
    """
    if name not in _ATTRIBUTIONS:
        raise ValueError(f"{name!r} is not an input-attribution method; they are {sorted(_ATTRIBUTIONS)}.")
    return _ATTRIBUTIONS[name]
