"""Which probe should ``pretrained="auto"`` use? Offline check on the "single" stage's rows.

For every target and trial of ``paper.py --stage single`` the fine-tuned test MAE of every
allowed source is stored, so a probe's choice can be scored without fitting a network:
the MAE of the source it picks. Each probe variant ranks the same candidates on the same
625 fit crystals (pooled vectors computed once per candidate and trial, cached); the
table gives, per target, the mean MAE of its choices against the best source fixed in
hindsight. Caveat: the variants were designed on trials 0-9, which also report them;
trials 10-19 (``paper.py --stage single --max-trials 20``) are fresh.

    SKCGCNN_CACHE=benchmarks/cache python benchmarks/probe_variants.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
import paper  # noqa: E402
from sklearn.compose import TransformedTargetRegressor  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.kernel_ridge import KernelRidge  # noqa: E402
from sklearn.neighbors import KNeighborsRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.svm import SVR  # noqa: E402
from sklearn.utils import check_random_state  # noqa: E402

from skcgcnn.embedding import crystal_embeddings  # noqa: E402
from skcgcnn.io import atomic_write_bytes  # noqa: E402
from skcgcnn.modelfile import network_source  # noqa: E402
from skcgcnn.source_selection import default_probe, probe_score  # noqa: E402

def _scaled(estimator):
    """``estimator`` on standardised vectors and a standardised target."""
    return TransformedTargetRegressor(make_pipeline(StandardScaler(), estimator),
                                      transformer=StandardScaler())


def variants():
    """name: (probe, folds, random_state of the folds as rank_sources takes it)."""
    return {
        "ridge (default)": (default_probe(), 5, 0),
        "ridge, other folds": (default_probe(), 5, 1),
        "ridge, 10 folds": (default_probe(), 10, 0),
        "SVR (RBF)": (_scaled(SVR()), 5, 0),
        "KRR (RBF, tuned)": (_scaled(GridSearchCV(KernelRidge(kernel="rbf"), {
            "alpha": [1e-2, 1e-1, 1], "gamma": [1e-3, 1e-2]}, cv=3)), 5, 0),
        "kNN (10)": (make_pipeline(StandardScaler(), KNeighborsRegressor(10)), 5, 0),
    }


def vectors(target, trial, source, graphs):
    """Pooled vectors of ``source`` for the trial's fit crystals (bfloat16, as the "auto"
    rows were ranked), cached in benchmarks/cache."""
    def compute():
        module, _ = network_source(paper.source_model(source), conv_dtype="bfloat16")
        return crystal_embeddings(module, graphs, "pooled", 256, "cpu")

    return paper._cached(f"probe_vectors-{paper.slug(target)}-{trial}-{source}", compute)


def main():
    rows = []
    for target in paper.TARGETS:
        graphs, y = paper.load_target(target)
        frame = pd.read_csv(paper.RESULTS / f"{paper.slug(target)}.csv")
        splits = paper.stage_splits(target, "single", len(y),
                                    int(frame.trial.max()) + 1)[paper.N_TRAIN]
        sources = paper.allowed_sources(target)
        names = {s: paper.single_name(paper.SOURCE_LABELS[s]) for s in sources}
        mae = frame[frame.model.isin(names.values())].pivot_table(
            index="trial", columns="model", values="test_mae")
        for t, (train, val, _) in enumerate(splits):
            if t not in mae.index:
                continue
            fit = np.r_[train, val]
            z = {s: vectors(target, t, s, graphs[fit]) for s in sources}
            for name, (est, cv, state) in variants().items():
                # the folds rank_sources(random_state=state) draws (0: as the "auto" rows)
                seed = check_random_state(state).randint(2 ** 31 - 1)
                scores = {s: probe_score(z[s], y[fit], cv=cv, random_state=seed, estimator=est)
                          for s in sources}
                best = min(scores, key=scores.get)
                rows.append(dict(target=target, trial=t, probe=name, chosen=best,
                                 mae=mae.loc[t, names[best]]))
            print(target, t, flush=True)
        best_fixed = mae.mean().min()
        rows += [dict(target=target, trial=-1, probe="best fixed", chosen="", mae=best_fixed)]
    out = pd.DataFrame(rows)
    atomic_write_bytes(paper.RESULTS / "probe_variants.csv", out.to_csv(index=False).encode())
    table = out[out.trial >= 0].groupby(["probe", "target"]).mae.mean().unstack()
    fixed = out[out.trial < 0].set_index("target").mae
    print((100 * (table / fixed - 1)).round(1).to_string())


if __name__ == "__main__":
    main()
