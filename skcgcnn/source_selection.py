"""Choosing a pretrained source model for a new property by a cheap probe.

Which pretrained model to fine-tune moves a small target's test MAE by up to
10 % (docs/benchmarks.md, "One fine-tuned model"), and trying every model by
fine-tuning costs one fit per candidate. The probe here ranks candidates
without training a network: each candidate turns the training crystals into
its pooled crystal vectors (eq. 4, :func:`~skcgcnn.embedding.crystal_embeddings`),
and a linear model on those vectors is scored by K-fold cross-validation on
the same training crystals. The model whose vectors predict the new property
best is the one whose convolutions already compute what the property needs,
which is what fine-tuning starts from.

:func:`rank_sources` is what ``TransferCGCNNRegressor(pretrained="auto")``
calls; it uses only the crystals and targets it is given (inside
``cross_val_score`` it never sees the test fold) and is deterministic for a
given ``random_state``.
"""

from __future__ import annotations

import os
from numbers import Integral

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import log_loss
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import check_random_state

from .embedding import crystal_embeddings
from .graph import CrystalGraph, CrystalGraphTransformer, _as_list
from .model import resolve_conv_dtype
from .modelfile import list_pretrained, network_source

__all__ = ["default_classification_probe", "default_probe", "library_candidates",
           "probe_score", "rank_sources", "source_label"]

#: Ridge penalties the default probe chooses from (efficient leave-one-out inside RidgeCV).
PROBE_ALPHAS = np.logspace(-3, 3, 13)


def default_probe():
    """The probe's regressor: standardised pooled vectors, ridge regression with its
    penalty chosen by leave-one-out (``RidgeCV``, 13 values from 1e-3 to 1e3).

    Returns
    -------
    estimator : sklearn.pipeline.Pipeline

    Examples
    --------
    >>> from skcgcnn.source_selection import default_probe
    >>> default_probe().steps[-1][0]
    'ridgecv'
    """
    return make_pipeline(StandardScaler(), RidgeCV(alphas=PROBE_ALPHAS))


def default_classification_probe():
    """The probe of a classifier's ``pretrained="auto"``: standardised pooled vectors,
    L2-penalised logistic regression (``C=1``), scored by its cross-validated log loss.

    Returns
    -------
    estimator : sklearn.pipeline.Pipeline

    Examples
    --------
    >>> from skcgcnn.source_selection import default_classification_probe
    >>> default_classification_probe().steps[-1][0]
    'logisticregression'
    """
    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))


def library_candidates():
    """Names of every bundled pretrained model (:func:`skcgcnn.pretrained.list_pretrained`).

    Examples
    --------
    >>> from skcgcnn.source_selection import library_candidates
    >>> "mp-formation-energy" in library_candidates()
    True
    """
    return list(list_pretrained())


def source_label(candidate):
    """The key of a candidate in :func:`rank_sources`'s result: a library name as it
    is, a path as given (a string)."""
    if isinstance(candidate, bytes):
        return os.fsdecode(candidate)
    return os.fspath(candidate) if hasattr(candidate, "__fspath__") else str(candidate)


def probe_score(features, y, cv=5, random_state=None, estimator=None):
    """Cross-validated mean absolute error of a probe regressor on descriptors (the log
    loss of its probabilities for a probe classifier).

    Parameters
    ----------
    features : array-like of shape (n_crystals, n_features)
        Descriptors of the crystals, e.g. a source model's pooled vectors.
    y : array-like of shape (n_crystals,)
        The property, in its own units, or class labels for a probe classifier.
    cv : int, default=5
        Folds of a shuffled ``KFold`` (at most ``n_crystals``); stratified,
        and at most the smallest class's count, for a probe classifier.
    random_state : int, RandomState or None, default=None
        Seeds the fold assignment.
    estimator : scikit-learn regressor or classifier, optional
        The probe (cloned); :func:`default_probe` if None. A classifier needs
        ``predict_proba``.

    Returns
    -------
    score : float
        Mean absolute error of the out-of-fold predictions, in the units of
        ``y``; for a probe classifier the log loss (nats) of its out-of-fold
        probabilities. Lower is better.

    Examples
    --------
    >>> import numpy as np
    >>> from skcgcnn.source_selection import probe_score
    >>> rng = np.random.default_rng(0)
    >>> Z = rng.normal(size=(100, 4))
    >>> informative = probe_score(Z, Z[:, 0], random_state=0)
    >>> noise = probe_score(rng.normal(size=(100, 4)), Z[:, 0], random_state=0)
    >>> bool(informative < noise)
    True
    """
    features = np.asarray(features, dtype=np.float64)
    est = clone(estimator if estimator is not None else default_probe())
    classify = is_classifier(est)
    y = _probe_targets(y, classify)
    if len(features) != len(y):
        raise ValueError(f"features and y have different lengths: {len(features)} crystals, "
                         f"{len(y)} targets")
    if not isinstance(cv, Integral) or cv < 2:
        raise ValueError(f"cv must be an int >= 2, got {cv!r}")
    if len(y) < 2:
        raise ValueError(f"the probe needs at least 2 crystals, got {len(y)}")
    seed = check_random_state(random_state).randint(2 ** 31 - 1)
    if not classify:
        pred = cross_val_predict(est, features, y,
                                 cv=KFold(min(int(cv), len(y)), shuffle=True, random_state=seed))
        return float(np.mean(np.abs(pred - y)))
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2 or counts.min() < 2:
        raise ValueError(f"the probe classifier needs at least 2 crystals of each of at least "
                         f"2 classes, got {dict(zip(classes.tolist(), counts.tolist()))}")
    folds = StratifiedKFold(min(int(cv), int(counts.min())), shuffle=True, random_state=seed)
    proba = cross_val_predict(est, features, y, cv=folds, method="predict_proba")
    return float(log_loss(y, proba, labels=classes))


