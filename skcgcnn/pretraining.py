"""Pretraining a source model: a resumable, logged run that writes a model card.

One function, :func:`pretrain`, serves ``skcgcnn pretrain`` on the command
line and ``benchmarks/pretrain.py`` (the library's own models; in the source
repository). Its recipe is separate from fine-tuning's: AdamW with a linear
warmup and a cosine decay by default (the schedule of modern graph-network
pretraining), where fine-tuning keeps the paper's SGD.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

__all__ = ["pretrain", "PRETRAINING_RECIPE", "AcceleratedCGCNNRegressor"]

#: Default pretraining recipe (see :func:`pretrain`).
PRETRAINING_RECIPE = dict(optimizer="adamw", lr=0.002, weight_decay=1e-4, schedule="cosine",
                          warmup=3, epochs=150, batch_size=256)

_OPTIMIZERS = {"adamw": "AdamW", "sgd": "SGD"}  # torch.optim classes


def _fixed_split(n_train):
    """skorch ``train_split``: the first ``n_train`` rows train, the rest validate."""
    def split(dataset, y=None, **kwargs):
        from torch.utils.data import Subset

        return Subset(dataset, range(n_train)), Subset(dataset, range(n_train, len(dataset)))
    return split


def _onednn_caches_bounded(func):
    """Run ``func`` with oneDNN's kernel caches bounded, the environment restored after."""
    @functools.wraps(func)
    def bounded(*args, **kwargs):
        from .callbacks import limit_onednn_caches

        with limit_onednn_caches():
            return func(*args, **kwargs)
    return bounded


