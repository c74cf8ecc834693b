"""skorch callbacks of skcgcnn: atomic, resumable checkpoints, a resumable
cosine schedule, the fine-tuning methods of the transfer-learning literature
(L2-SP, LP-FT), and the memory of long runs (heap trimming, oneDNN's caches)."""

from __future__ import annotations

import ctypes
import functools
import json
import math
import os
import sys

import numpy as np
import torch
from skorch.callbacks import Callback

from .io import atomic_write_bytes, load_state_dict, save_state_dict

__all__ = ["AtomicCheckpoint", "ColumnMAE", "CosineLR", "HeadFirst", "L2SP", "ReleaseMemory",
           "limit_onednn_caches"]


class AtomicCheckpoint(Callback):
    """Save parameters, optimizer state and history after every epoch, atomically.

    Unlike skorch's ``Checkpoint`` it never writes into the working directory
    by default, never leaves a half-written file (temporary file, then
    rename), and resumes: when ``dirname`` holds a checkpoint and the net has
    no history yet, training begins from it.

    Parameters
    ----------
    dirname : str or path-like
        Folder of ``params.pt``, ``optimizer.pt`` and ``history.json``.
    resume : bool, default=True
        Load an existing checkpoint at the start of training.

    Examples
    --------
    >>> import tempfile
    >>> from skcgcnn import CGCNNRegressor
    >>> from skcgcnn.callbacks import AtomicCheckpoint
    >>> net = CGCNNRegressor(callbacks=[AtomicCheckpoint(tempfile.mkdtemp())])
    """

    def __init__(self, dirname, resume=True):
        self.dirname = dirname
        self.resume = resume

    def _path(self, name):
        return os.path.join(os.fspath(self.dirname), name)

    def on_train_begin(self, net, **kwargs):
        if self.resume and not len(net.history) and os.path.isfile(self._path("history.json")):
            net.module_.load_state_dict(load_state_dict(self._path("params.pt")))
            net.optimizer_.load_state_dict(
                __import__("torch").load(self._path("optimizer.pt"), weights_only=True))
            from skorch.history import History

            with open(self._path("history.json")) as f:
                net.history_ = History(json.load(f))

    def on_epoch_end(self, net, **kwargs):
        save_state_dict(net.module_.state_dict(), self._path("params.pt"))
        save_state_dict(net.optimizer_.state_dict(), self._path("optimizer.pt"))
        atomic_write_bytes(self._path("history.json"), json.dumps(net.history.to_list()).encode())


class CosineLR(Callback):
    """Cosine learning-rate schedule over a fixed number of epochs, with warmup.

    The rate of epoch ``e`` (counted from 1 in ``net.history``) is the
    optimizer's initial rate times ``(e / warmup)`` during the first
    ``warmup`` epochs, then
    ``min_factor + (1 - min_factor) * (1 + cos(pi * t)) / 2`` with ``t``
    going from 0 to 1 over the remaining epochs. Because the epoch comes from
    the history, a run resumed by :class:`AtomicCheckpoint` (which restores
    the history) continues the same curve, unlike a torch scheduler whose
    step count starts again at zero. Each parameter group keeps its own
    initial rate (``"initial_lr"``, saved with the optimizer's state), so
    per-group learning rates scale together.

    Parameters
    ----------
    epochs : int
        Length of the whole schedule in epochs (the run's total, not what is
        left of it after a resume).
    warmup : int, default=0
        Epochs of linear warmup.
    min_factor : float, default=0.0
        Rate at the last epoch, as a fraction of the initial rate.

    Examples
    --------
    >>> from skcgcnn import CGCNNRegressor
    >>> from skcgcnn.callbacks import CosineLR
    >>> [round(CosineLR(10, warmup=2).factor(e), 3) for e in (1, 2, 3, 10)]
    [0.5, 1.0, 1.0, 0.038]
    >>> net = CGCNNRegressor(lr_decay_epoch=None, callbacks=[CosineLR(300, warmup=5)])
    """

    def __init__(self, epochs, warmup=0, min_factor=0.0):
        self.epochs = epochs
        self.warmup = warmup
        self.min_factor = min_factor

    def factor(self, epoch):
        """Multiplier of the initial learning rate in ``epoch`` (from 1)."""
        if epoch <= self.warmup:
            return epoch / self.warmup
        t = min((epoch - self.warmup - 1) / (self.epochs - self.warmup), 1.0)
        return self.min_factor + (1 - self.min_factor) * (1 + math.cos(math.pi * t)) / 2

    def on_train_begin(self, net, **kwargs):
        if int(self.epochs) < 1 or int(self.warmup) < 0 or int(self.warmup) >= int(self.epochs):
            raise ValueError(f"CosineLR needs epochs >= 1 and 0 <= warmup < epochs, got "
                             f"epochs={self.epochs}, warmup={self.warmup}")

    def on_epoch_begin(self, net, **kwargs):
        f = self.factor(len(net.history))
        for group in net.optimizer_.param_groups:
            # torch's convention: "initial_lr" is saved with the optimizer's state
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * f


