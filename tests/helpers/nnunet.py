"""An nnU-Net v2 model trained on phantoms through nnU-Net's own commands and trainer class, for the adapter tests.

``nnUNetv2_plan_and_preprocess`` plans and preprocesses five phantom cases (one lesion each); nnU-Net's
``nnUNetTrainer`` then trains folds 0 and 1 for a few iterations (its own ``run_training``, shortened) and saves
``checkpoint_final.pth``: a real trained-model folder whose network, plans and checkpoints are nnU-Net's own. Both run
in a subprocess, because nnU-Net reads its folders from the environment when it is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from monai_xai.data.phantom import generate_phantom

__all__ = ["TRAINING", "make_phantom_case", "train_phantom_nnunet"]

# the shortened training: nnU-Net's trainer class and run_training, three iterations of one epoch per fold
# (argv: the configuration, then the folds)
TRAINING = """
import sys, torch
from nnunetv2.run.run_training import get_trainer_from_args
for fold in sys.argv[2:]:
    trainer = get_trainer_from_args(
        "1", sys.argv[1], int(fold), "nnUNetTrainer", "nnUNetPlans", device=torch.device("cpu")
    )
    trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch, trainer.num_epochs = 3, 1, 1
    trainer.run_training()
"""


def make_phantom_case(path: Path, seed: int, shape: tuple[int, int, int] = (32, 32, 24)) -> Path:
    """One phantom MR volume (x, y, z voxels at 1.5 x 1.5 x 2 mm) with one lesion, as nnU-Net's ``_0000`` file;
    its lesion mask beside it as ``<name>_mask.nii.gz``."""
    case = generate_phantom(seed, shape=shape, spacing=(1.5, 1.5, 2.0), num_lesions=1, lesion_radius_mm=(4.0, 6.0))
    nib.save(nib.Nifti1Image(case.image.astype(np.float32), case.affine), str(path))
    nib.save(
        nib.Nifti1Image(case.mask.astype(np.uint8), case.affine), str(path).replace("_0000.nii.gz", "_mask.nii.gz")
    )
    return path


def train_phantom_nnunet(root: Path, configuration: str = "3d_fullres") -> Path:
    """Plan, preprocess and train (folds 0 and 1) an nnU-Net v2 model of ``configuration`` (``3d_fullres``, or
    ``2d``: a 2D network nnU-Net runs slice by slice on the volumes) on five phantoms under ``root``.

    Returns:
        the trained-model folder (``<root>/results/Dataset001_Phantom/nnUNetTrainer__nnUNetPlans__<configuration>``).
    """
    raw = root / "raw" / "Dataset001_Phantom"
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    for index in range(5):
        image = make_phantom_case(raw / "imagesTr" / f"case_{index:03d}_0000.nii.gz", seed=index)
        Path(str(image).replace("_0000.nii.gz", "_mask.nii.gz")).rename(raw / "labelsTr" / f"case_{index:03d}.nii.gz")
    dataset = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "lesion": 1}, "numTraining": 5}
    (raw / "dataset.json").write_text(json.dumps({**dataset, "file_ending": ".nii.gz"}))
    env = {
        **os.environ,
        "nnUNet_raw": str(root / "raw"),
        "nnUNet_preprocessed": str(root / "preprocessed"),
        "nnUNet_results": str(root / "results"),
        "nnUNet_n_proc_DA": "1",
        "OMP_NUM_THREADS": "1",
    }
    plan = [
        str(Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"),
        "-d",
        "1",
        "-c",
        configuration,
        "-np",
        "1",
    ]
    for command in (plan, [sys.executable, "-c", TRAINING, configuration, "0", "1"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return root / "results" / "Dataset001_Phantom" / f"nnUNetTrainer__nnUNetPlans__{configuration}"
