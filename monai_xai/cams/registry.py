"""The CAM method registry: one record per method, registered once where its formula is written.

A method is a function plus a :class:`CAMMethod` record saying which family it belongs to (which decides how
:class:`~monai_xai.cams.CAMExplainer` calls it) and what it needs. Adding a method is one function with the
:func:`register_method` decorator; see ``docs/architecture.md``. pytorch-grad-cam's classes are reachable by name as
``"grad-cam:<Class>"`` without being registered one by one.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from monai_xai.cams.adapter import ADAPTER_PREFIX, grad_cam_class, grad_cam_method
from monai_xai.enums import MethodFamily

__all__ = ["CAMMethod", "register_method", "get_method", "get_methods", "method_names"]


@dataclass(frozen=True)
class CAMMethod:
    """What the engine needs to know about one CAM method.

    Attributes:
        name: the name given in ``methods=`` (lower case, e.g. ``"gradcam"``).
        family: how the map is computed, which decides the function's signature:

            - ``GRADIENT``: ``function(activations (B, K, *S), grads (B, K, *S) or None) -> (B, 1, *S)`` raw map;
            - ``PERTURBATION``: ``function(model, images, layer, activations, target, batch_size, layout)
              -> (B, 1, *S)`` raw map (``layout``: how the layer's output holds the activations);
            - ``GRAD_CAM``: ``function(model, images, layers, target, reshape) -> (B, 1, *spatial)`` finished map
              (``reshape``: pytorch-grad-cam's ``reshape_transform``);
            - ``ATTRIBUTION``: ``function(score, images, context) -> (B, C, *spatial)`` signed attribution of the
              input, no layer (:mod:`monai_xai.cams.attributions`).
        function: the function computing the map.
        needs_gradients: whether the method reads the gradients of the shared backward pass (gradient family; the
            pass is skipped when no requested method needs it).
        supports_raw: whether the method has a raw (pre-ReLU, feature-resolution) map; methods without one return
            maps already normalised at input resolution.
    """

    name: str
    family: MethodFamily
    function: Callable
    needs_gradients: bool = True
    supports_raw: bool = True

    @property
    def needs_layer(self) -> bool:
        """Whether the method weights a target layer's activations (every family but input attributions)."""
        return self.family != MethodFamily.ATTRIBUTION


_REGISTRY: dict[str, CAMMethod] = {}


def register_method(name: str, family: MethodFamily, needs_gradients: bool = True) -> Callable[[Callable], Callable]:
    """Decorator registering a method function under ``name``; the function is returned unchanged.

    Example::

        @register_method("gradcam", MethodFamily.GRADIENT)
        def gradcam(activations, grads): ...

    Raises:
        ValueError: a name registered twice, or one that is not lower case.
    """

    def register(function: Callable) -> Callable:
        if name in _REGISTRY or name != name.lower() or name.startswith(ADAPTER_PREFIX):
            raise ValueError(f"cannot register CAM method {name!r}: names are unique, lower case, without a prefix.")
        _REGISTRY[name] = CAMMethod(name, MethodFamily(family), function, needs_gradients)
        return function

    return register


def method_names(family: MethodFamily | str | None = None) -> list[str]:
    """Registered method names, optionally of one family: family by family in :class:`MethodFamily` order (gradient
    CAMs first, input attributions last), each in registration order."""
    order = list(MethodFamily)
    methods = sorted(_REGISTRY.values(), key=lambda method: order.index(method.family))
    return [method.name for method in methods if family is None or method.family == family]


def get_methods(methods: str | Sequence[str] | None) -> tuple[CAMMethod, ...]:
    """The records of one method name or several, in order.

    Raises:
        ValueError: no method, or an unknown name (see :func:`get_method`).
    """
    names = (methods,) if isinstance(methods, str) else tuple(methods or ())
    if not names:
        raise ValueError(f"methods is empty or None; choose at least one of {method_names()}.")
    return tuple(get_method(name) for name in names)


def get_method(name: str) -> CAMMethod:
    """The record of a registered method, or of the pytorch-grad-cam class ``"grad-cam:<Class>"``.

    Raises:
        TypeError: a name that is not a string.
        ValueError: an unknown name; the message lists close matches and the available methods.
    """
    if not isinstance(name, str):
        raise TypeError(f"method names must be strings, got {type(name).__name__}.")
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith(ADAPTER_PREFIX):
        grad_cam_class(name)  # an unknown class fails here, with the available ones listed
        return CAMMethod(
            name, MethodFamily.GRAD_CAM, partial(grad_cam_method, name), needs_gradients=False, supports_raw=False
        )
    close = difflib.get_close_matches(name.lower(), method_names(), n=3, cutoff=0.5)
    raise ValueError(
        f"unknown CAM method {name!r}{f' (did you mean {close}?)' if close else ''}; available: {method_names()}, "
        f"or any pytorch-grad-cam class as '{ADAPTER_PREFIX}<ClassName>' (e.g. '{ADAPTER_PREFIX}FinerCAM')."
    )
