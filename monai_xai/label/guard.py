"""What a MONAI Label request may read and choose: images of the server's datastore, uploads and sessions only.

MONAI Label 0.8.5 reads any path a request names: an ``image`` query parameter, or ``"image"`` inside ``params``,
that is a path to an existing file is explained as it is (and a missing one answers differently, which tells a client
what exists on the server); ``params`` that are not a JSON object fail with a bare 500; uploads of a failed request
stay in the temporary folder; a ``session_id`` is a folder name under the sessions store, whose ``meta.info`` says
which image the session holds. The explain app closes this at two places:

- :func:`parse_params` checks the infer endpoint's ``params``: a JSON object that names no file (``image``,
  ``label``, ``session``, ``model_filename``); the server's guard (:mod:`monai_xai.label.server`) runs it before MONAI
  Label reads the request;
- :class:`GuardedTaskMixin` makes an infer task refuse what a request may not choose (the weights file, a result
  extension other than :data:`RESULT_EXTENSIONS`, an image declaring more than ``max_voxels``) and answer an image it
  cannot read with a 422 that names only the image;
- :class:`GuardedInferMixin` lets a request's image be an id of the datastore, an upload (a file of the app's private
  upload folder, where the app sends MONAI Label's temporary files) or the image of one of the server's own sessions
  (:func:`checked_session`), answers every other name with the same 404, whether it exists or not, and deletes a
  failed request's uploads (:func:`remove_uploads`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException

__all__ = [
    "GuardedInferMixin",
    "GuardedTaskMixin",
    "RESULT_EXTENSIONS",
    "FILE_KEYS",
    "SESSION_ID",
    "CONFIG_KEYS",
    "PROTECTED_TAGS",
    "WRITE_KEYS",
    "DEFAULT_MAX_VOXELS",
    "check_request_keys",
    "image_voxels",
    "max_voxels",
    "parse_params",
    "checked_session",
    "checked_image",
    "remove_uploads",
    "without_paths",
]

# request keys that choose files on the server: only the endpoint itself may set them
FILE_KEYS = ("image", "label", "session", "model_filename")
# request keys that write into the datastore: refused unless the operator allows it (--conf allow_label_writes true)
WRITE_KEYS = ("save_label", "label_tag")
# request keys that change how MONAI Label runs a model (its logging, window, caching, writer): the operator's
CONFIG_KEYS = (
    "logging",
    "roi_size",
    "sw_batch_size",
    "sw_overlap",
    "skip_writer",
    "cache_transforms",
    "cache_transforms_in_memory",
    "cache_transforms_ttl",
    "output_dir",
)
logger = logging.getLogger(__name__)

# result files a request may ask for (MONAI Label writes them with ITK)
RESULT_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".seg.nrrd", ".mha")
# the most voxels an image may declare unless --conf max_voxels says otherwise (512 x 512 x 1024: a large CT)
DEFAULT_MAX_VOXELS = 512 * 512 * 1024
# the label tags MONAI Label keeps for the datastore's own labels: never overwritten from a request
PROTECTED_TAGS = ("final", "original")
# what a session id looks like (MONAI Label makes them uuid4 strings): no separator, so it names no other folder
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def parse_params(params: str | None, allow_label_writes: bool = False) -> dict[str, Any]:
    """The ``params`` form field of a request as a dict, or an ``HTTPException`` (422) that says what is wrong.

    Args:
        params: the field as sent.
        allow_label_writes: whether the operator lets requests save their result as a label (``save_label``,
            ``label_tag``; see :func:`check_request_keys`).

    Raises:
        HTTPException: not valid JSON, not a JSON object, or a key a request may not set (:func:`check_request_keys`).
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
    check_request_keys(parsed, allow_label_writes)
    return parsed


