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
