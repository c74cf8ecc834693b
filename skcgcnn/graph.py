"""Crystal graphs and the scikit-learn transformer that builds them.

A crystal graph (Xie & Grossman; Lee & Asahi) has one node per atom in the
unit cell and an edge from each atom to each of its ``max_num_nbr`` nearest
neighbours within ``radius`` angstrom, periodic images included. The graph
keeps atomic numbers, edge indices and edge lengths only; the element
features and the Gaussian expansion of the distances are looked up in the
network, so a cached graph costs about 150 bytes per atom.
"""

from __future__ import annotations

import functools
import numbers
import os
import warnings
from dataclasses import dataclass

import numpy as np
from joblib import Memory, Parallel, delayed
from sklearn.base import BaseEstimator, TransformerMixin

from .features import MAX_Z

__all__ = ["CrystalGraph", "CrystalGraphTransformer", "build_graph", "as_graph_array",
           "read_structure_file", "IsolatedAtomWarning", "isolated_atoms_message"]

#: Atoms per neighbour-search call; larger cells are searched in chunks so that
#: memory stays bounded (about 100 MB per chunk at metallic densities).
_CENTER_CHUNK = 2048
#: Default largest cell accepted by :class:`CrystalGraphTransformer`.
DEFAULT_MAX_ATOMS = 20_000


