"""The original CGCNN's published models imported into skcgcnn, on Materials Project crystals.

Examples
--------
SKCGCNN_CACHE=/work/main/benchmarks/cache python benchmarks/cgcnn_import.py \\
    --checkpoints path/to/cgcnn/pre-trained --original-code path/to/cgcnn/model.py

The checkpoints are txie-93/cgcnn's ``pre-trained/*.pth.tar`` (MIT licence; not part of
this repository). For ``--n`` crystals drawn at random (seed 0) from
``mp_crystals_36k.json.gz``, it reports:

* the formation-energy model (``import_cgcnn``) on skcgcnn's graphs and on the graphs the
  original builds (``get_all_neighbors``, a stable sort by distance, padding with atom 0 at
  ``radius + 1``; ``common.baseline_neighbors``) run through the same imported network: the
  second is the original's own prediction, so the difference of the two MAEs is what
  importing costs; how many crystals' graphs differ and by how much their predictions move;
* the semi-metal classifier's ROC AUC for "metal" (class 1; band gap exactly 0 in the file)
  on both kinds of graphs;
* with ``--original-code``, the original's own ``CrystalGraphConvNet`` on its own inputs for
  the first 200 crystals, against the imported network on the original's graphs (should agree
  to float32 rounding).

The 36k file is the Materials Project snapshot the original CGCNN work used, so most of these
crystals were in its training set: the MAEs measure agreement with the original, not its
generalisation (the paper's test MAE is 0.039 eV/atom; the checkpoint's validation MAE 0.0397).
Writes ``docs/results/cgcnn_import.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import (MP_CRYSTALS, ROOT, _read_split_json_head,  # noqa: E402
                    baseline_neighbors, load_table_and_graphs, machine_info)


def original_graph(structure, radius=8.0, max_num_nbr=12):
    """The original's neighbour lists as a CrystalGraph (padding edges included)."""
    from skcgcnn.graph import CrystalGraph

    idx, dist, n_short = baseline_neighbors(structure, radius, max_num_nbr)
    n = len(structure)
    graph = CrystalGraph(numbers=np.array([s.specie.Z for s in structure], dtype=np.int16),
                         centers=np.repeat(np.arange(n, dtype=np.int32), max_num_nbr),
                         neighbors=idx.ravel().astype(np.int32),
                         distances=dist.ravel().astype(np.float32),
                         radius=radius, max_num_nbr=max_num_nbr)
    return graph, n_short


def graphs_differ(a, b, tol=1e-4):
    """Atoms whose (neighbour, distance) lists differ between two graphs of one crystal."""
    if a.n_edges != b.n_edges:
        return a.n_atoms  # padding: some atom has fewer edges in one of them
    da = a.distances.reshape(a.n_atoms, -1)
    db = b.distances.reshape(b.n_atoms, -1)
    na = a.neighbors.reshape(a.n_atoms, -1)
    nb = b.neighbors.reshape(b.n_atoms, -1)
    differ = 0
    for i in range(a.n_atoms):
        if not np.allclose(np.sort(da[i]), np.sort(db[i]), atol=tol) or \
                sorted(na[i]) != sorted(nb[i]):
            differ += 1
    return differ


def predict_network(module, graphs, batch_size=256):
    import torch

    from skcgcnn.data import collate_graphs

    out = []
    with torch.inference_mode():
        for start in range(0, len(graphs), batch_size):
            X, _ = collate_graphs([(g, 0.0) for g in graphs[start:start + batch_size]])
            out.append(module(**X).double().numpy())
    return np.concatenate(out)


def classifier_network(path):
    """The semi-metal classifier as a two-output skcgcnn network (logits)."""
    from skcgcnn.cgcnn_checkpoint import read_cgcnn_checkpoint
    from skcgcnn.model import CGCNN

    ckpt = read_cgcnn_checkpoint(path)
    module = CGCNN(**ckpt["architecture"], n_targets=ckpt["n_out"], element_features="cgcnn")
    state = module.state_dict()
    state.update(ckpt["state"])
    module.load_state_dict(state)
    return module.eval()


