"""Reproduce Lee & Asahi's comparison on ../shared/data: repeated trials, baselines, curves.

Examples
--------
python benchmarks/paper.py                          # every stage and target (many CPU hours)
python benchmarks/paper.py --stage baselines main   # what docs/benchmarks.md reports first
python benchmarks/paper.py --targets 500-K_VRH --stage transfer --n-jobs 2
python benchmarks/paper.py --targets 500-NM-ΔE_f --stage ensembles --models "TL-CGCNN ensemble"
python benchmarks/paper.py --report                 # tables and plots from the CSVs, no fitting
python benchmarks/paper.py --recalibrate            # ensembles rows: coverage from the dumps

The protocol (``skcgcnn.stats``): per target, 10 random 500/125/125 splits
(``repeated_splits``, seed 0), the same for every model. A CGCNN sees the 625
training + validation crystals and holds out the 125 for its best epoch; a
classical model tunes its hyperparameters by 5-fold ``GridSearchCV`` on the
625. Test MAE on the 125 others. Learning curves use the paper's trial counts
(5 up to 10k crystals, 2 above).

Stages:

- ``baselines``: PLS, LASSO, SVR (RBF) and random forest on the 132 magpie
  descriptors (``skcgcnn.composition.MagpieFeaturizer``) after ``StandardScaler``,
  with the grids of ``skcgcnn.baselines`` (the ones ``skcgcnn compare`` uses).
- ``main``: CGCNN from scratch and TL-CGCNN fine-tuned (all parameters) from
  the larger pretrained model of the other property.
- ``transfer``: TL-CGCNN from the 10k pretrained model, layer freezing (all but
  the head), a mixed strategy (embedding and first convolution frozen), TL-CGCNN
  with ``TransferCGCNNRegressor``'s fine-tuning defaults instead of the protocol's; on
  K_VRH also TL-CGCNN from the multi-property model (``mp-multitask``: ΔE_f,
  E_g, E_fermi and magnetization of the MP crystals, so not on the MP targets,
  whose labels it has seen).
- ``curves``: CGCNN against TL-CGCNN at more training crystals.
- ``ensembles`` (beyond the paper): ``skcgcnn.EnsembleRegressor`` of 5 seeds
  (``random_state=0``), of CGCNN from scratch (the protocol's fit settings) and of
  the main TL-CGCNN (``TransferCGCNNRegressor``'s fine-tuning defaults: 30 epochs of
  batch 32 on a cosine, a fifth of the protocol's cost), at 500 training crystals, with the calibrated std: besides the test MAE, the coverage
  of the 90 % intervals and the Spearman correlation between |error| and std go
  to ``benchmarks/results/<target>-ensembles.csv``. (The ensemble rows of
  ``<target>.csv`` are the earlier ``VotingRegressor`` of seeds 0 to 4.)
- ``embeddings`` (beyond the paper): SVR, kernel ridge and a Gaussian process on
  the crystal vectors of the pretrained model of the main TL-CGCNN
  (``skcgcnn.PretrainedEmbedding``: pooled vector and head hidden layer), alone
  and with magpie, and kernel ridge and the Gaussian process on magpie alone.
- ``soap``: the paper's kernel ridge with the average SOAP kernel (Table S2;
  ``skcgcnn.soap``), mean SOAP vectors cached in ``benchmarks/cache``.

Every finished fit is appended to ``benchmarks/results/<target>.csv`` at once
(``run_trials(path=...)``): stop at any time and rerun to resume. ``--report``
rewrites the generated parts of ``docs/benchmarks.md`` (the headline table at its
top, the tables of every stage) and the PNG figures in ``docs/results/``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.ensemble import VotingRegressor

sys.path.insert(0, os.path.dirname(__file__))
from common import MP_CRYSTALS, MP_ELASTICITY, ROOT, load_table_and_graphs, nm_mask  # noqa: E402

from skcgcnn import CGCNNRegressor, EnsembleRegressor, TransferCGCNNRegressor  # noqa: E402
from skcgcnn.baselines import baseline_models  # noqa: E402
from skcgcnn.stats import (paired_ttest, paper_n_trials, repeated_splits,  # noqa: E402
                           run_trials, summarize, equivalent_training_size)

#: Where the results CSVs go; PAPER_RESULTS sends a second, concurrent run elsewhere (two
#: runs must not share a file: each rewrites it with the rows it read at start).
RESULTS = Path(os.environ.get("PAPER_RESULTS", ROOT / "benchmarks" / "results"))
DOC = ROOT / "docs" / "benchmarks.md"
FIGURES = ROOT / "docs" / "results"
BEGIN, END = "<!-- paper.py report: begin -->", "<!-- paper.py report: end -->"

#: The paper's TL-CGCNN pretraining sets here: (name in skcgcnn.pretrained, label).
FE_MODELS = [("mp-formation-energy", "36k-ΔE_f"), ("mp-formation-energy-10k", "10k-ΔE_f")]
GAP_MODELS = [("mp-band-gap-nm", "20k-NM-E_g"), ("mp-band-gap-nm-10k", "10k-NM-E_g")]

#: Targets: data file, subset, column, log10, units, pretrained models (largest first),
#: training sizes of the learning curve, and the paper's and the issue's figures ("goal":
#: an ensemble's, "single_goal": one fine-tuned model's, issue 31).
TARGETS = {
    "500-NM-E_g": dict(data=MP_CRYSTALS, nm=True, column="band_gap", log10=False, units="eV",
                       pretrained=FE_MODELS, curve=[500, 1000, 5000, 10000],
                       paper=dict(CGCNN=0.978, TL=0.815, freezing=0.956, PLS=1.051,
                                  LASSO=1.078, SVR=1.070, RF=0.872),
                       design=dict(PLS=0.914, LASSO=0.890, SVR=0.760, RF=0.727),
                       goal=0.65, single_goal=0.67),
    "500-NM-ΔE_f": dict(data=MP_CRYSTALS, nm=True, column="formation_energy_per_atom",
                        log10=False, units="eV/atom", pretrained=GAP_MODELS, curve=[500],
                        paper=dict(CGCNN=0.184, TL=0.149, freezing=0.424, PLS=0.257,
                                   LASSO=0.262, SVR=0.332, RF=0.215),
                        design=dict(PLS=0.256, LASSO=0.243, SVR=0.170, RF=0.214),
                        goal=0.13, single_goal=0.13),
    "500-ΔE_f": dict(data=MP_CRYSTALS, nm=False, column="formation_energy_per_atom",
                     log10=False, units="eV/atom", pretrained=GAP_MODELS, curve=[500],
                     paper=dict(CGCNN=0.239, TL=0.222),
                     design=dict(PLS=0.300, LASSO=0.286, SVR=0.221, RF=0.234),
                     goal=0.18, single_goal=0.18),
    "500-K_VRH": dict(data=MP_ELASTICITY, nm=False, column="K_VRH", log10=True,
                      units="log10 GPa", pretrained=FE_MODELS, curve=[500, 1000, 1727],
                      paper=dict(CGCNN=0.123, TL=0.112, freezing=0.161, PLS=0.166,
                                 LASSO=0.160, SVR=0.149, RF=0.132),
                      design=dict(PLS=0.130, LASSO=0.119, SVR=0.102, RF=0.092),
                      goal=0.065, single_goal=0.065),
    # not in the paper (issue 31): the shear modulus of the same crystals, a second property
    # that no library model has seen
    "500-G_VRH": dict(data=MP_ELASTICITY, nm=False, column="G_VRH", log10=True,
                      units="log10 GPa", pretrained=FE_MODELS, curve=[500], paper={},
                      design={}, goal=None),
}
STAGES = ("baselines", "main", "transfer", "curves", "ensembles", "embeddings", "soap", "single")
N_TRAIN = 500
N_MEMBERS = 5
#: Fitting settings of every CGCNN here (the command-line defaults).
#: The former defaults held out a fifth (TransferCGCNNRegressor's ``validation_fraction``
#: became "auto", none for a lone model): the rows measured with them pin it.
HELD_OUT = dict(validation_fraction=0.2)
FIT = dict(max_epochs=150, lr_decay_epoch=100, batch_size=64, conv_dtype="bfloat16",
           random_state=0, lr_schedule="step", **HELD_OUT)
#: Fine-tuning learning rate of the protocol (the paper's; TransferCGCNNRegressor's default
#: became 0.01 with a cosine schedule over 30 epochs, so the protocol pins it).
TL_LR = 0.005


def tl_name(target):
    """Table name of the main TL-CGCNN row: fine-tuned from the larger pretrained model."""
    return f"TL-CGCNN ({TARGETS[target]['pretrained'][0][1]})"


def slug(target):
    """File-name form of a target name: 500-NM-ΔE_f -> 500-NM-dE_f."""
    return target.replace("Δ", "d")


# ------------------------------------------------------------------- data
_TABLES = {}


def load_target(target):
    """Graphs and targets (log10 where the target says so) of one target's crystals."""
    spec = TARGETS[target]
    if spec["data"] not in _TABLES:  # one copy of a data file's graphs per process
        _TABLES[spec["data"]] = load_table_and_graphs(spec["data"])
    table, graphs = _TABLES[spec["data"]]
    keep = nm_mask(table) if spec["nm"] else np.ones(len(table), bool)
    y = table[spec["column"]].to_numpy(float)
    keep &= np.isfinite(y)
    y = np.log10(y[keep]) if spec["log10"] else y[keep]
    return graphs[keep], y


