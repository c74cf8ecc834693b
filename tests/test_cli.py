"""End-to-end tests of the ``skcgcnn`` command (skcgcnn.cli)."""

import io
import json
import shutil
import subprocess
import sys

import joblib
import numpy as np
import pandas as pd
import pytest
from ase.build import bulk
from pymatgen.io.ase import AseAtomsAdaptor

from skcgcnn import CGCNNRegressor, TransferCGCNNRegressor
from skcgcnn.cli import _default_n_train, _estimator, build_parser, main
from skcgcnn.pretrained import PRETRAINED_DIR, load_estimator

FAST = ["--epochs", "3", "--batch-size", "8", "--random-state", "0", "-q"]


def _crystals():
    """Sixteen strained Cu, Al, NaCl and Si crystals and their volume per atom (Å^3)."""
    out = []
    for strain in np.linspace(0.96, 1.04, 4):
        for name, kw in (("Cu", {"a": 3.6}), ("Al", {"a": 4.05}),
                         ("NaCl", {"crystalstructure": "rocksalt", "a": 5.64}),
                         ("Si", {"crystalstructure": "diamond", "a": 5.43})):
            atoms = bulk(name, **{**kw, "a": kw["a"] * strain})
            out.append((AseAtomsAdaptor.get_structure(atoms), atoms.get_volume() / len(atoms)))
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A CGCNN folder (id_prop.csv + CIFs) and a frozen copy of a bundled model."""
    root = tmp_path_factory.mktemp("cgcnn")
    lines = []
    for i, (structure, volume) in enumerate(_crystals()):
        structure.to(filename=str(root / f"x{i}.cif"))
        lines.append(f"x{i},{float(volume)!r}")
    (root / "id_prop.csv").write_text("\n".join(lines) + "\n")
    # a copy, so a retraining of the bundled model during the tests changes nothing here
    pre = tmp_path_factory.mktemp("pretrained") / "formation.pt"
    shutil.copy(PRETRAINED_DIR / "mp-formation-energy.pt", pre)
    shutil.copy(PRETRAINED_DIR / "mp-formation-energy.json", pre.with_suffix(".json"))
    return root, pre


@pytest.fixture(scope="module")
def finetuned(folder, tmp_path_factory):
    root, pre = folder
    model = tmp_path_factory.mktemp("model") / "model.pt"
    assert main(["finetune", "--pretrained", str(pre), str(root), "-o", str(model), *FAST]) == 0
    return model


def _ids_and_y(root):
    table = pd.read_csv(root / "id_prop.csv", header=None, names=["id", "y"],
                        float_precision="round_trip")
    return table.id.tolist(), table.y.to_numpy()


def test_finetune_then_predict_matches_the_estimator(folder, finetuned, tmp_path):
    root, pre = folder
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(finetuned), str(root), "-o", str(out), "-q"]) == 0
    table = pd.read_csv(out, float_precision="round_trip")
    ids, y = _ids_and_y(root)
    assert table.columns.tolist() == ["id", "prediction"]
    assert table.id.tolist() == ids and np.isfinite(table.prediction).all()
    # the same fit in Python, from the CIF paths, predicts the same numbers
    paths = [str(root / f"{i}.cif") for i in ids]
    est = TransferCGCNNRegressor(pretrained=str(pre), max_epochs=3, batch_size=8,
                                 random_state=0).fit(paths, y)
    np.testing.assert_allclose(table.prediction, est.predict(paths), rtol=1e-9)
    # and the saved model round-trips to identical predictions
    np.testing.assert_array_equal(load_estimator(finetuned).predict(paths), est.predict(paths))
    card = json.loads(finetuned.with_suffix(".json").read_text())
    assert card["pretrained"] == str(pre) and card["target_transform"] is None
    assert card["n_train"] + card["n_validation"] == 16 and card["epochs_trained"] == 3
    assert card["training_command"].startswith("skcgcnn finetune --pretrained")


def test_predict_to_stdout_and_from_graph_file(folder, finetuned, tmp_path, capsys):
    root, _ = folder
    graphs = tmp_path / "graphs.joblib"
    assert main(["featurize", str(root), "-o", str(graphs), "-q"]) == 0
    stored = joblib.load(graphs)
    ids, y = _ids_and_y(root)
    assert stored["ids"] == ids and np.array_equal(stored["y"], y)
    assert len(stored["graphs"]) == 16 and stored["graphs"][0].n_edges == 12  # fcc Cu
    capsys.readouterr()
    main(["predict", str(finetuned), str(root), "-q"])
    from_folder = capsys.readouterr().out
    main(["predict", str(finetuned), str(graphs), "-q"])
    assert capsys.readouterr().out == from_folder and from_folder.startswith("id,prediction\n")


def test_train_log10_from_csv_table(tmp_path):
    rows = []
    for i, (structure, volume) in enumerate(_crystals()):
        if i % 2:  # CIF text in the cell
            cell = structure.to(fmt="cif")
        else:  # a path relative to the CSV
            structure.to(filename=str(tmp_path / f"s{i}.cif"))
            cell = f"s{i}.cif"
        rows.append({"name": f"s{i}", "structure": cell, "volume": volume})
    pd.DataFrame(rows).to_csv(tmp_path / "table.csv", index=False)
    model = tmp_path / "vol.pt"
    assert main(["train", str(tmp_path / "table.csv"), "--target", "volume", "--log10",
                 "--units", "A^3", "--id-column", "name", "-o", str(model), *FAST,
                 "--lr", "0.02"]) == 0
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["target_transform"] == "log10" and card["units"] == "A^3"
    assert card["hyperparameters"]["lr"] == 0.02
    out = tmp_path / "p.csv"
    main(["predict", str(model), str(tmp_path / "table.csv"), "--id-column", "name",
          "-o", str(out), "-q"])
    pred = pd.read_csv(out)
    volume = np.array([r["volume"] for r in rows])
    assert pred.id.tolist() == [r["name"] for r in rows]
    # written back in Å^3 (10 to 25), not in log10 units (about 1.1)
    assert (pred.prediction > volume.min() / 3).all() and (pred.prediction < volume.max() * 3).all()


def test_output_keeps_its_suffix_and_is_never_replaced_silently(folder, tmp_path, capsys):
    root, pre = folder
    out = tmp_path / "run.v1"
    argv = ["finetune", "--pretrained", str(pre), str(root), "-o", str(out), *FAST]
    assert main(argv) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.v1.json", "run.v1.pt"]
    before = (tmp_path / "run.v1.pt").read_bytes()
    capsys.readouterr()
    err = _error(argv + ["--random-state", "1"], capsys)  # refused before any training
    assert "run.v1.pt' exists; pass --force to replace it" in err
    assert (tmp_path / "run.v1.pt").read_bytes() == before
    assert main(argv + ["--random-state", "1", "--force"]) == 0
    assert (tmp_path / "run.v1.pt").read_bytes() != before
    card = json.loads((tmp_path / "run.v1.json").read_text())
    assert card["name"] == "run.v1" and card["hyperparameters"]["random_state"] == 1
    assert "--force" in card["training_command"]


def test_predict_and_featurize_never_replace_an_output_silently(folder, finetuned, tmp_path,
                                                               capsys):
    # predict -o replaced an existing CSV silently, while models refuse: one rule, --force
    root, _ = folder
    out, graphs = tmp_path / "p.csv", tmp_path / "g.joblib"
    out.write_text("precious\n")
    graphs.write_text("precious\n")
    err = _error(["predict", str(finetuned), str(root), "-o", str(out), "-q"], capsys)
    assert f"{str(out)!r} exists; pass --force to replace it" in err
    err = _error(["featurize", str(root), "-o", str(graphs), "-q"], capsys)
    assert f"{str(graphs)!r} exists; pass --force to replace it" in err
    assert out.read_text() == graphs.read_text() == "precious\n"
    assert main(["predict", str(finetuned), str(root), "-o", str(out), "-q", "--force"]) == 0
    assert pd.read_csv(out).columns.tolist() == ["id", "prediction"]
    assert main(["featurize", str(root), "-o", str(graphs), "-q", "--force"]) == 0
    assert len(joblib.load(graphs)["graphs"]) == 16


def test_predict_a_plain_folder_of_cifs_and_a_header_line(folder, finetuned, tmp_path, capsys):
    root, _ = folder
    plain = tmp_path / "plain"
    plain.mkdir()
    for i in (3, 0, 12):
        shutil.copy(root / f"x{i}.cif", plain / f"x{i}.cif")
    capsys.readouterr()
    assert main(["predict", str(finetuned), str(plain), "-q"]) == 0
    table = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert table.id.tolist() == ["x0", "x12", "x3"]  # sorted file names
    assert main(["predict", str(finetuned), str(root), "-q"]) == 0
    full = pd.read_csv(io.StringIO(capsys.readouterr().out)).set_index("id")
    np.testing.assert_allclose(table.prediction, full.prediction[table.id], rtol=1e-6)
    # an id_prop.csv with a header line: the header is skipped, the targets read
    (plain / "id_prop.csv").write_text("id,volume\nx0,11.8\nx3,12.0\n")
    assert main(["predict", str(finetuned), str(plain), "-q"]) == 0
    captured = capsys.readouterr()
    assert pd.read_csv(io.StringIO(captured.out)).id.tolist() == ["x0", "x3"]
    assert "MAE against the targets" in captured.err
    # training needs targets: a plain folder is refused with what to write
    (plain / "id_prop.csv").unlink()
    err = _error(["train", str(plain), "-o", str(tmp_path / "m.pt")], capsys)
    assert "no id_prop.csv in" in err
    (tmp_path / "none").mkdir()
    err = _error(["predict", str(finetuned), str(tmp_path / "none")], capsys)
    assert "no id_prop.csv and no .cif files" in err


def test_predict_skips_invalid_crystals_and_names_isolated_ones(folder, finetuned, tmp_path,
                                                                 capsys):
    from ase import Atoms

    root, _ = folder
    plain = tmp_path / "plain"
    plain.mkdir()
    for i in range(4):
        shutil.copy(root / f"x{i}.cif", plain / f"x{i}.cif")
    (plain / "x1b.cif").write_text("this is not a cif\n")
    AseAtomsAdaptor.get_structure(Atoms("Cu", cell=[20] * 3, pbc=True)).to(
        filename=str(plain / "lone.cif"))
    out = tmp_path / "p.csv"
    # one garbage file stops everything, by default; its error starts on its own line
    with pytest.raises(SystemExit):
        main(["predict", str(finetuned), str(plain), "-o", str(out)])
    err = capsys.readouterr().err
    assert "crystal graphs" in err  # the progress bar was shown
    assert err.splitlines()[-1].startswith("skcgcnn predict: error: could not read a structure")
    assert "x1b.cif" in err and not out.exists()
    # --skip-invalid predicts the others and lists what it skipped
    assert main(["predict", str(finetuned), str(plain), "-o", str(out), "-q",
                 "--skip-invalid"]) == 0
    assert pd.read_csv(out).id.tolist() == ["lone", "x0", "x1", "x2", "x3"]
    err = capsys.readouterr().err
    assert "skipped 1 of 6 crystal(s) that could not be read or featurized:" in err
    assert "'x1b' (index 3): could not read a structure" in err
    # the lone atom is predicted, and named by its id
    assert "warning: 1 crystal(s) have atoms with no neighbour within radius=8.0" in err
    assert "'lone' (Cu: 1 of 1 atoms isolated)" in err
    # nothing readable at all is an error, not an empty table
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.cif").write_text("garbage\n")
    err = _error(["predict", str(finetuned), str(bad), "-q", "--skip-invalid"], capsys)
    assert "none of the 1 crystal(s) could be featurized" in err
    # a CSV table: rows whose structure cannot be read are skipped too, named by row
    table = tmp_path / "table.csv"
    pd.DataFrame({"id": ["good", "garbage", "empty", "missing"],
                  "structure": [(plain / "x0.cif").read_text(), "data_x\nnot a cif\n", "",
                                "nowhere.cif"]}).to_csv(table, index=False)
    with pytest.raises(SystemExit):
        main(["predict", str(finetuned), str(table), "-q"])
    assert "row 1 of column 'structure'" in capsys.readouterr().err
    assert main(["predict", str(finetuned), str(table), "-o", str(out), "-q", "--force",
                 "--skip-invalid"]) == 0
    assert pd.read_csv(out).id.tolist() == ["good"]
    err = capsys.readouterr().err
    assert "skipped 3 of 4 crystal(s)" in err
    assert all(f"row {i} of column 'structure'" in err for i in (1, 2, 3))


def test_training_options_reach_the_estimator():
    args = build_parser().parse_args([
        "train", "data/", "-o", "m.pt", "--epochs", "40", "--lr", "0.03", "--batch-size", "16",
        "--lr-decay-epoch", "30", "--patience", "7", "--validation-fraction", "0.25",
        "--device", "cpu", "--threads", "1"])
    params = _estimator(args, finetune=False).get_params()
    assert {k: params[k] for k in ("max_epochs", "lr", "batch_size", "lr_decay_epoch",
                                   "n_iter_no_change", "validation_fraction", "device")} == {
        "max_epochs": 40, "lr": 0.03, "batch_size": 16, "lr_decay_epoch": 30,
        "n_iter_no_change": 7, "validation_fraction": 0.25, "device": "cpu"}
    # options not given keep the estimator's defaults
    default = TransferCGCNNRegressor().get_params()
    args = build_parser().parse_args(["finetune", "data/", "-o", "m.pt", "--epochs", "20"])
    params = _estimator(args, finetune=True).get_params()
    assert params["lr"] == default["lr"] and params["batch_size"] == default["batch_size"]
    assert params["lr_schedule"] == default["lr_schedule"] == "cosine"
    assert params["validation_fraction"] == default["validation_fraction"] == "auto"
    args = build_parser().parse_args(["finetune", "data/", "-o", "m.pt",
                                      "--validation-fraction", "AUTO"])
    assert _estimator(args, finetune=True).get_params()["validation_fraction"] == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["finetune", "data/", "-o", "m.pt",
                                   "--validation-fraction", "a fifth"])
    args = build_parser().parse_args(["train", "data/", "-o", "m.pt"])
    params = _estimator(args, finetune=False).get_params()
    scratch = CGCNNRegressor().get_params()
    assert all(params[k] == scratch[k] for k in ("max_epochs", "lr_decay_epoch", "lr",
                                                 "batch_size", "validation_fraction"))
    args = build_parser().parse_args(["train", "data/", "-o", "m.pt", "--epochs", "20",
                                      "--lr-decay-epoch", "none"])
    assert _estimator(args, finetune=False).lr_decay_epoch is None
    args = build_parser().parse_args(["predict", "m.pt", "data/", "--device", "cpu",
                                      "--threads", "2"])
    assert (args.device, args.threads) == ("cpu", 2)


def test_decay_epoch_follows_epochs_under_step_and_is_refused_under_cosine(tiny, folder,
                                                                          tmp_path, capsys):
    import torch

    _, graphs, y = tiny
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # step (train's default): --epochs 10 moves the decay to epoch 10 * 100 / 500 = 2,
        # and the learning rate really drops there
        args = build_parser().parse_args(["train", "d/", "-o", "m.pt", "--epochs", "10",
                                          "--batch-size", "4", "-q"])
        est = _estimator(args, finetune=False).fit(graphs, y)
        assert est.history[:, "event_lr"] == pytest.approx([0.01] * 2 + [0.001] * 8)
        # finetune --lr-schedule step honours --lr-decay-epoch
        args = build_parser().parse_args(["finetune", "d/", "-o", "m.pt", "--epochs", "4",
                                          "--lr-schedule", "step", "--lr-decay-epoch", "3",
                                          "--batch-size", "4", "-q"])
        est = _estimator(args, finetune=True).fit(graphs, y)
        assert est.history[:, "event_lr"] == pytest.approx([0.01] * 3 + [0.001])
    finally:
        torch.set_num_threads(threads)
    # under finetune's cosine schedule a decay epoch would be ignored: refused, before training
    root, pre = folder
    out = tmp_path / "m.pt"
    err = _error(["finetune", "--pretrained", str(pre), str(root), "-o", str(out),
                  "--lr-decay-epoch", "10", *FAST], capsys)
    assert "--lr-decay-epoch applies to the step schedule" in err and "cosine" in err
    assert not out.exists()
    # the help says so instead of promising a default that does nothing
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--lr-decay-epoch EPOCH step schedule only (refused with cosine)" in text
    assert "(default: cosine)" in text


def test_card_records_the_schedule_used(finetuned):
    # the card recorded a decay epoch of 100 and not the cosine schedule that was used
    hyper = json.loads(finetuned.with_suffix(".json").read_text())["hyperparameters"]
    assert hyper["lr_schedule"] == "cosine"
    assert "lr_decay_epoch" not in hyper and "lr_decay" not in hyper


def test_loss_table_is_plain_and_labelled(folder, tmp_path, capsys, monkeypatch):
    import torch

    root, _ = folder
    threads, set_threads, calls = torch.get_num_threads(), torch.set_num_threads, []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: (calls.append(n), set_threads(n)))
    torch.set_num_threads(threads + 1)
    try:
        assert main(["train", str(root), "-o", str(tmp_path / "m"), "--epochs", "3",
                     "--batch-size", "8", "--patience", "50", "--validation-fraction", "0.25",
                     "--lr-decay-epoch", "2", "--threads", "1", "--units", "A^3"]) == 0
        # --threads holds while the command runs; the caller's count is back after
        assert calls == [threads + 1, 1, threads + 1]
        assert torch.get_num_threads() == threads + 1
    finally:
        set_threads(threads)
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out + captured.err  # captured output is no terminal
    assert "train_loss" in captured.out and "valid_loss" in captured.out
    assert "MAE of the standardised target (1 = one standard deviation = " in captured.err
    card = json.loads((tmp_path / "m.json").read_text())
    assert (card["n_train"], card["n_validation"]) == (12, 4)
    assert card["hyperparameters"]["n_iter_no_change"] == 50
    assert card["hyperparameters"]["lr_decay_epoch"] == 2
    assert card["hyperparameters"]["lr_schedule"] == "step"
    assert f"training MAE {card['train_mae']:.4g} A^3 on 12 crystals, validation MAE " \
           f"{card['valid_mae']:.4g} A^3 on the 4 held out (best epoch " in captured.err


def test_pretrained_listing(capsys):
    assert main(["pretrained"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "target", "units", "n_train", "test_mae"]
    row = next(line.split() for line in lines if line.startswith("mp-formation-energy "))
    assert row[1:3] == ["formation_energy_per_atom", "eV/atom"] and int(row[3]) > 1000
    assert main(["pretrained", "mp-band-gap-nm"]) == 0
    assert json.loads(capsys.readouterr().out)["target"] == "band_gap"


def test_compare_prints_table_and_ttest(folder, tmp_path, capsys):
    root, pre = folder
    results = tmp_path / "trials.csv"
    assert main(["compare", str(root), "--pretrained", str(pre), "--n-trials", "2",
                 "--epochs", "2", "--batch-size", "8", "--cv", "2", "--units", "A^3", "--results",
                 str(results), "-q"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "16 crystals, target 'target', 2 trial(s) of 11/2/2 train/validation/test" in out[0]
    assert out[1].startswith("model") and "test MAE A^3, mean (std)" in out[1]
    assert [line.split()[0] for line in out[2:8]] == ["TL-CGCNN", "CGCNN", "RF", "SVR", "LASSO",
                                                      "PLS"]
    assert out[8].startswith("paired t-test TL-CGCNN vs CGCNN over 2 trials: t = ")
    p = float(out[8].split("p = ")[1].split()[0])
    assert 0.0 <= p <= 1.0
    trials = pd.read_csv(results)
    assert len(trials) == 12 and set(trials.trial) == {0, 1}
    mean_rf = trials[trials.model == "RF"].test_mae.mean()
    assert f"{mean_rf:.4g} (" in out[4]


def test_lookup_is_not_copied_by_clone(tiny):
    # compare clones its pipelines for every trial: the graph table must be shared
    from sklearn.base import clone
    from sklearn.dummy import DummyRegressor
    from sklearn.pipeline import Pipeline

    from skcgcnn.stats import _Lookup

    _, graphs, _ = tiny
    lookup = _Lookup(graphs)
    pipe = clone(Pipeline([("graphs", lookup), ("model", DummyRegressor())]))
    assert pipe.steps[0][1].table is graphs
    assert pipe.steps[0][1].transform([3, 1])[0] is graphs[3]


def test_default_training_size_is_4_1_1():
    assert _default_n_train(750) == 500 and _default_n_train(16) == 11


def _error(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_errors_are_one_line_with_status_2(folder, tmp_path, capsys):
    root, _ = folder
    empty = tmp_path / "empty"
    empty.mkdir()
    err = _error(["train", str(empty), "-o", str(tmp_path / "m.pt")], capsys)
    assert err.startswith("skcgcnn train: error: no id_prop.csv in") and str(empty) in err
    err = _error(["train", str(tmp_path / "absent"), "-o", str(tmp_path / "m.pt")], capsys)
    assert "input does not exist" in err and "absent" in err
    with pytest.raises(FileNotFoundError, match="input does not exist"):
        main(["--traceback", "train", str(tmp_path / "absent"), "-o", str(tmp_path / "m.pt")])
    err = _error(["finetune", "--pretrained", "no-such-model", str(root), "-o",
                  str(tmp_path / "m.pt")], capsys)
    assert "unknown pretrained model 'no-such-model'" in err and "mp-formation-energy" in err
    table = tmp_path / "t.csv"
    table.write_text("structure,y\nx0.cif,1.0\n")
    shutil.copy(root / "x0.cif", tmp_path / "x0.cif")
    err = _error(["train", str(table), "--target", "band_gap", "-o", str(tmp_path / "m.pt")],
                 capsys)
    assert "no target column 'band_gap'" in err and "structure, y" in err
    err = _error(["train", str(table), "-o", str(tmp_path / "m.pt")], capsys)
    assert "--target" in err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "id_prop.csv").write_text("gone,1.0\n")
    err = _error(["predict", "mp-formation-energy", str(tmp_path / "bad")], capsys)
    assert "gone.cif" in err
    err = _error(["compare", str(root), "--models", "tl,gbm"], capsys)
    assert "gbm" in err
    negative = tmp_path / "neg.csv"
    negative.write_text("structure,y\nx0.cif,-1.0\n")
    err = _error(["train", str(negative), "--target", "y", "--log10", "-o", "m.pt"], capsys)
    assert "--log10 needs positive targets" in err


def test_a_file_that_is_not_a_model_says_so(folder, tmp_path, capsys):
    # seen: "error: 101" (KeyError), torch's advice to load unsafely, "does not exist: ...csv.pt"
    root, pre = folder
    card = pre.with_suffix(".json").read_text()
    (tmp_path / "notes.pt").write_text("hello\n")
    (tmp_path / "notes.json").write_text(card)
    (tmp_path / "table.pt").write_text("id,value\nx0,1.0\n")
    (tmp_path / "table.json").write_text(card)
    (tmp_path / "table.csv").write_text("id,value\nx0,1.0\n")
    for model, begins in (("notes.pt", "it begins 'hello'"), ("table.pt", "it begins 'id,value'"),
                          ("table.csv", "table.csv.pt' does not exist either")):
        path = str(tmp_path / model)
        err = _error(["predict", path, str(root), "-q"], capsys)
        assert err.startswith(f"skcgcnn predict: error: {path!r} is not a skcgcnn model file")
        assert begins in err and "weights_only" not in err
    err = _error(["finetune", "--pretrained", str(tmp_path / "table.csv"), str(root), "-o",
                  str(tmp_path / "m.pt"), *FAST], capsys)
    assert "'table.csv' is not a skcgcnn model file" in err.replace(str(tmp_path) + "/", "")


@pytest.mark.parametrize("command", ["featurize", "train", "finetune", "predict",
                                     "pretrained", "compare", "import-cgcnn"])
def test_help_has_examples(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert f"examples:\n  skcgcnn {command}" in capsys.readouterr().out


def test_console_script():
    # the [project.scripts] entry point once installed, else ``python -m skcgcnn``
    script = shutil.which("skcgcnn")
    command = [script] if script else [sys.executable, "-m", "skcgcnn"]
    done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "finetune" in done.stdout and "compare" in done.stdout


def test_finetune_ensemble_then_predict_with_std_and_bounds(folder, tmp_path, capsys):
    from skcgcnn.ensemble import load_ensemble

    _, pre = folder
    root = tmp_path / "data"
    root.mkdir()
    lines = []
    for i, (structure, volume) in enumerate(_crystals() + _crystals()[::-1]):
        structure.perturb(0.01 * (i % 5), 0.0)  # 32 distinct crystals
        structure.to(filename=str(root / f"x{i}.cif"))
        lines.append(f"x{i},{float(volume) + 0.1 * (i % 3)!r}")
    (root / "id_prop.csv").write_text("\n".join(lines) + "\n")
    model = tmp_path / "ens.pt"
    assert main(["finetune", "--pretrained", str(pre), str(root), "-o", str(model),
                 "--ensemble", "5", "--calibration-fraction", "0.3", *FAST]) == 0
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["ensemble"]["n_estimators"] == 5 and card["ensemble"]["std_scale"] > 0
    # the held-out figure is the ensemble's, on the 10 crystals that no member saw
    cal = card["ensemble"]["calibration_indices"]
    assert len(cal) == 10 and "valid_mae" not in card
    ids, y = _ids_and_y(root)
    mean = load_ensemble(model).predict([str(root / f"{i}.cif") for i in ids])
    assert card["calibration_mae"] == pytest.approx(np.mean(np.abs(mean - y)[cal]), rel=1e-6)
    assert card["train_mae"] == pytest.approx(np.mean(np.abs(np.delete(mean - y, cal))),
                                              rel=1e-6)
    assert "held-out MAE" in capsys.readouterr().err
    out = tmp_path / "p.csv"
    assert main(["predict", str(model), str(root), "-o", str(out), "-q"]) == 0
    table = pd.read_csv(out)
    assert table.columns.tolist() == ["id", "prediction", "std", "lower_90", "upper_90"]
    assert (table["std"] > 0).all()
    assert (table.lower_90 < table.prediction).all() and (table.prediction < table.upper_90).all()
    ens = load_ensemble(model)
    paths = [str(root / f"x{i}.cif") for i in range(32)]
    mean, std = ens.predict(paths, return_std=True)
    np.testing.assert_allclose(table.prediction, mean, rtol=1e-9)
    np.testing.assert_allclose(table["std"], std, rtol=1e-9)
    main(["predict", str(model), str(root), "-o", str(out), "-q", "--confidence-level", "0.5",
          "--force"])
    narrow = pd.read_csv(out)
    assert (narrow.upper_50 - narrow.lower_50 < table.upper_90 - table.lower_90).all()


@pytest.mark.skipif(not (PRETRAINED_DIR / "mp-band-gap-nm.pt").is_file(), reason="not bundled")
def test_finetune_ensemble_from_two_pretrained_models(folder, tmp_path, capsys):
    root, pre = folder
    other = str(PRETRAINED_DIR / "mp-band-gap-nm.pt")
    model = tmp_path / "two.pt"
    assert main(["finetune", "--pretrained", str(pre), "--pretrained", other, str(root),
                 "-o", str(model), "--ensemble", "3", "--validation-fraction", "0.5",
                 "--calibration-fraction", "0.6",
                 *FAST]) == 0
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["ensemble"]["member_pretrained"] == [str(pre), other, str(pre)]
    with pytest.raises(SystemExit) as exc:  # two sources and one model: which?
        main(["finetune", "--pretrained", str(pre), "--pretrained", other, str(root),
              "-o", str(tmp_path / "one.pt"), *FAST])
    assert exc.value.code == 2
    assert "2 --pretrained models need --ensemble N" in capsys.readouterr().err


def test_bad_ensemble_size_is_one_line(folder, tmp_path, capsys):
    root, _ = folder
    with pytest.raises(SystemExit) as exc:
        main(["train", str(root), "-o", str(tmp_path / "m.pt"), "--ensemble", "1", *FAST])
    assert exc.value.code == 2
    assert "n_estimators must be an int of at least 2" in capsys.readouterr().err


def test_ensemble_epoch_tables_say_which_member(folder, tmp_path, capsys):
    # with --n-jobs 2 the members' tables interleaved line by line, unlabelled
    root, pre = folder
    argv = ["finetune", "--pretrained", str(pre), str(root), "-o", str(tmp_path / "e.pt"),
            "--ensemble", "3", "--calibration-fraction", "0.6", "--epochs", "2",
            "--batch-size", "4"]
    assert main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines, "the epoch tables were printed"
    labels = tuple(f"[member {k}] " for k in range(1, 4))
    assert all(line.startswith(labels) for line in lines), lines
    for k in range(1, 4):
        mine = [line[len(f"[member {k}] "):] for line in lines if line.startswith(f"[member {k}]")]
        assert mine[0].split()[:3] == ["epoch", "train_loss", "valid_loss"]
        assert [row.split()[0] for row in mine[2:4]] == ["1", "2"]  # after header and rule


def test_element_features_and_pooling_options(folder, tmp_path):
    args = build_parser().parse_args(["train", "data/", "-o", "m.pt", "--element-features",
                                      "cgcnn", "--pooling", "site"])
    params = _estimator(args, finetune=False).get_params()
    assert (params["element_features"], params["pooling"]) == ("cgcnn", "site")
    args = build_parser().parse_args(["finetune", "data/", "-o", "m.pt", "--pooling", "site"])
    assert _estimator(args, finetune=True).pooling == "site"
    with pytest.raises(SystemExit):  # a fine-tuned model reads its source's table
        build_parser().parse_args(["finetune", "data/", "-o", "m.pt", "--element-features",
                                   "cgcnn"])
    root, _ = folder
    out = tmp_path / "m"
    assert main(["train", str(root), "-o", str(out), "--element-features", "cgcnn",
                 "--pooling", "site", "--epochs", "2", "--batch-size", "4", "-q"]) == 0
    card = json.loads((tmp_path / "m.json").read_text())
    assert card["featurizer"]["element_features_name"] == "cgcnn"
    assert card["architecture"]["pooling"] == "site"


def test_classification_train_finetune_predict(folder, tmp_path, capsys):
    """--task classification: 0/1 labels in id_prop.csv (the original CGCNN's), string
    labels in a table; predict writes one probability column per class."""
    root, pre = folder
    ids, volume = _ids_and_y(root)
    labels = (volume > np.median(volume)).astype(int)
    croot = tmp_path / "classes"
    shutil.copytree(root, croot)
    (croot / "id_prop.csv").write_text("".join(f"{i},{c}\n" for i, c in zip(ids, labels)))
    model = tmp_path / "big.pt"
    assert main(["train", str(croot), "--task", "classification", "--class-weight", "balanced",
                 "-o", str(model), *FAST]) == 0
    card = json.loads(model.with_suffix(".json").read_text())
    assert card["task"] == "classification" and card["classes"] == [0, 1]
    assert 0 <= card["train_accuracy"] <= 1 and card["hyperparameters"]["class_weight"] == \
        "balanced"
    out = tmp_path / "p.csv"
    capsys.readouterr()
    assert main(["predict", str(model), str(croot), "-o", str(out), "-q"]) == 0
    assert "accuracy against the labels" in capsys.readouterr().err
    table = pd.read_csv(out)
    assert table.columns.tolist() == ["id", "prediction", "proba_0", "proba_1"]
    est = load_estimator(model)
    paths = [str(croot / f"{i}.cif") for i in ids]
    np.testing.assert_allclose(table[["proba_0", "proba_1"]].to_numpy(),
                               est.predict_proba(paths), rtol=1e-6)
    np.testing.assert_array_equal(table.prediction, est.predict(paths))
    with pytest.raises(SystemExit):
        main(["predict", str(model), str(croot), "--task", "regression", "-q"])
    assert "is a classification model" in capsys.readouterr().err
    # string labels from a table, fine-tuned from a pretrained regressor with a new head
    rows = [{"id": i, "structure": f"{i}.cif", "kind": "big" if c else "small"}
            for i, c in zip(ids, labels)]
    pd.DataFrame(rows).to_csv(croot / "table.csv", index=False)
    tl = tmp_path / "tl.pt"
    assert main(["finetune", "--pretrained", str(pre), str(croot / "table.csv"), "--target",
                 "kind", "--task", "classification", "-o", str(tl), *FAST]) == 0
    assert json.loads(tl.with_suffix(".json").read_text())["classes"] == ["big", "small"]
    assert main(["predict", str(tl), str(croot / "table.csv"), "-o", str(out), "-q",
                 "--force"]) == 0
    table = pd.read_csv(out)
    assert set(table.prediction) <= {"big", "small"}
    np.testing.assert_allclose(table.proba_big + table.proba_small, 1.0, rtol=1e-9)
    # the regression path is unchanged: a folder of 0/1 still trains a regressor by default
    with pytest.raises(SystemExit):
        main(["train", str(croot), "--task", "classification", "--log10", "-o",
              str(tmp_path / "x.pt"), *FAST])
    assert "--log10 applies to regression" in capsys.readouterr().err


def test_finetune_auto_records_the_chosen_source(folder, tmp_path):
    root, pre = folder
    shutil.copy(PRETRAINED_DIR / "mp-band-gap-nm.pt", tmp_path / "gap.pt")
    shutil.copy(PRETRAINED_DIR / "mp-band-gap-nm.json", tmp_path / "gap.json")
    model = tmp_path / "auto.pt"
    assert main(["finetune", "--pretrained", "auto", "--candidates", str(pre),
                 "--candidates", str(tmp_path / "gap.pt"), "--l2-sp", "0.1", "--lp-epochs", "1",
                 str(root), "-o", str(model), *FAST]) == 0
    card = json.loads(model.with_suffix(".json").read_text())
    assert set(card["source_scores"]) == {str(pre), str(tmp_path / "gap.pt")}
    assert card["pretrained"] == next(iter(card["source_scores"]))
    assert card["hyperparameters"]["l2_sp"] == 0.1 and card["hyperparameters"]["lp_epochs"] == 1
    ids, _ = _ids_and_y(root)
    est = load_estimator(model)
    assert est.predict([str(root / f"{i}.cif") for i in ids[:2]]).shape == (2,)
