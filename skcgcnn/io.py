"""Safe, atomic reading and writing of model files."""

from __future__ import annotations

import io
import json
import os
import pickle
import tempfile
import zipfile

import torch

__all__ = ["atomic_write_bytes", "save_state_dict", "load_state_dict", "save_json"]


def _file_mode():
    """The mode ``open(path, "w")`` gives a new file: 0666 less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path, data: bytes):
    """Write ``data`` to ``path`` through a temporary file and a rename.

    An interrupted write leaves the old file (or none), never half a file.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())  # mkstemp makes 0600; a plain open() would honour the umask
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_state_dict(state_dict, path):
    """Save a state dict atomically with ``torch.save``."""
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    atomic_write_bytes(path, buf.getvalue())


def save_json(obj, path):
    """Save a JSON document atomically (indented, keys sorted)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def load_state_dict(path):
    """Load a state dict with ``torch.load(weights_only=True)``: no code in the file runs.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is corrupt, truncated, carries anything but tensors
        (for example a pickled payload), or is not a state dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file does not exist: {path!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"refused to load {path!r}: it holds objects other than tensors, "
                         f"and loading them could run code ({exc})") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise ValueError(f"model file {path!r} is corrupt or truncated: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"model file {path!r} is not a state dict of tensors")
    return state
