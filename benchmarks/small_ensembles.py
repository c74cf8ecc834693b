"""Small TL-CGCNN ensembles on the bundled bulk moduli: accuracy, coverage and width (issue 28).

For each seed, ``--n-fit`` crystals of :func:`skcgcnn.datasets.load_mp_elasticity` are
drawn to fit an :class:`skcgcnn.EnsembleRegressor` of ``--members``
``TransferCGCNNRegressor`` at the fine-tuning defaults (float32, one thread), and 500
others judge it (log10 K_VRH). One line per seed: fit time, test MAE of the mean, and for
the levels 0.8 and 0.9 the coverage of ``predict_interval``, its mean width (log10 GPa)
and its widest interval over the span of the training targets. ``--no-member-validation``
fits members with ``validation_fraction=None`` (last epoch of the cosine schedule, no
crystal held out for the best epoch). With a version of skcgcnn before issue 28 on the
path (no ``calibration_fraction``), the ensemble calibrates on its members' own
validation crystals and only the 90 % line is printed ("oldcov").

    python benchmarks/small_ensembles.py --members 3 --seeds 0 1 2 3 4 5
"""

import argparse
import time

import numpy as np
import torch

from skcgcnn import CrystalGraphTransformer, EnsembleRegressor, TransferCGCNNRegressor
from skcgcnn.datasets import load_mp_elasticity

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--members", type=int, default=3)
parser.add_argument("--seeds", type=int, nargs="+", default=[0])
parser.add_argument("--n-fit", type=int, default=300)
parser.add_argument("--calibration-fraction", type=float, default=0.2)
parser.add_argument("--no-member-validation", action="store_true")
args = parser.parse_args()
torch.set_num_threads(1)

data = load_mp_elasticity()
y = np.log10(data.K_VRH.to_numpy())
graphs = CrystalGraphTransformer().transform(list(data.structure))
new = "calibration_fraction" in EnsembleRegressor().get_params()
member = dict(conv_dtype="float32")
if args.no_member_validation:
    member["validation_fraction"] = None
for seed in args.seeds:
    idx = np.random.RandomState(seed).permutation(len(data))
    fit, test = idx[:args.n_fit], idx[args.n_fit:args.n_fit + 500]
    t = time.time()
    kw = dict(calibration_fraction=args.calibration_fraction) if new else {}
    model = EnsembleRegressor(TransferCGCNNRegressor(**member), n_estimators=args.members,
                              random_state=seed, **kw).fit(graphs[fit], y[fit])
    took = time.time() - t
    mean = model.predict(graphs[test])
    out = [f"k={args.members} seed={seed} n_fit={args.n_fit} "
           f"frac={args.calibration_fraction if new else 0.0} fit {took:.1f}s "
           f"MAE {np.abs(mean - y[test]).mean():.4f}"]
    for level in (0.8, 0.9) if new else (0.9,):
        lo, hi = model.predict_interval(graphs[test], level).T
        out.append(f"{'cov' if new else 'oldcov'}{level} "
                   f"{np.mean((y[test] >= lo) & (y[test] <= hi)):.3f} "
                   f"width {np.mean(hi - lo):.3f} max/span {np.max(hi - lo) / np.ptp(y[fit]):.2f}")
    print(" ".join(out), flush=True)
