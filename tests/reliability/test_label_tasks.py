"""The MONAI Label tasks in-process: only the bundle's own weights, loaded strictly, reloaded when the file changes;
bad images and options are 4xx with the reason, without server paths."""

from __future__ import annotations

import os
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from fastapi import HTTPException

from monai_xai.label import BundleExplainTask, CompatibleBundleInferTask
from monai_xai.label.guard import parse_params, without_paths


def explain(task: BundleExplainTask, image, **params) -> np.ndarray:
    result_file, _ = task({"image": str(image), "device": "cpu", "result_volume": "heatmap", **params})
    heat = np.asarray(nib.load(result_file).dataobj)
    os.unlink(result_file)
    return heat


def test_weights_reload_when_the_file_changes_even_with_the_same_mtime(unet_bundle, studies_dir, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(unet_bundle, bundle)
    task = BundleExplainTask(str(bundle), {}, methods=["hirescam"])
    image = studies_dir / "phantom_lesion.nii.gz"
    first = explain(task, image)
    weights = bundle / "models" / "model.pt"
    stat = weights.stat()
    state = torch.load(weights, weights_only=True)
    torch.save(
        {name: torch.randn_like(value) if value.is_floating_point() else value for name, value in state.items()},
        weights,
    )
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # MONAI Label's cache keyed on this alone
    assert weights.stat().st_mtime_ns == stat.st_mtime_ns
    assert not np.allclose(explain(task, image), first)


def test_a_checkpoint_of_another_network_is_an_error_not_a_random_network(unet_bundle, studies_dir, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(unet_bundle, bundle)
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    torch.save(dict(list(state.items())[:-2]), bundle / "models" / "model.pt")  # two tensors missing
    for task in (BundleExplainTask(str(bundle), {}, methods=["gradcam"]), CompatibleBundleInferTask(str(bundle), {})):
        with pytest.raises(HTTPException) as raised:
            task({"image": str(studies_dir / "phantom_lesion.nii.gz"), "device": "cpu"})
        assert raised.value.status_code == 500 and "Missing key(s) in state_dict" in raised.value.detail


def test_requests_cannot_choose_weights_or_odd_result_files(unet_bundle, studies_dir):
    task = BundleExplainTask(str(unet_bundle), {}, methods=["gradcam"])
    assert "model_filename" not in task.info()["config"]
    image = str(studies_dir / "phantom_lesion.nii.gz")
    for request, message in (
        ({"model_filename": "model.pt"}, "a request cannot choose the weights file"),
        ({"result_extension": ".exe"}, "result_extension must be one of"),
        ({"result_extension": "/../../x.nii.gz"}, "result_extension must be one of"),
    ):
        with pytest.raises(HTTPException) as raised:
            task({"image": image, **request})
        assert raised.value.status_code == 422 and message in raised.value.detail


@pytest.mark.parametrize("damage", ["truncated", "garbage", "directory"])
def test_unreadable_images_are_a_422_naming_the_image(unet_bundle, studies_dir, tmp_path, damage):
    task = BundleExplainTask(str(unet_bundle), {}, methods=["gradcam"])
    image = tmp_path / "scan.nii.gz"
    if damage == "truncated":
        image.write_bytes((studies_dir / "phantom_lesion.nii.gz").read_bytes()[:2000])
    elif damage == "garbage":
        image.write_bytes(os.urandom(4096))
    else:
        image.mkdir()
    with pytest.raises(HTTPException) as raised:
        task({"image": str(image), "device": "cpu"})
    assert raised.value.status_code == 422, raised.value.detail
    assert raised.value.detail.startswith("the image 'scan.nii.gz' could not be read or preprocessed (")
    assert str(tmp_path) not in raised.value.detail


def test_params_must_be_a_json_object_naming_no_file():
    assert parse_params('{"method": "gradcam"}') == {"method": "gradcam"}
    assert parse_params("") == {}
    for raw, message in (
        ("[1]", "params must be a JSON object"),
        ("3", "params must be a JSON object"),
        ("{", "params is not valid JSON"),
        ('{"label": "/etc/shadow"}', "params cannot set ['label']"),
        ('{"image": "x", "model_filename": "y"}', "params cannot set ['image', 'model_filename']"),
    ):
        with pytest.raises(HTTPException) as raised:
            parse_params(raw)
        assert raised.value.status_code == 422 and message in raised.value.detail


def test_error_messages_lose_server_paths():
    message = "ITK ImageIO factory failed for /tmp/tmpab12cd34.nii.gz and '/home/u/.cache/x/y.nrrd' (see ./rel/z)"
    assert without_paths(message) == "ITK ImageIO factory failed for <path> and '<path>' (see ./rel/z)"
