"""``monai-xai`` command line (python-fire): ``demo``, ``explain`` a bundle, ``sanity`` checks, ``phantom`` data,
``study`` comparisons, ``datalist`` of a public data set, ``describe`` a saved heatmap in words.

Examples::

    monai-xai demo
    monai-xai explain bundles/lesion_segmentation_3d --xai_methods "['gradcam','hirescam']"
    monai-xai sanity bundles/lesion_classification_3d --n_cases 16 --figure randomisation.png
    monai-xai phantom outputs/phantoms --n_cases 20
    monai-xai study configs/studies/demo_phantoms.json
    monai-xai datalist brain_tumor_mri ~/data/brain-tumor-mri outputs/datalists/brain_tumor_mri.json
    monai-xai describe map.nii.gz --atlas aal.nii.gz --atlas_names aal.nii.txt --masks "{'tumour': 'seg.nii.gz'}"
"""

from __future__ import annotations

import functools
import inspect
import json
import time
import types
import typing
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import fire
from monai.bundle import ConfigParser

from monai_xai.atomic import check_writable
from monai_xai.bundle import OVERLAYS, explain_bundle, explain_config_files
from monai_xai.data import write_phantom_dataset
from monai_xai.demo import run_demo
from monai_xai.nnunet.model import is_nnunet_folder
from monai_xai.sanity import PHANTOM_CASES, bundle_sanity_checks, sanity_markdown, write_sanity_verdicts
from monai_xai.sanity.tracking import DEFAULT_SANITY_EXPERIMENT, track_sanity
from monai_xai.threads import apply_thread_policy
from monai_xai.utils import strict_value

__all__ = ["main", "datalist", "describe", "explain", "sanity", "phantom", "study", "strict_value", "typed_command"]


def _scalar_kind(annotation: Any) -> type | None:
    """``bool``, ``int`` or ``float`` for an annotation of that type (or that type or None), else None."""
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    kinds = [option for option in options if option is not type(None)]
    return kinds[0] if len(kinds) == 1 and kinds[0] in (bool, int, float) else None


