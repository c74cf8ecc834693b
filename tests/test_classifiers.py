import pickle

import numpy as np
import pytest
import torch
from ase.build import bulk
from sklearn.base import clone, is_classifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.utils import estimator_checks as ec
from sklearn.utils.class_weight import compute_class_weight

from skcgcnn import (CGCNNClassifier, CGCNNRegressor, CrystalGraphTransformer,
                     TransferCGCNNClassifier)
from skcgcnn.pretrained import list_pretrained, load_estimator, load_pretrained, save_pretrained

FAST = dict(max_epochs=3, batch_size=8, random_state=0, conv_dtype="float32")
needs_library = pytest.mark.skipif("mp-formation-energy" not in list_pretrained(),
                                   reason="library model mp-formation-energy not installed")


@pytest.fixture(scope="module")
def toy():
    """60 fcc crystals of six metals; label "long" when the nearest-neighbour distance
    exceeds 2.7 angstrom (30 % of them), "short" otherwise."""
    rng = np.random.RandomState(0)
    elements = ["Cu", "Al", "Ni", "Ag", "Pd", "Pt"]
    atoms, dist = [], rng.uniform(2.4, 3.0, 60)
    for i, d in enumerate(dist):
        atoms.append(bulk(elements[i % len(elements)], "fcc", a=d * np.sqrt(2)))
    y = np.where(dist > 2.7, "long", "short")
    return atoms, CrystalGraphTransformer().transform(atoms), y


def test_learns_a_separable_problem(toy):
    _, graphs, y = toy
    tr, te = np.arange(40), np.arange(40, 60)
    model = CGCNNClassifier(max_epochs=40, batch_size=8, lr_schedule="cosine", random_state=0,
                            conv_dtype="float32").fit(graphs[tr], y[tr])
    accuracy = (model.predict(graphs[te]) == y[te]).mean()
    majority = max((y[te] == c).mean() for c in np.unique(y))
    assert accuracy >= majority + 0.15, (accuracy, majority)
    p_long = model.predict_proba(graphs[te])[:, list(model.classes_).index("long")]
    assert roc_auc_score(y[te] == "long", p_long) > 0.9


@pytest.mark.parametrize("labels", [["short", "long"], [False, True], [3, 7], [0.5, 2.5]],
                         ids=["str", "bool", "int", "float"])
def test_labels_of_any_type_round_trip(toy, labels):
    _, graphs, y = toy
    y = np.where(y == "long", labels[1], labels[0]) if not isinstance(labels[0], bool) else \
        (y == "long") == labels[1]
    model = CGCNNClassifier(**FAST).fit(graphs, y)
    assert model.classes_.tolist() == sorted(labels)
    pred = model.predict(graphs)
    assert pred.dtype == np.asarray(y).dtype and set(pred.tolist()) <= set(labels)
    proba = model.predict_proba(graphs)
    assert proba.shape == (len(y), 2) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(pred, model.classes_[proba.argmax(axis=1)])
    score = model.decision_function(graphs)  # binary: logit of classes_[1] minus classes_[0]
    assert score.shape == (len(y),)
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-score)), rtol=1e-6)


def test_multiclass_one_logit_per_class(toy):
    _, graphs, _ = toy
    y = np.array(["a", "b", "c"] * 20)
    model = CGCNNClassifier(**FAST).fit(graphs, y)
    assert model.module_.fc_out.out_features == 3
    assert model.predict_proba(graphs[:5]).shape == (5, 3)
    assert model.decision_function(graphs[:5]).shape == (5, 3)
    assert isinstance(model.criterion_, torch.nn.CrossEntropyLoss)


def test_class_weight_balanced_and_dict(toy):
    _, graphs, _ = toy
    y = np.array(["rare"] * 12 + ["common"] * 48)
    model = CGCNNClassifier(class_weight="balanced", **FAST).fit(graphs, y)
    expected = compute_class_weight("balanced", classes=np.array(["common", "rare"]), y=y)
    np.testing.assert_allclose(model.class_weight_, expected)  # [0.625, 2.5]
    np.testing.assert_allclose(model.criterion_.weight.numpy(), expected, rtol=1e-6)
    # the loss is sklearn-weighted cross entropy, not the plain one
    logits, target = torch.randn(10, 2), torch.tensor([0, 1] * 5)
    loss = model.get_loss(logits, target.float())
    weighted = torch.nn.functional.cross_entropy(logits, target,
                                                 weight=torch.tensor(expected).float())
    assert float(loss) == pytest.approx(float(weighted), rel=1e-6)
    plain = CGCNNClassifier(**FAST).fit(graphs, y)
    np.testing.assert_array_equal(plain.class_weight_, [1.0, 1.0])
    assert float(plain.get_loss(logits, target.float())) != pytest.approx(float(loss))
    by_dict = CGCNNClassifier(class_weight={"rare": 3.0}, **FAST).fit(graphs, y)
    np.testing.assert_allclose(by_dict.class_weight_, [1.0, 3.0])
    with pytest.raises(ValueError, match="class_weight must be"):
        CGCNNClassifier(class_weight="inverse", **FAST).fit(graphs, y)


