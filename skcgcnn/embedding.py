"""Pretrained crystal embeddings: a CGCNN as a fixed featurizer for classical models."""

from __future__ import annotations

import os

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .data import GraphDataset, GraphLoader
from .graph import (CrystalGraph, CrystalGraphTransformer, _as_list, _check_choice, _check_int,
                    _check_n_jobs, _check_param, as_graph_array)
from .modelfile import network_source

__all__ = ["PretrainedEmbedding", "crystal_embeddings", "LAYERS"]

#: Layers :func:`crystal_embeddings` reads: the pooled crystal vector (eq. 4),
#: the last hidden layer of the fully connected head, or both side by side.
LAYERS = ("pooled", "hidden", "pooled+hidden")


def _check_layer(layer):
    if layer not in LAYERS:
        raise ValueError(f"layer must be one of {LAYERS}, got {layer!r}")
    return layer


def embedding_width(module, layer):
    """Number of features ``layer`` of ``module`` gives per crystal."""
    pooled, hidden = module.hparams["atom_fea_len"], module.hparams["h_fea_len"]
    return {"pooled": pooled, "hidden": hidden, "pooled+hidden": pooled + hidden}[
        _check_layer(layer)]


def crystal_embeddings(module, graphs, layer="pooled", batch_size=256, device="cpu"):
    """Crystal vectors of a CGCNN for graphs, without gradients.

    The one code path behind :meth:`skcgcnn.CGCNNRegressor.transform` and
    :class:`PretrainedEmbedding`. The network runs in eval mode (batch norms
    use their running statistics, so a crystal's vector does not depend on the
    others in its batch); its training mode is restored afterwards.

    Parameters
    ----------
    module : skcgcnn.model.CGCNN
        The network.
    graphs : sequence of CrystalGraph
        Built with the featurizer settings the network was trained with.
    layer : {"pooled", "hidden", "pooled+hidden"}, default="pooled"
        ``"pooled"``: the mean of the atom vectors after the last convolution
        (eq. 4), ``atom_fea_len`` features; ``"hidden"``: the last hidden
        layer of the head, after its softplus, ``h_fea_len`` features;
        ``"pooled+hidden"``: both, concatenated.
    batch_size : int, default=256
        Crystals per forward pass.
    device : str or torch.device, default="cpu"
        Where the batches go; the module must already be there.

    Returns
    -------
    features : ndarray of shape (n_crystals, n_features), float32

    Examples
    --------
    >>> from ase.build import bulk
    >>> from skcgcnn import CrystalGraphTransformer
    >>> from skcgcnn.embedding import crystal_embeddings
    >>> from skcgcnn.model import CGCNN
    >>> graphs = CrystalGraphTransformer().transform([bulk("Cu"), bulk("Si")])
    >>> crystal_embeddings(CGCNN(), graphs, layer="hidden").shape
    (2, 128)
    """
    _check_layer(layer)
    loader = GraphLoader(GraphDataset(graphs), batch_size=int(batch_size))
    parts = []
    training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            for Xb, _ in loader:
                Xb = {k: v.to(device) for k, v in Xb.items()}
                if layer == "pooled":
                    parts.append(module.crystal_features(**Xb).cpu().numpy())
                    continue
                pooled, h = module.crystal_hidden(**Xb)
                out = h if layer == "hidden" else torch.cat([pooled, h], dim=1)
                parts.append(out.cpu().numpy())
    finally:
        module.train(training)
    if not parts:
        return np.zeros((0, embedding_width(module, layer)), dtype=np.float32)
    return np.concatenate(parts)


