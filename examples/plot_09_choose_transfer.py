"""
Choosing the transfer strategy by cross-validation
==================================================

The source model, which layers to freeze and whether to fine-tune at all are
parameters, so ``GridSearchCV`` can choose among training from scratch, fine-tuning,
layer freezing and a classical model on pretrained embeddings, from the training data
alone. Transfer can hurt (negative transfer is common in others' benchmarks), and this
is how to find out before testing.

Each candidate is the last step of a one-step ``Pipeline``; the grid lists the
candidates. Epochs are few so that this page builds quickly: compare the fit times,
not the scores.
"""

import numpy as np
import pandas as pd
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from skcgcnn import (CGCNNRegressor, CrystalGraphTransformer, PretrainedEmbedding,
                     TransferCGCNNRegressor)
from skcgcnn.datasets import load_dcdft

structures, bulk_modulus = load_dcdft()
y = np.log10(bulk_modulus)  # log10 GPa
graphs = CrystalGraphTransformer().fit_transform(structures)
idx = np.random.RandomState(0).permutation(len(y))
train, test = idx[:56], idx[56:]

fit = dict(max_epochs=20, batch_size=16, random_state=0)
candidates = {
    "scratch": CGCNNRegressor(**fit),
    "fine-tune": TransferCGCNNRegressor(**fit),
    "freeze all but head": TransferCGCNNRegressor(freeze="all_but_head", **dict(fit, lr=0.01)),
    "embeddings + SVR": make_pipeline(PretrainedEmbedding(), StandardScaler(), SVR(C=10)),
}
search = GridSearchCV(Pipeline([("model", candidates["scratch"])]),
                      {"model": list(candidates.values())},
                      cv=KFold(3, shuffle=True, random_state=0),
                      scoring="neg_mean_absolute_error")
search.fit(graphs[train], y[train])

results = pd.DataFrame({
    "strategy": list(candidates),
    "CV MAE (log10 GPa)": -search.cv_results_["mean_test_score"],
    "std": search.cv_results_["std_test_score"],
    "fit time per fold (s)": search.cv_results_["mean_fit_time"],
})
print(results.round(3).to_string(index=False))
chosen = list(candidates)[search.best_index_]
test_mae = np.abs(search.predict(graphs[test]) - y[test]).mean()
print(f"chosen: {chosen}; its test MAE on {len(test)} held-out crystals: {test_mae:.3f}")

# %%
# The cost: every candidate is fitted once per fold and the chosen one once more on
# all the training data. The embeddings need no training of the network, so that
# candidate costs a forward pass and an SVR fit.

total = search.cv_results_["mean_fit_time"].sum() * search.n_splits_ + search.refit_time_
print(f"whole search: about {total:.0f} s of fitting "
      f"({search.n_splits_} folds x {len(candidates)} candidates + 1 refit)")

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6.5, 3.2))
ax.bar(results["strategy"], results["CV MAE (log10 GPa)"], yerr=results["std"], capsize=4,
       color=[f"C{i}" for i in range(len(results))])
for i, t in enumerate(results["fit time per fold (s)"]):
    ax.text(i, 0.01, f"{t:.1f} s", ha="center", color="white", fontsize=8)
ax.set_ylabel("3-fold CV MAE (log10 GPa)")
ax.set_title("Transfer strategies chosen by GridSearchCV")
fig.tight_layout()
