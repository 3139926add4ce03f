"""lossdiag.keras.DiagnosisCallback on a real Keras 3 run (torch backend, CPU).

A tiny MLP on a synthetic 3-class problem: with a sane learning rate the run ends without an
alarm; with one ~100x too high the callback stops it in the epoch where the loss broke, and the
report names the finding.
"""

from __future__ import annotations

import json
import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported; CI has no TensorFlow

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from lossdiag.keras import DiagnosisCallback  # noqa: E402

C = 3

# Keras' torch backend converts tensors with np.array(x) (a NumPy 2 DeprecationWarning per call)
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models: threads only contend on a shared CI machine (and results stay deterministic)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _data(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    centers = np.random.default_rng(1234).normal(size=(C, 8)) * 2.0
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    return (centers[y] + rng.normal(size=(n, 8))).astype("float32"), y


def _fit(tmp_path, lr: float, epochs: int, **cb_kwargs):
    assert keras.backend.backend() == "torch"
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(C)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    cb = DiagnosisCallback(tmp_path / "logs", num_classes=C, verbose=0, **cb_kwargs)
    x, y = _data(0, 384)
    hist = model.fit(x, y, validation_data=_data(1, 96), epochs=epochs, batch_size=32,
                     shuffle=True, callbacks=[cb], verbose=0)
    return hist, cb


def test_healthy_run_has_no_alarm(tmp_path):
    hist, cb = _fit(tmp_path, lr=0.05, epochs=6, stop_on=("non-finite", "diverging"))
    mon = cb.monitor
    assert mon.alarms == [] and cb.stopped_at is None
    assert len(hist.epoch) == 6 and len(mon.history) == 6
    # epoch logs, and the per-step losses recovered from Keras' running means
    assert mon.history.val["loss"].tolist() == pytest.approx(hist.history["val_loss"])
    assert mon.history.train["accuracy"].tolist() == pytest.approx(hist.history["accuracy"])
    steps = mon.history.steps
    assert len(steps) == 6 * 11 and steps[0] == 0 and steps[-1] == 6 * 12 - 2
    step_loss = mon.history.column("train/loss", "step")[1][:11]
    assert np.mean(step_loss) == pytest.approx(hist.history["loss"][0], rel=0.1)
    assert mon.history.lr[0] == pytest.approx(0.05)
    rep = json.loads(cb.report_paths["json"].read_text())
    assert [f for f in rep["findings"] if f["severity"] != "info"] == []
    assert cb.report_paths["html"].exists() and cb.report_paths["history"].exists()


def test_lr_100x_too_high_stops_at_the_right_epoch(tmp_path):
    hist, cb = _fit(tmp_path, lr=5.0, epochs=20, stop_on=("non-finite", "diverging"))
    mon = cb.monitor
    first = mon.stop_reason
    assert first is not None and first.code in ("non-finite", "diverging")
    assert first.severity == "error" and first.unit == "step"
    epoch, step = cb.stopped_at
    assert step == first.end == mon.history.steps[-1]
    assert epoch == mon.history.step_epochs[-1]
    # Keras finishes the stopped epoch's bookkeeping (validation) and stops there
    assert len(hist.epoch) == epoch + 1 < 20
    rep = json.loads(cb.report_paths["json"].read_text())
    assert first.code in [f["code"] for f in rep["findings"]]
    assert first.code in cb.report_paths["html"].read_text()


def test_docstring_examples():
    import doctest

    import lossdiag.keras

    res = doctest.testmod(lossdiag.keras, optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0
