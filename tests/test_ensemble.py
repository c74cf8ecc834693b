import pickle

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
    # calibrated: the raw spread times one factor
    model = EnsembleRegressor(Line(spread=0.1), random_state=0).fit(X, y)
    raw = model.predict_members(X).std(axis=0, ddof=1)
    np.testing.assert_allclose(model.predict(X, return_std=True)[1], raw * model.std_scale_)


def test_held_out_spread_is_pooled_within_groups():
    """Members that trained on a crystal agree on its target; that gap is not spread."""
    model = EnsembleRegressor(Line(), n_estimators=4, calibrate=False)
    preds = np.array([[1.0, 0.0], [3.0, 0.0], [10.0, 1.0], [10.0, -1.0]])
    model._calibrate(np.array([2.0, 0.0]), preds, [np.array([0]), np.array([0]), None, None])
    np.testing.assert_allclose(model.oob_prediction_, [2.0, np.nan])
    np.testing.assert_allclose(model.oob_std_[0], 1.0)  # sqrt((1 + 1 + 0 + 0) / (4 - 2))
    assert np.isnan(model.oob_std_[1]) or model.oob_std_[1] > 0


def test_spread_of_members_that_trained_on_a_crystal_is_scaled_up():
    """Members agree more on crystals they trained on: the ratio restores a new crystal's spread."""
    rng = np.random.RandomState(0)
    k, n = 5, 4000
    held = rng.uniform(size=(k, n)) < 0.4
    y = rng.normal(size=n)
    preds = y + np.where(held, 2.0, 1.0) * rng.normal(size=(k, n))  # held out: spread 2
    model = EnsembleRegressor(Line(), n_estimators=k, calibrate=False)
    model._calibrate(y, preds, [np.flatnonzero(h) for h in held])
    assert abs(model.in_spread_ratio_ - 2.0) < 0.1
    ok = np.isfinite(model.oob_std_)
    assert abs(np.sqrt(np.mean(model.oob_std_[ok] ** 2)) - 2.0) < 0.1
    # no held-out pair to compare with: no scaling
    model._calibrate(y[:3], preds[:, :3], [np.flatnonzero(h[:3]) for h in held])
    assert model.in_spread_ratio_ == 1.0


@pytest.mark.parametrize("spread", [0.05, 0.2])
def test_intervals_reach_nominal_coverage_on_known_noise(spread):
    X, y = noisy_line(600, noise=0.5, seed=1)
    Xt, yt = noisy_line(4000, noise=0.5, seed=2)
    model = EnsembleRegressor(Line(spread=spread), n_estimators=5, random_state=0).fit(X, y)
    assert np.isfinite(model.oob_prediction_).sum() > 0.6 * len(y)  # 1 - 0.8**5 = 0.67
    mean, std = model.predict(Xt, return_std=True)
    for level in (0.5, 0.8, 0.9, 0.95):
        lo, hi = model.predict_interval(Xt, confidence_level=level).T
        covered = np.mean((yt >= lo) & (yt <= hi))
        # calibration set of ~400 held-out crystals: sd of coverage about 0.015
        assert abs(covered - level) < 0.05, (level, covered)
    z = norm.ppf(0.95)
    covered = np.mean(np.abs(yt - mean) <= z * std)
    assert abs(covered - 0.9) < 0.05, covered
    lo, hi = model.predict_interval(Xt).T
    np.testing.assert_allclose(hi - mean, z * std, rtol=1e-9, atol=1e-12)


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
    with pytest.raises(ValueError, match="needs held-out predictions"):
        EnsembleRegressor(Line(validation_fraction=0)).fit(X, y)
    with pytest.raises(ValueError, match="confidence_level"):
        EnsembleRegressor(Line(), confidence_level=90).fit(X, y)
    with pytest.raises(ValueError, match="too few"):  # 0.99 needs 99 held-out crystals
        EnsembleRegressor(Line(), confidence_level=0.99).fit(X[:20], y[:20])


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


def test_cgcnn_ensemble_featurizes_once_and_round_trips(tiny, monkeypatch):
    atoms, graphs, y = tiny
    calls = []
    transform = CrystalGraphTransformer.transform

    def counting(self, X):
        calls.append(len(X))
        return transform(self, X)

    monkeypatch.setattr(CrystalGraphTransformer, "transform", counting)
    model = EnsembleRegressor(CGCNNRegressor(**FAST, validation_fraction=0.5),
                              n_estimators=3, random_state=0).fit(atoms, y)
    assert calls == [len(atoms)]  # once for 3 members
    mean, std = model.predict(atoms, return_std=True)
    assert calls == [len(atoms)] * 2
    assert mean.shape == std.shape == (len(y),) and np.all(std > 0)
    # each member held out its own validation crystals
    held = [np.asarray(m.get_split_datasets(graphs, y)[1].indices) for m in model.estimators_]
    assert len({tuple(sorted(h)) for h in held}) == 3
    assert np.isfinite(model.oob_prediction_).sum() >= 6
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
        CGCNNRegressor(**FAST), n_estimators=3, random_state=0, n_jobs=2))
    scores = cross_val_score(pipe, atoms, y, cv=2,
                             scoring="neg_mean_absolute_error")
    assert np.all(np.isfinite(scores))


@pytest.mark.skipif("mp-formation-energy" not in list_pretrained(),
                    reason="bundled pretrained model absent")
def test_transfer_ensemble(tiny):
    from skcgcnn import TransferCGCNNRegressor

    _, graphs, y = tiny
    model = EnsembleRegressor(TransferCGCNNRegressor(**FAST, validation_fraction=0.5),
                              n_estimators=3, confidence_level=0.8,
                              random_state=0).fit(graphs, y)
    mean, std = model.predict(graphs, return_std=True)
    assert np.all(np.isfinite(mean)) and np.all(std > 0)
    assert all(m.transferred_ for m in model.estimators_)


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


def test_save_and_load_ensemble(tiny, tmp_path):
    from skcgcnn.ensemble import is_saved_ensemble, load_ensemble, save_ensemble
    from skcgcnn.pretrained import load_estimator, save_pretrained

    _, graphs, y = tiny
    model = EnsembleRegressor(CGCNNRegressor(**FAST, validation_fraction=0.5),
                              n_estimators=3, random_state=0).fit(graphs, y)
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
    assert again.in_spread_ratio_ == model.in_spread_ratio_
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
