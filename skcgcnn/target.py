"""Target normalisation: the paper's tanh map (eq. 6) and plain standardisation.

The network is trained on normalised targets ``y'`` and its outputs are mapped
back to the target's own units on prediction.

* ``"tanh"``: y' = ½[tanh(0.01 (y − μ)/s) + 1] (Lee & Asahi, eq. 6), μ the mean
  and s the standard deviation of the training targets.
* ``"standard"``: y' = (y − μ)/s, the default here as in the estimators
  (``CGCNNRegressor(target_normalization="standard")``).
* ``None``: y' = y.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TARGET_NORMALIZATIONS", "fit_target_stats", "normalize", "denormalize"]

TARGET_NORMALIZATIONS = ("tanh", "standard", None)
_TANH_GAIN = 0.01
#: Largest |2y' - 1| inverted; keeps arctanh finite for outputs outside (0, 1).
_TANH_CLIP = 1 - 1e-7


def _check_kind(kind):
    if kind not in TARGET_NORMALIZATIONS:
        raise ValueError(f"target_normalization must be one of {TARGET_NORMALIZATIONS}, got {kind!r}")


def fit_target_stats(y, kind="standard"):
    """Mean and scale of the training targets for a normalisation.

    Parameters
    ----------
    y : array-like of shape (n_samples,) or (n_samples, n_targets)
        Training targets, in their own units. With several columns each gets
        its own statistics, over its finite values (missing labels are NaN).
    kind : {"standard", "tanh", None}, default="standard"

    Returns
    -------
    mean, scale : float, or ndarray of shape (n_targets,) for a 2-D ``y``
        μ and s in the target's units (0 and 1 for ``None``; a constant
        target gets s = 1).

    Examples
    --------
    >>> import numpy as np
    >>> from skcgcnn.target import fit_target_stats
    >>> fit_target_stats([1.0, 2.0, 3.0])
    (2.0, 0.816496580927726)
    >>> fit_target_stats([[1.0, 0.0], [3.0, np.nan]], kind="standard")
    (array([2., 0.]), array([1., 1.]))
    """
    _check_kind(kind)
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 2:
        stats = [fit_target_stats(col[np.isfinite(col)], kind) for col in y.T]
        return tuple(np.array(s) for s in zip(*stats))
    if kind is None:
        return 0.0, 1.0
    scale = float(y.std())
    return float(y.mean()), scale if scale > 0 else 1.0


def normalize(y, mean, scale, kind="standard"):
    """Map targets to the network's scale.

    Examples
    --------
    >>> import numpy as np
    >>> from skcgcnn.target import normalize, denormalize
    >>> normalize(np.array([0.0, 10.0]), 5.0, 5.0)
    array([-1.,  1.])
    >>> yn = normalize(np.array([0.0, 10.0]), 5.0, 5.0, "tanh")
    >>> np.round(yn, 6)
    array([0.495, 0.505])
    >>> np.round(denormalize(yn, 5.0, 5.0, "tanh"), 6)
    array([ 0., 10.])
    """
    _check_kind(kind)
    y = np.asarray(y, dtype=np.float64)
    if kind is None:
        return y
    z = (y - mean) / scale
    if kind == "standard":
        return z
    return 0.5 * (np.tanh(_TANH_GAIN * z) + 1.0)


def denormalize(y, mean, scale, kind="standard"):
    """Map network outputs back to the target's units (inverse of :func:`normalize`)."""
    _check_kind(kind)
    y = np.asarray(y, dtype=np.float64)
    if kind is None:
        return y
    if kind == "tanh":
        y = np.arctanh(np.clip(2.0 * y - 1.0, -_TANH_CLIP, _TANH_CLIP)) / _TANH_GAIN
    return y * scale + mean
