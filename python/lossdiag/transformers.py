"""Hugging Face ``Trainer``: streaming evaluation metrics and live diagnosis of a run.

* :class:`ComputeMetrics` - a ``compute_metrics`` for ``Trainer(...,
  args=TrainingArguments(..., batch_eval_metrics=True))`` built on :class:`lossdiag.Metrics`:
  each evaluation batch's logits are reduced to O(C^2 + bins) sums at once, so no logits are
  kept in memory (the Trainer's default concatenates every prediction of the evaluation set).
* :class:`DiagnosisCallback` - a ``TrainerCallback`` feeding a :class:`lossdiag.Monitor`.

>>> from transformers import Trainer, TrainingArguments                   # doctest: +SKIP
>>> from lossdiag.transformers import ComputeMetrics, DiagnosisCallback
>>> metrics = ComputeMetrics(num_classes=2)
>>> cb = DiagnosisCallback(metrics=metrics, stop_on=("non-finite", "diverging"))
>>> args = TrainingArguments("out", eval_strategy="epoch",              # doctest: +SKIP
...                          batch_eval_metrics=True)
>>> trainer = Trainer(model, args, train_dataset=train, eval_dataset=val,   # doctest: +SKIP
...                   compute_metrics=metrics, callbacks=[cb])
>>> trainer.train()                                                       # doctest: +SKIP

What the callback reads:

* the training loss of **every** optimisation step, from a forward hook on the model (the
  ``loss`` of its output, averaged over gradient-accumulation micro-batches). This sees through
  ``logging_nan_inf_filter=True`` (the default), which replaces a NaN/inf step loss by the
  running average before it is logged: the logged ``loss`` of a run whose weights became NaN
  stays finite and flat. When the model computes no loss itself (a custom ``compute_loss``),
  the logged ``loss`` is used instead;
* ``grad_norm`` and ``learning_rate`` from the logs (every ``logging_steps``); a NaN
  ``grad_norm`` (the Trainer logs it unfiltered) is a non-finite alarm too;
* the ``eval_*`` metrics of each evaluation, and the full statistics of a
  :class:`ComputeMetrics` passed as ``metrics=`` (enables the collapse alarm).

Alarms are logged through the ``transformers`` logger (``transformers.lossdiag``, world process
zero). With ``stop_on`` codes an alarm with one of them sets ``control.should_training_stop``
(agreed across processes) so the Trainer stops after the current step. At the end of training
``report.html``, ``report.json`` and ``history.json`` go into ``log_dir`` (default:
``args.output_dir/lossdiag``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback
from transformers.utils import logging as hf_logging

from .core.metrics import Metrics
from .history import split_metric_key
from .monitor import AlarmThresholds, Monitor, _host_array, scalars

if TYPE_CHECKING:
    from .diagnosis.report import Finding

__all__ = ["ComputeMetrics", "DiagnosisCallback"]

logger = hf_logging.get_logger("transformers.lossdiag")


class ComputeMetrics:
    """``compute_metrics`` for the Hugging Face Trainer, accumulating :class:`lossdiag.Metrics`.

    With ``batch_eval_metrics=True`` the Trainer calls it once per evaluation batch
    (``compute_result=False``) and once more on the last batch (``compute_result=True``), when
    it returns the scalar metrics of the whole evaluation and resets. Without
    ``batch_eval_metrics`` it is called once with every prediction and works the same.

    Returned keys (the Trainer prefixes them with ``eval_``): ``accuracy``, ``balanced_accuracy``,
    ``mean_iou``, ``mean_dice``, ``kappa``, ``ece``, ``mce``, ``mean_true_class_prob``,
    ``frac_true_prob_below_inv_e``, ``mean_entropy``, ``small_margin_correct_frac``,
    ``nonfinite``, ``top{k}_accuracy``, ``cross_entropy`` (the mean cross-entropy of the logits;
    named so that the Trainer's own ``eval_loss`` is kept), and with ``per_class=True``
    ``iou_{c}``, ``dice_{c}``, ``precision_{c}``, ``recall_{c}``, ``pred_freq_{c}``.

    Args:
        num_classes: C (``model.config.num_labels``).
        axis: class axis of the logits; -1 (default) fits sequence and token classification,
            ``(batch, C)`` and ``(batch, length, C)``.
        per_class: also return the per-class values.
        absent: IoU/Dice convention for absent classes ("nan", "zero", "one").
        other arguments: as :class:`lossdiag.Metrics` (``ignore_index=-100`` skips padded
            tokens, as in the Trainer).

    Attributes:
        last_stats: the full ``Metrics.compute()`` dict of the last evaluation (confusion
            matrix, per-class arrays, reliability diagram...), or None.

    >>> import numpy as np
    >>> from transformers import EvalPrediction
    >>> cm = ComputeMetrics(num_classes=2)
    >>> batches = [(np.array([[2.0, 0.0], [0.0, 1.0]]), np.array([0, 1])),
    ...            (np.array([[0.0, 3.0]]), np.array([0]))]
    >>> for i, (logits, labels) in enumerate(batches):
    ...     out = cm(EvalPrediction(predictions=logits, label_ids=labels),
    ...              compute_result=i == len(batches) - 1)
    >>> round(out["accuracy"], 4), sorted(cm.last_stats["confusion"].sum(axis=1).tolist())
    (0.6667, [1, 2])
    """

    def __init__(self, num_classes: int, *, axis: int = -1, per_class: bool = False,
                 absent: str = "nan", **metrics_kwargs: Any) -> None:
        self.metrics = Metrics(num_classes, axis=axis, **metrics_kwargs)
        if absent not in ("nan", "zero", "one"):
            raise ValueError(f"absent: must be one of ('nan', 'zero', 'one'), got {absent!r}")
        self.per_class = bool(per_class)
        self.absent = absent
        self.last_stats: dict[str, Any] | None = None
        self.evaluations = 0

    def __call__(self, eval_pred: Any, compute_result: bool = True) -> dict[str, float]:
        preds = getattr(eval_pred, "predictions", None)
        labels = getattr(eval_pred, "label_ids", None)
        if preds is None and isinstance(eval_pred, (tuple, list)) and len(eval_pred) >= 2:
            preds, labels = eval_pred[0], eval_pred[1]
        if isinstance(preds, (tuple, list)):  # models returning (logits, hidden_states, ...)
            preds = preds[0]
        if preds is None or labels is None:
            raise ValueError("eval_pred: needs predictions (logits) and label_ids; set the "
                             "Trainer's label_names or return labels in the batch")
        if isinstance(labels, (tuple, list)):
            labels = labels[0]
        self.metrics.update(_host_array(preds), _host_array(labels))
        if not compute_result:
            return {}
        stats = self.metrics.compute(absent=self.absent)
        self.metrics.reset()
        self.last_stats = stats
        self.evaluations += 1
        return scalars(stats, per_class=self.per_class, loss_key="cross_entropy")


class DiagnosisCallback(TrainerCallback):
    """Feeds a :class:`lossdiag.Monitor` from a Hugging Face ``Trainer`` and reports its alarms.

    Args:
        stop_on: finding codes that stop training, e.g. ``("non-finite", "diverging")``.
            Off by default.
        num_classes: C, for the end-of-run diagnosis (default: ``model.config.num_labels``).
        metrics: the :class:`ComputeMetrics` given to the Trainer: its statistics go to the
            monitor with each evaluation.
        watch_loss: hook the model's forward to read every step's training loss (see the module
            docstring); ``False`` uses only the logged loss.
        log_dir: where the reports go (default ``args.output_dir/lossdiag``); ``False`` writes
            nothing.
        thresholds: an :class:`lossdiag.AlarmThresholds`.
        monitor: an existing :class:`lossdiag.Monitor` to feed.

    Attributes:
        monitor: the :class:`lossdiag.Monitor` (``.alarms``, ``.history``, ``.diagnose()``).
        stopped_at: ``(epoch, step)`` where this callback stopped training, or None.
        report_paths: the files written at the end (``{"html", "json", "history"}``).
    """

    def __init__(self, *, stop_on: Iterable[str] | str = (), num_classes: int | None = None,
                 metrics: ComputeMetrics | None = None, watch_loss: bool = True,
                 log_dir: str | Path | bool | None = None,
                 thresholds: AlarmThresholds | None = None,
                 monitor: Monitor | None = None) -> None:
        monitor = Monitor.for_callback(monitor, num_classes=num_classes, stop_on=stop_on,
                                       thresholds=thresholds)
        if metrics is not None and not isinstance(metrics, ComputeMetrics):
            raise TypeError("metrics: expected the lossdiag.transformers.ComputeMetrics given to "
                            f"the Trainer, got {type(metrics).__name__}")
        if log_dir is True:
            raise TypeError("log_dir: expected a path, None (args.output_dir) or False")
        self.monitor = monitor
        self.metrics = metrics
        self.watch_loss = bool(watch_loss)
        self.log_dir = log_dir
        self.stopped_at: tuple[float, float] | None = None
        self.report_paths: dict[str, Path] = {}
        self._hook: Any = None
        self._losses: list[Any] = []
        self._hook_seen = False
        self._is_zero = True
        self._evals_seen = 0
        monitor.add_alarm_callback(self._log_alarm)

    def _log_alarm(self, f: Finding) -> None:
        if self._is_zero:
            logger.warning("lossdiag alarm: %s", f)

    # -- the forward hook ------------------------------------------------------------------------
    def _on_forward(self, module: Any, args: Any, output: Any) -> None:
        if not module.training:
            return
        loss = None
        if isinstance(output, Mapping):
            loss = output.get("loss")
        elif hasattr(output, "loss"):
            loss = output.loss
        if loss is not None and hasattr(loss, "detach") and loss.numel() == 1:
            self._losses.append(loss.detach())
            self._hook_seen = True

    def _step_loss(self) -> float | None:
        if not self._losses:
            return None
        import torch

        vals, self._losses = self._losses, []
        # one device synchronisation per optimisation step (the Trainer's NaN filter already
        # makes one per micro-batch)
        return float(torch.stack([v.float().reshape(()) for v in vals]).mean().item())

    def _stop(self, args: Any, state: Any, control: Any) -> None:
        if not self.monitor.stop_on or self.stopped_at is not None:
            return
        stop = _agree(self.monitor.should_stop, args)
        if stop:
            control.should_training_stop = True
            self.stopped_at = (float(state.epoch or 0.0), float(state.global_step))
            if self._is_zero:
                reason = self.monitor.stop_reason
                logger.warning("lossdiag: stopping training at step %d (%s)", state.global_step,
                               reason.title if reason is not None else "alarm on another "
                               "process")

    # -- events ----------------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       **kwargs: Any) -> None:
        self._is_zero = bool(state.is_world_process_zero)
        if self.monitor.num_classes is None and model is not None:
            n = getattr(getattr(model, "config", None), "num_labels", None)
            if isinstance(n, int) and n >= 2:
                self.monitor.num_classes = n
        if getattr(args, "fp16", False):
            self.monitor.loss_scaling = True  # float16 AMP: overflowing steps are skipped
        if self.watch_loss and model is not None and self._hook is None:
            self._hook = model.register_forward_hook(self._on_forward)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        loss = self._step_loss()
        if loss is not None:
            self.monitor.step(state.global_step, loss=loss, epoch=state.epoch)
            self._stop(args, state, control)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        logs = logs or {}
        if "train_runtime" in logs or any(k.startswith("eval_") for k in logs):
            return  # the end-of-training summary; evaluations arrive through on_evaluate
        grad = logs.get("grad_norm")
        lr = logs.get("learning_rate")
        loss = None if self._hook_seen else logs.get("loss")
        if loss is None and grad is None and lr is None:
            return
        self.monitor.step(state.global_step, loss=loss, lr=lr, grad_norm=grad,
                          epoch=logs.get("epoch", state.epoch))
        self._stop(args, state, control)

    def on_evaluate(self, args: Any, state: Any, control: Any,
                    metrics: dict[str, Any] | None = None, **kwargs: Any) -> None:
        val: dict[str, float] = {}
        for k, v in (metrics or {}).items():
            split, name = split_metric_key(k)
            if split != "val" or isinstance(v, (list, tuple, dict)):
                continue
            try:
                val[name] = float(v)
            except (TypeError, ValueError):
                continue
        stats = None
        if self.metrics is not None and self.metrics.evaluations > self._evals_seen:
            self._evals_seen = self.metrics.evaluations
            stats = self.metrics.last_stats
        if not val and stats is None:
            return
        epoch = float(state.epoch) if state.epoch is not None else 0.0
        self.monitor.epoch(epoch, val=val, stats=stats)
        self._stop(args, state, control)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.log_dir is False or not state.is_world_process_zero:
            return
        out = Path(args.output_dir) / "lossdiag" if self.log_dir is None else Path(self.log_dir)
        self.report_paths = self.monitor.write_report(out)
        codes = ", ".join(a.code for a in self.monitor.alarms) or "none"
        logger.info("lossdiag: report written to %s (alarms: %s)", self.report_paths["html"],
                    codes)


def _agree(flag: bool, args: Any) -> bool:
    """The stop decision of any process, on every process (all-reduce MAX when distributed)."""
    try:
        import torch
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - transformers' Trainer needs torch
        return flag
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=getattr(args, "device", "cpu"))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)

