"""Noisy linear imputation: oracles are scipy direct solves of the same system, pytorch-grad-cam's NoisyLinearImputer,
and functions the stencil must reproduce exactly (constants, linear ramps)."""

from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
import scipy.sparse as sparse
import scipy.sparse.linalg as sparse_linalg
import torch
import torch.nn.functional as F

from monai_xai.metrics import imputation, neighbour_weights, noisy_linear_impute
from monai_xai.metrics.imputation import _MaskedStencil, _Multigrid, _prolong


def scipy_impute(
    image: np.ndarray, removed: np.ndarray, axial_only: bool = False, spacing: tuple[float, ...] | None = None
) -> np.ndarray:
    """Direct sparse solve, one sample: deg_i x_i - sum_{j removed} w_ij x_j = sum_{j known} w_ij v_j per removed i,
    w_ij proportional to 1 / |physical offset|^2, out-of-image neighbours dropped.

    image (C, *spatial), removed (*spatial) bool.
    """
    shape = removed.shape
    spacing = np.ones(len(shape)) if spacing is None else np.asarray(spacing, dtype=float)
    offsets = [np.array(o) for o in itertools.product((-1, 0, 1), repeat=len(shape)) if any(o)]
    if axial_only:
        offsets = [o for o in offsets if np.abs(o).sum() == 1]
    raw = np.array([1.0 / np.sum((o * spacing) ** 2) for o in offsets])
    weights = raw / raw.sum()
    unknown = np.flatnonzero(removed.ravel())
    position = np.full(removed.size, -1)
    position[unknown] = np.arange(unknown.size)
    coords = np.stack(np.unravel_index(unknown, shape), axis=1)
    flat_image = image.reshape(image.shape[0], -1)
    rows, cols, vals = [], [], []
    rhs = np.zeros((unknown.size, image.shape[0]))
    degree = np.zeros(unknown.size)
    for offset, weight in zip(offsets, weights):
        neighbour = coords + offset
        inside = np.all((neighbour >= 0) & (neighbour < np.array(shape)), axis=1)
        rows_inside = np.flatnonzero(inside)
        neighbour_flat = np.ravel_multi_index(tuple(neighbour[inside].T), shape)
        degree[rows_inside] += weight
        is_unknown = removed.ravel()[neighbour_flat]
        rows += list(rows_inside[is_unknown])
        cols += list(position[neighbour_flat[is_unknown]])
        vals += [-weight] * int(is_unknown.sum())
        rhs[rows_inside[~is_unknown]] += weight * flat_image[:, neighbour_flat[~is_unknown]].T
    diagonal = list(range(unknown.size))
    matrix = sparse.csc_matrix((vals + list(degree), (rows + diagonal, cols + diagonal)), shape=(unknown.size,) * 2)
    solution = sparse_linalg.spsolve(matrix, rhs).reshape(unknown.size, -1)
    result = flat_image.astype(np.float64).copy()
    result[:, unknown] = solution.T
    return result.reshape(image.shape)


def blob_mask(batch: int, shape: tuple[int, ...], removed_share: float, generator: torch.Generator) -> torch.Tensor:
    """Large smooth removed regions (an upsampled random field thresholded), the hard case for iterative solvers."""
    coarse = torch.rand(batch, 1, *(3,) * len(shape), generator=generator)
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    field = F.interpolate(coarse, size=shape, mode=mode, align_corners=False).flatten(1)
    threshold = field.quantile(1 - removed_share, dim=1, keepdim=True)
    return (field > threshold).reshape(batch, 1, *shape)


# The default tol=1e-5 (relative residual) keeps the imputed values within about 4e-5 of the exact solution for values
# in [0, 1] (measured on white noise with 90 % removed); ROAD adds noise of standard deviation 0.01 on top.
DEFAULT_ACCURACY = 1e-4


