"""Dataset loaders: matbench-style JSON, the CGCNN folder layout, ASE's DCDFT set."""

from __future__ import annotations

import csv
import gzip
import json
import os

import numpy as np

__all__ = ["load_matbench_json", "load_cgcnn_folder", "load_dcdft"]


def _structures_from_dicts(dicts, n_jobs=None):
    from joblib import Parallel, delayed
    from pymatgen.core import Structure

    def decode(chunk):
        return [Structure.from_dict(d) for d in chunk]

    if n_jobs in (None, 1) or len(dicts) < 2000:
        return decode(dicts)
    size = 1000
    chunks = Parallel(n_jobs=n_jobs)(
        delayed(decode)(dicts[i:i + size]) for i in range(0, len(dicts), size))
    return [s for chunk in chunks for s in chunk]


def load_matbench_json(path, n_jobs=None):
    """Load a matbench-style gzipped pandas JSON file (``split`` layout).

    Parameters
    ----------
    path : str or path-like
        A ``.json`` or ``.json.gz`` file with ``index``, ``columns`` and
        ``data`` keys whose ``structure`` column holds ``Structure.as_dict()``
        dicts, such as the matbench task files or ``../shared/data/*.json.gz``.
    n_jobs : int, optional
        Processes used to decode structures (joblib semantics).

    Returns
    -------
    frame : pandas.DataFrame
        One row per crystal; ``structure`` holds pymatgen ``Structure`` objects,
        the other columns are kept as stored (units as the file defines them).

    Examples
    --------
    >>> import gzip, json, os, tempfile
    >>> from ase.build import bulk
    >>> from pymatgen.io.ase import AseAtomsAdaptor
    >>> from skcgcnn.datasets import load_matbench_json
    >>> s = AseAtomsAdaptor.get_structure(bulk("Cu")).as_dict()
    >>> path = os.path.join(tempfile.mkdtemp(), "tiny.json.gz")
    >>> with gzip.open(path, "wt") as f:
    ...     json.dump({"index": [0], "columns": ["structure", "y"], "data": [[s, 1.0]]}, f)
    >>> frame = load_matbench_json(path)
    >>> frame.shape, frame.structure[0].composition.reduced_formula
    ((1, 2), 'Cu')
    """
    import pandas as pd

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dataset file does not exist: {path!r}")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as f:
        raw = json.load(f)
    if not all(k in raw for k in ("index", "columns", "data")):
        raise ValueError(f"{path!r} is not a pandas 'split' JSON (index, columns, data)")
    frame = pd.DataFrame(raw["data"], index=raw["index"], columns=raw["columns"])
    if "structure" in frame:
        frame["structure"] = _structures_from_dicts(list(frame["structure"]), n_jobs)
    return frame


def load_cgcnn_folder(root):
    """Load the original CGCNN layout: ``root/id_prop.csv`` and ``root/<id>.cif``.

    Parameters
    ----------
    root : str or path-like
        Folder holding ``id_prop.csv`` (rows ``id,target``, no header) and one
        CIF file per id.

    Returns
    -------
    ids : list of str
    paths : list of str
        CIF paths, one per id (featurize them with
        :class:`~skcgcnn.CrystalGraphTransformer`).
    y : ndarray of shape (n_crystals,)
        Targets as written in ``id_prop.csv`` (NaN where a row has no target).
    """
    root = os.fspath(root)
    table = os.path.join(root, "id_prop.csv")
    if not os.path.isfile(table):
        raise FileNotFoundError(f"no id_prop.csv in {root!r}: expected the CGCNN folder layout")
    ids, y = [], []
    with open(table, newline="") as f:
        for row in csv.reader(f):
            if not row:
                continue
            ids.append(row[0].strip())
            y.append(float(row[1]) if len(row) > 1 and row[1].strip() else np.nan)
    paths = [os.path.join(root, f"{i}.cif") for i in ids]
    return ids, paths, np.asarray(y, dtype=float)


def load_dcdft():
    """ASE's DCDFT set: 71 elemental crystals with WIEN2k bulk moduli.

    Shipped with ASE, so it needs no download; the README's demonstration data.

    Returns
    -------
    structures : list of ase.Atoms
    bulk_modulus : ndarray of shape (71,)
        WIEN2k bulk modulus ``wien2k_B`` in GPa.

    Examples
    --------
    >>> from skcgcnn.datasets import load_dcdft
    >>> atoms, B = load_dcdft()
    >>> len(atoms), bool((B > 0).all())
    (71, True)
    """
    from ase.collections import dcdft

    atoms = [dcdft[name] for name in dcdft.names]
    B = np.array([dcdft.data[name]["wien2k_B"] for name in dcdft.names], dtype=float)
    return atoms, B
