"""One DICOM series explained by a trained bundle, and the explanation written as DICOM objects of that series: the
two steps a deployment runs (MONAI Deploy's operators in :mod:`monai_xai.deploy.operators` are thin adapters of
these, which need no deployment SDK)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, LoadImage, LoadImaged
from torch import nn

from monai_xai.describe import describe
from monai_xai.dicom import (
    DicomSeries,
    DicomSeriesReader,
    write_explanation_sr,
    write_heat_seg,
    write_parametric_map,
)
from monai_xai.explanation import ExplainRequest, ExplainStep

__all__ = ["SeriesExplanation", "explain_series", "write_series_explanation", "without_loader"]


@dataclass(frozen=True)
class SeriesExplanation:
    """The maps of one series, on its own grid.

    Attributes:
        series: the explained series (its datasets are what the written objects reference).
        maps: method -> (1, columns, rows, slices) MetaTensor in [0, 1] on the series' grid (RAS affine), in
            :class:`~monai_xai.dicom.DicomSeriesReader`'s layout: what the DICOM writers take.
        class_idx: the explained class (the predicted one when none was asked for a classifier), or the classes of a
            segmenter explained together.
        probabilities: (C,) softmax of a classifier's outputs; None for a segmenter.
        descriptions: method -> the map in words (:func:`monai_xai.describe.describe`).
    """

    series: DicomSeries
    maps: dict[str, MetaTensor]
    class_idx: tuple[int, ...]
    probabilities: torch.Tensor | None = None
    descriptions: dict[str, str] = field(default_factory=dict)


def without_loader(preprocessing: Callable) -> Compose:
    """A bundle's preprocessing without its ``LoadImage(d)``, for an image already in memory (a MetaTensor with the
    meta a reader gives); its other transforms, and so their inverse, are the bundle's own."""
    transforms = preprocessing.transforms if isinstance(preprocessing, Compose) else [preprocessing]
    return Compose([transform for transform in transforms if not isinstance(transform, LoadImage | LoadImaged)])


def explain_series(
    network: nn.Module,
    preprocessing: Callable,
    series: DicomSeries,
    request: ExplainRequest | ExplainStep,
    class_names: Sequence[str] | None = None,
) -> SeriesExplanation:
    """Explain ``series`` with a trained network through the bundle's own preprocessing and the explanation step
    (:class:`~monai_xai.explanation.ExplainStep`, as every other front door), maps put back on the series' grid
    through the inverse of that preprocessing.

    Args:
        network: the trained network (eval mode).
        preprocessing: the bundle's ``preprocessing`` (a ``LoadImaged`` in it is left out: the series is read here).
        series: the series to explain (files or in-memory datasets with pixels).
        request: what to explain (methods, layer, class, pixel set, score, the bundle's window), e.g.
            ``bundle.settings.request(methods=["hirescam"], window=bundle.window)``; or the step of earlier series
            (its chosen layer is kept).
        class_names: the classes' names, for the descriptions.

    Returns:
        a :class:`SeriesExplanation`.
    """
    array, meta = DicomSeriesReader().get_data(series)
    meta["filename_or_obj"] = str(series.files[0].parent) if series.files[0].name else series.uid
    transform = without_loader(preprocessing)
    image = transform({"image": MetaTensor(torch.from_numpy(array), meta=meta)})["image"]
    batch = image[None].to(next(network.parameters()).device)
    step = request if isinstance(request, ExplainStep) else ExplainStep(request)
    explanation = step(network, batch)
    classes = [int(k) for k in explanation.class_idx[0].reshape(-1).tolist()]
    explained = classes[0] if len(classes) == 1 else None
    probabilities = explanation.probabilities()
    probabilities = None if probabilities is None or probabilities.shape[1] < 2 else probabilities[0].cpu()
    inverse = Invertd("map", transform, orig_keys="image", nearest_interp=False, to_tensor=True)
    on_series, descriptions = {}, {}
    for method, heat in explanation.maps.items():
        restored = inverse({"map": MetaTensor(heat[0].cpu(), meta=image.meta), "image": image})["map"].clamp(0, 1)
        on_series[method] = restored
        descriptions[method] = describe(
            restored, restored.affine, probabilities=probabilities, class_names=class_names, explained=explained,
            method=method,
        ).text  # fmt: skip
    return SeriesExplanation(series, on_series, tuple(classes), probabilities, descriptions)


def write_series_explanation(
    folder: str | Path,
    explanation: SeriesExplanation,
    n_bins: int = 10,
    min_heat: float = 0.1,
    model_name: str = "monai-xai",
) -> list[Path]:
    """Write per method a Parametric Map and a SEG of the heat bins, and one SR with every method's description (and
    the classifier's probabilities as numbers) referencing them, into ``folder``.

    Files: ``<method>_pm.dcm``, ``<method>_seg.dcm``, ``explanation_sr.dcm``.

    Returns:
        the files written.
    """
    folder = Path(folder)
    written, references, metrics = [], {}, {}
    for number, (method, heat) in enumerate(explanation.maps.items()):
        pm_path, seg_path = folder / f"{method}_pm.dcm", folder / f"{method}_seg.dcm"
        pm = write_parametric_map(pm_path, heat, explanation.series, method, series_number=9001 + 10 * number,
                                  model_name=model_name)  # fmt: skip
        seg = write_heat_seg(seg_path, heat, explanation.series, method, n_bins, min_heat,
                             series_number=9002 + 10 * number, model_name=model_name)  # fmt: skip
        references[method] = [pm, seg]
        written += [pm_path, seg_path]
        if explanation.probabilities is not None:
            metrics[method] = {f"probability_{k}": float(p) for k, p in enumerate(explanation.probabilities)}
    sr_path = folder / "explanation_sr.dcm"
    write_explanation_sr(sr_path, explanation.series, metrics, explanation.descriptions, references)
    return [*written, sr_path]