@dataclass(eq=False)
class CrystalGraph:
    """The crystal graph of one structure.

    Parameters
    ----------
    numbers : ndarray of shape (n_atoms,), int16
        Atomic numbers.
    centers : ndarray of shape (n_edges,), int32
        Index of the atom each edge starts from, sorted ascending.
    neighbors : ndarray of shape (n_edges,), int32
        Index (in the unit cell) of the neighbouring atom; periodic images of
        an atom share its index.
    distances : ndarray of shape (n_edges,), float32
        Edge lengths in angstrom, ascending within each center.
    radius : float, default=8.0
        Cutoff the graph was built with, in angstrom.
    max_num_nbr : int, default=12
        Largest number of neighbours per atom the graph was built with.

    Notes
    -----
    An atom has at most ``max_num_nbr`` edges. An atom with fewer neighbours
    within the radius keeps only the edges it has (no padding, unlike the
    original CGCNN code). An atom with none (an isolated atom) receives no
    messages: each convolution updates its vector from itself alone, so it
    depends on its element only, and a crystal made only of isolated atoms (one
    atom in a 20 Å cell) is predicted from its composition, whatever its
    structure. :class:`CrystalGraphTransformer` warns about such crystals
    (:class:`IsolatedAtomWarning`).

    Examples
    --------
    >>> from pymatgen.core import Lattice, Structure
    >>> from skcgcnn import build_graph
    >>> nacl = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"],
    ...                                  [[0, 0, 0], [0.5, 0.5, 0.5]])
    >>> g = build_graph(nacl)
    >>> g.n_atoms, g.n_edges
    (8, 96)
    >>> round(float(g.distances[0]), 2)  # a/2
    2.82
    """

    numbers: np.ndarray
    centers: np.ndarray
    neighbors: np.ndarray
    distances: np.ndarray
    radius: float = 8.0
    max_num_nbr: int = 12

    @property
    def n_atoms(self) -> int:
        """Number of atoms (nodes)."""
        return len(self.numbers)

    @property
    def n_edges(self) -> int:
        """Number of directed edges."""
        return len(self.centers)

    @property
    def n_isolated(self) -> int:
        """Number of atoms without any neighbour within ``radius``."""
        return self.n_atoms - len(np.unique(self.centers))

    @property
    def nbytes(self) -> int:
        """Memory held by the graph's arrays, in bytes."""
        return sum(a.nbytes for a in (self.numbers, self.centers, self.neighbors, self.distances))

    def as_dict(self) -> dict:
        """JSON-serialisable dict (pymatgen style); see :meth:`from_dict`."""
        return {
            "@class": "CrystalGraph",
            "numbers": self.numbers.tolist(),
            "centers": self.centers.tolist(),
            "neighbors": self.neighbors.tolist(),
            "distances": self.distances.tolist(),
            "radius": self.radius,
            "max_num_nbr": self.max_num_nbr,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "CrystalGraph":
        """Rebuild a graph from :meth:`as_dict` output."""
        return cls(
            numbers=np.asarray(d["numbers"], dtype=np.int16),
            centers=np.asarray(d["centers"], dtype=np.int32),
            neighbors=np.asarray(d["neighbors"], dtype=np.int32),
            distances=np.asarray(d["distances"], dtype=np.float32),
            radius=float(d.get("radius", 8.0)),
            max_num_nbr=int(d.get("max_num_nbr", 12)),
        )

    def __repr__(self) -> str:
        return (f"CrystalGraph(n_atoms={self.n_atoms}, n_edges={self.n_edges}, "
                f"radius={self.radius}, max_num_nbr={self.max_num_nbr})")


class IsolatedAtomWarning(UserWarning):
    """Crystals have atoms with no neighbour within the cutoff radius.

    Such an atom receives no messages in the convolutions, so its vector
    depends on its element only (see :class:`CrystalGraph`).
    """


def _formula(numbers):
    """Reduced formula of atomic numbers ("Cu", "NaCl")."""
    from pymatgen.core import Composition, Element

    counts = np.bincount(np.asarray(numbers, dtype=np.int64))
    return Composition({Element.from_Z(int(z)): int(n) for z, n in enumerate(counts)
                        if n}).reduced_formula


def isolated_atoms_message(graphs, ids=None, shown=5):
    """What to tell about the crystals of ``graphs`` that have isolated atoms, or None.

    Parameters
    ----------
    graphs : sequence of CrystalGraph
    ids : sequence of str, optional
        Names of the crystals (e.g. material ids), shown instead of their index.
    shown : int, default=5
        Crystals named; the others are counted.

    Returns
    -------
    message : str or None
        None when every atom of every crystal has a neighbour within the
        radius.

    Examples
    --------
    >>> from ase import Atoms
    >>> from ase.build import bulk
    >>> from skcgcnn.graph import build_graph, isolated_atoms_message
    >>> graphs = [build_graph(bulk("Cu")), build_graph(Atoms("Cu", cell=[20] * 3, pbc=True))]
    >>> message = isolated_atoms_message(graphs, ids=["mp-30", "lonely"])
    >>> print(message[:message.index(".", 80) + 1])  # doctest: +NORMALIZE_WHITESPACE
    1 crystal(s) have atoms with no neighbour within radius=8.0 angstrom:
    'lonely' (Cu: 1 of 1 atoms isolated).
    """
    bad = [(i, g) for i, g in enumerate(graphs) if g.n_isolated]
    if not bad:
        return None
    named = []
    for i, g in bad[:shown]:
        what = f"{_formula(g.numbers)}: {g.n_isolated} of {g.n_atoms} atoms isolated"
        named.append(f"index {i} ({what})" if ids is None else f"{ids[i]!r} ({what})")
    more = f" and {len(bad) - shown} more" if len(bad) > shown else ""
    return (f"{len(bad)} crystal(s) have atoms with no neighbour within "
            f"radius={bad[0][1].radius} angstrom: {'; '.join(named)}{more}. An isolated atom "
            "receives no messages, so its vector depends on its element alone, and a crystal "
            "of isolated atoms is predicted from its composition whatever its structure; "
            "check the cell (a vacuum, wrong lattice units) or raise the radius")


def read_structure_file(path, where=""):
    """Read a structure file (CIF, POSCAR, anything pymatgen reads) with clear errors.

    pymatgen's per-file CIF notes (coordinates rounded, occupancies scaled)
    are silenced: one per crystal floods the output of a large set.

    Parameters
    ----------
    path : str or path-like
    where : str, default=""
        Where the path came from (" at index 3", " in row 3 of table.csv"),
        appended to error messages.

    Returns
    -------
    structure : pymatgen.core.Structure

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If pymatgen cannot read a structure from it.

    Examples
    --------
    >>> import os, tempfile
    >>> from skcgcnn.graph import read_structure_file
    >>> read_structure_file(os.path.join(tempfile.mkdtemp(), "missing.cif"), " at index 0")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: structure file at index 0 does not exist: '...missing.cif'
    """
    from pymatgen.core import Structure

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"structure file{where} does not exist: {path!r}")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="pymatgen.io.cif")
            return Structure.from_file(path)
    except Exception as exc:  # pymatgen raises many types for bad files
        raise ValueError(f"could not read a structure from {path!r}{where}: {exc}") from exc


