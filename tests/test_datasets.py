from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from pymatgen.io.ase import AseAtomsAdaptor

from skcgcnn import CrystalGraphTransformer
from skcgcnn.datasets import load_cgcnn_folder, load_dcdft, load_matbench_json

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
