"""gafkd.imaging: hand-computed cases, pyts 0.14.1 parity, pyts edge cases, dtypes and layouts."""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from gafkd.imaging import encode, gadf, gasf, mtf, n_image_channels, paa, qgaf
from gafkd.imaging.markov import _bins

ROOT3 = math.sqrt(3) / 2  # sin of the angle whose cos is -1/2


def assert_close(actual: torch.Tensor, expected: Any, atol: float = 1e-12) -> None:
    np.testing.assert_allclose(actual.cpu().numpy(), np.asarray(expected), rtol=0, atol=atol)


# --- hand-computed cases ---------------------------------------------------------------------


def test_gasf_of_three_points_is_cosine_of_angle_sums() -> None:
    # x = [0, 1, 4] -> (-1, 1): scale = 2/4, min_ = -1 - 0 * 1/2 -> cos = [-1, -1/2, 1],
    # sin = sqrt(1 - cos^2) = [0, sqrt(3)/2, 0]; GASF_ij = cos_i cos_j - sin_i sin_j,
    # e.g. (1, 1): 1/4 - 3/4 = -1/2 and (0, 1): (-1)(-1/2) - 0 * sqrt(3)/2 = 1/2.
    expected = [[1, 0.5, -1], [0.5, -0.5, -0.5], [-1, -0.5, 1]]
    assert_close(gasf([[0.0, 1.0, 4.0]]), [expected])


def test_gadf_of_three_points_is_sine_of_angle_differences() -> None:
    # Same angles; GADF_ij = sin_i cos_j - cos_i sin_j: (0, 1) = 0 - (-1)(sqrt(3)/2) = sqrt(3)/2,
    # (1, 2) = (sqrt(3)/2)(1) - (-1/2)(0) = sqrt(3)/2, (1, 1) = 0; antisymmetric.
    expected = [[0, ROOT3, 0], [-ROOT3, 0, ROOT3], [0, -ROOT3, 0]]
    assert_close(gadf([[0.0, 1.0, 4.0]]), [expected])


def test_mtf_of_three_points_counts_transitions_between_median_bins() -> None:
    # x = [1, 3, 2], 2 bins: the edge is the median 2; searchsorted(side='left') puts the value
    # 2 sitting on the edge in the lower bin: q = [0, 1, 0]. Transitions 0->1, 1->0:
    # M = [[0, 1], [1, 0]]; MTF_jk = M[q_j, q_k].
    expected = [[0, 1, 0], [1, 0, 1], [0, 1, 0]]
    assert_close(mtf([[1.0, 3.0, 2.0]], n_bins=2), [expected])


def test_mtf_leaves_the_row_of_a_state_without_outgoing_transitions_at_zero() -> None:
    # x = [1, 2, 3], edge 2: q = [0, 0, 1]; transitions 0->0, 0->1 -> M[0] = [1/2, 1/2] and
    # state 1 is never left -> M[1] = [0, 0]. Rows j with q_j = 1 are zero.
    expected = [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], [0, 0, 0]]
    assert_close(mtf([[1.0, 2.0, 3.0]], n_bins=2), [expected])


def test_mtf_aggregates_equal_blocks_by_their_mean() -> None:
    # x = [1, 2, 3, 4], edge = percentile 50 = 2 + 0.5 * (3 - 2) = 2.5: q = [0, 0, 1, 1];
    # 0->0, 0->1, 1->1 -> M = [[1/2, 1/2], [0, 1]]. Blocks {0, 1} and {2, 3} are bin-pure,
    # so the 2x2 block means are M itself.
    assert_close(mtf([[1.0, 2.0, 3.0, 4.0]], image_size=2, n_bins=2), [[[0.5, 0.5], [0, 1]]])


def test_qgaf_of_two_raw_points_is_cosine_of_doubled_sums_and_differences() -> None:
    # x = [0, pi/8]: summation cos(2(x_i + x_j)) = [[cos 0, cos pi/4], [cos pi/4, cos pi/2]];
    # difference cos(2(x_i - x_j)) = [[1, cos pi/4], [cos pi/4, 1]].
    x = [[0.0, math.pi / 8]]
    half = math.sqrt(2) / 2
    assert_close(qgaf(x), [[[1, half], [half, 0]]])
    assert_close(qgaf(x, method="difference"), [[[1, half], [half, 1]]])


