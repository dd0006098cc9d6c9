"""Noisy linear imputation (ROAD, Rong et al. 2022) for 2D and 3D batches, solved in torch on the input's device.

Every removed pixel becomes the weighted mean of its in-image neighbours; known pixels are fixed boundary values.
For the removed set this is the linear system

    deg_i x_i - sum_{j removed} w_ij x_j = sum_{j known} w_ij v_j,    deg_i = sum_{j in image} w_ij,

a discrete Laplace equation with Dirichlet values on the known pixels and natural (Neumann) image borders. Its matrix is
symmetric and weakly diagonally dominant, and positive definite as soon as every connected removed region touches a
known pixel, i.e. unless a sample has every pixel removed. It is solved by conjugate gradients preconditioned with one
geometric multigrid V-cycle (Galerkin coarse operators, so the irregular removed set is represented exactly on every
level), for every sample, mask and channel of a batch at once.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from monai_xai.threads import worker_threads

__all__ = ["NoisyLinearImputer", "neighbour_weights", "noisy_linear_impute", "solve_masked_laplace"]

_NEIGHBOURHOODS = {2: (8, 4), 3: (26, 6)}
# Below this many nodes per system the coarsest multigrid level is solved by a dense factorisation.
_COARSEST_NODES = 400
# On a CPU the samples are solved in groups of at most this many values (samples x channels x pixels), so that the
# solver's float64 vectors (about 11 MB each) stay in a server CPU's last-level cache: one system of 72 3x224x224 images
# took 1.8x as long as the same work in groups of 9 on a 2-core EPYC. A GPU solves the whole batch at once.
_CPU_VALUES_PER_SOLVE = 9 * 3 * 224 * 224


def neighbour_weights(
    spatial_dims: int,
    neighbourhood: int | None = None,
    spacing: Sequence[float] | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Imputation stencil: weight of each neighbour proportional to 1 / d^2, normalised to sum to one.

    2D, 8-neighbourhood: axial 1/6, diagonal 1/12 (the ROAD reference weights). 3D, 26-neighbourhood: face 3/44,
    edge 3/88, corner 1/44. The axial neighbourhoods (4 in 2D, 6 in 3D) give every neighbour the same weight for
    isotropic spacing.

    Args:
        spatial_dims: 2 or 3.
        neighbourhood: 8 or 4 in 2D, 26 or 6 in 3D; ``None`` picks the full neighbourhood (8 or 26).
        spacing: physical size of a pixel along each spatial axis (e.g. ``(1.0, 0.7, 0.7)`` mm); distances are then
            physical. ``None`` means isotropic.
        dtype: dtype of the returned kernel.
        device: device of the returned kernel.

    Returns:
        (3,) * spatial_dims tensor, zero at the centre and outside the neighbourhood, summing to one.
    """
    if spatial_dims not in _NEIGHBOURHOODS:
        raise ValueError(f"Only 2D and 3D images are supported, got {spatial_dims} spatial dimensions.")
    full, axial = _NEIGHBOURHOODS[spatial_dims]
    neighbourhood = full if neighbourhood is None else neighbourhood
    if neighbourhood not in (full, axial):
        raise ValueError(f"neighbourhood must be {full} or {axial} for {spatial_dims}D images, got {neighbourhood}.")
    spacing = (1.0,) * spatial_dims if spacing is None else tuple(float(s) for s in spacing)
    if len(spacing) != spatial_dims or min(spacing) <= 0:
        raise ValueError(f"spacing must hold {spatial_dims} positive values, got {spacing}.")
    kernel = torch.zeros((3,) * spatial_dims, dtype=torch.float64)
    for offset in itertools.product((-1, 0, 1), repeat=spatial_dims):
        steps = sum(abs(o) for o in offset)
        if steps == 0 or (neighbourhood == axial and steps > 1):
            continue
        kernel[tuple(o + 1 for o in offset)] = 1.0 / sum((o * s) ** 2 for o, s in zip(offset, spacing))
    return (kernel / kernel.sum()).to(dtype=dtype, device=device)


