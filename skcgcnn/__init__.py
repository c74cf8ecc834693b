"""skcgcnn: transfer learning with crystal graph convolutional neural networks in scikit-learn."""

from .estimators import CGCNNRegressor, TransferCGCNNRegressor
from .graph import CrystalGraph, CrystalGraphTransformer, build_graph

__version__ = "0.1.0"

__all__ = ["CGCNNRegressor", "TransferCGCNNRegressor", "CrystalGraph", "CrystalGraphTransformer", "build_graph", "__version__"]
