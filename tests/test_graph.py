"""Tests of skcgcnn.graph: crystal graphs and CrystalGraphTransformer."""

import json
import pickle
import sys
import warnings
from functools import lru_cache

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from pymatgen.core import DummySpecies, Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor
from sklearn.base import clone

import skcgcnn.graph as graph_module
from skcgcnn.data import collate_graphs
from skcgcnn.graph import CrystalGraph, CrystalGraphTransformer, as_graph_array, build_graph
from skcgcnn.model import CGCNN

A_NACL = 5.64


@lru_cache(maxsize=None)
def _nacl(a):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5]])


def nacl(a=A_NACL):
    """Rocksalt NaCl, conventional cubic cell: 4 Na then 4 Cl (a fresh copy)."""
    return _nacl(a).copy()


def skewed():
    """A small triclinic cell with three different atoms."""
    lattice = Lattice.from_parameters(4.1, 5.3, 6.2, 78, 95, 104)
    return Structure(lattice, ["Li", "Fe", "O"],
                     [[0, 0, 0], [0.31, 0.52, 0.13], [0.7, 0.2, 0.55]])


def assert_same_graph(g1, g2, atol=0.0):
    np.testing.assert_array_equal(g1.numbers, g2.numbers)
    np.testing.assert_array_equal(g1.centers, g2.centers)
    np.testing.assert_array_equal(g1.neighbors, g2.neighbors)
    if atol:
        np.testing.assert_allclose(g1.distances, g2.distances, rtol=0, atol=atol)
    else:
        np.testing.assert_array_equal(g1.distances, g2.distances)
    assert g1.radius == g2.radius
    assert g1.max_num_nbr == g2.max_num_nbr


def assert_invariants(g, radius, max_num_nbr):
    n = g.n_atoms
    assert g.centers.dtype == np.int32 and g.neighbors.dtype == np.int32
    assert g.distances.dtype == np.float32 and g.numbers.dtype == np.int16
    assert len(g.centers) == len(g.neighbors) == len(g.distances)
    assert (np.diff(g.centers) >= 0).all()
    assert ((g.centers >= 0) & (g.centers < n)).all()
    assert ((g.neighbors >= 0) & (g.neighbors < n)).all()
    assert (g.distances > 0).all() and (g.distances <= radius + 1e-5).all()
    for c in range(n):
        d = g.distances[g.centers == c]
        assert len(d) <= max_num_nbr
        assert (np.diff(d) >= 0).all()


# ------------------------------------------------------------ hand-checked graphs
def test_nacl_rocksalt_neighbours():
    s = nacl()
    g = build_graph(s)
    assert g.n_atoms == 8
    assert g.n_edges == 96
    np.testing.assert_array_equal(g.numbers, s.atomic_numbers)
    np.testing.assert_array_equal(np.bincount(g.centers), [12] * 8)
    is_na = g.numbers == 11
    for c in range(8):
        d = g.distances[g.centers == c]
        nbr = g.neighbors[g.centers == c]
        # 6 nearest: the other species at a/2
        np.testing.assert_allclose(d[:6], A_NACL / 2, rtol=1e-5)
        assert (is_na[nbr[:6]] != is_na[c]).all()
        # then 6 of the 12 same-species neighbours at a/sqrt(2)
        np.testing.assert_allclose(d[6:], A_NACL / np.sqrt(2), rtol=1e-5)
        assert (is_na[nbr[6:]] == is_na[c]).all()
    assert_invariants(g, 8.0, 12)


def test_fcc_cu_primitive_neighbours_are_its_images():
    a = 3.6
    g = build_graph(bulk("Cu", "fcc", a=a))
    assert g.n_atoms == 1 and g.n_edges == 12
    np.testing.assert_array_equal(g.numbers, [29])
    np.testing.assert_array_equal(g.centers, np.zeros(12))
    np.testing.assert_array_equal(g.neighbors, np.zeros(12))  # periodic images of itself
    np.testing.assert_allclose(g.distances, a / np.sqrt(2), rtol=1e-5)


