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
import threading

import numpy as np
import torch
from skorch.callbacks import Callback

from .io import atomic_write_bytes, load_state_dict, save_state_dict

__all__ = ["AtomicCheckpoint", "ColumnMAE", "CosineLR", "HeadFirst", "L2SP", "ReleaseMemory",
           "limit_onednn_caches"]


class AtomicCheckpoint(Callback):
    """Save everything that decides the rest of a run after every epoch, atomically.

    Unlike skorch's ``Checkpoint`` it never writes into the working directory
    by default, never leaves a half-written file (temporary file, then
    rename), and resumes: when ``dirname`` holds a checkpoint and the net has
    no history yet, training begins from it, and goes on as the run would
    have gone on without the interruption. Restored at the start of training:

    - the parameters, the optimizer's state (its moments and learning rates)
      and the history, so that a schedule that reads the epoch from the
      history (:class:`CosineLR`) continues its curve;
    - the best score of every scoring callback (skorch's ``valid_loss``
      included), so that ``valid_loss_best`` compares with the best epoch so
      far, not with infinity;
    - the state of every ``EarlyStopping``: its best score and epoch, the
      epochs without improvement counted against its patience, and the best
      epoch's weights that ``load_best`` restores at the end;
    - torch's and numpy's global random states as they were at the end of
      the checkpointed epoch, so that the next epoch shuffles (and drops out)
      as it would have; this wins over the seeding of ``random_state`` in
      :meth:`~skcgcnn.CGCNNRegressor.fit` (whose ``random_state`` keeps both
      generators private to the fit; with ``random_state=None`` the global
      generators carry on from the checkpoint's).

    A resumed run trains ``max_epochs`` more epochs and a torch scheduler of
    skorch's ``LRScheduler`` starts counting again: to finish a run of a
    fixed length, pass what is left (:func:`~skcgcnn.pretraining.pretrain`
    does, and moves a step decay accordingly). On a GPU the shuffling follows
    (it draws from the CPU generator), but CUDA kernels are not bit-for-bit
    reproducible, so neither is a resumed run there.

    Parameters
    ----------
    dirname : str or path-like
        Folder of ``params.pt``, ``optimizer.pt``, ``state.pt`` (random
        states and early-stopping epochs), ``best-<name>-<epoch>.pt`` (the
        best weights of each ``EarlyStopping`` with ``load_best``) and
        ``history.json`` (written last: an epoch is checkpointed once it is
        there).
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
            import torch
            from skorch.history import History

            net.module_.load_state_dict(load_state_dict(self._path("params.pt")))
            net.optimizer_.load_state_dict(torch.load(self._path("optimizer.pt"),
                                                      weights_only=True))
            with open(self._path("history.json")) as f:
                net.history_ = History(json.load(f))
            state = (load_state_dict(self._path("state.pt"))
                     if os.path.isfile(self._path("state.pt")) else {})
            _restore_scores(net)
            for name, cb in _early_stoppings(net):
                _replay_early_stopping(cb, net.history)
                best = self._path(f"best-{name}-{cb.best_epoch_}.pt")
                if getattr(cb, "load_best", False) and os.path.isfile(best):
                    cb.best_model_weights_ = load_state_dict(best)
            if state:  # checkpoints of older versions hold no random state
                _set_random_state(state)

    def on_epoch_end(self, net, **kwargs):
        epoch = net.history[-1, "epoch"]
        best_files = []
        for name, cb in _early_stoppings(net):
            if getattr(cb, "load_best", False) and getattr(cb, "best_epoch_", None) == epoch:
                best_files.append((name, self._path(f"best-{name}-{epoch}.pt")))
                save_state_dict(net.module_.state_dict(), best_files[-1][1])
        save_state_dict(net.module_.state_dict(), self._path("params.pt"))
        save_state_dict(net.optimizer_.state_dict(), self._path("optimizer.pt"))
        save_state_dict(_random_state(), self._path("state.pt"))
        atomic_write_bytes(self._path("history.json"), json.dumps(net.history.to_list()).encode())
        for name, kept in best_files:  # the epoch is committed: older best weights can go
            prefix = f"best-{name}-"
            for old in os.listdir(os.fspath(self.dirname)):
                if old.startswith(prefix) and old.endswith(".pt") and self._path(old) != kept:
                    os.remove(self._path(old))


def _random_state():
    """torch's and numpy's global random states as a dict of tensors."""
    import torch

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    if kind != "MT19937":  # numpy's legacy global generator is always MT19937
        raise ValueError(f"numpy's global generator is {kind}, expected MT19937")
    return {"torch": torch.get_rng_state(),
            "numpy_keys": torch.from_numpy(keys.astype(np.int64)),
            "numpy_pos": torch.tensor(int(pos)), "numpy_has_gauss": torch.tensor(int(has_gauss)),
            "numpy_cached_gaussian": torch.tensor(float(cached), dtype=torch.float64)}


def _set_random_state(state):
    """Set torch's and numpy's global random states from :func:`_random_state`'s dict."""
    import torch

    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32),
                         int(state["numpy_pos"]), int(state["numpy_has_gauss"]),
                         float(state["numpy_cached_gaussian"])))


