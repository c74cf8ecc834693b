"""Tests of skcgcnn.target: the tanh (eq. 6) and standard normalisations."""

import numpy as np
import pytest

from skcgcnn.target import TARGET_NORMALIZATIONS, denormalize, fit_target_stats, normalize

Y = np.array([-3.2, 0.0, 0.7, 1.5, 12.0, 250.0])


@pytest.mark.parametrize("kind", TARGET_NORMALIZATIONS)
def test_round_trip(kind):
    mean, scale = fit_target_stats(Y, kind)
    yn = normalize(Y, mean, scale, kind)
    assert yn.shape == Y.shape and yn.dtype == np.float64
    np.testing.assert_allclose(denormalize(yn, mean, scale, kind), Y, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", TARGET_NORMALIZATIONS)
def test_round_trip_through_float32(kind):
    # the network works in float32; the round trip must stay accurate
    mean, scale = fit_target_stats(Y, kind)
    yn = normalize(Y, mean, scale, kind).astype(np.float32)
    atol = 1e-2 * scale if kind == "tanh" else 1e-4 * max(1.0, scale)
    np.testing.assert_allclose(denormalize(yn, mean, scale, kind), Y, atol=atol)


def test_tanh_is_eq6():
    mean, scale = 2.0, 4.0
    y = np.array([2.0, 6.0, -2.0, 402.0])
    expected = 0.5 * (np.tanh(0.01 * (y - mean) / scale) + 1)
    np.testing.assert_allclose(normalize(y, mean, scale, "tanh"), expected)
    assert normalize(np.array([mean]), mean, scale, "tanh")[0] == 0.5
    # all outputs in (0, 1)
    yn = normalize(Y, *fit_target_stats(Y, "tanh"), "tanh")
    assert ((yn > 0) & (yn < 1)).all()


def test_standard_is_z_score():
    mean, scale = fit_target_stats(Y, "standard")
    assert mean == pytest.approx(Y.mean())
    assert scale == pytest.approx(Y.std())
    z = normalize(Y, mean, scale, "standard")
    assert z.mean() == pytest.approx(0.0, abs=1e-12)
    assert z.std() == pytest.approx(1.0)


def test_none_is_identity():
    assert fit_target_stats(Y, None) == (0.0, 1.0)
    np.testing.assert_array_equal(normalize(Y, 5.0, 3.0, None), Y)
    np.testing.assert_array_equal(denormalize(Y, 5.0, 3.0, None), Y)


def test_default_kind_is_the_estimators_standard():
    import inspect

    from skcgcnn import CGCNNRegressor

    default = inspect.signature(CGCNNRegressor).parameters["target_normalization"].default
    assert default == "standard"
    for func in (fit_target_stats, normalize, denormalize):
        assert inspect.signature(func).parameters["kind"].default == default, func
    np.testing.assert_array_equal(normalize(Y, 1.0, 2.0), (Y - 1.0) / 2.0)
    np.testing.assert_array_equal(denormalize(Y, 1.0, 2.0), Y * 2.0 + 1.0)
    assert fit_target_stats([1.0, 2.0, 3.0]) == (2.0, pytest.approx(np.sqrt(2 / 3)))


@pytest.mark.parametrize("kind", ["tanh", "standard"])
def test_constant_target_has_scale_one(kind):
    mean, scale = fit_target_stats([4.2, 4.2, 4.2], kind)
    assert mean == pytest.approx(4.2) and scale == 1.0
    yn = normalize(np.array([4.2, 5.2]), mean, scale, kind)
    assert np.isfinite(yn).all()
    np.testing.assert_allclose(denormalize(yn, mean, scale, kind), [4.2, 5.2])


def test_tanh_denormalize_clips_outputs_outside_unit_interval():
    # a network may predict outside (0, 1); the inverse stays finite and monotone
    out = denormalize(np.array([-0.5, 0.0, 0.5, 1.0, 1.5]), 0.0, 1.0, "tanh")
    assert np.isfinite(out).all()
    assert out[2] == pytest.approx(0.0)
    assert (np.diff(out) >= 0).all()
    assert out[0] == out[1] < 0 < out[3] == out[4]


@pytest.mark.parametrize("kind", ["Tanh", "minmax", "", 0])
def test_invalid_kind_raises(kind):
    with pytest.raises(ValueError, match="target_normalization"):
        fit_target_stats(Y, kind)
    with pytest.raises(ValueError, match="target_normalization"):
        normalize(Y, 0.0, 1.0, kind)
    with pytest.raises(ValueError, match="target_normalization"):
        denormalize(Y, 0.0, 1.0, kind)