def test_bcc_fe_neighbours():
    a = 2.87
    g = build_graph(bulk("Fe", "bcc", a=a))
    assert g.n_atoms == 1 and g.n_edges == 12
    np.testing.assert_allclose(g.distances[:8], a * np.sqrt(3) / 2, rtol=1e-5)
    np.testing.assert_allclose(g.distances[8:], a, rtol=1e-5)
    np.testing.assert_array_equal(g.neighbors, 0)


def test_distances_sorted_per_center_skewed_cell():
    g = build_graph(skewed(), radius=6.0, max_num_nbr=9)
    assert_invariants(g, 6.0, 9)
    np.testing.assert_array_equal(np.bincount(g.centers), [9, 9, 9])


def test_max_num_nbr_respected():
    for k in (1, 4, 6, 7, 20):
        g = build_graph(nacl(), max_num_nbr=k)
        assert g.max_num_nbr == k
        np.testing.assert_array_equal(np.bincount(g.centers, minlength=8), [k] * 8)
        assert_invariants(g, 8.0, k)
    g = build_graph(nacl(), max_num_nbr=6)
    np.testing.assert_allclose(g.distances, A_NACL / 2, rtol=1e-5)


def _block_with_lone_atom():
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 3))
    atoms.cell[2, 2] += 6.0
    return atoms + Atoms("Cu", positions=[[5.4, 5.4, 13.8]])


@pytest.mark.parametrize("make", [
    lambda: skewed(),
    lambda: nacl(),
    lambda: bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2)),
    # an atom in vacuum beside a dense block: it needs the second search at the cutoff
    lambda: _block_with_lone_atom(),
    # a dense cluster with an outlier far away, in a big box
    lambda: Atoms("Cu9", positions=np.r_[np.random.default_rng(0).normal(0, 1.5, (8, 3)),
                                         [[9.0, 9.0, 9.0]]] + 10.0,
                  cell=np.eye(3) * 20.0, pbc=True),
])
@pytest.mark.parametrize("max_num_nbr", [1, 12, 40])
def test_first_search_within_small_radius_gives_the_edges_of_one_search(monkeypatch, make,
                                                                        max_num_nbr):
    # reference: one neighbour search at the full cutoff
    structure = make()
    fast = build_graph(structure, max_num_nbr=max_num_nbr)
    monkeypatch.setattr(graph_module, "_FIRST_SEARCH_NEIGHBORS", 1e9)
    reference = build_graph(structure, max_num_nbr=max_num_nbr)
    for name in ("centers", "neighbors", "distances"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(reference, name))
    assert_invariants(fast, 8.0, max_num_nbr)


def test_small_radius_gives_fewer_neighbours_without_padding():
    # radius 3 A holds only the 6 nearest (a/2 = 2.82 A); no padding to 12
    g = build_graph(nacl(), radius=3.0)
    assert g.radius == 3.0
    np.testing.assert_array_equal(np.bincount(g.centers), [6] * 8)
    np.testing.assert_allclose(g.distances, A_NACL / 2, rtol=1e-5)
    assert g.n_edges == 48


def test_isolated_atom_has_no_edges_and_model_runs():
    atoms = Atoms("Cu", positions=[[0, 0, 0]], cell=[20, 20, 20], pbc=True)
    g = build_graph(atoms)
    assert g.n_atoms == 1 and g.n_edges == 0
    assert g.centers.shape == g.neighbors.shape == g.distances.shape == (0,)
    assert g.centers.dtype == np.int32 and g.distances.dtype == np.float32
    # batched with a normal crystal, in eval and training mode, the network runs
    torch.manual_seed(0)
    model = CGCNN(atom_fea_len=8, n_conv=2, h_fea_len=8)
    X, _ = collate_graphs([(g, 0.0), (build_graph(bulk("Cu", a=3.6)), 1.0)])
    for train in (False, True):
        model.train(train)
        out = model(**X)
        assert out.shape == (2,)
        assert torch.isfinite(out).all()
    model.eval()
    Xa, _ = collate_graphs([(g, 0.0)])
    out = model(**Xa)
    assert out.shape == (1,) and torch.isfinite(out).all()