def check_request_keys(request: dict[str, Any], allow_label_writes: bool = False, devices: Iterable[str] = ()) -> None:
    """Refuse what a request may not choose: how MONAI Label runs a model (:data:`CONFIG_KEYS`), writing its result
    into the datastore unless the operator allows it (:data:`WRITE_KEYS`; even then only under a plain tag that is
    not one of the datastore's own, :data:`PROTECTED_TAGS`), and a device the server does not offer.

    Args:
        request: the request's params (or the whole request the endpoint built).
        allow_label_writes: the operator's ``--conf allow_label_writes true``.
        devices: the devices the server offers (the task's ``device`` choices); empty: ``device`` is not checked.

    Raises:
        HTTPException: 422 naming the key and what to do instead.
    """
    config = sorted(key for key in CONFIG_KEYS if key in request)
    if config:
        raise HTTPException(
            status_code=422, detail=f"params cannot set {config}: how the server runs its models is the operator's."
        )
    writes = sorted(key for key in WRITE_KEYS if key in request and request[key] not in (False, None, "false"))
    if writes and not allow_label_writes:
        raise HTTPException(
            status_code=422,
            detail=f"params cannot set {writes}: this server does not save results as labels (the operator allows "
            "it with --conf allow_label_writes true).",
        )
    tag = request.get("label_tag")
    if tag is not None and (not isinstance(tag, str) or not SESSION_ID.match(tag) or tag.lower() in PROTECTED_TAGS):
        raise HTTPException(
            status_code=422,
            detail=f"label_tag must be a plain name (letters, digits, -, _) other than {list(PROTECTED_TAGS)}, got "
            f"{tag!r}.",
        )
    offered = list(devices)
    device = request.get("device")
    if offered and device is not None:
        chosen_device = device[0] if isinstance(device, list) and device else device
        if chosen_device not in offered:
            raise HTTPException(
                status_code=422, detail=f"unknown device {chosen_device!r}; this server offers {offered}."
            )


def image_voxels(path: str | Path) -> int | None:
    """The number of voxels (times channels) an image file declares in its header, read without its data: NIfTI
    through nibabel, NRRD through pynrrd, MetaImage from its text header; None for a format whose header is not read
    here (e.g. a DICOM series folder) or a file without a readable header.

    A gzip-compressed volume can be tiny on the wire and huge in memory: the header says how huge before anything is
    decompressed.
    """
    name = str(path).lower()
    try:
        if name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            return int(np.prod(nib.load(str(path)).header.get_data_shape(), dtype=np.int64))
        if name.endswith(".nrrd"):
            import nrrd

            return int(np.prod(nrrd.read_header(str(path))["sizes"], dtype=np.int64))
        if name.endswith((".mha", ".mhd")):
            with open(path, "rb") as stream:
                for line in stream.read(65536).decode("latin-1").splitlines():
                    key, _, value = line.partition("=")
                    if key.strip() == "DimSize":
                        return int(np.prod([int(size) for size in value.split()], dtype=np.int64))
    except Exception:  # an unreadable header is the loader's to report, with its own message
        return None
    return None


def _inside(path: Path, folder: str | Path | None) -> bool:
    return folder is not None and path.is_relative_to(Path(os.path.realpath(folder)))


def checked_session(session: object, sessions: Any) -> Path | None:
    """The folder of the request's session, as the server's own session store records it, or None without one.

    MONAI Label puts the session it found for the request's ``session_id`` under ``request["session"]`` as JSON
    (``{"name": <id>, "path": <folder>, "image": <file>, ...}``). Its folder and image are taken from the store
    (``sessions.get_session(name)``) and must lie in the store's own folder; nothing the request carries is trusted.

    Args:
        session: ``request["session"]``, or None.
        sessions: the app's ``Sessions`` store (``MONAILabelApp.sessions()``).

    Raises:
        HTTPException: 404 for a session that is not one of the server's own.
    """
    if session is None:
        return None
    name = session.get("name") if isinstance(session, dict) else None
    unknown = HTTPException(status_code=404, detail="session not found on this server: start a new session.")
    if not isinstance(name, str) or not SESSION_ID.match(name) or sessions is None:
        raise unknown
    store = Path(os.path.realpath(sessions.store_path))
    recorded = sessions.get_session(name, update_ts=False)
    folder = Path(os.path.realpath(store / name))
    if recorded is None or folder.parent != store or Path(os.path.realpath(recorded.path)) != folder:
        raise unknown
    return folder


