import pickle
import shutil

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline

from skcgcnn import CGCNNRegressor, CrystalGraphTransformer, EnsembleRegressor
from skcgcnn.pretrained import list_pretrained

FAST = dict(max_epochs=3, batch_size=16)


class Line(RegressorMixin, BaseEstimator):
    """Cheap stand-in member: a least-squares line on ``X[:, 0]`` plus a seeded offset.

    It holds out ``validation_fraction`` of the data at random (seeded), as a
    skcgcnn network does, and reports them in ``validation_indices_``.
    ``spread`` scales an offset drawn from the seed, so members disagree by
    about ``spread``; ``spread=0`` with ``validation_fraction=0`` makes every
    member the same line.
    """

    def __init__(self, spread=0.0, validation_fraction=0.2, random_state=None):
        self.spread = spread
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def fit(self, X, y):
        X, y = np.asarray(X, dtype=float), np.asarray(y, dtype=float)
        rng = np.random.RandomState(self.random_state)
        n_val = int(round(self.validation_fraction * len(y)))
        perm = rng.permutation(len(y)) if n_val else np.arange(len(y))
        self.validation_indices_ = perm[:n_val] if n_val else None
        train = perm[n_val:]
        self.fit_x_ = X[:, 0].copy()  # every crystal it saw (training and validation)
        self.coef_ = np.polyfit(X[train, 0], y[train], 1)
        self.offset_ = self.spread * rng.normal()
        return self

    def predict(self, X):
        return np.polyval(self.coef_, np.asarray(X, dtype=float)[:, 0]) + self.offset_


def noisy_line(n, noise=0.5, seed=0):
    rng = np.random.RandomState(seed)
    x = rng.uniform(-2, 2, size=(n, 1))
    return x, 2.0 * x[:, 0] + 1.0 + noise * rng.normal(size=n)


def test_std_zero_for_identical_members_and_grows_with_disagreement():
    X, y = noisy_line(200)
    same = EnsembleRegressor(Line(validation_fraction=0), calibrate=False,
                             random_state=0).fit(X, y)
    _, std = same.predict(X, return_std=True)
    np.testing.assert_array_equal(std, 0.0)
    stds = [EnsembleRegressor(Line(spread=s), n_estimators=8, calibrate=False,
                              random_state=0).fit(X, y).predict(X, return_std=True)[1].mean()
            for s in (0.01, 0.1, 1.0)]
    assert stds[0] < stds[1] < stds[2], stds
    # calibrated: the raw spread plus the offset, times one factor
    model = EnsembleRegressor(Line(spread=0.1), random_state=0).fit(X, y)
    raw = model.predict_members(X).std(axis=0, ddof=1)
    assert model.spread_offset_ > 0
    np.testing.assert_allclose(model.predict(X, return_std=True)[1],
                               (raw + model.spread_offset_) * model.std_scale_)


def test_calibration_by_hand():
    """Offset, scores, quantile and intervals of a small case worked out by hand."""
    model = EnsembleRegressor(Line(), n_estimators=3, confidence_level=0.5)
    # 3 members; crystals 0-3 fitted on, 4-6 calibrate
    preds = np.array([[0.0, 1.0, 2.0, 3.0, 10.0, 20.0, 30.0],
                      [0.2, 1.0, 2.4, 3.0, 11.0, 20.0, 29.0],
                      [0.4, 1.0, 2.6, 3.6, 12.0, 20.0, 31.0]])
    y = np.array([0.0, 0.0, 0.0, 0.0, 14.0, 20.5, 30.0])
    model._calibrate(y, preds, np.arange(4), np.arange(4, 7))
    # spreads on the fitting crystals: 0.2, 0, 0.3055, 0.3464; median (0.2 + 0.3055) / 2
    beta = (0.2 + np.std([2.0, 2.4, 2.6], ddof=1)) / 2
    assert model.spread_offset_ == pytest.approx(beta, rel=1e-12)
    np.testing.assert_array_equal(model.calibration_indices_, [4, 5, 6])
    np.testing.assert_allclose(model.calibration_prediction_, [11.0, 20.0, 30.0])
    # |y - mean| / (sigma + beta) with sigma 1, 0, 1
    np.testing.assert_allclose(model.conformity_scores_,
                               [3.0 / (1 + beta), 0.5 / beta, 0.0], rtol=1e-12)
    q = 0.5 / beta  # the ceil((3 + 1) * 0.5) = 2nd smallest of the three (2.39, 1.98, 0)
    assert model.std_scale_ == pytest.approx(q / norm.ppf(0.75), rel=1e-12)
    model.estimators_ = [None] * 3
    model.predict_members = lambda X: np.array([[1.0], [2.0], [3.0]])
    np.testing.assert_allclose(model.predict_interval(None),
                               [[2.0 - q * (1 + beta), 2.0 + q * (1 + beta)]], rtol=1e-12)
    np.testing.assert_allclose(model.predict(None, return_std=True)[1],
                               [(1 + beta) * q / norm.ppf(0.75)], rtol=1e-12)
    with pytest.raises(ValueError, match="3 calibration crystals are too few for a 90% "
                                         "interval: at least 9"):
        model.predict_interval(None, confidence_level=0.9)


