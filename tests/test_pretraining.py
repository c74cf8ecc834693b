"""Pretraining (skcgcnn.pretraining, ``skcgcnn pretrain``): recipe, card, resume, Accelerate."""

import json
import os

import numpy as np
import pytest
import torch
from ase.build import bulk
from skorch.callbacks import Callback

from skcgcnn import TransferCGCNNRegressor
from skcgcnn.callbacks import ONEDNN_CACHE_VARIABLES, CosineLR
from skcgcnn.cli import main
from skcgcnn.pretrained import load_estimator
from skcgcnn.pretraining import PRETRAINING_RECIPE, pretrain

FAST = dict(epochs=4, warmup=1, batch_size=4, lr=0.01)


class _StopAt(Callback):
    """Interrupts training after ``epoch`` epochs, as a killed run would stop."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == self.epoch:
            raise KeyboardInterrupt  # skorch ends fit() cleanly on it


class _Environ(Callback):
    """Records oneDNN's cache variables as training begins."""

    def on_train_begin(self, net, **kwargs):
        self.seen_ = {k: os.environ.get(k) for k in ONEDNN_CACHE_VARIABLES}


def test_pretrain_writes_best_model_with_its_recipe(tiny, tmp_path, monkeypatch):
    _, graphs, y = tiny
    for name in ONEDNN_CACHE_VARIABLES:  # unset now, and as they were after the test
        monkeypatch.setenv(name, "0")
        monkeypatch.delenv(name)
    seen = _Environ()
    net = pretrain(graphs, y, tmp_path / "src", **FAST, card={"units": "A^3/atom"},
                   callbacks=[seen])
    card = json.loads((tmp_path / "src.json").read_text())
    assert card == net.card_
    assert seen.seen_ == {name: "16" for name in ONEDNN_CACHE_VARIABLES}  # bounded in training
    assert not any(name in os.environ for name in ONEDNN_CACHE_VARIABLES)  # and unset after
    assert card["epochs_trained"] == 4 and 1 <= card["best_epoch"] <= 4
    assert card["hyperparameters"]["optimizer"] == "AdamW"
    assert card["hyperparameters"]["schedule"] == "cosine"
    assert card["units"] == "A^3/atom" and card["n_train"] + card["n_validation"] == len(y)
    assert isinstance(net.optimizer_, torch.optim.AdamW)
    assert net.optimizer_.param_groups[0]["weight_decay"] == PRETRAINING_RECIPE["weight_decay"]
    # the saved file is the best epoch, and transfer loads it
    losses = [row["valid_loss"] for row in net.history]
    assert card["best_epoch"] == int(np.argmin(losses)) + 1
    tl = TransferCGCNNRegressor(tmp_path / "src.pt", max_epochs=1).initialize()
    saved = load_estimator(tmp_path / "src.pt").module_.state_dict()
    assert torch.equal(tl.module_.convs[0].fc_bond.weight, saved["convs.0.fc_bond.weight"])


def test_stopped_run_resumes_on_the_same_schedule(tiny, tmp_path):
    _, graphs, y = tiny
    ckpt = tmp_path / "ckpt"
    first = pretrain(graphs, y, tmp_path / "src", **FAST, checkpoint_dir=ckpt,
                     callbacks=[_StopAt(2)])
    assert len(json.loads((ckpt / "history.json").read_text())) == 2
    assert first.card_["epochs_trained"] == 2
    resumed = pretrain(graphs, y, tmp_path / "src", **FAST, checkpoint_dir=ckpt)
    assert len(resumed.history) == 4 and resumed.card_["epochs_trained"] == 4
    # the rate of the last epoch is the schedule's 4th, not its 2nd
    expected = FAST["lr"] * CosineLR(4, warmup=1).factor(4)
    assert resumed.optimizer_.param_groups[0]["lr"] == pytest.approx(expected)
    again = pretrain(graphs, y, tmp_path / "src", **FAST, checkpoint_dir=ckpt)  # done: no-op
    assert again.card_["epochs_trained"] == 4


