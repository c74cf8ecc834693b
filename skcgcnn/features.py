"""Element-property one-hot table: the atom features of the crystal graph.

Each element (Z = 1 to 100) is described by nine properties, each one-hot
encoded as in CGCNN's ``atom_init.json``, and concatenated into one row of
:data:`N_ATOM_FEATURES` zeros and ones. The properties come from pymatgen's
element data (ASE for covalent radii), so the table is computed, not shipped.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from functools import lru_cache

import numpy as np

__all__ = [
    "MAX_Z",
    "FEATURE_BLOCKS",
    "N_ATOM_FEATURES",
    "element_feature_table",
    "element_feature_fingerprint",
]

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


def element_feature_fingerprint() -> str:
    """Short hash of :func:`element_feature_table`, stored in model cards.

    Returns
    -------
    fingerprint : str
        The first 16 hex digits of the SHA-256 of the table's bytes.

    Examples
    --------
    >>> from skcgcnn.features import element_feature_fingerprint
    >>> len(element_feature_fingerprint())
    16
    """
    return hashlib.sha256(element_feature_table().tobytes()).hexdigest()[:16]
