"""
The ``skcgcnn`` command line
============================

Everything in the other examples is also a shell command: ``skcgcnn featurize``,
``train``, ``finetune``, ``predict``, ``pretrained`` and ``compare`` (run
``skcgcnn --help``, or see :doc:`/user_guide/cli`). This example runs them through
:func:`skcgcnn.cli.main`, which takes the same arguments as a list, so that it can run
while these pages are built; in a terminal, drop ``main([...])`` and type the words.
"""

import csv
import os
import tempfile

import numpy as np
from pymatgen.io.ase import AseAtomsAdaptor

from skcgcnn.cli import main
from skcgcnn.datasets import load_dcdft

# %%
# The input: the DCDFT crystals in the original CGCNN folder layout, one CIF per crystal
# and ``id_prop.csv`` with rows ``id,target`` (the bulk modulus in GPa). A CSV table or a
# matbench-style JSON file works too.

workdir = tempfile.mkdtemp()
folder = os.path.join(workdir, "dcdft")
os.makedirs(folder)
structures, bulk_modulus = load_dcdft()
with open(os.path.join(folder, "id_prop.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    for i, (atoms, b) in enumerate(zip(structures, bulk_modulus)):
        name = f"{i:02d}-{atoms.get_chemical_formula()}"
        AseAtomsAdaptor.get_structure(atoms).to(filename=os.path.join(folder, f"{name}.cif"))
        writer.writerow([name, f"{b:.3f}"])
print(sorted(os.listdir(folder))[:4], "...")

# %%
# ``skcgcnn pretrained`` lists the bundled models (``skcgcnn pretrained NAME`` prints a
# model card).

status = main(["pretrained"])

# %%
# ``skcgcnn featurize`` builds the crystal graphs once and saves them with the ids and
# targets; every other command reads the graph file as its input.

graphs = os.path.join(workdir, "graphs.joblib")
status = main(["featurize", folder, "-o", graphs, "-q"])

# %%
# ``skcgcnn finetune`` is :class:`~skcgcnn.TransferCGCNNRegressor`: it fine-tunes a
# pretrained model and writes the result with its model card. ``--log10`` models log10 of
# the bulk modulus, as the paper did; predictions come back in GPa. (``skcgcnn train`` is
# the same from scratch.)

model = os.path.join(workdir, "bulk-modulus.pt")
status = main(["finetune", graphs, "--pretrained", "mp-formation-energy", "--log10",
               "--units", "GPa", "--epochs", "40", "--batch-size", "16", "-o", model, "-q"])
status = main(["pretrained", model])  # its model card

# %%
# ``skcgcnn predict`` writes a CSV of ids and predictions, in GPa. (These are the
# training crystals, so the error it reports is a training error.)

predictions = os.path.join(workdir, "predictions.csv")
status = main(["predict", model, folder, "-o", predictions, "-q"])
with open(predictions) as f:
    print("".join(f.readlines()[:5]))

# %%
# ``skcgcnn compare`` runs the paper's protocol on one input: repeated random 4:1:1
# splits shared by every model, TL-CGCNN, CGCNN from scratch and the classical baselines
# on magpie descriptors, then the paired t-test of TL-CGCNN against CGCNN. Two trials and
# 20 epochs here; by default it runs the paper's number of trials and 500 epochs.

status = main(["compare", graphs, "--log10", "--models", "tl,scratch,rf", "--n-trials", "2",
               "--epochs", "20", "--batch-size", "16"])