class L2SP(Callback):
    """L2-SP: penalise the distance of the transferred weights to their pretrained values.

    Li, Grandvalet & Davoine, "Explicit inductive bias for transfer learning
    with convolutional networks", ICML 2018: instead of weight decay towards
    zero, fine-tuning adds ``alpha / 2 * ||w - w0||^2`` over the transferred
    parameters ``w`` (``w0``: their values when training starts), so that the
    network stays near what pretraining learned unless the data pull it away.
    The gradient of the penalty, ``alpha * (w - w0)``, is added to each such
    parameter's gradient after the loss's backward pass (skorch's
    ``on_grad_computed``), which is the same as adding the penalty to the
    loss for every optimizer; the recorded losses stay the data's MAE.
    Parameters without a gradient (frozen ones) are left alone; a new head is
    not transferred and so not penalised (``weight_decay`` still applies to
    everything, as the paper's second term does to the head).

    Parameters
    ----------
    alpha : float
        Strength of the penalty (per unit of the normalised target's loss).
    params : list of str, optional
        Names of the parameters to anchor (``module_.named_parameters()``);
        by default the net's ``transferred_`` entries
        (:class:`~skcgcnn.TransferCGCNNRegressor`).

    Attributes
    ----------
    reference_ : dict of str to torch.Tensor
        The anchored parameters' values at the start of training, kept for
        ``warm_start`` refits of the same network.

    Examples
    --------
    >>> import torch
    >>> from skcgcnn.callbacks import L2SP
    >>> layer = torch.nn.Linear(2, 1)
    >>> cb = L2SP(0.1, params=["weight"]).anchor(layer)
    >>> float(cb.penalty(layer))
    0.0
    >>> with torch.no_grad():
    ...     _ = layer.weight.add_(1.0)
    >>> round(float(cb.penalty(layer)), 6)  # 0.1 / 2 * (1 + 1)
    0.1
    """

    def __init__(self, alpha, params=None):
        self.alpha = alpha
        self.params = params

    def anchor(self, module, names=None):
        """Record the current values of ``module``'s anchored parameters as ``w0``."""
        names = set(self.params if self.params is not None else names or ())
        self.reference_ = {n: p.detach().clone() for n, p in module.named_parameters()
                           if n in names}
        self._module = module
        return self

    def on_train_begin(self, net, **kwargs):
        if float(self.alpha) < 0:
            raise ValueError(f"L2SP alpha must be >= 0, got {self.alpha}")
        if getattr(self, "_module", None) is net.module_:  # warm_start: keep w0
            return
        names = self.params if self.params is not None else getattr(net, "transferred_", None)
        if names is None:
            raise ValueError("L2SP anchors the transferred parameters: use it with a "
                             "TransferCGCNNRegressor or name them with params=")
        self.anchor(net.module_, names)

    def penalty(self, module):
        """``alpha / 2 * ||w - w0||^2`` of ``module``'s anchored parameters (a tensor)."""
        total = torch.zeros(())
        for name, p in module.named_parameters():
            if name in self.reference_:
                total = total + ((p.detach() - self.reference_[name]) ** 2).sum().cpu()
        return 0.5 * float(self.alpha) * total

    def on_grad_computed(self, net, named_parameters, **kwargs):
        alpha = float(self.alpha)
        if not alpha:
            return
        with torch.no_grad():
            for name, p in named_parameters:
                ref = self.reference_.get(name)
                if ref is not None and p.grad is not None:
                    p.grad.add_(p - ref, alpha=alpha)


