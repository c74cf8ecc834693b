"""The paper's repeated-trial protocol: splits, trials, paired t-tests, learning curves.

Lee & Asahi compare models over several trials, each a different random
subset of the data split train:validation:test = 4:1:1 (validation and test
fixed at 2,500 crystals above 10,000 training crystals), with 10 trials at
500 training crystals, 5 up to 10,000 and 2 above. Every model sees the same
subsets, so claims are tested with a paired t-test over trials. Table 2 reads
the "equivalent training size" off a straight line of log MAE against log
training size.

The functions here run that protocol for any scikit-learn regressors: a
:class:`~skcgcnn.CGCNNRegressor`, a :class:`~skcgcnn.TransferCGCNNRegressor`,
or a classical pipeline on magpie descriptors.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import time

import numpy as np
import pandas as pd
import joblib
from joblib import Parallel, delayed, effective_n_jobs
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_consistent_length, column_or_1d

__all__ = [
    "RESULT_COLUMNS",
    "paper_n_trials",
    "repeated_splits",
    "run_trials",
    "paired_ttest",
    "summarize",
    "learning_curve",
    "equivalent_training_size",
]

#: Columns of the results table returned by :func:`run_trials`.
RESULT_COLUMNS = ["trial", "model", "n_train", "test_mae", "train_mae", "fit_time_s"]

#: Above this many training crystals, validation and test sets are fixed in size.
_LARGE_TRAIN = 10_000
_LARGE_HOLDOUT = 2_500


def paper_n_trials(n_train):
    """Number of trials the paper ran at a training-set size.

    Parameters
    ----------
    n_train : int
        Training crystals per trial.

    Returns
    -------
    n_trials : int
        10 up to 500 training crystals, 5 up to 10,000, 2 above.

    Examples
    --------
    >>> from skcgcnn.stats import paper_n_trials
    >>> [paper_n_trials(n) for n in (180, 500, 1000, 10000, 20000)]
    [10, 10, 5, 5, 2]
    """
    n_train = _positive_int(n_train, "n_train")
    if n_train <= 500:
        return 10
    if n_train <= _LARGE_TRAIN:
        return 5
    return 2


def _positive_int(value, name, minimum=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def repeated_splits(n_samples, n_train, n_trials, n_val=None, n_test=None, random_state=0):
    """Random train/validation/test splits, one per trial, as in the paper.

    Each trial draws a fresh permutation of the samples and takes the first
    ``n_train`` as training, the next ``n_val`` as validation and the next
    ``n_test`` as test set. With the same ``random_state`` the splits are the
    same, so every model is compared on the same subsets (what a paired t-test
    needs); trial ``k`` also uses the same permutation at every training size,
    so its training sets are nested as the size grows.

    Parameters
    ----------
    n_samples : int
        Number of crystals available.
    n_train : int
        Training crystals per trial.
    n_trials : int
        Number of trials (see :func:`paper_n_trials`).
    n_val, n_test : int, optional
        Validation and test crystals per trial. By default the paper's
        4:1:1 ratio, ``n_train // 4`` each, or 2,500 each when ``n_train``
        exceeds 10,000. ``n_val`` may be 0; ``n_test`` must be at least 1.
    random_state : int, RandomState or None, default=0
        Seed of the permutations.

    Returns
    -------
    splits : list of (train_idx, val_idx, test_idx)
        ``n_trials`` tuples of disjoint, sorted int64 index arrays.

    Raises
    ------
    ValueError
        When ``n_train + n_val + n_test`` exceeds ``n_samples``, naming the sizes.

    Examples
    --------
    >>> from skcgcnn.stats import repeated_splits
    >>> splits = repeated_splits(1000, 500, n_trials=3)
    >>> [tuple(map(len, s)) for s in splits]
    [(500, 125, 125), (500, 125, 125), (500, 125, 125)]
    >>> tuple(map(len, repeated_splits(20000, 12000, 1)[0]))
    (12000, 2500, 2500)
    """
    n_samples = _positive_int(n_samples, "n_samples")
    n_train = _positive_int(n_train, "n_train")
    n_trials = _positive_int(n_trials, "n_trials")
    default = _LARGE_HOLDOUT if n_train > _LARGE_TRAIN else n_train // 4
    n_val = default if n_val is None else _positive_int(n_val, "n_val", minimum=0)
    n_test = max(default, 1) if n_test is None else _positive_int(n_test, "n_test")
    needed = n_train + n_val + n_test
    if needed > n_samples:
        raise ValueError(
            f"not enough samples: n_train + n_val + n_test = {n_train} + {n_val} + {n_test} "
            f"= {needed}, but there are only n_samples = {n_samples}; use a smaller n_train "
            "or pass smaller n_val / n_test")
    rng = check_random_state(random_state)
    splits = []
    for _ in range(n_trials):
        perm = rng.permutation(n_samples)
        bounds = np.cumsum([0, n_train, n_val, n_test])
        splits.append(tuple(np.sort(perm[a:b]).astype(np.int64)
                            for a, b in zip(bounds[:-1], bounds[1:])))
    return splits


# --------------------------------------------------------------------- trials
def _indexable(X):
    """X in a form that fancy indexing keeps: arrays and pandas as they are,
    graphs as a 1-D object ndarray, other sequences (structures) as a list."""
    if hasattr(X, "iloc") or hasattr(X, "shape"):  # pandas, ndarray, sparse
        return X
    from .graph import _graph_array_or_none

    items = list(X)
    graphs = _graph_array_or_none(items)
    return items if graphs is None else graphs  # np.asarray would unpack ase.Atoms


def _take(X, idx):
    """Rows ``idx`` of X as returned by :func:`_indexable`."""
    if hasattr(X, "iloc"):
        return X.iloc[idx]
    if isinstance(X, list):
        return [X[i] for i in idx]
    return X[idx]


def _mae(y_true, y_pred):
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(len(y_true), -1)[:, 0]
    return float(np.mean(np.abs(y_true - y_pred)))


def _fit_one(trial, name, model, n_train, X_fit, y_fit, X_test, y_test, extra_scores=None):
    """Fit one clone on train ∪ val and score it; one row of the results."""
    est = clone(model)
    start = time.perf_counter()
    est.fit(X_fit, y_fit)
    fit_time = time.perf_counter() - start
    row = {"trial": int(trial), "model": str(name), "n_train": int(n_train),
           "test_mae": _mae(y_test, est.predict(X_test)),
           "train_mae": _mae(y_fit, est.predict(X_fit)),
           "fit_time_s": float(fit_time)}
    row.update({key: float(score(est)) for key, score in (extra_scores or {}).items()})
    return row


def _jobs(models, X, y, splits, skip, extra_scores=None):
    """The fits still to do, each given only its own rows (sliced lazily, as
    joblib dispatches them, so that few slices are alive at a time)."""
    for t, (train, val, test) in enumerate(splits):
        fit_idx = np.concatenate([train, val])
        for name, model in models.items():
            if (t, str(name), len(train)) not in skip:
                yield delayed(_fit_one)(t, name, model, len(train), _take(X, fit_idx),
                                        y[fit_idx], _take(X, test), y[test], extra_scores)


#: Rows come back as each fit ends (joblib >= 1.4), else in submission order.
_RETURN_AS = ("generator_unordered"
              if tuple(int(v) for v in joblib.__version__.split(".")[:2]) >= (1, 4)
              else "generator")


def _parallel_rows(make_jobs, n_jobs, verbose):
    """Yield the result of every job from ``make_jobs()`` as joblib returns it.

    Backends that cannot return a generator (joblib's ``multiprocessing``
    backend, and ray's, which builds on it) run the jobs in waves of as many
    as the backend runs at once, so that finished rows are still saved while
    the rest run.
    """
    try:
        results = Parallel(n_jobs=n_jobs, verbose=verbose, return_as=_RETURN_AS)(make_jobs())
    except ValueError as exc:
        if "does not support return_as" not in str(exc):
            raise
        results = None
    if results is not None:
        yield from results
        return
    jobs, wave = make_jobs(), max(1, effective_n_jobs(n_jobs))
    while batch := list(itertools.islice(jobs, wave)):
        yield from Parallel(n_jobs=n_jobs, verbose=verbose)(batch)


def _read_results(path):
    if path is None or not os.path.exists(path) or os.path.getsize(path) == 0:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    done = pd.read_csv(path, dtype={"model": str}, float_precision="round_trip")
    missing = set(RESULT_COLUMNS) - set(done.columns)
    if missing:
        raise ValueError(f"{os.fspath(path)!r} is not a results file of run_trials: "
                         f"columns {sorted(missing)} are missing")
    return done


def _write_results(frame, path):
    """Write the table to ``path`` atomically (temporary file, then rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".results-", suffix=".csv", dir=folder)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            frame.to_csv(f, index=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _key(row):
    return int(row["trial"]), str(row["model"]), int(row["n_train"])


def run_trials(models, X, y, splits, n_jobs=None, path=None, verbose=0, extra_scores=None):
    """Fit and score every model on every split (the paper's repeated trials).

    For each split ``(train, val, test)`` and each model, a
    :func:`~sklearn.base.clone` of the model is fitted on
    ``X[train ∪ val]`` (train indices first, then validation) and scored on
    ``X[test]``. The validation crystals go to the model because
    :class:`~skcgcnn.CGCNNRegressor` holds out its own ``validation_fraction``
    (0.2, the 1 of 4:1) to choose its best epoch; a classical model uses them
    for training or for its own cross-validation.

    Parameters
    ----------
    models : dict of str to estimator
        Unfitted scikit-learn regressors by name.
    X : array-like, list or ndarray of crystal graphs or structures
        Inputs, indexed by the split indices (a list is indexed item by item).
    y : array-like of shape (n_samples,)
        Targets, in their own units.
    splits : list of (train_idx, val_idx, test_idx)
        From :func:`repeated_splits`; the trial id is the position in the list.
    n_jobs : int, optional
        Fits run in parallel with joblib (any backend: ``loky``, ``dask``, ``ray``).
    path : str or path-like, optional
        CSV file of finished rows. Each row is saved as soon as its fit ends
        (the file is rewritten atomically), and rows already in the file, with
        the same ``(trial, model, n_train)``, are not fitted again: an
        interrupted run resumes where it stopped.
    verbose : int, default=0
        Verbosity of joblib.
    extra_scores : dict of str to callable, optional
        More columns: ``name: score`` where ``score(fitted_estimator)`` returns a
        float, e.g. the validation MAE a network recorded in its history.

    Returns
    -------
    results : pandas.DataFrame
        One row per (trial, model) with columns ``trial``, ``model``,
        ``n_train`` (training crystals, without validation), ``test_mae`` and
        ``train_mae`` (mean absolute error in the units of ``y``; ``train_mae``
        on all the crystals the model was fitted on) and ``fit_time_s``
        (seconds), then one column per ``extra_scores`` entry.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.dummy import DummyRegressor
    >>> from sklearn.linear_model import LinearRegression
    >>> from skcgcnn.stats import repeated_splits, run_trials
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(120, 3))
    >>> y = X @ [1.0, 2.0, 3.0] + 0.1 * rng.normal(size=120)
    >>> models = {"mean": DummyRegressor(), "linear": LinearRegression()}
    >>> results = run_trials(models, X, y, repeated_splits(120, 40, n_trials=3))
    >>> results.shape
    (6, 6)
    >>> results.groupby("model").test_mae.mean().round(1).to_dict()
    {'linear': 0.1, 'mean': 3.4}
    """
    if not isinstance(models, dict) or not models:
        raise TypeError("models must be a non-empty dict of name -> unfitted estimator")
    y = column_or_1d(y, dtype=np.float64, warn=False)
    check_consistent_length(X, y)
    splits = [tuple(np.asarray(part, dtype=np.int64) for part in split) for split in splits]
    if not splits:
        raise ValueError("splits is empty: pass at least one (train, val, test) split")
    for t, split in enumerate(splits):
        if len(split) != 3:
            raise ValueError(f"split {t} must be (train_idx, val_idx, test_idx), "
                             f"got {len(split)} arrays")

    order = {}
    for t, split in enumerate(splits):
        for name in models:
            order[(t, str(name), len(split[0]))] = len(order)
    columns = RESULT_COLUMNS + [k for k in (extra_scores or {}) if k not in RESULT_COLUMNS]
    done = _read_results(path).to_dict("records")
    done_keys = {_key(row) for row in done}
    X = _indexable(X)
    new_rows = []
    for row in _parallel_rows(lambda: _jobs(models, X, y, splits, done_keys, extra_scores),
                              n_jobs, verbose):
        new_rows.append(row)
        if path is not None:
            done.append(row)
            _write_results(pd.DataFrame(done, columns=columns), path)

    rows = [row for row in (done if path is not None else new_rows) if _key(row) in order]
    rows.sort(key=lambda row: order[_key(row)])
    results = pd.DataFrame(rows, columns=columns)
    return results.astype({"trial": np.int64, "model": str, "n_train": np.int64,
                           "test_mae": np.float64, "train_mae": np.float64,
                           "fit_time_s": np.float64})


# ---------------------------------------------------------------- statistics
def _results_frame(results):
    if not isinstance(results, pd.DataFrame):
        results = pd.DataFrame(results)
    missing = {"trial", "model", "n_train"} - set(results.columns)
    if missing:
        raise ValueError(f"results lack the columns {sorted(missing)}; "
                         "pass the DataFrame returned by run_trials or learning_curve")
    return results


def paired_ttest(results, model_a, model_b, metric="test_mae"):
    """Paired t-test of two models over the trials they share.

    Trials are paired by trial id (the same random subsets), and
    :func:`scipy.stats.ttest_rel` tests whether the mean difference of
    ``metric`` is zero. The paper calls a difference significant at p < 0.01.

    Parameters
    ----------
    results : pandas.DataFrame
        From :func:`run_trials`, at a single training size (filter a learning
        curve first, e.g. ``results[results.n_train == 500]``).
    model_a, model_b : str
        Names of the two models.
    metric : str, default="test_mae"
        Column to compare.

    Returns
    -------
    t : float
        t statistic of ``model_a - model_b``; negative when ``model_a`` has
        the lower value (the lower MAE).
    p : float
        Two-sided p-value.

    Examples
    --------
    >>> import pandas as pd
    >>> from skcgcnn.stats import paired_ttest
    >>> results = pd.DataFrame({
    ...     "trial": [0, 1, 2, 0, 1, 2], "n_train": 500,
    ...     "model": ["cgcnn"] * 3 + ["tl-cgcnn"] * 3,
    ...     "test_mae": [0.98, 1.10, 0.90, 0.80, 0.95, 0.79]})
    >>> t, p = paired_ttest(results, "tl-cgcnn", "cgcnn")
    >>> round(t, 2), round(p, 4)  # lower MAE, but not significant at p < 0.01
    (-7.23, 0.0186)
    """
    from scipy.stats import ttest_rel

    results = _results_frame(results)
    if metric not in results.columns:
        raise ValueError(f"results have no column {metric!r}")
    sizes = sorted(results["n_train"].unique())
    if len(sizes) > 1:
        raise ValueError(f"results hold several training sizes {sizes}; pair trials at one "
                         f"size, e.g. paired_ttest(results[results.n_train == {sizes[0]}], ...)")
    per_model = []
    for name in (model_a, model_b):
        sub = results[results["model"] == name]
        if sub.empty:
            raise ValueError(f"no results for model {name!r}; models are "
                             f"{sorted(results['model'].unique())}")
        if sub["trial"].duplicated().any():
            raise ValueError(f"model {name!r} has several rows for one trial id")
        per_model.append(sub.set_index("trial")[metric])
    a, b = per_model[0].align(per_model[1], join="inner")
    if len(a) < 2:
        raise ValueError(f"a paired t-test needs at least 2 shared trials, "
                         f"{model_a!r} and {model_b!r} share {len(a)}")
    t, p = ttest_rel(a.to_numpy(dtype=float), b.to_numpy(dtype=float))
    return float(t), float(p)


def summarize(results):
    """Mean and standard deviation over trials, per model and training size.

    Parameters
    ----------
    results : pandas.DataFrame
        From :func:`run_trials` or :func:`learning_curve`.

    Returns
    -------
    summary : pandas.DataFrame
        One row per (model, n_train), in order of first appearance, with
        columns ``model``, ``n_train``, ``n_trials``, ``test_mae_mean``,
        ``test_mae_std``, ``train_mae_mean``, ``train_mae_std`` (units of the
        target; sample standard deviation, NaN with a single trial).

    Examples
    --------
    >>> import pandas as pd
    >>> from skcgcnn.stats import summarize
    >>> results = pd.DataFrame({"trial": [0, 1, 0, 1], "model": ["a", "a", "b", "b"],
    ...                         "n_train": 500, "test_mae": [1.0, 3.0, 2.0, 2.0],
    ...                         "train_mae": [0.5, 0.5, 1.0, 1.0]})
    >>> summarize(results)[["model", "n_trials", "test_mae_mean", "test_mae_std"]]
      model  n_trials  test_mae_mean  test_mae_std
    0     a         2            2.0      1.414214
    1     b         2            2.0      0.000000
    """
    results = _results_frame(results)
    metrics = [m for m in ("test_mae", "train_mae") if m in results.columns]
    grouped = results.groupby(["model", "n_train"], sort=False)
    summary = grouped.size().rename("n_trials").to_frame()
    for m in metrics:
        summary[f"{m}_mean"] = grouped[m].mean()
        summary[f"{m}_std"] = grouped[m].std()
    return summary.reset_index()


def learning_curve(models, X, y, train_sizes, n_trials=None, random_state=0, n_val=None,
                   n_test=None, n_jobs=None, path=None, verbose=0):
    """Repeated trials at several training sizes (the paper's Fig. 4).

    At each size, :func:`repeated_splits` draws the splits (same
    ``random_state``, so all models share them) and :func:`run_trials` fits
    every model on them.

    Parameters
    ----------
    models : dict of str to estimator
        Unfitted scikit-learn regressors by name.
    X, y
        As in :func:`run_trials`.
    train_sizes : sequence of int
        Training crystals per trial.
    n_trials : int, optional
        Trials per size; by default the paper's (:func:`paper_n_trials`).
    random_state : int, default=0
        Seed of the splits.
    n_val, n_test : int, optional
        As in :func:`repeated_splits` (default 4:1:1, 2,500 above 10k).
    n_jobs, path, verbose
        As in :func:`run_trials`; one ``path`` serves all sizes.

    Returns
    -------
    results : pandas.DataFrame
        The rows of :func:`run_trials` for every size, concatenated.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.neighbors import KNeighborsRegressor
    >>> from skcgcnn.stats import learning_curve, summarize
    >>> rng = np.random.default_rng(0)
    >>> X = rng.uniform(size=(600, 2))
    >>> y = np.sin(6 * X[:, 0]) + X[:, 1]
    >>> results = learning_curve({"knn": KNeighborsRegressor()}, X, y, [20, 80, 320], n_trials=2)
    >>> mae = summarize(results).test_mae_mean.to_numpy()
    >>> bool(mae[0] > mae[1] > mae[2])
    True
    """
    n_samples = len(y)
    frames = []
    for size in train_sizes:
        size = _positive_int(size, "train size")
        trials = paper_n_trials(size) if n_trials is None else n_trials
        splits = repeated_splits(n_samples, size, trials, n_val=n_val, n_test=n_test,
                                 random_state=random_state)
        frames.append(run_trials(models, X, y, splits, n_jobs=n_jobs, path=path,
                                 verbose=verbose))
    if not frames:
        raise ValueError("train_sizes is empty")
    return pd.concat(frames, ignore_index=True)


def equivalent_training_size(train_sizes, maes, target_mae):
    """Training size at which a power-law fit reaches an MAE (the paper's Table 2).

    Fits a straight line ``log(MAE) = a + b log(n)`` to the scratch model's
    learning curve by least squares and solves it for ``target_mae``, e.g. the
    transfer-learned model's MAE at 500 crystals. Outside the fitted sizes
    this is an extrapolation.

    Parameters
    ----------
    train_sizes : array-like of shape (n_points,)
        Training sizes (crystals), at least two distinct ones; repeated sizes
        (one point per trial) are allowed.
    maes : array-like of shape (n_points,)
        Test MAE at each size (positive, units of the target).
    target_mae : float
        MAE to reach (same units).

    Returns
    -------
    n_equivalent : float
        Training size (crystals) at which the fitted line gives ``target_mae``.

    Examples
    --------
    >>> from skcgcnn.stats import equivalent_training_size
    >>> sizes = [500, 1000, 5000, 10000]
    >>> maes = [2.0 * n ** -0.25 for n in sizes]
    >>> round(equivalent_training_size(sizes, maes, 2.0 * 1200 ** -0.25), 6)
    1200.0
    """
    x = np.asarray(train_sizes, dtype=np.float64).ravel()
    m = np.asarray(maes, dtype=np.float64).ravel()
    if x.shape != m.shape:
        raise ValueError(f"train_sizes and maes have different lengths: {len(x)} and {len(m)}")
    if len(np.unique(x)) < 2:
        raise ValueError("the fit needs at least two distinct training sizes")
    if (x <= 0).any() or (m <= 0).any() or not np.isfinite(np.r_[x, m]).all():
        raise ValueError("train_sizes and maes must be positive and finite (a log-log fit)")
    if not (np.isfinite(target_mae) and target_mae > 0):
        raise ValueError(f"target_mae must be positive and finite, got {target_mae!r}")
    slope, intercept = np.polyfit(np.log(x), np.log(m), 1)
    if abs(slope) < 1e-12:
        raise ValueError("the fitted MAE does not change with training size (slope 0)")
    return float(np.exp((np.log(target_mae) - intercept) / slope))


class _Lookup(TransformerMixin, BaseEstimator):
    """Rows of a precomputed table selected by index: ``X`` holds row numbers.

    ``compare`` featurizes every crystal once (graphs, magpie descriptors) and
    passes row numbers through the trials, so no trial featurizes again.
    """

    def __init__(self, table=None):
        self.table = table

    def __sklearn_clone__(self):
        """Stateless: clones share this instance, not a deep copy of the whole table."""
        return self

    def fit(self, X=None, y=None):
        return self

    def transform(self, X):
        return self.table[np.asarray(X, dtype=np.int64).ravel()]