def noisy_linear_impute(
    images: torch.Tensor,
    remove_mask: torch.Tensor,
    noise: float = 0.0,
    neighbourhood: int | None = None,
    spacing: Sequence[float] | None = None,
    generator: torch.Generator | None = None,
    tol: float = 1e-5,
    max_iter: int = 200,
) -> torch.Tensor:
    """Replace the removed pixels by the noisy linear imputation of ROAD (Rong et al., ICML 2022).

    Each removed pixel becomes the ``neighbour_weights`` mean of its in-image neighbours (out-of-image neighbours are
    dropped, known neighbours act as boundary values), then Gaussian noise of standard deviation ``noise`` is added to
    the removed pixels only. All samples and channels are solved together on ``images.device`` (on a CPU in groups of
    samples small enough for the solver's vectors to stay in cache).

    Args:
        images: (B, C, *spatial) floating tensor, 2D or 3D spatial.
        remove_mask: (B, 1, *spatial) bool tensor, True where a pixel is removed (the same pixels in every channel).
        noise: standard deviation of the added noise, absolute, in image units (ROAD uses 0.01 for [0, 1] images).
        neighbourhood: 8 (default) or 4 in 2D, 26 (default) or 6 in 3D; see ``neighbour_weights``.
        spacing: physical pixel size per spatial axis; ``None`` for isotropic weights.
        generator: torch generator on ``images.device`` for reproducible noise.
        tol: relative residual ``||b - A x|| / ||b||`` the solver must reach for every sample and channel. The
            default 1e-5 keeps the imputed values within about 4e-5 of the exact solution for values in [0, 1]
            (white noise with 90 % removed; smooth images do better), 250 times below ROAD's noise of 0.01; lower it
            for an exact solve (each tenfold costs about one more iteration).
        max_iter: conjugate-gradient iteration limit.

    Returns:
        (B, C, *spatial) tensor of ``images``' dtype; known pixels are bit-identical to ``images``.

    Raises:
        ValueError: for mismatched shapes, a non-bool mask, or a sample with every pixel removed (its system has no
            boundary values, so the imputation is undefined).
    """
    if not images.is_floating_point() or images.ndim not in (4, 5):
        raise ValueError(
            "images must be a floating (B, C, H, W) or (B, C, D, H, W) tensor, "
            f"got {images.dtype} {tuple(images.shape)}."
        )
    expected = (images.shape[0], 1, *images.shape[2:])
    if remove_mask.dtype != torch.bool or tuple(remove_mask.shape) != expected:
        raise ValueError(
            f"remove_mask must be a bool tensor of shape (B, 1, *spatial) = {expected}, "
            f"got {remove_mask.dtype} {tuple(remove_mask.shape)}."
        )
    if noise < 0:
        raise ValueError(f"noise is a standard deviation and must be >= 0, got {noise}.")
    remove_mask = remove_mask.to(images.device)
    everything_removed = remove_mask.flatten(1).all(dim=1)
    if everything_removed.any():
        samples = everything_removed.nonzero().flatten().tolist()
        raise ValueError(
            f"Every pixel of sample(s) {samples} is removed, so there are no known values to impute from; "
            "keep at least one pixel per sample."
        )
    weights = neighbour_weights(images.ndim - 2, neighbourhood, spacing, torch.float64, images.device)
    solution = _solve_groups(images.to(torch.float64), remove_mask, weights, tol, max_iter)
    if noise > 0:
        solution = solution + noise * torch.randn(
            solution.shape, generator=generator, dtype=solution.dtype, device=solution.device
        )
    return torch.where(remove_mask, solution.to(images.dtype), images)


