"""The MONAI Label server's ASGI app behind a guard that checks infer requests before MONAI Label reads them.

Start the server with it (``monailabel start_server ... --uvicorn_app monai_xai.label.server:app``, see
``docs/monai_label.md``). :class:`InferRequestGuard` wraps ``monailabel.app.app`` (nothing of MONAI Label is
replaced): an infer request (``POST .../infer/<model>``) is answered with a 4xx and its reason, before MONAI Label
writes its upload to disk, when its ``session_id`` is not a plain id, it names no image, it uploads a label (the
explain models take none), its ``params`` form field is not a JSON object or sets what a request may not
(:func:`~monai_xai.label.guard.parse_params`: files, how a model runs, label writes unless ``--conf
allow_label_writes true``), or it is larger than ``--conf max_upload_mb`` (413); every other request goes to MONAI
Label unchanged. The explain
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

__all__ = ["DEFAULT_MAX_UPLOAD_MB", "InferRequestGuard", "app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_INFER_PATH = re.compile(r"/infer/[^/]+/?$")
# the largest infer request (the upload and its params) a server takes unless --conf max_upload_mb says otherwise
DEFAULT_MAX_UPLOAD_MB = 1024
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
        conf = _app_conf()
        limit = _megabytes(conf, "max_upload_mb", DEFAULT_MAX_UPLOAD_MB) * 2**20
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        session_ids = query.get("session_id", [])
        if any(session_id and not SESSION_ID.match(session_id) for session_id in session_ids):
            await _respond(send, 422, "session_id must be the id of a session of this server (letters, digits, -, _).")
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _respond(send, 413, _too_large(int(declared), limit))
            return
        with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as body:
            size, more = 0, True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    await _respond(send, 413, _too_large(size, limit))
                    return
                body.write(chunk)
                more = message.get("more_body", False)
            form = await Request(scope, _replay(body, receive)).form()
            params, label, upload = form.get("params"), form.get("label"), form.get("file")
            await form.close()
            has_image = upload is not None or any(query.get(key) for key in ("image", "session_id"))
            writes = str(conf.get("allow_label_writes", "false")).lower() == "true"
            problem = _problem(params, label is not None, has_image, writes)
            if problem is not None:
                await _respond(send, problem.status_code, str(problem.detail))
                return
            await self.app(scope, _replay(body, receive), send)


def _problem(params: object, has_label: bool, has_image: bool, allow_label_writes: bool) -> HTTPException | None:
    """What is wrong with an infer request's form, or None."""
    if has_label:
        return HTTPException(status_code=422, detail="the explain models take no label upload; send the image only.")
    if not has_image:
        return HTTPException(
            status_code=422,
            detail="no image: give the 'image' query parameter (an id of the studies folder), a 'session_id', or "
            "upload the image as 'file'.",
        )
    try:
        parse_params(params if isinstance(params, str) else None, allow_label_writes)
    except HTTPException as error:
        return error
    return None


def _app_conf() -> dict[str, Any]:
    """The app conf of ``monailabel start_server --conf key value`` (MONAI Label's settings)."""
    from monailabel.config import settings

    return dict(settings.MONAI_LABEL_APP_CONF or {})


def _megabytes(conf: dict[str, Any], key: str, default: float) -> float:
    try:
        value = float(conf.get(key, default))
    except (TypeError, ValueError):
        raise ValueError(f"--conf {key} must be a number of megabytes, got {conf.get(key)!r}.") from None
    if not value > 0:
        raise ValueError(f"--conf {key} must be positive, got {value}.")
    return value


def _too_large(size: int, limit: float) -> str:
    return (
        f"the request is {size / 2**20:.1f} MB, more than this server takes ({limit / 2**20:.0f} MB, --conf "
        "max_upload_mb); send a smaller image."
    )


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