_P1_OPS = (["x,y,z"], ["+x,+y,+z"])
#: Larger P1 cells go to pymatgen: the duplicate-site check below is quadratic in memory.
_P1_MAX_SITES = 1000
_CELL_KEYS = ("_cell_length_a", "_cell_length_b", "_cell_length_c",
              "_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma")


@functools.lru_cache(maxsize=1)
def _element_table():
    """Symbol -> (atomic number, electronegativity) of the elements with features."""
    from pymatgen.core import Element

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen notes the elements without an X
        return {el.symbol: (el.Z, el.X) for el in Element if el.Z <= MAX_Z}


def _column(data, key):
    """A CIF field as a list of strings (a lone value is a list of one; missing: empty)."""
    value = data.get(key, [])
    return [value] if isinstance(value, str) else list(value)


def _read_p1_cif(path):
    """Atomic numbers, cartesian coordinates and lattice of a plain P1 CIF, else None.

    Most CIFs of a crystal-graph data set (those pymatgen and the Materials
    Project write) list every atom with the identity as the only symmetry
    operation and full occupancies. Such a file is read here from pymatgen's
    CIF tokenizer in about 0.4 ms instead of 6 ms, with the sites in the
    order and the coordinates pymatgen's ``Structure.from_file`` gives (sorted
    by electronegativity, file order within an element; fractional
    coordinates within 1e-4 of 1/3 or 2/3 set to it, then wrapped into the
    cell), so the graphs are the same. Anything else returns None and is
    read by pymatgen: symmetry to apply, partial occupancies, oxidation-state
    or dummy labels, sites closer than 1e-4 in fractional coordinates
    (pymatgen refuses two atoms on one site), elements without an
    electronegativity, cells of more than 1,000 sites, errors.
    """
    if not os.fspath(path).lower().endswith(".cif"):
        return None
    from pymatgen.core import Lattice
    from pymatgen.io.cif import CifFile, str2float

    try:
        with open(path) as f:
            blocks = list(CifFile.from_str(f.read()).data.values())
        if len(blocks) != 1:
            return None
        data = blocks[0].data
        ops = _column(data, "_symmetry_equiv_pos_as_xyz") or _column(
            data, "_space_group_symop_operation_xyz")
        if [op.replace(" ", "").lower() for op in ops] not in _P1_OPS:
            return None
        symbols = _column(data, "_atom_site_type_symbol")
        table = _element_table()
        if not symbols or any(sym not in table or not np.isfinite(table[sym][1]) for sym in symbols):
            return None
        if any(str2float(o) != 1.0 for o in _column(data, "_atom_site_occupancy")):
            return None
        frac = np.array([[str2float(v) for v in _column(data, f"_atom_site_fract_{axis}")]
                         for axis in "xyz"], dtype=float).T
        lattice = Lattice.from_parameters(*(str2float(data[k]) for k in _CELL_KEYS)).matrix
    except Exception:  # pymatgen reads it again and reports what is wrong
        return None
    if (frac.shape != (len(symbols), 3) or len(frac) > _P1_MAX_SITES
            or abs(np.linalg.det(lattice)) < 1e-8):
        return None
    for ideal in (1 / 3, 2 / 3):  # pymatgen rounds 0.3333 to 1/3 (its CIF "rounding note")
        frac[np.abs(frac / ideal - 1) <= 1e-4] = ideal
    frac = frac - np.floor(frac)
    if len(frac) > 1:
        diff = frac[:, None, :] - frac[None, :, :]
        close = (np.abs(diff - np.round(diff)) < 1e-4).all(axis=2)
        if close.sum() > len(frac):  # some site other than itself within the tolerance
            return None
    order = sorted(range(len(symbols)), key=lambda i: (table[symbols[i]][1], symbols[i]))
    numbers = np.array([table[symbols[i]][0] for i in order], dtype=np.int64)
    return numbers, frac[order] @ lattice, np.asarray(lattice, dtype=float)


