"""Multi-output y: several target columns, missing labels masked, per-column statistics."""

import numpy as np
import pytest
import torch

from skcgcnn import CGCNNRegressor, TransferCGCNNRegressor
from skcgcnn.pretrained import load_estimator, load_pretrained, save_pretrained

FAST = dict(max_epochs=5, batch_size=4, lr=0.02, lr_decay_epoch=None, random_state=0)


@pytest.fixture(scope="module")
def two_targets(tiny):
    _, graphs, v = tiny
    y = np.c_[v, 100.0 - 3.0 * v]  # different means and scales
    return graphs, y


def test_two_columns_learn_and_predict_2d(two_targets):
    graphs, y = two_targets
    net = CGCNNRegressor(**{**FAST, "max_epochs": 60}, validation_fraction=None).fit(graphs, y)
    pred = net.predict(graphs)
    assert pred.shape == (len(y), 2)
    mae, mad = np.abs(pred - y).mean(0), np.abs(y - y.mean(0)).mean(0)
    assert (mae < 0.5 * mad).all()  # each column beats its mean predictor
    np.testing.assert_allclose(net.module_.target_mean.numpy(), y.mean(0))
    np.testing.assert_allclose(net.module_.target_scale.numpy(), y.std(0))
    assert net.history[-1, "train_loss"] < net.history[0, "train_loss"]


def test_single_column_2d_y_is_the_1d_model(tiny):
    _, graphs, y = tiny
    a = CGCNNRegressor(**FAST).fit(graphs, y).predict(graphs)
    b = CGCNNRegressor(**FAST).fit(graphs, y[:, None]).predict(graphs)
    assert b.shape == (len(y),)
    np.testing.assert_array_equal(a, b)


def test_missing_labels_are_masked(two_targets):
    graphs, y = two_targets
    y_missing = y.copy()
    y_missing[::2, 1] = np.nan
    net = CGCNNRegressor(**FAST, validation_fraction=None).fit(graphs, y_missing)
    assert np.isfinite(net.history[:, "train_loss"]).all()
    # statistics of the second column come from its labelled rows only
    assert net.module_.target_mean[1].item() == pytest.approx(y[1::2, 1].mean())
    # a missing label contributes nothing: changing the value under the mask is moot
    loss = net.get_loss(torch.tensor([[0.0, 5.0]]), torch.tensor([[1.0, float("nan")]]))
    assert loss.item() == pytest.approx(1.0)
    assert net.get_loss(torch.tensor([[0.0, 5.0]]), torch.full((1, 2), float("nan"))).item() == 0


def test_per_column_mae_in_history(two_targets):
    graphs, y = two_targets
    net = CGCNNRegressor(**{**FAST, "max_epochs": 20}).fit(graphs, y)
    row = net.history[-1]
    assert {"valid_mae_0", "valid_mae_1"} <= set(row)
    # the second column is three times the first (plus a constant): so are its errors
    assert row["valid_mae_1"] == pytest.approx(3 * row["valid_mae_0"], rel=0.5)


def test_bad_multi_output_targets(two_targets):
    graphs, y = two_targets
    bad = y.copy()
    bad[:, 1] = np.nan
    with pytest.raises(ValueError, match=r"column\(s\) \[1\] have no finite value"):
        CGCNNRegressor(**FAST).fit(graphs, bad)
    bad = y.copy()
    bad[3, 0] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        CGCNNRegressor(**FAST).fit(graphs, bad)
    with pytest.raises(ValueError, match="NaN"):
        CGCNNRegressor(**FAST).fit(graphs, np.where(np.arange(len(y)) == 2, np.nan, y[:, 0]))


def test_save_load_and_transfer_from_a_multi_output_model(two_targets, tmp_path):
    graphs, y = two_targets
    net = CGCNNRegressor(**FAST).fit(graphs, y)
    card = save_pretrained(net, tmp_path / "multi")
    assert card["architecture"]["n_targets"] == 2 and len(card["target_mean"]) == 2
    np.testing.assert_allclose(load_estimator(tmp_path / "multi.pt").predict(graphs),
                               net.predict(graphs), rtol=1e-6)
    module, _ = load_pretrained(tmp_path / "multi.pt")
    # a new head for one target keeps the convolutions
    tl = TransferCGCNNRegressor(tmp_path / "multi.pt", **FAST).fit(graphs, y[:, 0])
    assert tl.predict(graphs).shape == (len(y),)
    assert "convs.0.fc_bond.weight" in tl.transferred_
    assert not any(k.startswith(("fc_out", "target_")) for k in tl.transferred_)
    # the kept head predicts both targets again
    keep = TransferCGCNNRegressor(tmp_path / "multi.pt", head="keep", **FAST).fit(graphs, y)
    assert keep.predict(graphs).shape == (len(y), 2)
    with pytest.raises(ValueError, match="head='keep'"):
        TransferCGCNNRegressor(tmp_path / "multi.pt", head="keep", **FAST).fit(graphs, y[:, 0])
