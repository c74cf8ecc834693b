"""Resident memory and speed over epochs: glibc heap trimming against its alternatives.

Examples
--------
python benchmarks/memory.py                          # 3,000 crystals, 6 epochs, 1 thread
python benchmarks/memory.py --json docs/results/memory.json

Batches of crystal graphs differ in size, so glibc's heap fragments and a long
run's resident memory grows epoch after epoch. Three ways to train the same
``CGCNNRegressor(batch_size=256)`` on ``--n`` crystals drawn at random (seed 0)
from ``../shared/data/mp_crystals_36k.json.gz`` (formation energies), each in
its own fresh process, one after the other:

- ``none``: glibc as it comes (``callbacks__release_memory=None``);
- ``mmap``: allocations above 64 kB served by mmap
  (``mallopt(M_MMAP_THRESHOLD, 65536)``, i.e. ``MALLOC_MMAP_THRESHOLD_=65536``),
  what ``benchmarks/pretrain.py`` did before ``ReleaseMemory`` existed;
- ``release``: the estimators' default, ``ReleaseMemory`` (``malloc_trim(0)``
  after an epoch in which resident memory grew by more than 256 MiB).

Reported per epoch: resident memory (MiB) at the end, and CPU seconds of the
process (``time.process_time``; on a shared machine a steadier measure of the
cost than wall-clock seconds, which are recorded too).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys

MODES = ("none", "mmap", "release")


def run_mode(mode, n, epochs, threads):
    """Train in this process under ``mode``; per-epoch RSS, CPU and wall seconds."""
    if mode == "mmap":
        ctypes.CDLL("libc.so.6").mallopt(-3, 65536)  # -3: M_MMAP_THRESHOLD
    import numpy as np
    import torch
    from skorch.callbacks import Callback

    from common import MP_CRYSTALS, load_table_and_graphs, rss_mib
    from skcgcnn import CGCNNRegressor
    from train_speed import EpochCPUTime

    torch.set_num_threads(threads)

    class RecordRSS(Callback):
        def on_epoch_end(self, net, **kwargs):  # after release_memory: callbacks run in order
            net.history.record("rss_mib", rss_mib())

    table, graphs = load_table_and_graphs(MP_CRYSTALS)
    rows = np.random.RandomState(0).permutation(len(graphs))[:n]
    y = table["formation_energy_per_atom"].to_numpy(float)[rows]
    start = rss_mib()
    extra = {"callbacks__release_memory": None} if mode != "release" else {}
    net = CGCNNRegressor(max_epochs=epochs, batch_size=256, random_state=0, verbose=0,
                         callbacks=[("cpu_time", EpochCPUTime()), ("rss", RecordRSS())],
                         **extra)
    net.fit(graphs[rows], y)
    h = net.history_
    return {"mode": mode, "rss_start_mib": round(start),
            "rss_mib": [round(v) for v in h[:, "rss_mib"]],
            "cpu_s": [round(v, 2) for v in h[:, "cpu_dur"]],
            "wall_s": [round(v, 2) for v in h[:, "dur"]]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=3000, help="crystals")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)  # one run, in a child
    args = p.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.n, args.epochs, args.threads)))
        return
    from common import machine_info, markdown_table, write_json

    results = []
    for mode in MODES:
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--n", str(args.n),
                              "--epochs", str(args.epochs), "--threads", str(args.threads)],
                             check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    rows = [[r["mode"], r["rss_start_mib"], r["rss_mib"][0], r["rss_mib"][-1],
             r["rss_mib"][-1] - r["rss_mib"][0],
             round(sum(r["cpu_s"][1:]) / (args.epochs - 1), 2)]
            for r in results]
    print(markdown_table(["mode", "RSS before fit (MiB)", "after epoch 1",
                          f"after epoch {args.epochs}", "growth after epoch 1",
                          "CPU s per epoch (2 on)"], rows))
    if args.json:
        write_json({"settings": vars(args), "machine": machine_info(), "results": results}, args.json)


if __name__ == "__main__":
    main()