#: a tiny network whose validation loss on ``tiny`` goes up and down over 8 epochs
WAVY = dict(epochs=8, warmup=1, batch_size=4, lr=0.03, validation_fraction=0.25,
            atom_fea_len=8, h_fea_len=8, n_conv=1)


def _run(graphs, y, path, stop=None, **kw):
    """pretrain with WAVY (or ``kw``), interrupted after epoch ``stop`` if given."""
    return pretrain(graphs, y, path, **{**WAVY, **kw}, checkpoint_dir=f"{path}.ckpt",
                    callbacks=[_StopAt(stop)] if stop else [])


_REFERENCE = {}


def _reference(graphs, y, tmp_path_factory, **kw):
    """The uninterrupted run (once per recipe)."""
    key = tuple(sorted(kw.items()))
    if key not in _REFERENCE:
        net = _run(graphs, y, tmp_path_factory.mktemp("ref") / "src", **kw)
        _REFERENCE[key] = (net, {k: v.clone() for k, v in net.module_.state_dict().items()})
    return _REFERENCE[key]


@pytest.mark.parametrize("recipe", [{}, {"schedule": "step", "lr_decay_epoch": 4}],
                         ids=["cosine", "step"])
@pytest.mark.parametrize("where", ["before", "after"])
def test_interrupted_run_resumes_as_if_uninterrupted(tiny, tmp_path, tmp_path_factory, where,
                                                     recipe):
    _, graphs, y = tiny
    ref, ref_weights = _reference(graphs, y, tmp_path_factory, **recipe)
    losses = ref.history[:, "valid_loss"]
    best = int(np.argmin(losses)) + 1
    assert ref.card_["best_epoch"] == best and 3 <= best <= 7  # room to stop on either side
    # before: the resumed epochs must not count as best against inf; after: a worse
    # last epoch must not replace the best model
    stop = {"before": best - 2, "after": best + 1}[where]
    path = tmp_path / "src"
    first = _run(graphs, y, path, stop, **recipe)
    assert first.card_["epochs_trained"] == stop
    resumed = _run(graphs, y, path, **recipe)
    assert resumed.card_["best_epoch"] == best
    for key in ("train_loss", "valid_loss"):
        np.testing.assert_allclose(resumed.history[:, key], ref.history[:, key], rtol=1e-5)
    assert resumed.history[:, "valid_loss_best"] == ref.history[:, "valid_loss_best"]
    timing = ("training_time_s",)
    assert ({k: v for k, v in resumed.card_.items() if k not in timing}
            == {k: v for k, v in ref.card_.items() if k not in timing})
    for k, v in ref_weights.items():
        torch.testing.assert_close(resumed.module_.state_dict()[k], v, rtol=1e-5, atol=1e-6)
    saved = load_estimator(path.with_suffix(".pt")).module_.state_dict()
    for k, v in ref_weights.items():
        torch.testing.assert_close(saved[k], v, rtol=1e-5, atol=1e-6)


def test_resumed_early_stopping_keeps_its_patience_and_best_weights(tiny, tmp_path):
    from skcgcnn import CGCNNRegressor
    from skcgcnn.callbacks import AtomicCheckpoint

    _, graphs, y = tiny
    kw = dict(lr=0.03, batch_size=4, validation_fraction=0.25, atom_fea_len=8, h_fea_len=8,
              n_conv=1, lr_decay_epoch=None, random_state=0, n_iter_no_change=3)
    ref = CGCNNRegressor(max_epochs=12, **kw).fit(graphs, y)
    losses = ref.history[:, "valid_loss"]
    best = int(np.argmin(losses)) + 1
    assert len(losses) == best + 3 < 12  # stopped by its patience, 3 epochs after the best
    stop = best + 1  # one miss counted before the interruption
    ckpt = AtomicCheckpoint(tmp_path)
    CGCNNRegressor(max_epochs=stop, callbacks=[ckpt], **kw).fit(graphs, y)
    resumed = CGCNNRegressor(max_epochs=12 - stop, callbacks=[ckpt], **kw).fit(graphs, y)
    np.testing.assert_allclose(resumed.history[:, "valid_loss"], losses, rtol=1e-5)
    np.testing.assert_allclose(resumed.predict(graphs), ref.predict(graphs), rtol=1e-5)
    assert sorted(p.name for p in tmp_path.glob("best-*")) == [f"best-best_epoch-{best}.pt"]