def test_no_member_sees_the_calibration_crystals():
    X, y = noisy_line(100)
    model = EnsembleRegressor(Line(spread=0.1), n_estimators=4, calibration_fraction=0.25,
                              random_state=0).fit(X, y)
    cal = model.calibration_indices_
    assert len(cal) == 25 and len(set(cal)) == 25
    for member in model.estimators_:
        seen = set(member.fit_x_)
        assert len(seen) == 75 and not seen & set(X[cal, 0])
    np.testing.assert_allclose(model.calibration_prediction_, model.predict(X[cal]))
    again = EnsembleRegressor(Line(spread=0.1), n_estimators=4, calibration_fraction=0.25,
                              random_state=0).fit(X, y)
    np.testing.assert_array_equal(again.calibration_indices_, cal)
    # without calibration every member sees every crystal
    raw = EnsembleRegressor(Line(spread=0.1), calibrate=False, random_state=0).fit(X, y)
    assert len(raw.calibration_indices_) == 0 and raw.spread_offset_ == 0.0
    assert all(len(m.fit_x_) == 100 for m in raw.estimators_)


@pytest.mark.filterwarnings("ignore:.*wider than the span")  # t-distributed outliers
def test_coverage_is_what_split_conformal_promises():
    """Over many ensembles, the mean coverage is exactly k / (n + 1), n calibration
    crystals and k = ceil((n + 1) level): at least the level, less than level + 1/(n + 1)."""
    levels = (0.5, 0.8, 0.9)
    covered = []
    rng = np.random.RandomState(0)
    for seed in range(300):
        X, y = noisy_line(60, noise=0.5, seed=seed)
        y = y + rng.standard_t(3, size=len(y)) * np.abs(X[:, 0])  # heavy-tailed, uneven noise
        Xt, yt = noisy_line(1000, noise=0.5, seed=1000 + seed)
        yt = yt + rng.standard_t(3, size=len(yt)) * np.abs(Xt[:, 0])
        model = EnsembleRegressor(Line(spread=0.2), n_estimators=3,
                                  random_state=seed).fit(X, y)
        bounds = [model.predict_interval(Xt, level).T for level in levels]
        covered.append([np.mean((yt >= lo) & (yt <= hi)) for lo, hi in bounds])
    n = 12  # ceil(0.2 * 60)
    expected = [np.ceil((n + 1) * level - 1e-9) / (n + 1) for level in levels]
    se = np.std(covered, axis=0) / np.sqrt(len(covered))
    assert np.all(np.abs(np.mean(covered, axis=0) - expected) < 4 * se), (
        np.mean(covered, axis=0), expected, se)


def test_intervals_that_are_wider_than_the_targets_span_are_explained():
    X, y = noisy_line(100)
    model = EnsembleRegressor(Line(spread=0.1), n_estimators=3, random_state=0).fit(X, y)
    assert model.target_range_ == (y.min(), y.max())
    members = model.predict_members(X[:3])
    members[:, 0] += [-50.0, 0.0, 50.0]  # the members disagree wildly on the first crystal
    model.predict_members = lambda X: members
    with pytest.warns(UserWarning, match=r"1 of 3 intervals are wider than the span of the "
                                         r"training targets \(\d+\.\d+\): the members disagree"):
        lo, hi = model.predict_interval(X[:3]).T
    assert hi[0] - lo[0] > np.ptp(y) > np.max(hi[1:] - lo[1:])


