"""scikit-learn classifiers around the CGCNN network (skorch-backed).

:class:`CGCNNClassifier` and :class:`TransferCGCNNClassifier` share the
network, optimizer, schedule, graphs and best-epoch restore of the regressors
(:class:`~skcgcnn.estimators.CGCNNMixin`, :class:`~skcgcnn.estimators.TransferMixin`)
and add what classification needs: the classes of ``y`` (labels of any type),
one logit per class, a cross-entropy loss weighted by ``class_weight``,
``predict_proba`` and a stratified validation split.
"""

from __future__ import annotations

import numpy as np
import torch
from skorch import NeuralNetClassifier
from skorch.dataset import ValidSplit
from sklearn.exceptions import NotFittedError
from sklearn.utils.class_weight import compute_class_weight

from .estimators import CGCNNMixin, TransferMixin

__all__ = ["CGCNNClassifier", "TransferCGCNNClassifier"]

#: skorch's default callbacks that classification leaves out: ``valid_acc`` scores
#: ``predict`` on skorch's encoded labels, not on the user's classes.
_DROPPED_CALLBACKS = ("valid_acc",)


class CGCNNClassifier(CGCNNMixin, NeuralNetClassifier):
    """Crystal graph convolutional neural network classifier (CGCNN).

    A scikit-learn classifier built on skorch's ``NeuralNetClassifier``: it
    takes crystal graphs from :class:`~skcgcnn.CrystalGraphTransformer` (or raw
    structures, featurized with ``radius`` and ``max_num_nbr``) and class
    labels of any type (strings, integers, booleans), binary or multiclass.
    The network's head has one output per class (the logits); training
    minimises the cross entropy, weighted per class by ``class_weight``, and
    ``predict_proba`` is their softmax. The network, optimizer and schedule
    are those of :class:`~skcgcnn.CGCNNRegressor` (SGD with momentum,
    learning rate 0.01 decayed by 0.1 at epoch 100, minibatch 256), with the
    epoch of the lowest validation cross entropy restored at the end. The
    original CGCNN's ``--task classification`` is the binary case (it has a
    log-softmax head over two classes and no class weights).

    Parameters
    ----------
    class_weight : None, "balanced" or dict, default=None
        Weight of each class in the cross entropy: ``None`` weighs every
        class 1; ``"balanced"`` weighs class ``c`` by
        ``n_crystals / (n_classes * n_crystals_of_c)``
        (:func:`sklearn.utils.class_weight.compute_class_weight`), so that a
        rare class counts as much as a common one; a dict maps labels to
        weights (classes not in it weigh 1). Computed on the whole ``y``
        passed to :meth:`fit`.
    atom_fea_len : int, default=64
        Length of the atom vectors in the convolutions.
    n_conv : int, default=3
        Number of gated convolution layers.
    h_fea_len : int, default=128
        Length of the hidden fully connected layer(s) after pooling.
    n_h : int, default=1
        Number of hidden fully connected layers.
    conv_dtype : {"auto", "float32", "bfloat16"}, default="auto"
        Precision of the embedding and convolutions, as for
        :class:`~skcgcnn.CGCNNRegressor`.
    lr : float, default=0.01
        Initial learning rate of SGD.
    momentum : float, default=0.9
        SGD momentum.
    weight_decay : float, default=0.0
        L2 penalty of SGD.
    lr_decay_epoch : int or None, default=100
        Epoch at which the learning rate is multiplied by ``lr_decay``
        (``lr_schedule="step"``; ``None``: constant).
    lr_decay : float, default=0.1
        Multiplicative learning-rate decay.
    lr_schedule : {"step", "cosine"}, default="step"
        ``"step"``: one decay at ``lr_decay_epoch``; ``"cosine"``: from ``lr``
        to zero over ``max_epochs``.
    batch_size : int, default=256
        Crystals per minibatch.
    max_epochs : int, default=500
        Training epochs.
    validation_fraction : float, None or "auto", default=0.2
        Fraction of the training data held out to choose the epoch with the
        lowest validation loss (weighted cross entropy), which is restored
        after training. The split is stratified (each class keeps its share;
        seeded by ``random_state``) whenever every class has at least two
        crystals and each part can hold every class, else drawn at random.
        Inside ``cross_val_score`` or ``GridSearchCV`` it is taken from each
        training fold. ``None`` or 0 trains on everything and keeps the last
        epoch; ``"auto"`` as in :class:`~skcgcnn.CGCNNRegressor`.
    n_iter_no_change : int or None, default=None
        Stop when the validation loss has not improved for this many epochs
        (``None``: train all ``max_epochs``; the best epoch is kept either way).
    radius : float, default=8.0
        Graph cutoff in angstrom; raw structures are featurized with it and
        graphs built otherwise are refused.
    max_num_nbr : int, default=12
        Neighbours per atom in the graphs.
    element_features : None, "skcgcnn", "cgcnn", path or array-like, default=None
        Element table, as for :class:`~skcgcnn.CGCNNRegressor`.
    pooling : {"mean", "site"}, default="mean"
        As for :class:`~skcgcnn.CGCNNRegressor` (the head on each atom, then the
        mean of the logits, with ``"site"``).
    random_state : int, RandomState or None, default=None
        Seeds the initialisation, the minibatch order and the validation
        split; the global torch RNG is restored after fitting.
    device : str, default="cpu"
        Torch device, e.g. ``"cuda"``.
    verbose : int, default=0
        skorch's per-epoch log when positive.
    **kwargs
        skorch parameters (``optimizer``, ``callbacks``, ``criterion``,
        ``classes``, ``iterator_train__*``, ...).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted (``np.unique(y)``, or the ``classes``
        parameter when given); column ``k`` of :meth:`predict_proba` is
        ``classes_[k]``.
    class_weight_ : ndarray of shape (n_classes,)
        The weight of each class in the loss.
    module_ : skcgcnn.model.CGCNN
        The fitted network (``n_targets = n_classes``).
    history_ : skorch.history.History
        Per-epoch training and validation loss.

    Examples
    --------
    >>> import numpy as np
    >>> from ase.build import bulk
    >>> from skcgcnn import CGCNNClassifier
    >>> X = [bulk("Cu", a=a) for a in np.linspace(3.4, 3.8, 8)]
    >>> y = ["compressed"] * 4 + ["expanded"] * 4
    >>> model = CGCNNClassifier(max_epochs=5, batch_size=4, random_state=0).fit(X, y)
    >>> model.classes_.tolist(), model.predict_proba(X[:2]).shape
    (['compressed', 'expanded'], (2, 2))
    >>> model.predict(X[:1])[0] in model.classes_
    True
    """

    def __init__(self, class_weight=None, atom_fea_len=64, n_conv=3, h_fea_len=128, n_h=1,
                 conv_dtype="auto", lr=0.01, momentum=0.9, weight_decay=0.0,
                 lr_decay_epoch=100, lr_decay=0.1, lr_schedule="step", batch_size=256,
                 max_epochs=500, validation_fraction=0.2, n_iter_no_change=None, radius=8.0,
                 max_num_nbr=12, random_state=None, device="cpu", verbose=0,
                 element_features=None, pooling="mean", **kwargs):
        kwargs = self._store_params(dict(
            class_weight=class_weight, element_features=element_features, pooling=pooling, atom_fea_len=atom_fea_len, n_conv=n_conv,
            h_fea_len=h_fea_len, n_h=n_h, conv_dtype=conv_dtype, momentum=momentum,
            weight_decay=weight_decay, lr_decay_epoch=lr_decay_epoch, lr_decay=lr_decay,
            lr_schedule=lr_schedule, validation_fraction=validation_fraction,
            n_iter_no_change=n_iter_no_change, radius=radius, max_num_nbr=max_num_nbr,
            random_state=random_state), kwargs, torch.nn.CrossEntropyLoss)
        super().__init__(lr=lr, batch_size=batch_size, max_epochs=max_epochs,
                         device=device, verbose=verbose, **kwargs)

    # ------------------------------------------------------------------ setup
    def _n_targets(self):
        """Outputs of the head: one logit per class (2 before a fit)."""
        classes = getattr(self, "classes_inferred_", None)
        return len(classes) if classes is not None else 2

    def get_default_callbacks(self):
        return [(name, cb) for name, cb in super().get_default_callbacks()
                if name not in _DROPPED_CALLBACKS]

    def initialize_criterion(self):
        """The criterion, given the class weights (unless ``criterion__weight`` is set)."""
        kwargs = self.get_params_for("criterion")
        weight = getattr(self, "class_weight_", None)
        if weight is not None and "weight" not in kwargs and isinstance(self.criterion, type) \
                and issubclass(self.criterion, torch.nn.modules.loss._WeightedLoss):
            kwargs["weight"] = torch.as_tensor(weight, dtype=torch.float32)
        self.criterion_ = self.initialized_instance(self.criterion, kwargs)
        return self

    def get_split_datasets(self, X, y=None, **fit_params):
        """Hold out ``validation_fraction``, stratified by class where the classes allow.

        Records the positions of the held-out crystals in ``validation_indices_``,
        as the regressors do.
        """
        fraction = self._hold_out()
        if self.train_split is None and fraction and y is not None:
            fraction = float(fraction)
            y = np.asarray(y)
            n, n_classes = len(y), len(np.unique(y))
            n_valid = int(np.ceil(fraction * n))
            stratified = (np.bincount(y.astype(np.int64)).min(initial=n) >= 2
                          and n_classes <= n_valid <= n - n_classes)
            split = ValidSplit(fraction, stratified=stratified, random_state=self._seed())
            train, valid = split(self.get_dataset(X, y), y)
            self.validation_indices_ = np.asarray(valid.indices, np.int64)
            return train, valid
        return super().get_split_datasets(X, y, **fit_params)

    # ---------------------------------------------------------------- fitting
    def _encode(self, y, n):
        """Class indices of ``y`` and the classes, checked."""
        if y is None:
            raise ValueError("y is required: one class label per crystal")
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y.ravel()
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D (one class label per crystal), got shape {y.shape}")
        if len(y) != n:
            raise ValueError(f"X and y have different lengths: {n} crystals, {len(y)} labels")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            first = int(np.flatnonzero(~np.isfinite(y))[0])
            raise ValueError(f"y has NaN or infinite labels, the first at index {first}")
        if self.classes is not None:
            classes = np.asarray(self.classes)
            unknown = np.setdiff1d(y, classes)
            if len(unknown):
                raise ValueError(f"y has labels {unknown[:5].tolist()} that are not in "
                                 f"classes={classes.tolist()}")
            classes = np.unique(classes)
        else:
            classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(f"y has a single class {classes.tolist()}: a classifier needs "
                             "at least two")
        return np.searchsorted(classes, y), classes

    def fit(self, X, y, **fit_params):
        """Fit the network on crystals ``X`` and class labels ``y``.

        Parameters
        ----------
        X : sequence of CrystalGraph, Structure, ase.Atoms or paths
        y : array-like of shape (n_crystals,)
            Class labels (strings, integers, booleans, ...), at least two
            distinct ones.
        **fit_params
            Passed to skorch's ``fit``.

        Returns
        -------
        self : CGCNNClassifier
        """
        graphs = self._graphs(X)
        codes, classes = self._encode(y, len(graphs))
        if self.class_weight is not None and not (
                self.class_weight == "balanced" or isinstance(self.class_weight, dict)):
            raise ValueError(f"class_weight must be None, 'balanced' or a dict of label to "
                             f"weight, got {self.class_weight!r}")
        self._warn_small_data(len(graphs))
        if self.warm_start and self.initialized_ and not np.array_equal(classes, self.classes_):
            raise ValueError(f"warm_start refit with classes {classes.tolist()}, but the "
                             f"network was fitted on {self.classes_.tolist()}")
        self.classes_inferred_ = classes
        if self.class_weight is None:
            self.class_weight_ = np.ones(len(classes))
        else:
            present = np.unique(codes)  # "balanced" needs every class in y
            weight = np.ones(len(classes))
            weight[present] = compute_class_weight(self.class_weight, classes=classes[present],
                                                   y=classes[codes])
            self.class_weight_ = weight
        if self.warm_start and self.initialized_:
            self.initialize_criterion()  # the new y's weights
        self._fit_network(graphs, codes.astype(np.float32), **fit_params)
        return self

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """The criterion on the logits, with the class indices as integers."""
        y_true = torch.as_tensor(y_true, device=y_pred.device).long()
        return super().get_loss(y_pred, y_true, X=X, training=training)

    # ------------------------------------------------------------- predicting
    def _check_fitted(self):
        """scikit-learn's NotFittedError (skorch's own error is not one) before a fit."""
        if not getattr(self, "initialized_", False) or \
                getattr(self, "classes_inferred_", None) is None:
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call "
                                 "fit(X, y) first")

    def decision_function(self, X):
        """The network's logits, as scikit-learn's classifiers give them.

        Returns
        -------
        scores : ndarray of shape (n_crystals,) or (n_crystals, n_classes), float64
            With two classes, the logit of ``classes_[1]`` minus that of
            ``classes_[0]`` (positive: ``classes_[1]`` is the more probable,
            whose probability is its sigmoid); with more, the logits, one
            column per class.
        """
        self._check_fitted()
        logits = self.forward(self._graphs(X), training=False).double().cpu().numpy()
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X):
        """Class probabilities: the softmax of the logits, columns in ``classes_`` order.

        Parameters
        ----------
        X : sequence of CrystalGraph, Structure, ase.Atoms or paths

        Returns
        -------
        proba : ndarray of shape (n_crystals, n_classes), float64
            Rows sum to 1.
        """
        self._check_fitted()
        logits = self.forward(self._graphs(X), training=False).double()
        return torch.softmax(logits, dim=-1).cpu().numpy()

    def predict(self, X):
        """The most probable class of each crystal.

        Parameters
        ----------
        X : sequence of CrystalGraph, Structure, ase.Atoms or paths

        Returns
        -------
        labels : ndarray of shape (n_crystals,)
            Labels from ``classes_`` (of their type).
        """
        proba = self.predict_proba(X)
        return self.classes_[proba.argmax(axis=1)]


