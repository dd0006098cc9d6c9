"""All the handlers that record and write an explanation run, in the order they must be attached: the Python
counterpart of the handler list of ``configs/explain.json``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.transforms import InvertibleTransform
from monai.utils import CommonKeys

from monai_xai.enums import EXPLAINED_CLASS, CaseName, MapGrid
from monai_xai.handlers.recorder import XAIRecorder
from monai_xai.handlers.report_writer import XAIReportWriter
from monai_xai.handlers.saliency_writer import SaliencyWriter
from monai_xai.handlers.table_writer import XAITableWriter

__all__ = ["explanation_writers"]


def explanation_writers(
    output_dir: str | Path,
    methods: str | Sequence[str],
    image_key: str = CommonKeys.IMAGE,
    overwrite: bool = False,
    strict: bool = False,
    class_names: Sequence[str] | None = None,
    sanity: Mapping[str, bool] | None = None,
    case_name: CaseName | str = CaseName.FILE,
    region_key: str | None = None,
    region_value: int | str | None = EXPLAINED_CLASS,
    channel_names: Sequence[str] | None = None,
    nifti: bool = True,
    png: bool = True,
    grid: MapGrid | str = MapGrid.PREPROCESSED,
    preprocessing: InvertibleTransform | None = None,
    report: bool = False,
) -> list[Any]:
    """The recorder and the writers of a run into ``output_dir``, in order, to attach after the ``XAIInferer``; the
    timing and metric handlers may come before or after them (they complete at the end of the epoch, before the
    tables are written).

    Args:
        output_dir, methods, image_key, overwrite, class_names, sanity, case_name, region_key, region_value,
            channel_names: the :class:`~monai_xai.handlers.XAIRecorder`'s.
        strict: the :class:`~monai_xai.handlers.XAITableWriter`'s.
        nifti, png, grid, preprocessing: the :class:`~monai_xai.handlers.SaliencyWriter`'s.
        report: also write the HTML reports (:class:`~monai_xai.handlers.XAIReportWriter`).

    Example::

        handlers = [inferer, XAITimingHandler(methods), *explanation_writers("eval/xai", methods, report=True)]
    """
    handlers: list[Any] = [
        XAIRecorder(
            output_dir,
            methods,
            image_key=image_key,
            overwrite=overwrite,
            class_names=class_names,
            sanity=sanity,
            case_name=case_name,
            region_key=region_key,
            region_value=region_value,
            channel_names=channel_names,
        ),
        SaliencyWriter(methods, image_key, nifti=nifti, png=png, grid=grid, preprocessing=preprocessing),
        XAITableWriter(strict=strict),
    ]
    if report:
        handlers.append(XAIReportWriter(methods, image_key, region_key=region_key, region_value=region_value))
    return handlers
