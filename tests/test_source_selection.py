import numpy as np
import pytest

from skcgcnn import CGCNNRegressor, TransferCGCNNRegressor
from skcgcnn.pretrained import save_pretrained, training_card
from skcgcnn.source_selection import library_candidates, probe_score, rank_sources

FAST = dict(max_epochs=3, batch_size=8, random_state=0)


@pytest.fixture(scope="module")
def sources(dcdft, tmp_path_factory):
    """Two small source models on the 71 elements: one pretrained on the target itself
    (log10 bulk modulus), one on labels unrelated to the crystals (a shuffled target)."""
    _, graphs, y = dcdft
    folder = tmp_path_factory.mktemp("sources")
    paths = {}
    for name, labels in (("related", y), ("unrelated", np.random.default_rng(0).permutation(y))):
        net = CGCNNRegressor(atom_fea_len=16, h_fea_len=16, max_epochs=40, batch_size=16,
                             random_state=0).fit(graphs, labels)
        paths[name] = folder / f"{name}.pt"
        save_pretrained(net, paths[name], target=name, units="log10 GPa")
    return paths


def test_probe_prefers_the_source_pretrained_on_a_related_property(dcdft, sources):
    _, graphs, y = dcdft
    scores = rank_sources([sources["unrelated"], sources["related"]], graphs, y, random_state=0)
    assert list(scores) == [str(sources["related"]), str(sources["unrelated"])]
    assert all(np.isfinite(v) and v > 0 for v in scores.values())


def test_ranking_is_deterministic_and_uses_only_the_data_given(dcdft, sources):
    _, graphs, y = dcdft
    cands = [sources["related"], sources["unrelated"]]
    a = rank_sources(cands, graphs[:50], y[:50], random_state=3)
    assert a == rank_sources(cands, graphs[:50], y[:50], random_state=3)
    # the probe's folds move with random_state: the scores change, the data do not
    assert a != rank_sources(cands, graphs[:50], y[:50], random_state=4)


def test_probe_score_units_and_errors():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(60, 3))
    y = 2.0 * Z[:, 0]
    assert probe_score(Z, y, random_state=0) < 0.05 < probe_score(rng.normal(size=(60, 3)), y,
                                                                    random_state=0)
    # MAE in the units of y: scaling y scales the score
    assert np.isclose(probe_score(Z, 10 * y, random_state=0), 10 * probe_score(Z, y, random_state=0))
    with pytest.raises(ValueError, match="different lengths"):
        probe_score(Z, y[:-1])
    with pytest.raises(ValueError, match="cv must be"):
        probe_score(Z, y, cv=1)


def test_probe_classifier_scores_log_loss_on_labels_of_any_type():
    from sklearn.metrics import log_loss

    from skcgcnn.source_selection import default_classification_probe

    rng = np.random.default_rng(0)
    Z = rng.normal(size=(80, 3))
    labels = np.where(Z[:, 0] > 0, "metal", "insulator")
    probe = default_classification_probe()
    informative = probe_score(Z, labels, random_state=0, estimator=probe)
    noise = probe_score(rng.normal(size=(80, 3)), labels, random_state=0, estimator=probe)
    # log loss: far below a coin flip's log(2) when the features tell the classes apart
    assert informative < 0.3 < np.log(2) - 0.1 < noise
    assert informative == probe_score(Z, labels, random_state=0, estimator=probe)
    assert np.isclose(log_loss(labels, np.full((80, 2), 0.5)), np.log(2))
    with pytest.raises(ValueError, match="at least 2 crystals of each"):
        probe_score(Z, np.r_[["a"], ["b"] * 79], estimator=probe)


def test_classifier_auto_ranks_on_string_labels(dcdft, sources):
    from skcgcnn import TransferCGCNNClassifier

    _, graphs, y = dcdft
    labels = np.where(y > np.median(y), "stiff", "soft")
    cands = [sources["unrelated"], sources["related"]]
    model = TransferCGCNNClassifier(pretrained="auto", candidates=cands, **FAST)
    model.fit(graphs, labels)
    # the source pretrained on the modulus tells stiff from soft best
    assert list(model.source_scores_) == [str(sources["related"]), str(sources["unrelated"])]
    assert model.pretrained_ == sources["related"]
    assert set(model.predict(graphs)) <= {"stiff", "soft"}


