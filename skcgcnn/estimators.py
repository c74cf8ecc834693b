"""scikit-learn estimators around the CGCNN network (skorch-backed)."""

from __future__ import annotations

import contextlib
import inspect
import math
import warnings

import numpy as np
import torch
from skorch import NeuralNetRegressor
from skorch.callbacks import EarlyStopping, LRScheduler
from skorch.dataset import ValidSplit
from sklearn.base import is_classifier
from sklearn.utils import check_random_state

from .callbacks import (ColumnMAE, CosineLR, HeadFirst, L2SP, ReleaseMemory,
                        limit_onednn_caches)
from .data import GraphDataset, GraphLoader
from .embedding import crystal_embeddings
from .features import ELEMENT_TABLES, element_feature_fingerprint, resolve_element_features
from .graph import CrystalGraphTransformer, _as_list, _graph_array_or_none, as_graph_array
from .model import CGCNN, resolve_conv_dtype
from .modelfile import network_source, read_card
from .source_selection import (default_classification_probe, default_probe,
                               library_candidates, rank_sources, source_label)
from .target import TARGET_NORMALIZATIONS, denormalize, fit_target_stats, normalize

__all__ = ["CGCNNRegressor", "TransferCGCNNRegressor", "CGCNNMixin", "TransferMixin"]

#: Callbacks built from the estimator's own parameters at every fit; they are
#: left out of ``get_params`` so that those parameters stay the one source.
_DERIVED_CALLBACKS = ("lr_scheduler", "best_epoch", "release_memory", "column_mae", "l2_sp",
                      "lp_ft")
#: The fraction ``validation_fraction="auto"`` holds out when a validation loss is needed
#: (``n_iter_no_change``, a ``train_split`` of the user's, an ensemble's members): the
#: paper's 4:1.
HOLD_OUT = 0.2
#: Training sets from this many crystals on bound oneDNN's kernel caches first
#: (:func:`~skcgcnn.callbacks.limit_onednn_caches`): a bfloat16 epoch of 10,000 crystals
#: then took 11 % less CPU time and 0.5 GiB less memory; small fits recompile kernels of
#: recurring shapes and pay about 5 % (docs/performance.md).
BIG_FIT = 10_000


def _init_default(cls, name):
    """The default of constructor argument ``name`` in the first class of ``cls``'s MRO
    whose ``__init__`` declares it."""
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        param = inspect.signature(init).parameters.get(name) if init else None
        if param is not None and param.default is not inspect.Parameter.empty:
            return param.default
    return None


