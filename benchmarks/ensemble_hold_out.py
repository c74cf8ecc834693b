"""Why ``TransferCGCNNRegressor`` keeps ``validation_fraction=0.2`` by default although one
model trained on every crystal is more accurate (docs/benchmarks.md, "One fine-tuned
model"): the intervals of an ensemble of such members.

A 3-member ``EnsembleRegressor`` of ``TransferCGCNNRegressor`` at the fine-tuning defaults,
fitted on 300 bundled bulk moduli (log10 GPa) and tested on 500 others, the members holding
out a fifth each (the default) or none. Writes docs/results/ensemble_hold_out.json.

    python benchmarks/ensemble_hold_out.py
"""

from __future__ import annotations

import json
import warnings

import numpy as np
from common import ROOT

from skcgcnn import CrystalGraphTransformer, EnsembleRegressor, TransferCGCNNRegressor
from skcgcnn.datasets import load_mp_elasticity
from skcgcnn.io import atomic_write_bytes


def main():
    data = load_mp_elasticity()
    order = np.random.RandomState(0).permutation(len(data))[:800]
    graphs = CrystalGraphTransformer().transform(list(data.structure.iloc[order]))
    y = np.log10(data.K_VRH.to_numpy()[order])
    span = float(np.ptp(y[:300]))
    out = {"span_of_training_targets": span, "confidence_level": 0.9}
    for fraction in (0.2, None):
        with warnings.catch_warnings():  # the wide-interval warning is what is measured
            warnings.simplefilter("ignore")
            model = EnsembleRegressor(TransferCGCNNRegressor(
                conv_dtype="float32", validation_fraction=fraction), n_estimators=3,
                random_state=0).fit(graphs[:300], y[:300])
            lo, hi = model.predict_interval(graphs[300:], 0.9).T
        width = hi - lo
        out[f"validation_fraction={fraction}"] = dict(
            test_mae=float(np.mean(np.abs(model.predict(graphs[300:]) - y[300:]))),
            coverage=float(np.mean((y[300:] >= lo) & (y[300:] <= hi))),
            median_width=float(np.median(width)), max_width=float(width.max()),
            wider_than_span=int((width > span).sum()))
        print(fraction, out[f"validation_fraction={fraction}"], flush=True)
    atomic_write_bytes(ROOT / "docs" / "results" / "ensemble_hold_out.json",
                       (json.dumps(out, indent=2) + "\n").encode())


if __name__ == "__main__":
    main()
