"""
Fine-tuning versus training from scratch on 500 bulk moduli
===========================================================

The paper's 500-K_VRH experiment on ``../shared/data/mp_elasticity_2591.json.gz``:
500 training and 125 validation crystals (the estimator holds out the 125
itself, ``validation_fraction=0.2`` of 625) and 500 test crystals that neither
model sees, repeated over a few random splits. The target is log10 of the
Voigt-Reuss-Hill bulk modulus in GPa.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from skcgcnn import CGCNNRegressor, CrystalGraphTransformer, TransferCGCNNRegressor
from skcgcnn.datasets import load_matbench_json

parser = argparse.ArgumentParser(description="TL-CGCNN vs CGCNN on 500 K_VRH crystals")
parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"
                                          / "mp_elasticity_2591.json.gz"))
parser.add_argument("--epochs", type=int, default=200)
parser.add_argument("--splits", type=int, default=3)
parser.add_argument("--pretrained", default="mp-formation-energy")
parser.add_argument("--conv-dtype", default="float32", choices=["float32", "bfloat16"],
                    help="bfloat16 trains about 2.5x faster on CPUs that support it")
args = parser.parse_args()
if not Path(args.data).is_file():
    sys.exit(f"data file not found: {args.data} (pass --data PATH)")

frame = load_matbench_json(args.data)
graphs = CrystalGraphTransformer(n_jobs=2).transform(frame["structure"])
y = np.log10(frame["K_VRH"].to_numpy())
common = dict(max_epochs=args.epochs, lr_decay_epoch=args.epochs // 2, batch_size=64,
              conv_dtype=args.conv_dtype, lr_schedule="step")
rows = []
for seed in range(args.splits):
    idx = np.random.RandomState(seed).permutation(len(y))
    train, test = idx[:625], idx[625:1125]
    for name, model in [
        ("TL-CGCNN", TransferCGCNNRegressor(args.pretrained, lr=0.005, random_state=seed,
                                            **common)),
        ("CGCNN", CGCNNRegressor(random_state=seed, **common)),
    ]:
        t = time.time()
        model.fit(graphs[train], y[train])
        mae = np.abs(model.predict(graphs[test]) - y[test]).mean()
        rows.append((seed, name, mae))
        print(f"split {seed}  {name:9}  test MAE {mae:.4f} log10 GPa  ({time.time() - t:.0f} s)",
              flush=True)
for name in ("TL-CGCNN", "CGCNN"):
    maes = [m for _, n, m in rows if n == name]
    print(f"{name:9} mean test MAE {np.mean(maes):.4f} ({np.std(maes):.4f}) over {len(maes)} splits")
