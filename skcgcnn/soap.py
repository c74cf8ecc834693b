"""The paper's structural baseline: average SOAP vectors and their dot-product kernel.

Lee & Asahi's Supplementary Table S2 compares ridge regression with a SOAP
kernel (Bartók, Kondor & Csányi 2013; the average kernel of De et al. 2016):
each crystal is the mean of its atoms' SOAP power spectra, and two crystals
are compared by the normalised dot product of their mean vectors raised to a
power ζ::

    K(A, B) = (p_A · p_B / (‖p_A‖ ‖p_B‖))^ζ

where p_A is the mean vector of crystal A.

:class:`SOAPFeaturizer` computes the mean vectors with dscribe (with a species
compression, so that ~90 elements stay tractable); after
:class:`~sklearn.preprocessing.Normalizer`, scikit-learn's
``KernelRidge(kernel="poly", degree=ζ, gamma=1, coef0=0)`` is exactly this
kernel, and :func:`soap_kernel` computes it for ``kernel="precomputed"``.
"""

from __future__ import annotations

import os
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, StrOptions

from .graph import StructureTransformerMixin, _as_list, read_structure_file

__all__ = ["SOAPFeaturizer", "soap_kernel", "soap_kernel_ridge"]

#: Species compressions of dscribe 2.x: the feature length for S species,
#: ``n_max`` radial and ``l_max + 1`` angular channels is S·n_max²·(l_max+1)
#: for "mu1nu1", S·n_max(n_max+1)/2·(l_max+1) for "crossover" (same-species
#: pairs only), and n_max(n_max+1)/2·(l_max+1) for "mu2" (element-agnostic).
COMPRESSIONS = ("mu1nu1", "crossover", "mu2")


def _atoms(obj, index):
    from ase import Atoms
    from pymatgen.core import Structure
    from pymatgen.io.ase import AseAtomsAdaptor

    if isinstance(obj, Atoms):
        return obj
    if isinstance(obj, Structure):
        return AseAtomsAdaptor.get_atoms(obj)
    if isinstance(obj, (str, os.PathLike)):
        return AseAtomsAdaptor.get_atoms(read_structure_file(obj, f" at index {index}"))
    raise TypeError(f"expected a Structure, ase.Atoms or path at index {index}, "
                    f"got {type(obj).__name__}")


class SOAPFeaturizer(StructureTransformerMixin, BaseEstimator):
    """Mean SOAP power spectrum of each crystal (dscribe), for the average kernel.

    Wraps ``dscribe.descriptors.SOAP`` with ``average="outer"`` (the mean of
    the atoms' power spectra) and periodic images. The species are fixed
    (hydrogen to plutonium by default), so the transformer is stateless and
    any crystal of those elements can be featurized.

    Parameters
    ----------
    r_cut : float, default=5.0
        Cutoff of the atomic environments in angstrom.
    n_max : int, default=4
        Radial basis functions.
    l_max : int, default=4
        Largest degree of the spherical harmonics.
    sigma : float, default=1.0
        Width of the Gaussians of the atomic density in angstrom.
    compression : {"mu1nu1", "crossover", "mu2"}, default="mu1nu1"
        dscribe's species compression: "mu1nu1" (Darby et al. 2022) couples
        each species with the sum over all species, "crossover" keeps only
        same-species pairs, "mu2" ignores species. With the default basis and
        94 species, "mu1nu1" gives 7,520 features per crystal, "crossover"
        4,700, "mu2" 50 (uncompressed SOAP would need about 215,000).
    species : sequence of int or None, default=None
        Atomic numbers the descriptor covers (None: 1 to 94). A crystal with
        another element raises.
    n_jobs : int, default=1
        Processes used by dscribe.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from skcgcnn.soap import SOAPFeaturizer
    >>> X = SOAPFeaturizer(species=[11, 17, 29]).fit_transform(
    ...     [bulk("Cu"), bulk("NaCl", "rocksalt", a=5.64)])
    >>> X.shape
    (2, 240)
    """

    _parameter_constraints = {
        "r_cut": [Interval(Real, 1.0, None, closed="neither")],
        "n_max": [Interval(Integral, 1, None, closed="left")],
        "l_max": [Interval(Integral, 0, None, closed="left")],
        "sigma": [Interval(Real, 0, None, closed="neither")],
        "compression": [StrOptions(set(COMPRESSIONS))],
        "species": ["array-like", None],
        "n_jobs": [Integral],
    }

    def __init__(self, r_cut=5.0, n_max=4, l_max=4, sigma=1.0, compression="mu1nu1",
                 species=None, n_jobs=1):
        self.r_cut = r_cut
        self.n_max = n_max
        self.l_max = l_max
        self.sigma = sigma
        self.compression = compression
        self.species = species
        self.n_jobs = n_jobs

    def _descriptor(self):
        from dscribe.descriptors import SOAP

        species = list(range(1, 95)) if self.species is None else \
            sorted({int(z) for z in self.species})
        return SOAP(species=species, r_cut=float(self.r_cut), n_max=int(self.n_max),
                    l_max=int(self.l_max), sigma=float(self.sigma), periodic=True,
                    average="outer", compression={"mode": self.compression}, dtype="float64")

    def transform(self, X):
        """Mean SOAP vectors.

        Parameters
        ----------
        X : sequence of Structure, ase.Atoms or paths

        Returns
        -------
        features : ndarray of shape (n_crystals, n_features), float64
        """
        self._validate_params()
        atoms = [_atoms(s, i) for i, s in enumerate(_as_list(X))]
        desc = self._descriptor()
        allowed = {int(z) for z in desc.species}
        for i, a in enumerate(atoms):
            extra = {int(z) for z in a.get_atomic_numbers()} - allowed
            if extra:
                raise ValueError(f"crystal at index {i} has atomic numbers {sorted(extra)} "
                                 f"outside the descriptor's species; pass species=... to "
                                 f"include them")
        out = desc.create(atoms, n_jobs=self.n_jobs)
        return np.asarray(out, dtype=np.float64).reshape(len(atoms), -1)

    def get_feature_names_out(self, input_features=None):
        """Feature names ``soap0``, ``soap1``, ...

        Returns
        -------
        names : ndarray of str
        """
        n = self._descriptor().get_number_of_features()
        return np.asarray([f"soap{i}" for i in range(n)], dtype=object)


