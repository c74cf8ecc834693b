"""Tests of skcgcnn.model: the CGCNN network."""

import numpy as np
import pytest
import torch
from ase.build import bulk
from pymatgen.core import Lattice, Structure

from skcgcnn.data import collate_graphs
from skcgcnn.features import N_ATOM_FEATURES, element_feature_table
from skcgcnn.graph import build_graph
from skcgcnn.model import (CGCNN, GatedConv, _gated_messages, gaussian_expansion,
                           resolve_conv_dtype, uniform_neighbors)
from skcgcnn import model as model_module


def structures():
    skewed = Structure(Lattice.from_parameters(4.1, 5.3, 6.2, 78, 95, 104),
                       ["Li", "Fe", "O", "O"],
                       [[0, 0, 0], [0.31, 0.52, 0.13], [0.7, 0.2, 0.55], [0.1, 0.8, 0.4]])
    nacl = Structure(Lattice.cubic(5.64), ["Na"] * 4 + ["Cl"] * 4,
                     [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0],
                      [.5, .5, .5], [.5, 0, 0], [0, .5, 0], [0, 0, .5]])
    return [skewed, nacl, bulk("Cu", a=3.6), bulk("Si"), bulk("MgO", "rocksalt", a=4.2)]


def batch(graphs):
    X, _ = collate_graphs([(g, 0.0) for g in graphs])
    return X


def small_model(seed=0, **kw):
    torch.manual_seed(seed)
    return CGCNN(**{"atom_fea_len": 16, "n_conv": 2, "h_fea_len": 16, **kw})


def warm_up(model, graphs, steps=3):
    """A few training-mode passes so that batch-norm running statistics are not trivial."""
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(**batch(graphs))
    model.eval()
    return model


@pytest.fixture(scope="module")
def graphs():
    return [build_graph(s, radius=6.0) for s in structures()]


def test_output_shape_is_one_dimensional(graphs):
    model = small_model(radius=6.0)
    for train in (True, False):
        model.train(train)
        out = model(**batch(graphs))
        assert out.shape == (len(graphs),)
        assert out.dtype == torch.float32
        assert torch.isfinite(out).all()
    out = model.eval()(**batch(graphs[:1]))
    assert out.shape == (1,)


def test_crystal_features_shape(graphs):
    model = small_model(radius=6.0).eval()
    feats = model.crystal_features(**batch(graphs))
    assert feats.shape == (len(graphs), 16)


def test_default_architecture_and_buffers():
    model = CGCNN()
    assert model.embedding.in_features == N_ATOM_FEATURES
    assert model.embedding.out_features == 64
    assert len(model.convs) == 3
    assert model.conv_to_fc.out_features == 128 and len(model.fcs) == 0
    assert model.fc_out.out_features == 1
    centers = model.gaussian_centers
    assert len(centers) == 41  # 0 to 8 A every 0.2 A
    assert centers[0] == 0 and centers[-1] == pytest.approx(8.0)
    np.testing.assert_array_equal(model.atom_features.numpy(), element_feature_table())
    state = model.state_dict()
    for key in ("atom_features", "gaussian_centers", "target_mean", "target_scale"):
        assert key in state
    assert state["target_mean"].dtype == torch.float64
    assert len(CGCNN(n_h=3).fcs) == 2
    assert model.head_modules() == [model.conv_to_fc, model.fc_out]


def test_permutation_invariance_of_atom_order():
    s = structures()[0]
    order = [2, 0, 3, 1]
    permuted = Structure.from_sites([s[i] for i in order])
    g, gp = build_graph(s), build_graph(permuted)
    assert g.numbers.tolist() != gp.numbers.tolist()  # really another order
    model = warm_up(small_model(), [g, build_graph(bulk("Cu", a=3.6))])
    with torch.no_grad():
        a = model(**batch([g]))
        b = model(**batch([gp]))
        fa = model.crystal_features(**batch([g]))
        fb = model.crystal_features(**batch([gp]))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fa, fb, rtol=1e-5, atol=1e-5)