class HeadFirst(Callback):
    """LP-FT: train only the head for the first epochs, then fine-tune everything.

    Kumar, Raghunathan, Jones, Ma & Liang, "Fine-tuning can distort pretrained
    features and underperform out-of-distribution", ICLR 2022: a randomly
    initialised head sends large gradients into the pretrained body at the
    start of fine-tuning and distorts its features; fitting the head first
    with the body frozen (linear probing), then fine-tuning all layers, did
    better both in and out of distribution. Here the body (the embedding and
    every convolution of a :class:`~skcgcnn.model.CGCNN`) has its gradients
    switched off and its batch norms kept in eval mode (running statistics
    unchanged) during the first ``epochs`` epochs; from epoch ``epochs + 1``
    the layers the estimator's own ``freeze`` names stay frozen and the rest
    train. The learning-rate schedule is not restarted: it runs over all the
    net's epochs, head-only ones included. At the end of training (even
    inside the head-only phase) the estimator's own freezing is restored.

    Parameters
    ----------
    epochs : int
        Head-only epochs, counted from 1 in ``net.history`` (so a run resumed
        from a checkpoint continues the same phases).

    Examples
    --------
    >>> from skcgcnn import TransferCGCNNRegressor
    >>> from skcgcnn.callbacks import HeadFirst
    >>> HeadFirst(5).epochs
    5
    """

    def __init__(self, epochs):
        self.epochs = epochs

    @staticmethod
    def _body(module):
        return [module.embedding, *module.convs]

    def on_train_begin(self, net, **kwargs):
        epochs = int(self.epochs)
        if epochs < 0:
            raise ValueError(f"HeadFirst epochs must be >= 0, got {self.epochs}")
        module = net.module_
        self._kept = list(getattr(module, "frozen", []))
        self._head_only = False
        if len(net.history) < epochs:
            self._freeze_body(module)

    def _freeze_body(self, module):
        module.freeze(self._kept + [m for m in self._body(module) if m not in self._kept])
        self._head_only = True

    def _restore(self, module):
        kept = {id(p) for m in self._kept for p in m.parameters()}
        for m in self._body(module):
            for p in m.parameters():
                if id(p) not in kept:
                    p.requires_grad_(True)
        module.freeze(self._kept)
        self._head_only = False

    def on_epoch_begin(self, net, **kwargs):
        # len(history) is the epoch starting now (skorch adds its row before the callbacks)
        if self._head_only and len(net.history) > int(self.epochs):
            self._restore(net.module_)

    def on_train_end(self, net, **kwargs):
        if self._head_only:
            self._restore(net.module_)


class ColumnMAE(Callback):
    """Validation MAE of each target column, in the targets' own units.

    Added by the estimators when ``y`` has several columns: the loss
    (``valid_loss``) averages all labelled entries on the normalised scale,
    so it cannot tell which property is learnt. Each epoch's history gets
    ``valid_mae_0``, ``valid_mae_1``, ... over the labelled validation
    crystals of each column (missing labels, NaN, are left out).

    Examples
    --------
    >>> import numpy as np
    >>> from ase.build import bulk
    >>> from skcgcnn import CGCNNRegressor
    >>> X = [bulk("Cu", a=a) for a in np.linspace(3.4, 3.8, 10)]
    >>> y = np.c_[np.linspace(3.4, 3.8, 10), np.linspace(1, 2, 10)]
    >>> net = CGCNNRegressor(max_epochs=2, batch_size=4, random_state=0).fit(X, y)
    >>> [k for k in net.history[-1] if k.startswith("valid_mae_")]
    ['valid_mae_0', 'valid_mae_1']
    """

    def on_epoch_begin(self, net, **kwargs):
        self.sum_, self.count_ = 0.0, 0.0

    def on_batch_end(self, net, batch=None, training=None, y_pred=None, **kwargs):
        if training or y_pred is None:
            return
        _, y_true = batch
        pred = net._denormalize(y_pred.detach().cpu().double().numpy())
        true = net._denormalize(y_true.cpu().double().numpy())
        known = ~np.isnan(true)
        err = np.where(known, np.abs(pred - true), 0.0)
        self.sum_ = self.sum_ + err.sum(axis=0)
        self.count_ = self.count_ + known.sum(axis=0)

    def on_epoch_end(self, net, **kwargs):
        if np.ndim(self.count_) == 0:  # no validation batch this epoch
            return
        for j, (s, c) in enumerate(zip(self.sum_, self.count_)):
            net.history.record(f"valid_mae_{j}", float(s / c) if c else float("nan"))