def test_rank_sources_errors(dcdft, sources, tmp_path):
    _, graphs, y = dcdft
    with pytest.raises(ValueError, match="candidates is empty"):
        rank_sources([], graphs, y)
    with pytest.raises(ValueError, match="given twice"):
        rank_sources([sources["related"], str(sources["related"])], graphs, y)
    with pytest.raises(ValueError, match="NaN or infinite"):
        rank_sources([sources["related"]], graphs, np.r_[np.nan, y[1:]])
    with pytest.raises(ValueError, match="different lengths"):
        rank_sources([sources["related"]], graphs, y[:-1])
    with pytest.raises(ValueError, match="'no-such-model' cannot be used"):
        rank_sources(["no-such-model"], graphs, y)


def test_auto_fine_tunes_the_probes_choice(dcdft, sources):
    """pretrained="auto" is the fixed-source fit of the candidate the probe ranks first
    (same predictions), ranks on the training data only, and records the choice."""
    _, graphs, y = dcdft
    train = np.arange(0, 71, 2)
    cands = [sources["unrelated"], sources["related"]]
    auto = TransferCGCNNRegressor("auto", candidates=cands, **FAST).fit(graphs[train], y[train])
    assert auto.source_scores_ == rank_sources(cands, graphs[train], y[train], random_state=0)
    assert auto.pretrained_ == sources["related"]
    fixed = TransferCGCNNRegressor(sources["related"], **FAST).fit(graphs[train], y[train])
    np.testing.assert_array_equal(auto.predict(graphs), fixed.predict(graphs))
    card = training_card(auto)
    assert card["pretrained"] == str(sources["related"])
    assert list(card["source_scores"]) == list(auto.source_scores_)
    assert "source_scores" not in training_card(fixed) and fixed.source_scores_ is None
    assert fixed.pretrained_ == sources["related"]
    # the second best, for ensembles of the top sources in turn
    second = TransferCGCNNRegressor("auto", candidates=cands, source_rank=1, **FAST)
    assert second.fit(graphs[train], y[train]).pretrained_ == sources["unrelated"]


def test_the_single_model_recipe_trains_on_every_crystal(dcdft, sources):
    """pretrained="auto" at the default validation_fraction="auto": the same choice, no
    crystal held out, and every epoch trained with no validation score to pick one by."""
    _, graphs, y = dcdft
    cands = [sources["unrelated"], sources["related"]]
    model = TransferCGCNNRegressor("auto", candidates=cands, **FAST).fit(graphs, y)
    assert model.pretrained_ == sources["related"] and model.validation_indices_ is None
    assert len(model.history_) == FAST["max_epochs"]
    assert "valid_loss" not in model.history_[-1]
    # holding a fifth out fits another model
    held = TransferCGCNNRegressor("auto", candidates=cands, validation_fraction=0.2,
                                  **FAST).fit(graphs, y)
    assert len(held.validation_indices_) == int(np.ceil(0.2 * len(y)))
    assert not np.allclose(model.predict(graphs), held.predict(graphs))


def test_auto_from_structures_and_the_library(dcdft, sources):
    atoms, _, y = dcdft
    model = TransferCGCNNRegressor("auto", candidates=["library", sources["related"]],
                                   **FAST).fit(atoms[:20], y[:20])
    assert set(model.source_scores_) == set(library_candidates()) | {str(sources["related"])}
    assert model.card_["name"] == model.pretrained_ or str(model.pretrained_).endswith(".pt")
    assert model.predict(atoms[:3]).shape == (3,)


def test_auto_errors(dcdft, sources):
    _, graphs, y = dcdft
    with pytest.raises(ValueError, match="chooses its source model in fit"):
        TransferCGCNNRegressor("auto").initialize()
    with pytest.raises(ValueError, match="source_rank must be"):
        TransferCGCNNRegressor("auto", candidates=[sources["related"]], source_rank=1,
                               **FAST).fit(graphs, y)
    with pytest.raises(ValueError, match="candidates is empty"):
        TransferCGCNNRegressor("auto", candidates=[], **FAST).fit(graphs, y)
    with pytest.raises(ValueError, match="ranks source models on one target"):
        TransferCGCNNRegressor("auto", candidates=[sources["related"]], **FAST).fit(
            graphs, np.c_[y, y])


def test_ensemble_members_from_the_top_sources_in_turn(dcdft, sources):
    from skcgcnn import EnsembleRegressor

    _, graphs, y = dcdft
    cands = [sources["unrelated"], sources["related"]]
    members = [TransferCGCNNRegressor("auto", candidates=cands, source_rank=r, **FAST)
               for r in (0, 1)]
    ens = EnsembleRegressor(members, n_estimators=3, random_state=0).fit(graphs, y)
    assert [m.pretrained_ for m in ens.estimators_] == [sources["related"], sources["unrelated"],
                                                        sources["related"]]
