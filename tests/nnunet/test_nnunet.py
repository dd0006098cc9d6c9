"""nnU-Net v2 trained-model folders explained as nnU-Net predicts (#33), against nnU-Net's own code.

The model is trained on phantoms through nnU-Net's own commands and trainer class (tests/helpers/nnunet.py). What must
hold:

- one tile, no mirroring, one fold: the maps equal CAMExplainer's on the same network and nnU-Net's preprocessed input;
- tiles, mirroring and two folds: the maps equal a hand loop over nnU-Net's own windows (``pad_nd_image``, the
  predictor's slicers, ``compute_gaussian``, the mirror combinations of ``_internal_maybe_mirror_and_predict``), and the
  explained prediction equals nnU-Net's ``predict_logits_from_preprocessed_data``;
- a 2d configuration runs slice by slice through volumes, as nnU-Net's own slicers do;
- ``monai-xai explain <model folder> --images ...`` writes each map on the input file's grid;
- a MONAI Label server serves the folder, with the Python API's maps.
"""

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("nnunetv2")

from monai_xai.cams import CAMExplainer  # noqa: E402
from monai_xai.nnunet import is_nnunet_folder, load_nnunet  # noqa: E402
from monai_xai.utils import normalize_per_sample  # noqa: E402
from tests.helpers.engines import REPO  # noqa: E402
from tests.helpers.nnunet import make_phantom_case, train_phantom_nnunet  # noqa: E402

pytestmark = pytest.mark.slow

# the expected lesion volume: every voxel's lesion probability (never an empty pixel set, whatever the training)
REQUEST = {"methods": ("gradcam", "hirescam"), "class_idx": 1, "pixel_set": "image", "score": "probability"}


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = train_phantom_nnunet(tmp_path_factory.mktemp("nnunet"))
    assert is_nnunet_folder(folder)
    return folder


@pytest.fixture(scope="module")
def model_folder_2d(tmp_path_factory):
    """A 2d configuration: a 2D network nnU-Net runs slice by slice on the volumes."""
    return train_phantom_nnunet(tmp_path_factory.mktemp("nnunet_2d"), "2d")


def _layer(model) -> str:
    """The layer the step chooses (the last decoder stage), by name."""
    from monai_xai.explanation import ExplainStep

    step = ExplainStep(model.request(methods=("gradcam",)))
    step._choose_layer(model.network, torch.zeros(1, 1, *model.window.patch_size))
    return step.chosen_layer.name


def test_one_tile_equals_cam_explainer_on_the_preprocessed_input(model_folder, tmp_path):
    model = load_nnunet(model_folder, folds=(0,), mirroring=False)
    image = make_phantom_case(tmp_path / "one_0000.nii.gz", seed=11)  # 32 x 32 x 24: one patch
    images, _ = model.preprocess([image])
    assert tuple(images.shape[2:]) == model.window.patch_size
    layer = _layer(model)
    result = model.explain([image], target_layers=layer, **REQUEST)
    reference = CAMExplainer(model.network, layer, REQUEST["methods"], score="probability")(
        images, class_idx=1, pixel_set="image"
    )
    for method, maps in reference.items():
        assert maps.amax() == 1
        assert (result.explanation.maps[method] - maps).abs().max() <= 1e-5