def test_batching_invariance_in_eval_mode(graphs):
    model = warm_up(small_model(radius=6.0), graphs)
    with torch.no_grad():
        together = model(**batch(graphs))
        separate = torch.cat([model(**batch([g])) for g in graphs])
        reversed_ = model(**batch(graphs[::-1])).flip(0)
    torch.testing.assert_close(together, separate, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(together, reversed_, rtol=1e-5, atol=1e-5)
    # and the crystals really get different predictions
    assert together.unique().numel() == len(graphs)


def test_training_mode_uses_batch_statistics(graphs):
    model = small_model(radius=6.0).train()
    before = model.convs[0].bn1.running_mean.clone()
    model(**batch(graphs))
    assert not torch.equal(before, model.convs[0].bn1.running_mean)


def test_single_atom_batch_trains():
    # one atom: the atom-level batch norm cannot use batch statistics of one row
    g = build_graph(bulk("Cu", a=3.6))
    model = small_model().train()
    bn2_before = model.convs[0].bn2.running_mean.clone()
    out = model(**batch([g]))
    assert out.shape == (1,) and torch.isfinite(out).all()
    out.sum().backward()
    assert model.embedding.weight.grad is not None
    torch.testing.assert_close(model.convs[0].bn2.running_mean, bn2_before)


def test_gradients_reach_every_parameter(graphs):
    model = small_model(radius=6.0).train()
    loss = torch.nn.functional.l1_loss(model(**batch(graphs)), torch.ones(len(graphs)))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert model.embedding.weight.grad.abs().sum() > 0


def test_gaussian_expansion_values():
    centers = torch.arange(0.0, 8.1, 0.2)
    d = torch.tensor([0.0, 1.0, 2.82, 8.0])
    g = gaussian_expansion(d, centers, 0.2)
    assert g.shape == (4, 41)
    expected = torch.exp(-((d[:, None] - centers[None, :]) / 0.2) ** 2)
    expected[expected < torch.exp(torch.tensor(-50.0))] = 0
    torch.testing.assert_close(g, expected)
    assert g[1, 5] == pytest.approx(1.0)  # d = 1.0 at centre 1.0
    assert g.max() <= 1.0


def test_gaussian_expansion_same_bits_as_the_unclamped_reference():
    # reference: the implementation before the exponent was clamped at 51
    def reference(distances, centers, width):
        x = ((distances[:, None] - centers[None, :]) / width) ** 2
        return torch.exp(-x).masked_fill_(x > 50.0, 0.0)

    centers = torch.arange(0.0, 8.1, 0.2)
    d = torch.cat([torch.linspace(0.0, 20.0, 4001), torch.rand(5000) * 8.0])
    assert torch.equal(gaussian_expansion(d, centers, 0.2), reference(d, centers, 0.2))
    assert torch.equal(gaussian_expansion(d, centers, 0.5), reference(d, centers, 0.5))


def test_gaussian_expansion_has_no_denormals():
    centers = torch.arange(0.0, 8.1, 0.2)
    d = torch.linspace(0.0, 20.0, 2001)
    g = gaussian_expansion(d, centers, 0.2)
    nonzero = g[g != 0]
    assert (nonzero >= 1e-30).all()
    assert (g >= 0).all()
    tiny = torch.finfo(torch.float32).tiny  # smallest normal float32
    assert ((g == 0) | (g >= tiny)).all()
    # far from every centre, exactly zero
    assert (gaussian_expansion(torch.tensor([30.0]), centers, 0.2) == 0).all()


def test_freeze_keeps_frozen_batch_norm_in_eval_mode(graphs):
    model = small_model(radius=6.0)
    frozen = [model.embedding, model.convs[0]]
    model.freeze(frozen)
    model.train()
    assert model.training
    assert not model.convs[0].training
    assert not model.convs[0].bn1.training and not model.convs[0].bn2.training
    assert model.convs[1].bn1.training and model.convs[1].training
    for p in [*model.embedding.parameters(), *model.convs[0].parameters()]:
        assert not p.requires_grad
    assert all(p.requires_grad for p in model.convs[1].parameters())
    # a training pass leaves the frozen running statistics untouched
    frozen_stats = model.convs[0].bn1.running_mean.clone()
    free_stats = model.convs[1].bn1.running_mean.clone()
    out = model(**batch(graphs))
    torch.testing.assert_close(model.convs[0].bn1.running_mean, frozen_stats)
    assert not torch.equal(model.convs[1].bn1.running_mean, free_stats)
    out.sum().backward()
    assert model.convs[0].fc_center.weight.grad is None
    assert model.convs[1].fc_center.weight.grad is not None
    # eval and back to train again: still frozen
    model.eval()
    model.train(True)
    assert not model.convs[0].bn1.training and model.convs[1].bn1.training


def test_freeze_returns_module_and_keeps_mode():
    model = small_model().eval()
    assert model.freeze([model.convs[0]]) is model
    assert not model.training


def test_gated_conv_isolated_atom_keeps_features():
    conv = GatedConv(4, 3).eval()
    atom_fea = torch.randn(2, 4)
    empty = torch.zeros(0, dtype=torch.int64)
    out = conv(atom_fea, torch.zeros(0, 3), empty, empty)
    # no messages: v <- softplus(v + BN(0)) with fresh BN (mean 0, var 1, no shift)
    torch.testing.assert_close(out, torch.nn.functional.softplus(atom_fea), rtol=1e-4, atol=1e-4)


def test_bfloat16_convolutions_match_float32_and_keep_float32_output(graphs):
    fp32 = warm_up(small_model(radius=6.0), graphs)
    bf16 = small_model(radius=6.0, conv_dtype="bfloat16")
    bf16.load_state_dict(fp32.state_dict())
    bf16.eval()
    with torch.no_grad():
        a, b = fp32(**batch(graphs)), bf16(**batch(graphs))
    assert b.dtype == torch.float32 and all(p.dtype == torch.float32 for p in bf16.parameters())
    # bfloat16 keeps 8 bits of mantissa: agreement to a few percent, not bit for bit
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=0.05, atol=0.05)
    assert not torch.equal(a, b)
    bf16.train()
    bf16(**batch(graphs)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in bf16.parameters())


