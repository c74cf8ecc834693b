"""
Quickstart: TL-CGCNN in a scikit-learn pipeline
===============================================

Fine-tune the bundled ``mp-formation-energy`` network on ASE's 71 DCDFT elemental
crystals and score it with ``cross_val_score``, as any scikit-learn regressor. The target
is log10 of the WIEN2k bulk modulus in GPa, as in Lee & Asahi's K_VRH experiments.

The networks here train for 40 epochs so that the page builds quickly; real runs use a
few hundred.
"""

import numpy as np
from sklearn.model_selection import KFold, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline

from skcgcnn import CrystalGraphTransformer, TransferCGCNNRegressor
from skcgcnn.datasets import load_dcdft

structures, bulk_modulus = load_dcdft()  # 71 ase.Atoms, GPa
y = np.log10(bulk_modulus)
print(f"{len(structures)} crystals, log10 K from {y.min():.2f} to {y.max():.2f}")

# %%
# The model: structures to crystal graphs (12 nearest neighbours within 8 Å), then a
# CGCNN that starts from the pretrained formation-energy network, gets a new head and is
# fine-tuned entirely (the paper's best strategy). A small data set wants small
# minibatches: with the paper's 256 an epoch would be a single SGD step.

model = make_pipeline(
    CrystalGraphTransformer(),
    TransferCGCNNRegressor(pretrained="mp-formation-energy", max_epochs=40,
                           batch_size=16, random_state=0),
)

# %%
# Cross-validation. In every fold the network trains on the whole *training* part and
# keeps its last epoch (``validation_fraction="auto"``); the test fold is never seen.

cv = KFold(3, shuffle=True, random_state=0)
mae = -cross_val_score(model, structures, y, cv=cv, scoring="neg_mean_absolute_error")
print(f"TL-CGCNN, 3-fold CV: MAE {mae.mean():.3f} ± {mae.std():.3f} log10 GPa")
print(f"predicting the mean:  MAE {np.abs(y - y.mean()).mean():.3f} log10 GPa")

# %%
# One fit on a training split, a parity plot of the held-out crystals, and the losses
# per epoch (MAE of the standardised target) with the epoch that was kept.

import matplotlib.pyplot as plt

from skcgcnn.plotting import plot_history, plot_parity

X_train, X_test, y_train, y_test = train_test_split(structures, y, test_size=0.25,
                                                    random_state=0)
model.fit(X_train, y_train)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 4))
plot_parity(y_test, model.predict(X_test), ax=ax1, units="log10 GPa", label="test")
plot_history(model, ax=ax2)
fig.tight_layout()
