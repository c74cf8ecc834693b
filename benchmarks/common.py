"""Shared helpers of the benchmark scripts: data paths and cached graphs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import joblib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SKCGCNN_SHARED_DATA", ROOT.parent / "shared" / "data"))
CACHE = Path(os.environ.get("SKCGCNN_CACHE", ROOT / "benchmarks" / "cache"))
MP_CRYSTALS = SHARED_DATA / "mp_crystals_36k.json.gz"
MP_ELASTICITY = SHARED_DATA / "mp_elasticity_2591.json.gz"
#: Bumped when the graphs of the same structures change (g2: ties at the 12th place are
#: broken on the stored float32 distances), so that no cache of older graphs is read.
GRAPH_FORMAT = "g2"


def file_hash(path, n=16):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:n]


def load_table_and_graphs(path, radius=8.0, max_num_nbr=12, n_jobs=2):
    """The table (without structures) and the graphs of a matbench JSON, cached on disk.

    The cache is keyed by the file's content hash and the featurizer settings.
    """
    from skcgcnn import CrystalGraphTransformer
    from skcgcnn.datasets import load_matbench_json
    from skcgcnn.io import atomic_write_bytes

    key = f"{Path(path).name}-{file_hash(path)}-r{radius}-n{max_num_nbr}-{GRAPH_FORMAT}.joblib"
    cached = CACHE / key
    if cached.is_file():
        return joblib.load(cached)
    frame = load_matbench_json(path, n_jobs=n_jobs)
    graphs = CrystalGraphTransformer(radius=radius, max_num_nbr=max_num_nbr,
                                     n_jobs=n_jobs).transform(frame["structure"])
    table = frame.drop(columns="structure")
    import io
    buf = io.BytesIO()
    joblib.dump((table, graphs), buf)
    atomic_write_bytes(cached, buf.getvalue())
    return table, graphs


def nm_mask(table, threshold=0.1):
    """Non-metals: PBE band gap above ``threshold`` eV (the paper's NM subset)."""
    return np.asarray(table["band_gap"] > threshold)


# ---------------------------------------------------------------------------
# Speed and memory benchmarks (featurize.py, train_speed.py)
# ---------------------------------------------------------------------------

def _read_split_json_head(path, n):
    """``columns`` and the first ``n`` rows of ``data`` of a pandas 'split' JSON.

    Decodes only those rows (a few thousand crystals of the 36k file in a second,
    without holding the whole file in memory); None when ``columns`` does not come
    before ``data`` (then :func:`skcgcnn.datasets.load_matbench_json` reads it all).
    """
    import gzip
    import json
    import re

    decoder = json.JSONDecoder()
    with (gzip.open if str(path).endswith(".gz") else open)(path, "rt") as f:
        buf = ""
        while not (start := re.search(r'"data"\s*:\s*\[', buf)):
            chunk = f.read(1 << 20)
            if not chunk:
                return None
            buf += chunk
        columns = re.search(r'"columns"\s*:\s*', buf[:start.start()])
        if columns is None:
            return None
        columns = decoder.raw_decode(buf, columns.end())[0]
        rows, pos = [], start.end()
        while len(rows) < n:
            while pos < len(buf) and buf[pos] in ", \t\r\n":
                pos += 1
            if buf.startswith("]", pos):
                break
            try:  # every row is a list: a truncated one fails to decode
                row, pos = decoder.raw_decode(buf, pos)
                rows.append(row)
            except json.JSONDecodeError:
                chunk = f.read(1 << 20)
                if not chunk:
                    raise
                buf, pos = buf[pos:] + chunk, 0
        return columns, rows


def load_crystals(n=None, path=MP_CRYSTALS):
    """The first ``n`` crystals of a matbench JSON as a DataFrame (all if ``n`` is None).

    Only the first ``n`` structures are decoded (``Structure.from_dict``); the
    ``structure`` column holds pymatgen ``Structure`` objects, as
    :func:`skcgcnn.datasets.load_matbench_json` returns.
    """
    import pandas as pd
    from pymatgen.core import Structure

    from skcgcnn.datasets import load_matbench_json

    head = None if n is None else _read_split_json_head(path, n)
    if head is None:
        frame = load_matbench_json(path)
        return frame if n is None else frame.iloc[:n].copy()
    columns, rows = head
    frame = pd.DataFrame(rows, columns=columns)
    frame["structure"] = [Structure.from_dict(d) for d in frame["structure"]]
    return frame


def baseline_neighbors(structure, radius=8.0, max_num_nbr=12):
    """Neighbour indices and distances the way the original CGCNN builds them.

    ``get_all_neighbors``, each site's list sorted by distance, the nearest
    ``max_num_nbr`` kept; short lists padded with index 0 and distance
    ``radius + 1`` (cgcnn/data.py, ``CIFData.__getitem__``).

    Returns
    -------
    nbr_idx : ndarray (n_atoms, max_num_nbr), int64
    nbr_dist : ndarray (n_atoms, max_num_nbr), float64
    n_short : int
        Atoms with fewer than ``max_num_nbr`` neighbours (CGCNN warns for each).
    """
    all_nbrs = structure.get_all_neighbors(radius, include_index=True)
    all_nbrs = [sorted(nbrs, key=lambda x: x[1]) for nbrs in all_nbrs]
    nbr_idx, nbr_dist, n_short = [], [], 0
    for nbr in all_nbrs:
        if len(nbr) < max_num_nbr:
            n_short += 1
            pad = max_num_nbr - len(nbr)
            nbr_idx.append([x[2] for x in nbr] + [0] * pad)
            nbr_dist.append([x[1] for x in nbr] + [radius + 1.0] * pad)
        else:
            nbr_idx.append([x[2] for x in nbr[:max_num_nbr]])
            nbr_dist.append([x[1] for x in nbr[:max_num_nbr]])
    return np.array(nbr_idx, dtype=np.int64), np.array(nbr_dist, dtype=np.float64), n_short


def baseline_atom_features(structure, table=None):
    """One-hot element rows per site, stacked site by site as CGCNN does."""
    if table is None:
        from skcgcnn.features import element_feature_table

        table = element_feature_table()
    return np.vstack([table[structure[i].specie.Z] for i in range(len(structure))]).astype(np.float32)


def gaussian_expand(distances, radius=8.0, step=0.2):
    """CGCNN's ``GaussianDistance(0, radius, step).expand``, cast to float32."""
    centers = np.arange(0.0, radius + step, step)
    return np.exp(-((distances[..., None] - centers) ** 2) / step ** 2).astype(np.float32)


def baseline_featurize(structure, radius=8.0, max_num_nbr=12, step=0.2, table=None):
    """The original CGCNN featurization of one crystal, as numpy arrays.

    Returns
    -------
    atom_fea : ndarray (n_atoms, n_features), float32
    nbr_fea : ndarray (n_atoms, max_num_nbr, n_gaussians), float32
    nbr_idx : ndarray (n_atoms, max_num_nbr), int64
    """
    atom_fea = baseline_atom_features(structure, table)
    nbr_idx, nbr_dist, _ = baseline_neighbors(structure, radius, max_num_nbr)
    return atom_fea, gaussian_expand(nbr_dist, radius, step), nbr_idx


def rss_mib():
    """Current resident memory of this process in MiB (Linux /proc)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return float("nan")


def peak_rss_mib():
    """Peak resident memory of this process so far in MiB (``getrusage``)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def machine_info():
    """CPU, load and library versions, for the record."""
    import platform

    import sklearn
    import torch

    import skcgcnn

    info = {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "skcgcnn": skcgcnn.__version__,
    }
    try:
        import pymatgen.core

        info["pymatgen"] = pymatgen.core.__version__
    except (ImportError, AttributeError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and "cpu_model" not in info:
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    # what decides the speed of the float32 and bfloat16 paths
                    info["cpu_features"] = sorted(flags & {
                        "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16",
                        "amx_tile", "asimd", "bf16", "sve"})
                    break
    except OSError:
        pass
    try:
        from skcgcnn.model import resolve_conv_dtype

        info["conv_dtype_auto"] = resolve_conv_dtype("auto")
    except ImportError:
        pass
    return info


def markdown_table(header, rows):
    """A GitHub markdown table from a header and rows of cells."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(obj, path):
    """Write ``obj`` as indented JSON (atomically)."""
    import json

    from skcgcnn.io import atomic_write_bytes

    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2) + "\n").encode())
