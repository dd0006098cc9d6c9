"""Perturbation CAMs (Score-CAM, Ablation-CAM): channel weights from how the target score reacts to perturbed copies.

Both methods need one forward pass per (sample, channel) pair. Here the pairs of the whole batch are flattened and run
``batch_size`` copies per forward pass, copies of different samples mixed, each scored against its own sample's target
through ``target(outputs, sample_ids)``. Everything is N-D (2D and 3D) and stays on the images' device. The model is put
in eval mode for the call and every mode flag and hook is restored on exit, also when a forward pass raises.

Every function maps ``(model, images (B, C_in, *S_in), layer, activations (B, K, *S), target, batch_size, layout)`` to a
raw, pre-ReLU map (B, 1, *S) at the layer's resolution, and is registered by name (``monai_xai.cams.registry``);
``layout`` (:class:`~monai_xai.cams.layouts.FeatureLayout`) says how the layer's own output holds the activations
(channel first, channel last, transformer tokens), for a method that replaces that output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import TracebackType

import torch
import torch.nn.functional as F
from torch import nn

from monai_xai.cams.layouts import FeatureLayout
from monai_xai.cams.methods import weighted_channel_sum
from monai_xai.cams.registry import get_method, method_names, register_method
from monai_xai.enums import MethodFamily
from monai_xai.utils import preserved_model_state

__all__ = ["PERTURBATION_METHODS", "scorecam", "ablationcam"]

Target = Callable[..., torch.Tensor]


def _check_inputs(images: torch.Tensor, activations: torch.Tensor, batch_size: int) -> None:
    if activations.ndim != images.ndim or activations.shape[0] != images.shape[0]:
        raise ValueError(
            f"activations must be (B, K, *spatial) with the images' batch size and number of spatial dims; got "
            f"activations {tuple(activations.shape)} for images {tuple(images.shape)}."
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int (perturbed copies per forward pass), got {batch_size!r}.")


def _pair_chunks(
    num_samples: int, num_channels: int, batch_size: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Chunks of at most ``batch_size`` (sample, channel) pairs, sample-major: (flat index, sample ids, channel ids)."""
    total = num_samples * num_channels
    for start in range(0, total, batch_size):
        flat = torch.arange(start, min(start + batch_size, total), device=device)
        yield flat, flat // num_channels, flat % num_channels


@register_method("scorecam", MethodFamily.PERTURBATION, needs_gradients=False)
def scorecam(
    model: nn.Module,
    images: torch.Tensor,
    layer: nn.Module,
    activations: torch.Tensor,
    target: Target,
    batch_size: int = 32,
    layout: FeatureLayout | None = None,
) -> torch.Tensor:
    """Score-CAM (Wang et al. 2020), as computed by pytorch-grad-cam's ``ScoreCAM``, in 2D and 3D.

    Each channel A_k is upsampled to the input size (bilinear in 2D, trilinear in 3D, ``align_corners=True`` like
    ``nn.UpsamplingBilinear2d``), min-max scaled to [0, 1] with ``(A - min) / (max - min + 1e-8)``, multiplied with the
    image, and the masked image is scored with the target; w = softmax over channels of the scores:

    L = sum_k w_k A_k,   w = softmax_k(y(X * norm(up(A_k))))

    Example: ``CAMExplainer(model, "layer4", "scorecam", batch_size=64)(images)["scorecam"]``

    Args:
        model: the network; run in eval mode under ``torch.no_grad()``, its modes restored afterwards.
        images: (B, C_in, *S_in) inputs the activations were computed from.
        layer: the target layer (unused: the masks are built from ``activations``; kept for the common signature).
        activations: (B, K, *S) the layer's outputs on ``images``.
        target: ``target(outputs, sample_ids) -> (N,)`` score of each row for its original sample.
        batch_size: masked copies per forward pass (default 32); memory grows with ``batch_size x C_in x S_in``.
        layout: unused (the masks are built from ``activations``); kept for the common signature.

    Returns:
        (B, 1, *S) raw map sum_k w_k A_k, before ReLU.
    """
    _check_inputs(images, activations, batch_size)
    num_samples, num_channels = activations.shape[:2]
    activations = activations.detach()
    mode = "bilinear" if images.ndim == 4 else "trilinear"
    scores = torch.empty(num_samples * num_channels, device=activations.device, dtype=activations.dtype)
    with preserved_model_state(model), torch.no_grad():
        for flat, sample_ids, channel_ids in _pair_chunks(num_samples, num_channels, batch_size, images.device):
            saliency = activations[sample_ids, channel_ids][:, None]
            saliency = F.interpolate(saliency, size=images.shape[2:], mode=mode, align_corners=True)
            low = saliency.flatten(1).amin(dim=1).reshape(-1, *([1] * (saliency.ndim - 1)))
            high = saliency.flatten(1).amax(dim=1).reshape(low.shape)
            saliency = (saliency - low) / (high - low + 1e-8)
            masked_images = images[sample_ids] * saliency.to(images.dtype)
            scores[flat] = target(model(masked_images), sample_ids).to(scores.dtype)
    weights = torch.softmax(scores.reshape(num_samples, num_channels), dim=1)
    return weighted_channel_sum(weights, activations)


