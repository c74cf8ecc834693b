"""Train a model of the pretrained library on ../shared/data (resumable).

Examples
--------
python benchmarks/pretrain.py mp-formation-energy
python benchmarks/pretrain.py mp-band-gap-nm --epochs 150
python benchmarks/pretrain.py mp-formation-energy --optimizer adamw --lr 0.002 \
    --weight-decay 1e-5 --schedule cosine --warmup 3 --epochs 150 --threads 1

The best epoch (lowest validation MAE) is written to skcgcnn/pretrained/ as a
state dict and a model card whenever it improves, so an interrupted run still
leaves a usable model; rerunning the same command resumes from the last
epoch's checkpoint in benchmarks/cache/pretrain-<name>/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from common import CACHE, MP_CRYSTALS, ROOT, load_table_and_graphs, nm_mask  # noqa: E402

from skcgcnn import CGCNNRegressor  # noqa: E402
from skcgcnn.callbacks import AtomicCheckpoint, CosineLR  # noqa: E402
from skcgcnn.pretrained import PRETRAINED_DIR, save_pretrained  # noqa: E402

#: name: (target column, non-metals only, training crystals or None for all)
MODELS = {
    "mp-formation-energy": ("formation_energy_per_atom", False, None),
    "mp-formation-energy-10k": ("formation_energy_per_atom", False, 10_000),
    "mp-band-gap-nm": ("band_gap", True, None),
    "mp-band-gap-nm-10k": ("band_gap", True, 10_000),
    "mp-formation-energy-nm": ("formation_energy_per_atom", True, None),
}
UNITS = {"formation_energy_per_atom": "eV/atom", "band_gap": "eV"}


def split(n, n_val, n_test, n_train, seed):
    """Fixed validation and test sets, then (a subset of) the rest for training."""
    perm = np.random.RandomState(seed).permutation(n)
    test, val, rest = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    return (rest if n_train is None else rest[:n_train]), val, test


class SaveBest(AtomicCheckpoint):
    """Also write the pretrained model and its card whenever validation improves."""

    def __init__(self, dirname, card_path, card):
        super().__init__(dirname)
        self.card_path = card_path
        self.card = card

    def on_epoch_end(self, net, **kwargs):
        super().on_epoch_end(net, **kwargs)
        if net.history[-1, "valid_loss_best"]:
            card = {**self.card, "best_epoch": len(net.history),
                    "valid_mae_normalized": net.history[-1, "valid_loss"]}
            save_pretrained(net, self.card_path, overwrite=True, **card)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(MODELS))
    p.add_argument("--epochs", type=int, default=120)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--lr-decay-epoch", type=int, default=80,
                   help="epoch of the x0.1 step decay (--schedule step)")
    p.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd",
                   help="sgd: the paper's SGD with momentum 0.9; adamw: torch's AdamW")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", choices=["step", "cosine"], default="step",
                   help="step: x0.1 at --lr-decay-epoch; cosine: warmup, then cosine to 0 "
                        "at --epochs")
    p.add_argument("--warmup", type=int, default=0, help="warmup epochs (--schedule cosine)")
    p.add_argument("--batch-size", type=int, default=256)
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
                   help="folder of the per-epoch checkpoint that a rerun resumes from "
                        "(default benchmarks/cache/pretrain-NAME; commit it to resume elsewhere)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    target, nm_only, n_train = MODELS[args.name]

    t0 = time.time()
    table, graphs = load_table_and_graphs(MP_CRYSTALS)
    keep = np.flatnonzero(nm_mask(table)) if nm_only else np.arange(len(table))
    y_all = table[target].to_numpy(float)
    keep = keep[np.isfinite(y_all[keep])]
    tr, va, te = split(len(keep), args.n_val, args.n_test, n_train, args.seed)
    tr, va, te = keep[tr], keep[va], keep[te]
    print(f"{args.name}: {len(tr)} train, {len(va)} validation, {len(te)} test "
          f"(data loaded in {time.time() - t0:.0f} s)", flush=True)

    ckpt = Path(args.checkpoint_dir or CACHE / f"pretrain-{args.name}")
    done = 0
    if (ckpt / "history.json").is_file():
        done = len(json.loads((ckpt / "history.json").read_text()))
    lr, decay_at = args.lr, args.lr_decay_epoch
    if args.schedule == "cosine":  # CosineLR reads the epoch from the restored history
        decay_at = None
    elif done >= decay_at:
        lr, decay_at = lr * 0.1, None
    elif done:
        decay_at -= done
    remaining = args.epochs - done
    if remaining <= 0:
        print("already trained; nothing to do")
    command = "python benchmarks/pretrain.py " + " ".join(argv if argv is not None else sys.argv[1:])
    card = {
        "target": target, "units": UNITS[target],
        # what the data is, not a file name the package's users do not have
        "data": "Materials Project, the 36,737-crystal GGA/GGA+U snapshot of the original CGCNN "
                f"work ({'E_g > 0.1 eV non-metals' if nm_only else 'all crystals'})",
        "n_train": int(len(tr)), "n_validation": int(len(va)), "n_test": int(len(te)),
        "split_seed": args.seed, "training_command": command,
        "hyperparameters": _recipe(args),
    }
    optimizer = {"sgd": {"optimizer": torch.optim.SGD, "weight_decay": args.weight_decay},
                 "adamw": {"optimizer": torch.optim.AdamW,
                           "optimizer__weight_decay": args.weight_decay}}[args.optimizer]
    schedule = [CosineLR(args.epochs, warmup=args.warmup)] if args.schedule == "cosine" else []
    val_idx = np.concatenate([tr, va])
    net = CGCNNRegressor(
        lr=lr, lr_decay_epoch=decay_at, batch_size=args.batch_size, max_epochs=max(remaining, 0),
        device=args.device, random_state=args.seed, verbose=1, conv_dtype=args.conv_dtype,
        train_split=lambda ds, y: _fixed_split(ds, len(tr)),
        callbacks=[*schedule, SaveBest(ckpt, os.path.join(args.out, args.name), card)],
        **optimizer,
    )
    if remaining > 0:
        net.fit(graphs[val_idx], y_all[val_idx])
    # the best epoch, as written by SaveBest: evaluate it on the test set
    from skcgcnn.pretrained import load_pretrained

    module, saved = load_pretrained(os.path.join(args.out, args.name + ".pt"))
    # the command that finished the model (a resumed run may end it earlier or later)
    card = {**saved, "training_command": command, "hyperparameters": card["hyperparameters"]}
    net.initialize()
    net.module_.load_state_dict(module.state_dict())
    pred = net.predict(graphs[te])
    card["test_mae"] = float(np.abs(pred - y_all[te]).mean())
    card["test_mad"] = float(np.abs(y_all[te] - y_all[tr].mean()).mean())
    history = ckpt / "history.json"
    epochs = json.loads(history.read_text()) if history.is_file() else []
    card["training_time_s"] = round(sum(e["dur"] for e in epochs))  # all epochs, resumed or not
    card["epochs_trained"] = len(epochs)
    from skcgcnn.io import save_json

    save_json(card, os.path.join(args.out, args.name + ".json"))
    print(json.dumps(card, indent=2), flush=True)


def _recipe(args):
    """The card's record of the pretraining recipe."""
    recipe = {"optimizer": {"sgd": "SGD", "adamw": "AdamW"}[args.optimizer], "lr": args.lr,
              "weight_decay": args.weight_decay, "schedule": args.schedule,
              "batch_size": args.batch_size, "epochs": args.epochs,
              "conv_dtype": args.conv_dtype}
    if args.optimizer == "sgd":
        recipe["momentum"] = 0.9
    if args.schedule == "step":
        recipe.update(lr_decay_epoch=args.lr_decay_epoch, lr_decay=0.1)
    else:
        recipe["warmup_epochs"] = args.warmup
    return recipe


def _fixed_split(dataset, n_train):
    """Training rows first, validation rows after (the script's fixed split)."""
    from torch.utils.data import Subset

    return Subset(dataset, range(n_train)), Subset(dataset, range(n_train, len(dataset)))


if __name__ == "__main__":
    main()
