"""Property tests of graph construction on random (also skewed) cells."""

import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import neighbor_list
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pymatgen.core import Lattice, Structure

from skcgcnn.graph import build_graph

SETTINGS = settings(max_examples=30, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _volume_factor(alpha, beta, gamma):
    """V / (abc); positive exactly when the three angles form a cell."""
    ca, cb, cg = np.cos(np.radians([alpha, beta, gamma]))
    return np.sqrt(max(1 - ca ** 2 - cb ** 2 - cg ** 2 + 2 * ca * cb * cg, 0.0))


@st.composite
def crystals(draw, max_atoms=6):
    lengths = [draw(st.floats(3.0, 8.0)) for _ in range(3)]
    angles = [draw(st.floats(60.0, 120.0)) for _ in range(3)]
    assume(_volume_factor(*angles) > 0.2)  # a valid, not degenerate cell
    n = draw(st.integers(1, max_atoms))
    numbers = draw(st.lists(st.integers(1, 100), min_size=n, max_size=n))
    frac = draw(st.lists(st.tuples(*[st.floats(0.0, 1.0, exclude_max=True)] * 3),
                         min_size=n, max_size=n))
    lattice = Lattice.from_parameters(*lengths, *angles)
    return Structure(lattice, numbers, frac)


radii = st.floats(4.0, 8.0)
max_nbrs = st.integers(1, 16)


def check_invariants(g, n_atoms, radius, max_num_nbr):
    assert g.n_atoms == n_atoms
    assert len(g.centers) == len(g.neighbors) == len(g.distances)
    assert (np.diff(g.centers) >= 0).all()  # centers ascending
    assert ((g.centers >= 0) & (g.centers < n_atoms)).all()
    assert ((g.neighbors >= 0) & (g.neighbors < n_atoms)).all()
    assert (g.distances > 0).all()
    assert (g.distances <= radius + 1e-6).all()
    assert np.isfinite(g.distances).all()
    counts = np.bincount(g.centers, minlength=n_atoms)
    assert (counts <= max_num_nbr).all()
    for c in range(n_atoms):
        assert (np.diff(g.distances[g.centers == c]) >= 0).all()


# Every generated crystal is ordered, has 1 to 6 atoms of elements 1 to 100 and a cell of
# positive volume: build_graph must build them all. Only unsupported elements, disordered
# sites and empty or oversized structures may raise (tests at the end of this file).


@SETTINGS
@given(structure=crystals(), radius=radii, max_num_nbr=max_nbrs)
def test_graph_invariants(structure, radius, max_num_nbr):
    g = build_graph(structure, radius=radius, max_num_nbr=max_num_nbr)
    check_invariants(g, len(structure), radius, max_num_nbr)
    np.testing.assert_array_equal(g.numbers, structure.atomic_numbers)
    assert g.radius == radius and g.max_num_nbr == max_num_nbr


@SETTINGS
@given(structure=crystals(), radius=radii, max_num_nbr=max_nbrs)
def test_graph_matches_ase_neighbour_list(structure, radius, max_num_nbr):
    """The kept distances are the nearest ones ASE finds within the radius."""
    g = build_graph(structure, radius=radius, max_num_nbr=max_num_nbr)
    atoms = Atoms(numbers=structure.atomic_numbers, positions=structure.cart_coords,
                  cell=structure.lattice.matrix, pbc=True)
    # a slightly larger cutoff, to see the neighbours sitting on the sphere
    i, j, d = neighbor_list("ijd", atoms, radius + 1e-3, self_interaction=False)
    for c in range(len(structure)):
        # build_graph drops only zero distances (the atom itself, d <= 1e-8 A);
        # overlapping atoms closer than that, or on the cutoff sphere, are
        # ambiguous at float precision, so such centers are not compared
        mask = (i == c) & (d > 1e-8)
        ref = np.sort(d[mask])
        if np.any(np.abs(ref - radius) < 1e-4) or np.any((d[i == c] > 1e-10) & (d[i == c] < 1e-7)):
            continue
        ref = ref[ref <= radius]
        got_mask = g.centers == c
        expected = ref[:max_num_nbr]
        assert got_mask.sum() == len(expected)
        np.testing.assert_allclose(g.distances[got_mask], expected, atol=1e-4)
        # neighbours named are the atoms at those distances
        for nbr, dist in zip(g.neighbors[got_mask], g.distances[got_mask]):
            assert np.any((j[mask] == nbr) & (np.abs(d[mask] - dist) < 1e-4))


@SETTINGS
@given(structure=crystals(max_atoms=4), radius=radii, max_num_nbr=max_nbrs,
       shift=st.tuples(*[st.floats(-1.0, 1.0)] * 3))
def test_translation_and_supercell_keep_neighbour_distances(structure, radius, max_num_nbr,
                                                            shift):
    g = build_graph(structure, radius=radius, max_num_nbr=max_num_nbr)

    def per_center(graph, n):
        return [graph.distances[graph.centers == c] for c in range(n)]

    n = len(structure)
    base = per_center(g, n)
    moved = structure.copy()
    moved.translate_sites(list(range(n)), shift, frac_coords=True, to_unit_cell=True)
    gm = build_graph(moved, radius=radius, max_num_nbr=max_num_nbr)
    for a, b in zip(base, per_center(gm, n)):
        # the same nearest distances; only neighbours sitting on the cutoff sphere may
        # come or go with the rounding of the moved coordinates
        n_common = min(len(a), len(b))
        np.testing.assert_allclose(a[:n_common], b[:n_common], atol=1e-4)
        extra = a[n_common:] if len(a) > len(b) else b[n_common:]
        np.testing.assert_allclose(extra, radius, atol=1e-4)
    sc = structure * (2, 1, 1)
    gs = build_graph(sc, radius=radius, max_num_nbr=max_num_nbr)
    check_invariants(gs, 2 * n, radius, max_num_nbr)
    sc_dist = per_center(gs, 2 * n)
    # pymatgen's supercell lists the images of each site together
    for c in range(n):
        for copy in (2 * c, 2 * c + 1):
            if len(sc_dist[copy]) == len(base[c]):
                np.testing.assert_allclose(sc_dist[copy], base[c], atol=1e-4)


@SETTINGS
@given(numbers=st.lists(st.sampled_from([0, 101, 105, 118]), min_size=1, max_size=3),
       good=st.lists(st.integers(1, 100), max_size=3))
def test_unsupported_numbers_raise_value_error(numbers, good):
    zs = good + numbers
    atoms = Atoms(numbers=zs, positions=np.random.default_rng(0).uniform(0, 5, (len(zs), 3)),
                  cell=[5, 5, 5], pbc=True)
    with pytest.raises(ValueError, match="atomic number"):
        build_graph(atoms)


def test_only_unbuildable_structures_raise():
    cell = Lattice.cubic(4.0)
    with pytest.raises(ValueError, match="disordered"):
        build_graph(Structure(cell, [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]]))
    with pytest.raises(ValueError, match="no atoms"):
        build_graph(Atoms(cell=[4, 4, 4], pbc=True))
    with pytest.raises(ValueError, match="more than max_atoms=1"):
        build_graph(Structure(cell, ["Cu", "Cu"], [[0, 0, 0], [0.5, 0.5, 0.5]]), max_atoms=1)
