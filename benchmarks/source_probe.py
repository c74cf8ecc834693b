"""Compare source models without fine-tuning: SVR on their pooled vectors + magpie.

Examples
--------
python benchmarks/source_probe.py                      # v1 against v2 of mp-formation-energy
python benchmarks/source_probe.py --target 500-NM-E_g --sources mp-formation-energy other.pt

On the protocol's splits of ``--target`` (``paper.stage_splits``, 10 trials at 500 crystals),
each source model's pooled crystal vector (``PretrainedEmbedding``, float32) is joined to the
132 magpie descriptors and an SVR is tuned by the embeddings stage's 5-fold grid
(``paper.classical_model``). Costs about a minute a source: no network is trained. Prints
the test MAE per source and the paired t-test of each against the first.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import paper  # noqa: E402

from skcgcnn import PretrainedEmbedding  # noqa: E402
from skcgcnn.stats import paired_ttest, run_trials  # noqa: E402

V2 = str(paper.ROOT / "benchmarks" / "checkpoints" / "v2" / "mp-formation-energy.pt")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="500-K_VRH", choices=sorted(paper.TARGETS))
    p.add_argument("--sources", nargs="+", default=["mp-formation-energy", V2])
    args = p.parse_args(argv)
    graphs, y = paper.load_target(args.target)
    splits = next(iter(paper.stage_splits(args.target, "embeddings", len(y)).values()))
    rows = np.unique(np.concatenate([np.concatenate(s) for s in splits]))
    splits = [tuple(np.searchsorted(rows, part) for part in s) for s in splits]
    magpie = paper.magpie_features(graphs, rows)[rows]
    models, blocks = {}, []
    for source in args.sources:
        emb = PretrainedEmbedding(source, conv_dtype="float32").fit().transform(graphs[rows])
        blocks.append(emb)
        start = 132 + sum(b.shape[1] for b in blocks[:-1])
        columns = np.r_[np.arange(132), start + np.arange(emb.shape[1])]
        models[os.path.basename(source)] = paper.classical_model("SVR", columns)
    res = run_trials(models, np.hstack([magpie, *blocks]), y[rows], splits)
    first = os.path.basename(args.sources[0])
    for name, g in res.groupby("model", sort=False):
        line = f"{args.target} SVR on pooled + magpie, {name}: {g.test_mae.mean():.4f}"
        if name != first:
            line += f" (p = {paired_ttest(res, name, first)[1]:.2g} against {first})"
        print(line, flush=True)


if __name__ == "__main__":
    main()
