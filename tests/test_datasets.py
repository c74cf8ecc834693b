import gzip
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from ase.build import bulk
from pymatgen.io.ase import AseAtomsAdaptor

from skcgcnn import CrystalGraphTransformer
from skcgcnn.datasets import (MP_DEFAULT_FIELDS, load_cgcnn_folder, load_dcdft,
                              load_materials_project, load_matbench_json, load_table,
                              mp_docs_to_frame, mp_search_kwargs)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
ELASTICITY = SHARED / "mp_elasticity_2591.json.gz"


def test_dcdft():
    atoms, B = load_dcdft()
    assert len(atoms) == 71 and B.shape == (71,)
    formulas = [a.get_chemical_formula() for a in atoms]
    assert 100 < B[formulas.index("Cu4")] < 200  # GPa


def test_cgcnn_folder(tmp_path):
    for i, (el, a) in enumerate([("Cu", 3.6), ("Al", 4.05)]):
        AseAtomsAdaptor.get_structure(bulk(el, a=a)).to(filename=str(tmp_path / f"id{i}.cif"))
    (tmp_path / "id_prop.csv").write_text("id0,1.5\nid1,2.5\n")
    ids, paths, y = load_cgcnn_folder(tmp_path)
    assert ids == ["id0", "id1"] and y.tolist() == [1.5, 2.5]
    graphs = CrystalGraphTransformer().transform(paths)
    assert [g.n_edges for g in graphs] == [12, 12]
    with pytest.raises(FileNotFoundError, match="id_prop.csv"):
        load_cgcnn_folder(tmp_path / "missing")


@pytest.mark.skipif(not ELASTICITY.is_file(), reason="../shared/data is not beside this checkout")
def test_shared_elasticity_file():
    frame = load_matbench_json(ELASTICITY)
    assert len(frame) == 2591 and {"K_VRH", "G_VRH"} <= set(frame.columns)
    y = np.log10(frame["K_VRH"].to_numpy())
    assert abs(np.abs(y - y.mean()).mean() - 0.277) < 0.005  # the README's figure
    assert frame.structure.iloc[0].is_ordered


# ---------------------------------------------------------------- load_table
def _cu_al():
    return [AseAtomsAdaptor.get_structure(bulk("Cu", a=3.6)),
            AseAtomsAdaptor.get_structure(bulk("Al", a=4.05))]


