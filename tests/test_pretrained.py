"""Tests of skcgcnn.pretrained: saving and loading models with model cards."""

import json

import numpy as np
import pytest
import torch
from ase.build import bulk
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skcgcnn import CGCNNRegressor, CrystalGraphTransformer
from skcgcnn.data import collate_graphs
from skcgcnn.features import element_feature_fingerprint
from skcgcnn.io import load_state_dict, save_state_dict
from skcgcnn.model import CGCNN
from skcgcnn.pretrained import (ARCHITECTURE_KEYS, list_pretrained, load_estimator,
                                load_pretrained, save_pretrained, training_card)
from skcgcnn.target import denormalize

LATTICE = np.linspace(3.4, 3.8, 6)


@pytest.fixture(scope="module")
def fitted():
    X = CrystalGraphTransformer(radius=6.0, max_num_nbr=8).transform(
        [bulk("Cu", "fcc", a=a) for a in LATTICE])
    y = LATTICE ** 3 / 4
    model = CGCNNRegressor(atom_fea_len=8, n_conv=1, h_fea_len=8, radius=6.0, max_num_nbr=8,
                           max_epochs=2, batch_size=4, validation_fraction=None,
                           random_state=0, conv_dtype="float32")
    return model.fit(X, y), X


@pytest.fixture
def saved(fitted, tmp_path):
    model, _ = fitted
    path = tmp_path / "tiny-cu.pt"
    card = save_pretrained(model, path, target="volume_per_atom", units="angstrom^3")
    return path, card


def edit_card(path, edit):
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text())
    edit(card)
    card_path.write_text(json.dumps(card))


def test_save_writes_weights_and_card(saved, fitted):
    path, card = saved
    model, _ = fitted
    assert path.is_file() and path.with_suffix(".json").is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny-cu.json", "tiny-cu.pt"]
    on_disk = json.loads(path.with_suffix(".json").read_text())
    assert on_disk == card
    assert card["name"] == "tiny-cu"
    assert card["architecture"] == dict(atom_fea_len=8, n_conv=1, h_fea_len=8, n_h=1, radius=6.0,
                                        n_targets=1, pooling="mean")
    assert card["featurizer"] == dict(radius=6.0, max_num_nbr=8,
                                      element_features=element_feature_fingerprint(),
                                      element_features_name="skcgcnn")
    assert card["target"] == "volume_per_atom" and card["units"] == "angstrom^3"
    assert card["target_normalization"] == "standard"
    assert card["target_mean"] == pytest.approx(np.mean(LATTICE ** 3 / 4))
    assert card["target_scale"] == pytest.approx(np.std(LATTICE ** 3 / 4))
    assert "skcgcnn_version" in card


def test_save_without_suffix(fitted, tmp_path):
    model, _ = fitted
    save_pretrained(model, tmp_path / "plain")
    assert (tmp_path / "plain.pt").is_file() and (tmp_path / "plain.json").is_file()


def test_save_unfitted_raises(tmp_path):
    with pytest.raises(NotFittedError, match="CGCNNRegressor is not fitted: call fit"):
        save_pretrained(CGCNNRegressor(), tmp_path / "x.pt")
    assert not list(tmp_path.iterdir())


def test_save_keeps_other_suffixes(fitted, tmp_path, monkeypatch):
    model, X = fitted
    save_pretrained(model, tmp_path / "model.v2")
    save_pretrained(model, tmp_path / "model.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.json", "model.pt", "model.v2.json", "model.v2.pt"]
    assert json.loads((tmp_path / "model.v2.json").read_text())["name"] == "model.v2"
    expected = model.module_.state_dict()
    monkeypatch.chdir(tmp_path)
    for path in (tmp_path / "model.v2", tmp_path / "model.v2.pt", str(tmp_path / "model.v2"),
                 "model.v2"):  # a bare name: model.v2.pt in the working directory
        state = load_estimator(path).module_.state_dict()
        assert all(torch.equal(state[k], expected[k]) for k in expected)


def test_save_refuses_to_overwrite(fitted, tmp_path):
    model, _ = fitted
    first = save_pretrained(model, tmp_path / "m", target="first")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for path in ("m", "m.pt", "m.json"):
        with pytest.raises(FileExistsError, match="m.pt' exists; pass overwrite=True"):
            save_pretrained(model, tmp_path / path, target="second")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # the card alone existing is enough to refuse
    (tmp_path / "m.pt").unlink()
    with pytest.raises(FileExistsError, match="m.json' exists"):
        save_pretrained(model, tmp_path / "m")
    card = save_pretrained(model, tmp_path / "m", overwrite=True, target="second")
    assert first["target"] == "first" and card["target"] == "second"
    assert json.loads((tmp_path / "m.json").read_text())["target"] == "second"


