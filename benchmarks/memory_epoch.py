"""Peak resident memory within one big training epoch, with and without releases after batches.

Examples
--------
python benchmarks/memory_epoch.py --n 10000 20000 31737            # the default only
python benchmarks/memory_epoch.py --n 10000 --modes default epoch-only
python benchmarks/memory_epoch.py --modes default small-caches    # side by side

Each run is a fresh process (one thread): ``--n`` crystals drawn at random
(seed 0) from the cached graphs of ``mp_crystals_36k.json.gz`` (set
``SKCGCNN_CACHE``), the rest of the table and graphs freed and trimmed, then
one epoch of ``CGCNNRegressor(batch_size=256, validation_fraction=None)``
(``--conv-dtype``, default ``auto``). The resident memory is read after every batch; the
peak, the value at the start and at the end, and the CPU seconds of the fit
are printed as one JSON line per run. Modes: ``default``, the estimators'
``ReleaseMemory()`` (a release after a training batch once the heap grew by
1 GiB, and between epochs); ``epoch-only``, ``ReleaseMemory(batch_threshold_mib=None)``
(releases between epochs only, as before); ``small-caches``, the default with
oneDNN's kernel caches bounded (``limit_onednn_caches()``, as ``pretrain`` does; since
``CGCNNRegressor.fit`` bounds them itself from 10,000 crystals, the same as ``default`` there);
``glibc``, the default with glibc's memory settings as they come
(``ReleaseMemory(keep_freed_mib=None)``, as before freed memory was kept for the
next batch).
An ``epoch-only`` run of 31,737 crystals peaks at about 7 GiB: mind the machine's
memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def run(mode, n, conv_dtype="auto"):
    import gc

    import numpy as np
    import torch
    from skorch.callbacks import Callback

    import skcgcnn.callbacks as callbacks
    from common import MP_CRYSTALS, load_table_and_graphs
    from skcgcnn import CGCNNRegressor

    torch.set_num_threads(1)
    if mode == "epoch-only":  # the estimators build ReleaseMemory() with its defaults
        callbacks.ReleaseMemory.__init__.__defaults__ = (256, None, 1024)
    if mode == "glibc":  # glibc's own mmap and trim thresholds, as before keep_freed_mib
        callbacks.ReleaseMemory.__init__.__defaults__ = (256, 1024, None)
    if mode == "small-caches":  # before the first oneDNN operation, as pretrain() does
        callbacks.limit_onednn_caches()
    table, graphs = load_table_and_graphs(MP_CRYSTALS)
    rows = np.random.RandomState(0).permutation(len(graphs))[:n]
    y = table["formation_energy_per_atom"].to_numpy(float)[rows]
    X = graphs[rows]
    del table, graphs
    gc.collect()
    trim = callbacks._malloc_trim()
    if trim is not None:
        trim(0)

    class Peak(Callback):
        def on_train_begin(self, net, **kwargs):
            self.start = self.peak = callbacks._rss_mib()

        def on_batch_end(self, net, **kwargs):  # after release_memory: callbacks run in order
            self.peak = max(self.peak, callbacks._rss_mib())

    peak = Peak()
    net = CGCNNRegressor(max_epochs=1, batch_size=256, validation_fraction=None, random_state=0,
                         conv_dtype=conv_dtype, callbacks=[("peak", peak)])
    c0 = time.process_time()
    net.fit(X, y)
    return dict(mode=mode, n=n, conv_dtype=conv_dtype, start_mib=round(peak.start),
                peak_mib=round(peak.peak), end_mib=round(callbacks._rss_mib()),
                cpu_s=round(time.process_time() - c0, 1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[10000, 20000, 31737])
    p.add_argument("--modes", nargs="+", default=["default"],
                   choices=["default", "epoch-only", "small-caches", "glibc"])
    p.add_argument("--conv-dtype", nargs="+", default=["auto"],
                   choices=["auto", "float32", "bfloat16"])
    p.add_argument("--run", nargs=3, help=argparse.SUPPRESS)  # one run, in a child
    args = p.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if args.run:
        print(json.dumps(run(args.run[0], int(args.run[1]), args.run[2])))
        return
    for n in args.n:
        for conv_dtype in args.conv_dtype:
            for mode in args.modes:
                out = subprocess.run([sys.executable, __file__, "--run", mode, str(n), conv_dtype],
                                     check=True, capture_output=True, text=True).stdout
                print(out.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
