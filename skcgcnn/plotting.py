"""Plots of the paper's figures with matplotlib: parity, learning curve, comparison, history.

Every function draws on ``ax`` (a new figure's axes when ``ax`` is None) and
returns the :class:`matplotlib.axes.Axes`. ``matplotlib.pyplot`` is imported
only when a new figure is needed, so passing axes from a
:class:`matplotlib.figure.Figure` works with any backend, headless included.
"""

from __future__ import annotations

import numpy as np

__all__ = ["plot_parity", "plot_calibration", "plot_learning_curve", "plot_comparison",
           "plot_history"]


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    return ax


def _with_units(label, units):
    return f"{label} ({units})" if units else label


def _metric_label(metric):
    """``"test_mae"`` -> ``"Test MAE"``."""
    words = [w.upper() if w.lower() in ("mae", "rmse") else w for w in metric.split("_")]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def _summary(results, metric):
    from .stats import summarize

    summary = summarize(results)
    if f"{metric}_mean" not in summary.columns:
        raise ValueError(f"results have no column {metric!r}")
    return summary


def plot_parity(y_true, y_pred, ax=None, units=None, label=None, y_err=None):
    """Predicted against true values, with the y = x line and the MAE.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n_samples,)
        True and predicted targets, in the same units.
    ax : matplotlib Axes, optional
        Axes to draw on; a new figure's by default.
    units : str, optional
        Units of the target (e.g. ``"eV"``), shown in the axis labels and the MAE.
    label : str, optional
        Name of the model, put before the MAE in the legend.
    y_err : array-like of shape (n_samples,) or (2, n_samples), optional
        Error bars of the predictions, e.g. ``1.645 * std`` of
        :meth:`skcgcnn.EnsembleRegressor.predict` for 90 % intervals, or
        the distances to the lower and upper bounds (matplotlib's ``yerr``).

    Returns
    -------
    ax : matplotlib Axes
        The points are ``ax.collections[0]`` (with ``y_err``, the error bars
        are ``ax.containers[0]``); the legend reads
        ``"MAE = 0.123 eV"`` (3 significant digits).

    Examples
    --------
    >>> from matplotlib.figure import Figure
    >>> from skcgcnn.plotting import plot_parity
    >>> ax = plot_parity([1.0, 2.0, 3.0], [1.5, 2.0, 2.0], ax=Figure().subplots(), units="eV")
    >>> [t.get_text() for t in ax.get_legend().get_texts()]
    ['MAE = 0.5 eV', 'y = x']
    """
    y_true = np.asarray(y_true, dtype=float).ravel()
    y_pred = np.asarray(y_pred, dtype=float).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred have different lengths: "
                         f"{len(y_true)} and {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("y_true is empty")
    ax = _axes(ax)
    mae = float(np.mean(np.abs(y_true - y_pred)))
    text = _with_units(f"MAE = {mae:.3g}", None) + (f" {units}" if units else "")
    if y_err is not None:
        y_err = np.asarray(y_err, dtype=float)
        if y_err.ndim not in (1, 2) or y_err.shape[-1] != len(y_true) or \
                (y_err.ndim == 2 and y_err.shape[0] != 2):
            raise ValueError(f"y_err must have shape ({len(y_true)},) or (2, {len(y_true)}), "
                             f"got {y_err.shape}")
    ax.scatter(y_true, y_pred, s=12, alpha=0.7, label=f"{label}: {text}" if label else text)
    if y_err is not None:
        ax.errorbar(y_true, y_pred, yerr=y_err, fmt="none", ecolor="0.6", elinewidth=0.8,
                    alpha=0.6, zorder=1)
    lo = float(np.nanmin(np.r_[y_true, y_pred]))
    hi = float(np.nanmax(np.r_[y_true, y_pred]))
    pad = 0.05 * (hi - lo or 1.0)
    lims = (lo - pad, hi + pad)
    ax.plot(lims, lims, color="0.4", linestyle="--", linewidth=1, label="y = x")
    ax.set_xlim(lims)
    ax.set_ylim(lims)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(_with_units("True value", units))
    ax.set_ylabel(_with_units("Predicted value", units))
    ax.legend(loc="upper left")
    return ax


