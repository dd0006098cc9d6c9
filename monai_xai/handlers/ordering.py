"""Handlers that must run after every other handler of an event: attached when the engine starts.

A bundle config attaches its handlers in the order the overlays and the bundle's own ``configs/explain.json`` list
them, so a bundle's own metric handler (e.g. the gaze bundle's ``GazeAgreementHandler``) comes after the overlays'
MLflow handler and ``MetricsSaver``, which would then read ``engine.state.metrics`` before it is filled. Ignite runs an
event's handlers in the order they were added; a handler added when the engine fires ``STARTED`` comes after every
handler added while the workflow was built.
"""

from __future__ import annotations

from typing import Any

from ignite.engine import Events

__all__ = ["AttachedLast"]


class AttachedLast:
    """Attach ``handler`` when the engine starts (once), after every handler attached before the run, so that its
    ``EPOCH_COMPLETED`` and ``COMPLETED`` callbacks see what those handlers put into ``engine.state``.

    Args:
        handler: any handler with ``attach(engine)`` whose own events come after ``STARTED`` (e.g. MONAI's
            ``MetricsSaver``).

    Example (a bundle config)::

        {"_target_": "monai_xai.handlers.AttachedLast", "handler": {"_target_": "MetricsSaver", ...}}
    """

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self._engines: set[int] = set()

    def attach(self, engine: Any) -> None:
        if not engine.has_event_handler(self._attach_now, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self._attach_now)

    def _attach_now(self, engine: Any) -> None:
        if id(engine) not in self._engines:  # a second run of the same engine keeps the first attachment
            self._engines.add(id(engine))
            self.handler.attach(engine)
