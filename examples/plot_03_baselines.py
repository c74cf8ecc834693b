"""
TL-CGCNN, random forest, SVR and LASSO in one GridSearchCV
==========================================================

The paper's classical baselines use matminer's 132 magpie element-property descriptors
(:class:`~skcgcnn.composition.MagpieFeaturizer`). Because the networks are scikit-learn
estimators too, one ``GridSearchCV`` over a two-step pipeline, whose featuriser *and*
regressor are parameters, compares all of them on the same folds.
"""

import tempfile

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import Lasso
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from skcgcnn import CrystalGraphTransformer, TransferCGCNNRegressor
from skcgcnn.composition import MagpieFeaturizer
from skcgcnn.datasets import load_dcdft

structures, bulk_modulus = load_dcdft()
y = np.log10(bulk_modulus)  # log10 GPa

# %%
# The pipeline's two steps are placeholders that the grid replaces. ``memory`` caches the
# featurisers' output, so each fold's descriptors and graphs are computed once, not once
# per candidate.

pipe = Pipeline([("features", MagpieFeaturizer()), ("model", RandomForestRegressor())],
                memory=tempfile.mkdtemp())
magpie = MagpieFeaturizer()
param_grid = [
    {"features": [magpie], "model": [RandomForestRegressor(n_estimators=200, random_state=0)]},
    {"features": [magpie], "model": [make_pipeline(StandardScaler(), SVR())],
     "model__svr__C": [1.0, 10.0]},
    {"features": [magpie], "model": [make_pipeline(StandardScaler(), Lasso(max_iter=50_000))],
     "model__lasso__alpha": [0.001, 0.01]},
    {"features": [CrystalGraphTransformer()],
     "model": [TransferCGCNNRegressor(pretrained="mp-formation-energy", max_epochs=40,
                                      batch_size=16, random_state=0)]},
]
search = GridSearchCV(pipe, param_grid, cv=KFold(3, shuffle=True, random_state=0),
                      scoring="neg_mean_absolute_error")
search.fit(structures, y)

# %%
# Mean test MAE per candidate over the three folds.


def label(params):
    model = params["model"]
    name = type(model[-1] if isinstance(model, Pipeline) else model).__name__
    extra = {k.split("__")[-1]: v for k, v in params.items() if k.count("__") == 2}
    return name + (f" {extra}" if extra else "")


results = pd.DataFrame({
    "candidate": [label(p) for p in search.cv_results_["params"]],
    "MAE (log10 GPa)": -search.cv_results_["mean_test_score"],
    "std": search.cv_results_["std_test_score"],
}).sort_values("MAE (log10 GPa)")
print(results.round(3).to_string(index=False))
print("best:", label(search.best_params_))

# %%
# The same numbers as bars, one per model type (its best setting), with
# :func:`skcgcnn.plotting.plot_comparison`, which reads a table of per-trial errors; here
# the folds of the best candidate of each type are the trials. The best score of a grid
# search is optimistic, since it was chosen on these folds; for an honest comparison nest
# the search inside ``cross_val_score`` or use :mod:`skcgcnn.stats`.

from skcgcnn.plotting import plot_comparison

cv_results = pd.DataFrame(search.cv_results_)
cv_results["type"] = [label(p).split(" ")[0] for p in search.cv_results_["params"]]
best = cv_results.loc[cv_results.groupby("type")["mean_test_score"].idxmax()]
folds = [c for c in cv_results if c.startswith("split") and c.endswith("_test_score")]
trials = best.melt(id_vars="type", value_vars=folds, var_name="trial", value_name="score")
trials = pd.DataFrame({"trial": trials["trial"].str.extract(r"(\d+)")[0].astype(int),
                       "model": trials["type"], "n_train": int(len(y) * 2 / 3),
                       "test_mae": -trials["score"]})
ax = plot_comparison(trials, units="log10 GPa")
