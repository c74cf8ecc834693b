"""Element-property one-hot table: the atom features of the crystal graph.

Each element (Z = 1 to 100) is described by nine properties, each one-hot
encoded as in CGCNN's ``atom_init.json``, and concatenated into one row of
:data:`N_ATOM_FEATURES` zeros and ones. The properties come from pymatgen's
element data (ASE for covalent radii), so the table is computed, not shipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = [
    "MAX_Z",
    "FEATURE_BLOCKS",
    "N_ATOM_FEATURES",
    "ELEMENT_TABLES",
    "element_feature_table",
    "element_feature_fingerprint",
    "read_atom_init",
    "resolve_element_features",
]

#: The original CGCNN's ``atom_init.json`` (92 columns, Z = 1 to 100; MIT licence,
#: see ``element_tables/NOTICE.txt``).
CGCNN_ATOM_INIT = Path(__file__).parent / "element_tables" / "cgcnn_atom_init.json"

#: Largest atomic number with features (fermium).
MAX_Z = 100

#: (name, number of one-hot columns, binning) in table order. "category"
#: properties have one column per value; "linear"/"log" ones are cut into
#: equal-width bins over the range seen in elements 1 to :data:`MAX_Z`.
FEATURE_BLOCKS = (
    ("group", 18, "category"),
    ("period", 7, "category"),
    ("electronegativity", 10, "linear"),  # Pauling
    ("covalent_radius", 10, "linear"),  # angstrom
    ("valence_electrons", 12, "category"),
    ("first_ionization_energy", 10, "log"),  # eV
    ("electron_affinity", 10, "linear"),  # eV
    ("block", 4, "category"),  # s, p, d, f
    ("atomic_volume", 10, "log"),  # cm^3/mol
)

N_ATOM_FEATURES = sum(n for _, n, _ in FEATURE_BLOCKS)

_BLOCKS = {"s": 1, "p": 2, "d": 3, "f": 4}


def _valence_electrons(structure: str) -> int:
    """Electrons outside the noble-gas core, not counting filled d10/f14 shells."""
    count = 0
    for orbital, n in re.findall(r"\d([spdf])(\d+)", structure.split("]")[-1]):
        n = int(n)
        if (orbital, n) not in (("d", 10), ("f", 14)):
            count += n
    return count


def _raw_properties(z: int) -> list[float]:
    """The nine properties of element ``z`` (NaN where pymatgen has none)."""
    from ase.data import covalent_radii
    from pymatgen.core import Element

    el = Element.from_Z(z)

    def get(fn):
        try:
            value = fn()
        except (KeyError, ValueError, IndexError, TypeError, AttributeError):
            return np.nan
        return np.nan if value is None else float(value)

    return [
        get(lambda: el.group),
        get(lambda: el.row),
        get(lambda: el.X),
        float(covalent_radii[z]),
        get(lambda: min(max(_valence_electrons(el.electronic_structure), 1), 12)),
        get(lambda: el.ionization_energies[0]),
        get(lambda: el.electron_affinity),
        get(lambda: _BLOCKS[el.block]),
        get(lambda: el.molar_volume),
    ]


@lru_cache(maxsize=1)
def element_feature_table() -> np.ndarray:
    """One-hot element-property features for atomic numbers 0 to 100.

    Returns
    -------
    table : ndarray of shape (101, N_ATOM_FEATURES), float32
        Row ``z`` holds the features of the element with atomic number ``z``;
        row 0 is all zeros and unused. A property pymatgen lacks for an
        element (for example the molar volume of fermium) leaves that
        property's block all zeros. Computed once per process.

    Examples
    --------
    >>> from skcgcnn.features import element_feature_table, N_ATOM_FEATURES
    >>> table = element_feature_table()
    >>> table.shape == (101, N_ATOM_FEATURES)
    True
    >>> int(table[8].sum())  # oxygen has all nine properties
    9
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = np.array([_raw_properties(z) for z in range(1, MAX_Z + 1)])
    table = np.zeros((MAX_Z + 1, N_ATOM_FEATURES), dtype=np.float32)
    start = 0
    for j, (_, width, kind) in enumerate(FEATURE_BLOCKS):
        values = raw[:, j]
        known = np.isfinite(values)
        if kind == "category":
            idx = values[known].astype(int) - 1
        else:
            v = np.log(values[known]) if kind == "log" else values[known]
            edges = np.linspace(v.min(), v.max(), width + 1)[1:-1]
            idx = np.searchsorted(edges, v, side="right")
        rows = np.arange(1, MAX_Z + 1)[known]
        table[rows, start + idx] = 1.0
        start += width
    table.setflags(write=False)
    return table


def element_feature_fingerprint(table=None) -> str:
    """Short hash of an element table, stored in model cards.

    Parameters
    ----------
    table : array-like of shape (MAX_Z + 1, n_features), optional
        An element table as :func:`resolve_element_features` returns it
        (float32); default :func:`element_feature_table`, skcgcnn's own.

    Returns
    -------
    fingerprint : str
        The first 16 hex digits of the SHA-256 of the table's float32 bytes.

    Examples
    --------
    >>> from skcgcnn.features import element_feature_fingerprint, resolve_element_features
    >>> len(element_feature_fingerprint())
    16
    >>> table, name = resolve_element_features("cgcnn")
    >>> element_feature_fingerprint(table) == element_feature_fingerprint()
    False
    """
    if table is None:
        table = element_feature_table()
    table = np.ascontiguousarray(np.asarray(table, dtype=np.float32))
    return hashlib.sha256(table.tobytes()).hexdigest()[:16]