def assert_matches_scipy(images, removed, result, atol=DEFAULT_ACCURACY, **oracle_kwargs):
    for sample in range(images.shape[0]):
        expected = scipy_impute(images[sample].double().numpy(), removed[sample, 0].numpy(), **oracle_kwargs)
        np.testing.assert_allclose(result[sample].double().numpy(), expected, atol=atol, rtol=0)


def test_neighbour_weights_hand_values():
    full_2d = neighbour_weights(2)
    assert full_2d[0, 1].item() == pytest.approx(1 / 6) and full_2d[0, 0].item() == pytest.approx(1 / 12)
    assert full_2d[1, 1].item() == 0
    full_3d = neighbour_weights(3)
    assert full_3d[0, 1, 1].item() == pytest.approx(3 / 44)  # face
    assert full_3d[0, 0, 1].item() == pytest.approx(3 / 88)  # edge
    assert full_3d[0, 0, 0].item() == pytest.approx(1 / 44)  # corner
    axial_3d = neighbour_weights(3, neighbourhood=6)
    assert axial_3d[1, 1, 0].item() == pytest.approx(1 / 6) and axial_3d[0, 0, 1].item() == 0
    # spacing (1, 2): axial along axis 0 weighs 1, along axis 1 weighs 1/4, diagonals 1/5
    anisotropic = neighbour_weights(2, spacing=(1.0, 2.0))
    total = 2 * 1 + 2 * 0.25 + 4 * 0.2
    assert anisotropic[0, 1].item() == pytest.approx(1 / total) and anisotropic[1, 0].item() == pytest.approx(
        0.25 / total
    )


@pytest.mark.parametrize(
    "shape, removed_share",
    [((15, 16), 0.5), ((40, 37), 0.9), ((64, 64), 0.9), ((3, 150), 0.6)],  # single level, 1 and 2 coarse levels, 1-axis
)
def test_matches_scipy_direct_solve_2d(shape, removed_share):
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, *shape, generator=generator)
    removed = blob_mask(2, shape, removed_share, generator)
    removed[1] |= torch.rand(1, *shape, generator=generator) < 0.3  # scattered holes on top of the blob
    assert_matches_scipy(images, removed, noisy_linear_impute(images, removed))


@pytest.mark.parametrize("shape", [(64, 64), (12, 11, 10)])
def test_tight_tolerance_matches_scipy_to_float64_precision(shape):
    # the solver converges to the exact system, not merely to the default accuracy
    generator = torch.Generator().manual_seed(11)
    images = torch.rand(2, 2, *shape, generator=generator, dtype=torch.float64)
    removed = blob_mask(2, shape, 0.9, generator)
    assert_matches_scipy(images, removed, noisy_linear_impute(images, removed, tol=1e-11), atol=1e-9)


@pytest.mark.parametrize("neighbourhood, spacing", [(26, None), (6, None), (26, (2.0, 1.0, 0.5))])
def test_matches_scipy_direct_solve_3d(neighbourhood, spacing):
    generator = torch.Generator().manual_seed(2)
    shape = (12, 11, 10)
    images = torch.rand(2, 2, *shape, generator=generator)
    removed = blob_mask(2, shape, 0.85, generator)
    result = noisy_linear_impute(images, removed, neighbourhood=neighbourhood, spacing=spacing)
    assert_matches_scipy(images, removed, result, axial_only=neighbourhood == 6, spacing=spacing)


def test_axial_2d_matches_scipy():
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(1, 1, 30, 30, generator=generator)
    removed = blob_mask(1, (30, 30), 0.7, generator)
    assert_matches_scipy(images, removed, noisy_linear_impute(images, removed, neighbourhood=4), axial_only=True)


def test_matches_pytorch_grad_cam_imputer():
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    generator = torch.Generator().manual_seed(4)
    images = torch.rand(2, 3, 24, 21, generator=generator)
    removed = blob_mask(2, (24, 21), 0.6, generator)
    ours = noisy_linear_impute(images, removed)
    for sample in range(2):
        # pytorch-grad-cam's mask marks the pixels it KEEPS
        reference = NoisyLinearImputer(noise=0.0)(images[sample], (~removed[sample, 0]).float())
        torch.testing.assert_close(ours[sample], reference, atol=DEFAULT_ACCURACY, rtol=0)