@pytest.mark.parametrize("spread", [0.05, 0.2])
def test_std_and_intervals_agree(spread):
    X, y = noisy_line(600, noise=0.5, seed=1)
    Xt, yt = noisy_line(4000, noise=0.5, seed=2)
    model = EnsembleRegressor(Line(spread=spread), n_estimators=5, random_state=0).fit(X, y)
    assert len(model.calibration_indices_) == 120
    mean, std = model.predict(Xt, return_std=True)
    z = norm.ppf(0.95)
    lo, hi = model.predict_interval(Xt).T
    np.testing.assert_allclose(hi - mean, z * std, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mean - lo, z * std, rtol=1e-9, atol=1e-12)
    widths = [np.ptp(model.predict_interval(Xt[:1], level)) for level in (0.5, 0.8, 0.9, 0.95)]
    assert widths == sorted(widths) and widths[0] > 0


def test_members_differ_in_seed_and_are_reproducible():
    X, y = noisy_line(100)
    a = EnsembleRegressor(Line(spread=1.0), n_estimators=4, random_state=3).fit(X, y)
    b = EnsembleRegressor(Line(spread=1.0), n_estimators=4, random_state=3).fit(X, y)
    assert len(set(a.seeds_)) == 4
    assert [m.random_state for m in a.estimators_] == list(a.seeds_)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert a.predict_members(X).shape == (4, 100)


def test_left_over_members_share_the_cores(monkeypatch):
    import skcgcnn.ensemble as ensemble

    monkeypatch.setattr(ensemble, "cpu_count", lambda: 4)
    rounds = [(list(i), w, t) for i, w, t in EnsembleRegressor(n_jobs=2)._rounds(5)]
    assert rounds == [([0, 1, 2, 3], 2, 2), ([4], 1, 4)]  # no core idles in the last round
    rounds = [(list(i), w, t) for i, w, t in EnsembleRegressor(n_jobs=4)._rounds(6)]
    assert rounds == [([0, 1, 2, 3], 4, 1), ([4, 5], 2, 2)]
    assert [(list(i), w, t) for i, w, t in EnsembleRegressor()._rounds(5)] == [
        ([0, 1, 2, 3, 4], 1, None)]
    # every member is fitted once, in seed order, whatever the rounds
    X, y = noisy_line(60)
    a = EnsembleRegressor(Line(spread=1.0), n_estimators=5, n_jobs=2, random_state=1).fit(X, y)
    b = EnsembleRegressor(Line(spread=1.0), n_estimators=5, random_state=1).fit(X, y)
    assert [m.random_state for m in a.estimators_] == list(a.seeds_)
    np.testing.assert_array_equal(a.predict_members(X), b.predict_members(X))


@pytest.mark.parametrize("n", [1, 0, -3, 2.5, True, "5", None])
def test_bad_n_estimators(n):
    X, y = noisy_line(50)
    with pytest.raises(ValueError, match="n_estimators must be an int of at least 2"):
        EnsembleRegressor(Line(), n_estimators=n).fit(X, y)