def test_validation_split_is_stratified(toy):
    _, graphs, _ = toy
    codes = np.array([1] * 6 + [0] * 54)  # 10 % minority: 1 of 12 validation crystals
    for seed in range(8):
        model = CGCNNClassifier(validation_fraction=0.2, random_state=seed)
        train, valid = model.get_split_datasets(graphs, codes)
        assert len(valid) == 12 and codes[valid.indices].sum() == 1
        np.testing.assert_array_equal(model.validation_indices_, valid.indices)
        assert codes[train.indices].sum() == 5
    # a class of one crystal cannot be stratified: a plain random split instead
    codes = np.array([1] + [0] * 59)
    train, valid = CGCNNClassifier(random_state=0).get_split_datasets(graphs, codes)
    assert len(valid) == 12 and len(train) == 48


def test_deterministic_with_random_state(toy):
    _, graphs, y = toy
    state = torch.random.get_rng_state()
    p1 = CGCNNClassifier(**FAST).fit(graphs, y).predict_proba(graphs)
    p2 = CGCNNClassifier(**FAST).fit(graphs, y).predict_proba(graphs)
    np.testing.assert_array_equal(p1, p2)
    assert torch.equal(state, torch.random.get_rng_state())
    p3 = CGCNNClassifier(**{**FAST, "random_state": 1}).fit(graphs, y).predict_proba(graphs)
    assert not np.array_equal(p1, p3)


def test_bad_labels(toy):
    _, graphs, y = toy
    with pytest.raises(ValueError, match="single class"):
        CGCNNClassifier(**FAST).fit(graphs, ["a"] * len(graphs))
    with pytest.raises(ValueError, match="different lengths: 60 crystals, 59 labels"):
        CGCNNClassifier(**FAST).fit(graphs, y[:-1])
    with pytest.raises(ValueError, match="NaN or infinite labels, the first at index 2"):
        CGCNNClassifier(**FAST).fit(graphs, np.where(np.arange(60) == 2, np.nan, 1.0))
    with pytest.raises(ValueError, match="not in classes"):
        CGCNNClassifier(classes=["long"], **FAST).fit(graphs, y)
    # classes= fixes the columns, also for a class absent from y
    model = CGCNNClassifier(classes=["long", "medium", "short"], **FAST).fit(graphs, y)
    assert model.predict_proba(graphs[:2]).shape == (2, 3)


@needs_library
def test_transfer_loads_the_pretrained_body(toy):
    _, graphs, y = toy
    source, _ = load_pretrained("mp-formation-energy", conv_dtype="float32")
    model = TransferCGCNNClassifier(freeze="all_but_head", **FAST).fit(graphs, y)
    mine, theirs = model.module_.state_dict(), source.state_dict()
    body = [k for k in theirs if k.startswith(("embedding.", "convs."))]
    assert body and all(k in model.transferred_ for k in body)
    for k in body:  # frozen after loading: still the pretrained values after training
        torch.testing.assert_close(mine[k], theirs[k])
    assert model.module_.fc_out.out_features == 2 and "fc_out.weight" not in model.transferred_
    # fine-tuning everything moves the loaded weights away from the source's
    tuned = TransferCGCNNClassifier(**FAST).fit(graphs, y).module_.state_dict()
    assert not torch.equal(tuned["convs.0.fc_center.weight"], theirs["convs.0.fc_center.weight"])
    with pytest.raises(ValueError, match="head='keep' keeps the pretrained head's 1 output"):
        TransferCGCNNClassifier(head="keep", **FAST).fit(graphs, y)


def test_transfer_from_a_classifier_keeps_its_head(toy):
    _, graphs, y = toy
    source = CGCNNClassifier(h_fea_len=32, **FAST).fit(graphs, y)
    model = TransferCGCNNClassifier(pretrained=source, head="keep", **FAST).fit(graphs, y)
    assert "fc_out.weight" in model.transferred_ and model.module_.hparams["h_fea_len"] == 32
    with pytest.raises(ValueError, match="2 output.*3 classes"):
        TransferCGCNNClassifier(pretrained=source, head="keep", **FAST).fit(
            graphs, np.array(["a", "b", "c"] * 20))


def test_pipeline_gridsearch_roc_auc_cross_val_clone_pickle(toy):
    atoms, _, y = toy
    atoms, y = atoms[:24], y[:24]
    pipe = make_pipeline(CrystalGraphTransformer(), CGCNNClassifier(**FAST))
    assert is_classifier(pipe)
    search = GridSearchCV(pipe, {"cgcnnclassifier__lr": [0.01, 0.003]}, scoring="roc_auc",
                          cv=StratifiedKFold(2, shuffle=True, random_state=0)).fit(atoms, y)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    best = search.best_estimator_
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(best)).predict_proba(atoms),
                                  best.predict_proba(atoms))
    scores = cross_val_score(pipe, atoms, y, cv=3, scoring="roc_auc")  # stratified folds
    assert scores.shape == (3,) and np.isfinite(scores).all()
    params = clone(CGCNNClassifier(class_weight="balanced", n_conv=2)).get_params(deep=False)
    assert params["class_weight"] == "balanced" and params["n_conv"] == 2


