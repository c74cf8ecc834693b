"""Tests of skcgcnn.features: the element-property one-hot table."""

import warnings

import numpy as np
import pytest

from skcgcnn.features import (
    FEATURE_BLOCKS,
    MAX_Z,
    N_ATOM_FEATURES,
    _valence_electrons,
    element_feature_fingerprint,
    element_feature_table,
)


def _block_start(name):
    start = 0
    for block, width, _ in FEATURE_BLOCKS:
        if block == name:
            return start
        start += width
    raise KeyError(name)


def test_n_atom_features_is_sum_of_blocks():
    assert N_ATOM_FEATURES == sum(w for _, w, _ in FEATURE_BLOCKS) == 91


def test_table_shape_dtype_and_readonly():
    table = element_feature_table()
    assert table.shape == (MAX_Z + 1, N_ATOM_FEATURES) == (101, N_ATOM_FEATURES)
    assert table.dtype == np.float32
    assert not table.flags.writeable
    with pytest.raises(ValueError):
        table[1, 0] = 5.0


def test_row_zero_is_all_zeros():
    assert not element_feature_table()[0].any()


def test_values_are_zero_or_one():
    table = element_feature_table()
    assert set(np.unique(table).tolist()) <= {0.0, 1.0}


def test_each_block_has_at_most_one_hot_per_element():
    table = element_feature_table()
    start = 0
    for name, width, _ in FEATURE_BLOCKS:
        counts = table[1:, start:start + width].sum(axis=1)
        assert counts.max() <= 1, name
        start += width
    # every element has at least the categorical properties group/period/block
    for name in ("period", "block", "covalent_radius"):
        s = _block_start(name)
        w = dict((n, w) for n, w, _ in FEATURE_BLOCKS)[name]
        assert (table[1:, s:s + w].sum(axis=1) == 1).all(), name


def test_every_element_has_most_properties():
    table = element_feature_table()
    per_element = table[1:].sum(axis=1)
    assert per_element.min() >= 7
    assert per_element.max() == len(FEATURE_BLOCKS)


def test_oxygen_row():
    row = element_feature_table()[8]
    assert row[_block_start("group") + 15] == 1  # group 16
    assert row[_block_start("period") + 1] == 1  # period 2
    assert row[_block_start("valence_electrons") + 5] == 1  # 2s2 2p4: 6 electrons
    assert row[_block_start("block") + 1] == 1  # p block


def test_iron_row():
    row = element_feature_table()[26]
    assert row[_block_start("group") + 7] == 1  # group 8
    assert row[_block_start("period") + 3] == 1  # period 4
    assert row[_block_start("valence_electrons") + 7] == 1  # 3d6 4s2: 8 electrons
    assert row[_block_start("block") + 2] == 1  # d block


def _pymatgen_values(name):
    """{Z: value} of one property for the elements that have it, read here from
    pymatgen (ASE for covalent radii), independently of skcgcnn.features."""
    from ase.data import covalent_radii
    from pymatgen.core import Element

    getters = {
        "group": lambda el: el.group, "period": lambda el: el.row,
        "electronegativity": lambda el: el.X,
        "covalent_radius": lambda el: covalent_radii[el.Z],
        "first_ionization_energy": lambda el: el.ionization_energies[0],
        "electron_affinity": lambda el: el.electron_affinity,
        "block": lambda el: "spdf".index(el.block) + 1,
        "atomic_volume": lambda el: el.molar_volume,
    }
    values = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for z in range(1, MAX_Z + 1):
            try:
                v = getters[name](Element.from_Z(z))
            except (KeyError, ValueError, IndexError, TypeError, AttributeError):
                continue
            if v is not None and np.isfinite(float(v)):
                values[z] = float(v)
    return values


@pytest.mark.parametrize("name, width, kind", [b for b in FEATURE_BLOCKS
                                               if b[0] != "valence_electrons"])
def test_every_hot_column_is_pymatgens_value_in_its_bin(name, width, kind):
    """Each element's hot column is its pymatgen value's category, or the bin the value
    falls in among ``width`` equal bins between the smallest and largest value of
    elements 1 to MAX_Z (on a log scale for "log" properties)."""
    table = element_feature_table()
    start = _block_start(name)
    values = _pymatgen_values(name)
    assert len(values) >= 80, name
    for z in range(1, MAX_Z + 1):
        hot = np.flatnonzero(table[z, start:start + width])
        if z not in values:
            assert len(hot) == 0, (name, z)
            continue
        v = values[z]
        if kind == "category":
            expected = int(v) - 1
        else:
            scale = np.log if kind == "log" else (lambda x: x)
            lo, hi = scale(min(values.values())), scale(max(values.values()))
            position = width * (scale(v) - lo) / (hi - lo)
            if abs(position - round(position)) < 1e-9 and 0 < round(position) < width:
                continue  # on a bin edge: either side is right at float precision
            expected = min(int(np.floor(position)), width - 1)
        assert hot.tolist() == [expected], (name, z, v)