def _hand_loop(model, images: torch.Tensor, layer: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """nnU-Net's sliding window written out with nnU-Net's own pieces, in float32: the maps (one CAM per mirrored
    tile) and the logits. The predictor's slicers walk a 2d configuration's tiles slice by slice through a volume
    (``(slice(None), slice_index, *tile)``), so the loop serves both configurations."""
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    predictor = model.predictor
    patch = tuple(predictor.configuration_manager.patch_size)
    gaussian = compute_gaussian(patch, 1.0 / 8, 10, dtype=torch.float32, device=torch.device("cpu"))
    axes = [axis + 2 for axis in predictor.allowed_mirroring_axes]
    combinations = [c for size in range(1, len(axes) + 1) for c in itertools.combinations(axes, size)]
    explainer = CAMExplainer(model.network, layer, REQUEST["methods"], score="probability")
    total = {method: 0 for method in REQUEST["methods"]}
    total_logits = 0
    for weights in predictor.list_of_parameters:
        model.network.load_state_dict(weights)
        data, revert = pad_nd_image(images[0], patch, "constant", {"value": 0}, True, None)
        blended = {method: torch.zeros(1, 1, *data.shape[1:]) for method in REQUEST["methods"]}
        counts = torch.zeros(data.shape[1:])
        logits = torch.zeros(2, *data.shape[1:])
        for slicer in predictor._internal_get_sliding_window_slicers(data.shape[1:]):
            tile = data[slicer][None]
            tile_maps = {method: 0 for method in REQUEST["methods"]}
            with torch.no_grad():
                tile_logits = model.network(tile)
                for dims in combinations:
                    tile_logits += model.network(tile.flip(dims)).flip(dims)
            logits[slicer] += tile_logits[0] / (len(combinations) + 1) * gaussian
            for dims in [(), *combinations]:
                raw = explainer(tile.flip(dims) if dims else tile, class_idx=1, pixel_set="image", raw=True)
                for method, values in raw.items():
                    mode = "trilinear" if len(patch) == 3 else "bilinear"
                    upsampled = F.interpolate(values.clamp_min(0), size=patch, mode=mode, align_corners=False)
                    tile_maps[method] = tile_maps[method] + (upsampled.flip(dims) if dims else upsampled)
            for method in REQUEST["methods"]:
                blended[method][(slice(None), *slicer)] += tile_maps[method] / (len(combinations) + 1) * gaussian
            counts[slicer[1:]] += gaussian
        for method in REQUEST["methods"]:
            total[method] = total[method] + (blended[method] / counts)[(slice(None), *revert)]
        total_logits = total_logits + (logits / counts)[(slice(None), *revert[1:])]  # as nnU-Net reverts it
    folds = len(predictor.list_of_parameters)
    return {method: normalize_per_sample(values / folds) for method, values in total.items()}, total_logits / folds


def test_tiles_mirroring_and_folds_equal_a_hand_loop_over_nnunet_s_own_windows(model_folder, tmp_path):
    model = load_nnunet(model_folder, folds=(0, 1), mirroring=True)
    assert len(model.window.weights) == 2 and model.window.mirror_axes == (0, 1, 2)
    image = make_phantom_case(tmp_path / "wide_0000.nii.gz", seed=12, shape=(48, 32, 24))  # two tiles along x
    images, _ = model.preprocess([image])
    layer = _layer(model)
    own = {name: value.clone() for name, value in model.network.state_dict().items()}
    result = model.explain([image], target_layers=layer, **REQUEST)
    for name, value in model.network.state_dict().items():  # the folds' weights were loaded in turn, then restored
        assert torch.equal(value, own[name])
    expected, expected_logits = _hand_loop(model, images, layer)
    model.network.load_state_dict(own)
    for method, maps in expected.items():
        assert maps.amax() == 1
        assert (result.explanation.maps[method] - maps).abs().max() <= 1e-5
    assert (result.explanation.prediction[0] - expected_logits).abs().max() <= 1e-4
    # nnU-Net's own predictor accumulates its tiles and Gaussian weights in float16, whose smallest weights (tile
    # corners, about 1e-10 of the peak) underflow to one value: it differs from float32 only where overlapping tiles
    # both weigh almost nothing, and its segmentation is the same
    own_logits = model.predictor.predict_logits_from_preprocessed_data(images[0]).float()
    close = (result.explanation.prediction[0] - own_logits).abs() <= 2e-2
    assert close.float().mean() > 0.95
    same = result.explanation.prediction[0].argmax(dim=0) == own_logits.argmax(dim=0)
    assert same.float().mean() > 0.99


def test_a_2d_configuration_is_explained_slice_by_slice_as_nnunet_predicts_volumes(model_folder_2d, tmp_path):
    model = load_nnunet(model_folder_2d, folds=(0, 1), mirroring=True)
    assert model.window.patch_size == (32, 32) and model.window.mirror_axes == (0, 1)
    image = make_phantom_case(tmp_path / "slices_0000.nii.gz", seed=14, shape=(44, 40, 16))  # 2 x 2 tiles a slice
    images, _ = model.preprocess([image])
    assert images.ndim == 5
    layer = _layer(model)
    result = model.explain([image], target_layers=layer, **REQUEST)
    expected, expected_logits = _hand_loop(model, images, layer)
    for method, maps in expected.items():
        assert maps.amax() == 1
        assert (result.explanation.maps[method] - maps).abs().max() <= 1e-5
        assert result.maps[method].shape == nib.load(str(image)).shape[::-1]  # on the input grid, (z, y, x)
    assert (result.explanation.prediction[0] - expected_logits).abs().max() <= 1e-4
    own_logits = model.predictor.predict_logits_from_preprocessed_data(images[0]).float()
    assert (result.explanation.prediction[0].argmax(dim=0) == own_logits.argmax(dim=0)).float().mean() > 0.99


def test_the_command_writes_each_map_on_the_input_grid(model_folder, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    image = make_phantom_case(folder / "case_042_0000.nii.gz", seed=13, shape=(40, 36, 20))
    (folder / "case_042_mask.nii.gz").unlink()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "monai_xai.cli", "explain", str(model_folder), "--images", str(folder),
        "--output_dir", str(tmp_path / "out"), "--folds", "[0]", "--mirroring", "False", "--xai_class", "1",
        "--xai_methods", "['gradcam','saliency']",
    ]  # fmt: skip
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "class(es): 1 (lesion)" in run.stdout and "layer: `" in run.stdout
    written = nib.load(str(tmp_path / "out" / "case_042" / "case_042_gradcam.nii.gz"))
    original = nib.load(str(image))
    assert written.shape == original.shape
    np.testing.assert_allclose(written.affine, original.affine, atol=1e-4)
    values = np.asarray(written.dataobj)
    assert values.min() >= 0 and 0.5 < values.max() <= 1 + 1e-6
    # an input attribution (#32) through nnU-Net's tiles too, on the same grid
    attribution = nib.load(str(tmp_path / "out" / "case_042" / "case_042_saliency.nii.gz"))
    assert attribution.shape == original.shape and 0.5 < np.asarray(attribution.dataobj).max() <= 1 + 1e-6
    assert "Explained class(es): 1 (lesion)" in (tmp_path / "out" / "summary.md").read_text()


def test_the_study_takes_an_nnunet_folder_as_a_bundle(model_folder, tmp_path):
    from monai_xai.study import load_study, run_study

    cases = []
    for seed in (21, 22):
        image = make_phantom_case(tmp_path / f"case_{seed}_0000.nii.gz", seed=seed)
        cases.append({"image": str(image), "label": str(image).replace("_0000.nii.gz", "_mask.nii.gz")})
    (tmp_path / "datalist.json").write_text(json.dumps({"test": cases}))
    model = load_nnunet(model_folder, folds=(0,), mirroring=False)
    study = {
        "name": "nnunet-phantoms",
        "output_dir": str(tmp_path / "study"),
        "data": {"datalist": "datalist.json", "data_list_key": "test"},
        "bundles": [
            {"name": "nnunet", "path": str(model_folder), "weights": "fold_0/checkpoint_final.pth",
             "layers": [_layer(model)], "class": 1, "pixel_set": "image", "score": "probability"}
        ],
        "methods": ["gradcam"],
        "metrics": ["ehr_auc", "pointing_game"],
        "batch_size": 1,
        "sanity": {"cases": 1, "seed": 0},
        "statistics": {"bootstrap_resamples": 50},
    }  # fmt: skip
    (tmp_path / "study.json").write_text(json.dumps(study))
    spec = load_study(tmp_path / "study.json")
    assert spec.bundles[0].window.patch_size == model.window.patch_size  # explained with nnU-Net's tiles
    report = run_study(spec, progress=False)
    text = (report / "report.md").read_text()
    assert "nnunet" in text and "ehr_auc" in text


def test_monai_label_serves_the_folder_with_the_maps_of_the_python_api(model_folder, tmp_path):
    """A real ``monailabel start_server`` of the sample app with ``--conf bundles`` holding the trained-model folder:
    ``<folder>_explain`` is offered, its heatmap equals the Python API's map on the input file's grid (its affine
    too), its bins quantise that heatmap."""
    import requests

    from monai_xai.label import heat_bins, quantize_heatmap
    from tests.helpers.label import SAMPLE_APP, SERVER_START_TIMEOUT_S, server_command
    from tests.helpers.servers import free_port, running_server

    app, studies = tmp_path / "app", tmp_path / "studies"
    shutil.copytree(SAMPLE_APP, app, ignore=shutil.ignore_patterns("__pycache__", "logs", "model", "bin"))
    studies.mkdir()
    image = make_phantom_case(studies / "case_077_0000.nii.gz", seed=17, shape=(36, 32, 20))
    Path(str(image).replace("_0000.nii.gz", "_mask.nii.gz")).unlink()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        *server_command(), "start_server", "--app", str(app), "--studies", str(studies),
        "--host", "127.0.0.1", "--port", str(port), "--uvicorn_app", "monai_xai.label.server:app",
        "--conf", "bundles", str(model_folder.parent), "--conf", "models", model_folder.name,
        "--conf", "explain_methods", "hirescam,gradcam", "--conf", "zoo_source", "github", "--conf", "sam2", "false",
    ]  # fmt: skip
    env = {**os.environ, "MONAILABEL_PYEXE": sys.executable, "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    model = f"{model_folder.name}_explain"
    params = {"method": "hirescam", "class": "lesion", "pixel_set": "image", "score": "probability"}

    def infer(**extra) -> requests.Response:
        return requests.post(
            f"{url}/infer/{model}",
            params={"image": "case_077_0000", "output": "image"},
            files={"params": (None, json.dumps({**params, **extra}))},
            timeout=300,
        )

    log = tmp_path / "server.log"
    with running_server(command, f"{url}/info/", log, SERVER_START_TIMEOUT_S, env=env, cwd=tmp_path):
        info = requests.get(f"{url}/info/", timeout=30).json()
        assert set(info["models"]) == {model}
        assert info["labels"] == [heat_bin.name for heat_bin in heat_bins(10)]  # the bins, once (no class of its own)
        config = info["models"][model]["config"]
        layer = _layer(load_nnunet(model_folder))
        assert config["target_layer"][0] == layer and config["class"] == ["lesion", "background"]
        responses = {volume: infer(result_volume=volume, result_extension=".nii.gz") for volume in ("heatmap", "bins")}
        for volume, response in responses.items():
            assert response.status_code == 200, response.text[:2000]
            (tmp_path / f"{volume}.nii.gz").write_bytes(response.content)
    heatmap, bins = (nib.load(str(tmp_path / f"{volume}.nii.gz")) for volume in ("heatmap", "bins"))
    original = nib.load(str(image))
    assert heatmap.shape == original.shape
    np.testing.assert_allclose(heatmap.affine, original.affine, atol=1e-4)
    expected = load_nnunet(model_folder).explain(
        [image], methods=("hirescam",), class_idx=1, pixel_set="image", score="probability", target_layers=layer
    )
    reference = expected.maps["hirescam"].transpose()  # nnU-Net's (z, y, x) to NIfTI's (x, y, z)
    values = np.asarray(heatmap.dataobj)
    assert reference.max() == pytest.approx(1.0) and np.abs(values - reference).max() <= 1e-5
    assert np.array_equal(np.asarray(bins.dataobj), quantize_heatmap(torch.from_numpy(values), 10, 0.1).numpy())


def test_the_label_task_names_the_files_a_case_needs(model_folder, tmp_path):
    """A series folder, or a model of two channels sent a file without its sibling, is a 422 that says what to send."""
    from fastapi import HTTPException

    from monai_xai.label import NNUNetExplainTask

    task = NNUNetExplainTask(str(model_folder), {}, methods=["gradcam"])
    image = make_phantom_case(tmp_path / "case_001_0000.nii.gz", seed=3)
    assert task.channel_files(str(image)) == [str(image)]
    with pytest.raises(HTTPException, match="not a series folder") as raised:
        task.channel_files(str(tmp_path))
    assert raised.value.status_code == 422
    task._model("cpu").predictor.dataset_json["channel_names"] = {"0": "T1", "1": "T2"}
    with pytest.raises(HTTPException, match="takes 2 channel files per case"):
        task.channel_files(str(image))
    sibling = tmp_path / "case_001_0001.nii.gz"
    shutil.copy(image, sibling)
    assert task.channel_files(str(image)) == [str(image), str(sibling)]
