"""The MONAI Label server's ASGI app behind a guard that checks infer requests before MONAI Label reads them.

Start the server with it (``monailabel start_server ... --uvicorn_app monai_xai.label.server:app``, see
``docs/monai_label.md``). :class:`InferRequestGuard` wraps ``monailabel.app.app`` (nothing of MONAI Label is
replaced): an infer request (``POST .../infer/<model>``) whose ``session_id`` is not a plain id, or whose ``params``
form field is not a JSON object naming no file (:func:`~monai_xai.label.guard.parse_params`), is answered 422 with the
reason before MONAI Label writes its upload to disk; every other request goes to MONAI Label unchanged. The explain
app checks the same again in its ``infer`` (:class:`~monai_xai.label.GuardedInferMixin`), so a server started
without the guard is not less safe, only less polite (a bare 500 for a malformed ``params``).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from typing import IO, Any
from urllib.parse import parse_qs

from fastapi import HTTPException
from starlette.requests import Request

from monai_xai.label.guard import SESSION_ID, parse_params

__all__ = ["InferRequestGuard", "app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_INFER_PATH = re.compile(r"/infer/[^/]+/?$")
# request bodies at most this large stay in memory while they are checked; larger ones go to a temporary file
_SPOOL_BYTES = 16 * 2**20
# what one replayed message carries
_CHUNK_BYTES = 2**20


async def _respond(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class InferRequestGuard:
    """ASGI middleware around MONAI Label's app (see the module docstring).

    Args:
        app: the wrapped ASGI app (``monailabel.app.app``).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not _INFER_PATH.search(scope["path"]):
            await self.app(scope, receive, send)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        session_ids = query.get("session_id", [])
        if any(session_id and not SESSION_ID.match(session_id) for session_id in session_ids):
            await _respond(send, 422, "session_id must be the id of a session of this server (letters, digits, -, _).")
            return
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as body:
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body.write(message.get("body", b""))
                more = message.get("more_body", False)
            form = await Request(scope, _replay(body, receive)).form()
            params = form.get("params")
            await form.close()
            try:
                parse_params(params if isinstance(params, str) else None)
            except HTTPException as error:
                await _respond(send, error.status_code, str(error.detail))
                return
            await self.app(scope, _replay(body, receive), send)


def _replay(body: IO[bytes], receive: Receive) -> Receive:
    """A ``receive`` that gives the buffered request ``body`` again, then waits on the client's own ``receive`` (which
    answers ``http.disconnect`` when the client leaves, what a streaming response listens for)."""
    size = body.seek(0, 2)
    body.seek(0)
    sent_all = False

    async def receive_again() -> Message:
        nonlocal sent_all
        if sent_all:
            return await receive()
        chunk = body.read(_CHUNK_BYTES)
        sent_all = body.tell() >= size
        return {"type": "http.request", "body": chunk, "more_body": not sent_all}

    return receive_again


def _monai_label_app() -> InferRequestGuard:
    from monailabel.app import app as monai_label_app

    return InferRequestGuard(monai_label_app)


app = _monai_label_app()