def magpie_features(graphs, rows):
    """Magpie descriptors of ``graphs[rows]`` (rows elsewhere are zero)."""
    from skcgcnn.composition import MagpieFeaturizer

    X = np.zeros((len(graphs), 132))
    X[rows] = MagpieFeaturizer().transform(graphs[rows])
    return X


# ----------------------------------------------------------------- models
def ensemble_name(model):
    """Table name of the ensemble of a model: 'TL-CGCNN (x)' -> 'TL-CGCNN ensemble of 5 (x)'."""
    return model.replace("CGCNN", f"CGCNN ensemble of {N_MEMBERS}", 1)


def ensemble(cls, params, n_members=N_MEMBERS):
    """Mean prediction of ``n_members`` fits of ``cls(**params)``, seeded 0, 1, ..."""
    return VotingRegressor([(f"seed {s}", cls(**dict(params, random_state=s)))
                            for s in range(n_members)])


#: The v2 runs of benchmarks/pretrain.py (benchmarks/checkpoints/README.md).
V2_CHECKPOINTS = ROOT / "benchmarks" / "checkpoints" / "v2"


def source_model(name="mp-multitask"):
    """A pretrained model: its library name, or its v2 checkpoint when not in the library."""
    from skcgcnn.pretrained import list_pretrained

    return name if name in list_pretrained() else str(V2_CHECKPOINTS / f"{name}.pt")


#: The ensembles stage's two-source rows: (first source, second source, label) per target,
#: both free of the target's labels (the multi-property models only where they are).
TWO_SOURCES = {
    "500-K_VRH": [("mp-multitask", "mp-formation-energy", "36k-multitask + 36k-ΔE_f")],
    "500-NM-E_g": [("mp-formation-energy", "mp-formation-energy-nm", "36k-ΔE_f + 20k-NM-ΔE_f"),
                   ("mp-formation-energy", "mp-multitask-no-gap",
                    "36k-ΔE_f + 36k-multitask without E_g")],
    **{t: [("mp-band-gap-nm", "mp-multitask-no-fe", "20k-NM-E_g + 36k-multitask without ΔE_f")]
       for t in ("500-NM-ΔE_f", "500-ΔE_f")},
}


def cgcnn_models(target, stage, fit=FIT):
    """The CGCNN models of a stage, named as in the tables, with the fit settings ``fit``."""
    (big, big_label), (small, small_label) = TARGETS[target]["pretrained"]
    tl = {"lr": TL_LR, **fit}
    if stage == "single":
        return single_models(target, fit)
    if stage in ("main", "curves"):
        return {"CGCNN": CGCNNRegressor(**fit),
                tl_name(target): TransferCGCNNRegressor(pretrained=big, **tl)}
    if stage == "ensembles":
        member = {k: v for k, v in fit.items() if k != "random_state"}

        def ensemble_of(estimator, n=N_MEMBERS):
            return EnsembleRegressor(estimator, n_estimators=n,
                                     random_state=fit.get("random_state", 0))

        # TL members at the fine-tuning defaults (30 epochs, cosine), a fifth of the
        # protocol's cost at the same single-fit MAE (docs/performance.md), or at the
        # protocol's settings ("protocol fit"): closer to the best single fits
        def at_defaults(source):
            return TransferCGCNNRegressor(pretrained=source_model(source),
                                          conv_dtype=fit["conv_dtype"])

        def at_protocol(source):
            return TransferCGCNNRegressor(pretrained=source_model(source), lr=TL_LR, **member)

        tl = ensemble_name(tl_name(target))
        models = {ensemble_name("CGCNN"): ensemble_of(CGCNNRegressor(**member)),
                  tl: ensemble_of(at_defaults(big)),
                  tl + ", protocol fit": ensemble_of(at_protocol(big))}
        # two source models in turn (3 + 2 members) at the defaults: one source's cost
        for first, second, label in TWO_SOURCES.get(target, []):
            models[ensemble_name(f"TL-CGCNN ({label})")] = ensemble_of(
                [at_defaults(first), at_defaults(second)])
        if TARGETS[target]["data"] != MP_CRYSTALS:  # as in "transfer"
            name = ensemble_name("TL-CGCNN (36k-multitask)")
            models[name] = ensemble_of(at_defaults("mp-multitask"))
            models[name + ", protocol fit"] = ensemble_of(at_protocol("mp-multitask"))
        if big == "mp-band-gap-nm":  # the formation-energy targets: a source without ΔE_f
            name = ensemble_name("TL-CGCNN (36k-multitask without ΔE_f)") + ", protocol fit"
            models[name] = ensemble_of(at_protocol("mp-multitask-no-fe"))
            # two sources in turn, 5 members each: the multi-property model at the
            # protocol's settings and the band-gap model at the defaults (the cost of 5
            # protocol fits)
            models[f"TL-CGCNN ensemble of {2 * N_MEMBERS} (36k-multitask without ΔE_f, "
                   f"protocol fit + {big_label})"] = ensemble_of(
                [at_protocol("mp-multitask-no-fe"), at_defaults(big)], n=2 * N_MEMBERS)
        return models
    models = {} if TARGETS[target]["data"] == MP_CRYSTALS else {
        # the multi-property model saw ΔE_f and E_g of the MP crystals: only targets of
        # other data (K_VRH) are free of that leak
        "TL-CGCNN (36k-multitask)": TransferCGCNNRegressor(pretrained=source_model(), **tl)}
    return {
        **models,
        # the estimator's own fine-tuning defaults (30 epochs of 32, lr 0.01, cosine)
        f"TL-CGCNN, defaults ({big_label})": TransferCGCNNRegressor(
            pretrained=big, conv_dtype=fit["conv_dtype"], **HELD_OUT),
        # the retrained single-property models (benchmarks/checkpoints/v2), not in the library
        **({} if big != "mp-formation-energy" else {
            f"TL-CGCNN, defaults ({big_label} v2)": TransferCGCNNRegressor(
                pretrained=str(V2_CHECKPOINTS / "mp-formation-energy.pt"),
                conv_dtype=fit["conv_dtype"], **HELD_OUT)}),
        **({} if big != "mp-band-gap-nm" else {
            f"TL-CGCNN ({big_label} v2)": TransferCGCNNRegressor(
                pretrained=str(V2_CHECKPOINTS / "mp-band-gap-nm.pt"), **tl),
            # E_g, E_fermi and magnetization, never ΔE_f: free of the formation-energy
            # targets' labels, as the band-gap model is
            "TL-CGCNN (36k-multitask without ΔE_f)": TransferCGCNNRegressor(
                pretrained=source_model("mp-multitask-no-fe"), **tl)}),
        f"TL-CGCNN ({small_label})": TransferCGCNNRegressor(pretrained=small, **tl),
        f"freezing ({big_label})": TransferCGCNNRegressor(pretrained=big, freeze="all_but_head",
                                                         **dict(fit, lr=0.01)),
        f"mixed ({big_label})": TransferCGCNNRegressor(pretrained=big, freeze=1, **tl),
    }


#: Table labels of the source models: every library model and the v2 multi-property model
#: without ΔE_f (``source_model``), as the "single" stage names its rows.
SOURCE_LABELS = {"mp-formation-energy": "36k-ΔE_f", "mp-formation-energy-10k": "10k-ΔE_f",
                 "mp-formation-energy-nm": "20k-NM-ΔE_f", "mp-band-gap-nm": "20k-NM-E_g",
                 "mp-band-gap-nm-10k": "10k-NM-E_g", "mp-multitask": "36k-multitask",
                 "mp-multitask-no-gap": "36k-multitask without E_g",
                 "mp-multitask-no-fe": "36k-multitask without ΔE_f"}


def allowed_sources(target):
    """The source models (names of ``SOURCE_LABELS``) that never saw the target's labels.

    On the Materials Project crystals, a model whose card lists the target's property
    among its training targets is left out (the band-gap models and the multi-property
    models with E_g for NM-E_g; the formation-energy models and the multi-property models
    with ΔE_f for the ΔE_f targets); on other data (the elastic moduli) every model is
    allowed.
    """
    from skcgcnn.modelfile import read_card

    spec, allowed = TARGETS[target], []
    for name in SOURCE_LABELS:
        seen = read_card(source_model(name))[1]["target"]
        seen = [seen] if isinstance(seen, str) else list(seen)
        if spec["data"] == MP_CRYSTALS and spec["column"] in seen:
            continue
        allowed.append(name)
    return allowed


def single_name(label, method=""):
    """Row name of the "single" stage: one fit at the fine-tuning defaults from ``label``
    (a source's label or "auto"), with ``method`` (e.g. ", L2-SP 0.01") if any."""
    return f"TL-CGCNN single{method} ({label})"


