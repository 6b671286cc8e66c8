import json

import numpy as np
import pytest
from scipy import stats

from cleanpairs.core.mixture import (
    MAX_KNOTS,
    RANK_SHARE,
    BetaMixture,
    PosteriorMap,
    bmm_clean_posterior,
    fit_bmm_split,
    fit_gmm_split,
    gmm_clean_posterior,
    map_quantiles,
    mixture_separation,
    quantile_knots,
    ranked_posterior,
)
from cleanpairs.errors import ParameterError

# Beta(2, 8) for 40% of the values, Beta(8, 2) for 60%; component 1 is the high one.
TRUE_ALPHAS = np.array([2.0, 8.0])
TRUE_BETAS = np.array([8.0, 2.0])
TRUE_WEIGHTS = np.array([0.4, 0.6])


@pytest.fixture(scope="module")
def two_betas():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.beta(2, 8, 4000), rng.beta(8, 2, 6000)])
    z = np.r_[np.zeros(4000, dtype=int), np.ones(6000, dtype=int)]
    return x, z


def test_fit_recovers_the_components(two_betas):
    # The median-split start alone is 40-115% off on the shapes and 0.1 off on the weights, and three
    # EM steps still 25-61% and 0.07: these tolerances only pass for an EM run to convergence.
    x, _ = two_betas
    bmm = BetaMixture.fit(x)
    order = np.argsort(bmm.means())
    np.testing.assert_allclose(bmm.alphas[order], TRUE_ALPHAS, rtol=0.15)
    np.testing.assert_allclose(bmm.betas[order], TRUE_BETAS, rtol=0.15)
    np.testing.assert_allclose(bmm.weights[order], TRUE_WEIGHTS, atol=0.02)
    np.testing.assert_allclose(bmm.means()[order], [0.2, 0.8], atol=0.02)


def test_fit_is_deterministic(two_betas):
    x, _ = two_betas
    a, b = BetaMixture.fit(x), BetaMixture.fit(x)
    assert np.array_equal(a.alphas, b.alphas) and np.array_equal(a.weights, b.weights)


def test_posterior_assigns_the_true_component(two_betas):
    # The Bayes rule with the true parameters scores about 0.98 on this sample.
    x, z = two_betas
    bmm = BetaMixture.fit(x)
    post = bmm.posterior(x)
    assert post.shape == (len(x), 2)
    np.testing.assert_allclose(post.sum(axis=1), 1.0)
    high = int(np.argmax(bmm.means()))
    assert np.mean((post[:, high] > 0.5) == z) > 0.97
    assert bmm.likelihoods(x).shape == (len(x), 2)


def test_posterior_never_nan_at_the_edges():
    bmm = BetaMixture(alphas=np.array([0.5, 3.0]), betas=np.array([3.0, 0.5]), weights=np.array([0.5, 0.5]))
    post = bmm.posterior(np.array([0.0, 1.0, -0.5, 1.5, 0.5]))
    assert not np.isnan(post).any()
    np.testing.assert_allclose(post.sum(axis=1), 1.0)
    np.testing.assert_array_equal(post[0], [1.0, 0.0])
    np.testing.assert_array_equal(post[1], [0.0, 1.0])
    np.testing.assert_array_equal(post[2:4], 0.5)


def test_bmm_clean_posterior_favours_the_high_component(two_betas):
    x, z = two_betas
    # An arbitrary affine scale must not matter: the values are min-max scaled first.
    p = bmm_clean_posterior(3 * x - 1)
    assert p.dtype == np.float32 and p.shape == x.shape
    assert p[z == 1].mean() > 0.9 and p[z == 0].mean() < 0.1
    as_loss = bmm_clean_posterior(-x, higher_is_clean=False)
    np.testing.assert_allclose(as_loss, p, atol=1e-5)


def test_bmm_clean_posterior_without_evidence_gives_ones():
    for values in (np.full(7, 0.3), np.array([0.9]), np.array([])):
        p = bmm_clean_posterior(values)
        assert p.dtype == np.float32 and np.array_equal(p, np.ones(len(values)))


def test_bmm_clean_posterior_handles_exact_zeros_and_ones():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.beta(1, 6, 300), rng.beta(6, 1, 300), np.zeros(20), np.ones(20)])
    p = bmm_clean_posterior(x)
    assert p.dtype == np.float32 and not np.isnan(p).any()
    assert p.min() >= 0 and p.max() <= 1
    assert p[-20:].min() > 0.5 and p[-40:-20].max() < 0.5