@dataclass(frozen=True)
class NoisyLinearImputer:
    """ROAD's noisy linear imputation with its settings fixed once: ``imputer(images, remove_mask) -> imputed``.

    This is the object the perturbation metrics take (pytorch-grad-cam's ROAD pattern), so the imputation's settings
    are one argument of :func:`~monai_xai.metrics.road` and :class:`~monai_xai.metrics.ROADMetric`, and another
    imputer (any callable with the same signature) can replace it.

    Attributes:
        noise: standard deviation of the noise added to the imputed pixels, absolute, in image units (ROAD: 0.01 on
            [0, 1] images).
        neighbourhood: 8 or 4 in 2D, 26 or 6 in 3D (default: the full one); see :func:`neighbour_weights`.
        spacing: physical pixel size per spatial axis for the weights; ``None`` for isotropic.
        generator: torch generator on the images' device for reproducible noise.

    Example::

        imputer = NoisyLinearImputer(noise=0.01, spacing=(2.0, 0.8, 0.8))
        road(model, volumes, saliency, class_idx=1, imputer=imputer)
    """

    noise: float = 0.01
    neighbourhood: int | None = None
    spacing: Sequence[float] | None = None
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        if self.noise < 0:
            raise ValueError(f"noise is a standard deviation and must be >= 0, got {self.noise}.")

    def __call__(self, images: torch.Tensor, remove_mask: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) images with the pixels of ``remove_mask`` (B, 1, *spatial) bool imputed, see
        :func:`noisy_linear_impute`."""
        return noisy_linear_impute(
            images, remove_mask, self.noise, self.neighbourhood, self.spacing, generator=self.generator
        )


def _solve_groups(
    values: torch.Tensor, unknown: torch.Tensor, weights: torch.Tensor, tol: float, max_iter: int
) -> torch.Tensor:
    """``solve_masked_laplace`` of the whole batch: at once on a GPU; on a CPU as independent systems of groups of
    samples, solved side by side by :func:`~monai_xai.threads.worker_threads` threads, each group on one torch thread.

    A multigrid cycle is hundreds of operations of a fraction of a millisecond each. Split over torch's threads,
    every one of them ends at a barrier that waits for the slowest thread, and as soon as another process competes for
    the cores that wait is a scheduler slice: 18 masks of 224^2 took 6x longer on 2 threads than on 1 next to two
    busy processes. Independent groups on one thread each never wait for one another.

    Args:
        values: (N, C, *spatial) float64 images; the known pixels are the boundary values.
        unknown: (N, 1, *spatial) bool mask of the pixels to solve for.
        weights, tol, max_iter: as in :func:`solve_masked_laplace`.

    Returns:
        (N, C, *spatial) float64 solution, zero off ``unknown``.
    """
    workers = worker_threads() if values.device.type == "cpu" else 1
    group = _samples_per_solve(values, workers)
    parts = list(zip(values.split(group), unknown.split(group)))

    def solve(part: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return solve_masked_laplace(*part, weights, tol=tol, max_iter=max_iter)

    if workers < 2 or len(parts) < 2:
        return torch.cat([solve(part) for part in parts])
    threads = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(min(workers, len(parts)), initializer=torch.set_num_threads, initargs=(1,)) as pool:
            return torch.cat(list(pool.map(solve, parts)))
    finally:
        # a worker's set_num_threads(1) also became the count that threads started from now on begin with
        torch.set_num_threads(threads)


def _samples_per_solve(values: torch.Tensor, workers: int) -> int:
    """How many samples one linear system holds: all of them on a GPU; on a CPU a cache-sized group, and at most an
    equal share of the batch per worker thread so that every worker has a group."""
    if values.device.type != "cpu":
        return values.shape[0]
    cache_sized = max(1, _CPU_VALUES_PER_SOLVE // values[0].numel())
    return min(cache_sized, math.ceil(values.shape[0] / workers))


def solve_masked_laplace(
    values: torch.Tensor,
    unknown: torch.Tensor,
    weights: torch.Tensor,
    tol: float = 1e-5,
    max_iter: int = 200,
) -> torch.Tensor:
    """Solve the imputation system for the unknown pixels of every sample and channel.

    Conjugate gradients run in float64 on the exact system; the multigrid preconditioner runs in float32, which is
    plenty for a preconditioner and halves its memory traffic (flexible CG absorbs its rounding).

    Args:
        values: (N, C, *spatial) floating tensor; entries where ``unknown`` is False are the boundary values.
        unknown: (N, 1, *spatial) bool tensor; every sample needs at least one known pixel.
        weights: (3,) * spatial_dims neighbour kernel from ``neighbour_weights`` (zero centre).
        tol: relative residual ``||b - A x|| / ||b||`` to reach per sample and channel.
        max_iter: conjugate-gradient iteration limit; a ``RuntimeWarning`` names the shortfall if it is reached.

    Returns:
        (N, C, *spatial) float64 tensor holding the solution on the unknown pixels and zeros elsewhere.
    """
    exact = _MaskedStencil(unknown, weights, torch.float64)
    rhs = exact.couple(values.to(torch.float64) * (1 - exact.mask)).mul_(exact.mask)
    multigrid = _Multigrid(_MaskedStencil(unknown, weights, torch.float32), weights)

    def precondition(residual: torch.Tensor) -> torch.Tensor:
        return multigrid.vcycle(residual.to(torch.float32)).to(torch.float64)

    return _flexible_cg(exact.apply, precondition, rhs, tol, max_iter)


def _shifted_pair(offset: Sequence[int], spatial: Sequence[int]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Index pair ``(target, source)`` such that ``y[target] += x[source]`` adds ``x[i + offset]`` to ``y[i]`` for every
    in-image ``i + offset``; out-of-image neighbours are simply never read."""
    target = (..., *(slice(max(0, -o), n - max(0, o)) for o, n in zip(offset, spatial)))
    source = (..., *(slice(max(0, o), n - max(0, -o)) for o, n in zip(offset, spatial)))
    return target, source