class CGCNNMixin:
    """What every CGCNN estimator shares, whatever its task.

    The network built from the estimator's parameters, its optimizer and
    default callbacks (learning-rate schedule, best-epoch restore, memory),
    the validation split seeded by ``random_state``, the graphs of the input
    (featurized or checked against the settings) and the pooled crystal
    vectors (:meth:`transform`). :class:`CGCNNRegressor` adds the target
    normalisation and regression loss; the classifiers of
    :mod:`skcgcnn.classifiers` add the classes. Not an estimator on its own:
    it is mixed into a skorch net class.
    """

    def _store_params(self, params, kwargs, criterion):
        """Store the shared constructor arguments and skorch's defaults for a CGCNN."""
        for name, value in params.items():
            setattr(self, name, value)
        kwargs.setdefault("module", CGCNN)
        kwargs.setdefault("criterion", criterion)
        kwargs.setdefault("optimizer", torch.optim.SGD)
        kwargs.setdefault("iterator_train", GraphLoader)
        kwargs.setdefault("iterator_valid", GraphLoader)
        kwargs.setdefault("dataset", GraphDataset)
        kwargs.setdefault("train_split", None)
        kwargs.setdefault("iterator_train__shuffle", True)
        return kwargs

    # ------------------------------------------------------------------ setup
    def _n_targets(self):
        """Outputs of the head: columns of the ``y`` being fitted (1 before a fit)."""
        return getattr(self, "n_outputs_", 1)

    def _module_kwargs(self):
        return dict(atom_fea_len=self.atom_fea_len, n_conv=self.n_conv,
                    h_fea_len=self.h_fea_len, n_h=self.n_h, radius=self.radius,
                    conv_dtype=resolve_conv_dtype(self.conv_dtype, self.device),
                    n_targets=self._n_targets(),
                    element_features=getattr(self, "element_features", None),
                    pooling=getattr(self, "pooling", "mean"))

    def initialize_module(self):
        """Build the :class:`~skcgcnn.model.CGCNN` from the estimator's parameters."""
        kwargs = {**self._module_kwargs(), **self.get_params_for("module")}
        self.module_ = self.initialized_instance(self.module, kwargs)
        return self

    def initialize_optimizer(self, triggered_directly=None):
        """The optimizer over the trainable parameters, built as skorch builds it.

        skorch's ``optimizer__*`` parameters apply, ``optimizer__param_groups``
        included: a list of ``(pattern, options)`` pairs, e.g.
        ``[("embedding.*", {"lr": 0.001}), ("convs.*", {"lr": 0.001})]``, gives
        the parameters whose names match ``pattern`` (fnmatch) their own
        learning rate. ``momentum`` and ``weight_decay`` go to every optimizer
        that takes them (an ``optimizer__momentum`` or
        ``optimizer__weight_decay`` wins); a value other than the default for
        an optimizer that does not take it raises ``ValueError``.
        """
        named = [(n, p) for n, p in self.module_.named_parameters() if p.requires_grad]
        args, kwargs = self.get_params_for_optimizer("optimizer", named)
        takes = inspect.signature(self.optimizer).parameters
        for name in ("momentum", "weight_decay"):
            value, default = getattr(self, name), _init_default(type(self), name)
            if name in kwargs:
                continue
            if name in takes:
                kwargs[name] = value
            elif value != default:
                raise ValueError(
                    f"{name}={value} was given, but the optimizer "
                    f"{getattr(self.optimizer, '__name__', self.optimizer)} takes no {name}; "
                    f"leave {name} at its default {default} or use an "
                    "optimizer that takes it")
        self.optimizer_ = self.optimizer(*args, **kwargs)
        return self

    def get_default_callbacks(self):
        callbacks = list(super().get_default_callbacks())
        if self.lr_schedule == "cosine":
            callbacks.append(("lr_scheduler", CosineLR(int(self.max_epochs))))
        elif self.lr_schedule != "step":
            raise ValueError(f"lr_schedule must be 'step' or 'cosine', got {self.lr_schedule!r}")
        elif self.lr_decay_epoch is not None:
            callbacks.append(("lr_scheduler", LRScheduler(
                policy=torch.optim.lr_scheduler.MultiStepLR,
                milestones=[int(self.lr_decay_epoch)], gamma=self.lr_decay)))
        if self._hold_out():
            # None: never stop (not max_epochs + 1, which a resumed run's misses can reach)
            patience = self.n_iter_no_change or math.inf
            callbacks.append(("best_epoch", EarlyStopping(
                monitor="valid_loss", patience=patience, threshold=0.0,
                threshold_mode="abs", load_best=True, sink=self._print)))
        callbacks.append(("release_memory", ReleaseMemory()))
        return callbacks + self._task_callbacks()

    def _task_callbacks(self):
        """Default callbacks of the task (regression or classification): none here."""
        return []

    def _print(self, text):
        """EarlyStopping's sink: the epoch table's sink (``callbacks__print_log__sink``)."""
        if self.verbose:
            getattr(self, "callbacks__print_log__sink", print)(text)

    def _get_params_callbacks(self, deep=True):
        params = super()._get_params_callbacks(deep=deep)
        return {k: v for k, v in params.items() if k.split("__")[1] not in _DERIVED_CALLBACKS}

    def get_split_datasets(self, X, y=None, **fit_params):
        """Hold out ``validation_fraction`` of the data, seeded by ``random_state``.

        Records the positions in ``X`` of the crystals held out in
        ``validation_indices_`` (``None`` when none is, or when a custom
        ``train_split`` returns a validation set that is not a subset of ``X``).
        """
        fraction = self._hold_out()
        if self.train_split is None and fraction:
            dataset = self.get_dataset(X, y)
            split = ValidSplit(float(fraction), random_state=self._seed())
            train, valid = split(dataset, y)
        else:
            train, valid = super().get_split_datasets(X, y, **fit_params)
        indices = getattr(valid, "indices", None)
        self.validation_indices_ = None if indices is None else np.asarray(indices, np.int64)
        return train, valid

    def _hold_out(self):
        """The fraction held out to choose the best epoch (None: none), with
        ``validation_fraction="auto"`` resolved: :data:`HOLD_OUT` when
        ``n_iter_no_change`` needs a validation loss or a ``train_split`` of the user's
        gives one (its best epoch is then restored), else None (train on all)."""
        fraction = self.validation_fraction
        if isinstance(fraction, str) and fraction == "auto":
            return HOLD_OUT if self.n_iter_no_change or self.train_split is not None else None
        if isinstance(fraction, str) or fraction is not None and not 0 <= float(fraction) < 1:
            raise ValueError(f"validation_fraction must be a float in [0, 1), None or 'auto', "
                             f"got {fraction!r}")
        return fraction or None

    def _seed(self):
        if self.random_state is None:
            return None
        if isinstance(self.random_state, (int, np.integer)):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(2**31 - 1))

    @contextlib.contextmanager
    def _seeded(self, seed):
        """Run a block with torch seeded by ``seed``; restore torch's and numpy's global
        random states after (a resumed :class:`~skcgcnn.callbacks.AtomicCheckpoint`
        sets both)."""
        if seed is None:
            yield
            return
        devices = [torch.cuda.current_device()] if str(self.device).startswith("cuda") else []
        numpy_state = np.random.get_state()
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                yield
        finally:
            np.random.set_state(numpy_state)

    # ------------------------------------------------------------------- data
    def _featurizer_settings(self):
        """(radius, max_num_nbr) the network expects its graphs built with."""
        return self.radius, self.max_num_nbr

    def _graphs(self, X):
        """Graphs from graphs or raw structures, checked against the settings."""
        radius, max_num_nbr = self._featurizer_settings()
        graphs = _graph_array_or_none(X)
        if graphs is None:
            graphs = CrystalGraphTransformer(
                radius=radius, max_num_nbr=max_num_nbr).transform(_as_list(X))
        if len(graphs) == 0:
            raise ValueError("X is empty: expected at least one crystal")
        for i, g in enumerate(graphs):
            if g.radius != radius or g.max_num_nbr != max_num_nbr:
                raise ValueError(
                    f"graph at index {i} was built with radius={g.radius}, "
                    f"max_num_nbr={g.max_num_nbr}, but this model uses radius={radius}, "
                    f"max_num_nbr={max_num_nbr}; build the graphs with the same settings")
        self._check_elements(graphs)
        return graphs

    def _check_elements(self, graphs):
        """Raise for an element that a custom ``element_features`` table has no row for.

        skcgcnn's and the original CGCNN's tables cover Z = 1 to 100 (larger
        Z is refused when the graphs are built); a file or an array may not,
        and its all-zero row would silently stand for the element.
        """
        spec = getattr(self, "element_features", None)
        if spec is None or (isinstance(spec, str) and spec in ELEMENT_TABLES):
            return
        if getattr(self, "initialized_", False) and hasattr(self, "module_"):
            table = self.module_.atom_features.cpu().numpy()
        else:
            table = resolve_element_features(spec)[0]
        missing = ~table.any(axis=1)
        for i, g in enumerate(graphs):
            bad = np.unique(g.numbers[missing[g.numbers.astype(np.int64)]])
            if len(bad):
                raise ValueError(
                    f"crystal at index {i} holds element(s) Z={bad.tolist()} that "
                    "element_features gives no features (an all-zero row); add them to the table")

    def check_data(self, X, y=None):
        """Data were checked in :meth:`fit`; skorch's own checks assume arrays."""

    def _fit_network(self, graphs, y, **fit_params):
        """skorch's ``fit`` on checked graphs and targets, seeded by ``random_state``."""
        # effective if no oneDNN operation has run in the process; the variables go after
        caches = (limit_onednn_caches() if len(graphs) >= BIG_FIT
                  else contextlib.nullcontext())
        with caches, self._seeded(self._seed()):
            super().fit(graphs, y, **fit_params)
        return self

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        """skorch's ``partial_fit``; when training raises, glibc's memory settings are
        restored all the same (:meth:`skcgcnn.callbacks.ReleaseMemory.give_back`)."""
        try:
            return super().partial_fit(X, y, classes, **fit_params)
        except BaseException:
            for _, cb in getattr(self, "callbacks_", []):
                if isinstance(cb, ReleaseMemory):
                    cb.give_back()
            raise

    def _warn_small_data(self, n):
        """Warn when one minibatch holds every training crystal (one step per epoch)."""
        n_train, fraction = n, self._hold_out()
        if self.train_split is None and fraction:
            n_train = n - int(np.ceil(float(fraction) * n))
        if isinstance(self.batch_size, (int, np.integer)) and 0 < n_train <= self.batch_size:
            warnings.warn(
                f"batch_size={self.batch_size} holds all {n_train} training crystals, so every "
                f"epoch is a single optimisation step and {self.max_epochs} epochs may not "
                f"converge; pass a smaller batch_size (about {max(4, n_train // 4)}, see the "
                "user guide's recommended settings for small data sets)", UserWarning,
                stacklevel=3)

    def transform(self, X):
        """Pooled crystal vectors of the fitted network (eq. 4), a learned descriptor.

        The same code as :class:`~skcgcnn.PretrainedEmbedding` with
        ``layer="pooled"`` (:func:`skcgcnn.embedding.crystal_embeddings`).

        Returns
        -------
        features : ndarray of shape (n_crystals, atom_fea_len)
        """
        self.check_is_fitted()
        self.module_.eval()
        return crystal_embeddings(self.module_, self._graphs(X), "pooled", self.batch_size,
                                  self.device)

    def site_contributions(self, X):
        """Each atom's contribution to the prediction of each crystal.

        Needs a network fitted with ``pooling="site"`` (Xie & Grossman's
        site-contribution model): its head maps every atom's vector to an
        output, and the prediction is the mean over the crystal's atoms. For a
        regressor the contributions are those outputs in the target's own
        units (the target normalisation inverted atom by atom), so their mean
        per crystal equals ``predict``'s value.

        Parameters
        ----------
        X : sequence of CrystalGraph, Structure, ase.Atoms or paths

        Returns
        -------
        contributions : list of ndarray
            One array per crystal, of shape (n_atoms,) or (n_atoms,
            n_targets), float64, in the order of the crystal's sites.

        Raises
        ------
        ValueError
            The network pools atom vectors (``pooling="mean"``), or its outputs
            are not an affine map of the target (``target_normalization="tanh"``).

        Examples
        --------
        >>> import numpy as np
        >>> from ase.build import bulk
        >>> from skcgcnn import CGCNNRegressor
        >>> X = [bulk("NaCl", "rocksalt", a=a) for a in np.linspace(5.4, 5.8, 8)]
        >>> y = np.linspace(5.4, 5.8, 8) ** 3 / 8  # volume per atom, angstrom^3
        >>> model = CGCNNRegressor(pooling="site", max_epochs=3, batch_size=4,
        ...                        random_state=0).fit(X, y)
        >>> na_cl = model.site_contributions(X[:1])[0]  # Na, then Cl
        >>> na_cl.shape, bool(np.isclose(na_cl.mean(), model.predict(X[:1])[0]))
        ((2,), True)
        """
        self.check_is_fitted()
        if self.module_.hparams.get("pooling") != "site":
            raise ValueError(
                "site_contributions needs a model fitted with pooling='site' (the head applied "
                f"to every atom, then averaged); this one has pooling="
                f"{self.module_.hparams.get('pooling')!r}, whose head sees only the averaged "
                "atom vectors")
        graphs = self._graphs(X)
        loader = GraphLoader(GraphDataset(graphs), batch_size=int(self.batch_size))
        training, parts = self.module_.training, []
        self.module_.eval()
        try:
            with torch.inference_mode():
                for Xb, _ in loader:
                    Xb = {k: v.to(self.device) for k, v in Xb.items()}
                    parts.append(self.module_.site_outputs(**Xb).double().cpu().numpy())
        finally:
            self.module_.train(training)
        sites = self._site_units(np.concatenate(parts))
        return np.split(sites, np.cumsum([g.n_atoms for g in graphs])[:-1])

    def _site_units(self, outputs):
        """Per-atom network outputs in the units of the contributions (here: as they are)."""
        return outputs



