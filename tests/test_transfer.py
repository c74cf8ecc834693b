import numpy as np
import pytest
import torch

from skcgcnn import CGCNNRegressor, CrystalGraphTransformer, TransferCGCNNRegressor
from skcgcnn.io import load_state_dict
from skcgcnn.pretrained import list_pretrained, load_pretrained, save_pretrained

FAST = dict(max_epochs=3, batch_size=8, random_state=0)


@pytest.fixture(scope="module")
def source(tiny, tmp_path_factory):
    """A small pretrained model saved as a library file."""
    _, graphs, y = tiny
    net = CGCNNRegressor(atom_fea_len=16, h_fea_len=24, **FAST).fit(graphs, y)
    path = tmp_path_factory.mktemp("pretrained") / "tiny.pt"
    save_pretrained(net, path, target="volume", units="A^3/atom")
    return net, path


def test_initialize_loads_every_pretrained_tensor(source):
    _, path = source
    model = TransferCGCNNRegressor(path, head="keep").initialize()
    saved = load_state_dict(path)
    state = model.module_.state_dict()
    assert set(model.transferred_) == set(saved)
    for k, v in saved.items():
        assert torch.equal(state[k], v), k


def test_new_head_is_reinitialised(source):
    _, path = source
    model = TransferCGCNNRegressor(path, h_fea_len=8).initialize()
    assert model.module_.conv_to_fc.out_features == 8
    assert not any(k.startswith(("conv_to_fc", "fc_out")) for k in model.transferred_)
    saved = load_state_dict(path)
    assert torch.equal(model.module_.convs[0].fc_bond.weight, saved["convs.0.fc_bond.weight"])


@pytest.mark.parametrize("freeze, n_frozen_convs", [("all_but_head", 3), (1, 1), ("embedding", 0)])
def test_frozen_layers_stay_fixed_others_change(tiny, source, freeze, n_frozen_convs):
    _, graphs, y = tiny
    _, path = source
    model = TransferCGCNNRegressor(path, freeze=freeze, **FAST).fit(graphs, 2 * y)
    saved = load_state_dict(path)
    state = model.module_.state_dict()
    frozen = ("embedding.",) + tuple(f"convs.{i}." for i in range(n_frozen_convs))
    for k in saved:
        if k.startswith(frozen):  # weights and batch-norm running statistics
            assert torch.equal(state[k], saved[k]), k
    for i in range(n_frozen_convs, 3):
        assert not torch.equal(state[f"convs.{i}.fc_bond.weight"], saved[f"convs.{i}.fc_bond.weight"])
        assert not torch.equal(state[f"convs.{i}.bn1.running_mean"], saved[f"convs.{i}.bn1.running_mean"])
    assert all(n.startswith(frozen) for n in model.frozen_)


def test_target_normaliser_refitted_on_new_target(tiny, source):
    _, graphs, y = tiny
    _, path = source
    model = TransferCGCNNRegressor(path, **FAST).fit(graphs, 100 + y)
    assert model.module_.target_mean.item() == pytest.approx(100 + y.mean())


def test_from_fitted_estimator_and_errors(tiny, source):
    _, graphs, y = tiny
    net, path = source
    model = TransferCGCNNRegressor(net, **FAST).fit(graphs, y)
    assert model.predict(graphs).shape == (len(y),)
    with pytest.raises(ValueError, match="not fitted"):
        TransferCGCNNRegressor(CGCNNRegressor()).fit(graphs, y)
    with pytest.raises(ValueError, match="unknown pretrained model 'nope'"):
        TransferCGCNNRegressor("nope").fit(graphs, y)
    with pytest.raises(ValueError, match="freeze"):
        TransferCGCNNRegressor(path, freeze="conv").fit(graphs, y)
    with pytest.raises(ValueError, match="atom_fea_len=64 differs"):
        TransferCGCNNRegressor(path, atom_fea_len=64).fit(graphs, y)
    other = CrystalGraphTransformer(radius=6.0).transform(tiny[0])
    with pytest.raises(ValueError, match="radius=6.0"):
        TransferCGCNNRegressor(path, **FAST).fit(other, y)


@pytest.mark.skipif("mp-formation-energy" not in list_pretrained(), reason="not bundled")
def test_bundled_formation_energy_model_loads():
    module, card = load_pretrained("mp-formation-energy")
    assert card["target"] == "formation_energy_per_atom" and card["units"] == "eV/atom"
    assert card["n_validation"] == 2500 and card["n_test"] == 2500
    assert not module.training


