"""What ``random_state`` guarantees: the same fit with 1, 2 and again 1 torch thread.

Examples
--------
python benchmarks/thread_reproducibility.py     # writes docs/results/thread_reproducibility.json

Fine-tunes ``TransferCGCNNRegressor("mp-formation-energy")`` with its defaults
(30 epochs of batches of 32, cosine schedule) in float32 and
``random_state=0`` on the first 625 bundled K_VRH crystals (log10 GPa), three
times in this process: with 1 torch thread, with 2, and with 1 again. Records
the validation MAE per epoch, the best epoch, and the largest difference of the
625 predictions from the first run. The same thread count gives bit-identical
results; another one differs in the last bits of the first epoch and more by
the end.
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
    runs, first = [], None
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            est = TransferCGCNNRegressor(conv_dtype="float32", random_state=0).fit(graphs, y)
            pred = est.predict(graphs)
            first = pred if first is None else first
            losses = [float(v) for v in est.history[:, "valid_loss"]]
            runs.append({"threads": threads, "valid_loss_per_epoch": losses,
                         "best_epoch": int(np.argmin(losses)) + 1,
                         "best_valid_loss": min(losses),
                         "max_abs_prediction_difference_log10_gpa":
                             float(np.abs(pred - first).max())})
            print(threads, runs[-1]["best_epoch"], runs[-1]["best_valid_loss"],
                  runs[-1]["max_abs_prediction_difference_log10_gpa"], flush=True)
    finally:
        torch.set_num_threads(before)
    save_json({"command": "python benchmarks/thread_reproducibility.py",
               "data": "first 625 crystals of skcgcnn.datasets.load_mp_elasticity(), log10 K_VRH",
               "estimator": "TransferCGCNNRegressor(conv_dtype='float32', random_state=0)",
               "valid_loss": "MAE of the standardised target on the estimator's own 20 % "
                             "validation split, per epoch",
               "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
               "runs": runs}, OUT)


if __name__ == "__main__":
    main()
