"""TorchScript networks (a bundle's ``models/model.ts``): what can be explained when the layers take no hooks.

A CAM weights a layer's activations by their gradients, recorded by forward hooks on that layer. TorchScript modules
do not run Python hooks: ``torch.jit.script`` modules refuse ``register_forward_hook`` and ``torch.jit.trace``
modules accept it but never call it (the traced graph inlines every submodule; both checked with torch 2.15). So a
TorchScript network gets no CAM; it is explained with the input-gradient family instead, which needs nothing but
autograd through the network: Saliency (the largest absolute gradient of the score over the input channels) and
InputXGradient (the absolute channel sum of input x gradient), each normalised to [0, 1] like a CAM.

STOPGAP until the attribution methods of issue #32 land (``monai_xai.cams.attributions``, which registers
``"saliency"`` and ``"input_x_gradient"`` as layer-free methods): until then the two names are registered here, as
gradient-family methods explained at an identity layer put in front of the network (:class:`InputLayer`). Once #32's
methods are registered first, this module registers nothing and the step explains theirs; delete the stopgap then.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from monai_xai.cams.registry import get_method, method_names, register_method
from monai_xai.enums import MethodFamily

__all__ = ["INPUT_GRADIENT_METHODS", "INPUT_LAYER", "InputLayer", "is_scripted", "methods_for", "at_input_layer"]

logger = logging.getLogger(__name__)

# the input-gradient family a TorchScript network is explained with
INPUT_GRADIENT_METHODS = ("saliency", "input_x_gradient")
# the layer name of the network's input in an InputLayer
INPUT_LAYER = "input"


def is_scripted(network: nn.Module) -> bool:
    """Whether ``network`` is a TorchScript module (scripted or traced), whose layers run no Python hooks."""
    return isinstance(network, torch.jit.ScriptModule)


def methods_for(network: nn.Module, methods: Sequence[str]) -> tuple[str, ...]:
    """The methods ``network`` can be explained with: ``methods`` as given, or for a TorchScript network whose
    requested methods need layer hooks, the input-gradient family, with a warning that says why.

    Args:
        network: the network to explain.
        methods: the requested method names.
    """
    methods = tuple(methods)
    if not is_scripted(network) or set(methods) <= set(INPUT_GRADIENT_METHODS):
        return methods
    logger.warning(
        "xai: the network is a TorchScript module (%s), whose layers run no forward hooks, so CAMs (%s) cannot be "
        "computed on it; explaining it with the input-gradient family instead: %s. For CAMs, explain the bundle's "
        "models/model.pt with its network_def.",
        type(network).__name__,
        ", ".join(methods),
        ", ".join(INPUT_GRADIENT_METHODS),
    )
    return INPUT_GRADIENT_METHODS


class InputLayer(nn.Module):
    """``network`` with an identity layer named ``"input"`` in front, whose output is the network's input: the
    layer at which the stopgap input-gradient methods read the input and its gradient (only that layer is hooked, so
    a TorchScript network is never asked to take a hook).

    Args:
        network: any network, TorchScript included.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.input = nn.Identity()
        self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(self.input(images))


def at_input_layer(methods: Sequence[str]) -> bool:
    """Whether ``methods`` are explained at :class:`InputLayer`'s ``"input"`` (the stopgap's registered methods)."""
    return all(
        name in INPUT_GRADIENT_METHODS and get_method(name).function in _STOPGAP.values() for name in methods
    )


def _saliency(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Saliency (Simonyan et al. 2014) at the input layer: max_c |dy/dx_c|, (B, 1, *S)."""
    return grads.abs().amax(dim=1, keepdim=True)


def _input_x_gradient(activations: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """InputXGradient (Shrikumar et al. 2016) at the input layer: |sum_c x_c dy/dx_c|, (B, 1, *S)."""
    return (activations * grads).sum(dim=1, keepdim=True).abs()


_STOPGAP = {"saliency": _saliency, "input_x_gradient": _input_x_gradient}
for _name, _function in _STOPGAP.items():
    if _name not in method_names():  # #32's attribution methods, when registered first, are used instead
        register_method(_name, MethodFamily.GRADIENT)(_function)