def test_known_pixels_bit_identical_and_dtype_kept():
    generator = torch.Generator().manual_seed(5)
    images = torch.rand(2, 3, 20, 20, generator=generator, dtype=torch.float64)
    removed = torch.rand(2, 1, 20, 20, generator=generator) < 0.5
    result = noisy_linear_impute(images, removed, noise=0.1, generator=generator)
    known = ~removed.expand_as(images)
    assert result.dtype == torch.float64
    assert torch.equal(result[known], images[known])


@pytest.mark.parametrize("shape", [(33, 30), (9, 10, 11)])
def test_constant_image_stays_constant(shape):
    images = torch.full((2, 2, *shape), 0.37)
    removed = blob_mask(2, shape, 0.9, torch.Generator().manual_seed(6))
    torch.testing.assert_close(noisy_linear_impute(images, removed, tol=1e-9), images, atol=1e-6, rtol=0)


@pytest.mark.parametrize("neighbourhood", [8, 4])
def test_linear_ramp_interior_hole_is_filled_exactly(neighbourhood):
    # Any centrally symmetric stencil averages a linear function back to its centre value, so the ramp solves the
    # system whenever the hole stays off the image border (there, out-of-image neighbours are dropped instead).
    rows, cols = torch.meshgrid(torch.arange(40.0), torch.arange(36.0), indexing="ij")
    ramp = (0.02 * rows - 0.03 * cols + 1.0).expand(1, 2, -1, -1).clone()
    removed = torch.zeros(1, 1, 40, 36, dtype=torch.bool)
    removed[..., 5:30, 8:33] = True
    result = noisy_linear_impute(ramp, removed, neighbourhood=neighbourhood, tol=1e-9)
    torch.testing.assert_close(result, ramp, atol=1e-5, rtol=0)


def test_linear_ramp_3d_anisotropic():
    grid = torch.meshgrid(*(torch.arange(n, dtype=torch.float32) for n in (10, 12, 11)), indexing="ij")
    ramp = (0.1 * grid[0] + 0.05 * grid[1] - 0.02 * grid[2])[None, None]
    removed = torch.zeros(1, 1, 10, 12, 11, dtype=torch.bool)
    removed[..., 2:8, 1:10, 3:9] = True
    result = noisy_linear_impute(ramp, removed, spacing=(3.0, 1.0, 0.5), tol=1e-9)
    torch.testing.assert_close(result, ramp, atol=1e-5, rtol=0)


def test_hole_touching_border_is_not_linear():
    # documents the natural boundary: at the border the imputation is not a linear extrapolation
    rows = torch.arange(20.0).reshape(1, 1, 20, 1).expand(1, 1, 20, 20).clone()
    removed = torch.zeros(1, 1, 20, 20, dtype=torch.bool)
    removed[..., 15:, :] = True
    result = noisy_linear_impute(rows, removed)
    assert (result[..., 19, :] - rows[..., 19, :]).abs().min() > 1.0  # the last rows flatten towards row 14


def test_batch_equals_samples_one_by_one():
    generator = torch.Generator().manual_seed(7)
    images = torch.rand(3, 2, 36, 34, generator=generator)
    removed = blob_mask(3, (36, 34), 0.8, generator)
    together = noisy_linear_impute(images, removed)
    for sample in range(3):
        alone = noisy_linear_impute(images[sample : sample + 1], removed[sample : sample + 1])
        torch.testing.assert_close(together[sample : sample + 1], alone, atol=1e-6, rtol=0)


