"""Featurization speed and memory: skcgcnn against the original CGCNN way.

Examples
--------
python benchmarks/featurize.py                 # 2,000 crystals of mp_crystals_36k
python benchmarks/featurize.py --n 500 --json featurize.json

Both featurizers run in this one process on the same pymatgen structures
(the first ``--n`` of ``../shared/data/mp_crystals_36k.json.gz``):

skcgcnn
    ``CrystalGraphTransformer(n_jobs=1).transform(structures)``: one
    ``find_points_in_spheres`` call per crystal, sorting in numpy; a graph keeps
    atomic numbers, 12 neighbour indices and 12 distances per atom.
original CGCNN (re-implemented here, see ``common.baseline_featurize``)
    ``get_all_neighbors(8, include_index=True)``, each site's neighbours
    sorted by distance in Python, the nearest 12 kept (padded with index 0
    and distance 9 Å), one-hot element rows stacked site by site, distances
    expanded on 41 Gaussians (centres 0 to 8 Å, step and width 0.2 Å); kept
    as float32 ``atom_fea``, float32 ``nbr_fea`` and int64 ``nbr_idx`` arrays.

Times are wall-clock per crystal (``time.perf_counter``) and CPU time of this
process (``time.process_time``); on a loaded machine the CPU time is the
better estimate of the unloaded speed. skcgcnn is timed ``--repeat`` times
(median reported), the baseline once. Memory is the bytes of the arrays kept
per crystal. The script also checks that both find the same neighbour
distances.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import (MP_CRYSTALS, baseline_atom_features, baseline_neighbors,  # noqa: E402
                    gaussian_expand, load_crystals, machine_info, markdown_table, write_json)

from skcgcnn import CrystalGraphTransformer  # noqa: E402
from skcgcnn.features import element_feature_table  # noqa: E402


def time_skcgcnn(structures, radius, max_num_nbr):
    transformer = CrystalGraphTransformer(radius=radius, max_num_nbr=max_num_nbr, n_jobs=1)
    w0, c0 = time.perf_counter(), time.process_time()
    graphs = transformer.transform(structures)
    return graphs, time.perf_counter() - w0, time.process_time() - c0


def time_baseline(structures, radius, max_num_nbr, step):
    """The original way, crystal by crystal; times the neighbour search separately."""
    table = element_feature_table()
    out, t_nbr, n_short = [], 0.0, 0
    w0, c0 = time.perf_counter(), time.process_time()
    for s in structures:
        atom_fea = baseline_atom_features(s, table)
        t = time.perf_counter()
        nbr_idx, nbr_dist, short = baseline_neighbors(s, radius, max_num_nbr)
        t_nbr += time.perf_counter() - t
        nbr_fea = gaussian_expand(nbr_dist, radius, step)
        out.append((atom_fea, nbr_fea, nbr_idx, nbr_dist))
        n_short += short
    return out, time.perf_counter() - w0, time.process_time() - c0, t_nbr, n_short


def agreement(graphs, baseline, max_num_nbr):
    """Do both give each atom the same neighbour distances (and indices)?

    Returns the largest distance difference in angstrom over all kept
    neighbours, the number of atoms whose neighbour count differs, the number
    whose multiset of neighbour indices differs (when neighbours tie in
    distance at the 12th place, the two codes may keep different ones), and
    the number of those where the difference is not explained by such a tie.
    """
    max_diff, count_mismatch, index_mismatch, unexplained = 0.0, 0, 0, 0
    for g, (_, _, nbr_idx, nbr_dist) in zip(graphs, baseline):
        counts = np.bincount(g.centers, minlength=g.n_atoms)
        starts = np.concatenate([[0], np.cumsum(counts)])
        real = nbr_dist <= g.radius  # the padding sits at radius + 1
        for i in range(g.n_atoms):
            k = int(real[i].sum())
            if counts[i] != min(k, max_num_nbr):
                count_mismatch += 1
                continue
            d = g.distances[starts[i]:starts[i + 1]]
            max_diff = max(max_diff, float(np.abs(d - nbr_dist[i, :k]).max(initial=0.0)))
            mine, theirs = g.neighbors[starts[i]:starts[i + 1]], nbr_idx[i, :len(d)]
            if not np.array_equal(np.sort(mine), np.sort(theirs)):
                index_mismatch += 1
                # a tie at the cut is the only allowed cause: the neighbours
                # strictly closer than the last kept one must be the same
                inner = d < d[-1] - 1e-4
                if not np.array_equal(np.sort(mine[inner]), np.sort(theirs[inner])):
                    unexplained += 1
    return max_diff, count_mismatch, index_mismatch, unexplained


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="crystals (the first N of the file)")
    p.add_argument("--data", default=str(MP_CRYSTALS), help="matbench-style JSON file")
    p.add_argument("--radius", type=float, default=8.0)
    p.add_argument("--max-num-nbr", type=int, default=12)
    p.add_argument("--step", type=float, default=0.2, help="Gaussian spacing and width, angstrom")
    p.add_argument("--repeat", type=int, default=3, help="timed repeats of the skcgcnn transform")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    frame = load_crystals(args.n, args.data)
    structures = list(frame["structure"])
    n = len(structures)
    n_atoms = np.array([len(s) for s in structures])
    print(f"{n} crystals from {os.path.basename(args.data)} (decoded in "
          f"{time.perf_counter() - t0:.1f} s); atoms per crystal: mean {n_atoms.mean():.1f}, "
          f"median {np.median(n_atoms):.0f}, max {n_atoms.max()}", flush=True)

    # warm up both paths (imports, the element table, pymatgen's lazy caches)
    element_feature_table()
    time_skcgcnn(structures[:20], args.radius, args.max_num_nbr)
    time_baseline(structures[:20], args.radius, args.max_num_nbr, args.step)

    runs = []
    for _ in range(max(args.repeat, 1)):
        graphs, wall, cpu = time_skcgcnn(structures, args.radius, args.max_num_nbr)
        runs.append((wall, cpu))
        print(f"skcgcnn: {1e3 * wall / n:.3f} ms/crystal wall, {1e3 * cpu / n:.3f} ms CPU", flush=True)
    sk_wall, sk_cpu = (float(np.median(x)) for x in zip(*runs))

    baseline, bl_wall, bl_cpu, bl_nbr, n_short = time_baseline(
        structures, args.radius, args.max_num_nbr, args.step)
    print(f"original: {1e3 * bl_wall / n:.3f} ms/crystal wall, {1e3 * bl_cpu / n:.3f} ms CPU, "
          f"get_all_neighbors and sorting {1e3 * bl_nbr / n:.3f} ms", flush=True)

    sk_bytes = np.array([g.nbytes for g in graphs], dtype=float)
    bl_bytes = np.array([a.nbytes + f.nbytes + i.nbytes for a, f, i, _ in baseline], dtype=float)
    max_diff, count_mismatch, index_mismatch, unexplained = agreement(
        graphs, baseline, args.max_num_nbr)

    ms = lambda t: 1e3 * t / n  # noqa: E731
    result = {
        "n_crystals": n,
        "data": os.path.basename(args.data),
        "atoms_per_crystal_mean": float(n_atoms.mean()),
        "radius": args.radius,
        "max_num_nbr": args.max_num_nbr,
        "skcgcnn_ms_per_crystal": ms(sk_wall),
        "skcgcnn_cpu_ms_per_crystal": ms(sk_cpu),
        "skcgcnn_ms_per_crystal_runs": [ms(w) for w, _ in runs],
        "original_ms_per_crystal": ms(bl_wall),
        "original_cpu_ms_per_crystal": ms(bl_cpu),
        "original_neighbor_ms_per_crystal": ms(bl_nbr),
        "speedup_wall": bl_wall / sk_wall,
        "speedup_cpu": bl_cpu / sk_cpu,
        "skcgcnn_bytes_per_crystal": float(sk_bytes.mean()),
        "original_bytes_per_crystal": float(bl_bytes.mean()),
        "skcgcnn_bytes_per_atom": float(sk_bytes.sum() / n_atoms.sum()),
        "original_bytes_per_atom": float(bl_bytes.sum() / n_atoms.sum()),
        "memory_ratio": float(bl_bytes.sum() / sk_bytes.sum()),
        "original_n_gaussians": int(baseline[0][1].shape[-1]),
        "n_atom_features": int(baseline[0][0].shape[-1]),
        "atoms_with_fewer_neighbors": int(n_short),
        "max_distance_difference_angstrom": max_diff,
        "atoms_neighbor_count_mismatch": count_mismatch,
        "atoms_neighbor_index_mismatch": index_mismatch,
        "atoms_neighbor_index_mismatch_not_tie": unexplained,
        "machine": machine_info(),
    }

    print()
    print(markdown_table(
        ["", "skcgcnn", "original CGCNN way", "ratio"],
        [["time per crystal, wall (ms)", f"{ms(sk_wall):.3f}", f"{ms(bl_wall):.2f}",
          f"{bl_wall / sk_wall:.0f}× faster"],
         ["time per crystal, CPU (ms)", f"{ms(sk_cpu):.3f}", f"{ms(bl_cpu):.2f}",
          f"{bl_cpu / sk_cpu:.0f}× faster"],
         ["of which neighbour search and sort (ms)", "", f"{ms(bl_nbr):.2f}", ""],
         ["memory per crystal (kB)", f"{sk_bytes.mean() / 1e3:.2f}", f"{bl_bytes.mean() / 1e3:.1f}",
          f"{result['memory_ratio']:.1f}× smaller"],
         ["memory per atom (bytes)", f"{result['skcgcnn_bytes_per_atom']:.0f}",
          f"{result['original_bytes_per_atom']:.0f}", ""]]))
    print()
    print(f"{n} crystals, {n_atoms.sum()} atoms (mean {n_atoms.mean():.1f}); skcgcnn time is the "
          f"median of {len(runs)} runs. Neighbour distances agree within {max_diff:.1e} Å; "
          f"{count_mismatch} atoms differ in neighbour count; {index_mismatch} keep different "
          f"neighbours, {index_mismatch - unexplained} of them because of ties in distance at the "
          f"{args.max_num_nbr}th place; {n_short} atoms have fewer than "
          f"{args.max_num_nbr} neighbours within {args.radius:g} Å (the original pads them).")
    info = result["machine"]
    print(f"machine: {info['cpu_count']} CPUs, load average {info['load_average_1_5_15'][0]:.2f} "
          f"at the end, torch {info['torch']}, pymatgen {info.get('pymatgen', '?')}")
    if args.json:
        write_json(result, args.json)
        print(f"written to {args.json}")
    return result


if __name__ == "__main__":
    main()
