"""The library of pretrained CGCNN models: state dicts with JSON model cards.

Each model is ``<name>.pt`` (a state dict, read with ``weights_only=True``)
beside ``<name>.json`` (its model card: training data and sizes, target and
units, normalisation statistics, featurizer settings, test MAE, the command
that trained it, and the package version).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["list_pretrained", "load_pretrained", "load_estimator", "save_pretrained",
           "training_card", "model_paths", "PRETRAINED_DIR"]

PRETRAINED_DIR = Path(__file__).parent
#: Card keys that build the network.
ARCHITECTURE_KEYS = ("atom_fea_len", "n_conv", "h_fea_len", "n_h", "radius")
#: Estimator parameters recorded under the card's "hyperparameters".
HYPERPARAMETER_KEYS = ("lr", "max_epochs", "batch_size", "momentum", "weight_decay",
                       "lr_schedule", "lr_decay_epoch", "lr_decay", "validation_fraction",
                       "n_iter_no_change", "conv_dtype", "random_state", "freeze", "head")
#: Hyperparameters of the step schedule, left out of the card under another schedule.
_STEP_SCHEDULE_KEYS = ("lr_decay_epoch", "lr_decay")


def list_pretrained():
    """Names and model cards of the bundled pretrained models.

    Returns
    -------
    cards : dict of str to dict
        Model name to model card, sorted by name.

    Examples
    --------
    >>> from skcgcnn.pretrained import list_pretrained
    >>> cards = list_pretrained()
    >>> all(card["name"] == name for name, card in cards.items())
    True
    """
    cards = {}
    for path in sorted(PRETRAINED_DIR.glob("*.json")):
        if path.with_suffix(".pt").is_file():
            with open(path) as f:
                cards[path.stem] = json.load(f)
    return cards


def model_paths(path):
    """The weights and card files of a model path, keeping any other suffix.

    ``model.pt``, ``model.json`` and ``model`` all name ``model.pt`` and
    ``model.json``; ``model.v2`` names ``model.v2.pt`` and ``model.v2.json``.

    Parameters
    ----------
    path : str or path-like
        A model path as given to :func:`save_pretrained` or :func:`load_pretrained`.

    Returns
    -------
    weights, card : pathlib.Path
        The ``.pt`` and ``.json`` files.

    Examples
    --------
    >>> from skcgcnn.pretrained import model_paths
    >>> [str(p) for p in model_paths("runs/model.v2")]
    ['runs/model.v2.pt', 'runs/model.v2.json']
    """
    p = Path(os.fspath(path))
    stem = p.with_suffix("") if p.suffix in (".pt", ".json") else p
    return stem.with_name(stem.name + ".pt"), stem.with_name(stem.name + ".json")


def _resolve(name_or_path):
    p = Path(os.fspath(name_or_path))
    weights, card = model_paths(p)
    explicit = p.suffix in (".pt", ".json") or p.exists() or os.sep in str(name_or_path)
    # a bare name is a bundled model first, then "<name>.pt" (e.g. "run.v1") if it exists
    if explicit or (weights.exists() and str(name_or_path) not in list_pretrained()):
        if not weights.is_file():
            raise FileNotFoundError(f"pretrained model file does not exist: {str(weights)!r}")
        if not card.is_file():
            raise FileNotFoundError(f"pretrained model {str(weights)!r} has no model card "
                                    f"{card.name!r} beside it")
        return weights, card
    known = list(list_pretrained())
    if str(name_or_path) not in known:
        raise ValueError(f"unknown pretrained model {str(name_or_path)!r}; known models: "
                         f"{', '.join(known) or '(none bundled)'}")
    return PRETRAINED_DIR / f"{name_or_path}.pt", PRETRAINED_DIR / f"{name_or_path}.json"


def load_pretrained(name_or_path, conv_dtype="auto"):
    """Load a pretrained network and its model card.

    Parameters
    ----------
    name_or_path : str or path-like
        A name from :func:`list_pretrained` or the path of a ``.pt`` file
        with its ``.json`` card beside it.
    conv_dtype : {"auto", "float32", "bfloat16"}, default="auto"
        Precision of the network's convolutions, as in
        :class:`~skcgcnn.CGCNNRegressor`, and resolved by the same rule
        (:func:`~skcgcnn.model.resolve_conv_dtype`): ``"auto"`` is bfloat16
        on a CPU with bfloat16 instructions and float32 elsewhere. The same
        default as :func:`load_estimator`'s, so that the two predict alike;
        pass ``"float32"`` for full precision everywhere.

    Returns
    -------
    module : skcgcnn.model.CGCNN
        The network with the pretrained parameters, in eval mode.
    card : dict
        The model card.

    Raises
    ------
    ValueError
        Unknown name; corrupt, truncated or unsafe file; parameters of another
        architecture; or element features that differ from this installation's.
    FileNotFoundError
        A path without its weights or card.

    Examples
    --------
    >>> from skcgcnn.pretrained import list_pretrained, load_pretrained
    >>> if "mp-formation-energy" in list_pretrained():
    ...     module, card = load_pretrained("mp-formation-energy")
    ...     print(card["target"])
    formation_energy_per_atom
    """
    from ..features import element_feature_fingerprint
    from ..io import load_state_dict
    from ..model import CGCNN, resolve_conv_dtype

    conv_dtype = resolve_conv_dtype(conv_dtype)
    weights, card_path = _resolve(name_or_path)
    try:
        with open(card_path) as f:
            card = json.load(f)
        arch = {k: card["architecture"][k] for k in ARCHITECTURE_KEYS}
        arch["n_targets"] = int(card["architecture"].get("n_targets", 1))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"model card {str(card_path)!r} is not a valid skcgcnn card: {exc}") from exc
    fingerprint = card.get("featurizer", {}).get("element_features")
    if fingerprint != element_feature_fingerprint():
        raise ValueError(
            f"pretrained model {str(weights)!r} was trained with element features "
            f"{fingerprint!r}, but this installation computes {element_feature_fingerprint()!r}; "
            "its weights would read the wrong atom features")
    state = load_state_dict(weights)
    module = CGCNN(**arch, conv_dtype=conv_dtype)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{str(weights)!r} does not hold a CGCNN of the card's architecture {arch}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, other shapes {wrong[:5]}")
    if not (state["atom_features"] == expected["atom_features"]).all():
        raise ValueError(f"{str(weights)!r} carries element features that differ from this "
                         "installation's; it was trained with another featurizer")
    module.load_state_dict(state)
    return module.eval(), card


def load_estimator(name_or_path, device="cpu", conv_dtype="auto"):
    """A fitted :class:`~skcgcnn.CGCNNRegressor` rebuilt from a saved model and its card.

    The network's architecture, featurizer settings and target normalisation
    come from the model card; the weights and the normalisation statistics
    (buffers ``target_mean`` and ``target_scale``) from the state dict. A
    model saved with :func:`save_pretrained` (from a ``CGCNNRegressor`` or a
    fine-tuned ``TransferCGCNNRegressor``) predicts exactly as it did before
    saving.

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
    estimator : CGCNNRegressor
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
    from ..estimators import CGCNNRegressor

    module, card = load_pretrained(name_or_path, conv_dtype)
    arch = {k: card["architecture"][k] for k in ARCHITECTURE_KEYS}
    estimator = CGCNNRegressor(
        **arch, max_num_nbr=card["featurizer"]["max_num_nbr"], conv_dtype=conv_dtype,
        target_normalization=card.get("target_normalization", "standard"), device=device)
    estimator.n_outputs_ = module.hparams["n_targets"]
    estimator.initialize()
    estimator.module_.load_state_dict(module.state_dict())
    estimator.module_.eval()
    estimator.card_ = card
    return estimator


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
        standard deviation for ``target_normalization="standard"``); for a
        fine-tuned model, ``pretrained`` (the source model) and
        ``pretrained_target``.

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
            card["valid_mae_normalized"] = float(losses[best])
    pretrained = getattr(estimator, "pretrained", None)
    if pretrained is not None and hasattr(estimator, "card_"):
        card["pretrained"] = (str(pretrained) if isinstance(pretrained, (str, os.PathLike))
                              else estimator.card_.get("name", type(pretrained).__name__))
        card["pretrained_target"] = estimator.card_.get("target")
    return card


