import numpy as np
import pytest
from ase.build import bulk
from sklearn.utils import estimator_checks as ec

from skcgcnn import CrystalGraphTransformer
from skcgcnn.datasets import load_dcdft


@pytest.fixture(scope="session")
def dcdft():
    """ASE's 71 elemental crystals as graphs, and log10 bulk modulus (GPa)."""
    atoms, B = load_dcdft()
    return atoms, CrystalGraphTransformer().transform(atoms), np.log10(B)


@pytest.fixture(scope="session")
def tiny():
    """Twelve strained Cu, Al and NaCl crystals with their volume per atom (Å^3)."""
    atoms = []
    for a in np.linspace(0.95, 1.05, 4):
        atoms += [bulk("Cu", a=3.6 * a), bulk("Al", a=4.05 * a),
                  bulk("NaCl", "rocksalt", a=5.64 * a)]
    y = np.array([at.get_volume() / len(at) for at in atoms])
    return atoms, CrystalGraphTransformer().transform(atoms), y



def check_param_validation(name, estimator):
    """Every constructor parameter set to an object of a type no parameter takes makes
    ``fit`` raise a ValueError naming the parameter and the estimator.

    scikit-learn's own ``check_param_validation`` reads the private
    ``_parameter_constraints`` of its internal validation, which skcgcnn does not use
    (plain checks in ``fit``); this is the same check on the behaviour.
    """
    from sklearn.base import clone

    bad = type("BadType", (), {})()
    for param in estimator.get_params(deep=False):
        broken = clone(estimator).set_params(**{param: bad})
        with pytest.raises(ValueError, match=f"the {param!r} parameter of {name} must be "):
            broken.fit()


#: scikit-learn's API checks that hold for estimators of structures (fit on numbers,
#: which these estimators ignore or only validate). A test that takes ``sklearn_check``
#: runs once per check, and per check in its module's ``EXTRA_SKLEARN_CHECKS``.
SKLEARN_API_CHECKS = [
    ec.check_get_params_invariance,
    ec.check_set_params,
    ec.check_no_attributes_set_in_init,
    ec.check_parameters_default_constructible,
    ec.check_do_not_raise_errors_in_init_or_set_params,
    ec.check_estimator_cloneable,
    ec.check_estimator_repr,
    ec.check_mixin_order,
    ec.check_valid_tag_types,
    ec.check_estimator_tags_renamed,
    check_param_validation,
    ec.check_estimators_overwrite_params,
    ec.check_dont_overwrite_parameters,
    ec.check_estimators_fit_returns_self,
    ec.check_requires_y_none,
]


def pytest_generate_tests(metafunc):
    if "sklearn_check" in metafunc.fixturenames:
        checks = SKLEARN_API_CHECKS + getattr(metafunc.module, "EXTRA_SKLEARN_CHECKS", [])
        metafunc.parametrize("sklearn_check", checks, ids=lambda c: c.__name__)
