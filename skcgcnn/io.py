"""Safe, atomic reading and writing of model files."""

from __future__ import annotations

import io
import json
import os
import pickle
import re
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


#: How a file written by ``torch.save`` begins: a zip archive (torch >= 1.6), or the
#: pickled magic number of the legacy format.
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)


def _not_a_model(path, head):
    """The ValueError for a file that is no torch file at all, showing how it begins."""
    line = head.split(b"\n")[0].rstrip(b"\r")[:40]
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    shown = f"it begins {text!r}" if text and text.isprintable() else "it is binary"
    return ValueError(f"{path!r} is not a skcgcnn model file: a model file is a torch state "
                      f"dict written by save_pretrained or 'skcgcnn train' (.pt, with its .json "
                      f"card beside it), and {shown}")


def _unsafe_reason(exc):
    """What torch's weights-only unpickler refused, without its advice to load unsafely."""
    found = re.search(r"(?:Unsupported global: |unsupported )GLOBAL ([\w.]+)", str(exc))
    if found:
        return f"a pickled {found.group(1)}"
    found = re.search(r"WeightsUnpickler error: ([^\n]*)", str(exc))
    return found.group(1).rstrip(". ") if found else "a pickled object"


def load_state_dict(path):
    """Load a state dict with ``torch.load(weights_only=True)``: no code in the file runs.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a torch file at all ("is not a skcgcnn model
        file": a CSV, a text file, a pickle of something else), is corrupt or
        truncated, carries anything but tensors (for example a pickled
        payload, which is never loaded), or is not a state dict.

    Examples
    --------
    >>> import os, tempfile
    >>> from skcgcnn.io import load_state_dict
    >>> path = os.path.join(tempfile.mkdtemp(), "table.pt")
    >>> with open(path, "w") as f:
    ...     _ = f.write("id,value\\nmp-1,2.5\\n")
    >>> load_state_dict(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: '...table.pt' is not a skcgcnn model file: ... and it begins 'id,value'
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file does not exist: {path!r}")
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise ValueError(f"model file {path!r} is corrupt or truncated: it is empty")
    if head.startswith(_ZIP_MAGIC):
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if not any(n.endswith("data.pkl") for n in archive.namelist()):
                    raise ValueError(f"{path!r} is not a skcgcnn model file: a zip archive "
                                     "that torch.save did not write")
    elif not head.startswith(_LEGACY_MAGIC):
        raise _not_a_model(path, head)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"refused to load {path!r}: it holds {_unsafe_reason(exc)}, not only "
                         "tensors, and loading it could run code; skcgcnn loads state dicts "
                         "of tensors only") from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise ValueError(f"model file {path!r} is corrupt or truncated: {exc}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"model file {path!r} is not a state dict of tensors")
    return state
