"""Tests of skcgcnn.baselines: the protocol's classical models, shared by compare and paper.py."""

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import KFold

from skcgcnn.baselines import BASELINE_GRIDS, baseline_models
from skcgcnn.composition import MagpieFeaturizer


def test_models_search_the_grids():
    models = baseline_models(cv=4, random_state=3)
    assert list(models) == ["PLS", "LASSO", "SVR", "RF"]
    for name, search in models.items():
        scaler, step = search.estimator.steps
        assert scaler[0] == "standardscaler"
        assert search.param_grid == {f"{step[0]}__{k}": v for k, v in BASELINE_GRIDS[name].items()}
        assert isinstance(search.cv, KFold) and search.cv.n_splits == 4 and search.cv.shuffle
        assert search.cv.random_state == 3 and search.scoring == "neg_mean_absolute_error"
    assert models["RF"].estimator.steps[1][1].random_state == 3
    # PLS components that the smallest training fold cannot hold are left out
    small = baseline_models(["PLS"], cv=5, n_samples=13)["PLS"]
    assert small.param_grid == {"plsregression__n_components": [1, 2, 4, 8]}
    with pytest.raises(ValueError, match="unknown baseline.*'GP'"):
        baseline_models(["GP"])


def test_magpie_of_graphs_equals_magpie_of_structures(tiny):
    atoms, graphs, _ = tiny
    np.testing.assert_array_equal(MagpieFeaturizer().transform(graphs),
                                  MagpieFeaturizer().transform(atoms))


def test_baselines_predict_held_out_crystals_better_than_the_mean():
    # scored on crystals they were not fitted on, against the mean predictor's MAE
    # (the test used to score on the training crystals)
    from sklearn.exceptions import ConvergenceWarning

    from skcgcnn.datasets import load_mp_elasticity

    frame = load_mp_elasticity()
    rows = np.random.RandomState(0).permutation(len(frame))[:150]
    X = MagpieFeaturizer().transform(list(frame.structure.iloc[rows]))
    y = np.log10(frame.K_VRH.to_numpy()[rows])  # log10 GPa
    fit, test = slice(0, 110), slice(110, None)
    mean_mae = np.abs(y[test] - y[fit].mean()).mean()
    for name, model in baseline_models(cv=3, n_samples=110).items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X[fit], y[fit])
        mae = np.abs(model.predict(X[test]).ravel() - y[test]).mean()
        # measured: 0.37 to 0.45 of the mean predictor's error on 180/60 such crystals
        assert mae < 0.7 * mean_mae, (name, mae, mean_mae)


def test_paper_benchmark_uses_these_baselines():
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    try:
        import paper
    finally:
        sys.path.remove(str(root / "benchmarks"))
    assert paper.baseline_models is baseline_models
