"""The exported model returns the engine's map: TorchScript and ONNX graphs of the demo bundles compared with
``CAMExplainer`` on inputs other than the tracing example (a graph that froze the example's values would differ)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from monai_xai.bundle.loading import load_trained_bundle
from monai_xai.cams import CAMExplainer
from monai_xai.data.phantom import generate_phantom
from monai_xai.export import PREDICTED, explained_graph, export_onnx, export_torchscript

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
# the demo bundles' own explanation settings (configs/explain.json): layer, score, pixel set
CLASSIFIER = ("lesion_classification_3d", "class_layers.relu", "logit", None)
SEGMENTER = ("lesion_segmentation_3d", "model.1.submodule", "probability", "image")
TOLERANCE = 1e-5


def _phantoms(*lesions: bool) -> torch.Tensor:
    """(B, 1, 48, 48, 48) phantoms as the bundles' preprocessing gives them (48^3 at 1 x 1 x 1.5 mm, [0, 1])."""
    images = [generate_phantom(seed=10 + n, lesion=lesion).image.clip(0, 1) for n, lesion in enumerate(lesions)]
    return torch.from_numpy(np.stack(images)[:, None]).float()


@pytest.fixture(scope="module")
def networks():
    return {name: load_trained_bundle(BUNDLES / name).network for name, *_ in (CLASSIFIER, SEGMENTER)}


@pytest.mark.parametrize("method", ["hirescam", "gradcam"])
def test_torchscript_classifier_map_is_the_engines_for_predicted_and_requested_classes(networks, tmp_path, method):
    name, layer, score, _ = CLASSIFIER
    network = networks[name]
    example, images = _phantoms(False, False), _phantoms(True, False)
    graph = explained_graph(network, example, layer, method, score)
    path = export_torchscript(graph, example, tmp_path / "explained.pt")
    exported = torch.jit.load(str(path))
    engine = CAMExplainer(network, layer, method, score=score)
    with torch.no_grad():
        expected_outputs = network(images)
    # the two cases are predicted as different classes, so the predicted-class branch is exercised both ways
    assert expected_outputs.argmax(dim=1).tolist() == [1, 0]
    for requested in ([PREDICTED, PREDICTED], [0, 1], [1, 1]):
        with torch.no_grad():
            outputs, heat = exported(images, torch.tensor(requested))
        classes = None if requested[0] == PREDICTED else requested
        expected = engine(images, class_idx=classes)[method]
        torch.testing.assert_close(outputs, expected_outputs, atol=TOLERANCE, rtol=0)
        assert heat.shape == (2, 1, 48, 48, 48)
        assert (heat - expected).abs().max().item() <= TOLERANCE
        assert heat.amax().item() == pytest.approx(1.0)
    with pytest.raises(Exception, match=r"takes images of shape \[2, 1, 48, 48, 48\]"):
        exported(images[:1], torch.tensor([PREDICTED]))


@pytest.mark.parametrize("method", ["hirescam", "gradcam"])
def test_torchscript_segmenter_map_is_the_engines(networks, tmp_path, method):
    name, layer, score, pixel_set = SEGMENTER
    network = networks[name]
    example, images = _phantoms(False), _phantoms(True)
    graph = explained_graph(network, example, layer, method, score, pixel_set)
    exported = torch.jit.load(str(export_torchscript(graph, example, tmp_path / "explained.pt")))
    with torch.no_grad():
        outputs, heat = exported(images, torch.tensor([1]))
        expected_outputs = network(images)
    expected = CAMExplainer(network, layer, method, score=score)(images, class_idx=1, pixel_set=pixel_set)[method]
    torch.testing.assert_close(outputs, expected_outputs, atol=TOLERANCE, rtol=0)
    assert (heat - expected).abs().max().item() <= TOLERANCE
    assert heat.amax().item() == pytest.approx(1.0)


def test_segmenter_predicted_region_and_an_empty_one(networks):
    """Pixel set 'pred' traced: the lesion phantom's predicted lesion is explained as the engine does, and the
    lesion-free phantom, where no voxel is predicted as lesion, gets the engine's all-zero map."""
    name, layer, _, _ = SEGMENTER
    network = networks[name]
    images = _phantoms(True, False)
    graph = explained_graph(network, images, layer, "hirescam", "logit", "pred")
    outputs, heat = graph(images, torch.tensor([1, 1]))
    assert (outputs[0].argmax(0) == 1).any() and not (outputs[1].argmax(0) == 1).any()
    with pytest.warns(UserWarning, match="pixel set is empty for sample"):
        expected = CAMExplainer(network, layer, "hirescam")(images, class_idx=1, pixel_set="pred")["hirescam"]
    assert (heat - expected).abs().max().item() <= TOLERANCE
    assert heat[0].amax().item() == pytest.approx(1.0) and heat[1].abs().max().item() == 0.0


@pytest.mark.parametrize("bundle", [CLASSIFIER, SEGMENTER], ids=lambda spec: spec[0])
def test_onnx_map_is_the_engines(networks, tmp_path, bundle):
    onnxruntime = pytest.importorskip("onnxruntime")
    name, layer, score, pixel_set = bundle
    network = networks[name]
    example, images = _phantoms(False), _phantoms(True)
    requested = PREDICTED if pixel_set is None else 1
    graph = explained_graph(network, example, layer, "hirescam", score, pixel_set)
    path = export_onnx(graph, example, tmp_path / "explained.onnx")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs, heat = session.run(None, {"image": images.numpy(), "class_idx": np.array([requested], dtype=np.int64)})
    classes = None if requested == PREDICTED else requested
    expected = CAMExplainer(network, layer, "hirescam", score=score)(images, class_idx=classes, pixel_set=pixel_set)
    with torch.no_grad():
        np.testing.assert_allclose(outputs, network(images).numpy(), atol=TOLERANCE, rtol=0)
    assert np.abs(heat - expected["hirescam"].numpy()).max() <= TOLERANCE


def test_refuses_what_cannot_be_traced(networks):
    classifier, segmenter = networks[CLASSIFIER[0]], networks[SEGMENTER[0]]
    example = _phantoms(False)
    with pytest.raises(ValueError, match="only gradient-family"):
        explained_graph(classifier, example, CLASSIFIER[1], "scorecam")
    with pytest.raises(ValueError, match="cannot be traced"):
        explained_graph(segmenter, example, SEGMENTER[1], "hirescam", pixel_set="largest_component")
    with pytest.raises(ValueError, match="is for segmenters"):
        explained_graph(classifier, example, CLASSIFIER[1], "hirescam", pixel_set="image")
