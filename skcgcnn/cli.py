"""The ``skcgcnn`` command: featurize, train, fine-tune, predict, compare.

Every subcommand reads its crystals from one INPUT, in any of these forms:

- a folder in the original CGCNN layout: ``id_prop.csv`` (rows ``id,target``,
  no header) and one ``<id>.cif`` per row;
- a CSV table with a column of CIF paths (relative to the CSV's folder) or
  CIF text (``--structure-column``, default ``structure``) and a target
  column (``--target``);
- a matbench-style JSON table (``.json`` or ``.json.gz``, pandas ``split``
  layout, a ``structure`` column of ``Structure.as_dict()`` dicts);
- a graph file written by ``skcgcnn featurize`` (``.joblib``).

Bad input (a missing folder, file or column, an unknown pretrained model,
targets that ``--log10`` cannot take) ends the command with exit status 2 and
a one-line message naming it.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import textwrap
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .estimators import CGCNNRegressor, TransferCGCNNRegressor
from .graph import CrystalGraph, CrystalGraphTransformer, as_graph_array

__all__ = ["main", "build_parser"]

#: Exit status of a command stopped by bad input (argparse's own for bad options).
EXIT_BAD_INPUT = 2
#: Errors reported as one line with EXIT_BAD_INPUT instead of a traceback.
_INPUT_ERRORS = (OSError, ValueError, KeyError, ImportError)
#: ``compare`` model keys, their labels in the table, and the default selection.
_MODEL_LABELS = {"tl": "TL-CGCNN", "scratch": "CGCNN", "rf": "RF", "svr": "SVR", "lasso": "LASSO"}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in the epilogs as written."""


# ---------------------------------------------------------------------- input
@dataclass
class _Data:
    """Crystals read from an INPUT: ids, structures (or paths or graphs), targets."""

    ids: list
    X: object
    y: np.ndarray | None
    target: str
    source: str


def _ids_from_frame(frame, id_column):
    if id_column is not None:
        if id_column not in frame.columns:
            raise ValueError(f"table has no id column {id_column!r}; its columns are "
                             f"{', '.join(map(str, frame.columns))}")
        return [str(v) for v in frame[id_column]]
    for name in ("id", "material_id", "mpid"):
        if name in frame.columns:
            return [str(v) for v in frame[name]]
    return [str(v) for v in frame.index]


def _read_input(path, target=None, structure_column="structure", id_column=None,
                need_target=False, log10=False, n_jobs=None):
    """Read any INPUT form into :class:`_Data`; errors name the bad input."""
    from .datasets import load_cgcnn_folder, load_table

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"input does not exist: {path!r}")
    y = None
    if os.path.isdir(path):
        ids, X, y = load_cgcnn_folder(path)
        if not ids:
            raise ValueError(f"{os.path.join(path, 'id_prop.csv')!r} lists no crystals")
        missing = [p for p in X if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"{len(missing)} CIF file(s) listed in id_prop.csv do not "
                                    f"exist, the first {missing[0]!r}")
        target = target or "target"
    elif path.lower().endswith(".joblib"):
        import joblib

        stored = joblib.load(path)
        if not isinstance(stored, dict) or "graphs" not in stored:
            raise ValueError(f"{path!r} is not a graph file written by 'skcgcnn featurize'")
        ids, X, y = list(stored["ids"]), stored["graphs"], stored.get("y")
        target = target or stored.get("target") or "target"
    else:
        frame = load_table(path, structure_column, target, n_jobs=n_jobs)
        ids, X = _ids_from_frame(frame, id_column), list(frame[structure_column])
        if target is not None:
            y = frame[target].to_numpy(dtype=float)
        elif need_target:
            raise ValueError(f"name the target column of {path!r} with --target; its columns "
                             f"are {', '.join(map(str, frame.columns))}")
    if need_target:
        if y is None:
            raise ValueError(f"{path!r} holds no targets")
        y = np.asarray(y, dtype=float)
        bad = ~np.isfinite(y)
        if bad.any():
            raise ValueError(f"{int(bad.sum())} crystal(s) in {path!r} have no finite target, "
                             f"the first {ids[int(np.flatnonzero(bad)[0])]!r}")
        if log10:
            bad = y <= 0
            if bad.any():
                raise ValueError(f"--log10 needs positive targets, but {int(bad.sum())} in "
                                 f"{path!r} are not, the first {ids[int(np.flatnonzero(bad)[0])]!r}"
                                 f" ({y[bad][0]})")
            y = np.log10(y)
    return _Data(ids=ids, X=X, y=y, target=target, source=path)


