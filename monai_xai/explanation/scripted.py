"""TorchScript networks (a bundle's ``models/model.ts``): what can be explained when the layers take no hooks.

A CAM weights a layer's activations by their gradients, recorded by forward hooks on that layer. TorchScript modules
do not run Python hooks: ``torch.jit.trace`` modules accept ``register_forward_hook`` but never call it (the traced
graph inlines every submodule), and ``torch.jit.script`` modules refuse it (older torch) or never call it either. So
a TorchScript network gets no CAM; it is explained with the input attributions (:mod:`monai_xai.cams.attributions`,
family ``ATTRIBUTION``), which need no layer and nothing but autograd (or forward passes) through the network: by
default Saliency and InputXGradient, the cheapest (one forward and one backward pass each), reduced to [0, 1] maps
like every attribution.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from monai_xai.cams.registry import get_method

__all__ = ["INPUT_GRADIENT_METHODS", "is_scripted", "layer_free_methods", "methods_for"]

logger = logging.getLogger(__name__)

# the input attributions a TorchScript network is explained with when only CAMs were requested
INPUT_GRADIENT_METHODS = ("saliency", "input_x_gradient")


def is_scripted(network: nn.Module) -> bool:
    """Whether ``network`` is a TorchScript module (scripted or traced), whose layers run no Python hooks."""
    return isinstance(network, torch.jit.ScriptModule)


def layer_free_methods(methods: Sequence[str], fallback: bool = False) -> tuple[str, ...]:
    """The methods of ``methods`` that need no layer hooks (the input attributions), in their order; with
    ``fallback``, :data:`INPUT_GRADIENT_METHODS` when there is none."""
    free = tuple(name for name in methods if not get_method(name).needs_layer)
    return INPUT_GRADIENT_METHODS if fallback and not free else free


def methods_for(network: nn.Module, methods: Sequence[str]) -> tuple[str, ...]:
    """The methods ``network`` can be explained with: ``methods`` as given, or for a TorchScript network whose
    requested methods include CAMs (which need layer hooks), the requested input attributions, or Saliency and
    InputXGradient when none was requested, with a warning that says why.

    Args:
        network: the network to explain.
        methods: the requested method names.
    """
    methods = tuple(methods)
    explainable = layer_free_methods(methods, fallback=True)
    if not is_scripted(network) or explainable == methods:
        return methods
    logger.warning(
        "xai: the network is a TorchScript module (%s), whose layers run no forward hooks, so CAMs (%s) cannot be "
        "computed on it; explaining it with input attributions instead: %s. For CAMs, explain the bundle's "
        "models/model.pt with its network_def.",
        type(network).__name__,
        ", ".join(name for name in methods if get_method(name).needs_layer),
        ", ".join(explainable),
    )
    return explainable
