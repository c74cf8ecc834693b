"""Ensembles of networks: :class:`EnsembleRegressor` with calibrated uncertainty, and
:class:`EnsembleClassifier`, averaging class probabilities."""

from __future__ import annotations

import contextlib
import numbers
import warnings

import numpy as np
from joblib import Parallel, cpu_count, delayed, effective_n_jobs
from scipy.stats import norm
from sklearn.base import (BaseEstimator, ClassifierMixin, MetaEstimatorMixin, RegressorMixin,
                          clone, is_classifier, is_regressor)
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

__all__ = ["EnsembleRegressor", "EnsembleClassifier", "save_ensemble", "load_ensemble",
           "is_saved_ensemble"]


@contextlib.contextmanager
def _threads(n):
    """Limit torch and BLAS/OpenMP threads to ``n`` inside a worker (``None``: unchanged)."""
    if n is None:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        torch.set_num_threads(before)


def _held_out(member, X, y):
    """Indices of the training crystals ``member`` did not train on, or None.

    A member may say so itself (a ``validation_indices_`` attribute); a skorch
    net (:class:`~skcgcnn.CGCNNRegressor`) is asked for its validation split,
    which is a pure function of its ``random_state`` and ``len(X)``.
    """
    if hasattr(member, "validation_indices_"):
        idx = member.validation_indices_
        return None if idx is None else np.asarray(idx, dtype=np.int64)
    if hasattr(member, "get_split_datasets"):
        _, valid = member.get_split_datasets(X, y)
        return None if valid is None else np.asarray(valid.indices, dtype=np.int64)
    return None