def test_unknown_conv_dtype_raises():
    with pytest.raises(ValueError, match="conv_dtype must be one of .*'float16'"):
        CGCNN(conv_dtype="float16")


def test_uniform_neighbors_detects_full_shells_in_center_order():
    full = [build_graph(s) for s in structures()]  # 8 angstrom: 12 neighbours on every atom
    X = batch(full)
    assert uniform_neighbors(X["centers"], len(X["numbers"])) == 12
    # an atom alone in a large box has fewer neighbours than 12: the general path
    lonely = build_graph(Structure(Lattice.cubic(15.0), ["Na", "Cl"], [[0, 0, 0], [0.1, 0, 0]]))
    X = batch(full + [lonely])
    assert uniform_neighbors(X["centers"], len(X["numbers"])) is None
    # 12 edges per atom, but not in the order of their centers
    X = batch(full)
    assert uniform_neighbors(X["centers"].flip(0), len(X["numbers"])) is None
    assert uniform_neighbors(torch.zeros(0, dtype=torch.int64), 0) is None


def test_gated_conv_dense_path_matches_general_path():
    X = batch([build_graph(s) for s in structures()])
    torch.manual_seed(0)
    conv = GatedConv(8, 41)
    atom_fea = torch.randn(len(X["numbers"]), 8)
    bond_fea = gaussian_expansion(X["distances"], torch.arange(0.0, 8.1, 0.2), 0.2)
    outs, grads = [], []
    for n_nbr in (None, 12):
        conv.zero_grad()
        out = conv(atom_fea, bond_fea, X["centers"], X["neighbors"], n_nbr)
        out.pow(2).sum().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in conv.parameters()])
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    for a, b in zip(grads[1], grads[0]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n_nbr", [None, 12])
def test_gated_messages_gradient_is_exact(n_nbr):
    torch.manual_seed(0)
    z = torch.randn(5 * 12, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: _gated_messages(z, n_nbr), (z,))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n_nbr", [None, 12])
def test_gated_messages_match_autograd_of_the_plain_expression(n_nbr, dtype):
    # the lean backward against autograd's, and the no-grad path (prediction)
    torch.manual_seed(0)
    z = (3 * torch.randn(40 * 12, 16)).to(dtype)
    weights = torch.randn(40 if n_nbr else 40 * 12, 8).to(dtype)
    outs, grads = [], []
    for fn in (_gated_messages, None):
        x = z.clone().requires_grad_()
        if fn is None:
            gate, core = x.chunk(2, dim=1)
            out = torch.sigmoid(gate) * torch.nn.functional.softplus(core)
            out = out if n_nbr is None else out.view(-1, n_nbr, 8).sum(1)
        else:
            out = fn(x, n_nbr)
        (out * weights).sum().backward()
        outs.append(out.detach())
        grads.append(x.grad)
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    assert outs[0].dtype == grads[0].dtype == dtype
    torch.testing.assert_close(outs[0], outs[1], **tol)
    torch.testing.assert_close(grads[0], grads[1], **tol)
    with torch.no_grad():
        assert torch.equal(_gated_messages(z, n_nbr), outs[1])


def test_resolve_conv_dtype(monkeypatch):
    assert resolve_conv_dtype("float32") == "float32"
    assert resolve_conv_dtype("bfloat16", "cuda") == "bfloat16"
    for native, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(model_module, "_cpu_has_native_bfloat16", lambda: native)
        assert resolve_conv_dtype("auto") == expected
        assert resolve_conv_dtype("auto", "cuda:0") == "float32"  # not measured on GPUs
    with pytest.raises(ValueError, match="conv_dtype must be 'auto' or one of .*'half'"):
        resolve_conv_dtype("half")


@pytest.mark.parametrize("cpuinfo, expected", [
    ("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n", True),  # Cooper Lake on
    ("flags\t\t: fpu avx2 amx_tile amx_bf16\n", True),  # Sapphire Rapids AMX
    ("flags\t\t: fpu sse avx2 avx512f avx512bw\n", False),  # AVX-512 without BF16
    ("flags\t\t: fpu avx2 avx512_bf16x\n", False),  # a flag that only contains the name
    ("Features\t: fp asimd sve bf16 i8mm\n", True),  # Arm with BF16
    ("Features\t: fp asimd evtstrm\n", False),
    ("model name\t: a CPU without a flags line\n", False),
])
def test_cpu_bfloat16_detection_on_given_flags(tmp_path, cpuinfo, expected):
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    assert model_module._cpu_has_native_bfloat16(str(path)) is expected
    assert model_module._cpu_has_native_bfloat16(str(tmp_path / "missing")) is False


def test_estimator_auto_precision_is_the_resolved_one():
    from skcgcnn import CGCNNRegressor

    X = [build_graph(s) for s in structures()]
    for conv_dtype in ("auto", "float32"):
        est = CGCNNRegressor(atom_fea_len=8, n_conv=1, h_fea_len=8, max_epochs=1,
                             validation_fraction=None, conv_dtype=conv_dtype).fit(X, np.arange(5.0))
        assert est.module_.conv_dtype == resolve_conv_dtype(conv_dtype)
    with pytest.raises(ValueError, match="conv_dtype must be 'auto'"):
        CGCNNRegressor(conv_dtype="float16", max_epochs=1).fit(X, np.arange(5.0))


# ---------------------------------------------------------------- element tables, site pooling

@pytest.mark.parametrize("spec, width, name", [(None, N_ATOM_FEATURES, "skcgcnn"),
                                               ("cgcnn", 92, "cgcnn")])
def test_element_features_set_table_and_embedding_width(spec, width, name):
    model = CGCNN(element_features=spec)
    assert model.atom_features.shape == (101, width)
    assert model.embedding.in_features == width
    assert model.element_features_name == name


def test_element_features_array_is_the_buffer_and_changes_predictions(graphs):
    rng = np.random.default_rng(0)
    table = rng.random((101, 7))
    model = small_model(element_features=table).eval()
    assert model.element_features_name == "array"
    np.testing.assert_allclose(model.atom_features[1:].numpy(), table[1:], rtol=1e-6)
    assert (model.atom_features[0] == 0).all()  # row 0 is no element
    other = small_model(element_features=table[:, ::-1].copy()).eval()
    with torch.no_grad():
        assert not torch.allclose(model(**batch(graphs)), other(**batch(graphs)))


def test_site_pooling_is_the_mean_of_site_outputs(graphs):
    model = warm_up(small_model(pooling="site", n_h=2), graphs).eval()
    X = batch(graphs)
    with torch.no_grad():
        pred = model(**X)
        sites = model.site_outputs(**X)
    assert sites.shape == (len(X["numbers"]),)
    means = torch.stack([sites[X["crystal"] == i].mean() for i in range(len(graphs))])
    torch.testing.assert_close(pred, means, rtol=1e-5, atol=1e-6)
    # mean pooling is another network: the head sees the averaged atom vector
    mean_model = warm_up(small_model(pooling="mean", n_h=2), graphs).eval()
    mean_model.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(mean_model(**X), pred)
        with pytest.raises(ValueError, match="pooling='site'"):
            mean_model.site_outputs(**X)


def test_site_pooling_several_targets_and_hidden_layer(graphs):
    from skcgcnn.embedding import crystal_embeddings

    model = small_model(pooling="site", n_targets=2).eval()
    X = batch(graphs)
    with torch.no_grad():
        sites = model.site_outputs(**X)
        pred = model(**X)
        pooled, hidden = model.crystal_hidden(**X)
    assert sites.shape == (len(X["numbers"]), 2) and pred.shape == (len(graphs), 2)
    torch.testing.assert_close(model.fc_out(hidden), pred, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(crystal_embeddings(model, graphs, "hidden"), hidden.numpy(),
                               rtol=1e-5, atol=1e-6)


def test_bad_pooling_raises():
    with pytest.raises(ValueError, match="pooling must be one of"):
        CGCNN(pooling="max")