def test_step_schedule_and_bad_recipes(tiny, tmp_path):
    _, graphs, y = tiny
    net = pretrain(graphs, y, tmp_path / "sgd", optimizer="sgd", schedule="step",
                   lr_decay_epoch=2, weight_decay=0.0, epochs=3, batch_size=4)
    assert isinstance(net.optimizer_, torch.optim.SGD)
    assert net.card_["hyperparameters"]["lr_decay_epoch"] == 2
    with pytest.raises(ValueError, match="optimizer"):
        pretrain(graphs, y, tmp_path / "x", optimizer="lamb")
    with pytest.raises(ValueError, match="lr_decay_epoch"):
        pretrain(graphs, y, tmp_path / "x", schedule="step")


def test_multi_property_pretraining(tiny, tmp_path):
    _, graphs, y = tiny
    Y = np.c_[y, -y]
    Y[::3, 1] = np.nan
    net = pretrain(graphs, Y, tmp_path / "multi", **FAST)
    assert net.card_["architecture"]["n_targets"] == 2
    assert net.predict(graphs).shape == (len(y), 2)
    tl = TransferCGCNNRegressor(tmp_path / "multi.pt", max_epochs=2, batch_size=4).fit(graphs, y)
    assert tl.predict(graphs).shape == (len(y),)


def test_cli_pretrain_then_finetune(tmp_path, capsys):
    from tests.test_cli import _crystals

    root = tmp_path / "big"
    root.mkdir()
    lines = []
    for i, (structure, volume) in enumerate(_crystals()):
        structure.to(filename=str(root / f"x{i}.cif"))
        lines.append(f"x{i},{float(volume)!r}")
    (root / "id_prop.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "source.pt"
    assert main(["pretrain", str(root), "-o", str(out), "--epochs", "3", "--warmup", "1",
                 "--batch-size", "4", "--units", "A^3/atom"]) == 0
    assert "\x1b[" not in capsys.readouterr().out  # the loss table without colour codes
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training_command"].startswith("skcgcnn pretrain")
    assert card["hyperparameters"]["epochs"] == 3 and card["epochs_trained"] == 3
    assert (tmp_path / "source.checkpoint" / "history.json").is_file()
    assert main(["finetune", str(root), "--pretrained", str(out), "-o",
                 str(tmp_path / "tl.pt"), "--epochs", "2", "--batch-size", "4", "-q"]) == 0
    # options left out train with the library's recipe, as the card records it
    hyper = card["hyperparameters"]
    assert hyper["optimizer"] == "AdamW" and hyper["schedule"] == "cosine"
    assert hyper["lr"] == PRETRAINING_RECIPE["lr"]
    assert hyper["weight_decay"] == PRETRAINING_RECIPE["weight_decay"]
    tuned = json.loads((tmp_path / "tl.json").read_text())
    assert tuned["pretrained"] == str(out)


def test_accelerate_path_on_cpu(tiny):
    accelerate = pytest.importorskip("accelerate", reason="pip install accelerate")
    from skcgcnn.pretraining import AcceleratedCGCNNRegressor

    _, graphs, y = tiny
    net = AcceleratedCGCNNRegressor(accelerator=accelerate.Accelerator(cpu=True),
                                    max_epochs=3, batch_size=4, random_state=0)
    net.fit(graphs, y)
    assert net.predict(graphs).shape == (len(y),)
    assert len(net.history) == 3 and np.isfinite(net.history[:, "train_loss"]).all()
