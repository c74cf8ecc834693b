"""The CGCNN network (Xie & Grossman 2018; Lee & Asahi 2021, eqs. 3 to 5) in torch."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .features import resolve_element_features

__all__ = ["CGCNN", "GatedConv", "gaussian_expansion", "uniform_neighbors",
           "resolve_conv_dtype", "CONV_DTYPES", "POOLINGS"]

#: ``pooling`` values of :class:`CGCNN`: average the atom vectors, then the head
#: (eq. 4); or the head on every atom, then average its outputs (site contributions).
POOLINGS = ("mean", "site")

#: ``conv_dtype`` values of :class:`CGCNN` and the autocast dtype of each.
CONV_DTYPES = {"float32": None, "bfloat16": torch.bfloat16}


@functools.lru_cache(maxsize=None)
def _cpu_has_native_bfloat16(cpuinfo="/proc/cpuinfo"):
    """Whether the CPU has bfloat16 instructions (x86 AVX512-BF16 or AMX, Arm BF16).

    Read from the first ``flags`` (x86) or ``Features`` (Arm) line of ``cpuinfo``;
    False when the file cannot be read.
    """
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    except OSError:
        pass
    return False


def resolve_conv_dtype(conv_dtype, device="cpu"):
    """The precision ``conv_dtype`` stands for on ``device``.

    ``"auto"`` is ``"bfloat16"`` on a CPU with bfloat16 instructions
    (x86 AVX512-BF16 or AMX, Arm BF16; read from ``/proc/cpuinfo``), where it
    trains about twice as fast at the same accuracy (docs/performance.md), and
    ``"float32"`` elsewhere, GPUs included (not measured there).

    Parameters
    ----------
    conv_dtype : {"auto", "float32", "bfloat16"}
    device : str, torch.device or None, default="cpu"
        None (skorch's "leave the tensors where they are") counts as the CPU.

    Returns
    -------
    conv_dtype : {"float32", "bfloat16"}

    Examples
    --------
    >>> from skcgcnn.model import resolve_conv_dtype
    >>> resolve_conv_dtype("float32"), resolve_conv_dtype("auto", "cuda")
    ('float32', 'float32')
    """
    if conv_dtype == "auto":
        native = torch.device(device or "cpu").type == "cpu" and _cpu_has_native_bfloat16()
        return "bfloat16" if native else "float32"
    if conv_dtype not in CONV_DTYPES:
        raise ValueError(f"conv_dtype must be 'auto' or one of {tuple(CONV_DTYPES)}, "
                         f"got {conv_dtype!r}")
    return conv_dtype


def gaussian_expansion(distances, centers, width):
    """exp(-(d - μ_k)² / σ²) for every edge length d and centre μ_k (angstrom).

    Terms below exp(-50) are set to exactly zero: left as denormal floats they
    make the CPU matrix products tens of times slower. The exponent is clamped
    at 51 before ``exp`` (those terms are zeroed anyway): ``exp`` of arguments
    down to -1,600 that underflow is 3.5 times slower on CPU than of ones that
    do not, for the same result bit for bit.
    """
    x = ((distances[:, None] - centers[None, :]) / width) ** 2
    return torch.exp(-x.clamp(max=51.0)).masked_fill_(x > 50.0, 0.0)


def _batch_norm(bn, x):
    # a training batch of one row cannot be normalised by its own statistics
    if bn.training and x.shape[0] < 2:
        return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    return bn(x)


class _GatedMessages(torch.autograd.Function):
    """σ(gate) ∘ softplus(core) of the normalised z = gate ⊕ core, summed over each
    atom's ``n_nbr`` edges when given (else per edge), with a lean backward.

    The forward keeps the two derivatives, σ'(gate)·softplus(core) and
    σ(gate)·σ(core), instead of z, σ(gate) and softplus(core), and the
    backward writes both halves of z's gradient into one tensor: no ``cat`` of
    the halves, and no copy of the summed gradient broadcast over the edges
    (4 % of a float32 training step; the tests compare it with autograd's
    gradient of the plain expression).
    """

    @staticmethod
    def forward(ctx, z, n_nbr):
        gate, core = z.chunk(2, dim=1)
        s = torch.sigmoid(gate)
        softplus = F.softplus(core)
        messages = s * softplus
        # d/dgate = s (1 - s) softplus, with 1 - s exact (bfloat16 too); d/dcore = s σ(core)
        ctx.save_for_backward(torch.rsub(s, 1).mul_(messages), torch.sigmoid(core).mul_(s))
        ctx.n_nbr = n_nbr
        return messages if n_nbr is None else messages.view(-1, n_nbr, messages.shape[1]).sum(1)

    @staticmethod
    def backward(ctx, grad):
        d_gate, d_core = ctx.saved_tensors
        n_edges, h = d_gate.shape
        grad_z = d_gate.new_empty(n_edges, 2 * h)
        if ctx.n_nbr is None:
            torch.mul(d_gate, grad, out=grad_z[:, :h])
            torch.mul(d_core, grad, out=grad_z[:, h:])
        else:  # the summed gradient, broadcast over each atom's edges
            view = grad_z.view(-1, ctx.n_nbr, 2 * h)
            grad = grad[:, None, :]
            torch.mul(d_gate.view(-1, ctx.n_nbr, h), grad, out=view[..., :h])
            torch.mul(d_core.view(-1, ctx.n_nbr, h), grad, out=view[..., h:])
        return grad_z, None


def _gated_messages(z, n_nbr=None):
    """σ(z_gate) ∘ softplus(z_core) for the edges' normalised z = z_gate ⊕ z_core,
    summed over each atom's ``n_nbr`` edges when given (else one row per edge)."""
    if torch.is_grad_enabled() and z.requires_grad:
        return _GatedMessages.apply(z, n_nbr)
    gate, core = z.chunk(2, dim=1)
    messages = torch.sigmoid(gate) * F.softplus(core)
    return messages if n_nbr is None else messages.view(-1, n_nbr, messages.shape[1]).sum(1)


class GatedConv(nn.Module):
    """Gated graph convolution (eq. 3), with batch norm as in CGCNN.

    z_ij = v_i ⊕ v_j ⊕ u_ij; v_i ← g(v_i + BN(Σ_j σ(z_ij W_c + b_c) ∘ g(z_ij W_s + b_s)))
    with g = softplus. The linear map of z is split into its three parts, so
    the per-atom products are computed once per atom and gathered per edge.
    """

    def __init__(self, atom_fea_len, nbr_fea_len):
        super().__init__()
        self.atom_fea_len = atom_fea_len
        self.fc_center = nn.Linear(atom_fea_len, 2 * atom_fea_len)
        self.fc_neighbor = nn.Linear(atom_fea_len, 2 * atom_fea_len, bias=False)
        self.fc_bond = nn.Linear(nbr_fea_len, 2 * atom_fea_len, bias=False)
        self.bn1 = nn.BatchNorm1d(2 * atom_fea_len)
        self.bn2 = nn.BatchNorm1d(atom_fea_len)

    def forward(self, atom_fea, bond_fea, centers, neighbors, n_nbr=None):
        """New atom vectors. ``n_nbr`` (from :func:`uniform_neighbors`): every
        atom has exactly this many edges, in the order of their centers, so the
        messages are summed over a view instead of scattered."""
        # index_select, not [], for the gathers: its backward is a fast index_add;
        # the bond term is added inside the matrix product (addmm)
        z = torch.addmm(self.fc_neighbor(atom_fea).index_select(0, neighbors),
                        bond_fea, self.fc_bond.weight.t())
        z = z + self.fc_center(atom_fea).index_select(0, centers)
        summed = _gated_messages(_batch_norm(self.bn1, z), n_nbr)
        if n_nbr is None:
            summed = torch.zeros_like(atom_fea).index_add_(0, centers, summed)
        return F.softplus(atom_fea + _batch_norm(self.bn2, summed))


def uniform_neighbors(centers, n_atoms):
    """The number of edges per atom when every atom has the same number, else None.

    The edges must also come in the order of their centers (atom 0's first),
    as :class:`~skcgcnn.graph.CrystalGraph` and
    :func:`~skcgcnn.data.collate_graphs` store them. Then the convolutions sum
    messages over an ``(n_atoms, n_nbr, features)`` view (faster than a
    scatter); every crystal of the Materials Project files has 12 neighbours
    on every atom within 8 Å.

    Parameters
    ----------
    centers : torch.Tensor of shape (n_edges,), int64
        Center atom of each edge, as in a collated batch.
    n_atoms : int
        Number of atoms in the batch.

    Returns
    -------
    n_nbr : int or None

    Examples
    --------
    >>> from ase.build import bulk
    >>> from skcgcnn import CrystalGraphTransformer
    >>> from skcgcnn.data import collate_graphs
    >>> from skcgcnn.model import uniform_neighbors
    >>> X, _ = collate_graphs([(g, 0.0) for g in CrystalGraphTransformer().transform(
    ...     [bulk("Cu"), bulk("NaCl", "rocksalt", a=5.6)])])
    >>> uniform_neighbors(X["centers"], len(X["numbers"]))
    12
    """
    n_edges = len(centers)
    if n_atoms == 0 or n_edges == 0 or n_edges % n_atoms:
        return None
    n_nbr = n_edges // n_atoms
    expected = torch.arange(n_atoms, device=centers.device).repeat_interleave(n_nbr)
    return n_nbr if torch.equal(centers, expected) else None


class CGCNN(nn.Module):
    """Crystal graph convolutional network: embedding, convolutions, pooling, head.

    Parameters
    ----------
    atom_fea_len : int, default=64
        Length of the atom vectors after the embedding layer.
    n_conv : int, default=3
        Number of gated convolution layers.
    h_fea_len : int, default=128
        Length of the hidden fully connected layers.
    n_h : int, default=1
        Number of hidden fully connected layers.
    radius : float, default=8.0
        Largest Gaussian centre in angstrom (the graph's cutoff).
    gaussian_step : float, default=0.2
        Spacing and width of the Gaussian centres in angstrom.
    conv_dtype : {"float32", "bfloat16"}, default="float32"
        Precision of the embedding and convolutions. ``"bfloat16"`` runs them
        under ``torch.autocast`` (parameters stay float32); pooling and the
        head always run in float32, so predictions keep float32 resolution.
    n_targets : int, default=1
        Outputs of the head: 1 gives predictions of shape (n_crystals,),
        more give (n_crystals, n_targets) (a multi-property model); the
        buffers ``target_mean`` and ``target_scale`` then have one entry per
        target.
    element_features : None, "skcgcnn", "cgcnn", path or array-like, default=None
        The element table the embedding reads
        (:func:`~skcgcnn.features.resolve_element_features`): skcgcnn's own
        (91 columns), the original CGCNN's ``atom_init.json`` (92 columns),
        the path of an ``atom_init.json``, or an array with rows by atomic
        number. It becomes the ``atom_features`` buffer; the embedding's
        input width is its number of columns.
    pooling : {"mean", "site"}, default="mean"
        ``"mean"``: average the atom vectors after the last convolution,
        then apply the head (eq. 4 and 5). ``"site"``: apply the head to every
        atom's vector and average the per-atom outputs, Xie & Grossman's
        site-contribution model; :meth:`site_outputs` returns the per-atom
        outputs, whose mean per crystal is the prediction.

    Attributes
    ----------
    hparams : dict
        The constructor's architecture arguments (``gaussian_step`` and
        ``element_features`` aside: the table is the ``atom_features``
        buffer).
    element_features_name : str
        ``"skcgcnn"``, ``"cgcnn"``, the path given, or ``"array"``.

    Notes
    -----
    The buffers ``atom_features`` (the element table), ``gaussian_centers``,
    ``target_mean`` and ``target_scale`` travel in the state dict, so a saved
    model carries the featurization it was trained with and its target
    normalisation statistics.
    """

    def __init__(self, atom_fea_len=64, n_conv=3, h_fea_len=128, n_h=1,
                 radius=8.0, gaussian_step=0.2, conv_dtype="float32", n_targets=1,
                 element_features=None, pooling="mean"):
        super().__init__()
        if conv_dtype not in CONV_DTYPES:
            raise ValueError(f"conv_dtype must be one of {tuple(CONV_DTYPES)}, got {conv_dtype!r}")
        self.conv_dtype = conv_dtype
        if int(n_targets) < 1:
            raise ValueError(f"n_targets must be at least 1, got {n_targets!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.hparams = dict(atom_fea_len=atom_fea_len, n_conv=n_conv, h_fea_len=h_fea_len,
                            n_h=n_h, radius=radius, n_targets=int(n_targets), pooling=pooling)
        table, self.element_features_name = resolve_element_features(element_features)
        self.register_buffer("atom_features", torch.from_numpy(table.copy()))
        centers = torch.arange(0.0, radius + gaussian_step / 2, gaussian_step)
        self.register_buffer("gaussian_centers", centers)
        stats_shape = () if n_targets == 1 else (int(n_targets),)
        self.register_buffer("target_mean", torch.zeros(stats_shape, dtype=torch.float64))
        self.register_buffer("target_scale", torch.ones(stats_shape, dtype=torch.float64))
        self.gaussian_step = gaussian_step
        self.embedding = nn.Linear(table.shape[1], atom_fea_len)
        self.convs = nn.ModuleList(GatedConv(atom_fea_len, len(centers)) for _ in range(n_conv))
        self.conv_to_fc = nn.Linear(atom_fea_len, h_fea_len)
        self.fcs = nn.ModuleList(nn.Linear(h_fea_len, h_fea_len) for _ in range(n_h - 1))
        self.fc_out = nn.Linear(h_fea_len, int(n_targets))
        self.frozen = []

    def head_modules(self):
        """The fully connected layers after pooling (replaced by a new head)."""
        return [self.conv_to_fc, *self.fcs, self.fc_out]

    def freeze(self, modules):
        """Stop gradients into ``modules`` and keep their batch norms in eval mode."""
        self.frozen = list(modules)
        for m in self.frozen:
            m.requires_grad_(False)
        return self.train(self.training)

    def train(self, mode=True):
        super().train(mode)
        for m in self.frozen:
            m.eval()  # frozen batch-norm statistics must not drift
        return self

    def atom_vectors(self, numbers, centers, neighbors, distances):
        """Atom vectors after the last convolution, shape (n_atoms, atom_fea_len), float32."""
        dtype = CONV_DTYPES[self.conv_dtype]
        with torch.autocast(numbers.device.type, dtype=dtype, enabled=dtype is not None):
            atom_fea = self.embedding(self.atom_features).index_select(0, numbers)
            bond_fea = gaussian_expansion(distances, self.gaussian_centers, self.gaussian_step)
            n_nbr = uniform_neighbors(centers, len(numbers))
            for conv in self.convs:
                atom_fea = conv(atom_fea, bond_fea, centers, neighbors, n_nbr)
        return atom_fea.float()

    @staticmethod
    def _mean_per_crystal(x, crystal, n_atoms):
        pooled = x.new_zeros(len(n_atoms), *x.shape[1:]).index_add_(0, crystal, x)
        return pooled / n_atoms.clamp(min=1).to(pooled.dtype).view(-1, *[1] * (x.dim() - 1))

    def crystal_features(self, numbers, centers, neighbors, distances, crystal, n_atoms):
        """Pooled crystal vectors (eq. 4), shape (n_crystals, atom_fea_len)."""
        atom_fea = self.atom_vectors(numbers, centers, neighbors, distances)
        return self._mean_per_crystal(atom_fea, crystal, n_atoms)

    def hidden(self, x):
        """The head's hidden layers, after their softplus, on vectors ``x``."""
        h = F.softplus(self.conv_to_fc(F.softplus(x)))
        for fc in self.fcs:
            h = F.softplus(fc(h))
        return h

    def crystal_hidden(self, numbers, centers, neighbors, distances, crystal, n_atoms):
        """Pooled crystal vectors and the head's last hidden layer per crystal.

        With ``pooling="site"`` the hidden layer is the mean of the atoms'
        hidden vectors, the input of the (linear) output layer's average.

        Returns
        -------
        pooled : torch.Tensor of shape (n_crystals, atom_fea_len)
        hidden : torch.Tensor of shape (n_crystals, h_fea_len)
        """
        atom_fea = self.atom_vectors(numbers, centers, neighbors, distances)
        pooled = self._mean_per_crystal(atom_fea, crystal, n_atoms)
        if self.hparams.get("pooling", "mean") == "site":
            return pooled, self._mean_per_crystal(self.hidden(atom_fea), crystal, n_atoms)
        return pooled, self.hidden(pooled)

    def _out(self, out):
        return out.squeeze(-1) if self.hparams["n_targets"] == 1 else out

    def site_outputs(self, numbers, centers, neighbors, distances, crystal=None, n_atoms=None):
        """Normalised per-atom outputs of a ``pooling="site"`` network.

        Their mean over each crystal's atoms is :meth:`forward`'s prediction.

        Returns
        -------
        outputs : torch.Tensor of shape (n_atoms,) or (n_atoms, n_targets)

        Raises
        ------
        ValueError
            The network pools atom vectors (``pooling="mean"``): its head never
            sees single atoms, so it has no per-atom outputs.
        """
        pooling = self.hparams.get("pooling", "mean")
        if pooling != "site":
            raise ValueError("per-site outputs need a network built with pooling='site'; this "
                             f"one has pooling={pooling!r}, whose head sees only the averaged "
                             "atom vectors")
        atom_fea = self.atom_vectors(numbers, centers, neighbors, distances)
        return self._out(self.fc_out(self.hidden(atom_fea)))

    def forward(self, numbers, centers, neighbors, distances, crystal, n_atoms):
        """Normalised predictions, shape (n_crystals,) or (n_crystals, n_targets)."""
        atom_fea = self.atom_vectors(numbers, centers, neighbors, distances)
        if self.hparams.get("pooling", "mean") == "site":
            out = self._mean_per_crystal(self.fc_out(self.hidden(atom_fea)), crystal, n_atoms)
        else:
            out = self.fc_out(self.hidden(self._mean_per_crystal(atom_fea, crystal, n_atoms)))
        return self._out(out)
