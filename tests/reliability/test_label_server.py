"""A real MONAI Label server (the sample app) against bad and hostile requests: it reads only its own images, serves
only the bundle's own weights, answers every bad request with a 4xx that says why, and keeps no file of a failed
request."""

from __future__ import annotations

import gzip
import json
import re
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
import torch

from tests.helpers.label import SEGMENTATION

pytestmark = pytest.mark.slow

EXPLAIN = f"{SEGMENTATION}_explain"


def post(server: str, model: str, image: str | None, params: object = None, upload: tuple | None = None, raw=None):
    """POST /infer/<model> as MONAI Label clients do; ``params`` is sent as JSON, ``raw`` as the field's text."""
    field = raw if raw is not None else json.dumps(params or {})
    files = {"params": (None, field), **({"file": upload} if upload else {})}
    query = {"output": "json", **({"image": image} if image is not None else {})}
    return requests.post(f"{server}/infer/{model}", params=query, files=files, timeout=300)


def detail(response: requests.Response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.text  # never a bare 500
    return response.json()["detail"]


def assert_alive(server: str) -> None:
    assert post(server, EXPLAIN, "phantom_lesion", {"result_volume": "heatmap"}).status_code == 200


@pytest.mark.parametrize("name", ["/etc/passwd", "../../etc/passwd", "mask", "missing", "studies folder"])
def test_only_images_of_the_datastore_are_read(server, studies_dir, name):
    """A path is not an image id: existing or missing, inside or outside the studies folder, the answer is the same
    404, so a client learns nothing about the server's files."""
    image = {
        "mask": str(studies_dir.parent / "masks" / "phantom_lesion.nii.gz"),  # a NIfTI that exists, outside studies
        "missing": str(studies_dir.parent / "masks" / "nothing_here.nii.gz"),
        "studies folder": str(studies_dir),
    }.get(name, name)
    response = post(server, EXPLAIN, image)
    assert response.status_code == 404, response.text
    assert detail(response) == (
        f"image {Path(image).name!r} not found on this server: give the id of an image in its studies folder "
        "(GET /datastore/?output=all lists them) or upload the image as 'file'."
    )
    # params cannot name the image (it would override the query)
    response = post(server, EXPLAIN, "phantom_lesion", {"image": image})
    assert response.status_code == 422 and "params cannot set ['image']" in detail(response)
    assert_alive(server)


def heatmap(server: str, params: dict) -> np.ndarray:
    query = {"image": "phantom_lesion", "output": "image"}
    response = requests.post(
        f"{server}/infer/{EXPLAIN}", params=query, files={"params": (None, json.dumps(params))}, timeout=300
    )
    assert response.status_code == 200, response.text
    return np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(response.content)).dataobj)


def test_requests_cannot_choose_weights_and_the_cached_network_stays(server, bundles_dir, tmp_path):
    params = {"result_volume": "heatmap", "method": "hirescam"}
    before = heatmap(server, params)
    other = bundles_dir / SEGMENTATION / "models" / "other.pt"
    torch.save({"conv.weight": torch.randn(2, 1, 1, 1, 1), "conv.bias": torch.randn(2)}, other)
    try:
        for model in (EXPLAIN, SEGMENTATION):
            response = post(server, model, "phantom_lesion", {**params, "model_filename": "other.pt"})
            assert response.status_code == 422 and "params cannot set ['model_filename']" in detail(response)
        info = requests.get(f"{server}/info/", timeout=30).json()
        assert "model_filename" not in info["models"][EXPLAIN]["config"]  # not offered either
    finally:
        other.unlink()
    np.testing.assert_array_equal(heatmap(server, params), before)


@pytest.mark.parametrize(
    "model, params, raw, status, message",
    [
        ("no_such_model", {}, None, 404, r"there is no model 'no_such_model' on this server; models: \["),
        (EXPLAIN, None, "[1, 2]", 422, "params must be a JSON object"),
        (EXPLAIN, None, '"gradcam"', 422, "params must be a JSON object"),
        (EXPLAIN, None, "{method: gradcam", 422, "params is not valid JSON"),
        (EXPLAIN, {"result_extension": ".exe"}, None, 422, r"result_extension must be one of \['.nii.gz'"),
        (EXPLAIN, {"result_extension": "/../x.nii.gz"}, None, 422, "result_extension must be one of"),
        (SEGMENTATION, {"result_extension": ".exe"}, None, 422, "result_extension must be one of"),
        (EXPLAIN, {"session": {"path": "/"}}, None, 422, r"params cannot set \['session'\]"),
    ],
)
def test_bad_requests_are_4xx_with_a_reason(server, model, params, raw, status, message):
    response = post(server, model, "phantom_lesion", params, raw=raw)
    assert response.status_code == status, response.text
    assert re.search(message, detail(response)), detail(response)
    assert_alive(server)


def upload_dir_files(app_dir: Path) -> list[Path]:
    return sorted((app_dir / "tmp").iterdir())


