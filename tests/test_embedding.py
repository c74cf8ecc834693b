import pickle

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from ase.build import bulk
from sklearn.base import clone
from sklearn.linear_model import Ridge
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import FeatureUnion, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import estimator_checks as ec

from skcgcnn import CGCNNRegressor, CrystalGraphTransformer, PretrainedEmbedding
from skcgcnn.composition import MagpieFeaturizer
from skcgcnn.embedding import crystal_embeddings
from skcgcnn.model import gaussian_expansion
from skcgcnn.pretrained import list_pretrained, load_estimator, load_pretrained

NAME = "mp-formation-energy"
pytestmark = pytest.mark.skipif(NAME not in list_pretrained(),
                                reason=f"bundled pretrained model {NAME!r} is absent")


def structures():
    return [bulk("Cu", a=3.6), bulk("Si"), bulk("NaCl", "rocksalt", a=5.64),
            bulk("Fe", "bcc", a=2.87).repeat((1, 1, 2)), bulk("MgO", "rocksalt", a=4.2),
            bulk("Al", a=4.05)]


def by_hand(module, graph):
    """Pooled vector (eq. 4) and head hidden layer of one crystal, layer by layer."""
    with torch.no_grad():
        numbers = torch.from_numpy(graph.numbers.astype(np.int64))
        centers = torch.from_numpy(graph.centers.astype(np.int64))
        neighbors = torch.from_numpy(graph.neighbors.astype(np.int64))
        atom = module.embedding(module.atom_features)[numbers]
        bond = gaussian_expansion(torch.from_numpy(graph.distances), module.gaussian_centers,
                                  module.gaussian_step)
        for conv in module.convs:
            atom = conv(atom, bond, centers, neighbors, n_nbr=None)  # the scatter path
        pooled = atom.mean(0)
        hidden = F.softplus(module.conv_to_fc(F.softplus(pooled)))
    return pooled.numpy(), hidden.numpy()