def test_cpu_groups_match_one_system_and_scipy(monkeypatch):
    """On a CPU the batch is solved in cache-sized groups of samples; grouping must change neither the solution nor
    the seeded noise."""
    generator = torch.Generator().manual_seed(8)
    images = torch.rand(5, 2, 24, 22, generator=generator)
    removed = blob_mask(5, (24, 22), 0.6, generator)
    one_system = noisy_linear_impute(images, removed, noise=0.01, generator=torch.Generator().manual_seed(3))
    solves = []
    original = imputation.solve_masked_laplace

    def counted(values, *args, **kwargs):
        solves.append(values.shape[0])
        return original(values, *args, **kwargs)

    monkeypatch.setattr(imputation, "solve_masked_laplace", counted)
    monkeypatch.setattr(imputation, "_CPU_VALUES_PER_SOLVE", 2 * images[0].numel())
    grouped = noisy_linear_impute(images, removed, noise=0.01, generator=torch.Generator().manual_seed(3))
    assert solves == [2, 2, 1]
    torch.testing.assert_close(grouped, one_system, atol=1e-6, rtol=0)
    assert_matches_scipy(images, removed, noisy_linear_impute(images, removed))


@pytest.fixture
def two_torch_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def test_groups_solved_side_by_side_match_one_system_and_scipy(monkeypatch, two_torch_threads):
    """With 2 worker threads the groups are solved side by side, each on one torch thread: the result equals the
    whole batch solved as one system and sample by sample, the noise is the same, and the caller's count is back."""
    generator = torch.Generator().manual_seed(9)
    images = torch.rand(5, 2, 24, 22, generator=generator)
    removed = blob_mask(5, (24, 22), 0.7, generator)
    monkeypatch.setattr(imputation, "_CPU_VALUES_PER_SOLVE", 10**9)
    with monkeypatch.context() as sequential:
        sequential.setattr(imputation, "worker_threads", lambda: 1)
        one_system = noisy_linear_impute(images, removed, noise=0.01, generator=torch.Generator().manual_seed(4))
    monkeypatch.setattr(imputation, "worker_threads", lambda: 2)
    solves = []
    original = imputation.solve_masked_laplace

    def recorded(values, *args, **kwargs):
        solves.append((values.shape[0], threading.get_ident(), torch.get_num_threads()))
        return original(values, *args, **kwargs)

    monkeypatch.setattr(imputation, "solve_masked_laplace", recorded)
    side_by_side = noisy_linear_impute(images, removed, noise=0.01, generator=torch.Generator().manual_seed(4))
    assert sorted(size for size, _, _ in solves) == [2, 3]  # an equal share of the batch per worker
    assert len({thread for _, thread, _ in solves} - {threading.get_ident()}) == 2
    assert {threads for _, _, threads in solves} == {1}
    assert torch.get_num_threads() == 2
    torch.testing.assert_close(side_by_side, one_system, atol=1e-6, rtol=0)
    noiseless = noisy_linear_impute(images, removed)
    for sample in range(5):
        alone = noisy_linear_impute(images[sample : sample + 1], removed[sample : sample + 1])
        torch.testing.assert_close(noiseless[sample : sample + 1], alone, atol=1e-6, rtol=0)
    assert_matches_scipy(images, removed, noiseless)


def test_nothing_removed_returns_input():
    images = torch.rand(2, 1, 8, 8)
    assert torch.equal(noisy_linear_impute(images, torch.zeros(2, 1, 8, 8, dtype=torch.bool)), images)


def test_noise_on_removed_pixels_only_seeded_with_given_std():
    generator = torch.Generator().manual_seed(8)
    images = torch.rand(2, 3, 40, 40, generator=generator)
    removed = blob_mask(2, (40, 40), 0.7, generator)
    clean = noisy_linear_impute(images, removed)
    noisy = noisy_linear_impute(images, removed, noise=0.05, generator=torch.Generator().manual_seed(0))
    again = noisy_linear_impute(images, removed, noise=0.05, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)
    mask = removed.expand_as(images)
    assert torch.equal(noisy[~mask], images[~mask])
    deviation = (noisy - clean)[mask]
    assert deviation.std().item() == pytest.approx(0.05, rel=0.05)
    assert deviation.mean().abs().item() < 0.005


