"""500-K_VRH rows of issue 29: site pooling, and the original CGCNN's model as a source.

Examples
--------
SKCGCNN_CACHE=/work/main/benchmarks/cache python benchmarks/cgcnn_transfer.py \\
    --cgcnn-checkpoint path/to/cgcnn/pre-trained/formation-energy-per-atom.pth.tar
python benchmarks/cgcnn_transfer.py --report      # the tables from the CSV, no fitting

The protocol of ``paper.py`` (10 trials of 500/125/125 K_VRH crystals, ``stage_splits``,
the same splits as ``benchmarks/results/500-K_VRH.csv``; one thread) for:

* ``pooling="site"`` (Xie & Grossman's site contributions: the head on every atom, then
  the mean) against the mean pooling of the paper, for CGCNN from scratch and TL-CGCNN from
  ``mp-formation-energy`` at the protocol's settings (``paper.FIT``; paired with the
  ``CGCNN`` and ``TL-CGCNN (36k-ΔE_f)`` rows of ``500-K_VRH.csv``) and at the fine-tuning
  defaults (both poolings here);
* TL-CGCNN from the original CGCNN's published formation-energy model
  (``skcgcnn.pretrained.import_cgcnn``, 28k crystals, 4 convolutions, h 32, the original's
  element table) against the library's ``mp-formation-energy``, at the fine-tuning defaults
  and at the protocol's settings.

Rows go to ``benchmarks/results/500-K_VRH-cgcnn.csv`` as each fit ends (resumable).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(__file__))
import paper  # noqa: E402
from common import CACHE  # noqa: E402

from skcgcnn import CGCNNRegressor, TransferCGCNNRegressor  # noqa: E402
from skcgcnn.stats import paired_ttest, run_trials, summarize  # noqa: E402

TARGET = "500-K_VRH"
RESULTS = paper.RESULTS / f"{paper.slug(TARGET)}-cgcnn.csv"
IMPORTED = CACHE / "cgcnn-formation-energy-per-atom"
#: (row, the row it is compared with, file of that row)
PAIRS = [
    ("CGCNN, site pooling", "CGCNN", "protocol"),
    ("TL-CGCNN (36k-ΔE_f), site pooling", "TL-CGCNN (36k-ΔE_f)", "protocol"),
    ("TL-CGCNN, defaults (36k-ΔE_f), site pooling", "TL-CGCNN, defaults (36k-ΔE_f)", "here"),
    ("TL-CGCNN (CGCNN 28k-ΔE_f, imported)", "TL-CGCNN (36k-ΔE_f)", "protocol"),
    ("TL-CGCNN, defaults (CGCNN 28k-ΔE_f, imported)", "TL-CGCNN, defaults (36k-ΔE_f)", "here"),
]


def imported_source(checkpoint):
    """The original's formation-energy model as a library-style model file (cached)."""
    from skcgcnn.pretrained import import_cgcnn, save_pretrained

    if not IMPORTED.with_suffix(".pt").is_file():
        save_pretrained(import_cgcnn(checkpoint), IMPORTED, overwrite=True)
    return str(IMPORTED) + ".pt"


def models(checkpoint):
    fit = dict(paper.FIT)
    tl = {"lr": paper.TL_LR, **fit}
    defaults = dict(conv_dtype=fit["conv_dtype"], **paper.HELD_OUT)  # the former defaults
    source = imported_source(checkpoint)
    return {
        "CGCNN, site pooling": CGCNNRegressor(pooling="site", **fit),
        "TL-CGCNN (36k-ΔE_f), site pooling": TransferCGCNNRegressor(
            pretrained="mp-formation-energy", pooling="site", **tl),
        "TL-CGCNN, defaults (36k-ΔE_f)": TransferCGCNNRegressor(
            pretrained="mp-formation-energy", **defaults),
        "TL-CGCNN, defaults (36k-ΔE_f), site pooling": TransferCGCNNRegressor(
            pretrained="mp-formation-energy", pooling="site", **defaults),
        "TL-CGCNN, defaults (CGCNN 28k-ΔE_f, imported)": TransferCGCNNRegressor(
            pretrained=source, **defaults),
        "TL-CGCNN (CGCNN 28k-ΔE_f, imported)": TransferCGCNNRegressor(pretrained=source, **tl),
    }


def report():
    here = pd.read_csv(RESULTS)
    protocol = pd.read_csv(paper.RESULTS / f"{paper.slug(TARGET)}.csv")
    protocol = protocol[protocol.n_train == paper.N_TRAIN]
    print(summarize(here).round(4).to_string(index=False))
    print()
    for row, base, where in PAIRS:
        other = protocol if where == "protocol" else here
        mine, theirs = here[here.model == row], other[other.model == base]
        shared = set(mine.trial) & set(theirs.trial)
        if len(shared) < 2:
            continue
        both = pd.concat([mine, theirs])
        both = both[both.trial.isin(shared)].drop_duplicates(["model", "trial"], keep="last")
        t, p = paired_ttest(both, row, base)
        a, b = (both[both.model == m].test_mae.mean() for m in (row, base))
        print(f"{row}: {a:.4f} vs {base} {b:.4f} log10 GPa "
              f"({both.trial.nunique()} trials paired, t = {t:+.2f}, p = {p:.3g})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cgcnn-checkpoint", help="the original's formation-energy-per-atom.pth.tar")
    p.add_argument("--models", nargs="*", help="only these rows")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report", action="store_true")
    args = p.parse_args(argv)
    if args.report:
        return report()
    import torch

    torch.set_num_threads(args.threads)
    graphs, y = paper.load_target(TARGET)
    splits = paper.stage_splits(TARGET, "main", len(y))[paper.N_TRAIN]
    chosen = models(args.cgcnn_checkpoint)
    if args.models:
        chosen = {k: v for k, v in chosen.items() if k in args.models}
    t0 = time.time()
    run_trials(chosen, graphs, y, splits, path=RESULTS)
    print(f"{time.time() - t0:.0f} s", flush=True)
    report()


if __name__ == "__main__":
    main()
