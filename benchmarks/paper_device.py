"""Run paper.py's CGCNN fits of a stage on a GPU machine that has neither ../shared nor pymatgen.

The learning curve of 500-NM-E_g at 1,000, 5,000 and 10,000 crystals is about
14 CPU hours; on a lent GPU machine the same fits run as parallel worker
processes that share the GPU. That machine gets only the repository, so the
graphs travel in a compact file made here, and the results come back as a CSV
merged into ``benchmarks/results/``::

    python benchmarks/paper_device.py export 500-NM-E_g .devdata/500-NM-E_g.npz
    # there (a GPU machine), CUDA MPS first so that the workers' kernels overlap:
    nvidia-cuda-mps-control -d
    python benchmarks/paper_device.py run .devdata/500-NM-E_g.npz $OUT/rows.csv \\
        --stage curves --device cuda --workers 14
    # back here:
    python benchmarks/paper_device.py merge 500-NM-E_g rows.csv

The splits, models and fit settings are paper.py's (``paper.cgcnn_models``,
``repeated_splits(..., random_state=0)``); only the device differs. Fits
already in ``benchmarks/results/<target>.csv`` are skipped, and each finished
fit is written to the output CSV at once, so a run cut short keeps its rows.
Fits start smallest training set first, and a fit that cannot end before
``--deadline`` (estimated from the slowest fit so far per training crystal) is
not started.

Measured on one H200 with 14 workers under MPS (500-NM-E_g, paper.py's
settings): 33 s per fit at 1,000 training crystals, 145-155 s at 5,000 and
235 s at 10,000, about 15 times faster per fit than one CPU core, 14 at once.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(__file__))
import paper  # noqa: E402

from skcgcnn.graph import CrystalGraph, as_graph_array  # noqa: E402
from skcgcnn.stats import RESULT_COLUMNS, _fit_one, _key, _read_results, _write_results  # noqa: E402


# ------------------------------------------------------------- the graph file
def export(target, path):
    """Write the target's graphs, targets and element properties to one compressed file."""
    from skcgcnn.features import MAX_Z, _raw_properties

    graphs, y = paper.load_target(target)
    n_atoms = np.array([g.n_atoms for g in graphs], dtype=np.int32)
    counts = np.concatenate([np.bincount(g.centers, minlength=g.n_atoms) for g in graphs])
    neighbors = np.concatenate([g.neighbors for g in graphs])
    if counts.max() > 255 or neighbors.max() >= 2**15:
        raise ValueError("graphs too large for the compact format (uint8 counts, int16 indices)")
    arrays = dict(
        target=np.array(target), y=np.asarray(y, float), n_atoms=n_atoms,
        numbers=np.concatenate([g.numbers for g in graphs]).astype(np.uint8),
        counts=counts.astype(np.uint8), neighbors=neighbors.astype(np.int16),
        distances=np.concatenate([g.distances for g in graphs]),
        settings=np.array([graphs[0].radius, graphs[0].max_num_nbr]),
        element_properties=np.array([_raw_properties(z) for z in range(1, MAX_Z + 1)]))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.part.npz"
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    back, _ = load(path)
    for i, (a, b) in enumerate(zip(graphs, back)):
        if not all(np.array_equal(getattr(a, f), getattr(b, f))
                   for f in ("numbers", "centers", "neighbors", "distances")):
            raise RuntimeError(f"graph {i} does not survive the compact format")
    print(f"{path}: {len(graphs)} graphs, {os.path.getsize(path) / 1e6:.1f} MB")


def load(path):
    """Graphs and targets of an exported file; element properties installed in skcgcnn."""
    import skcgcnn.features as features

    with np.load(path) as f:
        d = {k: f[k] for k in f.files}
    props = d["element_properties"]
    features._raw_properties = lambda z: list(props[z - 1])  # no pymatgen needed
    radius, max_num_nbr = float(d["settings"][0]), int(d["settings"][1])
    atom_end = np.cumsum(d["n_atoms"])
    edge_end = np.cumsum(d["counts"], dtype=np.int64)[atom_end - 1]
    graphs, a0, e0 = [], 0, 0
    for a1, e1 in zip(atom_end, edge_end):
        counts = d["counts"][a0:a1]
        graphs.append(CrystalGraph(
            numbers=d["numbers"][a0:a1].astype(np.int16),
            centers=np.repeat(np.arange(a1 - a0, dtype=np.int32), counts),
            neighbors=d["neighbors"][e0:e1].astype(np.int32),
            distances=d["distances"][e0:e1], radius=radius, max_num_nbr=max_num_nbr))
        a0, e0 = a1, e1
    return as_graph_array(graphs), d["y"]


# -------------------------------------------------------------------- fitting
_WORKER = {}