def checked_image(
    image: object, datastore_images: Iterable[str], upload_dir: str | Path, session_dir: str | Path | None = None
) -> str:
    """The request's image if the request may read it, else a 404 that does not say whether the name exists.

    Args:
        image: ``request["image"]``: an image id, or a path set by the endpoint for an upload or a session.
        datastore_images: the ids of the server's datastore.
        upload_dir: the app's private folder of uploads.
        session_dir: the folder of the request's session (:func:`checked_session`), or None.

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
    # an upload is a file; a session may hold a folder (a DICOM series uploaded as several files)
    if (path.is_file() and _inside(path, upload_dir)) or (path.exists() and _inside(path, session_dir)):
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


class GuardedTaskMixin:
    """Mixed into a MONAI Label infer task (``class Task(GuardedTaskMixin, BasicInferTask)``): what a request may not
    choose, and the errors it gets.

    - a request cannot choose a weights file (MONAI Label offers ``model_filename``): a 422;
    - a ``result_extension`` other than :data:`RESULT_EXTENSIONS`: a 422;
    - an image whose header declares more voxels than the task's ``max_voxels`` (:func:`max_voxels`): a 413 before it
      is decompressed;
    - an image that cannot be read or preprocessed: a 422 that names the image; other failures: a 500 whose message
      shows no server paths;
    - the request's ``<input_key>_*`` strings (MONAI Label's ``image_path``) are hidden from the pre-transforms: MONAI
      1.6's ``Spacingd`` updates every ``image_*`` entry as a meta dict when the input is NIfTI, and fails on a string.

    The task sets ``self.served_name`` (the model's name when the request gives none) and ``self.max_voxels``
    (:func:`max_voxels`) in its ``__init__``.
    """

    served_name: str
    max_voxels: int

    def __call__(self, request: dict[str, Any], callbacks: dict | None = None) -> tuple[str | None, dict]:
        model = request.get("model", self.served_name)
        if "model_filename" in request:
            raise HTTPException(status_code=422, detail=f"{model}: a request cannot choose the weights file.")
        extension = request.get("result_extension")
        if extension is not None and extension not in RESULT_EXTENSIONS:
            raise HTTPException(
                status_code=422,
                detail=f"{model}: result_extension must be one of {list(RESULT_EXTENSIONS)}, got {extension!r}.",
            )
        try:
            return super().__call__(request, callbacks)
        except HTTPException:
            raise
        except Exception as error:
            logger.exception(f"{model}: request failed")
            raise HTTPException(
                status_code=500, detail=f"{model}: failed: {type(error).__name__}: {without_paths(str(error))}"
            ) from error

    def run_pre_transforms(self, data: dict[str, Any], transforms: Sequence[Callable]) -> dict[str, Any]:
        image = data.get(self.input_key)
        voxels = image_voxels(image) if isinstance(image, str) else None
        if voxels is not None and voxels > self.max_voxels:
            raise HTTPException(
                status_code=413,
                detail=f"the image declares {voxels} voxels, more than this server reads ({self.max_voxels}, --conf "
                "max_voxels); send a smaller or cropped volume.",
            )
        hidden = {
            key: data.pop(key)
            for key in list(data)
            if key.startswith(f"{self.input_key}_") and isinstance(data[key], str)
        }
        try:
            data = super().run_pre_transforms(data, transforms)
        except Exception as error:
            logger.exception("the image could not be read or preprocessed")
            name = os.path.basename(str(hidden.get(f"{self.input_key}_path", data.get(self.input_key, ""))))
            raise HTTPException(
                status_code=422,
                detail=f"the image {name!r} could not be read or preprocessed ({type(error).__name__}); send a "
                "complete volume in a format the model reads (NIfTI, NRRD, DICOM series).",
            ) from error
        data.update(hidden)
        return data


def max_voxels(conf: dict[str, str]) -> int:
    """The most voxels an image may declare: the app's ``--conf max_voxels`` or :data:`DEFAULT_MAX_VOXELS`."""
    return int(float(conf.get("max_voxels", DEFAULT_MAX_VOXELS)))


class GuardedInferMixin:
    """Mixed into a ``MONAILabelApp`` (``class App(GuardedInferMixin, MONAILabelApp)``: MONAI Label finds the app
    class as the one that names ``MONAILabelApp`` among its bases), infer requests read only what
    :func:`checked_image` allows.

    On start it sends the process's temporary files (MONAI Label's uploads and results) to a private folder,
    ``<app_dir>/tmp`` (mode 0700), so that an upload is recognised by where it lies and no other program's file counts
    as one. An unknown model is a 404 that lists the models; a session is the server's own or a 404; a request may
    not set how a model runs, save its result as a label (unless ``--conf allow_label_writes true``) or choose a
    device the task does not offer (:func:`check_request_keys`); a failed request's uploads are deleted.

    Args:
        app_dir, studies, conf, kwargs: as ``MONAILabelApp``.
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str], **kwargs: Any) -> None:
        self.allow_label_writes = str(conf.get("allow_label_writes", "false")).strip().lower() == "true"
        self.upload_dir = Path(app_dir, "tmp").resolve()
        self.upload_dir.mkdir(mode=0o700, exist_ok=True)
        self.upload_dir.chmod(0o700)
        tempfile.tempdir = str(self.upload_dir)
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
            task_config = self._infers[model].config() if hasattr(self._infers[model], "config") else {}
            devices = task_config.get("device", [])
            check_request_keys(request, self.allow_label_writes, devices if isinstance(devices, list) else [devices])
            session_dir = checked_session(request.get("session"), self.sessions())
            image = checked_image(request.get("image"), datastore.list_images(), self.upload_dir, session_dir)
            return super().infer({**request, "image": image}, datastore)
        except BaseException:
            remove_uploads(request, self.upload_dir)
            raise