@_onednn_caches_bounded
def pretrain(X, y, path, *, X_valid=None, y_valid=None, validation_fraction=0.1,
             optimizer=PRETRAINING_RECIPE["optimizer"], lr=PRETRAINING_RECIPE["lr"],
             weight_decay=PRETRAINING_RECIPE["weight_decay"],
             schedule=PRETRAINING_RECIPE["schedule"], warmup=PRETRAINING_RECIPE["warmup"],
             epochs=PRETRAINING_RECIPE["epochs"], batch_size=PRETRAINING_RECIPE["batch_size"],
             lr_decay_epoch=None, checkpoint_dir=None,
             random_state=0, card=None, estimator=None, overwrite=False, **params):
    """Pretrain a CGCNN on a large data set and save it as a library model.

    The caches of oneDNN kernels are bounded during the run
    (:func:`~skcgcnn.callbacks.limit_onednn_caches`), so that the memory of a
    long run does not grow with the number of batches; the environment
    variables that bound them are removed when ``pretrain`` returns.

    Every epoch is checkpointed atomically in ``checkpoint_dir``
    (:class:`~skcgcnn.callbacks.AtomicCheckpoint`: parameters, optimizer
    state, history, random states, the best score so far); calling
    ``pretrain`` again with the same arguments resumes from the last epoch,
    on this machine or another one that has the folder, and on the CPU goes
    on as the uninterrupted run would have: the same shuffling, schedule,
    best epoch, card and weights. Whenever the validation MAE improves, the model and its card
    are written to ``path`` (``.pt`` and ``.json``), so a stopped run still
    leaves its best model, loadable with ``TransferCGCNNRegressor(pretrained=
    path)``.

    Parameters
    ----------
    X : array of CrystalGraph, or structures
        Training crystals.
    y : array-like of shape (n_crystals,) or (n_crystals, n_targets)
        Targets in their own units; several columns make a multi-property
        model (NaN marks a missing label).
    path : str or path-like
        Where the model (``<path>.pt``) and card (``<path>.json``) go.
    X_valid, y_valid : optional
        Validation crystals that choose the best epoch; without them,
        ``validation_fraction`` of ``X`` is held out at random.
    validation_fraction : float, default=0.1
        Used when no ``X_valid`` is given.
    optimizer : {"adamw", "sgd"}, default="adamw"
        AdamW, or the paper's SGD with momentum 0.9.
    lr : float, default=0.002
        Peak learning rate.
    weight_decay : float, default=1e-4
        Decoupled weight decay (AdamW) or L2 penalty (SGD).
    schedule : {"cosine", "step"}, default="cosine"
        ``"cosine"``: ``warmup`` epochs of linear warmup, then a cosine decay
        to zero at ``epochs``; ``"step"``: x0.1 at ``lr_decay_epoch``.
    warmup : int, default=3
        Warmup epochs of the cosine schedule.
    epochs : int, default=150
        Total epochs of the run (a resumed run trains what is left).
    batch_size : int, default=256
        Crystals per minibatch.
    lr_decay_epoch : int or None, default=None
        Epoch of the step decay (``schedule="step"``).
    checkpoint_dir : str or path-like, optional
        Folder of the per-epoch checkpoint; default ``<path>.checkpoint``.
    random_state : int, default=0
        Seeds initialisation, shuffling and the random validation split.
    card : dict, optional
        More model-card fields (data, target, units, the command that
        rebuilds the model, ...).
    overwrite : bool, default=False
        Start a new run even though a model exists at ``path`` without a
        checkpoint to resume (default: refuse, so that no model is lost).
    estimator : type, optional
        The estimator class, :class:`~skcgcnn.CGCNNRegressor` by default;
        :class:`AcceleratedCGCNNRegressor` (with ``accelerator=...`` in
        ``params``) runs on several GPUs through Hugging Face Accelerate.
    **params
        Other :class:`~skcgcnn.CGCNNRegressor` parameters (``device``,
        ``conv_dtype``, ``atom_fea_len``, ``verbose``, ...).

    Returns
    -------
    estimator : CGCNNRegressor
        Fitted, with the best epoch's weights; its card (as written) is in
        ``card_``.

    Examples
    --------
    >>> import tempfile, os
    >>> import numpy as np
    >>> from ase.build import bulk
    >>> from skcgcnn.pretraining import pretrain
    >>> X = [bulk("Cu", a=a) for a in np.linspace(3.4, 3.8, 12)]
    >>> y = np.linspace(3.4, 3.8, 12) ** 3 / 4  # angstrom^3 per atom
    >>> out = os.path.join(tempfile.mkdtemp(), "cu-volume")
    >>> net = pretrain(X, y, out, epochs=4, warmup=1, batch_size=4,
    ...                card={"target": "volume", "units": "angstrom^3/atom"})
    >>> net.card_["epochs_trained"], net.card_["hyperparameters"]["optimizer"]
    (4, 'AdamW')
    """
    import numpy as np
    import torch

    from .callbacks import AtomicCheckpoint, CosineLR
    from .estimators import CGCNNRegressor
    from .pretrained import SavePretrained, model_paths

    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {sorted(_OPTIMIZERS)}, got {optimizer!r}")
    if schedule not in ("cosine", "step"):
        raise ValueError(f"schedule must be 'cosine' or 'step', got {schedule!r}")
    if schedule == "step" and lr_decay_epoch is None:
        raise ValueError("schedule='step' needs lr_decay_epoch")
    weights, _ = model_paths(path)
    path = weights.with_suffix("")  # the stem that save_pretrained completes
    ckpt = Path(os.fspath(checkpoint_dir)) if checkpoint_dir else path.with_name(
        path.name + ".checkpoint")
    history = ckpt / "history.json"
    done = len(json.loads(history.read_text())) if history.is_file() else 0
    if not done and weights.exists() and not overwrite:
        raise FileExistsError(f"{str(weights)!r} exists and {str(ckpt)!r} holds no run to "
                              "resume; pass overwrite=True (--force) to start a new one")

    if X_valid is not None:
        X = np.concatenate([_graph_array(X, params), _graph_array(X_valid, params)])
        n_train = len(y)
        y = np.concatenate([np.asarray(y, float), np.asarray(y_valid, float)])
        params.setdefault("train_split", _fixed_split(n_train))
        n_valid = len(y) - n_train
    else:
        n_valid = int(round(validation_fraction * len(y))) if validation_fraction else 0
        params.setdefault("validation_fraction", validation_fraction)

    recipe = {"optimizer": _OPTIMIZERS[optimizer], "lr": lr,
              "weight_decay": weight_decay, "schedule": schedule, "epochs": epochs,
              "batch_size": batch_size}
    if optimizer == "sgd":
        recipe["momentum"] = 0.9
    decay_at, lr_now = None, lr
    if schedule == "cosine":
        recipe["warmup_epochs"] = warmup
    else:  # a resumed step schedule: the rate after the decay, or the decay moved earlier
        recipe.update(lr_decay_epoch=lr_decay_epoch, lr_decay=0.1)
        decay_at, lr_now = (None, lr * 0.1) if done >= lr_decay_epoch else (
            lr_decay_epoch - done, lr)
    full_card = {**(card or {}), "n_train": len(y) - n_valid, "n_validation": n_valid,
                 "hyperparameters": {**recipe, **{k: v for k, v in params.items()
                                                   if k in ("conv_dtype", "device")}}}
    # weight_decay reaches AdamW's decoupled decay or SGD's L2 penalty alike
    opt = {"optimizer": getattr(torch.optim, _OPTIMIZERS[optimizer]), "weight_decay": weight_decay}
    # checkpoints before the user's callbacks: one that stops the run finds the epoch saved
    callbacks = [AtomicCheckpoint(ckpt), SavePretrained(path, full_card)]
    if schedule == "cosine":
        callbacks.insert(0, CosineLR(epochs, warmup=warmup))
    cls = estimator or CGCNNRegressor
    net = cls(lr=lr_now, lr_decay_epoch=decay_at, batch_size=batch_size,
              max_epochs=max(epochs - done, 0), random_state=random_state,
              callbacks=[*callbacks, *params.pop("callbacks", [])], **opt, **params)
    from .io import save_json
    from .pretrained import load_estimator

    # the best epoch, as SavePretrained wrote it; its card learns the whole run's length
    if epochs - done > 0:
        net.fit(X, y)
        best = load_estimator(weights)
        net.module_.load_state_dict(best.module_.state_dict())
    else:  # the run is complete: nothing to train
        net = best = load_estimator(weights)
    card = best.card_
    run = json.loads(history.read_text()) if history.is_file() else []
    card.update(epochs_trained=len(run), training_time_s=round(sum(e["dur"] for e in run)))
    save_json(card, weights.with_suffix(".json"))
    net.card_ = card
    return net


