"""Tests of skcgcnn.cgcnn_checkpoint and import_cgcnn: checkpoints of the original CGCNN.

Nothing is downloaded: the tests write checkpoints in the original's legacy
(non-zip) format themselves, from a small network of the original's layout
(``OriginalCGCNN`` below, written from the equations of cgcnn/model.py: one
``fc_full`` over [centre, neighbour, edge], (N, M) neighbour tensors, LogSoftmax
for classification), and check that the imported model predicts the same.
"""

import numpy as np
import pytest
import torch
from ase.build import bulk
from torch import nn

from skcgcnn import CrystalGraphTransformer
from skcgcnn.cgcnn_checkpoint import cgcnn_state_to_skcgcnn, read_cgcnn_checkpoint
from skcgcnn.features import resolve_element_features
from skcgcnn.model import CGCNN


class _OriginalConv(nn.Module):
    def __init__(self, a, g):
        super().__init__()
        self.a = a
        self.fc_full = nn.Linear(2 * a + g, 2 * a)
        self.bn1 = nn.BatchNorm1d(2 * a)
        self.bn2 = nn.BatchNorm1d(a)

    def forward(self, atom, nbr_fea, nbr_idx):
        n, m = nbr_idx.shape
        z = torch.cat([atom.unsqueeze(1).expand(n, m, self.a), atom[nbr_idx], nbr_fea], dim=2)
        z = self.bn1(self.fc_full(z).view(-1, 2 * self.a)).view(n, m, 2 * self.a)
        gate, core = z.chunk(2, dim=2)
        summed = self.bn2((torch.sigmoid(gate) * nn.functional.softplus(core)).sum(1))
        return nn.functional.softplus(atom + summed)


class OriginalCGCNN(nn.Module):
    """The original's CrystalGraphConvNet, parameter names included."""

    def __init__(self, orig, g, a, n_conv, h, n_h, classification=False):
        super().__init__()
        self.classification = classification
        self.embedding = nn.Linear(orig, a)
        self.convs = nn.ModuleList(_OriginalConv(a, g) for _ in range(n_conv))
        self.conv_to_fc = nn.Linear(a, h)
        if n_h > 1:
            self.fcs = nn.ModuleList(nn.Linear(h, h) for _ in range(n_h - 1))
        self.fc_out = nn.Linear(h, 2 if classification else 1)

    def forward(self, atom_fea, nbr_fea, nbr_idx, crystal_atom_idx):
        sp = nn.functional.softplus
        x = self.embedding(atom_fea)
        for conv in self.convs:
            x = conv(x, nbr_fea, nbr_idx)
        x = torch.cat([x[idx].mean(0, keepdim=True) for idx in crystal_atom_idx])
        x = sp(self.conv_to_fc(sp(x)))
        for fc in getattr(self, "fcs", []):
            x = sp(fc(x))
        out = self.fc_out(x)
        return torch.log_softmax(out, 1) if self.classification else out


def original_inputs(graphs, table):
    """The original's (atom_fea, nbr_fea, nbr_idx, crystal_atom_idx) from skcgcnn graphs
    whose atoms all have 12 neighbours (the same edges in the same order)."""
    atom, nbr_fea, nbr_idx, crystals, base = [], [], [], [], 0
    centres = torch.arange(0.0, 8.0 + 0.1, 0.2)
    for g in graphs:
        assert g.n_edges == 12 * g.n_atoms
        atom.append(torch.as_tensor(table[g.numbers.astype(int)]))
        d = torch.as_tensor(g.distances).view(g.n_atoms, 12)
        nbr_fea.append(torch.exp(-((d[..., None] - centres) ** 2) / 0.2 ** 2))
        nbr_idx.append(torch.as_tensor(g.neighbors.astype(np.int64)).view(g.n_atoms, 12) + base)
        crystals.append(torch.arange(g.n_atoms) + base)
        base += g.n_atoms
    return torch.cat(atom), torch.cat(nbr_fea), torch.cat(nbr_idx), crystals


def make_original(classification=False, n_h=2, seed=0):
    torch.manual_seed(seed)
    net = OriginalCGCNN(92, 41, 8, 2, 6, n_h, classification)
    with torch.no_grad():  # batch-norm statistics and affine parameters other than defaults
        for m in net.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def write_checkpoint(net, path, task="regression", mean=-1.2, std=0.8, **extra):
    args = {"task": task, "atom_fea_len": 8, "n_conv": 2, "h_fea_len": 6,
            "n_h": 1 + len(getattr(net, "fcs", [])), "lr": 0.01, "data_options": ["root"]}
    ckpt = {"epoch": 12, "state_dict": net.state_dict(), "best_mae_error": 0.05,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.01}]},
            "normalizer": {"mean": mean, "std": std}, "args": args, **extra}
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    return path


