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

from ..features import element_feature_fingerprint
from ..io import load_state_dict, save_json, save_state_dict

__all__ = ["list_pretrained", "load_pretrained", "load_estimator", "save_pretrained",
           "PRETRAINED_DIR"]

PRETRAINED_DIR = Path(__file__).parent
#: Card keys that build the network.
ARCHITECTURE_KEYS = ("atom_fea_len", "n_conv", "h_fea_len", "n_h", "radius")


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


def _resolve(name_or_path):
    p = Path(os.fspath(name_or_path))
    if p.suffix in (".pt", ".json") or p.exists() or os.sep in str(name_or_path):
        weights = p.with_suffix(".pt")
        card = p.with_suffix(".json")
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
    from ..model import CGCNN, resolve_conv_dtype

    conv_dtype = resolve_conv_dtype(conv_dtype)
    weights, card_path = _resolve(name_or_path)
    try:
        with open(card_path) as f:
            card = json.load(f)
        arch = {k: card["architecture"][k] for k in ARCHITECTURE_KEYS}
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


def load_estimator(name_or_path, conv_dtype="auto"):
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
        target_normalization=card.get("target_normalization", "standard"))
    estimator.initialize()
    estimator.module_.load_state_dict(module.state_dict())
    estimator.module_.eval()
    estimator.card_ = card
    return estimator


def save_pretrained(estimator, path, **card):
    """Save a fitted :class:`~skcgcnn.CGCNNRegressor` as a pretrained model.

    Writes ``<path>.pt`` and ``<path>.json`` atomically.

    Parameters
    ----------
    estimator : CGCNNRegressor
        A fitted estimator.
    path : str or path-like
        Target path, with or without the ``.pt`` suffix.
    **card
        More model-card fields (data, sizes, target, units, test MAE, ...).

    Returns
    -------
    card : dict
        The model card written.
    """
    from .. import __version__

    estimator.check_is_fitted()
    path = Path(os.fspath(path)).with_suffix(".pt")
    module = estimator.module_
    radius, max_num_nbr = estimator._featurizer_settings()
    full = {
        "name": path.stem,
        "architecture": {k: module.hparams[k] for k in ARCHITECTURE_KEYS},
        "featurizer": {"radius": radius, "max_num_nbr": max_num_nbr,
                       "element_features": element_feature_fingerprint()},
        "target_normalization": estimator.target_normalization,
        "target_mean": module.target_mean.item(),
        "target_scale": module.target_scale.item(),
        "skcgcnn_version": __version__,
        **card,
    }
    save_state_dict({k: v.detach().cpu() for k, v in module.state_dict().items()}, path)
    save_json(full, path.with_suffix(".json"))
    return full
