"""Choose the layer to explain when none is given: one forward pass records every layer's output shape, then a rule
per kind of network names the layer.

The rules, tried in this order on a 2D or 3D image batch (B, C, *spatial):

- **Transformer classifiers** (output (B, num_classes), some layer outputs tokens (B, N, K)): the first
  ``LayerNorm`` of the last transformer block (the blocks are the children of the last ``nn.Sequential`` or
  ``nn.ModuleList`` whose children all output tokens and hold a ``LayerNorm``). The class token only gathers the
  patch tokens in the last block's attention, so the maps come from that block's input (torchvision ViT-B/16:
  ``encoder.layers.encoder_layer_11.ln_1``).
- **Classifiers** (output (B, num_classes)): the last layer with spatial extent before global pooling, i.e. the last
  layer to fire whose output is channel-first (B, C, *spatial) with more than one spatial element, that holds a
  convolution and whose output is not a pooling layer's (ResNet: ``layer4``, DenseNet: ``features``, VGG16:
  ``features.28``, the last convolution, not ``features`` whose output is the last max-pool's at half the grid).
- **Segmenters** (output (B, C_out, *spatial) on the input's grid): the last decoder stage before the output head,
  i.e. among the layers that hold a convolution and output channel-first maps with other than C_out channels, not
  a skip connection's concatenation (an output whose first or last channels are the layer's input), the last to fire
  at the finest grid any of them reaches (MONAI UNet: ``model.1.submodule``, SegResNet: ``up_layers.<last>``,
  SwinUNETR: ``decoder1``, UNETR: ``decoder2``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from monai_xai.utils import preserved_model_state

__all__ = ["LayerChoice", "choose_target_layer"]

_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_CONTAINERS = (nn.Sequential, nn.ModuleList)


@dataclass(frozen=True)
class LayerChoice:
    """The layer :func:`choose_target_layer` chose.

    Attributes:
        name: its dotted name in ``network.named_modules()``, e.g. ``"layer4"``.
        reason: which rule chose it and why, in words (for the log).
    """

    name: str
    reason: str


@dataclass(frozen=True)
class _Firing:
    """One layer's call in the recorded forward pass: its output shape and what the rules need to know of it."""

    name: str
    shape: tuple[int, ...]
    pooled: bool  # the output is a pooling layer's output
    concatenation: bool  # the output is the layer's input with more channels concatenated


def _is_concatenation(inputs: tuple, output: torch.Tensor) -> bool:
    """Whether ``output`` (B, C, *spatial) starts or ends with the layer's first input (a skip connection's cat)."""
    first = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
    if first is None or first.ndim != output.ndim or first.shape[2:] != output.shape[2:]:
        return False
    channels = first.shape[1]
    if output.shape[1] <= channels:
        return False
    return torch.equal(output[:, :channels], first) or torch.equal(output[:, -channels:], first)


def _record_forward(network: nn.Module, inputs: torch.Tensor) -> tuple[list[_Firing], torch.Tensor]:
    """Run ``network`` once on ``inputs`` (eval mode, no gradients) and record each named layer's tensor outputs in
    firing order (a parent after its children); returns the firings and the network's output."""
    firings: list[_Firing] = []
    pooled_outputs: list[torch.Tensor] = []  # kept alive so that `is` compares live tensors

    def hook(name: str, module: nn.Module, args: tuple, output: object) -> None:
        if not isinstance(output, torch.Tensor):
            return
        is_pool = "Pool" in type(module).__name__
        if is_pool:
            pooled_outputs.append(output)
        pooled = is_pool or any(output is tensor for tensor in pooled_outputs)
        concatenation = output.ndim >= 3 and _is_concatenation(args, output)
        firings.append(_Firing(name, tuple(output.shape), pooled, concatenation))

    handles = [
        module.register_forward_hook(lambda module, args, output, name=name: hook(name, module, args, output))
        for name, module in network.named_modules()
        if name
    ]
    try:
        with preserved_model_state(network), torch.no_grad():
            output = network(inputs)
    finally:
        for handle in handles:
            handle.remove()
    if not isinstance(output, torch.Tensor):
        raise ValueError(
            f"choosing a layer needs a network that returns one tensor, got {type(output).__name__}; "
            "set xai_target_layer to the layer to explain (a name from network.named_modules())."
        )
    return firings, output