def test_set_params_pretrained_reads_the_new_card(tiny, source, tmp_path):
    # the card is cached; another pretrained model must not be checked against the old one
    _, graphs, y = tiny
    _, path = source
    atoms = tiny[0]
    other_net = CGCNNRegressor(atom_fea_len=16, h_fea_len=24, radius=6.0, max_num_nbr=8,
                               **FAST).fit(CrystalGraphTransformer(6.0, 8).transform(atoms), y)
    other = tmp_path / "other.pt"
    save_pretrained(other_net, other)
    model = TransferCGCNNRegressor(path, **FAST)
    assert model._featurizer_settings() == (8.0, 12)
    model.set_params(pretrained=other)
    assert model._featurizer_settings() == (6.0, 8)
    assert model.card_["featurizer"]["radius"] == 6.0
    model.fit(CrystalGraphTransformer(6.0, 8).transform(atoms), y)
    with pytest.raises(ValueError, match="radius=6.0, max_num_nbr=8, but this model uses "
                                         "radius=8.0"):
        model.set_params(pretrained=path).fit(CrystalGraphTransformer(6.0, 8).transform(atoms), y)


def test_differential_learning_rates_for_pretrained_layers(tiny, source):
    _, graphs, y = tiny
    _, path = source
    groups = [("embedding.*", {"lr": 0.0}), ("convs.*", {"lr": 0.0})]
    model = TransferCGCNNRegressor(path, optimizer__param_groups=groups, **FAST)
    model.fit(graphs, 2 * y)
    saved = load_state_dict(path)
    state = model.module_.state_dict()
    # a learning rate of 0 keeps the pretrained weights, while the new head trains
    assert torch.equal(state["convs.0.fc_bond.weight"], saved["convs.0.fc_bond.weight"])
    # each group's own initial rate (the schedule scales them together)
    assert [g["initial_lr"] for g in model.optimizer_.param_groups] == [0.0, 0.0, model.lr]


def test_fine_tuning_defaults_are_short_cosine_runs(tiny, source):
    _, graphs, y = tiny
    _, path = source
    params = TransferCGCNNRegressor(path).get_params()
    assert params["batch_size"] == 32 and params["lr_schedule"] == "cosine"
    assert params["max_epochs"] < 100 and params["lr"] == 0.01
    assert CGCNNRegressor().get_params()["lr_schedule"] == "step"
    model = TransferCGCNNRegressor(path, max_epochs=4, batch_size=8, random_state=0)
    model.fit(graphs, y)
    lrs = [group["lr"] for group in model.optimizer_.param_groups]
    # epoch 4 of a 4-epoch half cosine: (1 + cos(3 pi / 4)) / 2 of the initial rate
    np.testing.assert_allclose(lrs, 0.01 * (1 + np.cos(0.75 * np.pi)) / 2)
    with pytest.raises(ValueError, match="lr_schedule must be"):
        TransferCGCNNRegressor(path, lr_schedule="linear", **FAST).fit(graphs, y)


def test_validation_fraction_auto_holds_out_only_where_a_validation_loss_is_needed(tiny, source):
    """"auto" (the default): a lone model trains on every crystal and keeps its last epoch;
    with n_iter_no_change, or as an ensemble's member, a fifth is held out."""
    from skcgcnn import EnsembleRegressor

    _, graphs, y = tiny
    _, path = source
    assert TransferCGCNNRegressor(path).get_params()["validation_fraction"] == "auto"
    alone = TransferCGCNNRegressor(path, **FAST).fit(graphs, y)
    assert alone.validation_indices_ is None and "valid_loss" not in alone.history_[-1]
    assert len(alone.history_) == FAST["max_epochs"]
    n_held = int(np.ceil(0.2 * len(y)))
    patient = TransferCGCNNRegressor(path, n_iter_no_change=5, **FAST).fit(graphs, y)
    assert len(patient.validation_indices_) == n_held
    ens = EnsembleRegressor(TransferCGCNNRegressor(path, **FAST), n_estimators=2,
                            calibrate=False, random_state=0).fit(graphs, y)
    assert [m.validation_fraction for m in ens.estimators_] == [0.2, 0.2]
    assert all(len(m.validation_indices_) == n_held for m in ens.estimators_)
    # a validation set of the user's own: its best epoch is restored
    from skorch.helper import predefined_split
    from skcgcnn.data import GraphDataset

    given = TransferCGCNNRegressor(path, train_split=predefined_split(
        GraphDataset(graphs[:4], y[:4])))
    assert "best_epoch" in dict(given.initialize().callbacks_)
    assert "best_epoch" not in dict(TransferCGCNNRegressor(path).initialize().callbacks_)
    for bad in ("half", 1.0, -0.1):
        with pytest.raises(ValueError, match="validation_fraction must be"):
            TransferCGCNNRegressor(path, validation_fraction=bad, **FAST).fit(graphs, y)


# ------------------------------------------------------------ L2-SP and LP-FT
def _distance_to(path, model):
    saved = load_state_dict(path)
    return sum(float(((p.detach() - saved[n]) ** 2).sum())
               for n, p in model.module_.named_parameters() if n in model.transferred_)


