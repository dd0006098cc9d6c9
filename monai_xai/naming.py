"""Case names that are safe as file and folder names: the one place a name from outside (an image file, a datalist
entry, a data set's identifier) becomes part of a path the project writes.

A name can be crafted (``../../x``, ``...nii.gz``, ``$\\frac{a}{b}$``, ``index.html``, 300 characters): every writer
turns it into a stem with :class:`CaseNames` first, so a case's files stay inside their results folder, never
overwrite or hide a run's own files, and never break a plot title.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

__all__ = ["CASE_NAME_MAX", "RESERVED_NAMES", "CaseNames", "safe_stem", "strip_image_suffix"]

# the longest stem a case gets (file systems allow 255 bytes; the stem is followed by "_<method>.nii.gz" and more)
CASE_NAME_MAX = 96
# names a results folder holds for the run itself (lower case): a case named so gets a suffix
RESERVED_NAMES = frozenset(
    {
        "cases.csv",
        "descriptions.csv",
        "failed_cases.csv",
        "summary.csv",
        "summary.md",
        "metrics.png",
        "index.html",
        "sanity.md",
        "mlflow",
        "per_metric",
        "predictions",
        "report",
        "maps",
        "plots",
    }
)
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def strip_image_suffix(name: str) -> str:
    """``name`` without its image file extension (``.nii.gz``, ``.png``, ...; case-insensitive)."""
    lowered = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lowered.endswith(suffix):
            return name[: -len(suffix)]
    return name


def safe_stem(name: object, fallback: str = "case") -> str:
    """A file-name stem made of letters, digits, ``.``, ``_`` and ``-`` only, that starts with a letter or digit,
    is not a name the run itself uses (:data:`RESERVED_NAMES`) and has at most :data:`CASE_NAME_MAX` characters (a
    longer name keeps its start and gets a short hash of the whole, so two long names stay apart).

    Args:
        name: the name from outside (any object: its ``str``).
        fallback: the stem of a name with nothing safe in it (``"..."``, ``"$$"``).
    """
    text = _UNSAFE.sub("_", str(name)).strip("._-")
    text = re.sub(r"_{2,}", "_", text) or fallback
    if text.lower() in RESERVED_NAMES:
        text = f"{text}_case"
    if len(text) > CASE_NAME_MAX:
        digest = hashlib.sha1(str(name).encode()).hexdigest()[:8]
        text = f"{text[: CASE_NAME_MAX - 9].rstrip('._-')}_{digest}"
    return text


class CaseNames:
    """Unique safe stems for the cases of one run: :meth:`stem` gives each name its :func:`safe_stem`, with ``_1``,
    ``_2``, ... for a stem already given (also when two different names become one stem).

    Args:
        taken: stems already in use (e.g. the names of another rank's cases).
    """

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self._taken = {stem.lower() for stem in taken}

    def stem(self, name: object, fallback: str = "case") -> str:
        """The unique safe stem of ``name`` (see the class docstring)."""
        base = safe_stem(name, fallback)
        stem, repeat = base, 1
        while stem.lower() in self._taken:  # case-insensitive file systems see "A" and "a" as one file
            stem, repeat = f"{base}_{repeat}", repeat + 1
        self._taken.add(stem.lower())
        return stem

    def __len__(self) -> int:
        return len(self._taken)