def test_estimators_that_cannot_be_ensembled():
    X, y = noisy_line(50)
    with pytest.raises(TypeError, match="no random_state parameter"):
        EnsembleRegressor(LinearRegression()).fit(X, y)
    with pytest.raises(TypeError, match="must be a scikit-learn regressor"):
        EnsembleRegressor(CrystalGraphTransformer()).fit(X, y)
    with pytest.raises(TypeError, match="must be a regressor, got LogisticRegression"):
        EnsembleRegressor(LogisticRegression()).fit(X, y > 0)
    with pytest.raises(TypeError, match="cannot be nested"):
        EnsembleRegressor(EnsembleRegressor(Line())).fit(X, y)
    with pytest.raises(ValueError, match="confidence_level"):
        EnsembleRegressor(Line(), confidence_level=90).fit(X, y)
    for bad in (0, 1.0, -0.2, "0.2", None):
        with pytest.raises(ValueError, match="calibration_fraction must be a float strictly"):
            EnsembleRegressor(Line(), calibration_fraction=bad).fit(X, y)
    with pytest.raises(ValueError, match=r"calibration_fraction=0.2 of 40 crystals sets aside 8 "
                                         r"to calibrate, too few for a 90% interval: at least 9 "
                                         r"are needed \(calibration_fraction >= 0.23\)"):
        EnsembleRegressor(Line()).fit(X[:40], y[:40])
    with pytest.raises(ValueError, match="leaves 1 of 50 crystals"):
        EnsembleRegressor(Line(), calibration_fraction=0.97).fit(X, y)
    # members without a validation split calibrate as well: no member sees the calibration set
    model = EnsembleRegressor(Line(validation_fraction=0, spread=1.0), random_state=0).fit(X, y)
    assert len(model.calibration_indices_) == 10 and model.std_scale_ > 0
    EnsembleRegressor(Line(), calibrate=False).fit(X[:5], y[:5])  # no calibration, no minimum


def test_list_of_estimators_is_cloned_in_turn():
    X, y = noisy_line(120)
    a, b = Line(spread=0.0), Line(spread=5.0)
    model = EnsembleRegressor([a, b], n_estimators=5, random_state=0).fit(X, y)
    assert [m.spread for m in model.estimators_] == [0.0, 5.0, 0.0, 5.0, 0.0]
    assert [m.random_state for m in model.estimators_] == list(model.seeds_)
    assert a.get_params()["random_state"] is None  # the entries themselves are not fitted
    # the same seeds as one estimator: members 0, 2, 4 are that ensemble's members 0, 2, 4
    one = EnsembleRegressor(Line(spread=0.0), n_estimators=5, random_state=0).fit(X, y)
    np.testing.assert_array_equal(model.predict_members(X)[::2], one.predict_members(X)[::2])
    assert model.predict(X, return_std=True)[1].mean() > one.predict(X, return_std=True)[1].mean()
    again = clone(model).fit(X, y)
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
    with pytest.raises(ValueError, match="n_estimators=2 is fewer than the 3 estimators"):
        EnsembleRegressor([a, b, a], n_estimators=2).fit(X, y)
    with pytest.raises(ValueError, match="empty list"):
        EnsembleRegressor([]).fit(X, y)
    with pytest.raises(TypeError, match="no random_state parameter"):
        EnsembleRegressor([a, LinearRegression()]).fit(X, y)


def test_stand_in_works_with_sklearn_tools():
    X, y = noisy_line(120)
    model = EnsembleRegressor(Line(spread=0.1), n_estimators=3, random_state=0)
    assert clone(model).get_params()["estimator__spread"] == 0.1
    scores = cross_val_score(model, X, y, cv=3, scoring="neg_mean_absolute_error")
    assert scores.shape == (3,) and np.all(scores > -1.0)
    search = GridSearchCV(model, {"estimator__spread": [0.0, 3.0]}, cv=3,
                          scoring="neg_mean_absolute_error").fit(X, y)
    assert search.best_params_ == {"estimator__spread": 0.0}


class SpyCGCNN(CGCNNRegressor):
    """Records the targets of every batch it computes a loss on, training or validation."""

    def get_loss(self, y_pred, y_true, X=None, training=False):
        seen = self.__dict__.setdefault("seen_", {True: [], False: []})
        seen[bool(training)].append(self._denormalize(y_true.detach().cpu().numpy()))
        return super().get_loss(y_pred, y_true, X=X, training=training)


def _positions(values, y):
    """Positions in ``y`` of the target values a network saw."""
    values = np.concatenate(values)
    idx = np.abs(values[:, None] - y[None, :]).argmin(axis=1)
    np.testing.assert_allclose(y[idx], values, rtol=1e-4)
    return set(idx.tolist())


def test_validation_indices_are_the_crystals_validated_on(tiny):
    """Recorded at fit time, also with a RandomState, whose split a recomputation would miss."""
    _, graphs, y = tiny
    assert len(set(np.round(y, 6))) == len(y)  # each crystal known by its target
    net = SpyCGCNN(**FAST, validation_fraction=0.5, random_state=np.random.RandomState(0))
    net.fit(graphs, y)
    assert set(net.validation_indices_.tolist()) == _positions(net.seen_[False], y)
    assert _positions(net.seen_[True], y) == set(range(len(y))) - _positions(net.seen_[False], y)
    assert len(net.validation_indices_) == 6
    assert CGCNNRegressor(**FAST, validation_fraction=None).fit(graphs, y).validation_indices_ \
        is None


