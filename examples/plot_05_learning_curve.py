"""
Learning curves, paired t-test and equivalent training size
===========================================================

Lee & Asahi's protocol (:doc:`/user_guide/protocol`): repeated random
train:validation:test = 4:1:1 splits, the same for every model, at several training
sizes; a paired t-test over the trials; and the "equivalent training size", the number
of crystals the scratch model would need to match the transferred one, read off a
straight line of log MAE against log size.

:mod:`skcgcnn.stats` runs it for any scikit-learn regressors and
:mod:`skcgcnn.plotting` draws it. Here on the 71 DCDFT crystals, with two trials and 40
epochs, so the numbers are noisy; the paper's figures use 10 trials of 500 crystals.
"""

import numpy as np

from skcgcnn import CGCNNRegressor, CrystalGraphTransformer, TransferCGCNNRegressor
from skcgcnn.datasets import load_dcdft
from skcgcnn.stats import (equivalent_training_size, learning_curve, paired_ttest,
                           repeated_splits, summarize)

structures, bulk_modulus = load_dcdft()
y = np.log10(bulk_modulus)  # log10 GPa
graphs = CrystalGraphTransformer().fit_transform(structures)

# %%
# The splits: at 40 training crystals, 10 validation and 10 test crystals (4:1:1). Every
# model and every size uses the same seeded permutations, so the trials are paired.

for train, val, test in repeated_splits(len(y), n_train=40, n_trials=2, random_state=0):
    print(f"train {len(train)}, validation {len(val)}, test {len(test)}; "
          f"first test crystals {test[:4]}")

# %%
# Each model is fitted on train ∪ validation (the network holds out its own 20 %, the
# "1" of 4:1, to choose its epoch) and scored on the test crystals.

common = dict(max_epochs=40, batch_size=8, random_state=0)
models = {"CGCNN": CGCNNRegressor(**common),
          "TL-CGCNN": TransferCGCNNRegressor(pretrained="mp-formation-energy", **common)}
results = learning_curve(models, graphs, y, train_sizes=[12, 24, 40], n_trials=2,
                         random_state=0)
print(summarize(results).round(3).to_string(index=False))

# %%
# Log-log learning curves, as the paper's Fig. 4.

from skcgcnn.plotting import plot_learning_curve

ax = plot_learning_curve(results, units="log10 GPa")
ax.figure.tight_layout()

# %%
# The paired t-test at the largest size: negative t means TL-CGCNN has the lower MAE.
# With two trials it has one degree of freedom and says little; the paper's claims
# rest on 10 trials and p < 0.01.

largest = results[results.n_train == 40]
t, p = paired_ttest(largest, "TL-CGCNN", "CGCNN")
print(f"t = {t:.2f}, p = {p:.2f}")

# %%
# Equivalent training size: fit log MAE = a + b log n to the scratch curve and solve for
# the transferred model's MAE at 40 crystals. Outside the fitted sizes it is an
# extrapolation, and on curves this noisy only an illustration.

scratch = results[results.model == "CGCNN"]
tl_mae = largest[largest.model == "TL-CGCNN"].test_mae.mean()
try:
    n_eq = equivalent_training_size(scratch.n_train, scratch.test_mae, tl_mae)
    print(f"TL-CGCNN at 40 crystals ({tl_mae:.3f}) ~ CGCNN at {n_eq:.0f} crystals")
except ValueError as exc:  # e.g. a curve that does not fall with size
    print("no equivalent size:", exc)
