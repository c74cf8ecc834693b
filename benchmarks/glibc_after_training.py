"""What glibc's allocator settings after training cost the rest of the process.

During training ``ReleaseMemory`` sets glibc (``mallopt``) to keep up to 1 GiB of
freed memory for the next batch; when training ends it must set something back,
and glibc has no getter and turns its dynamic mmap threshold off at the first
``mallopt``. Each candidate runs in a fresh process (glibc's settings belong to
the process), then times numpy code that allocates, touches and frees arrays of
0.5, 4 and 16 MiB 200 times each (ms per array, minor page faults per array) and
measures whether freed memory leaves the process (resident MiB above the start
after one 900 MiB array, and after 100 arrays of 9 MiB, are freed).

Candidates: glibc as it comes (dynamic threshold); a small ``CGCNNRegressor.fit``
first, with this tree's ``ReleaseMemory``; ``mallopt`` to glibc's initial 128 KiB
(fixed); 32 MiB / 64 MiB (the end of glibc's dynamic rule); 1 GiB (what
``ReleaseMemory`` left behind before issue 28).

Example
-------
OMP_NUM_THREADS=1 python benchmarks/glibc_after_training.py --json docs/results/glibc_after_training.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import machine_info, write_json  # noqa: E402

RUN = """
import ctypes, json, os, resource, sys, time
import numpy as np

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

mode = sys.argv[1]
if mode == "after fit":
    from ase.build import bulk
    from skcgcnn import CGCNNRegressor
    X = [bulk("Cu", a=a) for a in np.linspace(3.4, 3.8, 12)]
    CGCNNRegressor(max_epochs=2, batch_size=4, random_state=0).fit(X, np.linspace(0, 1, 12))
elif mode != "glibc as it comes":
    mmap_threshold, trim_threshold = map(int, mode.split("/"))
    libc = ctypes.CDLL(None)
    libc.mallopt(-3, mmap_threshold)
    libc.mallopt(-1, trim_threshold)
out = {}
for size_mib in (0.5, 4, 16):
    faults, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for _ in range(200):
        a = np.ones(int(size_mib * 2**20) // 8)
        a += 1
        del a
    out[f"{size_mib} MiB"] = {
        "ms_per_array": (time.perf_counter() - t0) / 200 * 1e3,
        "faults_per_array": (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / 200}
start = rss_mib()
a = np.ones(900 * 2**20 // 8)
del a
out["rss_after_900_mib_freed"] = rss_mib() - start
arrays = [np.ones(9 * 2**20 // 8) for _ in range(100)]
del arrays
out["rss_after_100x9_mib_freed"] = rss_mib() - start
print(json.dumps(out))
"""

MODES = {"glibc as it comes": "glibc as it comes", "after a small fit (this tree)": "after fit",
         "128 KiB / 128 KiB (glibc's initial values, fixed)": f"{2**17}/{2**17}",
         "32 MiB / 64 MiB (end of glibc's dynamic rule)": f"{2**25}/{2**26}",
         "1 GiB / 1 GiB (left behind before issue 28)": f"{2**30}/{2**30}"}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root}
    result = {}
    for name, mode in MODES.items():
        run = subprocess.run([sys.executable, "-c", RUN, mode], capture_output=True, text=True,
                             env=env, check=True)
        result[name] = json.loads(run.stdout.strip().splitlines()[-1])
        r = result[name]
        print(f"{name}: " + ", ".join(f"{k} {v['ms_per_array']:.3f} ms ({v['faults_per_array']:.0f}"
                                      " faults)" for k, v in r.items() if isinstance(v, dict))
              + f"; resident after freeing 900 MiB +{r['rss_after_900_mib_freed']:.0f} MiB, "
              f"100 x 9 MiB +{r['rss_after_100x9_mib_freed']:.0f} MiB", flush=True)
    if args.json:
        write_json({"candidates": result, "machine": machine_info()}, args.json)
    return result


if __name__ == "__main__":
    main()
