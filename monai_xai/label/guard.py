"""What a MONAI Label request may read and choose: images of the server's datastore, uploads and sessions only.

MONAI Label 0.8.5 reads any path a request names: an ``image`` query parameter, or ``"image"`` inside ``params``,
that is a path to an existing file is explained as it is (and a missing one answers differently, which tells a client
what exists on the server); ``params`` that are not a JSON object fail with a bare 500; uploads of a failed request
stay in the temporary folder. The explain app closes this at two places:

- :func:`install_infer_params_check` checks the infer endpoint's ``params`` before MONAI Label reads them: a JSON
  object that names no file (``image``, ``label``, ``session``, ``model_filename``);
- :func:`checked_image` lets a request's image be an id of the datastore, an upload (a file of the app's private
  upload folder, where the app sends MONAI Label's temporary files) or a file of the request's own session, and answers
  every other name with the same 404, whether it exists or not; :func:`remove_uploads` deletes a failed request's
  uploads.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from fastapi import HTTPException

__all__ = [
    "GuardedInferMixin",
    "FILE_KEYS",
    "parse_params",
    "install_infer_params_check",
    "checked_image",
    "remove_uploads",
    "without_paths",
]

# request keys that choose files on the server: only the endpoint itself may set them
FILE_KEYS = ("image", "label", "session", "model_filename")


def parse_params(params: str | None) -> dict[str, Any]:
    """The ``params`` form field of a request as a dict, or an ``HTTPException`` (422) that says what is wrong.

    Raises:
        HTTPException: not valid JSON, not a JSON object, or a key of :data:`FILE_KEYS`.
    """
    try:
        parsed = json.loads(params) if params else {}
    except json.JSONDecodeError as error:
        raise HTTPException(status_code=422, detail=f"params is not valid JSON: {error.msg}.") from error
    if not isinstance(parsed, dict):
        raise HTTPException(
            status_code=422,
            detail=f'params must be a JSON object ({{"method": "gradcam", ...}}), got {type(parsed).__name__}.',
        )
    chosen = sorted(key for key in FILE_KEYS if key in parsed)
    if chosen:
        raise HTTPException(
            status_code=422,
            detail=f"params cannot set {chosen}: send the image as the 'image' query parameter (an id of the studies "
            "folder) or upload it as 'file'; a model's weights are the bundle's own.",
        )
    return parsed


def install_infer_params_check() -> None:
    """Make MONAI Label's infer endpoint check ``params`` with :func:`parse_params` before anything else (before an
    upload is written, so a refused request leaves no file). Idempotent; the explain app calls it when it starts.

    The endpoint function looks ``run_inference`` up in its module at every request, so replacing that name is enough.
    """
    from monailabel.endpoints import infer as endpoint

    original: Callable = endpoint.run_inference
    if getattr(original, "checks_params", False):
        return

    @functools.wraps(original)
    def run_checked(background_tasks, model, image="", session_id="", params="{}", file=None, label=None, output=None):
        parse_params(params)
        return original(background_tasks, model, image, session_id, params, file, label, output)

    run_checked.checks_params = True  # type: ignore[attr-defined]
    endpoint.run_inference = run_checked


def _inside(path: Path, folder: str | Path | None) -> bool:
    return folder is not None and path.is_relative_to(Path(os.path.realpath(folder)))


def checked_image(
    image: object, datastore_images: Iterable[str], upload_dir: str | Path, session_dir: str | Path | None = None
) -> str:
    """The request's image if the request may read it, else a 404 that does not say whether the name exists.

    Args:
        image: ``request["image"]``: an image id, or a path set by the endpoint for an upload or a session.
        datastore_images: the ids of the server's datastore.
        upload_dir: the app's private folder of uploads.
        session_dir: the folder of the request's session (``request["session"]["path"]``, set by the endpoint from
            ``session_id``), or None.

    Returns:
        the id as given, or the real path of an upload or session image.

    Raises:
        HTTPException: 422 for an image that is not a string; 404 for anything else that is not allowed.
    """
    if not isinstance(image, str) or not image:
        raise HTTPException(status_code=422, detail=f"image must be an image id (a string), got {image!r}.")
    if image in set(datastore_images):
        return image
    path = Path(os.path.realpath(image))
    if path.is_file() and (_inside(path, upload_dir) or _inside(path, session_dir)):
        return str(path)
    raise HTTPException(
        status_code=404,
        detail=f"image {Path(image).name!r} not found on this server: give the id of an image in its studies folder "
        "(GET /datastore/?output=all lists them) or upload the image as 'file'.",
    )


def remove_uploads(request: dict[str, Any], upload_dir: str | Path) -> None:
    """Delete the uploaded image and label of a request that failed (MONAI Label deletes them only after success)."""
    for key in ("image", "label"):
        value = request.get(key)
        if isinstance(value, str) and _inside(Path(os.path.realpath(value)), upload_dir):
            Path(value).unlink(missing_ok=True)


_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^\s/'\"]+/)+[^\s'\"]*")


def without_paths(message: str) -> str:
    """``message`` with absolute file paths replaced by ``<path>`` (error details must not show server paths)."""
    return _ABSOLUTE_PATH.sub("<path>", message)


class GuardedInferMixin:
    """Mixed into a ``MONAILabelApp`` (``class App(GuardedInferMixin, MONAILabelApp)``: MONAI Label finds the app
    class as the one that names ``MONAILabelApp`` among its bases), infer requests read only what
    :func:`checked_image` allows.

    On start it installs :func:`install_infer_params_check` and sends the process's temporary files (MONAI Label's
    uploads and results) to a private folder, ``<app_dir>/tmp`` (mode 0700), so that an upload is recognised by where
    it lies and no other program's file counts as one. An unknown model is a 404 that lists the models; a failed
    request's uploads are deleted.

    Args:
        app_dir, studies, conf, kwargs: as ``MONAILabelApp``.
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str], **kwargs: Any) -> None:
        self.upload_dir = Path(app_dir, "tmp").resolve()
        self.upload_dir.mkdir(mode=0o700, exist_ok=True)
        self.upload_dir.chmod(0o700)
        tempfile.tempdir = str(self.upload_dir)
        install_infer_params_check()
        super().__init__(app_dir=app_dir, studies=studies, conf=conf, **kwargs)

    def infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """``MONAILabelApp.infer`` for an allowed image and a known model (see the class docstring)."""
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(
                status_code=404, detail=f"there is no model {model!r} on this server; models: {sorted(self._infers)}."
            )
        datastore = datastore or self.datastore()
        try:
            session = request.get("session") or {}
            image = checked_image(request.get("image"), datastore.list_images(), self.upload_dir, session.get("path"))
            return super().infer({**request, "image": image}, datastore)
        except BaseException:
            remove_uploads(request, self.upload_dir)
            raise
