"""The MONAI Deploy example application run end to end on CPU with the SDK's own runner, in the deploy environment
(`make deploy-env`: monai-deploy-app-sdk 4, Holoscan, pydicom 3, highdicom 0.23), on a study folder holding a lesion
phantom CT series and a 2-slice scout; its objects are read back here with this environment's pydicom 2 and compared
with the same explanation computed in this process (:func:`monai_xai.deploy.explain_series`)."""

import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from scipy import ndimage

from monai_xai.bundle.loading import load_trained_bundle
from monai_xai.data.phantom import generate_phantom
from monai_xai.deploy import explain_series
from monai_xai.dicom import find_series, select_series, series_from_datasets
from monai_xai.explanation import ExplainRequest
from tests.helpers.dicom_series import write_ct_series

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "bundles" / "lesion_classification_3d"
# the deploy environment: `make deploy-env` builds it next to .venv; MONAI_XAI_DEPLOY_PYTHON names another one
DEPLOY_PYTHON = Path(os.environ.get("MONAI_XAI_DEPLOY_PYTHON", ROOT / ".venv-deploy" / "bin" / "python"))


def _holoscan_stack() -> None:
    """Holoscan asks for a 32 MiB stack (it warns of crashes below); raise the soft limit where the hard one allows."""
    _, hard = resource.getrlimit(resource.RLIMIT_STACK)
    wanted = 32 * 2**20
    if hard == resource.RLIM_INFINITY or hard >= wanted:
        resource.setrlimit(resource.RLIMIT_STACK, (wanted, hard))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A study folder: a lesion phantom CT series (oblique, shuffled, rescaled) and a 2-slice scout of one study."""
    root = tmp_path_factory.mktemp("deploy")
    phantom = generate_phantom(seed=3, lesion=True, num_lesions=1)
    study_uid = generate_uid()  # one study, two series: the selector must pick the phantom, not the scout
    source = write_ct_series(root / "input" / "ct", phantom.image.clip(0, 1), series_number=3, study_uid=study_uid)
    write_ct_series(root / "input" / "scout", phantom.image.clip(0, 1)[:, :, :2], series_number=1, study_uid=study_uid)
    return root, phantom, source


@pytest.fixture(scope="module")
def deployed(study):
    if not DEPLOY_PYTHON.is_file():
        message = f"no MONAI Deploy environment at {DEPLOY_PYTHON}: run `make deploy-env` (make test does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    root, phantom, source = study
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MONAI_XAI_METHODS": "hirescam"}
    run = subprocess.run(
        [str(DEPLOY_PYTHON), str(ROOT / "examples" / "deploy_explain" / "app.py"), "-i", str(root / "input"),
         "-o", str(root / "output"), "-m", str(BUNDLE)],
        env=environment, capture_output=True, text=True, timeout=600, preexec_fn=_holoscan_stack,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return root, phantom, source


def test_the_app_explains_the_largest_series_only_and_writes_pm_seg_sr(deployed):
    root, _, source = deployed
    assert [folder.name for folder in (root / "output").iterdir()] == [source.uid]
    written = sorted(path.name for path in (root / "output" / source.uid).iterdir())
    assert written == ["explanation_sr.dcm", "hirescam_pm.dcm", "hirescam_seg.dcm"]
    sr = pydicom.dcmread(root / "output" / source.uid / "explanation_sr.dcm")
    (section,) = sr.ContentSequence
    text = next(item.TextValue for item in section.ContentSequence if item.ValueType == "TEXT")
    assert text.startswith("Prediction: lesion")


def test_the_apps_map_is_this_processes_map_on_the_source_slices(deployed):
    root, phantom, source = deployed
    pm = pydicom.dcmread(root / "output" / source.uid / "hirescam_pm.dcm")
    sources = [frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
               for frame in pm.PerFrameFunctionalGroupsSequence]  # fmt: skip
    assert sources == list(source.sop_uids)
    frames = pm.pixel_array
    bundle = load_trained_bundle(BUNDLE)
    series = select_series(find_series(root / "input"), 3)
    request = ExplainRequest(["hirescam"], "class_layers.relu", class_idx=1)
    expected = explain_series(bundle.network, bundle.preprocessing, series, request).maps["hirescam"][0].numpy()
    assert np.abs(frames - expected.transpose(2, 1, 0)).max() <= 1e-5
    peak = np.unravel_index(np.argmax(frames), frames.shape)  # (slice, row, column)
    assert ndimage.binary_dilation(phantom.mask > 0, iterations=3)[peak[2], peak[1], peak[0]]


def test_explain_series_reads_in_memory_datasets_as_the_files(study):
    """What the operator hands over (the SDK's datasets, pixels in memory, no files) gives the files' maps."""
    root, _, _ = study
    series = select_series(find_series(root / "input"), 3)
    in_memory = series_from_datasets([pydicom.dcmread(path) for path in reversed(series.files)])
    bundle = load_trained_bundle(BUNDLE)
    from_files, from_memory = (
        explain_series(bundle.network, bundle.preprocessing, case, ExplainRequest(["gradcam"], "class_layers.relu"))
        for case in (series, in_memory)
    )
    assert from_files.class_idx == from_memory.class_idx == (1,)
    assert np.array_equal(from_files.maps["gradcam"].numpy(), from_memory.maps["gradcam"].numpy())
    assert sys.modules.get("holoscan") is None  # the plain functions need no deployment SDK