@pytest.mark.parametrize("box", [20.0, 100.0, 1000.0])
def test_isolated_atoms_are_named_in_a_warning(box):
    # one Cu atom alone in its cell was predicted silently, and identically for every box
    lonely = Atoms("Cu", positions=[[0, 0, 0]], cell=[box] * 3, pbc=True)
    half = Atoms("Cu2", positions=[[0, 0, 0], [1.0, 0, 0]], cell=[box] * 3, pbc=True)
    X = [bulk("Cu", a=3.6), lonely, nacl()]
    with pytest.warns(graph_module.IsolatedAtomWarning) as record:
        graphs = CrystalGraphTransformer().transform(X)
    # other libraries may warn too (older pymatgen or numpy): count only ours
    record = [w for w in record if issubclass(w.category, graph_module.IsolatedAtomWarning)]
    assert len(record) == 1  # one warning per call, not one per crystal
    message = str(record[0].message)
    assert message.startswith("1 crystal(s) have atoms with no neighbour within radius=8.0")
    assert "index 1 (Cu: 1 of 1 atoms isolated)" in message
    assert "index 0" not in message and "index 2" not in message
    assert record[0].filename == __file__  # points at the caller, not at sklearn's wrapper
    assert [g.n_isolated for g in graphs] == [0, 1, 0]
    # a pair of atoms has neighbours: no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", graph_module.IsolatedAtomWarning)
        assert CrystalGraphTransformer().transform([half])[0].n_isolated == 0


def test_isolated_atoms_message_names_ids_and_counts_the_rest():
    lonely = build_graph(Atoms("Cu", cell=[20] * 3, pbc=True))
    ok = build_graph(bulk("Cu"))
    assert graph_module.isolated_atoms_message([ok, ok]) is None
    graphs = [ok] + [lonely] * 7
    message = graph_module.isolated_atoms_message(graphs, ids=[f"c{i}" for i in range(8)],
                                                  shown=5)
    assert message.startswith("7 crystal(s)")
    assert "'c1' (Cu: 1 of 1 atoms isolated)" in message and "'c5'" in message
    assert "'c6'" not in message and "and 2 more" in message


def test_build_skips_invalid_crystals_when_asked(tmp_path):
    bad = tmp_path / "bad.cif"
    bad.write_text("this is not a cif\n")
    X = [bulk("Cu"), str(bad), Atoms("Cu", cell=[20] * 3, pbc=True), Structure(
        Lattice.cubic(3), [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]]), nacl()]
    with pytest.raises(ValueError, match="bad.cif"):
        CrystalGraphTransformer()._build(X)
    graphs, errors = CrystalGraphTransformer()._build(X, skip_invalid=True)
    assert [g.n_atoms for g in graphs] == [1, 1, 8]
    assert [i for i, _ in errors] == [1, 3]
    assert "bad.cif" in str(errors[0][1]) and "disordered" in str(errors[1][1])
    graphs2, errors2 = CrystalGraphTransformer(n_jobs=2)._build(X, skip_invalid=True)
    assert [i for i, _ in errors2] == [1, 3] and len(graphs2) == 3


def test_progress_bar_is_closed_when_a_crystal_fails(tmp_path, capsys):
    # an error used to be glued to the end of the progress bar's line
    bad = tmp_path / "bad.cif"
    bad.write_text("garbage\n")
    try:
        CrystalGraphTransformer(verbose=True).transform([bulk("Cu"), bulk("Cu"), str(bad)])
    except ValueError as exc:  # reported while the traceback is alive, as the CLI does
        sys.stderr.write(f"error: {exc}\n")
    err = capsys.readouterr().err
    assert "crystal graphs" in err and "\nerror: could not read" in err


def test_ase_pymatgen_and_cif_give_identical_graphs(tmp_path):
    s = skewed()
    atoms = AseAtomsAdaptor.get_atoms(s)
    path = tmp_path / "skewed.cif"
    s.to(filename=str(path))
    g_pmg = build_graph(s)
    g_ase = build_graph(atoms)
    assert_same_graph(g_pmg, g_ase, atol=1e-5)
    g_cif = build_graph(path)
    assert_same_graph(g_pmg, g_cif, atol=1e-4)
    g_str = build_graph(str(path))
    assert_same_graph(g_cif, g_str)