@functools.lru_cache(maxsize=None)
def _glibc(name):
    """glibc's function ``name``, or None where the C library has none (musl, macOS)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


def _malloc_trim():
    """glibc's ``malloc_trim``, or None."""
    return _glibc("malloc_trim")


def _mallopt():
    """glibc's ``mallopt(int, int)``, or None."""
    mallopt = _glibc("mallopt")
    if mallopt is not None:
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


#: mallopt's parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _keep_freed_memory(mib):
    """Have glibc serve blocks up to ``mib`` MiB from its heap and keep up to
    ``mib`` MiB of freed memory there (where the C library is glibc)."""
    mallopt, size = _mallopt(), int(mib * 2**20)
    if mallopt is not None:
        # older glibc caps the mmap threshold at 32 MiB: then as much as it takes
        mallopt(_M_MMAP_THRESHOLD, size) or mallopt(_M_MMAP_THRESHOLD, min(size, 2**25))
        mallopt(_M_TRIM_THRESHOLD, size)


#: Environment variables of oneDNN's primitive cache and of ideep's (PyTorch's
#: oneDNN wrapper) LRU cache; both are read once, at the first oneDNN operation.
ONEDNN_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def limit_onednn_caches(capacity=16):
    """Bound the caches of oneDNN kernels, which grow with every new batch shape.

    oneDNN (PyTorch's CPU kernels for bfloat16 matrix products) keeps up to
    1,024 compiled kernels per cache, with their work buffers, keyed by the
    shapes they ran on. Every batch of crystal graphs has its own number of
    atoms and edges, so over a big epoch the caches fill with kernels that never
    run again, and the resident memory grows with the number of batches. With
    16 entries a bfloat16 epoch of 31,737 crystals peaked at 1.36 GiB instead
    of 2.1, in 22 % less CPU time, and no longer grew with the data set; a
    small fine-tune ran about 5 % slower, as kernels of recurring shapes are
    compiled again (``docs/performance.md``). float32 does not use these caches.

    The capacities are read once per process, at its first oneDNN operation,
    so call this before any training or prediction (``skcgcnn pretrain`` and
    :func:`~skcgcnn.pretraining.pretrain` do, and the estimators' ``fit`` on
    10,000 crystals or more); values already in the environment are kept.

    Parameters
    ----------
    capacity : int, default=16
        Kernels kept per cache.

    Returns
    -------
    capacities : dict
        The environment variables and the values in force.

    Examples
    --------
    >>> from skcgcnn.callbacks import limit_onednn_caches
    >>> sorted(limit_onednn_caches())
    ['LRU_CACHE_CAPACITY', 'ONEDNN_PRIMITIVE_CACHE_CAPACITY']
    """
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"capacity must be a positive int; got {capacity!r}")
    return {k: os.environ.setdefault(k, str(capacity)) for k in ONEDNN_CACHE_VARIABLES}