@pytest.fixture(scope="module")
def crystals():
    atoms = [bulk("Cu", a=3.6), bulk("NaCl", "rocksalt", a=5.64), bulk("Si"),
             bulk("MgO", "rocksalt", a=4.2), bulk("Fe", a=2.87)]
    return atoms, CrystalGraphTransformer().transform(atoms)


def network_from(ckpt):
    module = CGCNN(**ckpt["architecture"], n_targets=ckpt["n_out"], element_features="cgcnn")
    state = module.state_dict()
    state.update(ckpt["state"])
    module.load_state_dict(state)
    return module.eval()


def test_file_is_legacy_format(tmp_path):
    import zipfile

    path = write_checkpoint(make_original(), tmp_path / "model_best.pth.tar")
    assert not zipfile.is_zipfile(path)


def test_read_maps_fc_full_and_predicts_as_the_original(tmp_path, crystals):
    from skcgcnn.data import collate_graphs

    net = make_original()
    path = write_checkpoint(net, tmp_path / "model_best.pth.tar")
    ckpt = read_cgcnn_checkpoint(path)
    assert ckpt["architecture"] == dict(atom_fea_len=8, n_conv=2, h_fea_len=6, n_h=2,
                                        radius=8.0)
    assert ckpt["task"] == "regression" and ckpt["n_out"] == 1
    assert (ckpt["target_mean"], ckpt["target_scale"]) == (-1.2, 0.8)
    assert ckpt["epoch"] == 12 and ckpt["orig_atom_fea_len"] == 92
    W = net.convs[1].fc_full.weight
    torch.testing.assert_close(ckpt["state"]["convs.1.fc_center.weight"], W[:, :8])
    torch.testing.assert_close(ckpt["state"]["convs.1.fc_neighbor.weight"], W[:, 8:16])
    torch.testing.assert_close(ckpt["state"]["convs.1.fc_bond.weight"], W[:, 16:])
    torch.testing.assert_close(ckpt["state"]["convs.1.fc_center.bias"], net.convs[1].fc_full.bias)

    _, graphs = crystals
    table = resolve_element_features("cgcnn")[0]
    X, _ = collate_graphs([(g, 0.0) for g in graphs])
    with torch.no_grad():
        expected = net(*original_inputs(graphs, table)).squeeze(1)
        got = network_from(ckpt)(**X)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_classification_checkpoint_with_numpy_scalars(tmp_path, crystals):
    """The published classifier pickles its AUC as a numpy float64: allowed, nothing else."""
    net = make_original(classification=True, n_h=1)
    path = write_checkpoint(net, tmp_path / "clf.pth.tar", task="classification", mean=0.0,
                            std=1.0, best_mae_error=np.float64(0.93))
    ckpt = read_cgcnn_checkpoint(path)
    assert ckpt["task"] == "classification" and ckpt["n_out"] == 2
    assert ckpt["best_mae_error"] == pytest.approx(0.93)


def test_checkpoint_with_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    path = write_checkpoint(make_original(), tmp_path / "evil.pth.tar", extra_note=Payload())
    with pytest.raises(ValueError, match="could run code"):
        read_cgcnn_checkpoint(path)


def test_other_radius_and_bad_files(tmp_path):
    path = write_checkpoint(make_original(), tmp_path / "m.pth.tar")
    with pytest.raises(ValueError, match="41 Gaussians.*radius=6.0 gives 31"):
        read_cgcnn_checkpoint(path, radius=6.0)
    truncated = tmp_path / "t.pth.tar"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        read_cgcnn_checkpoint(truncated)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_cgcnn_checkpoint(tmp_path / "missing.pth.tar")


def test_args_that_contradict_the_parameters_raise(tmp_path):
    net = make_original()
    path = tmp_path / "m.pth.tar"
    write_checkpoint(net, path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["args"]["n_conv"] = 3
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="n_conv=3, but its parameters have n_conv=2"):
        read_cgcnn_checkpoint(path)