def test_uploads_are_explained_and_failed_ones_leave_no_file(server, studies_dir, label_app_dir):
    volume = (studies_dir / "phantom_lesion.nii.gz").read_bytes()
    ok = post(server, EXPLAIN, None, {"result_volume": "heatmap"}, upload=("scan.nii.gz", volume))
    assert ok.status_code == 200, ok.text
    truncated = post(server, EXPLAIN, None, {}, upload=("scan.nii.gz", volume[: len(volume) // 3]))
    assert truncated.status_code == 422, truncated.text
    message = detail(truncated)
    assert "could not be read or preprocessed" in message and "/" not in message.split("(")[0].replace("'", "")
    assert "itk" not in message.lower() and str(label_app_dir) not in message
    refused = post(server, EXPLAIN, None, raw="[]", upload=("scan.nii.gz", volume))
    assert refused.status_code == 422
    deadline = time.monotonic() + 10  # the successful request's upload is removed by a background task
    while upload_dir_files(label_app_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftovers = [path.name for path in upload_dir_files(label_app_dir) if not path.name.endswith((".json",))]
    assert not [name for name in leftovers if name.startswith("tmp") and name.endswith(".nii.gz")], leftovers
    assert_alive(server)


def test_the_image_read_is_the_datastore_image_not_a_same_named_file(server, studies_dir, tmp_path):
    """An id is looked up in the datastore; a file of the same name elsewhere (the cwd, /tmp) is never read."""
    decoy = tmp_path / "phantom_lesion.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), decoy)
    response = post(server, EXPLAIN, "phantom_lesion", {"result_volume": "heatmap"})
    assert response.status_code == 200
    assert response.json()["predicted_voxels"] > 0  # the phantom's lesion, not the decoy's zeros


def test_a_session_is_the_servers_own_and_a_planted_one_reads_nothing(server, studies_dir, tmp_path):
    """Issue #29 (1): a session folder uploaded with a ``meta.info`` of the client's making, named through
    ``session_id=<id>/<folder>``, used to make the server explain any file and tell which exist."""
    volume = (studies_dir / "phantom_lesion.nii.gz").read_bytes()

    def session(files: list) -> str:
        created = requests.put(f"{server}/session/", params={"uncompress": "false"}, files=files, timeout=60)
        assert created.status_code == 200, created.text
        return created.json()["session_id"]

    session_id = session([("files", ("scan.nii.gz", volume))])
    query = {"session_id": session_id, "output": "json"}
    own = requests.post(f"{server}/infer/{EXPLAIN}", params=query, files={"params": (None, "{}")}, timeout=300)
    assert own.status_code == 200, own.text  # the session's own image is explained
    planted = json.dumps({"name": "x", "path": "/etc", "image": "/etc/passwd"}).encode()
    planted_id = session([("files", ("scan.nii.gz", volume)), ("files", ("meta.info", planted))])
    received = requests.get(f"{server}/session/{planted_id}", timeout=60).json()
    folder = Path(received["image"]).name  # where the two files went, inside the session
    for forged in (f"{planted_id}/{folder}", f"{session_id}/..", "../sessions", "a b"):
        query = {"session_id": forged, "output": "json"}
        response = requests.post(f"{server}/infer/{EXPLAIN}", params=query, files={"params": (None, "{}")}, timeout=60)
        assert response.status_code == 422, (forged, response.text)
        assert "session_id must be the id of a session of this server" in detail(response)
    assert_alive(server)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"save_label": True, "label_tag": "/any/dir"}, r"params cannot set \['label_tag', 'save_label'\]"),
        ({"save_label": True, "label_tag": "final"}, r"params cannot set \['label_tag', 'save_label'\]"),
        ({"label_tag": "final"}, r"params cannot set \['label_tag'\]"),
        ({"device": "cuda:7"}, r"unknown device 'cuda:7'; this server offers \['cpu'\]"),
        ({"device": "not a device"}, "unknown device 'not a device'"),
        ({"roi_size": [4096, 4096, 4096]}, r"params cannot set \['roi_size'\]"),
        ({"logging": "DEBUG"}, r"params cannot set \['logging'\]"),
    ],
)
def test_requests_cannot_write_labels_choose_a_device_or_configure_the_model(server, studies_dir, params, message):
    """Issue #29 (2, 9): a request wrote its result into any folder (``label_tag``), overwrote a ground-truth label
    (``final``), or broke a model for every later request with a bad ``device``."""
    labels_before = sorted(path.name for path in studies_dir.rglob("*") if path.is_file())
    response = post(server, EXPLAIN, "phantom_lesion", {"result_volume": "heatmap", **params})
    assert response.status_code == 422, response.text
    assert re.search(message, detail(response)), detail(response)
    assert sorted(path.name for path in studies_dir.rglob("*") if path.is_file()) == labels_before
    assert_alive(server)  # the model still serves, on its own device


def test_uploads_are_bounded_before_they_are_read(server, label_app_dir):
    """Issue #29 (8): a 0.2 MB gzip upload declaring a huge volume grew the server by gigabytes; a label upload that
    failed to convert stayed on disk; a request naming no image was a bare 500."""
    bomb = nib.Nifti1Image(np.zeros((1024, 1024, 512), np.uint8), np.eye(4))  # 512 Mi voxels, all zeros
    packed = gzip.compress(bomb.to_bytes(), compresslevel=9)
    assert len(packed) < 2**20
    response = post(server, EXPLAIN, None, {}, upload=("bomb.nii.gz", packed))
    assert response.status_code == 413, response.text
    assert "more than this server reads" in detail(response)
    files = {"params": (None, "{}"), "label": ("scribbles.bin", b"\x00" * 64)}
    response = requests.post(f"{server}/infer/{EXPLAIN}", params={"image": "phantom_lesion"}, files=files, timeout=60)
    assert response.status_code == 422 and "take no label upload" in detail(response)
    response = requests.post(f"{server}/infer/{EXPLAIN}", files={"params": (None, "{}")}, timeout=60)
    assert response.status_code == 422 and "no image" in detail(response)
    oversized = ("big.nii.gz", b"\x00" * (9 * 2**20))  # the test server takes at most 8 MB (--conf max_upload_mb)
    response = post(server, EXPLAIN, None, {}, upload=oversized)
    assert response.status_code == 413 and "more than this server takes (8 MB" in detail(response)
    deadline = time.monotonic() + 10
    while upload_dir_files(label_app_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [path.name for path in upload_dir_files(label_app_dir) if path.suffix in (".bin", ".gz")]
    assert_alive(server)
