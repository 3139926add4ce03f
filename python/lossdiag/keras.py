"""Keras 3: live diagnosis of ``model.fit`` as a ``keras.callbacks.Callback`` (any backend).

>>> import keras                                                         # doctest: +SKIP
>>> from lossdiag.keras import DiagnosisCallback
>>> cb = DiagnosisCallback(log_dir="logs/run1", stop_on=("non-finite", "diverging"))
>>> model.fit(x, y, validation_data=(xv, yv), epochs=50, callbacks=[cb])  # doctest: +SKIP
>>> cb.monitor.alarms                                                    # doctest: +SKIP

What the callback reads:

* per batch: Keras reports the running mean of the epoch's loss in ``logs["loss"]``; the
  callback recovers each step's own loss from two consecutive running means
  (``n * m_n - k * m_k`` over the ``n - k`` steps in between, exact for equal batch sizes; the
  last, possibly smaller, batch of an epoch is only checked for NaN/inf). The learning rate is
  read from the optimizer (schedules included). Keras does not expose gradients to callbacks,
  so there is no gradient-norm alarm here.
* per epoch: the ``logs`` of ``on_epoch_end`` (``loss``, ``accuracy``, ``val_loss``, ...).

Alarms are printed like Keras' own callbacks (``keras.utils.io_utils.print_msg``, or absl
logging when interactive logging is off) unless ``verbose=0``. With ``stop_on`` codes an alarm
with one of them sets ``model.stop_training``: Keras ends the epoch after the current batch
(running validation) and stops. At the end of training ``report.html``, ``report.json`` and
``history.json`` are written into ``log_dir``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras

from .history import split_metric_key
from .monitor import AlarmThresholds, Monitor

if TYPE_CHECKING:
    from .diagnosis.report import Finding

__all__ = ["DiagnosisCallback"]

_EPS32 = 2.0**-23  # float32 machine epsilon: Keras' metric results are float32


def _print(msg: str) -> None:
    try:
        from keras.src.utils.io_utils import print_msg
    except ImportError:  # pragma: no cover - a Keras without the private helper
        print(msg)
    else:
        print_msg(msg)


class DiagnosisCallback(keras.callbacks.Callback):
    """Feeds a :class:`lossdiag.Monitor` from ``model.fit`` and reports its alarms live.

    Args:
        log_dir: directory for the end-of-training reports (created); ``None`` writes none.
        stop_on: finding codes that stop training, e.g. ``("non-finite", "diverging")``.
            Off by default.
        num_classes: C, for the end-of-run diagnosis (chance level ln C).
        thresholds: an :class:`lossdiag.AlarmThresholds`.
        verbose: 1 prints each alarm (and where the report went), 0 is silent.
        monitor: an existing :class:`lossdiag.Monitor` to feed.

    Attributes:
        monitor: the :class:`lossdiag.Monitor` (``.alarms``, ``.history``, ``.diagnose()``).
        stopped_at: ``(epoch, step)`` where this callback stopped training, or None.
        report_paths: the files written at the end (``{"html", "json", "history"}``).
    """

    def __init__(self, log_dir: str | Path | None = "logs", *,
                 stop_on: Iterable[str] | str = (), num_classes: int | None = None,
                 thresholds: AlarmThresholds | None = None, verbose: int = 1,
                 monitor: Monitor | None = None) -> None:
        super().__init__()
        monitor = Monitor.for_callback(monitor, num_classes=num_classes, stop_on=stop_on,
                                       thresholds=thresholds)
        if log_dir is not None and not isinstance(log_dir, (str, Path)):
            raise TypeError(f"log_dir: expected a path or None, got {log_dir!r}")
        self.monitor = monitor
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.verbose = int(verbose)
        self.stopped_at: tuple[int, float] | None = None
        self.report_paths: dict[str, Path] = {}
        self._epoch = 0
        self._global = 0  # optimisation steps before the current epoch
        self._prev: tuple[int, float] = (0, 0.0)  # (steps so far this epoch, running mean)
        monitor.add_alarm_callback(self._print_alarm)

    def _print_alarm(self, f: Finding) -> None:
        if self.verbose:
            _print(f"\nlossdiag alarm: {f}")

    def _lr(self) -> float | None:
        opt = getattr(self.model, "optimizer", None)
        if opt is None:
            return None
        try:
            return float(keras.ops.convert_to_numpy(opt.learning_rate))
        except Exception:  # a custom optimizer without a readable learning rate
            return None

    # -- hooks -------------------------------------------------------------------------------------
    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._epoch = int(epoch)
        self._prev = (0, 0.0)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if not logs or "loss" not in logs:
            return
        mean = float(keras.ops.convert_to_numpy(logs["loss"]))
        n = int(batch) + 1  # steps of this epoch done (Keras passes the last step's index)
        k, prev = self._prev
        self._prev = (n, mean)
        if n <= k:
            return
        steps = (self.params or {}).get("steps")
        last = steps is not None and n >= int(steps)
        if not math.isfinite(mean):
            loss = mean  # a NaN/inf batch loss makes the running mean NaN/inf from here on
        elif last:
            loss = None  # a partial last batch breaks the equal-weights recovery: skip it
        else:
            loss = (n * mean - k * prev) / (n - k)
            # the running means are float32: the recovery cancels ~eps * (n|m_n| + k|m_k|);
            # a step loss within a few of those of zero is not known (after an explosion the
            # mean is huge and a small step loss drowns in its rounding)
            err = _EPS32 * (n * abs(mean) + k * abs(prev)) / (n - k)
            if abs(loss) <= 8 * err:
                loss = None
        step = self._global + n - 1
        if loss is not None:
            self.monitor.step(step, loss=loss, lr=self._lr(), epoch=self._epoch)
        if self.monitor.should_stop and self.stopped_at is None and self.monitor.stop_on:
            self.model.stop_training = True
            self.stopped_at = (self._epoch, float(step))
            if self.verbose:
                _print(f"\nlossdiag: stopping training at epoch {self._epoch} "
                       f"({self.monitor.stop_reason.title})")

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        train: dict[str, float] = {}
        val: dict[str, float] = {}
        for key, v in (logs or {}).items():
            split, name = split_metric_key(key)
            if split not in ("train", "val"):
                continue
            try:
                value = float(keras.ops.convert_to_numpy(v))
            except (TypeError, ValueError):
                continue
            (train if split == "train" else val)[name] = value
        self._global += self._prev[0]
        self.monitor.epoch(int(epoch), train=train, val=val, lr=self._lr())
        if self.monitor.should_stop and self.stopped_at is None and self.monitor.stop_on:
            self.model.stop_training = True
            self.stopped_at = (int(epoch), float(self._global - 1))

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.log_dir is None:
            return
        self.report_paths = self.monitor.write_report(self.log_dir)
        if self.verbose:
            codes = ", ".join(a.code for a in self.monitor.alarms) or "none"
            _print(f"lossdiag: report written to {self.report_paths['html']} (alarms: {codes})")
