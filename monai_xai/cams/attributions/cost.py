"""The cost of an attribution request, estimated before it starts, and the budget that refuses an unreasonable one.

Cost is counted in voxel-passes: for every method, (forward + backward passes of one image, as the method's record
says, :mod:`monai_xai.cams.attributions.registry`) x the voxels of one image (its spatial size, or the window's with a
sliding window) x the images (or windows) explained. A request above ``max_voxel_passes``
(:class:`~monai_xai.cams.attributions.AttributionSettings`, config ``xai_attribution``) is refused with the estimate,
per method, and, when one forward pass was timed, the time it would take (a backward pass counted as two forward
passes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from monai_xai.cams.attributions.registry import Passes, attribution_method
from monai_xai.cams.attributions.settings import AttributionSettings

__all__ = ["AttributionBudgetExceeded", "AttributionCost", "check_budget", "estimate_cost"]


class AttributionBudgetExceeded(ValueError):
    """A request refused by the budget, before it started; the message holds the estimate (a server answers it as a
    bad request, not as a failure)."""


@dataclass(frozen=True)
class AttributionCost:
    """The estimated cost of explaining ``images`` images (or windows) of ``voxels`` voxels each.

    Attributes:
        passes: method -> its :class:`~monai_xai.cams.attributions.registry.Passes` per image.
        images: images (or windows) explained.
        voxels: voxels of one image (or window).
    """

    passes: dict[str, Passes]
    images: int
    voxels: int

    def voxel_passes(self, method: str | None = None) -> float:
        """(forward + backward passes) x voxels x images, of one method or of all."""
        methods = [method] if method is not None else list(self.passes)
        return float(sum(sum(self.passes[name]) for name in methods)) * self.voxels * self.images

    def seconds(self, seconds_per_forward: float) -> float:
        """The time at ``seconds_per_forward`` per forward pass of one image (a backward pass counts as two)."""
        return seconds_per_forward * self.images * sum(p.forward + 2 * p.backward for p in self.passes.values())

    def describe(self, seconds_per_forward: float | None = None) -> str:
        """One line per method: its passes per image and voxel-passes; the total, with the time when known."""
        lines = [
            f"  {name}: {p.forward} forward + {p.backward} backward passes per image, "
            f"{self.voxel_passes(name):.3g} voxel-passes"
            for name, p in self.passes.items()
        ]
        total = f"  total: {self.voxel_passes():.3g} voxel-passes over {self.images} image(s) of {self.voxels} voxels"
        if seconds_per_forward is not None:
            total += (
                f", about {self.seconds(seconds_per_forward):.0f} s at the measured "
                f"{seconds_per_forward:.3g} s per forward pass of one image"
            )
        return "\n".join([*lines, total])


def estimate_cost(
    methods: Sequence[str],
    settings: AttributionSettings,
    channels: int,
    spatial: Sequence[int],
    images: int,
    features: int,
) -> AttributionCost:
    """The cost of ``methods`` on ``images`` images (or windows) of ``channels`` x ``spatial``.

    Args:
        methods: attribution method names.
        settings: their settings (steps, samples, windows, ...).
        channels: input channels.
        spatial: spatial shape of one image (or window).
        images: images (or windows) explained.
        features: feature groups per channel (:func:`~monai_xai.cams.attributions.features.groups_per_channel`).
    """
    passes = {name: attribution_method(name).passes(settings, channels, spatial, features) for name in methods}
    return AttributionCost(passes, images, math.prod(spatial))


def check_budget(
    cost: AttributionCost, settings: AttributionSettings, seconds_per_forward: float | None = None
) -> None:
    """Refuse a request whose cost exceeds ``settings.max_voxel_passes``.

    Raises:
        AttributionBudgetExceeded: a ``ValueError`` with the estimate and what to change.
    """
    if cost.voxel_passes() <= settings.max_voxel_passes:
        return
    raise AttributionBudgetExceeded(
        f"the attribution request would take {cost.voxel_passes():.3g} voxel-passes, above the budget "
        f"max_voxel_passes={settings.max_voxel_passes:.3g} (xai_attribution):\n"
        f"{cost.describe(seconds_per_forward)}\n"
        "Lower the steps / samples / shap_samples, raise occlusion_stride or lower feature_grid, explain fewer or "
        "smaller images, or raise xai_attribution max_voxel_passes if the time is acceptable."
    )