#: Card fields that training_card writes.
_TRAINING_KEYS = ("hyperparameters", "epochs_trained", "n_train", "n_validation", "best_epoch",
                  "valid_mae_normalized", "pretrained", "pretrained_target")


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

    from ..estimators import CGCNNRegressor
    from ..graph import CrystalGraphTransformer

    if isinstance(estimator, Pipeline):
        pipeline, estimator = estimator, estimator.steps[-1][1]
        if not isinstance(estimator, CGCNNRegressor):
            raise TypeError(
                f"the pipeline's last step is a {type(estimator).__name__}, not a "
                "CGCNNRegressor; save_pretrained saves a fitted CGCNNRegressor or "
                "TransferCGCNNRegressor (save a whole pipeline with joblib.dump instead)")
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
    elif not isinstance(estimator, CGCNNRegressor):
        raise TypeError(f"save_pretrained saves a fitted CGCNNRegressor, TransferCGCNNRegressor "
                        f"or a Pipeline ending in one, got a {type(estimator).__name__}")
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
    return {
        "name": name,
        "architecture": {k: module.hparams[k] for k in (*ARCHITECTURE_KEYS, "n_targets")},
        "featurizer": {"radius": radius, "max_num_nbr": max_num_nbr,
                       "element_features": element_feature_fingerprint()},
        "target_normalization": estimator.target_normalization,
        "skcgcnn_version": __version__,
    }


def save_pretrained(estimator, path, *, overwrite=False, **card):
    """Save a fitted :class:`~skcgcnn.CGCNNRegressor` as a pretrained model.

    Writes the weights ``<path>.pt`` (a state dict, which loads without
    running code) and the model card ``<path>.json`` atomically. The card
    records the architecture, featurizer settings, target normalisation and
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
    estimator : CGCNNRegressor, TransferCGCNNRegressor or Pipeline
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
    full = {
        **_network_card(estimator, weights.stem),
        "target_mean": module.target_mean.tolist(),  # a float, or one per target
        "target_scale": module.target_scale.tolist(),
        **training_card(estimator),
        **card,
    }
    # a model loaded and saved again keeps what its card said about its data and scores
    full = {**_loaded_card(estimator), **full, "name": weights.stem}
    save_state_dict({k: v.detach().cpu() for k, v in module.state_dict().items()}, weights)
    save_json(full, card_path)
    return full