def _site_numbers(structure):
    """Atomic numbers of an ordered pymatgen Structure from its sites' species
    mappings (twice as fast as ``site.specie``), or None when a site is not one
    species at full occupancy or the layout is not the expected one."""
    numbers = []
    try:
        for site in structure:
            (species, occupancy), = site.species._data.items()
            if occupancy != 1:
                return None
            numbers.append(species.Z)
    except (AttributeError, ValueError, TypeError):
        return None
    return np.array(numbers, dtype=np.int64)


def _structure_arrays(obj, index=None):
    """Atomic numbers, cartesian coordinates, lattice and pbc of one input.

    Accepts a pymatgen ``Structure``, an ASE ``Atoms`` or a path to any file
    pymatgen reads (CIF, POSCAR, ...). Raises a clear error otherwise.
    """
    where = "" if index is None else f" at index {index}"
    if isinstance(obj, (str, os.PathLike)):
        arrays = _read_p1_cif(obj)
        if arrays is not None:
            return (*arrays, np.ones(3, dtype=np.int64), where)
        obj = read_structure_file(obj, where)
    if hasattr(obj, "get_atomic_numbers") and hasattr(obj, "get_cell"):  # ase.Atoms
        numbers = np.asarray(obj.get_atomic_numbers())
        coords = np.asarray(obj.get_positions(), dtype=float)
        lattice = np.asarray(obj.get_cell()[:], dtype=float)
        pbc = np.asarray(obj.get_pbc(), dtype=np.int64)
        if abs(np.linalg.det(lattice)) < 1e-8:
            if pbc.any():
                raise ValueError(f"ase.Atoms{where} is periodic but its cell has zero volume")
            # a molecule or cluster: any box holding it serves the neighbour search
            lattice = np.diag(np.ptp(coords, axis=0) + 1.0) if len(coords) else np.eye(3)
    elif hasattr(obj, "lattice") and hasattr(obj, "cart_coords"):  # pymatgen Structure
        try:  # one pass over the sites; pymatgen refuses it for disordered ones
            numbers = _site_numbers(obj)
            if numbers is None:
                numbers = np.array([site.specie.Z for site in obj], dtype=np.int64)
        except AttributeError:
            raise ValueError(
                f"structure{where} ({obj.composition.reduced_formula}) has disordered "
                "(partially occupied) sites; order it first, for example with "
                "pymatgen's OrderDisorderedStructureTransformation"
            ) from None
        bad = (numbers < 1) | (numbers > MAX_Z)
        if bad.any():
            # a DummySpecies has a meaningless "atomic number" (a hash): name the species
            raise ValueError(
                f"structure{where} contains species {str(obj[int(np.argmax(bad))].specie)!r}, "
                f"which is not an element with features (supported: atomic number 1 to {MAX_Z})")
        coords = obj.lattice.get_cartesian_coords(obj.frac_coords)
        lattice = np.asarray(obj.lattice.matrix, dtype=float)
        pbc = np.asarray(obj.pbc, dtype=np.int64)
    else:
        raise TypeError(
            f"expected a pymatgen Structure, an ase.Atoms or a file path{where}, "
            f"got {type(obj).__name__}"
        )
    return numbers, coords, lattice, pbc, where


