"""Scale-out through joblib: featurization and GridSearchCV on a dask cluster."""

import joblib
import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from skcgcnn import CGCNNRegressor, CrystalGraphTransformer

distributed = pytest.importorskip(
    "distributed", reason="dask.distributed is not installed (pip install 'dask[distributed]')")


@pytest.fixture(scope="module")
def client():
    """A local cluster of two single-threaded worker processes."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=50) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def _ran_on_workers(ts):
    """Workers (addresses) that ran the tasks recorded by a task stream."""
    return {task["worker"] for task in ts.data}


def test_featurization_on_dask_equals_serial(client, tiny):
    atoms, graphs, _ = tiny
    with distributed.get_task_stream(client) as ts, joblib.parallel_config(backend="dask"):
        on_dask = CrystalGraphTransformer(n_jobs=2).transform(atoms)
    assert _ran_on_workers(ts)  # the work went to the cluster
    serial = CrystalGraphTransformer(n_jobs=1).transform(atoms)
    assert len(on_dask) == len(serial) == len(graphs)
    for a, b in zip(on_dask, serial):
        for field in ("numbers", "centers", "neighbors", "distances"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_grid_search_on_dask(client, tiny):
    atoms, _, y = tiny
    pipe = make_pipeline(CrystalGraphTransformer(),
                         CGCNNRegressor(max_epochs=2, batch_size=8, random_state=0))
    search = GridSearchCV(pipe, {"cgcnnregressor__lr": [0.01, 0.001]}, cv=2,
                          scoring="neg_mean_absolute_error", n_jobs=-1)
    with distributed.get_task_stream(client) as ts, joblib.parallel_config(backend="dask"):
        search.fit(atoms, y)
    assert _ran_on_workers(ts)  # the fits went to the cluster
    # the same search in this process: the cluster changes where fits run, not what they give
    local = GridSearchCV(pipe, {"cgcnnregressor__lr": [0.01, 0.001]}, cv=2,
                         scoring="neg_mean_absolute_error", n_jobs=1).fit(atoms, y)
    np.testing.assert_allclose(search.cv_results_["mean_test_score"],
                               local.cv_results_["mean_test_score"], rtol=1e-4)
    assert search.best_params_ == local.best_params_
    np.testing.assert_allclose(search.best_estimator_.predict(atoms),
                               local.best_estimator_.predict(atoms), rtol=1e-4)


def test_run_trials_on_dask_resumable(client, tmp_path):
    """The paper's repeated trials on the cluster, saved to a resumable CSV."""
    from sklearn.dummy import DummyRegressor
    from sklearn.linear_model import LinearRegression

    from skcgcnn.stats import repeated_splits, run_trials

    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 3))
    y = X @ [1.0, 2.0, 3.0]
    models = {"mean": DummyRegressor(), "linear": LinearRegression()}
    splits = repeated_splits(len(y), 40, 3)
    path = tmp_path / "results.csv"
    with distributed.get_task_stream(client) as ts, joblib.parallel_config(backend="dask"):
        results = run_trials(models, X, y, splits, n_jobs=-1, path=path)
    assert _ran_on_workers(ts)
    serial = run_trials(models, X, y, splits)
    np.testing.assert_allclose(results.test_mae, serial.test_mae)
    assert len(np.loadtxt(path, delimiter=",", skiprows=1, usecols=0)) == 6