def test_card_records_training(tmp_path):
    X = [bulk("Cu", "fcc", a=a) for a in np.linspace(3.4, 3.8, 10)]
    model = CGCNNRegressor(atom_fea_len=8, n_conv=1, h_fea_len=8, max_epochs=4, batch_size=4,
                           lr_decay_epoch=2, random_state=0).fit(X, np.linspace(0, 1, 10))
    card = save_pretrained(model, tmp_path / "m")
    assert card == json.loads((tmp_path / "m.json").read_text())
    assert (card["n_train"], card["n_validation"], card["epochs_trained"]) == (8, 2, 4)
    losses = [row["valid_loss"] for row in model.history_]
    assert card["best_epoch"] == int(np.argmin(losses)) + 1
    assert card["valid_mae_normalized"] == pytest.approx(min(losses))
    assert card["hyperparameters"] == {
        "lr": 0.01, "max_epochs": 4, "batch_size": 4, "momentum": 0.9, "weight_decay": 0.0,
        "lr_schedule": "step", "lr_decay_epoch": 2, "lr_decay": 0.1, "validation_fraction": 0.2,
        "n_iter_no_change": None, "conv_dtype": "auto", "random_state": 0, "optimizer": "SGD"}
    assert training_card(model) == {k: card[k] for k in training_card(model)}


def test_a_loaded_model_saved_again_keeps_its_card(tmp_path):
    X = [bulk("Cu", "fcc", a=a) for a in np.linspace(3.4, 3.8, 10)]
    model = CGCNNRegressor(atom_fea_len=8, n_conv=1, h_fea_len=8, max_epochs=3, batch_size=4,
                           random_state=0).fit(X, np.linspace(0, 1, 10))
    first = save_pretrained(model, tmp_path / "a", target="toy", units="eV", test_mae=0.5)
    second = save_pretrained(load_estimator(tmp_path / "a"), tmp_path / "b")
    assert second == {**first, "name": "b"}


def test_save_pipeline_saves_its_regressor(fitted, tmp_path):
    model, X = fitted
    structures = [bulk("Cu", "fcc", a=a) for a in LATTICE]
    pipe = make_pipeline(CrystalGraphTransformer(radius=6.0, max_num_nbr=8), model)
    card = save_pretrained(pipe, tmp_path / "pipe")
    assert card["architecture"]["atom_fea_len"] == 8
    state = load_estimator(tmp_path / "pipe").module_.state_dict()
    expected = model.module_.state_dict()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert load_estimator(tmp_path / "pipe").predict(structures).shape == (len(structures),)


def test_save_pipeline_refused_clearly(fitted, tmp_path):
    model, _ = fitted
    other = make_pipeline(CrystalGraphTransformer(radius=5.0, max_num_nbr=8), model)
    with pytest.raises(ValueError, match="radius=5.0, max_num_nbr=8, but its regressor "
                                         "expects radius=6.0"):
        save_pretrained(other, tmp_path / "p")
    scaled = make_pipeline(StandardScaler(), model)
    with pytest.raises(TypeError, match="step 'standardscaler' .* would be lost.*pipeline\\[-1\\]"
                                        ".*joblib.dump"):
        save_pretrained(scaled, tmp_path / "p")
    with pytest.raises(TypeError, match="last step is a StandardScaler.*joblib.dump"):
        save_pretrained(make_pipeline(StandardScaler()), tmp_path / "p")
    with pytest.raises(TypeError, match="got a str"):
        save_pretrained("model", tmp_path / "p")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("how", ["pt", "json", "stem", "str"])
def test_load_by_path_returns_equal_tensors(saved, fitted, how):
    path, card = saved
    model, X = fitted
    arg = {"pt": path, "json": path.with_suffix(".json"), "stem": path.with_suffix(""),
           "str": str(path)}[how]
    module, loaded_card = load_pretrained(arg, conv_dtype="float32")  # the model's precision
    assert isinstance(module, CGCNN)
    assert not module.training
    assert loaded_card == card
    expected = model.module_.state_dict()
    got = module.state_dict()
    assert set(got) == set(expected)
    for k in expected:
        assert torch.equal(got[k], expected[k]), k
    # the loaded network predicts what the estimator predicts
    Xb, _ = collate_graphs([(g, 0.0) for g in X])
    with torch.no_grad():
        out = module(**Xb).numpy()
    pred = denormalize(out, module.target_mean.item(), module.target_scale.item(),
                       card["target_normalization"])
    np.testing.assert_allclose(pred, model.predict(X), rtol=1e-5)