def _init_worker(path, target, stage, device, fit):
    import torch

    torch.set_num_threads(1)
    graphs, y = load(path)
    models = paper.cgcnn_models(target, stage, fit)
    _WORKER.update(graphs=graphs, y=y, models=models, device=device)


def _fit(trial, name, split):
    w = _WORKER
    train, val, test = split
    fit_idx = np.concatenate([train, val])
    model = w["models"][name]  # a CGCNN, or an ensemble of them
    model.set_params(**{k: w["device"] for k in model.get_params()
                        if k == "device" or k.endswith("__device")})
    return _fit_one(trial, name, model, len(train), w["graphs"][fit_idx], w["y"][fit_idx],
                    w["graphs"][test], w["y"][test])


def jobs(target, stage, n_samples, max_trials=10):
    """(trial, model name, split) of every fit of the stage, smallest training set first."""
    names = list(paper.cgcnn_models(target, stage))
    by_size = paper.stage_splits(target, stage, n_samples, max_trials)
    return [(t, name, split) for n in sorted(by_size) for t, split in enumerate(by_size[n])
            for name in names]


def run(path, out, stage, device, workers, deadline, max_trials, epochs=None):
    """Fit every job not yet in the results, ``workers`` at a time; rows saved to ``out``."""
    start = time.time()
    with np.load(path) as f:
        target, n_samples = str(f["target"]), len(f["y"])
    done = {_key(r) for r in _read_results(paper.RESULTS / f"{paper.slug(target)}.csv")
            .to_dict("records")}
    rows = _read_results(out).to_dict("records")
    done |= {_key(r) for r in rows}
    todo = [j for j in jobs(target, stage, n_samples, max_trials)
            if (j[0], j[1], len(j[2][0])) not in done]
    print(f"{target} {stage}: {len(todo)} fits to do on {device} with {workers} workers",
          flush=True)
    seconds_per_crystal = 0.0  # the slowest finished fit's time per training crystal
    fit = dict(paper.FIT, max_epochs=epochs or paper.FIT["max_epochs"])
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(path, target, stage, device, fit)) as pool:
        running = {}
        while todo or running:
            while todo and len(running) < workers:
                trial, name, split = todo.pop(0)
                left = deadline - (time.time() - start)
                if seconds_per_crystal * len(split[0]) > left:
                    print(f"skipped (would end after the deadline): trial {trial} {name} "
                          f"n_train={len(split[0])}", flush=True)
                    continue
                running[pool.submit(_fit, trial, name, split)] = time.time()
            if not running:
                break
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                running.pop(fut)
                row = fut.result()
                rows.append(row)
                _write_results(pd.DataFrame(rows, columns=RESULT_COLUMNS), out)
                seconds_per_crystal = max(seconds_per_crystal,
                                          row["fit_time_s"] / row["n_train"])
                print(f"{time.time() - start:6.0f} s  trial {row['trial']} {row['model']} "
                      f"n_train={row['n_train']}: test MAE {row['test_mae']:.4f}, "
                      f"fit {row['fit_time_s']:.0f} s", flush=True)


def merge(target, path):
    """Append the rows of ``path`` not yet in ``benchmarks/results/<target>.csv``."""
    dest = paper.RESULTS / f"{paper.slug(target)}.csv"
    have = _read_results(dest)
    keys = {_key(r) for r in have.to_dict("records")}
    new = [r for r in _read_results(path).to_dict("records") if _key(r) not in keys]
    _write_results(pd.concat([have, pd.DataFrame(new, columns=RESULT_COLUMNS)],
                             ignore_index=True), dest)
    print(f"{dest}: {len(new)} rows added")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="write a target's graphs to a compact file")
    e.add_argument("target", choices=list(paper.TARGETS))
    e.add_argument("path")
    r = sub.add_parser("run", help="fit a stage from an exported file")
    r.add_argument("path")
    r.add_argument("out", help="CSV of the finished fits (run_trials' columns)")
    r.add_argument("--stage", default="curves", choices=[s for s in paper.STAGES
                                                         if s != "baselines"])
    r.add_argument("--device", default="cuda")
    r.add_argument("--workers", type=int, default=4)
    r.add_argument("--deadline", type=float, default=float("inf"),
                   help="seconds after which no fit should still be running")
    r.add_argument("--max-trials", type=int, default=10)
    r.add_argument("--epochs", type=int, help="fewer epochs than paper.py's, for a quick check")
    m = sub.add_parser("merge", help="add a run's rows to benchmarks/results/")
    m.add_argument("target", choices=list(paper.TARGETS))
    m.add_argument("path")
    a = p.parse_args(argv)
    if a.command == "export":
        export(a.target, a.path)
    elif a.command == "run":
        run(a.path, a.out, a.stage, a.device, a.workers, a.deadline, a.max_trials, a.epochs)
    else:
        merge(a.target, a.path)


if __name__ == "__main__":
    main()