def plot_calibration(y_true, y_pred, y_std, ax=None, levels=None, label=None):
    """Observed against nominal coverage of the intervals ``y_pred ± z * y_std``.

    For each nominal level *p*, ``z`` is the normal quantile of (1 + *p*) / 2
    (1.645 for 90 %) and the observed coverage is the fraction of crystals
    with ``|y_true - y_pred| <= z * y_std``. A calibrated model follows the
    diagonal; below it, the intervals are too narrow (overconfident).

    Parameters
    ----------
    y_true, y_pred, y_std : array-like of shape (n_samples,)
        True values, predictions and standard deviations (e.g. from
        :meth:`skcgcnn.EnsembleRegressor.predict` with ``return_std=True``)
        on crystals the model was not fitted on.
    ax : matplotlib Axes, optional
        Axes to draw on; a new figure's by default.
    levels : array-like of float, optional
        Nominal levels in (0, 1); default 0.05, 0.10, ..., 0.95.
    label : str, optional
        Name of the model in the legend.

    Returns
    -------
    ax : matplotlib Axes
        The curve is ``ax.lines[0]`` (x: nominal, y: observed coverage), the
        diagonal ``ax.lines[1]`` (drawn once: call again on the same axes to
        add another model's curve).

    Examples
    --------
    >>> import numpy as np
    >>> from matplotlib.figure import Figure
    >>> from skcgcnn.plotting import plot_calibration
    >>> rng = np.random.default_rng(0)
    >>> y = rng.normal(size=2000)  # errors of unit standard deviation
    >>> ax = plot_calibration(y, np.zeros(2000), np.ones(2000), ax=Figure().subplots())
    >>> nominal, observed = ax.lines[0].get_data()
    >>> bool(np.abs(observed - nominal).max() < 0.03)
    True
    """
    from scipy.stats import norm

    y_true, y_pred, y_std = (np.asarray(a, dtype=float).ravel() for a in (y_true, y_pred, y_std))
    if not len(y_true) == len(y_pred) == len(y_std):
        raise ValueError(f"y_true, y_pred and y_std have different lengths: {len(y_true)}, "
                         f"{len(y_pred)} and {len(y_std)}")
    if len(y_true) == 0:
        raise ValueError("y_true is empty")
    levels = np.arange(0.05, 0.951, 0.05) if levels is None else np.asarray(levels, float)
    if np.any((levels <= 0) | (levels >= 1)):
        raise ValueError("levels must lie strictly between 0 and 1")
    z = norm.ppf(0.5 + levels / 2)
    err = np.abs(y_true - y_pred)
    observed = (err[None, :] <= z[:, None] * y_std[None, :]).mean(axis=1)
    ax = _axes(ax)
    ax.plot(levels, observed, marker="o", markersize=4, label=label or "observed")
    if not any(line.get_label() == "ideal" for line in ax.lines):  # once per axes
        ax.plot([0, 1], [0, 1], color="0.4", linestyle="--", linewidth=1, label="ideal")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel("Nominal coverage of mean ± z·std")
    ax.set_ylabel("Observed coverage")
    ax.legend(loc="upper left")
    return ax


def plot_learning_curve(results, ax=None, metric="test_mae", units=None):
    """Log-log test MAE against training size per model (the paper's Fig. 4).

    Parameters
    ----------
    results : pandas.DataFrame
        From :func:`skcgcnn.stats.learning_curve` or :func:`~skcgcnn.stats.run_trials`.
    ax : matplotlib Axes, optional
        Axes to draw on; a new figure's by default.
    metric : str, default="test_mae"
        Column to plot: the mean over trials, with the standard deviation as
        error bar (none with a single trial).
    units : str, optional
        Units of the target, shown in the y label.

    Returns
    -------
    ax : matplotlib Axes
        One error-bar line per model (``ax.containers``, labelled with the
        model name), both axes on a log scale.

    Examples
    --------
    >>> import pandas as pd
    >>> from matplotlib.figure import Figure
    >>> from skcgcnn.plotting import plot_learning_curve
    >>> results = pd.DataFrame({"trial": [0, 1] * 4, "n_train": [500, 500, 1000, 1000] * 2,
    ...                         "model": ["CGCNN"] * 4 + ["TL-CGCNN"] * 4,
    ...                         "test_mae": [1.0, 0.9, 0.8, 0.7, 0.8, 0.75, 0.7, 0.65]})
    >>> ax = plot_learning_curve(results, ax=Figure().subplots(), units="eV")
    >>> ax.get_legend_handles_labels()[1], ax.get_xscale(), ax.get_yscale()
    (['CGCNN', 'TL-CGCNN'], 'log', 'log')
    """
    summary = _summary(results, metric)
    ax = _axes(ax)
    for name, sub in summary.groupby("model", sort=False):
        sub = sub.sort_values("n_train")
        ax.errorbar(sub["n_train"].to_numpy(dtype=float),
                    sub[f"{metric}_mean"].to_numpy(dtype=float),
                    yerr=sub[f"{metric}_std"].fillna(0.0).to_numpy(dtype=float),
                    marker="o", capsize=3, label=str(name))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Training set size (crystals)")
    ax.set_ylabel(_with_units(_metric_label(metric), units))
    ax.legend()
    return ax


