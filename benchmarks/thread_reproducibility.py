"""What ``random_state`` guarantees: the same fit with 1, 2 and again 1 torch thread.

Examples
--------
python benchmarks/thread_reproducibility.py     # writes docs/results/thread_reproducibility.json

Fine-tunes ``TransferCGCNNRegressor("mp-formation-energy")`` with its defaults
(30 epochs of batches of 32, cosine schedule) and ``random_state=0`` on the
first 625 bundled K_VRH crystals (log10 GPa), three times per precision in
this process: with 1 torch thread, with 2, and with 1 again; in float32 and
with ``conv_dtype="auto"`` (bfloat16 on a CPU with bfloat16 instructions).
Records the validation loss per epoch, the best epoch, and the largest
difference of the 625 predictions from the first run of that precision.
"""

from __future__ import annotations

import json
import os
import platform
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from skcgcnn import CrystalGraphTransformer, TransferCGCNNRegressor  # noqa: E402
from skcgcnn.datasets import load_mp_elasticity  # noqa: E402
from skcgcnn.io import save_json  # noqa: E402

OUT = os.path.join(ROOT, "docs", "results", "thread_reproducibility.json")


def main():
    frame = load_mp_elasticity().iloc[:625]
    graphs = CrystalGraphTransformer().transform(list(frame.structure))
    y = np.log10(frame.K_VRH.to_numpy())
    before = torch.get_num_threads()
    runs = []
    try:
        for dtype in ("float32", "auto"):
            first = None
            for threads in (1, 2, 1):
                torch.set_num_threads(threads)
                est = TransferCGCNNRegressor(conv_dtype=dtype, random_state=0).fit(graphs, y)
                pred = est.predict(graphs)
                first = pred if first is None else first
                losses = [float(v) for v in est.history[:, "valid_loss"]]
                runs.append(_row(dtype, est, threads, losses, pred, first))
                print(*runs[-1].values(), flush=True)
    finally:
        torch.set_num_threads(before)
    save_json({"command": "python benchmarks/thread_reproducibility.py",
               "data": "first 625 crystals of skcgcnn.datasets.load_mp_elasticity(), log10 K_VRH",
               "estimator": "TransferCGCNNRegressor(conv_dtype=..., random_state=0)",
               "valid_loss": "MAE of the standardised target on the estimator's own 20 % "
                             "validation split, per epoch",
               "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
               "runs": runs}, OUT)


def _row(dtype, est, threads, losses, pred, first):
    return {"conv_dtype": dtype, "resolved": est.module_.conv_dtype, "threads": threads,
            "best_epoch": int(np.argmin(losses)) + 1, "best_valid_loss": min(losses),
            "max_abs_prediction_difference_log10_gpa": float(np.abs(pred - first).max()),
            "valid_loss_per_epoch": losses}


if __name__ == "__main__":
    main()