def _edge_order(c, p, d, n_centers, n_atoms):
    """Order of the edges by center, then stored (float32) distance, then neighbour.

    Distances are compared as they are stored, so that which of two equally
    distant atoms is kept at the 12th place does not hang on rounding noise
    of the neighbour search. One sort of int64 keys: center, the bits of the
    positive float32 distance (which order like the floats) and neighbour.
    """
    c_bits, p_bits = int(n_centers).bit_length(), int(n_atoms).bit_length()
    if c_bits + 31 + p_bits > 63:  # beyond two million atoms: three keys
        return np.lexsort((p, d, c))
    key = (c.astype(np.int64) << (31 + p_bits)) | (d.view(np.int32).astype(np.int64) << p_bits)
    return np.argsort(key | p)  # keys are unique but for identical edges


#: The first neighbour search of a crystal looks within the radius expected to hold
#: this many atoms per atom at the crystal's mean density (about 2x ``max_num_nbr``)
#: instead of the full cutoff: it finds far fewer candidates to sort. Atoms whose
#: ``max_num_nbr`` nearest are not all safely inside are searched again at the cutoff.
_FIRST_SEARCH_NEIGHBORS = 2.0
#: Margin (angstrom) by which the last kept neighbour must lie inside the first
#: search's radius for that atom's edges to be final.
_FIRST_SEARCH_MARGIN = 1e-3


def _nearest_edges(coords, lattice, pbc, centers, r, max_num_nbr):
    """The ``max_num_nbr`` nearest neighbours within ``r`` of the atoms ``centers``.

    ``centers`` is a slice or a sorted index array. Returns centers,
    neighbours and float32 distances, ordered by :func:`_edge_order`, and per
    center whether its list is final for any larger cutoff: it kept
    ``max_num_nbr`` neighbours, the last one closer than ``r`` by
    :data:`_FIRST_SEARCH_MARGIN`.
    """
    from pymatgen.optimization.neighbors import find_points_in_spheres

    index = np.arange(len(coords))[centers]
    n_centers = len(index)
    c, p, _, d = find_points_in_spheres(
        coords, np.ascontiguousarray(coords[centers]), r=float(r),
        pbc=pbc, lattice=lattice, tol=1e-8,
    )
    keep = d > 1e-8  # the atom itself; its periodic images stay
    c, p, d = c[keep], p[keep], d[keep].astype(np.float32)
    order = _edge_order(c, p, d, n_centers, len(coords))
    c, p, d = c[order], p[order], d[order]
    counts = np.bincount(c, minlength=n_centers)
    first = np.cumsum(counts) - counts  # first edge of each center
    keep = np.arange(len(c)) - np.repeat(first, counts) < max_num_nbr
    final = counts >= max_num_nbr
    if max_num_nbr > 0:
        final[final] = d[first[final] + max_num_nbr - 1] < r - _FIRST_SEARCH_MARGIN
    return index[c[keep]], p[keep], d[keep], final


def _neighbor_arrays(numbers, coords, lattice, pbc, radius, max_num_nbr):
    """Edges of the graph: the ``max_num_nbr`` nearest neighbours per atom.

    Each chunk of atoms is first searched within a smaller radius expected to
    hold about twice ``max_num_nbr`` atoms (:data:`_FIRST_SEARCH_NEIGHBORS`);
    only the atoms whose nearest neighbours are not all safely inside it are
    searched again at ``radius``. The same edges as one search at ``radius``,
    with far fewer candidates to sort.
    """
    n = len(numbers)
    coords = np.ascontiguousarray(coords, dtype=float)
    lattice = np.ascontiguousarray(lattice, dtype=float)
    volume = abs(float(np.linalg.det(lattice)))
    r_first = radius
    if n and volume > 0 and max_num_nbr > 0:
        r_first = min(radius, (3 * volume * _FIRST_SEARCH_NEIGHBORS * max_num_nbr
                               / (4 * np.pi * n)) ** (1 / 3))
    parts = []
    for start in range(0, max(n, 1), _CENTER_CHUNK):
        chunk = slice(start, min(start + _CENTER_CHUNK, n))
        if chunk.stop <= start:
            break
        c, p, d, final = _nearest_edges(coords, lattice, pbc, chunk, r_first, max_num_nbr)
        if r_first < radius and not final.all():
            redo = np.flatnonzero(~final) + start
            done = np.isin(c, redo, invert=True)
            c2, p2, d2, _ = _nearest_edges(coords, lattice, pbc, redo, radius, max_num_nbr)
            c, p, d = (np.concatenate([x[done], x2]) for x, x2 in ((c, c2), (p, p2), (d, d2)))
            order = np.argsort(c, kind="stable")
            c, p, d = c[order], p[order], d[order]
        parts.append((c, p, d))
    if not parts:
        empty = np.zeros(0)
        parts = [(empty, empty, empty)]
    centers, neighbors, distances = (np.concatenate(x) for x in zip(*parts))
    return (centers.astype(np.int32), neighbors.astype(np.int32),
            distances.astype(np.float32))