def test_data_parallel_prefix_and_old_batch_norms():
    net = make_original()
    state = {f"module.{k}": v for k, v in net.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    new, shape = cgcnn_state_to_skcgcnn(state)
    assert "convs.0.bn1.num_batches_tracked" in new and not any(k.startswith("module.")
                                                                 for k in new)
    assert shape["n_conv"] == 2 and shape["n_h"] == 2 and shape["nbr_fea_len"] == 41


# ------------------------------------------------------------------------- import_cgcnn


def test_import_cgcnn_predicts_as_the_original_and_round_trips(tmp_path, crystals):
    from skcgcnn import TransferCGCNNRegressor
    from skcgcnn.pretrained import import_cgcnn, load_estimator, save_pretrained

    atoms, graphs = crystals
    net = make_original()
    path = write_checkpoint(net, tmp_path / "model_best.pth.tar", mean=-1.2, std=0.8)
    model = import_cgcnn(path, target="toy", units="eV/atom")
    table = resolve_element_features("cgcnn")[0]
    with torch.no_grad():
        expected = net(*original_inputs(graphs, table)).squeeze(1).double().numpy() * 0.8 - 1.2
    np.testing.assert_allclose(model.predict(atoms), expected, rtol=1e-5, atol=1e-5)
    card = model.card_
    assert card["name"] == "model_best" and card["units"] == "eV/atom"
    assert card["featurizer"]["element_features_name"] == "cgcnn"
    assert card["architecture"]["n_conv"] == 2 and card["imported_from"]["epoch"] == 12
    assert model.element_features == "cgcnn" and model.module_.embedding.in_features == 92

    saved = save_pretrained(model, tmp_path / "imported")
    assert saved["imported_from"]["sha256"] == card["imported_from"]["sha256"]
    again = load_estimator(tmp_path / "imported", conv_dtype="float32")
    np.testing.assert_array_equal(again.predict(graphs), model.predict(graphs))

    tl = TransferCGCNNRegressor(pretrained=tmp_path / "imported", max_epochs=2, batch_size=2,
                                conv_dtype="float32", random_state=0)
    tl.fit(graphs, np.arange(5.0))
    assert tl.module_.embedding.in_features == 92
    assert tl.module_.element_features_name == "cgcnn"
    torch.testing.assert_close(tl.module_.atom_features, torch.as_tensor(table.copy()))


def test_import_cgcnn_refuses_other_tables(tmp_path):
    from skcgcnn.pretrained import import_cgcnn

    path = write_checkpoint(make_original(), tmp_path / "m.pth.tar")
    with pytest.raises(ValueError, match="reads 92 element features per atom.*91 columns"):
        import_cgcnn(path, element_features="skcgcnn")


def test_import_cgcnn_classification(tmp_path, crystals):
    """A classifier where skcgcnn has one (its probabilities are the original's), else a
    clear NotImplementedError."""
    import importlib.util

    from skcgcnn.pretrained import import_cgcnn

    atoms, graphs = crystals
    net = make_original(classification=True, n_h=1)
    path = write_checkpoint(net, tmp_path / "c.pth.tar", task="classification", mean=0.0,
                            std=1.0, best_mae_error=np.float64(0.9))
    if importlib.util.find_spec("skcgcnn.classifiers") is None:
        with pytest.raises(NotImplementedError, match="classification checkpoint"):
            import_cgcnn(path)
        return
    model = import_cgcnn(path)
    assert list(model.classes_) == [0, 1] and model.card_["task"] == "classification"
    table = resolve_element_features("cgcnn")[0]
    with torch.no_grad():
        expected = net(*original_inputs(graphs, table)).exp().double().numpy()
    np.testing.assert_allclose(model.predict_proba(atoms), expected, rtol=1e-5, atol=1e-6)


def test_cli_import_cgcnn_writes_a_model_that_predicts(tmp_path, crystals, capsys):
    import json

    from ase.io import write

    from skcgcnn.cli import main
    from skcgcnn.pretrained import import_cgcnn

    atoms, _ = crystals
    path = write_checkpoint(make_original(), tmp_path / "model_best.pth.tar")
    out = tmp_path / "imported"
    assert main(["import-cgcnn", str(path), "-o", str(out), "--target", "toy", "--units",
                 "eV", "--licence", "CC-BY-4.0"]) == 0
    card = json.loads((tmp_path / "imported.json").read_text())
    assert (card["target"], card["units"], card["licence"]) == ("toy", "eV", "CC-BY-4.0")
    assert card["training_command"].startswith("skcgcnn import-cgcnn")
    with pytest.raises(SystemExit):  # refuses to replace without --force
        main(["import-cgcnn", str(path), "-o", str(out)])
    folder = tmp_path / "cifs"
    folder.mkdir()
    for i, a in enumerate(atoms):
        write(folder / f"c{i}.cif", a)
    capsys.readouterr()
    assert main(["predict", str(out), str(folder), "-o", str(tmp_path / "p.csv")]) == 0
    import pandas as pd

    frame = pd.read_csv(tmp_path / "p.csv")
    expected = import_cgcnn(path).predict([a for a in atoms])
    # predict's default precision may be bfloat16 on this CPU: compare loosely
    np.testing.assert_allclose(np.sort(frame["prediction"]), np.sort(expected), atol=0.05)