def _is_graphs(X):
    return isinstance(X, np.ndarray) and X.dtype == object and all(
        isinstance(g, CrystalGraph) for g in X)


def _featurize(X, radius, max_num_nbr, n_jobs=None, progress=True):
    """Graphs of X (already-built graphs are passed through), with a progress bar."""
    if _is_graphs(X):
        return X
    return CrystalGraphTransformer(radius=radius, max_num_nbr=max_num_nbr, n_jobs=n_jobs,
                                   verbose=progress).transform(X)


def _write_bytes(data: bytes, out):
    from .io import atomic_write_bytes

    atomic_write_bytes(out, data)
    _note(f"wrote {out}")


def _note(message):
    print(message, file=sys.stderr)


# ------------------------------------------------------------------- commands
def _cmd_featurize(args):
    import joblib

    data = _read_input(args.input, args.target, args.structure_column, args.id_column,
                       n_jobs=args.n_jobs)
    graphs = _featurize(data.X, args.radius, args.max_num_nbr, args.n_jobs, not args.quiet)
    from . import __version__

    buf = io.BytesIO()
    joblib.dump({"ids": data.ids, "graphs": graphs, "y": data.y, "target": data.target,
                 "source": data.source, "radius": args.radius,
                 "max_num_nbr": args.max_num_nbr, "skcgcnn_version": __version__}, buf)
    _write_bytes(buf.getvalue(), args.output)
    _note(f"{len(graphs)} crystal graphs, {sum(g.n_atoms for g in graphs)} atoms")
    return 0


def _parse_freeze(value):
    if value is None or value.lower() == "none":
        return None
    return int(value) if value.isdigit() else value


def _estimator(args, finetune):
    common = dict(lr=args.lr, max_epochs=args.epochs, batch_size=args.batch_size,
                  random_state=args.random_state, verbose=0 if args.quiet else 1)
    if finetune:
        return TransferCGCNNRegressor(pretrained=args.pretrained, freeze=_parse_freeze(args.freeze),
                                      head=args.head, **common)
    return CGCNNRegressor(radius=args.radius, max_num_nbr=args.max_num_nbr, **common)


def _fit_and_save(args, finetune):
    from .pretrained import save_pretrained

    data = _read_input(args.input, args.target, args.structure_column, args.id_column,
                       need_target=True, log10=args.log10, n_jobs=args.n_jobs)
    est = _estimator(args, finetune)
    radius, max_num_nbr = est._featurizer_settings()  # finetune: from the model card
    graphs = _featurize(data.X, radius, max_num_nbr, args.n_jobs, not args.quiet)
    est.fit(graphs, data.y)
    pred, y = est.predict(graphs), data.y
    if args.log10:  # the card's figures are in the target's own units, as predict writes
        pred, y = 10.0 ** pred, 10.0 ** y
    history = est.history_
    train_set, valid_set = est.get_split_datasets(graphs, data.y)
    card = {
        "data": os.path.abspath(data.source),
        "target": data.target,
        "units": args.units,
        "target_transform": "log10" if args.log10 else None,
        "n_train": len(train_set),
        "n_validation": 0 if valid_set is None else len(valid_set),
        "train_mae": float(np.mean(np.abs(pred - y))),
        "epochs_trained": len(history),
        "hyperparameters": {k: v for k, v in est.get_params().items() if k in (
            "lr", "max_epochs", "batch_size", "momentum", "weight_decay", "lr_decay_epoch",
            "lr_decay", "validation_fraction", "random_state", "freeze", "head")},
        "training_command": " ".join(["skcgcnn", *args.argv]),
    }
    if "valid_loss" in history[0]:
        losses = [row["valid_loss"] for row in history]
        card["best_epoch"] = int(np.argmin(losses)) + 1
        card["valid_mae_normalized"] = float(np.min(losses))
    if finetune:
        card["pretrained"] = str(args.pretrained)
        card["pretrained_target"] = est.card_.get("target")
    save_pretrained(est, args.output, **card)
    out = os.fspath(args.output)
    stem = os.path.splitext(out)[0]
    _note(f"wrote {stem}.pt and its model card {stem}.json ({len(y)} crystals, "
          f"training MAE {card['train_mae']:.4g} {args.units}".rstrip() + ")")
    return 0


