"""Tests of skcgcnn.data: the graph Dataset and the collate function."""

import numpy as np
import pytest
import torch

from skcgcnn.data import GraphBatch, GraphDataset, GraphLoader, collate_graphs
from skcgcnn.graph import CrystalGraph, as_graph_array


def make_graph(n_atoms, edges, z=6):
    """A hand-made graph: ``edges`` is a list of (center, neighbor, distance)."""
    c, n, d = zip(*edges) if edges else ((), (), ())
    return CrystalGraph(
        numbers=np.full(n_atoms, z, dtype=np.int16),
        centers=np.asarray(c, dtype=np.int32),
        neighbors=np.asarray(n, dtype=np.int32),
        distances=np.asarray(d, dtype=np.float32),
    )


G0 = make_graph(2, [(0, 1, 1.0), (1, 0, 1.0), (1, 1, 2.0)], z=1)
G1 = make_graph(3, [(0, 2, 1.5), (2, 0, 1.5)], z=8)
G2 = make_graph(1, [], z=29)  # an isolated atom
G3 = make_graph(1, [(0, 0, 2.5), (0, 0, 2.5)], z=26)


def test_collate_shifts_indices_by_previous_atom_counts():
    X, y = collate_graphs([(G0, 1.0), (G1, 2.0), (G2, 3.0), (G3, 4.0)])
    # atoms: G0 0-1, G1 2-4, G2 5, G3 6
    assert X["centers"].tolist() == [0, 1, 1, 2 + 0, 2 + 2, 6, 6]
    assert X["neighbors"].tolist() == [1, 0, 1, 2 + 2, 2 + 0, 6, 6]
    np.testing.assert_allclose(X["distances"].numpy(), [1.0, 1.0, 2.0, 1.5, 1.5, 2.5, 2.5])
    assert X["numbers"].tolist() == [1, 1, 8, 8, 8, 29, 26]
    assert X["crystal"].tolist() == [0, 0, 1, 1, 1, 2, 3]
    assert X["n_atoms"].tolist() == [2, 3, 1, 1]
    assert y.dtype == torch.float32
    assert y.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_collate_dtypes_and_shapes():
    X, y = collate_graphs([(G0, 0.5), (G1, -0.5)])
    assert set(X) == {"numbers", "centers", "neighbors", "distances", "crystal", "n_atoms"}
    for key in ("numbers", "centers", "neighbors", "crystal", "n_atoms"):
        assert X[key].dtype == torch.int64, key
    assert X["distances"].dtype == torch.float32
    assert X["numbers"].shape == X["crystal"].shape == (5,)
    assert X["centers"].shape == X["neighbors"].shape == X["distances"].shape == (5,)
    assert X["n_atoms"].shape == y.shape == (2,)
    # edges index only atoms of their own crystal
    crystal = X["crystal"]
    assert (crystal[X["centers"]] == crystal[X["neighbors"]]).all()


def test_collate_single_graph_is_unshifted():
    X, y = collate_graphs([(G1, 7.0)])
    assert X["centers"].tolist() == G1.centers.tolist()
    assert X["neighbors"].tolist() == G1.neighbors.tolist()
    assert X["crystal"].tolist() == [0, 0, 0]
    assert y.tolist() == [7.0]


def test_graph_batch_len_and_unpacking():
    batch = collate_graphs([(G0, 1.0), (G1, 2.0), (G2, 3.0)])
    assert isinstance(batch, GraphBatch)
    # the number of crystals, not atoms (6) nor edges (5)
    assert len(batch) == 3
    X, y = batch
    assert X is batch.X and y is batch.y
    assert list(batch) == [batch.X, batch.y]


def test_graph_dataset_with_targets():
    ds = GraphDataset(as_graph_array([G0, G1]), [1.5, -2.0])
    assert len(ds) == 2
    g, t = ds[1]
    assert g is G1 and t == -2.0 and isinstance(t, float)
    assert ds.y.dtype == np.float32
    # a column vector of targets is flattened
    assert GraphDataset([G0, G1], np.array([[1.0], [2.0]])).y.shape == (2,)


def test_graph_dataset_without_targets_gives_nan():
    ds = GraphDataset([G0, G1, G2])
    assert len(ds) == 3
    for i in range(3):
        g, t = ds[i]
        assert np.isnan(t)
    _, y = collate_graphs([ds[0], ds[1]])
    assert torch.isnan(y).all() and y.shape == (2,)


def test_graph_dataset_wrong_length_raises():
    with pytest.raises(ValueError):
        GraphDataset([G0, G1], [1.0, 2.0, 3.0])


def test_graph_loader_batches_with_collate():
    ds = GraphDataset(as_graph_array([G0, G1, G2, G3]), [1.0, 2.0, 3.0, 4.0])
    batches = list(GraphLoader(ds, batch_size=3, shuffle=False))
    assert [len(b) for b in batches] == [3, 1]
    X, y = batches[0]
    assert X["n_atoms"].tolist() == [2, 3, 1]
    assert y.tolist() == [1.0, 2.0, 3.0]
    X, y = batches[1]
    assert X["centers"].tolist() == [0, 0] and X["crystal"].tolist() == [0]
