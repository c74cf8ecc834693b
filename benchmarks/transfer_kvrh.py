"""500-K_VRH: TL-CGCNN against CGCNN from scratch, configurations chosen on validation.

Examples
--------
python benchmarks/transfer_kvrh.py                    # 3 splits, every configuration below
python benchmarks/transfer_kvrh.py --splits 5 --threads 1

Each split draws 625 crystals of ``../shared/data/mp_elasticity_2591.json.gz``
for fitting (the estimator holds out 125 of them, ``validation_fraction=0.2``,
to pick its best epoch: the paper's 500 + 125) and 500 other crystals for the
test; the target is log10 K_VRH (GPa). Every configuration of each model is
fitted on every split; per split and model, the configuration with the lowest
validation MAE is the one whose test MAE counts, so the test crystals choose
nothing. Rows are appended to ``--csv`` as they finish (rerunning resumes).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import MP_ELASTICITY, ROOT, load_table_and_graphs  # noqa: E402

from skcgcnn import CGCNNRegressor, TransferCGCNNRegressor  # noqa: E402
from skcgcnn.io import atomic_write_bytes  # noqa: E402

#: name: (model family, estimator class, parameters)
CONFIGS = {
    "TL lr=0.005": ("TL-CGCNN", TransferCGCNNRegressor, dict(lr=0.005)),
    "TL lr=0.01": ("TL-CGCNN", TransferCGCNNRegressor, dict(lr=0.01)),
    "TL lr=0.002": ("TL-CGCNN", TransferCGCNNRegressor, dict(lr=0.002)),
    "TL lr=0.005 freeze=embedding": ("TL-CGCNN", TransferCGCNNRegressor,
                                     dict(lr=0.005, freeze="embedding")),
    "scratch lr=0.01": ("CGCNN", CGCNNRegressor, dict(lr=0.01)),
    "scratch lr=0.005": ("CGCNN", CGCNNRegressor, dict(lr=0.005)),
    "scratch lr=0.02": ("CGCNN", CGCNNRegressor, dict(lr=0.02)),
}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--splits", type=int, default=3)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--pretrained", default="mp-formation-energy")
    p.add_argument("--conv-dtype", default="bfloat16", choices=["float32", "bfloat16"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--csv", default=str(ROOT / "docs" / "results" / "transfer_kvrh.csv"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    table, graphs = load_table_and_graphs(MP_ELASTICITY)
    y = np.log10(table["K_VRH"].to_numpy(float))
    done = pd.read_csv(args.csv) if os.path.isfile(args.csv) else pd.DataFrame()
    rows = done.to_dict("records")
    common = dict(max_epochs=args.epochs, lr_decay_epoch=args.epochs // 2, lr_schedule="step",
                  batch_size=args.batch_size, conv_dtype=args.conv_dtype)
    for split in range(args.splits):
        idx = np.random.RandomState(split).permutation(len(y))
        fit, test = idx[:625], idx[625:1125]
        for name, (family, cls, params) in CONFIGS.items():
            if any(r["split"] == split and r["config"] == name for r in rows):
                continue
            kw = dict(common, random_state=split, **params)
            if cls is TransferCGCNNRegressor:
                kw["pretrained"] = args.pretrained
            t0 = time.time()
            model = cls(**kw).fit(graphs[fit], y[fit])
            rows.append({
                "split": split, "config": name, "model": family,
                "valid_mae": float(np.nanmin(model.history[:, "valid_loss"])
                                   * model.module_.target_scale.item()),
                "test_mae": float(np.abs(model.predict(graphs[test]) - y[test]).mean()),
                "fit_s": round(time.time() - t0, 1),
            })
            print(rows[-1], flush=True)
            atomic_write_bytes(args.csv, pd.DataFrame(rows).to_csv(index=False).encode())

    results = pd.DataFrame(rows)
    print("\nevery configuration (mean over splits, log10 GPa):")
    print(results.groupby("config")[["valid_mae", "test_mae"]].mean().round(4).to_string())
    best = results.loc[results.groupby(["split", "model"])["valid_mae"].idxmin()]
    print("\nchosen on validation, per split:")
    print(best[["split", "model", "config", "valid_mae", "test_mae"]].round(4).to_string(index=False))
    summary = best.groupby("model")["test_mae"].agg(["mean", "std", "count"])
    print("\ntest MAE of the chosen configurations (log10 GPa):")
    print(summary.round(4).to_string())
    if len(best["split"].unique()) > 1:
        from scipy.stats import ttest_rel

        pivot = best.pivot(index="split", columns="model", values="test_mae").dropna()
        t, pval = ttest_rel(pivot["TL-CGCNN"], pivot["CGCNN"])
        print(f"paired t-test TL-CGCNN vs CGCNN over {len(pivot)} splits: t = {t:.2f}, "
              f"p = {pval:.3g}")
    return results


if __name__ == "__main__":
    main()