class TransferCGCNNClassifier(TransferMixin, CGCNNClassifier):
    """TL-CGCNN for classes: a CGCNN classifier initialised from a pretrained model.

    Every pretrained parameter of the embedding and the convolutions (and,
    with ``head="keep"``, of the head) is loaded before training, from any
    library model (:func:`skcgcnn.pretrained.list_pretrained`, regressors
    included), a saved model's path, or a fitted estimator. With the default
    ``head="new"`` a fresh head with one output per class is trained on top.
    Defaults are :class:`~skcgcnn.TransferCGCNNRegressor`'s fine-tuning ones:
    all layers trained, a head of length 64, 30 epochs of minibatches of 32,
    the learning rate going from 0.01 to zero along a half cosine.

    Parameters
    ----------
    pretrained : str, path-like or fitted CGCNN estimator, default="mp-formation-energy"
        A name from :func:`skcgcnn.pretrained.list_pretrained`, the path of a
        ``.pt`` file with its ``.json`` model card, or a fitted estimator.
    freeze : None, "embedding", int or "all_but_head", default=None
        Layers kept fixed, as for :class:`~skcgcnn.TransferCGCNNRegressor`.
    head : {"new", "keep"}, default="new"
        ``"new"``: a freshly initialised head with one output per class;
        ``"keep"``: the pretrained head, only when it has as many outputs as
        ``y`` has classes (a pretrained classifier on the same classes), else
        ``ValueError``.
    candidates, source_rank, l2_sp, lp_epochs
        As for :class:`~skcgcnn.TransferCGCNNRegressor` (choosing the source
        with ``pretrained="auto"``, L2-SP, LP-FT). The probe of ``"auto"`` is
        a logistic regression on each candidate's pooled vectors, scored by
        its cross-validated log loss (stratified folds; every class needs at
        least 2 crystals).
    class_weight : None, "balanced" or dict, default=None
        Weight of each class in the loss, as for :class:`CGCNNClassifier`.
    h_fea_len : int, default=64
        Length of the new head's hidden layer(s).
    lr : float, default=0.01
        Initial learning rate.
    batch_size : int, default=32
        Crystals per minibatch.
    max_epochs : int, default=30
        Training epochs (the epoch of the lowest validation loss is kept).
    lr_schedule : {"cosine", "step"}, default="cosine"
        Learning-rate schedule.
    atom_fea_len, n_conv : int or None, default=None
        Taken from the pretrained model; a value that differs raises.
    radius, max_num_nbr : float, int or None, default=None
        Featurizer settings, taken from the model card.
    **kwargs
        Every other parameter of :class:`CGCNNClassifier`.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    card_ : dict
        The pretrained model's card.
    transferred_ : list of str
        Names of the state-dict entries copied from the pretrained model.
    frozen_ : list of str
        Names of the parameters kept fixed.

    Examples
    --------
    >>> import numpy as np
    >>> from ase.build import bulk
    >>> from skcgcnn import TransferCGCNNClassifier
    >>> X = [bulk(s, a=a) for s in ("Cu", "Ni") for a in np.linspace(3.4, 3.7, 4)]
    >>> y = [s for s in ("Cu", "Ni") for _ in range(4)]
    >>> model = TransferCGCNNClassifier(max_epochs=3, random_state=0).fit(X, y)
    >>> model.predict_proba(X[:2]).shape, "embedding.weight" in model.transferred_
    ((2, 2), True)
    """

    def __init__(self, pretrained="mp-formation-energy", freeze=None, head="new",
                 class_weight=None, candidates=None, source_rank=0, l2_sp=0.0, lp_epochs=0,
                 h_fea_len=64, n_h=1, lr=0.01, batch_size=32,
                 max_epochs=30, lr_schedule="cosine", atom_fea_len=None, n_conv=None,
                 radius=None, max_num_nbr=None, **kwargs):
        self._store_transfer_params(pretrained=pretrained, freeze=freeze, head=head,
                                    candidates=candidates, source_rank=source_rank,
                                    l2_sp=l2_sp, lp_epochs=lp_epochs)
        super().__init__(class_weight=class_weight, atom_fea_len=atom_fea_len, n_conv=n_conv,
                         h_fea_len=h_fea_len, n_h=n_h, lr=lr, batch_size=batch_size,
                         max_epochs=max_epochs, lr_schedule=lr_schedule, radius=radius,
                         max_num_nbr=max_num_nbr, **kwargs)

    def initialize_module(self):
        """Build the network from the pretrained one (see :class:`TransferCGCNNClassifier`)."""
        if self.head == "keep":
            n_out = int(self._card().get("architecture", {}).get("n_targets", 1))
            if n_out != self._n_targets():
                raise ValueError(
                    f"head='keep' keeps the pretrained head's {n_out} output(s), but y has "
                    f"{self._n_targets()} classes; keep a head only from a classifier of as "
                    "many classes, else use head='new'")
        return super().initialize_module()