def test_bad_arguments_raise():
    with pytest.raises(ParameterError):
        BetaMixture.fit(np.array([0.5]))
    with pytest.raises(ParameterError):
        BetaMixture.fit(np.array([0.1, np.nan]))
    with pytest.raises(ParameterError):
        BetaMixture.fit(np.array([0.1, 0.9]), max_iter=0)
    with pytest.raises(ParameterError):
        BetaMixture(alphas=np.array([1.0, -1.0]), betas=np.ones(2), weights=np.array([0.5, 0.5]))
    with pytest.raises(ParameterError):
        bmm_clean_posterior(np.array([0.1, np.inf]))


def test_gmm_clean_posterior_separates_two_gaussians():
    rng = np.random.default_rng(2)
    low, high = rng.normal(0.0, 1.0, 300), rng.normal(6.0, 1.0, 300)
    x = np.concatenate([low, high])
    p = gmm_clean_posterior(x)
    assert p.dtype == np.float32
    assert (p[300:] > 0.5).mean() > 0.99 and (p[:300] < 0.5).mean() > 0.99
    as_loss = gmm_clean_posterior(x, higher_is_clean=False)
    assert (as_loss[:300] > 0.5).mean() > 0.99


def test_ranked_posterior_orders_the_pairs_a_saturated_posterior_ties():
    loss = np.linspace(0.0, 1.0, 1001)
    saturated = np.where(loss < 0.5, 1.0, 0.0)
    p = ranked_posterior(saturated, loss, higher_is_clean=False)
    # Lower loss, higher posterior, for every pair; no posterior moves more than the share.
    assert np.all(np.diff(p.astype(np.float64)) < 0)
    assert np.abs(p - saturated).max() <= RANK_SHARE + 1e-6
    assert np.array_equal(p >= 0.5, saturated >= 0.5)


def test_ranked_posterior_averages_a_tail_that_rises_against_the_rest_instead_of_following_it():
    # A wide noisy component (or a beta pole) gives the very cleanest pairs a low posterior. A running
    # minimum from the clean end would carry that low value onto every pair; isotonic regression pools
    # the few offending pairs with their neighbours and leaves the split where it was.
    cleanness = np.arange(1000, dtype=np.float64)
    raw = np.where(cleanness < 400, 0.02, 0.97)
    raw[-5:] = 0.05
    p = ranked_posterior(raw, cleanness, higher_is_clean=True)
    assert np.all(np.diff(p.astype(np.float64)) > 0)
    assert (p < 0.5).sum() == 400
    assert p[-1] > 0.8


def test_mixture_posteriors_rank_as_their_statistic(two_betas):
    x, _ = two_betas
    for posterior in (bmm_clean_posterior(x), gmm_clean_posterior(x)):
        assert len(np.unique(posterior)) == len(np.unique(x))
        assert np.array_equal(np.argsort(posterior, kind="stable"), np.argsort(x, kind="stable"))


def test_ten_em_steps_find_an_unbalanced_mixture_from_their_start():
    # Methods run 10 EM steps (MSCN, L2RM, RCAR's settings). Started from a split at the median,
    # these 20% / 80% components were still fitted as 42% / 58%: a noise rate near one half
    # whatever the data. Started from a Gaussian mixture's split, they are found.
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.beta(2, 8, 2000), rng.beta(8, 2, 8000)])
    bmm = BetaMixture.fit(x, max_iter=10)
    np.testing.assert_allclose(bmm.weights[np.argsort(bmm.means())], [0.2, 0.8], atol=0.02)
    posterior = bmm_clean_posterior(x, max_iter=10)
    assert (posterior >= 0.5).mean() == pytest.approx(0.8, abs=0.02)


def _round_trip(mapping):
    settings, arrays = mapping.to_params()
    settings = json.loads(json.dumps(settings))  # plain data
    return PosteriorMap.from_params(settings, {k: v.copy() for k, v in arrays.items()})