class CGCNNRegressor(CGCNNMixin, NeuralNetRegressor):
    """Crystal graph convolutional neural network regressor (CGCNN).

    A scikit-learn regressor built on skorch's ``NeuralNetRegressor``: it takes
    crystal graphs from :class:`~skcgcnn.CrystalGraphTransformer` (or raw
    structures, featurized with ``radius`` and ``max_num_nbr``) and a 1-D
    target, and predicts in the target's own units. Defaults follow Lee &
    Asahi's Table S1: SGD with momentum, learning rate 0.01 decayed by 0.1 at
    epoch 100, minibatch 256, mean-absolute-error loss, and the epoch with the
    lowest validation loss restored at the end.

    Parameters
    ----------
    atom_fea_len : int, default=64
        Length of the atom vectors in the convolutions.
    n_conv : int, default=3
        Number of gated convolution layers.
    h_fea_len : int, default=128
        Length of the hidden fully connected layer(s) after pooling.
    n_h : int, default=1
        Number of hidden fully connected layers.
    conv_dtype : {"auto", "float32", "bfloat16"}, default="auto"
        Precision of the embedding and convolutions (pooling, head and the
        parameters stay float32). ``"bfloat16"`` trains 1.6 to 2.5 times
        faster on CPUs with bfloat16 instructions, at the same accuracy in our
        measurements (docs/performance.md). ``"auto"`` picks it on such a CPU
        and ``"float32"`` elsewhere (:func:`~skcgcnn.model.resolve_conv_dtype`);
        ``module_.conv_dtype`` tells which one a fitted model used. Pass
        ``"float32"`` for full precision everywhere.
    target_normalization : {"standard", "tanh", None}, default="standard"
        Target normalisation, fitted on the training targets: standardisation,
        the paper's tanh map (eq. 6), or none. "standard" is the default
        because it trains far better with the paper's optimiser: fitted on
        625 log10 K_VRH crystals for 150 epochs, the test MAE was 0.092 with
        "standard" and 0.295 with "tanh" (the mean predictor: 0.304;
        docs/results/target_normalization.json). The tanh map squeezes the
        targets into 0.5 ± 0.005 per standard deviation, while an L1 loss's
        gradient does not shrink with the targets, so SGD at lr 0.01
        overshoots by about 200 times.
    lr : float, default=0.01
        Initial learning rate of SGD.
    momentum : float, default=0.9
        SGD momentum.
    weight_decay : float, default=0.0
        L2 penalty of SGD.
    lr_decay_epoch : int or None, default=100
        Epoch at which the learning rate is multiplied by ``lr_decay``
        (``None``: constant learning rate). Used by ``lr_schedule="step"``.
    lr_decay : float, default=0.1
        Multiplicative learning-rate decay.
    lr_schedule : {"step", "cosine"}, default="step"
        ``"step"``: the paper's single decay at ``lr_decay_epoch``;
        ``"cosine"``: from ``lr`` down to zero over ``max_epochs`` along a
        half cosine (:class:`~skcgcnn.callbacks.CosineLR`; ``lr_decay_epoch``
        and ``lr_decay`` are then unused), which suits short runs such as
        fine-tuning.
    batch_size : int, default=256
        Crystals per minibatch.
    max_epochs : int, default=500
        Training epochs.
    validation_fraction : float, None or "auto", default=0.2
        Fraction of the training data held out (at random, seeded by
        ``random_state``) to choose the epoch with the lowest validation MAE,
        which is restored after training: the paper's 4:1 train:validation
        rule. Inside ``cross_val_score`` or ``GridSearchCV`` this split is
        taken from each training fold, never from the test fold. ``None`` or
        0 trains on everything and keeps the last epoch; ``"auto"`` does so
        unless ``n_iter_no_change`` or a ``train_split`` of yours needs the
        validation loss (then 0.2) or the estimator is an
        :class:`EnsembleRegressor`'s member (0.2).
    n_iter_no_change : int or None, default=None
        Stop when the validation loss has not improved for this many epochs
        (``None``: run all ``max_epochs``).
    radius : float, default=8.0
        Neighbour cutoff in angstrom, used to featurize raw structures and
        checked against given graphs; also the last Gaussian centre.
    max_num_nbr : int, default=12
        Neighbours per atom, used to featurize raw structures.
    random_state : int, RandomState or None, default=None
        Seeds weight initialisation, shuffling and the validation split; the
        global torch random state is left untouched. What an int guarantees:
        two fits on the same data give bit-identical predictions on the same
        machine (same CPU, hence the same ``conv_dtype="auto"`` precision), with
        the same number of torch threads (``torch.get_num_threads()``; the
        CLI's ``--threads``) and the same torch and skcgcnn versions. Another
        thread count sums the matrix products in another order: a default
        fine-tune of 625 K_VRH crystals with 2 threads instead of 1 moved its
        predictions by up to 6e-6 log10 GPa in float32, but by up to 0.15 in
        bfloat16 (``docs/results/thread_reproducibility.json``); so do another
        CPU, torch build or a GPU (user guide, "Reproducibility").
    device : str, default="cpu"
        Torch device, e.g. ``"cuda"``.
    verbose : int, default=0
        1 prints skorch's table of losses per epoch.
    element_features : None, "skcgcnn", "cgcnn", path or array-like, default=None
        The element table the atoms are described by
        (:func:`~skcgcnn.features.resolve_element_features`): ``None`` or
        ``"skcgcnn"``, skcgcnn's 91-column one-hot table computed from
        pymatgen; ``"cgcnn"``, the original CGCNN's ``atom_init.json`` (92
        columns, bundled under its MIT licence); the path of an
        ``atom_init.json`` of your own; or an array with row ``z`` for element
        ``z``. The table is saved with the weights and its name and
        fingerprint in the model card; an element whose row in a custom table
        is all zeros raises. The user guide shows how to build a table from
        pymatgen's element data.
    pooling : {"mean", "site"}, default="mean"
        ``"mean"``: average the atom vectors, then the head (the paper's eq. 4
        and 5). ``"site"``: the head on every atom, then the average of its
        outputs (Xie & Grossman's site contributions), which
        :meth:`site_contributions` returns per atom.
    **kwargs
        Any other skorch ``NeuralNet`` parameter (``callbacks``,
        ``iterator_train__num_workers``, ``warm_start``, ...).

    Attributes
    ----------
    module_ : CGCNN
        The fitted network; its buffers ``target_mean`` and ``target_scale``
        hold the normalisation statistics, ``atom_features`` the element table.
    history_ : skorch History
        Losses per epoch (``train_loss`` and ``valid_loss``, MAE of the
        normalised target).
    validation_indices_ : ndarray of int or None
        Positions in the ``X`` given to ``fit`` of the crystals held out to
        choose the best epoch (``None`` when none was held out).

    Examples
    --------
    >>> import numpy as np
    >>> from ase.build import bulk
    >>> from skcgcnn import CGCNNRegressor
    >>> X = [bulk("Cu", a=a) for a in np.linspace(3.4, 3.8, 8)]
    >>> y = np.linspace(3.4, 3.8, 8) ** 3 / 4  # volume per atom, angstrom^3
    >>> model = CGCNNRegressor(max_epochs=5, random_state=0).fit(X, y)
    >>> model.predict(X[:2]).shape
    (2,)
    """

    def __init__(self, atom_fea_len=64, n_conv=3, h_fea_len=128, n_h=1, conv_dtype="auto",
                 target_normalization="standard", lr=0.01, momentum=0.9, weight_decay=0.0,
                 lr_decay_epoch=100, lr_decay=0.1, lr_schedule="step", batch_size=256,
                 max_epochs=500,
                 validation_fraction=0.2, n_iter_no_change=None, radius=8.0,
                 max_num_nbr=12, random_state=None, device="cpu", verbose=0,
                 element_features=None, pooling="mean", **kwargs):
        kwargs = self._store_params(dict(
            atom_fea_len=atom_fea_len, n_conv=n_conv, h_fea_len=h_fea_len, n_h=n_h,
            conv_dtype=conv_dtype, target_normalization=target_normalization,
            momentum=momentum, weight_decay=weight_decay, lr_decay_epoch=lr_decay_epoch,
            lr_decay=lr_decay, lr_schedule=lr_schedule,
            validation_fraction=validation_fraction, n_iter_no_change=n_iter_no_change,
            radius=radius, max_num_nbr=max_num_nbr, random_state=random_state,
            element_features=element_features, pooling=pooling),
            kwargs, torch.nn.L1Loss)
        super().__init__(lr=lr, batch_size=batch_size, max_epochs=max_epochs,
                         device=device, verbose=verbose, **kwargs)

    def _task_callbacks(self):
        """Several targets: the validation MAE of each column."""
        return [("column_mae", ColumnMAE())] if self._n_targets() > 1 else []

    def _check_y(self, y, n):
        if y is None:
            raise ValueError("y is required: one target value per crystal")
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        if y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] == 0):
            raise ValueError(f"y must be 1-D (one target per crystal) or 2-D (one column per "
                             f"target), got shape {y.shape}")
        if len(y) != n:
            raise ValueError(f"X and y have different lengths: {n} crystals, {len(y)} targets")
        # several targets: NaN marks a missing label, masked in the loss
        bad = np.isinf(y) if y.ndim == 2 else ~np.isfinite(y)
        if bad.any():
            what = "infinite" if y.ndim == 2 else "NaN or infinite"
            first = np.argwhere(bad)[0]
            raise ValueError(f"y has {int(bad.sum())} {what} value(s), the first at "
                             f"index {tuple(int(i) for i in first) if y.ndim == 2 else int(first[0])}")
        if y.ndim == 2:
            empty = np.flatnonzero(~np.isfinite(y).any(axis=0))
            if len(empty):
                raise ValueError(f"y column(s) {empty.tolist()} have no finite value")
        return y

    # ---------------------------------------------------------------- fitting
    def fit(self, X, y, **fit_params):
        """Fit the network on crystals ``X`` and targets ``y``.

        Parameters
        ----------
        X : sequence of CrystalGraph, Structure, ase.Atoms or paths
        y : array-like of shape (n_crystals,) or (n_crystals, n_targets)
            Targets in their own units. A 1-D ``y`` must be finite; with
            several columns (a multi-property model, each column normalised
            on its own), NaN marks a missing label, left out of the loss.
        **fit_params
            Passed to skorch's ``fit``.

        Returns
        -------
        self : CGCNNRegressor
        """
        if self.target_normalization not in TARGET_NORMALIZATIONS:
            raise ValueError(f"target_normalization must be one of {TARGET_NORMALIZATIONS}, "
                             f"got {self.target_normalization!r}")
        graphs = self._graphs(X)
        y = self._check_y(y, len(graphs))
        self._warn_small_data(len(graphs))
        n_targets = 1 if y.ndim == 1 else y.shape[1]
        if self.warm_start and self.initialized_:  # skorch's fit keeps the module
            if n_targets != self.n_outputs_:
                raise ValueError(f"warm_start refit with {n_targets} target column(s), but the "
                                 f"network predicts {self.n_outputs_}")
            stats = self._target_stats()
        else:
            self.n_outputs_ = n_targets
            stats = fit_target_stats(y, self.target_normalization)
            self._pending_target_stats = stats  # set by initialize()
        y_norm = normalize(y, *stats, self.target_normalization).astype(np.float32)
        try:
            self._fit_network(graphs, y_norm, **fit_params)
        finally:
            self.__dict__.pop("_pending_target_stats", None)
        return self

    def initialize(self):
        """Initialise as skorch does, then set the target statistics :meth:`fit` computed."""
        super().initialize()
        stats = self.__dict__.pop("_pending_target_stats", None)
        if stats is not None:
            self.module_.target_mean.copy_(torch.as_tensor(stats[0]))
            self.module_.target_scale.copy_(torch.as_tensor(stats[1]))
        return self

    def _target_stats(self):
        """(mean, scale) of the target normalisation: floats, or arrays per target."""
        m = self.module_
        return m.target_mean.cpu().numpy(), m.target_scale.cpu().numpy()

    def _denormalize(self, y):
        return denormalize(y, *self._target_stats(), self.target_normalization)

    def _site_units(self, outputs):
        """Per-atom outputs in the target's units: the normalisation's affine inverse.

        Only an affine map keeps the mean of the atoms' values equal to the
        crystal's prediction, so ``target_normalization="tanh"`` is refused.
        """
        if self.target_normalization == "tanh":
            raise ValueError(
                "site contributions in the target's units need an affine target "
                "normalisation ('standard' or None): with 'tanh' the mean of the atoms' "
                "values would not be the crystal's prediction")
        return self._denormalize(outputs)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """The criterion over the labelled entries: NaN targets (missing labels) are masked."""
        y_true = torch.as_tensor(y_true, device=y_pred.device)
        known = ~torch.isnan(y_true)
        if bool(known.all()):
            return super().get_loss(y_pred, y_true, X=X, training=training)
        if not bool(known.any()):  # a batch without any label: no gradient, zero loss
            return (y_pred * 0.0).sum()
        return super().get_loss(y_pred[known], y_true[known], X=X, training=training)

    def predict(self, X):
        """Predict targets in their own units.

        Parameters
        ----------
        X : sequence of CrystalGraph, Structure, ase.Atoms or paths

        Returns
        -------
        y_pred : ndarray of shape (n_crystals,) or (n_crystals, n_targets), float64
        """
        return self._denormalize(super().predict(self._graphs(X)))