def read_atom_init(path) -> np.ndarray:
    """An element table from a CGCNN ``atom_init.json``.

    The file maps atomic numbers (as strings) to feature vectors of one
    length, as the original CGCNN reads it (``AtomCustomJSONInitializer``).

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    table : ndarray of shape (MAX_Z + 1, n_features), float32
        Row ``z`` holds element ``z``'s vector; rows of elements the file
        lacks (and row 0) are zeros.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Not a JSON object of atomic numbers 1 to :data:`MAX_Z` to finite
        vectors of one length.

    Examples
    --------
    >>> from skcgcnn.features import CGCNN_ATOM_INIT, read_atom_init
    >>> read_atom_init(CGCNN_ATOM_INIT).shape
    (101, 92)
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"element features file does not exist: {path!r}")
    try:
        with open(path) as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"element features file {path!r} is not JSON: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise ValueError(f"element features file {path!r} must be a JSON object of atomic "
                         "number to feature vector, like CGCNN's atom_init.json")
    rows = {}
    for key, value in data.items():
        try:
            z = int(key)
            vector = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"element features file {path!r}: entry {key!r} is not an atomic "
                             f"number with a numeric vector ({exc})") from exc
        if not 1 <= z <= MAX_Z:
            raise ValueError(f"element features file {path!r}: atomic number {z} is outside "
                             f"1 to {MAX_Z}")
        rows[z] = vector
    return _as_table(rows, f"element features file {path!r}")


def _as_table(rows, what):
    """A (MAX_Z + 1, n) float32 table from {Z: vector}, checked."""
    lengths = {v.shape for v in rows.values()}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1 or next(iter(lengths))[0] < 1:
        raise ValueError(f"{what}: the feature vectors must be 1-D and of one length, got "
                         f"shapes {sorted(lengths)}")
    table = np.zeros((MAX_Z + 1, next(iter(lengths))[0]), dtype=np.float32)
    for z, v in rows.items():
        table[z] = v
    if not np.isfinite(table).all():
        raise ValueError(f"{what} holds NaN or infinite values")
    table.setflags(write=False)
    return table


#: Named element tables: what ``element_features=`` accepts as a string.
ELEMENT_TABLES = ("skcgcnn", "cgcnn")


@lru_cache(maxsize=1)
def _cgcnn_table():
    return read_atom_init(CGCNN_ATOM_INIT)


def resolve_element_features(element_features=None):
    """The element table and its name for an ``element_features=`` parameter.

    Parameters
    ----------
    element_features : None, "skcgcnn", "cgcnn", path or array-like, default=None
        ``None`` or ``"skcgcnn"``: skcgcnn's table
        (:func:`element_feature_table`, 91 columns). ``"cgcnn"``: the
        original CGCNN's ``atom_init.json`` (92 columns; bundled, MIT
        licence). A path: an ``atom_init.json`` of your own
        (:func:`read_atom_init`). An array: rows by atomic number, row ``z``
        for element ``z`` (row 0 is ignored), up to :data:`MAX_Z` + 1 rows.

    Returns
    -------
    table : ndarray of shape (MAX_Z + 1, n_features), float32
        Read-only; rows of elements without features are zeros.
    name : str
        ``"skcgcnn"``, ``"cgcnn"``, the path as given, or ``"array"``;
        recorded in model cards beside the table's fingerprint.

    Raises
    ------
    ValueError
        An unknown name, a malformed file or array.
    FileNotFoundError
        A path that does not exist.

    Examples
    --------
    >>> import numpy as np
    >>> from skcgcnn.features import resolve_element_features
    >>> table, name = resolve_element_features("cgcnn")
    >>> table.shape, name
    ((101, 92), 'cgcnn')
    >>> table, name = resolve_element_features(np.eye(101)[:, :10])  # a toy one-hot table
    >>> table.shape, name
    ((101, 10), 'array')
    """
    if element_features is None or (isinstance(element_features, str)
                                     and element_features == "skcgcnn"):
        return element_feature_table(), "skcgcnn"
    if isinstance(element_features, str) and element_features == "cgcnn":
        return _cgcnn_table(), "cgcnn"
    if isinstance(element_features, (str, os.PathLike)):
        if not os.path.exists(os.fspath(element_features)) and \
                not str(element_features).endswith(".json"):
            raise ValueError(f"element_features must be None, one of {ELEMENT_TABLES}, the path "
                             f"of an atom_init.json or an array, got {element_features!r}")
        return read_atom_init(element_features), os.fspath(element_features)
    if hasattr(element_features, "detach"):  # a torch tensor (a network's buffer)
        element_features = element_features.detach().cpu().numpy()
    try:
        array = np.asarray(element_features, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"element_features must be None, one of {ELEMENT_TABLES}, the path of "
                         f"an atom_init.json or an array, got {type(element_features).__name__}"
                         ) from exc
    if array.ndim != 2 or not 2 <= array.shape[0] <= MAX_Z + 1 or array.shape[1] < 1:
        raise ValueError(f"an element_features array must be 2-D with rows by atomic number "
                         f"(row z for element z, 2 to {MAX_Z + 1} rows), got shape {array.shape}")
    rows = {z: row for z, row in enumerate(array) if z >= 1}  # row 0 is no element
    return _as_table(rows, "element_features array"), "array"