class _OutputOverride:
    """Forward hook making ``layer`` return ``self.output`` (set before each forward pass) instead of its own output."""

    def __init__(self, layer: nn.Module) -> None:
        self.output: torch.Tensor | None = None
        self.calls = 0
        self._handle = layer.register_forward_hook(self._replace)

    def _replace(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.output is None or not isinstance(output, torch.Tensor) or output.shape != self.output.shape:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(
                f"the target layer returned {shape} in the ablation forward pass, expected a tensor "
                f"{tuple(self.output.shape) if self.output is not None else '(B, K, *spatial)'}; choose a layer that "
                "runs once per forward pass and returns the (B, K, *spatial) activations."
            )
        return self.output.to(output.dtype)

    def __enter__(self) -> _OutputOverride:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._handle.remove()


@register_method("ablationcam", MethodFamily.PERTURBATION, needs_gradients=False)
def ablationcam(
    model: nn.Module,
    images: torch.Tensor,
    layer: nn.Module,
    activations: torch.Tensor,
    target: Target,
    batch_size: int = 32,
    layout: FeatureLayout | None = None,
) -> torch.Tensor:
    """Ablation-CAM (Desai and Ramaswamy 2020) in 2D and 3D: w_k = (y - y_k) / y, y_k the score with channel k zeroed.

    The layer's output is replaced (by a forward hook, removed on exit) by the recorded activations with one channel set
    to zero, as in the paper. pytorch-grad-cam's ``AblationCAM`` zeroes too when the layer's smallest activation is 0
    (e.g. after a ReLU), so both agree there; for signed activations it writes a very negative value instead (and
    a different one per copy of a batch), which this function does not imitate.

    L = sum_k w_k A_k,   w_k = (y - y_k) / y

    Example: ``CAMExplainer(model, "layer4", "ablationcam")(images)["ablationcam"]``

    Args:
        model: the network; run in eval mode under ``torch.no_grad()``, its modes and hooks restored afterwards.
        images: (B, C_in, *S_in) inputs the activations were computed from (layers before ``layer`` and skip
            connections around it still see them).
        layer: the target layer, whose output is replaced.
        activations: (B, K, *S) the layer's outputs on ``images``.
        target: ``target(outputs, sample_ids) -> (N,)`` score of each row for its original sample.
        batch_size: ablated copies per forward pass (default 32).
        layout: how the layer's output holds ``activations`` (None: channel first, as they are); the ablated features
            are put back into that layout, e.g. into a transformer's patch tokens with its class token unchanged.

    Returns:
        (B, 1, *S) raw map sum_k w_k A_k, before ReLU. A sample whose score y is 0 gets w_k = y - y_k (its map is only
        defined up to that positive scale after normalisation).
    """
    _check_inputs(images, activations, batch_size)
    num_samples, num_channels = activations.shape[:2]
    activations = activations.detach()
    ablated_scores = torch.empty(num_samples * num_channels, device=activations.device, dtype=activations.dtype)
    with preserved_model_state(model), torch.no_grad():
        scores = target(model(images)).to(activations.dtype)
        with _OutputOverride(layer) as override:
            for flat, sample_ids, channel_ids in _pair_chunks(num_samples, num_channels, batch_size, images.device):
                ablated = activations[sample_ids].clone()
                ablated[torch.arange(len(flat), device=ablated.device), channel_ids] = 0
                override.output = ablated if layout is None else layout.to_output(ablated, sample_ids)
                ablated_scores[flat] = target(model(images[sample_ids]), sample_ids).to(ablated_scores.dtype)
                if override.calls == 0:
                    raise ValueError(
                        "the target layer did not run in the model's forward pass, so it cannot be ablated; choose a "
                        "layer that forward() calls."
                    )
    drops = scores[:, None] - ablated_scores.reshape(num_samples, num_channels)
    # The slope (y - y_k) / y is undefined for y == 0; the normalised map only needs the drops' relative sizes then.
    denominator = torch.where(scores != 0, scores, torch.ones_like(scores))
    return weighted_channel_sum(drops / denominator[:, None], activations)


# name -> function of every method above (the registry's view of this module)
PERTURBATION_METHODS: dict[str, Callable[..., torch.Tensor]] = {
    name: get_method(name).function for name in method_names(MethodFamily.PERTURBATION)
}