def default_single(target):
    """(label of the target's main source, the former default) for the "single" stage: the
    row fine-tuned from that source at the defaults."""
    label = TARGETS[target]["pretrained"][0][1]
    return label, single_name(label)


def single_models(target, fit=FIT):
    """The "single" stage: ``TransferCGCNNRegressor`` at its former fine-tuning defaults (30
    epochs of 32 on a cosine, a fifth held out) from every allowed source in turn, seeded
    (``random_state=0``, unlike the "transfer" stage's unseeded defaults row), so that a fit
    from the source that ``pretrained="auto"`` picks is the same fit as that source's row."""
    models = {single_name(SOURCE_LABELS[name]): TransferCGCNNRegressor(
                  pretrained=source_model(name), conv_dtype=fit["conv_dtype"],
                  random_state=fit["random_state"], **HELD_OUT)
              for name in allowed_sources(target)}
    # the fine-tuning methods, from the target's main source (the default choice)
    main, label = TARGETS[target]["pretrained"][0]
    for method, params in SINGLE_METHODS.items():
        models[single_name(label, method)] = TransferCGCNNRegressor(
            pretrained=main, conv_dtype=fit["conv_dtype"], random_state=fit["random_state"],
            **{**HELD_OUT, **params})
    # the one method that helped (no hold-out), from the source auto chooses (real fits),
    # also with twice the epochs
    candidates = [source_model(s) for s in allowed_sources(target)]
    for suffix, epochs in ((NO_HOLD_OUT, 30), (f"{NO_HOLD_OUT}, 60 epochs", 60)):
        models[single_name("auto", suffix)] = TransferCGCNNRegressor(
            pretrained="auto", candidates=candidates, conv_dtype=fit["conv_dtype"],
            random_state=fit["random_state"], max_epochs=epochs, **SINGLE_METHODS[NO_HOLD_OUT])
    return models


#: The "single" stage's fine-tuning methods: row suffix -> TransferCGCNNRegressor parameters.
#: L2-SP at the paper's alpha = 0.1; LP-FT with the first third of the 30 epochs head-only;
#: no hold-out: all 625 fit crystals train and the last epoch of the cosine is kept
#: (``validation_fraction=None``) instead of 500 training and 125 choosing the best epoch.
NO_HOLD_OUT = ", no hold-out"
SINGLE_METHODS = {", L2-SP 0.1": dict(l2_sp=0.1), ", LP-FT 10": dict(lp_epochs=10),
                  NO_HOLD_OUT: dict(validation_fraction=None)}
#: Choices of pretrained="auto" per trial (the probe's scores), beside the results.
AUTO_CHOICES = RESULTS / "single_auto.csv"


def auto_rows(target, graphs, y, splits, path, conv_dtype):
    """Rows of ``TransferCGCNNRegressor(pretrained="auto", candidates=allowed)`` for the
    trials whose fixed-source rows are all in ``path``, without fitting a network again.

    The estimator ranks the candidates on the fit crystals (``rank_sources``, folds
    seeded by ``random_state=0``, the same ``conv_dtype``) and fine-tunes the best with
    ``random_state=0``: the same fit as that source's fixed row (tests check that
    ``pretrained="auto"`` reproduces the fixed fit). So the row takes that row's MAEs;
    its fit time is the probe's wall time plus that fit's. The choices and the probe's
    scores go to ``AUTO_CHOICES``.
    """
    import json

    from skcgcnn.source_selection import rank_sources
    from skcgcnn.stats import _read_results, _write_results

    sources = allowed_sources(target)
    fixed = {single_name(SOURCE_LABELS[s]): s for s in sources}
    name = single_name("auto")
    frame = _read_results(path)
    choices = pd.read_csv(AUTO_CHOICES) if AUTO_CHOICES.is_file() else pd.DataFrame(
        columns=["target", "trial", "chosen", "probe_time_s", "scores"])
    new = []
    for t, (train, val, _) in enumerate(splits):
        rows = frame[(frame.trial == t) & (frame.n_train == len(train))]
        if name in set(rows.model) or not set(fixed) <= set(rows.model):
            continue
        fit = np.r_[train, val]
        t0 = time.perf_counter()
        scores = rank_sources([source_model(s) for s in sources], graphs[fit], y[fit],
                              random_state=0, conv_dtype=conv_dtype)
        seconds = time.perf_counter() - t0
        chosen = next(s for s in sources if source_model(s) == next(iter(scores)))
        row = rows[rows.model == single_name(SOURCE_LABELS[chosen])].iloc[0].to_dict()
        new.append(dict(row, model=name, fit_time_s=row["fit_time_s"] + seconds))
        choices.loc[len(choices)] = [target, t, chosen, seconds, json.dumps(
            {os.path.basename(k).removesuffix(".pt"): round(v, 6) for k, v in scores.items()})]
        print(f"{target} trial {t} auto: {chosen} ({seconds:.1f} s)", flush=True)
    if new:
        _write_results(pd.concat([frame, pd.DataFrame(new)], ignore_index=True), path)
        from skcgcnn.io import atomic_write_bytes
        atomic_write_bytes(AUTO_CHOICES, choices.to_csv(index=False).encode())


def stage_splits(target, stage, n_samples, max_trials=10):
    """{training size: splits} of a stage: 500 crystals, or the learning curve's larger sizes,
    with the paper's trial count for each size (at most ``max_trials``). The "single" stage
    takes ``max_trials`` as it is, also above the paper's count: its rows compare the
    library's own fits, and auto's gap to the best source in hindsight needs the trials.
    Trial k's split is the same whatever the count."""
    sizes = [N_TRAIN] if stage != "curves" else [n for n in TARGETS[target]["curve"]
                                                   if n != N_TRAIN]
    return {n: repeated_splits(n_samples, n, max_trials if stage == "single" else
                               min(paper_n_trials(n), max_trials), random_state=0)
            for n in sizes}


def run_single(targets, args):
    """The "single" stage, trial by trial over all targets: every row of trial 0 on every
    target first, then trial 1, ... so that a run cut short leaves every row at the same
    number of trials (resumable as every stage: finished rows are not fitted again)."""
    data = {t: load_target(t) for t in targets}
    splits = {t: stage_splits(t, "single", len(y), args.max_trials)[N_TRAIN]
              for t, (_, y) in data.items()}
    for k in range(1, max(len(s) for s in splits.values()) + 1):
        for target, (graphs, y) in data.items():
            models = cgcnn_models(target, "single", dict(FIT, conv_dtype=args.conv_dtype))
            if args.models:
                models = {m: e for m, e in models.items() if any(a in m for a in args.models)}
            if not models or k > len(splits[target]):
                continue
            path = RESULTS / f"{slug(target)}.csv"
            res = run_trials(models, graphs, y, splits[target][:k], n_jobs=args.n_jobs,
                             path=path)
            if not args.models or any(a in single_name("auto") for a in args.models):
                auto_rows(target, graphs, y, splits[target][:k], path, args.conv_dtype)
                res = _read_results_at(path, N_TRAIN)
            res = res[res.model.isin(models) | (res.model == single_name("auto"))]
            print(f"{target} single, {k} trials:", flush=True)
            print(summarize(res).round(4).to_string(index=False), flush=True)


def _read_results_at(path, n_train):
    from skcgcnn.stats import _read_results

    frame = _read_results(path)
    return frame[frame.n_train == n_train]


def run_stage(target, stage, args):
    graphs, y = load_target(target)
    path = RESULTS / f"{slug(target)}.csv"
    for n_train, splits in stage_splits(target, stage, len(y), args.max_trials).items():
        if stage == "baselines":
            rows = np.unique(np.concatenate([np.concatenate(s) for s in splits]))
            X, models = magpie_features(graphs, rows), baseline_models(random_state=0)
        elif stage in ("embeddings", "soap"):  # only the crystals of the splits, renumbered
            X, y_stage, splits, models = descriptor_stage(target, stage, graphs, y, splits)
        else:
            X, models = graphs, cgcnn_models(target, stage, dict(
                FIT, max_epochs=args.epochs, lr_decay_epoch=args.lr_decay_epoch,
                batch_size=args.batch_size, conv_dtype=args.conv_dtype))
        if args.models:
            # a name matches exactly, else as a part ("CGCNN ensemble of 5" is also in the TL one)
            models = {k: v for k, v in models.items() if k in args.models} or {
                k: v for k, v in models.items() if any(m in k for m in args.models)}
            if not models:
                continue
        if stage == "ensembles":
            run_ensembles(target, models, X, y, splits, args.n_jobs, args.first_trial)
            continue
        t0 = time.time()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence notes of LASSO in the grid
            res = run_trials(models, X, y_stage if stage in ("embeddings", "soap") else y,
                             splits, n_jobs=args.n_jobs, path=path)
        print(f"{target} {stage} n_train={n_train}: {time.time() - t0:.0f} s", flush=True)
        print(summarize(res).round(4).to_string(index=False), flush=True)