def test_hydrogen_and_sodium_rows():
    table = element_feature_table()
    h, na = table[1], table[11]
    assert h[0] == 1 and na[0] == 1  # group 1
    assert h[_block_start("period")] == 1 and na[_block_start("period") + 2] == 1
    assert h[_block_start("block")] == 1 and na[_block_start("block")] == 1  # s block
    # sodium is less electronegative and bigger than hydrogen: lower/higher bins
    en, cr = _block_start("electronegativity"), _block_start("covalent_radius")
    assert np.argmax(na[en:en + 10]) < np.argmax(h[en:en + 10])
    assert np.argmax(na[cr:cr + 10]) > np.argmax(h[cr:cr + 10])


def test_distinct_elements_have_distinct_rows():
    table = element_feature_table()[1:]
    assert len({row.tobytes() for row in table}) > 90


def test_table_cached_and_fingerprint_stable():
    assert element_feature_table() is element_feature_table()
    fp = element_feature_fingerprint()
    assert fp == element_feature_fingerprint()
    assert len(fp) == 16
    int(fp, 16)  # hex digits
    element_feature_table.cache_clear()
    try:
        assert element_feature_fingerprint() == fp  # recomputed from scratch, same bytes
    finally:
        element_feature_table.cache_clear()


@pytest.mark.parametrize("structure, expected", [
    ("[Ar].3d6.4s2", 8),  # Fe
    ("[Ar].3d10.4s2", 2),  # Zn: filled d10 not counted
    ("[Ar].3d10.4s2.4p1", 3),  # Ga
    ("1s1", 1),  # H
    ("[He].2s2.2p4", 6),  # O
    ("[Xe].4f14.5d10.6s2", 2),  # Hg: filled f14 and d10 not counted
    ("[Ne].3s1", 1),  # Na
])
def test_valence_electrons(structure, expected):
    assert _valence_electrons(structure) == expected


# ------------------------------------------------------------------ element tables by name, file, array

def test_cgcnn_table_is_the_original_atom_init():
    import json

    from skcgcnn.features import CGCNN_ATOM_INIT, resolve_element_features

    table, name = resolve_element_features("cgcnn")
    raw = json.loads(CGCNN_ATOM_INIT.read_text())
    assert name == "cgcnn" and table.shape == (101, 92) and len(raw) == 100
    for z in (1, 8, 26, 100):
        np.testing.assert_array_equal(table[z], raw[str(z)])
    assert not table[0].any() and not table.flags.writeable


def test_atom_init_file_round_trip_and_missing_elements(tmp_path):
    import json

    from skcgcnn.features import read_atom_init, resolve_element_features

    path = tmp_path / "atom_init.json"
    path.write_text(json.dumps({"1": [1, 0, 0.5], "8": [0, 1, 2]}))
    table, name = resolve_element_features(str(path))
    assert name == str(path) and table.shape == (101, 3)
    np.testing.assert_array_equal(table[8], [0, 1, 2])
    assert not table[2].any()  # elements the file lacks have no features
    np.testing.assert_array_equal(resolve_element_features(path)[0], read_atom_init(path))


@pytest.mark.parametrize("content, match", [
    ('{"1": [1, 0], "2": [1]}', "one length"),
    ('{"0": [1]}', "outside 1 to 100"),
    ('{"H": [1]}', "not an atomic number"),
    ('[1, 2]', "JSON object"),
    ('{"1": [NaN]}', "NaN or infinite"),
    ('not json', "not JSON"),
])
def test_bad_atom_init_files_raise(tmp_path, content, match):
    from skcgcnn.features import read_atom_init

    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        read_atom_init(path)


def test_bad_element_features_raise(tmp_path):
    from skcgcnn.features import resolve_element_features

    with pytest.raises(ValueError, match="element_features must be None"):
        resolve_element_features("magpie")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_element_features(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="rows by atomic number"):
        resolve_element_features(np.ones(5))
    with pytest.raises(ValueError, match="rows by atomic number"):
        resolve_element_features(np.ones((102, 3)))


def test_fingerprint_tells_tables_apart():
    from skcgcnn.features import resolve_element_features

    skc, cg = resolve_element_features()[0], resolve_element_features("cgcnn")[0]
    assert element_feature_fingerprint(skc) == element_feature_fingerprint()
    assert element_feature_fingerprint(cg) != element_feature_fingerprint()
    assert element_feature_fingerprint(cg.astype(np.float64)) == element_feature_fingerprint(cg)
