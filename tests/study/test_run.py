"""The small demo study end to end: every stored value, every report table and the MLflow runs checked against an
independent computation (the bundle explained case by case, scipy/statsmodels on the stored rows)."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from scipy import stats
from statsmodels.stats.multitest import multipletests

from monai_xai.bundle import load_trained_bundle
from monai_xai.cams import CAMExplainer
from monai_xai.cli import study
from monai_xai.metrics import SECONDS, heat_diff, pointing_game, saliency_iou
from monai_xai.sanity.cases import load_case
from monai_xai.study import StudySpec, load_study, run_study, study_cases, tracking_uri
from tests.helpers.studies import DEMO_STUDY, stored

# the demo classifier's layers the demo study explains: halfway through its dense block, and its end
MID, LAST = "features.denseblock1.denselayer2", "class_layers.relu"


def _scores(spec: StudySpec) -> pd.DataFrame:
    return stored(spec, "scores")


def test_every_case_method_layer_bundle_and_metric_is_stored(finished) -> None:
    spec, _ = finished
    scores = _scores(spec)
    cases = study_cases(spec.data, spec.output_dir)
    layers = sum(len(b.layers) for b in spec.bundles)
    assert len(scores) == len(cases) * layers * len(spec.methods) * (len(spec.metrics) + 1)
    seconds = scores[scores["metric"] == SECONDS]["value"]
    assert (seconds > 0).all()
    thresholds = stored(spec, "thresholds")
    assert len(thresholds) == layers * len(spec.methods) and thresholds["value"].isin(spec.iou_grid).all()
    assert len(stored(spec, "sanity")) == spec.sanity_cases * layers * len(spec.methods)


def test_stored_values_match_the_bundle_explained_case_by_case(finished) -> None:
    """Batched, seeded and keyed by case id, the stored values are those of each case explained alone."""
    spec, _ = finished
    scores = _scores(spec).set_index(["bundle", "layer", "method", "case_id", "metric"])["value"]
    thresholds = stored(spec, "thresholds").set_index(["bundle", "layer", "method"])["value"]
    bundle = spec.bundles[0]  # the classifier: each case explains its predicted class
    trained = load_trained_bundle(bundle.path)
    explainer = CAMExplainer(trained.network, MID, ["gradcam", "hirescam"])
    for case in study_cases(spec.data, spec.output_dir):
        image, label = load_case({"image": case.image, "region": case.region}, trained.preprocessing, "mask")
        image, region = image[None], (label[:1] > 0.5)[None].float()
        with torch.no_grad():
            predicted = trained.network(image).argmax(dim=1)
        maps = explainer(image, class_idx=predicted)
        for method in ("gradcam", "hirescam"):
            key = (bundle.name, MID, method, case.case_id)
            threshold = thresholds[(bundle.name, MID, method)]
            expected = {
                "heat_diff": heat_diff(maps[method], region),
                "iou": saliency_iou(maps[method], region, threshold=threshold),
                "pointing_game": pointing_game(maps[method], region, tolerance=3),
            }
            for metric, value in expected.items():
                np.testing.assert_allclose(scores[(*key, metric)], value.item(), rtol=1e-4, atol=1e-6, err_msg=key)


def test_report_statistics_match_scipy_and_statsmodels(finished) -> None:
    spec, folder = finished
    scores = _scores(spec)
    summary = pd.read_csv(folder / "summary.csv")
    for row in summary.itertuples():
        values = scores[
            (scores["bundle"] == row.bundle)
            & (scores["layer"] == row.layer)
            & (scores["method"] == row.method)
            & (scores["metric"] == row.metric)
        ]["value"].dropna()
        assert row.n == len(values)
        np.testing.assert_allclose(row.mean, values.mean(), rtol=1e-9)
        assert row.ci_low <= row.mean <= row.ci_high or np.isnan(row.ci_low)

    def per_case(bundle: str, layer: str, metric: str, method: str) -> pd.Series:
        part = scores[
            (scores["bundle"] == bundle)
            & (scores["layer"] == layer)
            & (scores["method"] == method)
            & (scores["metric"] == metric)
        ]
        return part.set_index("case_id")["value"]

    paired = pd.read_csv(folder / "paired_tests.csv")
    part = paired[(paired["bundle"] == "densenet-classifier") & (paired["layer"] == MID)]
    part = part[part["metric"] == "heat_diff"]
    pvalues = []
    for first, second in itertools.combinations(spec.methods, 2):
        a, b = (per_case("densenet-classifier", MID, "heat_diff", m) for m in (first, second))
        both = pd.concat([a, b], axis=1).dropna()  # cases where either value is undefined drop out of the pair
        pvalues.append(stats.ttest_rel(both.iloc[:, 0], both.iloc[:, 1]).pvalue)
    holm = multipletests(pvalues, method="holm")[1]
    np.testing.assert_allclose(part["t_pvalue_holm"], holm, rtol=1e-6)

    layers = pd.read_csv(folder / "anova_layers.csv")
    row = layers[(layers["metric"] == "heat_diff") & (layers["method"] == "gradcam")].iloc[0]
    groups = [per_case("densenet-classifier", layer, "heat_diff", "gradcam").dropna() for layer in (MID, LAST)]
    np.testing.assert_allclose(row["anova_pvalue"], stats.f_oneway(*groups).pvalue, rtol=1e-6)
    bundles = pd.read_csv(folder / "anova_bundles.csv")
    row = bundles[(bundles["metric"] == "heat_diff") & (bundles["method"] == "gradcam")].iloc[0]
    groups = [
        per_case("densenet-classifier", MID, "heat_diff", "gradcam").dropna(),
        per_case("unet-segmenter", "model.1.submodule", "heat_diff", "gradcam").dropna(),
    ]
    np.testing.assert_allclose(row["anova_pvalue"], stats.f_oneway(*groups).pvalue, rtol=1e-6)

    ranking = pd.read_csv(folder / "ranking.csv")
    assert set(ranking["metric"]) == {*spec.metrics, SECONDS}


def test_report_page_plots_and_mlflow_runs(finished) -> None:
    spec, folder = finished
    page = (folder / "report.md").read_text()
    for heading in (
        f"## densenet-classifier / {MID}",
        f"## densenet-classifier / {LAST}",
        "## unet-segmenter / model.1.submodule",
        "## Paired tests between methods",
        "## One-way ANOVA and Tukey HSD across bundles",
        "## One-way ANOVA and Tukey HSD across layers",
        "## Time per case",
        "## Model-randomisation check",
        "## Can these numbers be trusted?",
    ):
        assert heading in page
    assert page.index("## Can these numbers be trusted?") < page.index(f"## densenet-classifier / {MID}")
    reliability = pd.read_csv(folder / "reliability.csv")
    # every bundle, layer and metric checked on 3 cases x 3 methods (a region metric: the cases with a lesion)
    assert len(reliability) == 3 * len(spec.metrics) and (reliability["n_pairs"] <= 9).all()
    # 3 cases hold one lesion: a region metric has 3 pairs, too few to decide; the other metrics have 9
    region = reliability["metric"].isin(["heat_diff", "iou", "pointing_game"])
    assert reliability[region]["verdict"].str.startswith("undecided").all()
    assert (reliability[~region]["n_pairs"] == 9).all()
    for row in reliability[~region].itertuples():  # a metric that fails is marked where it ranks, one that passes not
        section = page.split(f"## {row.bundle} / {row.layer}")[1].split("\n## ")[0]
        assert (f"- {row.metric} ⚠ (" in section) == (row.verdict != "reliable")
    concordance = pd.read_csv(folder / "concordance.csv")
    assert set(concordance["metrics"]) <= {"all", "reliable"} and (concordance["n_methods"] == 3).all()
    for metric in [*spec.metrics, SECONDS]:
        assert (folder / "plots" / f"{metric}.png").stat().st_size > 10_000
    sanity = pd.read_csv(folder / "sanity.csv")
    failed = sanity[~sanity["passed"]]
    for row in failed.itertuples():  # a method failing the randomisation check is marked in its tables
        assert f"| {row.method} ✗ |" in page

    client = MlflowClient(tracking_uri(spec))
    experiment = client.get_experiment_by_name("monai_xai_studies")
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert len(parents) == 1 and parents[0].info.run_name == spec.name
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(run.info.run_name for run in children) == ["densenet-classifier", "unet-segmenter"]
    summary = pd.read_csv(folder / "summary.csv").set_index(["bundle", "metric", "layer", "method"])["mean"]
    child = next(run for run in children if run.info.run_name == "densenet-classifier")
    assert child.data.metrics[f"heat_diff.{LAST}.hirescam"] == pytest.approx(
        summary[("densenet-classifier", "heat_diff", LAST, "hirescam")]
    )
    reliability = pd.read_csv(folder / "reliability.csv").set_index(["bundle", "metric", "layer"])
    assert child.data.metrics[f"reliability_control_change.road_combined.{LAST}"] == pytest.approx(
        reliability.loc[("densenet-classifier", "road_combined", LAST), "control_change"]
    )
    concordance = pd.read_csv(folder / "concordance.csv").set_index(["bundle", "metrics", "layer"])
    assert child.data.metrics[f"kendalls_w.all.{LAST}"] == pytest.approx(
        concordance.loc[("densenet-classifier", "all", LAST), "kendalls_w"]
    )
    assert parents[0].data.params["reliability_cases"] == "3"
    artifacts = {item.path for item in client.list_artifacts(parents[0].info.run_id, "report")}
    assert {"report/report.md", "report/summary.csv", "report/plots"} <= artifacts


def test_cli_runs_a_study_on_a_given_datalist(finished, tmp_path: Path) -> None:
    """``monai-xai study <file> --datalist <json>``: the user's copy of the data set replaces the file's."""
    reference, _ = finished
    content = json.loads(DEMO_STUDY.read_text())
    content.update(
        bundles=[{**content["bundles"][0], "path": str(reference.bundles[0].path), "layers": [MID]}],
        methods=["gradcam"],
        metrics=["heat_diff"],
        metric_args={},
        sanity=False,
        mlflow=False,
    )
    study_file = tmp_path / "study.json"
    study_file.write_text(json.dumps(content))
    datalist = reference.output_dir / "phantoms" / "datalist.json"
    answer = study(str(study_file), output_dir=str(tmp_path / "out"), datalist=str(datalist), progress=False)
    assert "report.md" in answer
    spec = load_study(study_file, output_dir=str(tmp_path / "out"), data={"datalist": str(datalist)})
    mine = stored(spec, "scores").query("metric == 'heat_diff'").reset_index(drop=True)
    theirs = stored(reference, "scores").query(f"metric == 'heat_diff' and layer == '{MID}' and method == 'gradcam'")
    theirs = theirs[theirs["bundle"] == "densenet-classifier"].reset_index(drop=True)
    pd.testing.assert_frame_equal(mine, theirs)
    assert not (tmp_path / "out" / "mlflow").exists()


@pytest.mark.parametrize(("mode", "threshold"), [("fixed", 0.3), ("otsu", "otsu")])
def test_iou_threshold_modes(finished, tmp_path: Path, mode: str, threshold: float | str) -> None:
    """A fixed threshold, or each map's Otsu threshold, binarises the maps (no tuning pass, no stored thresholds)."""
    reference, _ = finished
    content = json.loads(DEMO_STUDY.read_text())
    bundle = {**content["bundles"][0], "path": str(reference.bundles[0].path), "layers": [MID]}
    datalist = str(reference.output_dir / "phantoms" / "datalist.json")
    iou = {"mode": mode, "value": threshold} if mode == "fixed" else {"mode": mode}
    spec = load_study(
        DEMO_STUDY,
        **{"output_dir": str(tmp_path), "data": {"datalist": datalist}, "bundles": [bundle], "methods": ["gradcam"]},
        **{"metrics": ["iou"], "metric_args": {}, "iou_threshold": iou, "sanity": False, "mlflow": False},
    )
    run_study(spec, progress=False)
    assert len(stored(spec, "thresholds")) == 0
    scores = stored(spec, "scores").query("metric == 'iou'").set_index("case_id")["value"]
    trained = load_trained_bundle(bundle["path"])
    explainer = CAMExplainer(trained.network, MID, ["gradcam"])
    for case in study_cases(spec.data, spec.output_dir):
        image, label = load_case({"image": case.image, "region": case.region}, trained.preprocessing, "mask")
        maps = explainer(image[None], class_idx=1)["gradcam"]
        expected = saliency_iou(maps, (label[:1] > 0.5)[None].float(), threshold=threshold)
        np.testing.assert_allclose(scores[case.case_id], expected.item(), rtol=1e-4, atol=1e-6)


