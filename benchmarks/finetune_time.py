"""One default fine-tune from a fresh process: the cost a user pays, imports included.

Examples
--------
python benchmarks/finetune_time.py                   # float32, one thread, trial 0
python benchmarks/finetune_time.py --threads 2 --conv-dtype auto
python benchmarks/finetune_time.py --mp 3000       # 3,000 (+750) MP crystals, not K_VRH

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
from finetune_defaults import load_modulus  # noqa: E402

from skcgcnn import TransferCGCNNRegressor  # noqa: E402
from skcgcnn.stats import repeated_splits  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--conv-dtype", default="float32", choices=["auto", "float32", "bfloat16"])
    p.add_argument("--trial", type=int, default=0)
    p.add_argument("--mp", type=int, default=None, metavar="N_TRAIN",
                   help="instead of K_VRH: formation energies of N_TRAIN Materials Project "
                        "non-metals (+ 25 %% for validation, 1,000 others for testing), "
                        "fine-tuned from mp-band-gap-nm as the protocol's NM-dE_f")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pretrained = "mp-formation-energy"
    if args.mp:
        from common import MP_CRYSTALS, load_table_and_graphs, nm_mask

        table, graphs = load_table_and_graphs(MP_CRYSTALS)
        keep = np.flatnonzero(nm_mask(table))
        graphs, y = graphs[keep], table["formation_energy_per_atom"].to_numpy(float)[keep]
        perm = np.random.RandomState(args.trial).permutation(len(y))
        n_fit = args.mp + args.mp // 4
        fit, test = perm[:n_fit], perm[n_fit:n_fit + 1000]
        pretrained = "mp-band-gap-nm"
    else:
        graphs, y = load_modulus()
        train, val, test = repeated_splits(len(y), 500, 10, random_state=0)[args.trial]
        fit = np.concatenate([train, val])
    t_ready, c_ready = time.perf_counter() - T0, time.process_time()
    model = TransferCGCNNRegressor(pretrained, conv_dtype=args.conv_dtype, random_state=0,
                                   validation_fraction=0.2)  # the former defaults measured
    model.fit(graphs[fit], y[fit])
    mae = float(np.abs(model.predict(graphs[test]) - y[test]).mean())
    wall, cpu = time.perf_counter() - T0, time.process_time()
    print(f"{len(fit)} crystals fitted ({pretrained}), trial {args.trial}, conv_dtype={args.conv_dtype} "
          f"({model.module_.conv_dtype}), {args.threads} thread(s): test MAE {mae:.4f}; "
          f"{wall:.1f} s wall, {cpu:.1f} s CPU from process start "
          f"(imports and data {t_ready:.1f} s wall, {c_ready:.1f} s CPU; "
          f"load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
