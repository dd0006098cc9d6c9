import pytest
import torch

from monai_xai.cams.layers import group_methods_by_layer, resolve_layers
from tests.helpers.nets import TinyResNet, tiny_unet3d


def test_names_and_modules_resolve_to_the_same_layers_in_order():
    model = TinyResNet(spatial_dims=2)
    resolved = resolve_layers(model, ["layer4", model.layer2, "layer3.conv1"])
    assert [name for name, _ in resolved] == ["layer4", "layer2", "layer3.conv1"]
    assert [module for _, module in resolved] == [model.layer4, model.layer2, model.layer3.conv1]
    assert resolve_layers(model, "layer4") == [("layer4", model.layer4)]


def test_monai_unet_dotted_name():
    unet = tiny_unet3d()
    ((name, module),) = resolve_layers(unet, "model.1.submodule")
    assert name == "model.1.submodule" and module is unet.model[1].submodule


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match=r"no layer named 'layer5' \(close matches: \[.*'layer4'"):
        resolve_layers(TinyResNet(spatial_dims=2), "layer5")
    with pytest.raises(ValueError, match="no close match.*named_modules"):
        resolve_layers(TinyResNet(spatial_dims=2), "zzzzzz")


def test_foreign_module_empty_list_and_wrong_type():
    model = TinyResNet(spatial_dims=2)
    with pytest.raises(ValueError, match="not a submodule"):
        resolve_layers(model, torch.nn.Conv2d(1, 1, 3))
    with pytest.raises(ValueError, match="target_layers is empty"):
        resolve_layers(model, [])
    with pytest.raises(TypeError, match="layer names .* or nn.Module.*quote"):
        resolve_layers(model, [1.1])
    with pytest.raises(TypeError, match="got bool"):
        resolve_layers(model, [True])


def test_int_is_the_name_of_a_sequential_child():
    """fire parses ``--target_layer 0`` as the int 0; it means the layer named "0"."""
    head = torch.nn.Conv3d(2, 2, 1)
    model = torch.nn.Sequential(tiny_unet3d(), head)
    assert resolve_layers(model, 1) == [("1", head)]
    assert resolve_layers(model, [0, "1"]) == [("0", model[0]), ("1", head)]
    with pytest.raises(ValueError, match="no layer named '2'"):
        resolve_layers(model, 2)


def test_methods_grouped_by_layer_in_order_of_first_use():
    model = TinyResNet(spatial_dims=2)
    methods = ["gradcam", "hirescam", "xgradcam", "layercam", "eigencam", "scorecam"]
    assert group_methods_by_layer("layer4", methods) == [("layer4", tuple(methods))]
    per_method = {
        "hirescam": "layer4",
        "gradcam": ["layer3", "layer4"],
        "xgradcam": ("layer3", "layer4"),  # the same layers as a tuple: the same pass
        "layercam": "layer4",
        "eigencam": model.layer2,
        "scorecam": 4,  # the layer named "4" (an nn.Sequential child), not "layer4"
    }
    assert group_methods_by_layer(per_method, methods) == [
        (["layer3", "layer4"], ("gradcam", "xgradcam")),
        ("layer4", ("hirescam", "layercam")),
        (model.layer2, ("eigencam",)),
        (4, ("scorecam",)),
    ]
    assert group_methods_by_layer({"gradcam": 0, "hirescam": "0"}, ["gradcam", "hirescam"]) == [
        (0, ("gradcam", "hirescam"))
    ]


def test_per_method_mapping_must_name_exactly_the_methods():
    with pytest.raises(ValueError, match=r"missing \['hirescam'\], not among the methods \['layercam'\]"):
        group_methods_by_layer({"gradcam": "layer4", "layercam": "layer3"}, ["gradcam", "hirescam"])
