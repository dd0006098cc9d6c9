"""The modes a network is explained in (:class:`~monai_xai.enums.ModelMode`): the mode its own inference uses.

Every pass of an explanation runs inside ``preserved_model_state``, which puts the network in eval mode and restores
it afterwards. Some networks are not meant to run in plain eval mode: HD-BET keeps its InstanceNorm layers in train
mode at inference (their running statistics were never trained; in eval mode its brain probability on a real scan
goes from 0.45 to 0.99). :func:`pinned_modes` keeps such layers in train mode for the duration of an explanation,
also through the nested ``eval()`` calls of the explanation's own passes (perturbation methods, layer choice), and
restores their running statistics, which a forward pass in train mode updates.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from monai_xai.enums import ModelMode, as_choice

__all__ = ["NORM_LAYERS", "norm_layers", "resolve_model_mode", "pinned_modes"]

logger = logging.getLogger(__name__)

# the layers whose output depends on their mode through their statistics (GroupNorm and LayerNorm have no mode)
NORM_LAYERS = (_BatchNorm, _InstanceNorm)


def norm_layers(network: nn.Module) -> list[nn.Module]:
    """The normalisation layers of ``network`` whose mode changes their output (BatchNorm, InstanceNorm)."""
    return [module for module in network.modules() if isinstance(module, NORM_LAYERS)]


def resolve_model_mode(network: nn.Module, mode: ModelMode | str) -> tuple[ModelMode, str]:
    """The concrete mode of ``mode`` for ``network`` as it is now, and why, in words.

    ``AUTO`` keeps the modes (``AS_GIVEN``) of a network whose top module is in eval mode while some normalisation
    layers are in train mode: its own code chose them for inference (HD-BET's ``SetNetworkToVal``). Any other network
    is explained in ``EVAL`` mode; a network handed over in train mode is switched with a reason that says so.

    Raises:
        ValueError: an unknown mode.
    """
    mode = as_choice(ModelMode, mode, "model_mode (xai_model_mode)")
    if mode != ModelMode.AUTO:
        return mode, f"xai_model_mode {mode.value!r} as requested"
    training_norms = [module for module in norm_layers(network) if module.training]
    if not network.training and training_norms:
        return ModelMode.AS_GIVEN, (
            f"the network is in eval mode but keeps {len(training_norms)} normalisation layer(s) in train mode, as its "
            "own inference sets them: explaining it in these modes (xai_model_mode 'as_given'; 'eval' overrides)"
        )
    if network.training:
        return ModelMode.EVAL, (
            "the network was handed over in train mode: explaining it in eval mode (running statistics, no dropout); "
            "set xai_model_mode 'norm_train' or 'as_given' if its own inference runs otherwise"
        )
    return ModelMode.EVAL, "the network is in eval mode"


def _kept_training(module: nn.Module) -> nn.Module:
    """``module.train`` that keeps the module in train mode whatever it is asked (its children follow the request)."""

    def train(mode: bool = True) -> nn.Module:
        for child in module.children():
            child.train(mode)
        module.training = True
        return module

    return train


@contextmanager
def pinned_modes(network: nn.Module, mode: ModelMode | str) -> Iterator[nn.Module]:
    """Explain ``network`` in ``mode`` (resolved by :func:`resolve_model_mode`) inside the block.

    The modules that the mode keeps in train mode (the normalisation layers for ``NORM_TRAIN``, every module in train
    mode for ``AS_GIVEN``) stay in train mode through any ``eval()`` call inside the block; the other modules follow
    those calls (``preserved_model_state`` puts them in eval mode). On exit every module's mode, its ``train`` method
    and the buffers of the pinned modules (running statistics, which a forward pass in train mode updates) are
    restored, also when the block raises. ``EVAL`` pins nothing.

    Args:
        network: the network to explain.
        mode: a :class:`~monai_xai.enums.ModelMode` (``AUTO`` is resolved on the network as it is now).
    """
    resolved, _ = resolve_model_mode(network, mode)
    if resolved == ModelMode.NORM_TRAIN:
        pinned = norm_layers(network)
    elif resolved == ModelMode.AS_GIVEN:
        pinned = [module for module in network.modules() if module.training]
    else:
        pinned = []
    flags = [(module, module.training) for module in network.modules()]
    buffers = [(buffer, buffer.detach().clone()) for module in pinned for buffer in module.buffers(recurse=False)]
    with ExitStack() as restore:
        for module in pinned:
            own_train = module.__dict__.get("train")
            module.train = _kept_training(module)
            restore.callback(_restore_train, module, own_train)
        restore.callback(_restore_flags, flags)
        restore.callback(_restore_buffers, buffers)
        for module in pinned:
            module.training = True
        yield network


def _restore_train(module: nn.Module, own_train: object) -> None:
    if own_train is None:
        del module.train
    else:
        module.train = own_train


def _restore_flags(flags: list[tuple[nn.Module, bool]]) -> None:
    for module, training in flags:
        module.training = training


def _restore_buffers(buffers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    with torch.no_grad():
        for buffer, saved in buffers:
            buffer.copy_(saved)