def _graph_from_arrays(numbers, coords, lattice, pbc, radius, max_num_nbr):
    centers, neighbors, distances = _neighbor_arrays(
        numbers, coords, lattice, pbc, radius, max_num_nbr)
    return CrystalGraph(numbers.astype(np.int16), centers, neighbors, distances,
                        radius, max_num_nbr)


def build_graph(structure, radius=8.0, max_num_nbr=12, max_atoms=DEFAULT_MAX_ATOMS,
                index=None, _cached=None):
    """Build the crystal graph of one structure.

    Parameters
    ----------
    structure : pymatgen Structure, ase.Atoms or path
        The crystal. A path is read with ``Structure.from_file`` (CIF, POSCAR, ...).
    radius : float, default=8.0
        Neighbour cutoff in angstrom.
    max_num_nbr : int, default=12
        Largest number of neighbours kept per atom (the nearest ones).
    max_atoms : int, default=20000
        Larger cells are refused with a ValueError before any memory is spent.
    index : int, optional
        Position of the structure in a list, named in error messages.

    Returns
    -------
    graph : CrystalGraph

    Examples
    --------
    >>> from ase.build import bulk
    >>> from skcgcnn import build_graph
    >>> g = build_graph(bulk("Cu", "fcc", a=3.6))
    >>> g.n_atoms, g.n_edges, round(float(g.distances.max()), 3)  # 12 at a/sqrt(2)
    (1, 12, 2.546)
    """
    numbers, coords, lattice, pbc, where = _structure_arrays(structure, index)
    if len(numbers) == 0:
        raise ValueError(f"structure{where} has no atoms")
    if len(numbers) > max_atoms:
        raise ValueError(
            f"structure{where} has {len(numbers)} atoms, more than max_atoms={max_atoms}; "
            "raise max_atoms if you have the memory (about 2 kB per atom while featurizing)"
        )
    bad = (numbers < 1) | (numbers > MAX_Z)
    if bad.any():
        raise ValueError(
            f"structure{where} contains atomic number {int(numbers[bad][0])}, which has no "
            f"element features (supported: 1 to {MAX_Z})"
        )
    build = _graph_from_arrays if _cached is None else _cached
    return build(numbers, coords, lattice, pbc, float(radius), int(max_num_nbr))


#: Errors of one crystal that ``skip_invalid`` skips (see ``CrystalGraphTransformer._build``).
_INVALID_CRYSTAL_ERRORS = (ValueError, OSError, TypeError)


def _graph_or_error(structure, index=None, **kwargs):
    """:func:`build_graph`, returning the error of a crystal that cannot be featurized."""
    try:
        return build_graph(structure, index=index, **kwargs)
    except _INVALID_CRYSTAL_ERRORS as exc:
        return exc


def _graph_array_or_none(X):
    """``X`` as a 1-D object ndarray if it is a non-empty sequence of CrystalGraph, else None.

    The one test of "is X already graphs?" (estimators, cli, stats): a 1-D
    object ndarray of graphs is returned as it is, a list, tuple or pandas
    Series of graphs packed by :func:`as_graph_array`; anything else
    (structures, paths, mixed items, an empty sequence) gives ``None``.
    """
    if hasattr(X, "iloc"):  # pandas Series
        X = X.to_numpy()
    if isinstance(X, np.ndarray):
        if X.dtype != object or X.ndim != 1:
            return None
    elif not isinstance(X, (list, tuple)):
        return None
    if len(X) == 0 or not all(isinstance(g, CrystalGraph) for g in X):
        return None
    return X if isinstance(X, np.ndarray) else as_graph_array(X)


