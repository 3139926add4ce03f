"""lossdiag.lightning.DiagnosisCallback and lossdiag.torchmetrics on a real Lightning run (CPU).

A tiny MLP on a synthetic 3-class problem: with a sane learning rate the run ends without an
alarm; with one ~100x too high the callback stops it at the epoch where the loss broke, and the
report names the finding.
"""

from __future__ import annotations

import json
import logging
import warnings

import lightning.pytorch as pl
import lossdiag
import numpy as np
import pytest
import torch
from lossdiag.lightning import DiagnosisCallback
from lossdiag.torchmetrics import ClassificationStats
from torch.utils.data import DataLoader, TensorDataset

# The frameworks are in the `test` extra: these tests run (never skip) in CI.

C = 3


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models: threads only contend on a shared CI machine (and results stay deterministic)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _data(seed: int = 0, n: int = 384) -> TensorDataset:
    centers = torch.randn(C, 8, generator=torch.Generator().manual_seed(1234)) * 2.0
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, C, (n,), generator=g)
    x = centers[y] + torch.randn(n, 8, generator=g)
    return TensorDataset(x, y)


class _Net(pl.LightningModule):
    def __init__(self, lr: float, momentum: float = 0.9) -> None:
        super().__init__()
        self.lr, self.momentum = lr, momentum
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(),
                                       torch.nn.Linear(32, C))
        self.val_stats = ClassificationStats(num_classes=C)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", torch.nn.functional.cross_entropy(logits, y))
        self.val_stats.update(logits, y)

    def on_validation_epoch_end(self):
        self.log_dict(self.val_stats.scalars(prefix="val_"))
        self.val_stats.reset()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=self.momentum)


def _fit(tmp_path, lr: float, epochs: int = 6, **cb_kwargs):
    pl.seed_everything(0, workers=True, verbose=False)
    ds = _data()
    train = DataLoader(ds, batch_size=32, shuffle=True,
                       generator=torch.Generator().manual_seed(0))
    val = DataLoader(_data(seed=1, n=96), batch_size=48)
    cb = DiagnosisCallback(num_classes=C, **cb_kwargs)
    trainer = pl.Trainer(max_epochs=epochs, callbacks=[cb], accelerator="cpu", devices=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path),
                         num_sanity_val_steps=0, deterministic=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(_Net(lr), train, val)
    return trainer, cb


def test_healthy_run_has_no_alarm_and_writes_the_report(tmp_path):
    trainer, cb = _fit(tmp_path, lr=0.05, stop_on=("non-finite", "diverging"))
    mon = cb.monitor
    assert mon.alarms == []
    assert cb.stopped_at is None and trainer.current_epoch == 6
    h = mon.history
    assert len(h) == 6 and len(h.steps) == 6 * 12
    # per-epoch metrics from self.log, statistics from the torchmetrics metric
    assert h.val["loss"][-1] < h.val["loss"][0]
    assert h.val["accuracy"][-1] > 0.9
    assert h.stats[-1] is not None and h.stats[-1]["confusion"].sum() == 96
    assert np.isfinite(h.column("train/grad_norm", "step")[1]).all()
    # the report: into trainer.log_dir/lossdiag, and no finding at warning level
    paths = cb.report_paths
    assert paths["html"] == tmp_path / "lossdiag" / "report.html" and paths["html"].exists()
    rep = json.loads(paths["json"].read_text())
    assert [f for f in rep["findings"] if f["severity"] != "info"] == []
    assert lossdiag.History.load(paths["history"]).val["loss"].tolist() == pytest.approx(
        h.val["loss"].tolist())


def test_lr_100x_too_high_stops_at_the_right_epoch(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="lightning.pytorch.callbacks.lossdiag"):
        trainer, cb = _fit(tmp_path, lr=5.0, epochs=20,
                           stop_on=("non-finite", "diverging"))
    mon = cb.monitor
    first = mon.stop_reason
    assert first is not None and first.code in ("non-finite", "diverging")
    assert first.severity == "error"
    # stopped right after the batch of the alarm, in the epoch of the alarm
    assert cb.stopped_at is not None
    epoch, step = cb.stopped_at
    assert step == first.end and first.unit == "step"
    assert mon.history.steps[-1] == step and trainer.global_step == step + 1
    assert epoch == mon.history.step_epochs[-1] < 19
    # Lightning ran the pending validation of that epoch, then ended the fit
    assert mon.history.epochs.tolist() == [epoch] and trainer.current_epoch == epoch + 1
    # logged through Lightning's logger, named in both reports
    assert any(first.code in r.getMessage() for r in caplog.records)
    rep = json.loads(cb.report_paths["json"].read_text())
    assert first.code in [f["code"] for f in rep["findings"]]
    assert first.code in cb.report_paths["html"].read_text()


def test_alarms_do_not_stop_by_default(tmp_path):
    trainer, cb = _fit(tmp_path, lr=5.0, epochs=3, log_dir=False)
    assert cb.monitor.alarms and cb.stopped_at is None
    assert trainer.current_epoch == 3 and cb.report_paths == {}


def test_docstring_examples():
    import doctest

    import lossdiag.lightning
    import lossdiag.torchmetrics

    for mod in (lossdiag.lightning, lossdiag.torchmetrics):
        res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        assert res.attempted > 0 and res.failed == 0, mod.__name__
