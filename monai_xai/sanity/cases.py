"""The cases a sanity check explains: a MONAI datalist read, preprocessed with the bundle's transforms, batched."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from monai.data import MetaTensor

from monai_xai.data.unreadable import error_reason

__all__ = ["CaseBatch", "read_datalist", "load_case", "case_batches"]


class CaseBatch(NamedTuple):
    """Consecutive cases of one size, preprocessed.

    Attributes:
        images: (B, C, *spatial) images.
        regions: (B, 1, *spatial) bool ground-truth regions (all False where a case has none).
        sources: each case's image file.
        affines: each preprocessed image's affine (None where the preprocessing keeps none).
    """

    images: torch.Tensor
    regions: torch.Tensor
    sources: list[str]
    affines: list[torch.Tensor | None]


def read_datalist(datalist: Path, data_list_key: str, region_key: str, n_cases: int | None) -> list[dict[str, str]]:
    """The first ``n_cases`` cases of a MONAI datalist as ``{"image": path[, "region": path of region_key]}``.

    Relative paths are taken relative to the datalist's folder (MONAI's ``load_decathlon_datalist`` convention).
    """
    if not datalist.is_file():
        raise FileNotFoundError(f"datalist {datalist} does not exist.")
    try:
        content = json.loads(datalist.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"datalist {datalist} is not valid JSON: {error}.") from error
    if not isinstance(content, dict) or not isinstance(content.get(data_list_key), list):
        keys = (
            sorted(key for key, value in content.items() if isinstance(value, list))
            if isinstance(content, dict)
            else []
        )
        raise ValueError(
            f"datalist {datalist} has no list of cases under {data_list_key!r}; its lists are {keys} "
            "(choose one with --data_list_key)."
        )
    items = content[data_list_key][:n_cases]
    if not items:
        raise ValueError(f"datalist {datalist} lists no cases under {data_list_key!r}.")
    cases = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("image"), str):
            raise ValueError(
                f"case {index} of {data_list_key!r} in {datalist} has no 'image' path: {item!r}; each case is "
                '{"image": "<file>", "<region key>": "<mask file>"} (the region is optional).'
            )
        case = {"image": str(datalist.parent / item["image"])}
        if isinstance(item.get(region_key), str):
            case["region"] = str(datalist.parent / item[region_key])
        cases.append(case)
    return cases


def load_case(
    case: Mapping[str, str], preprocessing: Callable, transform_key: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, *spatial) preprocessed image and its (L, *spatial) ground-truth label as loaded (a single zero channel
    where the case has none).

    The region file goes to ``preprocessing`` under ``transform_key``, the key the bundle's transforms load it with.
    """
    if "region" not in case:
        image = torch.as_tensor(preprocessing({"image": case["image"]})["image"]).float()
        return image, torch.zeros((1, *image.shape[1:]))
    loaded = preprocessing({"image": case["image"], transform_key: case["region"]})
    image = torch.as_tensor(loaded["image"]).float()
    region = loaded[transform_key]
    if isinstance(region, str) or not hasattr(region, "shape"):
        raise ValueError(
            f"the bundle's preprocessing does not load the ground-truth key {transform_key!r} ({case['region']}): "
            f"add it to the keys of its transforms (e.g. LoadImaged(keys=['image', '{transform_key}'])) so that the "
            "mask lands on the image's grid (the key is the bundle's explain.json `xai_region_key`, else --region_key)."
        )
    region = torch.as_tensor(region).float()
    if tuple(region.shape[1:]) != tuple(image.shape[1:]):
        raise ValueError(
            f"the ground-truth region of {case['image']} has spatial shape {tuple(region.shape[1:])} after the "
            f"bundle's preprocessing, the image {tuple(image.shape[1:])}; the preprocessing must resample both alike."
        )
    return image, region


def case_batches(
    cases: Sequence[Mapping[str, str]], preprocessing: Callable, transform_key: str, batch_size: int
) -> Iterator[CaseBatch]:
    """Batches of consecutive cases of the same size (:class:`CaseBatch`).

    Cases are loaded one batch at a time, so memory holds one batch of volumes whatever the number of cases. A case
    that cannot be loaded (a truncated or missing file, a preprocessing error) costs only itself: a warning names its
    files and the underlying error, and the checks run on the other cases.

    Raises:
        ValueError: no case could be loaded (naming the first one's files and error).
    """
    loaded: list[tuple[torch.Tensor, torch.Tensor, str]] = []
    failed: list[str] = []
    for case in cases:
        try:
            image, label = load_case(case, preprocessing, transform_key)
        except Exception as error:  # one unreadable case must cost only itself
            files = ", ".join(str(case[key]) for key in ("image", "region") if key in case)
            failed.append(f"{files}: {error_reason(error)}")
            warnings.warn(f"sanity checks: skipping case {files}: {error_reason(error)}", stacklevel=2)
            continue
        if loaded and (len(loaded) == batch_size or image.shape != loaded[0][0].shape):
            yield _batch(loaded)
            loaded = []
        loaded.append((image, label[:1] > 0.5, case["image"]))
    if not loaded and failed:
        raise ValueError(f"none of the {len(failed)} case(s) could be loaded, e.g. {failed[0]}")
    if loaded:
        yield _batch(loaded)


def _batch(loaded: list[tuple[torch.Tensor, torch.Tensor, str]]) -> CaseBatch:
    images, regions, sources = zip(*loaded)
    affines = [image.affine if isinstance(image, MetaTensor) else None for image in images]
    plain = [image.as_tensor() if isinstance(image, MetaTensor) else image for image in images]
    return CaseBatch(torch.stack(plain), torch.stack(regions), list(sources), affines)