def _restore_scores(net):
    """Give scoring callbacks (``valid_loss``, ...) the best score of the restored history.

    skorch's ``BatchScoring``/``EpochScoring`` read it from the history at
    ``on_train_begin``, which runs before the history is restored;
    ``PassthroughScoring`` (``train_loss``, ``valid_loss``) never does.
    """
    for _, cb in net.callbacks_:
        if not hasattr(cb, "best_score_") or getattr(cb, "lower_is_better", None) is None:
            continue
        name = getattr(cb, "name_", None) or getattr(cb, "name", None)
        best = [row[name] for row in net.history if row.get(f"{name}_best") and name in row]
        if best:  # the last epoch marked best holds the best score
            cb.best_score_ = best[-1]


def _early_stoppings(net):
    """(name, callback) of the net's ``EarlyStopping`` callbacks."""
    from skorch.callbacks import EarlyStopping

    return [(name, cb) for name, cb in net.callbacks_ if isinstance(cb, EarlyStopping)]


def _replay_early_stopping(cb, history):
    """Bring an ``EarlyStopping`` to the state it had after the epochs of ``history``.

    Its own rule, epoch by epoch: an improvement beyond the threshold resets
    the misses and moves the best epoch, anything else counts a miss.
    """
    cb.misses_, cb.best_epoch_ = 0, 0
    cb.dynamic_threshold_ = np.inf if cb.lower_is_better else -np.inf
    for row in history:
        if cb.monitor not in row:
            continue
        if cb._is_score_improved(row[cb.monitor]):
            cb.misses_, cb.best_epoch_ = 0, row["epoch"]
            cb.dynamic_threshold_ = cb._calc_new_threshold(row[cb.monitor])
        else:
            cb.misses_ += 1


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
#: What :class:`ReleaseMemory` sets when training ends: glibc's own dynamic mmap threshold
#: rises, as the process frees mmapped blocks, up to 32 MiB (DEFAULT_MMAP_THRESHOLD_MAX on
#: 64-bit), with a trim threshold of twice that; a fit of Materials Project batches frees
#: such blocks, so this is where glibc would have been. Its initial 128 KiB, fixed (a mallopt
#: turns the dynamic rise off for good), made numpy allocating and freeing 0.5-16 MiB arrays
#: 2 to 10 times slower (docs/results/glibc_after_training.json).
RESTORED_MMAP_THRESHOLD, RESTORED_TRIM_THRESHOLD = 32 * 2**20, 64 * 2**20

_malloc_lock = threading.Lock()
_malloc_holds = 0  # trainings (threads) that hold freed memory now


def _keep_freed_memory(mib):
    """Have glibc serve blocks up to ``mib`` MiB from its heap and keep up to
    ``mib`` MiB of freed memory there, until :func:`_give_back_freed_memory`.

    Counted: with several trainings at once (threads), the first sets glibc's
    thresholds and the last one to finish restores them. Returns whether the
    setting was made (False where the C library is not glibc).
    """
    global _malloc_holds
    mallopt, size = _mallopt(), int(mib * 2**20)
    if mallopt is None:
        return False
    with _malloc_lock:
        if not _malloc_holds:
            # older glibc caps the mmap threshold at 32 MiB: then as much as it takes
            mallopt(_M_MMAP_THRESHOLD, size) or mallopt(_M_MMAP_THRESHOLD, min(size, 2**25))
            mallopt(_M_TRIM_THRESHOLD, size)
        _malloc_holds += 1
    return True


