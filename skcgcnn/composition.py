"""Composition descriptors for the classical baselines (matminer's magpie set)."""

from __future__ import annotations

import os
import warnings

import numpy as np
from sklearn.base import BaseEstimator

from .graph import (CrystalGraph, StructureTransformerMixin, _as_list, _check_n_jobs,
                    read_structure_file)

__all__ = ["MagpieFeaturizer"]


def _composition(obj, index):
    from pymatgen.core import Composition, Structure

    if hasattr(obj, "get_chemical_formula"):  # ase.Atoms
        return Composition(obj.get_chemical_formula())
    if isinstance(obj, Structure):
        return obj.composition
    if isinstance(obj, Composition):
        return obj
    if isinstance(obj, CrystalGraph):  # the composition of its atoms' atomic numbers
        from pymatgen.core import Element

        zs, counts = np.unique(obj.numbers, return_counts=True)
        return Composition({Element.from_Z(int(z)): int(n) for z, n in zip(zs, counts)})
    if isinstance(obj, (str, os.PathLike)):
        return read_structure_file(obj, f" at index {index}").composition
    raise TypeError(f"expected a Structure, ase.Atoms, Composition, CrystalGraph or path at "
                    f"index {index}, got {type(obj).__name__}")


class MagpieFeaturizer(StructureTransformerMixin, BaseEstimator):
    """The 132 magpie element-property descriptors of each crystal's composition.

    Wraps matminer's ``ElementProperty.from_preset("magpie")``, as the paper's
    PLS, LASSO, SVR and random-forest baselines did
    (:mod:`skcgcnn.baselines`). Crystals may be structures, ``ase.Atoms``,
    compositions, CIF paths or crystal graphs (whose composition is that of
    their atoms).

    A descriptor that matminer cannot compute, because an element lacks
    that property in the magpie tables (e.g. some properties of the noble
    gases and the heaviest elements), is set to 0 rather than NaN, so that
    every model can take the matrix. Call matminer's
    ``ElementProperty.from_preset("magpie")`` directly to see the NaNs.

    Parameters
    ----------
    n_jobs : int, default=1
        Processes used by matminer.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from skcgcnn.composition import MagpieFeaturizer
    >>> MagpieFeaturizer().fit_transform([bulk("Cu"), bulk("NaCl", "rocksalt", a=5.6)]).shape
    (2, 132)
    """

    def _check_params(self):
        _check_n_jobs(self)

    def __init__(self, n_jobs=1):
        self.n_jobs = n_jobs

    def transform(self, X):
        """Descriptors, shape (n_crystals, 132)."""
        from matminer.featurizers.composition import ElementProperty

        comps = [_composition(s, i) for i, s in enumerate(_as_list(X))]
        ep = ElementProperty.from_preset("magpie")
        ep.set_n_jobs(self.n_jobs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = [ep.featurize(c) for c in comps] if self.n_jobs == 1 else \
                ep.featurize_many(comps, pbar=False)
        return np.nan_to_num(np.asarray(rows, dtype=float))

    def get_feature_names_out(self, input_features=None):
        """matminer's labels of the 132 descriptors ("MagpieData mean Number", ...).

        Returns
        -------
        names : ndarray of str
        """
        from matminer.featurizers.composition import ElementProperty

        return np.asarray(ElementProperty.from_preset("magpie").feature_labels(), dtype=object)