def test_transformer_output_is_object_array_of_graphs():
    X = [nacl(), bulk("Cu", a=3.6), bulk("Si")]
    out = CrystalGraphTransformer().fit_transform(X)
    assert isinstance(out, np.ndarray) and out.dtype == object and out.shape == (3,)
    assert all(isinstance(g, CrystalGraph) for g in out)
    assert [g.n_atoms for g in out] == [8, 1, 2]
    assert_same_graph(out[0], build_graph(nacl()))


def test_pandas_series_input():
    pd = pytest.importorskip("pandas")
    X = [nacl(), bulk("Cu", a=3.6)]
    series = pd.Series(X, index=[10, 20])
    out = CrystalGraphTransformer().transform(series)
    ref = CrystalGraphTransformer().transform(X)
    assert out.shape == (2,)
    for a, b in zip(out, ref):
        assert_same_graph(a, b)
    frame = pd.DataFrame({"structure": X})
    out_df = CrystalGraphTransformer().transform(frame)
    assert [g.n_atoms for g in out_df] == [8, 1]


def test_n_jobs_2_same_as_n_jobs_1():
    X = [nacl(), bulk("Cu", a=3.6), skewed(), bulk("Fe", "bcc", a=2.87)]
    serial = CrystalGraphTransformer(n_jobs=1).transform(X)
    parallel = CrystalGraphTransformer(n_jobs=2).transform(X)
    assert len(parallel) == len(serial) == 4
    for a, b in zip(serial, parallel):
        assert_same_graph(a, b)


def test_memory_cache_returns_equal_graphs(tmp_path):
    X = [nacl(), skewed()]
    ref = CrystalGraphTransformer().transform(X)
    t = CrystalGraphTransformer(memory=str(tmp_path / "cache"))
    first = t.transform(X)
    assert any((tmp_path / "cache").rglob("output.pkl"))  # joblib wrote results
    second = t.transform(X)
    for a, b, c in zip(ref, first, second):
        assert_same_graph(a, b)
        assert_same_graph(a, c)
    # other settings are other cache entries, not stale hits
    small = CrystalGraphTransformer(memory=str(tmp_path / "cache"), radius=3.0).transform(X)
    assert small[0].n_edges == 48 and small[0].radius == 3.0


def test_as_dict_from_dict_round_trip():
    g = build_graph(skewed(), radius=5.0, max_num_nbr=7)
    d = json.loads(json.dumps(g.as_dict()))
    assert d["@class"] == "CrystalGraph"
    g2 = CrystalGraph.from_dict(d)
    assert_same_graph(g, g2)
    assert g2.centers.dtype == np.int32 and g2.distances.dtype == np.float32
    assert g2.numbers.dtype == np.int16
    assert repr(g2) == repr(g)
    assert "n_atoms=3" in repr(g2)
    assert g.nbytes == sum(a.nbytes for a in (g.numbers, g.centers, g.neighbors, g.distances))


def test_as_graph_array():
    gs = [build_graph(bulk("Cu", a=3.6)), build_graph(nacl())]
    arr = as_graph_array(gs)
    assert arr.dtype == object and arr.shape == (2,)
    assert arr[0] is gs[0] and arr[1] is gs[1]


def test_graph_array_or_none_is_the_one_test_for_graphs():
    import pandas as pd

    from skcgcnn.graph import _graph_array_or_none

    gs = [build_graph(bulk("Cu", a=3.6)), build_graph(nacl())]
    arr = as_graph_array(gs)
    assert _graph_array_or_none(arr) is arr  # no copy
    for form in (gs, tuple(gs), pd.Series(gs)):
        out = _graph_array_or_none(form)
        assert out.dtype == object and out.shape == (2,) and out[1] is gs[1]
    for other in ([], [bulk("Cu")], [gs[0], bulk("Cu")], np.array([1.0, 2.0]),
                  np.empty((0,), dtype=object), "Cu.cif", gs[0]):
        assert _graph_array_or_none(other) is None


# ----------------------------------------------------------------------- errors
def test_empty_list_raises():
    with pytest.raises(ValueError, match="empty"):
        CrystalGraphTransformer().transform([])


def test_missing_path_names_it(tmp_path):
    missing = tmp_path / "nope.cif"
    with pytest.raises(FileNotFoundError, match="nope.cif") as info:
        CrystalGraphTransformer().transform([bulk("Cu"), missing])
    assert "index 1" in str(info.value)