def test_save_pretrained_and_load_estimator_round_trip(toy, tmp_path):
    _, graphs, y = toy
    model = CGCNNClassifier(class_weight="balanced", **FAST).fit(graphs, y)
    card = save_pretrained(model, tmp_path / "metal", target="long bond")
    assert card["task"] == "classification" and card["classes"] == ["long", "short"]
    np.testing.assert_allclose(card["class_weights"], model.class_weight_)
    assert "target_mean" not in card and "valid_cross_entropy" in card
    assert card["hyperparameters"]["class_weight"] == "balanced"
    loaded = load_estimator(tmp_path / "metal", conv_dtype="float32")
    assert type(loaded) is CGCNNClassifier and loaded.classes_.tolist() == ["long", "short"]
    np.testing.assert_allclose(loaded.predict_proba(graphs), model.predict_proba(graphs),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(loaded.predict(graphs), model.predict(graphs))
    np.testing.assert_allclose(loaded.class_weight_, model.class_weight_)
    # a saved classifier is a transfer source, with its head
    tl = TransferCGCNNClassifier(pretrained=str(tmp_path / "metal.pt"), head="keep", **FAST)
    assert tl.fit(graphs, y).module_.fc_out.out_features == 2
    # a regressor's card is unchanged: it loads as a regressor
    reg = CGCNNRegressor(**FAST).fit(graphs, np.arange(60.0))
    assert "task" not in save_pretrained(reg, tmp_path / "reg")
    assert type(load_estimator(tmp_path / "reg")) is CGCNNRegressor


def test_ensemble_classifier_averages_the_members_probabilities(toy):
    from skcgcnn import EnsembleClassifier

    _, graphs, y = toy
    ens = EnsembleClassifier(CGCNNClassifier(**FAST), n_estimators=3, random_state=0)
    ens.fit(graphs, y)
    members = [m.predict_proba(graphs) for m in ens.estimators_]
    assert len(set(ens.seeds_)) == 3 and not np.allclose(members[0], members[1])
    np.testing.assert_allclose(ens.predict_proba(graphs), np.mean(members, axis=0))
    assert ens.classes_.tolist() == ["long", "short"] and set(ens.predict(graphs)) <= set(y)
    with pytest.raises(TypeError, match="classifier"):
        EnsembleClassifier(CGCNNRegressor()).fit(graphs, y)
    with pytest.raises(TypeError, match="cannot be nested"):
        EnsembleClassifier(ens).fit(graphs, y)
    assert is_classifier(ens)


def test_ensemble_classifier_takes_a_list_of_members_in_turn(toy):
    """A list: member i is a clone of estimator[i % len(estimator)] (e.g. several sources)."""
    from skcgcnn import EnsembleClassifier

    _, graphs, y = toy
    ens = EnsembleClassifier([CGCNNClassifier(**FAST), CGCNNClassifier(**FAST, n_conv=1)],
                             n_estimators=3, random_state=0).fit(graphs, y)
    assert [len(m.module_.convs) for m in ens.estimators_] == [3, 1, 3]
    with pytest.raises(ValueError, match="fewer than the 3 estimators"):
        EnsembleClassifier([CGCNNClassifier(**FAST)] * 3, n_estimators=2).fit(graphs, y)
    with pytest.raises(ValueError, match="different lengths: 60 crystals, 59 targets"):
        EnsembleClassifier(CGCNNClassifier(**FAST), n_estimators=2).fit(graphs, y[:-1])


#: scikit-learn's checks that apply. The others fit on random numeric matrices
#: (check_classifiers_train, check_classifiers_classes, check_supervised_y_2d, ...) or,
#: like check_no_attributes_set_in_init, check_set_params, check_fit_score_takes_y and
#: check_dont_overwrite_parameters, meet skorch's attributes set in __init__ (history_,
#: initialized_) and its validation of callbacks at set_params: as for CGCNNRegressor, they
#: do not apply. What the classifier checks test (labels of any type, probabilities
#: summing to one, predict agreeing with predict_proba, one class refused, clone,
#: pickling) is tested above on crystals.
CLASSIFIER_CHECKS = [
    ec.check_parameters_default_constructible,
    ec.check_get_params_invariance,
    ec.check_do_not_raise_errors_in_init_or_set_params,
    ec.check_estimator_cloneable,
    ec.check_estimator_repr,
    ec.check_mixin_order,
    ec.check_valid_tag_types,
    ec.check_estimator_tags_renamed,
    ec.check_estimators_unfitted,
]


@pytest.mark.parametrize("check", CLASSIFIER_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("cls", [CGCNNClassifier, TransferCGCNNClassifier])
def test_sklearn_estimator_checks(check, cls):
    check(cls.__name__, cls())
    assert is_classifier(cls())