def _holds_convolution(module: nn.Module) -> bool:
    return any(isinstance(child, _CONVOLUTIONS) for child in module.modules())


def _last_firings(firings: list[_Firing]) -> dict[str, _Firing]:
    """Each layer's last call, in the order of those calls (a layer called twice counts where it last fired)."""
    last: dict[str, _Firing] = {}
    for firing in firings:
        last.pop(firing.name, None)
        last[firing.name] = firing
    return last


def _transformer_layer(network: nn.Module, last: dict[str, _Firing]) -> str | None:
    """The first LayerNorm of the last transformer block, or None when no container holds token-output blocks."""
    modules = dict(network.named_modules())
    blocks: list[tuple[str, nn.Module]] = []
    for name, module in modules.items():
        if not name or not isinstance(module, _CONTAINERS) or not len(module):
            continue
        children = [(f"{name}.{child}", block) for child, block in module.named_children()]
        if all(
            child in last
            and len(last[child].shape) == 3
            and any(isinstance(part, nn.LayerNorm) for part in block.modules())
            for child, block in children
        ):
            blocks = children
    if not blocks:
        return None
    block_name, block = blocks[-1]
    norm = next(name for name, part in block.named_modules() if isinstance(part, nn.LayerNorm))
    return f"{block_name}.{norm}" if norm else block_name


def choose_target_layer(network: nn.Module, inputs: torch.Tensor) -> LayerChoice:
    """Choose the layer to explain in ``network`` from one forward pass of ``inputs`` (see the module docstring for
    the rules).

    Args:
        network: the network to explain; its train/eval modes and ``requires_grad`` flags are restored afterwards.
        inputs: (B, C, H, W) or (B, C, D, H, W) batch the network takes (one case is enough; for a sliding window,
            one ROI-sized crop).

    Returns:
        the chosen layer's name and the reason.

    Raises:
        ValueError: when no rule applies (e.g. a network on flat inputs); it names the network's last leaf layers
            and says to set ``xai_target_layer``.
    """
    firings, output = _record_forward(network, inputs)
    last = _last_firings(firings)
    modules = dict(network.named_modules())
    batch = inputs.shape[0]
    image = inputs.ndim in (4, 5)

    def maps(firing: _Firing) -> bool:
        """Channel-first (B, C, *spatial) output of a layer holding a convolution, not a pooling layer's output."""
        shape = firing.shape
        return (
            len(shape) == inputs.ndim
            and shape[0] == batch
            and math.prod(shape[2:]) > 1
            and not firing.pooled
            and _holds_convolution(modules[firing.name])
        )

    if image and output.ndim == 2:
        if any(len(firing.shape) == 3 and firing.shape[0] == batch for firing in last.values()):
            layer = _transformer_layer(network, last)
            if layer is not None:
                return LayerChoice(
                    layer,
                    "transformer classifier: the first LayerNorm of the last block; the class token gathers the patch "
                    "tokens only in that block's attention, so the maps come from its input",
                )
        spatial = [firing.name for firing in last.values() if maps(firing)]
        if spatial:
            return LayerChoice(spatial[-1], "classifier: the last layer with spatial extent before global pooling")
    if image and output.ndim == inputs.ndim and output.shape[2:] == inputs.shape[2:]:
        out_channels = output.shape[1]
        decoder = [
            firing
            for firing in last.values()
            if maps(firing) and firing.shape[1] != out_channels and not firing.concatenation
        ]
        if decoder:
            finest = max(math.prod(firing.shape[2:]) for firing in decoder)
            layer = [firing.name for firing in decoder if math.prod(firing.shape[2:]) == finest][-1]
            return LayerChoice(layer, "segmenter: the last decoder stage before the output head, at its finest grid")
    leaves = [name for name, module in network.named_modules() if name and not list(module.children())][-5:]
    raise ValueError(
        f"no layer to explain could be chosen for {type(network).__name__} on inputs of shape {tuple(inputs.shape)} "
        f"(output {tuple(output.shape)}): the rules cover 2D/3D image classifiers, transformers and segmenters; "
        f"set xai_target_layer, e.g. --xai_target_layer <name> (the last leaf layers "
        f"of this network are {leaves})."
    )