def test_unreadable_file_raises_value_error(tmp_path):
    path = tmp_path / "garbage.cif"
    path.write_text("this is not a crystal\n")
    with pytest.raises(ValueError, match="garbage.cif"):
        build_graph(path)


def test_disordered_structure_raises():
    s = Structure(Lattice.cubic(3.5), [{"Fe": 0.5, "Ni": 0.5}], [[0, 0, 0]])
    with pytest.raises(ValueError, match="disordered"):
        CrystalGraphTransformer().transform([s])


def test_dummy_species_raises_naming_it():
    s = Structure(Lattice.cubic(4.0), ["Na", DummySpecies("X")], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(ValueError, match="atomic number") as info:
        CrystalGraphTransformer().transform([bulk("Cu"), s])
    # the species is named (its pymatgen "atomic number" is a meaningless hash)
    assert "X0+" in str(info.value) and "index 1" in str(info.value)


@pytest.mark.parametrize("z", [0, 101, 118])
def test_unsupported_atomic_number_raises(z):
    atoms = Atoms(numbers=[z, 11], positions=[[0, 0, 0], [2, 2, 2]], cell=[5, 5, 5], pbc=True)
    with pytest.raises(ValueError, match=f"atomic number {z}"):
        build_graph(atoms)


@pytest.mark.parametrize("single", [bulk("Cu"), nacl(), "some.cif"])
def test_single_structure_instead_of_list_raises_type_error(single):
    with pytest.raises(TypeError, match="single"):
        CrystalGraphTransformer().transform(single)


def test_non_structure_item_raises_type_error():
    with pytest.raises(TypeError, match="index 1"):
        CrystalGraphTransformer().transform([bulk("Cu"), 3.5])


def test_max_atoms_exceeded_raises():
    with pytest.raises(ValueError, match="max_atoms"):
        CrystalGraphTransformer(max_atoms=4).transform([nacl()])
    # exactly at the limit is fine
    assert CrystalGraphTransformer(max_atoms=8).transform([nacl()])[0].n_atoms == 8


def test_empty_structure_raises():
    with pytest.raises(ValueError, match="no atoms"):
        build_graph(Atoms(cell=[5, 5, 5], pbc=True))


@pytest.mark.parametrize("params", [dict(radius=0.0), dict(radius=-1.0),
                                    dict(max_num_nbr=0), dict(max_atoms=0)])
def test_invalid_parameters_raise_on_transform(params):
    name = next(iter(params))
    with pytest.raises(ValueError, match=f"the '{name}' parameter of CrystalGraphTransformer"):
        CrystalGraphTransformer(**params).transform([bulk("Cu")])


@pytest.mark.parametrize("params, expected", [
    (dict(radius=float("nan")), "a finite number greater than 0"),
    (dict(radius="8"), "a finite number greater than 0"),
    (dict(max_num_nbr=2.5), "an int of at least 1"),
    (dict(max_num_nbr=True), "an int of at least 1"),
    (dict(n_jobs="2"), "an int or None"),
    (dict(memory=3), "a folder path, a joblib.Memory or None"),
    (dict(verbose="yes"), "a bool or an int")])
def test_invalid_parameters_are_plain_value_errors(params, expected):
    (name, value), = params.items()
    with pytest.raises(ValueError) as info:
        CrystalGraphTransformer(**params).fit()
    assert str(info.value) == (f"the {name!r} parameter of CrystalGraphTransformer must be "
                               f"{expected}, got {value!r}")


def test_no_private_scikit_learn_validation_is_imported():
    # sklearn.utils._param_validation is private: it may change in any release
    import inspect

    import skcgcnn.composition
    import skcgcnn.embedding
    import skcgcnn.soap

    for module in (graph_module, skcgcnn.embedding, skcgcnn.soap, skcgcnn.composition):
        source = inspect.getsource(module)
        assert "_param_validation" not in source and "_validate_params" not in source, module


# ------------------------------------------------------------ chunked neighbour search
def test_chunked_neighbour_search_matches_unchunked(monkeypatch):
    s = nacl() * (2, 1, 1)  # 16 atoms: chunks of 3 leave a partial last chunk
    s.perturb(0.05, min_distance=0.01)  # break the ties of the perfect crystal
    whole = build_graph(s)
    monkeypatch.setattr(graph_module, "_CENTER_CHUNK", 3)
    chunked = build_graph(s)
    assert_same_graph(whole, chunked)
    assert_invariants(chunked, 8.0, 12)
    # the perfect crystal, with its ties broken by neighbour index, too
    perfect = nacl() * (2, 1, 1)
    monkeypatch.setattr(graph_module, "_CENTER_CHUNK", 2048)
    whole = build_graph(perfect)
    monkeypatch.setattr(graph_module, "_CENTER_CHUNK", 3)
    assert_same_graph(whole, build_graph(perfect))


# ------------------------------------------------------------- scikit-learn rules
# The checks that feed numeric 2-D arrays to ``transform`` do not apply: the
# transformer takes structures (pymatgen, ASE or paths), not feature matrices,
# and its tags say so (two_d_array=False). Skipped for that reason:
# check_transformer_general, check_transformers_unfitted_stateless,
# check_estimators_pickle, check_fit_idempotent, check_fit_score_takes_y,
# check_estimators_dtypes, check_methods_subset_invariance and the like (all call
# transform on random numbers); check_n_features_in (there are no features
# before featurization, so no ``n_features_in_``); the set_output / pandas /
# feature-name checks (the output is an object array of graphs, not columns).
# Pickling and clone are tested below on real structures instead.
# the shared list is tests/conftest.py's SKLEARN_API_CHECKS
def test_sklearn_estimator_checks(sklearn_check):
    sklearn_check("CrystalGraphTransformer", CrystalGraphTransformer())


def test_sklearn_tags():
    tags = CrystalGraphTransformer().__sklearn_tags__()
    assert tags.requires_fit is False
    assert tags.input_tags.two_d_array is False


def test_transform_without_fit_and_fit_returns_self():
    t = CrystalGraphTransformer(radius=5.0)
    assert t.transform([bulk("Cu", a=3.6)])[0].radius == 5.0  # stateless
    assert t.fit([bulk("Cu")]) is t
    assert t.fitted_ is True


def test_clone_and_pickle_round_trip():
    t = CrystalGraphTransformer(radius=6.0, max_num_nbr=8, max_atoms=100, verbose=False)
    c = clone(t)
    assert c is not t and c.get_params() == t.get_params()
    t2 = pickle.loads(pickle.dumps(t.fit()))
    assert t2.get_params() == t.get_params()
    X = [nacl(), skewed()]
    for a, b in zip(t.transform(X), t2.transform(X)):
        assert_same_graph(a, b)
    graphs = t.transform(X)
    for a, b in zip(graphs, pickle.loads(pickle.dumps(graphs))):
        assert_same_graph(a, b)


def test_get_set_params_round_trip():
    t = CrystalGraphTransformer()
    assert t.get_params() == dict(radius=8.0, max_num_nbr=12, max_atoms=20_000,
                                  n_jobs=None, memory=None, verbose=False)
    t.set_params(radius=4.0, max_num_nbr=3)
    g = t.transform([nacl()])[0]
    assert g.radius == 4.0 and g.max_num_nbr == 3
    np.testing.assert_array_equal(np.bincount(g.centers), [3] * 8)


def test_verbose_progress_bar(capsys):
    out = CrystalGraphTransformer(verbose=True).transform([bulk("Cu"), bulk("Si")])
    assert len(out) == 2
    assert "crystal graphs" in capsys.readouterr().err


def test_large_cell_featurizes_in_bounded_memory(monkeypatch):
    import tracemalloc

    cell = bulk("Cu", "fcc", a=3.6, cubic=True) * (10, 10, 5)  # 2,000 atoms
    monkeypatch.setattr(graph_module, "_CENTER_CHUNK", 250)
    tracemalloc.start()
    try:
        g = build_graph(cell)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert g.n_edges == 12 * 2000
    np.testing.assert_allclose(g.distances, 3.6 / np.sqrt(2), rtol=1e-5)
    # the neighbour search of one 250-atom chunk sets the peak (about 6 MiB; the
    # whole 2,000-atom cell at once takes about 27 MiB)
    assert peak < 12 * 2**20, peak / 2**20


def _cif_cases(tmp_path):
    """CIFs of each kind: plain P1 ones (read directly) and the ones pymatgen must read."""
    from pymatgen.io.cif import CifWriter

    hexagonal = Structure(Lattice.hexagonal(3.93, 4.63), ["Al", "Co", "Co", "Si", "Si"],
                          [[0, 0, 0], [2 / 3, 1 / 3, 0.1627], [1 / 3, 2 / 3, 0.8373],
                           [1 / 3, 2 / 3, 0.3479], [2 / 3, 1 / 3, 0.6521]])
    cases = {}
    for name, s in {"skewed": skewed(), "nacl": nacl(), "hexagonal": hexagonal}.items():
        cases[f"{name}-p1.cif"] = (s, True)
    cases["nacl-symmetrized.cif"] = (nacl(), False)
    disordered = nacl()
    disordered.replace_species({"Na": {"Na": 0.5, "K": 0.5}})
    cases["disordered.cif"] = (disordered, False)
    charged = nacl()
    charged.add_oxidation_state_by_element({"Na": 1, "Cl": -1})
    cases["oxidation-states.cif"] = (charged, False)
    paths = {}
    for name, (s, plain) in cases.items():
        path = tmp_path / name
        symprec = 0.01 if "symmetrized" in name else None
        CifWriter(s, symprec=symprec).write_file(str(path))
        paths[name] = (path, plain)
    # pymatgen's 4-decimal writers: 0.3333 is read as 1/3
    text = paths["hexagonal-p1.cif"][0].read_text()
    rounded = tmp_path / "hexagonal-4-decimals-p1.cif"
    rounded.write_text(text.replace("0.33333333", "0.3333").replace("0.66666667", "0.6667"))
    paths[rounded.name] = (rounded, True)
    # two atoms on one site, which pymatgen refuses
    duplicate = tmp_path / "duplicate.cif"
    lines = paths["skewed-p1.cif"][0].read_text().rstrip().splitlines()
    li = next(line for line in lines if " Li0 " in line)
    duplicate.write_text("\n".join(lines + [li.replace("Li0", "Li9")]) + "\n")
    paths[duplicate.name] = (duplicate, False)
    return paths


@pytest.mark.filterwarnings("ignore:Site labels are not unique")
def test_plain_p1_cifs_are_read_directly_with_pymatgens_graph(tmp_path):
    for name, (path, plain) in _cif_cases(tmp_path).items():
        assert (graph_module._read_p1_cif(path) is not None) == plain, name
        if name in ("disordered.cif", "duplicate.cif"):  # pymatgen's errors, as before
            with pytest.raises(ValueError, match="disordered|duplicate.cif"):
                build_graph(path)
            continue
        direct = build_graph(path)
        via_pymatgen = build_graph(graph_module.read_structure_file(path))
        for key in ("numbers", "centers", "neighbors", "distances"):
            np.testing.assert_array_equal(getattr(direct, key), getattr(via_pymatgen, key),
                                          err_msg=f"{name}: {key}")


def test_p1_reader_leaves_other_files_to_pymatgen(tmp_path):
    poscar = tmp_path / "POSCAR"
    nacl().to(filename=str(poscar), fmt="poscar")
    assert graph_module._read_p1_cif(poscar) is None
    assert build_graph(poscar).n_atoms == 8
    garbage = tmp_path / "garbage-p1.cif"
    garbage.write_text("data_x\n_cell_length_a 3\nloop_\n_symmetry_equiv_pos_as_xyz\n 'x, y, z'\n")
    assert graph_module._read_p1_cif(garbage) is None
    with pytest.raises(ValueError, match="garbage-p1.cif"):
        build_graph(garbage)


def test_p1_reader_leaves_large_cells_to_pymatgen(tmp_path, monkeypatch):
    path = tmp_path / "nacl-p1.cif"
    nacl().to(filename=str(path))
    assert graph_module._read_p1_cif(path) is not None
    monkeypatch.setattr(graph_module, "_P1_MAX_SITES", 7)  # 8 sites: over the limit
    assert graph_module._read_p1_cif(path) is None
    assert build_graph(path).n_atoms == 8
