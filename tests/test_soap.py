import pickle

import numpy as np
import pytest
from ase.build import bulk
from sklearn.base import clone
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import GridSearchCV, KFold

pytest.importorskip("dscribe", reason="dscribe is not installed (pip install dscribe)")

from skcgcnn.soap import SOAPFeaturizer, soap_kernel, soap_kernel_ridge  # noqa: E402

SPECIES = [11, 12, 8, 14, 17, 29]


def crystals():
    out = []
    for s in np.linspace(0.96, 1.04, 4):
        out += [bulk("Cu", a=3.6 * s), bulk("NaCl", "rocksalt", a=5.64 * s),
                bulk("MgO", "rocksalt", a=4.2 * s), bulk("Si", a=5.43 * s)]
    return out


@pytest.fixture(scope="module")
def vectors():
    return SOAPFeaturizer(species=SPECIES).transform(crystals())


def test_mean_vectors_shape_invariance_and_species(vectors):
    X = crystals()
    assert vectors.shape == (len(X), len(SPECIES) * 4 * 4 * 5)  # mu1nu1: S·n_max²·(l_max+1)
    assert np.isfinite(vectors).all()
    # a supercell is the same crystal: the same mean vector
    np.testing.assert_allclose(SOAPFeaturizer(species=SPECIES).transform([X[0].repeat(2)]),
                               vectors[:1], rtol=1e-6, atol=1e-10)
    assert not np.allclose(vectors[0], vectors[4])  # strained copy differs
    with pytest.raises(ValueError, match=r"atomic numbers \[26\] outside"):
        SOAPFeaturizer(species=SPECIES).transform([bulk("Fe")])
    other = SOAPFeaturizer(species=SPECIES, compression="crossover").transform(X[:2])
    assert other.shape == (2, len(SPECIES) * 10 * 5)
    assert SOAPFeaturizer(species=SPECIES).get_feature_names_out()[-1] == f"soap{vectors.shape[1] - 1}"


def test_kernel_is_symmetric_psd_and_normalised(vectors):
    for zeta in (1, 2, 4):
        K = soap_kernel(vectors, zeta=zeta)
        np.testing.assert_allclose(K, K.T, atol=1e-12)
        np.testing.assert_allclose(np.diag(K), 1.0, atol=1e-12)
        assert np.linalg.eigvalsh(K).min() > -1e-9  # positive semi-definite
        assert np.abs(K).max() <= 1.0 + 1e-12
    # zeta sharpens the kernel: off-diagonal similarities shrink
    off = ~np.eye(len(vectors), dtype=bool)
    assert (soap_kernel(vectors, zeta=4)[off] <= soap_kernel(vectors, zeta=1)[off] + 1e-12).all()
    # invariant to the scale of each vector, and K(A, B) is a block of K
    np.testing.assert_allclose(soap_kernel(3.0 * vectors[:5], vectors[5:], zeta=2),
                               soap_kernel(vectors, zeta=2)[:5, 5:], atol=1e-12)
    with pytest.raises(ValueError, match="different feature lengths"):
        soap_kernel(vectors, vectors[:, :10])


def test_kernel_ridge_pipeline_equals_precomputed_kernel(vectors):
    X = crystals()
    y = np.array([a.get_volume() / len(a) for a in X])
    strain = np.arange(16) // 4  # every crystal at 4 strains: learn the outer, predict the inner
    tr, te = np.flatnonzero(strain % 3 == 0), np.flatnonzero(strain % 3 != 0)
    model = soap_kernel_ridge(alpha=1e-3, zeta=2, species=SPECIES).fit([X[i] for i in tr], y[tr])
    pred = model.predict([X[i] for i in te])
    mean, std = y[tr].mean(), y[tr].std()
    krr = KernelRidge(alpha=1e-3, kernel="precomputed").fit(
        soap_kernel(vectors[tr], zeta=2), (y[tr] - mean) / std)
    by_hand = krr.predict(soap_kernel(vectors[te], vectors[tr], zeta=2)) * std + mean
    np.testing.assert_allclose(pred, by_hand, rtol=1e-6)
    assert np.abs(pred - y[te]).mean() < 0.5 * np.abs(y[te] - mean).mean()  # it learns
    search = GridSearchCV(soap_kernel_ridge(species=SPECIES),
                          {"regressor__kernelridge__alpha": [1e-3, 1e-1],
                           "regressor__kernelridge__degree": [1, 2]},
                          cv=KFold(2, shuffle=True, random_state=0),
                          scoring="neg_mean_absolute_error").fit(X, y)
    assert search.best_estimator_.predict(X[:2]).shape == (2,)
    again = pickle.loads(pickle.dumps(clone(model).fit(X, y)))
    np.testing.assert_allclose(again.predict(X[:3]), clone(model).fit(X, y).predict(X[:3]))


def test_non_integer_zeta_refuses_negative_dot_products_instead_of_nan():
    # a negative base to a float power gave NaN silently
    A = np.array([[1.0, 0.0], [-1.0, 0.5], [0.2, 1.0]])
    with pytest.raises(ValueError, match=r"zeta=1.5 is not an integer, but 2 normalised dot "
                                         r"product\(s\) are negative \(the first -0.894, of "
                                         r"A\[0\] and B\[1\]\)"):
        soap_kernel(A, zeta=1.5)
    # integer powers keep their sign, as KernelRidge's polynomial kernel does
    K = soap_kernel(A, zeta=3)
    assert np.isfinite(K).all() and K[0, 1] < 0
    np.testing.assert_allclose(K, soap_kernel(A, zeta=3.0))
    # non-negative vectors (the usual power spectra) take any positive zeta
    P = np.abs(A)
    K = soap_kernel(P, zeta=1.5)
    assert np.isfinite(K).all()
    np.testing.assert_allclose(K, soap_kernel(P, zeta=1) ** 1.5)
    for zeta in (0, -1.0, float("nan"), True, "2"):
        with pytest.raises(ValueError, match="zeta must be a positive number"):
            soap_kernel(P, zeta=zeta)
    with pytest.raises(ValueError, match="zeta must be a positive int"):
        soap_kernel_ridge(zeta=1.5)


@pytest.mark.parametrize("params, name", [
    (dict(r_cut=0.5), "r_cut"), (dict(n_max=0), "n_max"), (dict(l_max=-1), "l_max"),
    (dict(sigma=0.0), "sigma"), (dict(compression="mu3"), "compression"),
    (dict(species="Cu"), "species"), (dict(n_jobs=None), "n_jobs")])
def test_invalid_parameters_name_themselves(params, name):
    with pytest.raises(ValueError, match=f"the '{name}' parameter of SOAPFeaturizer must be"):
        SOAPFeaturizer(**params).fit()