class _MaskedStencil:
    """Fine operator ``A x = m * (deg * x - sum_o w_o x[i + o])`` on vectors that vanish outside the unknown set m."""

    def __init__(self, unknown: torch.Tensor, weights: torch.Tensor, dtype: torch.dtype) -> None:
        self.mask = unknown.to(dtype)
        self.neighbours = [
            (offset, float(weights[tuple(o + 1 for o in offset)]))
            for offset in itertools.product((-1, 0, 1), repeat=weights.ndim)
            if weights[tuple(o + 1 for o in offset)] != 0
        ]
        self.degree = self.couple(torch.ones_like(self.mask[:1]))
        self.inv_diagonal = self.mask / self.degree

    def couple(self, x: torch.Tensor, initial: torch.Tensor | None = None) -> torch.Tensor:
        """``initial + sum_o w_o x[i + o]`` over in-image neighbours, channel by channel (``initial`` defaults to 0)."""
        coupled = torch.zeros_like(x) if initial is None else initial
        for offset, weight in self.neighbours:
            target, source = _shifted_pair(offset, x.shape[2:])
            coupled[target].add_(x[source], alpha=weight)
        return coupled

    def entries(self) -> dict[tuple[int, ...], torch.Tensor]:
        """Matrix entries ``A(i, i + o)`` as (N, 1, *spatial) fields per offset o, zero off the unknown set."""
        fields = {
            offset: torch.zeros_like(self.mask) for offset in itertools.product((-1, 0, 1), repeat=self.mask.ndim - 2)
        }
        fields[(0,) * (self.mask.ndim - 2)] = self.mask * self.degree
        for offset, weight in self.neighbours:
            target, source = _shifted_pair(offset, self.mask.shape[2:])
            fields[offset][target] = -weight * self.mask[target] * self.mask[source]
        return fields

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``A x`` for ``x`` (N, C, *spatial) that vanishes outside the mask."""
        return self.couple(x, initial=x * -self.degree).mul_(-self.mask)

    def residual(self, rhs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``rhs - A x`` in one accumulation."""
        return self.couple(x, initial=x * -self.degree).mul_(self.mask).add_(rhs)