def _graph_array(X, params):
    """Graphs of ``X`` (graphs, or structures featurized with the net's settings)."""
    from .graph import CrystalGraphTransformer, _graph_array_or_none

    graphs = _graph_array_or_none(X)
    if graphs is None:
        graphs = CrystalGraphTransformer(radius=params.get("radius", 8.0),
                                         max_num_nbr=params.get("max_num_nbr", 12)).transform(X)
    return graphs


@functools.lru_cache(maxsize=None)
def _accelerated_class():
    from skorch.hf import AccelerateMixin  # costs seconds: imported on first use

    from .estimators import CGCNNRegressor

    class AcceleratedCGCNNRegressor(AccelerateMixin, CGCNNRegressor):
        """:class:`~skcgcnn.CGCNNRegressor` trained through Hugging Face Accelerate.

        skorch's ``AccelerateMixin`` (experimental there): pass
        ``accelerator=accelerate.Accelerator()`` (``pip install accelerate``)
        and start the script with ``accelerate launch`` to train data-parallel on
        several GPUs; the accelerator places the model and the batches, so
        ``device`` stays None. A net cannot be pickled while wrapped (skorch
        unwraps it after training).

        Examples
        --------
        >>> import numpy as np
        >>> from ase.build import bulk
        >>> from skcgcnn.pretraining import AcceleratedCGCNNRegressor
        >>> from accelerate import Accelerator  # doctest: +SKIP
        >>> X = [bulk("Cu", a=a) for a in np.linspace(3.4, 3.8, 8)]
        >>> net = AcceleratedCGCNNRegressor(accelerator=Accelerator(cpu=True),
        ...                                 max_epochs=2)  # doctest: +SKIP
        >>> net.fit(X, np.linspace(3.4, 3.8, 8)).predict(X).shape  # doctest: +SKIP
        (8,)
        """

        def _module_kwargs(self):
            from .model import resolve_conv_dtype

            # the accelerator's device decides the precision of "auto"
            return {**super()._module_kwargs(),
                    "conv_dtype": resolve_conv_dtype(self.conv_dtype, self.accelerator.device)}

    AcceleratedCGCNNRegressor.__module__ = __name__
    return AcceleratedCGCNNRegressor


def __getattr__(name):
    if name == "AcceleratedCGCNNRegressor":
        return _accelerated_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