def soap_kernel(A, B=None, zeta=2):
    """The average SOAP kernel: normalised dot products raised to the power ζ.

    Parameters
    ----------
    A : array-like of shape (n_a, n_features)
        Mean SOAP vectors (:class:`SOAPFeaturizer`), not necessarily normalised.
    B : array-like of shape (n_b, n_features), optional
        Second set (default: ``A``).
    zeta : float, default=2
        Power; larger values make the kernel more local.

    Returns
    -------
    K : ndarray of shape (n_a, n_b)
        Values in [0, 1] for non-negative vectors (power spectra averaged with
        ``"outer"`` are not always non-negative, so values down to -1 can
        occur for odd ζ); ones on the diagonal when ``B`` is None.

    Examples
    --------
    >>> import numpy as np
    >>> from skcgcnn.soap import soap_kernel
    >>> soap_kernel(np.array([[1.0, 0.0], [1.0, 1.0]]), zeta=2).round(3).tolist()
    [[1.0, 0.5], [0.5, 1.0]]
    """
    from sklearn.preprocessing import normalize

    A = normalize(np.asarray(A, dtype=np.float64))
    B = A if B is None else normalize(np.asarray(B, dtype=np.float64))
    if A.shape[1] != B.shape[1]:
        raise ValueError(f"A and B have different feature lengths: {A.shape[1]} and {B.shape[1]}")
    return np.clip(A @ B.T, -1.0, 1.0) ** zeta


def soap_kernel_ridge(alpha=1e-3, zeta=2, **soap_params):
    """Kernel ridge regression with the average SOAP kernel, as one pipeline.

    ``SOAPFeaturizer → Normalizer → KernelRidge(kernel="poly", degree=zeta,
    gamma=1, coef0=0)``, whose kernel is :func:`soap_kernel`, inside a
    ``TransformedTargetRegressor`` that standardises the target (kernel ridge
    has no intercept). Tune ``alpha`` and ``zeta`` with ``GridSearchCV`` under
    the names ``regressor__kernelridge__alpha`` and
    ``regressor__kernelridge__degree``. To tune without recomputing SOAP
    vectors, featurize once and use ``model.regressor.steps[1:]`` on the
    vectors (as ``benchmarks/paper.py`` in the source repository does).

    Parameters
    ----------
    alpha : float, default=1e-3
        Ridge penalty (in units of the standardised target squared).
    zeta : int, default=2
        Power of the kernel.
    **soap_params
        :class:`SOAPFeaturizer` parameters.

    Returns
    -------
    model : sklearn.compose.TransformedTargetRegressor

    Examples
    --------
    >>> import numpy as np
    >>> from ase.build import bulk
    >>> from skcgcnn.soap import soap_kernel_ridge
    >>> X = [bulk("Cu", a=a) for a in np.linspace(3.4, 3.8, 6)]
    >>> y = np.linspace(3.4, 3.8, 6) ** 3 / 4
    >>> model = soap_kernel_ridge(species=[29]).fit(X, y)
    >>> model.predict(X[:2]).shape
    (2,)
    """
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer, StandardScaler

    pipe = make_pipeline(SOAPFeaturizer(**soap_params), Normalizer(),
                         KernelRidge(alpha=alpha, kernel="poly", degree=zeta, gamma=1.0, coef0=0.0))
    return TransformedTargetRegressor(regressor=pipe, transformer=StandardScaler())
