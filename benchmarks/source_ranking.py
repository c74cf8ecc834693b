"""How well does the source probe rank the source models that fine-tuning ranks?

Examples
--------
python benchmarks/source_ranking.py                      # every target of paper.py
python benchmarks/source_ranking.py --targets 500-K_VRH --report
python benchmarks/source_ranking.py --targets 500-K_VRH 500-NM-E_g --timing

For each target of ``paper.py`` and each of its 10 protocol trials, every allowed
source model (``paper.allowed_sources``: never trained on the target's labels) is
scored by ``skcgcnn.source_selection.probe_score`` on the trial's 625 fit crystals
(training + validation, what ``TransferCGCNNRegressor`` is given), with the probe
variants of ``VARIANTS``: ridge on the pooled vector (the default, what
``pretrained="auto"`` does), ridge on pooled vector + the source head's hidden layer, and
kernel ridge (RBF) on the pooled vector; in the benchmarks' precision (bfloat16
convolutions, ``paper.FIT``). Rows go to ``benchmarks/results/source_ranking.csv`` (target, trial, source,
variant, probe_mae). The wall time of ``rank_sources`` itself (network loading,
forward passes, ridge) on trial 0 goes to the ``rank_time_s`` column of the default
variant's rows.

``--report`` joins the probe's choice per trial with the "single" stage's fixed-source
rows of ``benchmarks/results/<target>.csv`` (test MAE of one fine-tune at the defaults
from each source) and prints, per variant, the mean test MAE of the chosen source
against the best source fixed in hindsight.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, os.path.dirname(__file__))
import paper  # noqa: E402

from skcgcnn.embedding import crystal_embeddings  # noqa: E402
from skcgcnn.modelfile import network_source  # noqa: E402
from skcgcnn.source_selection import probe_score, rank_sources  # noqa: E402

OUT = paper.RESULTS / "source_ranking.csv"
#: The precision of the benchmarks' fits (paper.FIT), which pretrained="auto" probes with.
CONV_DTYPE = paper.FIT["conv_dtype"]
VARIANTS = ("ridge pooled", "ridge pooled + hidden", "kernel ridge pooled")


def _krr():
    """Kernel ridge (RBF, gamma 1 / features on standardised vectors), alpha by 3-fold CV."""
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), GridSearchCV(
        KernelRidge(kernel="rbf", gamma=1 / 64), {"alpha": [0.01, 0.1, 1.0]}, cv=3,
        scoring="neg_mean_absolute_error"))


def probe_rows(target):
    graphs, y = paper.load_target(target)
    splits = paper.stage_splits(target, "single", len(y))[paper.N_TRAIN]
    rows = np.unique(np.concatenate([np.r_[s[0], s[1]] for s in splits]))
    where = {r: i for i, r in enumerate(rows)}
    sources = paper.allowed_sources(target)
    emb, width = {}, {}
    for name in sources:
        module, _ = network_source(paper.source_model(name), conv_dtype=CONV_DTYPE)
        emb[name] = crystal_embeddings(module, graphs[rows], "pooled+hidden")
        width[name] = module.hparams["atom_fea_len"]
    out = []
    for t, (train, val, _) in enumerate(splits):
        fit = np.array([where[r] for r in np.r_[train, val]])
        seconds = np.nan
        if t == 0:
            t0 = time.perf_counter()
            rank_sources([paper.source_model(s) for s in sources], graphs[np.r_[train, val]],
                         y[np.r_[train, val]], random_state=0, conv_dtype=CONV_DTYPE)
            seconds = time.perf_counter() - t0
        for name in sources:
            pooled = emb[name][:, :width[name]]
            feats = {"ridge pooled": pooled, "ridge pooled + hidden": emb[name],
                     "kernel ridge pooled": pooled}
            for variant in VARIANTS:
                est = _krr() if variant.startswith("kernel") else None
                out.append(dict(target=target, trial=t, source=name, variant=variant,
                                probe_mae=probe_score(feats[variant][fit], y[rows][fit],
                                                      random_state=0, estimator=est),
                                rank_time_s=seconds if variant == VARIANTS[0] else np.nan))
        print(target, t, flush=True)
    return out


def timing(target, repeats=2):
    """CPU seconds of rank_sources over every allowed source against one fine-tune at the
    defaults (from the main source), on trial 0's 625 fit crystals, alternated."""
    from skcgcnn import TransferCGCNNRegressor

    graphs, y = paper.load_target(target)
    train, val, _ = paper.stage_splits(target, "single", len(y))[paper.N_TRAIN][0]
    G, Y = graphs[np.r_[train, val]], y[np.r_[train, val]]
    cands = [paper.source_model(s) for s in paper.allowed_sources(target)]
    probe, fit = [], []
    for _ in range(repeats):
        t0 = time.process_time()
        rank_sources(cands, G, Y, random_state=0, conv_dtype=CONV_DTYPE)
        probe.append(time.process_time() - t0)
        t0 = time.process_time()
        TransferCGCNNRegressor(pretrained=paper.TARGETS[target]["pretrained"][0][0],
                               conv_dtype=CONV_DTYPE, random_state=0, **paper.HELD_OUT).fit(G, Y)
        fit.append(time.process_time() - t0)
    print(f"{target}: probe of {len(cands)} sources {np.mean(probe):.2f} CPU s "
          f"({', '.join(f'{v:.2f}' for v in probe)}), one fine-tune {np.mean(fit):.2f} CPU s "
          f"({', '.join(f'{v:.2f}' for v in fit)}): {np.mean(probe) / np.mean(fit):.1%}",
          flush=True)


