"""The demo classifier's acceptance figures on the shipped weights (its README), as a regression guard.

On 60 held-out phantoms (seed 4242, half with lesions; training used seed 0): accuracy >= 0.95, and on the 30 with a
lesion every gradient method's maps at the bundle's layer hit the lesion (pointing game, the bundle's tolerance) in
>= 90 % of the cases, reach >= 5x a random map's EHR-AUC, and change when the weights are re-initialised.
"""

import json
from pathlib import Path

import pytest
import torch

from monai_xai.bundle import load_trained_bundle
from monai_xai.cams import CAMExplainer, get_method, method_names
from monai_xai.data import write_phantom_dataset
from monai_xai.metrics import pointing_game
from monai_xai.sanity import bundle_sanity_checks
from monai_xai.sanity.cases import load_case

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "lesion_classification_3d"
MIN_ACCURACY = 0.95
MIN_POINTING_GAME = 0.9
MIN_EHR_RATIO = 5.0


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    folder = tmp_path_factory.mktemp("held_out")
    datalist = write_phantom_dataset(folder, 60, seed=4242, positive_fraction=0.5, split=(0.0, 0.0, 1.0))
    return datalist, json.loads(datalist.read_text())["test"]


@pytest.fixture(scope="module")
def bundle():
    return load_trained_bundle(BUNDLE)


def _gradient_methods() -> list[str]:
    """The seven gradient CAMs whose figures the bundle's README states (Seg-XRes-CAM and Seg-Eigen-CAM came later)."""
    return [method for method in method_names("gradient") if get_method(method).needs_gradients][:7]


def test_accuracy_on_held_out_phantoms(bundle, held_out):
    datalist, items = held_out
    images = torch.stack(
        [load_case({"image": str(datalist.parent / item["image"])}, bundle.preprocessing, "mask")[0] for item in items]
    )
    labels = torch.tensor([item["label"] for item in items])
    with torch.no_grad():
        predicted = bundle.network(images).argmax(dim=1)
    assert (predicted == labels).float().mean().item() >= MIN_ACCURACY


def test_gradient_methods_find_the_lesion_and_pass_the_sanity_checks(bundle, held_out):
    datalist, items = held_out
    methods = _gradient_methods()
    assert len(methods) == 7
    positives = [item for item in items if item["label"] == 1]
    cases = [
        load_case(
            {"image": str(datalist.parent / item["image"]), "region": str(datalist.parent / item["mask"])},
            bundle.preprocessing,
            "mask",
        )
        for item in positives
    ]
    images = torch.stack([image for image, _ in cases])
    regions = torch.stack([region for _, region in cases]) > 0
    settings = bundle.settings
    maps = CAMExplainer(bundle.network, settings.target_layers, methods, score=settings.score)(
        images, class_idx=settings.class_idx
    )
    tolerance = settings.metric_args["pointing_game"]["tolerance"]
    pointing = {method: pointing_game(maps[method], regions, tolerance=tolerance).mean().item() for method in methods}

    positive_list = datalist.parent / "positives.json"
    positive_list.write_text(json.dumps({"test": positives}))
    rows = bundle_sanity_checks(BUNDLE, datalist=positive_list, region_key="mask", methods=methods, progress=False)
    failing = [
        (row.method, round(pointing[row.method], 2), round(row.localisation_ratio, 1), round(row.spearman, 2))
        for row in rows
        if pointing[row.method] < MIN_POINTING_GAME
        or row.localisation_ratio < MIN_EHR_RATIO
        or not row.randomisation_passed
    ]
    assert not failing, f"(method, pointing game, EHR-AUC over random, Spearman) failing acceptance: {failing}"
