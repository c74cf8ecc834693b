"""Wall time of an EnsembleRegressor of 5 against 5 single fits, side by side, on 2 cores.

python benchmarks/ensemble_speed.py [--n 300] [--epochs 60] [--members 5] [--cores 2]

Baseline: featurize and fit one TransferCGCNNRegressor with ``--cores`` torch threads, once
per seed, one after the other (what a user does by hand). Ensemble: featurize once and fit
``EnsembleRegressor(n_jobs=--cores)`` (one torch thread per worker). Prints both wall times
and their ratio (ensemble / baseline; the issue's goal is <= 1). Run on an idle machine.
"""

import argparse
import time

import numpy as np
import torch

from skcgcnn import CrystalGraphTransformer, EnsembleRegressor, TransferCGCNNRegressor
from skcgcnn.datasets import load_mp_elasticity

p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
p.add_argument("--n", type=int, default=300)
p.add_argument("--epochs", type=int, default=60)
p.add_argument("--members", type=int, default=5)
p.add_argument("--cores", type=int, default=2)
args = p.parse_args()

frame = load_mp_elasticity()
idx = np.random.RandomState(0).permutation(len(frame))[:args.n]
structures = [frame["structure"][i] for i in idx]
y = np.log10(frame["K_VRH"].to_numpy()[idx])
# an EnsembleRegressor's member holds out a fifth
member = TransferCGCNNRegressor(max_epochs=args.epochs, batch_size=64, validation_fraction=0.2)

torch.set_num_threads(args.cores)
warm = CrystalGraphTransformer().transform(structures[:20])  # imports, pretrained file cache
TransferCGCNNRegressor(max_epochs=1).fit(warm, y[:20])
t0 = time.perf_counter()
for seed in range(args.members):
    graphs = CrystalGraphTransformer().transform(structures)
    TransferCGCNNRegressor(**{**member.get_params(), "random_state": seed}).fit(graphs, y)
single = time.perf_counter() - t0

t0 = time.perf_counter()
graphs = CrystalGraphTransformer().transform(structures)
EnsembleRegressor(member, n_estimators=args.members, n_jobs=args.cores,
                  random_state=0).fit(graphs, y)
ensemble = time.perf_counter() - t0
print(f"{args.members} single fits, {args.cores} threads each, one after the other: "
      f"{single:.1f} s")
print(f"EnsembleRegressor of {args.members}, n_jobs={args.cores}: {ensemble:.1f} s "
      f"(ratio {ensemble / single:.2f})")
