"""
Uncertainty on a few hundred crystals
=====================================

:class:`~skcgcnn.EnsembleRegressor` fits several seeds of a network and returns their
mean with a standard deviation calibrated on crystals that no seed saw (split
conformal, :doc:`../user_guide/uncertainty`). Here: a TL-CGCNN ensemble fine-tuned
on 200 bulk moduli of the bundled Materials Project sample
(:func:`~skcgcnn.datasets.load_mp_elasticity`, CC BY 4.0), tested on 300 others.
Few epochs and members keep the example fast; ``examples/elasticity_ensemble.py``
is the full-size run.
"""

import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import spearmanr

from skcgcnn import CrystalGraphTransformer, EnsembleRegressor, TransferCGCNNRegressor
from skcgcnn.datasets import load_mp_elasticity
from skcgcnn.plotting import plot_calibration, plot_parity

frame = load_mp_elasticity()
idx = np.random.RandomState(0).permutation(len(frame))[:500]
graphs = CrystalGraphTransformer().transform(list(frame["structure"][idx]))
y = np.log10(frame["K_VRH"].to_numpy()[idx])  # log10 GPa
train, test = np.arange(200), np.arange(200, 500)

model = EnsembleRegressor(
    TransferCGCNNRegressor(pretrained="mp-formation-energy", max_epochs=30,
                           lr_decay_epoch=20, batch_size=32),
    n_estimators=4, random_state=0)
model.fit(graphs[train], y[train])
mean, std = model.predict(graphs[test], return_std=True)
lower, upper = model.predict_interval(graphs[test]).T  # 90 % by default

err = np.abs(mean - y[test])
print(f"test MAE {err.mean():.3f} log10 GPa")
print(f"{len(model.calibration_indices_)} of the {len(train)} training crystals, which no "
      f"member saw, calibrate the std (scale {model.std_scale_:.2f})")
print(f"90 % intervals cover {np.mean((y[test] >= lower) & (y[test] <= upper)):.0%} of the "
      f"test crystals")
print(f"Spearman correlation of |error| and std: {spearmanr(err, std)[0]:.2f}")

# %%
# The std ranks the crystals by how far to trust them: the quarter with the largest
# std has a larger error than the quarter with the smallest.

order = np.argsort(std)
quarter = len(order) // 4
print(f"MAE of the 25 % most certain crystals:  {err[order[:quarter]].mean():.3f}")
print(f"MAE of the 25 % least certain crystals: {err[order[-quarter:]].mean():.3f}")

# %%
# Left: predictions with their 90 % intervals. Right: the calibration plot, the
# fraction of test crystals inside ``mean ± z std`` against the nominal level; on the
# diagonal, the std means what it says.

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.8), layout="constrained")
plot_parity(y[test], mean, ax=ax1, units="log10 GPa", label="TL-CGCNN ensemble",
            y_err=np.vstack([mean - lower, upper - mean]))
plot_calibration(y[test], mean, std, ax=ax2, label="TL-CGCNN ensemble")
plt.show()