def test_embeddings_equal_the_networks_layers():
    X = structures()
    graphs = CrystalGraphTransformer().transform(X)
    module, _ = load_pretrained(NAME, conv_dtype="float32")
    expected = [by_hand(module, g) for g in graphs]
    # two batches, one of them ragged
    emb = PretrainedEmbedding(NAME, batch_size=4, conv_dtype="float32").fit(X)
    pooled = emb.transform(X)
    assert pooled.shape == (len(X), 64) and pooled.dtype == np.float64
    np.testing.assert_allclose(pooled, [e[0] for e in expected], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(emb.transform(graphs), pooled)  # graphs in, same vectors
    hidden = emb.set_params(layer="hidden").fit().transform(graphs)
    np.testing.assert_allclose(hidden, [e[1] for e in expected], rtol=1e-4, atol=1e-5)
    both = emb.set_params(layer="pooled+hidden").fit().transform(graphs)
    np.testing.assert_allclose(both, np.hstack([pooled, hidden]), rtol=1e-6)
    # a crystal's vector does not depend on the batch it came in (eval-mode batch norm)
    np.testing.assert_allclose(emb.set_params(layer="pooled").fit().transform(graphs[2:3]),
                               pooled[2:3], rtol=1e-5, atol=1e-6)
    assert not np.allclose(pooled[0], pooled[1])


def test_estimator_transform_shares_the_code_path(tiny):
    _, graphs, y = tiny
    est = load_estimator(NAME)  # both take conv_dtype="auto": the same precision
    np.testing.assert_allclose(est.transform(graphs),
                               PretrainedEmbedding(NAME).fit().transform(graphs), rtol=1e-6)
    fitted = CGCNNRegressor(max_epochs=2, batch_size=8, random_state=0,
                            conv_dtype="float32").fit(graphs, y)
    fitted.module_.train()
    emb = PretrainedEmbedding(fitted, layer="pooled").fit()
    np.testing.assert_allclose(emb.transform(graphs), fitted.transform(graphs), rtol=1e-6)
    assert fitted.module_.training is False  # transform leaves the network in eval mode
    m = fitted.module_.train()
    crystal_embeddings(m, graphs)
    assert m.training  # crystal_embeddings restores the mode it found


def test_unknown_model_and_mismatched_featurizer():
    with pytest.raises(ValueError, match="unknown pretrained model 'no-such-model'; known models"):
        PretrainedEmbedding("no-such-model").fit()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PretrainedEmbedding("/nonexistent/model.pt").fit()
    emb = PretrainedEmbedding(NAME).fit()
    for settings in (dict(radius=6.0), dict(max_num_nbr=8)):
        graphs = CrystalGraphTransformer(**settings).transform([bulk("Cu"), bulk("Si")])
        with pytest.raises(ValueError, match=r"graph at index 0 was built with .*"
                                             r"'mp-formation-energy' was trained on graphs "
                                             r"with radius=8.0, max_num_nbr=12"):
            emb.transform(graphs)
    with pytest.raises(ValueError, match="layer"):
        PretrainedEmbedding(NAME, layer="conv2").fit()
    for params, expected in ((dict(batch_size=0), "an int of at least 1"),
                             (dict(conv_dtype="float16"), "one of 'auto', 'bfloat16', 'float32'"),
                             (dict(pretrained=3), "a bundled model's name, a path or a fitted"),
                             (dict(device=0), "a torch device or its name")):
        (name, value), = params.items()
        with pytest.raises(ValueError, match=f"the '{name}' parameter of PretrainedEmbedding "
                                             f"must be {expected}.*, got {value!r}"):
            PretrainedEmbedding(**{"pretrained": NAME, **params}).fit()
    with pytest.raises(ValueError, match="not fitted"):
        PretrainedEmbedding(CGCNNRegressor()).fit()
    with pytest.raises(ValueError, match="empty"):
        emb.transform([])


def test_feature_names_set_output_pickle_and_feature_union():
    X = structures()
    emb = PretrainedEmbedding(NAME, layer="pooled+hidden").fit(X)
    names = emb.get_feature_names_out()
    assert len(names) == 64 + 128 and names[0] == "pooled0" and names[-1] == "hidden127"
    frame = clone(emb).set_output(transform="pandas").fit(X).transform(X)
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == list(names)
    np.testing.assert_array_equal(frame.to_numpy(), emb.transform(X))
    again = pickle.loads(pickle.dumps(emb))
    np.testing.assert_array_equal(again.transform(X), emb.transform(X))
    union = FeatureUnion([("cgcnn", PretrainedEmbedding(NAME)),
                          ("magpie", MagpieFeaturizer())]).set_output(transform="pandas")
    out = union.fit_transform(X)
    assert out.shape == (len(X), 64 + 132)
    assert out.columns[0] == "cgcnn__pooled0"
    assert out.columns[-1].startswith("magpie__MagpieData")


def test_pipeline_learns_and_grid_searches_the_layer(dcdft):
    atoms, graphs, y = dcdft
    idx = np.random.RandomState(0).permutation(len(y))
    tr, te = idx[:56], idx[56:]
    pipe = make_pipeline(PretrainedEmbedding(NAME), StandardScaler(), Ridge())
    search = GridSearchCV(pipe, {"pretrainedembedding__layer": ["pooled", "hidden"],
                                 "ridge__alpha": [1.0, 10.0, 100.0]},
                          cv=KFold(3, shuffle=True, random_state=0),
                          scoring="neg_mean_absolute_error").fit(graphs[tr], y[tr])
    mae = np.abs(search.predict(graphs[te]) - y[te]).mean()
    assert mae < 0.8 * np.abs(y[te] - y[tr].mean()).mean()


# The checks that call fit or transform on numeric 2-D arrays do not apply: the
# transformer takes structures or crystal graphs, and its tags say so
# (two_d_array=False). Skipped for that reason: check_transformer_general,
# check_transformers_unfitted, check_estimators_dtypes, check_fit_idempotent,
# check_methods_subset_invariance, check_estimators_pickle, check_fit2d_1sample
# and the like, and the set_output / pandas / feature-name checks (which build a
# DataFrame of numbers as input); those behaviours are tested above on real
# structures. check_n_features_in: there are no input features before
# featurization, so no ``n_features_in_``.
# the shared list is tests/conftest.py's SKLEARN_API_CHECKS
EXTRA_SKLEARN_CHECKS = [ec.check_estimators_unfitted]


def test_sklearn_estimator_checks(sklearn_check):
    sklearn_check("PretrainedEmbedding", PretrainedEmbedding())
