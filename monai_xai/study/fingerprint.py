"""What a study's stored rows were computed from: its settings and the content of its files, as one hash.

A resumed study reuses a stored row only when the hash is the same (:class:`~monai_xai.study.store.StudyStore`), so
replacing a bundle's weights, its ``temperature.json``, the datalist or an image in place (same path, other content)
starts the rows again instead of mixing old and new. Weights and temperature files are hashed whole; an image by its
size, modification time and a hash of its first and last 64 KiB (reading every byte of a large data set at each
resume would cost more than it protects: a file replaced by one of the same size, time and ends is not caught).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from monai_xai.networks.calibration import TEMPERATURE_FILE
from monai_xai.study.cases import study_cases
from monai_xai.study.spec import StudySpec

__all__ = ["file_signature", "study_fingerprint"]

_END_BYTES = 64 * 1024


def file_signature(path: str | Path, whole: bool = False) -> str:
    """A short hash of a file's content: all of it (``whole``), or its size, modification time and first and last
    64 KiB; ``"missing"`` for a file that does not exist."""
    path = Path(path)
    if not path.is_file():
        return "missing"
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        if whole:
            for block in iter(lambda: stream.read(2**20), b""):
                digest.update(block)
        else:
            status = path.stat()
            digest.update(f"{status.st_size}:{status.st_mtime_ns}".encode())
            digest.update(stream.read(_END_BYTES))
            stream.seek(max(status.st_size - _END_BYTES, 0))
            digest.update(stream.read(_END_BYTES))
    return digest.hexdigest()[:16]


def study_fingerprint(spec: StudySpec) -> str:
    """The hash of ``spec``'s settings (:meth:`~monai_xai.study.StudySpec.fingerprint`) and of the content of its
    bundles' weights and temperature files, its datalist and its cases' images and regions (a phantom data set must
    be written first)."""
    files: dict[str, str] = {}
    for bundle in spec.bundles:
        if bundle.weights is not None:
            files[f"{bundle.name}:weights"] = file_signature(bundle.weights, whole=True)
            files[f"{bundle.name}:temperature"] = file_signature(Path(bundle.weights).parent / TEMPERATURE_FILE, True)
    if spec.data.datalist is not None:
        files["datalist"] = file_signature(spec.data.datalist, whole=True)
    for case in study_cases(spec.data, Path(spec.output_dir)):
        files[f"image:{case.case_id}"] = file_signature(case.image)
        if case.region is not None:
            files[f"region:{case.case_id}"] = file_signature(case.region)
    content = json.dumps({"settings": spec.fingerprint(), "files": files}, sort_keys=True)
    return hashlib.sha256(content.encode()).hexdigest()[:16]
