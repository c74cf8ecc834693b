"""Batching crystal graphs of different sizes for torch."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["GraphDataset", "GraphBatch", "collate_graphs", "GraphLoader"]


class GraphDataset(Dataset):
    """A torch Dataset over crystal graphs and optional targets.

    skorch builds it as ``dataset(X, y)``; items are ``(graph, target)``
    pairs, with target ``nan`` when ``y`` is None.

    Parameters
    ----------
    X : sequence of CrystalGraph
    y : array-like of shape (n_samples,) or (n_samples, n_targets), optional

    Examples
    --------
    >>> from ase.build import bulk
    >>> from skcgcnn import CrystalGraphTransformer
    >>> from skcgcnn.data import GraphDataset
    >>> ds = GraphDataset(CrystalGraphTransformer().transform([bulk("Cu")]), [1.5])
    >>> len(ds), ds[0][1]
    (1, 1.5)
    """

    def __init__(self, X, y=None, length=None):
        self.X = X
        y = None if y is None else np.asarray(y, dtype=np.float32)
        # one column per target when there are several, else a flat vector
        self.y = y if y is None or (y.ndim == 2 and y.shape[1] > 1) else y.reshape(len(X))

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        if self.y is None:
            return self.X[i], np.nan
        return self.X[i], (self.y[i] if self.y.ndim == 2 else float(self.y[i]))


class GraphBatch:
    """A collated minibatch: unpacks as ``X, y``; its length is the number of crystals.

    skorch counts a batch's samples with ``len``; a plain ``(dict, y)`` tuple
    would make it compare the lengths of the atom and edge tensors instead.
    """

    __slots__ = ("X", "y")

    def __init__(self, X, y):
        self.X = X
        self.y = y

    def __iter__(self):
        return iter((self.X, self.y))

    def __len__(self):
        return len(self.y)


def collate_graphs(batch):
    """Merge ``(graph, target)`` pairs into one disconnected batch graph.

    Atom indices of each graph are shifted by the number of atoms before it;
    the work is a handful of numpy concatenations, no loop over atoms.

    Parameters
    ----------
    batch : list of (CrystalGraph, float)

    Returns
    -------
    batch : GraphBatch
        Unpacks as ``X, y``:

    X : dict of tensors
        ``numbers`` (n_atoms,), ``centers`` and ``neighbors`` (n_edges,) into
        the batch's atoms, ``distances`` (n_edges,) in angstrom, ``crystal``
        (n_atoms,) the crystal each atom belongs to, and ``n_atoms``
        (n_crystals,). Passed to :class:`~skcgcnn.model.CGCNN` as keywords.
    y : tensor of shape (n_crystals,) or (n_crystals, n_targets), float32

    Examples
    --------
    >>> from ase.build import bulk
    >>> from skcgcnn import CrystalGraphTransformer
    >>> from skcgcnn.data import collate_graphs
    >>> g = CrystalGraphTransformer().transform([bulk("Cu"), bulk("NaCl", "rocksalt", a=5.6)])
    >>> X, y = collate_graphs([(g[0], 1.0), (g[1], 2.0)])
    >>> X["crystal"].tolist(), int(X["centers"].max())
    ([0, 1, 1], 2)
    """
    graphs = [b[0] for b in batch]
    n_atoms = np.fromiter((g.n_atoms for g in graphs), dtype=np.int64, count=len(graphs))
    n_edges = np.fromiter((g.n_edges for g in graphs), dtype=np.int64, count=len(graphs))
    shift = np.repeat(np.cumsum(n_atoms) - n_atoms, n_edges)
    X = {
        "numbers": torch.from_numpy(np.concatenate([g.numbers for g in graphs]).astype(np.int64)),
        "centers": torch.from_numpy(np.concatenate([g.centers for g in graphs]) + shift),
        "neighbors": torch.from_numpy(np.concatenate([g.neighbors for g in graphs]) + shift),
        "distances": torch.from_numpy(np.concatenate([g.distances for g in graphs])),
        "crystal": torch.from_numpy(np.repeat(np.arange(len(graphs)), n_atoms)),
        "n_atoms": torch.from_numpy(n_atoms),
    }
    y = torch.from_numpy(np.asarray([b[1] for b in batch], dtype=np.float32))
    return GraphBatch(X, y)


class GraphLoader(DataLoader):
    """A DataLoader whose default ``collate_fn`` is :func:`collate_graphs`.

    Without shuffling it draws from a private generator, so that predicting
    leaves torch's global random state untouched (a DataLoader draws a seed
    every epoch even when it does not shuffle).
    """

    def __init__(self, dataset, collate_fn=collate_graphs, shuffle=False, generator=None,
                 **kwargs):
        if generator is None and not shuffle:
            generator = torch.Generator()
        super().__init__(dataset, collate_fn=collate_fn, shuffle=shuffle, generator=generator,
                         **kwargs)
