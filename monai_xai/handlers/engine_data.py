"""Read per-case values out of an ignite engine's state, whether MONAI decollated the batch or not."""

from __future__ import annotations

from typing import Any

import torch
from monai.data import MetaTensor, decollate_batch

from monai_xai.enums import XAIKeys
from monai_xai.metrics.catalogue import MetricKey

__all__ = ["engine_cases", "stack_values", "case_value", "output_value", "metric_keys", "register_metric_key"]


def engine_cases(data: Any) -> list[dict]:
    """``engine.state.output`` / ``engine.state.batch`` as a list of per-case dicts.

    MONAI workflows decollate both into lists of dicts by default (``decollate=True``); a collated dict of
    batch-first tensors is split here so callers see one shape of data either way.
    """
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        # an iteration that skipped its batch (no readable case) leaves an empty dict: no cases
        return decollate_batch(data, detach=True) if data else []
    raise TypeError(f"expected the engine's output/batch to be a list of dicts or a dict, got {type(data).__name__}.")


def case_value(engine: Any, index: int, key: str) -> Any:
    """Value of ``key`` for case ``index`` of the current iteration: from the output first, then from the batch."""
    for source in (engine.state.output, engine.state.batch):
        cases = engine_cases(source)
        if index < len(cases) and key in cases[index]:
            return cases[index][key]
    output_keys = sorted(str(k) for k in engine_cases(engine.state.output)[index])
    raise KeyError(
        f"{key!r} is neither in the engine output (keys: {output_keys}) nor in the batch; check the key name, and "
        "that an XAIInferer is the evaluator's inferer and is attached (listed in its handlers)."
    )


def _stack(values: list[Any]) -> torch.Tensor:
    return torch.stack([torch.as_tensor(v.as_tensor() if isinstance(v, MetaTensor) else v) for v in values])


def stack_values(engine: Any, key: str) -> torch.Tensor:
    """The current iteration's values of ``key`` stacked batch-first, on their own device (meta dropped)."""
    cases = engine_cases(engine.state.output)
    return _stack([case_value(engine, index, key) for index in range(len(cases))])


def output_value(engine: Any, key: str) -> torch.Tensor | None:
    """The current iteration's engine-output values of ``key`` stacked batch-first, or None when the output has no
    such key (e.g. ``"xai_pixel_set"`` for a classifier)."""
    cases = engine_cases(engine.state.output)
    if not all(key in case for case in cases):
        return None
    return _stack([case[key] for case in cases])


def register_metric_key(engine: Any, key: MetricKey) -> None:
    """Record in ``engine.state.xai_metric_keys`` which metric and method the engine metric ``key.name`` holds."""
    keys = getattr(engine.state, XAIKeys.METRIC_KEYS, None)
    if keys is None:
        keys = {}
        setattr(engine.state, XAIKeys.METRIC_KEYS, keys)
    keys[key.name] = key


def metric_keys(engine: Any) -> dict[str, MetricKey]:
    """``{engine metric name: MetricKey}`` of every per-method metric registered on ``engine`` (empty if none)."""
    return dict(getattr(engine.state, XAIKeys.METRIC_KEYS, None) or {})
