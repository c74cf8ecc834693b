"""
Freezing strategies and the head
================================

:class:`~skcgcnn.TransferCGCNNRegressor` decides which pretrained layers keep their
weights (``freeze``) and whether the pretrained fully connected head is kept or replaced
(``head``):

* ``freeze=None``: fine-tune everything, the paper's default and best;
* ``freeze="embedding"``: keep the element embedding fixed;
* ``freeze=k``: keep the embedding and the first ``k`` convolutions fixed, the mixed
  strategy the paper suggests trying next;
* ``freeze="all_but_head"``: train the head only, the paper's "layer freezing" (worse
  than fine-tuning in every case it tried);
* ``head="keep"``: start from the pretrained head instead of a new one.

All of them are parameters, so one ``GridSearchCV`` compares them on the same folds.
"""

import numpy as np
import pandas as pd
from sklearn.model_selection import GridSearchCV, KFold

from skcgcnn import CrystalGraphTransformer, TransferCGCNNRegressor
from skcgcnn.datasets import load_dcdft

structures, bulk_modulus = load_dcdft()
y = np.log10(bulk_modulus)  # log10 GPa
graphs = CrystalGraphTransformer().fit_transform(structures)

grid = GridSearchCV(
    TransferCGCNNRegressor(pretrained="mp-formation-energy", max_epochs=40, batch_size=16,
                           random_state=0),
    [{"freeze": [None, "embedding", 1, "all_but_head"]},
     {"freeze": [None], "head": ["keep"]}],
    cv=KFold(3, shuffle=True, random_state=0), scoring="neg_mean_absolute_error",
    refit=False)
grid.fit(graphs, y)

results = pd.DataFrame({
    "freeze": [repr(p["freeze"]) for p in grid.cv_results_["params"]],
    "head": [p.get("head", "new") for p in grid.cv_results_["params"]],
    "MAE (log10 GPa)": -grid.cv_results_["mean_test_score"],
    "std": grid.cv_results_["std_test_score"],
    "fit time (s)": grid.cv_results_["mean_fit_time"],
})
print(results.round(3).to_string(index=False))

# %%
# What each strategy trains. Frozen layers get no gradient and their batch
# normalisation stays in eval mode, so their running statistics do not drift either.

for freeze in (None, "embedding", 1, "all_but_head"):
    net = TransferCGCNNRegressor(pretrained="mp-formation-energy", freeze=freeze).initialize()
    n_frozen = sum(p.numel() for p in net.module_.parameters() if not p.requires_grad)
    n_total = sum(p.numel() for p in net.module_.parameters())
    layers = sorted({name.split(".")[0] + ("." + name.split(".")[1] if name.startswith("convs")
                                           else "") for name in net.frozen_})
    print(f"freeze={freeze!r:15} {n_frozen:6d} of {n_total} parameters fixed: "
          f"{', '.join(layers) or '-'}")

# %%
# The mean test MAE per strategy.

import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(7, 3.5))
labels = [f"{f}\nhead={h}" for f, h in zip(results["freeze"], results["head"])]
ax.bar(labels, results["MAE (log10 GPa)"], yerr=results["std"], capsize=4,
       color=[f"C{i}" for i in range(len(results))])
ax.set_ylabel("test MAE (log10 GPa)")
ax.set_title("Transfer strategies, 3-fold CV on 71 crystals")
fig.tight_layout()