def _give_back_freed_memory():
    """Undo one :func:`_keep_freed_memory`; the last one restores glibc's thresholds.

    glibc has no getter for them, and any ``mallopt`` turns its dynamic mmap
    threshold off for good, so what is set is where that dynamic rule ends
    after a fit: blocks above 32 MiB served by ``mmap`` (and given back when
    freed), free heap above 64 MiB trimmed (``RESTORED_MMAP_THRESHOLD``,
    ``RESTORED_TRIM_THRESHOLD``); then ``malloc_trim(0)`` returns the freed
    heap to the system.
    """
    global _malloc_holds
    with _malloc_lock:
        if _malloc_holds <= 0:
            return
        _malloc_holds -= 1
        if not _malloc_holds:
            mallopt = _mallopt()
            mallopt(_M_MMAP_THRESHOLD, RESTORED_MMAP_THRESHOLD)
            mallopt(_M_TRIM_THRESHOLD, RESTORED_TRIM_THRESHOLD)
            _malloc_trim()(0)


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

    It sets the environment variables ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` and
    ``LRU_CACHE_CAPACITY`` that are not set yet (values already in the
    environment are kept). Used in a ``with`` statement, it removes the ones
    it set when the block ends, so that neither the process nor the workers
    it starts later inherit them: :func:`~skcgcnn.pretraining.pretrain`,
    ``skcgcnn pretrain`` and the estimators' ``fit`` on 10,000 crystals or
    more do so around training. Called alone, they stay for the rest of the
    process.

    What is guaranteed: the environment after the ``with`` block is as before
    it. What is not: oneDNN and ideep read the capacities once per process,
    at the first oneDNN operation. If that operation runs inside the block
    (as in a fresh process whose first work is that training), the bound
    holds for the rest of the process even after the variables are gone; if
    an earlier operation (a bfloat16 fit or prediction before) already read
    them, this changes nothing until the process ends.

    Parameters
    ----------
    capacity : int, default=16
        Kernels kept per cache.

    Returns
    -------
    capacities : dict
        The environment variables and the values in force; also a context
        manager that removes the variables it set on exit.

    Examples
    --------
    >>> import os
    >>> from skcgcnn.callbacks import limit_onednn_caches
    >>> with limit_onednn_caches() as capacities:
    ...     sorted(capacities)  # train here
    ['LRU_CACHE_CAPACITY', 'ONEDNN_PRIMITIVE_CACHE_CAPACITY']
    >>> "ONEDNN_PRIMITIVE_CACHE_CAPACITY" in os.environ  # unless it was set before
    False
    """
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"capacity must be a positive int; got {capacity!r}")
    return _CacheCapacities(capacity)


_environ_lock = threading.Lock()


class _CacheCapacities(dict):
    """:func:`limit_onednn_caches`'s result: the capacities in force, and a context
    manager that removes on exit the variables it set (if nobody changed them since)."""

    def __init__(self, capacity):
        with _environ_lock:
            self.set_ = {k: str(capacity) for k in ONEDNN_CACHE_VARIABLES if k not in os.environ}
            os.environ.update(self.set_)
            super().__init__((k, os.environ[k]) for k in ONEDNN_CACHE_VARIABLES)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        with _environ_lock:
            for k, v in self.set_.items():
                if os.environ.get(k) == v:
                    del os.environ[k]
            self.set_ = {}


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
        memory there. At the end of training (``on_train_end``; the
        estimators' ``fit`` also when training raises) ``malloc_trim(0)``
        gives the freed heap back and glibc is set as its own dynamic rule
        would have left it after such a fit: blocks above 32 MiB by ``mmap``,
        free heap above 64 MiB trimmed, so that memory freed after ``fit``
        returns to the system (glibc has no getter for these settings and
        turns its dynamic rule off at any ``mallopt``, so the rule itself
        cannot be restored). ``None`` leaves glibc's settings alone.

    Examples
    --------
    >>> from skcgcnn.callbacks import ReleaseMemory
    >>> release = ReleaseMemory(threshold_mib=0)
    >>> release.on_train_begin(net=None)
    >>> release.on_epoch_end(net=None)
    >>> release.on_train_end(net=None)  # glibc's thresholds restored
    """

    def __init__(self, threshold_mib=256, batch_threshold_mib=1024, keep_freed_mib=1024):
        self.threshold_mib = threshold_mib
        self.batch_threshold_mib = batch_threshold_mib
        self.keep_freed_mib = keep_freed_mib

    def on_train_begin(self, net, **kwargs):
        keep = self.keep_freed_mib
        self.give_back()  # a training that raised before without on_train_end
        if keep is not None:
            if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep < 2048:
                raise ValueError("keep_freed_mib must be None or a number of MiB in (0, 2048); "
                                 f"got {keep!r}")
            self.holding_ = _keep_freed_memory(keep)
        self.baseline_mib_, self.level_set_ = _rss_mib(), False

    def on_train_end(self, net, **kwargs):
        self.give_back()

    def give_back(self):
        """Restore glibc's thresholds if this callback set them, and trim the heap.

        Called by ``on_train_end``, and by the estimators' ``fit`` when
        training raises (skorch calls ``on_train_end`` only after a normal end
        or a ``KeyboardInterrupt``); a second call does nothing.
        """
        if self.__dict__.pop("holding_", False):
            _give_back_freed_memory()

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
