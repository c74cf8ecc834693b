"""Training throughput: skcgcnn's CGCNNRegressor against the original CGCNN pipeline.

Examples
--------
python benchmarks/train_speed.py                       # 5,000 crystals, baseline on 1,000
python benchmarks/train_speed.py --n 2000 --baseline-n 0 --json train_speed.json
python benchmarks/train_speed.py --conv-dtype auto     # only the default path

skcgcnn
    The first ``--n`` crystals of ``../shared/data/mp_crystals_36k.json.gz``
    are featurized once with ``CrystalGraphTransformer`` (timed on its own),
    then ``CGCNNRegressor(batch_size=256, validation_fraction=None,
    max_epochs=3)`` is fitted on the formation energies, once per
    ``--conv-dtype`` (by default ``float32`` forced, then ``auto``, the
    estimators' default: bfloat16 on CPUs with bfloat16 instructions), so
    that both paths are measured side by side with the baseline in one run. Seconds per epoch
    come from skorch's ``net.history[:, "dur"]``; the throughput of epochs 2
    and 3 is the steady state (epoch 1 includes torch's warm-up).
original CGCNN pipeline (re-implemented here; ``--baseline-n 0`` skips it)
    The same network shape (embedding, 3 gated convolutions with h 64, mean
    pooling, 128 hidden) in the original's padded layout, trained by a plain
    loop the way cgcnn/main.py does: a torch ``Dataset`` featurizes each
    crystal in ``__getitem__`` (``common.baseline_featurize``:
    ``get_all_neighbors``, 12 nearest, Gaussian expansion) behind an
    in-memory ``lru_cache`` as in cgcnn/data.py, ``collate_pool`` concatenates
    the padded (n_atoms, 12, 41) neighbour tensors, ``num_workers=0``. Its
    epoch 1 therefore costs what every epoch costs without a cache (or with
    loader workers, whose caches die with them); epochs 2 and 3 run from the
    warm cache. It runs on ``--baseline-n`` crystals drawn at random (seed 0)
    from the N, to keep the benchmark short; the file is not in random order,
    so the first ones would be smaller cells than the average.

Seconds per epoch are wall-clock; CPU seconds per epoch (``time.process_time``,
all threads) are recorded too, since on a shared machine crystals per CPU
second estimate the unloaded single-thread speed better. Peak memory is the process's peak resident set size (``getrusage``) after the
skcgcnn part, before the baseline runs; it includes Python, torch, pymatgen and
the decoded structures. Both parts use the same torch threads (``--threads``).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import numpy as np
import torch
from torch import nn
from skorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, os.path.dirname(__file__))
from common import (MP_CRYSTALS, baseline_featurize, load_crystals, machine_info,  # noqa: E402
                    markdown_table, peak_rss_mib, rss_mib, write_json)

from skcgcnn import CGCNNRegressor, CrystalGraphTransformer  # noqa: E402
from skcgcnn.model import resolve_conv_dtype  # noqa: E402
from skcgcnn.features import element_feature_table  # noqa: E402


class EpochCPUTime(Callback):
    """Record the process CPU seconds of each epoch as ``cpu_dur`` in the history."""

    def on_epoch_begin(self, net, **kwargs):
        self._t0 = time.process_time()

    def on_epoch_end(self, net, **kwargs):
        net.history.record("cpu_dur", time.process_time() - self._t0)


# ------------------------------------------------------- the original pipeline
class OriginalConvLayer(nn.Module):
    """cgcnn/model.py ``ConvLayer``: one linear map of the padded (N, M, 2h + g) tensor."""

    def __init__(self, atom_fea_len, nbr_fea_len):
        super().__init__()
        self.atom_fea_len = atom_fea_len
        self.fc_full = nn.Linear(2 * atom_fea_len + nbr_fea_len, 2 * atom_fea_len)
        self.bn1 = nn.BatchNorm1d(2 * atom_fea_len)
        self.bn2 = nn.BatchNorm1d(atom_fea_len)

    def forward(self, atom_in_fea, nbr_fea, nbr_fea_idx):
        N, M = nbr_fea_idx.shape
        atom_nbr_fea = atom_in_fea[nbr_fea_idx, :]
        total = torch.cat([atom_in_fea.unsqueeze(1).expand(N, M, self.atom_fea_len),
                           atom_nbr_fea, nbr_fea], dim=2)
        total = self.fc_full(total)
        total = self.bn1(total.view(-1, self.atom_fea_len * 2)).view(N, M, self.atom_fea_len * 2)
        nbr_filter, nbr_core = total.chunk(2, dim=2)
        summed = torch.sum(torch.sigmoid(nbr_filter) * nn.functional.softplus(nbr_core), dim=1)
        return nn.functional.softplus(atom_in_fea + self.bn2(summed))


class OriginalCGCNN(nn.Module):
    """cgcnn/model.py ``CrystalGraphConvNet`` (regression), default sizes."""

    def __init__(self, orig_atom_fea_len, nbr_fea_len, atom_fea_len=64, n_conv=3, h_fea_len=128):
        super().__init__()
        self.embedding = nn.Linear(orig_atom_fea_len, atom_fea_len)
        self.convs = nn.ModuleList(OriginalConvLayer(atom_fea_len, nbr_fea_len)
                                   for _ in range(n_conv))
        self.conv_to_fc = nn.Linear(atom_fea_len, h_fea_len)
        self.fc_out = nn.Linear(h_fea_len, 1)

    def forward(self, atom_fea, nbr_fea, nbr_fea_idx, crystal_atom_idx):
        atom_fea = self.embedding(atom_fea)
        for conv in self.convs:
            atom_fea = conv(atom_fea, nbr_fea, nbr_fea_idx)
        crys_fea = torch.cat([torch.mean(atom_fea[idx], dim=0, keepdim=True)
                              for idx in crystal_atom_idx], dim=0)
        crys_fea = nn.functional.softplus(self.conv_to_fc(nn.functional.softplus(crys_fea)))
        return self.fc_out(crys_fea)


class PerCrystalData(Dataset):
    """cgcnn/data.py ``CIFData``: featurize in ``__getitem__``, cached in memory."""

    def __init__(self, structures, y, cache=True):
        self.structures, self.y = structures, y
        self.table = element_feature_table()
        if cache:  # the original decorates __getitem__ with lru_cache(maxsize=None)
            self._item = functools.lru_cache(maxsize=None)(self._item)

    def __len__(self):
        return len(self.structures)

    def __getitem__(self, i):
        return self._item(int(i))

    def _item(self, i):
        atom_fea, nbr_fea, nbr_idx = baseline_featurize(self.structures[i], table=self.table)
        return ((torch.Tensor(atom_fea), torch.Tensor(nbr_fea), torch.LongTensor(nbr_idx)),
                torch.Tensor([float(self.y[i])]))


def collate_pool(dataset_list):
    """cgcnn/data.py ``collate_pool``."""
    atom_fea, nbr_fea, nbr_idx, crystal_atom_idx, target = [], [], [], [], []
    base = 0
    for (a, f, idx), t in dataset_list:
        n = a.shape[0]
        atom_fea.append(a)
        nbr_fea.append(f)
        nbr_idx.append(idx + base)
        crystal_atom_idx.append(torch.LongTensor(np.arange(n) + base))
        target.append(t)
        base += n
    return ((torch.cat(atom_fea), torch.cat(nbr_fea), torch.cat(nbr_idx), crystal_atom_idx),
            torch.stack(target))


def train_original(structures, y, epochs, batch_size, cache=True, seed=0):
    """A plain training loop as in cgcnn/main.py; wall and CPU seconds per epoch."""
    torch.manual_seed(seed)
    y = (y - y.mean()) / y.std()  # the original's Normalizer
    data = PerCrystalData(structures, y, cache=cache)
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, collate_fn=collate_pool,
                        num_workers=0)
    n_fea = element_feature_table().shape[1]
    model = OriginalCGCNN(n_fea, nbr_fea_len=41)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    criterion = nn.L1Loss()
    durations, cpu = [], []
    model.train()
    for _ in range(epochs):
        t0, c0 = time.perf_counter(), time.process_time()
        for inputs, target in loader:
            loss = criterion(model(*inputs), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        durations.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    cached_bytes = 0
    if cache:
        for i in range(len(data)):  # hits the warm cache
            (a, f, idx), _ = data[i]
            cached_bytes += a.nbytes + f.nbytes + idx.nbytes
    return durations, cpu, cached_bytes


def fit_skcgcnn(graphs, y, args, conv_dtype):
    """Fit CGCNNRegressor with ``conv_dtype``; seconds and rates per epoch."""
    n = len(graphs)
    net = CGCNNRegressor(batch_size=args.batch_size, validation_fraction=None,
                         max_epochs=args.epochs, random_state=0, conv_dtype=conv_dtype,
                         callbacks=[("cpu_time", EpochCPUTime())])
    t0, c0 = time.perf_counter(), time.process_time()
    net.fit(graphs, y)
    t_fit, c_fit = time.perf_counter() - t0, time.process_time() - c0
    durs = [float(d) for d in net.history[:, "dur"]]
    cpu_durs = [float(d) for d in net.history[:, "cpu_dur"]]
    steady = durs[1:] if len(durs) > 1 else durs
    cpu_steady = cpu_durs[1:] if len(cpu_durs) > 1 else cpu_durs
    return {
        "conv_dtype_used": resolve_conv_dtype(conv_dtype),
        "epoch_s": durs,
        "crystals_per_s_epochs": [n / d for d in durs],
        "crystals_per_s_steady": n * len(steady) / sum(steady),
        "epoch_cpu_s": cpu_durs,
        "crystals_per_cpu_s_steady": n * len(cpu_steady) / sum(cpu_steady),
        "fit_wall_s": t_fit,
        "fit_cpu_s": c_fit,
        "train_mae_normalized_last_epoch": float(net.history[-1, "train_loss"]),
    }


# ------------------------------------------------------------------------- main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000, help="crystals")
    p.add_argument("--sample", choices=["head", "random"], default="head",
                   help="the first N crystals of the file (fast to read; smaller cells than "
                        "average) or N drawn at random, seed 0 (reads the whole file)")
    p.add_argument("--conv-dtype", choices=["auto", "float32", "bfloat16"], nargs="+",
                   default=["float32", "auto"],
                   help="CGCNNRegressor(conv_dtype=...) for skcgcnn, one fit each (default: "
                        "float32 forced and auto, the estimators' default)")
    p.add_argument("--data", default=str(MP_CRYSTALS), help="matbench-style JSON file")
    p.add_argument("--target", default="formation_energy_per_atom")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--n-jobs", type=int, default=1, help="processes for featurization")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--baseline-n", type=int, default=1000,
                   help="crystals for the original pipeline (0 skips it)")
    p.add_argument("--baseline-no-cache", action="store_true",
                   help="featurize in every epoch of the baseline (no lru_cache)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    if args.sample == "head":
        frame = load_crystals(args.n, args.data)
    else:
        frame = load_crystals(None, args.data)
        pick = np.sort(np.random.RandomState(0).choice(len(frame), args.n, replace=False))
        frame = frame.iloc[pick].reset_index(drop=True)
    structures = list(frame["structure"])
    y = frame[args.target].to_numpy(dtype=float)
    n = len(structures)
    n_atoms = np.array([len(s) for s in structures])
    t_load = time.perf_counter() - t0
    rss_loaded = rss_mib()
    print(f"{n} crystals decoded in {t_load:.1f} s; atoms per crystal: mean "
          f"{n_atoms.mean():.1f}; torch threads {torch.get_num_threads()}", flush=True)

    t0 = time.perf_counter()
    graphs = CrystalGraphTransformer(n_jobs=args.n_jobs).transform(structures)
    t_feat = time.perf_counter() - t0
    rss_graphs = rss_mib()
    graph_mib = sum(g.nbytes for g in graphs) / 2**20
    print(f"featurized in {t_feat:.2f} s ({1e3 * t_feat / n:.3f} ms/crystal, "
          f"n_jobs={args.n_jobs}); graphs {graph_mib:.1f} MiB", flush=True)

    result = {
        "n_crystals": n,
        "data": os.path.basename(args.data),
        "target": args.target,
        "atoms_per_crystal_mean": float(n_atoms.mean()),
        "batch_size": args.batch_size,
        "sample": args.sample,
        "torch_threads": torch.get_num_threads(),
        "decode_s": t_load,
        "featurize_s": t_feat,
        "featurize_ms_per_crystal": 1e3 * t_feat / n,
        "featurize_n_jobs": args.n_jobs,
        "graphs_mib": graph_mib,
        "rss_after_decode_mib": rss_loaded,
        "rss_after_featurize_mib": rss_graphs,
        "paths": {},
    }
    # the baseline first: the estimators' ReleaseMemory sets glibc to keep freed memory for
    # the rest of the process, which the original pipeline run alone would not have
    if args.baseline_n:
        m = min(args.baseline_n, n)
        # a random subset: the file is not in random order (cell sizes drift along it)
        pick = np.sort(np.random.RandomState(0).choice(n, m, replace=False))
        bl_atoms = n_atoms[pick]
        print(f"original pipeline on {m} random crystals of the {n} (mean {bl_atoms.mean():.1f} "
              "atoms)...", flush=True)
        bl_durs, bl_cpu, cached_bytes = train_original(
            [structures[i] for i in pick], y[pick], args.epochs, args.batch_size,
            cache=not args.baseline_no_cache)
        print("original epochs: " + ", ".join(f"{d:.2f} s ({m / d:.0f}/s)" for d in bl_durs),
              flush=True)
        bl_steady = bl_durs[1:] if len(bl_durs) > 1 else bl_durs
        bl_cpu_steady = bl_cpu[1:] if len(bl_cpu) > 1 else bl_cpu
        result.update({
            "baseline_n_crystals": m,
            "baseline_atoms_per_crystal_mean": float(bl_atoms.mean()),
            "baseline_cache": not args.baseline_no_cache,
            "baseline_epoch_s": bl_durs,
            "baseline_crystals_per_s_epochs": [m / d for d in bl_durs],
            "baseline_crystals_per_s_steady": m * len(bl_steady) / sum(bl_steady),
            "baseline_epoch_cpu_s": bl_cpu,
            "baseline_crystals_per_cpu_s_steady": m * len(bl_cpu_steady) / sum(bl_cpu_steady),
            "baseline_cache_mib": cached_bytes / 2**20,
        })
    for conv_dtype in args.conv_dtype:
        path = fit_skcgcnn(graphs, y, args, conv_dtype)
        result["paths"][conv_dtype] = path
        print(f"skcgcnn conv_dtype={conv_dtype} ({path['conv_dtype_used']}) epochs: "
              + ", ".join(f"{d:.2f} s ({n / d:.0f}/s)" for d in path["epoch_s"]), flush=True)
    # the first path's figures under the keys of earlier versions of this script
    first = result["paths"][args.conv_dtype[0]]
    result.update({"conv_dtype": args.conv_dtype[0], "conv_dtype_used": first["conv_dtype_used"],
                   "skcgcnn_epoch_s": first["epoch_s"],
                   "skcgcnn_crystals_per_s_steady": first["crystals_per_s_steady"],
                   "skcgcnn_crystals_per_cpu_s_steady": first["crystals_per_cpu_s_steady"]})
    peak = peak_rss_mib()
    result["peak_rss_mib"] = peak

    result["machine"] = machine_info()

    # ------------------------------------------------------------------ report
    print()
    bl_feat = ""
    if args.baseline_n and len(bl_durs) > 1 and not args.baseline_no_cache:
        # the featurizing in epoch 1: its excess over a cached epoch
        extra = bl_durs[0] - float(np.mean(bl_durs[1:]))
        result["baseline_featurize_ms_per_crystal_est"] = 1e3 * extra / m
        bl_feat = f"{1e3 * extra / m:.1f} (epoch 1 minus a cached epoch), every epoch"
    rows = [["featurization (ms/crystal)", f"{result['featurize_ms_per_crystal']:.3f}, once",
             bl_feat, "23, every epoch without the cache"]]
    bl_steady_rate = (f"{result['baseline_crystals_per_s_steady']:.0f}"
                      if args.baseline_n else "")
    bl_cpu_rate = (f"{result['baseline_crystals_per_cpu_s_steady']:.0f}"
                   if args.baseline_n else "")
    for conv_dtype, path in result["paths"].items():
        label = f"conv_dtype={conv_dtype} ({path['conv_dtype_used']})"
        durs = path["epoch_s"]
        ratio = ""
        if args.baseline_n:
            ratio = (f", {path['crystals_per_s_steady'] / result['baseline_crystals_per_s_steady']:.2f}x"
                     f" the original (CPU s: {path['crystals_per_cpu_s_steady'] / result['baseline_crystals_per_cpu_s_steady']:.2f}x)")
        rows.append([f"{label}, epochs (crystals/s)",
                     ", ".join(f"{n / d:.0f}" for d in durs), "", ""])
        rows.append([f"{label}, epochs 2–{len(durs)} (crystals/s)",
                     f"{path['crystals_per_s_steady']:.0f}{ratio}", bl_steady_rate,
                     "59–62 with 2 loader workers, every epoch"])
        rows.append([f"{label}, per CPU second (crystals/CPU s)",
                     f"{path['crystals_per_cpu_s_steady']:.0f}", bl_cpu_rate, ""])
    if args.baseline_n:
        rows.append(["original, epochs (crystals/s)", "",
                     ", ".join(f"{r:.0f}" for r in result["baseline_crystals_per_s_epochs"])
                     + " (epoch 1 featurizing, then warm cache)", "38 (featurizing), "
                     "480–506 (warm cache)"])
    rows.append(["data held in memory (MiB)", f"{graph_mib:.1f} ({n} graphs)",
                 (f"{result['baseline_cache_mib']:.1f} ({result['baseline_n_crystals']} cached "
                  "crystals)") if args.baseline_n and not args.baseline_no_cache else "",
                 "2.3 GiB peak RSS for 6,000 crystals"])
    rows.append(["peak RSS of the process, the baseline's run included (MiB)", f"{peak:.0f}",
                 "", ""])
    print(markdown_table(["", f"skcgcnn ({n} crystals)",
                          f"original pipeline, measured ({result.get('baseline_n_crystals', 0)} "
                          "of them)" if args.baseline_n else "original pipeline, measured",
                          "original CGCNN code, quoted from DESIGN.md (5,000 crystals)"], rows))
    print()
    if args.baseline_n:
        print(f"atoms per crystal: mean {n_atoms.mean():.1f} (skcgcnn set), "
              f"{result['baseline_atoms_per_crystal_mean']:.1f} (baseline subset).")
    for conv_dtype, path in result["paths"].items():
        print(f"skcgcnn fit, conv_dtype={conv_dtype}: {path['fit_wall_s']:.1f} s wall, "
              f"{path['fit_cpu_s']:.1f} s CPU over {len(path['epoch_s'])} epochs")
    print(f"RSS "
          f"{rss_loaded:.0f} MiB after decoding, {rss_graphs:.0f} MiB after featurizing, peak "
          f"{peak:.0f} MiB. torch threads {torch.get_num_threads()}.")
    info = result["machine"]
    print(f"machine: {info['cpu_count']} CPUs ({info.get('cpu_model', '?')}; "
          f"{', '.join(info.get('cpu_features', []))}; conv_dtype='auto' is "
          f"{info.get('conv_dtype_auto')}), load average {info['load_average_1_5_15'][0]:.2f} "
          f"at the end, torch {info['torch']}")
    if args.json:
        write_json(result, args.json)
        print(f"written to {args.json}")
    return result


if __name__ == "__main__":
    main()