def as_graph_array(graphs) -> np.ndarray:
    """Pack graphs into a 1-D object ndarray (the form skorch and sklearn index)."""
    out = np.empty(len(graphs), dtype=object)
    for i, g in enumerate(graphs):
        out[i] = g
    return out


def _as_list(X, name="X"):
    """Materialise a list, tuple, ndarray or pandas Series of inputs."""
    if hasattr(X, "iloc"):  # pandas Series / one-column DataFrame
        X = X.to_numpy().ravel() if getattr(X, "ndim", 1) == 2 else X.to_numpy()
    if isinstance(X, (str, os.PathLike)) or hasattr(X, "lattice") or hasattr(X, "get_cell"):
        raise TypeError(f"{name} must be a sequence of structures, got a single "
                        f"{type(X).__name__}; wrap it in a list")
    try:
        X = list(X)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of structures, got "
                        f"{type(X).__name__}") from None
    if len(X) == 0:
        raise ValueError(f"{name} is empty: expected at least one structure")
    return X


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _check_param(estimator, name, valid, expected):
    """Raise a ValueError naming the parameter, the estimator and the value, unless
    ``valid(value)``; ``expected`` says what the parameter must be."""
    value = getattr(estimator, name)
    if not valid(value):
        raise ValueError(f"the {name!r} parameter of {type(estimator).__name__} must be "
                         f"{expected}, got {value!r}")


def _check_positive(estimator, name, low=0.0):
    """A finite number greater than ``low``."""
    _check_param(estimator, name, lambda v: _is_number(v) and np.isfinite(v) and v > low,
                 f"a finite number greater than {low:g}")


def _check_int(estimator, name, low, none=False):
    """An int of at least ``low`` (or None when ``none``)."""
    _check_param(estimator, name, lambda v: (none and v is None) or (_is_int(v) and v >= low),
                 f"an int of at least {low}" + (" or None" if none else ""))


def _check_choice(estimator, name, options):
    """One of the strings ``options``."""
    _check_param(estimator, name, lambda v: isinstance(v, str) and v in options,
                 "one of " + ", ".join(map(repr, sorted(options))))


def _check_n_jobs(estimator, none=True):
    """joblib's n_jobs: an int (``-1``: all cores), or None."""
    _check_param(estimator, "n_jobs", lambda v: (none and v is None) or _is_int(v),
                 "an int" + (" or None" if none else ""))


class StructureTransformerMixin(TransformerMixin):
    """Mixin of the stateless transformers of structures (graphs, SOAP vectors).

    ``fit`` only validates the parameters (:meth:`_check_params`, plain
    checks that raise a ValueError naming the parameter), and the estimator
    tags say that ``X`` is a sequence of structures or file paths, not a 2-D
    array.
    """

    def _check_params(self):
        """Raise a ValueError for an invalid constructor parameter."""

    def fit(self, X=None, y=None):
        """Validate the parameters; the transformer learns nothing.

        Parameters
        ----------
        X, y : ignored

        Returns
        -------
        self
        """
        self._check_params()
        self.fitted_ = True
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        return tags