def test_load_table_csv_paths_and_cif_text(tmp_path):
    cu, al = _cu_al()
    (tmp_path / "sub").mkdir()
    cu.to(filename=str(tmp_path / "sub" / "cu.cif"))
    frame = pd.DataFrame({"id": ["cu", "al"], "structure": ["sub/cu.cif", al.to(fmt="cif")],
                          "y": ["1.5", ""]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    loaded = load_table(tmp_path / "t.csv", target_column="y")
    assert [s.composition.reduced_formula for s in loaded.structure] == ["Cu", "Al"]
    assert loaded.y.iloc[0] == 1.5 and np.isnan(loaded.y.iloc[1])
    assert loaded.structure.iloc[1].lattice.a == pytest.approx(al.lattice.a, abs=1e-6)


def test_load_table_errors_name_the_input(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("cif,y\nmissing.cif,1.0\n")
    with pytest.raises(ValueError, match="no structure column 'structure'; its columns are cif, y"):
        load_table(path)
    with pytest.raises(ValueError, match="no target column 'gap'"):
        load_table(path, structure_column="cif", target_column="gap")
    with pytest.raises(FileNotFoundError, match="row 0 of column 'cif'.*missing.cif"):
        load_table(path, structure_column="cif")
    path.write_text("structure,y\n,1.0\n")
    with pytest.raises(ValueError, match="row 0 .* is empty"):
        load_table(path)
    path.write_text("structure,y\n\"data_x\n_cell_length_a 1\n\",1.0\n")
    with pytest.raises(ValueError, match="could not read the structure in row 0"):
        load_table(path)
    _cu_al()[0].to(filename=str(tmp_path / "cu.cif"))
    path.write_text("structure,y\ncu.cif,high\n")
    with pytest.raises(ValueError, match="target column 'y' .* is not numeric"):
        load_table(path, target_column="y")
    with pytest.raises(ValueError, match="unsupported table format"):
        load_table(tmp_path / "cu.cif")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_table(tmp_path / "absent.csv")


def test_load_table_skip_invalid_leaves_out_unreadable_rows(tmp_path):
    cu, al = _cu_al()
    path = tmp_path / "t.csv"
    pd.DataFrame({"id": ["cu", "bad", "al", "gone"],
                  "structure": [cu.to(fmt="cif"), "data_x\n_cell_length_a 1\n",
                                al.to(fmt="cif"), "gone.cif"],
                  "y": [1.0, 2.0, 3.0, 4.0]}).to_csv(path, index=False)
    loaded = load_table(path, target_column="y", skip_invalid=True)
    assert loaded.id.tolist() == ["cu", "al"] and loaded.index.tolist() == [0, 2]
    assert loaded.y.tolist() == [1.0, 3.0]
    assert [row for row, _ in loaded.attrs["skipped"]] == [1, 3]
    assert "row 3 of column 'structure'" in loaded.attrs["skipped"][1][1]


def test_load_table_json(tmp_path):
    path = tmp_path / "t.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump({"index": ["a", "b"], "columns": ["structure", "k"],
                   "data": [[s.as_dict(), 100.0 * (i + 1)] for i, s in enumerate(_cu_al())]}, f)
    frame = load_table(path, target_column="k")
    assert frame.index.tolist() == ["a", "b"] and frame.k.tolist() == [100.0, 200.0]
    assert frame.structure.iloc[1].composition.reduced_formula == "Al"


def test_cgcnn_folder_fails_at_load_naming_the_missing_cifs(tmp_path):
    # entries for CIFs that do not exist were returned, and failed only at fit
    AseAtomsAdaptor.get_structure(bulk("Cu")).to(filename=str(tmp_path / "here.cif"))
    rows = ["here,1.0"] + [f"gone{i},2.0" for i in range(12)]
    (tmp_path / "id_prop.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(FileNotFoundError) as info:
        load_cgcnn_folder(tmp_path)
    message = str(info.value)
    assert "12 of the 13 crystal(s)" in message and "gone0.cif" in message
    assert "'gone9' ..." in message and "'gone10'" not in message and "'here'" not in message


def test_cgcnn_folder_bad_target_names_the_line(tmp_path):
    (tmp_path / "id_prop.csv").write_text("a,1.0\nb,oops\n")
    with pytest.raises(ValueError, match="line 2 of .*id_prop.csv.*'oops'"):
        load_cgcnn_folder(tmp_path)


@pytest.mark.parametrize("header", ["id,band_gap", "material_id,target", "id"])
def test_cgcnn_folder_skips_a_header_line(tmp_path, header):
    for name in ("a", "b"):
        (tmp_path / f"{name}.cif").write_text("")  # read at featurizing, not here
    (tmp_path / "id_prop.csv").write_text(f"{header}\na,1.0\nb,2.0\n")
    ids, paths, y = load_cgcnn_folder(tmp_path)
    assert ids == ["a", "b"] and y.tolist() == [1.0, 2.0]
    assert paths[0].endswith("a.cif")


def test_cgcnn_folder_first_row_naming_a_cif_is_a_crystal(tmp_path):
    # an ids-only first row is a crystal, not a header, when its CIF exists
    (tmp_path / "id.cif").write_text("")
    (tmp_path / "b.cif").write_text("")
    (tmp_path / "id_prop.csv").write_text("id\nb\n")
    ids, _, y = load_cgcnn_folder(tmp_path)
    assert ids == ["id", "b"] and np.isnan(y).all()


def test_cgcnn_folder_second_header_is_explained(tmp_path):
    (tmp_path / "id_prop.csv").write_text("id,gap\nid,gap\na,1.0\n")
    with pytest.raises(ValueError, match="line 2 .*'gap'.*rows 'id,target'.*header"):
        load_cgcnn_folder(tmp_path)


# --------------------------------------------------------- Materials Project
def test_mp_search_kwargs():
    kw = mp_search_kwargs(band_gap=(0.1, None), elements=["O", "Si"], is_stable=True,
                          num_chunks=None)
    assert kw["fields"][:2] == ["material_id", "structure"]
    assert set(MP_DEFAULT_FIELDS) == set(kw["fields"])
    assert kw["band_gap"] == (0.1, None) and kw["elements"] == ["O", "Si"]
    assert kw["is_stable"] is True and "num_chunks" not in kw
    assert mp_search_kwargs(fields=["structure", "band_gap"])["fields"] == [
        "material_id", "structure", "band_gap"]
    with pytest.raises(ValueError, match="num_sites.*min 20 is larger than max 4"):
        mp_search_kwargs(num_sites=(20, 4))


def _docs():
    cu, al = _cu_al()
    return [  # an object like mp-api's SummaryDoc, and a plain dict with a dict structure
        SimpleNamespace(material_id="mp-30", structure=cu, formation_energy_per_atom=0.0,
                        band_gap=0.0, bulk_modulus={"voigt": 150.0, "vrh": 140.0}),
        {"material_id": "mp-134", "structure": al.as_dict(), "formation_energy_per_atom": 0.0,
         "band_gap": 0.0},
    ]


def test_mp_docs_to_frame():
    frame = mp_docs_to_frame(_docs(), fields=["formation_energy_per_atom", "band_gap",
                                              "bulk_modulus", "energy_above_hull"])
    assert frame.material_id.tolist() == ["mp-30", "mp-134"]
    assert [s.composition.reduced_formula for s in frame.structure] == ["Cu", "Al"]
    assert frame.bulk_modulus_vrh.iloc[0] == 140.0 and np.isnan(frame.bulk_modulus_vrh.iloc[1])
    assert frame.energy_above_hull.isna().all()  # not in the documents
    with pytest.raises(ValueError, match="without a structure, the first 'mp-1'"):
        mp_docs_to_frame([{"material_id": "mp-1", "band_gap": 1.0}])
    assert len(mp_docs_to_frame([])) == 0


def test_load_materials_project_offline(monkeypatch):
    calls = []

    class Summary:
        def search(self, **kwargs):
            calls.append(kwargs)
            return _docs()

    client = SimpleNamespace(materials=SimpleNamespace(summary=Summary()))
    frame = load_materials_project(client=client, band_gap=(0, 1), fields=["band_gap"])
    assert calls == [{"fields": ["material_id", "structure", "band_gap"], "band_gap": (0, 1)}]
    assert frame.columns.tolist() == ["material_id", "structure", "band_gap"]
    graphs = CrystalGraphTransformer().transform(frame.structure)
    assert [g.n_atoms for g in graphs] == [1, 1]
    monkeypatch.setitem(sys.modules, "mp_api", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "mp_api.client", None)
    with pytest.raises(ImportError, match="pip install mp-api"):
        load_materials_project(api_key="x")


@pytest.mark.skipif(not ELASTICITY.is_file(), reason="../shared/data is not beside this checkout")
def test_bundled_elasticity_equals_the_shared_file():
    from skcgcnn.datasets import load_matbench_json, load_mp_elasticity

    bundled, shared = load_mp_elasticity(), load_matbench_json(ELASTICITY)
    assert bundled.material_id.tolist() == shared.material_id.tolist()
    np.testing.assert_array_equal(bundled.K_VRH, shared.K_VRH)
    np.testing.assert_array_equal(bundled.G_VRH, shared.G_VRH)
    for i in range(0, len(bundled), 97):
        a, b = bundled.structure[i], shared.structure[i]
        assert a.species == b.species
        np.testing.assert_array_equal(a.lattice.matrix, b.lattice.matrix)
        np.testing.assert_array_equal(a.frac_coords, b.frac_coords)