def test_cgcnn_ensemble_featurizes_once_and_round_trips(tiny, monkeypatch):
    atoms, graphs, y = tiny
    calls = []
    transform = CrystalGraphTransformer.transform

    def counting(self, X):
        calls.append(len(X))
        return transform(self, X)

    monkeypatch.setattr(CrystalGraphTransformer, "transform", counting)
    model = EnsembleRegressor(SpyCGCNN(**FAST, validation_fraction=0.5), n_estimators=3,
                              confidence_level=0.5, calibration_fraction=0.25,
                              random_state=0).fit(atoms, y)
    assert calls == [len(atoms)]  # once for 3 members
    mean, std = model.predict(atoms, return_std=True)
    assert calls == [len(atoms)] * 2
    assert mean.shape == std.shape == (len(y),) and np.all(std > 0)
    cal = set(model.calibration_indices_.tolist())
    fit = np.array(sorted(set(range(len(y))) - cal))
    assert len(cal) == 3
    held = []
    for member in model.estimators_:  # no member trained or validated on a calibration crystal
        trained, validated = (_positions(member.seen_[t], y) for t in (True, False))
        assert trained | validated == set(fit) and not trained & validated
        assert validated == set(fit[member.validation_indices_].tolist())
        held.append(tuple(sorted(validated)))
    assert len(set(held)) == 3  # each member held out its own validation crystals
    lo, hi = model.predict_interval(graphs).T
    assert np.all(lo < mean) and np.all(mean < hi)
    np.testing.assert_allclose(model.predict(graphs), mean, rtol=1e-6)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict(graphs), model.predict(graphs))
    refit = clone(model).fit(graphs, y)
    np.testing.assert_allclose(refit.predict(graphs), model.predict(graphs), rtol=1e-5)


def test_cgcnn_ensemble_in_pipeline_and_grid_search(dcdft):
    atoms, graphs, y = dcdft
    model = EnsembleRegressor(CGCNNRegressor(**FAST), n_estimators=2, calibrate=False,
                              random_state=0)
    search = GridSearchCV(model, {"estimator__lr": [0.01, 0.02]}, cv=2,
                          scoring="neg_mean_absolute_error").fit(graphs, y)
    assert set(search.cv_results_["mean_test_score"]) and search.best_estimator_.estimators_
    pipe = make_pipeline(CrystalGraphTransformer(), EnsembleRegressor(
        CGCNNRegressor(**FAST), n_estimators=3, calibration_fraction=0.3, random_state=0,
        n_jobs=2))
    scores = cross_val_score(pipe, atoms, y, cv=2,
                             scoring="neg_mean_absolute_error")
    assert np.all(np.isfinite(scores))


@pytest.mark.skipif("mp-formation-energy" not in list_pretrained(),
                    reason="bundled pretrained model absent")
def test_transfer_ensemble(tiny):
    from skcgcnn import TransferCGCNNRegressor

    _, graphs, y = tiny
    model = EnsembleRegressor(TransferCGCNNRegressor(**FAST, validation_fraction=0.5),
                              n_estimators=3, confidence_level=0.8, calibration_fraction=1 / 3,
                              random_state=0).fit(graphs, y)
    mean, std = model.predict(graphs, return_std=True)
    assert np.all(np.isfinite(mean)) and np.all(std > 0)
    assert all(m.transferred_ for m in model.estimators_)
    assert len(model.calibration_indices_) == 4


@pytest.mark.skipif("mp-formation-energy" not in list_pretrained(),
                    reason="bundled pretrained model absent")
