"""What a MONAI Label request may read and choose, checked without a server: sessions from the server's own store,
request keys, image sizes from headers."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi import HTTPException
from monailabel.utils.sessions import Sessions

from monai_xai.label.guard import check_request_keys, checked_image, checked_session, image_voxels, parse_params


@pytest.fixture
def store(tmp_path: Path) -> tuple[Sessions, str]:
    image = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), image)
    sessions = Sessions(str(tmp_path / "sessions"))
    session_id, _ = sessions.add_session(str(image), expiry=3600)
    return sessions, session_id


def test_a_session_is_taken_from_the_servers_store_not_from_the_request(store, tmp_path):
    sessions, session_id = store
    recorded = sessions.get_session(session_id)
    folder = checked_session({"name": session_id, "path": "/etc", "image": "/etc/passwd"}, sessions)
    assert folder == Path(recorded.path).resolve()  # the request's path is ignored
    # the image the forged JSON names is outside the session: the same 404 as any unknown name
    with pytest.raises(HTTPException) as refused:
        checked_image("/etc/passwd", [], tmp_path / "uploads", folder)
    assert refused.value.status_code == 404
    assert checked_image(recorded.image, [], tmp_path / "uploads", folder) == str(Path(recorded.image).resolve())
    for forged in ({"name": f"{session_id}/x"}, {"name": "../.."}, {"name": "unknown"}, {"path": "/"}, "x"):
        with pytest.raises(HTTPException) as refused:
            checked_session(forged, sessions)
        assert refused.value.status_code == 404
    assert checked_session(None, sessions) is None


@pytest.mark.parametrize(
    "request_keys, allowed, message",
    [
        ({"save_label": True}, False, "does not save results as labels"),
        ({"save_label": True, "label_tag": "mine"}, True, None),
        ({"save_label": True, "label_tag": "final"}, True, "label_tag must be a plain name"),
        ({"save_label": True, "label_tag": "../x"}, True, "label_tag must be a plain name"),
        ({"save_label": False}, False, None),
        ({"sw_batch_size": 1000}, True, "how the server runs its models is the operator's"),
        ({"device": "cpu"}, False, None),
        ({"device": ["cpu", "cuda"]}, False, None),
        ({"device": "cuda:3"}, False, "unknown device 'cuda:3'"),
    ],
)
def test_request_keys(request_keys, allowed, message):
    if message is None:
        check_request_keys(request_keys, allowed, ["cpu"])
        return
    with pytest.raises(HTTPException, match=message) as refused:
        check_request_keys(request_keys, allowed, ["cpu"])
    assert refused.value.status_code == 422


def test_params_refuse_files_and_writes_before_anything_is_read():
    assert parse_params('{"method": "gradcam"}') == {"method": "gradcam"}
    for params, message in (
        ('{"session": {"path": "/"}}', "cannot set \\['session'\\]"),
        ('{"label_tag": "/any/dir", "save_label": true}', "cannot set \\['label_tag', 'save_label'\\]"),
        ('{"output_dir": "/tmp"}', "cannot set \\['output_dir'\\]"),
    ):
        with pytest.raises(HTTPException, match=message):
            parse_params(params)


def test_image_sizes_come_from_headers_without_reading_the_data(tmp_path):
    bomb = tmp_path / "bomb.nii.gz"
    bomb.write_bytes(gzip.compress(nib.Nifti1Image(np.zeros((256, 256, 256), np.uint8), np.eye(4)).to_bytes()))
    assert bomb.stat().st_size < 2**20 and image_voxels(bomb) == 256**3
    mha = tmp_path / "scan.mha"
    mha.write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 10 20 30\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n"
    )
    assert image_voxels(mha) == 6000
    (tmp_path / "truncated.nii.gz").write_bytes(b"\x1f\x8b")
    assert image_voxels(tmp_path / "truncated.nii.gz") is None and image_voxels(tmp_path / "series") is None
