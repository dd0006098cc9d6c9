"""The demo bundles exported to TorchScript (#33): ``models/model.ts`` only, as model-zoo bundles ship it for MONAI
Label, explained by ``monai-xai explain`` and by the step.

TorchScript modules run no Python hooks on their layers (checked here: a traced module accepts one and never calls
it; a scripted one refuses it or, with newer torch, never calls it either), so no CAM can be computed; the run says
so in one clear line and explains the network with input attributions (#32's Saliency and InputXGradient through
Captum, which need no layer), whose maps are checked against autograd by hand."""

import logging
import shutil

import pytest
import torch
from monai.bundle import ConfigParser

from monai_xai.bundle import explain_bundle
from monai_xai.explanation import INPUT_GRADIENT_METHODS, explain, methods_for
from tests.helpers.engines import REPO

pytestmark = pytest.mark.slow

TINY_PHANTOM = {"phantom#n_cases": 8, "phantom#split": [0.5, 0.25, 0.25]}


def _export(bundle_name: str, tmp_path) -> tuple:
    """A copy of the demo bundle whose only weights are the traced network (``models/model.ts``)."""
    bundle = shutil.copytree(
        REPO / "bundles" / bundle_name, tmp_path / bundle_name, ignore=shutil.ignore_patterns("eval")
    )
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", weights_only=True))
    network.eval()
    example = torch.rand(1, 1, 48, 48, 48)
    traced = torch.jit.trace(network, example)
    traced.save(str(bundle / "models" / "model.ts"))
    (bundle / "models" / "model.pt").unlink()
    return bundle, network, traced, example


def test_torchscript_layers_run_no_hooks(tmp_path):
    _, network, traced, example = _export("lesion_classification_3d", tmp_path)
    fired = []
    layer = next(module for name, module in traced.named_modules() if name)
    layer.register_forward_hook(lambda *args: fired.append(1))
    traced(example)
    assert not fired  # accepted, never called: a CAM could not see the layer
    scripted = torch.jit.script(torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3)))
    try:  # refused by older torch; accepted and never called by newer (2.15)
        scripted[0].register_forward_hook(lambda *args: fired.append(1))
    except RuntimeError as error:
        assert "not supported on ScriptModules" in str(error)
    scripted(torch.rand(1, 1, 8, 8, 8))
    assert not fired


def test_input_gradients_of_a_torchscript_network_are_autograd_s(tmp_path):
    _, network, traced, example = _export("lesion_classification_3d", tmp_path)
    methods = methods_for(traced, ["gradcam", "hirescam"])
    assert methods == INPUT_GRADIENT_METHODS
    explained = explain(traced, example, methods=methods, class_idx=1)
    pixels = example.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(network(pixels)[:, 1].sum(), pixels)  # the Python network, by hand
    # #32's attributions: the signed attribution per input channel, its map sum_c |a_c| / max (one channel here)
    by_hand = {"saliency": grad, "input_x_gradient": example * grad}
    for method, values in by_hand.items():
        torch.testing.assert_close(explained.attributions[method], values, atol=1e-6, rtol=1e-4)
        relevance = values.abs().sum(dim=1, keepdim=True)
        torch.testing.assert_close(explained.maps[method], relevance / relevance.max(), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="TorchScript module, whose layers run no forward hooks"):
        explain(traced, example, methods=["gradcam"], class_idx=1)


@pytest.mark.parametrize("bundle_name", ["lesion_classification_3d", "lesion_segmentation_3d"])
def test_a_torchscript_bundle_is_explained_with_a_clear_line(bundle_name, tmp_path, caplog):
    bundle, *_ = _export(bundle_name, tmp_path)
    # the bundle's configs/logging.conf (logging.config.fileConfig) replaces the root logger's handlers, pytest's
    # capture among them: capture at the package's logger as well
    package_logger = logging.getLogger("monai_xai")
    package_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="monai_xai"):
            (run,) = explain_bundle(
                bundle,
                dataset_dir=str(tmp_path / "phantoms"),
                xai_output_dir=str(tmp_path / "xai"),
                xai_tracking_uri=f"sqlite:///{tmp_path / 'mlruns.db'}",
                xai_metrics=["ehr_auc"],
                **TINY_PHANTOM,
            )
    finally:
        package_logger.removeHandler(caplog.handler)
    assert "ships models/model.ts and no models/model.pt" in caplog.text
    assert "is a TorchScript module" in caplog.text and "saliency, input_x_gradient" in caplog.text
    assert run.records.methods == INPUT_GRADIENT_METHODS
    assert run.records.layers.layers == {"saliency": "input", "input_x_gradient": "input"}
    case = run.records.cases[0]
    assert (tmp_path / "xai" / case.name / f"{case.name}_saliency.nii.gz").is_file()
