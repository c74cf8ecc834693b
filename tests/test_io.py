"""Tests of skcgcnn.io (safe, atomic model files) and skcgcnn.callbacks."""

import json
import os
import shlex

import numpy as np
import pytest
import torch
from skorch import NeuralNetRegressor
from skorch.callbacks import Callback

import skcgcnn.io as io_module
from skcgcnn import CGCNNRegressor
from skcgcnn.callbacks import (ONEDNN_CACHE_VARIABLES, AtomicCheckpoint, ReleaseMemory,
                               _malloc_trim, _rss_mib, limit_onednn_caches)
from skcgcnn.io import atomic_write_bytes, load_state_dict, save_json, save_state_dict


def state():
    torch.manual_seed(0)
    return {"w": torch.randn(3, 4), "b": torch.arange(4.0), "n": torch.tensor(7),
            "mean": torch.tensor(1.25, dtype=torch.float64)}


class Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


# -------------------------------------------------------------- state dicts
def test_save_load_round_trip(tmp_path):
    sd = state()
    path = tmp_path / "sub" / "model.pt"  # missing folders are created
    save_state_dict(sd, path)
    loaded = load_state_dict(path)
    assert set(loaded) == set(sd)
    for k in sd:
        assert loaded[k].dtype == sd[k].dtype
        torch.testing.assert_close(loaded[k], sd[k])
    assert os.listdir(tmp_path / "sub") == ["model.pt"]


def test_round_trip_of_a_module_state_dict(tmp_path):
    module = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    save_state_dict(module.state_dict(), str(tmp_path / "m.pt"))
    other = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    other.load_state_dict(load_state_dict(tmp_path / "m.pt"))
    for a, b in zip(module.state_dict().values(), other.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        load_state_dict(tmp_path / "absent.pt")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.0])
def test_truncated_file_raises(tmp_path, keep):
    path = tmp_path / "model.pt"
    save_state_dict(state(), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_state_dict(path)


def test_garbage_file_raises(tmp_path):
    # random bytes read as a legacy (non-zip) pickle: refused either as corrupt
    # or as holding non-tensor objects; a ValueError naming the file either way
    path = tmp_path / "model.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="model.pt"):
        load_state_dict(path)


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "payload": Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(ValueError, match="refused"):
        load_state_dict(path)
    assert not marker.exists()
    # the payload is real: an unsafe load would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_top_level_pickle_payload_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save(Payload(marker), path)
    with pytest.raises(ValueError, match="evil.pt"):
        load_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("obj", [[torch.zeros(2)], {"a": 1.0, "b": torch.zeros(1)},
                                 torch.zeros(3), {"nested": {"w": torch.zeros(1)}}])
def test_non_state_dict_is_refused(tmp_path, obj):
    path = tmp_path / "odd.pt"
    torch.save(obj, path)
    with pytest.raises(ValueError, match="not a state dict"):
        load_state_dict(path)


# ------------------------------------------------------------- atomic writes
def test_atomic_write_leaves_no_temp_files(tmp_path):
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_atomic_write_gives_the_mode_of_a_plain_write(tmp_path):
    atomic_write_bytes(tmp_path / "atomic.bin", b"x")
    (tmp_path / "plain.bin").write_bytes(b"x")
    mode = (tmp_path / "plain.bin").stat().st_mode & 0o777
    assert (tmp_path / "atomic.bin").stat().st_mode & 0o777 == mode


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"old contents")

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(io_module.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"new contents that never land")
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_atomic_write_interrupted_keeps_old_file(tmp_path, monkeypatch):
    # an interrupt (BaseException) between writing and renaming
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"old")

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(io_module.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file.bin"]


def test_atomic_write_of_wrong_type_keeps_old_file_and_no_new_one(tmp_path):
    path = tmp_path / "file.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")
    assert path.read_bytes() == b"old"
    with pytest.raises(TypeError):
        atomic_write_bytes(tmp_path / "new.bin", 12)
    assert os.listdir(tmp_path) == ["file.bin"]


