"""The classical baselines of Lee & Asahi's protocol: PLS, LASSO, SVR and random forest.

Each model is standardised magpie descriptors (132 per crystal,
:class:`~skcgcnn.composition.MagpieFeaturizer`) into a regressor whose
hyperparameters are chosen by ``GridSearchCV`` (mean absolute error, shuffled
k-fold) on the crystals it is fitted on: in the protocol, the training and
validation crystals of a trial. ``skcgcnn compare`` and the project's
benchmarks (``benchmarks/paper.py`` in the source repository) both take their
baselines from here, so the two use one grid.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BASELINE_GRIDS", "baseline_models"]

#: Hyperparameter grid of each baseline (keys are the regressor's own parameters).
BASELINE_GRIDS = {
    "PLS": {"n_components": [1, 2, 4, 8, 16, 32]},
    "LASSO": {"alpha": list(np.logspace(-4, 0, 9))},
    "SVR": {"C": [1.0, 10.0, 100.0], "gamma": ["scale", 0.003, 0.01], "epsilon": [0.01, 0.1]},
    "RF": {"max_features": [0.33, 1.0], "min_samples_leaf": [1, 2]},
}


def _regressor(name, random_state):
    from sklearn.cross_decomposition import PLSRegression
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import Lasso
    from sklearn.svm import SVR

    return {"PLS": lambda: PLSRegression(scale=False),
            "LASSO": lambda: Lasso(max_iter=20_000),
            "SVR": SVR,
            "RF": lambda: RandomForestRegressor(n_estimators=100, random_state=random_state),
            }[name]()


def baseline_models(names=None, cv=5, random_state=0, n_samples=None):
    """The protocol's baselines: scaler and regressor, tuned by a grid search.

    Parameters
    ----------
    names : sequence of {"PLS", "LASSO", "SVR", "RF"}, optional
        Baselines to build (default: all four, in that order).
    cv : int, default=5
        Folds of the grid search (shuffled ``KFold`` seeded by ``random_state``;
        the paper's 5).
    random_state : int, default=0
        Seeds the folds and the random forest.
    n_samples : int, optional
        Crystals the models will be fitted on. When given, PLS components
        as many as the smallest training fold's crystals or more (which PLS
        cannot fit) are left out of its grid.

    Returns
    -------
    models : dict of str to GridSearchCV
        Name to an unfitted ``GridSearchCV`` over
        ``make_pipeline(StandardScaler(), regressor)``; feed it magpie
        descriptors.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from skcgcnn.baselines import baseline_models
    >>> from skcgcnn.composition import MagpieFeaturizer
    >>> crystals = [bulk(s, a=a) for s in ("Cu", "Al", "Ni") for a in (3.5, 3.6, 3.7, 3.8)]
    >>> X = MagpieFeaturizer().transform(crystals)
    >>> y = [c.get_volume() for c in crystals]  # angstrom^3
    >>> model = baseline_models(["LASSO"], cv=3)["LASSO"].fit(X, y)
    >>> model.predict(X[:2]).shape
    (2,)
    """
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    names = list(BASELINE_GRIDS) if names is None else list(names)
    unknown = [n for n in names if n not in BASELINE_GRIDS]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {', '.join(BASELINE_GRIDS)}")
    folds = KFold(cv, shuffle=True, random_state=random_state)
    models = {}
    for name in names:
        est = _regressor(name, random_state)
        grid = dict(BASELINE_GRIDS[name])
        if name == "PLS" and n_samples is not None:
            smallest_fold = n_samples - -(-n_samples // cv)
            grid["n_components"] = [k for k in grid["n_components"] if k < smallest_fold] or [1]
        step = type(est).__name__.lower()
        models[name] = GridSearchCV(make_pipeline(StandardScaler(), est),
                                    {f"{step}__{k}": v for k, v in grid.items()},
                                    cv=folds, scoring="neg_mean_absolute_error")
    return models
