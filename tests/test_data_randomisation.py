"""The data randomisation check (Adebayo et al. 2018): the demo bundles train on permuted labels from their own
train.json, and `bundle_sanity_checks` compares the maps of the real network with those of the permuted-label one."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser, run
from torch import nn

from monai_xai.data import permuted_labels
from monai_xai.enums import SanityCheck
from monai_xai.explanation import ExplainRequest, ExplainStep
from monai_xai.sanity import bundle_sanity_checks
from monai_xai.sanity.trust import batch_trust_statistics
from tests.helpers.engines import REPO

CLASSIFICATION = REPO / "bundles" / "lesion_classification_3d"
SEGMENTATION = REPO / "bundles" / "lesion_segmentation_3d"
TINY_PHANTOM = {"n_cases": 8, "seed": 0, "positive_fraction": 0.5, "split": [0.5, 0.25, 0.25]}


def test_permuted_labels_permute_the_values_and_copy_the_items():
    items = [{"image": f"case_{k}.nii.gz", "label": k} for k in range(20)]
    permuted = permuted_labels(items, "label", seed=3)
    assert [item["image"] for item in permuted] == [item["image"] for item in items]
    assert sorted(item["label"] for item in permuted) == list(range(20))
    assert [item["label"] for item in permuted] != list(range(20))
    assert permuted == permuted_labels(items, "label", seed=3) and items[0]["label"] == 0  # seeded; input untouched
    with pytest.raises(KeyError, match=r"item 1 of the list has no 'label'"):
        permuted_labels([{"label": 0}, {"image": "x"}])


@pytest.mark.parametrize("bundle", [CLASSIFICATION, SEGMENTATION], ids=lambda b: b.name)
def test_train_json_permutes_the_training_labels_only_when_asked(bundle, tmp_path):
    def training_list(permute: bool | str) -> list[dict]:
        parser = ConfigParser()
        parser.read_config(str(bundle / "configs" / "train.json"))
        parser.update({"dataset_dir": str(tmp_path), "phantom": TINY_PHANTOM, "permute_labels": permute})
        return parser.get_parsed_content("train_datalist")

    plain, permuted = training_list(False), training_list(True)
    # python-fire passes `--permute_labels false` as the string "false": read strictly, not by truthiness
    assert training_list("false") == plain and training_list("true") == permuted
    with pytest.raises(RuntimeError) as refused:  # MONAI's config parser wraps the strict parse's error
        training_list("maybe")
    assert "--permute_labels takes true or false, got 'maybe'" in str(refused.value.__cause__)
    assert [item["image"] for item in permuted] == [item["image"] for item in plain]
    assert sorted(map(str, (item["label"] for item in permuted))) == sorted(map(str, (i["label"] for i in plain)))
    assert [item["label"] for item in permuted] != [item["label"] for item in plain]


def test_the_data_check_of_the_same_network_is_a_perfect_rank_agreement():
    """A "permuted-label" network that is the trained one gives the same maps: |Spearman| = 1, the check fails."""
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                            nn.Linear(4, 2)).eval()  # fmt: skip
    images = torch.rand(2, 1, 8, 8, 8)
    step = ExplainStep(ExplainRequest("gradcam", "1"))
    trained = step(network, images)
    statistics = batch_trust_statistics(
        network, images, step, trained, {}, network, [SanityCheck.DATA], permuted_network=network
    )
    assert torch.allclose(statistics[SanityCheck.DATA]["gradcam"], torch.ones(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="permute_labels true"):
        batch_trust_statistics(network, images, step, trained, {}, network, [SanityCheck.DATA])


@pytest.fixture(scope="module")
def permuted_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo classifier trained for one epoch on 4 phantoms with permuted labels, by its own train.json."""
    root = tmp_path_factory.mktemp("permuted")
    run(
        config_file=str(CLASSIFICATION / "configs" / "train.json"),
        meta_file=str(CLASSIFICATION / "configs" / "metadata.json"),
        bundle_root=str(root),
        dataset_dir=str(root / "data"),
        phantom=TINY_PHANTOM,
        permute_labels=True,
        ckpt_dir=str(root / "permuted_labels"),
        **{"train#trainer#max_epochs": 1},
    )
    return root / "permuted_labels" / "model.pt"


def test_sanity_checks_compare_with_the_permuted_label_network(permuted_weights):
    rows = bundle_sanity_checks(
        CLASSIFICATION, n_cases=2, methods=["gradcam"], checks=["data"], permuted_weights=permuted_weights,
        progress=False, n_draws=2,
    )  # fmt: skip
    verdicts = {row.method: row.checks[SanityCheck.DATA] for row in rows}
    assert set(verdicts) == {"gradcam", "control_centre_gaussian", "control_sobel", "control_random"}
    for control in ("control_centre_gaussian", "control_sobel", "control_random"):  # network-blind: same maps
        assert verdicts[control].statistic == pytest.approx(1.0) and not verdicts[control].passed
    assert 0.0 <= verdicts["gradcam"].statistic <= 1.0 and not math.isnan(verdicts["gradcam"].ci_low)


def test_the_data_check_needs_its_weights_and_all_leaves_it_out_without_them(tmp_path):
    with pytest.raises(ValueError, match=r"permuted_weights.*--permute_labels true"):
        bundle_sanity_checks(CLASSIFICATION, n_cases=1, methods=["gradcam"], checks=["data"], progress=False)
    with pytest.raises(ValueError, match="permuted_weights"):
        bundle_sanity_checks(
            CLASSIFICATION, n_cases=1, methods=["gradcam"], checks=["data"], permuted_weights=tmp_path / "none.pt",
            progress=False,
        )  # fmt: skip
    rows = bundle_sanity_checks(
        CLASSIFICATION, n_cases=1, methods=["gradcam"], checks="all", controls=False, progress=False, n_draws=2,
        n_noise=2,
    )  # fmt: skip
    assert set(rows[0].checks) == set(SanityCheck) - {SanityCheck.DATA}
