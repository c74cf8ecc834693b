"""End to end on a CGCNN folder: skcgcnn against cgcnn2, side by side.

Examples
--------
pip install --no-deps cgcnn2==0.6.0       # the maintained CGCNN package (not a dependency)
python benchmarks/end_to_end.py            # 2,000 CIFs, 20 epochs
python benchmarks/end_to_end.py --n 500 --epochs 5 --json e2e.json

The script writes a folder in the original CGCNN layout (``id_prop.csv`` with
formation energies and one CIF per crystal; ``--n`` crystals drawn at random,
seed 0, from ``../shared/data/mp_crystals_36k.json.gz``) under
``benchmarks/cache/``, plus the ``atom_init.json`` cgcnn2 needs (its wheel ships
none; any 92-long vectors time the same). Then, one after the other on the
same folder, each in a fresh process with the same torch threads:

skcgcnn
    ``load_cgcnn_folder``, ``CrystalGraphTransformer(n_jobs=2)``, and
    ``CGCNNRegressor(max_epochs=E, conv_dtype=...)`` fitted on 90 % of the crystals, of which it
    holds out 1/9 to pick the best epoch (80 : 10 split), then predicting the
    last 10 %; once per ``--conv-dtype`` (by default ``float32`` forced, then
    ``auto``, the default), each side by side with the one cgcnn2 run; with
    ``--keep-freed-mib 1024 none``, each also with glibc's memory settings left
    as they come (``callbacks__release_memory__keep_freed_mib=None``, as before
    ``ReleaseMemory`` kept freed memory for the next batch).
cgcnn2
    ``cgcnn-tr --full-set DIR -trr 0.8 -vr 0.1 -tr 0.1 -e E`` (Adam, MSE; it
    featurizes every crystal once, caches in memory, trains, tests).

The figure is the wall time of each whole process, imports included.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import CACHE, MP_CRYSTALS, load_crystals, machine_info, write_json  # noqa: E402

from skcgcnn.model import resolve_conv_dtype  # noqa: E402

SKCGCNN_RUN = """
import sys, time, numpy as np, torch
torch.set_num_threads({threads})
from skcgcnn import CGCNNRegressor, CrystalGraphTransformer
from skcgcnn.datasets import load_cgcnn_folder
t0 = time.perf_counter()
ids, paths, y = load_cgcnn_folder({root!r})
graphs = CrystalGraphTransformer(n_jobs=2).transform(paths)
t1 = time.perf_counter()
perm = np.random.RandomState(0).permutation(len(y))
n_fit = int(0.9 * len(y))
fit, test = perm[:n_fit], perm[n_fit:]
net = CGCNNRegressor(max_epochs={epochs}, validation_fraction=1 / 9, random_state=0,
                     conv_dtype={conv_dtype!r}, callbacks__release_memory__keep_freed_mib={keep})
net.fit(graphs[fit], y[fit])
mae = float(np.abs(net.predict(graphs[test]) - y[test]).mean())
print("RESULT", t1 - t0, time.perf_counter() - t1, mae)
"""


def write_folder(root, n, seed=0):
    """A CGCNN-layout folder of ``n`` random crystals of the 36k file."""
    root = Path(root)
    if (root / "id_prop.csv").is_file() and len((root / "id_prop.csv").read_text().split()) == n:
        return root
    frame = load_crystals(None)
    pick = np.sort(np.random.RandomState(seed).choice(len(frame), n, replace=False))
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=".tmp-"))
    rows = []
    for i in pick:
        mid = frame["material_id"].iloc[i]
        frame["structure"].iloc[i].to(filename=str(tmp / f"{mid}.cif"))
        rows.append(f"{mid},{frame['formation_energy_per_atom'].iloc[i]}")
    (tmp / "id_prop.csv").write_text("\n".join(rows) + "\n")
    vec = np.random.RandomState(0).rand(92).round(4).tolist()
    (tmp / "atom_init.json").write_text(json.dumps({str(z): vec for z in range(1, 101)}))
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return root


def run(cmd, cwd, threads):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(f"{cmd[0]} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return wall, out.stdout + out.stderr


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--conv-dtype", nargs="+", default=["float32", "auto"],
                   choices=["auto", "float32", "bfloat16"],
                   help="skcgcnn's conv_dtype, one fresh process each (default: float32 "
                        "forced, then auto, the estimator's default)")
    p.add_argument("--keep-freed-mib", nargs="+", default=["1024"], metavar="MIB",
                   help="ReleaseMemory's keep_freed_mib, one fresh process each; 'none' "
                        "leaves glibc's settings as they come (default: 1024, the estimators')")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    CACHE.mkdir(parents=True, exist_ok=True)
    root = write_folder(CACHE / f"cgcnn_folder_{args.n}", args.n)
    work = tempfile.mkdtemp()  # cgcnn2 writes output_<pid>/ into its working directory

    paths = {}
    for conv_dtype in args.conv_dtype:
        for keep in args.keep_freed_mib:
            keep = None if keep.lower() == "none" else float(keep)
            key = conv_dtype if keep == 1024 else f"{conv_dtype}, keep_freed_mib={keep}"
            code = SKCGCNN_RUN.format(threads=args.threads, root=str(root), epochs=args.epochs,
                                      conv_dtype=conv_dtype, keep=keep)
            sk_wall, sk_out = run([sys.executable, "-c", code], work, args.threads)
            feat_s, fit_s, sk_mae = map(float, sk_out.split("RESULT")[1].split()[:3])
            paths[key] = {"conv_dtype_used": resolve_conv_dtype(conv_dtype),
                          "keep_freed_mib": keep, "skcgcnn_wall_s": sk_wall,
                          "skcgcnn_featurize_s": feat_s, "skcgcnn_fit_predict_s": fit_s,
                          "skcgcnn_test_mae": sk_mae}
            print(f"skcgcnn, {key} ({resolve_conv_dtype(conv_dtype)}): "
                  f"{sk_wall:.1f} s (featurize {feat_s:.1f} s, fit+predict {fit_s:.1f} s), "
                  f"test MAE {sk_mae:.3f} eV/atom", flush=True)

    cg = shutil.which("cgcnn-tr")
    if cg is None:
        sys.exit("cgcnn-tr not found: pip install --no-deps cgcnn2==0.6.0")
    cg_wall, cg_out = run([cg, "--full-set", str(root), "-trr", "0.8", "-vr", "0.1", "-tr", "0.1",
                           "-e", str(args.epochs), "-j", "0", "--disable-cuda"], work, args.threads)
    print(f"cgcnn2:  {cg_wall:.1f} s", flush=True)
    shutil.rmtree(work, ignore_errors=True)
    for key, path in paths.items():
        path["speedup"] = cg_wall / path["skcgcnn_wall_s"]
        print(f"skcgcnn, {key} ({path['conv_dtype_used']}), is "
              f"{path['speedup']:.1f}x faster end to end")
    first = next(iter(paths))  # under the keys of earlier versions of this script
    result = {"n_crystals": args.n, "epochs": args.epochs, "threads": args.threads,
              "conv_dtype": first, **paths[first], "paths": paths,
              "cgcnn2_wall_s": cg_wall, "machine": machine_info()}
    if args.json:
        write_json(result, args.json)
    return result


if __name__ == "__main__":
    main()
