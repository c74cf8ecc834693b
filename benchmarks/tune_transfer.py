"""Fine-tuning variants of TL-CGCNN on the protocol's splits, chosen on validation.

Examples
--------
python benchmarks/tune_transfer.py --target 500-K_VRH               # every variant below
python benchmarks/tune_transfer.py --target 500-NM-E_g --variants base "head=keep"
python benchmarks/tune_transfer.py --report                         # table in docs/benchmarks.md

The search behind the MAE goals of ``benchmarks/paper.py``. Each variant of
TL-CGCNN (fine-tuned from the target's larger pretrained model, the settings of
``paper.py`` otherwise) is fitted on the same 10 splits as ``paper.py`` (500
training + 125 validation crystals; the estimator holds out its 20 % to keep
its best epoch). ``skcgcnn.stats.run_trials`` fits them and, as each fit ends,
writes its row to ``benchmarks/results/tuning/<target>.csv`` (the columns of
``run_trials`` and ``valid_mae``, the MAE on those held-out crystals, in the
target's units). Variants are compared on ``valid_mae``: the test crystals
choose nothing. The exception are the ensembles (scikit-learn's
``VotingRegressor`` of fits with seeds 0 to 4, which also hold out different
validation crystals): they have no common held-out set, so no ``valid_mae``;
CGCNN from scratch, alone and as an ensemble, is their reference. A rerun
resumes. ``--report`` writes the table of every
tuned target into ``docs/benchmarks.md``; where a target has no "CGCNN
(scratch)" rows of its own, paper.py's CGCNN rows stand in (the same settings
and seed, so the same fits).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, os.path.dirname(__file__))
import paper  # noqa: E402

from skcgcnn import CGCNNRegressor, TransferCGCNNRegressor  # noqa: E402
from skcgcnn.stats import repeated_splits, run_trials  # noqa: E402

BEGIN, END = "<!-- tune_transfer.py report: begin -->", "<!-- tune_transfer.py report: end -->"

#: name: parameters that differ from paper.py's TL-CGCNN
VARIANTS = {
    "base": {},
    "head=keep": dict(head="keep"),
    "h_fea_len=128": dict(h_fea_len=128),
    "n_h=2": dict(n_h=2),
    "lr=0.002": dict(lr=0.002),
    "300 epochs": dict(max_epochs=300, lr_decay_epoch=200),
    "weight_decay=1e-4": dict(weight_decay=1e-4),
    "batch 32": dict(batch_size=32),
    # differential learning rates: the pretrained layers at a fraction of the head's 0.005
    "pretrained lr=0.001": dict(optimizer__param_groups=[("embedding.*", {"lr": 0.001}),
                                                         ("convs.*", {"lr": 0.001})]),
    "pretrained lr=0.0025": dict(optimizer__param_groups=[("embedding.*", {"lr": 0.0025}),
                                                          ("convs.*", {"lr": 0.0025})]),
    f"ensemble of {paper.N_MEMBERS}": dict(n_members=paper.N_MEMBERS),
    "CGCNN (scratch)": dict(scratch=True, lr=0.01),
    paper.ensemble_name("CGCNN"): dict(scratch=True, lr=0.01, n_members=paper.N_MEMBERS),
}


def variant_model(name, pretrained):
    """The unfitted estimator of one variant."""
    kw = dict(paper.FIT, **VARIANTS[name])
    n_members = kw.pop("n_members", None)
    if kw.pop("scratch", False):
        cls = CGCNNRegressor
    else:
        cls, kw["pretrained"] = TransferCGCNNRegressor, pretrained
        kw.setdefault("lr", paper.TL_LR)
    # seeds 0..n-1: each member also holds out other validation crystals
    return paper.ensemble(cls, kw, n_members) if n_members else cls(**kw)


def valid_mae(model):
    """MAE (target units) on the crystals the network held out for its best epoch;
    NaN for an ensemble, whose members hold out different crystals."""
    if not hasattr(model, "history_"):
        return np.nan
    return np.nanmin(model.history[:, "valid_loss"]) * model.module_.target_scale.item()


def report_target(target, res):
    """Markdown lines of one target's variants, best validation MAE first (ensembles, then
    variants with fewer trials, last)."""
    frame = res
    scratch = "CGCNN (scratch)"
    main_csv = paper.RESULTS / f"{paper.slug(target)}.csv"
    if scratch not in set(frame.model) and main_csv.is_file():
        rows = pd.read_csv(main_csv).query("model == 'CGCNN' and n_train == @paper.N_TRAIN")
        frame = pd.concat([frame, rows[["trial", "n_train", "test_mae"]].assign(model=scratch)])
    stats = frame.groupby("model").agg(trials=("test_mae", "size"), valid=("valid_mae", "mean"),
                                       mean=("test_mae", "mean"), std=("test_mae", "std"))
    stats["partial"] = stats.trials < stats.trials.max()  # unfinished variants last
    stats = stats.sort_values(["partial", "valid", "mean"], na_position="last")
    lines = [f"### {target} ({paper.TARGETS[target]['units']})", "",
             "| variant | trials | validation MAE | test MAE, mean (std) | p vs base | "
             "p vs scratch |", "| --- | --- | --- | --- | --- | --- |"]
    for name, row in stats.iterrows():
        ref = paper.ensemble_name("CGCNN") if name.endswith(f"ensemble of {paper.N_MEMBERS}") else scratch
        valid = "" if np.isnan(row.valid) else f"{row.valid:.4f}"
        lines.append(f"| {name} | {int(row.trials)} | {valid} | {row['mean']:.4f} ({row['std']:.4f}) | "
                     f"{'' if name.startswith('CGCNN') or name == 'base' else paper.p_text(frame, name, 'base')} | "
                     f"{'' if name == ref else paper.p_text(frame, name, ref)} |")
    return lines + [""]


def report():
    """Write the tables of every tuned target into docs/benchmarks.md."""
    lines = [BEGIN, "", "*Generated by `python benchmarks/tune_transfer.py --report` from "
             "`benchmarks/results/tuning/*.csv`; do not edit by hand.*", ""]
    for target in paper.TARGETS:
        path = paper.RESULTS / "tuning" / f"{paper.slug(target)}.csv"
        if path.is_file():
            lines += report_target(target, pd.read_csv(path))
    paper.write_block(lines + [END])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="500-K_VRH", choices=list(paper.TARGETS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report", action="store_true", help="only write the tables")
    args = p.parse_args(argv)
    if args.report:
        return report()
    torch.set_num_threads(args.threads)

    graphs, y = paper.load_target(args.target)
    splits = repeated_splits(len(y), paper.N_TRAIN, args.trials, random_state=0)
    pretrained = paper.TARGETS[args.target]["pretrained"][0][0]
    path = paper.RESULTS / "tuning" / f"{paper.slug(args.target)}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    models = {name: variant_model(name, pretrained) for name in args.variants}
    res = run_trials(models, graphs, y, splits, path=path, extra_scores={"valid_mae": valid_mae})
    summary = res.groupby("model")[["valid_mae", "test_mae"]].agg(["mean", "std", "count"])
    print(summary.sort_values(("valid_mae", "mean")).round(4).to_string())
    return res


if __name__ == "__main__":
    main()