def _probe_targets(y, classify):
    """``y`` as the probe takes it: 1-D finite floats, or 1-D labels for a classifier."""
    y = np.asarray(y) if classify else np.asarray(y, dtype=np.float64)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (one property per crystal), got shape {y.shape}")
    if not classify and not np.isfinite(y).all():
        raise ValueError(f"y has {int((~np.isfinite(y)).sum())} NaN or infinite value(s), the "
                         f"first at index {int(np.flatnonzero(~np.isfinite(y))[0])}")
    return y


def rank_sources(candidates, X, y, cv=5, random_state=None, estimator=None, batch_size=256,
                 device="cpu", conv_dtype="auto"):
    """Rank pretrained models for a property by the probe, best first.

    Each candidate's pooled crystal vectors of ``X`` (eval mode)
    are scored by :func:`probe_score` with the same folds for every
    candidate. On the 625 training crystals of the benchmarks a candidate
    costs about a forward pass over them (a fraction of a second) and the
    ridge fits a few milliseconds: the whole ranking costs a few percent of
    one fine-tune (docs/benchmarks.md, "One fine-tuned model").

    Parameters
    ----------
    candidates : sequence of str or path-like
        Names from :func:`skcgcnn.pretrained.list_pretrained` or paths of
        ``.pt`` files with their cards. All must share featurizer settings.
    X : sequence of CrystalGraph, Structure, ase.Atoms or paths
        The training crystals; raw structures are featurized once, with the
        first candidate's card settings.
    y : array-like of shape (n_crystals,)
        The property, in its own units (finite), or class labels when
        ``estimator`` is a classifier.
    cv : int, default=5
        Folds of the probe's cross-validation.
    random_state : int, RandomState or None, default=None
        Seeds the folds; an int gives the same ranking every time.
    estimator : scikit-learn regressor or classifier, optional
        The probe; :func:`default_probe` (ridge) if None;
        :func:`default_classification_probe` for class labels.
    batch_size : int, default=256
        Crystals per forward pass.
    device : str, default="cpu"
        Where the forward passes run.
    conv_dtype : {"auto", "float32", "bfloat16"}, default="auto"
        Precision of the candidates' convolutions, as in
        :class:`~skcgcnn.CGCNNRegressor` (``"auto"``: bfloat16 on a CPU with
        bfloat16 instructions, where the forward passes take about half the
        time).

    Returns
    -------
    scores : dict of str to float
        The probe's cross-validated MAE (units of ``y``; log loss for a
        probe classifier) per candidate
        (:func:`source_label`), lowest first; ties keep the candidates' order.

    Raises
    ------
    ValueError
        No candidates, a duplicate, a candidate that cannot be loaded, graphs
        built with other featurizer settings than a candidate's, or bad ``y``.

    Examples
    --------
    >>> import numpy as np
    >>> from ase.build import bulk
    >>> from skcgcnn.source_selection import rank_sources
    >>> a = np.linspace(3.4, 3.8, 12)
    >>> X = [bulk("Cu", a=v) for v in a]
    >>> scores = rank_sources(["mp-formation-energy", "mp-band-gap-nm"], X, a ** 3 / 4,
    ...                       cv=3, random_state=0)
    >>> sorted(scores) == ["mp-band-gap-nm", "mp-formation-energy"]
    True
    """
    if isinstance(candidates, (str, bytes)) or hasattr(candidates, "__fspath__"):
        candidates = [candidates]
    candidates = list(candidates)
    if not candidates:
        raise ValueError("candidates is empty: pass at least one model name or path")
    labels = [source_label(c) for c in candidates]
    seen = set()
    for label in labels:
        if label in seen:
            raise ValueError(f"candidate {label!r} is given twice")
        seen.add(label)
    y = _probe_targets(y, estimator is not None and is_classifier(estimator))
    graphs = None
    seed = check_random_state(random_state).randint(2 ** 31 - 1)
    scores = {}
    for candidate, label in zip(candidates, labels):
        try:
            module, card = network_source(candidate, conv_dtype=resolve_conv_dtype(
                conv_dtype, device))
        except (ValueError, FileNotFoundError, TypeError) as exc:
            raise ValueError(f"candidate {label!r} cannot be used as a source model: {exc}") \
                from exc
        radius, max_num_nbr = card["featurizer"]["radius"], card["featurizer"]["max_num_nbr"]
        if graphs is None:
            graphs = _graphs(X, radius, max_num_nbr)
            if len(graphs) != len(y):
                raise ValueError(f"X and y have different lengths: {len(graphs)} crystals, "
                                 f"{len(y)} targets")
        for i, g in enumerate(graphs):
            if g.radius != radius or g.max_num_nbr != max_num_nbr:
                raise ValueError(
                    f"graph at index {i} was built with radius={g.radius}, "
                    f"max_num_nbr={g.max_num_nbr}, but candidate {label!r} uses "
                    f"radius={radius}, max_num_nbr={max_num_nbr}; rank candidates of one "
                    "featurizer at a time")
        module.to(device)
        features = crystal_embeddings(module, graphs, "pooled", batch_size, device)
        scores[label] = probe_score(features, y, cv=cv, random_state=seed, estimator=estimator)
    return dict(sorted(scores.items(), key=lambda kv: kv[1]))


def _graphs(X, radius, max_num_nbr):
    items = _as_list(X)
    if all(isinstance(g, CrystalGraph) for g in items):
        return items
    return _as_list(CrystalGraphTransformer(radius=radius, max_num_nbr=max_num_nbr).transform(X))
