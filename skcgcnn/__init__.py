"""skcgcnn: transfer learning with crystal graph convolutional neural networks in scikit-learn."""

import importlib

__version__ = "0.1.0"

#: Public names and the submodule each lives in. They are imported on first use
#: (PEP 562), so that featurizing worker processes, which need only
#: ``skcgcnn.graph``, start without importing torch and skorch (seconds each).
_EXPORTS = {
    "CGCNNRegressor": "estimators",
    "CGCNNClassifier": "classifiers",
    "EnsembleRegressor": "ensemble",
    "EnsembleClassifier": "ensemble",
    "TransferCGCNNRegressor": "estimators",
    "TransferCGCNNClassifier": "classifiers",
    "CrystalGraph": "graph",
    "CrystalGraphTransformer": "graph",
    "build_graph": "graph",
    "PretrainedEmbedding": "embedding",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'skcgcnn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
