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
from sklearn.utils import _safe_indexing, check_random_state
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


@contextlib.contextmanager
def _quiet_worker_restarts():
    """Silence loky's note when it replaces a worker whose memory grew (a torch fit grows it
    by more than loky's 300 MB leak threshold); the worker's jobs run on a fresh one."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="A worker stopped while some jobs were given")
        yield


class _MemberSink:
    """A skorch ``PrintLog`` sink that starts every line with ``[member i] ``, so that
    the epoch tables of members fitted in parallel, whose lines interleave, say whose
    line is whose. Picklable, for joblib's workers."""

    def __init__(self, sink, prefix):
        self.sink, self.prefix = sink, prefix

    def __call__(self, text=""):
        self.sink("\n".join(self.prefix + line for line in str(text).split("\n")))


def _label_output(member, index):
    """``member``, whose printed epoch table (when verbose) is labelled ``[member i] ``."""
    if getattr(member, "verbose", 0) and hasattr(member, "get_default_callbacks"):
        sink = getattr(member, "callbacks__print_log__sink", print)
        if isinstance(sink, _MemberSink):
            sink = sink.sink
        member.set_params(callbacks__print_log__sink=_MemberSink(sink, f"[member {index + 1}] "))
    return member


def _fit_member(member, X_fit, y_fit, X, n_threads):
    """Fit one member on ``X_fit``; return it and its predictions on every crystal of ``X``
    (``None`` when ``X`` is ``None``)."""
    with _threads(n_threads):
        member.fit(X_fit, y_fit)
        pred = None if X is None else np.asarray(member.predict(X), dtype=np.float64)
    return member, pred


def _member_output(member, X, method, n_threads):
    with _threads(n_threads):
        return np.asarray(getattr(member, method)(X), dtype=np.float64)


class _SeedEnsemble(MetaEstimatorMixin, BaseEstimator):
    """What both ensembles do: clone ``n_estimators`` members from ``estimator`` (or a
    list of estimators, in turn), seed them from ``random_state``, build the graphs
    once, and fit and query the members in parallel rounds."""

    #: What ``estimator`` must be ("regressor" or "classifier"), the test of it, and the
    #: method whose outputs the ensemble averages.
    _member_kind = ""
    _is_member_kind = None
    _member_method = ""

    def _default_member(self):
        raise NotImplementedError

    def _member_templates(self):
        """The estimators the members are cloned from, in turn (checked)."""
        if self.estimator is None:
            return [self._default_member()]
        if not isinstance(self.estimator, (list, tuple)):
            return [self._check_member(self.estimator)]
        if not self.estimator:
            raise ValueError(f"estimator is an empty list: give at least one {self._member_kind}")
        if self.n_estimators < len(self.estimator):
            raise ValueError(f"n_estimators={self.n_estimators} is fewer than the "
                             f"{len(self.estimator)} estimators given: each needs a member")
        return [self._check_member(est) for est in self.estimator]

    def _check_member(self, est):
        if isinstance(est, _SeedEnsemble):
            raise TypeError(f"estimator is an {type(est).__name__}: ensembles cannot be "
                            "nested; raise n_estimators instead")
        method = self._member_method
        if not (hasattr(est, "fit") and hasattr(est, method) and hasattr(est, "get_params")):
            raise TypeError(f"estimator must be a scikit-learn {self._member_kind} with fit, "
                            f"{method} and get_params, got {type(est).__name__}")
        if not self._is_member_kind(est):
            raise TypeError(f"estimator must be a {self._member_kind}, got {type(est).__name__}")
        if "random_state" not in est.get_params(deep=False):
            raise TypeError(f"{type(est).__name__} has no random_state parameter, so its "
                            "clones would all be the same model and cannot be ensembled")
        return est

    def _check_n_estimators(self):
        n = self.n_estimators
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
            raise ValueError(f"n_estimators must be an int of at least 2 (a standard deviation "
                             f"needs two members), got {n!r}")

    def _members(self, templates, rng):
        """Unfitted members: clones of ``templates`` in turn, seeds drawn from ``rng``
        (set ``seeds_``), their verbose epoch tables labelled. A member left at
        ``validation_fraction="auto"`` holds out :data:`skcgcnn.estimators.HOLD_OUT`:
        members that choose their epochs on it give sharper intervals
        (``benchmarks/ensemble_hold_out.py``)."""
        from .estimators import HOLD_OUT

        self.seeds_ = rng.randint(np.iinfo(np.int32).max, size=self.n_estimators)
        members = []
        for i, seed in enumerate(self.seeds_):
            member = clone(templates[i % len(templates)]).set_params(random_state=int(seed))
            if member.get_params(deep=False).get("validation_fraction") == "auto":
                member.set_params(validation_fraction=HOLD_OUT)
            members.append(_label_output(member, i))
        return members

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

    def _features(self, template, X, y=None):
        """Featurize ``X`` once for every member (graphs for a skcgcnn network), and check
        it against ``y``'s length when given (each member checks that it takes these)."""
        Xf = clone(template)._graphs(X) if hasattr(template, "_graphs") else X
        if y is not None and len(Xf) != len(y):
            raise ValueError(f"X and y have different lengths: {len(Xf)} crystals, "
                             f"{len(y)} targets")
        return Xf

    def _fit_members(self, members, X_fit, y_fit, X_pred=None):
        """Fit ``members`` in parallel rounds; return ``[(member, predictions on X_pred)]``."""
        out = []
        for indices, workers, threads in self._rounds(len(members)):
            with _quiet_worker_restarts():
                out += Parallel(n_jobs=workers)(
                    delayed(_fit_member)(members[i], X_fit, y_fit, X_pred, threads)
                    for i in indices)
        return out

    def _member_outputs(self, X):
        """``predict`` (``predict_proba`` for classifiers) of every fitted member on ``X``,
        stacked on axis 0."""
        check_is_fitted(self, "estimators_")
        method = self._member_method
        Xf = self._features(self.estimators_[0], X)
        workers, threads = self._workers(len(self.estimators_))
        if workers == 1:
            return np.stack([_member_output(m, Xf, method, None) for m in self.estimators_])
        with _quiet_worker_restarts():
            return np.stack(Parallel(n_jobs=workers)(
                delayed(_member_output)(m, Xf, method, threads) for m in self.estimators_))


