"""Skip the cases that cannot be read, name them, and keep explaining the others.

A truncated ``.nii.gz``, a missing mask or a directory in a datalist makes MONAI's dataset raise inside the data
loader, which ends the whole evaluation and loses every finished case. Three pieces, put in place by
``configs/explain.json``, turn such a case into a record instead:

- :class:`ReadableCases` wraps the bundle's dataset: a case whose loading or preprocessing raises becomes
  ``{"xai_unreadable": {"case": ..., "files": [...], "reason": ...}}`` and a warning that names its files and why;
- :class:`ReadableCasesCollate` collates the readable cases of a batch as the bundle's collate would, and carries the
  unreadable ones along under ``"xai_unreadable"`` (the records travel with the batch, so this also works in data
  loader worker processes);
- :class:`SkipUnreadableCases`, the evaluator's ``iteration_update``, moves the records to
  ``engine.state.xai_unreadable`` and runs the evaluator's own iteration on the rest; a batch with no readable case
  gives an empty output, which every monai-xai handler accepts.

The :class:`~monai_xai.handlers.SaliencyWriter` lists the unreadable cases in the summary and ends the run with an error
only when no case could be read (or, with ``strict``, when any could not).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.data import list_data_collate
from torch.utils.data import Dataset

from monai_xai.dicom import register_dicom_reader
from monai_xai.enums import XAIKeys

__all__ = ["ReadableCases", "ReadableCasesCollate", "SkipUnreadableCases", "describe_case", "error_reason"]

logger = logging.getLogger(__name__)


_TRANSFORM_WRAPPER = re.compile(r"^applying transform <?([\w.]+)")


def error_reason(error: BaseException) -> str:
    """What went wrong with a case, in one line a person can act on: the error under MONAI's ``"applying transform
    <...LoadImaged object at 0x...>"`` wrappers, after the transform that raised it, e.g. ``"LoadImaged:
    ImageFileError: Cannot work out file type of "/data/ct.nii.gz""``."""
    transform = None
    while error.__cause__ is not None and (wrapper := _TRANSFORM_WRAPPER.match(str(error))):
        transform = wrapper.group(1).rsplit(".", 1)[-1]
        error = error.__cause__
    message = " ".join(str(error).split()) or "(no message)"
    reason = f"{type(error).__name__}: {message}"
    return f"{transform}: {reason}" if transform else reason


def describe_case(case: object, index: int) -> tuple[str, list[str]]:
    """A case's name (its image file's name, else ``case_<index>``) and the file paths it names."""
    files = (
        [str(value) for value in case.values() if isinstance(value, str | Path)] if isinstance(case, Mapping) else []
    )
    image = case.get("image") if isinstance(case, Mapping) else None
    name = Path(str(image)).name if isinstance(image, str | Path) else f"case_{index}"
    return name, files


class ReadableCases(Dataset):
    """A dataset whose unreadable cases are records instead of exceptions, and whose loaders also read DICOM series.

    Args:
        dataset: the bundle's dataset (a MONAI ``Dataset``: its ``data`` names each case's files).
        dicom_reader: a reader of DICOM series folders (``configs/explain.json``'s ``xai_dicom_reader``: a
            :class:`~monai_xai.dicom.DicomSeriesReader` picking ``xai_dicom_series``) registered on every
            ``LoadImage(d)`` of the dataset's ``transform``, so a datalist's ``image`` may be a series folder (or a list
            of one series' files) next to NIfTI files without the bundle's config naming a reader; other paths go to
            the readers they went to. A dataset that loads its cases when it is built (``CacheDataset``) has read them
            before this: name the reader in the bundle's ``LoadImaged`` instead. None: no reader added.
    """

    def __init__(self, dataset: Dataset, dicom_reader: Any = None) -> None:
        self.dataset = dataset
        if dicom_reader is not None and getattr(dataset, "transform", None) is not None:
            if register_dicom_reader(dataset.transform, dicom_reader):
                logger.debug("xai: DICOM series folders are read by %s", type(dicom_reader).__name__)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except Exception as error:  # any failure of one case must not end the run
            data = getattr(self.dataset, "data", None)
            case = data[index] if isinstance(data, Sequence) and 0 <= index < len(data) else None
            name, files = describe_case(case, index)
            reason = error_reason(error)
            logger.warning(f"skipping case {name} ({', '.join(files) or 'no file names'}): {reason}")
            return {XAIKeys.UNREADABLE: {"case": name, "files": files, "reason": reason}}


def _unreadable(item: object) -> bool:
    return isinstance(item, Mapping) and XAIKeys.UNREADABLE in item


class ReadableCasesCollate:
    """Collate the readable cases of a batch with ``collate``; carry the unreadable ones under ``"xai_unreadable"``.

    Args:
        collate: the bundle's collate function (MONAI's default ``list_data_collate``).
    """

    def __init__(self, collate: Callable[[list], Any] = list_data_collate) -> None:
        self.collate = collate

    def __call__(self, batch: list) -> Any:
        unreadable = [item[XAIKeys.UNREADABLE] for item in batch if _unreadable(item)]
        readable = [item for item in batch if not _unreadable(item)]
        collated = self.collate(readable) if readable else {}
        if unreadable:
            if not isinstance(collated, dict):
                raise TypeError(
                    f"cases of this batch could not be read ({unreadable}), and its readable cases do not collate to "
                    "a dict to carry that record: use dict samples (MONAI dictionary transforms)."
                )
            collated[XAIKeys.UNREADABLE] = unreadable
        return collated


class SkipUnreadableCases:
    """``iteration_update`` of an evaluator: record a batch's unreadable cases in ``engine.state.xai_unreadable``
    and run the evaluator's own iteration (MONAI's ``_iteration``) on its readable ones, or return an empty output
    when there are none."""

    def __call__(self, engine: Any, batchdata: Any) -> Any:
        if isinstance(batchdata, dict) and XAIKeys.UNREADABLE in batchdata:
            records = batchdata.pop(XAIKeys.UNREADABLE)
            if not hasattr(engine.state, XAIKeys.UNREADABLE):
                setattr(engine.state, XAIKeys.UNREADABLE, [])
            getattr(engine.state, XAIKeys.UNREADABLE).extend(records)
            if not batchdata:
                return {}
        return engine._iteration(engine, batchdata)
