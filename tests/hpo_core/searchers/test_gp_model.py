"""The GP model, acquisition functions, the encoded-space helper and the acquisition optimizer."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import approx_fprime
from scipy.stats import norm

from hpo_core.models.acquisition import (
    expected_improvement,
    log_expected_improvement,
    log_probability_below,
)
from hpo_core.models.encoding import EncodedSpace
from hpo_core.models.gp import JITTER, GaussianProcess, GPPosterior
from hpo_core.models.optimize import maximize_acquisition
from hpo_core.space import (
    ConfigSpace,
    choice,
    finrange,
    logfinrange,
    lograndint,
    loguniform,
    ordinal,
    randint,
    uniform,
)


def theta(lengthscales, signal, noise, mean):
    return np.array([*np.log(lengthscales), math.log(signal), math.log(noise), mean])


def test_posterior_with_one_point_matches_the_closed_form():
    # one observation y0 at x0; lengthscale 0.5, signal variance 2, noise 0.1, mean 0.3
    x0, y0, z = np.array([[0.2]]), np.array([1.5]), np.array([[0.6]])
    post = GPPosterior(x0, y0, theta([0.5], 2.0, 0.1, 0.3))
    r = 0.4 / 0.5
    k = 2.0 * (1 + math.sqrt(5) * r + 5 / 3 * r * r) * math.exp(-math.sqrt(5) * r)
    denominator = 2.0 + 0.1 + JITTER
    mean, var = post.predict(z)
    assert mean[0] == pytest.approx(0.3 + k / denominator * (1.5 - 0.3), rel=1e-9)
    assert var[0] == pytest.approx(2.0 - k * k / denominator, rel=1e-9)
    # at the observed point the latent variance is signal * noise / (signal + noise)
    _, var0 = post.predict(x0)
    assert var0[0] == pytest.approx(2.0 - 4.0 / denominator, rel=1e-6)


def test_posterior_with_two_points_matches_a_direct_solve():
    X = np.array([[0.1, 0.9], [0.7, 0.3]])
    y = np.array([-1.0, 2.0])
    th = theta([0.3, 0.8], 1.5, 0.01, 0.2)
    post = GPPosterior(X, y, th)

    def k(a, b):
        r = math.sqrt(((a[0] - b[0]) / 0.3) ** 2 + ((a[1] - b[1]) / 0.8) ** 2)
        return 1.5 * (1 + math.sqrt(5) * r + 5 / 3 * r * r) * math.exp(-math.sqrt(5) * r)

    K = np.array([[k(a, b) for b in X] for a in X]) + (0.01 + JITTER) * np.eye(2)
    z = np.array([0.4, 0.5])
    ks = np.array([k(z, b) for b in X])
    mean, var = post.predict(z[None, :])
    assert mean[0] == pytest.approx(0.2 + ks @ np.linalg.solve(K, y - 0.2), rel=1e-9)
    assert var[0] == pytest.approx(1.5 - ks @ np.linalg.solve(K, ks), rel=1e-9)


@pytest.mark.parametrize("priors", [False, True])
def test_marginal_likelihood_value_and_gradient(priors):
    rng = np.random.default_rng(0)
    X = rng.random((25, 3))
    y = np.sin(4 * X[:, 0]) + X[:, 1] + 0.1 * rng.standard_normal(25)
    y = (y - y.mean()) / y.std()
    gp = GaussianProcess(3, priors=priors)
    th = gp.default_theta() + 0.3 * rng.standard_normal(6)
    value, grad = gp.neg_log_posterior(th, X, y)
    # the value against a direct computation
    post = GPPosterior(X, y, th)
    K = post.L @ post.L.T
    resid = y - th[-1]
    direct = 0.5 * resid @ np.linalg.solve(K, resid) + 0.5 * np.linalg.slogdet(K)[1] \
        + 0.5 * len(y) * math.log(2 * math.pi)
    if priors:
        direct += 0.5 * np.sum(((th - gp.prior_mean) / gp.prior_sd) ** 2)
    assert value == pytest.approx(direct, rel=1e-8)
    numeric = approx_fprime(th, lambda t: gp.neg_log_posterior(t, X, y)[0], 1e-6)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-3)


def test_fit_improves_the_likelihood_and_finds_the_noise_level():
    rng = np.random.default_rng(1)
    X = rng.random((60, 2))
    y = np.sin(6 * X[:, 0]) * np.cos(3 * X[:, 1]) + 0.2 * rng.standard_normal(60)
    shift, scale = y.mean(), y.std()
    y = (y - shift) / scale
    gp = GaussianProcess(2)
    before = gp.neg_log_posterior(gp.default_theta(), X, y)[0]
    gp.fit(X, y, rng)
    after = gp.neg_log_posterior(gp.theta, X, y)[0]
    assert after < before - 5
    noise_sd = math.sqrt(math.exp(gp.theta[3])) * scale
    assert 0.1 < noise_sd < 0.35
    state = gp.state_dict()
    fresh = GaussianProcess(2)
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh.theta, gp.theta)


def test_input_gradients_of_mean_and_variance():
    rng = np.random.default_rng(2)
    X, y = rng.random((15, 3)), rng.standard_normal(15)
    post = GPPosterior(X, y, theta([0.3, 0.5, 0.9], 1.2, 0.05, 0.1))
    Z = rng.random((4, 3))
    mean, var, dmean, dvar = post.predict_with_grad(Z)
    np.testing.assert_allclose(mean, post.predict(Z)[0], rtol=1e-12)
    np.testing.assert_allclose(var, post.predict(Z)[1], rtol=1e-9)
    for b in range(len(Z)):
        num_m = approx_fprime(Z[b], lambda z: post.predict(z[None])[0][0], 1e-7)
        num_v = approx_fprime(Z[b], lambda z: post.predict(z[None])[1][0], 1e-7)
        np.testing.assert_allclose(dmean[b], num_m, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(dvar[b], num_v, rtol=1e-4, atol=1e-5)


def test_fantasy_keeps_the_mean_and_shrinks_the_variance_there():
    rng = np.random.default_rng(3)
    X, y = rng.random((10, 2)), rng.standard_normal(10)
    post = GPPosterior(X, y, theta([0.4, 0.4], 1.0, 1e-3, 0.0))
    z = np.array([[0.95, 0.05]])
    m0, v0 = post.predict(z)
    m1, v1 = post.fantasize(z).predict(z)
    assert m1[0] == pytest.approx(m0[0], abs=1e-3)
    assert v1[0] < 0.01 * v0[0]


def test_expected_improvement_hand_values():
    assert expected_improvement(np.array([0.0]), np.array([1.0]), 0.0)[0] == pytest.approx(
        0.3989422804, rel=1e-9)  # phi(0)
    # mean 1, sd 2, best 0: z = -0.5, EI = 2 (z Phi(z) + phi(z))
    hand = 2 * (-0.5 * 0.3085375387 + 0.3520653268)
    assert expected_improvement(np.array([1.0]), np.array([2.0]), 0.0)[0] == pytest.approx(
        hand, rel=1e-8)


def test_log_expected_improvement_is_stable_and_has_the_right_gradient():
    mean = np.linspace(-5, 40, 200)
    std = np.full_like(mean, 0.7)
    value, d_mean, d_std = log_expected_improvement(mean, std, 0.0)
    plain = expected_improvement(mean, std, 0.0)
    ok = plain > 1e-250
    np.testing.assert_allclose(value[ok], np.log(plain[ok]), rtol=1e-7)
    assert np.all(np.isfinite(value)) and np.all(np.diff(value) < 0)  # decreasing in the mean
    for m, s in [(0.3, 0.5), (-1.0, 2.0), (20.0, 0.5), (80.0, 1.0)]:
        v, gm, gs = log_expected_improvement(np.array([m]), np.array([s]), 0.0)
        num_m = (log_expected_improvement(np.array([m + 1e-6]), np.array([s]), 0.0)[0]
                 - v) / 1e-6
        num_s = (log_expected_improvement(np.array([m]), np.array([s + 1e-6]), 0.0)[0]
                 - v) / 1e-6
        assert gm[0] == pytest.approx(num_m[0], rel=1e-3)
        assert gs[0] == pytest.approx(num_s[0], rel=1e-3)


def test_log_probability_below():
    mean, std = np.array([-1.0, 0.5, 9.0]), np.array([1.0, 2.0, 0.5])
    value, d_mean, _ = log_probability_below(mean, std, 0.0)
    np.testing.assert_allclose(value, norm.logcdf(-mean / std), rtol=1e-9)
    numeric = (log_probability_below(mean + 1e-6, std, 0.0)[0] - value) / 1e-6
    np.testing.assert_allclose(d_mean, numeric, rtol=1e-3)


MIXED = ConfigSpace({
    "lr": loguniform(1e-4, 1e-1),
    "x": uniform(-1, 1),
    "n": randint(1, 6),
    "units": lograndint(16, 1024),
    "act": choice(["relu", "tanh", "gelu"]),
    "depth": ordinal([2, 4, 8]),
    "wd": finrange(0.0, 0.1, 5),
    "bs": logfinrange(8, 256, 6, cast_int=True),
    "fixed": 3,
})


def test_snap_equals_encode_of_decode_for_every_domain_type():
    space = EncodedSpace(MIXED)
    rng = np.random.default_rng(4)
    X = rng.random((300, MIXED.ndim))
    snapped = space.snap(X)
    expected = np.array([MIXED.encode(MIXED.decode(x)) for x in X])
    np.testing.assert_allclose(snapped, expected, atol=1e-12)
    for x in space.sample(rng, 50):
        MIXED.validate(MIXED.decode(x))
    moved = space.perturb(space.sample(rng, 50), rng, 0.2)
    np.testing.assert_allclose(space.snap(moved), moved)
    assert ((moved >= 0) & (moved <= 1)).all()


def test_acquisition_optimizer_finds_the_maximum_and_respects_categories():
    space = EncodedSpace(ConfigSpace({"a": uniform(0, 1), "b": uniform(0, 1),
                                      "c": choice(["p", "q", "r"])}))
    target = np.array([0.37, 0.81])

    def acquisition(X, with_grad):
        values = -((X[:, :2] - target) ** 2).sum(1) + 0.5 * X[:, 3]  # category "q" is best
        grads = None
        if with_grad:
            grads = np.zeros_like(X)
            grads[:, :2] = -2 * (X[:, :2] - target)
        return values, grads

    ranked = maximize_acquisition(acquisition, space, np.random.default_rng(5),
                                  anchors=space.sample(np.random.default_rng(6), 3))
    np.testing.assert_allclose(ranked[0, :2], target, atol=1e-4)
    np.testing.assert_array_equal(ranked[0, 2:], [0.0, 1.0, 0.0])
    assert len(np.unique(ranked, axis=0)) == len(ranked)