def run_original_code(model_py, checkpoint, structures, classification=False):
    """The original CrystalGraphConvNet on the original's inputs (cgcnn/data.py's path)."""
    import torch

    from common import baseline_featurize
    from skcgcnn.cgcnn_checkpoint import _load
    from skcgcnn.features import resolve_element_features

    spec = importlib.util.spec_from_file_location("cgcnn_model", model_py)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ckpt = _load(checkpoint)
    args = ckpt["args"]
    net = mod.CrystalGraphConvNet(92, 41, args["atom_fea_len"], args["n_conv"],
                                  args["h_fea_len"], args["n_h"], classification=classification)
    net.load_state_dict(ckpt["state_dict"])
    net.eval()
    table = resolve_element_features("cgcnn")[0]
    out = []
    with torch.no_grad():
        for s in structures:
            a, n, i = baseline_featurize(s, table=table)
            o = net(torch.tensor(a), torch.tensor(n), torch.tensor(i), [torch.arange(len(a))])
            out.append(o[0].double().numpy())
    out = np.array(out)
    if classification:
        return np.exp(out[:, 1])
    return out[:, 0] * float(ckpt["normalizer"]["std"]) + float(ckpt["normalizer"]["mean"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoints", required=True, help="folder of the published .pth.tar files")
    p.add_argument("--original-code", help="the original's cgcnn/model.py, for the 200-crystal "
                                           "cross-check")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", default=str(ROOT / "docs" / "results" / "cgcnn_import.json"))
    args = p.parse_args(argv)

    import torch
    from pymatgen.core import Structure
    from sklearn.metrics import roc_auc_score

    from skcgcnn.pretrained import import_cgcnn

    torch.set_num_threads(args.threads)
    t0 = time.time()
    table, graphs = load_table_and_graphs(MP_CRYSTALS)
    columns, rows = _read_split_json_head(MP_CRYSTALS, len(table) + 1)
    sample = np.sort(np.random.default_rng(0).choice(len(table), args.n, replace=False))
    col = {c: i for i, c in enumerate(columns)}
    ids = [rows[i][col["material_id"]] for i in sample]
    assert ids == list(table["material_id"].iloc[sample]), "cache and file disagree"
    structures = [Structure.from_dict(rows[i][col["structure"]]) for i in sample]
    del rows
    ours = [graphs[i] for i in sample]
    theirs, n_short = [], 0
    t1 = time.time()
    for s in structures:
        g, short = original_graph(s)
        theirs.append(g)
        n_short += short
    featurize_s = time.time() - t1
    differ = [graphs_differ(a, b) for a, b in zip(ours, theirs)]
    padded = [a.n_edges != b.n_edges for a, b in zip(ours, theirs)]

    fe = import_cgcnn(os.path.join(args.checkpoints, "formation-energy-per-atom.pth.tar"))
    y = table["formation_energy_per_atom"].to_numpy()[sample]
    pred_ours = fe.predict(np.array(ours, dtype=object))
    pred_theirs = fe.predict(np.array(theirs, dtype=object))
    shift = np.abs(pred_ours - pred_theirs)
    result = {
        "n_crystals": args.n,
        "sample": "numpy default_rng(0).choice of the 36k file's rows, sorted",
        "formation_energy": {
            "mae_skcgcnn_graphs": float(np.mean(np.abs(pred_ours - y))),
            "mae_original_graphs": float(np.mean(np.abs(pred_theirs - y))),
            "max_abs_prediction_shift": float(shift.max()),
            "crystals_with_shift_above_1e-4": int((shift > 1e-4).sum()),
            "crystals_with_shift_above_0.01": int((shift > 0.01).sum()),
            "shift_quantiles_90_99": [float(q) for q in np.quantile(shift, [0.9, 0.99])],
            "largest_shifts": [
                {"material_id": ids[j], "formula": structures[j].composition.reduced_formula,
                 "shift": float(shift[j]), "atoms": len(structures[j]),
                 "atoms_whose_neighbours_differ": int(differ[j]),
                 "error_skcgcnn_graphs": float(pred_ours[j] - y[j]),
                 "error_original_graphs": float(pred_theirs[j] - y[j])}
                for j in np.argsort(-shift)[:5]],
            "checkpoint_valid_mae": fe.card_["imported_from"]["best_mae_error"],
            "paper_test_mae": 0.039,
        },
        "graphs": {
            "crystals_whose_graphs_differ": int(sum(d > 0 for d in differ)),
            "atoms_whose_neighbours_differ": int(sum(differ)),
            "atoms": int(sum(g.n_atoms for g in ours)),
            "crystals_padded_by_the_original": int(sum(padded)),
            "atoms_with_fewer_than_12_neighbours": int(n_short),
            "original_featurization_seconds": round(featurize_s, 1),
        },
    }
    clf_path = os.path.join(args.checkpoints, "semi-metal-classification.pth.tar")
    if os.path.isfile(clf_path):
        clf = classifier_network(clf_path)
        metal = (table["band_gap"].to_numpy()[sample] == 0).astype(int)
        p_ours = torch.softmax(torch.as_tensor(predict_network(clf, ours)), 1)[:, 1].numpy()
        p_theirs = torch.softmax(torch.as_tensor(predict_network(clf, theirs)), 1)[:, 1].numpy()
        result["metal_classifier"] = {
            "n_metals": int(metal.sum()),
            "roc_auc_skcgcnn_graphs": float(roc_auc_score(metal, p_ours)),
            "roc_auc_original_graphs": float(roc_auc_score(metal, p_theirs)),
            "accuracy_skcgcnn_graphs": float(np.mean((p_ours > 0.5) == metal)),
            "max_abs_probability_shift": float(np.abs(p_ours - p_theirs).max()),
            "checkpoint_valid_auc": read_best(clf_path),
        }
    if args.original_code:
        k = min(200, args.n)
        orig = run_original_code(args.original_code, os.path.join(
            args.checkpoints, "formation-energy-per-atom.pth.tar"), structures[:k])
        result["original_code_check"] = {
            "n_crystals": k,
            "formation_energy_max_abs_diff": float(np.abs(orig - pred_theirs[:k]).max()),
        }
        if os.path.isfile(clf_path):
            orig_p = run_original_code(args.original_code, clf_path, structures[:k], True)
            result["original_code_check"]["metal_probability_max_abs_diff"] = float(
                np.abs(orig_p - p_theirs[:k]).max())
    result["seconds"] = round(time.time() - t0, 1)
    result["machine"] = machine_info()
    result["command"] = " ".join(["python", "benchmarks/cgcnn_import.py", *(argv or sys.argv[1:])])
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))


def read_best(path):
    from skcgcnn.cgcnn_checkpoint import read_cgcnn_checkpoint

    return read_cgcnn_checkpoint(path)["best_mae_error"]


if __name__ == "__main__":
    main()
