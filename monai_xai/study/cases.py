"""The cases of a study: read from its datalist (or phantoms written on first use), batched in a fixed order.

Batches are consecutive cases in datalist order, ``batch_size`` at a time, whatever the number of ranks: rank ``r``
of ``w`` takes batches ``r, r + w, ...``. Each batch's random streams are seeded from the batch alone, so a study
split over ranks, or resumed after a kill, computes exactly the values of one uninterrupted process.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from monai.data import MetaTensor

from monai_xai.data import ensure_phantom_dataset
from monai_xai.naming import CaseNames, strip_image_suffix
from monai_xai.sanity.cases import load_case
from monai_xai.study.spec import StudyData

__all__ = ["StudyCase", "CaseBatch", "study_cases", "batch_indices", "case_batches", "case_stems"]


@dataclass(frozen=True)
class StudyCase:
    """One case of the datalist.

    Attributes:
        case_id: the image path as the datalist writes it (unique within a study).
        image: absolute image path.
        region: absolute ground-truth path, or None.
        label: true class from the datalist's label key, or None.
    """

    case_id: str
    image: str
    region: str | None
    label: int | None


@dataclass
class CaseBatch:
    """Consecutive cases loaded with one bundle's preprocessing.

    Attributes:
        index: the batch's position in the study (its random streams are seeded from it).
        cases: the cases, in order.
        images: (B, C, *spatial) preprocessed images.
        labels: (B, L, *spatial) ground-truth labels as loaded (one zero channel for a case without one).
        affines: each preprocessed image's affine (None where the preprocessing keeps none).
    """

    index: int
    cases: list[StudyCase]
    images: torch.Tensor
    labels: torch.Tensor
    affines: list[torch.Tensor | None]


def _datalist(data: StudyData, output_dir: Path) -> Path:
    if data.datalist is not None:
        return Path(data.datalist)
    return ensure_phantom_dataset(output_dir / "phantoms", **dict(data.phantom))


def study_cases(data: StudyData, output_dir: Path, key: str | None = None) -> list[StudyCase]:
    """The cases of one datalist list (default: the test list ``data.data_list_key``).

    Raises:
        ValueError: the list is missing or empty, or a case has no image path.
    """
    path = _datalist(data, output_dir)
    key = key or data.data_list_key
    content = json.loads(path.read_text())
    items = content.get(key) if isinstance(content, dict) else None
    if not isinstance(items, list) or not items:
        lists = sorted(k for k, v in content.items() if isinstance(v, list)) if isinstance(content, dict) else []
        raise ValueError(f"datalist {path} has no cases under {key!r}; its lists are {lists}.")
    if key == data.data_list_key and data.n_cases is not None:
        items = items[: data.n_cases]
    cases = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("image"), str):
            raise ValueError(f"case {index} of {key!r} in {path} has no 'image' path: {item!r}.")
        region = item.get(data.region_key) if data.region_key else None
        label = item.get(data.label_key)
        cases.append(
            StudyCase(
                case_id=item["image"],
                image=str(path.parent / item["image"]),
                region=str(path.parent / region) if isinstance(region, str) else None,
                label=int(label) if isinstance(label, int | float) and not isinstance(label, bool) else None,
            )
        )
    ids = [case.case_id for case in cases]
    if len(set(ids)) != len(ids):
        raise ValueError(f"the {key!r} list of {path} names some images twice; a study's cases must be distinct.")
    return cases


def _plain(image: torch.Tensor) -> torch.Tensor:
    return image.as_tensor() if isinstance(image, MetaTensor) else image


def case_stems(cases: Sequence[StudyCase]) -> dict[str, str]:
    """``{case_id: file stem}``: each case's datalist path (without its image extension) as a safe, unique file name
    (:class:`~monai_xai.naming.CaseNames`), the same on every rank."""
    names = CaseNames()
    return {case.case_id: names.stem(strip_image_suffix(case.case_id)) for case in cases}


def batch_indices(n_cases: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[tuple[int, range]]:
    """``(batch index, case positions)`` of the batches that rank ``rank`` of ``world_size`` runs (``rank``,
    ``rank + world_size``, ...)."""
    starts = range(0, n_cases, batch_size)
    batches = [(index, range(start, min(start + batch_size, n_cases))) for index, start in enumerate(starts)]
    return batches[rank::world_size]


def case_batches(
    cases: Sequence[StudyCase],
    batches: Sequence[tuple[int, range]],
    preprocessing: Callable,
    region_key: str | None,
    device: torch.device,
) -> Iterator[CaseBatch]:
    """Load the given batches (their cases' images and labels through the bundle's ``preprocessing``), one at a time.

    Within a batch, cases whose preprocessed shapes differ from the first case's go to a batch of their own (same
    index), so that any preprocessing works.
    """
    for index, batch in batches:
        loaded = []
        for position in batch:
            case = cases[position]
            item = {"image": case.image} | ({"region": case.region} if case.region and region_key else {})
            loaded.append((case, *load_case(item, preprocessing, region_key or "label")))
        while loaded:
            shape = (loaded[0][1].shape, loaded[0][2].shape[1:])
            same = [item for item in loaded if (item[1].shape, item[2].shape[1:]) == shape]
            loaded = [item for item in loaded if (item[1].shape, item[2].shape[1:]) != shape]
            channels = max(item[2].shape[0] for item in same)
            labels = [torch.cat([item[2], item[2].new_zeros(channels - item[2].shape[0], *shape[1])]) for item in same]
            yield CaseBatch(
                index=index,
                cases=[item[0] for item in same],
                images=torch.stack([_plain(item[1]) for item in same]).to(device),
                labels=torch.stack(labels).to(device),
                affines=[item[1].affine if isinstance(item[1], MetaTensor) else None for item in same],
            )