class CrystalGraphTransformer(StructureTransformerMixin, BaseEstimator):
    """Turn crystal structures into crystal graphs (a stateless transformer).

    Parameters
    ----------
    radius : float, default=8.0
        Neighbour cutoff in angstrom (the paper's 8 Å).
    max_num_nbr : int, default=12
        Number of nearest neighbours kept per atom (the paper's 12). Atoms with
        fewer neighbours within ``radius`` keep the ones they have; see
        :class:`CrystalGraph`.
    max_atoms : int, default=20000
        Cells with more atoms are refused with a ValueError. The neighbour
        search runs in chunks of 2,048 atoms, so memory grows linearly.
    n_jobs : int, default=None
        Processes for featurization (joblib semantics: ``-1`` uses all cores).
    memory : str, joblib.Memory or None, default=None
        Cache of graphs on disk, as in ``Pipeline(memory=...)``: a repeated
        transform of the same crystals (same coordinates, same settings) is
        read from the cache.
    verbose : bool or int, default=False
        Show a tqdm progress bar over crystals.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from skcgcnn import CrystalGraphTransformer
    >>> graphs = CrystalGraphTransformer().fit_transform([bulk("Si"), bulk("NaCl", "rocksalt", a=5.64)])
    >>> graphs.shape, [g.n_atoms for g in graphs]
    ((2,), [2, 2])
    """

    def _check_params(self):
        _check_positive(self, "radius")
        _check_int(self, "max_num_nbr", 1)
        _check_int(self, "max_atoms", 1)
        _check_n_jobs(self)
        _check_param(self, "memory",
                     lambda v: v is None or isinstance(v, (str, os.PathLike, Memory)),
                     "a folder path, a joblib.Memory or None")
        _check_param(self, "verbose", lambda v: isinstance(v, (bool, np.bool_)) or _is_int(v),
                     "a bool or an int")

    def __init__(self, radius=8.0, max_num_nbr=12, max_atoms=DEFAULT_MAX_ATOMS,
                 n_jobs=None, memory=None, verbose=False):
        self.radius = radius
        self.max_num_nbr = max_num_nbr
        self.max_atoms = max_atoms
        self.n_jobs = n_jobs
        self.memory = memory
        self.verbose = verbose

    def transform(self, X):
        """Build the graph of every structure.

        Parameters
        ----------
        X : sequence of Structure, ase.Atoms or paths (list, ndarray, pandas Series)

        Returns
        -------
        graphs : ndarray of shape (n_structures,), dtype object
            One :class:`CrystalGraph` per structure.

        Warns
        -----
        IsolatedAtomWarning
            Once per call, naming (by index and formula) the crystals that have
            atoms with no neighbour within ``radius``: a crystal of such atoms
            is predicted from its composition alone.
        """
        graphs, _ = self._build(X)
        message = isolated_atoms_message(graphs)
        if message is not None:
            warnings.warn(message, IsolatedAtomWarning, stacklevel=3)  # past set_output's wrapper
        return graphs

    def _build(self, X, skip_invalid=False):
        """The graphs of ``X`` and, with ``skip_invalid``, the crystals left out.

        Without ``skip_invalid`` the first crystal that cannot be read or
        featurized raises. With it, such crystals (an unreadable file, a
        disordered structure, an element without features, ...: the
        ``ValueError``, ``OSError`` or ``TypeError`` of :func:`build_graph`)
        are left out of ``graphs`` and returned as ``(index, error)`` pairs.
        The progress bar is closed either way, so that what follows starts on
        a line of its own.
        """
        self._check_params()
        X = _as_list(X)
        cached = None
        if self.memory is not None:
            memory = self.memory if isinstance(self.memory, Memory) else Memory(self.memory, verbose=0)
            cached = memory.cache(_graph_from_arrays)
        args = dict(radius=self.radius, max_num_nbr=self.max_num_nbr,
                    max_atoms=self.max_atoms, _cached=cached)
        build = _graph_or_error if skip_invalid else build_graph
        items, bar = enumerate(X), None
        if self.verbose:
            from tqdm.auto import tqdm

            items = bar = tqdm(items, total=len(X), desc="crystal graphs", unit="crystal")
        try:
            if self.n_jobs in (None, 1):
                results = [build(s, index=i, **args) for i, s in items]
            else:
                results = Parallel(n_jobs=self.n_jobs, batch_size=64)(
                    delayed(build)(s, index=i, **args) for i, s in items)
        finally:
            if bar is not None:
                bar.close()
        errors = [(i, r) for i, r in enumerate(results) if isinstance(r, Exception)]
        return as_graph_array([r for r in results if not isinstance(r, Exception)]), errors