class PretrainedEmbedding(TransformerMixin, BaseEstimator):
    """Crystal vectors of a pretrained CGCNN, as descriptors for classical models.

    Transfer learning without training the network: each crystal is passed
    through a pretrained model (bundled, saved with
    :func:`~skcgcnn.pretrained.save_pretrained`, or a fitted estimator) and a
    layer's activations become its descriptor, for SVR, kernel ridge, random
    forests or Gaussian processes. Structures are featurized with the model
    card's ``radius`` and ``max_num_nbr``; graphs built with other settings
    are refused.

    Which layer: on 500-K_VRH (10 trials of the paper's protocol, SVR tuned by
    5-fold grid search) the pooled vector of ``mp-formation-energy`` gave
    0.089 log10 GPa and the hidden layer 0.103 (worse on 9 of 10 trials), so
    ``"pooled"`` is the default. The vectors carry structure that composition
    lacks: beside the 132 magpie descriptors the same SVR reached 0.076,
    against 0.088 for magpie alone and 0.073 for a fine-tuned TL-CGCNN. On all
    four of the paper's 500-crystal targets, pooled vector + magpie beat magpie
    alone by 10 to 14 % (p < 0.01) and tied with one fine-tuned network
    (docs/benchmarks.md, "Pretrained embeddings and the SOAP kernel").

    Parameters
    ----------
    pretrained : str, path-like or fitted CGCNNRegressor, default="mp-formation-energy"
        A name from :func:`skcgcnn.pretrained.list_pretrained`, the path of a
        ``.pt`` file with its ``.json`` model card, or a fitted estimator.
    layer : {"pooled", "hidden", "pooled+hidden"}, default="pooled"
        ``"pooled"``: the mean atom vector after the convolutions (eq. 4,
        ``atom_fea_len`` = 64 features for the bundled models); ``"hidden"``:
        the last hidden layer of the fully connected head (``h_fea_len`` =
        128), which is specific to the pretraining target; ``"pooled+hidden"``:
        both.
    batch_size : int, default=64
        Crystals per forward pass (on one CPU thread, batches of 32 or 64 were
        faster than 256: docs/results/embedding.json).
    n_jobs : int or None, default=None
        Processes used to build the graphs of raw structures.
    device : str, default="cpu"
        Torch device of the network.
    conv_dtype : {"auto", "float32", "bfloat16"}, default="auto"
        Precision of the convolutions of a saved model (the rule of
        :func:`~skcgcnn.pretrained.load_pretrained`: bfloat16 on CPUs with
        bfloat16 instructions); a fitted estimator keeps its own.

    Attributes
    ----------
    module_ : skcgcnn.model.CGCNN
        The network, in eval mode.
    card_ : dict
        Its model card.
    radius_, max_num_nbr_ : float, int
        Featurizer settings the graphs must be built with.
    n_features_out_ : int
        Features per crystal.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from skcgcnn import PretrainedEmbedding
    >>> from skcgcnn.pretrained import list_pretrained
    >>> if "mp-formation-energy" in list_pretrained():
    ...     emb = PretrainedEmbedding("mp-formation-energy").fit([bulk("Cu")])
    ...     print(emb.transform([bulk("Cu"), bulk("Si")]).shape, emb.get_feature_names_out()[0])
    (2, 64) pooled0
    """

    def _check_params(self):
        """Raise a ValueError for an invalid constructor parameter."""
        _check_param(self, "pretrained",
                     lambda v: isinstance(v, (str, os.PathLike, BaseEstimator)),
                     "a bundled model's name, a path or a fitted estimator")
        _check_choice(self, "layer", LAYERS)
        _check_int(self, "batch_size", 1)
        _check_n_jobs(self)
        _check_param(self, "device", lambda v: isinstance(v, (str, torch.device)),
                     "a torch device or its name")
        _check_choice(self, "conv_dtype", ("auto", "float32", "bfloat16"))

    def __init__(self, pretrained="mp-formation-energy", layer="pooled", batch_size=64,
                 n_jobs=None, device="cpu", conv_dtype="auto"):
        self.pretrained = pretrained
        self.conv_dtype = conv_dtype
        self.layer = layer
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.device = device

    def fit(self, X=None, y=None):
        """Load the pretrained network; nothing is learned from ``X`` or ``y``.

        Returns
        -------
        self : PretrainedEmbedding
        """
        self._check_params()
        module, self.card_ = network_source(self.pretrained, self.conv_dtype)
        self.radius_ = self.card_["featurizer"]["radius"]
        self.max_num_nbr_ = self.card_["featurizer"]["max_num_nbr"]
        self.module_ = module.to(self.device).eval()
        self.n_features_out_ = embedding_width(module, self.layer)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []
        return tags

    def _graphs(self, X):
        items = X if isinstance(X, np.ndarray) and X.dtype == object and X.ndim == 1 \
            else _as_list(X)
        if len(items) == 0:
            raise ValueError("X is empty: expected at least one crystal")
        if all(isinstance(g, CrystalGraph) for g in items):
            graphs = items if isinstance(items, np.ndarray) else as_graph_array(items)
        else:
            graphs = CrystalGraphTransformer(radius=self.radius_, max_num_nbr=self.max_num_nbr_,
                                             n_jobs=self.n_jobs).transform(items)
        for i, g in enumerate(graphs):
            if g.radius != self.radius_ or g.max_num_nbr != self.max_num_nbr_:
                raise ValueError(
                    f"graph at index {i} was built with radius={g.radius}, "
                    f"max_num_nbr={g.max_num_nbr}, but pretrained model "
                    f"{self.card_.get('name', self.pretrained)!r} was trained on graphs with "
                    f"radius={self.radius_}, max_num_nbr={self.max_num_nbr_}; build them with "
                    f"CrystalGraphTransformer(radius={self.radius_}, "
                    f"max_num_nbr={self.max_num_nbr_}) or pass the structures")
        return graphs

    def transform(self, X):
        """Crystal vectors of the chosen layer.

        Parameters
        ----------
        X : sequence of CrystalGraph, Structure, ase.Atoms or paths

        Returns
        -------
        features : ndarray of shape (n_crystals, ``n_features_out_``), float64
        """
        check_is_fitted(self, "module_")
        graphs = self._graphs(X)
        out = crystal_embeddings(self.module_, graphs, self.layer, self.batch_size, self.device)
        return out.astype(np.float64)

    def get_feature_names_out(self, input_features=None):
        """Feature names: ``pooled0``, ... and/or ``hidden0``, ...

        Returns
        -------
        names : ndarray of str
        """
        check_is_fitted(self, "module_")
        hp = self.module_.hparams
        names = []
        if self.layer in ("pooled", "pooled+hidden"):
            names += [f"pooled{i}" for i in range(hp["atom_fea_len"])]
        if self.layer in ("hidden", "pooled+hidden"):
            names += [f"hidden{i}" for i in range(hp["h_fea_len"])]
        return np.asarray(names, dtype=object)