@pytest.mark.parametrize(
    "fit",
    [
        lambda x: fit_gmm_split(x, seed=0),
        lambda x: fit_gmm_split(-x, higher_is_clean=False, max_iter=10, tol=1e-2, reg_covar=5e-4),
        lambda x: fit_bmm_split(x),
        lambda x: fit_bmm_split(-x, higher_is_clean=False, max_iter=10),
    ],
)
def test_a_fitted_split_maps_its_own_values_exactly_and_new_ones_monotonically(two_betas, fit):
    x, _ = two_betas
    sample = x[::10]
    posterior, mapping = fit(sample)
    for kept in (mapping, _round_trip(mapping)):
        # The fit's own values: byte for byte what the fit gave them.
        statistic = sample if kept.higher_is_clean else -sample
        assert np.array_equal(kept.posterior(statistic), posterior)
    # New values, from the same distribution and beyond its range: in [0, 1], ordered as the
    # statistic, and each between the posteriors of the fit values around it.
    fresh = np.sort(np.concatenate([x[1::10], [-0.5, 1.5]]))
    p = mapping.posterior(fresh if mapping.higher_is_clean else -fresh)
    assert p.dtype == np.float32 and np.all((p >= 0) & (p <= 1))
    cleaner = p.astype(np.float64)
    assert np.all(np.diff(cleaner) >= 0)
    inside = (fresh > sample.min()) & (fresh < sample.max())
    order = np.sort(sample)
    right = np.searchsorted(order, fresh[inside])
    fit_of = dict(zip(sample.tolist(), posterior.tolist(), strict=True))
    below = np.array([fit_of[v] for v in order[right - 1]])
    above = np.array([fit_of[v] for v in order[right]])
    kept = cleaner[inside]
    assert np.all((kept >= below - 1e-7) & (kept <= above + 1e-7))


def test_a_split_of_many_values_keeps_a_quantile_sketch_that_still_maps_them(two_betas):
    x, _ = two_betas
    many = np.concatenate([x, x[::-1] + 1e-6])
    posterior, mapping = fit_bmm_split(many)
    assert len(mapping.knots) <= MAX_KNOTS < len(many)
    again = mapping.posterior(many)
    assert np.abs(again - posterior).max() < 5e-3
    assert stats.spearmanr(again, posterior).correlation > 0.9999


def test_a_split_without_spread_maps_everything_clean():
    posterior, mapping = fit_gmm_split(np.full(5, 0.3))
    assert np.array_equal(posterior, np.ones(5)) and mapping.mixture == "none"
    assert np.array_equal(_round_trip(mapping).posterior(np.array([-1.0, 0.3, 9.0])), np.ones(3))


def test_malformed_split_parameters_raise():
    _, mapping = fit_gmm_split(np.linspace(0, 1, 50))
    settings, arrays = mapping.to_params()
    with pytest.raises(ParameterError, match="lacks 'means'"):
        PosteriorMap.from_params({**settings, "components": {"weights": [0.5, 0.5]}}, arrays)
    with pytest.raises(ParameterError, match="lacks 'levels'"):
        PosteriorMap.from_params(settings, {k: v for k, v in arrays.items() if k != "levels"})
    with pytest.raises(ParameterError, match="unknown mixture 'poisson'"):
        PosteriorMap.from_params({**settings, "mixture": "poisson"}, arrays)
    with pytest.raises(ParameterError, match="knots must be increasing"):
        PosteriorMap.from_params(settings, {**arrays, "knots": arrays["knots"][::-1].copy()})


def test_quantile_knots_carry_one_distribution_onto_another():
    rng = np.random.default_rng(3)
    source = rng.normal(size=2000)
    target = 1 / (1 + np.exp(-3 * source)) ** 2  # a monotone transform of it
    knots = quantile_knots(source, target)
    mapped = map_quantiles(source, knots)
    assert mapped.dtype == np.float32 and np.abs(mapped - target).max() < 2e-3
    ends = map_quantiles(np.array([-99.0, 99.0]), knots)
    assert np.array_equal(ends, np.float32([target.min(), target.max()]))


def test_mixture_separation_is_the_auroc_two_gaussians_imply():
    rng = np.random.default_rng(0)
    # Two unit Gaussians 3 apart: Phi(3 / sqrt(2)) = 0.983, the AUROC of the one against the other.
    values = np.concatenate([rng.normal(0, 1, 4000), rng.normal(3, 1, 6000)])
    assert mixture_separation(values) == pytest.approx(stats.norm.cdf(3 / np.sqrt(2)), abs=0.01)
    closer = np.concatenate([rng.normal(0, 1, 4000), rng.normal(1.5, 1, 6000)])
    assert 0.5 < mixture_separation(closer) < mixture_separation(values)
    # The scale is the statistic's own affair: a loss (lower is clean) separates as its negation.
    assert mixture_separation(-2 * values + 7) == pytest.approx(mixture_separation(values), abs=1e-6)
    assert mixture_separation(np.full(100, 0.3)) == 0.5
    assert mixture_separation(np.array([1.0, np.nan])) == 0.5