def _eps():
    from mapie.conformity_scores import StdConformityScore

    return float(StdConformityScore().eps)


def _mean_std(preds):
    """Mean and standard deviation (ddof=1) over members, axis 0; exactly 0 for equal members."""
    dev = preds - preds[0]
    shift = dev.mean(axis=0)
    return preds[0] + shift, (dev - shift).std(axis=0, ddof=1)


#: Slack for floating point in ``ceil((n + 1) * level)`` (``(9 + 1) * 0.7`` is 7.000000000000001).
_TOL = 1e-9


def _min_calibration(confidence_level):
    """Fewest calibration scores whose conformal quantile at ``confidence_level`` is finite."""
    return int(np.ceil(confidence_level / (1 - confidence_level) - _TOL))


def _conformal_quantile(scores, confidence_level):
    """Finite-sample conformal quantile: the ``ceil((n + 1) level)``-th smallest score."""
    n = len(scores)
    k = int(np.ceil((n + 1) * confidence_level - _TOL))
    if k > n:
        raise ValueError(f"{n} calibration crystals are too few for a {confidence_level:.0%} "
                         f"interval: at least {_min_calibration(confidence_level)} are needed "
                         "(a larger calibration_fraction)")
    return float(np.sort(scores)[k - 1])


class EnsembleRegressor(RegressorMixin, _SeedEnsemble):
    """Mean of several seeds of a network, with split-conformal prediction intervals.

    ``n_estimators`` clones of ``estimator`` are fitted on the same data,
    each with its own seed (weight initialisation, minibatch shuffling and the
    validation split that picks its best epoch). ``estimator`` may also be a
    list, e.g. networks fine-tuned from different pretrained models: the
    members are then clones of its entries in turn. The prediction is their
    mean; its uncertainty is their spread, calibrated on crystals that no
    member saw. Members at ``validation_fraction="auto"`` (the transfer
    default) hold out a fifth to choose their epochs: members that all train
    on every crystal agree more on them, and gave 36 % wider 90 % intervals
    at the median in ``benchmarks/ensemble_hold_out.py``.

    Calibration (split conformal; Vovk et al. 2005, Lei et al. 2018): before
    any member is fitted, ``calibration_fraction`` of the crystals (at random,
    seeded by ``random_state``) are set aside. The members are fitted on the
    others, each choosing its best epoch on its own validation split of them.
    On each calibration crystal the ensemble computes what it computes on a
    new crystal, the members' mean ``mean`` and standard deviation ``sigma``
    (ddof=1), and the score ``|y - mean| / (sigma + beta)`` (MAPIE's
    ``StdConformityScore`` of the scale ``sigma + beta``). ``beta``
    (``spread_offset_``) is the median of ``sigma`` over the crystals the
    members were fitted on, fixed before any calibration crystal is looked at:
    it keeps a spread that happens to be tiny (3 members give a spread with 2
    degrees of freedom) from blowing a score up. With ``q`` the
    ``ceil((n + 1) level)``-th smallest of the ``n`` scores, the interval is
    ``mean ± q (sigma + beta)``.

    **Guarantee.** If the calibration crystals and a new crystal are
    exchangeable (for instance all drawn at random from one data set), the
    interval at ``level`` contains the new crystal's target with probability
    at least ``level``, and at most ``level + 1 / (n + 1)`` when no two scores
    tie, whatever the members and the distribution of the data. The
    probability is over the draw of the calibration crystals and the new
    crystal, for the members as fitted; it is coverage on average over
    crystals, not for each crystal, and it says nothing about crystals from
    another distribution. The user guide's "Ensembles and uncertainty" says
    what it costs and what was measured.

    ``predict(X, return_std=True)`` returns ``std = (sigma + beta) q / z``,
    ``z`` the normal quantile (1.645 for 90 %), so that ``mean ± z * std``
    is the interval at ``confidence_level``; :meth:`predict_interval` gives
    the interval at any level.

    Structures are featurized once, and the members are fitted in parallel
    (``n_jobs``), each worker with ``cpu_count() // workers`` torch threads;
    members left over when ``n_estimators`` is not a multiple of the workers
    share all the threads in a last round.

    Parameters
    ----------
    estimator : regressor or list of regressors, default=None
        The member, e.g. :class:`~skcgcnn.CGCNNRegressor` (the default) or
        :class:`~skcgcnn.TransferCGCNNRegressor`; cloned, never fitted
        itself. It needs a ``random_state`` parameter. A list: member ``i`` is
        a clone of ``estimator[i % len(estimator)]`` (a multi-source
        ensemble, members fine-tuned from several pretrained models); its
        entries must take the same crystal graphs.
    n_estimators : int, default=5
        Members, at least 2, and at least one per entry of a list
        ``estimator``. The guarantee holds for any number; more members give
        a better mean and a spread that tells crystals apart better, hence
        narrower intervals.
    confidence_level : float, default=0.9
        Level at which ``mean ± z * std`` covers new crystals, and the
        default level of :meth:`predict_interval`.
    calibrate : bool, default=True
        ``False``: no crystal is set aside, the members are fitted on all of
        them, ``std`` is the members' raw standard deviation (ddof=1) and
        there are no intervals.
    calibration_fraction : float, default=0.2
        Fraction of the crystals (rounded up) set aside for calibration: no
        member trains on them or chooses its best epoch on them. A level
        needs at least ``level / (1 - level)`` of them (9 for 90 %, 4 for
        80 %); more make the coverage of one fitted ensemble vary less
        around the level (with 60, the 90 % intervals of one ensemble cover
        90 ± 4 % of new crystals, one standard deviation).
    n_jobs : int or None, default=None
        Members fitted (and predicted) in parallel, joblib semantics
        (``-1``: all cores).
    random_state : int, RandomState or None, default=None
        Seeds the members' seeds (``seeds_``) and the calibration split. An
        int makes the ensemble reproducible under the members' own terms (for
        skcgcnn networks: the same machine, torch build and torch threads per
        member; ``n_jobs`` sets the threads of each parallel member, so
        another ``n_jobs`` can give other results).

    Attributes
    ----------
    estimators_ : list of fitted estimators
        The members.
    seeds_ : ndarray of int
        Each member's ``random_state``.
    calibration_indices_ : ndarray of int
        Positions in ``X`` of the calibration crystals (empty without
        calibration); the members were fitted on the others, in order.
    calibration_prediction_ : ndarray of shape (n_calibration,)
        The ensemble's mean prediction on them: out of sample, so its error
        there estimates the error on new crystals.
    spread_offset_ : float
        ``beta``, the median of the members' standard deviation over the
        crystals they were fitted on, in the target's units (0 without
        calibration).
    conformity_scores_ : ndarray of shape (n_calibration,)
        ``|y - mean| / (sigma + beta)`` on the calibration crystals.
    std_scale_ : float
        ``q / z`` at ``confidence_level``: the calibrated std is
        ``(sigma + beta) * std_scale_`` (1.0 and ``beta = 0`` without
        calibration).
    target_range_ : tuple of float
        Lowest and highest training target; :meth:`predict_interval` warns
        about intervals wider than this span.

    Examples
    --------
    >>> import numpy as np
    >>> from ase.build import bulk
    >>> from skcgcnn import CGCNNRegressor, EnsembleRegressor
    >>> a = np.linspace(3.3, 3.9, 40)
    >>> X = [bulk("Cu", a=v) for v in a]
    >>> y = a ** 3 / 4  # volume per atom, angstrom^3
    >>> model = EnsembleRegressor(CGCNNRegressor(max_epochs=3, batch_size=16),
    ...                           n_estimators=3, calibration_fraction=0.25,
    ...                           random_state=0).fit(X, y)
    >>> len(model.calibration_indices_)  # 10 of 40 crystals calibrate, 30 fit the members
    10
    >>> mean, std = model.predict(X[:2], return_std=True)
    >>> mean.shape, std.shape, bool((std > 0).all())
    ((2,), (2,), True)
    >>> model.predict_interval(X[:2]).shape  # lower, upper
    (2, 2)
    """

    def __init__(self, estimator=None, n_estimators=5, confidence_level=0.9, calibrate=True,
                 calibration_fraction=0.2, n_jobs=None, random_state=None):
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.confidence_level = confidence_level
        self.calibrate = calibrate
        self.calibration_fraction = calibration_fraction
        self.n_jobs = n_jobs
        self.random_state = random_state

    _member_kind = "regressor"
    _is_member_kind = staticmethod(is_regressor)
    _member_method = "predict"

    def _default_member(self):
        from .estimators import CGCNNRegressor

        return CGCNNRegressor()

    def _check_params(self):
        self._check_n_estimators()
        level = self.confidence_level
        if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
            raise ValueError(f"confidence_level must be a float strictly between 0 and 1, "
                             f"got {level!r}")
        frac = self.calibration_fraction
        if self.calibrate and (isinstance(frac, bool) or not isinstance(frac, numbers.Real)
                               or not 0 < frac < 1):
            raise ValueError(f"calibration_fraction must be a float strictly between 0 and 1, "
                             f"got {frac!r}")

    # --------------------------------------------------------------- fitting
    def _calibration_split(self, n, rng):
        """(fitting, calibration) positions of ``n`` crystals; all fitting without calibration."""
        if not self.calibrate:
            return np.arange(n), np.empty(0, dtype=np.int64)
        n_cal = int(np.ceil(self.calibration_fraction * n - _TOL))
        need = _min_calibration(self.confidence_level)
        if n_cal < need:
            raise ValueError(
                f"calibration_fraction={self.calibration_fraction} of {n} crystals sets aside "
                f"{n_cal} to calibrate, too few for a {self.confidence_level:.0%} interval: at "
                f"least {need} are needed (calibration_fraction >= {need / n:.2f}), or pass "
                "calibrate=False for the members' raw spread")
        if n - n_cal < 2:
            raise ValueError(f"calibration_fraction={self.calibration_fraction} leaves "
                             f"{n - n_cal} of {n} crystals to fit the members on")
        perm = rng.permutation(n)
        return np.sort(perm[n_cal:]), np.sort(perm[:n_cal])

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
        members = self._members(templates, rng)
        Xf = self._features(templates[0], X, y)
        fit, cal = self._calibration_split(len(y), rng)
        X_fit, y_fit = _safe_indexing(Xf, fit), y[fit]
        out = self._fit_members(members, X_fit, y_fit, Xf)
        self.estimators_ = [m for m, _ in out]
        self.target_range_ = (float(y.min()), float(y.max()))
        self._calibrate(y, np.stack([p for _, p in out]), fit, cal)
        return self

    def _calibrate(self, y, preds, fit, cal):
        """Set the calibration from every member's predictions ``preds`` on the crystals
        ``fit`` (fitted on) and ``cal`` (calibration: seen by no member) of targets ``y``."""
        from mapie.conformity_scores import StdConformityScore

        mean, sigma = _mean_std(preds)
        self.calibration_indices_ = np.asarray(cal, dtype=np.int64)
        self.calibration_prediction_ = mean[cal]
        self.spread_offset_ = 0.0
        self.std_scale_ = 1.0
        self.conformity_scores_ = np.empty(0)
        if not self.calibrate:
            return
        # fixed from the fitting crystals alone, so that the calibration scores and a new
        # crystal's score stay exchangeable
        self.spread_offset_ = float(np.median(sigma[fit]))
        self.conformity_scores_ = np.asarray(StdConformityScore().get_conformity_scores(
            y[cal], mean[cal], y_std=sigma[cal] + self.spread_offset_), dtype=np.float64)
        q = _conformal_quantile(self.conformity_scores_, self.confidence_level)
        self.std_scale_ = q / norm.ppf(0.5 + self.confidence_level / 2)

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
        return self._member_outputs(X)

    def _scale(self, sigma):
        """The score's scale ``sigma + beta`` (floored as StdConformityScore floors it)."""
        return np.maximum(sigma + self.spread_offset_, _eps())

    def predict(self, X, return_std=False):
        """Mean prediction of the members, and optionally its calibrated std.

        Parameters
        ----------
        X : sequence of CrystalGraph, Structure, ase.Atoms or paths
        return_std : bool, default=False
            Also return the standard deviation: ``(sigma + beta) * std_scale_``,
            ``sigma`` the members' spread, so that ``mean ± z * std`` (``z``
            the normal quantile) is the conformal interval at
            ``confidence_level`` (the raw spread with ``calibrate=False``).

        Returns
        -------
        y_pred : ndarray of shape (n_crystals,)
        y_std : ndarray of shape (n_crystals,)
            Only with ``return_std=True``, in the target's units.
        """
        mean, sigma = _mean_std(self.predict_members(X))
        if not return_std:
            return mean
        if not self.calibrate:
            return mean, sigma
        return mean, self._scale(sigma) * self.std_scale_

    def predict_interval(self, X, confidence_level=None):
        """Split-conformal prediction intervals.

        Parameters
        ----------
        X : sequence of CrystalGraph, Structure, ase.Atoms or paths
        confidence_level : float, optional
            Fraction of new crystals the intervals should cover (default:
            ``self.confidence_level``). Needs ``calibrate=True``.

        Returns
        -------
        bounds : ndarray of shape (n_crystals, 2)
            Lower and upper bounds, ``mean ∓ q * (sigma + beta)`` with ``q``
            the conformal quantile of the calibration scores at that level.

        Warns
        -----
        UserWarning
            When some intervals are wider than the span of the training
            targets: the members disagree on those crystals far more than on
            the ones they were fitted on, as they do on crystals unlike the
            training data.
        """
        check_is_fitted(self, "estimators_")
        if not self.calibrate:
            raise ValueError("predict_interval needs a calibrated ensemble (calibrate=True)")
        level = self.confidence_level if confidence_level is None else confidence_level
        if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
            raise ValueError(f"confidence_level must be a float strictly between 0 and 1, "
                             f"got {level!r}")
        mean, sigma = _mean_std(self.predict_members(X))
        half = _conformal_quantile(self.conformity_scores_, level) * self._scale(sigma)
        self._warn_wide(2 * half, sigma)
        return np.column_stack([mean - half, mean + half])

    def _warn_wide(self, width, sigma):
        span = np.ptp(getattr(self, "target_range_", None) or np.nan)
        wide = width > span  # False where the span is unknown (NaN)
        if wide.any():
            warnings.warn(
                f"{int(wide.sum())} of {len(width)} intervals are wider than the span of the "
                f"training targets ({span:.4g}): the members disagree on those crystals (a "
                f"spread of up to {sigma[wide].max():.4g}, against a median of "
                f"{self.spread_offset_:.4g} on the crystals they were fitted on), as they do on "
                "crystals unlike the training data: predictions there deserve little trust",
                UserWarning, stacklevel=3)


