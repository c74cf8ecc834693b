"""Model files without estimators: the bundled library, paths, cards and networks.

A model is ``<name>.pt`` (a state dict, read with ``weights_only=True``) beside
``<name>.json`` (its model card: training data and sizes, target and units,
normalisation statistics, featurizer settings, test MAE, the command that
trained it, and the package version). This module finds and reads them and
builds the network; :mod:`skcgcnn.pretrained`, above the estimators, saves
fitted estimators and rebuilds them.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

__all__ = ["PRETRAINED_DIR", "ARCHITECTURE_KEYS", "ModelCards", "list_pretrained",
           "model_paths", "resolve_model", "read_card", "load_pretrained", "network_source",
           "card_architecture", "check_element_features", "build_network"]

#: Folder of the bundled models (package data of :mod:`skcgcnn.pretrained`).
PRETRAINED_DIR = Path(__file__).parent / "pretrained"
#: Card keys that build the network.
ARCHITECTURE_KEYS = ("atom_fea_len", "n_conv", "h_fea_len", "n_h", "radius")
#: Card fields :class:`ModelCards` shows, one column each.
SUMMARY_KEYS = ("target", "units", "n_train", "test_mae")


class ModelCards(dict):
    """Model name to model card; printed as one compact line per model.

    A plain ``dict`` (``name in cards``, ``cards[name]`` is the full card);
    only its ``repr`` is a table of the target, units, training size and test
    MAE of each model.

    Examples
    --------
    >>> from skcgcnn.modelfile import ModelCards
    >>> ModelCards({"toy": {"target": "K_VRH", "units": "log10 GPa", "n_train": 500,
    ...                     "test_mae": 0.0712345, "data": "..."}})
    name  target  units      n_train  test_mae
    toy   K_VRH   log10 GPa  500      0.07123
    """

    def summary_rows(self):
        """(header, rows) of the compact table, values formatted as text."""
        def fmt(value):
            if isinstance(value, float):
                return f"{value:.4g}"
            if isinstance(value, (list, tuple)):  # one value per target
                return ",".join(fmt(v) for v in value)
            return "-" if value is None else str(value)

        rows = [(name, *(fmt(card.get(k)) for k in SUMMARY_KEYS)) for name, card in self.items()]
        return ("name", *SUMMARY_KEYS), rows

    def __repr__(self):
        header, rows = self.summary_rows()
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                         for r in (header, *rows))


def list_pretrained():
    """The bundled pretrained models: name to model card, printed as a compact table.

    Returns
    -------
    cards : ModelCards
        A dict of model name to full model card, sorted by name; printing it
        shows one line per model (target, units, training size, test MAE).
        ``list_pretrained()[name]`` is the full card.

    Examples
    --------
    >>> from skcgcnn.pretrained import list_pretrained
    >>> cards = list_pretrained()
    >>> all(card["name"] == name for name, card in cards.items())
    True
    >>> repr(cards).splitlines()[0].split()
    ['name', 'target', 'units', 'n_train', 'test_mae']
    """
    cards = ModelCards()
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
        A model path as given to :func:`~skcgcnn.pretrained.save_pretrained`
        or :func:`load_pretrained`.

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


def resolve_model(name_or_path):
    """The weights and card files of a bundled model's name or of a path.

    A bare name is a bundled model first, then ``<name>.pt`` (e.g. ``run.v1``)
    if it exists.

    Parameters
    ----------
    name_or_path : str or path-like

    Returns
    -------
    weights, card : pathlib.Path

    Raises
    ------
    ValueError
        An unknown name, or an existing file or folder that is not a model
        (``table.csv`` with no ``table.csv.pt`` beside it): "... is not a
        skcgcnn model file".
    FileNotFoundError
        A path without its weights or its card.

    Examples
    --------
    >>> from skcgcnn.modelfile import resolve_model
    >>> [p.name for p in resolve_model("mp-formation-energy")]
    ['mp-formation-energy.pt', 'mp-formation-energy.json']
    """
    p = Path(os.fspath(name_or_path))
    weights, card = model_paths(p)
    explicit = p.suffix in (".pt", ".json") or p.exists() or os.sep in str(name_or_path)
    if explicit or (weights.exists() and str(name_or_path) not in list_pretrained()):
        if not weights.is_file() and (p.is_file() or p.is_dir()) and p.suffix != ".json":
            # a table, a CIF or a folder given where a model goes
            raise ValueError(
                f"{str(p)!r} is not a skcgcnn model file: a model is a .pt file (a state "
                "dict) with its .json card beside it, or a bundled name (skcgcnn pretrained "
                f"lists them), and {str(weights)!r} does not exist either")
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


def read_card(name_or_path):
    """The weights path and the parsed model card of a model.

    Parameters
    ----------
    name_or_path : str or path-like
        As for :func:`resolve_model`.

    Returns
    -------
    weights : pathlib.Path
    card : dict

    Raises
    ------
    ValueError
        A card that is not a JSON object.

    Examples
    --------
    >>> from skcgcnn.modelfile import read_card
    >>> read_card("mp-formation-energy")[1]["units"]
    'eV/atom'
    """
    weights, card_path = resolve_model(name_or_path)
    try:
        with open(card_path) as f:
            card = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"model card {str(card_path)!r} is not a valid skcgcnn card: not JSON "
                         f"({exc})") from exc
    if not isinstance(card, dict):
        raise ValueError(f"model card {str(card_path)!r} is not a valid skcgcnn card: not a "
                         "JSON object")
    return weights, card


def card_architecture(card, where):
    """The network's constructor arguments from a card (``where`` names it in errors).

    Cards written before ``pooling`` existed describe mean-pooled networks.
    """
    from .model import POOLINGS

    try:
        arch = {k: card["architecture"][k] for k in ARCHITECTURE_KEYS}
        arch["n_targets"] = int(card["architecture"].get("n_targets", 1))
        arch["pooling"] = card["architecture"].get("pooling", "mean")
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"model card of {where!r} is not a valid skcgcnn card: "
                         f"missing or bad entry {exc}") from exc
    if arch["pooling"] not in POOLINGS:
        raise ValueError(f"model card of {where!r} is not a valid skcgcnn card: pooling "
                         f"{arch['pooling']!r} is not one of {POOLINGS}")
    return arch


def check_element_features(card, where, table=None):
    """Check the element table a model card declares, and the one its weights carry.

    A card's ``featurizer`` holds ``element_features`` (the fingerprint of the
    table the model was trained with, :func:`~skcgcnn.features.element_feature_fingerprint`)
    and ``element_features_name`` (``"skcgcnn"``, ``"cgcnn"``, a path or
    ``"array"``; cards without it were trained with ``"skcgcnn"``). A named
    table must be the one this installation builds under that name; the
    table in the weights (the network's ``atom_features`` buffer), when
    given, must be the one the card declares. A custom table (a path or an
    array) travels in the weights, so it needs no file at load time.

    Parameters
    ----------
    card : dict
        The model card.
    where : str
        The model file, named in errors.
    table : array-like or torch.Tensor, optional
        The ``atom_features`` of the state dict.

    Returns
    -------
    name : str
        The table's name, as for ``element_features=``.

    Raises
    ------
    ValueError
        No fingerprint in the card, a named table that this installation
        computes differently, or weights whose table is not the card's.

    Examples
    --------
    >>> from skcgcnn.modelfile import check_element_features, read_card
    >>> weights, card = read_card("mp-formation-energy")
    >>> check_element_features(card, str(weights))
    'skcgcnn'
    >>> card["featurizer"]["element_features_name"] = "cgcnn"
    >>> check_element_features(card, "mp-formation-energy")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: model 'mp-formation-energy' was trained with element features 'cgcnn' ...
    """
    from .features import ELEMENT_TABLES, element_feature_fingerprint, resolve_element_features

    featurizer = card.get("featurizer")
    featurizer = featurizer if isinstance(featurizer, dict) else {}
    declared = featurizer.get("element_features")
    name = featurizer.get("element_features_name", "skcgcnn")
    if not isinstance(declared, str):
        raise ValueError(f"model card of {where!r} declares no element features (the "
                         "featurizer's 'element_features' fingerprint); it cannot be checked "
                         "against the atom features its weights read")
    if name in ELEMENT_TABLES:
        expected = element_feature_fingerprint(resolve_element_features(name)[0])
        if declared != expected:
            raise ValueError(
                f"model {where!r} was trained with element features {name!r} (fingerprint "
                f"{declared!r}), but this installation's {name!r} table is {expected!r}; its "
                "weights would read the wrong atom features")
    if table is not None:
        actual = element_feature_fingerprint(resolve_element_features(table)[0])
        if actual != declared:
            raise ValueError(
                f"{where!r} carries element features {actual!r}, but its card declares "
                f"{name!r} ({declared!r}); the weights and the card do not belong together")
    return name


def build_network(arch, state, where, conv_dtype="float32"):
    """A :class:`~skcgcnn.model.CGCNN` of ``arch`` with the parameters ``state``, in eval mode.

    The element table is the state's ``atom_features`` (check it against
    the card first with :func:`check_element_features`). Raises
    ``ValueError`` naming ``where`` when ``state`` is not a network of that
    architecture.
    """
    from .model import CGCNN

    table = state.get("atom_features")
    try:
        module = CGCNN(**arch, conv_dtype=conv_dtype, element_features=table)
    except ValueError as exc:
        raise ValueError(f"{where!r} does not hold a valid element table: {exc}") from exc
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{where!r} does not hold a CGCNN of the card's architecture {arch}: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, other shapes {wrong[:5]}")
    module.load_state_dict(state)
    return module.eval()


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
        default as :func:`~skcgcnn.pretrained.load_estimator`'s, so that the
        two predict alike; pass ``"float32"`` for full precision everywhere.

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
    from .io import load_state_dict
    from .model import resolve_conv_dtype

    conv_dtype = resolve_conv_dtype(conv_dtype)
    weights, card = read_card(name_or_path)
    arch = card_architecture(card, str(weights))
    state = load_state_dict(weights)
    name = check_element_features(card, str(weights), state.get("atom_features"))
    module = build_network(arch, state, str(weights), conv_dtype)
    module.element_features_name = name
    return module, card


def network_source(pretrained, conv_dtype="auto"):
    """The network and card of a model name, a path or a fitted estimator.

    The one reading of a ``pretrained=`` parameter, shared by
    :class:`~skcgcnn.TransferCGCNNRegressor` and
    :class:`~skcgcnn.PretrainedEmbedding`.

    Parameters
    ----------
    pretrained : str, path-like or fitted CGCNN estimator
        A name from :func:`list_pretrained`, a model path, or a fitted
        estimator (anything with ``module_`` and ``_featurizer_settings``).
    conv_dtype : {"auto", "float32", "bfloat16"}, default="auto"
        Precision of a loaded model's convolutions; an estimator keeps its own.

    Returns
    -------
    module : skcgcnn.model.CGCNN
        A copy of the network, on the CPU, in eval mode (the estimator's own is
        never changed).
    card : dict
        Its model card (for an estimator, its ``card_`` or one built from its
        architecture); ``card["featurizer"]`` holds ``radius`` and ``max_num_nbr``.

    Examples
    --------
    >>> from skcgcnn.modelfile import network_source
    >>> module, card = network_source("mp-formation-energy")
    >>> card["featurizer"]["max_num_nbr"], module.training
    (12, False)
    """
    if hasattr(pretrained, "get_params"):  # an estimator
        if not getattr(pretrained, "initialized_", False) or not hasattr(pretrained, "module_"):
            raise ValueError(
                "pretrained estimator is not fitted (clone() and GridSearchCV refit "
                "estimators passed as parameters: save it with "
                "skcgcnn.pretrained.save_pretrained and pass the path instead)")
        radius, max_num_nbr = pretrained._featurizer_settings()
        card = getattr(pretrained, "card_", None) or {
            "name": type(pretrained).__name__, "architecture": dict(pretrained.module_.hparams)}
        card = {**card, "featurizer": {**card.get("featurizer", {}), "radius": radius,
                                       "max_num_nbr": max_num_nbr}}
        return copy.deepcopy(pretrained.module_).cpu().eval(), card
    if not isinstance(pretrained, (str, bytes)) and not hasattr(pretrained, "__fspath__"):
        raise TypeError(f"pretrained must be a model name, a path or a fitted CGCNN "
                        f"estimator, got {type(pretrained).__name__}")
    return load_pretrained(pretrained, conv_dtype=conv_dtype)
