"""Seconds and minor page faults of one float32 training step, glibc as it comes vs kept.

Examples
--------
SKCGCNN_CACHE=benchmarks/cache python benchmarks/page_faults.py --threads 2 \
    --json docs/results/page_faults.json

One step (forward, L1 loss, backward, SGD update) of the default ``CGCNN``
network in float32 on one batch of 256 random Materials Project crystals
(``mp_crystals_36k.json.gz``, seed 0), repeated: ``--warmup`` steps, then
``--steps`` measured ones. Each mode runs in a fresh process, because glibc's
settings are process-wide: ``glibc`` leaves them as they come (blocks above
32 MiB are ``mmap``-ed and returned on free, so every large tensor of every step
is faulted in and zeroed again); ``keep-freed`` sets them as the estimators'
``ReleaseMemory`` does at the start of training
(``skcgcnn.callbacks._keep_freed_memory(1024)``). Minor page faults come from
``getrusage`` (``ru_minflt``), per measured step; wall and CPU seconds per step
too. Wall times depend on what else runs on the machine; the faults do not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this skcgcnn


def one_mode(mode, threads, warmup, steps, batch_size):
    import numpy as np
    import torch

    from common import MP_CRYSTALS, load_table_and_graphs

    from skcgcnn.callbacks import _keep_freed_memory
    from skcgcnn.data import collate_graphs
    from skcgcnn.model import CGCNN

    if mode == "keep-freed":
        _keep_freed_memory(1024)
    torch.set_num_threads(threads)
    table, graphs = load_table_and_graphs(MP_CRYSTALS, n_jobs=1)
    rows = np.random.RandomState(0).choice(len(graphs), batch_size, replace=False)
    X, y = collate_graphs([(graphs[i], 0.0) for i in rows])
    torch.manual_seed(0)
    model = CGCNN(conv_dtype="float32").train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        opt.zero_grad()
        loss = torch.nn.functional.l1_loss(model(**X), y)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return {"mode": mode, "threads": threads, "atoms": int(X["numbers"].shape[0]),
            "edges": int(X["centers"].shape[0]), "steps": steps,
            "s_per_step": wall / steps, "cpu_s_per_step": cpu / steps,
            "minor_faults_per_step": faults / steps}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", default=None)
    p.add_argument("--mode", choices=["glibc", "keep-freed"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.mode:  # the child process of one mode
        print(json.dumps(one_mode(args.mode, args.threads, args.warmup, args.steps,
                                  args.batch_size)))
        return
    results = []
    for mode in ("glibc", "keep-freed", "glibc", "keep-freed"):
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--threads",
                              str(args.threads), "--warmup", str(args.warmup), "--steps",
                              str(args.steps), "--batch-size", str(args.batch_size)],
                             capture_output=True, text=True, check=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(results[-1], flush=True)
    if args.json:
        from skcgcnn.io import save_json

        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
        save_json({"command": " ".join(["python", "benchmarks/page_faults.py", *sys.argv[1:]]),
                   "machine": platform.processor() or platform.machine(),
                   "cpu_count": os.cpu_count(), "load_average_after": load,
                   "results": results}, args.json)


if __name__ == "__main__":
    main()