def report(frame):
    from scipy.stats import spearmanr

    lines = []
    for target, g in frame.groupby("target", sort=False):
        fixed = pd.read_csv(paper.RESULTS / f"{paper.slug(target)}.csv")
        names = {paper.single_name(paper.SOURCE_LABELS[s]): s
                 for s in paper.allowed_sources(target)}
        fixed = fixed[fixed.model.isin(names)].assign(source=lambda f: f.model.map(names))
        mae = fixed.pivot(index="trial", columns="source", values="test_mae").dropna()
        if mae.empty:
            continue
        best = mae.mean().idxmin()
        for variant, v in g.groupby("variant", sort=False):
            probe = v.pivot(index="trial", columns="source", values="probe_mae").loc[mae.index]
            chosen = probe.idxmin(axis=1)
            auto = np.array([mae.loc[t, s] for t, s in chosen.items()])
            # per trial, the rank correlation of the probe's scores with the fine-tuned MAEs
            rho = np.nanmean([spearmanr(probe.loc[t, mae.columns], mae.loc[t])[0]
                              for t in mae.index]) if mae.shape[1] > 2 else np.nan
            lines.append(f"{target} ({len(mae)} trials) {variant}: auto {auto.mean():.4f}, "
                         f"best fixed {best} {mae[best].mean():.4f} "
                         f"({100 * (auto.mean() / mae[best].mean() - 1):+.1f} %), oracle per "
                         f"trial {mae.min(axis=1).mean():.4f}; Spearman(probe, fine-tuned) "
                         f"{rho:.2f}; chosen "
                         f"{chosen.value_counts().to_dict()}")
    print("\n".join(lines))
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", nargs="+", choices=list(paper.TARGETS), default=list(paper.TARGETS))
    p.add_argument("--report", action="store_true", help="only compare with the fixed rows")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--timing", action="store_true",
                   help="only time the probe against one fine-tune (CPU seconds, trial 0)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.timing:
        for target in args.targets:
            timing(target)
        return
    if not args.report:
        done = pd.read_csv(OUT) if OUT.is_file() else pd.DataFrame()
        rows = done.to_dict("records")
        for target in args.targets:
            if len(done) and target in set(done.target):
                continue
            rows += probe_rows(target)
            from skcgcnn.io import atomic_write_bytes
            atomic_write_bytes(OUT, pd.DataFrame(rows).to_csv(index=False).encode())
    report(pd.read_csv(OUT))


if __name__ == "__main__":
    main()
