import joblib
import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_rel
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline

from skcgcnn import CGCNNRegressor, CrystalGraphTransformer
from skcgcnn.stats import (
    RESULT_COLUMNS,
    equivalent_training_size,
    learning_curve,
    paired_ttest,
    paper_n_trials,
    repeated_splits,
    run_trials,
    summarize,
)


@pytest.fixture(scope="module")
def linear_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    y = X @ np.array([1.0, -2.0, 0.5, 3.0]) + 0.05 * rng.normal(size=200)
    return X, y


MODELS = {"mean": DummyRegressor(), "linear": LinearRegression()}


# ------------------------------------------------------------------ splits
@pytest.mark.parametrize("n_train, n_holdout", [(500, 125), (1000, 250), (10000, 2500),
                                                (10001, 2500), (20000, 2500)])
def test_paper_split_sizes(n_train, n_holdout):
    n_samples = n_train + 2 * n_holdout + 7
    splits = repeated_splits(n_samples, n_train, n_trials=2)
    assert len(splits) == 2
    for train, val, test in splits:
        assert (len(train), len(val), len(test)) == (n_train, n_holdout, n_holdout)
        assert all(part.dtype == np.int64 for part in (train, val, test))
        everything = np.concatenate([train, val, test])
        assert len(np.unique(everything)) == len(everything)  # disjoint
        assert everything.min() >= 0 and everything.max() < n_samples


def test_fixed_holdout_above_10k_not_ratio():
    train, val, test = repeated_splits(30000, 16000, 1)[0]
    assert len(val) == len(test) == 2500  # 4:1:1 would give 4,000


def test_explicit_sizes_and_zero_validation():
    train, val, test = repeated_splits(100, 50, 1, n_val=0, n_test=10)[0]
    assert (len(train), len(val), len(test)) == (50, 0, 10)


def test_splits_reproducible_and_trials_differ():
    a = repeated_splits(1000, 500, 3, random_state=7)
    b = repeated_splits(1000, 500, 3, random_state=7)
    c = repeated_splits(1000, 500, 3, random_state=8)
    for sa, sb in zip(a, b):
        for pa, pb in zip(sa, sb):
            np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(a[0][0], a[1][0])  # each trial a new subset
    assert not np.array_equal(a[0][0], c[0][0])


def test_too_few_samples_names_sizes():
    with pytest.raises(ValueError, match=r"500 \+ 125 \+ 125 = 750.*n_samples = 600"):
        repeated_splits(600, 500, 10)
    with pytest.raises(ValueError, match="n_trials"):
        repeated_splits(600, 100, 0)


def test_paper_n_trials():
    assert [paper_n_trials(n) for n in (100, 500, 501, 10000, 10001)] == [10, 10, 5, 5, 2]


# ------------------------------------------------------------------ trials
def test_run_trials_shapes_and_ordering(linear_data):
    X, y = linear_data
    splits = repeated_splits(len(y), 60, 4)
    results = run_trials(MODELS, X, y, splits)
    assert list(results.columns) == RESULT_COLUMNS
    assert len(results) == 8
    assert results.trial.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert results.model.tolist() == ["mean", "linear"] * 4
    assert (results.n_train == 60).all()
    assert (results.fit_time_s >= 0).all()
    mae = results.pivot(index="trial", columns="model", values="test_mae")
    assert (mae["linear"] < 0.2).all() and (mae["mean"] > 1.0).all()
    # the MAEs are those of a model fitted on train + validation, tested on test
    train, val, test = splits[2]
    fit = np.concatenate([train, val])
    ref = LinearRegression().fit(X[fit], y[fit])
    row = results[(results.trial == 2) & (results.model == "linear")].iloc[0]
    assert row.test_mae == pytest.approx(np.abs(ref.predict(X[test]) - y[test]).mean())
    assert row.train_mae == pytest.approx(np.abs(ref.predict(X[fit]) - y[fit]).mean())
    dummy = results[(results.trial == 2) & (results.model == "mean")].iloc[0]
    assert dummy.test_mae == pytest.approx(np.abs(y[test] - y[fit].mean()).mean())


def test_run_trials_list_input_and_parallel(linear_data):
    X, y = linear_data
    splits = repeated_splits(len(y), 40, 2)
    serial = run_trials(MODELS, X, y, splits)
    with joblib.parallel_config(backend="threading"):  # fast to start; loky works too
        listed = run_trials(MODELS, X.tolist(), list(y), splits, n_jobs=2)
    pd.testing.assert_frame_equal(serial.drop(columns="fit_time_s"),
                                  listed.drop(columns="fit_time_s"))


class CountingRegressor(LinearRegression):
    """LinearRegression that counts its fits (class attribute: clones share it)."""

    fits = 0

    def fit(self, X, y):
        type(self).fits += 1
        return super().fit(X, y)


