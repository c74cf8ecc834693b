"""skcgcnn end to end, two source trees side by side (before and after a change).

The skcgcnn run of ``end_to_end.py`` (load a CGCNN folder, featurize, fit
``CGCNNRegressor``, predict the held-out 10 %), then one more timing: predicting
all crystals with the fitted net in the same process (after ``fit`` has
returned, so with whatever allocator settings ``fit`` leaves behind). Each run
is a fresh process with ``PYTHONPATH`` set to one tree; the two trees alternate
(A B, B A, A B, ...) so that both see the same load on a shared machine. The
figure is the ratio of the medians (new / base) of each timing.

Examples
--------
git -C /work/main archive 70588be | tar -x -C /tmp/base   # the tree before the change
SKCGCNN_CACHE=/work/main/benchmarks/cache python benchmarks/end_to_end_ab.py --base /tmp/base \\
    --n 2000 --epochs 5 --threads 1 --rounds 5 --json docs/results/end_to_end_restore_glibc.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from common import CACHE, machine_info, write_json  # noqa: E402
from end_to_end import SKCGCNN_RUN, write_folder  # noqa: E402

PREDICT_ALL = """
t2 = time.perf_counter()
net.predict(graphs)
print("PREDICT_ALL", time.perf_counter() - t2)
"""

TIMINGS = ("wall_s", "featurize_s", "fit_predict_s", "predict_all_s")


def run_once(tree, code, threads):
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, env=env, capture_output=True,
                         text=True)
    wall = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(f"{tree} failed:\n{out.stderr[-3000:]}")
    text = out.stdout + out.stderr
    feat, fit, mae = map(float, text.split("RESULT")[1].split()[:3])
    predict_all = float(text.split("PREDICT_ALL")[1].split()[0])
    return {"wall_s": wall, "featurize_s": feat, "fit_predict_s": fit,
            "predict_all_s": predict_all, "test_mae": mae}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="source tree before the change")
    p.add_argument("--new", default=str(Path(__file__).resolve().parents[1]),
                   help="source tree after the change (default: this one)")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--conv-dtype", default="float32", choices=["auto", "float32", "bfloat16"])
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    root = write_folder(CACHE / f"cgcnn_folder_{args.n}", args.n)
    code = SKCGCNN_RUN.format(threads=args.threads, root=str(root), epochs=args.epochs,
                              conv_dtype=args.conv_dtype, keep=1024.0) + PREDICT_ALL
    trees = {"base": Path(args.base).resolve(), "new": Path(args.new).resolve()}
    runs = {name: [] for name in trees}
    for r in range(args.rounds):
        for name in (("base", "new") if r % 2 == 0 else ("new", "base")):
            runs[name].append(run_once(trees[name], code, args.threads))
            print(f"round {r + 1} {name}: " + ", ".join(
                f"{k} {runs[name][-1][k]:.2f}" for k in TIMINGS), flush=True)
    medians = {name: {k: statistics.median(run[k] for run in rs) for k in TIMINGS}
               for name, rs in runs.items()}
    ratio = {k: medians["new"][k] / medians["base"][k] for k in TIMINGS}
    print("new / base (medians): " + ", ".join(f"{k} {v:.3f}" for k, v in ratio.items()))
    result = {"n_crystals": args.n, "epochs": args.epochs, "threads": args.threads,
              "conv_dtype": args.conv_dtype, "rounds": args.rounds,
              "trees": {k: str(v) for k, v in trees.items()}, "runs": runs,
              "medians": medians, "ratio_new_over_base": ratio, "machine": machine_info()}
    if args.json:
        write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
