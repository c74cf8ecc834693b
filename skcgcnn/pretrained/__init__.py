"""Saving fitted estimators as models and rebuilding them: the library's upper half.

A model is ``<name>.pt`` (a state dict, read with ``weights_only=True``) beside
``<name>.json`` (its model card: training data and sizes, target and units,
normalisation statistics, featurizer settings, test MAE, the command that
trained it, and the package version). Reading model files and building their
networks needs no estimator and lives in :mod:`skcgcnn.modelfile`; its public
names are re-exported here, so ``skcgcnn.pretrained`` is the one place a user
imports from.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from ..modelfile import (ARCHITECTURE_KEYS, PRETRAINED_DIR, build_network, card_architecture,
                         check_element_features, list_pretrained, load_pretrained, model_paths,
                         read_card, resolve_model)

__all__ = ["list_pretrained", "load_pretrained", "load_estimator", "save_pretrained",
           "training_card", "model_paths", "resolve_model", "read_card", "estimator_from_state",
           "import_cgcnn", "SavePretrained",
           "PRETRAINED_DIR", "ARCHITECTURE_KEYS"]

#: Estimator parameters recorded under the card's "hyperparameters".
HYPERPARAMETER_KEYS = ("lr", "max_epochs", "batch_size", "momentum", "weight_decay",
                       "lr_schedule", "lr_decay_epoch", "lr_decay", "validation_fraction",
                       "n_iter_no_change", "conv_dtype", "random_state", "freeze", "head",
                       "class_weight", "l2_sp", "lp_epochs", "source_rank")
#: Hyperparameters of the step schedule, left out of the card under another schedule.
_STEP_SCHEDULE_KEYS = ("lr_decay_epoch", "lr_decay")


def load_estimator(name_or_path, device="cpu", conv_dtype="auto"):
    """A fitted :class:`~skcgcnn.CGCNNRegressor` or :class:`~skcgcnn.CGCNNClassifier`
    rebuilt from a saved model and its card.

    The network's architecture, featurizer settings and target normalisation
    come from the model card; the weights and the normalisation statistics
    (buffers ``target_mean`` and ``target_scale``) from the state dict. A
    model saved with :func:`save_pretrained` (from a ``CGCNNRegressor`` or a
    fine-tuned ``TransferCGCNNRegressor``) predicts exactly as it did before
    saving. A card with ``"task": "classification"`` (saved from a
    classifier) gives a :class:`~skcgcnn.CGCNNClassifier` with the card's
    ``classes``.

    Parameters
    ----------
    name_or_path : str or path-like
        A name from :func:`list_pretrained` or the path of a ``.pt`` file
        with its ``.json`` card beside it.
    device : str, default="cpu"
        Torch device of the estimator, e.g. ``"cuda"``.
    conv_dtype : {"auto", "float32", "bfloat16"}, default="auto"
        Precision of the convolutions, as in :func:`load_pretrained` (the
        same default and rule, so both predict alike).

    Returns
    -------
    estimator : CGCNNRegressor or CGCNNClassifier
        Ready to ``predict`` (in the units of the target it was trained on;
        a card with ``"target_transform": "log10"``, written by
        ``skcgcnn train --log10``, means the predictions are log10 of the
        target) or to serve as ``TransferCGCNNRegressor(pretrained=...)``.
        Its ``card_`` attribute holds the model card.

    Raises
    ------
    ValueError, FileNotFoundError
        As :func:`load_pretrained`.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from skcgcnn.pretrained import list_pretrained, load_estimator
    >>> if "mp-formation-energy" in list_pretrained():
    ...     model = load_estimator("mp-formation-energy")
    ...     print(model.card_["units"], model.predict([bulk("Cu")]).shape)
    eV/atom (1,)
    """
    from ..io import load_state_dict

    weights, card = read_card(name_or_path)
    return estimator_from_state(card, load_state_dict(weights), str(weights), device,
                                conv_dtype)


def estimator_from_state(card, state, where, device="cpu", conv_dtype="auto"):
    """A fitted :class:`~skcgcnn.CGCNNRegressor` (or, for a card of task
    ``"classification"``, :class:`~skcgcnn.CGCNNClassifier`) from a model card
    and a state dict.

    The one path from a saved network to an estimator, shared by
    :func:`load_estimator` and :func:`skcgcnn.ensemble.load_ensemble`: the card
    and the element features are checked, the parameters must be those of the
    card's architecture.

    Parameters
    ----------
    card : dict
        The model card.
    state : dict of str to torch.Tensor
        The network's state dict.
    where : str
        The file it came from, named in errors.
    device : str, default="cpu"
    conv_dtype : {"auto", "float32", "bfloat16"}, default="auto"

    Returns
    -------
    estimator : CGCNNRegressor or CGCNNClassifier
        Fitted, in eval mode, with ``card_``.

    Raises
    ------
    ValueError
        An invalid card, other element features, or parameters of another
        architecture.

    Examples
    --------
    >>> from skcgcnn.io import load_state_dict
    >>> from skcgcnn.pretrained import estimator_from_state
    >>> from skcgcnn.modelfile import read_card
    >>> weights, card = read_card("mp-formation-energy")
    >>> estimator_from_state(card, load_state_dict(weights), str(weights)).n_outputs_
    1
    """
    from ..estimators import CGCNNRegressor
    from ..model import resolve_conv_dtype

    from ..features import ELEMENT_TABLES

    arch = card_architecture(card, where)
    name = check_element_features(card, where, state.get("atom_features"))
    module = build_network(arch, state, where, resolve_conv_dtype(conv_dtype, device))
    try:
        max_num_nbr = int(card["featurizer"]["max_num_nbr"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"model card of {where!r} is not a valid skcgcnn card: missing or bad "
                         f"featurizer entry {exc}") from exc
    # a named table is rebuilt by name; a file's or an array's travels as the array
    element_features = None if name == "skcgcnn" else (
        name if name in ELEMENT_TABLES else module.atom_features.numpy().copy())
    common = dict(**{k: arch[k] for k in ARCHITECTURE_KEYS}, max_num_nbr=max_num_nbr,
                  conv_dtype=conv_dtype, device=device, element_features=element_features,
                  pooling=arch["pooling"])
    if card.get("task", "regression") == "classification":
        estimator = _classifier_from_card(card, arch, where, common)
    else:
        estimator = CGCNNRegressor(
            **common, target_normalization=card.get("target_normalization", "standard"))
        estimator.n_outputs_ = arch["n_targets"]
    estimator.initialize()
    estimator.module_.load_state_dict(module.state_dict())
    estimator.module_.element_features_name = name
    estimator.module_.eval()
    estimator.card_ = card
    return estimator


#: Citation of the original CGCNN and of the Materials Project data its published models learnt.
CGCNN_CITATION = ("T. Xie and J. C. Grossman, Crystal Graph Convolutional Neural Networks for an "
                  "Accurate and Interpretable Prediction of Material Properties, Phys. Rev. Lett. "
                  "120, 145301 (2018); A. Jain et al., The Materials Project, APL Materials 1, "
                  "011002 (2013)")
#: The published checkpoints of txie-93/cgcnn's ``pre-trained/`` folder (MIT licence), by the
#: first 16 hex digits of the file's SHA-256: what their card says.
PUBLISHED_CGCNN = {
    "e2f8bb910744f2c2": ("formation-energy-per-atom", "formation_energy_per_atom", "eV/atom"),
    "1afe9260a0b7bd01": ("final-energy-per-atom", "final_energy_per_atom", "eV/atom"),
    "d269775b9be0995c": ("band-gap", "band_gap", "eV"),
    "5ed4ba15b5bd3e04": ("efermi", "efermi", "eV"),
    "0a3f66b9a0ee6ace": ("bulk-moduli", "K_VRH", "log10 GPa"),
    "34173bc59a0a8f9f": ("shear-moduli", "G_VRH", "log10 GPa"),
    "8d152338550b49ff": ("poisson-ratio", "poisson_ratio", "dimensionless"),
    "3791d48885afafb2": ("semi-metal-classification", "metal",
                         "class 1 = metal, 0 = semiconductor"),
}


def import_cgcnn(path, *, element_features="cgcnn", radius=8.0, max_num_nbr=12,
                 device="cpu", conv_dtype="float32", **card):
    """A fitted estimator from a checkpoint of the original CGCNN or cgcnn2 (``.pth.tar``).

    Reads the file without running code (:mod:`skcgcnn.cgcnn_checkpoint`),
    maps its parameters onto skcgcnn's network and its normaliser onto the
    target statistics, and returns an estimator that predicts as the original
    does on the same graphs (to float32 rounding; see the user guide's
    "Coming from CGCNN" for where skcgcnn's graphs differ). Save it as a
    library model with :func:`save_pretrained`, or use it as a transfer
    source: ``TransferCGCNNRegressor(pretrained=import_cgcnn(path))``.

    Parameters
    ----------
    path : str or path-like
        The checkpoint: a file of the original's ``pre-trained/`` folder, or
        the ``model_best.pth.tar`` of your own ``main.py`` run.
    element_features : "cgcnn", path or array-like, default="cgcnn"
        The element table the model was trained with: the original's
        ``atom_init.json`` (``"cgcnn"``, which every published model used),
        or your own ``atom_init.json``; its number of columns must be the
        embedding's input width.
    radius : float, default=8.0
        Neighbour cutoff in angstrom the model was trained with (not stored
        in the file; the original's default). 41 Gaussians for 8 angstrom.
    max_num_nbr : int, default=12
        Neighbours per atom (the original's default).
    device : str, default="cpu"
    conv_dtype : {"float32", "bfloat16", "auto"}, default="float32"
        Precision of the convolutions; float32 reproduces the original.
    **card
        Model-card fields (``target``, ``units``, ``licence``, ``citation``,
        ...). The published checkpoints are recognised by their SHA-256 and
        get their target, units, licence (MIT) and citation (Xie & Grossman
        2018 and the Materials Project) without them.

    Returns
    -------
    estimator : CGCNNRegressor or CGCNNClassifier
        Fitted, in eval mode; ``card_`` holds its model card, with
        ``imported_from`` (the file's name, SHA-256, epoch, validation error
        and training arguments). A classification checkpoint gives a
        classifier with ``classes_`` 0 and 1 (class 1 is "metal" for the
        published ``semi-metal-classification``).

    Raises
    ------
    ValueError
        A file that is not a CGCNN checkpoint, needs code to load, or does
        not match ``element_features`` or ``radius``.

    Examples
    --------
    >>> import os, tempfile, torch
    >>> from skcgcnn.pretrained import import_cgcnn
    >>> path = os.path.join(tempfile.mkdtemp(), "not-a-model.pth.tar")
    >>> torch.save({"epoch": 3}, path, _use_new_zipfile_serialization=False)
    >>> import_cgcnn(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ... is not a CGCNN checkpoint: it has no 'state_dict' ...
    """
    import hashlib

    import torch

    from .. import __version__
    from ..cgcnn_checkpoint import read_cgcnn_checkpoint
    from ..features import element_feature_fingerprint, resolve_element_features
    from ..model import CGCNN

    ckpt = read_cgcnn_checkpoint(path, radius=radius)
    where = os.fspath(path)
    classification = ckpt["task"] == "classification"
    table, table_name = resolve_element_features(element_features)
    if table.shape[1] != ckpt["orig_atom_fea_len"]:
        raise ValueError(
            f"{where!r} reads {ckpt['orig_atom_fea_len']} element features per atom, but "
            f"element_features={table_name!r} has {table.shape[1]} columns; pass the "
            "atom_init.json the model was trained with")
    with open(where, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    # a classifier: one logit per class (the original's LogSoftmax only normalises them)
    arch = {**ckpt["architecture"], "n_targets": ckpt["n_out"], "pooling": "mean"}
    network = CGCNN(**arch, element_features=table)
    state = network.state_dict()
    unexpected = sorted(set(ckpt["state"]) - set(state))
    if unexpected:
        raise ValueError(f"{where!r} holds parameters a CGCNN of {arch} lacks: {unexpected[:5]}")
    state.update(ckpt["state"])
    if not classification:  # a classifier's network keeps its neutral target buffers
        state["target_mean"] = torch.tensor(ckpt["target_mean"], dtype=torch.float64)
        state["target_scale"] = torch.tensor(ckpt["target_scale"], dtype=torch.float64)
    published = PUBLISHED_CGCNN.get(sha[:16])
    full = {
        "name": published[0] if published else Path(where).name.split(".")[0],
        "architecture": arch,
        "featurizer": {"radius": float(radius), "max_num_nbr": int(max_num_nbr),
                       "element_features": element_feature_fingerprint(table),
                       "element_features_name": table_name},
        "target_normalization": "standard",
        "target_mean": ckpt["target_mean"],
        "target_scale": ckpt["target_scale"],
        "source": "original CGCNN checkpoint (Xie & Grossman 2018), imported by "
                  "skcgcnn.pretrained.import_cgcnn",
        "imported_from": {"file": Path(where).name, "sha256": sha, "epoch": ckpt["epoch"],
                          "best_mae_error": ckpt["best_mae_error"],
                          "training_args": ckpt["args"]},
        "skcgcnn_version": __version__,
    }
    if classification:  # class 1 is the positive class of the original's id_prop.csv
        full.update(task="classification", classes=list(range(ckpt["n_out"])))
    if published:
        full.update(target=published[1], units=published[2],
                    data="Materials Project (2017 snapshot used by the CGCNN paper)",
                    licence="MIT (txie-93/cgcnn, pre-trained/)", citation=CGCNN_CITATION,
                    valid_mae=ckpt["best_mae_error"])
    full.update(card)
    return estimator_from_state(full, state, where, device, conv_dtype)


def _classifier_from_card(card, arch, where, params):
    """An unfitted CGCNNClassifier with the classes of a classification card."""
    import numpy as np

    from ..classifiers import CGCNNClassifier

    classes = card.get("classes")
    if not isinstance(classes, list) or len(classes) != arch["n_targets"]:
        raise ValueError(f"model card of {where!r} is a classifier's but its 'classes' "
                         f"({classes!r}) are not a list of the network's {arch['n_targets']} "
                         "outputs")
    estimator = CGCNNClassifier(**params)
    estimator.classes_inferred_ = np.asarray(classes)
    weight = card.get("class_weights")
    estimator.class_weight_ = np.asarray(weight if weight is not None else [1.0] * len(classes),
                                         dtype=float)
    return estimator


def _is_classifier(estimator):
    from sklearn.base import is_classifier

    return is_classifier(estimator)


def _jsonable(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalars
        return value.item()
    return repr(value)


def training_card(estimator):
    """Model-card fields that a fitted estimator knows about its own training.

    :func:`save_pretrained` and ``skcgcnn train``/``finetune`` both write
    these, so a model saved from Python records what the command's does.

    Parameters
    ----------
    estimator : CGCNNRegressor
        A fitted estimator (or a :class:`~sklearn.pipeline.Pipeline` ending
        in one).

    Returns
    -------
    card : dict
        ``hyperparameters`` (learning rate, epochs, batch size, the schedule
        ``lr_schedule`` and, for the step schedule only, its ``lr_decay_epoch``
        and ``lr_decay``, validation fraction, ...); with a training history, ``epochs_trained``,
        ``n_train`` and ``n_validation`` (crystals per epoch in each part),
        and with a validation set ``best_epoch`` (1-based, the one whose
        weights are kept) and ``valid_mae_normalized`` (the validation MAE of
        the normalised target at that epoch, in units of the target's
        standard deviation for ``target_normalization="standard"``; for a
        classifier ``valid_cross_entropy``, its validation loss); for a
        fine-tuned model, ``pretrained`` (the source model fine-tuned: with
        ``pretrained="auto"``, the one the probe chose), ``pretrained_target``
        and, with ``"auto"``, ``source_scores`` (the probe's ranking).

    Examples
    --------
    >>> import numpy as np
    >>> from ase.build import bulk
    >>> from skcgcnn import CGCNNRegressor
    >>> from skcgcnn.pretrained import training_card
    >>> X = [bulk("Cu", a=a) for a in np.linspace(3.4, 3.8, 10)]
    >>> model = CGCNNRegressor(max_epochs=3, batch_size=4, random_state=0)
    >>> card = training_card(model.fit(X, np.linspace(0, 1, 10)))
    >>> card["n_train"], card["n_validation"], card["epochs_trained"]
    (8, 2, 3)
    """
    estimator = _final_estimator(estimator)
    loaded = _loaded_card(estimator)
    if loaded:  # rebuilt by load_estimator: its training is the one its card records
        return {k: loaded[k] for k in _TRAINING_KEYS if k in loaded}
    params = estimator.get_params(deep=False)
    unused = _STEP_SCHEDULE_KEYS if params.get("lr_schedule", "step") != "step" else ()
    card = {"hyperparameters": {k: _jsonable(params[k]) for k in HYPERPARAMETER_KEYS
                                if k in params and k not in unused}}
    optimizer = getattr(estimator, "optimizer", None)
    card["hyperparameters"]["optimizer"] = getattr(optimizer, "__name__", repr(optimizer))
    history = getattr(estimator, "history_", None) or []
    if len(history):
        card["epochs_trained"] = len(history)
        batches = history[-1].get("batches", [])
        for key, name in (("train_batch_size", "n_train"), ("valid_batch_size", "n_validation")):
            card[name] = int(sum(b.get(key, 0) for b in batches))
        losses = [row.get("valid_loss") for row in history]
        if all(loss is not None for loss in losses):
            best = min(range(len(losses)), key=losses.__getitem__)
            card["best_epoch"] = best + 1
            card[_valid_loss_key(estimator)] = float(losses[best])
    pretrained = getattr(estimator, "pretrained", None)
    if pretrained is not None and hasattr(estimator, "card_"):
        # the source fine-tuned: with pretrained="auto", the one the probe chose
        pretrained = getattr(estimator, "pretrained_", None) or pretrained
        card["pretrained"] = (os.fspath(pretrained) if isinstance(pretrained, (str, os.PathLike))
                              else estimator.card_.get("name", type(pretrained).__name__))
        card["pretrained_target"] = estimator.card_.get("target")
        scores = getattr(estimator, "source_scores_", None)
        if scores:  # pretrained="auto": the probe's ranking (cross-validated MAE, best first)
            card["source_scores"] = {k: float(v) for k, v in scores.items()}
    return card


#: Card fields that training_card writes.
_TRAINING_KEYS = ("hyperparameters", "epochs_trained", "n_train", "n_validation", "best_epoch",
                  "valid_mae_normalized", "valid_cross_entropy", "pretrained",
                  "pretrained_target", "source_scores")


def _valid_loss_key(estimator):
    """Card name of the validation loss: normalised MAE, or a classifier's cross entropy."""
    return "valid_cross_entropy" if _is_classifier(estimator) else "valid_mae_normalized"


def _loaded_card(estimator):
    """The card of an estimator rebuilt by load_estimator and not trained since, else {}."""
    card = getattr(estimator, "card_", None)
    if card is None or getattr(estimator, "pretrained", None) is not None or \
            len(getattr(estimator, "history_", None) or []):
        return {}
    return card


def _final_estimator(estimator):
    """The CGCNNRegressor to save: the estimator itself or a Pipeline's last step."""
    from sklearn.exceptions import NotFittedError
    from sklearn.pipeline import Pipeline

    from ..estimators import CGCNNMixin
    from ..graph import CrystalGraphTransformer

    if isinstance(estimator, Pipeline):
        pipeline, estimator = estimator, estimator.steps[-1][1]
        if not isinstance(estimator, CGCNNMixin):
            raise TypeError(
                f"the pipeline's last step is a {type(estimator).__name__}, not a "
                "CGCNNRegressor; save_pretrained saves a fitted CGCNNRegressor, "
                "TransferCGCNNRegressor or CGCNN classifier (save a whole pipeline with "
                "joblib.dump instead)")
        settings = estimator._featurizer_settings()
        for name, step in pipeline.steps[:-1]:
            if step is None or step == "passthrough":
                continue
            if not isinstance(step, CrystalGraphTransformer):
                raise TypeError(
                    f"the pipeline's step {name!r} ({type(step).__name__}) would be lost: "
                    "save_pretrained saves only the network, which reads crystal graphs. "
                    f"Pass the fitted regressor, pipeline[-1], if it does not need {name!r}, "
                    "or save the whole pipeline with joblib.dump")
            if (step.radius, step.max_num_nbr) != settings:
                raise ValueError(
                    f"the pipeline's step {name!r} builds graphs with radius={step.radius}, "
                    f"max_num_nbr={step.max_num_nbr}, but its regressor expects "
                    f"radius={settings[0]}, max_num_nbr={settings[1]}")
    elif not isinstance(estimator, CGCNNMixin):
        raise TypeError(f"save_pretrained saves a fitted CGCNNRegressor, TransferCGCNNRegressor, "
                        f"CGCNNClassifier, TransferCGCNNClassifier or a Pipeline ending in one, "
                        f"got a {type(estimator).__name__}")
    if not getattr(estimator, "initialized_", False) or not hasattr(estimator, "module_"):
        raise NotFittedError(f"this {type(estimator).__name__} is not fitted: call fit(X, y) "
                             "before save_pretrained")
    return estimator


def _refuse_existing(paths, overwrite):
    """FileExistsError for the first of ``paths`` that exists, unless ``overwrite``."""
    if not overwrite:
        for existing in paths:
            if existing.exists():
                raise FileExistsError(f"{str(existing)!r} exists; pass overwrite=True to "
                                      "replace it")


def _network_card(estimator, name):
    """The card fields that rebuild a fitted estimator's network and its graphs."""
    from .. import __version__
    from ..features import element_feature_fingerprint

    module = estimator.module_
    radius, max_num_nbr = estimator._featurizer_settings()
    card = {
        "name": name,
        "architecture": {k: module.hparams[k]
                         for k in (*ARCHITECTURE_KEYS, "n_targets", "pooling")},
        "featurizer": {"radius": radius, "max_num_nbr": max_num_nbr,
                       "element_features": element_feature_fingerprint(
                           module.atom_features.cpu().numpy()),
                       "element_features_name": getattr(module, "element_features_name",
                                                        "skcgcnn")},
    }
    if _is_classifier(estimator):  # one output per class, no target statistics
        card.update(task="classification", classes=estimator.classes_.tolist(),
                    class_weights=[float(w) for w in estimator.class_weight_])
    else:
        card["target_normalization"] = estimator.target_normalization
    card["skcgcnn_version"] = __version__
    return card


def save_pretrained(estimator, path, *, overwrite=False, **card):
    """Save a fitted :class:`~skcgcnn.CGCNNRegressor` (or classifier) as a pretrained model.

    Writes the weights ``<path>.pt`` (a state dict, which loads without
    running code) and the model card ``<path>.json`` atomically. The card
    records the architecture, featurizer settings, target normalisation (for
    a classifier: ``"task": "classification"``, the ``classes`` and the
    class weights) and
    what :func:`training_card` reads from the estimator (hyperparameters,
    epochs, best epoch, training and validation sizes, source model), then
    the fields passed as ``card``. :func:`load_estimator` rebuilds the
    estimator from the two files.

    A whole pipeline (with steps other than the graphs) can instead be saved
    with ``joblib.dump(pipeline, "model.joblib")`` and read back with
    ``joblib.load``; that file is a pickle, and loading a pickle runs any code
    it carries, so load only files you made yourself.

    Parameters
    ----------
    estimator : fitted CGCNN regressor or classifier, or Pipeline
        A fitted estimator, or a fitted :class:`~sklearn.pipeline.Pipeline`
        of :class:`~skcgcnn.CrystalGraphTransformer` steps ending in one (its
        graph settings are checked against the regressor's; its regressor is
        saved).
    path : str or path-like
        Target path. A ``.pt`` or ``.json`` suffix is replaced, any other
        kept: ``"model"`` and ``"model.pt"`` write ``model.pt`` and
        ``model.json``, ``"model.v2"`` writes ``model.v2.pt`` and
        ``model.v2.json``.
    overwrite : bool, default=False
        Replace existing files; without it an existing ``.pt`` or ``.json``
        raises ``FileExistsError`` and nothing is written.
    **card
        More model-card fields (data, target, units, test MAE, ...); they
        take precedence over the ones computed.

    Returns
    -------
    card : dict
        The model card written.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        The estimator is not fitted.
    TypeError
        Not a CGCNNRegressor, or a pipeline with steps that cannot be saved
        with it.
    ValueError
        A pipeline whose graphs are built with other settings than its
        regressor expects.
    FileExistsError
        The files exist and ``overwrite`` is false.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from ase.build import bulk
    >>> from skcgcnn import CGCNNRegressor
    >>> from skcgcnn.pretrained import load_estimator, save_pretrained
    >>> X = [bulk("Cu", a=a) for a in np.linspace(3.4, 3.8, 10)]
    >>> model = CGCNNRegressor(max_epochs=3, batch_size=4, random_state=0)
    >>> model.fit(X, np.linspace(0, 1, 10))  # doctest: +ELLIPSIS
    <class 'skcgcnn.estimators.CGCNNRegressor'>[initialized](...)
    >>> path = os.path.join(tempfile.mkdtemp(), "cu.v1")
    >>> card = save_pretrained(model, path, target="toy", units="eV")
    >>> sorted(os.listdir(os.path.dirname(path)))
    ['cu.v1.json', 'cu.v1.pt']
    >>> card["n_train"], card["units"]
    (8, 'eV')
    >>> save_pretrained(model, path)
    Traceback (most recent call last):
    ...
    FileExistsError: ... exists; pass overwrite=True to replace it
    >>> loaded = load_estimator(path)
    """
    from ..io import save_json, save_state_dict

    estimator = _final_estimator(estimator)
    weights, card_path = model_paths(path)
    _refuse_existing((weights, card_path), overwrite)
    module = estimator.module_
    stats = {} if _is_classifier(estimator) else {
        "target_mean": module.target_mean.tolist(),  # a float, or one per target
        "target_scale": module.target_scale.tolist()}
    full = {
        **_network_card(estimator, weights.stem),
        **stats,
        **training_card(estimator),
        **card,
    }
    # a model loaded and saved again keeps what its card said about its data and scores
    full = {**_loaded_card(estimator), **full, "name": weights.stem}
    save_state_dict({k: v.detach().cpu() for k, v in module.state_dict().items()}, weights)
    save_json(full, card_path)
    return full


@functools.lru_cache(maxsize=None)
def _save_pretrained_class():
    # built on first use, so that importing this module imports neither skorch nor torch
    from skorch.callbacks import Callback

    class SavePretrained(Callback):
        """Write the model and its card whenever the validation loss improves.

        With :class:`~skcgcnn.callbacks.AtomicCheckpoint` beside it, a long run
        that stops at any point leaves both its last epoch (to resume) and its
        best one (to use, e.g. as ``TransferCGCNNRegressor(pretrained=path)``).
        The card records the epoch as ``best_epoch`` and the normalised
        validation MAE.

        Parameters
        ----------
        path : str or path-like
            Model path, as for :func:`save_pretrained`.
        card : dict, optional
            More model-card fields.

        Examples
        --------
        >>> import os, tempfile
        >>> from skcgcnn import CGCNNRegressor
        >>> from skcgcnn.pretrained import SavePretrained
        >>> path = os.path.join(tempfile.mkdtemp(), "best")
        >>> net = CGCNNRegressor(callbacks=[SavePretrained(path, {"units": "eV"})])
        """

        def __init__(self, path, card=None):
            self.path = path
            self.card = card

        def on_epoch_end(self, net, **kwargs):
            row = net.history[-1]
            if not row.get("valid_loss_best", True):  # without validation: every epoch
                return
            card = {**(self.card or {}), "best_epoch": len(net.history)}
            if "valid_loss" in row:
                card[_valid_loss_key(net)] = row["valid_loss"]
            save_pretrained(net, self.path, overwrite=True, **card)

    SavePretrained.__module__ = __name__
    SavePretrained.__qualname__ = "SavePretrained"
    return SavePretrained


def __getattr__(name):
    if name == "SavePretrained":
        return _save_pretrained_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