def test_save_json(tmp_path):
    path = tmp_path / "card.json"
    save_json({"b": 1, "a": [1.5, None]}, path)
    text = path.read_text()
    assert json.loads(text) == {"a": [1.5, None], "b": 1}
    assert text.index('"a"') < text.index('"b"') and text.endswith("\n")


# ------------------------------------------------------------ AtomicCheckpoint
def _net(dirname, max_epochs):
    torch.manual_seed(0)
    return NeuralNetRegressor(
        torch.nn.Linear, module__in_features=3, module__out_features=1,
        optimizer=torch.optim.SGD, optimizer__momentum=0.9, lr=0.01,
        max_epochs=max_epochs, train_split=None, batch_size=8,
        callbacks=[("ckpt", AtomicCheckpoint(dirname))], verbose=0)


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 3)).astype(np.float32)
    return X, (X @ np.array([[1.0], [-2.0], [0.5]], dtype=np.float32))


def test_atomic_checkpoint_writes_files(tmp_path):
    dirname = tmp_path / "ckpt"
    net = _net(dirname, 2).fit(*_data())
    assert sorted(os.listdir(dirname)) == ["history.json", "optimizer.pt", "params.pt", "state.pt"]
    assert torch.equal(load_state_dict(dirname / "state.pt")["torch"], torch.get_rng_state())
    params = load_state_dict(dirname / "params.pt")
    for k, v in net.module_.state_dict().items():
        torch.testing.assert_close(params[k], v)
    history = json.loads((dirname / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    assert "train_loss" in history[-1]
    opt = torch.load(dirname / "optimizer.pt", weights_only=True)
    assert "momentum_buffer" in next(iter(opt["state"].values()))
    assert opt["param_groups"][0]["lr"] == 0.01


def test_atomic_checkpoint_resumes(tmp_path):
    dirname = tmp_path / "ckpt"
    first = _net(dirname, 2).fit(*_data())
    saved = {k: v.clone() for k, v in first.module_.state_dict().items()}
    second = _net(dirname, 1)
    second.initialize()
    # resumed from the checkpoint, then one more epoch
    second.fit(*_data())
    assert [h["epoch"] for h in second.history] == [1, 2, 3]
    assert second.history[-1]["train_loss"] < second.history[0]["train_loss"]
    assert not torch.equal(second.module_.weight, saved["weight"])  # trained on
    third = _net(tmp_path / "fresh", 1).fit(*_data())
    assert len(third.history) == 1
    assert json.loads((dirname / "history.json").read_text())[-1]["epoch"] == 3


def test_atomic_checkpoint_resume_false_starts_over(tmp_path):
    dirname = tmp_path / "ckpt"
    _net(dirname, 2).fit(*_data())
    net = _net(dirname, 1)
    net.set_params(callbacks__ckpt__resume=False)
    net.fit(*_data())
    assert len(net.history) == 1
    assert len(json.loads((dirname / "history.json").read_text())) == 1


def test_atomic_checkpoint_default_writes_nothing_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _net(tmp_path / "elsewhere", 1).fit(*_data())
    assert sorted(os.listdir(tmp_path)) == ["elsewhere"]


# ------------------------------------------------------------ ReleaseMemory
@pytest.mark.skipif(_malloc_trim() is None or "MALLOC_MMAP_THRESHOLD_" in os.environ,
                    reason="needs glibc's malloc_trim and its default mmap threshold")
def test_release_memory_returns_freed_heap_pages():
    # 200 MB of 100 kB buffers (heap, not mmap), then free 9 in 10: the holes
    # stay resident until malloc_trim gives them back
    buffers = [bytearray(100_000) for _ in range(2000)]
    kept = buffers[::10]
    del buffers
    release = ReleaseMemory(threshold_mib=100, keep_freed_mib=None)
    release.on_train_begin(net=None)
    before = _rss_mib()
    release.baseline_mib_ = before - 200  # as if it had grown by 200 MiB in epoch 1
    release.on_epoch_end(net=None)  # the first epoch's end sets the level: kept
    assert _rss_mib() > before - 10
    assert release.baseline_mib_ == pytest.approx(before, abs=10)
    release.on_epoch_end(net=None)  # no growth above the level: kept
    assert _rss_mib() > before - 10
    release.baseline_mib_ = before - 200  # as if it had grown by 200 MiB above the level
    release.on_epoch_end(net=None)
    assert before - _rss_mib() > 100
    assert release.baseline_mib_ == before - 200  # the level stays
    assert len(kept) == 200


@pytest.mark.skipif(_malloc_trim() is None or "MALLOC_MMAP_THRESHOLD_" in os.environ,
                    reason="needs glibc's malloc_trim and its default mmap threshold")
def test_release_memory_within_an_epoch_after_training_batches_only():
    buffers = [bytearray(100_000) for _ in range(2000)]
    kept = buffers[::10]
    del buffers
    release = ReleaseMemory(threshold_mib=10_000, batch_threshold_mib=100, keep_freed_mib=None)
    release.on_train_begin(net=None)
    before = _rss_mib()
    release.baseline_mib_ = before - 200  # as if it had grown by 200 MiB
    release.on_batch_end(net=None, training=False)  # validation batches: kept
    assert _rss_mib() > before - 10
    release.on_batch_end(net=None, training=True)
    assert before - _rss_mib() > 100
    assert release.baseline_mib_ == pytest.approx(_rss_mib(), abs=10)
    off = ReleaseMemory(batch_threshold_mib=None)
    off.on_train_begin(net=None)
    off.on_batch_end(net=None, training=True)
    off.on_train_end(net=None)  # gives glibc's settings back
    assert len(kept) == 200


#: Run in a fresh process, as glibc's settings are the process's: glibc's bytes in
#: blocks served by mmap (mallinfo2's hblkhd) while a 64 MB block is held, before
#: and after ReleaseMemory takes over.
_KEEP_FREED_SCRIPT = """
import ctypes
import numpy as np
from skcgcnn.callbacks import ReleaseMemory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
start = mallinfo2().hblkhd
a = np.ones(8_000_000)
before = mallinfo2().hblkhd - start
del a
ReleaseMemory(keep_freed_mib=256).on_train_begin(net=None)
b = np.ones(8_000_000)
print(before, mallinfo2().hblkhd - start, b.sum())
"""


@pytest.mark.skipif(_malloc_trim() is None, reason="needs glibc")
def test_release_memory_keeps_freed_blocks_for_the_next_batch():
    # glibc serves a 64 MB block by mmap (its own limit is 32 MiB) and gives it
    # back to the system when freed; kept, it comes from the heap, where a freed
    # block is reused by the next batch without faulting its pages in again
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", _KEEP_FREED_SCRIPT], capture_output=True,
                         text=True)
    if "mallinfo2" in run.stderr:
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    mmapped_before, mmapped_after, total = run.stdout.split()
    assert int(mmapped_before) >= 64_000_000
    assert int(mmapped_after) < 1_000_000
    assert float(total) == 8_000_000


class _Fail(Callback):
    def on_epoch_end(self, net, **kwargs):
        raise RuntimeError("failed in epoch 1")


@pytest.mark.parametrize("fails", [False, True])
def test_release_memory_restores_glibc_when_training_ends(tiny, monkeypatch, fails):
    from skcgcnn import callbacks

    calls = []
    monkeypatch.setattr(callbacks, "_malloc_holds", 0)  # no other training holds memory now
    monkeypatch.setattr(callbacks, "_mallopt", lambda: lambda p, v: calls.append((p, v)) or 1)
    monkeypatch.setattr(callbacks, "_malloc_trim", lambda: lambda pad: calls.append(("trim", pad)))
    _, graphs, y = tiny
    net = CGCNNRegressor(max_epochs=2, batch_size=4, callbacks=[_Fail()] if fails else [])
    if fails:  # skorch calls on_train_end only after a normal end or a KeyboardInterrupt
        with pytest.raises(RuntimeError, match="epoch 1"):
            net.fit(graphs, y)
    else:
        net.fit(graphs, y)
    one_gib, mib = 2**30, 2**20  # keep_freed_mib=1024, then glibc's dynamic ceiling
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    assert calls == [(M_MMAP_THRESHOLD, one_gib), (M_TRIM_THRESHOLD, one_gib),
                     (M_MMAP_THRESHOLD, 32 * mib), (M_TRIM_THRESHOLD, 64 * mib), ("trim", 0)]
    assert callbacks._malloc_holds == 0
    net.callbacks_[[n for n, _ in net.callbacks_].index("release_memory")][1].give_back()
    assert len(calls) == 5  # once only


@pytest.mark.parametrize("keep", [0, -1, 2048, "1024", True])
def test_release_memory_rejects_a_bad_keep_freed_mib(keep):
    with pytest.raises(ValueError, match="keep_freed_mib"):
        ReleaseMemory(keep_freed_mib=keep).on_train_begin(net=None)


def test_estimators_release_memory_by_default():
    net = CGCNNRegressor(max_epochs=1)
    names = [name for name, _ in net.get_default_callbacks()]
    assert "release_memory" in names
    assert not any("release_memory" in key for key in net.get_params())


def _unset_onednn_variables(monkeypatch):
    """Unset oneDNN's cache variables for a test, and restore them after it (a bare
    delenv(raising=False) of an unset variable records nothing to restore, so a
    variable set by the code under test would leak into the rest of the run)."""
    for name in ONEDNN_CACHE_VARIABLES:
        monkeypatch.setenv(name, "0")
        monkeypatch.delenv(name)


class _Environ(Callback):
    """Records oneDNN's cache variables as training begins."""

    def on_train_begin(self, net, **kwargs):
        self.seen_ = {k: os.environ.get(k) for k in ONEDNN_CACHE_VARIABLES}


@pytest.mark.parametrize("big_fit, bounded", [(4, True), (10_000, False)])
def test_big_fits_bound_onednn_caches(monkeypatch, big_fit, bounded):
    from skcgcnn import estimators

    _unset_onednn_variables(monkeypatch)
    monkeypatch.setattr(estimators, "BIG_FIT", big_fit)
    from ase.build import bulk

    X = [bulk("Cu"), bulk("Al"), bulk("Si"), bulk("NaCl", "rocksalt", a=5.6)]
    seen = _Environ()
    CGCNNRegressor(max_epochs=1, validation_fraction=None, batch_size=4,
                   callbacks=[seen]).fit(X, [0, 1, 2, 3])
    assert seen.seen_ == {k: "16" if bounded else None for k in ONEDNN_CACHE_VARIABLES}
    assert not any(name in os.environ for name in ONEDNN_CACHE_VARIABLES)  # gone after fit


def test_limit_onednn_caches_keeps_the_users_values(monkeypatch):
    _unset_onednn_variables(monkeypatch)
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "4")
    with limit_onednn_caches(8) as capacities:
        assert capacities == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "8", "LRU_CACHE_CAPACITY": "4"}
        assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "8"
    # the variable it set is gone, the user's own value stays
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in os.environ
    assert os.environ["LRU_CACHE_CAPACITY"] == "4"
    # called alone, for a whole script: the variables stay
    assert limit_onednn_caches(8)["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "8"
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "8"
    for bad in (0, -1, 2.5, True, "16"):
        with pytest.raises(ValueError, match="capacity must be a positive int"):
            limit_onednn_caches(bad)