#: Columns of benchmarks/results/<target>-ensembles.csv.
UQ_COLUMNS = ["trial", "model", "n_train", "test_mae", "train_mae", "fit_time_s",
              "coverage_90", "spearman", "mean_std", "member_mae"]


#: Members' predictions of every ensembles-stage fit (``uncertainty_row``'s ``dump``).
ENSEMBLE_DUMPS = RESULTS / "ensemble_members"  # committed: recalibration needs no refit


def dump_path(target, model, trial):
    name = re.sub(r"[^\w.-]+", "_", slug(model))
    return ENSEMBLE_DUMPS / slug(target) / f"{name}-{trial}.npz"


def uq_path(target):
    return RESULTS / f"{slug(target)}-ensembles.csv"


def test_metrics(model, members, y_test):
    """Test MAE, 90 % coverage, Spearman(|error|, std), mean std and members' MAE of a
    fitted EnsembleRegressor from its members' test predictions (``predict_members``).

    The interval is ``mean ± 1.645 std``, which at the ensemble's default
    ``confidence_level`` of 0.9 is ``predict_interval``'s conformal interval.
    """
    from scipy.stats import norm, spearmanr

    from skcgcnn.ensemble import _mean_std

    mean, std = _mean_std(members)
    std = model._scale(std) * model.std_scale_  # as model.predict(X, return_std=True)
    err = np.abs(mean - y_test)
    return dict(test_mae=float(err.mean()),
                coverage_90=float(np.mean(err <= norm.ppf(0.95) * std)),
                spearman=float(spearmanr(err, std)[0]), mean_std=float(std.mean()),
                member_mae=float(np.abs(members - y_test).mean()))


def uncertainty_row(model, X, y, fit_idx, test_idx, dump=None):
    """Fit an EnsembleRegressor; its test MAE, 90 % coverage and Spearman(|error|, std).

    ``dump``: an ``.npz`` path for what any calibration rule needs (the targets, every
    member's predictions on the fit and test crystals, which fit crystals each member held
    out for validation, and the calibration crystals no member saw), so that calibrations
    can be compared later without refitting.
    """
    t0 = time.time()
    model.fit(X[fit_idx], y[fit_idx])
    fit_time = time.time() - t0
    members_fit = model.predict_members(X[fit_idx])  # one pass per set, reused below
    members_test = model.predict_members(X[test_idx])
    if dump is not None:
        cal = model.calibration_indices_
        fitted = np.setdiff1d(np.arange(len(fit_idx)), cal)  # what the members were fitted on
        held = np.zeros((len(model.estimators_), len(fit_idx)), dtype=bool)
        for m, member in enumerate(model.estimators_):
            idx = getattr(member, "validation_indices_", None)  # positions in ``fitted``
            held[m, fitted[idx] if idx is not None else []] = True
        dump.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(dump, y_fit=y[fit_idx], y_test=y[test_idx], held=held,
                            calibration=cal, members_fit=members_fit, members_test=members_test)
    return dict(train_mae=float(np.abs(members_fit.mean(axis=0) - y[fit_idx]).mean()),
                fit_time_s=fit_time, **test_metrics(model, members_test, y[test_idx]))


@contextlib.contextmanager
def _locked(path):
    """Hold an exclusive lock on ``<path>.lock`` (POSIX ``flock``) for a read-modify-write."""
    import fcntl

    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def run_ensembles(target, models, X, y, splits, n_jobs=None, first_trial=0):
    """The ensembles stage: one row per (trial, model) in ``uq_path(target)``, resumable;
    from trial ``first_trial`` on, so that two processes can share a target's trials."""
    from sklearn.base import clone

    from skcgcnn.io import atomic_write_bytes

    path = uq_path(target)

    def done_rows():  # re-read each time: another process may be filling the same file
        return (pd.read_csv(path, float_precision="round_trip").to_dict("records")
                if path.is_file() else [])

    for t, (train, val, test) in enumerate(splits):
        for name, model in models.items():
            if t < first_trial or (t, name) in {(int(r["trial"]), r["model"])
                                                for r in done_rows()}:
                continue
            model = clone(model).set_params(n_jobs=n_jobs)
            row = dict(trial=t, model=name, n_train=len(train),
                       **uncertainty_row(model, X, y, np.r_[train, val], test,
                                         dump=dump_path(target, name, t)))
            with _locked(path):  # processes sharing a target append one at a time
                rows = done_rows() + [row]
                atomic_write_bytes(path, pd.DataFrame(rows, columns=UQ_COLUMNS).to_csv(
                    index=False).encode())
            print(f"{target} trial {t} {name}: MAE {row['test_mae']:.4f}, 90 % coverage "
                  f"{row['coverage_90']:.1%}, Spearman {row['spearman']:.2f} "
                  f"({row['fit_time_s']:.0f} s)", flush=True)


def recalibrate(target):
    """Recompute the coverage and mean std of the ensembles rows from their dumps with the
    current calibration rule (``EnsembleRegressor._calibrate``); rows without a dump are kept.

    Dumps written before issue 28 have no calibration crystals (their members were fitted on
    every fit crystal and calibrated on their own validation crystals): their rows are kept.
    """
    from skcgcnn.io import atomic_write_bytes

    path = uq_path(target)
    if not path.is_file():
        return
    frame = pd.read_csv(path, float_precision="round_trip")
    n = 0
    for i, row in frame.iterrows():
        dump = dump_path(target, row.model, int(row.trial))
        if not dump.is_file():
            continue
        d = np.load(dump)
        if "calibration" not in d:
            continue
        model = EnsembleRegressor(n_estimators=len(d["held"]))
        cal = d["calibration"]
        model._calibrate(d["y_fit"], d["members_fit"],
                         np.setdiff1d(np.arange(len(d["y_fit"])), cal), cal)
        metrics = test_metrics(model, d["members_test"], d["y_test"])
        frame.loc[i, ["coverage_90", "mean_std"]] = [metrics["coverage_90"], metrics["mean_std"]]
        n += 1
    atomic_write_bytes(path, frame.to_csv(index=False).encode())
    print(f"{target}: {n} of {len(frame)} ensembles rows recalibrated from their dumps")


