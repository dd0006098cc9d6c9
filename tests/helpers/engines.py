"""Engine helpers: per-case datasets with their own affines, small evaluators built in-process, bundles run as
subprocesses through ``python -m monai.bundle run``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset, MetaTensor
from monai.engines import SupervisedEvaluator

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


def affine_for(case: int, spacing: tuple[float, ...]) -> torch.Tensor:
    """A distinct, non-identity affine per case (so a test can tell the cases' meta apart)."""
    affine = torch.diag(torch.tensor([*spacing, *([1.0] * (3 - len(spacing))), 1.0], dtype=torch.float64))
    affine[:3, 3] = torch.tensor([float(case), -2.0 * case, 3.0])
    return affine


def case_dataset(images: torch.Tensor, **keys: torch.Tensor) -> list[dict]:
    """Per-case dicts: ``image`` as a MetaTensor with its own affine and file name, plus the given keys."""
    spacing = (0.5,) * (images.ndim - 2)
    cases = []
    for index in range(images.shape[0]):
        image = MetaTensor(
            images[index], affine=affine_for(index, spacing), meta={"filename_or_obj": f"/d/c{index}.nii.gz"}
        )
        cases.append({"image": image, **{key: value[index] for key, value in keys.items()}})
    return cases


def make_evaluator(network: torch.nn.Module, data: list[dict], inferer, handlers: list, batch_size: int = 2):
    """A SupervisedEvaluator on CPU over ``data`` with the given inferer and handlers."""
    loader = DataLoader(Dataset(data), batch_size=batch_size, shuffle=False, num_workers=0)
    return SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=loader, network=network, inferer=inferer, val_handlers=handlers
    )


def run_bundle(config_files: list[Path], *overrides: str, cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run --config_file [...] <overrides>`` in a subprocess; returns the finished process."""
    files = "[" + ",".join(f"'{f}'" for f in config_files) + "]"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, *overrides]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def collect_outputs(evaluator: SupervisedEvaluator) -> list[dict]:
    """Run the evaluator and return every case's output dict (after MONAI's decollation), in case order."""
    outputs: list[dict] = []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: outputs.extend(engine.state.output))
    evaluator.run()
    return outputs


def stack_outputs(outputs: list[dict], keys: Sequence[str]) -> dict[str, torch.Tensor]:
    """The given keys of per-case output dicts stacked batch-first (meta dropped)."""
    return {
        key: torch.stack(
            [
                torch.as_tensor(case[key].as_tensor() if isinstance(case[key], MetaTensor) else case[key])
                for case in outputs
            ]
        )
        for key in keys
    }
