"""
Pretrained embeddings and a Gaussian process with its standard deviation
========================================================================

Transfer learning without training the network: :class:`~skcgcnn.PretrainedEmbedding`
passes each crystal through a pretrained CGCNN and returns its pooled crystal vector
(eq. 4 of the paper), a descriptor that any scikit-learn model can use. Here a
Gaussian process learns log10 bulk moduli from those vectors and, as every
``GaussianProcessRegressor`` does, says how sure it is (``return_std=True``).

For comparison, the spread of an ensemble of fine-tuned networks
(:class:`~skcgcnn.TransferCGCNNRegressor` with different seeds), the other usual
uncertainty estimate. With so few crystals and epochs the numbers show the API, not
which is better; ``benchmarks/paper.py`` measures that (docs/benchmarks.md).
"""

import time

import numpy as np
from scipy.stats import spearmanr
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skcgcnn import CrystalGraphTransformer, PretrainedEmbedding, TransferCGCNNRegressor
from skcgcnn.datasets import load_dcdft

structures, bulk_modulus = load_dcdft()
y = np.log10(bulk_modulus)  # log10 GPa
graphs = CrystalGraphTransformer().fit_transform(structures)
idx = np.random.RandomState(0).permutation(len(y))
train, test = idx[:50], idx[50:]

t0 = time.perf_counter()
gp = make_pipeline(
    PretrainedEmbedding("mp-formation-energy"), StandardScaler(),
    GaussianProcessRegressor(ConstantKernel() * RBF(8.0) + WhiteKernel(0.1, (1e-8, 1.0)),
                             normalize_y=True, random_state=0))
gp.fit(graphs[train], y[train])
gp_mean, gp_std = gp.predict(graphs[test], return_std=True)
gp_time = time.perf_counter() - t0
print(f"GP on embeddings: {gp_time:.1f} s, test MAE {np.abs(gp_mean - y[test]).mean():.3f}")
print("fitted kernel:", gp[-1].kernel_)
print(f"mean of the training targets: test MAE {np.abs(y[train].mean() - y[test]).mean():.3f}")

# %%
# An ensemble of three fine-tuned networks (a few epochs each, to keep this page fast).

t0 = time.perf_counter()
members = [TransferCGCNNRegressor(max_epochs=30, batch_size=16, random_state=seed)
           .fit(graphs[train], y[train]) for seed in range(3)]
preds = np.array([m.predict(graphs[test]) for m in members])
ens_mean, ens_std = preds.mean(0), preds.std(0, ddof=1)
ens_time = time.perf_counter() - t0
print(f"ensemble of 3 fine-tuned networks: {ens_time:.1f} s, "
      f"test MAE {np.abs(ens_mean - y[test]).mean():.3f}")

# %%
# How well does each standard deviation track the error? The rank correlation of
# the absolute error with σ, and how many test crystals fall inside mean ± 1.645 σ (90 % for a
# calibrated Gaussian). An uncalibrated spread can be turned into intervals with a
# coverage guarantee by conformal prediction (MAPIE).

for name, mean, std in (("GP", gp_mean, gp_std), ("ensemble", ens_mean, ens_std)):
    err = np.abs(mean - y[test])
    rho = spearmanr(err, std).statistic
    covered = np.mean(err <= 1.645 * std)
    print(f"{name:9} Spearman(|error|, std) = {rho:+.2f}, "
          f"inside ±1.645 std: {covered:.0%} of {len(test)}")

# %%
# Parity plots with ±1 σ error bars.

import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(8, 3.8), sharex=True, sharey=True)
for ax, (name, mean, std) in zip(axes, (("GP on embeddings", gp_mean, gp_std),
                                        ("fine-tuned ensemble", ens_mean, ens_std))):
    ax.errorbar(y[test], mean, yerr=std, fmt="o", ms=4, capsize=2)
    lims = [y.min() - 0.1, y.max() + 0.1]
    ax.plot(lims, lims, "k--", lw=1)
    ax.set_xlabel("DFT log10 B (GPa)")
    ax.set_title(name)
axes[0].set_ylabel("predicted log10 B (GPa)")
fig.tight_layout()