class _VariableStencil:
    """Coarse operator with its own 3**d stencil at every node; ``coefficients`` is (N, 3**d, *spatial)."""

    def __init__(self, coefficients: torch.Tensor, offsets: list[tuple[int, ...]]) -> None:
        self.coefficients = coefficients
        self.offsets = offsets
        self.centre = offsets.index((0,) * len(offsets[0]))
        diagonal = coefficients[:, self.centre : self.centre + 1]
        self.mask = (diagonal > 0).to(diagonal.dtype)
        self.inv_diagonal = torch.where(diagonal > 0, 1 / diagonal, torch.zeros_like(diagonal))

    def entries(self) -> dict[tuple[int, ...], torch.Tensor]:
        """Matrix entries ``A(i, i + o)`` as (N, 1, *spatial) fields per offset o."""
        return {offset: self.coefficients[:, k : k + 1] for k, offset in enumerate(self.offsets)}

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        result = self.coefficients[:, self.centre : self.centre + 1] * x
        for k, offset in enumerate(self.offsets):
            if k != self.centre:
                target, source = _shifted_pair(offset, x.shape[2:])
                result[target].addcmul_(self.coefficients[:, k : k + 1][target], x[source])
        return result

    def residual(self, rhs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return rhs - self.apply(x)


@dataclass
class _Level:
    operator: _MaskedStencil | _VariableStencil
    smoother: torch.Tensor  # damped Jacobi omega D^-1, omega = 4 / (3 lambda_max(D^-1 A)); (N, 1, *spatial)
    coarsened_axes: tuple[int, ...]  # tensor axes halved on the way to the next level


class _Multigrid:
    """Symmetric V-cycle: one damped-Jacobi sweep before and after, multilinear transfer, Galerkin coarse operators.

    Coarse node J sits on fine node 2J (vertex-centred). Interpolation is masked to the unknown nodes of the finer
    level, so each coarse operator ``P^T A P`` sees the irregular removed set exactly; its stencil stays 3**d wide.
    The coarsest level (<= 400 nodes) is inverted densely.
    """

    def __init__(self, fine: _MaskedStencil, weights: torch.Tensor) -> None:
        self.offsets = list(itertools.product((-1, 0, 1), repeat=weights.ndim))
        # Every masked operator is a principal submatrix of the unmasked one with the same diagonal, so the unmasked
        # grid's largest eigenvalue bounds them all: one estimate serves the whole batch. It comes from the image
        # borders' small-degree rows and shrinks as the grid grows (2D 8-neighbourhood: 1.50 at 8^2, 1.49 at 224^2;
        # 3D 26-neighbourhood: 1.26 at 32^3, 1.23 at 96^3), so a grid of at most 32 per axis gives a safe estimate
        # at a fraction of the cost of a large volume.
        estimate_shape = [min(n, 32) for n in fine.mask.shape[2:]]
        full_grid = _MaskedStencil(
            torch.ones(1, 1, *estimate_shape, dtype=torch.bool, device=fine.mask.device), weights, fine.mask.dtype
        )
        omega = _jacobi_damping(full_grid)
        self.levels: list[_Level] = []
        operator: _MaskedStencil | _VariableStencil = fine
        while True:
            spatial = operator.mask.shape[2:]
            axes = tuple(axis + 2 for axis, n in enumerate(spatial) if n > 3)
            if math.prod(spatial) <= _COARSEST_NODES or not axes:
                break
            self.levels.append(_Level(operator, omega * operator.inv_diagonal, axes))
            operator = self._galerkin(operator, axes)
            omega = _jacobi_damping(operator)
        self.coarsest = operator
        # An explicit inverse turns every coarsest solve into one batched matrix product. It stays in float64: near
        # singular coarse operators (see _dense_factor) give it large entries whose float32 rounding would leak into
        # the meaningful part of the solution.
        self.coarsest_inverse = torch.cholesky_inverse(self._dense_factor(operator))

    def vcycle(self, residual: torch.Tensor, depth: int = 0) -> torch.Tensor:
        if depth == len(self.levels):
            return self._dense_solve(residual)
        level = self.levels[depth]
        operator = level.operator
        correction = level.smoother * residual
        coarse_residual = _restrict(operator.residual(residual, correction), level.coarsened_axes)
        correction += _prolong(self.vcycle(coarse_residual, depth + 1), operator.mask, level.coarsened_axes)
        return correction.addcmul_(level.smoother, operator.residual(residual, correction))

    def _galerkin(self, operator: _MaskedStencil | _VariableStencil, axes: tuple[int, ...]) -> _VariableStencil:
        """Stencils of ``P^T A P``. The multilinear P is a product of linear interpolations along single axes (its
        mask changes nothing, as A's entries already vanish outside the unknown set), so the triple product is taken
        one axis at a time: 3 x 14 instead of 14**2 stencil terms in 2D, 3 x 126 instead of 14**3 in 3D."""
        for axis in axes:
            operator = self._galerkin_along(operator, axis)
        return operator

    def _galerkin_along(self, operator: _MaskedStencil | _VariableStencil, axis: int) -> _VariableStencil:
        """Stencils of ``P^T A P`` for P interpolating along tensor axis ``axis`` only, entry by entry:

            A_c(I, I + O) = sum_{t, o} phi(t) phi(t + o - 2 O) A(2I + t, 2I + t + o),

        with phi the interpolation weight of a fine node at offset t from coarse node 2I (1 or 1/2 along ``axis``,
        t = 0 along the others).
        """
        spatial = operator.mask.shape[2:]
        strides = [2 if dim + 2 == axis else 1 for dim in range(len(spatial))]
        coarse_spatial = [n // 2 + 1 if s == 2 else n for n, s in zip(spatial, strides)]
        # per axis: (t, o, O, weight) with both interpolation weights nonzero
        hat = {2: {-1: 0.5, 0: 1.0, 1: 0.5}, 1: {0: 1.0}}
        axis_terms = [
            [
                (t, o, big_o, hat[s][t] * hat[s][t + o - s * big_o])
                for t in hat[s]
                for o in (-1, 0, 1)
                for big_o in (-1, 0, 1)
                if t + o - s * big_o in hat[s]
            ]
            for s in strides
        ]
        coefficients = operator.mask.new_zeros(operator.mask.shape[0], len(self.offsets), *coarse_spatial)
        # pad so that fine node s * I + t exists (as zero) for every coarse node I and t in {-1, 0, 1}
        padding = []
        for n, s, n_coarse in zip(reversed(spatial), reversed(strides), reversed(coarse_spatial)):
            padding += [1, max(0, s * (n_coarse - 1) + 2 - n)]
        entries = {offset: F.pad(entry, padding) for offset, entry in operator.entries().items()}
        for combination in itertools.product(*axis_terms):
            t, o, big_o, weight = zip(*combination)
            sampled = entries[o][
                (..., *(slice(1 + ti, 1 + ti + s * (n - 1) + 1, s) for ti, s, n in zip(t, strides, coarse_spatial)))
            ]
            k = self.offsets.index(big_o)
            coefficients[:, k : k + 1].add_(sampled, alpha=math.prod(weight))
        return _VariableStencil(coefficients, self.offsets)

    @staticmethod
    def _dense_factor(operator: _MaskedStencil | _VariableStencil) -> torch.Tensor:
        mask = operator.mask
        batch, spatial = mask.shape[0], mask.shape[2:]
        nodes = math.prod(spatial)
        node_index = torch.arange(nodes, device=mask.device).reshape(spatial)
        matrix = torch.zeros(batch, nodes, nodes, dtype=torch.float64, device=mask.device)
        for offset, entry in operator.entries().items():
            target, source = _shifted_pair(offset, spatial)
            rows, cols = node_index[target[1:]].flatten(), node_index[source[1:]].flatten()
            matrix[:, rows, cols] = entry[:, 0][(slice(None), *target[1:])].flatten(1).to(torch.float64)
        matrix = 0.5 * (matrix + matrix.transpose(1, 2))
        # Nodes outside the unknown set have empty rows; a unit diagonal decouples them (their right-hand side is 0).
        inactive = (mask.reshape(batch, nodes) == 0).to(matrix.dtype)
        diagonal = matrix.diagonal(dim1=1, dim2=2)
        # Masked interpolation can make coarse basis functions coincide (two coarse nodes whose only unknown fine node
        # is shared), so P^T A P may be singular; its null space is P's, which the correction P x never sees, so a
        # small diagonal shift only has to outweigh float32 rounding.
        for shift in (1e-6, 1e-4, 1e-2):
            factor, info = torch.linalg.cholesky_ex(matrix + torch.diag_embed(inactive + shift * diagonal))
            if not info.any():
                return factor
        raise RuntimeError("The coarsest multigrid operator is not positive definite; please report this input.")

    def _dense_solve(self, residual: torch.Tensor) -> torch.Tensor:
        batch, channels = residual.shape[:2]
        rhs = residual.reshape(batch, channels, -1).transpose(1, 2).to(torch.float64)
        solution = torch.bmm(self.coarsest_inverse, rhs).to(residual.dtype)
        return self.coarsest.mask * solution.transpose(1, 2).reshape(residual.shape)


def _axis_slice(ndim: int, axis: int, index: slice) -> tuple[slice, ...]:
    return (slice(None),) * axis + (index,) + (slice(None),) * (ndim - axis - 1)


def _prolong(coarse: torch.Tensor, fine_mask: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """Multilinear interpolation: fine node 2J copies coarse node J, fine node 2J+1 takes the mean of J and J+1."""
    fine = coarse
    for axis in axes:
        size = fine.shape[axis]
        shape = list(fine.shape)
        shape[axis] = 2 * size - 1
        interpolated = fine.new_empty(shape)
        interpolated[_axis_slice(fine.ndim, axis, slice(0, None, 2))] = fine
        between = fine.narrow(axis, 0, size - 1) + fine.narrow(axis, 1, size - 1)
        interpolated[_axis_slice(fine.ndim, axis, slice(1, None, 2))] = 0.5 * between
        fine = interpolated.narrow(axis, 0, fine_mask.shape[axis])
    return fine_mask * fine


def _restrict(fine: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """Adjoint of ``_prolong`` for ``fine`` that already vanishes outside the finer level's unknown set: each coarse
    node gathers its fine node and half of its two odd fine neighbours along every coarsened axis."""
    coarse = fine
    for axis in axes:
        size = coarse.shape[axis]
        coarse_size = size // 2 + 1
        if 2 * coarse_size - 1 > size:
            padding = [0, 0] * (coarse.ndim - axis - 1) + [0, 1]
            coarse = F.pad(coarse, padding)
        even = coarse[_axis_slice(coarse.ndim, axis, slice(0, None, 2))].clone()
        odd = 0.5 * coarse[_axis_slice(coarse.ndim, axis, slice(1, None, 2))]
        even.narrow(axis, 0, coarse_size - 1).add_(odd)
        even.narrow(axis, 1, coarse_size - 1).add_(odd)
        coarse = even
    return coarse


def _jacobi_damping(operator: _MaskedStencil | _VariableStencil, iterations: int = 12) -> torch.Tensor:
    """4 / (3 lambda_max) per system, lambda_max of ``D^-1 A`` estimated by power iteration from a seeded start."""
    mask = operator.mask
    generator = torch.Generator(device=mask.device).manual_seed(0)
    vector = mask * torch.rand(mask.shape, generator=generator, dtype=mask.dtype, device=mask.device)
    dims = tuple(range(1, vector.ndim))
    eigenvalue = torch.ones(vector.shape[0], dtype=vector.dtype, device=vector.device)
    for _ in range(iterations):
        vector = vector / vector.square().sum(dim=dims, keepdim=True).sqrt().clamp_min(1e-30)
        image = operator.inv_diagonal * operator.apply(vector)
        eigenvalue = (vector * image).sum(dim=dims)
        vector = image
    return (4.0 / (3.0 * eigenvalue.clamp_min(1e-6))).reshape(-1, *(1,) * len(dims))


def _flexible_cg(apply, precondition, rhs: torch.Tensor, tol: float, max_iter: int) -> torch.Tensor:
    """Preconditioned conjugate gradients, one independent run per (system, channel) column of ``rhs`` (N, C, *spatial).

    The Polak-Ribiere form of beta keeps convergence when the preconditioner is only symmetric up to float32 rounding.
    """
    dims = tuple(range(2, rhs.ndim))

    columns = rhs.shape[0] * rhs.shape[1]

    def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # bmm fuses multiply and sum into one pass over memory
        return torch.bmm(a.reshape(columns, 1, -1), b.reshape(columns, -1, 1)).reshape(
            *rhs.shape[:2], *(1,) * len(dims)
        )

    rhs_norm = dot(rhs, rhs).sqrt()
    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    preconditioned = precondition(residual)
    direction = preconditioned.clone()
    residual_dot = dot(residual, preconditioned)
    for _ in range(max_iter):
        active = dot(residual, residual).sqrt() > tol * rhs_norm
        if not active.any():
            break
        image = apply(direction)
        step = torch.where(active, residual_dot / torch.where(active, dot(direction, image), 1.0), 0.0)
        solution.addcmul_(step, direction)
        residual.addcmul_(step, image, value=-1.0)
        previous_dot = dot(residual, preconditioned)
        preconditioned = precondition(residual)
        new_residual_dot = dot(residual, preconditioned)
        momentum = (new_residual_dot - previous_dot) / torch.where(active, residual_dot, 1.0)
        direction.mul_(torch.where(active, momentum, 0.0)).add_(preconditioned)
        residual_dot = new_residual_dot
    final_residual = rhs - apply(solution)
    relative = dot(final_residual, final_residual).sqrt() / rhs_norm.clamp_min(torch.finfo(rhs.dtype).tiny)
    failed = relative > tol
    if failed.any():
        warnings.warn(
            f"Linear imputation stopped after {max_iter} iterations with {int(failed.sum())} sample-channel(s) above "
            f"the tolerance (worst relative residual {relative.max().item():.1e} > tol={tol:.0e}); the imputed "
            "values are approximate. Raise max_iter or tol.",
            RuntimeWarning,
            stacklevel=4,
        )
    return solution