def _rss_mib():
    """Resident memory of this process in MiB (Linux), or None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


class ReleaseMemory(Callback):
    """Give freed heap memory back to the operating system between epochs.

    Batches of crystal graphs differ in size, so glibc's heap fragments: the
    resident memory of a long run grew by about 150 MiB per epoch (10 GiB
    after 30 epochs of 18,000 crystals). The resident memory at the end of the
    first epoch is the run's level (the data, and the heap that one batch's
    tensors need, which the next batches reuse); at the end of a later epoch
    in which it has grown by more than ``threshold_mib`` above that level,
    this calls glibc's ``malloc_trim(0)``, which keeps it flat. A release
    costs the page faults of touching that memory again (about 12 % of an
    epoch of 3,000 crystals when done after every epoch), hence the threshold
    (``docs/performance.md``). The estimators add it by default
    (``callbacks__release_memory=None`` switches it off); elsewhere than
    glibc on Linux it does nothing.

    Within an epoch the heap grows too (batches of different sizes leave holes
    that the next batch cannot reuse: a 10,000-crystal epoch of batch 256 went
    from 0.65 to 1.85 GiB). Once it has grown by ``batch_threshold_mib`` (above
    the level, or in the first epoch above the start or the last release), a
    release is made after that training batch, so the
    peak is bounded by about that much above the data and one batch's tensors,
    whatever the number of crystals (docs/performance.md, "Memory over a long
    run").

    During training, freed memory stays in the heap for the next batches
    (``keep_freed_mib``): left to itself, glibc gives every freed block above
    32 MiB back to the operating system (the edge tensors of a batch of 256
    Materials Project crystals in float32 are 41 MB), and touching such memory
    again costs a page fault per 4 KiB. That was 45 % of a float32 training
    step: with the memory kept, a step of 256 random Materials Project crystals
    on 2 threads took 0.21 s instead of 0.40 (``docs/performance.md``). This
    callback gives the memory back instead, at its thresholds.

    Parameters
    ----------
    threshold_mib : float, default=256
        Growth of the resident memory (MiB) that triggers a release at the end
        of an epoch.
    batch_threshold_mib : float or None, default=1024
        Growth (MiB) that triggers a release after a training batch; ``None``
        releases only between epochs. Each release costs the page faults of
        touching the released memory again, so keep it well above one batch's
        tensors (a few hundred MiB for 256 Materials Project crystals).
    keep_freed_mib : float or None, default=1024
        At the start of training, glibc is set (``mallopt``) to serve blocks
        up to this size (MiB) from its heap and to keep up to this much freed
        memory there; the setting stays for the rest of the process. ``None``
        leaves glibc's settings alone.

    Examples
    --------
    >>> from skcgcnn.callbacks import ReleaseMemory
    >>> release = ReleaseMemory(threshold_mib=0)
    >>> release.on_train_begin(net=None)
    >>> release.on_epoch_end(net=None)
    """

    def __init__(self, threshold_mib=256, batch_threshold_mib=1024, keep_freed_mib=1024):
        self.threshold_mib = threshold_mib
        self.batch_threshold_mib = batch_threshold_mib
        self.keep_freed_mib = keep_freed_mib

    def on_train_begin(self, net, **kwargs):
        keep = self.keep_freed_mib
        if keep is not None:
            if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep < 2048:
                raise ValueError("keep_freed_mib must be None or a number of MiB in (0, 2048); "
                                 f"got {keep!r}")
            _keep_freed_memory(keep)
        self.baseline_mib_, self.level_set_ = _rss_mib(), False

    def _release_if_grown(self, threshold_mib):
        trim, rss = _malloc_trim(), _rss_mib()
        if trim is None or rss is None:
            return
        if rss - (self.baseline_mib_ or 0.0) > threshold_mib:
            trim(0)
            if not self.level_set_:  # first epoch: measure growth from here on
                self.baseline_mib_ = _rss_mib()

    def on_epoch_end(self, net, **kwargs):
        if self.level_set_:
            self._release_if_grown(self.threshold_mib)
        else:  # the first epoch's end: the level of the run
            self.baseline_mib_, self.level_set_ = _rss_mib(), True

    def on_batch_end(self, net, training=False, **kwargs):
        if training and self.batch_threshold_mib is not None:
            self._release_if_grown(self.batch_threshold_mib)
