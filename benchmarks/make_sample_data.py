"""Write skcgcnn/mp_elasticity.npz, the bundled elastic moduli, from ../shared/data.

python benchmarks/make_sample_data.py

All 2,591 crystals of ``mp_elasticity_2591.json.gz`` (Materials Project, CC BY 4.0) as
compact arrays in full precision: cell matrices, fractional coordinates, atomic numbers,
atoms per crystal, material ids, K_VRH and G_VRH (GPa). About 350 kB; read by
``skcgcnn.datasets.load_mp_elasticity``.
"""

import io
import sys

import numpy as np

sys.path.insert(0, __import__("os").path.dirname(__file__))
from common import MP_ELASTICITY, ROOT  # noqa: E402

from skcgcnn.datasets import load_matbench_json  # noqa: E402
from skcgcnn.io import atomic_write_bytes  # noqa: E402

frame = load_matbench_json(MP_ELASTICITY)
structures = list(frame["structure"])
if not all(s.is_ordered for s in structures):
    sys.exit("disordered structures: the compact format holds one element per site")
buf = io.BytesIO()
np.savez_compressed(
    buf,
    material_id=np.array(frame["material_id"].tolist(), dtype="U"),
    n_atoms=np.array([len(s) for s in structures], dtype=np.uint16),
    numbers=np.concatenate([[sp.Z for sp in s.species] for s in structures]).astype(np.uint8),
    frac_coords=np.concatenate([s.frac_coords for s in structures]),
    lattice=np.stack([s.lattice.matrix for s in structures]),
    K_VRH=frame["K_VRH"].to_numpy(dtype=np.float64),
    G_VRH=frame["G_VRH"].to_numpy(dtype=np.float64),
)
out = ROOT / "skcgcnn" / "mp_elasticity.npz"
atomic_write_bytes(out, buf.getvalue())
print(f"wrote {out} ({len(buf.getvalue()) / 1e3:.0f} kB, {len(structures)} crystals)")
