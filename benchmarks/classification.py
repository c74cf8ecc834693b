"""Classification on the protocol: metal or not from 500 Materials Project crystals.

Examples
--------
SKCGCNN_CACHE=/work/main/benchmarks/cache python benchmarks/classification.py --threads 1
python benchmarks/classification.py --report     # rewrite its table in docs/benchmarks.md

A crystal is a metal when its PBE band gap is exactly 0 in
``mp_crystals_36k.json.gz`` (15,584 of the 36,737 crystals, 42.4 %). The splits are the
protocol's (``skcgcnn.stats.repeated_splits``, seed 0, 10 trials of 500 / 125
/ 125, as ``paper.py``): every model is fitted on the 625 training and
validation crystals and scored on the 125 test crystals, by ROC AUC and
average precision of "metal" (the positive class), plus accuracy and balanced
accuracy at the most probable class.

Models:

- ``TL-CGCNN (36k-ΔE_f)``: :class:`skcgcnn.TransferCGCNNClassifier` from
  ``mp-formation-energy`` (pretrained on formation energies only: it never
  saw a band gap), at its fine-tuning defaults (30 epochs of 32, cosine from
  0.01), a new head with two outputs; the 125 validation crystals choose its
  best epoch (stratified split).
- ``TL-CGCNN (36k-multitask-no-gap)``: the same from ``mp-multitask-no-gap``
  (ΔE_f, E_fermi and magnetization, no band gap).
- ``CGCNN``: :class:`skcgcnn.CGCNNClassifier` from scratch with the TL rows'
  budget and head (30 epochs of 32, cosine from 0.01, head of 64): only the
  initialisation differs.
- ``TL-CGCNN ensemble of 3 (36k-ΔE_f)``: :class:`skcgcnn.EnsembleClassifier` of three
  seeds of the first TL row (seeds drawn from ``random_state=0``), probabilities averaged.
- ``CGCNN (150 epochs)``: from scratch with the protocol's regression settings
  (150 epochs of 64, lr 0.01 decayed at epoch 100), five times the cost; run
  last.
- ``LR``, ``SVC``, ``RF``: class-balanced logistic regression, RBF SVC and
  random forest on the 132 magpie descriptors after ``StandardScaler``, tuned
  by 5-fold stratified ``GridSearchCV`` on ROC AUC
  (``skcgcnn.baselines.baseline_classifiers``).

Each finished fit is appended to ``benchmarks/results/500-metal.csv`` at once;
a rerun skips what is there.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import pandas as pd
import torch
from sklearn.base import clone
from sklearn.metrics import (accuracy_score, average_precision_score, balanced_accuracy_score,
                             roc_auc_score)

sys.path.insert(0, os.path.dirname(__file__))
from common import CACHE, MP_CRYSTALS, ROOT, load_table_and_graphs  # noqa: E402

from skcgcnn import CGCNNClassifier, EnsembleClassifier, TransferCGCNNClassifier  # noqa: E402
from skcgcnn.baselines import baseline_classifiers  # noqa: E402
from skcgcnn.io import atomic_write_bytes  # noqa: E402
from skcgcnn.stats import paired_ttest, repeated_splits  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- classification.py report: begin -->", "<!-- classification.py report: end -->"
PATH = RESULTS / "500-metal.csv"
COLUMNS = ["trial", "model", "n_train", "roc_auc", "average_precision", "accuracy",
           "balanced_accuracy", "best_epoch", "fit_time_s"]
N_TRAIN, N_TRIALS = 500, 10
#: The protocol's from-scratch settings (paper.py's FIT).
SCRATCH = dict(max_epochs=150, lr_decay_epoch=100, batch_size=64, conv_dtype="bfloat16",
               lr_schedule="step", random_state=0)
#: From scratch with the fine-tuning budget of the TL rows (TransferCGCNNClassifier's
#: defaults: 30 epochs of 32 on a cosine from 0.01, head of 64): the same network and
#: training, only the initialisation differs.
SAME_BUDGET = dict(h_fea_len=64, max_epochs=30, batch_size=32, lr_schedule="cosine",
                   conv_dtype="bfloat16", random_state=0)
TL = "TL-CGCNN (36k-ΔE_f)"
TL_MULTI = "TL-CGCNN (36k-multitask-no-gap)"
ENSEMBLE = "TL-CGCNN ensemble of 3 (36k-ΔE_f)"


def models():
    out = {
        TL: TransferCGCNNClassifier(pretrained="mp-formation-energy", conv_dtype="bfloat16",
                                    random_state=0),
        **baseline_classifiers(random_state=0),
        "CGCNN": CGCNNClassifier(**SAME_BUDGET),
        TL_MULTI: TransferCGCNNClassifier(
            pretrained="mp-multitask-no-gap", conv_dtype="bfloat16", random_state=0),
        ENSEMBLE: EnsembleClassifier(
            TransferCGCNNClassifier(pretrained="mp-formation-energy", conv_dtype="bfloat16"),
            n_estimators=3, random_state=0),
        "CGCNN (150 epochs)": CGCNNClassifier(**SCRATCH),
    }
    return out


def load():
    """Graphs and metal labels (band gap exactly 0) of the 36k crystals."""
    table, graphs = load_table_and_graphs(MP_CRYSTALS)
    return graphs, table["band_gap"].to_numpy(float) == 0.0


def magpie(graphs, rows):
    """Magpie descriptors of ``graphs[rows]`` (zeros elsewhere), cached in CACHE."""
    from skcgcnn.composition import MagpieFeaturizer

    key = CACHE / f"magpie-metal-{len(graphs)}-{len(rows)}-{int(rows.sum())}.npy"
    X = np.zeros((len(graphs), 132))
    if key.is_file():
        X[rows] = np.load(key)
        return X
    X[rows] = MagpieFeaturizer().transform(graphs[rows])
    import io
    buf = io.BytesIO()
    np.save(buf, X[rows])
    atomic_write_bytes(key, buf.getvalue())
    return X


def scores(model, X_test, y_test):
    if hasattr(model, "predict_proba"):
        p = model.predict_proba(X_test)[:, list(model.classes_).index(True)]
    else:  # SVC without Platt scaling: its decision function ranks as well
        p = model.decision_function(X_test)
    pred = model.predict(X_test)
    return dict(roc_auc=roc_auc_score(y_test, p),
                average_precision=average_precision_score(y_test, p),
                accuracy=accuracy_score(y_test, pred),
                balanced_accuracy=balanced_accuracy_score(y_test, pred))


def best_epoch(model):
    if hasattr(model, "estimators_"):  # an ensemble: its members' mean
        return float(np.mean([best_epoch(m) for m in model.estimators_]))
    history = getattr(model, "history_", None)
    if not history:
        return np.nan
    losses = history[:, "valid_loss"]
    return int(np.argmin(losses)) + 1


def run(names):
    graphs, y = load()
    splits = repeated_splits(len(y), N_TRAIN, N_TRIALS, random_state=0)
    done = pd.read_csv(PATH) if PATH.is_file() else pd.DataFrame(columns=COLUMNS)
    todo = {k: v for k, v in models().items() if not names or k in names}
    rows = np.zeros(len(y), bool)
    for s in splits:
        rows[np.concatenate(s)] = True
    X_magpie = None
    for name, template in todo.items():
        for trial, (tr, va, te) in enumerate(splits):
            if ((done.trial == trial) & (done.model == name)).any():
                continue
            fit_idx = np.concatenate([tr, va])
            cgcnn = isinstance(template, (CGCNNClassifier, EnsembleClassifier))
            if not cgcnn and X_magpie is None:
                X_magpie = magpie(graphs, rows)
            X = graphs if cgcnn else X_magpie
            model = clone(template)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.fit(X[fit_idx], y[fit_idx])
            row = dict(trial=trial, model=name, n_train=len(tr), **scores(model, X[te], y[te]),
                       best_epoch=best_epoch(model) if cgcnn else np.nan,
                       fit_time_s=time.perf_counter() - t0)
            print(row, flush=True)
            done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
            atomic_write_bytes(PATH, done[COLUMNS].to_csv(index=False).encode())


def report():
    """Markdown table: mean (std) over the trials and paired t-tests against the TL rows
    (two-sided p; "lower": this row's mean is below the TL row's)."""
    frame = pd.read_csv(PATH)
    order = [m for m in models() if m in set(frame.model)]
    refs = [m for m in (TL, TL_MULTI) if m in order]
    lines = ["| model | ROC AUC | average precision | accuracy | balanced accuracy | trials | "
             + " | ".join(f"p (AUC; AP) vs {r}" for r in refs) + " | fit time (s) |",
             "| --- " * (7 + len(refs)) + "|"]
    for m in order:
        f = frame[frame.model == m]
        cells = [f"{f[c].mean():.3f} ({f[c].std():.3f})" if len(f) > 1 else f"{f[c].mean():.3f}"
                 for c in ("roc_auc", "average_precision", "accuracy", "balanced_accuracy")]
        ps = []
        for ref in refs:
            shared = set(frame.trial[frame.model == ref]) & set(frame.trial[frame.model == m])
            if m == ref or len(shared) < 2:
                ps.append("")
                continue
            pair = []
            for metric in ("roc_auc", "average_precision"):
                t, p = paired_ttest(frame, ref, m, metric=metric)
                pair.append(f"{p:.2g} ({'lower' if t > 0 else 'higher'})")
            ps.append("; ".join(pair))
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {len(f)} | " + " | ".join(ps)
                     + f" | {f.fit_time_s.mean():.0f} |")
    text = "\n".join(lines)
    import paper  # the block writer of docs/benchmarks.md

    paper.write_block([BEGIN, "", "*Generated by `python benchmarks/classification.py --report` "
                       "from `benchmarks/results/500-metal.csv`; do not edit by hand.*", "",
                       "### 500-metal (ROC AUC and average precision of \"metal\", 125 test "
                       "crystals)", "", text, "", END])
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="model names to run (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--report", action="store_true", help="print the table, fit nothing")
    args = parser.parse_args(argv)
    if args.report:
        report()
        return
    torch.set_num_threads(args.threads)
    run(args.models)
    report()


if __name__ == "__main__":
    main()