def test_l2_sp_penalty_is_zero_at_the_pretrained_weights_and_pulls_back(tiny, source):
    from skcgcnn.callbacks import L2SP

    _, graphs, y = tiny
    _, path = source
    net = TransferCGCNNRegressor(path, l2_sp=0.5, **FAST).initialize()
    cb = dict(net.callbacks_)["l2_sp"]
    cb.on_train_begin(net)
    assert set(cb.reference_) == {n for n, _ in net.module_.named_parameters()
                                  if n in net.transferred_}
    assert float(cb.penalty(net.module_)) == 0.0
    free = TransferCGCNNRegressor(path, **dict(FAST, max_epochs=8)).fit(graphs, 2 * y)
    held = TransferCGCNNRegressor(path, l2_sp=50.0, **dict(FAST, max_epochs=8)).fit(graphs, 2 * y)
    moved, held_moved = _distance_to(path, free), _distance_to(path, held)
    assert float(cb.penalty(free.module_)) == pytest.approx(0.25 * moved, rel=1e-5) and moved > 0
    assert 0 < held_moved < 0.5 * moved  # the penalty keeps the weights nearer w0
    # its gradient is alpha * (w - w0), the penalty's own
    layer = torch.nn.Linear(3, 2)
    l2 = L2SP(0.3, params=["weight"]).anchor(layer)
    with torch.no_grad():
        layer.weight.add_(torch.randn(2, 3))
    penalty = 0.15 * ((layer.weight - l2.reference_["weight"]) ** 2).sum()
    penalty.backward()
    expected = layer.weight.grad.clone()
    layer.weight.grad.zero_()
    l2.on_grad_computed(None, named_parameters=layer.named_parameters())
    assert torch.allclose(layer.weight.grad, expected)


def test_lp_ft_first_epochs_leave_the_body_and_its_batch_norms_unchanged(tiny, source):
    from skorch.callbacks import Callback

    class Spy(Callback):
        def on_train_begin(self, net, **kwargs):
            self.states = []

        def on_epoch_end(self, net, **kwargs):
            self.states.append({k: v.clone() for k, v in net.module_.state_dict().items()})

    _, graphs, y = tiny
    _, path = source
    saved = load_state_dict(path)
    spy = Spy()
    model = TransferCGCNNRegressor(path, lp_epochs=2, freeze="embedding",
                                   callbacks=[("spy", spy)], **dict(FAST, max_epochs=4))
    model.fit(graphs, 2 * y)
    body = [k for k in saved if k.startswith(("embedding.", "convs."))]
    assert any("running_mean" in k for k in body)
    for epoch in (0, 1):  # head-only: weights and running statistics as pretrained
        for k in body:
            assert torch.equal(spy.states[epoch][k], saved[k]), (epoch, k)
    assert not torch.equal(spy.states[0]["fc_out.weight"], spy.states[1]["fc_out.weight"])
    moved = [k for k in body if k.startswith("convs.") and not torch.equal(spy.states[2][k], saved[k])]
    assert any("running_mean" in k for k in moved) and any(k.endswith("weight") for k in moved)
    # the estimator's own freezing is back after the head-only epochs
    assert all(not p.requires_grad for p in model.module_.embedding.parameters())
    assert all(p.requires_grad for p in model.module_.convs.parameters())
    assert all(torch.equal(spy.states[3][k], saved[k]) for k in body if k.startswith("embedding."))


def test_l2_sp_and_lp_ft_are_tunable_parameters(tiny, source):
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV

    _, graphs, y = tiny
    _, path = source
    model = TransferCGCNNRegressor(path, **FAST)
    assert clone(model.set_params(l2_sp=0.1, lp_epochs=1)).get_params()["l2_sp"] == 0.1
    search = GridSearchCV(TransferCGCNNRegressor(path, **FAST),
                          {"l2_sp": [0.0, 1.0], "lp_epochs": [0, 1]}, cv=2,
                          scoring="neg_mean_absolute_error").fit(graphs, y)
    assert len(search.cv_results_["params"]) == 4
    assert set(search.best_params_) == {"l2_sp", "lp_epochs"}
    on = clone(search.best_estimator_).set_params(l2_sp=1.0, lp_epochs=1).initialize()
    assert {"l2_sp", "lp_ft"} <= set(dict(on.callbacks_))
    assert "l2_sp" not in dict(TransferCGCNNRegressor(path).initialize().callbacks_)
    # neither is a callback parameter of get_params (the estimator's own are the source)
    assert not any(k.startswith("callbacks__l2_sp") for k in model.get_params())


@pytest.mark.parametrize("params, match", [
    (dict(l2_sp=-1.0), "l2_sp must be"), (dict(l2_sp=float("nan")), "l2_sp must be"),
    (dict(lp_epochs=3), "lp_epochs must be"), (dict(lp_epochs=-1), "lp_epochs must be"),
    (dict(lp_epochs=1.5), "lp_epochs must be")])
def test_l2_sp_and_lp_ft_errors(tiny, source, params, match):
    _, graphs, y = tiny
    with pytest.raises(ValueError, match=match):
        TransferCGCNNRegressor(source[1], **params, **FAST).fit(graphs, y)
