"""skorch callbacks of skcgcnn: atomic, resumable checkpoints."""

from __future__ import annotations

import json
import os

from skorch.callbacks import Callback

from .io import atomic_write_bytes, load_state_dict, save_state_dict

__all__ = ["AtomicCheckpoint"]


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
