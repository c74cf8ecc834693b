"""Speed of pretrained crystal embeddings, beside the descriptors they are used with.

Examples
--------
python benchmarks/embedding.py                  # 1,000 crystals of mp_crystals_36k
python benchmarks/embedding.py --n 200 --json /tmp/embedding.json

On the same first ``--n`` crystals of ``../shared/data/mp_crystals_36k.json.gz``,
in this one process:

- graphs: ``CrystalGraphTransformer(n_jobs=1).transform`` (the featurization
  the embedding needs first);
- ``PretrainedEmbedding("mp-formation-energy")`` on those graphs (``transform``
  only; the network is loaded by ``fit`` beforehand), per layer, batch size
  and torch thread count;
- side by side: the same pooled vectors computed the way ``CGCNNRegressor.transform``
  did before it shared :func:`skcgcnn.embedding.crystal_embeddings` (skorch's
  ``get_iterator`` at the estimator's batch size 256, ``torch.no_grad``), the
  magpie descriptors (``MagpieFeaturizer``) and the mean SOAP vectors
  (``skcgcnn.soap.SOAPFeaturizer``, the paper's structural descriptor) of the
  same crystals.

Each timing is the median of ``--repeat`` runs (wall clock, ``time.perf_counter``).
Writes ``docs/results/embedding.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import ROOT, load_crystals, machine_info, write_json  # noqa: E402

from skcgcnn import CrystalGraphTransformer, PretrainedEmbedding  # noqa: E402


def median_time(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def skorch_path(estimator, graphs):
    """CGCNNRegressor.transform as it was: skorch's iterator, no_grad."""
    ds = estimator.get_dataset(graphs)
    parts = []
    with torch.no_grad():
        for Xb, _ in estimator.get_iterator(ds, training=False):
            parts.append(estimator.module_.crystal_features(**Xb).numpy())
    return np.concatenate(parts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--model", default="mp-formation-energy")
    p.add_argument("--json", default=str(ROOT / "docs" / "results" / "embedding.json"))
    args = p.parse_args(argv)

    from skcgcnn.composition import MagpieFeaturizer
    from skcgcnn.pretrained import load_estimator

    structures = list(load_crystals(args.n)["structure"])
    n_atoms = np.mean([len(s) for s in structures])
    t_graphs, graphs = median_time(lambda: CrystalGraphTransformer(n_jobs=1).transform(structures), 1)
    result = {"n_crystals": len(structures), "atoms_per_crystal_mean": float(n_atoms),
              "model": args.model, "repeat": args.repeat, "graphs_s": t_graphs, "embedding_s": {}}
    emb = PretrainedEmbedding(args.model).fit()
    reference = None
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for layer in ("pooled", "hidden"):
            for batch_size in (32, 64, 256):
                emb.set_params(layer=layer, batch_size=batch_size)
                t, out = median_time(lambda: emb.transform(graphs), args.repeat)
                result["embedding_s"][f"{layer}, batch {batch_size}, {threads} thread(s)"] = t
                if layer == "pooled" and reference is None:
                    reference = out
    torch.set_num_threads(1)
    est = load_estimator(args.model)
    est.module_.conv_dtype = "float32"
    t_old, old = median_time(lambda: skorch_path(est, graphs), args.repeat)
    assert np.allclose(old, reference, rtol=1e-5, atol=1e-5)
    t_new = result["embedding_s"]["pooled, batch 64, 1 thread(s)"]
    result["old_transform_s"] = t_old
    result["speedup_over_old_transform"] = t_old / t_new
    t_magpie, _ = median_time(lambda: MagpieFeaturizer().transform(structures), 1)
    result["magpie_s"] = t_magpie
    result["embedding_over_magpie"] = t_new / t_magpie
    try:
        from skcgcnn.soap import SOAPFeaturizer

        t_soap, _ = median_time(lambda: SOAPFeaturizer().transform(structures), 1)
        result["soap_s"] = t_soap
    except ImportError:
        pass
    result["best_embedding_s"] = min(result["embedding_s"].values())
    result["machine"] = machine_info()
    result["command"] = "python benchmarks/embedding.py " + " ".join(argv or sys.argv[1:])
    write_json(result, args.json)
    for k, v in result.items():
        if k != "machine":
            print(k, v)


if __name__ == "__main__":
    main()
