"""Find the layers to explain in a network: by dotted name (as in ``model.named_modules()``) or by module object,
and, when methods are explained at different layers, which methods share a layer."""

from __future__ import annotations

import difflib
from collections.abc import Hashable, Mapping, Sequence

from torch import nn

__all__ = ["LayerSpec", "resolve_layers", "group_methods_by_layer"]

# the layer(s) of one explanation: a dotted name, an int (the name of an nn.Sequential child), a module, or a list
LayerSpec = str | int | nn.Module | Sequence[str | int | nn.Module]


def resolve_layers(
    model: nn.Module, target_layers: str | int | nn.Module | Sequence[str | int | nn.Module]
) -> list[tuple[str, nn.Module]]:
    """Turn layer names and/or modules into ``(dotted name, module)`` pairs of ``model``.

    Args:
        model: the network to explain.
        target_layers: a dotted name such as ``"layer4"``, ``"features.denseblock4"`` or ``"model.1.submodule"``
            (the names printed by ``model.named_modules()``), a submodule of ``model``, or a non-empty list of either.
            An int stands for its name: ``0`` is the layer ``"0"`` of an ``nn.Sequential`` (command-line parsers
            such as fire read ``--target_layer 0`` as an int).

    Returns:
        one ``(name, module)`` pair per requested layer, in the order given.

    Raises:
        ValueError: a name that is not a layer of ``model`` (the message lists close matches), a module that is not part
            of ``model``, or an empty list.
        TypeError: an entry that is neither a string, an int nor an ``nn.Module``.
    """
    if target_layers is None:
        raise ValueError("target_layers is None; name the layer(s) to explain, e.g. target_layers='layer4'.")
    requested = [target_layers] if isinstance(target_layers, str | int | nn.Module) else list(target_layers)
    if not requested:
        raise ValueError("target_layers is empty; give at least one layer name (e.g. 'layer4') or module.")
    modules_by_name = dict(model.named_modules())
    names_by_module = {id(module): name for name, module in modules_by_name.items()}
    resolved = []
    for layer in requested:
        if isinstance(layer, int) and not isinstance(layer, bool):
            layer = str(layer)
        if isinstance(layer, str):
            if layer not in modules_by_name:
                close = difflib.get_close_matches(layer, [name for name in modules_by_name if name], n=5, cutoff=0.4)
                hint = f"close matches: {close}" if close else "no close match"
                raise ValueError(
                    f"{type(model).__name__} has no layer named {layer!r} ({hint}); "
                    "use a dotted name from model.named_modules(), e.g. print([n for n, _ in model.named_modules()])."
                )
            resolved.append((layer, modules_by_name[layer]))
        elif isinstance(layer, nn.Module):
            if id(layer) not in names_by_module:
                raise ValueError(
                    f"the {type(layer).__name__} passed in target_layers is not a submodule of {type(model).__name__}; "
                    "pass a module taken from the model itself (e.g. model.layer4) or its dotted name."
                )
            resolved.append((names_by_module[id(layer)], layer))
        else:
            raise TypeError(
                f"target_layers entries must be layer names (str) or nn.Module objects, got {type(layer).__name__} "
                f"{layer!r}; on the command line quote a dotted name that looks like a number, e.g. "
                "--target_layer '\"1.10\"'."
            )
    return resolved


def _layer_key(layers: LayerSpec) -> Hashable:
    if isinstance(layers, str | int | nn.Module):
        return str(layers) if isinstance(layers, int) else layers
    return tuple(str(layer) if isinstance(layer, int) else layer for layer in layers)


def group_methods_by_layer(
    target_layers: LayerSpec | Mapping[str, LayerSpec], methods: Sequence[str]
) -> list[tuple[LayerSpec, tuple[str, ...]]]:
    """Which methods are explained at which layer(s), so that methods sharing a layer can share a pass.

    Channel-averaging CAMs (GradCAM, GradCAM++, XGradCAM) and element-wise ones (HiResCAM, LayerCAM, ...) can need
    different layers of one network (see the segmentation bundle's README); a mapping gives each method its own.

    Args:
        target_layers: the layer(s) of every method (see :func:`resolve_layers`), or a mapping
            ``{method: layer(s)}`` with an entry for each of ``methods`` and no other.
        methods: the method names, in order.

    Returns:
        ``[(layer(s), methods explained there), ...]``, in the order the layers are first needed; the methods keep
        their order.

    Raises:
        ValueError: a mapping that misses a method or names one that is not in ``methods``.
    """
    if not isinstance(target_layers, Mapping):
        return [(target_layers, tuple(methods))]
    missing = [method for method in methods if method not in target_layers]
    unknown = [method for method in target_layers if method not in methods]
    if missing or unknown:
        example = {method: target_layers.get(method, "<layer>") for method in methods}
        raise ValueError(
            f"a per-method target layer mapping needs exactly one entry per method: missing {missing}, not among the "
            f"methods {unknown}; e.g. {example}."
        )
    groups: dict[Hashable, tuple[LayerSpec, list[str]]] = {}
    for method in methods:
        layers = target_layers[method]
        groups.setdefault(_layer_key(layers), (layers, []))[1].append(method)
    return [(layers, tuple(grouped)) for layers, grouped in groups.values()]