def report_uncertainty(target):
    """Markdown lines of the calibrated ensembles of one target (none without results)."""
    path = uq_path(target)
    if not path.is_file():
        return []
    frame = pd.read_csv(path)
    lines = [f"Calibrated ensembles (`EnsembleRegressor`, {N_MEMBERS} seeds unless the row says "
             "otherwise; 90 % intervals "
             "from the members' held-out crystals, the calibration rule before issue 28, whose "
             "coverage was measured, not guaranteed; CGCNN members at the protocol's settings, "
             "TL-CGCNN members at `TransferCGCNNRegressor`'s fine-tuning defaults, or at the "
             "protocol's where the row says \"protocol fit\"):", "",
             "| method | trials | test MAE, mean (std) | members' MAE | 90 % coverage | "
             "Spearman(\\|error\\|, std) | mean std |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, sub in frame.groupby("model", sort=False):
        lines.append(f"| {name} | {len(sub)} | {_fmt(sub.test_mae.mean(), sub.test_mae.std())} | "
                     f"{sub.member_mae.mean():.3f} | {sub.coverage_90.mean():.1%} "
                     f"({sub.coverage_90.min():.0%}-{sub.coverage_90.max():.0%}) | "
                     f"{sub.spearman.mean():.2f} | {sub.mean_std.mean():.3f} |")
    return lines + [""]


# ------------------------------------------ pretrained embeddings and SOAP (issue 16)
#: Feature sets of the ``embeddings`` stage: blocks of the matrix of ``embedding_matrix``.
FEATURE_SETS = {"magpie": ["magpie"], "pooled": ["pooled"], "hidden": ["hidden"],
                "pooled + magpie": ["pooled", "magpie"], "hidden + magpie": ["hidden", "magpie"]}
#: Classical models of the stage and the feature sets each is fitted on ("SVR" on magpie
#: is the baselines stage's row "SVR", with the same grid).
EMBEDDING_ROWS = {"SVR": ["pooled", "hidden", "pooled + magpie", "pooled of both + magpie"],
                  "KRR": ["magpie", "pooled", "pooled + magpie"],
                  "GP": ["magpie", "pooled", "pooled + magpie"]}
#: The head's hidden layer (a row of SVR) is compared with the pooled vector on these
#: targets only: the slowest row to tune, and worse than the pooled vector on 9 of 10
#: trials of 500-K_VRH (0.103 against 0.089 log10 GPa with SVR).
HIDDEN_LAYER_TARGETS = ("500-K_VRH",)
#: A second source model whose pooled vector joins the first's ("pooled of both"), where
#: neither was trained on the target property (the band-gap model saw NM-E_g, the
#: formation-energy model ΔE_f and NM-ΔE_f): K_VRH only.
SECOND_SOURCE = {"500-K_VRH": ("mp-band-gap-nm", "20k-NM-E_g")}
FEATURE_SETS["pooled of both + magpie"] = ["pooled", "pooled2", "magpie"]
SOAP_PARAMS = dict(r_cut=5.0, n_max=4, l_max=4, sigma=1.0, compression="mu1nu1")
SOAP_ROW = "KRR (SOAP kernel)"


def embedding_row(kind, features, target):
    """Table name of a row of the embeddings stage: 'SVR on pooled + magpie (36k-ΔE_f)'."""
    if features == "magpie":
        return "SVR" if kind == "SVR" else f"{kind} on magpie"
    label = TARGETS[target]["pretrained"][0][1]
    if "both" in features:
        label += f" and {SECOND_SOURCE[target][1]}" if target in SECOND_SOURCE else ""
    return f"{kind} on {features} ({label})"


def _cached(name, compute):
    """``compute()``'s array, saved as ``benchmarks/cache/<name>.npy`` the first time."""
    from skcgcnn.io import atomic_write_bytes
    import io

    path = ROOT / "benchmarks" / "cache" / f"{name}.npy"
    if path.is_file():
        return np.load(path)
    X = compute()
    buf = io.BytesIO()
    np.save(buf, X)
    atomic_write_bytes(path, buf.getvalue())
    return X


def embedding_matrix(target, graphs, rows):
    """[magpie (132) | pooled (64) | hidden (128)] of ``graphs[rows]`` and the column blocks."""
    from skcgcnn import PretrainedEmbedding

    name = TARGETS[target]["pretrained"][0][0]
    key = f"{slug(target)}-{len(graphs)}-{len(rows)}-{int(rows.sum())}"
    mag = _cached(f"magpie-{key}", lambda: magpie_features(graphs, rows)[rows])
    # float32, as the rows in the tables were measured
    emb = _cached(f"embedding-{name}-{key}", lambda: PretrainedEmbedding(
        name, layer="pooled+hidden", conv_dtype="float32").fit().transform(graphs[rows]))
    n_pooled = emb.shape[1] - 128
    blocks = {"magpie": np.arange(132), "pooled": 132 + np.arange(n_pooled),
              "hidden": 132 + n_pooled + np.arange(128)}
    parts = [mag, emb]
    if target in SECOND_SOURCE:
        second = SECOND_SOURCE[target][0]
        parts.append(_cached(f"embedding-{second}-{key}", lambda: PretrainedEmbedding(
            second, conv_dtype="float32").fit().transform(graphs[rows])))
        blocks["pooled2"] = 132 + emb.shape[1] + np.arange(parts[-1].shape[1])
    return np.hstack(parts), blocks


def soap_matrix(target, rows):
    """Mean SOAP vectors (float32) of the target's crystals ``rows`` (rows of ``load_target``)."""
    from skcgcnn.datasets import load_matbench_json
    from skcgcnn.soap import SOAPFeaturizer

    def compute():
        spec = TARGETS[target]
        frame = load_matbench_json(spec["data"])
        keep = nm_mask(frame) if spec["nm"] else np.ones(len(frame), bool)
        keep &= np.isfinite(frame[spec["column"]].to_numpy(float))
        structures = frame["structure"].to_numpy()[keep][rows]
        t0 = time.time()
        X = SOAPFeaturizer(**SOAP_PARAMS).transform(list(structures)).astype(np.float32)
        print(f"SOAP of {len(rows)} crystals: {time.time() - t0:.0f} s", flush=True)
        return X

    params = "-".join(f"{v}" for v in SOAP_PARAMS.values())
    return _cached(f"soap-{slug(target)}-{params}-{len(rows)}-{int(rows.sum())}", compute)


def _select(columns):
    from sklearn.compose import ColumnTransformer

    return ColumnTransformer([("columns", "passthrough", columns)])


def classical_model(kind, columns):
    """SVR or kernel ridge (RBF) on ``columns`` after StandardScaler, tuned by 5-fold
    GridSearchCV, or a Gaussian process (RBF + white noise), whose hyperparameters are
    fitted by maximising the marginal likelihood instead (one fit, where a grid of k
    kernels would cost 5k + 1)."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR

    cv = KFold(5, shuffle=True, random_state=0)
    d = len(columns)
    if kind == "SVR":  # the baselines stage's grid
        est = make_pipeline(_select(columns), StandardScaler(), SVR())
        grid = {"svr__C": [1, 10, 100], "svr__gamma": ["scale", 0.003, 0.01],
                "svr__epsilon": [0.01, 0.1]}
    elif kind == "KRR":  # kernel ridge has no intercept: standardise the target
        est = TransformedTargetRegressor(make_pipeline(_select(columns), StandardScaler(),
                                                       KernelRidge(kernel="rbf")),
                                         transformer=StandardScaler())
        grid = {"regressor__kernelridge__alpha": [0.01, 0.1, 1.0],
                "regressor__kernelridge__gamma": [0.1 / d, 0.3 / d, 1.0 / d]}
    elif kind == "GP":
        kernel = ConstantKernel(1.0) * RBF(np.sqrt(d)) + WhiteKernel(0.1)
        return make_pipeline(_select(columns), StandardScaler(),
                             GaussianProcessRegressor(kernel, normalize_y=True, random_state=0))
    else:
        raise ValueError(f"unknown classical model {kind!r}")
    return GridSearchCV(est, grid, cv=cv, scoring="neg_mean_absolute_error")


def soap_model():
    """Kernel ridge with the average SOAP kernel (Normalizer, then a polynomial kernel of
    degree ζ, no offset), alpha and ζ tuned by 5-fold GridSearchCV, on mean SOAP vectors."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.model_selection import GridSearchCV, KFold

    from skcgcnn.soap import soap_kernel_ridge

    est = soap_kernel_ridge()
    est.regressor = type(est.regressor)(est.regressor.steps[1:])  # vectors are precomputed
    grid = {"regressor__kernelridge__alpha": [1e-4, 1e-3, 1e-2, 1e-1],
            "regressor__kernelridge__degree": [1, 2, 4]}
    assert isinstance(est, TransformedTargetRegressor)
    return GridSearchCV(est, grid, cv=KFold(5, shuffle=True, random_state=0),
                        scoring="neg_mean_absolute_error")


def descriptor_stage(target, stage, graphs, y, splits):
    """Descriptors of the crystals the splits use, the targets, the splits renumbered to
    their rows, and the stage's models."""
    rows = np.unique(np.concatenate([np.concatenate(s) for s in splits]))
    renumbered = [tuple(np.searchsorted(rows, part) for part in s) for s in splits]
    if stage == "soap":
        return soap_matrix(target, rows), y[rows], renumbered, {SOAP_ROW: soap_model()}
    X, blocks = embedding_matrix(target, graphs, rows)
    models = {}
    for kind, feature_sets in EMBEDDING_ROWS.items():
        for features in feature_sets:
            if features == "hidden" and target not in HIDDEN_LAYER_TARGETS or \
                    "pooled2" in FEATURE_SETS[features] and "pooled2" not in blocks:
                continue
            columns = np.concatenate([blocks[b] for b in FEATURE_SETS[features]])
            models[embedding_row(kind, features, target)] = classical_model(kind, columns)
    return X, y[rows], renumbered, models


# ----------------------------------------------------------------- report
def _fmt(mean, std):
    return f"{mean:.3f} ({std:.3f})" if np.isfinite(std) else f"{mean:.3f}"


def p_text(frame, a, b):
    """Paired t-test of model a against b as 'p (lower|higher)'; '' if it cannot be run."""
    try:
        t, p = paired_ttest(frame, a, b)
    except ValueError:  # a model missing, or fewer than 2 shared trials
        return ""
    if np.isnan(p):  # no difference on any shared trial
        return "equal on every trial"
    return f"{p:.2g} ({'lower' if t < 0 else 'higher'})"


def _paper_key(model):
    if "ensemble" in model or " on " in model:  # not in the paper
        return None
    for key in ("CGCNN", "freezing", "PLS", "LASSO", "SVR", "RF"):
        if model == key or model.startswith(key + " "):
            return key
    return "TL" if model in {tl_name(t) for t in TARGETS} else None


def report_target(target, frame):
    spec = TARGETS[target]
    at500 = frame[(frame.n_train == N_TRAIN) & ~frame.model.map(_is_descriptor_row)
                  & ~frame.model.map(_is_single_row)]
    if at500.empty:  # e.g. 500-G_VRH: only the "single" stage's rows
        return []
    summary = summarize(at500)
    big_tl = tl_name(target)
    lines = [f"### {target} ({spec['units']})", "",
             "| method | trials | test MAE, mean (std) | train MAE | paper | reference here | "
             "p vs CGCNN |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for _, row in summary.iterrows():
        key = _paper_key(row.model)
        pval = "" if row.model == "CGCNN" else p_text(at500, row.model, "CGCNN")
        lines.append(f"| {row.model} | {row.n_trials} | "
                     f"{_fmt(row.test_mae_mean, row.test_mae_std)} | {row.train_mae_mean:.3f} | "
                     f"{spec['paper'].get(key, '')} | {spec['design'].get(key, '')} | {pval} |")
    lines.append("")
    verdict = []
    means = summary.set_index("model").test_mae_mean
    trials = summary.set_index("model").n_trials
    pairs = [(big_tl, "CGCNN", "CGCNN from scratch"),
             (ensemble_name(big_tl), ensemble_name("CGCNN"), f"the {ensemble_name('CGCNN')}")]
    for tl, scratch, scratch_words in pairs:
        if tl not in means or scratch not in means:
            continue
        try:
            t, p = paired_ttest(at500, tl, scratch)
        except ValueError:
            continue
        better = "has a lower test MAE than" if t < 0 else "has a higher test MAE than"
        verdict.append(f"{tl} {better} {scratch_words} "
                       f"({means[tl]:.3f} against {means[scratch]:.3f}, paired t-test "
                       f"over {min(trials[tl], trials[scratch])} trials p = {p:.2g}: "
                       f"{'significant' if p < 0.01 and t < 0 else 'not significant'} "
                       "at p < 0.01).")
    if big_tl in means:  # among the rows with every trial
        best = means[trials == trials.max()].idxmin()
        verdict.append(f"Best method over {trials.max()} trials: {best} ({means[best]:.3f}).")
    for tl, _, _ in pairs:
        if tl in means:
            so_far = "" if trials[tl] == trials.max() else \
                f" (so far: {trials[tl]} of {trials.max()} trials)"
            verdict.append(f"Goal <= {spec['goal']} for {tl}: "
                           f"{'met' if means[tl] <= spec['goal'] else 'missed'}"
                           f" by {abs(means[tl] - spec['goal']):.3f}{so_far}.")
    if verdict:
        lines += [" ".join(verdict), ""]
    return lines


def report_curves(frames):
    from skcgcnn.plotting import plot_learning_curve
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = []
    for target, frame in frames.items():
        sizes = sorted(frame.n_train.unique())
        if len(sizes) < 2:
            continue
        big_tl = tl_name(target)
        sub = frame[frame.model.isin(["CGCNN", big_tl])]
        summary = summarize(sub)
        table = summary.pivot(index="n_train", columns="model", values="test_mae_mean")
        trials = summary.pivot(index="n_train", columns="model", values="n_trials")
        lines += [f"### Learning curve, {target.split('-', 1)[1]} ({TARGETS[target]['units']})", "",
                  "| training crystals | CGCNN | TL-CGCNN | gain | trials | p (TL against CGCNN) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for n, row in table.iterrows():
            gain = 100 * (1 - row.get(big_tl, np.nan) / row.get("CGCNN", np.nan))
            lines.append(f"| {n} | {row.get('CGCNN', np.nan):.3f} | {row.get(big_tl, np.nan):.3f} | "
                         f"{gain:.1f} % | {trials.loc[n].min():.0f} | "
                         f"{p_text(sub[sub.n_train == n], big_tl, 'CGCNN')} |")
        scratch = sub[sub.model == "CGCNN"]
        tl500 = sub[(sub.model == big_tl) & (sub.n_train == N_TRAIN)].test_mae.mean()
        if scratch.n_train.nunique() >= 2 and np.isfinite(tl500):
            n_eq = equivalent_training_size(scratch.n_train, scratch.test_mae, tl500)
            lines += ["", f"Equivalent training size (Table 2): CGCNN from scratch would need "
                      f"about {n_eq:,.0f} crystals to match TL-CGCNN at 500 (a straight line "
                      f"of log MAE against log size over {scratch.n_train.nunique()} sizes)."]
        lines.append("")
        fig, ax = plt.subplots(figsize=(4.5, 3.5))
        plot_learning_curve(sub, ax=ax, units=TARGETS[target]["units"])
        ax.set_title(target.split("-", 1)[1])
        fig.tight_layout()
        fig.savefig(FIGURES / f"paper_curve_{slug(target)}.png", dpi=110)
        plt.close(fig)
        lines += [f"![learning curve](results/paper_curve_{slug(target)}.png)", ""]
    return lines


HEAD_BEGIN, HEAD_END = "<!-- paper.py headline: begin -->", "<!-- paper.py headline: end -->"
#: The paper's classical baselines (magpie descriptors), the "best classical" column.
CLASSICAL = ("PLS", "LASSO", "SVR", "RF")
#: Table labels of the pretrained models (the rows' parentheses) -> names in the library.
SOURCE_NAMES = {"36k-ΔE_f": "mp-formation-energy", "10k-ΔE_f": "mp-formation-energy-10k",
                "20k-NM-E_g": "mp-band-gap-nm", "10k-NM-E_g": "mp-band-gap-nm-10k",
                "20k-NM-ΔE_f": "mp-formation-energy-nm", "36k-multitask": "mp-multitask",
                "36k-multitask without E_g": "mp-multitask-no-gap",
                "36k-multitask without ΔE_f": "mp-multitask-no-fe"}
_TL_ENSEMBLE = re.compile(rf"TL-CGCNN ensemble of {N_MEMBERS} \((.+?)\)(, protocol fit)?")


def library_ensemble(frame, n_trials):
    """The lowest-MAE TL-CGCNN ``EnsembleRegressor`` row of ``N_MEMBERS`` members with
    ``n_trials`` trials whose source models are all in the bundled library (what a user
    rebuilds with the installed package), as (name, rows); (None, None) if there is none."""
    from skcgcnn.pretrained import list_pretrained

    library = set(list_pretrained())
    best = (None, None)
    for name, rows in frame.groupby("model", sort=False):
        match = _TL_ENSEMBLE.fullmatch(name)
        if not match or rows.trial.nunique() < n_trials:
            continue
        if not all(SOURCE_NAMES.get(s) in library for s in match.group(1).split(" + ")):
            continue
        if best[0] is None or rows.test_mae.mean() < best[1].test_mae.mean():
            best = (name, rows)
    return best


def report_headline(frames):
    """The summary table at the top of ``docs/benchmarks.md`` (the README copies it).

    Per target, means over the protocol's trials at 500 training crystals: one TL-CGCNN
    (the paper's pairing and settings), the best calibrated TL-CGCNN ensemble of
    ``N_MEMBERS`` from library models with its 90 % coverage, CGCNN from scratch (one and an
    ensemble), the best of the paper's classical baselines, and the paper's own figures.
    The lowest measured MAE of a row is in bold.
    """
    n_trials = paper_n_trials(N_TRAIN)
    lines = [HEAD_BEGIN, "", "*Generated by `python benchmarks/paper.py --report` from "
             "`benchmarks/results/*.csv`; do not edit by hand.*", "",
             "| target (units) | TL-CGCNN | TL-CGCNN ensemble of 5 (90 % coverage) | CGCNN "
             "| CGCNN ensemble of 5 | best classical | paper: TL-CGCNN / CGCNN / best classical |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    notes = []
    for target, spec in TARGETS.items():
        if target not in frames:
            continue
        at500 = frames[target][frames[target].n_train == N_TRAIN]
        means = at500.groupby("model").test_mae.mean()
        uq = pd.read_csv(uq_path(target)) if uq_path(target).is_file() else \
            pd.DataFrame(columns=UQ_COLUMNS)
        name, rows = library_ensemble(uq, n_trials)
        scratch = uq[uq.model == ensemble_name("CGCNN")]
        classical = min((m for m in CLASSICAL if m in means), key=means.get, default=None)
        cells = {"tl": means.get(tl_name(target)), "scratch": means.get("CGCNN"),
                 "ens": None if rows is None else rows.test_mae.mean(),
                 "scratch_ens": scratch.test_mae.mean() if len(scratch) else None,
                 "classical": means.get(classical)}
        if all(v is None for v in cells.values()):  # e.g. 500-G_VRH: only the single stage
            continue
        low = min(v for v in cells.values() if v is not None)

        def cell(key, prefix=""):
            value = cells[key]
            if value is None:
                return "not run"
            text = f"{prefix}{value:.3f}"
            return f"**{text}**" if value == low else text

        paper = spec["paper"]
        paper_classical = min((m for m in CLASSICAL if m in paper), key=paper.get, default=None)
        paper_text = " / ".join([f"{paper['TL']:.3f}", f"{paper['CGCNN']:.3f}",
                                 f"{paper_classical} {paper[paper_classical]:.3f}"
                                 if paper_classical else "not given"])
        coverage = "" if rows is None else f" ({100 * rows.coverage_90.mean():.0f} %)"
        lines.append(f"| {target} ({spec['units']}) | {cell('tl')} | {cell('ens')}{coverage} | "
                     f"{cell('scratch')} | {cell('scratch_ens')} | "
                     f"{cell('classical', f'{classical} ' if classical else '')} | "
                     f"{paper_text} |")
        if name:
            match = _TL_ENSEMBLE.fullmatch(name)
            sources = " + ".join(f"`{SOURCE_NAMES[s]}`" for s in match.group(1).split(" + "))
            fit = "the protocol's settings" if match.group(2) else "the fine-tuning defaults"
            notes.append(f'{target}, {sources} at {fit} (row "{name}")')
    lines += ["", f"Test MAE, means over {n_trials} trials of {N_TRAIN} training crystals. "
              "TL-CGCNN: fine-tuned from the larger pretrained model of the other property, "
              "as in the paper. Ensembles: `EnsembleRegressor` rows of "
              "`benchmarks/results/<target>-ensembles.csv`; the TL-CGCNN one is the lowest "
              "whose source models are all in the bundled library: " + "; ".join(notes) + ".",
              "", HEAD_END]
    return lines


def report():
    from skcgcnn.plotting import plot_comparison
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = {t: pd.read_csv(RESULTS / f"{slug(t)}.csv") for t in TARGETS
              if (RESULTS / f"{slug(t)}.csv").is_file()}
    lines = [BEGIN, "", "*Generated by `python benchmarks/paper.py --report` from "
             "`benchmarks/results/*.csv`; do not edit by hand.*", ""]
    for target in TARGETS:
        if target in frames:
            lines += report_target(target, frames[target])
        lines += report_uncertainty(target)
    done = [t for t, f in frames.items()
            if ((f.n_train == N_TRAIN) & ~f.model.map(_is_single_row)).any()]
    if done:
        ncols = min(2, len(done))
        nrows = -(-len(done) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(6.5 * ncols, 4.6 * nrows), squeeze=False)
        for ax, target in zip(axes.flat, done):
            f = frames[target]
            plot_comparison(f[(f.n_train == N_TRAIN) & ~f.model.map(_is_descriptor_row)
                              & ~f.model.map(_is_single_row)], ax=ax,
                            units=TARGETS[target]["units"])
            ax.set_title(target)
            ax.tick_params(axis="x", labelrotation=30, labelsize=8)
            for label in ax.get_xticklabels():
                label.set_horizontalalignment("right")
            for text in ax.texts:
                text.set_fontsize(7)
        for ax in axes.flat[len(done):]:
            ax.set_visible(False)
        fig.tight_layout()
        fig.savefig(FIGURES / "paper_comparison.png", dpi=110)
        plt.close(fig)
        lines += ["![test MAE per method](results/paper_comparison.png)", ""]
    lines += report_curves(frames)
    at_500 = sum(f.fit_time_s[f.n_train == N_TRAIN].sum() for f in frames.values()) / 3600
    curves = sum(f.fit_time_s[f.n_train != N_TRAIN].sum() for f in frames.values()) / 3600
    lines += [f"Total fitting time in these tables (the sum of every fit's wall time): "
              f"{at_500:.1f} hours at {N_TRAIN} training crystals and {curves:.1f} hours "
              f"in the learning curves.", "", END]
    write_block(lines)
    write_block(report_headline(frames))
    if any(f.model.map(_is_descriptor_row).any() or (f.model == SOAP_ROW).any()
           for f in frames.values()):
        write_block(report_embeddings(frames))
    if any(f.model.map(_is_single_row).any() for f in frames.values()):
        write_block(report_single(frames))


EMB_BEGIN, EMB_END = "<!-- paper.py embeddings: begin -->", "<!-- paper.py embeddings: end -->"


def _is_single_row(model):
    """Rows of the "single" stage (their own tables: ``report_single``)."""
    return model.startswith("TL-CGCNN single")


SINGLE_BEGIN, SINGLE_END = "<!-- paper.py single: begin -->", "<!-- paper.py single: end -->"


def report_single(frames):
    """Tables of the "single" stage: every allowed source fixed, auto's choice, and the
    fine-tuning methods, against the former default (the target's main source, a fifth
    held out). Auto's gap to the best fixed source is taken over the trials that auto and
    every fixed source have (the stage may have run more of them than of the methods)."""
    lines = [SINGLE_BEGIN, "", "*Generated by `python benchmarks/paper.py --report` from "
             "`benchmarks/results/*.csv`; do not edit by hand.*", ""]
    choices = pd.read_csv(AUTO_CHOICES) if AUTO_CHOICES.is_file() else None
    summary = []
    for target, frame in frames.items():
        at500 = frame[(frame.n_train == N_TRAIN) & frame.model.map(_is_single_row)]
        if at500.empty:
            continue
        spec = TARGETS[target]
        default = default_single(target)[1]
        means = at500.groupby("model").test_mae.mean()
        trials = at500.groupby("model").trial.nunique()
        fixed = [single_name(SOURCE_LABELS[s]) for s in allowed_sources(target)]
        fixed = [m for m in fixed if m in means]
        common = set.intersection(*(set(at500[at500.model == m].trial) for m in means.index))
        on = at500[at500.trial.isin(common)]
        cmeans = on.groupby("model").test_mae.mean()
        lines += [f"### {target} ({spec['units']}), one fine-tune at the defaults", "",
                  f"The former default (a fifth held out): {default}. Means over the "
                  f"{len(common)} trials that "
                  "every row has (a row's own trial count in brackets when it has more).",
                  "", "| row | trials | test MAE, mean (std) | vs the former default | "
                  "p (paired, vs the former default) |", "| --- | --- | --- | --- | --- |"]
        order = fixed + [m for m in means.index if m not in fixed]
        for m in order:
            sub = on[on.model == m].test_mae
            if sub.empty:
                continue
            vs = "" if m == default or default not in cmeans else \
                f"{100 * (cmeans[m] / cmeans[default] - 1):+.1f} %"
            p = "" if m == default else p_text(on, m, default)
            extra = f" ({trials[m]})" if trials[m] > len(common) else ""
            lines.append(f"| {m} | {len(sub)}{extra} | {sub.mean():.4f} ({sub.std():.4f}) | {vs} | "
                         f"{p} |")
        lines.append("")
        auto = single_name("auto")
        text = []
        if fixed and auto in means:
            common = set.intersection(*(set(at500[at500.model == m].trial)  # may be > 10
                                        for m in [*fixed, auto]))
            cmeans = at500[at500.trial.isin(common)].groupby("model").test_mae.mean()
            best_fixed = min(fixed, key=lambda m: cmeans[m])
            gap = 100 * (cmeans[auto] / cmeans[best_fixed] - 1)
            text.append(f"Auto {cmeans[auto]:.4f} against the best fixed source in hindsight, "
                        f"{best_fixed.split('(')[-1].rstrip(')')}, {cmeans[best_fixed]:.4f}: "
                        f"{gap:+.1f} % ({'within' if gap <= 3 else 'outside'} the 3 % goal"
                        f"{_gap_by_window(at500, fixed, auto, sorted(common))}).")
            if choices is not None:
                c = choices[(choices.target == target) & choices.trial.isin(common)]
                text.append("Auto chose: " + ", ".join(
                    f"{SOURCE_LABELS.get(k, k)} {v}x" for k, v in
                    c.chosen.value_counts().items()) + f" (probe {c.probe_time_s.mean():.1f} s "
                    "wall per trial).")
            summary.append((target, len(common), cmeans.get(default, np.nan), cmeans[auto],
                            best_fixed, cmeans[best_fixed], gap))
        if text:
            lines += [" ".join(text), ""]
    if summary:
        lines += ["| target | trials | the former default | auto | best fixed source | "
                  "auto vs best fixed |", "| --- | --- | --- | --- | --- | --- |"]
        for target, n, d, a, b, bm, gap in summary:
            lines.append(f"| {target} | {n} | {d:.4f} | {a:.4f} | "
                         f"{b.split('(')[-1].rstrip(')')} {bm:.4f} | {gap:+.1f} % |")
        lines.append("")
    lines += pooled_single(frames) + best_single(frames)
    return lines + [SINGLE_END]


def _gap_by_window(at500, fixed, auto, trials, first=10):
    """"; trials 0-9: x %, 10-19: y %; ...": auto against the best fixed source in hindsight
    of each window, the first ``first`` trials (those the probe was designed on) and the
    later ones, then against the source that was best on the other window (a fixed choice
    made without the window's own results); empty with no later trials."""
    later = [t for t in trials if t >= first]
    if not later:
        return ""
    windows = [[t for t in trials if t < first], later]
    means = [at500[at500.trial.isin(w)].groupby("model").test_mae.mean() for w in windows]
    own = [100 * (m[auto] / min(m[f] for f in fixed) - 1) for m in means]
    other = [100 * (m[auto] / m[min(fixed, key=o.get)] - 1)
             for m, o in zip(means, means[::-1])]
    names = [f"trials {w[0]}-{w[-1]}" for w in windows]
    return ("; " + ", ".join(f"{n}: {g:+.1f} %" for n, g in zip(names, own))
            + "; against the source best on the other window: "
            + ", ".join(f"{g:+.1f} %" for g in other))


def _single_pairs(frames, name):
    """log(MAE of row ``name(label)`` / MAE of the former default) on every (target, trial)
    that has both, ``label`` the target's default source."""
    out = []
    for target, frame in frames.items():
        at500 = frame[frame.n_train == N_TRAIN].set_index(["model", "trial"]).test_mae
        label, default = default_single(target)
        a, b = name(label), default
        if a in at500.index and b in at500.index:
            both = pd.concat([at500[a], at500[b]], axis=1, join="inner")
            out += list(np.log(both.iloc[:, 0] / both.iloc[:, 1]))
    return np.asarray(out)


def pooled_single(frames):
    """Auto and each method against the former default over every target's trials at once:
    the mean relative change and a paired t-test on log(MAE ratio), which weighs the
    targets alike whatever their units."""
    from scipy.stats import ttest_1samp

    rows = [('pretrained="auto"', lambda label: single_name("auto"))] + [
        (m.lstrip(", "), lambda label, m=m: single_name(label, m)) for m in SINGLE_METHODS] + [
        (f'pretrained="auto"{NO_HOLD_OUT}{e}',
         lambda label, e=e: single_name("auto", NO_HOLD_OUT + e)) for e in ("", ", 60 epochs")]
    lines = ["All targets pooled (every target's trials, against its default source): mean "
             "change of the test MAE and a paired t-test on log(MAE / default's MAE).", "",
             "| row | pairs | mean change | p |", "| --- | --- | --- | --- |"]
    for label, name in rows:
        d = _single_pairs(frames, name)
        if len(d) < 2:
            continue
        p = ttest_1samp(d, 0).pvalue
        lines.append(f"| {label} | {len(d)} | {100 * np.expm1(d.mean()):+.1f} % | "
                     f"{p:.2g} ({'lower' if d.mean() < 0 else 'higher'}) |")
    return lines + [""]


def best_single(frames):
    """Per target: the lowest-MAE single TL-CGCNN fit of any stage at 500 crystals (no
    ensemble, no descriptor model), its fit time against the defaults row's, and the
    single-model goal."""
    lines = ["The best single fine-tuned TL-CGCNN of any stage (one fit per trial, all 10 "
             "trials; no ensembles), against the single-model goal:", "",
             "| target | row | test MAE | fit time vs the defaults | goal | met |",
             "| --- | --- | --- | --- | --- | --- |"]
    for target, frame in frames.items():
        goal = TARGETS[target].get("single_goal")
        at500 = frame[(frame.n_train == N_TRAIN) & frame.model.str.startswith("TL-CGCNN")
                      & ~frame.model.str.contains("ensemble")]
        full = at500.groupby("model").trial.nunique()
        full = full[full >= paper_n_trials(N_TRAIN)].index
        if goal is None or full.empty:
            continue
        means = at500[at500.model.isin(full)].groupby("model").test_mae.mean()
        times = at500.groupby("model").fit_time_s.median()
        best = means.idxmin()
        default = default_single(target)[1]
        cost = f"{times[best] / times[default]:.1f}x" if default in times else ""
        lines.append(f"| {target} | {best} | {means[best]:.4f} | {cost} | <= {goal} | "
                     f"{'yes' if means[best] <= goal else 'no'} |")
    return lines + [""]


def _is_descriptor_row(model):
    """Rows of the embeddings stage (kept out of the paper's tables and figure)."""
    return " on " in model


def _verdict(frame, a, b):
    """'beats', 'ties with' or 'loses to' by a paired t-test at p < 0.01, and p."""
    try:
        t, p = paired_ttest(frame, a, b)
    except ValueError:
        return None, np.nan
    if np.isnan(p):
        return "ties with", 1.0
    return ("beats" if t < 0 else "loses to") if p < 0.01 else "ties with", p


def report_embeddings(frames):
    """Tables of the embeddings and SOAP rows against magpie and fine-tuning."""
    lines = [EMB_BEGIN, "", "*Generated by `python benchmarks/paper.py --report` from "
             "`benchmarks/results/*.csv`; do not edit by hand.*", ""]
    summary_rows = []
    for target, frame in frames.items():
        at500 = frame[frame.n_train == N_TRAIN]
        means = at500.groupby("model").test_mae.mean()
        trials = at500.groupby("model").trial.nunique()
        rows = [m for m in means.index if _is_descriptor_row(m)]
        if not rows and SOAP_ROW not in means:
            continue
        big_tl = tl_name(target)
        label = TARGETS[target]["pretrained"][0][1]
        lines += [f"### {target} ({TARGETS[target]['units']}), embeddings of {label}", "",
                  "| model | descriptors | trials | test MAE, mean (std) | "
                  "p against the same model on magpie | p against TL-CGCNN |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for kind in EMBEDDING_ROWS:
            for features in dict.fromkeys(["magpie", *EMBEDDING_ROWS[kind]]):
                name = embedding_row(kind, features, target)
                if name not in means:
                    continue
                sub = at500[at500.model == name].test_mae
                vs_magpie = "" if features == "magpie" else \
                    p_text(at500, name, embedding_row(kind, "magpie", target))
                lines.append(f"| {kind} | {features} | {trials[name]} | "
                             f"{_fmt(sub.mean(), sub.std())} | {vs_magpie} | "
                             f"{p_text(at500, name, big_tl)} |")
        for name, words in ((SOAP_ROW, "SOAP (average kernel)"), ("RF", "magpie"),
                            (big_tl, "fine-tuned network"),
                            (ensemble_name(big_tl), "fine-tuned networks")):
            if name in means:
                sub = at500[at500.model == name].test_mae
                vs = "" if name == big_tl else p_text(at500, name, big_tl)
                vs_rf = p_text(at500, name, "RF") if name == SOAP_ROW else ""
                lines.append(f"| {name.split(' (')[0]} | {words} | {trials[name]} | "
                             f"{_fmt(sub.mean(), sub.std())} | "
                             f"{'against RF: ' + vs_rf if vs_rf else ''} | {vs} |")
        lines.append("")
        if rows:
            best = min(rows, key=lambda m: means[m])
            kind = best.split(" ")[0]
            magpie = embedding_row(kind, "magpie", target)
            v_mag, p_mag = _verdict(at500, best, magpie)
            v_tl, p_tl = _verdict(at500, best, big_tl)
            text = f"Best embedding-based model: {best} ({means[best]:.3f})"
            if v_mag:
                text += (f"; it {v_mag} {magpie if magpie != 'SVR' else 'SVR on magpie'} "
                         f"({means[magpie]:.3f}, p = {p_mag:.2g})")
            if v_tl:
                text += f" and {v_tl} the fine-tuned {big_tl} ({means[big_tl]:.3f}, p = {p_tl:.2g})"
            lines += [text + " (paired t-tests over the shared trials, significant at "
                      "p < 0.01).", ""]
            summary_rows.append((target, best, means[best], v_mag, p_mag, v_tl, p_tl))
    if summary_rows:
        lines += ["| target | best embedding-based model | test MAE | against magpie | "
                  "against fine-tuning |", "| --- | --- | --- | --- | --- |"]
        for target, best, mae, v_mag, p_mag, v_tl, p_tl in summary_rows:
            lines.append(f"| {target} | {best} | {mae:.3f} | "
                         f"{f'{v_mag} (p = {p_mag:.2g})' if v_mag else ''} | "
                         f"{f'{v_tl} (p = {p_tl:.2g})' if v_tl else ''} |")
        lines.append("")
    return lines + [EMB_END]


def write_block(lines):
    """Replace the block of ``docs/benchmarks.md`` between ``lines``' first and last line.

    The first and last lines are the block's markers; a block not yet in the
    file is appended. The file is rewritten atomically.
    """
    from skcgcnn.io import atomic_write_bytes

    begin, end = lines[0], lines[-1]
    text = DOC.read_text() if DOC.is_file() else ""
    block = "\n".join(lines)
    if begin in text and end in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda m: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    atomic_write_bytes(DOC, text.encode())
    print(block)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", nargs="+", choices=list(TARGETS), default=list(TARGETS))
    p.add_argument("--stage", nargs="+", choices=STAGES, default=list(STAGES))
    p.add_argument("--epochs", type=int, default=FIT["max_epochs"])
    p.add_argument("--lr-decay-epoch", type=int, default=FIT["lr_decay_epoch"])
    p.add_argument("--batch-size", type=int, default=FIT["batch_size"])
    p.add_argument("--conv-dtype", default=FIT["conv_dtype"], choices=["float32", "bfloat16"])
    p.add_argument("--max-trials", type=int, default=10,
                   help="at most this many trials per size (the paper's count by default; "
                   "the single stage runs exactly this many)")
    p.add_argument("--models", nargs="+", metavar="NAME",
                   help="fit only the rows whose name contains one of these")
    p.add_argument("--first-trial", type=int, default=0,
                   help="ensembles stage: start at this trial (a second process on a target)")
    p.add_argument("--n-jobs", type=int, default=1, help="fits in parallel (one thread each)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--report", action="store_true", help="only write the tables and figures")
    p.add_argument("--recalibrate", action="store_true",
                   help="recompute the ensembles rows' coverage from their dumps, then report")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.recalibrate:
        for target in args.targets:
            recalibrate(target)
    elif not args.report:
        RESULTS.mkdir(parents=True, exist_ok=True)
        for stage in args.stage:
            if stage == "single":
                run_single(args.targets, args)
                continue
            for target in args.targets:
                run_stage(target, stage, args)
    report()


if __name__ == "__main__":
    main()