def typed_command(function: Callable) -> Callable:
    """``function`` with its bool, int and float arguments read strictly (:func:`strict_value`), as a fire command."""
    signature = inspect.signature(function)
    hints = typing.get_type_hints(function.func if isinstance(function, partial) else function)

    @functools.wraps(function)
    def command(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        for name, value in bound.arguments.items():
            kind = _scalar_kind(hints.get(name))
            if kind is not None and value is not None:
                bound.arguments[name] = strict_value(value, kind, name)
        return function(*bound.args, **bound.kwargs)

    return command


def _typed_overrides(bundle_dir: str, overlays: Sequence[str], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` with each value of a config id whose default (in the bundle with the overlays) is a bool, an
    int or a float read strictly as that (``--xai_overwrite false`` is False, ``--xai_overwrite maybe`` an error)."""
    parser = ConfigParser()
    parser.read_config(explain_config_files(bundle_dir, overlays))
    typed = dict(override)
    for name, value in override.items():
        default = parser.get(name) if name in parser else None
        kind = next((kind for kind in (bool, int, float) if type(default) is kind), None)
        if kind is not None and value is not None:
            typed[name] = strict_value(value, kind, name)
    return typed


def explain(bundle_dir: str, overlays: Sequence[str] = OVERLAYS, **override: Any) -> str:
    """Explain a MONAI bundle's inference data with the config overlays; extra ``--id value`` flags override ids.
    A segmenter given no ``--xai_class`` is explained once per foreground class named in its metadata, each into
    ``<xai_output_dir>/<class name>/`` (see :func:`monai_xai.bundle.explain_bundle`).

    An nnU-Net v2 trained-model folder instead of a bundle is explained as nnU-Net predicts (``--images <folder or
    files>``, ``--output_dir``, ``--folds "[0,1]"``, ``--mirroring False``, ``--step``, ``--checkpoint``, and the
    ``--xai_*`` flags of the request; see :func:`monai_xai.nnunet.explain_nnunet`).

    Args:
        bundle_dir: bundle in model-zoo layout, or an nnU-Net v2 trained-model folder.
        overlays: overlay names (default: explain, xai_metrics, mlflow).

    Returns:
        per run, its results folder, the explained layer (and how it was chosen) and class(es) by name.
    """
    if is_nnunet_folder(bundle_dir):
        return explain_nnunet_folder(bundle_dir, **override)
    overlays = tuple(overlays)
    runs = explain_bundle(bundle_dir, overlays=overlays, **_typed_overrides(bundle_dir, overlays, override))
    return "\n".join(run.summary() for run in runs)


# the request's --xai_* flags as ExplainRequest fields, for the nnU-Net route
_REQUEST_FLAGS = {
    "xai_methods": "methods",
    "xai_class": "class_idx",
    "xai_target_layer": "target_layers",
    "xai_pixel_set": "pixel_set",
    "xai_score": "score",
    "xai_time_each_method": "time_each_method",
    "xai_attribution": "attribution",
}


def explain_nnunet_folder(model_folder: str, images: Any = None, output_dir: str | None = None, **options: Any) -> str:
    """``monai-xai explain`` of an nnU-Net v2 trained-model folder (:func:`monai_xai.nnunet.explain_nnunet`); the
    ``--xai_*`` flags name the request's fields as for a bundle, ``output_dir`` defaults to ``<model folder>/xai``.

    Raises:
        ValueError: no ``--images``, or a flag the nnU-Net route does not take.
    """
    from monai_xai.nnunet import explain_nnunet

    if images is None:
        raise ValueError(f"{model_folder} is an nnU-Net model folder: name the images to explain, --images <folder>.")
    request = {_REQUEST_FLAGS[key]: options.pop(key) for key in list(options) if key in _REQUEST_FLAGS}
    loading = {"folds", "checkpoint", "mirroring", "step", "device"}
    unknown = sorted(set(options) - loading)
    if unknown:
        raise ValueError(
            f"the nnU-Net route does not take {unknown}; it takes --images, --output_dir, --folds, --checkpoint, "
            f"--mirroring, --step, --device and {sorted(_REQUEST_FLAGS)}."
        )
    if "time_each_method" in request:
        request["time_each_method"] = strict_value(request["time_each_method"], bool, "xai_time_each_method")
    output_dir = output_dir or str(Path(model_folder) / "xai")
    # --mirroring and --step read strictly, as every bool/int/float argument of a command
    return typed_command(explain_nnunet)(model_folder, images, output_dir, **options, **request)


def sanity(
    bundle_dir: str,
    mask: str | None = None,
    verdicts_file: str | None = None,
    tracking_uri: str | None = None,
    experiment_name: str = DEFAULT_SANITY_EXPERIMENT,
    run_name: str | None = None,
    **options: Any,
) -> str:
    """The sanity checks of every method of a bundle, as Markdown tables with a line on the run.

    Args:
        bundle_dir: bundle in model-zoo layout with trained weights.
        mask: former name of ``--pixel_set``.
        verdicts_file: a JSON file for each method's verdicts, ``{method: {check: passed}}``
            (:func:`~monai_xai.sanity.sanity_verdicts`), which the bundle's ``--xai_sanity`` takes so that the
            descriptions name the checks each map passed and failed; checked writable before the run.
        tracking_uri: an MLflow tracking URI (e.g. ``sqlite:///mlruns.db``): the run's settings, each method's
            statistics and verdicts, the tables and pictures are logged there (:func:`~monai_xai.sanity.track_sanity`);
            None: not tracked.
        experiment_name: the MLflow experiment (created when missing).
        run_name: the MLflow run's name; None: the bundle folder's name.
        options: the arguments of :func:`monai_xai.sanity.bundle_sanity_checks` as flags, e.g. ``--n_cases 16``,
            ``--datalist d.json --data_list_key validation``, ``--methods "['gradcam']" --target_layer layer4``,
            ``--figure randomisation.png``, ``--maps_dir sanity_maps`` (every case's maps of both networks as NIfTI),
            ``--checks all`` (bottom-up, sMPRT, eMPRT and random logit too, with the controls: a second table).
    """
    if mask is not None:
        options.setdefault("pixel_set", mask)
    if verdicts_file is not None:
        check_writable(verdicts_file, "verdicts_file")
    run = inspect.signature(bundle_sanity_checks).bind(bundle_dir, **options)
    hints = typing.get_type_hints(bundle_sanity_checks)
    for name, value in run.arguments.items():
        kind = _scalar_kind(hints.get(name))
        if kind is not None and value is not None:
            run.arguments[name] = strict_value(value, kind, name)
    run.apply_defaults()
    given = run.arguments
    start = time.perf_counter()
    summary = bundle_sanity_checks(*run.args, **run.kwargs)
    elapsed = time.perf_counter() - start
    if given["datalist"] is None:
        cases = f"{given['n_cases'] or PHANTOM_CASES} positive phantoms (seed {given['seed']})"
    else:
        cases = f"the {given['data_list_key']!r} cases of {given['datalist']}"
        cases += f" (first {given['n_cases']})" if given["n_cases"] else ""
    shown = f"\nMaps of the first case, trained and randomised: {given['figure']}" if given["figure"] else ""
    if given["cascade_figure"]:
        shown += f"\nCascading randomisation of the first batch: {given['cascade_figure']}"
    if given["maps_dir"]:
        shown += f"\nEvery case's maps, trained and randomised: {given['maps_dir']}"
    if verdicts_file is not None:
        write_sanity_verdicts(summary, verdicts_file)
        shown += f"\nEach method's verdicts (for --xai_sanity): {verdicts_file}"
    if tracking_uri is not None:
        params = {name: value for name, value in given.items() if name not in ("progress", "device")}
        pictures = [path for path in (given["figure"], given["cascade_figure"]) if path]
        name = run_name or Path(bundle_dir).resolve().name
        if track_sanity(summary, tracking_uri, params, name, experiment_name, pictures) is not None:
            shown += f"\nTracked in MLflow at {tracking_uri}, experiment {experiment_name!r}, run {name!r}"
    return (
        f"{sanity_markdown(summary)}\n\n{cases}, {given['n_draws']} random maps per case and baseline, "
        f"re-initialisation seed {given['randomisation_seed']}; {elapsed:.0f} s.{shown}"
    )


def phantom(
    out_dir: str,
    n_cases: int = 20,
    seed: int = 0,
    dim: int = 3,
    positive_fraction: float = 0.5,
    overwrite: bool = False,
) -> str:
    """Write a phantom lesion data set (NIfTI volumes, lesion masks, MONAI datalist) and return the datalist path;
    a folder that already holds files is refused unless ``--overwrite True`` (which replaces the phantoms there)."""
    data = write_phantom_dataset(
        out_dir, n_cases, seed=seed, dim=dim, positive_fraction=positive_fraction, overwrite=overwrite
    )
    return str(data)


def study(
    study_file: str,
    output_dir: str | None = None,
    datalist: str | None = None,
    overwrite: bool = False,
    report_only: bool = False,
    device: str | None = None,
    progress: bool = True,
) -> str | None:
    """Run (or finish) a study file and write its report; under ``torchrun`` the ranks share the cases.

    Args:
        study_file: study JSON (see ``configs/studies/``).
        output_dir: replaces the file's ``output_dir``.
        datalist: replaces the file's ``data.datalist`` (e.g. the datalist a bundle's reader wrote for your copy of
            the public data set).
        overwrite: start again, deleting the stored rows and report of an earlier run of the file.
        report_only: only rewrite the report (and its MLflow runs) from the rows stored so far.
        device: replaces the file's ``device`` (e.g. ``cpu``).
        progress: progress bars.

    Returns:
        where the report is (rank 0), with its first lines.
    """
    from monai_xai.study import load_study, run_study, track_study, write_report

    data = None
    if datalist is not None:
        content = json.loads(Path(study_file).read_text())
        data = {**content.get("data", {}), "datalist": str(Path(datalist).resolve())}
        data.pop("phantom", None)
    spec = load_study(study_file, output_dir=output_dir, device=device, data=data)
    if report_only:
        report = write_report(spec)
        track_study(spec, report)
        folder = report.folder
    else:
        folder = run_study(spec, overwrite=overwrite, progress=progress)
    if folder is None:
        return None
    return f"report: {folder / 'report.md'} (tables *.csv, plots/), rows: {Path(spec.output_dir) / 'rows.sqlite'}"


def datalist(dataset: str, root: str, out_file: str, **kwargs: Any) -> str:
    """Write a MONAI datalist of a public data set as published (nothing is downloaded).

    Args:
        dataset: ``brain_tumor_mri`` (Kaggle Training/Testing/<class>), ``chest_xray_pneumonia`` (Kermany
            train|val|test/NORMAL|PNEUMONIA), ``ham10000``, ``isic2019``, ``siim_acr_pneumothorax`` (DICOM +
            train-rle.csv; masks written next to ``out_file``), ``kits23`` (case_XXXXX/imaging.nii.gz +
            segmentation.nii.gz, or an MSD-style folder with dataset.json; per-case split).
        root: the data set's folder.
        out_file: the datalist JSON to write (``training``, ``validation``, ``test`` lists).
        kwargs: the reader's options, e.g. ``--seed 1``, ``--mask_dir <folder>`` (ISIC task-1 masks),
            ``--balanced true`` (SIIM), ``--validation_fraction 0.2``, ``--test_fraction 0.2`` (kits23).

    Returns:
        one line: the file and the images per list and class.
    """
    from monai_xai import data

    writers = {
        "brain_tumor_mri": data.write_brain_tumor_mri_datalist,
        "chest_xray_pneumonia": data.write_chest_xray_datalist,
        "ham10000": partial(data.write_skin_lesion_datalist, "ham10000"),
        "isic2019": partial(data.write_skin_lesion_datalist, "isic2019"),
        "kits23": data.write_kits23_datalist,
        "siim_acr_pneumothorax": data.write_siim_pneumothorax_datalist,
    }
    if dataset not in writers:
        raise ValueError(f"unknown data set {dataset!r}; available: {sorted(writers)}.")
    return typed_command(writers[dataset])(root, out_file, **kwargs)


def describe(
    saliency_file: str,
    atlas: str | None = None,
    atlas_names: str | None = None,
    masks: dict[str, str] | None = None,
    as_json: bool = False,
    **options: Any,
) -> str:
    """Describe a saved heatmap in words (:func:`monai_xai.describe.describe_files`).

    Args:
        saliency_file: the map (NIfTI, ...), e.g. ``eval/xai/case_001/case_001_gradcam.nii.gz``.
        atlas: a label map in the same world space, resampled to the map's grid when needed.
        atlas_names: its names table (``<index> <name>`` lines).
        masks: ``{name: label file}`` whose overlap with the hot area is reported.
        as_json: print the numbers behind the words (``as_dict()``) as JSON instead of the sentence.
        options: other ``describe`` arguments, e.g. ``--threshold otsu``, ``--method gradcam``.

    Returns:
        the sentence, or the JSON record.
    """
    from monai_xai.describe import describe_files

    result = describe_files(saliency_file, atlas=atlas, atlas_names=atlas_names, masks=masks, **options)
    return json.dumps(result.as_dict(), indent=2, default=str) if as_json else result.text


def main() -> None:
    """Entry point of the ``monai-xai`` console script."""
    apply_thread_policy()
    fire.Fire(
        {
            "demo": typed_command(run_demo),
            "explain": explain,
            "sanity": sanity,
            "phantom": typed_command(phantom),
            "study": typed_command(study),
            "datalist": datalist,
            "describe": typed_command(describe),
        }
    )


if __name__ == "__main__":
    main()