def test_an_unreadable_case_costs_only_itself_and_a_resume_keeps_going(finished, tmp_path: Path) -> None:
    """A truncated image and a missing one: the study finishes, the report lists both with their files and the real
    error (not MONAI's "applying transform" wrapper), the other cases' values are the uninterrupted run's, and a
    resume runs again without error (and without recomputing)."""
    reference, _ = finished
    data = tmp_path / "phantoms"
    shutil.copytree(reference.output_dir / "phantoms", data)
    datalist = json.loads((data / "datalist.json").read_text())
    truncated, missing = (data / datalist["test"][k]["image"] for k in (0, 3))
    truncated.write_bytes(truncated.read_bytes()[:300])
    missing.unlink()
    content = json.loads(DEMO_STUDY.read_text())
    content.update(
        bundles=[{**content["bundles"][0], "path": str(reference.bundles[0].path), "layers": [MID]}],
        methods=["gradcam"],
        metrics=["heat_diff"],
        metric_args={},
        sanity={"cases": 2, "seed": 0},  # the first case, truncated, is a sanity case too
        mlflow=False,
        output_dir=str(tmp_path / "out"),
        data={**content["data"], "datalist": str(data / "datalist.json"), "phantom": None},
    )
    study_file = tmp_path / "study.json"
    study_file.write_text(json.dumps(content))
    spec = load_study(study_file)
    report = run_study(spec, progress=False)

    failed = pd.read_csv(report / "failed_cases.csv")
    assert sorted(failed["case_id"]) == sorted(datalist["test"][k]["image"] for k in (0, 3))
    reasons = dict(zip(failed["case_id"], failed["reason"]))
    assert reasons[datalist["test"][0]["image"]].startswith("LoadImaged: ")
    assert all("applying transform" not in reason for reason in reasons.values())
    assert str(truncated) in failed["files"].str.cat() and str(missing) in failed["files"].str.cat()
    text = (report / "report.md").read_text()
    assert "**2 case(s) could not be loaded and are left out of every table**" in text and str(missing) in text
    mine = stored(spec, "scores").query("metric == 'heat_diff'").set_index("case_id")["value"]
    summary = pd.read_csv(report / "summary.csv")
    assert summary.query("metric == 'heat_diff'")["n"].tolist() == [mine.notna().sum()]  # NaN: a case without lesion
    theirs = stored(reference, "scores").query(
        f"metric == 'heat_diff' and layer == '{MID}' and method == 'gradcam' and bundle == 'densenet-classifier'"
    )
    theirs = theirs.set_index("case_id")["value"]
    assert len(mine) == len(datalist["test"]) - 2
    pd.testing.assert_series_equal(mine.sort_index(), theirs.reindex(mine.index).sort_index(), check_names=False)

    before = stored(spec, "scores")
    again = run_study(load_study(study_file), progress=False)  # a resume: same files, same fingerprint
    assert again == report
    pd.testing.assert_frame_equal(stored(spec, "scores"), before)
    assert len(pd.read_csv(report / "failed_cases.csv")) == 2


def test_the_tracking_uri_is_the_file_s_else_the_environment_s_else_a_store_in_the_output_folder(tmp_path, monkeypatch):
    from types import SimpleNamespace

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = SimpleNamespace(mlflow={"experiment": "x"}, output_dir=str(tmp_path / "out"))
    assert tracking_uri(spec) == f"sqlite:///{(tmp_path / 'out' / 'mlflow' / 'mlruns.db').resolve()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking_uri(spec) == "http://127.0.0.1:5999"
    spec.mlflow["tracking_uri"] = "sqlite:////tmp/chosen.db"
    assert tracking_uri(spec) == "sqlite:////tmp/chosen.db"