def test_tl_cgcnn_ensemble_of_3_covers_bulk_moduli(recwarn):
    """A real TL-CGCNN ensemble at the fine-tuning defaults, 3 members, fitted on 300 bundled
    bulk moduli and judged on 500 others: its coverage at 0.8 and 0.9 lies in the central 99 %
    of what split conformal promises, and no interval is wider than the training targets' span.

    The number of the 500 crystals covered is binomial given the calibration crystals, whose
    own draw makes the coverage Beta(k, n + 1 - k) (n calibration crystals, k = ceil((n + 1)
    level)): together beta-binomial, the binomial interval widened by the calibration's noise.
    """
    from scipy.stats import betabinom

    from skcgcnn import TransferCGCNNRegressor
    from skcgcnn.datasets import load_mp_elasticity

    data = load_mp_elasticity()
    order = np.random.RandomState(0).permutation(len(data))[:800]
    graphs = CrystalGraphTransformer().transform(list(data.structure.iloc[order]))
    y = np.log10(data.K_VRH.to_numpy()[order])  # log10 GPa
    model = EnsembleRegressor(TransferCGCNNRegressor(conv_dtype="float32"), n_estimators=3,
                              random_state=0).fit(graphs[:300], y[:300])
    n = len(model.calibration_indices_)
    assert n == 60
    mae = np.mean(np.abs(model.calibration_prediction_ - y[:300][model.calibration_indices_]))
    assert mae < 0.12  # the members learnt: the mean predictor's MAE is about 0.25
    span = np.ptp(y[:300])
    for level in (0.8, 0.9):
        lo, hi = model.predict_interval(graphs[300:], level).T
        covered = int(np.sum((y[300:] >= lo) & (y[300:] <= hi)))
        k = int(np.ceil((n + 1) * level))
        expected = betabinom(500, k, n + 1 - k)
        assert expected.ppf(0.005) <= covered <= expected.ppf(0.995), (level, covered / 500)
        assert np.max(hi - lo) < span, (level, np.max(hi - lo), span)
    assert not [w for w in recwarn if "wider than the span" in str(w.message)]


@pytest.mark.skipif(not {"mp-formation-energy", "mp-band-gap-nm"} <= set(list_pretrained()),
                    reason="bundled pretrained models absent")
def test_multi_source_transfer_ensemble(tiny, tmp_path):
    """Members fine-tuned from two pretrained models, in turn, on graphs featurized once."""
    from skcgcnn import TransferCGCNNRegressor
    from skcgcnn.ensemble import load_ensemble, save_ensemble
    from skcgcnn.pretrained import load_pretrained

    _, graphs, y = tiny
    sources = ["mp-formation-energy", "mp-band-gap-nm"]
    model = EnsembleRegressor([TransferCGCNNRegressor(s, freeze="all_but_head", **FAST)
                               for s in sources], n_estimators=4, calibrate=False,
                              random_state=0).fit(graphs, y)
    assert [m.pretrained for m in model.estimators_] == sources * 2
    for member, source in zip(model.estimators_, sources * 2):  # frozen: the source's body
        weight = load_pretrained(source)[0].state_dict()["convs.0.fc_bond.weight"]
        assert torch.equal(member.module_.state_dict()["convs.0.fc_bond.weight"], weight)
    assert np.all(model.predict(graphs, return_std=True)[1] > 0)
    card = save_ensemble(model, tmp_path / "two-sources")
    assert card["ensemble"]["member_pretrained"] == sources * 2
    again = load_ensemble(tmp_path / "two-sources.pt")
    np.testing.assert_allclose(again.predict(graphs), model.predict(graphs), rtol=1e-6)


def test_mapie_split_conformal_on_a_fitted_ensemble():
    """The user guide's recipe for a separate calibration set."""
    from mapie.conformity_scores import StdConformityScore
    from mapie.regression import SplitConformalRegressor

    X, y = noisy_line(300)
    Xc, yc = noisy_line(500, seed=5)
    Xt, yt = noisy_line(3000, seed=6)
    model = EnsembleRegressor(Line(spread=0.3), random_state=0).fit(X, y)
    mapie = SplitConformalRegressor(model, confidence_level=0.9, prefit=True,
                                    conformity_score=StdConformityScore())
    mapie.conformalize(Xc, yc)
    _, bounds = mapie.predict_interval(Xt)
    covered = np.mean((yt >= bounds[:, 0, 0]) & (yt <= bounds[:, 1, 0]))
    assert abs(covered - 0.9) < 0.05, covered