@contextlib.contextmanager
def _quiet_worker_restarts():
    """Silence loky's note when it replaces a worker whose memory grew (a torch fit grows it
    by more than loky's 300 MB leak threshold); the worker's jobs run on a fresh one."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given")
        yield


def _fit_member(member, X, y, n_threads):
    """Fit one member; return it, its held-out indices and its predictions on ``X``."""
    with _threads(n_threads):
        member.fit(X, y)
        held = _held_out(member, X, y)
        pred = np.asarray(member.predict(X), dtype=np.float64)
    return member, held, pred


def _predict_member(member, X, n_threads):
    with _threads(n_threads):
        return np.asarray(member.predict(X), dtype=np.float64)


def _eps():
    from mapie.conformity_scores import StdConformityScore

    return float(StdConformityScore().eps)


def _mean_std(preds):
    """Mean and standard deviation (ddof=1) over members, axis 0; exactly 0 for equal members."""
    dev = preds - preds[0]
    shift = dev.mean(axis=0)
    return preds[0] + shift, (dev - shift).std(axis=0, ddof=1)


def _spread_ratio(ss_out, dof_out, ss_in, dof_in, min_dof=10):
    """Ratio of the held-out members' pooled spread to the training members' one.

    Estimated on every crystal held out (or trained on) by two members or more;
    1.0 when either group has fewer than ``min_dof`` degrees of freedom or no
    spread at all.
    """
    if dof_out < min_dof or dof_in < min_dof or ss_out <= 0 or ss_in <= 0:
        return 1.0
    return float(np.sqrt((ss_out / dof_out) / (ss_in / dof_in)))


def _conformal_quantile(scores, confidence_level):
    """Finite-sample conformal quantile: the ``ceil((n + 1) level)``-th smallest score."""
    n = len(scores)
    k = int(np.ceil((n + 1) * confidence_level))
    if k > n:
        need = int(np.ceil(confidence_level / (1 - confidence_level)))
        raise ValueError(f"{n} held-out crystals are too few for a {confidence_level:.0%} "
                         f"interval: at least {need} are needed (more members or a larger "
                         "validation_fraction)")
    return float(np.sort(scores)[k - 1])


class EnsembleRegressor(RegressorMixin, MetaEstimatorMixin, BaseEstimator):
    """Mean of several seeds of a network, with a calibrated standard deviation.

    ``n_estimators`` clones of ``estimator`` are fitted on the same data,
    each with its own seed (weight initialisation, minibatch shuffling and the
    validation split that picks its best epoch). ``estimator`` may also be a
    list, e.g. networks fine-tuned from different pretrained models: the
    members are then clones of its entries in turn. The prediction is their mean;
    its uncertainty is their spread, calibrated on the crystals each member
    held out for validation, so no crystal is spent on calibration alone.

    Calibration (split-conformal with normalised scores, Lei et al. 2018): a
    training crystal that some members held out gets an out-of-sample
    prediction, the mean of those members, and a score
    ``|y - y_oob| / sigma`` (MAPIE's ``StdConformityScore``), with ``sigma``
    the members' spread there, pooled within the members that held it out
    and within those that trained on it. The
    finite-sample conformal quantile ``q`` of these scores at
    ``confidence_level`` scales the spread: ``predict(X, return_std=True)``
    returns ``std = sigma * q / z``, ``z`` the normal quantile (1.645 for
    90 %), so that ``mean ± z * std`` is the conformal interval at
    ``confidence_level``. :meth:`predict_interval` gives interval bounds at
    any level. The user guide's "Ensembles and uncertainty" says what this
    guarantees and what it does not.

    Structures are featurized once, and the members are fitted in parallel
    (``n_jobs``), each worker with ``cpu_count() // workers`` torch threads;
    members left over when ``n_estimators`` is not a multiple of the workers
    share all the threads in a last round.

    Parameters
    ----------
    estimator : regressor or list of regressors, default=None
        The member, e.g. :class:`~skcgcnn.CGCNNRegressor` (the default) or
        :class:`~skcgcnn.TransferCGCNNRegressor`; cloned, never fitted
        itself. It needs a ``random_state`` parameter, and for calibration a
        validation split (``validation_fraction`` of a skcgcnn network) or a
        fitted ``validation_indices_`` attribute. A list: member ``i`` is a
        clone of ``estimator[i % len(estimator)]`` (a multi-source
        ensemble, members fine-tuned from several pretrained models); its
        entries must take the same crystal graphs.
    n_estimators : int, default=5
        Members, at least 2 (3 or more to calibrate: with 2, only the
        crystals both held out have a pooled spread), and at least one per
        entry of a list ``estimator``.
    confidence_level : float, default=0.9
        Level at which ``mean ± z * std`` is calibrated to cover new
        crystals, and the default level of :meth:`predict_interval`.
    calibrate : bool, default=True
        ``False``: ``std`` is the members' raw standard deviation (ddof=1),
        no held-out predictions needed.
    n_jobs : int or None, default=None
        Members fitted (and predicted) in parallel, joblib semantics
        (``-1``: all cores).
    random_state : int, RandomState or None, default=None
        Seeds the members' seeds (``seeds_``); an int makes the ensemble
        reproducible.

    Attributes
    ----------
    estimators_ : list of fitted estimators
        The members.
    seeds_ : ndarray of int
        Each member's ``random_state``.
    oob_prediction_ : ndarray of shape (n_crystals,)
        Mean prediction of the members that held each training crystal out
        (NaN where every member trained on it).
    oob_std_ : ndarray of shape (n_crystals,)
        Members' spread on each training crystal: the pooled standard
        deviation within the members that held it out and within those that
        trained on it, the latter scaled by ``in_spread_ratio_`` (NaN where
        that leaves no degree of freedom).
    in_spread_ratio_ : float
        How much more the members disagree on crystals they held out than on
        crystals they trained on (the ratio of the two groups' pooled
        standard deviations over all training crystals; 1.0 when too few
        crystals were held out by two members).
    conformity_scores_ : ndarray
        ``|y - oob_prediction_| / oob_std_`` of the held-out crystals
        (MAPIE's ``StdConformityScore``).
    std_scale_ : float
        Factor from the raw standard deviation to the calibrated one (1.0
        without calibration).

    Examples
    --------
    >>> import numpy as np
    >>> from ase.build import bulk
    >>> from skcgcnn import CGCNNRegressor, EnsembleRegressor
    >>> a = np.linspace(3.3, 3.9, 40)
    >>> X = [bulk("Cu", a=v) for v in a]
    >>> y = a ** 3 / 4  # volume per atom, angstrom^3
    >>> model = EnsembleRegressor(CGCNNRegressor(max_epochs=3, batch_size=16),
    ...                           n_estimators=3, random_state=0).fit(X, y)
    >>> mean, std = model.predict(X[:2], return_std=True)
    >>> mean.shape, std.shape, bool((std >= 0).all())
    ((2,), (2,), True)
    >>> model.predict_interval(X[:2]).shape  # lower, upper
    (2, 2)
    """

    def __init__(self, estimator=None, n_estimators=5, confidence_level=0.9, calibrate=True,
                 n_jobs=None, random_state=None):
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.confidence_level = confidence_level
        self.calibrate = calibrate
        self.n_jobs = n_jobs
        self.random_state = random_state

    # ------------------------------------------------------------ validation
    def _member_templates(self):
        """The estimators the members are cloned from, in turn (checked)."""
        if self.estimator is None:
            from .estimators import CGCNNRegressor

            return [CGCNNRegressor()]
        if not isinstance(self.estimator, (list, tuple)):
            return [self._check_member(self.estimator)]
        if not self.estimator:
            raise ValueError("estimator is an empty list: give at least one regressor")
        if self.n_estimators < len(self.estimator):
            raise ValueError(f"n_estimators={self.n_estimators} is fewer than the "
                             f"{len(self.estimator)} estimators given: each needs a member")
        return [self._check_member(est) for est in self.estimator]

    @staticmethod
    def _check_member(est):
        if isinstance(est, EnsembleRegressor):
            raise TypeError("estimator is an EnsembleRegressor: ensembles cannot be nested; "
                            "raise n_estimators instead")
        if not (hasattr(est, "fit") and hasattr(est, "predict") and hasattr(est, "get_params")):
            raise TypeError(f"estimator must be a scikit-learn regressor with fit, predict and "
                            f"get_params, got {type(est).__name__}")
        if not is_regressor(est):
            raise TypeError(f"estimator must be a regressor, got {type(est).__name__}")
        if "random_state" not in est.get_params(deep=False):
            raise TypeError(f"{type(est).__name__} has no random_state parameter, so its "
                            "clones would all be the same model and cannot be ensembled")
        return est

    def _check_params(self):
        n = self.n_estimators
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
            raise ValueError(f"n_estimators must be an int of at least 2 (a standard deviation "
                             f"needs two members), got {n!r}")
        level = self.confidence_level
        if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
            raise ValueError(f"confidence_level must be a float strictly between 0 and 1, "
                             f"got {level!r}")

    def _workers(self, n_tasks):
        """(joblib n_jobs, torch threads per worker or None when sequential)."""
        workers = min(effective_n_jobs(self.n_jobs), n_tasks)
        if workers <= 1:
            return 1, None
        return workers, max(1, cpu_count() // workers)

    def _rounds(self, n_tasks):
        """Groups of member indices fitted together: ``(indices, workers, threads)``.

        The members that fill every worker run first; the few left over (5
        members on 2 workers leave 1) then share all the cores instead of one
        core each, so no core idles through the last round.
        """
        workers, threads = self._workers(n_tasks)
        full = n_tasks - n_tasks % workers
        rounds = [(range(full), workers, threads)]
        if full < n_tasks:
            rest = n_tasks - full
            rounds.append((range(full, n_tasks), rest,
                           max(1, workers * threads // rest) if threads else None))
        return rounds

    def _features(self, template, X):
        """Featurize ``X`` once for every member (graphs for a skcgcnn network)."""
        if hasattr(template, "_graphs"):
            return clone(template)._graphs(X)
        return X

    # --------------------------------------------------------------- fitting
    def fit(self, X, y):
        """Fit ``n_estimators`` seeds of the estimator and calibrate their spread.

        Parameters
        ----------
        X : sequence of CrystalGraph, Structure, ase.Atoms or paths
            (or whatever the member estimator takes).
        y : array-like of shape (n_crystals,)
            Targets in their own units.

        Returns
        -------
        self : EnsembleRegressor
        """
        self._check_params()
        templates = self._member_templates()
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D (one target per crystal), got shape {y.shape}")
        rng = check_random_state(self.random_state)
        self.seeds_ = rng.randint(np.iinfo(np.int32).max, size=self.n_estimators)
        members = [clone(templates[i % len(templates)]).set_params(random_state=int(s))
                   for i, s in enumerate(self.seeds_)]
        Xf = self._features(templates[0], X)  # each member checks that it takes these
        if len(Xf) != len(y):
            raise ValueError(f"X and y have different lengths: {len(Xf)} crystals, "
                             f"{len(y)} targets")
        out = []
        for indices, workers, threads in self._rounds(len(members)):
            with _quiet_worker_restarts():
                out += Parallel(n_jobs=workers)(
                    delayed(_fit_member)(members[i], Xf, y, threads) for i in indices)
        self.estimators_ = [m for m, _, _ in out]
        preds = np.stack([p for _, _, p in out])
        self._calibrate(y, preds, [h for _, h, _ in out])
        return self

    def _calibrate(self, y, preds, held):
        from mapie.conformity_scores import StdConformityScore

        n, k = len(y), len(preds)
        mask = np.zeros_like(preds, dtype=bool)  # mask[m, i]: member m held crystal i out
        for m, idx in enumerate(held):
            if idx is not None:
                mask[m, idx] = True
        n_out = mask.sum(axis=0)
        n_in = k - n_out
        with np.errstate(invalid="ignore", divide="ignore"):
            self.oob_prediction_ = np.where(n_out > 0, (preds * mask).sum(axis=0) / n_out, np.nan)
            in_mean = np.where(n_in > 0, (preds * ~mask).sum(axis=0) / n_in, np.nan)
            # Spread within the members that held a crystal out and within those that
            # trained on it, pooled: the gap between the two groups (members that
            # trained on a crystal are pulled towards its target) is no spread a new
            # crystal would show. The members that trained on a crystal also agree
            # more on it than on a new crystal: their spread is scaled up by the ratio
            # of the two groups' pooled spreads over all crystals.
            ss_out = np.where(mask, preds - self.oob_prediction_, 0.0) ** 2
            ss_in = np.where(mask, 0.0, preds - in_mean) ** 2
            dof_out, dof_in = np.maximum(n_out - 1, 0), np.maximum(n_in - 1, 0)
            self.in_spread_ratio_ = _spread_ratio(ss_out.sum(), dof_out.sum(),
                                                  ss_in.sum(), dof_in.sum())
            dof = dof_out + dof_in
            self.oob_std_ = np.where(dof > 0, np.sqrt(
                (ss_out.sum(axis=0) + self.in_spread_ratio_ ** 2 * ss_in.sum(axis=0)) / dof),
                np.nan)
        self.std_scale_ = 1.0
        self.conformity_scores_ = np.empty(0)
        if not self.calibrate:
            return
        if not mask.any():
            raise ValueError(
                "calibrate=True needs held-out predictions, but no member held out any "
                "crystal: give the estimator a validation split (validation_fraction > 0) or "
                "pass calibrate=False for the raw spread of the members")
        ok = (n_out > 0) & (dof > 0)
        score = StdConformityScore()
        self.conformity_scores_ = np.asarray(score.get_conformity_scores(
            y[ok], self.oob_prediction_[ok], y_std=self.oob_std_[ok]), dtype=np.float64)
        q = _conformal_quantile(self.conformity_scores_, self.confidence_level)
        self.std_scale_ = q / norm.ppf(0.5 + self.confidence_level / 2)
        if int(ok.sum()) < 0.3 * n:
            warnings.warn(f"only {int(ok.sum())} of {n} crystals calibrate the std; the "
                          "calibration is rough (more members or a larger "
                          "validation_fraction help)", UserWarning, stacklevel=3)

    # ------------------------------------------------------------ prediction
    def predict_members(self, X):
        """Each member's predictions.

        Parameters
        ----------
        X : sequence of CrystalGraph, Structure, ase.Atoms or paths

        Returns
        -------
        predictions : ndarray of shape (n_estimators, n_crystals)
        """
        check_is_fitted(self, "estimators_")
        Xf = self._features(self.estimators_[0], X)
        workers, threads = self._workers(len(self.estimators_))
        if workers == 1:
            return np.stack([_predict_member(m, Xf, None) for m in self.estimators_])
        with _quiet_worker_restarts():
            return np.stack(Parallel(n_jobs=workers)(
                delayed(_predict_member)(m, Xf, threads) for m in self.estimators_))

    def predict(self, X, return_std=False):
        """Mean prediction of the members, and optionally its calibrated std.

        Parameters
        ----------
        X : sequence of CrystalGraph, Structure, ase.Atoms or paths
        return_std : bool, default=False
            Also return the standard deviation: the members' spread scaled by
            ``std_scale_``, so that ``mean ± z * std`` (``z`` the normal
            quantile) is the conformal interval at ``confidence_level``.

        Returns
        -------
        y_pred : ndarray of shape (n_crystals,)
        y_std : ndarray of shape (n_crystals,)
            Only with ``return_std=True``, in the target's units.
        """
        mean, std = _mean_std(self.predict_members(X))
        if not return_std:
            return mean
        return mean, std * self.std_scale_

    def predict_interval(self, X, confidence_level=None):
        """Conformal prediction intervals.

        Parameters
        ----------
        X : sequence of CrystalGraph, Structure, ase.Atoms or paths
        confidence_level : float, optional
            Fraction of new crystals the intervals should cover (default:
            ``self.confidence_level``). Needs ``calibrate=True``.

        Returns
        -------
        bounds : ndarray of shape (n_crystals, 2)
            Lower and upper bounds, ``mean ∓ q * sigma`` with ``q`` the
            conformal quantile of the held-out scores at that level.
        """
        check_is_fitted(self, "estimators_")
        if not self.calibrate:
            raise ValueError("predict_interval needs a calibrated ensemble (calibrate=True)")
        level = self.confidence_level if confidence_level is None else confidence_level
        if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
            raise ValueError(f"confidence_level must be a float strictly between 0 and 1, "
                             f"got {level!r}")
        mean, sigma = _mean_std(self.predict_members(X))
        sigma = np.maximum(sigma, _eps())  # as StdConformityScore floors it
        half = _conformal_quantile(self.conformity_scores_, level) * sigma
        return np.column_stack([mean - half, mean + half])


# ------------------------------------------------------------------ model files
def save_ensemble(ensemble, path, *, overwrite=False, **card):
    """Save a fitted ensemble of CGCNNs as one state dict and one model card.

    Writes ``<path>.pt``, the members' state dicts under the prefixes
    ``member_0.``, ``member_1.``, ..., and ``<path>.json``, the card of
    :func:`skcgcnn.pretrained.save_pretrained` (architecture, featurizer,
    element-feature fingerprint) with an ``ensemble`` block: the members'
    seeds, the calibration (``std_scale``, ``confidence_level`` and the
    held-out ``conformity_scores``). Both files are written atomically, and
    :func:`load_ensemble` reads them with ``weights_only=True``.

    Parameters
    ----------
    ensemble : EnsembleRegressor
        Fitted, with :class:`~skcgcnn.CGCNNRegressor` (or
        :class:`~skcgcnn.TransferCGCNNRegressor`) members.
    path : str or path-like
        Target path, as for :func:`skcgcnn.pretrained.save_pretrained` (a
        suffix other than ``.pt`` is kept).
    overwrite : bool, default=False
        Replace existing files; otherwise ``FileExistsError``.
    **card
        More model-card fields (data, target, units, ...).

    Returns
    -------
    card : dict
        The model card written.

    Examples
    --------
    >>> import tempfile, os
    >>> import numpy as np
    >>> from ase.build import bulk
    >>> from skcgcnn import CGCNNRegressor, EnsembleRegressor
    >>> from skcgcnn.ensemble import load_ensemble, save_ensemble
    >>> a = np.linspace(3.3, 3.9, 40)
    >>> X, y = [bulk("Cu", a=v) for v in a], a ** 3 / 4
    >>> model = EnsembleRegressor(CGCNNRegressor(max_epochs=2, batch_size=16),
    ...                           n_estimators=3, random_state=0).fit(X, y)
    >>> folder = tempfile.mkdtemp()
    >>> card = save_ensemble(model, os.path.join(folder, "cu.pt"), units="angstrom^3")
    >>> sorted(os.listdir(folder)), card["ensemble"]["n_estimators"]
    (['cu.json', 'cu.pt'], 3)
    >>> again = load_ensemble(os.path.join(folder, "cu.pt"))
    >>> bool(np.allclose(again.predict(X), model.predict(X)))
    True
    """
    from .estimators import CGCNNRegressor
    from .io import save_json, save_state_dict
    from .pretrained import _network_card, _refuse_existing, model_paths, training_card

    check_is_fitted(ensemble, "estimators_")
    members = ensemble.estimators_
    if not all(isinstance(m, CGCNNRegressor) for m in members):
        raise TypeError("save_ensemble saves ensembles of CGCNNRegressor or "
                        "TransferCGCNNRegressor members; pickle other ensembles")
    weights, card_path = model_paths(path)
    _refuse_existing((weights, card_path), overwrite)
    first = members[0]
    net = _network_card(first, weights.stem)
    if any(m.module_.hparams != first.module_.hparams for m in members):
        raise ValueError("the members have different architectures")
    sources = [training_card(m).get("pretrained") for m in members]
    state = {f"member_{i}.{k}": v.detach().cpu()
             for i, m in enumerate(members) for k, v in m.module_.state_dict().items()}
    full = {
        **net,
        **training_card(first),  # the first member's; the others differ in their seed
        "ensemble": {
            "n_estimators": len(members),
            "member_class": type(first).__name__,
            "seeds": [int(s) for s in ensemble.seeds_],
            "calibrate": bool(ensemble.calibrate),
            "confidence_level": float(ensemble.confidence_level),
            "std_scale": float(ensemble.std_scale_),
            "in_spread_ratio": float(ensemble.in_spread_ratio_),
            "conformity_scores": [float(v) for v in ensemble.conformity_scores_],
            # a multi-source ensemble: each member's source model
            **({"member_pretrained": sources} if any(sources) else {}),
        },
        **card,
    }
    save_state_dict(state, weights)
    save_json(full, card_path)
    return full


def is_saved_ensemble(name_or_path):
    """Whether a saved model (``.pt`` with its ``.json`` card) is an ensemble.

    Examples
    --------
    >>> from skcgcnn.ensemble import is_saved_ensemble
    >>> from skcgcnn.pretrained import list_pretrained
    >>> any(is_saved_ensemble(name) for name in list_pretrained())
    False
    """
    from .modelfile import read_card

    return "ensemble" in read_card(name_or_path)[1]


def load_ensemble(name_or_path, device="cpu", conv_dtype="auto"):
    """A fitted :class:`EnsembleRegressor` rebuilt from :func:`save_ensemble`'s files.

    Each member is rebuilt as :func:`skcgcnn.pretrained.load_estimator`
    rebuilds a single model (:func:`skcgcnn.pretrained.estimator_from_state`:
    the same checks of the card, the element features and the architecture).

    Parameters
    ----------
    name_or_path : str or path-like
        The ``.pt`` file (its ``.json`` card beside it).
    device : str, default="cpu"
        Torch device of the members.
    conv_dtype : {"auto", "float32", "bfloat16"}, default="auto"
        Precision of the members' convolutions, as in
        :func:`~skcgcnn.pretrained.load_estimator`.

    Returns
    -------
    ensemble : EnsembleRegressor
        Predicts, with its calibrated std and intervals, as before saving;
        ``card_`` holds the model card.

    Raises
    ------
    ValueError
        A card without an ensemble block, element features other than this
        installation's, or a file that is unsafe, corrupt or of another
        architecture.

    See Also
    --------
    save_ensemble : writes the files; its example loads them back.
    """
    from .io import load_state_dict
    from .modelfile import read_card
    from .pretrained import estimator_from_state

    weights, card = read_card(name_or_path)
    where = str(weights)
    block = card.get("ensemble")
    if not isinstance(block, dict):
        raise ValueError(f"{where!r} is not an ensemble (its card has no 'ensemble' "
                         "block); load it with skcgcnn.pretrained.load_estimator")
    try:
        n = int(block["n_estimators"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"model card of {where!r} is not a valid ensemble card: "
                         f"{exc}") from exc
    state = load_state_dict(weights)
    members = []
    for i in range(n):
        prefix = f"member_{i}."
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        members.append(estimator_from_state(card, sub, f"{where} (member {i})", device,
                                            conv_dtype))
    if len(state) != sum(len(m.module_.state_dict()) for m in members):
        raise ValueError(f"{where!r} holds more tensors than its {n} members")
    model = EnsembleRegressor(clone(members[0]), n_estimators=n,
                              confidence_level=block.get("confidence_level", 0.9),
                              calibrate=block.get("calibrate", True))
    model.estimators_ = members
    model.seeds_ = np.asarray(block.get("seeds", range(n)), dtype=np.int64)
    model.std_scale_ = float(block.get("std_scale", 1.0))
    model.in_spread_ratio_ = float(block.get("in_spread_ratio", 1.0))
    model.conformity_scores_ = np.asarray(block.get("conformity_scores", []), dtype=np.float64)
    model.card_ = card
    return model


class EnsembleClassifier(ClassifierMixin, MetaEstimatorMixin, BaseEstimator):
    """Seeds of one classifier, their class probabilities averaged (soft voting).

    The classification counterpart of :class:`EnsembleRegressor`'s members:
    ``n_estimators`` clones of ``estimator`` that differ only in their
    ``random_state`` (initialisation, minibatch order and validation split for
    a :class:`~skcgcnn.CGCNNClassifier`) are fitted on the same crystals (the
    graphs are built once), in parallel with ``n_jobs``; ``predict_proba`` is
    the mean of their probabilities. Averaging seeds lowers the variance that
    dominates at a few hundred crystals; no calibration is done.

    Parameters
    ----------
    estimator : classifier, default=None
        The member, with a ``random_state`` parameter, e.g.
        :class:`~skcgcnn.TransferCGCNNClassifier`; ``None``: a
        :class:`~skcgcnn.CGCNNClassifier` at its defaults. Cloned, never
        fitted itself.
    n_estimators : int, default=5
        Members (at least 2).
    n_jobs : int, optional
        Members fitted in parallel (joblib), the torch threads shared among them.
    random_state : int, RandomState or None, default=None
        Draws the members' seeds.

    Attributes
    ----------
    estimators_ : list of classifiers
        The fitted members.
    seeds_ : ndarray of shape (n_estimators,)
    classes_ : ndarray of shape (n_classes,)

    Examples
    --------
    >>> import numpy as np
    >>> from ase.build import bulk
    >>> from skcgcnn import CGCNNClassifier
    >>> from skcgcnn.ensemble import EnsembleClassifier
    >>> X = [bulk(s, a=a) for s in ("Cu", "Ni") for a in np.linspace(3.4, 3.7, 4)]
    >>> y = ["Cu"] * 4 + ["Ni"] * 4
    >>> model = EnsembleClassifier(CGCNNClassifier(max_epochs=2, batch_size=4),
    ...                            n_estimators=2, random_state=0).fit(X, y)
    >>> model.predict_proba(X[:3]).shape, len(model.estimators_)
    ((3, 2), 2)
    """

    def __init__(self, estimator=None, n_estimators=5, n_jobs=None, random_state=None):
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _template(self):
        if self.estimator is None:
            from .classifiers import CGCNNClassifier

            return CGCNNClassifier()
        est = self.estimator
        if not (hasattr(est, "fit") and hasattr(est, "predict_proba")
                and hasattr(est, "get_params")) or not is_classifier(est):
            raise TypeError(f"estimator must be a scikit-learn classifier with predict_proba, "
                            f"got {type(est).__name__}")
        if "random_state" not in est.get_params(deep=False):
            raise TypeError(f"{type(est).__name__} has no random_state parameter, so its "
                            "clones would all be the same model and cannot be ensembled")
        return est

    def fit(self, X, y):
        """Fit ``n_estimators`` seeds of the classifier on crystals ``X`` and labels ``y``.

        Parameters
        ----------
        X : sequence of CrystalGraph, Structure, ase.Atoms or paths
            (or whatever the member classifier takes).
        y : array-like of shape (n_crystals,)
            Class labels.

        Returns
        -------
        self : EnsembleClassifier
        """
        n = self.n_estimators
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
            raise ValueError(f"n_estimators must be an int of at least 2, got {n!r}")
        template = self._template()
        rng = check_random_state(self.random_state)
        self.seeds_ = rng.randint(np.iinfo(np.int32).max, size=n)
        members = [clone(template).set_params(random_state=int(s)) for s in self.seeds_]
        Xf = clone(template)._graphs(X) if hasattr(template, "_graphs") else X
        workers = min(effective_n_jobs(self.n_jobs), n)
        threads = max(1, cpu_count() // workers) if workers > 1 else None
        with _quiet_worker_restarts():
            self.estimators_ = Parallel(n_jobs=workers)(
                delayed(_fit_classifier)(m, Xf, y, threads) for m in members)
        self.classes_ = self.estimators_[0].classes_
        return self

    def predict_proba(self, X):
        """Mean of the members' class probabilities, columns in ``classes_`` order.

        Parameters
        ----------
        X : sequence of CrystalGraph, Structure, ase.Atoms or paths

        Returns
        -------
        proba : ndarray of shape (n_crystals, n_classes)
        """
        check_is_fitted(self, "estimators_")
        first = self.estimators_[0]
        Xf = first._graphs(X) if hasattr(first, "_graphs") else X
        return np.mean([m.predict_proba(Xf) for m in self.estimators_], axis=0)

    def predict(self, X):
        """The class of the highest mean probability.

        Parameters
        ----------
        X : sequence of CrystalGraph, Structure, ase.Atoms or paths

        Returns
        -------
        labels : ndarray of shape (n_crystals,)
        """
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]


def _fit_classifier(member, X, y, n_threads):
    with _threads(n_threads):
        return member.fit(X, y)
