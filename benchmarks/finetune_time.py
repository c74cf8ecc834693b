"""One default fine-tune from a fresh process: the cost a user pays, imports included.

Examples
--------
python benchmarks/finetune_time.py                   # float32, one thread, trial 0
python benchmarks/finetune_time.py --threads 2 --conv-dtype auto

``TransferCGCNNRegressor("mp-formation-energy", conv_dtype=...)`` with its
default parameters is fitted on the 625 crystals of trial 0 of the 500-K_VRH
protocol (``repeated_splits(n, 500, 10, random_state=0)``, as
``benchmarks/finetune_defaults.py``) and scored on its 125 test crystals. The
graphs come from the benchmark cache (featurizing 2,591 crystals takes about
a second more). Prints wall and CPU seconds from the start of the process
(``time.process_time`` covers imports), and the test MAE.
"""

import time

T0 = time.perf_counter()

import argparse  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from finetune_defaults import load_kvrh  # noqa: E402

from skcgcnn import TransferCGCNNRegressor  # noqa: E402
from skcgcnn.stats import repeated_splits  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--conv-dtype", default="float32", choices=["auto", "float32", "bfloat16"])
    p.add_argument("--trial", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    graphs, y = load_kvrh()
    train, val, test = repeated_splits(len(y), 500, 10, random_state=0)[args.trial]
    fit = np.concatenate([train, val])
    t_ready, c_ready = time.perf_counter() - T0, time.process_time()
    model = TransferCGCNNRegressor(conv_dtype=args.conv_dtype, random_state=0)
    model.fit(graphs[fit], y[fit])
    mae = float(np.abs(model.predict(graphs[test]) - y[test]).mean())
    wall, cpu = time.perf_counter() - T0, time.process_time()
    print(f"trial {args.trial}, conv_dtype={args.conv_dtype} "
          f"({model.module_.conv_dtype}), {args.threads} thread(s): test MAE {mae:.4f}; "
          f"{wall:.1f} s wall, {cpu:.1f} s CPU from process start "
          f"(imports and data {t_ready:.1f} s wall, {c_ready:.1f} s CPU; "
          f"load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