def test_resume_skips_finished_rows(tmp_path, linear_data):
    X, y = linear_data
    path = tmp_path / "results.csv"
    splits = repeated_splits(len(y), 40, 3)
    CountingRegressor.fits = 0
    first = run_trials({"lin": CountingRegressor()}, X, y, splits[:2], path=path)
    assert CountingRegressor.fits == 2 and len(pd.read_csv(path)) == 2
    full = run_trials({"lin": CountingRegressor(), "mean": DummyRegressor()}, X, y, splits,
                      path=path)
    assert CountingRegressor.fits == 3  # only trial 2 was fitted again
    assert len(full) == 6 and len(pd.read_csv(path)) == 6
    assert full.trial.tolist() == [0, 0, 1, 1, 2, 2]
    pd.testing.assert_frame_equal(full[full.model == "lin"].iloc[:2].reset_index(drop=True),
                                  first)
    again = run_trials({"lin": CountingRegressor()}, X, y, splits, path=path)
    assert CountingRegressor.fits == 3 and len(again) == 3
    assert not list(tmp_path.glob(".results-*"))  # no temporary file left behind


def _intercept(est):
    return est.intercept_


def test_extra_scores_are_saved_and_resumed(tmp_path, linear_data):
    X, y = linear_data
    path = tmp_path / "results.csv"
    splits = repeated_splits(len(y), 40, 2)
    extra = {"intercept": _intercept}
    first = run_trials({"lin": LinearRegression()}, X, y, splits[:1], path=path,
                       extra_scores=extra)
    assert list(first.columns[-1:]) == ["intercept"]
    full = run_trials({"lin": LinearRegression()}, X, y, splits, path=path, extra_scores=extra)
    for t, (train, val, _) in enumerate(splits):
        idx = np.concatenate([train, val])
        expected = LinearRegression().fit(X[idx], y[idx]).intercept_
        assert full.intercept[t] == pytest.approx(expected)
    pd.testing.assert_frame_equal(pd.read_csv(path), full)


def test_resume_with_backend_without_generators(tmp_path, linear_data):
    """joblib's multiprocessing backend (and ray's) returns no generator: waves."""
    X, y = linear_data
    path = tmp_path / "results.csv"
    splits = repeated_splits(len(y), 40, 3)
    with joblib.parallel_config(backend="multiprocessing"):
        results = run_trials(MODELS, X, y, splits, n_jobs=2, path=path)
    serial = run_trials(MODELS, X, y, splits)
    np.testing.assert_allclose(results.test_mae, serial.test_mae)
    assert results.model.tolist() == serial.model.tolist()
    assert len(pd.read_csv(path)) == 6


def test_resume_rejects_foreign_csv(tmp_path, linear_data):
    X, y = linear_data
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a results file"):
        run_trials(MODELS, X, y, repeated_splits(len(y), 40, 1), path=path)


def test_run_trials_bad_input(linear_data):
    X, y = linear_data
    splits = repeated_splits(len(y), 40, 1)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        run_trials(MODELS, X[:-1], y, splits)
    with pytest.raises(TypeError, match="dict"):
        run_trials([LinearRegression()], X, y, splits)


def test_run_trials_with_cgcnn_on_crystal_graphs(tiny):
    atoms, graphs, y = tiny
    splits = repeated_splits(len(y), 6, 2, n_val=2, n_test=2)
    models = {
        "cgcnn": CGCNNRegressor(max_epochs=2, batch_size=8, random_state=0),
        "mean": DummyRegressor(),
    }
    results = run_trials(models, graphs, y, splits)
    assert results.shape == (4, len(RESULT_COLUMNS))
    assert np.isfinite(results[["test_mae", "train_mae"]].to_numpy()).all()
    # a list of graphs and a pipeline on raw structures work the same way
    again = run_trials({"cgcnn": models["cgcnn"]}, list(graphs), y, splits[:1])
    assert again.test_mae.iloc[0] == pytest.approx(results.test_mae.iloc[0], rel=1e-5)
    pipe = make_pipeline(CrystalGraphTransformer(),
                         CGCNNRegressor(max_epochs=2, batch_size=8, random_state=0))
    raw = run_trials({"cgcnn": pipe}, atoms, y, splits[:1])
    assert raw.test_mae.iloc[0] == pytest.approx(results.test_mae.iloc[0], rel=1e-5)


