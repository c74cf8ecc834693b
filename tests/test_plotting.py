import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402

from skcgcnn import CGCNNRegressor, CrystalGraphTransformer  # noqa: E402
from skcgcnn.plotting import (  # noqa: E402
    plot_calibration,
    plot_comparison,
    plot_history,
    plot_learning_curve,
    plot_parity,
)


@pytest.fixture
def ax():
    return Figure().subplots()


@pytest.fixture
def curve():
    """Two models, three sizes, three trials, with known means and stds."""
    rows = []
    for model, scale in (("CGCNN", 1.0), ("TL-CGCNN", 0.8)):
        for n in (500, 1000, 5000):
            for trial, noise in enumerate((-0.1, 0.0, 0.1)):
                mae = scale * (n / 500) ** -0.3 + noise
                rows.append(dict(trial=trial, model=model, n_train=n, test_mae=mae,
                                 train_mae=mae / 2, fit_time_s=1.0))
    return pd.DataFrame(rows)


def test_parity(ax):
    y = np.array([1.0, 2.0, 3.0, 4.0])
    pred = np.array([1.2, 1.8, 3.5, 4.0])
    out = plot_parity(y, pred, ax=ax, units="eV", label="TL-CGCNN")
    assert out is ax
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts == ["TL-CGCNN: MAE = 0.225 eV", "y = x"]
    np.testing.assert_allclose(ax.collections[0].get_offsets(), np.c_[y, pred])
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_xdata(), line.get_ydata())  # y = x
    assert line.get_xdata()[0] <= 1.0 and line.get_xdata()[-1] >= 4.0
    assert ax.get_xlabel() == "True value (eV)" and ax.get_ylabel() == "Predicted value (eV)"
    assert ax.get_xlim() == ax.get_ylim()


def test_parity_errors_and_new_figure():
    with pytest.raises(ValueError, match="different lengths"):
        plot_parity([1.0, 2.0], [1.0])
    ax = plot_parity([1.0, 2.0], [1.0, 2.5])  # ax=None: a new figure via pyplot (Agg)
    assert ax.get_legend().get_texts()[0].get_text() == "MAE = 0.25"
    import matplotlib.pyplot as plt

    plt.close(ax.figure)


def test_parity_error_bars(ax):
    y = np.array([1.0, 2.0, 3.0])
    out = plot_parity(y, y + 0.1, ax=ax, y_err=[0.1, 0.2, 0.3])
    np.testing.assert_allclose(out.collections[0].get_offsets(), np.c_[y, y + 0.1])
    (bars,) = out.containers
    segments = bars.lines[2][0].get_segments()
    np.testing.assert_allclose([s[1, 1] - s[0, 1] for s in segments], [0.2, 0.4, 0.6])
    with pytest.raises(ValueError, match="y_err must have shape"):
        plot_parity(y, y, ax=Figure().subplots(), y_err=[0.1, 0.2])


def test_calibration_plot(ax):
    rng = np.random.default_rng(1)
    err = rng.normal(size=4000)
    plot_calibration(err, np.zeros(4000), np.ones(4000), ax=ax, label="calibrated")
    plot_calibration(err, np.zeros(4000), np.full(4000, 0.5), ax=ax, levels=[0.5, 0.9])
    nominal, observed = ax.lines[0].get_data()
    np.testing.assert_allclose(nominal, np.arange(0.05, 0.951, 0.05))
    assert np.abs(observed - nominal).max() < 0.03  # unit normal errors, unit std
    assert len(ax.lines) == 3  # one diagonal
    nominal, observed = ax.lines[2].get_data()  # std too small by half: overconfident
    np.testing.assert_allclose(observed, [0.26, 0.59], atol=0.03)
    with pytest.raises(ValueError, match="different lengths"):
        plot_calibration([1.0], [1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="between 0 and 1"):
        plot_calibration([1.0], [1.0], [1.0], ax=ax, levels=[90])


def test_learning_curve_plot(ax, curve):
    plot_learning_curve(curve, ax=ax, units="eV")
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_legend_handles_labels()[1] == ["CGCNN", "TL-CGCNN"]
    assert len(ax.containers) == 2
    for container, scale in zip(ax.containers, (1.0, 0.8)):
        line = container.lines[0]
        np.testing.assert_allclose(line.get_xdata(), [500, 1000, 5000])
        np.testing.assert_allclose(line.get_ydata(),
                                   scale * (np.array([500, 1000, 5000]) / 500) ** -0.3)
        assert container.has_yerr
        # error bar half-length is the sample std of (-0.1, 0, 0.1), i.e. 0.1
        segments = container.lines[2][0].get_segments()
        np.testing.assert_allclose([s[1, 1] - s[0, 1] for s in segments], 0.2)
    assert ax.get_ylabel() == "Test MAE (eV)"
    assert ax.get_xlabel() == "Training set size (crystals)"


def test_comparison_one_size(ax, curve):
    results = curve[curve.n_train == 500]
    plot_comparison(results, ax=ax, units="eV")
    assert len(ax.patches) == 2  # one bar per model
    np.testing.assert_allclose([p.get_height() for p in ax.patches], [1.0, 0.8])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["CGCNN", "TL-CGCNN"]
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["1", "0.8"]
    # std error bars, 0.1 each side
    errbars = [c for c in ax.containers if hasattr(c, "has_yerr")]
    assert len(errbars) == 2
    for c in errbars:
        np.testing.assert_allclose([s[1, 1] - s[0, 1] for s in c.lines[2][0].get_segments()],
                                   0.2)
    assert ax.get_ylabel() == "Test MAE (eV)"


def test_comparison_grouped_by_size(ax, curve):
    plot_comparison(curve, ax=ax)
    assert len(ax.patches) == 6
    assert [t.get_text() for t in ax.get_xticklabels()] == ["500", "1000", "5000"]
    assert ax.get_legend_handles_labels()[1] == ["CGCNN", "TL-CGCNN"]
    heights = sorted(p.get_height() for p in ax.patches)
    expected = sorted(s * (n / 500) ** -0.3 for s in (1.0, 0.8) for n in (500, 1000, 5000))
    np.testing.assert_allclose(heights, expected)


def test_history(ax, tiny):
    _, graphs, y = tiny
    model = CGCNNRegressor(max_epochs=4, batch_size=8, random_state=0).fit(graphs, y)
    plot_history(model, ax=ax)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"train_loss", "valid_loss", "best epoch"}
    np.testing.assert_allclose(lines["train_loss"].get_ydata(), model.history_[:, "train_loss"])
    np.testing.assert_allclose(lines["valid_loss"].get_xdata(), [1, 2, 3, 4])
    valid = model.history_[:, "valid_loss"]
    assert lines["best epoch"].get_ydata()[0] == pytest.approx(min(valid))
    assert ax.get_xlabel() == "Epoch"


def test_history_of_pipeline_without_validation(ax, tiny):
    atoms, _, y = tiny
    pipe = make_pipeline(CrystalGraphTransformer(),
                         CGCNNRegressor(max_epochs=3, batch_size=8, random_state=0,
                                        validation_fraction=None)).fit(atoms, y)
    plot_history(pipe, ax=ax)
    assert [line.get_label() for line in ax.get_lines()] == ["train_loss"]


def test_history_unfitted():
    with pytest.raises(ValueError, match="fit it first"):
        plot_history(CGCNNRegressor(), ax=Figure().subplots())
