"""Image-classification data sets published as one folder per class: listing, layout checks, summaries, 3 channels.

Public 2D data sets such as Kaggle's "Brain Tumor MRI Dataset" and Kermany's "Chest X-Ray Images (Pneumonia)" come as
``<split>/<class>/<image>`` folders. :func:`list_class_folders` turns one split folder into datalist entries
``{"image": <absolute path str>, "label": <index of the class>}``, in a fixed order (classes in the given order, then
file names sorted), and refuses a layout that differs from the published one instead of returning an empty list.

Image files are ``.jpg``, ``.jpeg`` and ``.png`` in any letter case (``.JPG``, ``.JPEG``); dot-files (``.DS_Store``,
macOS ``._`` forks), ``__MACOSX`` folders and any other file are ignored.

The JPEGs of these sets mix grayscale and RGB. MONAI's ``LoadImage`` reads them with its ``PILReader``, which (with its
default ``reverse_indexing=True``) gives arrays indexed ``(W, H)`` like ITK, so with ``ensure_channel_first=True`` a
grayscale image is ``(1, W, H)`` and an RGB one ``(3, W, H)``. :class:`ToRGBd` (or :class:`ToRGB`) makes every image
``(3, W, H)`` so that a bundle can batch them (after resizing; the sizes differ too)::

    Compose([
        LoadImaged(keys="image", ensure_channel_first=True),
        ToRGBd(keys="image"),
        Resized(keys="image", spatial_size=(224, 224)),
        ScaleIntensityd(keys="image"),
    ])
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

__all__ = [
    "IMAGE_EXTENSIONS",
    "is_image_file",
    "absolute_folder",
    "list_class_folders",
    "ToRGB",
    "ToRGBd",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
# folders and files that archives made on macOS add and that are never data
_IGNORED_NAMES = frozenset({"__MACOSX"})


def _ignored(path: Path) -> bool:
    return path.name.startswith(".") or path.name in _IGNORED_NAMES


def is_image_file(path: Path) -> bool:
    """True for a file (not a dot-file) whose suffix is one of :data:`IMAGE_EXTENSIONS`, in any letter case."""
    return path.is_file() and not _ignored(path) and path.suffix.lower() in IMAGE_EXTENSIONS


def absolute_folder(root: str | Path, dataset: str, layout: str) -> Path:
    """``root`` made absolute (symbolic links kept), after checking that it is an existing folder.

    Args:
        root: the data set's folder as the user gave it.
        dataset: the data set's name, for the error message.
        layout: the published layout, for the error message.

    Raises:
        FileNotFoundError: ``root`` does not exist or is not a folder.
    """
    path = Path(root).expanduser().absolute()
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise FileNotFoundError(
            f"{dataset}: root {path} {what}. The published layout is {layout}; download and unpack the data set, "
            "then pass the folder that holds that layout as root."
        )
    return path


def list_class_folders(
    split_dir: str | Path,
    classes: Sequence[str],
    dataset: str,
    layout: str,
) -> list[dict[str, Any]]:
    """Datalist entries of one split folder holding one sub-folder of images per class.

    Args:
        split_dir: the split's folder, e.g. ``<root>/Training``; its sub-folders must be exactly ``classes`` (besides
            ignored ``__MACOSX`` and dot-folders).
        classes: the class folder names; an entry's ``label`` is its class's index in this sequence.
        dataset: the data set's name, for error messages.
        layout: the published layout, for error messages.

    Returns:
        ``[{"image": <absolute path str>, "label": int}, ...]``, class by class in the order of ``classes``, each
        class's files sorted by name; the same folder always gives the same list.

    Raises:
        FileNotFoundError: ``split_dir`` or one of the class folders is missing.
        ValueError: a class folder holds no image, or ``split_dir`` holds a folder that is not a known class.
    """
    split_dir = Path(split_dir).absolute()
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"{dataset}: split folder {split_dir} is missing. The published layout is {layout}; pass as root the "
            "folder that holds the split folders, with their original names."
        )
    found = sorted(entry.name for entry in split_dir.iterdir() if entry.is_dir() and not _ignored(entry))
    unknown = [name for name in found if name not in classes]
    if unknown:
        raise ValueError(
            f"{dataset}: {split_dir} holds folders {unknown} that are not classes of this data set (the classes are "
            f"{list(classes)}, with these exact names). The published layout is {layout}; move or delete the other "
            "folders, or rename them if they are a class under another name."
        )
    entries: list[dict[str, Any]] = []
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            raise FileNotFoundError(
                f"{dataset}: class folder {class_dir} is missing. The published layout is {layout}; the data set "
                "looks incomplete, unpack the original archive again."
            )
        images = sorted((path for path in class_dir.iterdir() if is_image_file(path)), key=lambda path: path.name)
        if not images:
            raise ValueError(
                f"{dataset}: class folder {class_dir} holds no image (files ending in {', '.join(IMAGE_EXTENSIONS)}, "
                f"any letter case). The published layout is {layout}; the data set looks incomplete, unpack the "
                "original archive again."
            )
        entries.extend({"image": str(path), "label": label} for path in images)
    return entries


class ToRGB(Transform):
    """Make a channel-first 2D image 3 channels (RGB), so that grayscale and colour images batch together.

    Channels in, channels out: 1 (grayscale) is repeated 3 times; 2 (grayscale + alpha) keeps the first, repeated;
    3 is returned as is; 4 (RGBA) drops the alpha channel. Meant after
    ``LoadImage(ensure_channel_first=True)``: the output is ``(3, W, H)`` for MONAI's ``PILReader`` (see the module
    docstring). A ``MetaTensor`` keeps its metadata; numpy arrays stay numpy arrays.

    Raises:
        ValueError: on another number of channels.
    """

    def __call__(self, img: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        channels = img.shape[0]
        if channels == 3:
            return img
        if channels in (1, 2):
            grey = img[:1]
            return grey.repeat(3, 1, *([1] * (img.ndim - 2))) if isinstance(img, torch.Tensor) else grey.repeat(3, 0)
        if channels == 4:
            return img[:3]
        raise ValueError(
            f"ToRGB needs a channel-first image with 1, 2, 3 or 4 channels, got shape {tuple(img.shape)}; load it "
            "with LoadImage(ensure_channel_first=True)."
        )


class ToRGBd(MapTransform):
    """Dictionary version of :class:`ToRGB`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.to_rgb = ToRGB()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.to_rgb(d[key])
        return d