def test_intervals_are_mapies_split_conformal_on_the_calibration_crystals():
    """MAPIE's SplitConformalRegressor, given the fitted ensemble and its calibration
    crystals, computes the same intervals as the ensemble does.

    59 calibration crystals, so that (n + 1)(1 - level) is a whole number at each level: else
    MAPIE 1.6 takes the lower bound one order statistic lower than the upper one."""
    from mapie.conformity_scores import StdConformityScore
    from mapie.regression import SplitConformalRegressor

    X, y = noisy_line(295)
    Xt, _ = noisy_line(200, seed=6)
    for members in (3, 5):
        model = EnsembleRegressor(Line(spread=0.3), n_estimators=members,
                                  random_state=0).fit(X, y)
        cal = model.calibration_indices_
        assert len(cal) == 59
        for level in (0.5, 0.8, 0.9):
            mapie = SplitConformalRegressor(model, confidence_level=level, prefit=True,
                                            conformity_score=StdConformityScore())
            mapie.conformalize(X[cal], y[cal])
            _, bounds = mapie.predict_interval(Xt)
            np.testing.assert_allclose(model.predict_interval(Xt, level), bounds[:, :, 0],
                                       rtol=1e-9)


def test_save_and_load_ensemble(tiny, tmp_path):
    from skcgcnn.ensemble import is_saved_ensemble, load_ensemble, save_ensemble
    from skcgcnn.pretrained import load_estimator, save_pretrained

    _, graphs, y = tiny
    model = EnsembleRegressor(CGCNNRegressor(**FAST, validation_fraction=0.5), n_estimators=3,
                              confidence_level=0.5, calibration_fraction=0.25,
                              random_state=0).fit(graphs, y)
    card = save_ensemble(model, tmp_path / "ens", units="A^3")
    assert (tmp_path / "ens.pt").is_file() and card["ensemble"]["n_estimators"] == 3
    assert is_saved_ensemble(tmp_path / "ens.pt")
    again = load_ensemble(tmp_path / "ens.pt")
    for a, b in zip(model.predict(graphs, return_std=True),
                    again.predict(graphs, return_std=True)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(model.predict_interval(graphs), again.predict_interval(graphs),
                               rtol=1e-6)
    assert again.card_["units"] == "A^3"
    assert again.spread_offset_ == model.spread_offset_ > 0
    assert again.target_range_ == model.target_range_
    np.testing.assert_array_equal(again.calibration_indices_, model.calibration_indices_)
    # one loading path with load_estimator: a device, and the element features checked
    on_cpu = load_ensemble(tmp_path / "ens.pt", device="cpu", conv_dtype="float32")
    assert all(m.device == "cpu" for m in on_cpu.estimators_)
    from skcgcnn.io import load_state_dict, save_state_dict

    state = load_state_dict(tmp_path / "ens.pt")
    state["member_1.atom_features"] = state["member_1.atom_features"].flip(0)
    save_state_dict(state, tmp_path / "other.pt")
    shutil.copy(tmp_path / "ens.json", tmp_path / "other.json")
    with pytest.raises(ValueError, match=r"other.pt \(member 1\)' carries element features"):
        load_ensemble(tmp_path / "other.pt")
    save_pretrained(model.estimators_[0], tmp_path / "single.pt")
    assert not is_saved_ensemble(tmp_path / "single.pt")
    with pytest.raises(ValueError, match="not an ensemble"):
        load_ensemble(tmp_path / "single.pt")
    with pytest.raises(ValueError, match="does not hold a CGCNN"):
        load_estimator(tmp_path / "ens.pt")
    X, yl = noisy_line(50)
    with pytest.raises(TypeError, match="pickle other ensembles"):
        save_ensemble(EnsembleRegressor(Line()).fit(X, yl), tmp_path / "line.pt")


def test_sklearn_parameter_checks():
    from sklearn.utils.estimator_checks import (check_get_params_invariance,
                                                check_parameters_default_constructible)

    check_parameters_default_constructible("EnsembleRegressor", EnsembleRegressor())
    check_get_params_invariance("EnsembleRegressor", EnsembleRegressor(Line()))
    assert isinstance(EnsembleRegressor()._member_templates()[0], CGCNNRegressor)
