"""Budgets: the largest request each entry point accepts, checked where the value enters, before any work.

A size far beyond any study (deletion ``steps`` in the millions, ROAD with a thousand percentiles, a phantom data set
of ten million cases, a sliding window larger than any volume) would otherwise run until a machine gives out. Each is
refused with :class:`BudgetExceeded`, whose message states the requested size, what it would cost, the cap and how
to raise it.

Every cap is a :class:`Budget` below, its default a module constant. A cap is raised (or lowered) for one process by
the environment variable ``MONAI_XAI_MAX_<NAME>`` (e.g. ``MONAI_XAI_MAX_CURVE_STEPS=5000 monai-xai explain ...``),
read each time a request is checked: whoever starts a process (a server's operator) sets it, a request cannot.

- ``MONAI_XAI_MAX_METHODS``, default 32: methods explained by one request (every built-in method fits);
- ``MONAI_XAI_MAX_CURVE_STEPS``, default 1000: deletion / insertion ``steps``;
- ``MONAI_XAI_MAX_PERCENTILES``, default 100: ROAD ``percentiles`` (the integers 1 to 100);
- ``MONAI_XAI_MAX_METRIC_VOXEL_PASSES``, default 1e10: forward passes x voxels of one call of a metric that re-runs
  the network (deletion, insertion, ROAD), the unit of the attributions' budget;
- ``MONAI_XAI_MAX_PHANTOM_CASES``, default 10000: phantom cases written;
- ``MONAI_XAI_MAX_PHANTOM_VOXELS``, default 2e9: voxels of a phantom data set (cases x voxels of a volume);
- ``MONAI_XAI_MAX_WINDOW_VOXELS``, default 512^3: voxels of one sliding window (``roi_size``).

The input attributions have their own budget in the same unit as the metrics', a setting of the request
(``xai_attribution`` ``max_voxel_passes``, :mod:`monai_xai.cams.attributions.cost`), whose error
(:class:`~monai_xai.cams.attributions.AttributionBudgetExceeded`) is a :class:`BudgetExceeded` too.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "Budget",
    "BudgetExceeded",
    "CURVE_STEPS",
    "METHODS",
    "METRIC_VOXEL_PASSES",
    "PERCENTILES",
    "PHANTOM_CASES",
    "PHANTOM_VOXELS",
    "WINDOW_VOXELS",
    "check_curve_passes",
    "check_curve_steps",
    "check_methods",
    "check_metric_passes",
    "check_percentiles",
    "check_phantom",
    "check_window",
    "shown",
]

# the environment variable of a budget is this prefix + its name
ENV_PREFIX = "MONAI_XAI_MAX_"


class BudgetExceeded(ValueError):
    """A request refused before any work because its size is beyond a cap; the message holds the requested size,
    the estimate, the cap and how to raise it (a server answers it as a bad request, not as a failure)."""


@dataclass(frozen=True)
class Budget:
    """One cap.

    Attributes:
        name: its name; the environment variable ``MONAI_XAI_MAX_<name>`` replaces ``default``.
        default: the cap when the variable is not set.
        unit: what it counts, for messages (``"deletion/insertion steps"``).
    """

    name: str
    default: float
    unit: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name

    def cap(self, environ: Mapping[str, str] | None = None) -> float:
        """The cap in force: the environment variable's value (a number > 0; ``inf`` lifts the cap) or the default.

        Raises:
            ValueError: a variable that is set but not a number > 0, naming it.
        """
        environ = os.environ if environ is None else environ
        text = environ.get(self.env, "").strip()
        if not text:
            return self.default
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not value > 0:
            raise ValueError(
                f"the environment variable {self.env}={text!r} must be a number > 0 (the most {self.unit} allowed; "
                f"default {_size(self.default)}); unset it for the default."
            )
        return value

    def check(self, requested: float, argument: str, estimate: str = "") -> None:
        """Refuse ``requested`` (of ``argument``) above the cap.

        Args:
            requested: the size in this budget's unit.
            argument: the argument that asked for it, as the caller names it (a config id where there is one).
            estimate: how ``requested`` follows from the arguments, e.g. ``"100 steps x 4 images x 4096 voxels"``.

        Raises:
            BudgetExceeded: with the requested size, the estimate, the cap and how to raise it.
        """
        cap = self.cap()
        if requested <= cap:
            return
        how = f" ({estimate})" if estimate else ""
        raise BudgetExceeded(
            f"{argument} asks for {_size(requested)} {self.unit}{how}, above the cap of {_size(cap)}: refused "
            f"before any work. Ask for less, or raise the cap for this process with the environment variable "
            f"{self.env} (e.g. {self.env}={_raised(requested)}) if the time and memory are acceptable."
        )


def shown(values: Sequence[object], most: int = 10) -> str:
    """``values`` for a message: all of a short list, the first ``most`` of a long one and how many there are."""
    values = list(values)
    if len(values) <= most:
        return repr(values)
    return f"[{', '.join(repr(value) for value in values[:most])}, ...] ({len(values)} values)"


def _size(value: float) -> str:
    """A count as digits up to a billion, else in 3 significant digits (``1.5e+10``)."""
    return f"{value:.0f}" if value < 1e9 and value == int(value) else f"{value:.3g}"


def _raised(requested: float) -> str:
    """A value of the variable that admits ``requested``: the count, or two significant digits rounded up."""
    if requested < 1e9:
        return f"{math.ceil(requested)}"
    exponent = math.floor(math.log10(requested)) - 1
    mantissa = math.ceil(requested / 10.0**exponent) / 10  # in [1, 10]
    if mantissa == 10:
        mantissa, exponent = 1, exponent + 1
    return f"{mantissa:g}e{exponent + 1}"


# above the registry's methods (23, 26 with the sanity controls), so that a request of every one of them fits
METHODS = Budget("METHODS", 32, "methods")
CURVE_STEPS = Budget("CURVE_STEPS", 1000, "deletion/insertion steps")
PERCENTILES = Budget("PERCENTILES", 100, "ROAD percentiles")
# the input attributions' default budget, in the same unit (DEFAULT_MAX_VOXEL_PASSES): e.g. deletion with 100 steps
# of 4 images of 512 x 512 x 96 voxels (1e10), or ROAD combined with 9 percentiles of one 512 x 512 x 300 CT (1.4e9)
METRIC_VOXEL_PASSES = Budget("METRIC_VOXEL_PASSES", 1e10, "voxel-passes (voxels x forward passes)")
PHANTOM_CASES = Budget("PHANTOM_CASES", 10_000, "phantom cases")
# 2e9 voxels: 8 GB of float32 images before compression; 18000 cases of the default 48^3
PHANTOM_VOXELS = Budget("PHANTOM_VOXELS", 2e9, "phantom voxels")
# a window of 512^3 voxels is 0.5 GB per channel of float32 before the network's features
WINDOW_VOXELS = Budget("WINDOW_VOXELS", 512**3, "voxels per sliding window")
# a study's statistics and sanity checks: beyond these a run takes days and gives no better numbers
BOOTSTRAP_RESAMPLES = Budget("BOOTSTRAP_RESAMPLES", 1_000_000, "bootstrap resamples")
SANITY_CASES = Budget("SANITY_CASES", 10_000, "sanity cases")


def check_methods(names: Sequence[str], argument: str = "methods (xai_methods)") -> tuple[str, ...]:
    """Method names without repeats and at most :data:`METHODS` of them.

    Raises:
        ValueError: a name given more than once (naming them: each would be explained, timed and tabled twice).
        BudgetExceeded: more names than the cap.
    """
    repeated = [name for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise ValueError(f"{argument} lists {shown(repeated)} more than once; give each method once.")
    METHODS.check(len(names), argument, f"{len(names)} distinct method names")
    return tuple(names)


def check_curve_steps(steps: int, argument: str = "steps") -> None:
    """Deletion/insertion ``steps`` at most :data:`CURVE_STEPS` (checked when the metric is built, before images).

    Raises:
        BudgetExceeded: above the cap.
    """
    CURVE_STEPS.check(steps, argument, f"{steps + 1} forward passes per image")


def check_curve_passes(steps: int, images: int, voxels: int, argument: str = "steps") -> None:
    """A deletion/insertion call: ``steps`` at most the voxels of an image, and its voxel-passes within
    :data:`METRIC_VOXEL_PASSES`.

    Args:
        steps: perturbation steps.
        images: images of the batch.
        voxels: voxels of one image (per channel: a step replaces voxels of every channel at once).

    Raises:
        ValueError: more steps than voxels: every step after the voxels run out would replace nothing.
        BudgetExceeded: the call's voxel-passes above the cap.
    """
    if steps > voxels:
        raise ValueError(
            f"{argument}={steps} is more than the {voxels} voxels of an image: a curve replaces at least one voxel "
            f"per step, so the extra steps would repeat the same image; use steps <= {voxels}."
        )
    check_curve_steps(steps, argument)
    passes = images * (steps + 1)
    METRIC_VOXEL_PASSES.check(
        float(passes) * voxels,
        argument,
        f"{steps + 1} forward passes x {images} image(s) x {voxels} voxels",
    )


def check_percentiles(percentiles: Sequence[float], argument: str = "percentiles") -> tuple[float, ...]:
    """ROAD percentiles: at most :data:`PERCENTILES` of them, each once.

    The range (shares of pixels kept, in (0, 100]) is the metric's own check (:mod:`monai_xai.metrics.road`).

    Raises:
        ValueError: a percentile given more than once (naming it: it would be imputed and scored twice and weigh
            twice in the mean).
        BudgetExceeded: more percentiles than the cap.
    """
    values = tuple(percentiles)
    repeated = sorted({p for p, count in Counter(values).items() if count > 1})
    if repeated:
        raise ValueError(
            f"{argument} lists {shown(repeated)} more than once; give each percentile once, got {shown(values)}."
        )
    PERCENTILES.check(len(values), argument, f"{len(values)} imputations and forward passes per image and order")
    return values


def check_metric_passes(passes: int, voxels: int, argument: str, estimate: str) -> None:
    """One metric call's ``passes`` forward passes of images of ``voxels`` voxels within :data:`METRIC_VOXEL_PASSES`.

    Raises:
        BudgetExceeded: above the cap, with ``estimate`` (how ``passes`` follows from the arguments).
    """
    METRIC_VOXEL_PASSES.check(float(passes) * voxels, argument, f"{estimate} x {voxels} voxels")


def check_phantom(n_cases: int, shape: Sequence[int], argument: str = "n_cases") -> None:
    """A phantom data set of ``n_cases`` volumes of ``shape``: cases within :data:`PHANTOM_CASES`, voxels within
    :data:`PHANTOM_VOXELS` (``argument`` names the case count; ``shape`` is named as the sibling argument).

    Raises:
        BudgetExceeded: above either cap.
    """
    PHANTOM_CASES.check(n_cases, argument, f"{n_cases} volumes of {tuple(shape)} generated and written")
    voxels = math.prod(shape)
    PHANTOM_VOXELS.check(float(n_cases) * voxels, argument, f"{n_cases} cases x {voxels} voxels of {tuple(shape)}")


def check_window(roi_size: int | Sequence[int], spatial_dims: int | None = None, argument: str = "roi_size") -> None:
    """A sliding window's voxels within :data:`WINDOW_VOXELS`; entries <= 0 take the image's size and are not
    counted. An int is one size for every spatial dim: without ``spatial_dims`` it is counted for 2 dims, the fewest a
    window has (check again with the image's dims when they are known).

    Raises:
        BudgetExceeded: above the cap.
    """
    if isinstance(roi_size, int):
        dims = 2 if spatial_dims is None else spatial_dims
        sizes = (roi_size,) * dims
    else:
        sizes = tuple(roi_size)
    counted = [size for size in sizes if size > 0]
    voxels = math.prod(counted) if counted else 0
    shown = " x ".join(str(size) for size in counted)
    WINDOW_VOXELS.check(float(voxels), argument, f"a window of {shown} voxels")