# ------------------------------------------------------------------ model files
def save_ensemble(ensemble, path, *, overwrite=False, **card):
    """Save a fitted ensemble of CGCNNs as one state dict and one model card.

    Writes ``<path>.pt``, the members' state dicts under the prefixes
    ``member_0.``, ``member_1.``, ..., and ``<path>.json``, the card of
    :func:`skcgcnn.pretrained.save_pretrained` (architecture, featurizer,
    element-feature fingerprint) with an ``ensemble`` block: the members'
    seeds, the calibration (``confidence_level``, ``std_scale``,
    ``spread_offset`` and the calibration crystals' ``conformity_scores``). Both files are written atomically, and
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
    >>> model = EnsembleRegressor(CGCNNRegressor(max_epochs=2, batch_size=16), n_estimators=3,
    ...                           calibration_fraction=0.25, random_state=0).fit(X, y)
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
            "calibration_fraction": float(ensemble.calibration_fraction),
            # positions in the training data of the crystals no member saw
            "calibration_indices": [int(i) for i in ensemble.calibration_indices_],
            "std_scale": float(ensemble.std_scale_),
            "spread_offset": float(ensemble.spread_offset_),
            "conformity_scores": [float(v) for v in ensemble.conformity_scores_],
            "target_range": [float(v) for v in ensemble.target_range_],
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
                              calibrate=block.get("calibrate", True),
                              calibration_fraction=block.get("calibration_fraction", 0.2))
    model.estimators_ = members
    model.seeds_ = np.asarray(block.get("seeds", range(n)), dtype=np.int64)
    model.calibration_indices_ = np.asarray(block.get("calibration_indices", []), dtype=np.int64)
    model.std_scale_ = float(block.get("std_scale", 1.0))
    # a card written before the offset existed: its scores were computed without one
    model.spread_offset_ = float(block.get("spread_offset", 0.0))
    model.conformity_scores_ = np.asarray(block.get("conformity_scores", []), dtype=np.float64)
    model.target_range_ = tuple(block["target_range"]) if "target_range" in block else None
    model.card_ = card
    return model


class EnsembleClassifier(ClassifierMixin, _SeedEnsemble):
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
    estimator : classifier or list of classifiers, default=None
        The member, with a ``random_state`` parameter, e.g.
        :class:`~skcgcnn.TransferCGCNNClassifier`; ``None``: a
        :class:`~skcgcnn.CGCNNClassifier` at its defaults. Cloned, never
        fitted itself. A list: member ``i`` is a clone of
        ``estimator[i % len(estimator)]``, e.g. the top sources in turn,
        ``[TransferCGCNNClassifier(pretrained="auto", source_rank=r) for r in
        (0, 1)]``.
    n_estimators : int, default=5
        Members (at least 2, and at least one per entry of a list).
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

    _member_kind = "classifier"
    _is_member_kind = staticmethod(is_classifier)
    _member_method = "predict_proba"

    def _default_member(self):
        from .classifiers import CGCNNClassifier

        return CGCNNClassifier()

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
        self._check_n_estimators()
        templates = self._member_templates()
        members = self._members(templates, check_random_state(self.random_state))
        Xf = self._features(templates[0], X, y)
        self.estimators_ = [m for m, _ in self._fit_members(members, Xf, y)]
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
        return self._member_outputs(X).mean(axis=0)

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