def test_qgaf_rescales_to_sample_range_before_the_cosines() -> None:
    # x = [0, 1, 2] -> (0, 1): [0, 1/2, 1]; 2(x_i + x_j) = [[0, 1, 2], [1, 2, 3], [2, 3, 4]].
    expected = np.cos([[0, 1, 2], [1, 2, 3], [2, 3, 4]])
    assert_close(qgaf([[0.0, 1.0, 2.0]], sample_range=(0, 1)), [expected])


def test_paa_averages_floor_linspace_windows() -> None:
    # arange(10) into 4 windows: bounds floor(linspace(0, 10, 5)) = [0, 2, 5, 7, 10].
    assert_close(paa([np.arange(10.0)], 4), [[0.5, 3, 5.5, 8]])
    # overlapping: windows of ceil(10/4) = 3 starting at [0, 3, 6, 9] - floor(linspace(0, 2, 4))
    # = [0, 3, 5, 7] (pyts segmentation).
    assert_close(paa([np.arange(10.0)], 4, overlapping=True), [[1, 4, 6, 8]])


# --- edge cases, as pyts 0.14.1 (each verified against it) ----------------------------------


@pytest.mark.parametrize(("sample_range", "value"), [((-1, 1), 1.0), ((0, 1), -1.0)])
def test_gasf_of_a_constant_series_maps_it_to_the_range_minimum(
    sample_range: tuple[float, float], value: float
) -> None:
    # sklearn replaces a zero data range by 1, so x~ = range minimum: phi = pi (or pi/2).
    assert_close(gasf(np.full((2, 5), 0.3), sample_range=sample_range), np.full((2, 5, 5), value))
    assert_close(gadf(np.full((2, 5), 0.3), sample_range=sample_range), np.zeros((2, 5, 5)))


def test_mtf_of_a_constant_series_is_all_ones_and_warns() -> None:
    with pytest.warns(UserWarning, match="Some quantiles are equal"):
        assert_close(mtf(np.full((2, 5), 0.3)), np.ones((2, 5, 5)))


def test_one_and_two_timestamps_give_pyts_images() -> None:
    assert_close(gasf([[0.7]]), [[[1.0]]])
    assert_close(gasf([[0.7, 0.9]]), [[[1, -1], [-1, 1]]])
    with pytest.warns(UserWarning, match="Some quantiles are equal"):
        assert_close(mtf([[0.7]]), [[[0.0]]])  # no transition at all
    assert_close(mtf([[0.7, 0.9]], n_bins=2), [[[0, 1], [0, 0]]])


def test_image_size_one_averages_the_whole_series() -> None:
    assert_close(gasf([np.arange(10.0)], image_size=1), [[[1.0]]])
    # edge 4.5: q = [0]*5 + [1]*5, M = [[4/5, 1/5], [0, 1]]; mean of M[q_j, q_k] over the
    # 100 pairs = (25 * 4/5 + 25 * 1/5 + 25 * 0 + 25 * 1) / 100 = 1/2.
    assert_close(mtf([np.arange(10.0)], image_size=1, n_bins=2), [[[0.5]]])


def test_float_image_size_is_rounded_up() -> None:
    assert gasf(np.random.default_rng(0).normal(size=(3, 7)), image_size=0.5).shape == (3, 4, 4)
    assert mtf(np.random.default_rng(0).normal(size=(3, 7)), image_size=0.5).shape == (3, 4, 4)