class TransferMixin:
    """TL-CGCNN's part of a transfer estimator: the network comes from a pretrained one.

    Reads ``pretrained``, ``freeze`` and ``head``: loads every pretrained
    parameter into the network (all but the head with ``head="new"``),
    takes the architecture and the featurizer settings from the source, and
    freezes the chosen layers. With ``pretrained="auto"`` it first ranks the
    ``candidates`` on the training data (:func:`skcgcnn.source_selection.rank_sources`)
    and fine-tunes the one ranked ``source_rank``; ``l2_sp`` and ``lp_epochs``
    add the L2-SP penalty and LP-FT's head-first epochs
    (:class:`~skcgcnn.callbacks.L2SP`, :class:`~skcgcnn.callbacks.HeadFirst`).
    Mixed in before a :class:`CGCNNMixin` estimator (:class:`TransferCGCNNRegressor`,
    the transfer classifier), whose ``__init__`` stores the parameters of
    :data:`TRANSFER_PARAMS` under these names.
    """

    #: The mixin's constructor arguments and their defaults.
    TRANSFER_PARAMS = dict(pretrained="mp-formation-energy", freeze=None, head="new",
                           candidates=None, source_rank=0, l2_sp=0.0, lp_epochs=0)

    def _store_transfer_params(self, **params):
        """Store the mixin's constructor arguments (the names of :data:`TRANSFER_PARAMS`)."""
        if set(params) != set(self.TRANSFER_PARAMS):
            raise TypeError(f"transfer parameters are {sorted(self.TRANSFER_PARAMS)}, "
                            f"got {sorted(params)}")
        for name, value in params.items():
            setattr(self, name, value)

    def _is_auto(self):
        return isinstance(self.pretrained, str) and self.pretrained == "auto"

    def _resolved_pretrained(self):
        """The source actually loaded: ``pretrained``, or the one ``"auto"`` chose in fit."""
        if not self._is_auto():
            return self.pretrained
        if getattr(self, "pretrained_", None) is None:
            raise ValueError("pretrained='auto' chooses its source model in fit, from the "
                             "training data; fit the estimator first")
        return self.pretrained_

    def _source(self):
        """The pretrained module (a copy) and its card."""
        return network_source(self._resolved_pretrained())

    def _card(self):
        """The card of ``pretrained``, read again after ``set_params(pretrained=...)``."""
        source = self._resolved_pretrained()
        if not hasattr(self, "card_") or getattr(self, "_card_of", None) is not source:
            self.card_ = self._source()[1]
            self._card_of = source
        return self.card_

    # ------------------------------------------------------ choosing a source
    def _candidate_list(self):
        """The candidates of ``pretrained="auto"``: ``"library"`` expands to every bundled
        model; names and paths are kept as given (duplicates dropped)."""
        given = self.candidates
        if given is None:
            given = ["library"]
        elif isinstance(given, (str, bytes)) or hasattr(given, "__fspath__"):
            given = [given]
        out = {}
        for c in given:
            for item in (library_candidates() if isinstance(c, str) and c == "library" else [c]):
                out.setdefault(source_label(item), item)
        if not out:
            raise ValueError("candidates is empty: pass None (the library) or a list of "
                             "model names or paths")
        return list(out.values())

    def _probe_estimator(self):
        """The probe's model: ridge regression (a classifier's: logistic regression)."""
        return default_classification_probe() if is_classifier(self) else default_probe()

    def _choose_source(self, X, y):
        """Rank the candidates on (X, y), set ``pretrained_`` and ``source_scores_``, and
        return X as graphs (featurized once, with the candidates' settings)."""
        candidates = self._candidate_list()
        if not isinstance(self.source_rank, (int, np.integer)) or isinstance(
                self.source_rank, bool) or not 0 <= self.source_rank < len(candidates):
            raise ValueError(f"source_rank must be an int from 0 to {len(candidates) - 1} (the "
                             f"number of candidates less one), got {self.source_rank!r}")
        graphs = _graph_array_or_none(X)
        if graphs is None:
            _, card = read_card(candidates[0])
            graphs = as_graph_array(CrystalGraphTransformer(
                radius=card["featurizer"]["radius"],
                max_num_nbr=card["featurizer"]["max_num_nbr"]).transform(_as_list(X)))
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        if y.ndim != 1:
            raise ValueError(f"pretrained='auto' ranks source models on one target; y has "
                             f"shape {y.shape}: name the source model instead")
        if len(y) != len(graphs):
            raise ValueError(f"X and y have different lengths: {len(graphs)} crystals, "
                             f"{len(y)} targets")
        scores = rank_sources(candidates, graphs, y, random_state=self._seed(),
                              estimator=self._probe_estimator(), device=self.device,
                              conv_dtype=self.conv_dtype)
        by_label = {source_label(c): c for c in candidates}
        self.source_scores_ = scores
        self.pretrained_ = by_label[list(scores)[self.source_rank]]
        return graphs

    def _check_transfer_params(self):
        if isinstance(self.l2_sp, bool) or not isinstance(self.l2_sp, (int, float, np.number)) \
                or not np.isfinite(self.l2_sp) or self.l2_sp < 0:
            raise ValueError(f"l2_sp must be a finite number >= 0, got {self.l2_sp!r}")
        if isinstance(self.lp_epochs, bool) or not isinstance(self.lp_epochs, (int, np.integer)) \
                or not 0 <= self.lp_epochs < self.max_epochs:
            raise ValueError(f"lp_epochs must be an int from 0 to max_epochs - 1 = "
                             f"{self.max_epochs - 1}, got {self.lp_epochs!r} (for the head "
                             "alone in every epoch use freeze='all_but_head')")

    def fit(self, X, y, **fit_params):
        """Choose the source if ``pretrained="auto"``, then fit as the estimator does.

        With ``pretrained="auto"`` the candidates are ranked on ``X`` and ``y``
        only (what ``cross_val_score`` or ``GridSearchCV`` pass as the training
        fold), with the probe's folds seeded by ``random_state``; a
        ``warm_start`` refit keeps the source it has.
        """
        self._check_transfer_params()
        if not (self.warm_start and getattr(self, "initialized_", False)):
            if self._is_auto():
                X = self._choose_source(X, y)
            else:
                self.pretrained_, self.source_scores_ = self.pretrained, None
        return super().fit(X, y, **fit_params)

    def get_default_callbacks(self):
        callbacks = list(super().get_default_callbacks())
        if self.l2_sp:
            callbacks.append(("l2_sp", L2SP(float(self.l2_sp))))
        if self.lp_epochs:
            callbacks.append(("lp_ft", HeadFirst(int(self.lp_epochs))))
        return callbacks

    def _check_as_pretrained(self, names, theirs):
        """Raise if a parameter in ``names`` is set to other than the pretrained value."""
        for name in names:
            mine = getattr(self, name)
            if mine is not None and mine != theirs[name]:
                raise ValueError(f"{name}={mine} differs from the pretrained model's "
                                 f"{name}={theirs[name]}; leave it None")

    def _featurizer_settings(self):
        if self._is_auto() and getattr(self, "pretrained_", None) is None:
            # before "auto" has chosen: the candidates' settings (rank_sources checks they agree)
            card = read_card(self._candidate_list()[0])[1]["featurizer"]
        else:
            card = self._card()["featurizer"]
        self._check_as_pretrained(("radius", "max_num_nbr"), card)
        return card["radius"], card["max_num_nbr"]

    def _source_element_features(self, source):
        """The source's element table; an ``element_features`` given must be the same."""
        table = source.atom_features.cpu().numpy()
        given = getattr(self, "element_features", None)
        if given is not None:
            mine = element_feature_fingerprint(resolve_element_features(given)[0])
            if mine != element_feature_fingerprint(table):
                raise ValueError(
                    f"element_features={given!r} differs from the table the pretrained model "
                    f"was trained with ({getattr(source, 'element_features_name', 'array')!r}, "
                    f"{element_feature_fingerprint(table)!r}); leave it None")
        return table

    def _frozen_modules(self, module):
        f = self.freeze
        if f is None:
            return []
        if f == "embedding":
            return [module.embedding]
        if f == "all_but_head":
            return [module.embedding, *module.convs]
        if isinstance(f, (int, np.integer)) and not isinstance(f, bool) and 0 <= f <= len(module.convs):
            return [module.embedding, *module.convs[:f]]
        raise ValueError(f"freeze must be None, 'embedding', 'all_but_head' or an int from 0 "
                         f"to n_conv={len(module.convs)}, got {f!r}")

    def initialize_module(self):
        """Build the network from the pretrained one, load its parameters, freeze layers."""
        if self.head not in ("new", "keep"):
            raise ValueError(f"head must be 'new' or 'keep', got {self.head!r}")
        source, card = self._source()
        self.card_, self._card_of = card, self._resolved_pretrained()
        state = source.state_dict()
        arch = {k: source.hparams[k] for k in ("atom_fea_len", "n_conv", "radius")}
        arch["conv_dtype"] = resolve_conv_dtype(self.conv_dtype, self.device)
        self._check_as_pretrained(("atom_fea_len", "n_conv"), arch)
        arch["element_features"] = self._source_element_features(source)
        arch["pooling"] = getattr(self, "pooling", "mean")
        source_pooling = source.hparams.get("pooling", "mean")
        if self.head == "keep" and arch["pooling"] != source_pooling:
            raise ValueError(f"head='keep' keeps a head trained with pooling={source_pooling!r}, "
                             f"but pooling={arch['pooling']!r} was given; pass "
                             f"pooling={source_pooling!r} or head='new'")
        if self.head == "keep":
            arch.update(h_fea_len=source.hparams["h_fea_len"], n_h=source.hparams["n_h"],
                        n_targets=source.hparams.get("n_targets", 1))
            if arch["n_targets"] != self._n_targets():
                raise ValueError(f"head='keep' keeps the pretrained head's {arch['n_targets']} "
                                 f"output(s), but y has {self._n_targets()} target column(s); "
                                 "use head='new'")
        else:
            arch.update(h_fea_len=self.h_fea_len, n_h=self.n_h, n_targets=self._n_targets())
            # the new targets' statistics are fitted in fit(), the new head is initialised
            drop = ("conv_to_fc.", "fcs.", "fc_out.", "target_mean", "target_scale")
            state = {k: v for k, v in state.items() if not k.startswith(drop)}
        module = self.initialized_instance(self.module, {**arch, **self.get_params_for("module")})
        missing, unexpected = module.load_state_dict(state, strict=False)
        if unexpected:
            raise ValueError(f"pretrained model has parameters this network lacks: {unexpected[:5]}")
        module.element_features_name = getattr(source, "element_features_name", "array")
        self.transferred_ = sorted(state)
        frozen = self._frozen_modules(module)
        module.freeze(frozen)
        self.frozen_ = sorted(n for n, p in module.named_parameters() if not p.requires_grad)
        self.module_ = module
        return self


