"""Train a model of the pretrained library on ../shared/data (resumable).

Examples
--------
python benchmarks/pretrain.py mp-formation-energy --threads 1
python benchmarks/pretrain.py mp-multitask --epochs 150
python benchmarks/pretrain.py mp-band-gap-nm --optimizer sgd --lr 0.01 --weight-decay 0 \\
    --schedule step --lr-decay-epoch 40 --epochs 50      # the v1 (paper-style) recipe

The recipe defaults to :data:`skcgcnn.pretraining.PRETRAINING_RECIPE` (AdamW,
warmup and cosine decay); :func:`skcgcnn.pretraining.pretrain` does the work,
as for ``skcgcnn pretrain``. The best epoch (lowest validation MAE) is written
to ``--out`` as a state dict and a model card whenever it improves, so an
interrupted run still leaves a usable model; rerunning the same command resumes
from the last epoch's checkpoint in ``--checkpoint-dir`` (commit that folder to
resume on another machine). At the end, the best epoch's test MAE goes into the
card.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import CACHE, MP_CRYSTALS, load_table_and_graphs, nm_mask  # noqa: E402

from skcgcnn.io import save_json  # noqa: E402
from skcgcnn.pretrained import PRETRAINED_DIR, load_estimator  # noqa: E402
from skcgcnn.pretraining import PRETRAINING_RECIPE, pretrain  # noqa: E402

#: name: (target column(s), non-metals only, training crystals or None for all)
MODELS = {
    "mp-formation-energy": ("formation_energy_per_atom", False, None),
    "mp-formation-energy-10k": ("formation_energy_per_atom", False, 10_000),
    "mp-band-gap-nm": ("band_gap", True, None),
    "mp-band-gap-nm-10k": ("band_gap", True, 10_000),
    "mp-formation-energy-nm": ("formation_energy_per_atom", True, None),
    # several properties of all crystals at once; magnetization per atom (intensive, as
    # the mean-pooled network predicts), missing labels masked
    "mp-multitask": (("formation_energy_per_atom", "band_gap", "efermi",
                      "magnetization_per_atom"), False, None),
    # the same without ΔE_f: a source for the formation-energy targets that never saw
    # their labels (as mp-band-gap-nm)
    "mp-multitask-no-fe": (("band_gap", "efermi", "magnetization_per_atom"), False, None),
    # and without E_g: a second source for the band-gap target that never saw its labels
    "mp-multitask-no-gap": (("formation_energy_per_atom", "efermi", "magnetization_per_atom"),
                            False, None),
}
UNITS = {"formation_energy_per_atom": "eV/atom", "band_gap": "eV", "efermi": "eV",
         "magnetization_per_atom": "muB/atom"}


def split(n, n_val, n_test, n_train, seed):
    """Fixed validation and test sets, then (a subset of) the rest for training."""
    perm = np.random.RandomState(seed).permutation(n)
    test, val, rest = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    return (rest if n_train is None else rest[:n_train]), val, test


def targets(table, graphs, columns):
    """The target columns of the table, derived ones included."""
    out = []
    for c in columns:
        if c == "magnetization_per_atom":
            n_atoms = np.array([len(g.numbers) for g in graphs], dtype=float)
            out.append(table["total_magnetization"].to_numpy(float) / n_atoms)
        else:
            out.append(table[c].to_numpy(float))
    return np.column_stack(out) if len(out) > 1 else out[0]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    r = PRETRAINING_RECIPE
    p.add_argument("name", choices=sorted(MODELS))
    p.add_argument("--epochs", type=int, default=r["epochs"])
    p.add_argument("--lr", type=float, default=r["lr"])
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default=r["optimizer"])
    p.add_argument("--weight-decay", type=float, default=r["weight_decay"])
    p.add_argument("--schedule", choices=["step", "cosine"], default=r["schedule"])
    p.add_argument("--warmup", type=int, default=r["warmup"])
    p.add_argument("--lr-decay-epoch", type=int, default=None, help="--schedule step")
    p.add_argument("--batch-size", type=int, default=r["batch_size"])
    p.add_argument("--n-val", type=int, default=2500)
    p.add_argument("--n-test", type=int, default=2500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--conv-dtype", default="bfloat16", choices=["float32", "bfloat16"],
                   help="precision of the convolutions (bfloat16: about 2.5x faster on CPU)")
    p.add_argument("--out", default=str(PRETRAINED_DIR),
                   help="folder of the model and card written at every best epoch")
    p.add_argument("--checkpoint-dir", default=None,
                   help="per-epoch checkpoint that a rerun resumes from (default "
                        "benchmarks/cache/pretrain-NAME; commit it to resume elsewhere)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    columns, nm_only, n_train = MODELS[args.name]
    columns = (columns,) if isinstance(columns, str) else columns

    table, graphs = load_table_and_graphs(MP_CRYSTALS)
    keep = np.flatnonzero(nm_mask(table)) if nm_only else np.arange(len(table))
    y_all = targets(table, graphs, columns)
    labelled = np.isfinite(y_all) if y_all.ndim == 1 else np.isfinite(y_all).any(axis=1)
    keep = keep[labelled[keep]]
    tr, va, te = split(len(keep), args.n_val, args.n_test, n_train, args.seed)
    tr, va, te = keep[tr], keep[va], keep[te]
    print(f"{args.name}: {len(tr)} train, {len(va)} validation, {len(te)} test", flush=True)

    command = "python benchmarks/pretrain.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    card = {"target": columns[0] if len(columns) == 1 else list(columns),
            "units": UNITS[columns[0]] if len(columns) == 1 else [UNITS[c] for c in columns],
            # what the data is, not a file name the package's users do not have
            "data": "Materials Project, the 36,737-crystal GGA/GGA+U snapshot of the original "
                    f"CGCNN work ({'E_g > 0.1 eV non-metals' if nm_only else 'all crystals'})",
            "split_seed": args.seed, "n_test": int(len(te)), "training_command": command}
    path = Path(args.out) / args.name
    pretrain(graphs[tr], y_all[tr], path, X_valid=graphs[va], y_valid=y_all[va],
             optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
             schedule=args.schedule, warmup=args.warmup, epochs=args.epochs,
             batch_size=args.batch_size, lr_decay_epoch=args.lr_decay_epoch,
             checkpoint_dir=args.checkpoint_dir or CACHE / f"pretrain-{args.name}",
             random_state=args.seed, card=card, device=args.device,
             conv_dtype=args.conv_dtype, verbose=1)

    # the best epoch, as saved: its test MAE per target and the mean predictor's
    model = load_estimator(path.with_name(path.name + ".pt"))
    pred, y_te = model.predict(graphs[te]), y_all[te]
    mean = np.nanmean(y_all[tr], axis=0)
    err, mad = np.abs(pred - y_te), np.abs(y_te - mean)
    saved = model.card_
    if y_all.ndim == 1:
        saved.update(test_mae=float(err.mean()), test_mad=float(mad.mean()))
    else:
        saved.update(test_mae=[float(np.nanmean(e)) for e in err.T],
                     test_mad=[float(np.nanmean(m)) for m in mad.T])
    save_json(saved, path.with_name(path.name + ".json"))
    print(json.dumps(saved, indent=2), flush=True)


if __name__ == "__main__":
    main()
