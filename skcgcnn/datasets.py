"""Dataset loaders: matbench-style JSON, CSV tables, the CGCNN folder layout,
ASE's DCDFT set, the bundled Materials Project elastic moduli and the Materials
Project (mp-api)."""

from __future__ import annotations

import csv
import gzip
import json
import os
import warnings

import numpy as np

from .graph import read_structure_file

__all__ = ["load_matbench_json", "load_table", "load_cgcnn_folder", "load_dcdft",
           "load_mp_elasticity", "load_materials_project", "mp_search_kwargs", "mp_docs_to_frame"]


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
        dicts, such as the matbench task files (or the project's benchmark data,
        ``mp_crystals_36k.json.gz`` and ``mp_elasticity_2591.json.gz``, which a
        source checkout reads from ``../shared/data``; not distributed).
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
        Folder holding ``id_prop.csv`` and one CIF file ``<id>.cif`` per id.
        Each row of ``id_prop.csv`` is ``id,target`` (or only ``id``, for
        crystals to predict). A first line whose target is not a number
        (``id,band_gap``), or a lone first cell such as ``id`` or
        ``material_id`` with no CIF file of that name, is taken as a header
        and skipped.

    Returns
    -------
    ids : list of str
    paths : list of str
        CIF paths, one per id (featurize them with
        :class:`~skcgcnn.CrystalGraphTransformer`).
    y : ndarray of shape (n_crystals,)
        Targets as written in ``id_prop.csv`` (NaN where a row has no target).

    Raises
    ------
    FileNotFoundError
        No ``id_prop.csv``, or ids whose ``<id>.cif`` does not exist (all
        such ids are named, the first ten shown).
    ValueError
        A target that is not a number (the line is named).
    """
    root = os.fspath(root)
    table = os.path.join(root, "id_prop.csv")
    if not os.path.isfile(table):
        raise FileNotFoundError(f"no id_prop.csv in {root!r}: expected the CGCNN folder layout")
    ids, y = [], []
    with open(table, newline="") as f:
        rows = [(line, row) for line, row in enumerate(csv.reader(f), start=1) if row]
    if rows and _is_header(rows[0][1], root):
        rows = rows[1:]
    for line, row in rows:
        ids.append(row[0].strip())
        try:
            y.append(float(row[1]) if len(row) > 1 and row[1].strip() else np.nan)
        except ValueError:
            raise ValueError(f"line {line} of {table!r} has a target that is not a number: "
                             f"{row[1]!r}; id_prop.csv holds rows 'id,target' (one header "
                             "line at the top is skipped)") from None
    paths = [os.path.join(root, f"{i}.cif") for i in ids]
    missing = [i for i, p in zip(ids, paths) if not os.path.isfile(p)]
    if missing:
        shown = ", ".join(map(repr, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise FileNotFoundError(
            f"{len(missing)} of the {len(ids)} crystal(s) listed in {table!r} have no CIF file "
            f"(<id>.cif in the same folder), the first {paths[ids.index(missing[0])]!r}; "
            f"ids: {shown}")
    return ids, paths, np.asarray(y, dtype=float)


#: Column names that mark a lone first cell of id_prop.csv as a header.
_ID_HEADERS = ("id", "ids", "cif_id", "material_id", "mpid", "name", "structure", "crystal")


def _is_header(row, root):
    """Whether the first row of id_prop.csv names its columns instead of a crystal."""
    if os.path.isfile(os.path.join(root, f"{row[0].strip()}.cif")):
        return False
    if len(row) > 1 and row[1].strip():
        try:
            float(row[1])
        except ValueError:
            return True
        return False
    return row[0].strip().lower() in _ID_HEADERS


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


def load_mp_elasticity():
    """2,591 Materials Project crystals with their elastic moduli, bundled with skcgcnn.

    The crystals and Voigt-Reuss-Hill moduli of ``mp_elasticity_2591.json.gz``
    (the elasticity data of the paper's K_VRH task), stored as compact arrays
    in full precision (350 kB), so the main job and the gallery run without
    the project's benchmark data or a download. Lee & Asahi model
    ``log10(K_VRH)``.

    Data from the Materials Project (Jain et al., APL Materials 1, 011002,
    2013; elastic tensors: de Jong et al., Scientific Data 2, 150009, 2015),
    licensed under CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/).
    Cite both when you use them (NOTICE). ``benchmarks/make_sample_data.py``
    in the source repository rebuilds the file.

    Returns
    -------
    frame : pandas.DataFrame
        2,591 rows: ``material_id`` (e.g. ``"mp-10000"``), ``structure``
        (ordered pymatgen ``Structure``), ``K_VRH`` and ``G_VRH`` (bulk and
        shear modulus, GPa).

    Examples
    --------
    >>> import numpy as np
    >>> from skcgcnn.datasets import load_mp_elasticity
    >>> frame = load_mp_elasticity()
    >>> len(frame), frame.columns.tolist()
    (2591, ['material_id', 'structure', 'K_VRH', 'G_VRH'])
    >>> t = np.log10(frame.K_VRH)  # log10 GPa
    >>> round(float(np.abs(t - t.mean()).mean()), 3)  # mean absolute deviation
    0.277
    """
    import pandas as pd
    from pymatgen.core import Lattice, Structure

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mp_elasticity.npz")
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    ends = np.cumsum(arrays["n_atoms"].astype(np.int64))
    starts = ends - arrays["n_atoms"]
    structures = [Structure(Lattice(lat), arrays["numbers"][a:b].astype(int),
                            arrays["frac_coords"][a:b])
                  for lat, a, b in zip(arrays["lattice"], starts, ends)]
    return pd.DataFrame({"material_id": arrays["material_id"].astype(str),
                         "structure": structures, "K_VRH": arrays["K_VRH"],
                         "G_VRH": arrays["G_VRH"]})


def _looks_like_cif(text):
    return "\n" in text or text.lstrip().startswith("data_")


def _read_structure(cell, folder, where):
    """One structure from a table cell: CIF text, a file path, a dict or a Structure."""
    from pymatgen.core import Structure

    if isinstance(cell, Structure):
        return cell
    if isinstance(cell, dict):
        return Structure.from_dict(cell)
    if not isinstance(cell, str) or not cell.strip():
        raise ValueError(f"{where} is empty: expected CIF text or the path of a structure file")
    if not _looks_like_cif(cell):
        path = cell.strip()
        return read_structure_file(path if os.path.isabs(path) else os.path.join(folder, path),
                                   f" named in {where}")
    try:
        with warnings.catch_warnings():  # pymatgen warns once per CIF about rounding etc.
            warnings.simplefilter("ignore")
            return Structure.from_str(cell, fmt="cif")
    except Exception as exc:  # pymatgen raises many types for bad CIFs
        raise ValueError(f"could not read the structure in {where}: {exc}") from exc


def load_table(path, structure_column="structure", target_column=None, n_jobs=None,
               skip_invalid=False):
    """Load a table of crystals: CSV with CIF paths or CIF text, or matbench-style JSON.

    Parameters
    ----------
    path : str or path-like
        A ``.csv`` file, or a ``.json``/``.json.gz`` file in pandas ``split``
        layout (see :func:`load_matbench_json`). In a CSV, each cell of
        ``structure_column`` is either CIF text or the path of a structure
        file (CIF, POSCAR, anything pymatgen reads), relative paths being
        taken from the CSV's folder.
    structure_column : str, default="structure"
        Column holding the structures.
    target_column : str, optional
        Column holding the target; it must exist and is converted to float
        (empty cells become NaN). Its units are the file's.
    n_jobs : int, optional
        Processes used to decode the structures of a JSON file.
    skip_invalid : bool, default=False
        Leave out the rows of a CSV whose structure cannot be read (bad CIF
        text, a missing or unreadable file, an empty cell) instead of
        raising; ``frame.attrs["skipped"]`` lists them as ``(row, message)``.

    Returns
    -------
    frame : pandas.DataFrame
        One row per crystal, in file order, indexed by its row in the file;
        ``structure_column`` holds pymatgen ``Structure`` objects, the other
        columns are kept as stored.

    Raises
    ------
    FileNotFoundError
        If ``path`` or a structure file named in the table does not exist.
    ValueError
        If a column is missing (the message lists the columns there are), a
        structure cannot be read (the message names the row), or the target
        column is not numeric.

    Examples
    --------
    >>> import os, tempfile
    >>> from ase.build import bulk
    >>> from pymatgen.io.ase import AseAtomsAdaptor
    >>> from skcgcnn.datasets import load_table
    >>> folder = tempfile.mkdtemp()
    >>> _ = AseAtomsAdaptor.get_structure(bulk("Cu")).to(filename=os.path.join(folder, "cu.cif"))
    >>> with open(os.path.join(folder, "table.csv"), "w") as f:
    ...     _ = f.write("id,structure,volume\\ncu,cu.cif,11.8\\n")
    >>> frame = load_table(os.path.join(folder, "table.csv"), target_column="volume")
    >>> frame.loc[0, "structure"].composition.reduced_formula, float(frame.loc[0, "volume"])
    ('Cu', 11.8)
    """
    import pandas as pd

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dataset file does not exist: {path!r}")
    name = path.lower()
    if name.endswith((".json", ".json.gz")):
        frame = load_matbench_json(path, n_jobs=n_jobs)
    elif name.endswith((".csv", ".csv.gz")):
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise ValueError(f"could not read {path!r} as CSV: {exc}") from exc
    else:
        raise ValueError(f"unsupported table format {path!r}: expected .csv, .json or .json.gz")
    for role, column in (("structure", structure_column), ("target", target_column)):
        if column is not None and column not in frame.columns:
            raise ValueError(f"{path!r} has no {role} column {column!r}; its columns are "
                             f"{', '.join(map(str, frame.columns))}")
    folder = os.path.dirname(os.path.abspath(path))
    structures, skipped = {}, []
    for i, cell in enumerate(frame[structure_column]):
        try:
            structures[i] = _read_structure(
                cell, folder, f"row {i} of column {structure_column!r} in {path!r}")
        except (ValueError, OSError) as exc:
            if not skip_invalid:
                raise
            skipped.append((i, str(exc)))
    if skipped:
        frame = frame.iloc[list(structures)].copy()
        frame.attrs["skipped"] = skipped
    frame[structure_column] = list(structures.values())
    if target_column is not None:
        try:
            frame[target_column] = pd.to_numeric(frame[target_column]).astype(float)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"target column {target_column!r} of {path!r} is not numeric: "
                             f"{exc}") from exc
    return frame


#: Fields requested from the Materials Project summary endpoint by default.
MP_DEFAULT_FIELDS = ("material_id", "structure", "formula_pretty", "formation_energy_per_atom",
                     "band_gap", "energy_above_hull")


def mp_search_kwargs(fields=None, **criteria):
    """Keyword arguments for ``MPRester().materials.summary.search``.

    Parameters
    ----------
    fields : sequence of str, optional
        Document fields to request (default :data:`MP_DEFAULT_FIELDS`);
        ``material_id`` and ``structure`` are always added.
    **criteria
        Search criteria of mp-api's summary search, e.g. ``band_gap=(0.1, 10)``
        (eV), ``num_sites=(1, 20)``, ``elements=["O"]``, ``is_stable=True``.
        Ranges are ``(min, max)`` pairs; ``None`` values are dropped.

    Returns
    -------
    kwargs : dict
        ``fields`` as a list, and the criteria (ranges as tuples).

    Raises
    ------
    ValueError
        A range that is not a ``(min, max)`` pair with ``min <= max``.

    Examples
    --------
    >>> from skcgcnn.datasets import mp_search_kwargs
    >>> kw = mp_search_kwargs(fields=["band_gap"], band_gap=[0.1, 10], num_chunks=None)
    >>> kw
    {'fields': ['material_id', 'structure', 'band_gap'], 'band_gap': (0.1, 10)}
    """
    fields = list(MP_DEFAULT_FIELDS if fields is None else fields)
    fields = [f for f in ("material_id", "structure") if f not in fields] + fields
    kwargs = {"fields": fields}
    for key, value in criteria.items():
        if value is None:
            continue
        numeric = isinstance(value, (list, tuple)) and len(value) == 2 and all(
            v is None or isinstance(v, (int, float)) for v in value)
        if numeric:
            lo, hi = value
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"criterion {key}={value!r}: min {lo} is larger than max {hi}")
            value = (lo, hi)
        kwargs[key] = value
    return kwargs


def _field(doc, name):
    if isinstance(doc, dict):
        return doc.get(name)
    return getattr(doc, name, None)


def mp_docs_to_frame(docs, fields=None):
    """Convert Materials Project summary documents to a DataFrame.

    Parameters
    ----------
    docs : iterable of documents
        mp-api ``SummaryDoc`` objects, or any objects or dicts with the
        requested fields as attributes or keys. Nested dicts (for example
        ``bulk_modulus={"vrh": ...}`` in GPa) are flattened to
        ``bulk_modulus_vrh`` columns; a missing field becomes ``None``.
    fields : sequence of str, optional
        Fields to keep (default :data:`MP_DEFAULT_FIELDS`).

    Returns
    -------
    frame : pandas.DataFrame
        One row per document: ``material_id`` (str), ``structure`` (pymatgen
        ``Structure``; dicts are decoded) and the other fields, in their
        Materials Project units (eV, eV/atom, GPa).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> from ase.build import bulk
    >>> from pymatgen.io.ase import AseAtomsAdaptor
    >>> from skcgcnn.datasets import mp_docs_to_frame
    >>> doc = SimpleNamespace(material_id="mp-30", structure=AseAtomsAdaptor.get_structure(bulk("Cu")),
    ...                       band_gap=0.0, bulk_modulus={"vrh": 140.0})
    >>> mp_docs_to_frame([doc], fields=["band_gap", "bulk_modulus"]).columns.tolist()
    ['material_id', 'structure', 'band_gap', 'bulk_modulus_vrh']
    """
    import pandas as pd
    from pymatgen.core import Structure

    fields = mp_search_kwargs(fields)["fields"]
    rows = []
    for doc in docs:
        row = {}
        for name in fields:
            value = _field(doc, name)
            if name == "material_id":
                value = None if value is None else str(value)
            elif name == "structure" and isinstance(value, dict):
                value = Structure.from_dict(value)
            elif isinstance(value, dict):
                row.update({f"{name}_{k}": v for k, v in value.items()})
                continue
            row[name] = value
        rows.append(row)
    frame = pd.DataFrame(rows, columns=None if rows else fields)
    missing = frame["structure"].isna()
    if missing.any():
        first = frame.loc[missing, "material_id"].iloc[0]
        raise ValueError(f"{int(missing.sum())} Materials Project document(s) came without a "
                         f"structure, the first {first!r}")
    return frame


def load_materials_project(api_key=None, fields=None, client=None, **criteria):
    """Query the Materials Project (mp-api) for crystals and their properties.

    Needs the optional ``mp-api`` package (``pip install mp-api``) and an API
    key from https://materialsproject.org. The query building
    (:func:`mp_search_kwargs`) and the conversion of the response
    (:func:`mp_docs_to_frame`) are tested offline on documents the test suite
    constructs; the network call itself is not exercised by the tests.

    Parameters
    ----------
    api_key : str, optional
        Materials Project API key; by default mp-api reads ``MP_API_KEY``
        from the environment or the pymatgen configuration.
    fields : sequence of str, optional
        Summary fields to fetch (default :data:`MP_DEFAULT_FIELDS`: material
        id, structure, formula, formation energy in eV/atom, band gap in eV,
        energy above hull in eV/atom).
    client : MPRester-like, optional
        An open client with a ``materials.summary.search`` method, used
        instead of opening ``mp_api.client.MPRester(api_key)``.
    **criteria
        Search criteria, see :func:`mp_search_kwargs`.

    Returns
    -------
    frame : pandas.DataFrame
        See :func:`mp_docs_to_frame`.

    Raises
    ------
    ImportError
        If mp-api is not installed and no ``client`` is given.

    Examples
    --------
    >>> from skcgcnn.datasets import load_materials_project
    >>> frame = load_materials_project(band_gap=(0.1, None), num_sites=(1, 8))  # doctest: +SKIP
    >>> frame[["material_id", "band_gap"]].head()  # doctest: +SKIP
    """
    kwargs = mp_search_kwargs(fields, **criteria)
    if client is not None:
        return mp_docs_to_frame(client.materials.summary.search(**kwargs), kwargs["fields"])
    try:
        from mp_api.client import MPRester
    except ImportError as exc:
        raise ImportError("load_materials_project needs the optional package mp-api: "
                          "pip install mp-api (and an API key from "
                          "https://materialsproject.org)") from exc
    with MPRester(api_key) as mpr:
        docs = mpr.materials.summary.search(**kwargs)
    return mp_docs_to_frame(docs, kwargs["fields"])
