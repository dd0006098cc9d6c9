"""Hypothesis fuzzing of every metric and of the readers: whatever the shapes, dtypes and values (NaN, Inf, empty and
full masks, flat and signed maps), a call either returns one value per sample, in range or NaN where the metric is
undefined, or raises a ValueError/TypeError that says what is wrong. Nothing else: no IndexError, no raw torch
RuntimeError, no silently wrong shape."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch
from fastapi import HTTPException
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monai_xai.bundle import ExplainSettings
from monai_xai.label.guard import parse_params
from monai_xai.label.options import InvalidExplainRequest, parse_explain_options
from monai_xai.metrics import (
    deletion_insertion,
    ehr_auc,
    heat_diff,
    kl_divergence,
    nss,
    pearson_cc,
    pointing_game,
    relevance_mass_accuracy,
    road,
    saliency_dice,
    saliency_iou,
    similarity_sim,
)
from monai_xai.metrics.imputation import NoisyLinearImputer
from monai_xai.sanity.cases import read_datalist
from monai_xai.study import study_from_dict
from monai_xai.utils import label_mask
from tests.helpers.segmenters import intensity_segmenter
from tests.helpers.studies import DEMO_STUDY

# FUZZ_EXAMPLES=1000 for a longer search than the test suite's
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# metric -> range of its defined values
MAP_METRICS = {
    "ehr_auc": (ehr_auc, (0.0, 1.0)),
    "heat_diff": (heat_diff, (-1.0, 1.0)),
    "iou": (lambda s, m: saliency_iou(s, m, threshold=0.5), (0.0, 1.0)),
    "dice": (lambda s, m: saliency_dice(s, m, top_fraction=0.2), (0.0, 1.0)),
    "pointing_game": (pointing_game, (0.0, 1.0)),
    "relevance_mass": (relevance_mass_accuracy, (0.0, 1.0)),
}
SIMILARITY = {
    "kl": (kl_divergence, (0.0, float("inf"))),
    "cc": (pearson_cc, (-1.0, 1.0)),
    "sim": (similarity_sim, (0.0, 1.0)),
    "nss": (nss, (float("-inf"), float("inf"))),
}
DTYPES = [torch.float16, torch.float32, torch.float64, torch.int64, torch.bool]


@st.composite
def maps_and_masks(draw):
    """A (saliency, mask) pair, usually well formed, sometimes not: other shapes, dtypes, NaN/Inf, odd masks."""
    dims = draw(st.sampled_from([2, 3]))
    batch = draw(st.integers(1, 3))
    spatial = tuple(draw(st.lists(st.integers(1, 6), min_size=dims, max_size=dims)))
    kind = draw(st.sampled_from(["uniform", "flat", "signed", "nan", "inf", "large"]))
    saliency = torch.rand(batch, 1, *spatial, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))))
    if kind == "flat":
        saliency = torch.full_like(saliency, draw(st.sampled_from([0.0, 0.5, 1.0])))
    elif kind == "signed":
        saliency = saliency - 0.5
    elif kind in ("nan", "inf"):
        saliency.view(-1)[0] = float("nan") if kind == "nan" else float("inf")
    elif kind == "large":
        saliency = saliency * 300
    saliency = saliency.to(draw(st.sampled_from(DTYPES)))
    mask_kind = draw(st.sampled_from(["random", "empty", "full", "soft", "wrong shape", "not a tensor"]))
    mask = torch.rand(batch, 1, *spatial) > 0.6
    if mask_kind == "empty":
        mask = torch.zeros_like(mask)
    elif mask_kind == "full":
        mask = torch.ones_like(mask)
    elif mask_kind == "soft":
        mask = torch.rand(batch, 1, *spatial)
    elif mask_kind == "wrong shape":
        mask = torch.ones(batch, 2, *spatial, dtype=torch.bool)
    elif mask_kind == "not a tensor":
        mask = mask.tolist()
    if draw(st.booleans()) and draw(st.booleans()):
        saliency = saliency[:, 0]  # a missing channel dim
    return saliency, mask


def assert_well_defined(values: object, batch: int, low: float, high: float) -> None:
    assert isinstance(values, torch.Tensor) and values.shape == (batch,), values
    defined = values[~torch.isnan(values)].double()
    assert bool(((defined >= low - 1e-3) & (defined <= high + 1e-3)).all()), values


@FUZZ
@given(data=maps_and_masks(), name=st.sampled_from(sorted(MAP_METRICS)))
def test_localisation_metrics(data, name):
    saliency, mask = data
    metric, (low, high) = MAP_METRICS[name]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = metric(saliency, mask)
    except (ValueError, TypeError) as error:
        assert str(error)
        return
    if name == "heat_diff":  # a difference of means: within the map's own range of values
        span = float(saliency.double().amax() - saliency.double().amin())
        low, high = -span, span
    assert_well_defined(values, saliency.shape[0], low, high)
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:
        empty = ~mask.flatten(1).any(dim=1)
        assert bool(torch.isnan(values[empty]).all()), "an empty ground truth is undefined, not a score"


@FUZZ
@given(data=maps_and_masks(), name=st.sampled_from(sorted(SIMILARITY)))
def test_saliency_similarity_metrics(data, name):
    saliency, reference = data
    metric, (low, high) = SIMILARITY[name]
    if isinstance(reference, torch.Tensor) and name != "nss":
        reference = reference.float()  # a gaze density, not a mask
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = metric(saliency, reference)
    except (ValueError, TypeError) as error:
        assert str(error)
        return
    assert_well_defined(values, saliency.shape[0], low, high)


@settings(max_examples=25, deadline=None)
@given(
    spatial=st.lists(st.integers(4, 7), min_size=2, max_size=3),
    map_kind=st.sampled_from(["random", "flat", "nan"]),
    pixel_set=st.sampled_from(["pred", "image", "empty", "bad"]),
    order=st.sampled_from(["morf", "lerf"]),
)
def test_perturbation_metrics(spatial, map_kind, pixel_set, order):
    """ROAD and deletion on a segmenter whose logits are a known function of intensity."""
    model = intensity_segmenter(len(spatial))
    images = torch.rand(2, 1, *spatial)
    saliency = {"random": torch.rand(2, 1, *spatial), "flat": torch.zeros(2, 1, *spatial)}.get(
        map_kind, torch.full((2, 1, *spatial), float("nan"))
    )
    chosen = {"empty": torch.zeros(2, 1, *spatial), "bad": "everything"}.get(pixel_set, pixel_set)
    for call in (
        lambda: road(model, images, saliency, 1, (50,), order, chosen, imputer=NoisyLinearImputer(0.0)).score_change,
        lambda: deletion_insertion(model, images, saliency, 1, steps=3, pixel_set=chosen).auc,
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values = call()
        except (ValueError, TypeError) as error:
            assert str(error)
            continue
        assert values.shape[0] == 2
        if pixel_set == "empty":
            assert bool(torch.isnan(values).all())
        assert not bool(torch.isinf(values).any())


@FUZZ
@given(
    label=st.lists(st.integers(-1, 4), min_size=1, max_size=24),
    value=st.one_of(st.none(), st.integers(-1, 5), st.floats(allow_nan=True), st.booleans()),
    one_hot=st.booleans(),
)
def test_label_masks(label, value, one_hot):
    labels = torch.tensor(label).reshape(1, 1, -1, 1)
    if one_hot:
        labels = torch.nn.functional.one_hot(labels.clamp(0, 4)[:, 0], 5).movedim(-1, 1)
    try:
        mask = label_mask(labels, value)
    except (ValueError, TypeError) as error:
        assert str(error)
        return
    assert mask.shape == (1, 1, len(label), 1) and set(mask.unique().tolist()) <= {0.0, 1.0}


JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 300), st.floats(allow_nan=False), st.text(max_size=12)),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@FUZZ
@given(case=JSON_VALUES, key=st.sampled_from(["test", "validation", "other"]), region=st.sampled_from(["mask", "x"]))
def test_datalist_reader(tmp_path_factory, case, key, region):
    folder = tmp_path_factory.mktemp("datalist")
    path = folder / "datalist.json"
    path.write_text(json.dumps({"test": [case] if not isinstance(case, list) else case}))
    try:
        cases = read_datalist(path, key, region, None)
    except (ValueError, FileNotFoundError) as error:
        assert str(error)
        return
    assert cases and all(set(item) <= {"image", "region"} and isinstance(item["image"], str) for item in cases)


@FUZZ
@given(params=st.one_of(JSON_VALUES, st.text(max_size=20)))
def test_label_request_params(params):
    raw = params if isinstance(params, str) else json.dumps(params)
    try:
        parsed = parse_params(raw)
    except HTTPException as error:
        assert error.status_code == 422 and error.detail
        return
    assert isinstance(parsed, dict)
    try:
        options = parse_explain_options(parsed, ["gradcam", "hirescam"], ["layer4"], ["no lesion", "lesion"], False)
    except InvalidExplainRequest as error:
        assert str(error)
        return
    offered = options.method in ("gradcam", "hirescam") or options.method.startswith("grad-cam:")
    assert offered and options.request.class_idx in (None, 0, 1)
    assert 1 <= options.n_bins <= 255 and 0 <= options.min_heat <= 1


@FUZZ
@given(values=st.dictionaries(st.sampled_from(sorted(ExplainSettings.CONFIG_IDS)), JSON_VALUES, max_size=4))
def test_explain_settings(values):
    try:
        settings_ = ExplainSettings(**values)
    except (ValueError, TypeError) as error:
        assert str(error)
        return
    assert isinstance(settings_.methods, tuple) and isinstance(settings_.metrics, tuple)


NUMBERS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=6), st.lists(st.floats())
)
STUDY_SECTIONS = {
    "statistics": st.fixed_dictionaries(
        {}, optional={key: NUMBERS for key in ("alpha", "confidence_level", "bootstrap_resamples", "seed")}
    ),
    "sanity": st.one_of(st.booleans(), st.fixed_dictionaries({}, optional={"cases": NUMBERS, "seed": NUMBERS})),
    "iou_threshold": st.fixed_dictionaries(
        {"mode": st.sampled_from(["otsu", "fixed", "tuned", "best"])}, optional={"value": NUMBERS, "grid": NUMBERS}
    ),
    "seed": NUMBERS,
    "batch_size": NUMBERS,
    "methods": st.one_of(NUMBERS, st.lists(st.sampled_from(["gradcam", "gradcam", "nope", ""]), max_size=3)),
    "unexpected": JSON_VALUES,
}


@FUZZ
@given(changes=st.fixed_dictionaries({}, optional=STUDY_SECTIONS))
def test_study_spec(tmp_path_factory, changes):
    """A study file with hostile values in its sections either loads or fails with a ValueError that names the
    study file (never a raw TypeError/OverflowError from deep inside); the bundle path is missing on purpose, so a
    study whose other entries are valid fails naming it."""
    content = {**json.loads(DEMO_STUDY.read_text()), **changes}
    content["bundles"] = [{"name": "b", "path": "no_such_bundle", "layers": ["layer1"]}]
    root = tmp_path_factory.getbasetemp()
    with pytest.raises(ValueError, match=r"^study fuzz.json: ") as error:
        study_from_dict(content, root, source="fuzz.json")
    message = str(error.value)
    named = ("no_such_bundle", "statistics", "sanity", "iou_threshold", "'seed'", "method", "unknown keys")
    assert any(word in message for word in named), message


@pytest.mark.parametrize("name", sorted(MAP_METRICS))
def test_a_known_bad_input_of_every_metric_names_the_problem(name):
    metric = MAP_METRICS[name][0]
    with pytest.raises(ValueError, match="NaN or infinite"):
        metric(torch.full((1, 1, 4, 4), float("nan")), torch.ones(1, 1, 4, 4, dtype=torch.bool))
