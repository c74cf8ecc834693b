"""Which conformity score for EnsembleRegressor's split-conformal intervals (issue 28).

Reads the members' predictions that the protocol's ensembles stage stored
(``benchmarks/results/ensemble_members``: 10 trials of 625 fit and 125 test
crystals per model and target, 5 members each) and calibrates intervals on
crystals no member saw: the test crystals, halved at random, one half
calibrating and the other judging, 50 halvings per trial. Ensembles of 3 are
every 3 of the 5 members. Each score's scale is a fixed function of the
members' predictions, with constants taken from the fit crystals only, so
every row has the split-conformal guarantee; the rows differ in how wide and
how adaptive the intervals are:

- ``sigma``: ``|y - mean| / sigma`` (the members' standard deviation);
- ``absolute``: ``|y - mean|`` (the same width everywhere);
- ``sigma + beta``: ``|y - mean| / (sigma + beta)``, ``beta`` the median of
  sigma over the fit crystals (times 0.5 or 2 in the other rows): the rule of
  ``EnsembleRegressor``;
- ``sigma + val MAE``: the offset is the members' mean absolute error on their
  own validation crystals (halved in the last row).

Columns: coverage of the 90 % and 80 % intervals; mean width (target units);
the largest width over the training targets' span; the coverage in the
lowest and highest third of sigma (equal coverage: adaptive intervals); the
mean interval score at 90 % (width + 20 * miss distance, Gneiting & Raftery
2007, lower is better).

Run: ``python benchmarks/interval_scores.py > docs/results/interval_scores.txt`` (11 s).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

DUMPS = Path(__file__).parent / "results" / "ensemble_members"
RULES = {"sigma": None, "absolute": "abs", "sigma + beta/2": 0.5, "sigma + beta": 1.0,
         "sigma + 2 beta": 2.0, "sigma + val MAE": "mae", "sigma + val MAE/2": "mae/2"}


def quantile(scores, level):
    n = len(scores)
    return np.sort(scores)[min(n, int(np.ceil((n + 1) * level))) - 1]


def scale(rule, sigma, beta, mae):
    if rule is None:
        return np.maximum(sigma, 1e-12)
    if rule == "abs":
        return np.ones_like(sigma)
    if rule == "mae":
        return sigma + mae
    if rule == "mae/2":
        return sigma + mae / 2
    return sigma + rule * beta


def evaluate(d, members, rng, n_splits=50):
    out = {name: [] for name in RULES}
    fit, test = d["members_fit"][members], d["members_test"][members]
    beta = np.median(fit.std(axis=0, ddof=1))
    held = d["held"][members]
    mae = np.mean([np.abs(f[h] - d["y_fit"][h]).mean() for f, h in zip(fit, held)])
    span = np.ptp(d["y_fit"])
    mean, sigma = test.mean(axis=0), test.std(axis=0, ddof=1)
    err = np.abs(d["y_test"] - mean)
    for _ in range(n_splits):
        perm = rng.permutation(len(err))
        cal, ev = perm[: len(err) // 2], perm[len(err) // 2:]
        third = np.argsort(np.argsort(sigma[ev])) * 3 // len(ev)
        for name, rule in RULES.items():
            s = scale(rule, sigma, beta, mae)
            q90, q80 = (quantile(err[cal] / s[cal], lv) for lv in (0.9, 0.8))
            half = q90 * s[ev]
            hit = err[ev] <= half
            out[name].append([hit.mean(), np.mean(err[ev] <= q80 * s[ev]), 2 * half.mean(),
                              2 * half.max() / span, hit[third == 0].mean(),
                              hit[third == 2].mean(),
                              np.mean(2 * half + 20 * np.maximum(err[ev] - half, 0))])
    return {k: np.mean(v, axis=0) for k, v in out.items()}


def main():
    rng = np.random.RandomState(0)
    print(__doc__.split("\n\n")[0])
    for target in sorted(p.name for p in DUMPS.iterdir()):
        models = sorted({f.stem.rsplit("-", 1)[0] for f in (DUMPS / target).glob("*.npz")})
        for model, k in itertools.product(models, (5, 3)):
            rows = {name: [] for name in RULES}
            for f in sorted((DUMPS / target).glob(f"{model}-*.npz")):
                d = np.load(f)
                n = len(d["members_test"])
                for members in itertools.combinations(range(n), k):
                    for name, v in evaluate(d, list(members), rng, 50 if k == n else 5).items():
                        rows[name].append(v)
            print(f"\n{target}, {model}, {k} members ({len(rows['sigma'])} ensembles)")
            print(f"  {'score':<16} cover90 cover80  width  max/span  low-σ  high-σ  "
                  "interval score")
            for name, v in rows.items():
                v = np.mean(v, axis=0)
                print(f"  {name:<16} {v[0]:7.3f} {v[1]:7.3f} {v[2]:6.3f} {v[3]:9.2f} "
                      f"{v[4]:6.3f} {v[5]:7.3f} {v[6]:9.4f}")


if __name__ == "__main__":
    main()