# -------------------------------------------------------------- statistics
def test_paired_ttest_matches_scipy():
    a = np.array([0.98, 1.10, 0.90, 1.02, 0.95])
    b = np.array([0.80, 0.95, 0.79, 0.90, 0.85])
    # rows shuffled: pairing must go by trial id, not by row order
    results = pd.DataFrame({"trial": [4, 0, 1, 2, 3] + [0, 1, 2, 3, 4],
                            "model": ["a"] * 5 + ["b"] * 5, "n_train": 500,
                            "test_mae": np.r_[a[[4, 0, 1, 2, 3]], b]})
    t, p = paired_ttest(results, "a", "b")
    ref = ttest_rel(a, b)
    assert t == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
    d = a - b  # by hand
    assert t == pytest.approx(d.mean() / (d.std(ddof=1) / np.sqrt(len(d))))
    t2, p2 = paired_ttest(results, "b", "a")
    assert t2 == pytest.approx(-t) and p2 == pytest.approx(p)


def test_paired_ttest_errors():
    results = pd.DataFrame({"trial": [0, 1, 0, 1], "model": ["a", "a", "b", "b"],
                            "n_train": [500, 1000, 500, 1000], "test_mae": [1.0, 2, 3, 4]})
    with pytest.raises(ValueError, match="several training sizes"):
        paired_ttest(results, "a", "b")
    with pytest.raises(ValueError, match="no results for model 'c'"):
        paired_ttest(results[results.n_train == 500], "a", "c")
    with pytest.raises(ValueError, match="at least 2 shared trials"):
        paired_ttest(results[results.n_train == 500], "a", "b")


def test_summarize():
    results = pd.DataFrame({"trial": [0, 1, 2, 0, 1, 2, 0],
                            "model": ["a"] * 3 + ["b"] * 3 + ["a"],
                            "n_train": [500] * 6 + [1000],
                            "test_mae": [1.0, 2.0, 4.0, 0.5, 0.5, 0.5, 0.3],
                            "train_mae": [0.1, 0.2, 0.3, 0.0, 0.0, 0.0, 0.1],
                            "fit_time_s": 1.0})
    s = summarize(results)
    assert list(s.columns) == ["model", "n_train", "n_trials", "test_mae_mean",
                               "test_mae_std", "train_mae_mean", "train_mae_std"]
    assert s[["model", "n_train"]].values.tolist() == [["a", 500], ["b", 500], ["a", 1000]]
    assert s.n_trials.tolist() == [3, 3, 1]
    np.testing.assert_allclose(s.test_mae_mean, [7 / 3, 0.5, 0.3])
    assert s.test_mae_std.iloc[0] == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))
    assert s.train_mae_mean.iloc[0] == pytest.approx(0.2)
    assert np.isnan(s.test_mae_std.iloc[2])  # one trial: no spread


def test_learning_curve(linear_data):
    X, y = linear_data
    results = learning_curve(MODELS, X, y, [20, 40, 80], n_trials=2, random_state=3)
    assert len(results) == 3 * 2 * 2
    assert sorted(results.n_train.unique()) == [20, 40, 80]
    # each size uses repeated_splits with the same seed
    ref = run_trials(MODELS, X, y, repeated_splits(len(y), 40, 2, random_state=3))
    got = results[results.n_train == 40].reset_index(drop=True)
    np.testing.assert_allclose(got.test_mae, ref.test_mae)
    # the paper's trial counts by default
    default = learning_curve({"mean": DummyRegressor()}, X, y, [50])
    assert len(default) == paper_n_trials(50) == 10


def test_learning_curve_resumes_across_sizes(tmp_path, linear_data):
    X, y = linear_data
    path = tmp_path / "curve.csv"
    CountingRegressor.fits = 0
    learning_curve({"lin": CountingRegressor()}, X, y, [20, 40], n_trials=2, path=path)
    assert CountingRegressor.fits == 4
    results = learning_curve({"lin": CountingRegressor()}, X, y, [20, 40, 80], n_trials=2,
                             path=path)
    assert CountingRegressor.fits == 6 and len(results) == 6


def test_equivalent_training_size_recovers_power_law():
    sizes = np.array([500, 1000, 2000, 5000, 10000])
    maes = 3.0 * sizes ** -0.3
    for n in (700.0, 1200.0, 925.0, 20000.0):
        assert equivalent_training_size(sizes, maes, 3.0 * n ** -0.3) == pytest.approx(n)
    # per-trial points (repeated sizes) give the same line
    assert equivalent_training_size(np.repeat(sizes, 2), np.repeat(maes, 2),
                                    3.0 * 1200 ** -0.3) == pytest.approx(1200.0)


def test_equivalent_training_size_errors():
    with pytest.raises(ValueError, match="two distinct"):
        equivalent_training_size([500, 500], [1.0, 0.9], 0.8)
    with pytest.raises(ValueError, match="positive"):
        equivalent_training_size([500, 1000], [1.0, 0.0], 0.8)
    with pytest.raises(ValueError, match="slope 0"):
        equivalent_training_size([500, 1000], [1.0, 1.0], 0.8)
    with pytest.raises(ValueError, match="different lengths"):
        equivalent_training_size([500, 1000], [1.0], 0.8)
