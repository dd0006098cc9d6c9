"""``monai-xai explain <nnU-Net trained-model folder> --images <folder or files>``: every case of a folder explained
with the model's own preprocessing, tiles, mirroring and folds, each map written on its input file's grid."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from monai_xai.explanation import ExplainStep
from monai_xai.nnunet.model import CHECKPOINT, NNUNetModel, load_nnunet

__all__ = ["case_files", "explain_nnunet"]

logger = logging.getLogger(__name__)


def case_files(images: str | Path | Sequence[str | Path], model: NNUNetModel) -> dict[str, list[Path]]:
    """``{case: its channel files}`` of nnU-Net's input naming (``<case>_<channel:04d><file_ending>``, one file per
    channel of dataset.json's ``channel_names``) in a folder, or of a list of files (each a case's ``_0000`` file, or
    a single-channel case).

    Raises:
        FileNotFoundError: no image, or a case without all its channels (the message names them).
    """
    ending = model.predictor.dataset_json["file_ending"]
    channels = len(model.predictor.dataset_json["channel_names"])
    given = [Path(images)] if isinstance(images, str | Path) else [Path(item) for item in images]
    files = sorted(item for path in given for item in (path.glob(f"*{ending}") if path.is_dir() else [path]))
    if not files:
        raise FileNotFoundError(f"no {ending} image in {[str(path) for path in given]}.")
    cases: dict[str, list[Path]] = {}
    for file in files:
        stem = file.name[: -len(ending)] if file.name.endswith(ending) else file.stem
        case, _, channel = stem.rpartition("_")
        if not (channel.isdigit() and len(channel) == 4):
            case = stem
        cases.setdefault(case, []).append(file)
    incomplete = {case: [str(f) for f in found] for case, found in cases.items() if len(found) != channels}
    if incomplete:
        raise FileNotFoundError(
            f"the model takes {channels} channel file(s) per case (<case>_0000{ending}, <case>_0001{ending}, ...); "
            f"these cases have another number: {incomplete}."
        )
    return cases


def explain_nnunet(
    model_folder: str | Path,
    images: str | Path | Sequence[str | Path],
    output_dir: str | Path,
    folds: Sequence[int | str] | None = None,
    checkpoint: str = CHECKPOINT,
    mirroring: bool = True,
    step: float = 0.5,
    device: str = "cpu",
    **request: Any,
) -> str:
    """Explain every case of ``images`` with an nnU-Net v2 trained-model folder; write each map as
    ``<output_dir>/<case>/<case>_<method>.nii.gz`` on the case's input grid and ``<output_dir>/summary.md``.

    Args:
        model_folder: the trained-model folder (:func:`~monai_xai.nnunet.load_nnunet`).
        images: a folder of nnU-Net-named images, or files.
        output_dir: the results folder.
        folds, checkpoint, mirroring, step, device: as :func:`~monai_xai.nnunet.load_nnunet`.
        request: :class:`~monai_xai.explanation.ExplainRequest` fields (``methods``, ``class_idx``,
            ``target_layers``, ``pixel_set``, ``score``); default ``methods=["gradcam"]``.

    Returns:
        a few lines: the cases, the explained layer (and how it was chosen), the class(es) by name, the folder.
    """
    model = load_nnunet(model_folder, folds, checkpoint, mirroring, step, device)
    step_ = ExplainStep(model.request(**{"methods": ("gradcam",), **request}))
    output_dir = Path(output_dir)
    names = model.class_names
    explained_classes: dict[str, None] = {}
    cases = case_files(images, model)
    for case, files in cases.items():
        result = model.explain(files, step=step_)
        for method, values in result.maps.items():
            model.write(values, result.properties, output_dir / case / f"{case}_{method}.nii.gz")
        for classes in result.explanation.class_idx.reshape(1, -1).tolist():
            explained_classes["+".join(f"{k} ({names[k]})" for k in classes)] = None
    layer = step_.chosen_layer
    layer_text = f"`{layer.name}` (chosen: {layer.reason})" if layer is not None else f"`{step_.request.target_layers}`"
    folds_text = f"{len(model.window.weights)} fold(s), mirroring {'on' if model.window.mirror_axes else 'off'}"
    lines = [
        f"explained {len(cases)} case(s) with {model.folder.name} ({folds_text}) into {output_dir}",
        f"  layer: {layer_text}",
        f"  class(es): {', '.join(explained_classes)}",
    ]
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "summary.md").write_text(
        "# XAI summary\n\n"
        + f"Model: {model.folder} ({folds_text}).\n\nExplained layer: {layer_text}.\n\n"
        + f"Explained class(es): {', '.join(explained_classes)}.\n"
    )
    return "\n".join(lines)