def test_numpy_integer_image_size_is_accepted() -> None:
    assert gasf(np.zeros((1, 8)), image_size=np.int64(4)).shape == (1, 4, 4)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"image_size": 11}, ValueError, "between 1 and n_timestamps = 10"),
        ({"image_size": 0}, ValueError, "between 1"),
        ({"image_size": 1.5}, ValueError, "lower than or equal to 1"),
        ({"image_size": True}, TypeError, "int or a float"),
        ({"sample_range": [-1, 1]}, TypeError, "None or a tuple"),
        ({"sample_range": (1, -1)}, ValueError, "-1 <= min < max <= 1"),
        ({"sample_range": (-2, 1)}, ValueError, "-1 <= min < max <= 1"),
        ({"sample_range": None}, ValueError, r"must lie in \[-1, 1\]"),
    ],
)
def test_gaf_rejects_bad_parameters(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        gasf(np.arange(10.0)[None], **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_bins": 1}, ValueError, "greater than or equal to 2"),
        ({"n_bins": 2.0}, TypeError, "integer"),
        ({"strategy": "kmeans"}, ValueError, "'quantile', 'uniform' or 'normal'"),
    ],
)
def test_mtf_rejects_bad_parameters(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        mtf(np.arange(10.0)[None], **kwargs)


@pytest.mark.parametrize(
    ("bad", "kind"), [(math.nan, "NaN"), (math.inf, "inf"), (-math.inf, "inf")]
)
def test_non_finite_values_raise_naming_the_sample(bad: float, kind: str) -> None:
    X = np.zeros((5, 8))
    X[3, 2] = bad
    with pytest.raises(ValueError, match=rf"X contains {kind} in sample 3; remove or impute"):
        gasf(X)
    X3 = np.zeros((5, 2, 8))
    X3[3, 1, 4] = bad
    with pytest.raises(ValueError, match=rf"{kind} in sample 3 \(channel 1\)"):
        mtf(X3)
    with pytest.raises(ValueError, match=rf"{kind} in sample 3 \(channel 1\)"):
        encode(X3, image_size=4)


def test_inputs_of_the_wrong_rank_or_empty_raise() -> None:
    for X in (np.zeros(8), np.zeros((2, 2, 2, 8)), np.zeros((0, 8)), np.zeros((2, 0))):
        with pytest.raises(ValueError, match="must have shape"):
            gasf(X)


# --- dtypes, devices, shapes, layouts ---------------------------------------------------------


@pytest.mark.parametrize("function", [gasf, gadf, mtf, qgaf])
def test_float32_stays_float32_and_other_dtypes_become_float64(function: Any) -> None:
    X = np.tanh(np.random.default_rng(1).normal(size=(4, 20)))
    assert function(X.astype(np.float32), 5).dtype == torch.float32
    assert function(torch.from_numpy(X).float(), 5).dtype == torch.float32
    assert function(X, 5).dtype == torch.float64
    assert function(np.arange(40).reshape(2, 20), 5).dtype == torch.float64


def test_read_only_and_half_precision_inputs_are_accepted() -> None:
    X = np.broadcast_to(np.linspace(-1, 1, 12), (3, 12))  # read-only view
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_close(gasf(X, 4), gasf(X.copy(), 4))
    assert gasf(torch.from_numpy(X.copy()).half(), 4).dtype == torch.float32


@pytest.mark.parametrize("function", [gasf, gadf, mtf, qgaf])
def test_a_3d_batch_is_imaged_channel_by_channel(function: Any) -> None:
    X = torch.randn(4, 3, 30, dtype=torch.float64).tanh()
    images = function(X, 7)
    assert images.shape == (4, 3, 7, 7)
    assert_close(images, function(X.reshape(12, 30), 7).reshape(4, 3, 7, 7), atol=1e-15)


def test_encode_gasf_layout_stacks_one_gasf_per_channel() -> None:
    X = torch.randn(2, 3, 100)
    images = encode(X)
    assert images.shape == (2, n_image_channels(3, "gasf"), 64, 64)
    assert torch.equal(images, gasf(X, 64))


def test_encode_compound_layout_orders_gasf_then_gadf_then_mtf() -> None:
    X = torch.randn(2, 3, 100, dtype=torch.float64)
    images = encode(X, "compound", image_size=10, n_bins=4)
    assert images.shape == (2, n_image_channels(3, "compound"), 10, 10) == (2, 9, 10, 10)
    assert torch.equal(images[:, :3], gasf(X, 10))
    assert torch.equal(images[:, 3:6], gadf(X, 10))
    assert torch.equal(images[:, 6:], mtf(X, 10, n_bins=4))


def test_encode_gadf_and_mtf_layouts_stack_one_image_per_channel() -> None:
    X = torch.randn(2, 3, 100, dtype=torch.float64)
    gadf_images = encode(X, "gadf", image_size=10)
    mtf_images = encode(X, "mtf", image_size=10, n_bins=4, strategy="uniform")
    assert gadf_images.shape == mtf_images.shape == (2, n_image_channels(3, "gadf"), 10, 10)
    assert n_image_channels(3, "mtf") == 3
    assert torch.equal(gadf_images, gadf(X, 10))
    assert torch.equal(mtf_images, mtf(X, 10, n_bins=4, strategy="uniform"))


def test_encode_rejects_2d_input_and_unknown_layouts() -> None:
    with pytest.raises(ValueError, match=r"X\[:, None, :\]"):
        encode(torch.randn(2, 100))
    with pytest.raises(ValueError, match="'gasf', 'gadf', 'mtf' or 'compound'"):
        encode(torch.randn(2, 3, 100), layout="rp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive integer"):
        n_image_channels(0, "gasf")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_output_matches_cpu_output() -> None:
    X = torch.randn(16, 3, 150, dtype=torch.float64)
    for layout in ("gasf", "compound"):
        on_gpu = encode(X.cuda(), layout, image_size=64)
        assert on_gpu.device.type == "cuda"
        assert_close(on_gpu, encode(X, layout, image_size=64), atol=1e-10)
    for strategy in ("quantile", "uniform", "normal"):
        ties = X.round()  # values on quantile edges
        assert torch.equal(
            _bins(ties.cuda()[:, 0], 5, strategy)[0].cpu(), _bins(ties[:, 0], 5, strategy)[0]
        )
    assert_close(qgaf(X.cuda(), 20), qgaf(X, 20), atol=1e-10)
    assert_close(gasf(X.float().cuda(), 64), gasf(X.float(), 64), atol=1e-5)


# --- parity with pyts 0.14.1 ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pyts() -> SimpleNamespace:
    """pyts modules, imported once: `import pyts.image` compiles numba kernels for ~25 s."""
    image = pytest.importorskip("pyts.image")
    from pyts import approximation, datasets, preprocessing

    return SimpleNamespace(
        image=image, approximation=approximation, datasets=datasets, preprocessing=preprocessing
    )


def pyts_gaf(pyts: SimpleNamespace, X: np.ndarray, method: str, **kwargs: Any) -> np.ndarray:
    return np.asarray(pyts.image.GramianAngularField(method=method, **kwargs).transform(X))


def assert_matches(ours: torch.Tensor, theirs: np.ndarray, dtype: torch.dtype) -> None:
    assert ours.dtype == dtype
    assert ours.shape == theirs.shape
    diff = np.abs(ours.double().numpy() - theirs)
    if dtype == torch.float64:
        assert diff.max() <= 1e-7
    else:
        assert diff.max() <= 1e-3
        assert diff.mean() <= 1e-6


@pytest.mark.pyts
@pytest.mark.parametrize("image_size", [64, 150, 0.3, 1])
@pytest.mark.parametrize("overlapping", [False, True])
def test_gaf_and_mtf_match_pyts_on_gunpoint(
    pyts: SimpleNamespace, image_size: int | float, overlapping: bool
) -> None:
    X = pyts.datasets.load_gunpoint(return_X_y=True)[0]  # (50, 150): 64 -> 42 windows of 2
    options = {"image_size": image_size, "overlapping": overlapping}
    for X_in, dtype in ((X, torch.float64), (X.astype(np.float32), torch.float32)):
        ours = gasf(X_in, image_size, overlapping=overlapping)
        assert_matches(ours, pyts_gaf(pyts, X_in, "summation", **options), dtype)
        ours = gadf(X_in, image_size, overlapping=overlapping)
        assert_matches(ours, pyts_gaf(pyts, X_in, "difference", **options), dtype)
        expected = pyts.image.MarkovTransitionField(**options).transform(X_in)
        assert_matches(mtf(X_in, image_size, overlapping=overlapping), expected, dtype)


@pytest.mark.pyts
def test_imaging_matches_pyts_channel_by_channel_on_basic_motions(pyts: SimpleNamespace) -> None:
    X = pyts.datasets.load_basic_motions(return_X_y=True)[0][:12]  # (12, 6, 100)
    flat = X.reshape(-1, X.shape[-1])
    images = encode(X, "compound", image_size=32)  # (12, 18, 32, 32)
    gaf = pyts.image.GramianAngularField(image_size=32)
    expected = [
        gaf.transform(flat),
        gaf.set_params(method="difference").transform(flat),
        pyts.image.MarkovTransitionField(image_size=32).transform(flat),
    ]
    for k, theirs in enumerate(expected):
        assert_matches(images[:, 6 * k : 6 * (k + 1)], theirs.reshape(12, 6, 32, 32), torch.float64)


@pytest.mark.pyts
@pytest.mark.parametrize("layout", ["gasf", "gadf", "mtf"])
def test_encode_single_layouts_match_pyts_on_coffee(pyts: SimpleNamespace, layout: str) -> None:
    X = pyts.datasets.load_coffee(return_X_y=True)[0][:10]  # (10, 286), one channel
    images = encode(X[:, None, :], layout, image_size=32)  # type: ignore[arg-type]
    if layout == "mtf":
        transform = pyts.image.MarkovTransitionField(image_size=32)
    else:
        method = "summation" if layout == "gasf" else "difference"
        transform = pyts.image.GramianAngularField(image_size=32, method=method)
    assert_matches(images[:, 0], transform.transform(X), torch.float64)


@pytest.mark.pyts
@pytest.mark.parametrize(
    ("n_timestamps", "image_size", "sample_range", "overlapping"),
    [
        (37, 5, (-1, 1), False),
        (37, 5, (0, 1), True),
        (500, 64, (-0.5, 0.8), False),
        (500, 64, None, True),
        (61, 0.25, None, False),
        (10, 3, (0, 1), True),
    ],
)
def test_gaf_paa_and_qgaf_match_pyts_on_random_shapes(
    pyts: SimpleNamespace,
    n_timestamps: int,
    image_size: int | float,
    sample_range: tuple[float, float] | None,
    overlapping: bool,
) -> None:
    X = np.tanh(np.random.default_rng(n_timestamps).normal(size=(8, n_timestamps)))  # in [-1, 1]
    options = {"image_size": image_size, "sample_range": sample_range, "overlapping": overlapping}
    for method, function in (("summation", gasf), ("difference", gadf)):
        for X_in, dtype in ((X, torch.float64), (X.astype(np.float32), torch.float32)):
            ours = function(X_in, image_size, sample_range, overlapping)
            assert_matches(ours, pyts_gaf(pyts, X_in, method, **options), dtype)
    reduced = pyts.approximation.PiecewiseAggregateApproximation(
        window_size=None, output_size=image_size, overlapping=overlapping
    ).transform(X)
    assert_matches(paa(X, image_size, overlapping), reduced, torch.float64)
    if sample_range is not None:
        reduced = pyts.preprocessing.MinMaxScaler(sample_range).transform(reduced)
    expected = np.cos(2 * (reduced[:, :, None] + reduced[:, None, :]))
    assert_close(qgaf(X, image_size, sample_range, "summation", overlapping), expected, 1e-12)


@pytest.mark.pyts
@pytest.mark.parametrize("strategy", ["quantile", "uniform", "normal"])
@pytest.mark.parametrize("n_bins", [2, 3, 5, 8, 16])
def test_mtf_and_bins_match_pyts_for_every_strategy(
    pyts: SimpleNamespace, strategy: str, n_bins: int
) -> None:
    rng = np.random.default_rng(n_bins)
    X = rng.normal(size=(10, 47))
    X = (X - X.mean(axis=1, keepdims=True)) / X.std(axis=1, keepdims=True)  # for 'normal'
    ties = rng.integers(0, 6, size=(10, 47)).astype(np.float64)  # data on the quantile edges
    ties[0] = 2.0  # a constant sample
    discretizer = pyts.preprocessing.KBinsDiscretizer(n_bins=n_bins, strategy=strategy)
    for data in (X, ties):
        ours_bins, _ = _bins(torch.from_numpy(data), n_bins, strategy)  # type: ignore[arg-type]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            np.testing.assert_array_equal(ours_bins.numpy(), discretizer.transform(data))
            for image_size, overlapping in ((47, False), (10, False), (10, True), (0.5, True)):
                options = {"image_size": image_size, "overlapping": overlapping}
                ours = mtf(data, n_bins=n_bins, strategy=strategy, **options)  # type: ignore[arg-type]
                theirs = pyts.image.MarkovTransitionField(
                    n_bins=n_bins, strategy=strategy, **options
                ).transform(data)
                assert_matches(ours, theirs, torch.float64)
            data32 = data.astype(np.float32)
            ours32 = mtf(data32, 10, n_bins, strategy)  # type: ignore[arg-type]
            theirs32 = pyts.image.MarkovTransitionField(10, n_bins, strategy).transform(data32)
            assert_matches(ours32, theirs32, torch.float32)


@pytest.mark.pyts
def test_mtf_warns_for_the_same_samples_as_pyts_when_quantiles_merge_bins(
    pyts: SimpleNamespace,
) -> None:
    X = np.random.default_rng(0).normal(size=(6, 30))
    X[[1, 4]] = np.round(X[[1, 4]])  # few distinct values -> equal quantiles
    with pytest.warns(UserWarning, match=r"Some quantiles are equal.*samples \[1, 4\]"):
        mtf(X, n_bins=8)
    with pytest.warns(UserWarning, match=r"sample \[1 4\]"):
        pyts.image.MarkovTransitionField(n_bins=8).transform(X)
    with pytest.warns(UserWarning, match=r"\(sample, channel\) pairs \[\(0, 1\), \(2, 0\)\]"):
        mtf(X.reshape(3, 2, 30), n_bins=8)