def test_unknown_name_lists_known_ones():
    known = list(list_pretrained())
    with pytest.raises(ValueError, match="unknown pretrained model") as info:
        load_pretrained("no-such-model")
    assert "no-such-model" in str(info.value)
    for name in known:
        assert name in str(info.value)


def test_bundled_models_load_and_match_this_installation():
    cards = list_pretrained()
    assert cards == dict(sorted(cards.items()))
    for name, card in cards.items():
        assert card["name"] == name
        assert set(ARCHITECTURE_KEYS) <= set(card["architecture"])
        assert card["featurizer"]["element_features"] == element_feature_fingerprint()
        module, loaded = load_pretrained(name)
        assert loaded == card
        np.testing.assert_allclose(module.target_mean.numpy(), card["target_mean"])
        np.testing.assert_allclose(module.target_scale.numpy(), card["target_scale"])
        assert module.hparams["n_targets"] == card["architecture"].get("n_targets", 1)


def test_other_element_features_fingerprint_raises(saved):
    path, _ = saved

    def edit(card):
        card["featurizer"]["element_features"] = "0123456789abcdef"

    edit_card(path, edit)
    with pytest.raises(ValueError, match="element features"):
        load_pretrained(path)


def test_missing_fingerprint_raises(saved):
    path, _ = saved
    edit_card(path, lambda card: card.pop("featurizer"))
    with pytest.raises(ValueError, match="element features"):
        load_pretrained(path)


def test_weights_with_other_atom_features_raise(saved):
    # the card's fingerprint matches but the stored table was altered
    path, _ = saved
    state = load_state_dict(path)
    state["atom_features"] = state["atom_features"].flip(0).contiguous()
    save_state_dict(state, path)
    with pytest.raises(ValueError, match="element features"):
        load_pretrained(path)


@pytest.mark.parametrize("key, value", [("atom_fea_len", 16), ("n_conv", 2),
                                        ("h_fea_len", 4), ("n_h", 2), ("radius", 8.0)])
def test_other_architecture_raises(saved, key, value):
    path, _ = saved

    def edit(card):
        card["architecture"][key] = value

    edit_card(path, edit)
    with pytest.raises(ValueError, match="architecture"):
        load_pretrained(path)


def test_missing_card_raises(saved):
    path, _ = saved
    path.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match="model card"):
        load_pretrained(path)


def test_missing_weights_raises(saved):
    path, _ = saved
    path.unlink()
    with pytest.raises(FileNotFoundError, match="tiny-cu.pt"):
        load_pretrained(path.with_suffix(".json"))


def test_corrupt_weights_raise(saved):
    path, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_pretrained(path)


@pytest.mark.parametrize("text", ["{not json", "[]", '{"name": "x"}',
                                  '{"architecture": {"atom_fea_len": 8}}'])
def test_invalid_card_raises(saved, text):
    path, _ = saved
    path.with_suffix(".json").write_text(text)
    with pytest.raises(ValueError, match="not a valid skcgcnn card"):
        load_pretrained(path)


@pytest.mark.parametrize("native", [True, False])
def test_load_pretrained_and_load_estimator_share_one_precision_rule(saved, fitted, monkeypatch,
                                                                     native):
    import skcgcnn.model as model_module
    from skcgcnn.pretrained import load_estimator

    path, _ = saved
    _, X = fitted
    monkeypatch.setattr(model_module, "_cpu_has_native_bfloat16", lambda: native)
    expected = "bfloat16" if native else "float32"
    module, card = load_pretrained(path)
    estimator = load_estimator(path)
    assert module.conv_dtype == estimator.module_.conv_dtype == expected
    Xb, _ = collate_graphs([(g, 0.0) for g in X])
    with torch.no_grad():
        out = module(**Xb).numpy()
    pred = denormalize(out, module.target_mean.item(), module.target_scale.item(),
                       card["target_normalization"])
    np.testing.assert_array_equal(pred, estimator.predict(X))
    for load in (lambda: load_pretrained(path, conv_dtype="float32")[0],
                 lambda: load_estimator(path, conv_dtype="float32").module_):
        assert load().conv_dtype == "float32"