def plot_comparison(results, ax=None, metric="test_mae", units=None):
    """Bars of mean test MAE per model, with standard deviations (the paper's Figs. 5, 6).

    Parameters
    ----------
    results : pandas.DataFrame
        From :func:`skcgcnn.stats.run_trials`. With several training sizes the
        bars are grouped by size, one colour per model.
    ax : matplotlib Axes, optional
        Axes to draw on; a new figure's by default.
    metric : str, default="test_mae"
        Column to plot: the mean over trials, with the standard deviation as
        error bar.
    units : str, optional
        Units of the target, shown in the y label.

    Returns
    -------
    ax : matplotlib Axes
        One bar (``ax.patches``) per model and training size, its height the
        mean, labelled with its value.

    Examples
    --------
    >>> import pandas as pd
    >>> from matplotlib.figure import Figure
    >>> from skcgcnn.plotting import plot_comparison
    >>> results = pd.DataFrame({"trial": [0, 1] * 3, "n_train": 500,
    ...                         "model": ["CGCNN"] * 2 + ["TL-CGCNN"] * 2 + ["RF"] * 2,
    ...                         "test_mae": [1.0, 0.9, 0.8, 0.82, 0.85, 0.89]})
    >>> ax = plot_comparison(results, ax=Figure().subplots(), units="eV")
    >>> [round(float(p.get_height()), 2) for p in ax.patches]
    [0.95, 0.81, 0.87]
    >>> [t.get_text() for t in ax.get_xticklabels()]
    ['CGCNN', 'TL-CGCNN', 'RF']
    """
    summary = _summary(results, metric)
    ax = _axes(ax)
    models = list(dict.fromkeys(summary["model"]))
    sizes = sorted(summary["n_train"].unique())
    single = len(sizes) == 1
    width = 0.8 if single else 0.8 / len(models)
    for j, name in enumerate(models):
        sub = summary[summary["model"] == name].set_index("n_train").reindex(sizes)
        if single:
            x = np.array([j], dtype=float)
        else:
            x = np.arange(len(sizes)) - 0.4 + width * (j + 0.5)
        bars = ax.bar(x, sub[f"{metric}_mean"].to_numpy(dtype=float), width=width,
                      yerr=sub[f"{metric}_std"].fillna(0.0).to_numpy(dtype=float), capsize=4,
                      color=f"C{j % 10}", label=str(name))
        ax.bar_label(bars, fmt="%.3g", padding=2)
    if single:
        ax.set_xticks(range(len(models)), [str(m) for m in models])
        ax.set_title(f"{sizes[0]} training crystals")
    else:
        ax.set_xticks(range(len(sizes)), [str(s) for s in sizes])
        ax.set_xlabel("Training set size (crystals)")
        ax.legend()
    ax.set_ylabel(_with_units(_metric_label(metric), units))
    return ax


def plot_history(estimator, ax=None, keys=("train_loss", "valid_loss")):
    """Training and validation loss per epoch of a fitted skorch estimator.

    Parameters
    ----------
    estimator : fitted skorch NeuralNet, CGCNNRegressor or Pipeline ending in one
        Its ``history_`` (or ``history``) is read; a pipeline's last step is used.
    ax : matplotlib Axes, optional
        Axes to draw on; a new figure's by default.
    keys : sequence of str, default=("train_loss", "valid_loss")
        History entries to draw; those not recorded (no validation split) are
        skipped. For :class:`~skcgcnn.CGCNNRegressor` the losses are the MAE of
        the normalised target. The epoch with the lowest ``valid_loss``, the
        one a CGCNNRegressor keeps, is marked.

    Returns
    -------
    ax : matplotlib Axes
        One line per drawn key, labelled with the key.

    Examples
    --------
    >>> from ase.build import bulk
    >>> from matplotlib.figure import Figure
    >>> from skcgcnn import CGCNNRegressor
    >>> from skcgcnn.plotting import plot_history
    >>> X = [bulk("Cu", a=a) for a in (3.5, 3.6, 3.7, 3.8, 3.9)]
    >>> model = CGCNNRegressor(max_epochs=3, random_state=0).fit(X, [1.0, 2.0, 3.0, 4.0, 5.0])
    >>> ax = plot_history(model, ax=Figure().subplots())
    >>> [(line.get_label(), len(line.get_xdata())) for line in ax.get_lines()]
    [('train_loss', 3), ('valid_loss', 3), ('best epoch', 1)]
    """
    if hasattr(estimator, "steps"):  # a Pipeline
        estimator = estimator.steps[-1][1]
    history = getattr(estimator, "history_", None)
    if history is None:
        history = getattr(estimator, "history", None)
    if history is None or len(history) == 0:
        raise ValueError(f"{type(estimator).__name__} has no training history; fit it first")
    ax = _axes(ax)
    epochs = np.array([row.get("epoch", i + 1) for i, row in enumerate(history)])
    drawn = 0
    for key in keys:
        values = [row.get(key) for row in history]
        if any(v is None for v in values):
            continue
        ax.plot(epochs, np.asarray(values, dtype=float), label=key)
        drawn += 1
        if key == "valid_loss":
            best = int(np.argmin(values))
            ax.plot([epochs[best]], [values[best]], marker="*", markersize=12,
                    linestyle="none", color="k", label="best epoch")
    if drawn == 0:
        raise ValueError(f"the history records none of {list(keys)}")
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Loss")
    ax.legend()
    return ax
