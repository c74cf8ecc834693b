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

The ensembles stage works the same way. ``export --stage ensembles`` keeps only the
crystals of that stage's splits (6,400-6,900 per MP target, 4-5 MB), so that all three
travel together; its rows (``paper.UQ_COLUMNS``) go to
``benchmarks/results/<target>-ensembles.csv`` and the members' predictions to
``<out>.dumps.tar``, rewritten after every fit, which ``merge`` unpacks beside the
others (``paper.dump_path``)::

    python benchmarks/paper_device.py export 500-ΔE_f .devdata/500-dE_f.npz --stage ensembles
    python benchmarks/paper_device.py run .devdata/500-dE_f.npz $OUT/500-dE_f.csv \\
        --stage ensembles --models "CGCNN ensemble of 5" --device cuda --workers 5
    python benchmarks/paper_device.py merge 500-ΔE_f 500-dE_f.csv

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
import io
import multiprocessing
import os
import sys
import tarfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(__file__))
import paper  # noqa: E402

from skcgcnn.graph import CrystalGraph, as_graph_array  # noqa: E402
from skcgcnn.io import atomic_write_bytes  # noqa: E402
from skcgcnn.stats import RESULT_COLUMNS, _fit_one, _key, _read_results, _write_results  # noqa: E402


# ------------------------------------------------------------- the graph file
def export(target, path, stage=None, max_trials=10):
    """Write the target's graphs, targets and element properties to one compressed file:
    of every crystal, or of the crystals that ``stage``'s splits use."""
    from skcgcnn.features import MAX_Z, _raw_properties

    graphs, y = paper.load_target(target)
    n_total, rows = len(y), np.arange(len(y))
    if stage is not None:
        splits = paper.stage_splits(target, stage, n_total, max_trials).values()
        rows = np.unique(np.concatenate([np.concatenate(s) for ss in splits for s in ss]))
        graphs, y = graphs[rows], y[rows]
    n_atoms = np.array([g.n_atoms for g in graphs], dtype=np.int32)
    counts = np.concatenate([np.bincount(g.centers, minlength=g.n_atoms) for g in graphs])
    neighbors = np.concatenate([g.neighbors for g in graphs])
    if counts.max() > 255 or neighbors.max() >= 2**15:
        raise ValueError("graphs too large for the compact format (uint8 counts, int16 indices)")
    arrays = dict(
        target=np.array(target), y=np.asarray(y, float), n_atoms=n_atoms,
        rows=rows, n_total=np.array(n_total),
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


def _crystals(path):
    """Target, the exported crystals' rows in its full set, and that set's size."""
    with np.load(path) as f:
        n = len(f["y"])  # files of every crystal, older ones too, may lack rows
        rows = f["rows"] if "rows" in f.files else np.arange(n)
        return str(f["target"]), rows, int(f["n_total"]) if "n_total" in f.files else n


# -------------------------------------------------------------------- fitting
_WORKER = {}


def _init_worker(path, target, stage, device, fit):
    import torch

    torch.set_num_threads(1)
    graphs, y = load(path)
    models = paper.cgcnn_models(target, stage, fit)
    _WORKER.update(graphs=graphs, y=y, models=models, device=device, target=target,
                   stage=stage)


def _fit(trial, name, split):
    """One row of the results: run_trials' for a stage's fit, or an ensembles-stage row
    (its members' predictions dumped to ``paper.dump_path``)."""
    w = _WORKER
    train, val, test = split
    fit_idx = np.concatenate([train, val])
    model = w["models"][name]  # a CGCNN, or an ensemble of them
    model.set_params(**{k: w["device"] for k in model.get_params()
                        if k == "device" or k.endswith("__device")})
    if w["stage"] == "ensembles":
        return dict(trial=int(trial), model=name, n_train=len(train), **paper.uncertainty_row(
            model, w["graphs"], w["y"], fit_idx, test,
            dump=paper.dump_path(w["target"], name, trial)))
    return _fit_one(trial, name, model, len(train), w["graphs"][fit_idx], w["y"][fit_idx],
                    w["graphs"][test], w["y"][test])


def jobs(target, stage, rows, n_total, max_trials=10, models=None):
    """(trial, model name, split) of every fit of the stage, smallest training set first,
    the split renumbered into the exported crystals ``rows`` (of ``n_total``); only the
    models named in ``models`` where given."""
    every = list(paper.cgcnn_models(target, stage))
    names = [n for n in every if not models or n in models]
    if models and len(names) < len(models):
        raise ValueError(f"no model named {sorted(set(models) - set(names))} in the "
                         f"{stage} stage of {target}; it has {every}")
    by_size = paper.stage_splits(target, stage, n_total, max_trials)
    out = []
    for n in sorted(by_size):
        for t, split in enumerate(by_size[n]):
            pos = [np.searchsorted(rows, idx).clip(max=len(rows) - 1) for idx in split]
            if any(not np.array_equal(rows[p], idx) for p, idx in zip(pos, split)):
                raise ValueError(f"trial {t} at n_train={n} uses crystals that the exported "
                                 f"file lacks; export with --stage {stage}")
            out += [(t, name, tuple(pos)) for name in names]
    return out


def _results_path(target, stage):
    return paper.uq_path(target) if stage == "ensembles" else (
        paper.RESULTS / f"{paper.slug(target)}.csv")


def _write_dumps(rows, target, out):
    """``<out>.dumps.tar``: the dumps of the ensembles rows so far, rewritten atomically."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for r in rows:
            dump = paper.dump_path(target, r["model"], r["trial"])
            if dump.is_file():
                tar.add(dump, arcname=str(dump.relative_to(paper.ROOT)))
    atomic_write_bytes(f"{out}.dumps.tar", buf.getvalue())


def run(path, out, stage, device, workers, deadline, max_trials, epochs=None, models=None):
    """Fit every job not yet in the results, ``workers`` at a time; rows saved to ``out``."""
    start = time.time()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    target, crystal_rows, n_total = _crystals(path)
    done = {_key(r) for r in _read_results(_results_path(target, stage)).to_dict("records")}
    rows = _read_results(out).to_dict("records")
    done |= {_key(r) for r in rows}
    todo = [j for j in jobs(target, stage, crystal_rows, n_total, max_trials, models)
            if (j[0], j[1], len(j[2][0])) not in done]
    print(f"{target} {stage}: {len(todo)} fits to do on {device} with {workers} workers",
          flush=True)
    seconds_per_crystal = 0.0  # the slowest finished fit's time per training crystal
    fit = dict(paper.FIT, max_epochs=epochs or paper.FIT["max_epochs"])
    columns = paper.UQ_COLUMNS if stage == "ensembles" else RESULT_COLUMNS
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
                _write_results(pd.DataFrame(rows, columns=columns), out)
                if stage == "ensembles":
                    _write_dumps(rows, target, out)
                seconds_per_crystal = max(seconds_per_crystal,
                                          row["fit_time_s"] / row["n_train"])
                print(f"{time.time() - start:6.0f} s  trial {row['trial']} {row['model']} "
                      f"n_train={row['n_train']}: test MAE {row['test_mae']:.4f}, "
                      f"fit {row['fit_time_s']:.0f} s", flush=True)


def merge(target, path):
    """Append the rows of ``path`` not yet in ``benchmarks/results/<target>.csv`` (or in
    ``<target>-ensembles.csv``, with the dumps of ``<path>.dumps.tar``, for that stage's)."""
    new = _read_results(path)
    stage = "ensembles" if "coverage_90" in new.columns else None
    dest = _results_path(target, stage)
    have = _read_results(dest)
    keys = {_key(r) for r in have.to_dict("records")}
    new = [r for r in new.to_dict("records") if _key(r) not in keys]
    if not new:
        print(f"{dest}: no rows to add")
        return
    if stage:
        with tarfile.open(f"{path}.dumps.tar") as tar:
            for r in new:
                dump = paper.dump_path(target, r["model"], r["trial"])
                data = tar.extractfile(str(dump.relative_to(paper.ROOT))).read()
                dump.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(dump, data)
    columns = paper.UQ_COLUMNS if stage else RESULT_COLUMNS
    _write_results(pd.concat([have, pd.DataFrame(new, columns=columns)], ignore_index=True),
                   dest)
    print(f"{dest}: {len(new)} rows added")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export", help="write a target's graphs to a compact file")
    e.add_argument("target", choices=list(paper.TARGETS))
    e.add_argument("path")
    e.add_argument("--stage", choices=paper.STAGES,
                   help="only the crystals of this stage's splits (default: every crystal)")
    e.add_argument("--max-trials", type=int, default=10)
    r = sub.add_parser("run", help="fit a stage from an exported file")
    r.add_argument("path")
    r.add_argument("out", help="CSV of the finished fits (run_trials' or paper.UQ_COLUMNS)")
    r.add_argument("--stage", default="curves", choices=[s for s in paper.STAGES
                                                         if s != "baselines"])
    r.add_argument("--device", default="cuda")
    r.add_argument("--workers", type=int, default=4)
    r.add_argument("--deadline", type=float, default=float("inf"),
                   help="seconds after which no fit should still be running")
    r.add_argument("--max-trials", type=int, default=10)
    r.add_argument("--epochs", type=int, help="fewer epochs than paper.py's, for a quick check")
    r.add_argument("--models", nargs="+", metavar="NAME", help="only these rows (exact names)")
    m = sub.add_parser("merge", help="add a run's rows to benchmarks/results/")
    m.add_argument("target", choices=list(paper.TARGETS))
    m.add_argument("path")
    a = p.parse_args(argv)
    if a.command == "export":
        export(a.target, a.path, a.stage, a.max_trials)
    elif a.command == "run":
        run(a.path, a.out, a.stage, a.device, a.workers, a.deadline, a.max_trials, a.epochs,
            a.models)
    else:
        merge(a.target, a.path)


if __name__ == "__main__":
    main()