class TransferCGCNNRegressor(TransferMixin, CGCNNRegressor):
    """TL-CGCNN: a CGCNN initialised from a pretrained model and fine-tuned.

    Every pretrained parameter (embedding, convolutions and, with
    ``head="keep"``, the fully connected head) is loaded before training;
    the target normalisation is refitted on the new targets. Defaults follow
    the paper's fine-tuning (Table S1) in what it trains (all layers, a new
    head of length 64) but not in how long: 30 epochs of minibatches of 32,
    the learning rate going from 0.01 to zero along a half cosine, instead of
    the paper's 500 epochs of 256 at 0.005 decayed at epoch 100. On the
    500-K_VRH protocol's 10 trials (625 crystals) a fit took 11 CPU seconds on
    one core in float32, against 37 to 45 for the protocol's 150 epochs of 64, at
    the same test MAE (0.0733 log10 GPa against the protocol's 0.0727, paired
    t-test p = 0.69; docs/performance.md, "Fine-tuning"). The user guide's
    estimators page lists settings for 30, 300 and 3,000 crystals.

    A lone model trains on every crystal and keeps the last epoch
    (``validation_fraction="auto"``): against holding out a fifth to choose
    the best epoch, this lowered the test MAE on all five protocol targets,
    by 5.5 % pooled (10 trials, p = 3e-9). An :class:`EnsembleRegressor`'s
    members still hold out a fifth, which keeps its intervals sharp.
    ``pretrained="auto", max_epochs=60`` was 10.5 % below the former
    defaults at twice their cost (docs/benchmarks.md, "One fine-tuned model").

    Parameters
    ----------
    pretrained : str, path-like or fitted CGCNNRegressor, default="mp-formation-energy"
        A name from :func:`skcgcnn.pretrained.list_pretrained`, the path of a
        ``.pt`` file with its ``.json`` model card, a fitted estimator, or
        ``"auto"``: in :meth:`fit`, rank ``candidates`` on the training data
        by a cheap probe (ridge regression on each candidate's pooled crystal
        vectors, scored by 5-fold cross-validation;
        :func:`skcgcnn.source_selection.rank_sources`) and fine-tune the best.
        The probe costs about a tenth of one fine-tune (docs/benchmarks.md,
        "One fine-tuned model").
    freeze : None, "embedding", int or "all_but_head", default=None
        Layers kept fixed: ``None`` fine-tunes everything (the paper's best);
        ``"embedding"`` freezes the embedding; an int ``k`` freezes the
        embedding and the first ``k`` convolutions (the paper's suggested
        mixed strategy); ``"all_but_head"`` freezes the embedding and every
        convolution, training only the fully connected head (layer
        freezing). Frozen batch-norm layers stay in eval mode, so their
        running statistics do not drift either.
    head : {"new", "keep"}, default="new"
        ``"new"``: a freshly initialised head of ``h_fea_len`` and ``n_h``;
        ``"keep"``: the pretrained head (its lengths, too).
    candidates : None or list of str or path-like, default=None
        The models ``pretrained="auto"`` chooses from: ``None`` is every
        bundled model; a list names them (library names or paths), and the
        entry ``"library"`` stands for every bundled model (``["library",
        "my-model.pt"]`` adds one of your own). Unused otherwise. A library
        model trained on your property's labels for the same crystals (e.g.
        ``mp-formation-energy`` for Materials Project formation energies) is
        a candidate like any other: leave it out when that would leak.
    source_rank : int, default=0
        With ``pretrained="auto"``, fine-tune the candidate the probe ranks
        here (0: the best). ``EnsembleRegressor([TransferCGCNNRegressor(
        pretrained="auto", source_rank=r) for r in (0, 1)])`` fine-tunes its
        members from the two best sources in turn.
    l2_sp : float, default=0.0
        Strength ``alpha`` of the L2-SP penalty ``alpha / 2 * ||w - w0||^2``
        on the distance of the transferred parameters to their pretrained
        values (Li, Grandvalet & Davoine, ICML 2018;
        :class:`~skcgcnn.callbacks.L2SP`); 0 turns it off.
    lp_epochs : int, default=0
        LP-FT (Kumar et al., ICLR 2022; :class:`~skcgcnn.callbacks.HeadFirst`):
        the first ``lp_epochs`` of the ``max_epochs`` train only the new head,
        with the embedding and convolutions frozen (no gradients, batch norms in
        eval mode), then every layer not named by ``freeze`` trains. The
        learning-rate schedule runs over all ``max_epochs`` without a restart,
        so the cost stays that of ``max_epochs`` epochs (head-only ones are
        cheaper). 0 turns it off.
    h_fea_len : int, default=64
        Length of the new head's hidden layer(s).
    lr : float, default=0.01
        Initial learning rate.
    batch_size : int, default=32
        Crystals per minibatch.
    max_epochs : int, default=30
        Training epochs.
    validation_fraction : float, None or "auto", default="auto"
        As in :class:`CGCNNRegressor`, whose default holds out 0.2; here
        ``"auto"``: a lone model trains on every crystal and keeps the last
        epoch of the cosine.
    lr_schedule : {"cosine", "step"}, default="cosine"
        ``"cosine"``: from ``lr`` to zero over ``max_epochs``; ``"step"``:
        the paper's decay at ``lr_decay_epoch`` (pass ``lr_schedule="step",
        batch_size=64, max_epochs=150`` for the protocol of docs/benchmarks.md).
    atom_fea_len, n_conv : int or None, default=None
        Taken from the pretrained model; a value that differs raises.
    radius, max_num_nbr : float, int or None, default=None
        Featurizer settings, taken from the model card; graphs built with
        other settings are refused.
    element_features : None or as in CGCNNRegressor, default=None
        The element table comes with the pretrained network (an imported
        original CGCNN model brings its 92-column ``atom_init.json``); a
        table given here that differs from it raises.
    pooling : {"mean", "site"}, default="mean"
        As in :class:`CGCNNRegressor`; with ``head="keep"`` it must be the
        pretrained model's.
    **kwargs
        Every other parameter of :class:`CGCNNRegressor`.

    Attributes
    ----------
    card_ : dict
        The pretrained model's card.
    transferred_ : list of str
        Names of the state-dict entries copied from the pretrained model.
    frozen_ : list of str
        Names of the parameters kept fixed.
    pretrained_ : str, path-like or estimator
        The source model fine-tuned: ``pretrained``, or the candidate that
        ``"auto"`` chose.
    source_scores_ : dict of str to float or None
        With ``pretrained="auto"``: the probe's cross-validated MAE (units of
        ``y``) of every candidate, best first; None otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from ase.build import bulk
    >>> from skcgcnn import TransferCGCNNRegressor
    >>> from skcgcnn.pretrained import list_pretrained
    >>> X = [bulk("Cu", a=a) for a in np.linspace(3.4, 3.8, 8)]
    >>> y = np.linspace(3.4, 3.8, 8) ** 3 / 4
    >>> if "mp-formation-energy" in list_pretrained():
    ...     model = TransferCGCNNRegressor(max_epochs=5, random_state=0).fit(X, y)
    ...     print(model.predict(X[:2]).shape)
    (2,)
    """

    def __init__(self, pretrained="mp-formation-energy", freeze=None, head="new",
                 candidates=None, source_rank=0, l2_sp=0.0, lp_epochs=0,
                 h_fea_len=64, n_h=1, lr=0.01, batch_size=32, max_epochs=30,
                 validation_fraction="auto", lr_schedule="cosine", atom_fea_len=None,
                 n_conv=None, radius=None, max_num_nbr=None, **kwargs):
        self._store_transfer_params(pretrained=pretrained, freeze=freeze, head=head,
                                    candidates=candidates, source_rank=source_rank,
                                    l2_sp=l2_sp, lp_epochs=lp_epochs)
        super().__init__(atom_fea_len=atom_fea_len, n_conv=n_conv, h_fea_len=h_fea_len,
                         n_h=n_h, lr=lr, batch_size=batch_size, max_epochs=max_epochs,
                         validation_fraction=validation_fraction, lr_schedule=lr_schedule,
                         radius=radius, max_num_nbr=max_num_nbr, **kwargs)