def _units(args):
    return " ".join((("log10" if args.log10 else "") + " " + (args.units or "")).split())


def _cmd_train(args):
    return _fit_and_save(args, finetune=False)


def _cmd_finetune(args):
    return _fit_and_save(args, finetune=True)


def _cmd_predict(args):
    import pandas as pd

    from .pretrained import load_estimator

    est = load_estimator(args.model)
    data = _read_input(args.input, None, args.structure_column, args.id_column,
                       n_jobs=args.n_jobs)
    graphs = _featurize(data.X, est.radius, est.max_num_nbr, args.n_jobs, not args.quiet)
    pred = est.predict(graphs)
    if est.card_.get("target_transform") == "log10":
        pred = 10.0 ** pred
    frame = pd.DataFrame({"id": data.ids, "prediction": pred})
    text = frame.to_csv(index=False)
    if args.output is None:
        sys.stdout.write(text)
    else:
        _write_bytes(text.encode(), args.output)
    if data.y is not None and np.isfinite(data.y).all():
        _note(f"MAE against the targets in {data.source}: "
              f"{np.mean(np.abs(pred - data.y)):.4g} {est.card_.get('units', '')}".rstrip())
    return 0


def _fmt(value, spec=".4g"):
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    return format(value, spec) if isinstance(value, float) else str(value)


def _print_table(header, rows):
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


def _cmd_pretrained(args):
    import json

    from .pretrained import list_pretrained, load_pretrained

    if args.name is not None:
        print(json.dumps(load_pretrained(args.name)[1], indent=2, sort_keys=True))
        return 0
    rows = [(name, card.get("target", "-"), card.get("units", "-"), _fmt(card.get("n_train")),
             _fmt(card.get("test_mae")))
            for name, card in list_pretrained().items()]
    _print_table(("name", "target", "units", "n_train", "test_mae"), rows)
    return 0


class _Lookup(TransformerMixin, BaseEstimator):
    """Rows of a precomputed table selected by index: ``X`` holds row numbers.

    ``compare`` featurizes every crystal once (graphs, magpie descriptors) and
    passes row numbers through the trials, so no trial featurizes again.
    """

    def __init__(self, table=None):
        self.table = table

    def fit(self, X=None, y=None):
        return self

    def transform(self, X):
        return self.table[np.asarray(X, dtype=np.int64).ravel()]


def _compositions(X):
    """Compositions for the magpie descriptors; graphs give theirs from atomic numbers."""
    from pymatgen.core import Composition, Element

    return [Composition(Counter(Element.from_Z(int(z)).symbol for z in x.numbers))
            if isinstance(x, CrystalGraph) else x for x in X]


