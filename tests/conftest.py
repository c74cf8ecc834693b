import numpy as np
import pytest
from ase.build import bulk

from skcgcnn import CrystalGraphTransformer
from skcgcnn.datasets import load_dcdft


@pytest.fixture(scope="session")
def dcdft():
    """ASE's 71 elemental crystals as graphs, and log10 bulk modulus (GPa)."""
    atoms, B = load_dcdft()
    return atoms, CrystalGraphTransformer().transform(atoms), np.log10(B)


@pytest.fixture(scope="session")
def tiny():
    """Twelve strained Cu, Al and NaCl crystals with their volume per atom (Å^3)."""
    atoms = []
    for a in np.linspace(0.95, 1.05, 4):
        atoms += [bulk("Cu", a=3.6 * a), bulk("Al", a=4.05 * a),
                  bulk("NaCl", "rocksalt", a=5.64 * a)]
    y = np.array([at.get_volume() / len(at) for at in atoms])
    return atoms, CrystalGraphTransformer().transform(atoms), y