def test_every_pixel_removed_raises():
    removed = torch.zeros(3, 1, 6, 6, dtype=torch.bool)
    removed[1] = True
    with pytest.raises(ValueError, match=r"Every pixel of sample\(s\) \[1\] is removed"):
        noisy_linear_impute(torch.rand(3, 1, 6, 6), removed)


@pytest.mark.parametrize(
    "images, removed, kwargs, message",
    [
        (torch.rand(1, 1, 6, 6), torch.zeros(1, 1, 6, 6), {}, "bool tensor of shape"),
        (torch.rand(1, 1, 6, 6), torch.zeros(1, 1, 6, 5, dtype=torch.bool), {}, "bool tensor of shape"),
        (torch.rand(1, 6), torch.zeros(1, 1, 6, dtype=torch.bool), {}, "floating"),
        (torch.zeros(1, 1, 6, 6, dtype=torch.long), torch.zeros(1, 1, 6, 6, dtype=torch.bool), {}, "floating"),
        (torch.rand(1, 1, 6, 6), torch.zeros(1, 1, 6, 6, dtype=torch.bool), {"noise": -1.0}, "noise"),
        (torch.rand(1, 1, 6, 6), torch.zeros(1, 1, 6, 6, dtype=torch.bool), {"neighbourhood": 26}, "8 or 4"),
        (torch.rand(1, 1, 6, 6), torch.zeros(1, 1, 6, 6, dtype=torch.bool), {"spacing": (1.0,)}, "spacing"),
    ],
)
def test_bad_input_messages(images, removed, kwargs, message):
    with pytest.raises(ValueError, match=message):
        noisy_linear_impute(images, removed, **kwargs)


def test_non_convergence_warns():
    generator = torch.Generator().manual_seed(9)
    images = torch.rand(1, 1, 64, 64, generator=generator)
    removed = blob_mask(1, (64, 64), 0.9, generator)
    with pytest.warns(RuntimeWarning, match="did not converge|above the tolerance"):
        noisy_linear_impute(images, removed, max_iter=1, tol=1e-12)


def test_galerkin_coarse_operator_equals_dense_triple_product():
    # the coarse stencils are assembled entry by entry; check them against P^T A P built from dense matrices
    generator = torch.Generator().manual_seed(10)
    for shape in [(9, 8), (5, 6, 4)]:
        unknown = torch.rand(2, 1, *shape, generator=generator) < 0.7
        fine = _MaskedStencil(unknown, neighbour_weights(len(shape)), torch.float64)
        axes = tuple(range(2, 2 + len(shape)))
        coarse = _Multigrid(fine, neighbour_weights(len(shape)))._galerkin(fine, axes)
        nodes, coarse_shape = int(np.prod(shape)), coarse.mask.shape[2:]
        coarse_nodes = int(np.prod(coarse_shape))
        dense_a = fine.apply(torch.eye(nodes, dtype=torch.float64).reshape(1, nodes, *shape).expand(2, -1, *shape))
        dense_a = dense_a.reshape(2, nodes, nodes)
        coarse_identity = torch.eye(coarse_nodes, dtype=torch.float64).reshape(1, coarse_nodes, *coarse_shape)
        dense_p = _prolong(coarse_identity.expand(2, -1, *coarse_shape), fine.mask, axes).reshape(
            2, coarse_nodes, nodes
        )
        expected = dense_p @ dense_a @ dense_p.transpose(1, 2)
        actual = coarse.apply(coarse_identity.expand(2, -1, *coarse_shape)).reshape(2, coarse_nodes, coarse_nodes)
        torch.testing.assert_close(actual, expected, atol=1e-12, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    generator = torch.Generator().manual_seed(11)
    images = torch.rand(2, 3, 40, 44, generator=generator)
    removed = blob_mask(2, (40, 44), 0.8, generator)
    on_gpu = noisy_linear_impute(images.cuda(), removed.cuda())
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), noisy_linear_impute(images, removed), atol=1e-5, rtol=0)