def _baselines(keys, random_state, cv):
    """The paper's classical baselines, hyperparameters by ``cv``-fold grid search."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.linear_model import Lasso
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    grids = {
        "rf": (RandomForestRegressor(n_estimators=100, random_state=random_state),
               {"max_features": [1 / 3, 1.0]}),
        "svr": (make_pipeline(StandardScaler(), SVR()),
                {"svr__C": [1.0, 10.0, 100.0], "svr__gamma": ["scale", 0.001, 0.03],
                 "svr__epsilon": [0.01, 0.1]}),
        "lasso": (make_pipeline(StandardScaler(), Lasso(max_iter=20_000)),
                  {"lasso__alpha": list(np.logspace(-4, 0, 9))}),
    }
    return {k: GridSearchCV(grids[k][0], grids[k][1], cv=cv,
                            scoring="neg_mean_absolute_error") for k in keys if k in grids}


def _default_n_train(n):
    """Largest training size whose 4:1:1 split fits in ``n`` crystals."""
    n_train = n
    while n_train > 1 and n_train + 2 * max(n_train // 4, 1) > n:
        n_train -= 1
    return n_train


def _cmd_compare(args):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.pipeline import Pipeline

    from .composition import MagpieFeaturizer
    from .stats import paired_ttest, paper_n_trials, repeated_splits, run_trials, summarize

    keys = [k.strip().lower() for k in args.models.split(",") if k.strip()]
    keys = ["scratch" if k == "cgcnn" else k for k in keys]
    unknown = [k for k in keys if k not in _MODEL_LABELS]
    if unknown or not keys:
        raise ValueError(f"unknown model(s) {unknown or args.models!r} in --models; choose from "
                         f"{', '.join(_MODEL_LABELS)}")
    data = _read_input(args.input, args.target, args.structure_column, args.id_column,
                       need_target=True, log10=args.log10, n_jobs=args.n_jobs)
    n = len(data.y)
    n_train = args.n_train or _default_n_train(n)
    n_trials = args.n_trials or paper_n_trials(n_train)
    splits = repeated_splits(n, n_train, n_trials, random_state=args.random_state)
    n_val, n_test = len(splits[0][1]), len(splits[0][2])

    common = dict(max_epochs=args.epochs, batch_size=args.batch_size,
                  random_state=args.random_state)
    nets = {}
    if "tl" in keys:
        nets["tl"] = TransferCGCNNRegressor(pretrained=args.pretrained, **common)
    if "scratch" in keys:
        nets["scratch"] = CGCNNRegressor(**common)
    graphs = {}
    for net in nets.values():
        settings = net._featurizer_settings()
        if settings not in graphs:
            graphs[settings] = _featurize(data.X, *settings, args.n_jobs, not args.quiet)
    models = {_MODEL_LABELS[k]: Pipeline([("graphs", _Lookup(graphs[net._featurizer_settings()])),
                                           ("model", net)]) for k, net in nets.items()}
    baselines = _baselines(keys, args.random_state, cv=min(args.cv, n_train + n_val))
    if baselines:
        magpie = MagpieFeaturizer(n_jobs=args.n_jobs or 1).transform(_compositions(data.X))
        models.update({_MODEL_LABELS[k]: Pipeline([("magpie", _Lookup(magpie)), ("model", m)])
                       for k, m in baselines.items()})
    models = {_MODEL_LABELS[k]: models[_MODEL_LABELS[k]] for k in keys}  # the order asked for
    _note(f"{len(models)} model(s) x {n_trials} trial(s) of {n_train} train / {n_val} "
          f"validation / {n_test} test crystals")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        results = run_trials(models, np.arange(n), data.y, splits, n_jobs=args.n_jobs,
                             path=args.results)
    units = _units(args)
    summary = summarize(results)
    log = " (log10)" if args.log10 else ""
    print(f"{data.source}: {n} crystals, target {data.target!r}{log}, "
          f"{n_trials} trial(s) of {n_train}/{n_val}/{n_test} train/validation/test crystals")
    rows = [(r.model, f"{r.test_mae_mean:.4g} ({_fmt(r.test_mae_std)})",
             f"{r.train_mae_mean:.4g}",
             f"{results[results.model == r.model].fit_time_s.mean():.1f}")
            for r in summary.itertuples()]
    _print_table(("model", f"test MAE {units}".rstrip() + ", mean (std)", "train MAE",
                  "fit time (s)"), rows)
    a, b = _MODEL_LABELS["tl"], _MODEL_LABELS["scratch"]
    if a in models and b in models:
        if n_trials < 2:
            print(f"paired t-test {a} vs {b}: needs at least 2 trials")
        else:
            t, p = paired_ttest(results, a, b)
            verdict = "significant" if p < 0.01 else "not significant"
            print(f"paired t-test {a} vs {b} over {n_trials} trials: t = {t:.3f}, "
                  f"p = {p:.3g} ({verdict} at p < 0.01)")
    return 0


# --------------------------------------------------------------------- parser
def _add_input(p, target=True):
    p.add_argument("input", metavar="INPUT",
                   help="CGCNN folder (id_prop.csv + <id>.cif), CSV table, matbench-style "
                        ".json/.json.gz table, or a .joblib graph file from 'skcgcnn featurize'")
    if target:
        p.add_argument("--target", metavar="COLUMN",
                       help="target column of a CSV/JSON table (a CGCNN folder's target is "
                            "the second column of id_prop.csv)")
    p.add_argument("--structure-column", default="structure", metavar="COLUMN",
                   help="column of CIF paths, CIF text or structure dicts (default: %(default)s)")
    p.add_argument("--id-column", metavar="COLUMN",
                   help="column of crystal ids (default: 'id' or 'material_id' if present, "
                        "else the row index)")
    p.add_argument("--n-jobs", type=int, metavar="N",
                   help="processes for featurizing, and for the trials of compare (joblib "
                        "semantics, -1: all cores)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bar or table of losses per epoch")


def _add_training(p, defaults, finetune):
    p.add_argument("-o", "--output", required=True, metavar="MODEL.pt",
                   help="model file to write (a state dict) with its JSON model card beside it")
    p.add_argument("--log10", action="store_true",
                   help="model log10 of the target (e.g. bulk moduli); predictions are "
                        "written back in the original units")
    p.add_argument("--units", default="", help="units of the target, stored in the model card")
    p.add_argument("--epochs", type=int, default=defaults["max_epochs"],
                   help="training epochs (default: %(default)s)")
    p.add_argument("--lr", type=float, default=defaults["lr"],
                   help="initial learning rate of SGD (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=defaults["batch_size"],
                   help="crystals per minibatch (default: %(default)s)")
    p.add_argument("--random-state", type=int, default=0,
                   help="seed of initialisation, shuffling and the validation split "
                        "(default: %(default)s)")
    if finetune:
        p.add_argument("--pretrained", default=defaults["pretrained"], metavar="NAME_OR_PATH",
                       help="bundled model name (see 'skcgcnn pretrained') or a .pt file with "
                            "its .json card (default: %(default)s)")
        p.add_argument("--freeze", default=None, metavar="LAYERS",
                       help="layers kept fixed: none (fine-tune all, the paper's best), "
                            "embedding, K (embedding + first K convolutions) or all_but_head "
                            "(default: none)")
        p.add_argument("--head", choices=("new", "keep"), default=defaults["head"],
                       help="new head or the pretrained one (default: %(default)s)")
    else:
        _add_graph_options(p, defaults)


def _add_graph_options(p, defaults):
    p.add_argument("--radius", type=float, default=defaults["radius"],
                   help="neighbour cutoff in angstrom (default: %(default)s)")
    p.add_argument("--max-num-nbr", type=int, default=defaults["max_num_nbr"],
                   help="neighbours per atom (default: %(default)s)")


def _subcommand(sub, name, summary, description, examples, func):
    """A subparser whose epilog lists ``examples`` (command lines after ``skcgcnn``)."""
    epilog = "examples:\n" + "".join(f"  skcgcnn {name} {line}".rstrip() + "\n"
                                      for line in examples)
    p = sub.add_parser(name, formatter_class=_Formatter, help=summary,
                       description=textwrap.fill(description, 79), epilog=epilog)
    p.set_defaults(func=func)
    return p


def build_parser():
    """The ``argparse`` parser of the ``skcgcnn`` command.

    Returns
    -------
    parser : argparse.ArgumentParser
        With subcommands featurize, train, finetune, predict, pretrained and
        compare; defaults of the training options are the estimators' own.

    Examples
    --------
    >>> from skcgcnn.cli import build_parser
    >>> args = build_parser().parse_args(["finetune", "data/", "-o", "model.pt"])
    >>> args.command, args.pretrained, args.lr, args.epochs
    ('finetune', 'mp-formation-energy', 0.01, 30)
    """
    scratch = CGCNNRegressor().get_params()
    transfer = TransferCGCNNRegressor().get_params()
    parser = argparse.ArgumentParser(
        prog="skcgcnn", formatter_class=_Formatter,
        description="Crystal graph networks (CGCNN) and transfer learning (TL-CGCNN) from the "
                    "command line.",
        epilog="examples:\n"
               "  skcgcnn pretrained\n"
               "  skcgcnn finetune --pretrained mp-formation-energy my_crystals/ -o model.pt\n"
               "  skcgcnn predict model.pt new_crystals/ -o predictions.csv\n"
               "  skcgcnn compare elastic.json.gz --target K_VRH --log10\n\n"
               "run 'skcgcnn COMMAND --help' for the options of a command")
    parser.add_argument("--traceback", action="store_true",
                        help="on bad input, raise the error with its traceback instead of "
                             "printing one line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = _subcommand(
        sub, "featurize", "build crystal graphs and save them",
        "Build the crystal graph of every crystal in INPUT and save them (with ids and "
        "targets) to a .joblib file that train, finetune, predict and compare read as INPUT. "
        "Load only graph files you made: they are pickles.",
        ["my_crystals/ -o graphs.joblib",
         "table.csv --target band_gap -o graphs.joblib --n-jobs 4"], _cmd_featurize)
    _add_input(p)
    p.add_argument("-o", "--output", required=True, metavar="GRAPHS.joblib")
    _add_graph_options(p, scratch)

    p = _subcommand(
        sub, "train", "train a CGCNN from scratch",
        "Train a CGCNNRegressor from scratch on INPUT and save it with its model card. "
        f"{scratch['validation_fraction']:.0%} of the crystals are held out to pick the "
        "best epoch.",
        ["my_crystals/ -o model.pt --epochs 300",
         "elastic.json.gz --target K_VRH --log10 --units GPa -o kvrh.pt"], _cmd_train)
    _add_input(p)
    _add_training(p, scratch, finetune=False)

    p = _subcommand(
        sub, "finetune", "fine-tune a pretrained CGCNN (TL-CGCNN)",
        "Fine-tune a pretrained CGCNN on INPUT (TransferCGCNNRegressor: all pretrained "
        f"parameters loaded, a new head, learning rate {transfer['lr']}, as in Lee & Asahi) "
        "and save it with its model card.",
        ["--pretrained mp-formation-energy my_crystals/ -o model.pt",
         "--pretrained mp-band-gap-nm gw.csv --target gw_gap --units eV -o gw.pt",
         "--pretrained other.pt data/ -o model.pt --freeze 2 --lr 0.002"], _cmd_finetune)
    _add_input(p)
    _add_training(p, transfer, finetune=True)

    p = _subcommand(
        sub, "predict", "predict with a saved model",
        "Predict every crystal in INPUT with a model saved by train or finetune (or a "
        "bundled one) and write a CSV with columns id and prediction, in the target's units.",
        ["model.pt new_crystals/ -o predictions.csv",
         "mp-formation-energy candidates.json.gz > predictions.csv"], _cmd_predict)
    p.add_argument("model", metavar="MODEL",
                   help="a .pt file with its .json card, or a bundled model name")
    _add_input(p, target=False)
    p.add_argument("-o", "--output", metavar="PREDICTIONS.csv",
                   help="CSV file to write (default: standard output)")

    p = _subcommand(
        sub, "pretrained", "list the bundled pretrained models",
        "List the bundled pretrained models (name, target, units, training crystals, test "
        "MAE), or print one model card.", ["", "mp-band-gap-nm"], _cmd_pretrained)
    p.add_argument("name", nargs="?", metavar="NAME_OR_PATH", help="print this model's card")

    p = _subcommand(
        sub, "compare", "TL-CGCNN vs CGCNN vs classical baselines over repeated trials",
        "Compare TL-CGCNN, CGCNN from scratch and classical baselines (RF, SVR, LASSO on the "
        "132 magpie descriptors, hyperparameters by grid search on the training and "
        "validation crystals) on INPUT with Lee & Asahi's protocol: repeated random 4:1:1 "
        "train/validation/test splits, the same for every model. Prints the test MAE mean "
        "(std) over trials and the paired t-test of TL-CGCNN vs CGCNN (significant at "
        "p < 0.01).",
        ["elastic.json.gz --target K_VRH --log10 --n-train 500",
         "my_crystals/ --models tl,scratch,rf --n-trials 5 --results trials.csv"], _cmd_compare)
    _add_input(p)
    p.add_argument("--log10", action="store_true", help="compare on log10 of the target")
    p.add_argument("--units", default="", help="units of the target, for the table")
    p.add_argument("--pretrained", default=transfer["pretrained"], metavar="NAME_OR_PATH",
                   help="pretrained model of TL-CGCNN (default: %(default)s)")
    p.add_argument("--models", default=",".join(_MODEL_LABELS),
                   help="comma-separated models among %(default)s (default: all)")
    p.add_argument("--n-train", type=int, metavar="N",
                   help="training crystals per trial; validation and test get N/4 each, "
                        "2,500 above 10,000 (default: as many as the data allows at 4:1:1)")
    p.add_argument("--n-trials", type=int, metavar="N",
                   help="trials (default: the paper's, 10 up to 500 training crystals, 5 up "
                        "to 10,000, 2 above)")
    p.add_argument("--epochs", type=int, default=transfer["max_epochs"],
                   help="training epochs of both networks (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=transfer["batch_size"],
                   help="crystals per minibatch (default: %(default)s)")
    p.add_argument("--random-state", type=int, default=0,
                   help="seed of the splits and the models (default: %(default)s)")
    p.add_argument("--cv", type=int, default=5, metavar="K",
                   help="folds of the baselines' hyperparameter grid search (default: "
                        "%(default)s, as in the paper)")
    p.add_argument("--results", metavar="TRIALS.csv",
                   help="CSV of per-trial results, saved as trials finish; an interrupted "
                        "run given the same file resumes")
    return parser


def main(argv=None):
    """Run the ``skcgcnn`` command.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    status : int
        0 on success. Bad input (a missing folder, file or column, an unknown
        pretrained model, ...) raises ``SystemExit(2)`` after printing one
        line, ``skcgcnn COMMAND: error: ...``, to standard error (with
        ``--traceback``, the error itself is raised).

    Examples
    --------
    >>> from skcgcnn.cli import main
    >>> main(["pretrained"])  # doctest: +ELLIPSIS
    name ... target ... units ... n_train ... test_mae
    ...
    0
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="pymatgen")
            return args.func(args)
    except _INPUT_ERRORS as exc:
        if args.traceback:
            raise
        message = " ".join(str(exc.args[0] if isinstance(exc, KeyError) and exc.args
                               else exc).split())
        parser.exit(EXIT_BAD_INPUT, f"skcgcnn {args.command}: error: {message}\n")
